//! Directord's verbs as built-in resource executables.
//!
//! Each verb is a [`Resource`] whose `describe` publishes its option list (a
//! [`VerbSpec`](super::verb::VerbSpec)) in `args` and which has one custom action, `job`. The
//! engine (`super::engine`) calls `resources/KIND job` with
//! `{"job": FIELDS, "args": ARGS, "envs": ENVS, "cache_dir": DIR, "minion": NAME, "source": PATH}`
//! and gets a [`JobOutput`] back; the engine owns the cache, so a verb only reports what it
//! wants stored or waited for (`set_args`, `set_envs`, `evict`, `query`, `job_wait`). A user
//! component in `resources/` that follows the same contract is a verb too.
//!
//! The verb `SERVICE` is the executable `service_verb`: the kind `service` is the mold-style
//! resource (states `running`/`stopped`), which has no verb `args`; the engine maps a verb to
//! `resources/<verb>` when that describes a verb, else to `resources/<verb>_verb`.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::cache::{write_atomic, Bucket, Cache};
use super::job::file_sha3;
use super::template;
use super::verb::{OptSpec, OptType, VerbSpec};
use crate::builtin::{Resource, ResourceError};

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

    fn info(mut self, info: impl Into<String>) -> Self {
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
    fn s(&self, k: &str) -> Option<&str> {
        self.job.get(k).and_then(Value::as_str)
    }
    fn b(&self, k: &str) -> bool {
        self.job.get(k).and_then(Value::as_bool).unwrap_or(false)
    }
    fn i(&self, k: &str, d: i64) -> i64 {
        self.job.get(k).and_then(Value::as_i64).unwrap_or(d)
    }
    fn list(&self, k: &str) -> Vec<String> {
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
    fn render(&self, what: &str, t: &str) -> Result<String, JobOutput> {
        template::render(what, t, &self.args).map_err(|e| JobOutput::fail(e.to_string()))
    }
    fn env_pairs(&self) -> Vec<(String, String)> {
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
}

/// A Directord verb as a resource.
pub struct Verb {
    /// The executable name.
    pub kind: &'static str,
    /// The verb (upper case).
    pub verb: &'static str,
    /// Its option list.
    pub spec: fn() -> VerbSpec,
    /// What it does.
    pub exec: fn(&Ctx) -> JobOutput,
}

const JOB_ACTIONS: &[(&str, &str)] = &[(
    "job",
    "run a Directord job: {\"job\": FIELDS, \"args\", \"envs\", \"cache_dir\", \"source\"} on stdin; prints {outcome, stdout, stderr, info, ...}",
)];

impl Resource for Verb {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn description(&self) -> &'static str {
        "a Directord verb: run it with `ingot exec --verb VERB 'STRING'` or in `ingot orchestrate`"
    }
    fn identity(&self) -> &'static [&'static str] {
        &["job"]
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {
            "job": {"type": "object", "description": "the parsed verb string (see describe's args)"},
            "args": {"type": "object", "description": "the minion's cached args"},
            "envs": {"type": "object", "description": "the minion's cached envs"},
            "cache_dir": {"type": ["string", "null"]},
            "source": {"type": ["string", "null"], "description": "ADD/COPY: local path of the source content"},
            "minion": {"type": ["string", "null"]}
        }})
    }
    fn actions(&self) -> &'static [(&'static str, &'static str)] {
        JOB_ACTIONS
    }
    fn args(&self) -> Value {
        let mut spec = (self.spec)();
        if spec.help.is_empty() {
            spec.help = self.description().into();
        }
        spec.to_json()
    }
    fn inspect(&self, _: &Value) -> Result<Value, ResourceError> {
        Err(self.not_state())
    }
    fn conform(&self, _: &Value) -> Result<Value, ResourceError> {
        Err(self.not_state())
    }
    fn action(&self, action: &str, state: &Value) -> Result<Value, ResourceError> {
        if action != "job" {
            return Err(ResourceError::UnknownAction {
                kind: self.kind.into(),
                action: action.into(),
                known: "job, describe".into(),
            });
        }
        let out = (self.exec)(&Ctx::from_input(state));
        Ok(serde_json::to_value(out).unwrap_or(Value::Null))
    }
    fn in_process(&self) -> bool {
        IN_PROCESS.contains(&self.kind)
    }
}

/// Verbs that start no programs, so a dispatcher that is the `ingot` binary runs them on a
/// thread (`crate::inproc`). RUN is handled by [`run_here`]; the package, service, container
/// and wait verbs keep their own process so `--timeout` can kill what they start.
const IN_PROCESS: &[&str] = &[
    "arg",
    "env",
    "echo",
    "query",
    "queuesentinel",
    "cacheevict",
    "cachefile",
    "workdir",
    "add",
    "copy",
    "job_wait",
];

