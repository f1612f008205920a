//! The hot path: multi-row `INSERT`s into `events` through the C API, binding text and blobs
//! with `SQLITE_STATIC` (SQLite reads them in place while the statement runs) instead of
//! copying every value into a fresh allocation, as rusqlite's binding does. The copies and
//! their frees were about a third of the writer's time.

use std::ffi::{c_char, c_int, CStr};
use std::ptr;

use rusqlite::ffi;

/// Events per multi-row `INSERT` (then smaller statements for the rest of a batch): one
/// statement execution per chunk instead of per event.
pub(super) const INSERT_CHUNKS: [usize; 4] = [128, 32, 8, 1];

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

/// An event of a writer batch (`Sqlite::write_batch`) waiting for its multi-row `INSERT`.
pub(super) struct PendingEvent<'a> {
    pub(super) id: i64,
    pub(super) minion: &'a str,
    pub(super) step: Option<i64>,
    pub(super) event: &'a channel3::Event,
}

/// One prepared `INSERT` of `rows` events.
struct Stmt {
    ptr: *mut ffi::sqlite3_stmt,
    rows: usize,
}

/// The statements for each of [`INSERT_CHUNKS`], largest first. Must be dropped before
/// the connection they were prepared on (field order in [`super::connection::Sqlite`]).
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
            let sql = insert_events_sql(rows);
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
unsafe fn exec(stmt: *mut ffi::sqlite3_stmt, chunk: &[PendingEvent<'_>]) -> rusqlite::Result<()> {
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
