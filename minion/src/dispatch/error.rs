//! Why a resource action or fact gathering failed: the errors of [`super::Minion`].

use std::path::PathBuf;
use std::time::Duration;

use runner::RunError;
use serde_json::{json, Value};

use super::output::tail_suffix;

/// Why a resource action did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The kind is not a plain file name.
    #[error(
        "invalid resource kind {0:?}: expected a plain name such as \"file\" (no '/', not hidden)"
    )]
    BadKind(String),
    /// There is no executable for the kind.
    #[error("no resource {kind:?}: {path} does not exist (pass --minion DIR for another minion tree, run `ingot init minion DIR` for the built-ins, or drop an executable there)")]
    NotFound {
        /// The kind.
        kind: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// `resources/KIND` is a built-in's link to an ingot binary that is gone (the reason says
    /// to re-run `ingot init minion DIR`).
    #[error("{0}")]
    BrokenLink(String),
    /// The state was refused before anything ran (or by the resource itself, exit 2).
    #[error("invalid input for {kind} at {pointer}: {message}")]
    Invalid {
        /// The kind.
        kind: String,
        /// JSON pointer to the field (empty: the whole document).
        pointer: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The resource's `describe` does not list the action.
    #[error("unknown action {action:?} for {kind}; known actions: {known}")]
    UnknownAction {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// The actions `describe` lists.
        known: String,
    },
    /// `describe` was asked for but the resource has none that works.
    #[error("{kind} has no usable describe: {reason}")]
    NoDescribe {
        /// The kind.
        kind: String,
        /// Why.
        reason: String,
    },
    /// The resource exited non-zero.
    #[error("{kind} {action} failed with exit code {code}{}", tail_suffix(.stderr))]
    Failed {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// Its exit code (2: it refused the input; 128+N: killed by signal N).
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },
    /// The resource ran past the timeout and was killed.
    #[error("{kind} {action} timed out after {after:?} and was killed (raise the timeout or make it faster)")]
    Timeout {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// The timeout.
        after: Duration,
    },
    /// The resource succeeded but printed something that is not a valid result.
    #[error("{kind} {action} printed an invalid result: {reason}")]
    BadOutput {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// What is wrong, with the start of the output.
        reason: String,
    },
    /// The runner could not run it at all.
    #[error(transparent)]
    Run(#[from] RunError),
}

impl DispatchError {
    /// The exit code `ingot resource` uses for this error: the resource's own code when it
    /// ran, 2 for input refused before running, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Failed { code, .. } => *code,
            Self::Invalid { .. } | Self::UnknownAction { .. } | Self::BadKind(_) => 2,
            // No such resource executable: bad input, as the rest of `runner::exit` says.
            Self::NotFound { .. } => runner::exit::USAGE,
            _ => 1,
        }
    }

    /// This error as a batch element, `{"error": ...}`.
    pub fn to_element(&self) -> Value {
        json!({"error": self.to_string()})
    }
}

/// Why facts could not be gathered at all (single failing facts are in
/// [`FactReport`](super::FactReport)).
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// facts/ cannot be listed.
    #[error(
        "cannot list {path}: {source} (run `ingot init minion DIR` first, or pass --minion DIR)"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}
