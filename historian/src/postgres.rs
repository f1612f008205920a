//! The shared store: PostgreSQL, chosen by a `postgres://` URL.
//!
//! Same tables as SQLite (`user` is `username`, a reserved word here). The async client runs on
//! a private current-thread runtime; calls made from inside another tokio runtime run it on a
//! scoped thread so they never nest runtimes. Events of a batch go in with one
//! `INSERT ... SELECT FROM UNNEST(arrays)` per 10 000 events.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use tokio_postgres::{Client, NoTls, Row};

use crate::backend::{json_col, strings_col, Op, ReadBackend, WriteBackend};
use crate::model::{
    EventRow, FailureCount, ListFilter, PruneFilter, PruneReport, RunStep, RunSummary, SlowStep,
    Stats, StepRow,
};
use crate::{Error, Result};

const MIGRATIONS: &[&str] = &[
    // 1: runs, steps, events.
    "CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        uuid TEXT NOT NULL UNIQUE,
        command TEXT NOT NULL,
        username TEXT NOT NULL,
        targets TEXT NOT NULL,
        started_us BIGINT NOT NULL,
        ended_us BIGINT,
        status TEXT NOT NULL,
        events BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX runs_started ON runs(started_us);
    CREATE TABLE run_minions (
        run_id BIGINT NOT NULL,
        minion TEXT NOT NULL,
        PRIMARY KEY (run_id, minion)
    );
    CREATE INDEX run_minions_minion ON run_minions(minion);
    CREATE TABLE steps (
        run_id BIGINT NOT NULL,
        no BIGINT NOT NULL,
        minion TEXT NOT NULL,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        desired TEXT,
        before TEXT,
        after TEXT,
        outcome TEXT NOT NULL,
        started_us BIGINT NOT NULL,
        duration_us BIGINT,
        error TEXT,
        PRIMARY KEY (run_id, no)
    );
    CREATE INDEX steps_kind ON steps(kind);
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL,
        minion TEXT NOT NULL,
        step BIGINT,
        name TEXT,
        ts_us BIGINT NOT NULL,
        key TEXT NOT NULL,
        data TEXT NOT NULL,
        raw BYTEA
    );
    CREATE INDEX events_run ON events(run_id, id);",
    // Why a run ended as it did (a failure, a drift, an interrupt), for review.
    "ALTER TABLE runs ADD COLUMN reason TEXT;",
];

/// Any number, as long as every ingot uses the same one: serialises migrations.
const MIGRATION_LOCK: i64 = 0x696e_676f_7431;

/// A connection to a PostgreSQL history.
pub(crate) struct Postgres {
    rt: tokio::runtime::Runtime,
    client: Client,
    seen: HashSet<(i64, Arc<str>)>,
}

/// Runs `f` to completion on `rt`, on a scoped thread when called from inside a runtime.
fn block<F: Future + Send>(rt: &tokio::runtime::Runtime, f: F) -> F::Output
where
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(f))
                .join()
                .expect("PostgreSQL query thread panicked")
        })
    } else {
        rt.block_on(f)
    }
}

