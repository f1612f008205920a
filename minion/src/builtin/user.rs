//! The `user` resource: a local account managed with the system's own shadow tools
//! (`useradd`, `usermod`, `userdel`, and `chpasswd -e` for the password hash).
//!
//! Desired state: `name` (identity), `state` (`present` | `absent`, default `present`), `uid`,
//! `gid` or `group` (primary group by number or name), `groups` (the exact set of supplementary
//! groups), `home`, `shell`, `comment` (GECOS), `password` (an already hashed password, as in
//! `/etc/shadow`; sensitive), `system`, `create_home`, `move_home`, `remove_home`, and `root`.
//!
//! `root` is an alternate root directory (an image, a test tree): the tools run with
//! `--prefix ROOT` (no chroot needed) and inspect reads `ROOT/etc/passwd`, `ROOT/etc/group` and
//! `ROOT/etc/shadow`. Without it the host's files are used.
//!
//! The password hash never leaves the resource in clear: the observed `password` is `"***"`
//! when a hash is set, a password difference is reported as `"***"` on both sides, the
//! observed state lists `"sensitive": ["password"]`, and tool command lines in error messages
//! show `***` in its place. On the host the hash is set through `chpasswd -e` on stdin, so it
//! does not appear in the process list; under an alternate root `usermod --prefix ROOT -p` is
//! used (chpasswd has no `--prefix`).
//!
//! This file also holds [`common`], the helpers the other system resources (`group`, `cron`,
//! `service`, `package`) share: state parsing, `changes` computation and running a tool with a
//! clear error.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Resource, ResourceError};
use common::{diff, parse, Presence, Tool};

/// Helpers shared by the system resources.
pub(crate) mod common {
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
    pub(crate) fn parse<T: DeserializeOwned>(
        kind: &str,
        state: &Value,
    ) -> Result<T, ResourceError> {
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

    pub(crate) fn with_changes(
        mut observed: Map<String, Value>,
        changes: Map<String, Value>,
    ) -> Value {
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
}

const KIND: &str = "user";

/// The `user` resource.
pub struct User;

/// The desired state of a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserState {
    name: String,
    #[serde(default)]
    state: Presence,
    uid: Option<u32>,
    gid: Option<u32>,
    group: Option<String>,
    groups: Option<Vec<String>>,
    home: Option<String>,
    shell: Option<String>,
    comment: Option<String>,
    password: Option<String>,
    system: Option<bool>,
    create_home: Option<bool>,
    move_home: Option<bool>,
    remove_home: Option<bool>,
    root: Option<String>,
}

impl UserState {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let s: Self = parse(KIND, state)?;
        common::check_name("/name", &s.name)?;
        if let Some(g) = &s.group {
            common::check_name("/group", g)?;
        }
        for (i, g) in s.groups.iter().flatten().enumerate() {
            common::check_name(&format!("/groups/{i}"), g)?;
        }
        for (ptr, v) in [
            ("/home", &s.home),
            ("/shell", &s.shell),
            ("/comment", &s.comment),
            ("/password", &s.password),
        ] {
            if let Some(v) = v {
                common::check_field(ptr, v)?;
            }
        }
        for (ptr, v) in [("/home", &s.home), ("/shell", &s.shell)] {
            if let Some(v) = v {
                if !v.starts_with('/') {
                    return Err(ResourceError::input(
                        ptr,
                        format!("{v:?} must be an absolute path"),
                    ));
                }
            }
        }
        Ok(s)
    }
}

/// A user as read from passwd/group/shadow.
struct Account {
    uid: u32,
    gid: u32,
    comment: String,
    home: String,
    shell: String,
    /// Name of the primary group, when the group file has it.
    group: Option<String>,
    /// Supplementary groups, sorted.
    groups: Vec<String>,
    /// The shadow hash; `None` when shadow is unreadable or has no entry.
    hash: Option<String>,
}

