//! Recording a one-process command (`ingot run`) as a run with a single step.

use runner::command::RunCommand;
use serde_json::json;

use crate::model::{RunMeta, RunStatus, StepEnd, StepOutcome, StepStart};
use crate::{History, HistorySink, Location, Result, RunHandle, StepHandle};

/// The minion name of commands run on this machine outside a minion.
pub const LOCAL: &str = "local";

/// Opens the history a command records into: none with `--no-history`; else `flag`,
/// `$INGOT_HISTORY` or the default. A history that cannot be opened is reported on stderr and
/// the command runs unrecorded (recording must never stop work).
pub fn open_for_command(flag: Option<&str>, disabled: bool) -> Option<History> {
    if disabled {
        return None;
    }
    let location = Location::resolve(flag, None, None);
    match History::open(&location) {
        Ok(h) => Some(h),
        Err(e) => {
            eprintln!("ingot: warning: not recording this run: {e}");
            None
        }
    }
}

/// An `ingot run` being recorded: run → minion `local` → step `run exec` → the process.
#[derive(Debug)]
pub struct CommandRecording {
    run: RunHandle,
    step: StepHandle,
    sink: HistorySink,
}

impl CommandRecording {
    /// Records the start of `cmd`.
    pub fn start(history: &History, cmd: &RunCommand) -> Result<Self> {
        let run = history.start_run(RunMeta::current(vec![LOCAL.into()]))?;
        let step = run.begin_step(StepStart {
            minion: LOCAL.into(),
            kind: "run".into(),
            action: "exec".into(),
            desired: json!({
                "argv": cmd.argv,
                "name": cmd.name,
                "user": cmd.user,
                "group": cmd.group,
                "cwd": cmd.cwd,
                "timeout": cmd.timeout.map(|t| t.as_secs_f64()),
            }),
        });
        let sink = step.sink();
        Ok(Self { run, step, sink })
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        self.run.id()
    }

    /// Where the command's events go.
    pub fn sink(&self) -> &HistorySink {
        &self.sink
    }

    /// Records how the command ended: exit 0 is `changed` (a command is assumed to act),
    /// anything else `failed`.
    pub fn finish(self, result: &std::result::Result<i32, runner::RunError>) {
        let (outcome, error) = match result {
            Ok(0) => (StepOutcome::Changed, None),
            Ok(code) => (StepOutcome::Failed, Some(format!("exited with {code}"))),
            Err(e) => (StepOutcome::Failed, Some(e.to_string())),
        };
        self.step.finish(StepEnd {
            outcome: Some(outcome),
            error,
            ..StepEnd::default()
        });
        let status = match outcome {
            StepOutcome::Failed => RunStatus::Failed,
            _ => RunStatus::Changed,
        };
        self.run.finish(status);
    }
}
