//! Verb strings (`RUN: --timeout 5 echo hi`) parsed with a resource's option list.
//!
//! A resource that is a Directord verb publishes its options in the `args` field of its
//! `describe` document. The shape (JSON) is a [`VerbSpec`]:
//!
//! ```json
//! {"help": "Process run commands", "cacheable": true, "transfer": false,
//!  "options": [
//!    {"name": "no_block", "flags": ["--no-block"], "type": "flag", "help": "Run a command in 'fire and forget' mode."},
//!    {"name": "retry", "flags": ["--retry"], "type": "int", "default": 1, "help": "Number of times to retry"},
//!    {"name": "command", "type": "str", "nargs": "rest", "help": "the command, run with /bin/sh -c"}],
//!  "groups": [{"name": "running", "options": ["reloaded", "restarted"], "required": false}]}
//! ```
//!
//! An option without `flags` is positional. `type` is `flag` (a switch, false unless given),
//! `str`, `int`, `float` or `literal` (a Python-style literal: `['a']`, `{"a": 1}`, `1.2`, or
//! else the text itself). `nargs`: absent (one word), `"?"`, `"*"`, `"+"` (lists of words) or
//! `"rest"` (the rest of the verb string exactly as written, quotes and spacing kept). A bare
//! JSON array is accepted as the `options` list alone. The common options ([`common_options`])
//! are added to every verb.
//!
//! Parsing splits words the way a POSIX shell does (quotes group, backslash escapes). Options
//! are recognised only before the payload; `--` ends them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Why a verb string could not be parsed. Each message names the verb, the option and what to
/// write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerbError {
    /// A quote was opened and never closed.
    #[error("{verb}: unbalanced {quote} quote in {text:?}; close the quote or escape it with a backslash")]
    Unbalanced {
        /// The verb.
        verb: String,
        /// The quote character.
        quote: char,
        /// The verb string.
        text: String,
    },
    /// An option the verb does not have.
    #[error("{verb}: unknown option {option}; known options: {known} (if the payload itself starts with a dash, put `--` before it; see `--exec-help`)")]
    UnknownOption {
        /// The verb.
        verb: String,
        /// The word.
        option: String,
        /// The verb's options.
        known: String,
    },
    /// An option's value is missing or has the wrong type.
    #[error("{verb}: option {option} {problem}")]
    BadValue {
        /// The verb.
        verb: String,
        /// The option (flag or positional name).
        option: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A required positional or option is absent.
    #[error("{verb}: missing {what}; usage: {usage}")]
    Missing {
        /// The verb.
        verb: String,
        /// What is missing.
        what: String,
        /// The usage line.
        usage: String,
    },
    /// Words left over after every positional took its share.
    #[error("{verb}: unexpected extra words {extra:?}; usage: {usage} (quote arguments that contain spaces)")]
    Extra {
        /// The verb.
        verb: String,
        /// The words.
        extra: Vec<String>,
        /// The usage line.
        usage: String,
    },
    /// Two options of a mutually exclusive group were given, or none of a required group.
    #[error("{verb}: {problem}")]
    Group {
        /// The verb.
        verb: String,
        /// What is wrong.
        problem: String,
    },
    /// The resource's option list is malformed.
    #[error("{verb}: the option list in the resource's describe `args` is invalid: {reason}")]
    BadSpec {
        /// The verb.
        verb: String,
        /// Why.
        reason: String,
    },
    /// The resource has no option list: it is not a verb.
    #[error("{verb}: resource {kind:?} is not a Directord verb (its describe has no `args` option list)")]
    NotAVerb {
        /// The verb.
        verb: String,
        /// The resource kind looked at.
        kind: String,
    },
}

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

    fn positional(&self) -> bool {
        self.flags.is_empty()
    }

    fn metavar(&self) -> String {
        self.metavar
            .clone()
            .unwrap_or_else(|| self.name.to_uppercase())
    }

    fn label(&self) -> String {
        self.flags
            .first()
            .cloned()
            .unwrap_or_else(|| self.metavar())
    }

    fn nargs_sym(&self) -> Option<&str> {
        match &self.nargs {
            Some(Nargs::Sym(s)) => Some(s.as_str()),
            _ => None,
        }
    }
}

