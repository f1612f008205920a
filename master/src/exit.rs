//! How a command of the master fails, and the exit code each failure has (the table is
//! [`runner::exit`]'s: one for every crate).

use runner::exit;

/// Why a command could not do its work; each kind has its exit code ([`CommandError::exit_code`]).
/// The message says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Usage or bad input: nothing was done (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The running master could not be reached (exit 3).
    #[error("{0}")]
    Unreachable(String),
    /// The tree is in use by another process (exit 3).
    #[error("{0}")]
    Locked(String),
    /// The work was attempted and failed (exit 1).
    #[error("{0}")]
    Failed(String),
    /// An I/O error on a path (exit 1).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl CommandError {
    /// The exit code of this failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Unreachable(_) | Self::Locked(_) => exit::UNAVAILABLE,
            Self::Failed(_) | Self::Io { .. } => exit::FAILED,
        }
    }

    /// A usage error.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }

    /// A failure of the work.
    pub fn failed(message: impl std::fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<std::path::PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}

/// Checks that a tree given on the command line exists; `init` names the `ingot init` that
/// makes it and the flag that points at another (`master` or `minion`).
pub fn require_dir(path: &std::path::Path, what: &str, init: &str) -> Result<(), CommandError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(CommandError::Usage(format!(
            "{what} {} does not exist; create it with `ingot init {init} {}` or pass --{init} DIR",
            path.display(),
            path.display()
        )))
    }
}
