//! Reading the history: runs, steps and events, pruning and statistics.

use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

use super::connection::Sqlite;
use super::schema::run_range;
use crate::backend::{json_col, strings_col, ReadBackend};
use crate::model::{
    EventRow, FailureCount, ListFilter, PruneFilter, PruneReport, RunStep, RunSummary, SlowStep,
    Stats, StepRow,
};
use crate::Result;

const RUN_COLUMNS: &str = "r.id, r.uuid, r.command, r.user, r.targets, r.started_us, r.ended_us,
    r.status, r.events,
    (SELECT json_group_array(minion) FROM run_minions m WHERE m.run_id = r.id),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'changed'),
    (SELECT count(*) FROM steps s WHERE s.run_id = r.id AND s.outcome = 'failed'),
    r.reason";

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
            reason: r.get(13)?,
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
