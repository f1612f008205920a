//! Results delivered after a restart of the master ([`LateResults`]): a minion re-sends what it
//! spooled for a journaled request, and its events and step outcomes go into that run and step
//! of the history before the result is acknowledged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use historian::{History, RunHandle, StepEnd, StepOutcome, StepStart, Store};
use runner::EventSink;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::file::{lock, now_us, Entry, Journal};
use minion::wire::{Frame, Reply};

/// Frames of a journaled request from before a restart, collected until its result.
struct Late {
    entry: Entry,
    last_seq: u64,
    events: Vec<channel3::Event>,
    /// Its result is being recorded: later copies are ignored.
    closing: bool,
}

/// A reattached run, with the events already stored per minion (counted by step, timestamp,
/// key and data), so that frames re-sent after a restart are not stored twice.
struct Reattached {
    handle: RunHandle,
    stored: HashMap<String, HashMap<EventKey, usize>>,
}

type EventKey = (Option<i64>, i64, String, String);

fn event_key(step: Option<i64>, ev: &channel3::Event) -> EventKey {
    (
        step,
        ev.ts.0,
        ev.message.key.clone(),
        ev.message.data.get().to_owned(),
    )
}

/// What [`LateResults`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The request is journaled: the frame was taken (or ignored as a copy).
    Journaled,
    /// Not a request this master journaled for that minion.
    Unknown,
}

/// Records what minions deliver for requests journaled before the master restarted.
pub struct LateResults {
    journal: Arc<Journal>,
    history: Arc<History>,
    late: Mutex<HashMap<String, Late>>,
    runs: Mutex<HashMap<String, Reattached>>,
}

impl LateResults {
    /// Late results of `journal`'s requests go into `history`.
    pub fn new(journal: Arc<Journal>, history: Arc<History>) -> Arc<Self> {
        Arc::new(Self {
            journal,
            history,
            late: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Runs `f` on the collected frames of `id` from `minion`, starting a collection when `id`
    /// is journaled for `minion`.
    fn with_late<T>(&self, minion: &str, id: &str, f: impl FnOnce(&mut Late) -> T) -> Option<T> {
        let mut late = lock(&self.late);
        if !late.contains_key(id) {
            let entry = self.journal.lookup(id).filter(|e| e.minion == minion)?;
            late.insert(
                id.to_owned(),
                Late {
                    entry,
                    last_seq: 0,
                    events: Vec::new(),
                    closing: false,
                },
            );
        }
        late.get_mut(id).map(f)
    }

    /// An event of request `id` from `minion`.
    pub fn event(&self, minion: &str, id: &str, seq: u64, ev: channel3::Event) -> Taken {
        let taken = self.with_late(minion, id, |l| {
            if !l.closing && seq > l.last_seq {
                l.last_seq = seq;
                l.events.push(ev);
            }
        });
        match taken {
            Some(()) => Taken::Journaled,
            None => Taken::Unknown,
        }
    }

    /// The result of request `id` from `minion`: recorded in the background; `ack` gets the
    /// acknowledgement once it is committed.
    pub fn result(
        self: &Arc<Self>,
        minion: &str,
        id: &str,
        reply: Reply,
        ack: mpsc::UnboundedSender<Frame>,
    ) -> Taken {
        let taken = self.with_late(minion, id, |l| {
            if l.closing {
                return None;
            }
            l.closing = true;
            Some((l.entry.clone(), std::mem::take(&mut l.events)))
        });
        let Some(work) = taken else {
            return Taken::Unknown;
        };
        let Some((entry, events)) = work else {
            return Taken::Journaled;
        };
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let rec = this.clone();
            let entry2 = entry.clone();
            let r = tokio::task::spawn_blocking(move || rec.record(&entry2, events, reply))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            lock(&this.late).remove(&id);
            match r {
                Ok(()) => {
                    this.journal.done(&id);
                    if !this.journal.run_pending(&entry.run) {
                        lock(&this.runs).remove(&entry.run);
                    }
                    tracing::info!(
                        minion = %entry.minion,
                        run = %entry.run,
                        %id,
                        "recorded the result of {} delivered after a restart of the master",
                        entry.what
                    );
                    let _ = ack.send(Frame::Ack { id });
                }
                // Not acknowledged: the minion sends it again after its next reconnect.
                Err(e) => tracing::error!(
                    minion = %entry.minion,
                    run = %entry.run,
                    %id,
                    "recording the result of {} delivered after a restart: {e}",
                    entry.what
                ),
            }
        });
        Taken::Journaled
    }

    /// Stores the events not stored yet, the steps' outcomes, and waits for the commit.
    fn record(
        &self,
        entry: &Entry,
        events: Vec<channel3::Event>,
        reply: Reply,
    ) -> Result<(), String> {
        let step = entry.steps.first().copied();
        let (handle, mut stored) = self.reattach(&entry.run, &entry.minion)?;
        let sink = match step {
            Some(no) => handle.step_sink(&entry.minion, no),
            None => handle.sink(&entry.minion),
        };
        let span = events
            .first()
            .zip(events.last())
            .map(|(a, b)| Duration::from_micros((b.ts.0 - a.ts.0).max(0) as u64));
        for ev in events {
            let key = event_key(step, &ev);
            match stored.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => sink.emit(ev),
            }
        }
        if !entry.steps.is_empty() {
            let duration = span
                .unwrap_or_else(|| Duration::from_micros((now_us() - entry.sent).max(0) as u64));
            let each = duration / entry.steps.len() as u32;
            let mask = json!({ "sensitive": entry.sensitive });
            for (no, result) in entry.steps.iter().zip(step_results(entry, reply)) {
                let end = match result {
                    Ok(after) => StepEnd {
                        after: Some(if entry.sensitive.is_empty() {
                            after
                        } else {
                            crate::routine::redact_with(&after, &mask)
                        }),
                        outcome: Some(StepOutcome::Changed),
                        ..StepEnd::default()
                    },
                    Err(error) => StepEnd {
                        outcome: Some(StepOutcome::Failed),
                        error: Some(error),
                        ..StepEnd::default()
                    },
                };
                handle.end_step(
                    *no,
                    StepStart {
                        minion: entry.minion.clone(),
                        kind: entry.kind.clone(),
                        action: entry.action.clone(),
                        desired: Value::Null,
                    },
                    end,
                    channel3::Timestamp(entry.sent),
                    each,
                );
            }
        }
        // Copies of these events sent again are counted as stored from now on.
        self.history.flush().map_err(|e| e.to_string())
    }