impl Ctx {
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

impl Verb {
    fn not_state(&self) -> ResourceError {
        ResourceError::Failed(format!(
            "{} is a Directord verb, not a state: use `ingot exec --verb {} 'STRING'` (or the `job` action)",
            self.kind, self.verb
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Running commands.

struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn sh(cmd: &str, envs: &[(String, String)]) -> Ran {
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
fn ran(out: std::io::Result<std::process::Output>, what: &str) -> Ran {
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

fn prog(program: &str, args: &[String], envs: &[(String, String)]) -> Ran {
    let mut c = Command::new(program);
    c.args(args).stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    run_cmd(c, program)
}

fn detach(cmd: &str, envs: &[(String, String)]) -> std::io::Result<()> {
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

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// RUN, ECHO

fn run_spec() -> VerbSpec {
    VerbSpec::new(
        "Process run commands: the command runs with /bin/sh -c, the cached ENVs in its environment.",
        vec![
            OptSpec::flag("no_block", "--no-block", "Run a command in 'fire and forget' mode."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of times to retry.").default(json!(1)),
            OptSpec::pos("command", OptType::Str, Some("rest"), "the command (blueprinted with the cached args)"),
        ],
    )
}

/// RUN's blueprinted command, or the output that ends the job before anything runs.
#[allow(clippy::result_large_err)]
fn run_command(c: &Ctx) -> Result<String, JobOutput> {
    let raw = c.s("command").unwrap_or_default();
    let cmd = c.render("the command", raw)?;
    if cmd.trim().is_empty() {
        return Err(JobOutput::fail(
            "the command is empty (after blueprinting); give RUN a command",
        )
        .info(cmd));
    }
    Ok(cmd)
}

/// RUN --no-block: started in its own session and left running.
fn run_detached(cmd: String, envs: &[(String, String)]) -> JobOutput {
    match detach(&cmd, envs) {
        Ok(()) => JobOutput::ok("").info(cmd),
        Err(e) => JobOutput::fail(format!("cannot start /bin/sh: {e}")).info(cmd),
    }
}

fn run_output(r: Ran, cmd: String) -> JobOutput {
    JobOutput {
        outcome: r.ok,
        stdout: r.stdout,
        stderr: r.stderr,
        info: cmd,
        ..JobOutput::default()
    }
}

fn run_exec(c: &Ctx) -> JobOutput {
    let cmd = match run_command(c) {
        Ok(cmd) => cmd,
        Err(out) => return out,
    };
    let envs = c.env_pairs();
    if c.b("no_block") {
        return run_detached(cmd, &envs);
    }
    let mut last = sh(&cmd, &envs);
    for _ in 1..c.i("retry", 1).max(1) {
        if last.ok {
            break;
        }
        last = sh(&cmd, &envs);
    }
    run_output(last, cmd)
}

/// RUN inside a dispatcher that is the `ingot` binary (see `crate::inproc`): the command runs
/// through the runner, in its own process group with the job's timeout, and its events go to
/// `sink` directly. Returns the job output as the `job` action would print it.
pub async fn run_here(
    input: &Value,
    runner: &runner::Runner,
    timeout: Duration,
    sink: &dyn runner::EventSink,
) -> Result<Value, crate::DispatchError> {
    let c = Ctx::from_input(input);
    let out = match run_command(&c) {
        Err(out) => out,
        Ok(cmd) if c.b("no_block") => run_detached(cmd, &c.env_pairs()),
        Ok(cmd) => {
            let deadline = Instant::now() + timeout;
            let mut last = None;
            for _ in 0..c.i("retry", 1).max(1) {
                let mut p = runner::Program::new("/bin/sh")
                    .name("run")
                    .arg("-c")
                    .arg(&cmd)
                    .timeout(deadline.saturating_duration_since(Instant::now()));
                for (k, v) in c.env_pairs() {
                    p = p.env(k, v);
                }
                let o = runner.run(&p, sink).await?;
                if o.timed_out {
                    return Err(crate::DispatchError::Timeout {
                        kind: "run".into(),
                        action: "job".into(),
                        after: timeout,
                    });
                }
                let ran = Ran {
                    ok: o.success(),
                    stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                    stderr: o.stderr_text(),
                };
                let ok = ran.ok;
                last = Some(ran);
                if ok {
                    break;
                }
            }
            run_output(last.expect("at least one try"), cmd)
        }
    };
    Ok(serde_json::to_value(out).unwrap_or(Value::Null))
}

fn echo_spec() -> VerbSpec {
    VerbSpec::new(
        "Directord's example user component: prints its argument.",
        vec![OptSpec::pos("echo", OptType::Str, Some("*"), "the text")],
    )
}

fn echo_exec(c: &Ctx) -> JobOutput {
    JobOutput::ok(c.list("echo").join(" "))
}

// ---------------------------------------------------------------------------------------------
// ARG, ENV, CACHEFILE, CACHEEVICT, QUERY, QUEUESENTINEL

fn cache_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cache commands: KEY VALUE (a Python-style literal: 'text', ['a'], {\"a\": 1}, 1, 1.2).",
        vec![
            OptSpec::flag("extend_args", "--extend-args", "When setting an ARG, allow complex args to extend existing ones."),
            OptSpec::pos("key", OptType::Str, None, "the name"),
            OptSpec::pos("value", OptType::Literal, Some("rest"), "the value (blueprinted with the cached args)"),
        ],
    )
    .uncached()
}

fn kv(c: &Ctx, env: bool) -> JobOutput {
    let Some(key) = c.s("key") else {
        return JobOutput::fail("missing KEY");
    };
    let value = c.job.get("value").cloned().unwrap_or(Value::Null);
    let value = match template::render_value("the value", &value, &c.args) {
        Ok(v) => v,
        Err(e) => return JobOutput::fail(e.to_string()),
    };
    let kind = match &value {
        Value::String(_) => "str",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::Bool(_) => "bool",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        Value::Null => "None",
    };
    let info = format!("type:{kind}, value:{value}");
    let mut m = Map::new();
    if env {
        let s = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        m.insert(key.into(), Value::String(s));
        JobOutput {
            set_envs: Some(m),
            extend_args: c.b("extend_args"),
            ..JobOutput::ok("envs added to cache").info(info)
        }
    } else {
        m.insert(key.into(), value);
        JobOutput {
            set_args: Some(m),
            extend_args: c.b("extend_args"),
            ..JobOutput::ok("args added to cache").info(info)
        }
    }
}

fn cachefile_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cachefile commands: load a JSON or YAML file on the minion into the args.",
        vec![OptSpec::pos(
            "path",
            OptType::Str,
            None,
            "the file (on the minion)",
        )],
    )
    .uncached()
}

fn cachefile_exec(c: &Ctx) -> JobOutput {
    let path = c.s("path").unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return JobOutput::fail(format!("cannot read {path}: {e}")),
    };
    let doc: Value = match serde_saphyr::from_str(&text) {
        Ok(v) => v,
        Err(e) => return JobOutput::fail(format!("{path} is not YAML or JSON: {e}")),
    };
    match doc {
        Value::Object(m) => JobOutput {
            set_args: Some(m),
            extend_args: true,
            ..JobOutput::ok("Cache file loaded").info(path)
        },
        Value::Null => JobOutput::ok("Cache file loaded").info(path),
        _ => JobOutput::fail(format!("{path} must hold a mapping of names to values")),
    }
}

fn cacheevict_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cacheevict commands: evict all tagged cached items (all, args, envs, jobs, parents, query, or a job fingerprint / parent id).",
        vec![OptSpec::pos("cacheevict", OptType::Str, None, "the tag")],
    )
    .uncached()
}

fn cacheevict_exec(c: &Ctx) -> JobOutput {
    let tag = c.s("cacheevict").unwrap_or("all").to_owned();
    JobOutput {
        evict: Some(tag.clone()),
        ..JobOutput::ok(format!("Cache evicted: {tag}")).info(tag)
    }
}

fn query_spec() -> VerbSpec {
    VerbSpec::new(
        "Query an arg on every minion; the results are merged into every minion's `query` arg.",
        vec![
            OptSpec::flag(
                "no_wait",
                "--no-wait",
                "Disable waiting for the queried key to be present in the local cache.",
            ),
            OptSpec::pos("query", OptType::Str, None, "the arg name"),
        ],
    )
    .uncached()
}

fn query_exec(c: &Ctx) -> JobOutput {
    let name = c.s("query").unwrap_or_default().to_owned();
    let value = c.args.get(&name).cloned().unwrap_or(Value::Null);
    JobOutput {
        query: Some(json!({"name": name, "value": value})),
        ..JobOutput::ok(json!({ name.clone(): value }).to_string()).info(name)
    }
}

fn sentinel_spec() -> VerbSpec {
    VerbSpec::new(
        "Drain every queue on the minion: queued jobs are reported failed.",
        vec![OptSpec::pos(
            "data",
            OptType::Str,
            Some("*"),
            "a placeholder (e.g. true)",
        )],
    )
    .uncached()
}

fn sentinel_exec(_: &Ctx) -> JobOutput {
    JobOutput::ok("")
}

// ---------------------------------------------------------------------------------------------
// WORKDIR, ADD, COPY

fn chown_opts() -> Vec<OptSpec> {
    vec![
        OptSpec::opt(
            "chown",
            "--chown",
            OptType::Str,
            "Set the ownership: user[:group], names or ids.",
        ),
        OptSpec::opt(
            "chmod",
            "--chmod",
            OptType::Str,
            "Set the mode, octal (e.g. 0755).",
        ),
    ]
}

fn workdir_spec() -> VerbSpec {
    let mut o = chown_opts();
    o.push(OptSpec::pos(
        "workdir",
        OptType::Str,
        None,
        "the directory (blueprinted)",
    ));
    VerbSpec::new("Process workdir commands: create a directory.", o)
}

fn chown_chmod(path: &Path, c: &Ctx) -> Result<(), String> {
    if let Some(own) = c.s("chown").filter(|s| !s.is_empty()) {
        let (u, g) = match own.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (own, None),
        };
        let uid = resolve_user(u)?;
        let gid = g.map(resolve_group).transpose()?;
        nix::unistd::chown(path, Some(uid), gid)
            .map_err(|e| format!("chown {own} {}: {e}", path.display()))?;
    }
    if let Some(mode) = c.s("chmod").filter(|s| !s.is_empty()) {
        let m = u32::from_str_radix(mode.trim_start_matches("0o"), 8)
            .map_err(|_| format!("--chmod {mode:?} is not an octal mode such as 0755"))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(m))
            .map_err(|e| format!("chmod {mode} {}: {e}", path.display()))?;
    }
    Ok(())
}

fn resolve_user(u: &str) -> Result<nix::unistd::Uid, String> {
    runner::uid_of(u).ok_or_else(|| format!("--chown: no user {u:?} on this minion"))
}

fn resolve_group(g: &str) -> Result<nix::unistd::Gid, String> {
    runner::gid_of(g).ok_or_else(|| format!("--chown: no group {g:?} on this minion"))
}

fn workdir_exec(c: &Ctx) -> JobOutput {
    let dir = match c.render("the directory", c.s("workdir").unwrap_or_default()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if dir.is_empty() {
        return JobOutput::fail("WORKDIR needs a path");
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return JobOutput::fail(format!("cannot create {dir}: {e}"));
    }
    if let Err(e) = chown_chmod(Path::new(&dir), c) {
        return JobOutput::fail(e);
    }
    JobOutput::ok(format!("Directory {dir} OK")).info(dir)
}

fn transfer_spec(help: &str) -> VerbSpec {
    let mut o = chown_opts();
    o.push(OptSpec::flag(
        "blueprint",
        "--blueprint",
        "Instruct the remote file to be blueprinted.",
    ));
    o.push(OptSpec::pos(
        "from",
        OptType::Str,
        None,
        "the source: a file or glob on the operator's host, relative to the working directory",
    ));
    o.push(OptSpec::pos(
        "to",
        OptType::Str,
        None,
        "the destination (a directory when it ends with /; blueprinted)",
    ));
    let mut s = VerbSpec::new(help, o);
    s.transfer = true;
    s
}

fn transfer_exec(c: &Ctx) -> JobOutput {
    let from = c.s("file_from").unwrap_or_default();
    let want = c.s("file_sha3_224").unwrap_or_default();
    let to = match c.render("the destination", c.s("file_to").unwrap_or_default()) {
        Ok(t) => t,
        Err(e) => return e,
    };
    if to.is_empty() {
        return JobOutput::fail("ADD/COPY needs a destination");
    }
    let source = c.source.clone().unwrap_or_else(|| PathBuf::from(from));
    let dest = PathBuf::from(&to);
    let blueprint = c.b("blueprint");
    let mut note = String::new();
    let same = file_sha3(&dest).map(|h| h == want).unwrap_or(false);
    if same {
        note = format!("File exists {to} and has the content of {from}; nothing to transfer\n");
    } else {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(parent) {
                return JobOutput::fail(format!("cannot create {}: {e}", parent.display()));
            }
        }
        if let Err(e) = copy_checked(&source, &dest, (!blueprint).then_some(want)) {
            return JobOutput::fail(e);
        }
        // write_atomic makes the file 0600; give it an ordinary mode unless --chmod says.
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
    }
    if blueprint {
        if c.args.is_empty() {
            return JobOutput::fail("No arguments were defined for blueprinting");
        }
        let text = match std::fs::read_to_string(&dest) {
            Ok(t) => t,
            Err(e) => return JobOutput::fail(format!("cannot read {to} to blueprint it: {e}")),
        };
        let rendered = match template::render(&format!("the file {to}"), &text, &c.args) {
            Ok(r) => r,
            Err(e) => return JobOutput::fail(e.to_string()),
        };
        if let Err(e) = write_atomic(&dest, rendered.as_bytes()) {
            return JobOutput::fail(format!("cannot write {to}: {e}"));
        }
        let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644));
    }
    if let Err(e) = chown_chmod(&dest, c) {
        return JobOutput::fail(e);
    }
    // Unless blueprinted, the destination's content was just checked to be the source's.
    let sha = if blueprint {
        file_sha3(&dest).unwrap_or_default()
    } else {
        want.to_owned()
    };
    JobOutput {
        stderr: note,
        ..JobOutput::ok(sha).info(from)
    }
}

