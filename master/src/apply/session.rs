//! The steps every apply takes, local or fleet: start the run, converge the minions, finish the
//! run, report. Nothing here knows where the minions are.

use std::collections::BTreeMap;
use std::sync::Mutex;

use historian::{History, RunHandle, RunStatus};
use runner::EventSink;
use serde_json::json;

use super::ApplyRequest;
use crate::record::{Forget, HistoryObserver};
use crate::routine::actors::Actors;
use crate::routine::documents::Step;
use crate::routine::link::MinionLink;
use crate::routine::report::{progress_line, recap, Style};
use crate::routine::{
    converge, MinionReport, MinionStatus, Observer, StepReport, StepStatus, StepWatch,
};

/// Starts the run of `req` on `targets` in `history` (none with `--no-history`, or when the
/// history refuses it: the apply goes on unrecorded, with a warning).
pub fn start_run(
    req: &ApplyRequest,
    history: Option<&History>,
    targets: Vec<String>,
) -> Option<RunHandle> {
    if req.no_history {
        return None;
    }
    history?
        .start_run(req.run_meta(targets))
        .inspect_err(|e| {
            tracing::warn!("not recording this run: {e}");
            eprintln!("ingot: warning: not recording this run: {e}");
        })
        .ok()
}

/// The observer that records into `run`, or keeps nothing.
pub fn recorder(run: Option<&RunHandle>) -> Box<dyn Observer + Send + Sync + '_> {
    match run {
        Some(r) => Box::new(HistoryObserver::new(r)),
        None => Box::new(Forget),
    }
}

/// Converges every minion of `links`, at most `req.concurrency` at once (0: all).
pub async fn converge_all<L: MinionLink>(
    req: &ApplyRequest,
    actors: &Actors,
    links: &[L],
    observer: &dyn Observer,
) -> Vec<MinionReport> {
    let limit = match req.concurrency {
        0 => links.len().max(1),
        n => n,
    };
    let permits = tokio::sync::Semaphore::new(limit);
    let opts = req.options();
    let (permits, opts) = (&permits, &opts);
    futures::future::join_all(links.iter().map(|l| async move {
        let _permit = permits.acquire().await;
        converge(actors, l, opts, observer).await
    }))
    .await
}

/// The status a run is stored with.
pub fn run_status(reports: &[MinionReport]) -> RunStatus {
    let any = |s| reports.iter().any(|r| r.status == s);
    if any(MinionStatus::Interrupted) {
        RunStatus::Interrupted
    } else if any(MinionStatus::Failed) {
        RunStatus::Failed
    } else if any(MinionStatus::Pending) {
        RunStatus::Drift
    } else if any(MinionStatus::Changed) {
        RunStatus::Changed
    } else {
        RunStatus::Ok
    }
}

/// Ends the run with the reports' status and why; its id, when it was recorded.
pub fn finish_run(run: Option<RunHandle>, reports: &[MinionReport]) -> Option<String> {
    let run = run?;
    run.finish_because(run_status(reports), reason(reports));
    Some(run.id().to_owned())
}

/// Why a run ended as it did, for its history: each minion's failure (what stopped its
/// routine, else its failed steps), the drift a check found, or the signal that stopped it;
/// nothing for a run that went well.
pub fn reason(reports: &[MinionReport]) -> Option<String> {
    const SHOWN: usize = 5;
    let mut lines = Vec::new();
    for r in reports {
        if let Some(e) = &r.error {
            lines.push(format!("{}: {}", r.minion, e.trim_end()));
            continue;
        }
        let failed: Vec<String> = r
            .steps
            .iter()
            .filter(|s| s.outcome == StepStatus::Failed)
            .map(|s| {
                let why = s.error.as_deref().unwrap_or("failed");
                let first = why.lines().next().unwrap_or(why);
                format!("{} ({}): {first}", s.resource, s.action)
            })
            .collect();
        let drifted: Vec<&str> = r
            .steps
            .iter()
            .filter(|s| s.outcome == StepStatus::WouldChange)
            .map(|s| s.resource.as_str())
            .collect();
        if !failed.is_empty() {
            lines.push(format!("{}: {}", r.minion, brief(&failed, SHOWN, "; ")));
        } else if r.status == MinionStatus::Pending && !drifted.is_empty() {
            lines.push(format!(
                "{}: drifted: {}",
                r.minion,
                brief(&drifted, SHOWN, ", ")
            ));
        }
    }
    (!lines.is_empty()).then(|| brief(&lines, 20, "\n"))
}

/// The first `n` items joined with `sep`, and how many more there are.
fn brief(items: &[impl AsRef<str>], n: usize, sep: &str) -> String {
    let mut s = items
        .iter()
        .take(n)
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(sep);
    if items.len() > n {
        s.push_str(&format!("{sep}… and {} more", items.len() - n));
    }
    s
}

/// The overall status word of a run.
pub fn overall(reports: &[MinionReport]) -> &'static str {
    let any = |s| reports.iter().any(|r| r.status == s);
    if any(MinionStatus::Interrupted) {
        "interrupted"
    } else if any(MinionStatus::Failed) {
        "failed"
    } else if any(MinionStatus::Pending) {
        "pending"
    } else if any(MinionStatus::Changed) {
        "changed"
    } else {
        "ok"
    }
}

