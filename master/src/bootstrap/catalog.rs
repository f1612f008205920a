//! Catalogs: YAML files (or `builtin:NAME`) deep-merged in order, validated per file so that an
//! error names the file and the key, and rendered per host with minijinja.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::builtin;

/// The keys of the master group (Directord's name first).
pub const MASTER_KEYS: [&str; 2] = ["directord_server", "ingot_master"];
/// The keys of the minion group.
pub const MINION_KEYS: [&str; 2] = ["directord_clients", "ingot_minions"];

/// A catalog that cannot be used; exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("catalog {file}: cannot read it: {source} (check the path given to --catalog)")]
    Read {
        /// The file.
        file: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not YAML.
    #[error("catalog {file}: not valid YAML: {message}")]
    Yaml {
        /// The file.
        file: String,
        /// The parser's explanation.
        message: String,
    },
    /// A key has the wrong shape.
    #[error("catalog {file}: {key}: {message}")]
    Key {
        /// The file.
        file: String,
        /// The key path, e.g. `ingot_minions.targets[1].port`.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Unknown built-in.
    #[error(
        "unknown built-in catalog {0:?}: use builtin:install, builtin:rotate or builtin:upgrade"
    )]
    UnknownBuiltin(String),
    /// Nothing to do.
    #[error("the catalogs define no targets with jobs: give `ingot_master` / `ingot_minions` (or `directord_server` / `directord_clients`) both `targets` and `jobs`")]
    Empty,
}

/// One job of a catalog, before rendering.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// RUN, ADD, GET or LOCAL.
    pub verb: String,
    /// The unrendered argument string.
    pub text: String,
    /// `FILE: KEY` where it was written.
    pub source: String,
}

/// One target of a catalog, before rendering.
#[derive(Debug, Clone)]
pub struct TargetSpec {
    /// The raw mapping (host, port, username, name, and any per-host variables).
    pub raw: Map<String, Value>,
    /// `FILE: KEY` where it was written.
    pub source: String,
}

/// A group (masters or minions) after merging.
#[derive(Debug, Clone, Default)]
pub struct HostGroup {
    /// Targets in catalog order.
    pub targets: Vec<TargetSpec>,
    /// Jobs in catalog order.
    pub jobs: Vec<JobSpec>,
}

/// The merged catalogs.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The deep-merged document (the template context).
    pub merged: Map<String, Value>,
    /// `directord_server` + `ingot_master`.
    pub masters: HostGroup,
    /// `directord_clients` + `ingot_minions`.
    pub minions: HostGroup,
    /// The built-ins that were loaded.
    pub builtins: Vec<String>,
}

