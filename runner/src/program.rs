//! What to run and how.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

/// What the program reads on stdin.
#[derive(Debug, Clone, Default)]
pub enum Input {
    /// `/dev/null`.
    #[default]
    Null,
    /// Raw bytes.
    Bytes(Vec<u8>),
    /// A JSON document (written compactly; its `sensitive` fields are redacted in events).
    Json(Value),
}

/// A program to run: path, arguments, environment, identity, input and limits.
#[derive(Debug, Clone)]
pub struct Program {
    /// The channel3 name its events carry (defaults to the file name of `path`).
    pub name: String,
    /// The executable; a bare name is looked up in `PATH`.
    pub path: PathBuf,
    /// Arguments after the program.
    pub args: Vec<OsString>,
    /// When set, the child gets exactly this environment; otherwise it inherits the runner's.
    pub env: Option<Vec<(OsString, OsString)>>,
    /// Variables added to (or overriding) the environment.
    pub env_add: Vec<(OsString, OsString)>,
    /// Environment variable names whose values are redacted in the `spawn` event, in addition
    /// to names that look secret (containing PASSWORD, SECRET, TOKEN, or ending in KEY).
    pub sensitive_env: Vec<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Run as this user (name or numeric uid), with its supplementary groups.
    pub user: Option<String>,
    /// Run with this primary group (name or numeric gid).
    pub group: Option<String>,
    /// Stdin.
    pub stdin: Input,
    /// Kill the process group after this long.
    pub timeout: Option<Duration>,
    /// Time between SIGTERM and SIGKILL on timeout.
    pub grace: Duration,
    /// How long after the leader exits to wait for grandchildren to release its pipes.
    pub leak_timeout: Duration,
    /// Give the child a channel3 pipe as fd 3 (otherwise fd 3 is closed in the child).
    pub channel3: bool,
    /// Keep stdout in [`crate::Outcome::stdout`] (events are emitted either way).
    pub capture_stdout: bool,
    /// Emit `stdout` line events (turn off for programs whose stdout is a large document).
    pub stdout_events: bool,
}

impl Program {
    /// A program with defaults: inherited environment, no stdin, no timeout, fd 3 given,
    /// stdout captured and emitted, a 5 s grace and a 500 ms leak timeout.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "program".into());
        Self {
            name,
            path,
            args: Vec::new(),
            env: None,
            env_add: Vec::new(),
            sensitive_env: Vec::new(),
            cwd: None,
            user: None,
            group: None,
            stdin: Input::Null,
            timeout: None,
            grace: Duration::from_secs(5),
            leak_timeout: Duration::from_millis(500),
            channel3: true,
            capture_stdout: true,
            stdout_events: true,
        }
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the channel3 name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Feeds a JSON document on stdin.
    pub fn json_stdin(mut self, value: &Value) -> Self {
        self.stdin = Input::Json(value.clone());
        self
    }

    /// Feeds raw bytes on stdin.
    pub fn bytes_stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Input::Bytes(bytes.into());
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the grace period between SIGTERM and SIGKILL.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env_add.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs as `user`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Runs with primary group `group`.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}
