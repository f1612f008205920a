//! The master's half of a fleet apply: the one apply path ([`crate::apply::session`]) on the
//! connected minions that match the request's targets, with every request of a recorded run
//! journaled (so the run survives a restart of the master) and progress sent to the client.

use std::path::Path;
use std::sync::Arc;

use historian::History;
use tokio::sync::mpsc;

use super::RemoteMinion;
use crate::apply::session::{converge_all, finish_run, outcome, recorder, start_run};
use crate::apply::{ApplyRequest, ProgressObserver};
use crate::control::ControlReply;
use crate::routine::actors::{Actors, MasterDir};
use crate::routine::documents::Step;
use crate::routine::report::Style;
use crate::routine::{Observer, StepReport, StepWatch};
use crate::server::journal::RunJournal;
use crate::server::Hub;

/// A recorded step whose request is journaled with it while it is performed.
struct JournaledStep<'a> {
    inner: Box<dyn StepWatch + 'a>,
    journal: &'a RunJournal,
    minion: String,
    no: i64,
}

impl StepWatch for JournaledStep<'_> {
    fn sink(&self) -> &dyn runner::EventSink {
        self.inner.sink()
    }
    fn step_no(&self) -> Option<i64> {
        Some(self.no)
    }
    fn finish(self: Box<Self>, report: &StepReport) {
        // The end is queued for the history first: results waiting for it are acknowledged
        // once it is committed.
        let (journal, minion, no) = (self.journal, self.minion, self.no);
        self.inner.finish(report);
        journal.end_step(&minion, no);
    }
}

/// Journals each recorded step of `inner`'s run in `journal`.
struct Journaled<'a> {
    inner: &'a dyn Observer,
    journal: Option<&'a RunJournal>,
}

impl Observer for Journaled<'_> {
    fn sink(&self, minion: &str) -> Box<dyn runner::EventSink + '_> {
        self.inner.sink(minion)
    }
    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        let inner = self.inner.begin(minion, step);
        match (self.journal, inner.step_no()) {
            (Some(journal), Some(no)) => {
                journal.begin_step(minion, no, step);
                Box::new(JournaledStep {
                    inner,
                    journal,
                    minion: minion.to_owned(),
                    no,
                })
            }
            _ => inner,
        }
    }
    fn record(&self, minion: &str, step: &StepReport) {
        self.inner.record(minion, step);
    }
    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str) {
        self.inner.progress(minion, what, resource, outcome);
    }
}

/// Why a fleet apply could not start: its targets.
fn bad_targets(hub: &Hub, req: &ApplyRequest) -> Result<globset::GlobSet, ControlReply> {
    let mut globs = globset::GlobSetBuilder::new();
    for t in &req.targets {
        let g = globset::Glob::new(t)
            .map_err(|e| ControlReply::Usage(format!("target {t:?} is not a glob: {e}")))?;
        globs.add(g);
    }
    let globs = globs
        .build()
        .map_err(|e| ControlReply::Usage(e.to_string()))?;
    if hub.matching(&globs).is_empty() {
        return Err(ControlReply::Usage(format!(
            "no minion matches {}; connected: {} (see `ingot manage --list-nodes`)",
            req.targets.join(" "),
            match hub.connected_names() {
                n if n.is_empty() => "none (start `ingot minion serve` on them)".into(),
                n => n.join(", "),
            }
        )));
    }
    Ok(globs)
}

/// Applies `req` to every connected minion matching its targets; progress goes to `tx`, the
/// outcome is the reply.
pub async fn apply(
    hub: Arc<Hub>,
    master: &Path,
    history: Option<Arc<History>>,
    req: ApplyRequest,
    tx: mpsc::UnboundedSender<ControlReply>,
) -> ControlReply {
    let globs = match bad_targets(&hub, &req) {
        Ok(g) => g,
        Err(reply) => return reply,
    };
    let sessions = hub.matching(&globs);
    let names: Vec<String> = sessions.iter().map(|s| s.name().to_owned()).collect();
    // One prescribe run may serve many minions (a batch actor); one minion needs no batch.
    let actors = match names.len() {
        1 => Actors::new(MasterDir::new(master)),
        _ => Actors::for_fleet(MasterDir::new(master)),
    };
    let run = start_run(&req, history.as_deref(), names);
    // Its requests are journaled, so the run survives a restart of the master.
    let journal = match (&run, &history, hub.journal()) {
        (Some(r), Some(history), Some(j)) => RunJournal::start(j.clone(), history.clone(), r.id())
            .await
            .inspect_err(|e| tracing::warn!("not journaling this run's requests: {e}"))
            .ok(),
        _ => None,
    };
    let links: Vec<RemoteMinion> = sessions
        .into_iter()
        .map(|s| RemoteMinion::new(hub.clone(), s).journaled(journal.clone()))
        .collect();
    let reports = {
        let recorder = recorder(run.as_ref());
        let journaled = Journaled {
            inner: &*recorder,
            journal: journal.as_deref(),
        };
        let observer = ProgressObserver::new(Style::new(req.color), req.json, &journaled, |line| {
            let _ = tx.send(ControlReply::Progress(line));
        });
        converge_all(&req, &actors, &links, &observer).await
    };
    let run_id = finish_run(run, &reports);
    if let Some(h) = &history {
        if let Err(e) = h.flush() {
            tracing::warn!("the history of this run may be incomplete: {e}");
        }
    }
    if let Some(j) = &journal {
        j.finish();
    }
    let done = outcome(&req, &reports, run_id.as_deref(), &Style::new(req.color));
    ControlReply::Done {
        stdout: done.stdout,
        code: done.code,
    }
}
