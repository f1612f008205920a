//! Jobs: a parsed verb string with its parent, fingerprint and (for ADD/COPY) source file.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha3::{Digest, Sha3_224};

use super::syntax::{self, Parsed, VerbError, VerbSpec};

/// Fields that never enter a fingerprint.
pub const NOT_FINGERPRINTED: &[&str] = &["skip_cache", "force_lock", "exec_help", NOT_STARTED];

/// A field the master adds to a job for a minion it could not prepare the job for (its
/// ADD/COPY content or user component did not arrive): the engine fails the job with this
/// text instead of running it, so the job's parent fails on that minion as usual.
pub const NOT_STARTED: &str = "ingot_not_started";

pub use crate::wire::Job;

impl Job {
    /// `--timeout` in seconds (600 when absent).
    pub fn timeout(&self) -> u64 {
        self.fields
            .get("timeout")
            .and_then(Value::as_u64)
            .unwrap_or(600)
    }

    /// A boolean field.
    pub fn flag(&self, name: &str) -> bool {
        self.fields
            .get(name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// The queue this job runs in on a minion: its parent's own queue when async, else the
    /// general one.
    pub fn queue(&self) -> String {
        if self.parent_async {
            format!("async-{}", self.parent_id)
        } else {
            "general".into()
        }
    }

    /// The text shown for the job: verb and its string.
    pub fn summary(&self) -> String {
        if !self.text.is_empty() {
            return format!("{} {}", self.verb, self.text);
        }
        let payload: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "timeout" | "run_once" | "skip_cache" | "force_lock" | "file_sha3_224"
                )
            })
            .filter_map(|(k, v)| match v {
                Value::Null | Value::Bool(false) => None,
                Value::Bool(true) => Some(k.clone()),
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            })
            .collect();
        format!("{} {}", self.verb, payload.join(" "))
    }
}

