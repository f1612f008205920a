//! One recorded run's side of the journal ([`RunJournal`]): its requests journaled before they
//! are sent, the steps they perform, and the results held until those steps are stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use historian::History;
use minion::wire::Op;

use super::file::{lock, now_us, Entry, Journal, JournalError};
use crate::routine::documents::Step;

/// A step being performed in a journaled run.
#[derive(Debug, Clone)]
struct OpenStep {
    no: i64,
    kind: String,
    action: String,
    sensitive: Vec<String>,
}

/// What acknowledges a request's result to its minion and closes its journal entry, called
/// once the result is committed to the history (`true`) or lost there (`false`).
pub type Release = Box<dyn FnOnce(bool) + Send + Sync>;

/// A result received whose steps are not recorded yet.
struct HeldResult {
    minion: String,
    /// Its steps still being performed.
    steps: Vec<i64>,
    release: Release,
}

/// The journal's view of one recorded run while it runs: which steps each minion is
/// performing, so a request can be journaled with them, and the results received but not
/// yet recorded, acknowledged once they are.
pub struct RunJournal {
    journal: Arc<Journal>,
    history: Arc<History>,
    run: String,
    steps: Mutex<HashMap<String, Vec<OpenStep>>>,
    held: Mutex<Vec<HeldResult>>,
}

impl std::fmt::Debug for RunJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunJournal")
            .field("run", &self.run)
            .field("steps", &self.steps)
            .field("held", &lock(&self.held).len())
            .finish_non_exhaustive()
    }
}

impl RunJournal {
    /// Journals the start of the run `run`, recorded in `history` (on disk when this returns).
    pub async fn start(
        journal: Arc<Journal>,
        history: Arc<History>,
        run: &str,
    ) -> Result<Arc<Self>, JournalError> {
        journal.open_run(run).await?;
        Ok(Arc::new(Self {
            journal,
            history,
            run: run.into(),
            steps: Mutex::new(HashMap::new()),
            held: Mutex::new(Vec::new()),
        }))
    }

    /// The result of a request `minion` answered is in hand: `release` it once the history
    /// holds it, that is once the steps it performs (`steps`) ended and their ends are
    /// committed, or, with no steps, once what is queued now is committed.
    pub fn release_when_recorded(&self, minion: &str, steps: Vec<i64>, release: Release) {
        let open = lock(&self.steps)
            .get(minion)
            .is_some_and(|o| o.iter().any(|s| steps.contains(&s.no)));
        if open {
            lock(&self.held).push(HeldResult {
                minion: minion.to_owned(),
                steps,
                release,
            });
        } else {
            self.history.after_commit(release);
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// `minion` begins performing `step`, number `no` in the run.
    pub fn begin_step(&self, minion: &str, no: i64, step: &Step) {
        lock(&self.steps)
            .entry(minion.to_owned())
            .or_default()
            .push(OpenStep {
                no,
                kind: step.kind.clone(),
                action: step.action.clone(),
                sensitive: runner::redact::sensitive_fields(&step.state),
            });
    }

    /// Step `no` on `minion` ended, its end queued for the history: the results waiting for
    /// it are released once that is committed.
    pub fn end_step(&self, minion: &str, no: i64) {
        if let Some(open) = lock(&self.steps).get_mut(minion) {
            open.retain(|s| s.no != no);
        }
        let ready: Vec<HeldResult> = {
            let mut held = lock(&self.held);
            for h in held.iter_mut().filter(|h| h.minion == minion) {
                h.steps.retain(|s| *s != no);
            }
            let (ready, waiting) = std::mem::take(&mut *held)
                .into_iter()
                .partition(|h| h.steps.is_empty());
            *held = waiting;
            ready
        };
        for h in ready {
            self.history.after_commit(h.release);
        }
    }

    /// The entry for request `id` doing `op` on `minion`: with the steps `minion` is performing
    /// when `op` is their action. `None` for what is not recorded (descriptions, jobs).
    pub fn entry(&self, id: &str, minion: &str, op: &Op) -> Option<Entry> {
        let (kind, action) = match op {
            Op::Facts => ("", "facts"),
            Op::Resource { kind, action, .. } => (kind.as_str(), action.as_str()),
            // Descriptions, jobs, transfers and the like are not steps of a recorded run.
            _ => return None,
        };
        let steps: Vec<OpenStep> = lock(&self.steps)
            .get(minion)
            .map(|open| {
                open.iter()
                    .filter(|s| s.kind == kind && s.action == action)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut sensitive: Vec<String> = steps.iter().flat_map(|s| s.sensitive.clone()).collect();
        sensitive.sort();
        sensitive.dedup();
        Some(Entry {
            id: id.into(),
            run: self.run.clone(),
            minion: minion.into(),
            what: op.label(),
            kind: kind.into(),
            action: action.into(),
            steps: steps.iter().map(|s| s.no).collect(),
            sensitive,
            sent: now_us(),
        })
    }

    /// The run ended.
    pub fn finish(&self) {
        self.release_all();
        self.journal.close_run(&self.run);
    }

    /// Releases every held result once what is queued now is committed: their steps will
    /// not end (the run is over).
    fn release_all(&self) {
        for h in std::mem::take(&mut *lock(&self.held)) {
            self.history.after_commit(h.release);
        }
    }
}

impl Drop for RunJournal {
    fn drop(&mut self) {
        self.release_all();
    }
}