/// Reads an account from the passwd, group and shadow files under `root`.
fn read_account(
    root: Option<&std::path::Path>,
    name: &str,
    need_hash: bool,
) -> Result<Option<Account>, ResourceError> {
    let passwd = common::read_db(&common::etc_file(root, "passwd"))?;
    let Some(row) = passwd
        .iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
    else {
        return Ok(None);
    };
    let field = |i: usize| row.get(i).cloned().unwrap_or_default();
    let num = |i: usize| field(i).parse::<u32>().unwrap_or(u32::MAX);
    let gid = num(3);
    let groups_db = common::read_db(&common::etc_file(root, "group"))?;
    let group = groups_db
        .iter()
        .find(|g| g.get(2).and_then(|x| x.parse::<u32>().ok()) == Some(gid))
        .and_then(|g| g.first().cloned());
    let groups = common::sorted_set(
        groups_db
            .iter()
            .filter(|g| {
                g.get(3)
                    .map(|m| m.split(',').any(|u| u == name))
                    .unwrap_or(false)
            })
            .filter_map(|g| g.first().cloned()),
    );
    let shadow_path = common::etc_file(root, "shadow");
    let hash = match common::read_db(&shadow_path) {
        Ok(rows) => rows
            .iter()
            .find(|r| r.first().map(String::as_str) == Some(name))
            .and_then(|r| r.get(1).cloned()),
        Err(e) if need_hash => {
            return Err(ResourceError::Failed(format!(
                "cannot read the password hash: {e}; run as root to manage passwords"
            )))
        }
        Err(_) => None,
    };
    Ok(Some(Account {
        uid: num(2),
        gid,
        comment: field(4),
        home: field(5),
        shell: field(6),
        group,
        groups,
        hash,
    }))
}

/// Whether a shadow hash field holds a hash (not empty, not a lock marker alone).
fn hash_is_set(hash: &str) -> bool {
    !hash.is_empty() && hash != "!" && hash != "*" && hash != "!*"
}

fn observe(d: &UserState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let acct = read_account(root.as_deref(), &d.name, d.password.is_some())?;
    let (mut o, mut changes) =
        common::account_head(KIND, &d.name, d.root.as_deref(), acct.is_some(), d.state);
    let Some(a) = acct else {
        return Ok(common::with_changes(o, changes));
    };
    o.insert("uid".into(), json!(a.uid));
    o.insert("gid".into(), json!(a.gid));
    if let Some(g) = &a.group {
        o.insert("group".into(), json!(g));
    }
    o.insert("groups".into(), json!(a.groups));
    o.insert("home".into(), json!(a.home));
    o.insert("shell".into(), json!(a.shell));
    o.insert("comment".into(), json!(a.comment));
    let set = a.hash.as_deref().map(hash_is_set).unwrap_or(false);
    if set {
        o.insert("password".into(), json!("***"));
    }
    if set || d.password.is_some() {
        o.insert("sensitive".into(), json!(["password"]));
    }
    if d.state == Presence::Present {
        if let Some(v) = d.uid {
            diff(&mut changes, "uid", &json!(a.uid), &json!(v));
        }
        if let Some(v) = d.gid {
            diff(&mut changes, "gid", &json!(a.gid), &json!(v));
        }
        if let Some(v) = &d.group {
            diff(&mut changes, "group", &json!(a.group), &json!(v));
        }
        if let Some(v) = &d.groups {
            diff(
                &mut changes,
                "groups",
                &json!(a.groups),
                &json!(common::sorted_set(v.clone())),
            );
        }
        if let Some(v) = &d.home {
            diff(&mut changes, "home", &json!(a.home), &json!(v));
        }
        if let Some(v) = &d.shell {
            diff(&mut changes, "shell", &json!(a.shell), &json!(v));
        }
        if let Some(v) = &d.comment {
            diff(&mut changes, "comment", &json!(a.comment), &json!(v));
        }
        if let Some(v) = &d.password {
            if a.hash.as_deref() != Some(v.as_str()) {
                // Never the hash itself: both sides masked.
                changes.insert(
                    "password".into(),
                    json!({"observed": "***", "desired": "***"}),
                );
            }
        }
    }
    let mut out = common::with_changes(o, changes);
    if d.password.is_some() && out.get("changes").is_none() {
        // A choreograph comparing field by field would see "***" against the hash: say
        // explicitly that nothing differs.
        out["changes"] = json!({});
    }
    Ok(out)
}

