//! Running the master's actors (`actors/prescribe`, `actors/choreograph`) through the runner.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runner::{EventSink, Program};
use serde_json::Value;

/// Why an actor failed.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// It could not be started.
    #[error("cannot run {actor}: {source}")]
    Run {
        /// The actor, e.g. `actors/prescribe`.
        actor: String,
        /// Why.
        #[source]
        source: runner::RunError,
    },
    /// It exited non-zero.
    #[error("{actor} failed with exit code {code}{}\n  fix: run it by hand with the same input to see why (`ingot apply --check` shows the facts it was given)", stderr_block(.stderr))]
    Failed {
        /// The actor.
        actor: String,
        /// Its exit code.
        code: i32,
        /// Its stderr tail.
        stderr: String,
    },
    /// It printed something that is not JSON.
    #[error("{actor} printed invalid JSON: {source}\n  fix: print exactly one JSON document on stdout; send diagnostics to stderr")]
    BadJson {
        /// The actor.
        actor: String,
        /// The parse error (with a snippet of the output).
        #[source]
        source: runner::RunError,
    },
    /// It printed the wrong shape of document.
    #[error(transparent)]
    Invalid(#[from] crate::documents::InvalidDocument),
}

fn stderr_block(stderr: &str) -> String {
    let t = stderr.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("; its stderr:\n    {}", t.replace('\n', "\n    "))
    }
}

/// The master's tree (SPEC §2).
#[derive(Debug, Clone)]
pub struct MasterDir {
    /// Its root.
    pub root: PathBuf,
}

impl MasterDir {
    /// A master tree rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `actors/NAME`.
    pub fn actor(&self, name: &str) -> PathBuf {
        self.root.join("actors").join(name)
    }

    /// `logs/history.db`.
    pub fn history_db(&self) -> PathBuf {
        self.root.join("logs").join("history.db")
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs an actor with `input` on stdin and parses its stdout.
pub async fn run_actor(
    path: &Path,
    label: &str,
    input: &Value,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Value, ActorError> {
    // Absolute, because the actor runs in its own directory.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let path = path.as_path();
    let mut program = Program::new(path).json_stdin(input).timeout(timeout);
    program.stdout_events = false;
    if let Some(dir) = path.parent() {
        program.cwd = Some(dir.to_path_buf());
    }
    let out = runner::run(&program, sink)
        .await
        .map_err(|source| ActorError::Run {
            actor: label.into(),
            source,
        })?;
    if !out.success() {
        return Err(ActorError::Failed {
            actor: label.into(),
            code: out.code(),
            stderr: out.stderr_text(),
        });
    }
    out.json().map_err(|source| ActorError::BadJson {
        actor: label.into(),
        source,
    })
}

/// `actors/prescribe`: fact document in, validated prescription out.
pub async fn prescribe(
    master: &MasterDir,
    facts: &Value,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Vec<Value>, ActorError> {
    let path = master.actor("prescribe");
    if !is_executable(&path) {
        return Err(ActorError::Failed {
            actor: "actors/prescribe".into(),
            code: 127,
            stderr: format!("{} is missing or not executable (chmod +x it, or create it: it reads facts on stdin and prints a JSON array of resource states)", path.display()),
        });
    }
    let doc = run_actor(&path, "actors/prescribe", facts, timeout, sink).await?;
    crate::documents::check_prescription(&doc, "actors/prescribe")?;
    Ok(doc.as_array().cloned().unwrap_or_default())
}

/// `actors/choreograph` when present, else the built-in default.
pub async fn choreograph(
    master: &MasterDir,
    facts: &Value,
    prescription: &[Value],
    observations: &[Value],
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Vec<crate::documents::Step>, ActorError> {
    let path = master.actor("choreograph");
    if !is_executable(&path) {
        return Ok(crate::choreograph::default_choreograph(
            prescription,
            observations,
        ));
    }
    let input = serde_json::json!({"facts": facts, "prescription": prescription, "observations": observations});
    let doc = run_actor(&path, "actors/choreograph", &input, timeout, sink).await?;
    crate::documents::check_steps(&doc, "actors/choreograph")?;
    Ok(serde_json::from_value(doc).expect("a schema-checked step list deserializes"))
}