/// The exit code of a finished apply (see [`runner::exit`]): failed, changes pending with
/// `--detailed-exitcode`, or success.
pub fn exit_code(reports: &[MinionReport], detailed: bool) -> i32 {
    if reports
        .iter()
        .any(|r| r.status == MinionStatus::Interrupted)
    {
        runner::exit::INTERRUPTED
    } else if reports.iter().any(|r| r.status == MinionStatus::Failed) {
        runner::exit::FAILED
    } else if detailed && reports.iter().any(|r| r.status == MinionStatus::Pending) {
        runner::exit::CHANGES_PENDING
    } else {
        runner::exit::SUCCESS
    }
}

/// The JSON result document of a run.
pub fn result_document(
    reports: &[MinionReport],
    check: bool,
    run_id: Option<&str>,
) -> serde_json::Value {
    json!({
        "run": run_id,
        "status": overall(reports),
        "check": check,
        "minions": reports,
    })
}

/// What an apply prints on stdout at the end, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// The recap (or the JSON document with `--json`).
    pub stdout: String,
    /// The exit code.
    pub code: i32,
}

/// The outcome of `req` from its reports: the JSON document, or the recap with the command that
/// shows the run's history.
pub fn outcome(
    req: &ApplyRequest,
    reports: &[MinionReport],
    run_id: Option<&str>,
    style: &Style,
) -> ApplyOutcome {
    let stdout = if req.json {
        let doc = result_document(reports, req.check, run_id);
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("reports serialize")
        )
    } else {
        let mut s = recap(reports, req.check, style);
        if let Some(id) = run_id {
            s.push_str(&format!("history: {} show {id}\n", req.history_command));
        }
        s
    };
    ApplyOutcome {
        stdout,
        code: exit_code(reports, req.detailed_exitcode),
    }
}

/// The steps each minion finished, kept as they end, so that an apply stopped by a signal can
/// still report what it did ([`Tally::interrupted`]).
pub struct Tally<'a> {
    inner: &'a dyn Observer,
    steps: Mutex<BTreeMap<String, Vec<StepReport>>>,
}

impl<'a> Tally<'a> {
    /// Keeps the steps that pass through to `inner`.
    pub fn new(inner: &'a dyn Observer) -> Self {
        Self {
            inner,
            steps: Mutex::new(BTreeMap::new()),
        }
    }

    fn keep(&self, minion: &str, step: &StepReport) {
        self.steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(minion.to_owned())
            .or_default()
            .push(step.clone());
    }

    /// The reports of `minions` when a signal (`signal`) stopped the apply after `elapsed`:
    /// the steps each finished, and why it stopped.
    pub fn interrupted(
        &self,
        minions: &[String],
        signal: &str,
        elapsed: std::time::Duration,
    ) -> Vec<MinionReport> {
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        minions
            .iter()
            .map(|m| MinionReport {
                minion: m.clone(),
                status: MinionStatus::Interrupted,
                rounds: 0,
                resources: 0,
                steps: steps.remove(m).unwrap_or_default(),
                error: Some(format!(
                    "interrupted by {signal}: the step running was stopped (its process group killed); the steps listed finished"
                )),
                fact_failures: Vec::new(),
                duration: elapsed,
            })
            .collect()
    }
}

struct TallyStep<'a> {
    inner: Box<dyn StepWatch + 'a>,
    tally: &'a Tally<'a>,
    minion: String,
}

impl StepWatch for TallyStep<'_> {
    fn sink(&self) -> &dyn EventSink {
        self.inner.sink()
    }
    fn step_no(&self) -> Option<i64> {
        self.inner.step_no()
    }
    fn finish(self: Box<Self>, report: &StepReport) {
        self.tally.keep(&self.minion, report);
        self.inner.finish(report);
    }
}

impl Observer for Tally<'_> {
    fn sink(&self, minion: &str) -> Box<dyn EventSink + '_> {
        self.inner.sink(minion)
    }
    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        Box::new(TallyStep {
            inner: self.inner.begin(minion, step),
            tally: self,
            minion: minion.to_owned(),
        })
    }
    fn record(&self, minion: &str, step: &StepReport) {
        self.keep(minion, step);
        self.inner.record(minion, step);
    }
    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str) {
        self.inner.progress(minion, what, resource, outcome);
    }
}

/// Resolves when this process gets SIGINT or SIGTERM, with the signal's name (never, when
/// the handlers cannot be installed).
pub async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        },
        _ => std::future::pending().await,
    }
}

/// Live progress lines, handed to `out` (stderr locally, the control socket for a fleet)
/// unless `quiet`; sinks and step records delegated to `inner`.
pub struct ProgressObserver<'a, F> {
    style: Style,
    quiet: bool,
    inner: &'a dyn Observer,
    out: F,
}

impl<'a, F: Fn(String) + Send + Sync> ProgressObserver<'a, F> {
    /// Progress in `style` to `out` unless `quiet`, everything else to `inner`.
    pub fn new(style: Style, quiet: bool, inner: &'a dyn Observer, out: F) -> Self {
        Self {
            style,
            quiet,
            inner,
            out,
        }
    }
}

impl<F: Fn(String) + Send + Sync> Observer for ProgressObserver<'_, F> {
    fn sink(&self, minion: &str) -> Box<dyn EventSink + '_> {
        self.inner.sink(minion)
    }

    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        self.inner.begin(minion, step)
    }

    fn record(&self, minion: &str, step: &StepReport) {
        self.inner.record(minion, step);
    }

    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str) {
        if !self.quiet {
            (self.out)(progress_line(&self.style, minion, what, resource, outcome));
        }
        self.inner.progress(minion, what, resource, outcome);
    }
}
