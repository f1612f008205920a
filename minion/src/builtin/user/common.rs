//! Helpers shared by the system resources (`user`, `group`, `cron`, `service`, `package`):
//! state parsing, `changes` computation, checks of names and fields, the colon-separated
//! databases under `/etc` and running a tool with a clear error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::builtin::ResourceError;

/// `present` or `absent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Presence {
    /// The thing exists.
    #[default]
    Present,
    /// The thing does not exist.
    Absent,
}

impl Presence {
    /// The JSON word.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Presence::Present => "present",
            Presence::Absent => "absent",
        }
    }
}

/// Parses a desired state into `T`, after checking it is an object and dropping the fields
/// every state may carry (`kind` if it matches, `sensitive`, `notify`).
pub(crate) fn parse<T: DeserializeOwned>(kind: &str, state: &Value) -> Result<T, ResourceError> {
    let Value::Object(map) = state else {
        return Err(ResourceError::input(
            "",
            format!("the {kind} state must be a JSON object, e.g. {{\"name\": \"...\"}}"),
        ));
    };
    let mut map = map.clone();
    if let Some(k) = map.remove("kind") {
        if k.as_str() != Some(kind) {
            return Err(ResourceError::input(
                "/kind",
                format!("expected \"{kind}\" (or no kind at all), got {k}"),
            ));
        }
    }
    map.remove("sensitive");
    map.remove("notify");
    serde_json::from_value(Value::Object(map)).map_err(|e| {
        let msg = e.to_string();
        // serde names the field in backticks for unknown and missing fields.
        let pointer = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .map(|f| format!("/{f}"))
            .unwrap_or_default();
        ResourceError::input(pointer, msg)
    })
}

/// Records `field` in `changes` when the observed and desired values differ.
pub(crate) fn diff(
    changes: &mut Map<String, Value>,
    field: &str,
    observed: &Value,
    desired: &Value,
) {
    if observed != desired {
        changes.insert(
            field.to_string(),
            serde_json::json!({"observed": observed, "desired": desired}),
        );
    }
}

/// Adds `changes` to an observed state when there are any.
/// The start of an account observation (`user`, `group`): kind, name, root, whether it
/// exists, and the `state` change when that differs from what is wanted.
pub(crate) fn account_head(
    kind: &str,
    name: &str,
    root: Option<&str>,
    exists: bool,
    want: Presence,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut o = Map::new();
    o.insert("kind".into(), serde_json::json!(kind));
    o.insert("name".into(), serde_json::json!(name));
    if let Some(r) = root {
        o.insert("root".into(), serde_json::json!(r));
    }
    let have = if exists { "present" } else { "absent" };
    o.insert("exists".into(), serde_json::json!(exists));
    o.insert("state".into(), serde_json::json!(have));
    let mut changes = Map::new();
    diff(
        &mut changes,
        "state",
        &serde_json::json!(have),
        &serde_json::json!(want.as_str()),
    );
    (o, changes)
}

pub(crate) fn with_changes(mut observed: Map<String, Value>, changes: Map<String, Value>) -> Value {
    if !changes.is_empty() {
        observed.insert("changes".into(), Value::Object(changes));
    }
    Value::Object(observed)
}

/// Checks a name that goes on a tool's command line: not empty, no leading `-` (it would be
/// read as an option), none of `:`, `,`, `/`, whitespace or control characters.
pub(crate) fn check_name(pointer: &str, name: &str) -> Result<(), ResourceError> {
    if name.is_empty()
        || name.starts_with('-')
        || name.len() > 64
        || name
            .chars()
            .any(|c| c == ':' || c == ',' || c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(ResourceError::input(
            pointer,
            format!(
                "{name:?} is not a valid name: use 1-64 characters, not starting with '-', \
                 without ':', ',', '/', spaces or control characters"
            ),
        ));
    }
    Ok(())
}

/// Checks a value that goes into a colon-separated system file (passwd, group, shadow).
pub(crate) fn check_field(pointer: &str, value: &str) -> Result<(), ResourceError> {
    if value.contains(':') || value.chars().any(|c| c.is_control()) {
        return Err(ResourceError::input(
            pointer,
            "must not contain ':' or control characters (it is stored in a colon-separated file)",
        ));
    }
    Ok(())
}

/// The alternate root: `None` for the host (`/` or absent), else the directory, which must
/// be an absolute path to an existing directory.
pub(crate) fn alt_root(root: Option<&str>) -> Result<Option<PathBuf>, ResourceError> {
    match root {
        None | Some("/") | Some("") => Ok(None),
        Some(r) => {
            let p = PathBuf::from(r);
            if !p.is_absolute() {
                return Err(ResourceError::input(
                    "/root",
                    format!("{r:?} must be an absolute path"),
                ));
            }
            if !p.is_dir() {
                return Err(ResourceError::input(
                    "/root",
                    format!("{r:?} is not a directory; create it (with etc/passwd, etc/group, etc/shadow, etc/gshadow) first"),
                ));
            }
            Ok(Some(p))
        }
    }
}

