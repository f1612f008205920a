//! The errors of the historian.

use std::path::PathBuf;

/// What went wrong in the historian. Messages say what to try.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The SQLite database could not be opened or created.
    #[error("cannot open the history database {path}: {source} (check the directory exists and is writable, or pass --history PATH / --no-history)")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The directory of the database could not be created.
    #[error("cannot create the history directory {path}: {source} (pass --history PATH to store it elsewhere)")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No history database exists where one was expected (read-only commands never create one).
    #[error("no history database at {0} (nothing has been recorded there yet; pass --history PATH|URL or set INGOT_HISTORY)")]
    Missing(PathBuf),
    /// The database was written by a newer ingot.
    #[error("the history database has schema version {found}, newer than the {supported} this ingot knows (upgrade ingot, or pass --history to use another database)")]
    TooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// An SQLite statement failed.
    #[error("history database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A PostgreSQL statement or connection failed.
    #[cfg(feature = "postgres")]
    #[error("PostgreSQL history error: {0} (check the --history URL, that the server is up and the user may create tables)")]
    Postgres(#[from] tokio_postgres::Error),
    /// A `postgres://` location was given to a build without PostgreSQL support.
    #[error("this ingot was built without PostgreSQL support (feature `postgres`); use an SQLite path for --history")]
    NoPostgres,
    /// No run matches what was asked for.
    #[error("no run matches {0:?} (see `ingot history list`)")]
    NoSuchRun(String),
    /// A run prefix matches more than one run.
    #[error("{0:?} matches more than one run; give more characters of the run id")]
    Ambiguous(String),
    /// The writer thread stopped or reported a failure.
    #[error("the history writer failed: {0} (events after this point were not stored)")]
    Writer(String),
    /// A stored value could not be read back.
    #[error("corrupt history record: {0}")]
    Corrupt(String),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    /// A user-supplied argument was not understood.
    #[error("{0}")]
    Usage(String),
}

impl Error {
    /// The exit code of a command that failed with this error ([`runner::exit`]): what the
    /// operator asked for does not exist or was not understood (usage), or the store failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Missing(_)
            | Error::NoSuchRun(_)
            | Error::Ambiguous(_)
            | Error::Usage(_)
            | Error::NoPostgres => runner::exit::USAGE,
            _ => runner::exit::FAILED,
        }
    }
}

/// Results of the historian.
pub type Result<T, E = Error> = std::result::Result<T, E>;
