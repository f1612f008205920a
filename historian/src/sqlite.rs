//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes (the writer thread, batched `BEGIN IMMEDIATE` transactions); any number
//! of other connections read concurrently. `synchronous = NORMAL` in WAL mode means a committed
//! transaction survives the writer process being killed at any point (the WAL is in the page
//! cache); only a power failure may lose the last commits.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};

use crate::backend::{json_col, strings_col, Op, ReadBackend, StepWrite, WriteBackend};
use crate::model::{
    EventRow, FailureCount, ListFilter, PruneFilter, PruneReport, RunStep, RunSummary, SlowStep,
    Stats, StepRow,
};
use crate::{Error, Result};

/// Schema migrations; `PRAGMA user_version` is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, events.
    "CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        command TEXT NOT NULL,
        user TEXT NOT NULL,
        targets TEXT NOT NULL,
        started_us INTEGER NOT NULL,
        ended_us INTEGER,
        status TEXT NOT NULL,
        events INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started ON runs(started_us);
    CREATE TABLE run_minions (
        run_id INTEGER NOT NULL,
        minion TEXT NOT NULL,
        PRIMARY KEY (run_id, minion)
    ) WITHOUT ROWID;
    CREATE INDEX run_minions_minion ON run_minions(minion);
    CREATE TABLE steps (
        run_id INTEGER NOT NULL,
        no INTEGER NOT NULL,
        minion TEXT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        desired TEXT,
        before TEXT,
        after TEXT,
        outcome TEXT NOT NULL,
        started_us INTEGER NOT NULL,
        duration_us INTEGER,
        error TEXT,
        PRIMARY KEY (run_id, no)
    );
    CREATE INDEX steps_kind ON steps(kind);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        minion TEXT NOT NULL,
        step INTEGER,
        name TEXT,
        ts_us INTEGER NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        raw BLOB
    );
    CREATE INDEX events_run ON events(run_id, id);",
    // 2: events keyed by (run, position in the run) packed into the rowid (see `RUN_SHIFT`;
    // in SQL the run is `id >> 36`), so an insert touches one B-tree (no separate index) and
    // a run's events are one contiguous rowid range.
    "CREATE TABLE events_v2 (
        id INTEGER PRIMARY KEY,
        minion TEXT NOT NULL,
        step INTEGER,
        name TEXT,
        ts_us INTEGER NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        raw BLOB
    );
    INSERT INTO events_v2 (id, minion, step, name, ts_us, key, data, raw)
        SELECT (run_id << 36) + row_number() OVER (PARTITION BY run_id ORDER BY id),
            minion, step, name, ts_us, key, data, raw
        FROM events ORDER BY run_id, id;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;",
];

/// An event's rowid is `(run << RUN_SHIFT) + n`, `n` counting the run's events from 1
/// (matches migration 2): 2^27 runs of up to 2^36 - 1 events each.
const RUN_SHIFT: u32 = 36;

/// The rowids of `run`'s events lie strictly between these two.
fn run_range(run: i64) -> Result<(i64, i64)> {
    if !(0..1 << (63 - RUN_SHIFT)).contains(&run) {
        return Err(Error::Writer(format!("run key {run} out of range")));
    }
    Ok((run << RUN_SHIFT, (run + 1) << RUN_SHIFT))
}

/// Events per multi-row `INSERT` (then smaller statements for the rest of a batch): one
/// statement execution per chunk instead of per event.
const INSERT_CHUNKS: [usize; 4] = [128, 32, 8, 1];

/// `INSERT INTO events ... VALUES (...), (...)` with `rows` rows of [`EVENT_COLS`] parameters.
fn insert_events_sql(rows: usize) -> String {
    let mut sql =
        String::from("INSERT INTO events (id, minion, step, name, ts_us, key, data, raw) VALUES ");
    for i in 0..rows {
        sql.push_str(if i == 0 {
            "(?,?,?,?,?,?,?,?)"
        } else {
            ",(?,?,?,?,?,?,?,?)"
        });
    }
    sql
}

/// Parameters per event row.
const EVENT_COLS: usize = 8;

