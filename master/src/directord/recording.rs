//! Directord jobs in the master's historian: each `ingot exec --master` / `ingot orchestrate
//! --master` request is a run (the operator's command line and user, the minions it
//! addresses), and each job's result on each minion is a step: the resource is the verb's
//! kind, the action [`ACTION`], the desired state the job itself (id, verb, text, fields,
//! fingerprint, parent id and name, targets) plus when the master received it
//! (`created_us`) and its place in the request (`index`); the observation after is the
//! minion's answer ([`Observation`]); the outcome is changed (success), unchanged (skipped:
//! the cache said it already succeeded) or failed; stdout and stderr are also stored as the
//! step's events, so `ingot history show` prints them. `ingot manage` reads these steps back
//! (`crate::directord::manage`).
//!
//! The request's run is started and finished in [`crate::directord::relay::run`]; each of its queues
//! holds the [`Recording`] and records a job's results with [`Recording::record`] where they
//! become known.
//!
//! Until then a job is only in the running master: [`InFlight`] (one per master, in its
//! [`Hub`]) holds every job of the requests being run, which targets answered and what, so
//! `ingot manage` can show them as Directord does, PROCESSING until every target answered.
//! A request's jobs leave it only once its run is finished and stored, so a job read by
//! `manage` is always in the master, the history, or both (the history wins).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel3::{Body, Event, Line, Message, Timestamp};
use historian::{History, RunHandle, RunMeta, StepEnd, StepOutcome, StepRecord, StepStart};
use minion::directord::engine::Status;
use minion::directord::{Job, JobResult};
use runner::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::control::Requester;
use crate::server::Hub;

/// The action of a job's steps.
pub const ACTION: &str = "job";

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