/// Copies `src` to `dest` through a temporary file and a rename, hashing on the way (the
/// content is never held in memory whole); with `want`, content whose SHA3-224 differs is not
/// installed ("Data integrity failure").
fn copy_checked(src: &Path, dest: &Path, want: Option<&str>) -> Result<(), String> {
    use sha3::{Digest, Sha3_224};
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut from = std::fs::File::open(src)
        .map_err(|e| format!("cannot read the source {}: {e}", src.display()))?;
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        dest.file_name().unwrap_or_default().to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));
    let cannot_write = |e: std::io::Error| format!("cannot write {}: {e}", dest.display());
    let copied = (|| {
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(cannot_write)?;
        let mut h = Sha3_224::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = from
                .read(&mut buf)
                .map_err(|e| format!("cannot read the source {}: {e}", src.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            to.write_all(&buf[..n]).map_err(cannot_write)?;
        }
        if let Some(want) = want {
            let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if got != want {
                return Err(format!(
                    "Data integrity failure: {} changed since the job was made (expected SHA3-224 {want}, found {got}); run the job again",
                    src.display()
                ));
            }
        }
        to.sync_all().map_err(cannot_write)?;
        std::fs::rename(&tmp, dest).map_err(cannot_write)
    })();
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

// ---------------------------------------------------------------------------------------------
// DNF, APT

fn pkg_spec(tool: &str) -> VerbSpec {
    VerbSpec::new(
        &format!("Manage packages with {tool}."),
        vec![
            OptSpec::flag(
                "clear_metadata",
                "--clear-metadata",
                "Clear the package metadata (and refresh it) first.",
            ),
            OptSpec::opt(
                "exclude",
                "--exclude",
                OptType::Str,
                "Comma-separated packages to exclude.",
            ),
            OptSpec::flag(
                "latest",
                "--latest",
                "Install or upgrade to the latest version.",
            ),
            OptSpec::flag("absent", "--absent", "Remove the packages."),
            OptSpec::opt(
                "retry",
                "--retry",
                OptType::Int,
                "Number of times to retry.",
            )
            .default(json!(3)),
            OptSpec::pos("packages", OptType::Str, Some("+"), "the packages"),
        ],
    )
    .group("state", &["latest", "absent"], false)
}

fn sections(parts: Vec<(String, Ran)>) -> JobOutput {
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

fn retry(n: i64, f: impl Fn() -> Ran) -> Ran {
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

fn dnf_exec(c: &Ctx) -> JobOutput {
    let envs = c.env_pairs();
    let mut parts = Vec::new();
    if c.b("clear_metadata") {
        let _ = prog("dnf", &["clean".into(), "all".into()], &envs);
        let _ = prog("dnf", &["makecache".into()], &envs);
    }
    let (title, mut args) = if c.b("absent") {
        ("dnf remove", vec!["-q".into(), "-y".into()])
    } else if c.b("latest") {
        (
            "dnf install",
            vec!["-q".into(), "-y".into(), "--best".into()],
        )
    } else {
        ("dnf install", vec!["-q".into(), "-y".into()])
    };
    if let Some(x) = c.s("exclude").filter(|s| !s.is_empty()) {
        args.push(format!("--exclude={x}"));
    }
    args.push(if c.b("absent") { "remove" } else { "install" }.into());
    args.extend(c.list("packages"));
    let r = retry(c.i("retry", 3), || prog("dnf", &args, &envs));
    parts.push((title.to_owned(), r));
    sections(parts)
}

/// What every apt-get call gets: no prompts, wait for another apt's lock instead of failing,
/// keep changed configuration files (as the `package` resource does).
const APT_GET_OPTS: &[&str] = crate::builtin::package::APT_OPTS;

/// Whether apt knows nothing of `pkg`, so it is not installed (apt knows every installed
/// package from dpkg's status) and `apt-get remove` would fail to locate it. A pattern, a
/// version or a release (`pkg*`, `pkg=1.2`, `pkg/stable`) is left to apt-get.
fn apt_unknown(pkg: &str, envs: &[(String, String)]) -> bool {
    if pkg.contains(['*', '?', '[', '=', '/', '~']) {
        return false;
    }
    let r = prog("apt-cache", &["policy".to_owned(), pkg.to_owned()], envs);
    r.ok && r.stdout.trim().is_empty()
}

fn apt_exec(c: &Ctx) -> JobOutput {
    let mut envs = c.env_pairs();
    envs.push(("DEBIAN_FRONTEND".into(), "noninteractive".into()));
    let opts = || APT_GET_OPTS.iter().map(|o| (*o).to_owned());
    let mut parts = Vec::new();
    if c.b("clear_metadata") {
        let _ = prog("apt-get", &["clean".into()], &envs);
        parts.push((
            "apt-get update".to_owned(),
            prog(
                "apt-get",
                &opts().chain(["update".into()]).collect::<Vec<_>>(),
                &envs,
            ),
        ));
    }
    let excluded: Vec<String> = c
        .s("exclude")
        .map(|x| x.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let mut pkgs: Vec<String> = c
        .list("packages")
        .into_iter()
        .filter(|p| !excluded.contains(p))
        .collect();
    let mut already = String::new();
    if c.b("absent") {
        let (unknown, left): (Vec<String>, Vec<String>) =
            pkgs.into_iter().partition(|p| apt_unknown(p, &envs));
        for p in &unknown {
            already.push_str(&format!("{p} is unknown to apt, so not installed\n"));
        }
        pkgs = left;
        if pkgs.is_empty() {
            let none = Ran {
                ok: true,
                stdout: already,
                stderr: String::new(),
            };
            parts.push(("apt-get remove".to_owned(), none));
            return sections(parts);
        }
    }
    let (title, action): (&str, &[&str]) = if c.b("absent") {
        ("apt-get remove", &["remove"])
    } else if c.b("latest") {
        ("apt-get install", &["install"])
    } else {
        ("apt-get install", &["install", "--no-upgrade"])
    };
    let args: Vec<String> = opts()
        .chain(action.iter().map(|a| (*a).to_owned()))
        .chain(pkgs)
        .collect();
    let mut r = retry(c.i("retry", 3), || prog("apt-get", &args, &envs));
    r.stdout.insert_str(0, &already);
    parts.push((title.to_owned(), r));
    sections(parts)
}

// ---------------------------------------------------------------------------------------------
// SERVICE, REBOOT

fn service_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage services with systemd (daemon-reload, mask/unmask, enable/disable, then start/restart/stop/reload).",
        vec![
            OptSpec::flag("reloaded", "--reloaded", "Reload the services."),
            OptSpec::flag("restarted", "--restarted", "Restart the services."),
            OptSpec::flag("stopped", "--stopped", "Stop the services."),
            OptSpec::flag("daemon_reload", "--daemon-reload", "Run systemctl daemon-reload first (combinable with a state change)."),
            OptSpec::flag("enable", "--enable", "Enable the services."),
            OptSpec::flag("disable", "--disable", "Disable the services."),
            OptSpec::flag("mask", "--mask", "Mask the services."),
            OptSpec::flag("unmask", "--unmask", "Unmask the services."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of times to retry.").default(json!(3)),
            OptSpec::pos("services", OptType::Str, Some("+"), "the services"),
        ],
    )
    .group("running", &["reloaded", "restarted", "stopped"], false)
    .group("state", &["enable", "disable", "mask", "unmask"], false)
}

fn service_exec(c: &Ctx) -> JobOutput {
    let envs = c.env_pairs();
    let services = c.list("services");
    let n = c.i("retry", 3);
    let mut parts = Vec::new();
    let systemctl = |verb: &str| {
        let mut a = vec![verb.to_owned()];
        a.extend(services.iter().cloned());
        retry(n, || prog("systemctl", &a, &envs))
    };
    if c.b("daemon_reload") {
        let r = prog("systemctl", &["daemon-reload".into()], &envs);
        let ok = r.ok;
        parts.push(("systemctl daemon-reload".to_owned(), r));
        if !ok {
            return sections(parts);
        }
    }
    for (flag, verb) in [
        ("mask", "mask"),
        ("unmask", "unmask"),
        ("enable", "enable"),
        ("disable", "disable"),
    ] {
        if c.b(flag) {
            let r = systemctl(verb);
            let ok = r.ok;
            parts.push((format!("systemctl {verb}"), r));
            if !ok {
                return sections(parts);
            }
        }
    }
    let action = if c.b("restarted") {
        "restart"
    } else if c.b("stopped") {
        "stop"
    } else if c.b("reloaded") {
        "reload"
    } else {
        "start"
    };
    parts.push((format!("systemctl {action}"), systemctl(action)));
    sections(parts)
}

fn reboot_spec() -> VerbSpec {
    VerbSpec::new(
        "Reboot the minion after TIME seconds (default 10); the master marks it inactive until it reconnects.",
        vec![OptSpec::pos("time", OptType::Int, Some("?"), "seconds to wait").default(json!(10))],
    )
    .uncached()
}

fn reboot_exec(c: &Ctx) -> JobOutput {
    let cmd = format!(
        "sleep {}; systemctl --message='Directord reboot instruction' reboot",
        c.i("time", 10)
    );
    match detach(&cmd, &c.env_pairs()) {
        Ok(()) => JobOutput::ok("").info(cmd),
        Err(e) => JobOutput::fail(format!("cannot start the reboot: {e}")).info(cmd),
    }
}

// ---------------------------------------------------------------------------------------------
// WAIT, QUERY_WAIT, JOB_WAIT

fn wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until a condition is met: --seconds N, --url URL (HTTP 200-399) or --cmd COMMAND (exit 0).",
        vec![
            OptSpec::opt("seconds", "--seconds", OptType::Int, "Wait this many seconds."),
            OptSpec::flag("url", "--url", "Wait for the URL given as the rest of the string."),
            OptSpec::flag("cmd", "--cmd", "Wait for the command given as the rest of the string."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of attempts.").default(json!(30)),
            OptSpec::opt("retry_wait", "--retry-wait", OptType::Int, "Seconds between attempts.").default(json!(1)),
            OptSpec::flag("insecure", "--insecure", "Skip TLS verification for --url."),
            OptSpec::pos("data", OptType::Str, Some("rest"), "the URL or command (blueprinted)"),
        ],
    )
    .group("condition", &["seconds", "url", "cmd"], true)
}

fn wait_exec(c: &Ctx) -> JobOutput {
    if let Some(s) = c.job.get("seconds").and_then(Value::as_u64) {
        std::thread::sleep(Duration::from_secs(s));
        return JobOutput::ok(format!("waited {s} seconds"));
    }
    let data = match c.render("the condition", c.s("data").unwrap_or_default()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if data.trim().is_empty() {
        return JobOutput::fail("WAIT --url/--cmd needs the URL or command after it");
    }
    let envs = c.env_pairs();
    let attempts = c.i("retry", 30).max(0) + 1;
    let pause = Duration::from_secs(c.i("retry_wait", 1).max(0) as u64);
    let mut last = None;
    for k in 0..attempts {
        let r = if c.b("url") {
            let mut a = vec![
                "-sS".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
            ];
            if c.b("insecure") {
                a.push("-k".into());
            }
            a.push(data.clone());
            let mut r = prog("curl", &a, &envs);
            let code: u32 = r.stdout.trim().parse().unwrap_or(0);
            r.ok = (200..400).contains(&code);
            r
        } else {
            sh(&data, &envs)
        };
        if r.ok {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::ok("").info(data)
            };
        }
        last = Some(r);
        if k + 1 < attempts {
            std::thread::sleep(pause);
        }
    }
    let r = last.expect("one attempt");
    JobOutput {
        outcome: false,
        stdout: r.stdout,
        stderr: format!("{}condition not met after {attempts} attempts", r.stderr),
        info: data,
        ..JobOutput::default()
    }
}

fn query_wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until the query results hold ITEM for every listed identity (any identity when none).",
        vec![
            OptSpec::opt("query_timeout", "--query-timeout", OptType::Int, "Seconds to wait.").default(json!(600)),
            OptSpec::opt("identity", "--identity", OptType::Str, "Minions that must have answered.").nargs("+"),
            OptSpec::pos("item", OptType::Str, None, "the queried arg name"),
        ],
    )
    .uncached()
}

