//! The records the historian stores and the answers it gives.

use std::fmt;
use std::str::FromStr;

use channel3::Timestamp;
use serde::Serialize;
use serde_json::Value;

/// How a run ended (or that it has not ended yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Still being written (or its writer died before finishing it).
    Running,
    /// Finished; nothing changed.
    Ok,
    /// Finished; something changed.
    Changed,
    /// Finished with a failure.
    Failed,
    /// Its recorder (the master) stopped while it ran, or a signal stopped it; results
    /// delivered after the recorder came back are still added to it.
    Interrupted,
    /// A check (`--check`) that found changes pending: the minions drifted from their
    /// prescription; nothing was changed.
    Drift,
}

/// The outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepOutcome {
    /// Started, not finished yet.
    Running,
    /// The resource already was as desired.
    Unchanged,
    /// The resource was changed.
    Changed,
    /// The step failed.
    Failed,
    /// A dry run found the resource would change.
    WouldChange,
}

macro_rules! str_enum {
    ($t:ty, $what:literal, $($v:ident => $s:literal),+) => {
        impl $t {
            /// The stored spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl FromStr for $t {
            type Err = crate::Error;
            fn from_str(s: &str) -> crate::Result<Self> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(crate::Error::Corrupt(format!("unknown {} {s:?}", $what))),
                }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(RunStatus, "run status", Running => "running", Ok => "ok", Changed => "changed", Failed => "failed",
    Interrupted => "interrupted", Drift => "drift");
str_enum!(StepOutcome, "step outcome", Running => "running", Unchanged => "unchanged",
    Changed => "changed", Failed => "failed", WouldChange => "would-change");

/// Who started a run, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunMeta {
    /// The command line.
    pub command: Vec<String>,
    /// The user who started it.
    pub user: String,
    /// The minions (or other targets) it addresses.
    pub targets: Vec<String>,
}

impl RunMeta {
    /// This process's command line and user, with the given targets.
    pub fn current(targets: Vec<String>) -> Self {
        Self {
            command: std::env::args().collect(),
            user: current_user(),
            targets,
        }
    }
}

/// `$USER`, else `$LOGNAME`, else `uid N`.
pub fn current_user() -> String {
    use std::os::unix::fs::MetadataExt;
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    match std::fs::metadata("/proc/self") {
        Ok(m) => format!("uid {}", m.uid()),
        Err(_) => "unknown".into(),
    }
}

/// A step about to start: which resource, what is done to it, and the desired state.
#[derive(Debug, Clone, PartialEq)]
pub struct StepStart {
    /// The minion it runs on.
    pub minion: String,
    /// The resource kind (`file`, `service`, ...).
    pub kind: String,
    /// `inspect`, `conform` or a custom action.
    pub action: String,
    /// The desired state (redacted before it is stored).
    pub desired: Value,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepEnd {
    /// The observation before the step.
    pub before: Option<Value>,
    /// The observation after the step.
    pub after: Option<Value>,
    /// The outcome (`Running` is stored as `Failed`: a step that ends has an outcome).
    pub outcome: Option<StepOutcome>,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// A whole step recorded after the fact.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// What ran.
    pub start: StepStart,
    /// How it ended.
    pub end: StepEnd,
    /// When it started.
    pub started: Timestamp,
    /// How long it took.
    pub duration: std::time::Duration,
}

/// One run as listed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run id (a UUID v7: sorts by start time).
    pub id: String,
    /// Internal row key.
    #[serde(skip)]
    pub(crate) key: i64,
    /// The command line.
    pub command: Vec<String>,
    /// Who started it.
    pub user: String,
    /// The targets.
    pub targets: Vec<String>,
    /// Start, microseconds since the epoch.
    pub started_us: Timestamp,
    /// End, when finished.
    pub ended_us: Option<Timestamp>,
    /// The status.
    pub status: RunStatus,
    /// Minions that recorded steps or events.
    pub minions: Vec<String>,
    /// Number of steps.
    pub steps: i64,
    /// Steps that changed something.
    pub changed: i64,
    /// Steps that failed.
    pub failed: i64,
    /// Number of events.
    pub events: i64,
    /// Why it ended as it did (a failure, a drift, an interrupt), when its recorder said.
    pub reason: Option<String>,
}

impl RunSummary {
    /// The run's duration (to now while it runs).
    pub fn duration(&self) -> std::time::Duration {
        let end = self.ended_us.unwrap_or_else(Timestamp::now);
        std::time::Duration::from_micros((end.0 - self.started_us.0).max(0) as u64)
    }
}

/// One stored step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRow {
    /// Its number within the run (from 1).
    pub no: i64,
    /// The minion.
    pub minion: String,
    /// The resource kind.
    pub kind: String,
    /// The action.
    pub action: String,
    /// The desired state, redacted.
    pub desired: Option<Value>,
    /// The observation before.
    pub before: Option<Value>,
    /// The observation after.
    pub after: Option<Value>,
    /// The outcome.
    pub outcome: StepOutcome,
    /// Start time.
    pub started_us: Timestamp,
    /// Duration in microseconds, when finished.
    pub duration_us: Option<i64>,
    /// The error, when it failed.
    pub error: Option<String>,
}