/// `ROOT/etc/NAME` (or `/etc/NAME`).
pub(crate) fn etc_file(root: Option<&Path>, name: &str) -> PathBuf {
    root.unwrap_or(Path::new("/")).join("etc").join(name)
}

/// Reads a colon-separated database as rows of fields. A missing file is empty.
pub(crate) fn read_db(path: &Path) -> Result<Vec<Vec<String>>, ResourceError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(ResourceError::Io {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// A comma-separated list as a sorted, deduplicated list.
pub(crate) fn sorted_set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> Vec<String> {
    let mut v: Vec<String> = items
        .into_iter()
        .map(Into::into)
        .filter(|s: &String| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Whether an executable of this name is on `PATH` (or is this absolute path).
pub(crate) fn have(program: &str) -> bool {
    find_program(program).is_some()
}

/// The full path of an executable on `PATH` (including the sbin directories, which a
/// non-login root shell may lack).
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain([
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ])
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| is_exec(p));
    found
}

/// One run of a system tool, with a printable command line that masks secrets, and a hint
/// appended to its error.
pub(crate) struct Tool {
    program: String,
    args: Vec<String>,
    shown: String,
    envs: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
    hint: String,
    retry_lock: bool,
}

/// What a tool printed and how it exited.
pub(crate) struct Outcome {
    /// Exit code (-1 when killed by a signal).
    pub(crate) code: i32,
    /// Standard output.
    pub(crate) stdout: String,
    /// Standard error.
    pub(crate) stderr: String,
}

impl Outcome {
    /// Exited 0.
    pub(crate) fn ok(&self) -> bool {
        self.code == 0
    }
}

impl Tool {
    /// A run of `program`.
    pub(crate) fn new(program: &str) -> Self {
        Self {
            program: program.to_string(),
            args: Vec::new(),
            shown: program.to_string(),
            envs: Vec::new(),
            stdin: None,
            hint: String::new(),
            retry_lock: false,
        }
    }

    /// Adds an argument.
    pub(crate) fn arg(mut self, a: impl Into<String>) -> Self {
        let a = a.into();
        self.shown.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$`*?".contains(c)) {
            self.shown.push('\'');
            self.shown.push_str(&a.replace('\'', "'\\''"));
            self.shown.push('\'');
        } else {
            self.shown.push_str(&a);
        }
        self.args.push(a);
        self
    }

    /// Adds arguments.
    pub(crate) fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Adds an argument that is shown as `***`.
    pub(crate) fn secret_arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self.shown.push_str(" ***");
        self
    }

    /// Sets an environment variable.
    pub(crate) fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Feeds this to the tool's stdin (never shown).
    pub(crate) fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// What to try when the tool fails.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    /// Retries (for about 10 s) while the tool reports that a database is locked by another
    /// process (shadow's "cannot lock").
    pub(crate) fn retry_when_locked(mut self) -> Self {
        self.retry_lock = true;
        self
    }

    /// Runs the tool and returns how it went, whatever the exit code. Fails only when it
    /// cannot be started.
    pub(crate) fn outcome(&self) -> Result<Outcome, ResourceError> {
        let mut attempt = 0;
        loop {
            let out = self.once()?;
            let locked =
                out.stderr.contains("cannot lock") || out.stderr.contains("try again later");
            if out.ok() || !self.retry_lock || !locked || attempt >= 50 {
                return Ok(out);
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn once(&self) -> Result<Outcome, ResourceError> {
        let program = find_program(&self.program).ok_or_else(|| {
            ResourceError::Failed(format!(
                "cannot run `{}`: {} is not installed or not on PATH{}",
                self.shown,
                self.program,
                self.hint_suffix()
            ))
        })?;
        let mut cmd = Command::new(program);
        cmd.args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| {
            ResourceError::Failed(format!(
                "cannot run `{}`: {e}{}",
                self.shown,
                self.hint_suffix()
            ))
        })?;
        if let Some(data) = &self.stdin {
            if let Some(mut pipe) = child.stdin.take() {
                // A tool that exits early closes the pipe; its exit status tells why.
                let _ = pipe.write_all(data);
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ResourceError::Failed(format!("waiting for `{}`: {e}", self.shown)))?;
        Ok(Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn hint_suffix(&self) -> String {
        if self.hint.is_empty() {
            String::new()
        } else {
            format!("; {}", self.hint)
        }
    }

    /// The error for a failed outcome: the command line, exit code, the tool's stderr
    /// (or stdout when stderr is empty) and the hint.
    pub(crate) fn error(&self, out: &Outcome) -> ResourceError {
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        let text = text.trim();
        let text = if text.len() > 2000 {
            let mut cut = text.len() - 2000;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            &text[cut..]
        } else {
            text
        };
        ResourceError::Failed(format!(
            "`{}` failed (exit {}): {}{}",
            self.shown,
            out.code,
            if text.is_empty() { "(no output)" } else { text },
            self.hint_suffix()
        ))
    }

    /// Runs the tool and returns its stdout; a non-zero exit is an error with its stderr.
    pub(crate) fn run(self) -> Result<String, ResourceError> {
        let out = self.outcome()?;
        if out.ok() {
            Ok(out.stdout)
        } else {
            Err(self.error(&out))
        }
    }
}
