//! Recording a run in the historian: each performed step, its events, and planned steps.

use historian::{RunHandle, StepEnd, StepHandle, StepRecord, StepStart};
use runner::{EventSink, NullSink};

use crate::routine::documents::Step;
use crate::routine::{Observer, StepReport, StepStatus, StepWatch};

/// An observer that keeps nothing (`--no-history`).
pub struct Forget;

impl StepWatch for NullSink {
    fn sink(&self) -> &dyn EventSink {
        self
    }
    fn finish(self: Box<Self>, _: &StepReport) {}
}

impl Observer for Forget {
    fn sink(&self, _: &str) -> Box<dyn EventSink + '_> {
        Box::new(NullSink)
    }
    fn begin(&self, _: &str, _: &Step) -> Box<dyn StepWatch + '_> {
        Box::new(NullSink)
    }
    fn record(&self, _: &str, _: &StepReport) {}
    fn progress(&self, _: &str, _: &str, _: &str, _: &str) {}
}

/// Records into one historian run.
pub struct HistoryObserver<'a> {
    run: &'a RunHandle,
}

impl<'a> HistoryObserver<'a> {
    /// Records into `run`.
    pub fn new(run: &'a RunHandle) -> Self {
        Self { run }
    }
}

fn outcome(o: StepStatus) -> historian::StepOutcome {
    match o {
        StepStatus::Unchanged => historian::StepOutcome::Unchanged,
        StepStatus::Changed => historian::StepOutcome::Changed,
        StepStatus::Failed => historian::StepOutcome::Failed,
        // A skipped step did not run: nothing changed.
        StepStatus::Skipped => historian::StepOutcome::Unchanged,
        StepStatus::WouldChange => historian::StepOutcome::WouldChange,
    }
}

fn end(r: &StepReport) -> StepEnd {
    StepEnd {
        before: r.before.clone(),
        after: r.after.clone(),
        outcome: Some(outcome(r.outcome)),
        error: r.error.clone().or_else(|| {
            (r.outcome == StepStatus::Skipped)
                .then(|| "skipped: an earlier step failed (--fail-fast)".into())
        }),
    }
}

struct HistoryStep {
    step: Option<StepHandle>,
    sink: historian::HistorySink,
}

impl StepWatch for HistoryStep {
    fn sink(&self) -> &dyn EventSink {
        &self.sink
    }

    fn step_no(&self) -> Option<i64> {
        self.step.as_ref().map(StepHandle::no)
    }

    fn finish(mut self: Box<Self>, report: &StepReport) {
        if let Some(step) = self.step.take() {
            step.finish(end(report));
        }
    }
}

impl Observer for HistoryObserver<'_> {
    fn sink(&self, minion: &str) -> Box<dyn EventSink + '_> {
        Box::new(self.run.sink(minion))
    }

    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        let handle = self.run.begin_step(StepStart {
            minion: minion.into(),
            kind: step.kind.clone(),
            action: step.action.clone(),
            desired: step.state.clone(),
        });
        let sink = handle.sink();
        Box::new(HistoryStep {
            step: Some(handle),
            sink,
        })
    }

    fn record(&self, minion: &str, r: &StepReport) {
        self.run.record_step(StepRecord {
            start: StepStart {
                minion: minion.into(),
                kind: r.kind.clone(),
                action: r.action.clone(),
                desired: r.state.clone(),
            },
            end: end(r),
            started: channel3::Timestamp::now(),
            duration: r.duration,
        });
    }

    fn progress(&self, _: &str, _: &str, _: &str, _: &str) {}
}

/// Records one `ingot facts` / `ingot resource` command as a run (with one step for a
/// resource action) in the minion's history.
pub struct CommandRecord {
    history: historian::History,
    run: RunHandle,
    step: std::sync::Mutex<Option<(StepHandle, String)>>,
}

impl CommandRecord {
    /// Opens the history (`flag`, else `$INGOT_HISTORY`, else `MINION/logs/history.db`) and
    /// starts a run; `None` (with a warning) when it cannot be opened or `no_history`.
    pub fn start(
        flag: Option<&str>,
        no_history: bool,
        minion_dir: &std::path::Path,
    ) -> Option<Self> {
        if no_history {
            return None;
        }
        let location = historian::Location::resolve(flag, None, Some(minion_dir));
        let opened = historian::History::open(&location).and_then(|h| {
            h.start_run(historian::RunMeta::current(vec!["local".into()]))
                .map(|r| (h, r))
        });
        match opened {
            Ok((history, run)) => Some(Self {
                history,
                run,
                step: std::sync::Mutex::new(None),
            }),
            Err(e) => {
                eprintln!("ingot: warning: not recording this command ({e}); pass --no-history to silence this");
                None
            }
        }
    }
}

impl minion::commands::Record for CommandRecord {
    fn begin(&self, step: Option<(&str, &str, &serde_json::Value)>) -> Box<dyn EventSink + '_> {
        let Some((kind, action, input)) = step else {
            return Box::new(self.run.sink("local"));
        };
        let handle = self.run.begin_step(StepStart {
            minion: "local".into(),
            kind: kind.into(),
            action: action.into(),
            desired: input.clone(),
        });
        let sink = handle.sink();
        *self.step.lock().unwrap_or_else(|e| e.into_inner()) = Some((handle, action.to_owned()));
        Box::new(sink)
    }

    fn end(&self, code: i32) {
        if let Some((step, action)) = self.step.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let outcome = match (code, action.as_str()) {
                (0, "inspect" | "describe") => historian::StepOutcome::Unchanged,
                (0, _) => historian::StepOutcome::Changed,
                _ => historian::StepOutcome::Failed,
            };
            let error = (code != 0).then(|| format!("exited with code {code}"));
            step.finish(StepEnd {
                outcome: Some(outcome),
                error,
                ..StepEnd::default()
            });
        }
        self.run.finish(if code == 0 {
            self.run.derived_status()
        } else {
            historian::RunStatus::Failed
        });
        if let Err(e) = self.history.flush() {
            eprintln!("ingot: warning: the history of this command may be incomplete: {e}");
        }
    }
}

/// The recorder for a minion command: the history, or nothing (`--no-history`, or it could not
/// be opened).
pub fn for_command(
    flag: Option<&str>,
    no_history: bool,
    minion_dir: &std::path::Path,
) -> Box<dyn minion::commands::Record> {
    match CommandRecord::start(flag, no_history, minion_dir) {
        Some(r) => Box::new(r),
        None => Box::new(minion::commands::NoRecord),
    }
}