/// An open SQLite history database.
pub(crate) struct Sqlite {
    /// The event inserts of the writer (prepared on first use); dropped before `conn`.
    inserts: Option<raw_insert::Inserts>,
    conn: Connection,
    /// (run, minion) pairs already in `run_minions`.
    seen: HashSet<(i64, Arc<str>)>,
    /// The next event rowid of each run this connection has written to.
    next_event: HashMap<i64, i64>,
    /// The writer's checkpoint thread; after `conn`, whose WAL hook feeds it.
    checkpointer: Option<Checkpointer>,
}

/// WAL frames (pages) after which the writer asks for a checkpoint (like SQLite's
/// `wal_autocheckpoint`, which it replaces on the writer's connection).
const CHECKPOINT_PAGES: i32 = 8192;

/// Copies the WAL back into the database on a thread and connection of its own, so that the
/// writer's commits only append to the WAL (checkpoints were ~15% of the writer's time).
/// A checkpoint never makes a commit more or less durable; it only bounds the WAL.
struct Checkpointer {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread and installs the hook on `writer` that wakes it.
    fn start(writer: &mut Connection, path: &Path) -> Result<Self> {
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

impl Drop for Checkpointer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
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
        db.migrate()?;
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
        db.migrate()?;
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

    fn migrate(&mut self) -> Result<()> {
        let supported = MIGRATIONS.len() as i64;
        let current: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        if current > supported {
            return Err(Error::TooNew {
                found: current,
                supported,
            });
        }
        if current == supported {
            return Ok(());
        }
        // IMMEDIATE: two processes opening a fresh file must not both migrate.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tracing::info!(version = i + 1, "migrating the history database");
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// `PRAGMA integrity_check` (for tests and `stats`).
    pub fn integrity_check(&self) -> Result<String> {
        Ok(self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?)
    }
}

fn insert_step(tx: &rusqlite::Transaction<'_>, s: &StepWrite) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(
        "INSERT OR REPLACE INTO steps (run_id, no, minion, kind, action, desired, before, after,
            outcome, started_us, duration_us, error) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
    )?;
    let end = s.end.as_ref();
    st.execute(params![
        s.run,
        s.no,
        s.minion,
        s.kind,
        s.action,
        s.desired,
        end.and_then(|e| e.before.as_deref()),
        end.and_then(|e| e.after.as_deref()),
        end.map_or("running", |e| e.outcome.as_str()),
        s.started.0,
        end.map(|e| e.duration_us),
        end.and_then(|e| e.error.as_deref()),
    ])?;
    Ok(())
}

/// Inserts a step that is not stored yet (a running one: its end follows as a `StepEnd`).
fn ensure_step(tx: &rusqlite::Transaction<'_>, s: &StepWrite) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO steps (run_id, no, minion, kind, action, desired, outcome,
            started_us) VALUES (?1,?2,?3,?4,?5,?6,'running',?7)",
    )?
    .execute(params![
        s.run,
        s.no,
        s.minion,
        s.kind,
        s.action,
        s.desired,
        s.started.0
    ])?;
    Ok(())
}

/// An event waiting in [`Sqlite::write_batch`] for its multi-row `INSERT`.
struct PendingEvent<'a> {
    id: i64,
    minion: &'a str,
    step: Option<i64>,
    event: &'a channel3::Event,
}

/// The next event rowid of `run`: one past the last stored (only this writer adds events to
/// the runs it started, so after the first lookup a counter in memory is enough).
fn first_free_event(tx: &rusqlite::Transaction<'_>, run: i64) -> Result<i64> {
    let (lo, hi) = run_range(run)?;
    let last: Option<i64> = tx
        .prepare_cached("SELECT max(id) FROM events WHERE id > ?1 AND id < ?2")?
        .query_row([lo, hi], |r| r.get(0))?;
    Ok(last.unwrap_or(lo) + 1)
}

impl WriteBackend for Sqlite {
    fn write_batch(&mut self, ops: &[Op]) -> Result<Vec<i64>> {
        let result = self.write_batch_tx(ops);
        if result.is_err() {
            // Rolled back: the counters may have run ahead of what is stored.
            self.next_event.clear();
        }
        result
    }
}