fn query_wait_exec(c: &Ctx) -> JobOutput {
    let item = c.s("item").unwrap_or_default().to_owned();
    let ids = c.list("identity");
    let Some(dir) = &c.cache_dir else {
        return JobOutput::fail("QUERY_WAIT needs the minion cache (cache_dir)");
    };
    let cache = match Cache::open(dir) {
        Ok(c) => c,
        Err(e) => return JobOutput::fail(e.to_string()),
    };
    let limit = Duration::from_secs(c.i("query_timeout", 600).max(0) as u64);
    let start = Instant::now();
    loop {
        let q = cache
            .get(Bucket::Args)
            .ok()
            .and_then(|a| a.get("query").and_then(Value::as_object).cloned())
            .unwrap_or_default();
        let has = |id: &str| q.get(id).and_then(|v| v.get(&item)).is_some();
        let done = if ids.is_empty() {
            q.keys().any(|id| has(id))
        } else {
            ids.iter().all(|id| has(id))
        };
        if done {
            return JobOutput::ok(format!("query {item} complete")).info(item);
        }
        if start.elapsed() >= limit {
            return JobOutput::fail(format!("Timeout after {} seconds", limit.as_secs()))
                .info(item);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn job_wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until the job with fingerprint SHA has finished on the listed identities.",
        vec![
            OptSpec::opt(
                "identity",
                "--identity",
                OptType::Str,
                "Minions that must have finished the job.",
            )
            .nargs("+")
            .required(),
            OptSpec::pos("sha", OptType::Str, None, "the job's SHA3-224"),
        ],
    )
    .uncached()
}

fn job_wait_exec(c: &Ctx) -> JobOutput {
    let sha = c.s("sha").unwrap_or_default().trim().to_ascii_lowercase();
    let identities = c.list("identity");
    if sha.is_empty() {
        return JobOutput::fail("JOB_WAIT needs the job's SHA3-224 (see `ingot orchestrate --finger-print` or `ingot manage --job-info`)");
    }
    if identities.is_empty() {
        return JobOutput::fail(
            "JOB_WAIT needs --identity NAME [NAME ...]: the minions whose cache to check",
        )
        .info(sha);
    }
    // The waiting is the engine's: the job's state lives in the listed minions' caches, which
    // only the master can reach (see `engine::JobWaitCoordinator`).
    JobOutput {
        job_wait: Some(json!({"sha": sha, "identities": identities})),
        ..JobOutput::ok("").info(sha)
    }
}

// ---------------------------------------------------------------------------------------------
// FACTER, CONTAINER_IMAGE, POD, SECONTEXT

fn facter_spec() -> VerbSpec {
    VerbSpec::new(
        "Run facter and store its facts in the `facter` arg.",
        vec![
            OptSpec::opt(
                "custom_dir",
                "--custom-dir",
                OptType::Str,
                "A directory of custom facts.",
            ),
            OptSpec::opt(
                "external_dir",
                "--external-dir",
                OptType::Str,
                "A directory of external facts.",
            ),
        ],
    )
}

fn facter_exec(c: &Ctx) -> JobOutput {
    if !have("facter") {
        return JobOutput::fail(
            "Facter is not installed! Install the facter package on the minion.",
        );
    }
    let mut a = vec!["--json".to_owned()];
    if let Some(d) = c.s("custom_dir") {
        a.extend(["--custom-dir".into(), d.into()]);
    }
    if let Some(d) = c.s("external_dir") {
        a.extend(["--external-dir".into(), d.into()]);
    }
    let r = prog("facter", &a, &c.env_pairs());
    // Facter 4 exits 1 when it logged any error, even one fact it could not resolve (in a
    // container: reading /proc/1/environ), yet still prints every other fact. Facts printed
    // are facts to store; its errors stay in stderr.
    match serde_json::from_str::<Value>(&r.stdout) {
        Ok(v @ Value::Object(_)) => {
            let mut m = Map::new();
            m.insert("facter".into(), v);
            JobOutput {
                set_args: Some(m),
                stderr: r.stderr,
                ..JobOutput::ok(r.stdout)
            }
        }
        _ if !r.ok => JobOutput {
            stdout: r.stdout,
            ..JobOutput::fail(r.stderr)
        },
        Ok(_) => JobOutput::fail("facter printed JSON that is not an object of facts"),
        Err(e) => JobOutput::fail(format!("facter printed invalid JSON: {e}")),
    }
}

const PODMAN_SOCKET: &str = "/var/run/podman/podman.sock";

/// Percent-encodes `v` for a URL, keeping the unreserved characters and `keep`.
fn url_enc(v: &str, keep: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query value.
fn q(v: &str) -> String {
    url_enc(v, "")
}

/// A name in a path: an image name keeps its `/`, `:` and `@`.
fn seg(v: &str) -> String {
    url_enc(v, "/:@")
}

/// Runs curl, feeding `input` (a request body) on its stdin: a kube YAML can be larger than
/// one command-line argument may be.
fn curl(args: &[String], input: Option<&str>, envs: &[(String, String)]) -> Ran {
    use std::io::Write;
    let mut c = Command::new("curl");
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return Ran {
                ok: false,
                stdout: String::new(),
                stderr: format!("cannot run curl (install curl on the minion): {e}"),
            }
        }
    };
    let feeder = match (input, child.stdin.take()) {
        (Some(text), Some(mut stdin)) => {
            let text = text.to_owned();
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(text.as_bytes());
            }))
        }
        _ => None,
    };
    let out = child.wait_with_output();
    if let Some(f) = feeder {
        let _ = f.join();
    }
    ran(out, "curl")
}

