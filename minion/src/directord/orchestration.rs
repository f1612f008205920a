//! Directord orchestration files: a YAML list of orchestrations (`jobs`, `targets`, `assign`,
//! `async`, `name`), each job a single-key map `VERB: "string"` with optional `vars`, `name`
//! and `assign`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::job::sha3_hex;
use super::syntax::strtobool;

/// Why an orchestration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum OrchestrationError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML.
    #[error("{path}: not valid YAML: {message}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Valid YAML of the wrong shape.
    #[error("{path}: {at}: {message}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// Where (e.g. `orchestration 2, job 5`).
        at: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// One line of `jobs`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobLine {
    /// The verb (upper case).
    pub verb: String,
    /// The verb string.
    pub text: String,
    /// `vars`.
    pub vars: Map<String, Value>,
    /// `name`.
    pub name: Option<String>,
    /// `assign`: targets for this job only.
    pub assign: Option<Vec<String>>,
}

/// One orchestration (a "parent").
#[derive(Debug, Clone, PartialEq)]
pub struct Orchestration {
    /// `name`.
    pub name: Option<String>,
    /// `targets`.
    pub targets: Vec<String>,
    /// `assign` (overrides `targets`).
    pub assign: Option<Vec<String>>,
    /// `async`.
    pub is_async: bool,
    /// `jobs`.
    pub jobs: Vec<JobLine>,
    /// SHA3-224 of the item as loaded.
    pub sha3_224: String,
}

impl Orchestration {
    /// The targets in force: `assign`, else `targets` (empty: every minion).
    pub fn effective_targets(&self) -> Vec<String> {
        self.assign.clone().unwrap_or_else(|| self.targets.clone())
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => Some(a.iter().map(text_of).collect()),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

/// Reads one orchestration file.
pub fn parse_file(path: &Path) -> Result<Vec<Orchestration>, OrchestrationError> {
    let text = std::fs::read_to_string(path).map_err(|source| OrchestrationError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_str(path, &text)
}

/// Parses orchestration YAML (`path` only names it in errors).
pub fn parse_str(path: &Path, text: &str) -> Result<Vec<Orchestration>, OrchestrationError> {
    let doc: Value = serde_saphyr::from_str(text).map_err(|e| OrchestrationError::Yaml {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let shape = |at: String, message: String| OrchestrationError::Shape {
        path: path.to_owned(),
        at,
        message,
    };
    let items = match doc {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        _ => {
            return Err(shape(
                "top level".into(),
                "expected a list of orchestrations (`- jobs: [...]`)".into(),
            ))
        }
    };
    let mut out = Vec::new();
    for (oi, item) in items.iter().enumerate() {
        let at = format!("orchestration {}", oi + 1);
        let Value::Object(map) = item else {
            return Err(shape(
                at,
                "expected a mapping with `jobs` (and optional targets, assign, async, name)".into(),
            ));
        };
        for k in map.keys() {
            if !matches!(k.as_str(), "jobs" | "targets" | "assign" | "async" | "name") {
                tracing::warn!("{}: {at}: unknown key {k:?} ignored", path.display());
            }
        }
        let targets = match map.get("targets") {
            None => Vec::new(),
            Some(v) => string_list(v).ok_or_else(|| {
                shape(
                    at.clone(),
                    "`targets` must be a list of minion names".into(),
                )
            })?,
        };
        let assign = match map.get("assign") {
            None => None,
            Some(v) => Some(string_list(v).ok_or_else(|| {
                shape(at.clone(), "`assign` must be a list of minion names".into())
            })?),
        };
        let is_async = match map.get("async") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => strtobool(&text_of(v)),
        };
        let name = map.get("name").map(text_of);
        let Some(Value::Array(jobs)) = map.get("jobs") else {
            return Err(shape(
                at,
                "missing `jobs`: a list of `VERB: string` items".into(),
            ));
        };
        let mut lines = Vec::new();
        for (ji, j) in jobs.iter().enumerate() {
            let at = format!("{at}, job {}", ji + 1);
            let Value::Object(jm) = j else {
                return Err(shape(
                    at,
                    format!("expected a mapping like `RUN: echo hi`, got {j}"),
                ));
            };
            let mut verb = None;
            let mut vars = Map::new();
            let mut jname = None;
            let mut jassign = None;
            for (k, v) in jm {
                match k.as_str() {
                    "vars" => match v {
                        Value::Object(m) => vars = m.clone(),
                        Value::Null => {}
                        _ => return Err(shape(at, "`vars` must be a mapping of option names to values".into())),
                    },
                    "name" => jname = Some(text_of(v)),
                    "assign" => {
                        jassign = Some(string_list(v).ok_or_else(|| {
                            shape(at.clone(), "`assign` must be a list of minion names".into())
                        })?)
                    }
                    _ if verb.is_none() => verb = Some((k.to_uppercase(), text_of(v))),
                    _ => {
                        return Err(shape(
                            at,
                            format!("more than one verb ({} and {k}); put each on its own `- VERB: ...` line", verb.map(|v| v.0).unwrap_or_default()),
                        ))
                    }
                }
            }
            let Some((verb, text)) = verb else {
                return Err(shape(
                    at,
                    "no verb: expected `VERB: string` (e.g. `RUN: echo hi`)".into(),
                ));
            };
            lines.push(JobLine {
                verb,
                text: text.trim_end().to_owned(),
                vars,
                name: jname,
                assign: jassign,
            });
        }
        out.push(Orchestration {
            name,
            targets,
            assign,
            is_async,
            jobs: lines,
            sha3_224: sha3_hex(item.to_string().as_bytes()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes() {
        let y = r#"
- name: p
  async: "yes"
  jobs:
  - RUN: echo hi
    name: j
  - ARG: >
      d {"a": "b"}
  - ECHO: test
    vars:
      skip_cache: true
- jobs:
  - QUEUESENTINEL: true
"#;
        let o = parse_str(Path::new("t.yaml"), y).unwrap();
        assert_eq!(o.len(), 2);
        assert!(o[0].is_async);
        assert_eq!(o[0].jobs[0].name.as_deref(), Some("j"));
        assert_eq!(o[0].jobs[1].text, r#"d {"a": "b"}"#);
        assert_eq!(o[0].jobs[2].vars["skip_cache"], Value::Bool(true));
        assert_eq!(o[1].jobs[0].text, "true");
        let e = parse_str(Path::new("t.yaml"), "- jobs:\n  - 3\n").unwrap_err();
        assert!(e.to_string().contains("orchestration 1, job 1"), "{e}");
    }
}
