//! `/etc/ingot/config.yaml`: settings for every command, below `INGOT_*` variables and flags.
//!
//! The file is a flat YAML mapping whose keys are the `INGOT_*` variables without the prefix,
//! in lower case (`master: /srv/ingot/master` is `INGOT_MASTER`). It is applied by exporting
//! each key as its variable unless that variable is already set, before the command line is
//! parsed; clap then reads flags first and variables second, so flags win over the environment
//! and the environment over the file.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The file read when neither `--config` nor `INGOT_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/ingot/config.yaml";

/// Keys the file may set (each is `INGOT_` + the key in upper case).
pub const KEYS: &[&str] = &[
    "master",
    "minion",
    "history",
    "log",
    "debug",
    "listen",
    "master_addr",
    "socket_group",
    "enroll_listen",
    "enroll_token",
    "bootstrap_threads",
    "bootstrap_ssh_key_file",
];

/// Why the configuration file was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a YAML mapping of known keys to plain values.
    #[error("{path}: {message}\n  fix: write `key: value` lines; known keys: {}", KEYS.join(", "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line for YAML errors).
        message: String,
    },
}

/// The file named by `--config PATH` / `--config=PATH` in `args`, else `INGOT_CONFIG`, else the
/// default path when it exists. `Some(explicit)` is true when the user named it.
pub fn locate(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os("INGOT_CONFIG") {
        return Some((PathBuf::from(p), true));
    }
    let default = Path::new(DEFAULT_PATH);
    default.exists().then(|| (default.to_path_buf(), false))
}

/// Parses the file into `(VARIABLE, value)` pairs.
pub fn read(path: &Path) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    let invalid = |message: String| ConfigError::Invalid {
        path: path.into(),
        message,
    };
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: serde_json::Value =
        serde_saphyr::from_str(&text).map_err(|e| invalid(format!("not valid YAML: {e}")))?;
    let map = match doc {
        serde_json::Value::Object(m) => m,
        serde_json::Value::Null => return Ok(Vec::new()),
        other => {
            return Err(invalid(format!(
                "expected a mapping of settings, found {other}"
            )))
        }
    };
    let mut out = Vec::new();
    for (key, value) in map {
        if !KEYS.contains(&key.as_str()) {
            return Err(invalid(format!("unknown key {key:?}")));
        }
        let value = match value {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => {
                return Err(invalid(format!(
                    "{key}: expected a plain value (text, number or true/false), found {other}"
                )))
            }
        };
        out.push((format!("INGOT_{}", key.to_ascii_uppercase()), value));
    }
    Ok(out)
}

/// Applies the configuration file to this process's environment (variables already set win).
/// Call it first thing in `main`, before any thread starts.
pub fn apply_to_env(args: &[OsString]) -> Result<Option<PathBuf>, ConfigError> {
    let Some((path, _explicit)) = locate(args) else {
        return Ok(None);
    };
    for (var, value) in read(&path)? {
        if std::env::var_os(&var).is_none() {
            // SAFETY (edition 2021: safe fn): called before any other thread exists.
            std::env::set_var(&var, value);
        }
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn keys_become_variables() {
        let f = file("master: /srv/m\nbootstrap_threads: 4\n");
        let vars = read(f.path()).unwrap();
        assert!(vars.contains(&("INGOT_MASTER".into(), "/srv/m".into())));
        assert!(vars.contains(&("INGOT_BOOTSTRAP_THREADS".into(), "4".into())));
    }

    #[test]
    fn unknown_keys_and_nested_values_are_clear_errors() {
        let e = read(file("mastr: /x\n").path()).unwrap_err().to_string();
        assert!(
            e.contains("unknown key \"mastr\"") && e.contains("known keys: master"),
            "{e}"
        );
        let e = read(file("master: [a, b]\n").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("master: expected a plain value"), "{e}");
        let e = read(file("master: : :\n  - x").path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid YAML"), "{e}");
    }

    #[test]
    fn the_flag_is_found_before_the_double_dash_only() {
        let args: Vec<OsString> = ["ingot", "run", "--", "x", "--config", "no"]
            .iter()
            .map(Into::into)
            .collect();
        assert_ne!(locate(&args).map(|(p, _)| p), Some(PathBuf::from("no")));
        let args: Vec<OsString> = ["ingot", "--config=/c.yaml", "apply"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(locate(&args), Some((PathBuf::from("/c.yaml"), true)));
    }
}