/// `--prefix ROOT` for an alternate root.
fn prefix(tool: Tool, root: Option<&std::path::Path>) -> Tool {
    match root {
        Some(r) => tool.arg("--prefix").arg(r.display().to_string()),
        None => tool,
    }
}

const HINT_GROUPS: &str =
    "check that the primary and supplementary groups exist (manage them with the group resource first), that the uid is free, and that you run as root";

/// Sets the password hash: `chpasswd -e` (stdin) on the host, `usermod --prefix -p` otherwise.
fn set_password(
    root: Option<&std::path::Path>,
    name: &str,
    hash: &str,
) -> Result<(), ResourceError> {
    match root {
        None => Tool::new("chpasswd")
            .arg("-e")
            .stdin(format!("{name}:{hash}\n"))
            .hint("check that the user exists and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
        Some(_) => prefix(Tool::new("usermod"), root)
            .arg("-p")
            .secret_arg(hash)
            .arg(name)
            .hint("check that the user exists under the root directory and that you run as root")
            .retry_when_locked()
            .run()
            .map(drop),
    }
}

fn conform(d: &UserState) -> Result<Value, ResourceError> {
    let root = common::alt_root(d.root.as_deref())?;
    let root = root.as_deref();
    let acct = read_account(root, &d.name, d.password.is_some())?;
    if d.gid.is_some() && d.group.is_some() {
        // Both name the primary group: they must agree, else usermod would flip-flop.
        let groups = common::read_db(&common::etc_file(root, "group"))?;
        let by_name = groups
            .iter()
            .find(|g| g.first() == d.group.as_ref())
            .and_then(|g| g.get(2).and_then(|x| x.parse::<u32>().ok()));
        if by_name.is_some() && by_name != d.gid {
            return Err(ResourceError::input(
                "/gid",
                format!(
                    "gid {} and group {:?} (gid {}) name different primary groups; give only one",
                    d.gid.unwrap_or_default(),
                    d.group.as_deref().unwrap_or_default(),
                    by_name.unwrap_or_default()
                ),
            ));
        }
    }
    match (d.state, acct) {
        (Presence::Absent, None) => {}
        (Presence::Absent, Some(_)) => {
            let mut t = prefix(Tool::new("userdel"), root);
            if d.remove_home == Some(true) {
                t = t.arg("--remove");
            }
            t.arg(&d.name)
                .hint("check that no process of the user is running and that you run as root")
                .retry_when_locked()
                .run()?;
        }
        (Presence::Present, None) => {
            let mut t = prefix(Tool::new("useradd"), root);
            if let Some(v) = d.uid {
                t = t.arg("--uid").arg(v.to_string());
            }
            if let Some(g) = &d.group {
                t = t.arg("--gid").arg(g);
            } else if let Some(v) = d.gid {
                t = t.arg("--gid").arg(v.to_string());
            }
            if let Some(v) = &d.groups {
                t = t
                    .arg("--groups")
                    .arg(common::sorted_set(v.clone()).join(","));
            }
            if let Some(v) = &d.home {
                t = t.arg("--home-dir").arg(v);
            }
            if let Some(v) = &d.shell {
                t = t.arg("--shell").arg(v);
            }
            if let Some(v) = &d.comment {
                t = t.arg("--comment").arg(v);
            }
            if d.system == Some(true) {
                t = t.arg("--system");
            }
            t = match d.create_home {
                Some(true) => t.arg("--create-home"),
                Some(false) => t.arg("--no-create-home"),
                None => t,
            };
            t.arg(&d.name).hint(HINT_GROUPS).retry_when_locked().run()?;
            if let Some(h) = &d.password {
                set_password(root, &d.name, h)?;
            }
        }
        (Presence::Present, Some(a)) => {
            let mut t = prefix(Tool::new("usermod"), root);
            let mut any = false;
            if let Some(v) = d.uid.filter(|v| *v != a.uid) {
                t = t.arg("--uid").arg(v.to_string());
                any = true;
            }
            if let Some(g) = d.group.as_ref().filter(|g| a.group.as_ref() != Some(*g)) {
                t = t.arg("--gid").arg(g);
                any = true;
            } else if let Some(v) = d.gid.filter(|v| d.group.is_none() && *v != a.gid) {
                t = t.arg("--gid").arg(v.to_string());
                any = true;
            }
            if let Some(v) = &d.groups {
                let want = common::sorted_set(v.clone());
                if want != a.groups {
                    t = t.arg("--groups").arg(want.join(","));
                    any = true;
                }
            }
            if let Some(v) = d.home.as_ref().filter(|v| **v != a.home) {
                t = t.arg("--home").arg(v);
                if d.move_home == Some(true) {
                    t = t.arg("--move-home");
                }
                any = true;
            }
            if let Some(v) = d.shell.as_ref().filter(|v| **v != a.shell) {
                t = t.arg("--shell").arg(v);
                any = true;
            }
            if let Some(v) = d.comment.as_ref().filter(|v| **v != a.comment) {
                t = t.arg("--comment").arg(v);
                any = true;
            }
            if any {
                t.arg(&d.name).hint(HINT_GROUPS).retry_when_locked().run()?;
            }
            if let Some(h) = d.password.as_ref().filter(|h| a.hash.as_ref() != Some(*h)) {
                set_password(root, &d.name, h)?;
            }
        }
    }
    observe(d)
}

impl Resource for User {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A local user account (passwd/shadow), managed with useradd/usermod/userdel, optionally under an alternate root directory."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        let name = json!({"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^-:,/\\s][^:,/\\s]*$"});
        let text = json!({"type": "string", "pattern": "^[^:\\n]*$"});
        let path = json!({"type": "string", "pattern": "^/[^:\\n]*$"});
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "user",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": name.clone(),
                "state": {"enum": ["present", "absent"], "default": "present", "description": "Whether the account exists."},
                "uid": {"type": "integer", "minimum": 0, "maximum": 4294967294u32},
                "gid": {"type": "integer", "minimum": 0, "maximum": 4294967294u32, "description": "Primary group by number."},
                "group": {"type": "string", "minLength": 1, "description": "Primary group by name (the group must exist)."},
                "groups": {"type": "array", "items": name, "description": "The exact set of supplementary groups."},
                "home": path.clone(),
                "shell": path,
                "comment": text.clone(),
                "password": {"type": "string", "pattern": "^[^:\\n]*$", "writeOnly": true, "description": "Password hash as stored in shadow (e.g. from `mkpasswd -m sha-512`); sensitive, never reported."},
                "system": {"type": "boolean", "description": "Create as a system account (on creation only)."},
                "create_home": {"type": "boolean", "description": "Create the home directory on creation (default: the system's useradd default)."},
                "move_home": {"type": "boolean", "description": "Move the home directory's content when home changes."},
                "remove_home": {"type": "boolean", "description": "Remove the home directory and mail spool when state is absent."},
                "root": {"type": "string", "pattern": "^/", "description": "Alternate root directory: tools run with --prefix ROOT and ROOT/etc/* is read."},
            }
        })
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        observe(&UserState::parse(desired)?)
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        conform(&UserState::parse(desired)?)
    }
}
