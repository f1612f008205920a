//! How the master talks to one minion: one interface, [`MinionLink`], for the in-process minion
//! (`routine::local`) and a connected one (`fleet::RemoteMinion`).

use std::future::Future;

use runner::EventSink;
use serde_json::Value;

/// What a resource says about itself (`describe`), as far as the master needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Described {
    /// Fields that identify an instance.
    pub identity: Vec<String>,
    /// It accepts arrays of states.
    pub batch: bool,
    /// JSON Schema of its desired state, when it has one.
    pub schema: Option<Value>,
}

/// Why a call to a minion failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// The program ran and failed: its exit code and the end of its stderr.
    #[error("{program} exited with {code}{}", minion::wire::stderr_suffix(.stderr))]
    Failed {
        /// What ran, e.g. `resources/file conform`.
        program: String,
        /// Its exit code.
        code: i32,
        /// The tail of its stderr.
        stderr: String,
    },
    /// The program printed something that is not the expected JSON.
    #[error("{program} printed invalid output: {message}")]
    BadOutput {
        /// What ran.
        program: String,
        /// What was wrong.
        message: String,
    },
    /// The minion could not be reached or could not run it at all.
    #[error("{0}")]
    Unreachable(String),
}

impl From<minion::DispatchError> for LinkError {
    /// How a dispatch failure looks from the master, locally and over the network alike.
    fn from(e: minion::DispatchError) -> Self {
        use minion::DispatchError as D;
        match e {
            D::Failed {
                kind,
                action,
                code,
                stderr,
            } => LinkError::Failed {
                program: format!("resources/{kind} {action}"),
                code,
                stderr,
            },
            D::BadOutput {
                kind,
                action,
                reason,
            } => LinkError::BadOutput {
                program: format!("resources/{kind} {action}"),
                message: reason,
            },
            other => LinkError::Unreachable(other.to_string()),
        }
    }
}

impl From<minion::wire::WireError> for LinkError {
    /// A failure the minion reported over the network, as it would have been locally.
    fn from(e: minion::wire::WireError) -> Self {
        use minion::wire::WireError as W;
        match e {
            W::Failed {
                program,
                code,
                stderr,
            } => LinkError::Failed {
                program,
                code,
                stderr,
            },
            W::BadOutput { program, message } => LinkError::BadOutput { program, message },
            W::Unreachable { message } => LinkError::Unreachable(message),
        }
    }
}

/// A fact document with the facts that failed.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `{"os": {...}, ...}`.
    pub document: Value,
    /// `(fact, reason)` for each fact left out.
    pub failures: Vec<(String, String)>,
}

/// One minion as the master sees it.
pub trait MinionLink: Send + Sync {
    /// The minion's name.
    fn name(&self) -> &str;
    /// Gathers the fact document.
    fn facts(&self, sink: &dyn EventSink) -> impl Future<Output = Result<Facts, LinkError>> + Send;
    /// `resources/KIND describe` (cached by the implementation); `None` when the resource
    /// does not describe itself.
    fn describe(
        &self,
        kind: &str,
    ) -> impl Future<Output = Result<Option<Described>, LinkError>> + Send;
    /// Runs `resources/KIND ACTION` with `input` on stdin and returns its JSON output.
    fn call(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> impl Future<Output = Result<Value, LinkError>> + Send;
}