/// One call of podman's REST API (libpod, v4) over its UNIX socket. `body` is
/// `(CONTENT_TYPE, TEXT)`. A failure says podman's own message, then the call and status.
fn podman(c: &Ctx, method: &str, path: &str, body: Option<(&str, &str)>) -> JobOutput {
    let sock = c.s("socket_path").unwrap_or(PODMAN_SOCKET);
    if !Path::new(sock).exists() {
        return JobOutput::fail(format!(
            "no podman API socket at {sock}: start the service (`systemctl enable --now podman.socket`, or `podman system service --time=0 unix://{sock}`) or give --socket-path"
        ));
    }
    let mut a: Vec<String> = vec![
        "-sS".into(),
        "--unix-socket".into(),
        sock.into(),
        "-X".into(),
        method.into(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some((ctype, _)) = body {
        // Never a form type: podman would read the body as form fields.
        a.extend([
            "-H".into(),
            format!("Content-Type: {ctype}"),
            "--data-binary".into(),
            "@-".into(),
        ]);
    }
    a.push(format!("http://d/v4.0.0/libpod{path}"));
    let r = curl(&a, body.map(|(_, b)| b), &c.env_pairs());
    if !r.ok {
        return JobOutput::fail(format!("podman API at {sock}: {}", r.stderr.trim()));
    }
    let (text, code) = r.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    let code: u32 = code.trim().parse().unwrap_or(0);
    if (200..400).contains(&code) {
        return JobOutput::ok(text);
    }
    let why = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    JobOutput::fail(format!(
        "{why} (podman API: {method} {path} answered {code})"
    ))
}

/// The error a pull or push reports inside its JSON stream: podman answers those 200 even
/// when they fail.
fn stream_error(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| {
            v.get("error")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
        })
}

/// `--socket-path`, shared by CONTAINER_IMAGE and POD.
fn podman_socket_opt() -> OptSpec {
    OptSpec::opt(
        "socket_path",
        "--socket-path",
        OptType::Str,
        "The podman socket.",
    )
    .default(json!(PODMAN_SOCKET))
}

fn container_image_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage container images through the podman API.",
        vec![
            podman_socket_opt(),
            OptSpec::flag(
                "no_tlsverify",
                "--no-tlsverify",
                "Do not verify TLS for registries.",
            ),
            OptSpec::flag("pull", "--pull", "Pull the images."),
            OptSpec::flag("push", "--push", "Push the images."),
            OptSpec::flag("tag", "--tag", "Tag IMAGE as NEW_NAME[:TAG]."),
            OptSpec::flag("list", "--list", "List images."),
            OptSpec::flag("inspect", "--inspect", "Inspect the images."),
            OptSpec::pos("images", OptType::Str, Some("*"), "image names"),
        ],
    )
    .group("action", &["pull", "push", "tag", "list", "inspect"], true)
}