impl Sqlite {
    fn write_batch_tx(&mut self, ops: &[Op]) -> Result<Vec<i64>> {
        if self.inserts.is_none() {
            self.inserts = Some(raw_insert::Inserts::prepare(&self.conn)?);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut keys = Vec::new();
        // Events per run in this batch, the current run's counter kept out of the map.
        let mut counts: Vec<(i64, i64)> = Vec::new();
        let mut new_pairs: Vec<(i64, Arc<str>)> = Vec::new();
        let mut last_pair: Option<(i64, &Arc<str>)> = None;
        let max_chunk = INSERT_CHUNKS[0];
        let mut pending: Vec<PendingEvent<'_>> = Vec::with_capacity(max_chunk);
        // (run, next rowid) of the run of the last event.
        let mut cur: Option<(i64, i64)> = None;
        let next_event = &mut self.next_event;
        let inserts = self.inserts.as_mut().expect("prepared above");
        for op in ops {
            if let Op::Event {
                run,
                minion,
                step,
                event,
            } = op
            {
                let next = match &mut cur {
                    Some((r, next)) if r == run => next,
                    _ => {
                        if let Some((r, n)) = cur.take() {
                            next_event.insert(r, n);
                        }
                        let n = match next_event.get(run) {
                            Some(&n) => n,
                            None => first_free_event(&tx, *run)?,
                        };
                        if n.saturating_add(ops.len() as i64) >= run_range(*run)?.1 {
                            return Err(Error::Writer(format!(
                                "run key {run} has too many events"
                            )));
                        }
                        &mut cur.insert((*run, n)).1
                    }
                };
                pending.push(PendingEvent {
                    id: *next,
                    minion,
                    step: *step,
                    event,
                });
                *next += 1;
                match counts.last_mut() {
                    Some((r, n)) if r == run => *n += 1,
                    _ => match counts.iter_mut().find(|(r, _)| r == run) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((*run, 1)),
                    },
                }
                if last_pair.as_ref() != Some(&(*run, minion)) {
                    let pair = (*run, minion.clone());
                    if !self.seen.contains(&pair) && !new_pairs.contains(&pair) {
                        new_pairs.push(pair);
                    }
                    last_pair = Some((*run, minion));
                }
                if pending.len() == max_chunk {
                    inserts.run(&pending)?;
                    pending.clear();
                }
                continue;
            }
            // Keep the order of the batch: the events before this operation go first.
            inserts.run(&pending)?;
            pending.clear();
            match op {
                Op::Event { .. } => unreachable!("handled above"),
                Op::StartRun {
                    uuid,
                    meta,
                    started,
                    ..
                } => {
                    tx.prepare_cached(
                        "INSERT INTO runs (uuid, command, user, targets, started_us, status)
                         VALUES (?1,?2,?3,?4,?5,'running')",
                    )?
                    .execute(params![
                        uuid,
                        serde_json::to_string(&meta.command).unwrap_or_default(),
                        meta.user,
                        serde_json::to_string(&meta.targets).unwrap_or_default(),
                        started.0,
                    ])?;
                    keys.push(tx.last_insert_rowid());
                }
                Op::FinishRun { run, status, ended } => {
                    tx.prepare_cached("UPDATE runs SET status = ?1, ended_us = ?2 WHERE id = ?3")?
                        .execute(params![status.as_str(), ended.0, run])?;
                }
                Op::Step(s) => {
                    insert_step(&tx, s)?;
                    let pair = (s.run, Arc::from(s.minion.as_str()));
                    if !self.seen.contains(&pair) && !new_pairs.contains(&pair) {
                        new_pairs.push(pair);
                    }
                }
                Op::EnsureStep(s) => {
                    ensure_step(&tx, s)?;
                    let pair = (s.run, Arc::from(s.minion.as_str()));
                    if !self.seen.contains(&pair) && !new_pairs.contains(&pair) {
                        new_pairs.push(pair);
                    }
                }
                Op::StepEnd { run, no, end } => {
                    tx.prepare_cached(
                        "UPDATE steps SET before = ?1, after = ?2, outcome = ?3,
                            duration_us = ?4, error = ?5 WHERE run_id = ?6 AND no = ?7",
                    )?
                    .execute(params![
                        end.before,
                        end.after,
                        end.outcome.as_str(),
                        end.duration_us,
                        end.error,
                        run,
                        no
                    ])?;
                }
                Op::Flush(_) | Op::AfterCommit(_) | Op::Stop => {}
            }
        }
        inserts.run(&pending)?;
        drop(pending);
        if let Some((r, n)) = cur {
            next_event.insert(r, n);
        }
        for (run, n) in &counts {
            tx.prepare_cached("UPDATE runs SET events = events + ?1 WHERE id = ?2")?
                .execute(params![n, run])?;
        }
        for (run, minion) in &new_pairs {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO run_minions (run_id, minion) VALUES (?1, ?2)",
            )?
            .execute(params![run, &**minion])?;
        }
        tx.commit()?;
        if self.seen.len() > 100_000 {
            self.seen.clear();
        }
        if self.next_event.len() > 10_000 {
            // Forgotten runs are looked up again (one indexed query) if they write more.
            self.next_event.clear();
        }
        self.seen.extend(new_pairs);
        Ok(keys)
    }
}