    /// The run's handle and the events stored for `minion` (loaded once per run and minion).
    fn reattach(
        &self,
        run: &str,
        minion: &str,
    ) -> Result<(RunHandle, HashMap<EventKey, usize>), String> {
        let mut runs = lock(&self.runs);
        if !runs.contains_key(run) {
            let handle = self
                .history
                .reattach_run(run)
                .map_err(|e| format!("reopening run {run}: {e}"))?;
            runs.insert(
                run.to_owned(),
                Reattached {
                    handle,
                    stored: HashMap::new(),
                },
            );
        }
        let r = runs.get_mut(run).expect("inserted above");
        if !r.stored.contains_key(minion) {
            let counts = stored_events(&self.history, run, minion)?;
            r.stored.insert(minion.to_owned(), counts);
        }
        // Handed out, not shared: each request's events are matched against what was stored
        // before the restart, and no two requests store the same events.
        let stored = r.stored.get(minion).cloned().unwrap_or_default();
        Ok((r.handle.clone(), stored))
    }
}

/// The events of `minion` stored in run `run`, counted by [`EventKey`].
fn stored_events(
    history: &History,
    run: &str,
    minion: &str,
) -> Result<HashMap<EventKey, usize>, String> {
    let wrap = |e: historian::Error| format!("reading run {run}: {e}");
    let mut store = Store::open(history.location()).map_err(wrap)?;
    let summary = store.find(run).map_err(wrap)?;
    let mut counts = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.events_after(&summary, after, 10_000).map_err(wrap)?;
        let Some(last) = page.last() else {
            return Ok(counts);
        };
        after = last.seq;
        for e in page.into_iter().filter(|e| e.minion == minion) {
            *counts.entry((e.step, e.ts.0, e.key, e.data)).or_insert(0) += 1;
        }
    }
}

/// Each step's result from the reply of the request that performed them (one element each
/// for a batch).
fn step_results(entry: &Entry, reply: Reply) -> Vec<Result<Value, String>> {
    let n = entry.steps.len();
    match reply {
        Reply::Ok(v) if n == 1 => vec![Ok(v)],
        Reply::Ok(Value::Array(items)) if items.len() == n => items
            .into_iter()
            .map(|v| match v.get("error") {
                Some(e) if v.as_object().is_some_and(|o| o.len() == 1) => Err(format!(
                    "resources/{} conform: {}",
                    entry.kind,
                    e.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.to_string())
                )),
                _ => Ok(v),
            })
            .collect(),
        Reply::Ok(_) => vec![
            Err(format!(
                "resources/{} conform: a batch of {n} states must give as many results",
                entry.kind
            ));
            n
        ],
        Reply::Err(e) => vec![Err(e.to_string()); n],
    }
}

#[cfg(test)]
mod tests {
    use super::super::file::tests::entry;
    use super::*;

    #[test]
    fn batch_results_are_split_per_step() {
        let mut e = entry("x", "r");
        e.steps = vec![4, 5];
        let r = step_results(
            &e,
            Reply::Ok(json!([{"path": "/a"}, {"error": "no space"}])),
        );
        assert_eq!(r[0], Ok(json!({"path": "/a"})));
        assert_eq!(r[1], Err("resources/file conform: no space".into()));
        let r = step_results(&e, Reply::Ok(json!({"x": 1})));
        assert!(r.iter().all(Result::is_err));
    }
}