/// `NAME[:TAG]` split into repository and tag (default `latest`); a colon before the last
/// `/` is a registry's port, not a tag.
fn split_tag(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !repo.is_empty() => (repo, tag),
        _ => (name, "latest"),
    }
}

fn container_image_exec(c: &Ctx) -> JobOutput {
    let images = c.list("images");
    let tls = !c.b("no_tlsverify");
    if c.b("list") {
        if !images.is_empty() {
            return JobOutput::fail(format!("--list takes no images (got {})", images.join(" ")));
        }
        return podman(c, "GET", "/images/json", None);
    }
    if c.b("tag") {
        let [src, new] = images.as_slice() else {
            return JobOutput::fail("--tag needs exactly two images: SOURCE NEW_NAME[:TAG]");
        };
        let (repo, tag) = split_tag(new);
        return podman(
            c,
            "POST",
            &format!("/images/{}/tag?repo={}&tag={}", seg(src), q(repo), q(tag)),
            None,
        );
    }
    if images.is_empty() {
        return JobOutput::fail("give at least one image");
    }
    let transfer = c.b("pull") || c.b("push");
    let mut outs = Vec::new();
    for img in &images {
        let r = if c.b("pull") {
            podman(
                c,
                "POST",
                &format!("/images/pull?reference={}&tlsVerify={tls}", q(img)),
                None,
            )
        } else if c.b("push") {
            podman(
                c,
                "POST",
                &format!("/images/{}/push?tlsVerify={tls}", seg(img)),
                None,
            )
        } else {
            podman(c, "GET", &format!("/images/{}/json", seg(img)), None)
        };
        if !r.outcome {
            return r;
        }
        if let Some(e) = transfer.then(|| stream_error(&r.stdout)).flatten() {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::fail(format!("{img}: {e}"))
            };
        }
        outs.push(r.stdout);
    }
    if c.b("inspect") && outs.len() > 1 {
        // Several inspections are one JSON array, as in Directord.
        let all: Vec<Value> = outs
            .iter()
            .map(|o| serde_json::from_str(o).unwrap_or_else(|_| Value::String(o.clone())))
            .collect();
        return JobOutput::ok(Value::Array(all).to_string());
    }
    JobOutput::ok(
        outs.iter()
            .map(|o| o.trim_end())
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

fn pod_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage pods through the podman API.",
        vec![
            podman_socket_opt(),
            OptSpec::opt(
                "env",
                "--env",
                OptType::Str,
                "KEY=VALUE,... for --exec-run.",
            ),
            OptSpec::opt(
                "command",
                "--command",
                OptType::Str,
                "The command for --exec-run: its words, or one quoted string split like a shell.",
            )
            .nargs("+"),
            OptSpec::flag("privileged", "--privileged", "Privileged --exec-run."),
            OptSpec::flag("no_tlsverify", "--no-tlsverify", "Do not verify TLS."),
            OptSpec::flag("force", "--force", "Force --rm."),
            OptSpec::opt(
                "kill_signal",
                "--kill-signal",
                OptType::Str,
                "Signal for --kill.",
            )
            .default(json!("SIGKILL")),
            OptSpec::opt("start", "--start", OptType::Str, "Start POD."),
            OptSpec::opt("stop", "--stop", OptType::Str, "Stop POD."),
            OptSpec::opt("rm", "--rm", OptType::Str, "Remove POD."),
            OptSpec::opt("kill", "--kill", OptType::Str, "Kill POD."),
            OptSpec::opt("inspect", "--inspect", OptType::Str, "Inspect POD."),
            OptSpec::opt("play", "--play", OptType::Str, "Play a kube YAML file."),
            OptSpec::opt(
                "exec_run",
                "--exec-run",
                OptType::Str,
                "Run --command in CONTAINER.",
            ),
        ],
    )
    .group(
        "action",
        &["start", "stop", "rm", "kill", "inspect", "play", "exec_run"],
        true,
    )
}

