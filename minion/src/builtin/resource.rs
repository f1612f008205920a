//! What a built-in resource is: the [`Resource`] trait and its [`ResourceError`].
//!
//! Its own module so that everything implementing it (the mold-style resources here, the
//! Directord verbs in `crate::directord::verbs`) imports it without importing the list of
//! built-ins back: this module imports nothing else from the crate.

use serde_json::Value;

/// Why a resource action failed. `Input` errors exit 2 (bad usage); the rest exit 1.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The desired state is not valid: names the field (JSON pointer) and what is expected.
    #[error("invalid input at {pointer}: {message}")]
    Input {
        /// JSON pointer to the field, e.g. `/mode` (empty for the whole document).
        pointer: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// An action name the resource does not know.
    #[error("unknown action {action:?} for {kind}; known actions: {known}")]
    UnknownAction {
        /// The resource kind.
        kind: String,
        /// The action asked for.
        action: String,
        /// Comma-separated known actions.
        known: String,
    },
    /// The system refused or a tool failed: says what was attempted and the tool's output.
    #[error("{0}")]
    Failed(String),
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ResourceError {
    /// A bad-input error for a field.
    pub fn input(pointer: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Input {
            pointer: pointer.into(),
            message: message.into(),
        }
    }

    /// The exit code a resource executable uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Input { .. } | Self::UnknownAction { .. } => 2,
            _ => 1,
        }
    }
}

/// A built-in resource. The framework (see `protocol`) parses argv and stdin, validates the
/// state against [`Resource::schema`], handles batches (`describe().batch == true`: every
/// built-in accepts arrays), `describe`, usage and exit codes; implementations only act.
pub trait Resource: Sync {
    /// The kind: the executable's name, e.g. `file`.
    fn kind(&self) -> &'static str;
    /// One sentence for `describe`.
    fn description(&self) -> &'static str;
    /// Fields that identify one instance, e.g. `["path"]`.
    fn identity(&self) -> &'static [&'static str];
    /// JSON Schema of the desired state (without `kind`, which the framework allows).
    fn schema(&self) -> Value;
    /// Custom one-time actions with their help text (inspect/conform/describe are implicit).
    fn actions(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Whether a dispatcher that is itself the `ingot` binary may run this built-in on a
    /// thread instead of exec'ing it (see `crate::inproc`). Only for built-ins that start no
    /// programs: a thread cannot be killed on timeout the way a process group can.
    fn in_process(&self) -> bool {
        false
    }
    /// Directord-style option list for parsing verb strings (SPEC §8); empty for most.
    fn args(&self) -> Value {
        Value::Array(Vec::new())
    }
    /// Observes the system: the state with the same field names as the desired state wherever
    /// they can be observed, `kind`, `exists`, and `changes` against `desired` when it differs.
    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError>;
    /// Makes the desired state so (idempotently) and returns the observed state afterwards.
    fn conform(&self, desired: &Value) -> Result<Value, ResourceError>;
    /// Runs a custom action.
    fn action(&self, action: &str, state: &Value) -> Result<Value, ResourceError> {
        let _ = state;
        Err(ResourceError::UnknownAction {
            kind: self.kind().into(),
            action: action.into(),
            known: known_actions(self),
        })
    }
}

/// The comma-separated list of every action a resource accepts.
pub fn known_actions<R: Resource + ?Sized>(r: &R) -> String {
    let mut names = vec!["inspect", "conform", "describe"];
    names.extend(r.actions().iter().map(|(n, _)| *n));
    names.join(", ")
}
