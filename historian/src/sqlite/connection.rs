//! [`Sqlite`]: an open history database, and opening one.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::checkpoint::Checkpointer;
use super::raw_insert;
use super::schema;
use crate::{Error, Result};

/// An open SQLite history database.
pub(crate) struct Sqlite {
    /// The event inserts of the writer (prepared on first use); dropped before `conn`.
    pub(super) inserts: Option<raw_insert::Inserts>,
    pub(super) conn: Connection,
    /// (run, minion) pairs already in `run_minions`.
    pub(super) seen: HashSet<(i64, Arc<str>)>,
    /// The next event rowid of each run this connection has written to.
    pub(super) next_event: HashMap<i64, i64>,
    /// The writer's checkpoint thread; after `conn`, whose WAL hook feeds it.
    checkpointer: Option<Checkpointer>,
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        if self.checkpointer.is_some() {
            // Drops the hook's sender, so the checkpoint thread ends and can be joined (when
            // the `checkpointer` field drops) even if closing the connection failed.
            type Hook = fn(&mut rusqlite::hooks::Wal, i32) -> rusqlite::Result<()>;
            let _ = self.conn.wal_hook(None::<Hook>);
        }
    }
}

impl Sqlite {
    /// Opens (creating file, directory and schema as needed) for writing.
    pub fn open_rw(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut db = Self::setup(conn, path)?;
        schema::migrate(&mut db.conn)?;
        db.checkpointer = Some(Checkpointer::start(&mut db.conn, path)?);
        Ok(db)
    }

    /// Opens an existing database for reading (and pruning); never creates one.
    pub fn open_existing(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::Missing(path.to_owned()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        let mut db = Self::setup(conn, path)?;
        schema::migrate(&mut db.conn)?;
        Ok(db)
    }

    fn setup(conn: Connection, path: &Path) -> Result<Self> {
        let wrap = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(30)).map_err(wrap)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(wrap)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(wrap)?;
        // Fewer, larger checkpoints and a bigger page cache: the writer spends its time
        // appending, not copying the WAL back into the database.
        conn.pragma_update(None, "wal_autocheckpoint", 8192)
            .map_err(wrap)?;
        conn.pragma_update(None, "cache_size", -32768)
            .map_err(wrap)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(wrap)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            inserts: None,
            conn,
            seen: HashSet::new(),
            next_event: HashMap::new(),
            checkpointer: None,
        })
    }

    /// `PRAGMA integrity_check` (for tests and `stats`).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}