/// The hot path: multi-row `INSERT`s into `events` through the C API, binding text and blobs
/// with `SQLITE_STATIC` (SQLite reads them in place while the statement runs) instead of
/// copying every value into a fresh allocation, as rusqlite's binding does. The copies and
/// their frees were about a third of the writer's time.
mod raw_insert {
    use std::ffi::{c_char, c_int, CStr};
    use std::ptr;

    use rusqlite::ffi;

    use super::{PendingEvent, EVENT_COLS, INSERT_CHUNKS};

    /// One prepared `INSERT` of `rows` events.
    struct Stmt {
        ptr: *mut ffi::sqlite3_stmt,
        rows: usize,
    }

    /// The statements for each of [`INSERT_CHUNKS`], largest first. Must be dropped before
    /// the connection they were prepared on (field order in [`super::Sqlite`]).
    pub(super) struct Inserts(Vec<Stmt>);

    // SAFETY: the statements are only used by whoever owns the `Sqlite` holding them and its
    // connection (which is `Send`); nothing else has the pointers.
    unsafe impl Send for Inserts {}

    impl Drop for Inserts {
        fn drop(&mut self) {
            for s in &self.0 {
                // SAFETY: prepared by `prepare`, finalized exactly once, here.
                unsafe { ffi::sqlite3_finalize(s.ptr) };
            }
        }
    }

