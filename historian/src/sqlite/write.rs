//! The writer: a batch of operations in one `BEGIN IMMEDIATE` transaction.

use std::sync::Arc;

use rusqlite::{params, TransactionBehavior};

use super::connection::Sqlite;
use super::raw_insert::{self, PendingEvent, INSERT_CHUNKS};
use super::schema::run_range;
use crate::backend::{Op, StepWrite, WriteBackend};
use crate::{Error, Result};

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
                Op::FinishRun {
                    run,
                    status,
                    ended,
                    reason,
                } => {
                    tx.prepare_cached(
                        "UPDATE runs SET status = ?1, ended_us = ?2, reason = ?3 WHERE id = ?4",
                    )?
                    .execute(params![
                        status.as_str(),
                        ended.0,
                        reason,
                        run
                    ])?;
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
