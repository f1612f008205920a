//! The database schema: its migrations, and how an event's rowid packs its run.

use rusqlite::{Connection, TransactionBehavior};

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
    // 3: why a run ended as it did (a failure, a drift, an interrupt), for review.
    "ALTER TABLE runs ADD COLUMN reason TEXT;",
];

/// An event's rowid is `(run << RUN_SHIFT) + n`, `n` counting the run's events from 1
/// (matches migration 2): 2^27 runs of up to 2^36 - 1 events each.
const RUN_SHIFT: u32 = 36;

/// The rowids of `run`'s events lie strictly between these two.
pub(super) fn run_range(run: i64) -> Result<(i64, i64)> {
    if !(0..1 << (63 - RUN_SHIFT)).contains(&run) {
        return Err(Error::Writer(format!("run key {run} out of range")));
    }
    Ok((run << RUN_SHIFT, (run + 1) << RUN_SHIFT))
}

/// Applies the migrations `conn`'s database lacks (`PRAGMA user_version` counts those
/// applied); refuses a database newer than this program.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
    let supported = MIGRATIONS.len() as i64;
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
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
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tracing::info!(version = i + 1, "migrating the history database");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}
