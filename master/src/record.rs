//! Recording a run in the historian: each performed step, its events, and planned steps.

use historian::{RunHandle, StepEnd, StepHandle, StepRecord, StepStart};
use runner::EventSink;

use crate::documents::Step;
use crate::routine::{Observer, StepOutcome, StepReport, StepWatch};

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

fn outcome(o: StepOutcome) -> historian::StepOutcome {
    match o {
        StepOutcome::Unchanged => historian::StepOutcome::Unchanged,
        StepOutcome::Changed => historian::StepOutcome::Changed,
        StepOutcome::Failed => historian::StepOutcome::Failed,
        // A skipped step did not run: nothing changed.
        StepOutcome::Skipped => historian::StepOutcome::Unchanged,
        StepOutcome::WouldChange => historian::StepOutcome::WouldChange,
    }
}

fn end(r: &StepReport) -> StepEnd {
    StepEnd {
        before: r.before.clone(),
        after: r.after.clone(),
        outcome: Some(outcome(r.outcome)),
        error: r.error.clone().or_else(|| {
            (r.outcome == StepOutcome::Skipped)
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