fn pod_exec(c: &Ctx) -> JobOutput {
    let t = c.i("timeout", 600).max(0);
    // How long podman lets a stopping container go before SIGKILL: short of the job's own
    // timeout, so a container that ignores SIGTERM is killed and the job still sees the end.
    let grace = t - (t / 2).min(10);
    let tls = if c.b("no_tlsverify") { "false" } else { "true" };
    if let Some(p) = c.s("start") {
        return podman(c, "POST", &format!("/pods/{}/start", seg(p)), None);
    }
    if let Some(p) = c.s("stop") {
        return podman(c, "POST", &format!("/pods/{}/stop?t={grace}", seg(p)), None);
    }
    if let Some(p) = c.s("rm") {
        return podman(
            c,
            "DELETE",
            &format!("/pods/{}?force={}", seg(p), c.b("force")),
            None,
        );
    }
    if let Some(p) = c.s("kill") {
        let sig = c.s("kill_signal").unwrap_or("SIGKILL");
        return podman(
            c,
            "POST",
            &format!("/pods/{}/kill?signal={}", seg(p), q(sig)),
            None,
        );
    }
    if let Some(p) = c.s("inspect") {
        return podman(c, "GET", &format!("/pods/{}/json", seg(p)), None);
    }
    if let Some(f) = c.s("play") {
        let body = match std::fs::read_to_string(f) {
            Ok(b) => b,
            Err(e) => return JobOutput::fail(format!("cannot read the kube YAML {f}: {e}")),
        };
        return podman(
            c,
            "POST",
            &format!("/play/kube?tlsVerify={tls}&start=true"),
            Some(("application/yaml", &body)),
        );
    }
    if let Some(ctr) = c.s("exec_run") {
        return exec_run(c, ctr);
    }
    JobOutput::fail("give one of --start, --stop, --rm, --kill, --inspect, --play, --exec-run")
}

