//! Directord jobs in the master's historian: each `ingot exec --master` / `ingot orchestrate
//! --master` request is a run (the operator's command line and user, the minions it
//! addresses), and each job's result on each minion is a step: the resource is the verb's
//! kind, the action [`ACTION`], the desired state the job itself (id, verb, text, fields,
//! fingerprint, parent id and name, targets) plus when the master received it
//! (`created_us`) and its place in the request (`index`); the observation after is the
//! minion's answer ([`Observation`]); the outcome is changed (success), unchanged (skipped:
//! the cache said it already succeeded) or failed; stdout and stderr are also stored as the
//! step's events, so `ingot history show` prints them. `ingot manage` reads these steps back
//! (`super::manage`).
//!
//! The request's run is started and finished in [`super::directord::run`]; each of its queues
//! holds the [`Recording`] and records a job's results with [`Recording::record`] where they
//! become known.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use channel3::{Body, Event, Line, Message, Timestamp};
use historian::{History, RunHandle, RunMeta, StepEnd, StepOutcome, StepRecord, StepStart};
use minion::directord::engine::Status;
use minion::directord::{Job, JobResult};
use runner::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::server::Hub;

/// The action of a job's steps.
pub const ACTION: &str = "job";

/// Who sent a request: recorded as its run's user and command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The operator.
    pub user: String,
    /// Their command line.
    pub command: Vec<String>,
}

impl Origin {
    /// This process's user and command line.
    pub fn current() -> Self {
        Self {
            user: historian::current_user(),
            command: std::env::args().collect(),
        }
    }
}

/// What a minion answered, as a job step's observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// `success`, `skipped` or `failed`.
    pub status: Status,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// Directord's INFO.
    pub info: String,
    /// Seconds the job ran on the minion.
    pub execution_time: f64,
    /// When the minion finished it (Unix seconds, the minion's clock).
    pub component_timestamp: f64,
    /// When the master had the answer (Unix seconds, the master's clock).
    pub return_timestamp: f64,
    /// Seconds from the master receiving the job to having this answer.
    pub roundtrip_time: f64,
}

/// One request being recorded; finish it with [`Recording::finish`].
pub struct Recording {
    history: Arc<History>,
    run: RunHandle,
    /// When the master received the request (Directord's CREATED_TIMESTAMP).
    created: Timestamp,
    /// Job id → its position in the request.
    index: HashMap<String, usize>,
}

/// The minions a request addresses: each job's target globs over the connected minions (all
/// of them when it names none); a glob matching none stays as written.
fn addressed(hub: &Hub, jobs: &[&Job]) -> Vec<String> {
    let connected = hub.connected_names();
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: &str| {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_owned());
        }
    };
    for job in jobs {
        if job.targets.is_empty() {
            connected.iter().for_each(|n| add(n));
        }
        for t in &job.targets {
            match globset::Glob::new(t).map(|g| g.compile_matcher()) {
                Ok(m) if connected.iter().any(|n| m.is_match(n)) => connected
                    .iter()
                    .filter(|n| m.is_match(n.as_str()))
                    .for_each(|n| add(n)),
                _ => add(t),
            }
        }
    }
    out.sort();
    out
}

impl Recording {
    /// Starts the run of a request with these jobs (`None` without a history, or when the
    /// run cannot be started: the jobs still run).
    pub fn start(
        history: Option<&Arc<History>>,
        hub: &Hub,
        origin: &Origin,
        jobs: &[&Job],
    ) -> Option<Self> {
        let history = history?.clone();
        let command = if origin.command.is_empty() {
            vec!["ingot".into(), "exec".into()]
        } else {
            origin.command.clone()
        };
        let user = if origin.user.is_empty() {
            "unknown".into()
        } else {
            origin.user.clone()
        };
        let run = history
            .start_run(RunMeta {
                command,
                user,
                targets: addressed(hub, jobs),
            })
            .inspect_err(|e| tracing::warn!("not recording these jobs: {e}"))
            .ok()?;
        let index = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.job_id.clone(), i))
            .collect();
        Some(Self {
            history,
            run,
            created: Timestamp::now(),
            index,
        })
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        self.run.id()
    }

    /// Ends the run (failed when any job failed or `failed`, changed when any job ran, else
    /// ok), waits until it is stored, and returns the line telling where to review it.
    pub fn finish(&self, failed: bool) -> String {
        let status = match self.run.derived_status() {
            _ if failed => historian::RunStatus::Failed,
            s => s,
        };
        self.run.finish(status);
        if let Err(e) = self.history.flush() {
            tracing::warn!("the history of these jobs may be incomplete: {e}");
        }
        format!("history: ingot history show {}\n", self.run.id())
    }
}