/// Deep merge as Directord does: mappings merged key by key, lists extended, anything else
/// replaced.
pub fn merge(base: &mut Value, new: Value) {
    match (base, new) {
        (Value::Object(b), Value::Object(n)) => {
            for (k, v) in n {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(n)) => b.extend(n),
        (slot, n) => *slot = n,
    }
}

/// Loads and merges `sources` (paths or `builtin:NAME`) over `defaults`.
pub fn load(sources: &[String], defaults: Value) -> Result<Catalog, CatalogError> {
    let mut merged = defaults;
    let mut catalog = Catalog::default();
    for source in sources {
        let (file, text) = if let Some(name) = source.strip_prefix("builtin:") {
            let text = builtin::catalog(name)
                .ok_or_else(|| CatalogError::UnknownBuiltin(source.clone()))?;
            catalog.builtins.push(name.to_owned());
            (source.clone(), text.to_owned())
        } else {
            let text = std::fs::read_to_string(source).map_err(|e| CatalogError::Read {
                file: source.clone(),
                source: e,
            })?;
            (source.clone(), text)
        };
        let doc = parse(&file, &text)?;
        validate(&file, &doc, &mut catalog)?;
        merge(&mut merged, Value::Object(doc));
    }
    catalog.merged = match merged {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    // Both spellings reach the templates.
    for [a, b] in [MASTER_KEYS, MINION_KEYS] {
        let v = match (catalog.merged.get(a), catalog.merged.get(b)) {
            (Some(x), Some(y)) => {
                let mut x = x.clone();
                merge(&mut x, y.clone());
                x
            }
            (Some(x), None) | (None, Some(x)) => x.clone(),
            (None, None) => continue,
        };
        catalog.merged.insert(a.to_owned(), v.clone());
        catalog.merged.insert(b.to_owned(), v);
    }
    let any = |g: &HostGroup| !g.targets.is_empty() && !g.jobs.is_empty();
    if !any(&catalog.masters) && !any(&catalog.minions) {
        return Err(CatalogError::Empty);
    }
    Ok(catalog)
}

fn parse(file: &str, text: &str) -> Result<Map<String, Value>, CatalogError> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let v: Value = serde_saphyr::from_str(text).map_err(|e| CatalogError::Yaml {
        file: file.into(),
        message: e.to_string(),
    })?;
    match v {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(CatalogError::Key {
            file: file.into(),
            key: "(top level)".into(),
            message: format!(
                "a catalog is a mapping with ingot_master / ingot_minions, not {}",
                kind(&other)
            ),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn validate(
    file: &str,
    doc: &Map<String, Value>,
    catalog: &mut Catalog,
) -> Result<(), CatalogError> {
    let err = |key: String, message: String| CatalogError::Key {
        file: file.into(),
        key,
        message,
    };
    for key in MASTER_KEYS.iter().chain(MINION_KEYS.iter()) {
        let Some(group) = doc.get(*key) else { continue };
        let Value::Object(group) = group else {
            return Err(err(
                key.to_string(),
                format!(
                    "must be a mapping with `targets` and `jobs`, not {}",
                    kind(group)
                ),
            ));
        };
        let out = if MASTER_KEYS.contains(key) {
            &mut catalog.masters
        } else {
            &mut catalog.minions
        };
        if let Some(args) = group.get("args") {
            let Value::Object(args) = args else {
                return Err(err(
                    format!("{key}.args"),
                    "must be a mapping (port, username)".into(),
                ));
            };
            check_target_fields(args, &format!("{key}.args"), &err)?;
        }
        match group.get("targets") {
            None | Some(Value::Null) => {}
            Some(Value::Array(targets)) => {
                for (i, t) in targets.iter().enumerate() {
                    let k = format!("{key}.targets[{i}]");
                    let raw = match t {
                        Value::String(h) => {
                            let mut m = Map::new();
                            m.insert("host".into(), Value::String(h.clone()));
                            m
                        }
                        Value::Object(m) => m.clone(),
                        other => {
                            return Err(err(
                                k,
                                format!(
                                    "must be a mapping {{host, port, username, name}}, not {}",
                                    kind(other)
                                ),
                            ))
                        }
                    };
                    match raw.get("host") {
                        Some(Value::String(h)) if !h.trim().is_empty() => {}
                        _ => {
                            return Err(err(
                                format!("{k}.host"),
                                "missing: every target needs `host: NAME-OR-ADDRESS`".into(),
                            ))
                        }
                    }
                    check_target_fields(&raw, &k, &err)?;
                    out.targets.push(TargetSpec {
                        raw,
                        source: format!("{file}: {k}"),
                    });
                }
            }
            Some(other) => {
                return Err(err(
                    format!("{key}.targets"),
                    format!(
                        "must be a list of {{host, port, username}}, not {}",
                        kind(other)
                    ),
                ))
            }
        }
        match group.get("jobs") {
            None | Some(Value::Null) => {}
            Some(jobs @ Value::Array(_)) => {
                flatten_jobs(jobs, &format!("{key}.jobs"), file, &mut out.jobs)?
            }
            Some(other) => {
                return Err(err(
                    format!("{key}.jobs"),
                    format!(
                        "must be a list of `VERB: \"args\"` items, not {}",
                        kind(other)
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn check_target_fields(
    m: &Map<String, Value>,
    k: &str,
    err: &dyn Fn(String, String) -> CatalogError,
) -> Result<(), CatalogError> {
    if let Some(p) = m.get("port") {
        let ok = match p {
            Value::Number(n) => n.as_u64().is_some_and(|n| (1..=65535).contains(&n)),
            Value::String(s) => s.contains("{{") || s.parse::<u16>().is_ok_and(|n| n > 0),
            _ => false,
        };
        if !ok {
            return Err(err(
                format!("{k}.port"),
                format!("must be a port number 1-65535, not {p}"),
            ));
        }
    }
    for f in ["username", "name"] {
        if let Some(v) = m.get(f) {
            if !v.is_string() {
                return Err(err(
                    format!("{k}.{f}"),
                    format!("must be a string, not {}", kind(v)),
                ));
            }
        }
    }
    Ok(())
}

fn flatten_jobs(
    v: &Value,
    key: &str,
    file: &str,
    out: &mut Vec<JobSpec>,
) -> Result<(), CatalogError> {
    let err = |message: String| CatalogError::Key {
        file: file.into(),
        key: key.into(),
        message,
    };
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                flatten_jobs(item, &format!("{key}[{i}]"), file, out)?;
            }
            Ok(())
        }
        Value::Object(m) => {
            let mut it = m.iter();
            let (Some((verb, arg)), None) = (it.next(), it.next()) else {
                return Err(err(format!(
                    "a job is one `VERB: \"args\"` pair, found keys {:?}",
                    m.keys().collect::<Vec<_>>()
                )));
            };
            let verb = verb.to_uppercase();
            if !["RUN", "ADD", "GET", "LOCAL"].contains(&verb.as_str()) {
                return Err(err(format!(
                    "unknown verb {verb}: bootstrap catalogs know RUN, ADD, GET and LOCAL"
                )));
            }
            let text = match arg {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(err(format!(
                        "{verb} takes a string, not {} (quote it or use a YAML block scalar `|`)",
                        kind(other)
                    )))
                }
            };
            out.push(JobSpec {
                verb,
                text,
                source: format!("{file}: {key}.{}", m.keys().next().expect("one key")),
            });
            Ok(())
        }
        other => Err(err(format!(
            "a job is a `VERB: \"args\"` mapping, not {}",
            kind(other)
        ))),
    }
}

/// Renders `template` against `ctx`; the error names where the string was written.
pub(crate) fn render(
    source: &str,
    template: &str,
    ctx: &Map<String, Value>,
) -> Result<String, String> {
    minion::directord::template::render(source, template, ctx)
        .map_err(|e| format!("{source}: cannot render {template:?}: {} (define the variable in a catalog, or per target)", e.message))
}

/// Renders every string in `v`.
pub(crate) fn render_value(
    source: &str,
    v: &Value,
    ctx: &Map<String, Value>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(render(source, s, ctx)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(source, x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(source, x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// Splits an ADD/GET argument string into exactly two paths.
pub(crate) fn two_paths(source: &str, verb: &str, text: &str) -> Result<(String, String), String> {
    let words = shell_words::split(text)
        .map_err(|e| format!("{source}: {verb} {text:?}: {e} (check the quotes)"))?;
    match <[String; 2]>::try_from(words) {
        Ok([a, b]) => Ok((a, b)),
        Err(w) => Err(format!(
            "{source}: {verb} takes two paths (`{verb} FROM TO`), got {}: {text:?}",
            w.len()
        )),
    }
}

/// A local path made absolute against the current directory.
pub fn local_path(p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_extends_lists_and_replaces_scalars() {
        let mut a = json!({"g": {"targets": [1], "args": {"port": 22}}, "x": 1});
        merge(
            &mut a,
            json!({"g": {"targets": [2], "args": {"username": "u"}}, "x": 2}),
        );
        assert_eq!(
            a,
            json!({"g": {"targets": [1, 2], "args": {"port": 22, "username": "u"}}, "x": 2})
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let mut c = Catalog::default();
        let doc = parse(
            "c.yaml",
            "ingot_minions:\n  targets:\n  - {host: a, port: 99999}\n",
        )
        .unwrap();
        let e = validate("c.yaml", &doc, &mut c).unwrap_err().to_string();
        assert!(
            e.contains("c.yaml") && e.contains("ingot_minions.targets[0].port"),
            "{e}"
        );
        let doc = parse(
            "d.yaml",
            "ingot_minions:\n  jobs:\n  - [{RUN: x}, {COPY: y}]\n",
        )
        .unwrap();
        let e = validate("d.yaml", &doc, &mut c).unwrap_err().to_string();
        assert!(
            e.contains("d.yaml") && e.contains("ingot_minions.jobs[0][1]") && e.contains("COPY"),
            "{e}"
        );
    }

    #[test]
    fn two_paths_needs_two() {
        assert_eq!(
            two_paths("s", "ADD", "a 'b c'").unwrap(),
            ("a".into(), "b c".into())
        );
        assert!(two_paths("s", "ADD", "a").is_err());
    }
}