/// A mutually exclusive group of options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
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
    pub groups: Vec<Group>,
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
        self.groups.push(Group {
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

/// A verb string parsed: the job's fields, or a request for help.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Every option and positional by name (defaults filled in; absent values null).
    Fields(Map<String, Value>),
    /// `--exec-help` was given: the help text.
    Help(String),
}

/// One shell word and where it starts in the verb string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word with quotes removed.
    pub text: String,
    /// Byte offset of its first character in the verb string.
    pub start: usize,
    /// Whether any part was quoted or escaped (a quoted `--` is not the end of options).
    pub quoted: bool,
}

/// Splits like a POSIX shell: whitespace separates, `'…'` is literal, `"…"` allows `\"`,
/// `\\`, `\$` and `` \` ``, a backslash outside quotes escapes the next character.
pub fn split_words(verb: &str, s: &str) -> Result<Vec<Word>, VerbError> {
    let mut words = Vec::new();
    let mut cur: Option<Word> = None;
    let mut chars = s.char_indices().peekable();
    let unbalanced = |quote| VerbError::Unbalanced {
        verb: verb.into(),
        quote,
        text: s.into(),
    };
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            if let Some(w) = cur.take() {
                words.push(w);
            }
            continue;
        }
        let w = cur.get_or_insert_with(|| Word {
            text: String::new(),
            start: i,
            quoted: false,
        });
        match c {
            '\'' => {
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some((_, '\'')) => break,
                        Some((_, ch)) => w.text.push(ch),
                        None => return Err(unbalanced('\'')),
                    }
                }
            }
            '"' => {
                w.quoted = true;
                loop {
                    match chars.next() {
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.peek() {
                            Some((_, n @ ('"' | '\\' | '$' | '`'))) => {
                                w.text.push(*n);
                                chars.next();
                            }
                            Some((_, '\n')) => {
                                chars.next();
                            }
                            _ => w.text.push('\\'),
                        },
                        Some((_, ch)) => w.text.push(ch),
                        None => return Err(unbalanced('"')),
                    }
                }
            }
            '\\' => {
                w.quoted = true;
                match chars.next() {
                    Some((_, '\n')) => {}
                    Some((_, ch)) => w.text.push(ch),
                    None => w.text.push('\\'),
                }
            }
            ch => w.text.push(ch),
        }
    }
    if let Some(w) = cur.take() {
        words.push(w);
    }
    Ok(words)
}

fn is_optionish(w: &Word) -> bool {
    !w.quoted && w.text.starts_with('-') && w.text.len() > 1 && w.text.parse::<f64>().is_err()
}

