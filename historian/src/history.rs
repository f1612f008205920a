//! The recording API: open a history, start a run, hand out event sinks, record steps.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use channel3::{Event, Timestamp};
use runner::EventSink;
use serde_json::Value;

use crate::backend::{Op, StepEndWrite, StepWrite, WriteBackend};
use crate::model::{RunMeta, RunStatus, StepEnd, StepOutcome, StepRecord, StepStart};
use crate::writer::{Writer, WriterOptions};
use crate::{Error, Location, Result};

/// A history open for recording. Cheap to clone; the writer thread stops (after committing
/// everything) when the last clone and the last [`RunHandle`] are gone, or at [`History::close`].
#[derive(Clone)]
pub struct History {
    shared: Arc<Shared>,
}

struct Shared {
    writer: Writer,
    location: Location,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.writer.stop();
    }
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("location", &self.shared.location)
            .finish_non_exhaustive()
    }
}

impl History {
    /// Opens (creating if needed) the history at `location` and starts its writer thread.
    pub fn open(location: &Location) -> Result<Self> {
        Self::open_with(location, WriterOptions::default())
    }

    /// [`History::open`] with writer tuning (batch size, queue, a commit hook).
    pub fn open_with(location: &Location, opts: WriterOptions) -> Result<Self> {
        let backend: Box<dyn WriteBackend> = match location {
            Location::Sqlite(path) => Box::new(crate::sqlite::Sqlite::open_rw(path)?),
            #[cfg(feature = "postgres")]
            Location::Postgres(url) => Box::new(crate::postgres::Postgres::connect(url)?),
            #[cfg(not(feature = "postgres"))]
            Location::Postgres(_) => return Err(Error::NoPostgres),
        };
        Ok(Self {
            shared: Arc::new(Shared {
                writer: Writer::spawn(backend, opts),
                location: location.clone(),
            }),
        })
    }

    /// Where it records.
    pub fn location(&self) -> &Location {
        &self.shared.location
    }

    /// Records a new run (committed before this returns, so `history follow` sees it).
    pub fn start_run(&self, meta: RunMeta) -> Result<RunHandle> {
        let uuid = uuid::Uuid::now_v7().to_string();
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        self.shared.writer.send(Op::StartRun {
            uuid: uuid.clone(),
            meta,
            started: Timestamp::now(),
            reply,
        })?;
        let key = rx
            .recv()
            .map_err(|_| Error::Writer("the writer thread has stopped".into()))?
            .map_err(Error::Writer)?;
        Ok(RunHandle {
            inner: Arc::new(RunInner {
                history: self.shared.clone(),
                key,
                id: uuid,
                next_step: AtomicI64::new(1),
                changed: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                finished: AtomicBool::new(false),
            }),
        })
    }

    /// A handle on the run `id` (its full id), recorded earlier, possibly by a process that
    /// has since died, to add what arrives late: results a master receives after its own
    /// restart. The handle never ends the run: [`RunHandle::finish`] does nothing and dropping
    /// it marks nothing (see [`History::interrupt_run`]).
    pub fn reattach_run(&self, id: &str) -> Result<RunHandle> {
        let mut store = crate::Store::open(self.location())?;
        let run = store.find(id)?;
        if run.id != id {
            return Err(Error::NoSuchRun(id.to_owned()));
        }
        let next = store.steps(&run)?.iter().map(|s| s.no).max().unwrap_or(0) + 1;
        Ok(RunHandle {
            inner: Arc::new(RunInner {
                history: self.shared.clone(),
                key: run.key,
                id: run.id,
                next_step: AtomicI64::new(next),
                changed: AtomicU64::new(run.changed.max(0) as u64),
                failed: AtomicU64::new(run.failed.max(0) as u64),
                finished: AtomicBool::new(true),
            }),
        })
    }

