//! `ingot apply`: the routine against a local minion, with progress, recap, JSON and history.

use std::path::PathBuf;

use runner::{EventSink, NullSink};
use serde_json::json;

use crate::actors::{Actors, MasterDir};
use crate::documents::Step;
use crate::report::{eprint_line, progress_line, recap, Style};
use crate::routine::{
    converge, ApplyOptions, MinionReport, MinionStatus, Observer, StepReport, StepWatch,
};

/// Options of `ingot apply`.
#[derive(Debug, Clone)]
pub struct ApplyCommand {
    /// The master tree.
    pub master: PathBuf,
    /// The minion tree (run in-process).
    pub minion: PathBuf,
    /// Routine options.
    pub options: ApplyOptions,
    /// Print one JSON result document instead of the recap.
    pub json: bool,
    /// Exit 2 when changes are pending (with `--check`).
    pub detailed_exitcode: bool,
}

/// Exit code of a finished apply: 1 on failure, 2 when `--detailed-exitcode` and changes are
/// pending, 0 otherwise.
pub fn exit_code(reports: &[MinionReport], detailed: bool) -> i32 {
    if reports.iter().any(|r| r.status == MinionStatus::Failed) {
        1
    } else if detailed && reports.iter().any(|r| r.status == MinionStatus::Pending) {
        2
    } else {
        0
    }
}

/// The overall status word of a run.
pub fn overall(reports: &[MinionReport]) -> &'static str {
    let any = |s| reports.iter().any(|r| r.status == s);
    if any(MinionStatus::Failed) {
        "failed"
    } else if any(MinionStatus::Pending) {
        "pending"
    } else if any(MinionStatus::Changed) {
        "changed"
    } else {
        "ok"
    }
}

/// Live progress on stderr (plain lines when not a terminal), events forwarded to `events`.
pub struct ConsoleObserver<'a> {
    style: Style,
    quiet: bool,
    events: &'a dyn Observer,
}

impl<'a> ConsoleObserver<'a> {
    /// Progress on stderr unless `quiet`; sinks and step records delegated to `inner`.
    pub fn new(quiet: bool, inner: &'a dyn Observer) -> Self {
        Self {
            style: Style::stderr(),
            quiet,
            events: inner,
        }
    }
}

impl Observer for ConsoleObserver<'_> {
    fn sink(&self, minion: &str) -> Box<dyn EventSink + '_> {
        self.events.sink(minion)
    }

    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        self.events.begin(minion, step)
    }

    fn record(&self, minion: &str, step: &StepReport) {
        self.events.record(minion, step);
    }

    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str) {
        if !self.quiet {
            eprint_line(&progress_line(&self.style, minion, what, resource, outcome));
        }
        self.events.progress(minion, what, resource, outcome);
    }
}

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

/// Runs the routine against `link`, printing progress and the recap (or the JSON document),
/// and returns the reports.
pub async fn apply_to<L: crate::link::MinionLink>(
    cmd: &ApplyCommand,
    link: &L,
    history: &dyn Observer,
) -> Vec<MinionReport> {
    let master = MasterDir::new(&cmd.master);
    let observer = ConsoleObserver::new(cmd.json, history);
    vec![converge(&Actors::new(master), link, &cmd.options, &observer).await]
}

/// Prints the outcome: the JSON document on stdout with `--json`, else the recap.
pub fn print_outcome(cmd: &ApplyCommand, reports: &[MinionReport], run_id: Option<&str>) {
    if cmd.json {
        let doc = result_document(reports, cmd.options.check, run_id);
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("reports serialize")
        );
    } else {
        print!("{}", recap(reports, cmd.options.check, &Style::stdout()));
        if let Some(id) = run_id {
            println!("history: ingot history show {id}");
        }
    }
}