/// A step with the run it belongs to ([`crate::Store::steps_with_action`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunStep {
    /// The run's id.
    pub run: String,
    /// The run's status.
    pub status: RunStatus,
    /// The step.
    pub step: StepRow,
}

/// One stored channel3 event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Position: increases along the run (SQLite numbers a run's events 1, 2, 3...).
    pub seq: i64,
    /// The minion it came from.
    pub minion: String,
    /// The step it belongs to, if any.
    pub step: Option<i64>,
    /// The process path (the message name).
    pub name: Option<String>,
    /// When it was received.
    pub ts: Timestamp,
    /// The key.
    pub key: String,
    /// The data, JSON text as received.
    pub data: String,
    /// The frame exactly as received, when it came over a channel.
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

impl EventRow {
    /// The bytes of the frame payload as received, or the payload rebuilt from the stored
    /// fields for events built locally.
    pub fn raw_or_rebuilt(&self) -> Vec<u8> {
        match &self.raw {
            Some(r) => r.clone(),
            None => {
                let name = serde_json::to_string(&self.name).unwrap_or_else(|_| "null".into());
                let key = serde_json::to_string(&self.key).unwrap_or_else(|_| "\"\"".into());
                format!("[{name},{key},{}]", self.data).into_bytes()
            }
        }
    }
}

/// Which runs `list` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only runs with this status.
    pub status: Option<RunStatus>,
    /// Only runs that involve this minion.
    pub minion: Option<String>,
    /// Only runs started at or after this time.
    pub since: Option<Timestamp>,
    /// Only runs with a step on this resource kind.
    pub resource: Option<String>,
    /// At most this many (newest first); 0 means no limit.
    pub limit: usize,
}

/// Which runs `prune` deletes.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneFilter {
    /// Runs started before this time.
    pub before: Timestamp,
    /// Only runs with one of these statuses (empty: every finished status).
    pub statuses: Vec<RunStatus>,
}

/// What a prune deleted (or would delete).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PruneReport {
    /// Run ids.
    pub runs: Vec<String>,
    /// Steps.
    pub steps: i64,
    /// Events.
    pub events: i64,
}

/// A slow step for `stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowStep {
    /// The run.
    pub run: String,
    /// The minion.
    pub minion: String,
    /// The resource kind.
    pub kind: String,
    /// The action.
    pub action: String,
    /// Duration in microseconds.
    pub duration_us: i64,
}

/// Failure counts of one resource kind or minion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailureCount {
    /// The resource kind or minion.
    pub name: String,
    /// Failed steps.
    pub failed: i64,
    /// All steps.
    pub total: i64,
}

/// `ingot history stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Number of runs.
    pub runs: i64,
    /// Runs per status.
    pub by_status: Vec<(String, i64)>,
    /// Number of steps.
    pub steps: i64,
    /// Number of events.
    pub events: i64,
    /// The slowest steps.
    pub slowest: Vec<SlowStep>,
    /// Failures by resource kind.
    pub failures_by_resource: Vec<FailureCount>,
    /// Failures by minion.
    pub failures_by_minion: Vec<FailureCount>,
}
