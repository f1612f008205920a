//! Built-ins served inside the calling process.
//!
//! `resources/KIND` made by `ingot init minion` is a symlink to the `ingot` binary, which picks
//! the built-in by argv\[0\]. When the process dispatching the action *is* that binary (the
//! minion agent, `ingot apply`, `ingot resource`), exec'ing it again only pays for loading a
//! large executable and compiling its schema: several milliseconds a call, most of the cost of
//! a trivial step. So a built-in that does not start programs of its own (`in_process`; a
//! Directord verb says so in its declaration, `Verb::in_process` in
//! `crate::directord::verbs`) runs on a blocking thread here instead, and every built-in's
//! `describe` is computed here.
//!
//! The rule is strict: only when `resources/KIND` resolves to the running executable. A user's
//! own script under a built-in's name, a copy of another ingot, or the test harness's binary
//! all take the ordinary exec path. The events look like a process's (`spawn` naming the
//! built-in with `"in_process"` in its path, `stdin` redacted, `stdout`, `stderr`,
//! `exitcode`), so history reads the same.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use channel3::{Body, Event, Line, Message, Spawn};
use runner::EventSink;
use serde_json::Value;

use crate::builtin::{self, protocol, Resource};
use crate::DispatchError;

fn running_exe() -> Option<&'static Path> {
    static EXE: OnceLock<Option<PathBuf>> = OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().ok()?.canonicalize().ok())
        .as_deref()
}

fn is_running_exe(path: &Path) -> bool {
    running_exe().is_some_and(|exe| path.canonicalize().is_ok_and(|t| t == exe))
}

/// The built-in `kind` when `path` (its `resources/` entry) is the running executable itself.
pub fn builtin_here(kind: &str, path: &Path) -> Option<&'static dyn Resource> {
    let r = builtin::resource(kind)?;
    is_running_exe(path).then_some(r)
}

/// The built-in fact `name` when `path` (its `facts/` entry) is the running executable itself.
pub fn fact_here(name: &str, path: &Path) -> Option<builtin::facts::Gather> {
    let gather = builtin::facts::fact(name)?;
    is_running_exe(path).then_some(gather)
}

/// Why a built-in fact gathered in this process has no value.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// It ran past the timeout (its late result is dropped).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// It panicked.
    #[error("the built-in panicked ({0}); this is a bug in ingot: please report it")]
    Panicked(tokio::task::JoinError),
    /// It failed.
    #[error(transparent)]
    Fact(#[from] builtin::facts::FactError),
}

/// Gathers a built-in fact on a blocking thread, with the events its process would have sent.
/// Built-in facts only read /etc, /proc and /sys, so the thread always ends; past `timeout`
/// the caller is told so and the late result is dropped.
pub async fn gather_fact(
    name: &str,
    gather: builtin::facts::Gather,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Value, GatherError> {
    let work = tokio::task::spawn_blocking(gather);
    let result = match tokio::time::timeout(timeout, work).await {
        Err(_) => return Err(GatherError::Timeout(timeout)),
        Ok(Err(panic)) => Err(GatherError::Panicked(panic)),
        Ok(Ok(r)) => r.map_err(GatherError::Fact),
    };
    let (stdout, stderr, code) = match &result {
        Ok(v) => (format!("{v}\n"), String::new(), 0),
        Err(e) => (String::new(), format!("{name}: {e}\n"), 1),
    };
    emit_run(sink, name, None, None, &stdout, &stderr, code);
    result
}

/// Emits the events a process run of `name [action]` (with `input` on stdin) would have.
pub fn emit_run(
    sink: &dyn EventSink,
    name: &str,
    action: Option<&str>,
    input: Option<&Value>,
    stdout: &str,
    stderr: &str,
    code: i32,
) {
    let label = Some(name.to_owned());
    let emit = |b: Body| sink.emit(Event::now(Message::new(label.clone(), &b)));
    emit(Body::Spawn(Spawn {
        path: format!("{name} (built-in, in_process)"),
        args: action.map(str::to_owned).into_iter().collect(),
        ..Spawn::default()
    }));
    if let Some(input) = input {
        let shown = runner::redact::redact_state(input).to_string();
        emit(Body::Stdin(Line::from_bytes(shown.as_bytes())));
    }
    for l in stdout.lines() {
        emit(Body::Stdout(Line::from_bytes(l.as_bytes())));
    }
    for l in stderr.lines() {
        emit(Body::Stderr(Line::from_bytes(l.as_bytes())));
    }
    emit(Body::Exitcode(i64::from(code)));
}

/// Runs `action` on already-validated `states` of the in-process built-in `r` on a blocking
/// thread. A batch gives an array (a failed element is `{"error": …}`); one state gives its
/// result or the error a process would have exited with. The timeout cannot stop the thread
/// (which is why only built-ins that start no programs run here): past it the caller gets
/// [`DispatchError::Timeout`] and the thread's late result is dropped.
pub async fn perform(
    r: &'static dyn Resource,
    action: &str,
    input: Value,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Value, DispatchError> {
    let kind = r.kind();
    let owned_action = action.to_owned();
    let shown = input.clone();
    let work = tokio::task::spawn_blocking(move || {
        let one = |s: &Value| protocol::act(r, &owned_action, s);
        match &input {
            Value::Array(items) => {
                let mut errors = String::new();
                let results: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, s)| match one(s) {
                        Ok(v) => v,
                        Err(e) => {
                            errors.push_str(&format!(
                                "{kind} {owned_action}: error in element {i}: {e}\n"
                            ));
                            serde_json::json!({ "error": e.to_string() })
                        }
                    })
                    .collect();
                let code = i32::from(!errors.is_empty());
                (Ok(Value::Array(results)), errors, code)
            }
            state => match one(state) {
                Ok(v) => (Ok(v), String::new(), 0),
                Err(e) => {
                    let text = format!("{kind} {owned_action}: error: {e}\n");
                    let code = e.exit_code();
                    (Err(text.clone()), text, code)
                }
            },
        }
    });
    let (result, stderr, code) = match tokio::time::timeout(timeout, work).await {
        Err(_) => {
            return Err(DispatchError::Timeout {
                kind: kind.into(),
                action: action.into(),
                after: timeout,
            })
        }
        Ok(Err(panic)) => {
            let why = format!(
                "{kind} {action}: the built-in panicked ({panic}); this is a bug in ingot: please report it with the state given"
            );
            (Err(why.clone()), format!("{why}\n"), 101)
        }
        Ok(Ok(r)) => r,
    };
    let stdout = match &result {
        Ok(v) => protocol::render(v, r.identity()),
        Err(_) => String::new(),
    };
    emit_run(
        sink,
        kind,
        Some(action),
        Some(&shown),
        &stdout,
        &stderr,
        code,
    );
    result.map_err(|stderr| DispatchError::Failed {
        kind: kind.into(),
        action: action.into(),
        code,
        stderr,
    })
}