/// POD --exec-run: an exec session in CONTAINER, its output, and its exit code as the outcome.
fn exec_run(c: &Ctx, ctr: &str) -> JobOutput {
    let mut cmd = c.list("command");
    if let [one] = cmd.as_slice() {
        match super::verb::split_words("POD", one) {
            Ok(words) => cmd = words.into_iter().map(|w| w.text).collect(),
            Err(e) => return JobOutput::fail(e.to_string()),
        }
    }
    if cmd.is_empty() {
        return JobOutput::fail("--exec-run needs --command");
    }
    let env: Vec<String> = c
        .s("env")
        .map(|e| {
            e.split(',')
                .filter(|kv| !kv.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let body = json!({"Cmd": cmd, "Env": env, "Privileged": c.b("privileged"), "Tty": true,
                      "AttachStdout": true, "AttachStderr": true})
    .to_string();
    let created = podman(
        c,
        "POST",
        &format!("/containers/{}/exec", seg(ctr)),
        Some(("application/json", &body)),
    );
    if !created.outcome {
        return created;
    }
    let Some(id) = serde_json::from_str::<Value>(&created.stdout)
        .ok()
        .and_then(|v| v.get("Id").and_then(Value::as_str).map(str::to_owned))
    else {
        return JobOutput::fail(format!("podman made no exec session: {}", created.stdout));
    };
    let ran = podman(
        c,
        "POST",
        &format!("/exec/{id}/start"),
        Some(("application/json", "{\"Detach\": false, \"Tty\": true}")),
    );
    if !ran.outcome {
        return ran;
    }
    // A terminal ends lines with \r\n.
    let out = ran.stdout.replace("\r\n", "\n");
    // podman answers 200 whatever the command did; the session has its exit code.
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        let s = podman(c, "GET", &format!("/exec/{id}/json"), None);
        if !s.outcome {
            return JobOutput { stdout: out, ..s };
        }
        let v: Value = serde_json::from_str(&s.stdout).unwrap_or(Value::Null);
        if v["Running"] != Value::Bool(true) || Instant::now() >= deadline {
            break v["ExitCode"].as_i64();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match code {
        Some(0) => JobOutput::ok(out),
        Some(n) => JobOutput {
            stdout: out,
            ..JobOutput::fail(format!("`{}` exited with {n} in {ctr}", cmd.join(" ")))
        },
        None => JobOutput {
            stdout: out,
            ..JobOutput::fail(format!(
                "podman reported no exit code for exec session {id}"
            ))
        },
    }
}

fn secontext_spec() -> VerbSpec {
    VerbSpec::new(
        "Manage SELinux file contexts (semanage fcontext).",
        vec![
            OptSpec::opt("ftype", "--ftype", OptType::Str, "File type.")
                .choices(&["a", "b", "c", "d", "f", "l", "p", "s"]),
            OptSpec::flag(
                "reload",
                "--reload",
                "Apply the context to existing files (restorecon -R).",
            ),
            OptSpec::opt("selevel", "--selevel", OptType::Str, "SELinux level.")
                .default(json!("s0")),
            OptSpec::opt("setype", "--setype", OptType::Str, "SELinux type.").required(),
            OptSpec::opt("seuser", "--seuser", OptType::Str, "SELinux user.")
                .default(json!("system_u")),
            OptSpec::pos(
                "target",
                OptType::Str,
                None,
                "the path or regular expression",
            ),
        ],
    )
}

fn secontext_exec(c: &Ctx) -> JobOutput {
    if !have("semanage") {
        return JobOutput::fail(
            "semanage is not installed (policycoreutils-python-utils); SECONTEXT needs it",
        );
    }
    let target = c.s("target").unwrap_or_default().to_owned();
    let envs = c.env_pairs();
    let mut base = vec![
        "fcontext".to_owned(),
        "-t".into(),
        c.s("setype").unwrap_or_default().into(),
        "-s".into(),
        c.s("seuser").unwrap_or("system_u").into(),
        "-r".into(),
        c.s("selevel").unwrap_or("s0").into(),
    ];
    if let Some(f) = c.s("ftype") {
        base.extend(["-f".into(), f.into()]);
    }
    let mut add = base.clone();
    add.insert(1, "-a".into());
    add.push(target.clone());
    let mut r = prog("semanage", &add, &envs);
    if !r.ok && r.stderr.contains("already defined") {
        let mut m = base;
        m.insert(1, "-m".into());
        m.push(target.clone());
        r = prog("semanage", &m, &envs);
    }
    if r.ok && c.b("reload") {
        let rr = prog("restorecon", &["-R".into(), target.clone()], &envs);
        if !rr.ok {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::fail(rr.stderr)
            };
        }
    }
    JobOutput {
        outcome: r.ok,
        stdout: r.stdout,
        stderr: r.stderr,
        info: target,
        ..JobOutput::default()
    }
}

// ---------------------------------------------------------------------------------------------

macro_rules! verb {
    ($name:ident, $kind:literal, $verb:literal, $spec:expr, $exec:expr) => {
        #[doc = concat!("The ", $verb, " verb (`resources/", $kind, "`).")]
        pub const $name: Verb = Verb {
            kind: $kind,
            verb: $verb,
            spec: $spec,
            exec: $exec,
        };
    };
}

verb!(RUN, "run", "RUN", run_spec, run_exec);
verb!(ARG, "arg", "ARG", cache_spec, |c| kv(c, false));
verb!(ENV, "env", "ENV", cache_spec, |c| kv(c, true));
verb!(
    ADD,
    "add",
    "ADD",
    || transfer_spec("Process transfer commands: copy files from the operator's host."),
    transfer_exec
);
verb!(
    COPY,
    "copy",
    "COPY",
    || transfer_spec("Process transfer commands: copy files from the operator's host."),
    transfer_exec
);
verb!(WORKDIR, "workdir", "WORKDIR", workdir_spec, workdir_exec);
verb!(
    CACHEFILE,
    "cachefile",
    "CACHEFILE",
    cachefile_spec,
    cachefile_exec
);
verb!(
    CACHEEVICT,
    "cacheevict",
    "CACHEEVICT",
    cacheevict_spec,
    cacheevict_exec
);
verb!(QUERY, "query", "QUERY", query_spec, query_exec);
verb!(
    QUEUESENTINEL,
    "queuesentinel",
    "QUEUESENTINEL",
    sentinel_spec,
    sentinel_exec
);
verb!(DNF, "dnf", "DNF", || pkg_spec("dnf"), dnf_exec);
verb!(APT, "apt", "APT", || pkg_spec("apt-get"), apt_exec);
verb!(
    SERVICE,
    "service_verb",
    "SERVICE",
    service_spec,
    service_exec
);
verb!(REBOOT, "reboot", "REBOOT", reboot_spec, reboot_exec);
verb!(WAIT, "wait", "WAIT", wait_spec, wait_exec);
verb!(
    QUERY_WAIT,
    "query_wait",
    "QUERY_WAIT",
    query_wait_spec,
    query_wait_exec
);
verb!(
    JOB_WAIT,
    "job_wait",
    "JOB_WAIT",
    job_wait_spec,
    job_wait_exec
);
verb!(FACTER, "facter", "FACTER", facter_spec, facter_exec);
verb!(
    CONTAINER_IMAGE,
    "container_image",
    "CONTAINER_IMAGE",
    container_image_spec,
    container_image_exec
);
verb!(POD, "pod", "POD", pod_spec, pod_exec);
verb!(
    SECONTEXT,
    "secontext",
    "SECONTEXT",
    secontext_spec,
    secontext_exec
);
verb!(ECHO, "echo", "ECHO", echo_spec, echo_exec);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directord::verb::{parse, Parsed};

    #[test]
    fn image_tags_split_after_the_registry_port() {
        assert_eq!(split_tag("localhost/a:2"), ("localhost/a", "2"));
        assert_eq!(split_tag("localhost/a"), ("localhost/a", "latest"));
        assert_eq!(
            split_tag("localhost:5000/a"),
            ("localhost:5000/a", "latest")
        );
        assert_eq!(split_tag("localhost:5000/a:b"), ("localhost:5000/a", "b"));
        assert_eq!(q("SIG KILL&x"), "SIG%20KILL%26x");
        assert_eq!(seg("quay.io/a/b:1"), "quay.io/a/b:1");
    }

    #[test]
    fn pod_command_takes_words_or_one_string() {
        let fields = |s: &str| match parse(&pod_spec(), "POD", s, &Map::new()).unwrap() {
            Parsed::Fields(f) => f,
            Parsed::Help(h) => panic!("help: {h}"),
        };
        let f = fields("--exec-run c1 --command echo two words");
        assert_eq!(f["command"], json!(["echo", "two", "words"]));
        let f = fields("--exec-run c1 --command \"sh -c 'echo hi'\"");
        assert_eq!(f["command"], json!(["sh -c 'echo hi'"]));
    }

    #[test]
    fn reboot_defaults_to_ten_seconds_and_runs_directords_command() {
        let fields = match parse(&reboot_spec(), "REBOOT", "", &Map::new()).unwrap() {
            Parsed::Fields(f) => f,
            Parsed::Help(h) => panic!("help: {h}"),
        };
        assert_eq!(fields["time"], json!(10));

        // Never a real reboot: a `systemctl` first on the PATH (given as a cached ENV, which
        // the command gets) records its arguments.
        let tmp = tempfile::tempdir().unwrap();
        let record = tmp.path().join("args");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("systemctl");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}.tmp && mv {0}.tmp {0}\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut job = fields;
        job.insert("time".into(), json!(0));
        let mut envs = Map::new();
        envs.insert(
            "PATH".into(),
            json!(format!("{}:/usr/bin:/bin", bin.display())),
        );
        let ctx = Ctx {
            job,
            args: Map::new(),
            envs,
            cache_dir: None,
            source: None,
        };
        let out = reboot_exec(&ctx);
        assert!(out.outcome, "{out:?}");
        assert_eq!(
            out.info,
            "sleep 0; systemctl --message='Directord reboot instruction' reboot"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let args = loop {
            if let Ok(a) = std::fs::read_to_string(&record) {
                break a;
            }
            assert!(Instant::now() < deadline, "systemctl was not run");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(args, "--message=Directord reboot instruction\nreboot\n");
    }
}
