//! A verb's option list ([`VerbSpec`]): what `describe` publishes in `args`, the common
//! options every verb has, usage and `--exec-help`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::VerbError;

/// The value type of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptType {
    /// A switch: true when given.
    Flag,
    /// Text.
    #[default]
    Str,
    /// An integer.
    Int,
    /// A number.
    Float,
    /// A Python-style literal, else the text itself.
    Literal,
}

/// How many words an option or positional takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Nargs {
    /// `"?"`, `"*"`, `"+"` or `"rest"`.
    Sym(String),
    /// Exactly N words (a list).
    Count(usize),
}

/// One option or positional of a verb.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptSpec {
    /// The field name in the job (`no_block`); also the name `vars` use.
    pub name: String,
    /// Flags (`--no-block`); empty for a positional.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// Value type.
    #[serde(rename = "type", default)]
    pub ty: OptType,
    /// Default value (null when absent; false for flags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Help text.
    #[serde(default)]
    pub help: String,
    /// Word count (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nargs: Option<Nargs>,
    /// Must be given.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Allowed values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<Vec<String>>,
    /// Placeholder in usage (default: the name in upper case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metavar: Option<String>,
}

impl OptSpec {
    /// A switch.
    pub fn flag(name: &str, flag: &str, help: &str) -> Self {
        Self::new(name, &[flag], OptType::Flag, help)
    }

    /// An option taking a value.
    pub fn opt(name: &str, flag: &str, ty: OptType, help: &str) -> Self {
        Self::new(name, &[flag], ty, help)
    }

    /// A positional.
    pub fn pos(name: &str, ty: OptType, nargs: Option<&str>, help: &str) -> Self {
        let mut o = Self::new(name, &[], ty, help);
        o.nargs = nargs.map(|n| Nargs::Sym(n.into()));
        o
    }