/// PostgreSQL text cannot hold NUL; the exact bytes stay in `raw`.
fn text(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

impl Postgres {
    /// Connects and brings the schema up to date.
    pub fn connect(url: &str) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = block(&rt, async {
            let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::error!(error = %e, "PostgreSQL history connection closed");
                }
            });
            Ok::<_, Error>(client)
        })?;
        let mut db = Self {
            rt,
            client,
            seen: HashSet::new(),
        };
        db.migrate()?;
        Ok(db)
    }

    fn migrate(&mut self) -> Result<()> {
        let Self { rt, client, .. } = self;
        block(rt, async {
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
                .await?;
            tx.batch_execute(
                "CREATE TABLE IF NOT EXISTS historian_schema (version BIGINT NOT NULL)",
            )
            .await?;
            let current: i64 = tx
                .query_opt("SELECT version FROM historian_schema", &[])
                .await?
                .map_or(0, |r| r.get(0));
            let supported = MIGRATIONS.len() as i64;
            if current > supported {
                return Err(Error::TooNew {
                    found: current,
                    supported,
                });
            }
            for sql in &MIGRATIONS[current as usize..] {
                tx.batch_execute(sql).await?;
            }
            tx.execute("DELETE FROM historian_schema", &[]).await?;
            tx.execute("INSERT INTO historian_schema VALUES ($1)", &[&supported])
                .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

#[derive(Default)]
struct EventColumns {
    run: Vec<i64>,
    minion: Vec<String>,
    step: Vec<Option<i64>>,
    name: Vec<Option<String>>,
    ts: Vec<i64>,
    key: Vec<String>,
    data: Vec<String>,
    raw: Vec<Option<Vec<u8>>>,
}

const INSERT_EVENTS: &str = "INSERT INTO events (run_id, minion, step, name, ts_us, key, data, raw)
    SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::bigint[],
                         $6::text[], $7::text[], $8::bytea[])";

impl WriteBackend for Postgres {
    fn write_batch(&mut self, ops: &[Op]) -> Result<Vec<i64>> {
        let Self { rt, client, seen } = self;
        let mut cols = EventColumns::default();
        let mut counts: HashMap<i64, i64> = HashMap::new();
        let mut pairs: Vec<(i64, Arc<str>)> = Vec::new();
        let note = |run: i64, minion: Arc<str>, pairs: &mut Vec<(i64, Arc<str>)>| {
            let p = (run, minion);
            if !seen.contains(&p) && !pairs.contains(&p) {
                pairs.push(p);
            }
        };
        for op in ops {
            match op {
                Op::Event {
                    run,
                    minion,
                    step,
                    event,
                } => {
                    let m = &event.message;
                    cols.run.push(*run);
                    cols.minion.push(text(minion));
                    cols.step.push(*step);
                    cols.name.push(m.name.as_deref().map(text));
                    cols.ts.push(event.ts.0);
                    cols.key.push(text(&m.key));
                    cols.data.push(text(m.data.get()));
                    cols.raw.push(m.raw.as_ref().map(|r| r.to_vec()));
                    *counts.entry(*run).or_default() += 1;
                    note(*run, minion.clone(), &mut pairs);
                }
                Op::Step(s) | Op::EnsureStep(s) => {
                    note(s.run, Arc::from(s.minion.as_str()), &mut pairs)
                }
                _ => {}
            }
        }
        let keys = block(rt, async {
            let tx = client.transaction().await?;
            let mut keys = Vec::new();
            for op in ops {
                match op {
                    Op::StartRun {
                        uuid,
                        meta,
                        started,
                        ..
                    } => {
                        let row = tx
                            .query_one(
                                "INSERT INTO runs (uuid, command, username, targets, started_us,
                                    status) VALUES ($1,$2,$3,$4,$5,'running') RETURNING id",
                                &[
                                    uuid,
                                    &serde_json::to_string(&meta.command).unwrap_or_default(),
                                    &text(&meta.user),
                                    &serde_json::to_string(&meta.targets).unwrap_or_default(),
                                    &started.0,
                                ],
                            )
                            .await?;
                        keys.push(row.get::<_, i64>(0));
                    }
                    Op::FinishRun {
                        run,
                        status,
                        ended,
                        reason,
                    } => {
                        tx.execute(
                            "UPDATE runs SET status = $1, ended_us = $2, reason = $3 WHERE id = $4",
                            &[&status.as_str(), &ended.0, reason, run],
                        )
                        .await?;
                    }
                    // A step already stored is kept: `Step` never replaces one here, and
                    // `EnsureStep` (no end) only fills in a missing one.
                    Op::Step(s) | Op::EnsureStep(s) => {
                        let end = s.end.as_ref();
                        tx.execute(
                            "INSERT INTO steps (run_id, no, minion, kind, action, desired, before,
                                after, outcome, started_us, duration_us, error)
                             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)
                             ON CONFLICT (run_id, no) DO NOTHING",
                            &[
                                &s.run,
                                &s.no,
                                &text(&s.minion),
                                &text(&s.kind),
                                &text(&s.action),
                                &s.desired.as_deref().map(text),
                                &end.and_then(|e| e.before.as_deref()).map(text),
                                &end.and_then(|e| e.after.as_deref()).map(text),
                                &end.map_or("running", |e| e.outcome.as_str()),
                                &s.started.0,
                                &end.map(|e| e.duration_us),
                                &end.and_then(|e| e.error.as_deref()).map(text),
                            ],
                        )
                        .await?;
                    }
                    Op::StepEnd { run, no, end } => {
                        tx.execute(
                            "UPDATE steps SET before = $1, after = $2, outcome = $3,
                                duration_us = $4, error = $5 WHERE run_id = $6 AND no = $7",
                            &[
                                &end.before.as_deref().map(text),
                                &end.after.as_deref().map(text),
                                &end.outcome.as_str(),
                                &end.duration_us,
                                &end.error.as_deref().map(text),
                                run,
                                no,
                            ],
                        )
                        .await?;
                    }
                    Op::Event { .. } | Op::Flush(_) | Op::AfterCommit(_) | Op::Stop => {}
                }
            }
            const CHUNK: usize = 10_000;
            let mut at = 0;
            while at < cols.run.len() {
                let r = at..(at + CHUNK).min(cols.run.len());
                tx.execute(
                    INSERT_EVENTS,
                    &[
                        &&cols.run[r.clone()],
                        &&cols.minion[r.clone()],
                        &&cols.step[r.clone()],
                        &&cols.name[r.clone()],
                        &&cols.ts[r.clone()],
                        &&cols.key[r.clone()],
                        &&cols.data[r.clone()],
                        &&cols.raw[r.clone()],
                    ],
                )
                .await?;
                at = r.end;
            }
            for (run, n) in &counts {
                tx.execute(
                    "UPDATE runs SET events = events + $1 WHERE id = $2",
                    &[n, run],
                )
                .await?;
            }
            for (run, minion) in &pairs {
                tx.execute(
                    "INSERT INTO run_minions (run_id, minion) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[run, &text(minion)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok::<_, Error>(keys)
        })?;
        if seen.len() > 100_000 {
            seen.clear();
        }
        seen.extend(pairs);
        Ok(keys)
    }
}

const RUN_COLUMNS: &str = "r.id, r.uuid, r.command, r.username, r.targets, r.started_us,
    r.ended_us, r.status, r.events,
    coalesce((SELECT json_agg(minion ORDER BY minion)::text FROM run_minions m
              WHERE m.run_id = r.id), '[]'),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'changed'),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'failed'),
    r.reason";

