//! What every verb shares: the [`Ctx`] a verb gets, the [`JobOutput`] it returns, and running
//! programs ([`sh`], [`prog`], [`detach`], [`retry`], [`sections`]).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::directord::template;

/// What a verb's `job` action prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobOutput {
    /// Success.
    pub outcome: bool,
    /// The job's stdout.
    #[serde(default)]
    pub stdout: String,
    /// The job's stderr.
    #[serde(default)]
    pub stderr: String,
    /// Directord's INFO (e.g. the rendered command).
    #[serde(default)]
    pub info: String,
    /// Values to deep-merge into the args.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_args: Option<Map<String, Value>>,
    /// Extend lists when merging `set_args`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extend_args: bool,
    /// Values to deep-merge into the envs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_envs: Option<Map<String, Value>>,
    /// A CACHEEVICT tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evict: Option<String>,
    /// A QUERY: `{"name": ARGNAME, "value": VALUE}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Value>,
    /// A JOB_WAIT: `{"sha": SHA3-224, "identities": [NAME, ...]}`. The engine waits (through
    /// the master on a network minion), because a verb process sees only its own cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_wait: Option<Value>,
}

impl JobOutput {
    pub(crate) fn ok(stdout: impl Into<String>) -> Self {
        Self {
            outcome: true,
            stdout: stdout.into(),
            ..Self::default()
        }
    }

    pub(crate) fn fail(stderr: impl Into<String>) -> Self {
        Self {
            outcome: false,
            stderr: stderr.into(),
            ..Self::default()
        }
    }

    pub(super) fn info(mut self, info: impl Into<String>) -> Self {
        self.info = info.into();
        self
    }
}

/// What a verb gets.
pub struct Ctx {
    /// The job's fields.
    pub job: Map<String, Value>,
    /// The minion's args (template context).
    pub args: Map<String, Value>,
    /// The minion's envs.
    pub envs: Map<String, Value>,
    /// The cache directory (QUERY_WAIT, JOB_WAIT read it).
    pub cache_dir: Option<PathBuf>,
    /// Local path of an ADD/COPY source's content.
    pub source: Option<PathBuf>,
}

impl Ctx {
    pub(super) fn s(&self, k: &str) -> Option<&str> {
        self.job.get(k).and_then(Value::as_str)
    }
    pub(super) fn b(&self, k: &str) -> bool {
        self.job.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
    pub(super) fn i(&self, k: &str, d: i64) -> i64 {
        self.job.get(k).and_then(Value::as_i64).unwrap_or(d)
    }
    pub(super) fn list(&self, k: &str) -> Vec<String> {
        match self.job.get(k) {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        }
    }
    #[allow(clippy::result_large_err)]
    pub(super) fn render(&self, what: &str, t: &str) -> Result<String, JobOutput> {
        template::render(what, t, &self.args).map_err(|e| JobOutput::fail(e.to_string()))
    }
    pub(super) fn env_pairs(&self) -> Vec<(String, String)> {
        self.envs
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    }

    /// The context from a `job` action's input document.
    pub fn from_input(state: &Value) -> Self {
        let obj = |k: &str| {
            state
                .get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let path = |k: &str| state.get(k).and_then(Value::as_str).map(PathBuf::from);
        Ctx {
            job: obj("job"),
            args: obj("args"),
            envs: obj("envs"),
            cache_dir: path("cache_dir"),
            source: path("source"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Running programs.

/// What a program did.
pub(super) struct Ran {
    /// It exited 0.
    pub(super) ok: bool,
    /// Its stdout.
    pub(super) stdout: String,
    /// Its stderr (or why it could not run).
    pub(super) stderr: String,
}

/// Runs `cmd` with `/bin/sh -c`.
pub(super) fn sh(cmd: &str, envs: &[(String, String)]) -> Ran {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg(cmd).stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    run_cmd(c, cmd)
}

fn run_cmd(mut c: Command, what: &str) -> Ran {
    ran(c.output(), what)
}

/// What a finished program did, or why `what` could not run.
pub(super) fn ran(out: std::io::Result<std::process::Output>, what: &str) -> Ran {
    match out {
        Ok(o) => Ran {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Ran {
            ok: false,
            stdout: String::new(),
            stderr: format!("cannot run {what}: {e}"),
        },
    }
}

/// Runs `program` with `args`.
pub(super) fn prog(program: &str, args: &[String], envs: &[(String, String)]) -> Ran {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    run_cmd(c, program)
}

/// Starts `cmd` with `/bin/sh -c` in its own session and leaves it running.
pub(super) fn detach(cmd: &str, envs: &[(String, String)]) -> std::io::Result<()> {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    // SAFETY: setsid is async-signal-safe; called in the child between fork and exec.
    unsafe {
        c.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    c.spawn().map(|_| ())
}

/// Whether `program` is on the PATH.
pub(super) fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

/// The output of several commands run in turn: each stdout under a `=== TITLE ===` header,
/// the stderrs joined, the outcome the last one's.
pub(super) fn sections(parts: Vec<(String, Ran)>) -> JobOutput {
    let mut out = String::new();
    let mut err = String::new();
    let mut ok = true;
    for (title, r) in &parts {
        out.push_str(&format!("=== {title} ===\n{}", r.stdout));
        err.push_str(&r.stderr);
        ok = r.ok;
    }
    JobOutput {
        outcome: ok,
        stdout: out,
        stderr: err,
        ..JobOutput::default()
    }
}

/// Runs `f` up to `n` times (at least once), a second apart, until it succeeds.
pub(super) fn retry(n: i64, f: impl Fn() -> Ran) -> Ran {
    let mut r = f();
    for _ in 1..n.max(1) {
        if r.ok {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        r = f();
    }
    r
}