fn secs(t: Timestamp) -> f64 {
    t.0 as f64 / 1e6
}

fn outcome(s: Status) -> StepOutcome {
    match s {
        Status::Success => StepOutcome::Changed,
        Status::Skipped => StepOutcome::Unchanged,
        Status::Failed => StepOutcome::Failed,
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The job as a step's desired state, with when the request came and the job's place in it.
fn desired(job: &Job, created: Timestamp, index: usize) -> Value {
    let mut v = serde_json::to_value(job).unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("created_us".into(), created.0.into());
        m.insert("index".into(), index.into());
    }
    v
}

fn emit_lines(sink: &dyn EventSink, name: &str, ts: Timestamp, text: &str, stderr: bool) {
    for line in text.split_inclusive('\n') {
        let l = Line::from_bytes(line.as_bytes());
        let body = if stderr {
            Body::Stderr(l)
        } else {
            Body::Stdout(l)
        };
        sink.emit(Event {
            ts,
            message: Message::new(Some(name.to_owned()), &body),
        });
    }
}

impl Recording {
    /// Records `job`'s results (one step per minion) in the request's run (a job outside the
    /// request, which none is today, is placed last).
    pub fn record(&self, job: &Job, results: &[JobResult]) {
        let returned = Timestamp::now();
        let index = self
            .index
            .get(&job.job_id)
            .copied()
            .unwrap_or(self.index.len());
        let desired = desired(job, self.created, index);
        for r in results {
            let exec_us = (r.execution_time.max(0.0) * 1e6) as i64;
            let ended = if r.ended > 0.0 {
                Timestamp((r.ended * 1e6) as i64)
            } else {
                returned
            };
            let seen = Observation {
                status: r.status,
                stdout: r.stdout.clone(),
                stderr: r.stderr.clone(),
                info: r.info.clone(),
                execution_time: r.execution_time,
                component_timestamp: secs(ended),
                return_timestamp: secs(returned),
                roundtrip_time: (returned.0 - self.created.0).max(0) as f64 / 1e6,
            };
            let error = (r.status == Status::Failed).then(|| {
                let why = [r.stderr.trim(), r.info.trim()]
                    .into_iter()
                    .find(|s| !s.is_empty())
                    .unwrap_or("the job failed");
                clip(why, 4096).to_owned()
            });
            let no = self.run.record_step(StepRecord {
                start: StepStart {
                    minion: r.minion.clone(),
                    kind: job.kind.clone(),
                    action: ACTION.into(),
                    desired: desired.clone(),
                },
                end: StepEnd {
                    before: None,
                    after: Some(serde_json::to_value(&seen).unwrap_or_default()),
                    outcome: Some(outcome(r.status)),
                    error,
                },
                started: Timestamp(ended.0 - exec_us),
                duration: Duration::from_micros(exec_us as u64),
            });
            let sink = self.run.step_sink(&r.minion, no);
            emit_lines(&sink, &job.kind, ended, &r.stdout, false);
            emit_lines(&sink, &job.kind, ended, &r.stderr, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_whole_characters() {
        assert_eq!(clip("héllo", 2), "h");
        assert_eq!(clip("héllo", 3), "hé");
        assert_eq!(clip("abc", 10), "abc");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome(Status::Success), StepOutcome::Changed);
        assert_eq!(outcome(Status::Skipped), StepOutcome::Unchanged);
        assert_eq!(outcome(Status::Failed), StepOutcome::Failed);
    }
}