/// Parses a verb string against `spec` (plus the common options), then applies `vars`
/// (orchestration `vars`: option names, `-` or `_`, set any option; unknown names are
/// ignored as Directord does, with a warning).
pub fn parse(
    spec: &VerbSpec,
    verb: &str,
    s: &str,
    vars: &Map<String, Value>,
) -> Result<Parsed, VerbError> {
    let verb_uc = verb.to_uppercase();
    let v = verb_uc.as_str();
    let all = spec.all_options();
    let usage = || spec.usage(v);
    let words = split_words(v, s)?;
    let mut given: Map<String, Value> = Map::new();
    let mut i = 0;
    let positionals: Vec<&OptSpec> = all.iter().filter(|o| o.positional()).collect();
    let min_positional_words: usize = positionals
        .iter()
        .map(|o| match (&o.nargs, o.required) {
            (None, _) => 1,
            (Some(Nargs::Count(n)), _) => *n,
            (Some(Nargs::Sym(s)), _) if s == "+" => 1,
            _ => 0,
        })
        .sum();
    while i < words.len() {
        let w = &words[i];
        if !w.quoted && w.text == "--" {
            i += 1;
            break;
        }
        if !is_optionish(w) {
            break;
        }
        let (flag, inline) = match w.text.split_once('=') {
            Some((f, val)) if f.starts_with("--") => (f.to_owned(), Some(val.to_owned())),
            _ => (w.text.clone(), None),
        };
        let Some(opt) = all.iter().find(|o| o.flags.contains(&flag)) else {
            return Err(VerbError::UnknownOption {
                verb: v.into(),
                option: flag,
                known: all
                    .iter()
                    .filter(|o| !o.positional())
                    .map(|o| o.flags[0].clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        i += 1;
        if opt.name == "exec_help" {
            return Ok(Parsed::Help(spec.help_text(v)));
        }
        let bad = |problem: String| VerbError::BadValue {
            verb: v.into(),
            option: flag.clone(),
            problem,
        };
        if opt.ty == OptType::Flag {
            if inline.is_some() {
                return Err(bad("is a switch and takes no value; write it alone".into()));
            }
            given.insert(opt.name.clone(), Value::Bool(true));
            continue;
        }
        let value = match (inline, opt.nargs_sym()) {
            (Some(val), None | Some("?")) => convert(opt, &val).map_err(bad)?,
            (Some(val), _) => Value::Array(vec![convert(opt, &val).map_err(bad)?]),
            (None, None) => {
                let Some(next) = words.get(i) else {
                    return Err(bad(format!(
                        "needs a value: write {flag} {} or {flag}=VALUE",
                        opt.metavar()
                    )));
                };
                i += 1;
                convert(opt, &next.text).map_err(bad)?
            }
            (None, Some(_)) => {
                // A list option: words up to the next option, leaving what the positionals need.
                let mut items = Vec::new();
                while i < words.len()
                    && !is_optionish(&words[i])
                    && words.len() - i > min_positional_words
                {
                    items.push(convert(opt, &words[i].text).map_err(bad)?);
                    i += 1;
                }
                if items.is_empty() && opt.nargs_sym() == Some("+") {
                    return Err(bad(format!("needs at least one {}", opt.metavar())));
                }
                Value::Array(items)
            }
        };
        given.insert(opt.name.clone(), value);
    }
    // Positionals on the rest.
    let rest = &words[i.min(words.len())..];
    let mut j = 0;
    for (pi, p) in positionals.iter().enumerate() {
        let later_need: usize = positionals[pi + 1..]
            .iter()
            .map(|o| match &o.nargs {
                None => 1,
                Some(Nargs::Count(n)) => *n,
                Some(Nargs::Sym(s)) if s == "+" => 1,
                _ => 0,
            })
            .sum();
        let avail = rest.len().saturating_sub(j);
        let bad = |problem: String| VerbError::BadValue {
            verb: v.into(),
            option: p.metavar(),
            problem,
        };
        let missing = || VerbError::Missing {
            verb: v.into(),
            what: p.metavar(),
            usage: usage(),
        };
        let value = match (&p.nargs, p.nargs_sym()) {
            (_, Some("rest")) => {
                if j >= rest.len() {
                    Value::Null
                } else {
                    let raw = s[rest[j].start..].trim_end();
                    j = rest.len();
                    convert(p, raw).map_err(bad)?
                }
            }
            (_, Some("?")) => {
                if avail > later_need {
                    j += 1;
                    convert(p, &rest[j - 1].text).map_err(bad)?
                } else {
                    // As argparse: an absent optional positional takes its default (REBOOT's
                    // 10 seconds lands in the job, its fingerprint and INFO).
                    p.default.clone().unwrap_or(Value::Null)
                }
            }
            (_, Some(sym @ ("*" | "+"))) => {
                let take = avail.saturating_sub(later_need);
                if sym == "+" && take == 0 {
                    return Err(missing());
                }
                let items = rest[j..j + take]
                    .iter()
                    .map(|w| convert(p, &w.text))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                j += take;
                Value::Array(items)
            }
            (Some(Nargs::Count(n)), _) => {
                if avail < *n {
                    return Err(missing());
                }
                let items = rest[j..j + n]
                    .iter()
                    .map(|w| convert(p, &w.text))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                j += n;
                Value::Array(items)
            }
            (Some(Nargs::Sym(other)), _) => {
                return Err(VerbError::BadSpec {
                    verb: v.into(),
                    reason: format!(
                    "nargs {other:?} of {} is not one of \"?\", \"*\", \"+\", \"rest\" or a number",
                    p.name
                ),
                })
            }
            (None, _) => {
                if avail == 0 {
                    return Err(missing());
                }
                j += 1;
                convert(p, &rest[j - 1].text).map_err(bad)?
            }
        };
        given.insert(p.name.clone(), value);
    }
    if j < rest.len() {
        return Err(VerbError::Extra {
            verb: v.into(),
            extra: rest[j..].iter().map(|w| w.text.clone()).collect(),
            usage: usage(),
        });
    }
    // vars override.
    for (k, val) in vars {
        let name = k.replace('-', "_");
        match all.iter().find(|o| o.name == name) {
            Some(opt) => {
                let val = match (opt.ty, val) {
                    (OptType::Flag, Value::String(s)) => Value::Bool(strtobool(s)),
                    (_, Value::String(s)) if opt.nargs.is_none() => {
                        convert(opt, s).map_err(|problem| VerbError::BadValue {
                            verb: v.into(),
                            option: format!("vars.{k}"),
                            problem,
                        })?
                    }
                    (_, other) => other.clone(),
                };
                given.insert(name, val);
            }
            None => tracing::warn!(verb = v, var = %k, "vars: {v} has no option {k:?}; ignored"),
        }
    }
    // Defaults, required, choices, groups.
    let mut fields = Map::new();
    for o in &all {
        let val = match given.get(&o.name) {
            Some(v) => v.clone(),
            None => {
                if o.required {
                    return Err(VerbError::Missing {
                        verb: v.into(),
                        what: format!("required option {}", o.label()),
                        usage: usage(),
                    });
                }
                match (&o.default, o.ty) {
                    (Some(d), _) => d.clone(),
                    (None, OptType::Flag) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
        };
        if let (Some(choices), Some(s)) = (&o.choices, val.as_str()) {
            if !choices.iter().any(|c| c == s) {
                return Err(VerbError::BadValue {
                    verb: v.into(),
                    option: o.label(),
                    problem: format!("is {s:?}; expected one of {}", choices.join(", ")),
                });
            }
        }
        if o.name != "exec_help" {
            fields.insert(o.name.clone(), val);
        }
    }
    for g in &spec.groups {
        let set: Vec<String> = g
            .options
            .iter()
            .filter(|n| given_truthy(given.get(*n)))
            .map(|n| {
                all.iter()
                    .find(|o| &o.name == n)
                    .map(OptSpec::label)
                    .unwrap_or_else(|| n.clone())
            })
            .collect();
        let names = || {
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
        };
        if set.len() > 1 {
            return Err(VerbError::Group {
                verb: v.into(),
                problem: format!(
                    "{} cannot be combined ({} group: choose one of {})",
                    set.join(" and "),
                    g.name,
                    names()
                ),
            });
        }
        if g.required && set.is_empty() {
            return Err(VerbError::Group {
                verb: v.into(),
                problem: format!("give one of {} ({} group)", names(), g.name),
            });
        }
    }
    Ok(Parsed::Fields(fields))
}

fn given_truthy(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Array(a)) => !a.is_empty(),
        _ => true,
    }
}

/// Python's `strtobool`, leniently: anything else is false.
pub fn strtobool(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "t" | "true" | "on" | "1"
    )
}

fn convert(o: &OptSpec, text: &str) -> Result<Value, String> {
    match o.ty {
        OptType::Str => Ok(Value::String(text.into())),
        OptType::Flag => Ok(Value::Bool(strtobool(text))),
        OptType::Int => text
            .trim()
            .parse::<i64>()
            .map(|n| json!(n))
            .map_err(|_| format!("expects a whole number, got {text:?}")),
        OptType::Float => text
            .trim()
            .parse::<f64>()
            .map(|n| json!(n))
            .map_err(|_| format!("expects a number, got {text:?}")),
        OptType::Literal => Ok(literal(text)),
    }
}

/// Python's `ast.literal_eval` for the common cases (strings, numbers, `True`/`False`/`None`,
/// lists, tuples, dicts), falling back to the text itself.
pub fn literal(text: &str) -> Value {
    let t = text.trim();
    let mut p = Lit {
        s: t.as_bytes(),
        i: 0,
        src: t,
    };
    match p.value() {
        Some(v) => {
            p.ws();
            if p.i == p.s.len() {
                v
            } else {
                Value::String(t.into())
            }
        }
        None => Value::String(t.into()),
    }
}

struct Lit<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Lit<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Option<Value> {
        self.ws();
        match self.peek()? {
            b'[' => self.seq(b']'),
            b'(' => self.seq(b')'),
            b'{' => self.dict(),
            b'\'' | b'"' => self.string().map(Value::String),
            _ => self.atom(),
        }
    }

    fn seq(&mut self, close: u8) -> Option<Value> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Some(Value::Array(items));
            }
            items.push(self.value()?);
            if !self.eat(b',') {
                return self.eat(close).then_some(Value::Array(items));
            }
        }
    }

    fn dict(&mut self) -> Option<Value> {
        self.i += 1;
        let mut m = Map::new();
        loop {
            if self.eat(b'}') {
                return Some(Value::Object(m));
            }
            let k = match self.value()? {
                Value::String(s) => s,
                other => other.to_string(),
            };
            if !self.eat(b':') {
                return None;
            }
            let v = self.value()?;
            m.insert(k, v);
            if !self.eat(b',') {
                return self.eat(b'}').then_some(Value::Object(m));
            }
        }
    }

    fn string(&mut self) -> Option<String> {
        let q = self.peek()?;
        self.i += 1;
        let mut out = String::new();
        let rest = &self.src[self.i..];
        let mut it = rest.char_indices();
        while let Some((k, c)) = it.next() {
            if c as u32 == u32::from(q) {
                self.i += k + 1;
                return Some(out);
            }
            if c == '\\' {
                match it.next()?.1 {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '0' => out.push('\0'),
                    other => out.push(other),
                }
            } else {
                out.push(c);
            }
        }
        None
    }

    fn atom(&mut self) -> Option<Value> {
        let start = self.i;
        while self.i < self.s.len()
            && !matches!(self.s[self.i], b',' | b']' | b')' | b'}' | b':')
            && !self.s[self.i].is_ascii_whitespace()
        {
            self.i += 1;
        }
        let word = &self.src[start..self.i];
        match word {
            "True" => Some(Value::Bool(true)),
            "False" => Some(Value::Bool(false)),
            "None" => Some(Value::Null),
            w => {
                let w2 = w.replace('_', "");
                if let Ok(n) = w2.parse::<i64>() {
                    Some(json!(n))
                } else if w.chars().any(|c| c.is_ascii_digit()) {
                    w2.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(|f| json!(f))
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_spec() -> VerbSpec {
        VerbSpec::new(
            "Process run commands",
            vec![
                OptSpec::flag("no_block", "--no-block", "fire and forget"),
                OptSpec::opt("retry", "--retry", OptType::Int, "retries").default(json!(1)),
                OptSpec::pos("command", OptType::Str, Some("rest"), "the command"),
            ],
        )
    }

    fn fields(p: Parsed) -> Map<String, Value> {
        match p {
            Parsed::Fields(f) => f,
            Parsed::Help(h) => panic!("help: {h}"),
        }
    }

    #[test]
    fn options_before_payload_and_quotes_kept() {
        let f = fields(
            parse(
                &run_spec(),
                "RUN",
                r#"--timeout 5 echo "a  b" | grep 'x'"#,
                &Map::new(),
            )
            .unwrap(),
        );
        assert_eq!(f["timeout"], json!(5));
        assert_eq!(f["command"], json!(r#"echo "a  b" | grep 'x'"#));
        assert_eq!(f["skip_cache"], json!(false));
        assert_eq!(f["retry"], json!(1));
    }

    #[test]
    fn options_after_payload_are_payload() {
        let f = fields(
            parse(
                &run_spec(),
                "RUN",
                "curl --retry 3 --timeout 9 x",
                &Map::new(),
            )
            .unwrap(),
        );
        assert_eq!(f["command"], json!("curl --retry 3 --timeout 9 x"));
        assert_eq!(f["retry"], json!(1));
        assert_eq!(f["timeout"], json!(600));
    }

    #[test]
    fn double_dash_ends_options() {
        let f =
            fields(parse(&run_spec(), "RUN", "--skip-cache -- --version", &Map::new()).unwrap());
        assert_eq!(f["command"], json!("--version"));
        assert_eq!(f["skip_cache"], json!(true));
    }

    #[test]
    fn equals_form_and_vars() {
        let mut vars = Map::new();
        vars.insert("stdout_arg".into(), json!("out"));
        vars.insert("skip_cache".into(), json!(true));
        let f = fields(parse(&run_spec(), "run", "--retry=3 ls", &vars).unwrap());
        assert_eq!(f["retry"], json!(3));
        assert_eq!(f["stdout_arg"], json!("out"));
        assert_eq!(f["skip_cache"], json!(true));
    }

    #[test]
    fn clear_errors() {
        let e = parse(&run_spec(), "RUN", "--bogus x", &Map::new()).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("unknown option --bogus") && m.contains("--retry"),
            "{m}"
        );
        let e = parse(&run_spec(), "RUN", "--timeout abc ls", &Map::new()).unwrap_err();
        assert!(
            e.to_string().contains("--timeout expects a whole number"),
            "{e}"
        );
        let e = parse(&run_spec(), "RUN", "--timeout", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("needs a value"), "{e}");
        let e = parse(&run_spec(), "RUN", "echo 'open", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("unbalanced ' quote"), "{e}");
        let e = parse(&run_spec(), "RUN", "--no-block=1 x", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("takes no value"), "{e}");
    }

    #[test]
    fn positionals_groups_and_help() {
        let spec = VerbSpec::new(
            "svc",
            vec![
                OptSpec::flag("restarted", "--restarted", "restart"),
                OptSpec::flag("stopped", "--stopped", "stop"),
                OptSpec::pos("services", OptType::Str, Some("+"), "services"),
            ],
        )
        .group("running", &["restarted", "stopped"], false);
        let f = fields(parse(&spec, "SERVICE", "--restarted a b", &Map::new()).unwrap());
        assert_eq!(f["services"], json!(["a", "b"]));
        let e = parse(&spec, "SERVICE", "--restarted --stopped a", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("cannot be combined"), "{e}");
        let e = parse(&spec, "SERVICE", "--stopped", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("missing SERVICES"), "{e}");
        match parse(&spec, "SERVICE", "--exec-help", &Map::new()).unwrap() {
            Parsed::Help(h) => {
                assert!(h.starts_with("usage: SERVICE"), "{h}");
                assert!(
                    h.contains("--skip-cache") && h.contains("--restarted"),
                    "{h}"
                );
            }
            other => panic!("{other:?}"),
        }
        let add = VerbSpec::new(
            "transfer",
            vec![
                OptSpec::pos("from", OptType::Str, None, "source"),
                OptSpec::pos("to", OptType::Str, None, "dest"),
            ],
        );
        let f = fields(parse(&add, "ADD", r#"a.j2 "/etc/{{ x }}.conf""#, &Map::new()).unwrap());
        assert_eq!(f["to"], json!("/etc/{{ x }}.conf"));
        let e = parse(&add, "ADD", "a b c", &Map::new()).unwrap_err();
        assert!(e.to_string().contains("unexpected extra words"), "{e}");
    }

    #[test]
    fn python_literals() {
        assert_eq!(literal("['test']"), json!(["test"]));
        assert_eq!(literal(r#"{"a": "b"}"#), json!({"a": "b"}));
        assert_eq!(literal("1"), json!(1));
        assert_eq!(literal("1.2"), json!(1.2));
        assert_eq!(literal("True"), json!(true));
        assert_eq!(literal("argument"), json!("argument"));
        assert_eq!(literal("hello world"), json!("hello world"));
        assert_eq!(literal("'quoted text'"), json!("quoted text"));
        assert_eq!(
            literal("{'a': [1, 2.5, None]}"),
            json!({"a": [1, 2.5, null]})
        );
    }

    #[test]
    fn spec_round_trips_through_describe() {
        let spec = run_spec();
        let back = VerbSpec::from_describe("RUN", &spec.to_json())
            .unwrap()
            .unwrap();
        assert_eq!(back, spec);
        let arr = json!([{"name": "echo", "nargs": "*"}]);
        let s = VerbSpec::from_describe("ECHO", &arr).unwrap().unwrap();
        assert!(s.cacheable);
        assert_eq!(VerbSpec::from_describe("X", &json!([])).unwrap(), None);
    }
}