    /// The error SQLite reports on `db` for `rc`.
    ///
    /// # Safety
    /// `db` must be an open connection.
    unsafe fn error(db: *mut ffi::sqlite3, rc: c_int) -> rusqlite::Error {
        // SAFETY: the caller passes an open connection; the message is copied at once.
        let msg = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) }
            .to_string_lossy()
            .into_owned();
        rusqlite::Error::SqliteFailure(ffi::Error::new(rc), Some(msg))
    }

    impl Inserts {
        /// Prepares the statements on `conn`.
        pub fn prepare(conn: &rusqlite::Connection) -> rusqlite::Result<Self> {
            // SAFETY: the handle is used only to prepare statements, while `conn` is open;
            // the caller keeps them no longer than `conn`.
            let db = unsafe { conn.handle() };
            let mut stmts = Inserts(Vec::with_capacity(INSERT_CHUNKS.len()));
            for &rows in &INSERT_CHUNKS {
                let sql = super::insert_events_sql(rows);
                let mut ptr = ptr::null_mut();
                // SAFETY: `sql` outlives the call and its length is given; `ptr` receives the
                // statement (kept in `stmts` at once, so it is finalized on every path).
                let rc = unsafe {
                    ffi::sqlite3_prepare_v3(
                        db,
                        sql.as_ptr().cast::<c_char>(),
                        sql.len() as c_int,
                        ffi::SQLITE_PREPARE_PERSISTENT,
                        &mut ptr,
                        ptr::null_mut(),
                    )
                };
                if rc != ffi::SQLITE_OK {
                    // SAFETY: `db` is open.
                    return Err(unsafe { error(db, rc) });
                }
                stmts.0.push(Stmt { ptr, rows });
            }
            Ok(stmts)
        }

        /// Inserts all of `events`, with as few statement executions as the sizes allow.
        /// Call inside a transaction on the connection the statements belong to.
        pub fn run(&mut self, events: &[PendingEvent<'_>]) -> rusqlite::Result<()> {
            let mut rest = events;
            for s in &self.0 {
                while rest.len() >= s.rows {
                    let (chunk, tail) = rest.split_at(s.rows);
                    // SAFETY: the statement is live; the values bound point into `chunk`,
                    // which outlives `exec`, and `exec` clears the bindings before returning,
                    // so no pointer is kept past it.
                    unsafe { exec(s.ptr, chunk)? };
                    rest = tail;
                }
            }
            Ok(())
        }
    }

    /// Binds `chunk` (exactly as many events as the statement has rows), runs the statement
    /// and resets it, clearing the bindings.
    ///
    /// # Safety
    /// `stmt` must be a live statement from [`Inserts::prepare`].
    unsafe fn exec(
        stmt: *mut ffi::sqlite3_stmt,
        chunk: &[PendingEvent<'_>],
    ) -> rusqlite::Result<()> {
        // SAFETY (all calls below): `stmt` is live (the caller's contract); every pointer
        // bound is into `chunk` and stays valid until the bindings are cleared at the end.
        unsafe {
            let db = ffi::sqlite3_db_handle(stmt);
            let mut rc = ffi::SQLITE_OK;
            for (i, e) in chunk.iter().enumerate() {
                let p = (i * EVENT_COLS) as c_int;
                let m = &e.event.message;
                rc |= ffi::sqlite3_bind_int64(stmt, p + 1, e.id);
                rc |= bind_text(stmt, p + 2, Some(e.minion));
                rc |= match e.step {
                    Some(s) => ffi::sqlite3_bind_int64(stmt, p + 3, s),
                    None => ffi::sqlite3_bind_null(stmt, p + 3),
                };
                rc |= bind_text(stmt, p + 4, m.name.as_deref());
                rc |= ffi::sqlite3_bind_int64(stmt, p + 5, e.event.ts.0);
                rc |= bind_text(stmt, p + 6, Some(&m.key));
                rc |= bind_text(stmt, p + 7, Some(m.data.get()));
                rc |= match m.raw.as_deref() {
                    None => ffi::sqlite3_bind_null(stmt, p + 8),
                    Some([]) => ffi::sqlite3_bind_zeroblob(stmt, p + 8, 0),
                    Some(b) => ffi::sqlite3_bind_blob64(
                        stmt,
                        p + 8,
                        b.as_ptr().cast(),
                        b.len() as u64,
                        ffi::SQLITE_STATIC(),
                    ),
                };
            }
            // SQLITE_OK is 0: any failed bind leaves a bit set.
            let result = if rc != ffi::SQLITE_OK {
                Err(error(db, ffi::sqlite3_errcode(db)))
            } else {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_DONE => Ok(()),
                    rc => Err(error(db, rc)),
                }
            };
            ffi::sqlite3_reset(stmt);
            ffi::sqlite3_clear_bindings(stmt);
            result
        }
    }

    /// Binds UTF-8 text in place (NULL for `None`).
    ///
    /// # Safety
    /// `stmt` is live and `s` outlives the binding.
    unsafe fn bind_text(stmt: *mut ffi::sqlite3_stmt, i: c_int, s: Option<&str>) -> c_int {
        let Some(s) = s else {
            // SAFETY: the caller's contract.
            return unsafe { ffi::sqlite3_bind_null(stmt, i) };
        };
        // An empty string still gets a pointer to real memory.
        let p: *const c_char = if s.is_empty() {
            c"".as_ptr()
        } else {
            s.as_ptr().cast()
        };
        // SAFETY: the caller's contract.
        unsafe {
            ffi::sqlite3_bind_text64(
                stmt,
                i,
                p,
                s.len() as u64,
                ffi::SQLITE_STATIC(),
                ffi::SQLITE_UTF8 as u8,
            )
        }
    }
}

const RUN_COLUMNS: &str = "r.id, r.uuid, r.command, r.user, r.targets, r.started_us, r.ended_us,
    r.status, r.events,
    (SELECT json_group_array(minion) FROM run_minions m WHERE m.run_id = r.id),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'changed'),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'failed')";

