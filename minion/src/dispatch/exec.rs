//! Running one resource action as a process (`resources/KIND ACTION`, the states on stdin) and
//! reading its result.

use std::path::Path;
use std::time::Duration;

use runner::{EventSink, Outcome, Program, Runner};
use serde_json::Value;

use super::error::DispatchError;
use super::output::snippet;

/// The program `PATH ACTION` with `input` on stdin, named for the kind.
fn program(path: &Path, kind: &str, action: &str, input: &Value, timeout: Duration) -> Program {
    Program::new(path)
        .name(kind)
        .arg(action)
        .json_stdin(input)
        .timeout(timeout)
}

/// Runs `action` on one state in its own process.
pub(super) async fn run_one(
    runner: &Runner,
    path: &Path,
    kind: &str,
    action: &str,
    state: &Value,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Value, DispatchError> {
    let o = runner
        .run(&program(path, kind, action, state, timeout), sink)
        .await?;
    check_exit(&o, kind, action, timeout)?;
    let v = parse_output(&o, kind, action)?;
    if matches!(action, "inspect" | "conform") && !v.is_object() {
        return Err(DispatchError::BadOutput {
            kind: kind.into(),
            action: action.into(),
            reason: format!(
                "expected a JSON object (the observed state), got {}",
                snippet(&o.stdout)
            ),
        });
    }
    Ok(v)
}

/// Runs `action` on every state in one process (a resource that supports batches).
pub(super) async fn run_batch(
    runner: &Runner,
    path: &Path,
    kind: &str,
    action: &str,
    states: Vec<Value>,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Vec<Value>, DispatchError> {
    let n = states.len();
    let o = runner
        .run(
            &program(path, kind, action, &Value::Array(states), timeout),
            sink,
        )
        .await?;
    // A batch with failed elements exits 1 but still prints every result.
    let parsed = serde_json::from_slice::<Value>(&o.stdout).ok();
    match parsed {
        Some(Value::Array(items)) if items.len() == n && !o.timed_out => Ok(items),
        _ => {
            check_exit(&o, kind, action, timeout)?;
            Err(DispatchError::BadOutput {
                kind: kind.into(),
                action: action.into(),
                reason: format!(
                    "expected a JSON array of {n} results for a batch of {n} states, got {}",
                    snippet(&o.stdout)
                ),
            })
        }
    }
}

fn check_exit(
    o: &Outcome,
    kind: &str,
    action: &str,
    timeout: Duration,
) -> Result<(), DispatchError> {
    if o.timed_out {
        return Err(DispatchError::Timeout {
            kind: kind.into(),
            action: action.into(),
            after: timeout,
        });
    }
    if !o.success() {
        return Err(DispatchError::Failed {
            kind: kind.into(),
            action: action.into(),
            code: o.code(),
            stderr: o.stderr_text(),
        });
    }
    Ok(())
}

fn parse_output(o: &Outcome, kind: &str, action: &str) -> Result<Value, DispatchError> {
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&o.stdout).map_err(|e| DispatchError::BadOutput {
        kind: kind.into(),
        action: action.into(),
        reason: format!("not JSON ({e}): {}", snippet(&o.stdout)),
    })
}