/// SHA3-224 (hex) of bytes.
pub fn sha3_hex(bytes: &[u8]) -> String {
    let mut h = Sha3_224::new();
    h.update(bytes);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA3-224 of a file's content.
pub fn file_sha3(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha3_224::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// The job fingerprint: SHA3-224 of the compact JSON (keys sorted) of `verb` and every field
/// except `skip_cache`, `force_lock` and `exec_help`. `timeout`, `run_once`, the output args
/// and, for ADD/COPY, the source path and its content hash are included.
pub fn fingerprint(verb: &str, fields: &Map<String, Value>) -> String {
    let mut canon: Map<String, Value> = fields
        .iter()
        .filter(|(k, _)| !NOT_FINGERPRINTED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    canon.insert("verb".into(), Value::String(verb.to_uppercase()));
    sha3_hex(Value::Object(canon).to_string().as_bytes())
}

/// Why jobs could not be built from a verb string.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The verb string is bad.
    #[error(transparent)]
    Verb(#[from] VerbError),
    /// An ADD/COPY source matched no file.
    #[error("{verb}: the value of [ {pattern} ] was not found relative to {cwd} (ADD/COPY sources are read on this host, relative to the working directory; only regular files count)")]
    NoSource {
        /// The verb.
        verb: String,
        /// The source pattern.
        pattern: String,
        /// The working directory.
        cwd: PathBuf,
    },
    /// An ADD/COPY source glob is invalid or unreadable.
    #[error("{verb}: cannot read source {path}: {reason}")]
    Source {
        /// The verb.
        verb: String,
        /// The path or pattern.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Where a job comes from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Parent id (a fresh uuid per orchestration; `None`: the job is its own parent).
    pub parent_id: Option<String>,
    /// SHA3-224 of the orchestration item.
    pub parent_sha3_224: Option<String>,
    /// Orchestration name.
    pub parent_name: Option<String>,
    /// Job name.
    pub job_name: Option<String>,
    /// Async orchestration.
    pub parent_async: bool,
    /// Targets.
    pub targets: Vec<String>,
    /// Force `skip_cache` (`orchestrate --ignore-cache`).
    pub ignore_cache: bool,
}

/// What a verb string builds: its jobs, or the `--exec-help` text it asked for.
#[derive(Debug, Clone)]
pub enum Built {
    /// The jobs.
    Jobs(Vec<Job>),
    /// `--exec-help` was given: the help text to print instead.
    Help(String),
}

/// Builds the jobs for one verb string: one job, or for a transfer verb (ADD/COPY) one per
/// source file matched (globs expand relative to `cwd`, on this host). Returns
/// [`Built::Help`] for `--exec-help`.
pub fn build(
    spec: &VerbSpec,
    verb: &str,
    kind: &str,
    text: &str,
    vars: &Map<String, Value>,
    origin: &Origin,
    cwd: &Path,
) -> Result<Built, BuildError> {
    let verb = verb.to_uppercase();
    let mut fields = match syntax::parse(spec, &verb, text, vars)? {
        Parsed::Help(h) => return Ok(Built::Help(h)),
        Parsed::Fields(f) => f,
    };
    if origin.ignore_cache {
        fields.insert("skip_cache".into(), Value::Bool(true));
    }
    let mk = |fields: Map<String, Value>| {
        let job_id = uuid::Uuid::new_v4().to_string();
        Job {
            sha3_224: fingerprint(&verb, &fields),
            parent_id: origin.parent_id.clone().unwrap_or_else(|| job_id.clone()),
            job_id,
            verb: verb.clone(),
            text: text.trim().to_owned(),
            kind: kind.into(),
            fields,
            cacheable: spec.cacheable,
            parent_sha3_224: origin.parent_sha3_224.clone(),
            parent_name: origin.parent_name.clone(),
            job_name: origin.job_name.clone(),
            parent_async: origin.parent_async,
            targets: origin.targets.clone(),
        }
    };
    if !spec.transfer {
        return Ok(Built::Jobs(vec![mk(fields)]));
    }
    let from = fields
        .get("from")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let to = fields
        .get("to")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let files = expand(&verb, &from, cwd)?;
    let mut jobs = Vec::new();
    for file in files {
        let sha = file_sha3(&file).map_err(|e| BuildError::Source {
            verb: verb.clone(),
            path: file.display().to_string(),
            reason: e.to_string(),
        })?;
        let file_to = if to.ends_with('/') {
            format!(
                "{to}{}",
                file.file_name().unwrap_or_default().to_string_lossy()
            )
        } else {
            to.clone()
        };
        let mut f = fields.clone();
        f.insert(
            "file_from".into(),
            Value::String(file.display().to_string()),
        );
        f.insert("file_sha3_224".into(), Value::String(sha));
        f.insert("file_to".into(), Value::String(file_to));
        jobs.push(mk(f));
    }
    Ok(Built::Jobs(jobs))
}

/// Expands a source glob relative to `cwd` into regular files (absolute paths, sorted).
pub fn expand(verb: &str, pattern: &str, cwd: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let not_found = || BuildError::NoSource {
        verb: verb.into(),
        pattern: pattern.into(),
        cwd: cwd.to_owned(),
    };
    let abs = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        cwd.join(pattern)
    };
    if !pattern.contains(['*', '?', '[', '{']) {
        return match std::fs::metadata(&abs) {
            Ok(m) if m.is_file() => Ok(vec![abs]),
            _ => Err(not_found()),
        };
    }
    // Walk from the longest literal prefix directory.
    let text = abs.to_string_lossy().into_owned();
    let cut = text.find(['*', '?', '[', '{']).unwrap_or(text.len());
    let base = match text[..cut].rfind('/') {
        Some(i) => PathBuf::from(&text[..=i]),
        None => PathBuf::from("/"),
    };
    let glob = globset::GlobBuilder::new(&text)
        .literal_separator(true)
        .build()
        .map_err(|e| BuildError::Source {
            verb: verb.into(),
            path: pattern.into(),
            reason: e.to_string(),
        })?
        .compile_matcher();
    let depth = text[cut..].matches('/').count() + 1;
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&base)
        .max_depth(depth)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && glob.is_match(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(not_found());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directord::syntax::{OptSpec, OptType};

    fn add_spec() -> VerbSpec {
        let mut s = VerbSpec::new(
            "transfer",
            vec![
                OptSpec::pos("from", OptType::Str, None, "source"),
                OptSpec::pos("to", OptType::Str, None, "dest"),
            ],
        );
        s.transfer = true;
        s
    }

    fn build_one(spec: &VerbSpec, verb: &str, text: &str, cwd: &Path) -> Vec<Job> {
        match build(spec, verb, verb, text, &Map::new(), &Origin::default(), cwd).unwrap() {
            Built::Jobs(jobs) => jobs,
            Built::Help(h) => panic!("help: {h}"),
        }
    }

    #[test]
    fn add_fingerprint_follows_source_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "one").unwrap();
        let spec = add_spec();
        let first = build_one(&spec, "ADD", "a.txt /tmp/x/", d.path());
        let again = build_one(&spec, "ADD", "a.txt /tmp/x/", d.path());
        assert_eq!(first[0].sha3_224, again[0].sha3_224);
        assert_eq!(first[0].str("file_to"), Some("/tmp/x/a.txt"));
        std::fs::write(d.path().join("a.txt"), "two").unwrap();
        let changed = build_one(&spec, "ADD", "a.txt /tmp/x/", d.path());
        assert_ne!(first[0].sha3_224, changed[0].sha3_224);
    }

    #[test]
    fn globs_give_one_job_per_file_and_missing_sources_are_errors() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.conf"), "a").unwrap();
        std::fs::write(d.path().join("b.conf"), "b").unwrap();
        std::fs::write(d.path().join("c.txt"), "c").unwrap();
        let jobs = build_one(&add_spec(), "COPY", "*.conf /etc/", d.path());
        assert_eq!(jobs.len(), 2);
        assert_ne!(jobs[0].sha3_224, jobs[1].sha3_224);
        let e = build(
            &add_spec(),
            "ADD",
            "add",
            "nope.txt /x",
            &Map::new(),
            &Origin::default(),
            d.path(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("[ nope.txt ] was not found"), "{e}");
    }

    #[test]
    fn fingerprint_ignores_skip_cache_but_not_timeout() {
        let spec = VerbSpec::new(
            "run",
            vec![OptSpec::pos("command", OptType::Str, Some("rest"), "cmd")],
        );
        let d = Path::new("/");
        let a = build_one(&spec, "RUN", "echo hi", d);
        let b = build_one(&spec, "RUN", "--skip-cache echo hi", d);
        let c = build_one(&spec, "RUN", "--timeout 5 echo hi", d);
        assert_eq!(a[0].sha3_224, b[0].sha3_224);
        assert_ne!(a[0].sha3_224, c[0].sha3_224);
        assert_eq!(a[0].sha3_224.len(), 56);
    }
}