fn run_row(r: &Row<'_>) -> rusqlite::Result<(RunSummary, String)> {
    let status: String = r.get(7)?;
    Ok((
        RunSummary {
            key: r.get(0)?,
            id: r.get(1)?,
            command: strings_col(&r.get::<_, String>(2)?),
            user: r.get(3)?,
            targets: strings_col(&r.get::<_, String>(4)?),
            started_us: channel3::Timestamp(r.get(5)?),
            ended_us: r.get::<_, Option<i64>>(6)?.map(channel3::Timestamp),
            status: crate::model::RunStatus::Running,
            events: r.get(8)?,
            minions: strings_col(&r.get::<_, String>(9)?),
            steps: r.get(10)?,
            changed: r.get(11)?,
            failed: r.get(12)?,
        },
        status,
    ))
}

fn finish_runs(rows: Vec<(RunSummary, String)>) -> Result<Vec<RunSummary>> {
    rows.into_iter()
        .map(|(mut s, status)| {
            s.status = status.parse()?;
            Ok(s)
        })
        .collect()
}

/// A step from the columns `no, minion, kind, action, desired, before, after, outcome,
/// started_us, duration_us, error`, starting at column `at`, with its outcome still as text
/// (parsed by the caller, outside rusqlite's error type).
fn step_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(StepRow, String)> {
    Ok((
        StepRow {
            no: r.get(at)?,
            minion: r.get(at + 1)?,
            kind: r.get(at + 2)?,
            action: r.get(at + 3)?,
            desired: json_col(r.get(at + 4)?),
            before: json_col(r.get(at + 5)?),
            after: json_col(r.get(at + 6)?),
            outcome: crate::model::StepOutcome::Running,
            started_us: channel3::Timestamp(r.get(at + 8)?),
            duration_us: r.get(at + 9)?,
            error: r.get(at + 10)?,
        },
        r.get::<_, String>(at + 7)?,
    ))
}