    fn new(name: &str, flags: &[&str], ty: OptType, help: &str) -> Self {
        Self {
            name: name.into(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            ty,
            default: None,
            help: help.into(),
            nargs: None,
            required: false,
            choices: None,
            metavar: None,
        }
    }

    /// Sets the default.
    pub fn default(mut self, v: Value) -> Self {
        self.default = Some(v);
        self
    }

    /// Marks it required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Sets nargs.
    pub fn nargs(mut self, n: &str) -> Self {
        self.nargs = Some(Nargs::Sym(n.into()));
        self
    }

    /// Sets the choices.
    pub fn choices(mut self, c: &[&str]) -> Self {
        self.choices = Some(c.iter().map(|s| (*s).to_owned()).collect());
        self
    }

    pub(super) fn positional(&self) -> bool {
        self.flags.is_empty()
    }

    pub(super) fn metavar(&self) -> String {
        self.metavar
            .clone()
            .unwrap_or_else(|| self.name.to_uppercase())
    }

    pub(super) fn label(&self) -> String {
        self.flags
            .first()
            .cloned()
            .unwrap_or_else(|| self.metavar())
    }

    pub(super) fn nargs_sym(&self) -> Option<&str> {
        match &self.nargs {
            Some(Nargs::Sym(s)) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// A mutually exclusive group of options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptionGroup {
    /// Name, for messages.
    pub name: String,
    /// Option names (`name` fields).
    pub options: Vec<String>,
    /// Exactly one must be given.
    #[serde(default)]
    pub required: bool,
}

/// A verb's option list: what `describe` publishes in `args`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerbSpec {
    /// One line about the verb.
    #[serde(default)]
    pub help: String,
    /// Whether a job whose fingerprint last succeeded may be skipped.
    #[serde(default = "yes")]
    pub cacheable: bool,
    /// ADD/COPY semantics: the first positional is a source glob on the operator's host,
    /// expanded there into one job per file (carrying the file's SHA3-224).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
    /// Options and positionals, in order.
    #[serde(default)]
    pub options: Vec<OptSpec>,
    /// Mutually exclusive groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<OptionGroup>,
}

fn yes() -> bool {
    true
}

impl VerbSpec {
    /// A spec with help text and options.
    pub fn new(help: &str, options: Vec<OptSpec>) -> Self {
        Self {
            help: help.into(),
            cacheable: true,
            transfer: false,
            options,
            groups: Vec::new(),
        }
    }

    /// Marks it not cacheable.
    pub fn uncached(mut self) -> Self {
        self.cacheable = false;
        self
    }

    /// Adds a mutually exclusive group.
    pub fn group(mut self, name: &str, options: &[&str], required: bool) -> Self {
        self.groups.push(OptionGroup {
            name: name.into(),
            options: options.iter().map(|s| (*s).to_owned()).collect(),
            required,
        });
        self
    }

    /// As JSON, for `describe`'s `args`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// Reads the `args` of a describe document: an object (a [`VerbSpec`]) or an array (its
    /// `options` alone). `None` when there is no option list (an empty array or null).
    pub fn from_describe(verb: &str, args: &Value) -> Result<Option<Self>, VerbError> {
        let bad = |e: serde_json::Error| VerbError::BadSpec {
            verb: verb.into(),
            reason: e.to_string(),
        };
        let spec = match args {
            Value::Null => return Ok(None),
            Value::Array(a) if a.is_empty() => return Ok(None),
            Value::Array(_) => VerbSpec {
                options: serde_json::from_value(args.clone()).map_err(bad)?,
                ..VerbSpec::new("", Vec::new())
            },
            Value::Object(_) => serde_json::from_value(args.clone()).map_err(bad)?,
            other => {
                return Err(VerbError::BadSpec {
                    verb: verb.into(),
                    reason: format!("expected an object or an array, got {other}"),
                })
            }
        };
        Ok(Some(spec))
    }

    /// The verb's options plus the common ones (a verb's own definition wins).
    pub fn all_options(&self) -> Vec<OptSpec> {
        let mut all: Vec<OptSpec> = common_options()
            .into_iter()
            .filter(|c| !self.options.iter().any(|o| o.name == c.name))
            .collect();
        all.extend(self.options.iter().cloned());
        all
    }

    /// The one-line usage.
    pub fn usage(&self, verb: &str) -> String {
        let mut s = verb.to_uppercase();
        let all = self.all_options();
        for o in all.iter().filter(|o| !o.positional()) {
            match o.ty {
                OptType::Flag => s.push_str(&format!(" [{}]", o.flags[0])),
                _ => s.push_str(&format!(" [{} {}]", o.flags[0], o.metavar())),
            }
        }
        for o in all.iter().filter(|o| o.positional()) {
            let m = o.metavar();
            match o.nargs_sym() {
                Some("?") => s.push_str(&format!(" [{m}]")),
                Some("*") => s.push_str(&format!(" [{m} ...]")),
                Some("+") => s.push_str(&format!(" {m} [{m} ...]")),
                Some("rest") => s.push_str(&format!(" {m}...")),
                _ => s.push_str(&format!(" {m}")),
            }
        }
        s
    }

    /// The `--exec-help` text.
    pub fn help_text(&self, verb: &str) -> String {
        let mut s = format!("usage: {}\n", self.usage(verb));
        if !self.help.is_empty() {
            s.push_str(&format!("\n{}\n", self.help));
        }
        let all = self.all_options();
        let line = |o: &OptSpec| {
            let mut left = if o.positional() {
                o.metavar()
            } else {
                let mut f = o.flags.join(", ");
                if o.ty != OptType::Flag {
                    f.push(' ');
                    f.push_str(&o.metavar());
                }
                f
            };
            if left.len() < 24 {
                left = format!("{left:<24}");
            } else {
                left.push_str("\n                          ");
            }
            let mut help = o.help.clone();
            if let Some(d) = o.default.as_ref().filter(|d| !d.is_null()) {
                help.push_str(&format!(" (default: {d})"));
            }
            if let Some(c) = &o.choices {
                help.push_str(&format!(" (one of: {})", c.join(", ")));
            }
            if o.required {
                help.push_str(" (required)");
            }
            format!("  {left}{help}\n")
        };
        let positionals: Vec<&OptSpec> = all.iter().filter(|o| o.positional()).collect();
        if !positionals.is_empty() {
            s.push_str("\npositional arguments:\n");
            for o in positionals {
                s.push_str(&line(o));
            }
        }
        s.push_str("\noptions:\n");
        for o in all.iter().filter(|o| !o.positional()) {
            s.push_str(&line(o));
        }
        for g in &self.groups {
            s.push_str(&format!(
                "\n{} {} of: {}\n",
                if g.required {
                    "exactly one"
                } else {
                    "at most one"
                },
                g.name,
                g.options
                    .iter()
                    .map(|n| {
                        all.iter()
                            .find(|o| &o.name == n)
                            .map(OptSpec::label)
                            .unwrap_or_else(|| n.clone())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

/// The options every verb has (Directord's `ComponentBase.args()`).
pub fn common_options() -> Vec<OptSpec> {
    vec![
        OptSpec::flag(
            "exec_help",
            "--exec-help",
            "Show this execution help message.",
        ),
        OptSpec::flag(
            "skip_cache",
            "--skip-cache",
            "For a task to skip the on client cache.",
        ),
        OptSpec::flag("run_once", "--run-once", "Force a given task to run once."),
        OptSpec::opt(
            "timeout",
            "--timeout",
            OptType::Int,
            "Set the action timeout; the job's whole process group is killed after it.",
        )
        .default(json!(600)),
        OptSpec::flag(
            "force_lock",
            "--force-lock",
            "Force a given task to run with a lock (accepted; has no effect, as in Directord).",
        ),
        OptSpec::opt(
            "stdout_arg",
            "--stdout-arg",
            OptType::Str,
            "Stores the stdout of a given command as a cached argument.",
        ),
        OptSpec::opt(
            "stderr_arg",
            "--stderr-arg",
            OptType::Str,
            "Stores the stderr of a given command as a cached argument.",
        ),
    ]
}