    /// Marks the run `id` (its full id) [`RunStatus::Interrupted`], ended now, if it is still
    /// running: its recorder stopped without finishing it. `Ok(false)` when the run had ended
    /// or is not in this history. Committed before this returns.
    pub fn interrupt_run(&self, id: &str) -> Result<bool> {
        let mut store = crate::Store::open(self.location())?;
        let run = match store.find(id) {
            Ok(run) if run.id == id => run,
            Ok(_) | Err(Error::NoSuchRun(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if run.status != RunStatus::Running {
            return Ok(false);
        }
        self.shared.writer.send(Op::FinishRun {
            run: run.key,
            status: RunStatus::Interrupted,
            ended: Timestamp::now(),
            reason: Some("the master stopped while it ran (restarted, or killed)".into()),
        })?;
        self.flush()?;
        Ok(true)
    }

    /// Waits until everything recorded so far is committed; reports a write failure.
    pub fn flush(&self) -> Result<()> {
        self.shared.writer.flush()
    }

    /// Calls `f` once everything recorded so far is committed (`true`) or its batch is lost
    /// (`false`), on the writer's thread, without waiting here: `f` must not record.
    pub fn after_commit(&self, f: impl FnOnce(bool) + Send + Sync + 'static) {
        if let Err(std::sync::mpsc::SendError(Op::AfterCommit(f))) =
            self.shared.writer.tx.send(Op::AfterCommit(Box::new(f)))
        {
            // The writer stopped: nothing more will be committed.
            f(false);
        }
    }

    /// Events committed by this history's writer so far.
    pub fn committed_events(&self) -> u64 {
        self.shared.writer.committed()
    }

    /// Flushes and reports a failure of any write so far (the thread stops when the last
    /// handle is dropped).
    pub fn close(self) -> Result<()> {
        self.flush()
    }
}

/// One run being recorded. Clone it freely (e.g. one per minion task). If it is dropped
/// without [`RunHandle::finish`], the run is recorded as failed.
#[derive(Clone)]
pub struct RunHandle {
    inner: Arc<RunInner>,
}

struct RunInner {
    history: Arc<Shared>,
    key: i64,
    id: String,
    next_step: AtomicI64,
    changed: AtomicU64,
    failed: AtomicU64,
    finished: AtomicBool,
}

impl Drop for RunInner {
    fn drop(&mut self) {
        if !self.finished.load(Ordering::SeqCst) {
            tracing::warn!(run = %self.id, "run dropped without finish(); recorded as failed");
            let _ = self.history.writer.send(Op::FinishRun {
                run: self.key,
                status: RunStatus::Failed,
                ended: Timestamp::now(),
                reason: Some("its recorder stopped before finishing it".into()),
            });
        }
    }
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl RunHandle {
    /// The run id (a UUID v7) to show to the user.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// A sink for events from `minion` outside any step.
    pub fn sink(&self, minion: &str) -> HistorySink {
        self.sink_for(minion, None)
    }

    /// A sink for events of step `no` (as returned by [`RunHandle::record_step`]) on `minion`:
    /// for output that is known only once the step has been recorded after the fact.
    pub fn step_sink(&self, minion: &str, no: i64) -> HistorySink {
        self.sink_for(minion, Some(no))
    }

    fn sink_for(&self, minion: &str, step: Option<i64>) -> HistorySink {
        HistorySink {
            tx: self.inner.history.writer.tx.clone(),
            run: self.inner.key,
            minion: Arc::from(minion),
            step,
        }
    }

    /// Records that a step starts; its events go to [`StepHandle::sink`].
    pub fn begin_step(&self, start: StepStart) -> StepHandle {
        let no = self.inner.next_step.fetch_add(1, Ordering::Relaxed);
        let sensitive = runner::redact::sensitive_fields(&start.desired);
        let write = StepWrite {
            run: self.inner.key,
            no,
            minion: start.minion.clone(),
            kind: start.kind,
            action: start.action,
            desired: Some(redacted_json(&start.desired, &[])),
            started: Timestamp::now(),
            end: None,
        };
        self.send(Op::Step(Box::new(write)));
        StepHandle {
            run: self.clone(),
            no,
            minion: start.minion,
            sensitive,
            started: Instant::now(),
            done: false,
        }
    }

    /// Records a whole step after the fact; returns its number.
    pub fn record_step(&self, rec: StepRecord) -> i64 {
        let no = self.inner.next_step.fetch_add(1, Ordering::Relaxed);
        let sensitive = runner::redact::sensitive_fields(&rec.start.desired);
        let end = self.end_write(rec.end, &sensitive, rec.duration.as_micros() as i64);
        let write = StepWrite {
            run: self.inner.key,
            no,
            minion: rec.start.minion,
            kind: rec.start.kind,
            action: rec.start.action,
            desired: Some(redacted_json(&rec.start.desired, &[])),
            started: rec.started,
            end: Some(end),
        };
        self.send(Op::Step(Box::new(write)));
        no
    }

    /// Records how step `no` ended, after the fact: a result that arrived after the recorder
    /// restarted (see [`History::reattach_run`]). A step that was never stored (its start was
    /// not committed before the restart) is created from `start` and `started`; a stored one
    /// keeps its start and desired state. `start.desired` may be `null` (unknown); its
    /// `sensitive` fields are masked in `end`.
    pub fn end_step(
        &self,
        no: i64,
        start: StepStart,
        end: StepEnd,
        started: Timestamp,
        duration: std::time::Duration,
    ) {
        let sensitive = runner::redact::sensitive_fields(&start.desired);
        let desired = (!start.desired.is_null()).then(|| redacted_json(&start.desired, &[]));
        self.send(Op::EnsureStep(Box::new(StepWrite {
            run: self.inner.key,
            no,
            minion: start.minion,
            kind: start.kind,
            action: start.action,
            desired,
            started,
            end: None,
        })));
        let end = self.end_write(end, &sensitive, duration.as_micros() as i64);
        self.send(Op::StepEnd {
            run: self.inner.key,
            no,
            end: Box::new(end),
        });
    }

    fn end_write(&self, end: StepEnd, sensitive: &[String], duration_us: i64) -> StepEndWrite {
        let outcome = match end.outcome {
            None | Some(StepOutcome::Running) => StepOutcome::Failed,
            Some(o) => o,
        };
        match outcome {
            StepOutcome::Changed => {
                self.inner.changed.fetch_add(1, Ordering::Relaxed);
            }
            StepOutcome::Failed => {
                self.inner.failed.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        StepEndWrite {
            before: end.before.as_ref().map(|v| redacted_json(v, sensitive)),
            after: end.after.as_ref().map(|v| redacted_json(v, sensitive)),
            outcome,
            duration_us,
            error: end.error,
        }
    }

    /// The status the recorded steps imply: failed if any failed, else changed if any
    /// changed, else ok.
    pub fn derived_status(&self) -> RunStatus {
        if self.inner.failed.load(Ordering::Relaxed) > 0 {
            RunStatus::Failed
        } else if self.inner.changed.load(Ordering::Relaxed) > 0 {
            RunStatus::Changed
        } else {
            RunStatus::Ok
        }
    }

    /// Records the end of the run. Later calls are ignored.
    pub fn finish(&self, status: RunStatus) {
        self.finish_because(status, None);
    }

    /// Records the run's end with its status and why it ended so (a failure's reason, the
    /// drift found, the signal that stopped it), shown by `ingot history show`.
    pub fn finish_because(&self, status: RunStatus, reason: Option<String>) {
        if !self.inner.finished.swap(true, Ordering::SeqCst) {
            self.send(Op::FinishRun {
                run: self.inner.key,
                status,
                ended: Timestamp::now(),
                reason,
            });
        }
    }

    fn send(&self, op: Op) {
        if self.inner.history.writer.send(op).is_err() {
            tracing::warn!(run = %self.inner.id, "history writer stopped; record dropped");
        }
    }
}

/// A step being recorded. Dropping it without [`StepHandle::finish`] records it as failed.
#[derive(Debug)]
pub struct StepHandle {
    run: RunHandle,
    no: i64,
    minion: String,
    sensitive: Vec<String>,
    started: Instant,
    done: bool,
}

impl StepHandle {
    /// The step's number within its run.
    pub fn no(&self) -> i64 {
        self.no
    }

    /// A sink for the events of this step.
    pub fn sink(&self) -> HistorySink {
        self.run.sink_for(&self.minion, Some(self.no))
    }

    /// Records how the step ended, with its duration measured since it began.
    pub fn finish(mut self, end: StepEnd) {
        self.end(end);
    }

    fn end(&mut self, end: StepEnd) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let us = self.started.elapsed().as_micros() as i64;
        let end = self.run.end_write(end, &self.sensitive, us);
        self.run.send(Op::StepEnd {
            run: self.run.inner.key,
            no: self.no,
            end: Box::new(end),
        });
    }
}

impl Drop for StepHandle {
    fn drop(&mut self) {
        self.end(StepEnd {
            error: Some("step abandoned before it finished".into()),
            ..StepEnd::default()
        });
    }
}

/// Redacts a state (its own `sensitive` list plus `extra` fields) and serializes it.
fn redacted_json(v: &Value, extra: &[String]) -> String {
    let mut r = runner::redact::redact_state(v);
    if let Value::Object(map) = &mut r {
        for f in extra {
            if let Some(x) = map.get_mut(f) {
                *x = Value::String(runner::redact::MASK.into());
            }
        }
    }
    r.to_string()
}

/// An [`EventSink`] that records events into a run (for one minion, optionally one step).
/// Never blocks for long: events are queued for the writer thread.
#[derive(Clone, Debug)]
pub struct HistorySink {
    tx: SyncSender<Op>,
    run: i64,
    minion: Arc<str>,
    step: Option<i64>,
}

impl EventSink for HistorySink {
    fn emit(&self, event: Event) {
        // A stopped writer means the history was closed; the event has nowhere to go.
        let _ = self.tx.send(Op::Event {
            run: self.run,
            minion: self.minion.clone(),
            step: self.step,
            event,
        });
    }
}

/// Sends every event to two sinks (e.g. the history and the terminal).
#[derive(Clone, Copy)]
pub struct Tee<'a>(pub &'a dyn EventSink, pub &'a dyn EventSink);

impl EventSink for Tee<'_> {
    fn emit(&self, event: Event) {
        self.0.emit(event.clone());
        self.1.emit(event);
    }
}
