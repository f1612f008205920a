//! Verb strings parsed against an option list: shell words, options only before the payload,
//! `--`, groups, and orchestration `vars`.

use serde_json::{json, Map, Value};

use super::error::VerbError;
use super::literal::literal;
use super::spec::{Nargs, OptSpec, OptType, VerbSpec};

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
            return Err(VerbError::OptionGroup {
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
            return Err(VerbError::OptionGroup {
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