/// One minion's result of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeResult {
    /// The minion (`-` when the job reached none).
    pub node: String,
    /// What it answered.
    #[serde(flatten)]
    pub seen: Observation,
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
        origin: &Requester,
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

    /// When the master received the request.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// Ends the run (failed when any job failed or `failed`, changed when any job ran, else
    /// ok), waits until it is stored, and returns the line telling where to review it.
    pub fn finish(&self, failed: bool, history_command: &str) -> String {
        let status = match self.run.derived_status() {
            _ if failed => historian::RunStatus::Failed,
            s => s,
        };
        self.run.finish(status);
        if let Err(e) = self.history.flush() {
            tracing::warn!("the history of these jobs may be incomplete: {e}");
        }
        format!("history: {history_command} show {}\n", self.run.id())
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

/// When the minion finished `r` (the master's `returned` when it did not say).
fn ended(r: &JobResult, returned: Timestamp) -> Timestamp {
    if r.ended > 0.0 {
        Timestamp((r.ended * 1e6) as i64)
    } else {
        returned
    }
}

/// A minion's answer as a job step's observation: the master received the request at
/// `created` and had this answer at `returned`.
fn observe(r: &JobResult, created: Timestamp, returned: Timestamp) -> Observation {
    Observation {
        status: r.status,
        stdout: r.stdout.clone(),
        stderr: r.stderr.clone(),
        info: r.info.clone(),
        execution_time: r.execution_time,
        component_timestamp: secs(ended(r, returned)),
        return_timestamp: secs(returned),
        roundtrip_time: (returned.0 - created.0).max(0) as f64 / 1e6,
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
            let ended = ended(r, returned);
            let seen = observe(r, self.created, returned);
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

/// A Directord job of a request the running master is running, not yet stored in the history:
/// what the master tells `ingot manage` (see [`InFlight`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveJob {
    /// The job as its steps will record it (see [`Recording::record`]); once sent, its
    /// targets are the minions it went to.
    pub definition: Map<String, Value>,
    /// The historian run that records it (empty when the master records nothing).
    #[serde(default)]
    pub run: String,
    /// The minions it went to; `None` while the master holds it behind earlier jobs of its
    /// queue.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// What its targets answered so far.
    #[serde(default)]
    pub answered: Vec<NodeResult>,
    /// Every answer is in (and on its way into the history).
    #[serde(default)]
    pub done: bool,
}

impl LiveJob {
    /// The targets that have not answered yet.
    pub fn pending(&self) -> Vec<String> {
        match (&self.targets, self.done) {
            (Some(targets), false) => targets
                .iter()
                .filter(|t| !self.answered.iter().any(|a| a.node == **t))
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Directord's PROCESSING: not sent yet, or sent and not answered by every target.
    pub fn processing(&self) -> bool {
        !self.done && (self.targets.is_none() || !self.pending().is_empty())
    }
}

/// The Directord jobs of the requests the master is running, from when a request arrives
/// until its run is stored (one per master, in its [`Hub`]).
#[derive(Debug, Default)]
pub struct InFlight {
    next: AtomicU64,
    /// Job id → the request it came in, and the job.
    jobs: Mutex<HashMap<String, (u64, LiveJob)>>,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, LiveJob)>> {
        // A panic elsewhere leaves the map consistent: every change is one insert or update.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every job held, sent or answered and not yet stored, in no particular order.
    pub fn snapshot(&self) -> Vec<LiveJob> {
        self.lock().values().map(|(_, j)| j.clone()).collect()
    }

    /// Takes in a request's `jobs` (held until [`Tracked::sent`]): `run` is the run recording
    /// them, `created` when the master received them.
    pub fn track(self: &Arc<Self>, jobs: &[Job], run: Option<&str>, created: Timestamp) -> Tracked {
        let request = self.next.fetch_add(1, Ordering::Relaxed);
        let mut map = self.lock();
        for (i, job) in jobs.iter().enumerate() {
            let live = LiveJob {
                definition: as_map(desired(job, created, i)),
                run: run.unwrap_or_default().to_owned(),
                targets: None,
                answered: Vec::new(),
                done: false,
            };
            map.insert(job.job_id.clone(), (request, live));
        }
        Tracked {
            registry: self.clone(),
            request,
            created,
        }
    }

    fn update(&self, job_id: &str, f: impl FnOnce(&mut LiveJob)) {
        if let Some((_, live)) = self.lock().get_mut(job_id) {
            f(live);
        }
    }
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// One request's jobs in [`InFlight`]. They leave it when this is dropped, which
/// [`crate::directord::relay::run`] does once the request's run is stored, so `ingot manage` never
/// misses a job between the two.
#[derive(Debug)]
pub struct Tracked {
    registry: Arc<InFlight>,
    request: u64,
    created: Timestamp,
}

impl Tracked {
    /// `job` is going out to its targets (`job.targets`, resolved to minion names).
    pub fn sent(&self, job: &Job) {
        let created = self.created;
        self.registry.update(&job.job_id, |live| {
            let index = live.definition.get("index").and_then(Value::as_u64);
            live.definition = as_map(desired(job, created, index.unwrap_or(0) as usize));
            live.targets = Some(job.targets.clone());
        });
    }

    /// A target answered job `job_id`.
    pub fn answered(&self, job_id: &str, r: &JobResult) {
        let seen = observe(r, self.created, Timestamp::now());
        self.registry.update(job_id, |live| {
            live.answered.retain(|a| a.node != r.minion);
            live.answered.push(NodeResult {
                node: r.minion.clone(),
                seen,
            });
        });
    }

    /// Every answer to `job` is in, with the failures the master decided itself.
    pub fn done(&self, job: &Job, results: &[JobResult]) {
        let returned = Timestamp::now();
        self.registry.update(&job.job_id, |live| {
            live.answered = results
                .iter()
                .map(|r| NodeResult {
                    node: r.minion.clone(),
                    seen: observe(r, self.created, returned),
                })
                .collect();
            live.done = true;
        });
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let request = self.request;
        self.registry.lock().retain(|_, (r, _)| *r != request);
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

    fn job(id: &str) -> Job {
        Job {
            job_id: id.into(),
            verb: "RUN".into(),
            text: "sleep 3".into(),
            kind: "run".into(),
            fields: Map::new(),
            sha3_224: "abc".into(),
            cacheable: true,
            parent_id: "p".into(),
            parent_sha3_224: None,
            parent_name: Some("slow".into()),
            job_name: None,
            parent_async: false,
            targets: vec!["d*".into()],
        }
    }

    fn answer(minion: &str, status: Status) -> JobResult {
        JobResult {
            job_id: "j1".into(),
            sha3_224: "abc".into(),
            minion: minion.into(),
            status,
            stdout: format!("out of {minion}"),
            stderr: String::new(),
            info: String::new(),
            execution_time: 0.5,
            ended: 0.0,
        }
    }

    fn live(registry: &InFlight, id: &str) -> LiveJob {
        let all = registry.snapshot();
        all.into_iter()
            .find(|j| j.definition["job_id"] == id)
            .unwrap_or_else(|| panic!("{id} is not in flight"))
    }

    #[test]
    fn jobs_in_flight_are_processing_until_every_target_answered_and_leave_once_stored() {
        let registry = Arc::new(InFlight::default());
        let (mut first, second) = (job("j1"), job("j2"));
        let tracked = registry.track(&[first.clone(), second], Some("run-1"), Timestamp(5));
        // Held in the master: processing, nobody to wait for yet.
        let held = live(&registry, "j2");
        assert!(held.processing() && held.pending().is_empty());
        assert_eq!(
            (held.definition["index"].as_u64(), held.run.as_str()),
            (Some(1), "run-1")
        );

        first.targets = vec!["d1".into(), "d2".into()];
        tracked.sent(&first);
        let sent = live(&registry, "j1");
        assert_eq!(sent.definition["targets"], serde_json::json!(["d1", "d2"]));
        assert_eq!(sent.pending(), ["d1", "d2"]);

        tracked.answered("j1", &answer("d1", Status::Success));
        let half = live(&registry, "j1");
        assert!(half.processing());
        assert_eq!(half.pending(), ["d2"]);
        assert_eq!(half.answered[0].seen.stdout, "out of d1");

        // The last answer ends PROCESSING even before the queue reports it.
        tracked.answered("j1", &answer("d2", Status::Failed));
        assert!(!live(&registry, "j1").processing());
        tracked.done(
            &first,
            &[answer("d1", Status::Success), answer("d2", Status::Failed)],
        );
        let done = live(&registry, "j1");
        assert!(done.done && !done.processing() && done.answered.len() == 2);

        // Another request's jobs stay when this one's are stored.
        let other = registry.track(&[job("j3")], None, Timestamp(6));
        drop(tracked);
        let left: Vec<Value> = registry
            .snapshot()
            .into_iter()
            .map(|j| j.definition["job_id"].clone())
            .collect();
        assert_eq!(left, ["j3"]);
        drop(other);
        assert!(registry.snapshot().is_empty());
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome(Status::Success), StepOutcome::Changed);
        assert_eq!(outcome(Status::Skipped), StepOutcome::Unchanged);
        assert_eq!(outcome(Status::Failed), StepOutcome::Failed);
    }
}
