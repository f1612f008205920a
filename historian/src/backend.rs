//! The interface the SQLite and PostgreSQL stores implement: a batch writer and the queries.

use std::sync::Arc;

use channel3::{Event, Timestamp};

use crate::model::{
    EventRow, ListFilter, PruneFilter, PruneReport, RunMeta, RunStatus, RunStep, RunSummary, Stats,
    StepOutcome, StepRow,
};
use crate::Result;

/// One write, queued for the writer thread.
pub(crate) enum Op {
    /// A new run; the writer answers with its row key.
    StartRun {
        uuid: String,
        meta: RunMeta,
        started: Timestamp,
        reply: std::sync::mpsc::SyncSender<Result<i64, String>>,
    },
    /// A run ended.
    FinishRun {
        run: i64,
        status: RunStatus,
        ended: Timestamp,
        /// Why it ended so.
        reason: Option<String>,
    },
    /// A step started (or a whole step, when `end` is set).
    Step(Box<StepWrite>),
    /// A step, stored only if the run has no step with its number yet (a step ended after a
    /// restart of its recorder, whose start may not have been committed).
    EnsureStep(Box<StepWrite>),
    /// A step ended.
    StepEnd {
        run: i64,
        no: i64,
        end: Box<StepEndWrite>,
    },
    /// A channel3 event.
    Event {
        run: i64,
        minion: Arc<str>,
        step: Option<i64>,
        event: Event,
    },
    /// Answer once everything queued before is committed.
    Flush(std::sync::mpsc::SyncSender<()>),
    /// Called once the batch holding it is committed (`true`) or lost (`false`): a caller
    /// acknowledges what it queued before without waiting for it.
    AfterCommit(Box<dyn FnOnce(bool) + Send + Sync>),
    /// Commit what came before and stop the writer thread.
    Stop,
}

/// A step row as written.
pub(crate) struct StepWrite {
    pub run: i64,
    pub no: i64,
    pub minion: String,
    pub kind: String,
    pub action: String,
    pub desired: Option<String>,
    pub started: Timestamp,
    pub end: Option<StepEndWrite>,
}

/// The end of a step as written (JSON already redacted and serialized).
pub(crate) struct StepEndWrite {
    pub before: Option<String>,
    pub after: Option<String>,
    pub outcome: StepOutcome,
    pub duration_us: i64,
    pub error: Option<String>,
}

/// A store's write side, owned by the writer thread.
pub(crate) trait WriteBackend: Send {
    /// Writes `ops` in one transaction; returns the keys of the `StartRun`s in order.
    fn write_batch(&mut self, ops: &[Op]) -> Result<Vec<i64>>;
}

/// A store's read side.
pub(crate) trait ReadBackend: Send {
    /// Runs, newest first.
    fn list_runs(&mut self, f: &ListFilter) -> Result<Vec<RunSummary>>;
    /// Runs whose id starts with `prefix` (at most 2), or the newest when `prefix` is `None`.
    fn find_runs(&mut self, prefix: Option<&str>) -> Result<Vec<RunSummary>>;
    /// The run with this key.
    fn run(&mut self, key: i64) -> Result<Option<RunSummary>>;
    /// The steps of a run, in order.
    fn steps(&mut self, run: i64) -> Result<Vec<StepRow>>;
    /// Events of a run with `seq > after`, in order, at most `limit`.
    fn events(&mut self, run: i64, after: i64, limit: usize) -> Result<Vec<EventRow>>;
    /// Deletes (or, when `dry_run`, counts) what `f` selects.
    fn prune(&mut self, f: &PruneFilter, dry_run: bool) -> Result<PruneReport>;
    /// Totals, slow steps and failure counts.
    fn stats(&mut self, top: usize) -> Result<Stats>;
    /// Every step with this action, with its run's id and status: oldest run first, then by
    /// step number.
    fn steps_with_action(&mut self, action: &str) -> Result<Vec<RunStep>>;
    /// Deletes the finished runs with these ids (with their steps and events); running runs
    /// and unknown ids are left alone.
    fn delete_runs(&mut self, ids: &[String]) -> Result<PruneReport>;
}

/// Parses a JSON column; a value that is not JSON is kept as a string.
pub(crate) fn json_col(s: Option<String>) -> Option<serde_json::Value> {
    s.map(|s| serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s)))
}

/// Parses a JSON array of strings column.
pub(crate) fn strings_col(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|_| vec![s.to_owned()])
}