fn run_row(r: &Row) -> Result<RunSummary> {
    Ok(RunSummary {
        key: r.try_get(0)?,
        id: r.try_get(1)?,
        command: strings_col(r.try_get(2)?),
        user: r.try_get(3)?,
        targets: strings_col(r.try_get(4)?),
        started_us: channel3::Timestamp(r.try_get(5)?),
        ended_us: r.try_get::<_, Option<i64>>(6)?.map(channel3::Timestamp),
        status: r.try_get::<_, &str>(7)?.parse()?,
        events: r.try_get(8)?,
        minions: strings_col(r.try_get(9)?),
        steps: r.try_get(10)?,
        changed: r.try_get(11)?,
        failed: r.try_get(12)?,
        reason: r.try_get(13)?,
    })
}

impl Postgres {
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let Self { rt, client, .. } = self;
        Ok(block(rt, client.query(sql, params))?)
    }
}

/// Counts what the selected runs (rows of `id, uuid, events, step count`) hold and, unless
/// `dry_run`, deletes them with their events, steps and minions inside `tx`.
async fn delete_selected(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[tokio_postgres::Row],
    dry_run: bool,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let mut keys: Vec<i64> = Vec::new();
    for r in rows {
        keys.push(r.try_get(0)?);
        report.runs.push(r.try_get(1)?);
        report.events += r.try_get::<_, i64>(2)?;
        report.steps += r.try_get::<_, i64>(3)?;
    }
    if !dry_run {
        for table in ["events", "steps", "run_minions"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE run_id = ANY($1)"),
                &[&keys],
            )
            .await?;
        }
        tx.execute("DELETE FROM runs WHERE id = ANY($1)", &[&keys])
            .await?;
    }
    Ok(report)
}

