//! The result of a run.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::RunError;

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The program's channel3 name.
    pub name: String,
    /// How it ended.
    pub exit: ExitKind,
    /// Stdout (empty unless captured).
    pub stdout: Vec<u8>,
    /// The last 64 KiB of stderr, for error reports.
    pub stderr_tail: Vec<u8>,
    /// The runner killed it on timeout.
    pub timed_out: bool,
    /// Processes of its group still held its pipes after the leader exited and were killed.
    pub leaked: bool,
    /// Wall time from spawn to the end of output.
    pub duration: Duration,
}

impl Outcome {
    /// The exit code, 128+signo when killed by a signal (as a shell reports it).
    pub fn code(&self) -> i32 {
        match self.exit {
            ExitKind::Exited(c) => c,
            ExitKind::Signaled(s) => 128 + s,
        }
    }

    /// Success is exit code 0, and nothing else.
    pub fn success(&self) -> bool {
        self.exit == ExitKind::Exited(0)
    }

    /// Stderr's tail as text, for messages.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr_tail).into_owned()
    }

    /// Parses stdout as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, RunError> {
        serde_json::from_slice(&self.stdout).map_err(|source| RunError::BadJson {
            name: self.name.clone(),
            snippet: snippet(&self.stdout),
            source,
        })
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return "(empty output)".into();
    }
    let mut s: String = trimmed.chars().take(120).collect();
    if trimmed.chars().count() > 120 {
        s.push('…');
    }
    format!("{s:?}")
}