impl ReadBackend for Sqlite {
    fn list_runs(&mut self, f: &ListFilter) -> Result<Vec<RunSummary>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r
             WHERE (?1 IS NULL OR r.status = ?1)
               AND (?2 IS NULL OR r.started_us >= ?2)
               AND (?3 IS NULL OR EXISTS (SELECT 1 FROM run_minions m
                                          WHERE m.run_id = r.id AND m.minion = ?3))
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM steps s
                                          WHERE s.run_id = r.id AND s.kind = ?4))
             ORDER BY r.started_us DESC, r.id DESC LIMIT ?5"
        );
        let limit = if f.limit == 0 { -1 } else { f.limit as i64 };
        let mut st = self.conn.prepare_cached(&sql)?;
        let rows = st
            .query_map(
                params![
                    f.status.map(|s| s.as_str()),
                    f.since.map(|t| t.0),
                    f.minion,
                    f.resource,
                    limit
                ],
                run_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        finish_runs(rows)
    }

    fn find_runs(&mut self, prefix: Option<&str>) -> Result<Vec<RunSummary>> {
        let rows = match prefix {
            None => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.started_us DESC, r.id DESC LIMIT 1"
                );
                let mut st = self.conn.prepare_cached(&sql)?;
                let v = st
                    .query_map([], run_row)?
                    .collect::<rusqlite::Result<_>>()?;
                v
            }
            Some(p) => {
                let sql = format!(
                    "SELECT {RUN_COLUMNS} FROM runs r WHERE substr(r.uuid, 1, length(?1)) = ?1
                     ORDER BY r.uuid LIMIT 2"
                );
                let mut st = self.conn.prepare_cached(&sql)?;
                let v = st
                    .query_map([p.to_ascii_lowercase()], run_row)?
                    .collect::<rusqlite::Result<_>>()?;
                v
            }
        };
        finish_runs(rows)
    }

    fn run(&mut self, key: i64) -> Result<Option<RunSummary>> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = ?1");
        let row = self
            .conn
            .prepare_cached(&sql)?
            .query_row([key], run_row)
            .optional()?;
        Ok(finish_runs(row.into_iter().collect())?.pop())
    }

    fn steps(&mut self, run: i64) -> Result<Vec<StepRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT no, minion, kind, action, desired, before, after, outcome, started_us,
                duration_us, error FROM steps WHERE run_id = ?1 ORDER BY no",
        )?;
        let rows = st
            .query_map([run], |r| step_row_at(r, 0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(mut s, o)| {
                s.outcome = o.parse()?;
                Ok(s)
            })
            .collect()
    }

    fn events(&mut self, run: i64, after: i64, limit: usize) -> Result<Vec<EventRow>> {
        let mut st = self.conn.prepare_cached(
            "SELECT id, minion, step, name, ts_us, key, data, raw FROM events
             WHERE id > ?1 AND id < ?2 ORDER BY id LIMIT ?3",
        )?;
        let Ok((lo, hi)) = run_range(run) else {
            return Ok(Vec::new());
        };
        // `seq` is the position in the run: 1, 2, 3...
        let from = lo.saturating_add(after.clamp(0, hi - lo));
        let rows = st
            .query_map(params![from, hi, limit as i64], |r| {
                Ok(EventRow {
                    seq: r.get::<_, i64>(0)? - lo,
                    minion: r.get(1)?,
                    step: r.get(2)?,
                    name: r.get(3)?,
                    ts: channel3::Timestamp(r.get(4)?),
                    key: r.get(5)?,
                    data: r.get(6)?,
                    raw: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn prune(&mut self, f: &PruneFilter, dry_run: bool) -> Result<PruneReport> {
        let statuses: Vec<&str> = if f.statuses.is_empty() {
            vec!["ok", "changed", "failed", "interrupted"]
        } else {
            f.statuses.iter().map(|s| s.as_str()).collect()
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut report = PruneReport::default();
        let mut keys = Vec::new();
        {
            let mut st = tx.prepare(
                "SELECT id, uuid, events, (SELECT count(*) FROM steps s WHERE s.run_id = runs.id)
                 FROM runs WHERE started_us < ?1 AND status IN (SELECT value FROM json_each(?2))
                 ORDER BY started_us",
            )?;
            let list = serde_json::to_string(&statuses).unwrap_or_default();
            let mut rows = st.query(params![f.before.0, list])?;
            while let Some(r) = rows.next()? {
                keys.push(r.get::<_, i64>(0)?);
                report.runs.push(r.get(1)?);
                report.events += r.get::<_, i64>(2)?;
                report.steps += r.get::<_, i64>(3)?;
            }
        }
        if !dry_run {
            for k in &keys {
                let (lo, hi) = run_range(*k)?;
                tx.execute("DELETE FROM events WHERE id > ?1 AND id < ?2", [lo, hi])?;
                tx.execute("DELETE FROM steps WHERE run_id = ?1", [k])?;
                tx.execute("DELETE FROM run_minions WHERE run_id = ?1", [k])?;
                tx.execute("DELETE FROM runs WHERE id = ?1", [k])?;
            }
            tx.commit()?;
            if !keys.is_empty() {
                // Give the WAL's pages back; a busy reader only delays this.
                let _ = self
                    .conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
        }
        Ok(report)
    }

    fn stats(&mut self, top: usize) -> Result<Stats> {
        let c = &self.conn;
        let mut s = Stats {
            runs: c.query_row("SELECT count(*) FROM runs", [], |r| r.get(0))?,
            steps: c.query_row("SELECT count(*) FROM steps", [], |r| r.get(0))?,
            events: c.query_row("SELECT coalesce(sum(events), 0) FROM runs", [], |r| {
                r.get(0)
            })?,
            ..Stats::default()
        };
        s.by_status = c
            .prepare("SELECT status, count(*) FROM runs GROUP BY status ORDER BY status")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        s.slowest = c
            .prepare(
                "SELECT r.uuid, s.minion, s.kind, s.action, s.duration_us FROM steps s
                 JOIN runs r ON r.id = s.run_id WHERE s.duration_us IS NOT NULL
                 ORDER BY s.duration_us DESC LIMIT ?1",
            )?
            .query_map([top as i64], |r| {
                Ok(SlowStep {
                    run: r.get(0)?,
                    minion: r.get(1)?,
                    kind: r.get(2)?,
                    action: r.get(3)?,
                    duration_us: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        for (col, out) in [
            ("kind", &mut s.failures_by_resource),
            ("minion", &mut s.failures_by_minion),
        ] {
            *out = c
                .prepare(&format!(
                    "SELECT {col}, sum(outcome = 'failed'), count(*) FROM steps GROUP BY {col}
                     HAVING sum(outcome = 'failed') > 0
                     ORDER BY sum(outcome = 'failed') DESC, {col} LIMIT ?1"
                ))?
                .query_map([top as i64], |r| {
                    Ok(FailureCount {
                        name: r.get(0)?,
                        failed: r.get(1)?,
                        total: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
        }
        Ok(s)
    }

    fn steps_with_action(&mut self, action: &str) -> Result<Vec<RunStep>> {
        let mut st = self.conn.prepare_cached(
            "SELECT r.uuid, r.status, s.no, s.minion, s.kind, s.action, s.desired, s.before,
                s.after, s.outcome, s.started_us, s.duration_us, s.error
             FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.action = ?1
             ORDER BY r.started_us, r.id, s.no",
        )?;
        let rows = st
            .query_map([action], |r| {
                let (step, outcome) = step_row_at(r, 2)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    step,
                    outcome,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(run, status, mut step, outcome)| {
                step.outcome = outcome.parse()?;
                Ok(RunStep {
                    run,
                    status: status.parse()?,
                    step,
                })
            })
            .collect()
    }

    fn delete_runs(&mut self, ids: &[String]) -> Result<PruneReport> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut report = PruneReport::default();
        for id in ids {
            let found: Option<(i64, i64, i64)> = tx
                .query_row(
                    "SELECT id, events, (SELECT count(*) FROM steps s WHERE s.run_id = runs.id)
                     FROM runs WHERE uuid = ?1 AND status <> 'running'",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((key, events, steps)) = found else {
                continue;
            };
            let (lo, hi) = run_range(key)?;
            tx.execute("DELETE FROM events WHERE id > ?1 AND id < ?2", [lo, hi])?;
            tx.execute("DELETE FROM steps WHERE run_id = ?1", [key])?;
            tx.execute("DELETE FROM run_minions WHERE run_id = ?1", [key])?;
            tx.execute("DELETE FROM runs WHERE id = ?1", [key])?;
            report.runs.push(id.clone());
            report.events += events;
            report.steps += steps;
        }
        tx.commit()?;
        Ok(report)
    }
}

#[cfg(test)]
mod perf_probe {
    use super::*;
    use crate::model::RunMeta;

    fn event(i: u64) -> channel3::Event {
        channel3::Event::now(channel3::Message::new(
            Some("app/worker".into()),
            &channel3::Body::Stdout(channel3::Line::from_bytes(
                format!("request {i} served in 3ms\n").as_bytes(),
            )),
        ))
    }

    /// `cargo test -p historian --release --lib -- --ignored probe_write_batch --nocapture`
    #[test]
    #[ignore = "timing probe"]
    fn probe_write_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Sqlite::open_rw(&dir.path().join("h.db")).unwrap();
        let (reply, _rx) = std::sync::mpsc::sync_channel(1);
        let key = db
            .write_batch(&[Op::StartRun {
                uuid: "x".into(),
                meta: RunMeta::current(vec![]),
                started: channel3::Timestamp::now(),
                reply,
            }])
            .unwrap()[0];
        let minion: Arc<str> = Arc::from("web1");
        for batch in [256usize, 4096, 16384] {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let total = 200_000u64;
                let mut ops: Vec<Vec<Op>> = Vec::new();
                let mut n = 0;
                while n < total {
                    let v: Vec<Op> = (0..batch as u64)
                        .map(|i| Op::Event {
                            run: key,
                            minion: minion.clone(),
                            step: None,
                            event: event(n + i),
                        })
                        .collect();
                    n += batch as u64;
                    ops.push(v);
                }
                let cpu = || -> u64 {
                    std::fs::read_to_string("/proc/thread-self/schedstat")
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                let t = cpu();
                for v in &ops {
                    db.write_batch(v).unwrap();
                }
                let rate = n as f64 / ((cpu() - t) as f64 / 1e9);
                best = best.min(1e9 / rate);
            }
            eprintln!(
                "batch {batch}: best {best:.0} ns/event = {:.0} events/s",
                1e9 / best
            );
        }
    }
}