/// A step from the columns `no, minion, kind, action, desired, before, after, outcome,
/// started_us, duration_us, error`, starting at column `at`.
fn step_row_at(r: &tokio_postgres::Row, at: usize) -> Result<StepRow> {
    Ok(StepRow {
        no: r.try_get(at)?,
        minion: r.try_get(at + 1)?,
        kind: r.try_get(at + 2)?,
        action: r.try_get(at + 3)?,
        desired: json_col(r.try_get(at + 4)?),
        before: json_col(r.try_get(at + 5)?),
        after: json_col(r.try_get(at + 6)?),
        outcome: r.try_get::<_, &str>(at + 7)?.parse()?,
        started_us: channel3::Timestamp(r.try_get(at + 8)?),
        duration_us: r.try_get(at + 9)?,
        error: r.try_get(at + 10)?,
    })
}

impl ReadBackend for Postgres {
    fn list_runs(&mut self, f: &ListFilter) -> Result<Vec<RunSummary>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r
             WHERE ($1::text IS NULL OR r.status = $1)
               AND ($2::bigint IS NULL OR r.started_us >= $2)
               AND ($3::text IS NULL OR EXISTS (SELECT 1 FROM run_minions m
                                                WHERE m.run_id = r.id AND m.minion = $3))
               AND ($4::text IS NULL OR EXISTS (SELECT 1 FROM steps s
                                                WHERE s.run_id = r.id AND s.kind = $4))
             ORDER BY r.started_us DESC, r.id DESC LIMIT $5"
        );
        let limit = (f.limit > 0).then_some(f.limit as i64);
        let rows = self.query(
            &sql,
            &[
                &f.status.map(|s| s.as_str()),
                &f.since.map(|t| t.0),
                &f.minion,
                &f.resource,
                &limit,
            ],
        )?;
        rows.iter().map(run_row).collect()
    }

    fn find_runs(&mut self, prefix: Option<&str>) -> Result<Vec<RunSummary>> {
        let rows = match prefix {
            None => self.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs r ORDER BY r.started_us DESC, r.id DESC LIMIT 1"
                ),
                &[],
            )?,
            Some(p) => self.query(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs r WHERE left(r.uuid, length($1::text)) = $1
                     ORDER BY r.uuid LIMIT 2"
                ),
                &[&p.to_ascii_lowercase()],
            )?,
        };
        rows.iter().map(run_row).collect()
    }

    fn run(&mut self, key: i64) -> Result<Option<RunSummary>> {
        let rows = self.query(
            &format!("SELECT {RUN_COLUMNS} FROM runs r WHERE r.id = $1"),
            &[&key],
        )?;
        rows.first().map(run_row).transpose()
    }

    fn steps(&mut self, run: i64) -> Result<Vec<StepRow>> {
        let rows = self.query(
            "SELECT no, minion, kind, action, desired, before, after, outcome, started_us,
                duration_us, error FROM steps WHERE run_id = $1 ORDER BY no",
            &[&run],
        )?;
        rows.iter().map(|r| step_row_at(r, 0)).collect()
    }

    fn events(&mut self, run: i64, after: i64, limit: usize) -> Result<Vec<EventRow>> {
        let rows = self.query(
            "SELECT id, minion, step, name, ts_us, key, data, raw FROM events
             WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            &[&run, &after, &(limit as i64)],
        )?;
        rows.iter()
            .map(|r| {
                Ok(EventRow {
                    seq: r.try_get(0)?,
                    minion: r.try_get(1)?,
                    step: r.try_get(2)?,
                    name: r.try_get(3)?,
                    ts: channel3::Timestamp(r.try_get(4)?),
                    key: r.try_get(5)?,
                    data: r.try_get(6)?,
                    raw: r.try_get(7)?,
                })
            })
            .collect()
    }

    fn prune(&mut self, f: &PruneFilter, dry_run: bool) -> Result<PruneReport> {
        let statuses: Vec<&str> = if f.statuses.is_empty() {
            vec!["ok", "changed", "failed", "interrupted"]
        } else {
            f.statuses.iter().map(|s| s.as_str()).collect()
        };
        let Self { rt, client, .. } = self;
        block(rt, async {
            let tx = client.transaction().await?;
            let rows = tx
                .query(
                    "SELECT id, uuid, events, (SELECT count(*) FROM steps s WHERE s.run_id = r.id)
                     FROM runs r WHERE started_us < $1 AND status = ANY($2) ORDER BY started_us
                     FOR UPDATE",
                    &[&f.before.0, &statuses],
                )
                .await?;
            let report = delete_selected(&tx, &rows, dry_run).await?;
            if !dry_run {
                tx.commit().await?;
            }
            Ok(report)
        })
    }

    fn stats(&mut self, top: usize) -> Result<Stats> {
        let top = top as i64;
        let one = |db: &mut Self, sql: &str| -> Result<i64> {
            Ok(db
                .query(sql, &[])?
                .first()
                .map_or(Ok(0), |r| r.try_get(0))?)
        };
        let mut s = Stats {
            runs: one(self, "SELECT count(*) FROM runs")?,
            steps: one(self, "SELECT count(*) FROM steps")?,
            events: one(self, "SELECT coalesce(sum(events), 0)::bigint FROM runs")?,
            ..Stats::default()
        };
        s.by_status = self
            .query(
                "SELECT status, count(*) FROM runs GROUP BY status ORDER BY status",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_>>()?;
        s.slowest = self
            .query(
                "SELECT r.uuid, s.minion, s.kind, s.action, s.duration_us FROM steps s
                 JOIN runs r ON r.id = s.run_id WHERE s.duration_us IS NOT NULL
                 ORDER BY s.duration_us DESC LIMIT $1",
                &[&top],
            )?
            .iter()
            .map(|r| {
                Ok(SlowStep {
                    run: r.try_get(0)?,
                    minion: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    action: r.try_get(3)?,
                    duration_us: r.try_get(4)?,
                })
            })
            .collect::<Result<_>>()?;
        for col in ["kind", "minion"] {
            let rows = self.query(
                &format!(
                    "SELECT {col}, count(*) FILTER (WHERE outcome = 'failed') AS f, count(*)
                     FROM steps GROUP BY {col} HAVING count(*) FILTER (WHERE outcome = 'failed') > 0
                     ORDER BY f DESC, {col} LIMIT $1"
                ),
                &[&top],
            )?;
            let counts = rows
                .iter()
                .map(|r| {
                    Ok(FailureCount {
                        name: r.try_get(0)?,
                        failed: r.try_get(1)?,
                        total: r.try_get(2)?,
                    })
                })
                .collect::<Result<_>>()?;
            if col == "kind" {
                s.failures_by_resource = counts;
            } else {
                s.failures_by_minion = counts;
            }
        }
        Ok(s)
    }

    fn steps_with_action(&mut self, action: &str) -> Result<Vec<RunStep>> {
        let rows = self.query(
            "SELECT r.uuid, r.status, s.no, s.minion, s.kind, s.action, s.desired, s.before,
                s.after, s.outcome, s.started_us, s.duration_us, s.error
             FROM steps s JOIN runs r ON r.id = s.run_id WHERE s.action = $1
             ORDER BY r.started_us, r.id, s.no",
            &[&action],
        )?;
        rows.iter()
            .map(|r| {
                Ok(RunStep {
                    run: r.try_get(0)?,
                    status: r.try_get::<_, &str>(1)?.parse()?,
                    step: step_row_at(r, 2)?,
                })
            })
            .collect()
    }

    fn delete_runs(&mut self, ids: &[String]) -> Result<PruneReport> {
        let Self { rt, client, .. } = self;
        block(rt, async {
            let tx = client.transaction().await?;
            let rows = tx
                .query(
                    "SELECT id, uuid, events, (SELECT count(*) FROM steps s WHERE s.run_id = r.id)
                     FROM runs r WHERE uuid = ANY($1) AND status <> 'running' ORDER BY started_us
                     FOR UPDATE",
                    &[&ids],
                )
                .await?;
            let report = delete_selected(&tx, &rows, false).await?;
            tx.commit().await?;
            Ok(report)
        })
    }
}
