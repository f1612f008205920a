//! Checkpoints of the writer's WAL on a thread and connection of their own.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use crate::{Error, Result};

/// WAL frames (pages) after which the writer asks for a checkpoint (like SQLite's
/// `wal_autocheckpoint`, which it replaces on the writer's connection).
const CHECKPOINT_PAGES: i32 = 8192;

/// Copies the WAL back into the database on a thread and connection of its own, so that the
/// writer's commits only append to the WAL (checkpoints were ~15% of the writer's time).
/// A checkpoint never makes a commit more or less durable; it only bounds the WAL.
pub(super) struct Checkpointer {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread and installs the hook on `writer` that wakes it.
    pub(super) fn start(writer: &mut Connection, path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| Error::Open {
            path: path.to_owned(),
            source,
        })?;
        conn.busy_timeout(Duration::from_secs(30))?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("historian-checkpoint".into())
            .spawn(move || {
                // Ends when the writer's connection (holding `tx` in its hook) closes.
                while rx.recv().is_ok() {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "history checkpoint failed");
                    }
                }
            })
            .map_err(Error::Io)?;
        writer.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            if pages >= CHECKPOINT_PAGES {
                // Full: a checkpoint is already asked for.
                let _ = tx.try_send(());
            }
            Ok(())
        }))?;
        Ok(Self {
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
