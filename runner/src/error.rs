//! Why the runner could not run a program.

use std::io;

/// Why a program could not be run (its own failure is an [`crate::Outcome`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// exec failed.
    #[error("cannot run {path}: {source} (check that it exists and is executable: chmod +x)")]
    Spawn {
        /// The program.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The user does not exist.
    #[error("unknown user {0:?} (check getent passwd)")]
    UnknownUser(String),
    /// The group does not exist.
    #[error("unknown group {0:?} (check getent group)")]
    UnknownGroup(String),
    /// Pipes could not be created.
    #[error("cannot create a pipe for the child: {0}")]
    Pipe(#[source] io::Error),
    /// Waiting for the child failed.
    #[error("waiting for {name}: {source}")]
    Wait {
        /// The program's name.
        name: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Stdout was not the JSON document expected.
    #[error("{name} printed invalid JSON on stdout ({source}): {snippet}")]
    BadJson {
        /// The program's name.
        name: String,
        /// The start of what it printed.
        snippet: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}
