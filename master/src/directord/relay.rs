//! The master's side of `ingot exec|orchestrate --master`: a request's jobs relayed to the
//! connected minions' job engines.
//!
//! The master resolves each job's targets (the job's `targets` as globs over connected
//! minions, else every connected minion; `--run-once`: the first only), makes sure each
//! target holds what the job needs (the ADD/COPY content, in chunks; a user component from
//! `MASTER/resources/`, installed; see [`super::transfer`]; a target where that fails gets the
//! job marked not to start, so its parent fails there as usual) and sends it as an `Op::Job`
//! request to each target, where the agent queues it on its long-lived
//! [`minion::directord::Engine`]. Jobs of one queue (an `async` parent's own, else the general
//! one) go out one after another, each once every target answered the one before (or up to
//! `--pipeline N` ahead); queues run concurrently. After a QUERY the master sends every
//! connected minion an ARG job `{"query": {MINION: {ARGNAME: VALUE}}}` with `extend_args`
//! (minions without the arg contribute no key), so `{{ query }}` templates see every minion's
//! value.
//!
//! Without `--poll`, `--wait` or `--stream` the request is detached ([`Directord::detach`]):
//! the master records its run, answers with the job ids at once and runs the jobs as above,
//! the outcome going to the history and `ingot manage` only.
//!
//! REBOOT (Directord's inactive nodes): once a REBOOT goes out to a minion it is inactive
//! until it connects again on a new connection; a later job for it (of any request) is held
//! until then, for at most that job's own `--timeout`, after which it fails there with "NAME
//! did not come back within Ns after REBOOT" and is not sent. A REBOOT that the minion answers
//! as failed (still on the same connection) makes it active again at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use minion::directord::engine::Status;
use minion::directord::job;
use minion::directord::verbs::{self, Traits};
use minion::directord::{Job, JobResult};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::recording::{Recording, Tracked};
use super::service::Directord;
use super::transfer::Shipper;
use crate::control::{ControlReply, DirectordRequest};
use crate::server::journal::Journal;
use crate::server::Hub;

pub(super) fn failed_result(job: &Job, minion: &str, why: String) -> JobResult {
    JobResult {
        job_id: job.job_id.clone(),
        sha3_224: job.sha3_224.clone(),
        minion: minion.into(),
        status: Status::Failed,
        stdout: String::new(),
        info: why.clone(),
        stderr: why,
        execution_time: 0.0,
        ended: 0.0,
    }
}

/// The minions a job goes to: connected ones, and those away after a REBOOT (the job is held
/// for them, see [`hold_for_reboots`]).
fn targets_of(hub: &Hub, job: &Job) -> Result<Vec<String>, String> {
    let connected = hub.target_names();
    if job.targets.is_empty() {
        if connected.is_empty() {
            return Err("no minion is connected (start `ingot minion serve` on them)".into());
        }
        return Ok(connected);
    }
    let mut b = globset::GlobSetBuilder::new();
    for t in &job.targets {
        b.add(globset::Glob::new(t).map_err(|e| format!("target {t:?}: {e}"))?);
    }
    let globs = b.build().map_err(|e| e.to_string())?;
    let names: Vec<String> = connected
        .iter()
        .filter(|n| globs.is_match(n.as_str()))
        .cloned()
        .collect();
    if names.is_empty() {
        return Err(format!(
            "Target unknown: {} matches no connected minion; connected: [{}]",
            job.targets.join(", "),
            connected.join(", ")
        ));
    }
    Ok(names)
}

type Results = futures::future::BoxFuture<'static, Vec<JobResult>>;

/// Sends `job` to each of `names` now, in the order jobs are started (see
/// [`crate::server::RemoteMinion::job`]); the future yields their results, each also told to
/// `live` as it comes (for `ingot manage`). A minion in `unprepared` gets the job marked not
/// to start, with why (see [`job::NOT_STARTED`]).
fn send_to(
    hub: &Arc<Hub>,
    job: &Job,
    names: &[String],
    unprepared: &HashMap<String, String>,
    live: Option<&Arc<Tracked>>,
) -> Results {
    let each: Vec<Results> = names
        .iter()
        .map(|n| match hub.connected_session(n) {
            None => {
                let r = failed_result(job, n, format!("minion {n} is not connected"));
                futures::future::ready(vec![r]).boxed()
            }
            Some(s) => {
                let mut reboot = None;
                let sent = match unprepared.get(n) {
                    None => {
                        // Inactive from the moment it goes out (Directord marks the node when
                        // it sends the REBOOT), so a pipelined next job is held too.
                        if verbs::has(&job.verb.to_uppercase(), Traits::REBOOTS) {
                            reboot = s.mark_rebooting();
                        }
                        crate::fleet::RemoteMinion::new(hub.clone(), s.clone()).job(job)
                    }
                    Some(why) => {
                        let mut marked = job.clone();
                        marked
                            .fields
                            .insert(job::NOT_STARTED.into(), Value::String(why.clone()));
                        crate::fleet::RemoteMinion::new(hub.clone(), s.clone()).job(&marked)
                    }
                };
                let (job, n) = (job.clone(), n.clone());
                async move {
                    let r = sent
                        .await
                        .unwrap_or_else(|e| failed_result(&job, &n, e.to_string()));
                    if let (Some(generation), false) = (reboot, r.ok()) {
                        s.reboot_not_started(generation);
                    }
                    vec![r]
                }
                .boxed()
            }
        })
        .map(|each| match live {
            None => each,
            Some(live) => {
                let (live, id) = (live.clone(), job.job_id.clone());
                each.inspect(move |rs| rs.iter().for_each(|r| live.answered(&id, r)))
                    .boxed()
            }
        })
        .collect();
    futures::future::join_all(each)
        .map(|v| v.into_iter().flatten().collect())
        .boxed()
}

/// The ARG job merging a QUERY's answers into every minion's `query` arg.
fn query_arg_job(query: &Job, gathered: Map<String, Value>) -> Job {
    let mut fields = Map::new();
    fields.insert("key".into(), json!("query"));
    fields.insert("value".into(), Value::Object(gathered));
    fields.insert("extend_args".into(), json!(true));
    fields.insert("skip_cache".into(), json!(true));
    Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        verb: "ARG".into(),
        text: String::new(),
        kind: "arg".into(),
        sha3_224: job::fingerprint("ARG", &fields),
        fields,
        cacheable: false,
        parent_id: query.parent_id.clone(),
        parent_sha3_224: query.parent_sha3_224.clone(),
        parent_name: query.parent_name.clone(),
        job_name: None,
        parent_async: query.parent_async,
        targets: Vec::new(),
    }
}

fn describe(job: &Job) -> String {
    job.job_name
        .clone()
        .unwrap_or_else(|| job.summary().trim().to_owned())
}

fn report_lines(job: &Job, results: &[JobResult], stream: bool) -> String {
    let mut s = String::new();
    let failed: Vec<&JobResult> = results.iter().filter(|r| !r.ok()).collect();
    let skipped = results.iter().all(|r| r.status == Status::Skipped);
    let names: Vec<&str> = results.iter().map(|r| r.minion.as_str()).collect();
    let what = describe(job);
    if failed.is_empty() {
        s.push_str(&format!(
            "Job Success: {}  {what}{}  [{}]\n",
            job.job_id,
            if skipped { " (task skipped)" } else { "" },
            names.join(", ")
        ));
    } else {
        let bad: Vec<&str> = failed.iter().map(|r| r.minion.as_str()).collect();
        s.push_str(&format!(
            "Job Failed: {}  {what}  [failed on {} of {}: {}]\n",
            job.job_id,
            failed.len(),
            results.len(),
            bad.join(", ")
        ));
    }
    for r in results {
        if stream {
            if !r.stdout.trim().is_empty() {
                s.push_str(&format!("STDOUT: {} = {}\n", r.minion, r.stdout.trim_end()));
            }
            if !r.stderr.trim().is_empty() {
                s.push_str(&format!("STDERR: {} = {}\n", r.minion, r.stderr.trim_end()));
            }
        } else if !r.ok() {
            for line in r.stderr.trim().lines().take(20) {
                s.push_str(&format!("    {}: {line}\n", r.minion));
            }
        }
    }
    s
}

/// A job whose results are being awaited.
type Sent = futures::future::BoxFuture<'static, (Job, Vec<JobResult>)>;

/// Starts one job: resolves its targets, gets what it needs onto them, and sends it to them
/// (the returned future yields the results).
async fn start(ship: &Shipper, live: &Arc<Tracked>, mut job: Job) -> Sent {
    let hub = ship.hub();
    match targets_of(hub, &job) {
        Err(e) => {
            let r = failed_result(&job, "-", e);
            futures::future::ready((job, vec![r])).boxed()
        }
        Ok(mut names) => {
            if job.flag("run_once") {
                names.truncate(1);
            }
            job.targets = names.clone();
            // Processing from here: held for a REBOOT or being prepared counts as sent.
            live.sent(&job);
            let gone = hold_for_reboots(hub, &job, &names).await;
            names.retain(|n| !gone.contains_key(n));
            let unprepared = ship.prepare(&job, &names).await;
            let results = send_to(hub, &job, &names, &unprepared, Some(live));
            let gone: Vec<JobResult> = gone
                .into_iter()
                .map(|(n, why)| failed_result(&job, &n, why))
                .collect();
            results
                .map(move |mut r| {
                    r.extend(gone);
                    (job, r)
                })
                .boxed()
        }
    }
}

/// Waits for every target of `job` that is inactive after a REBOOT to connect again, each for
/// up to the job's own `--timeout`, rather than sending the job into a connection about to die.
/// Returns the targets that did not come back, with why (the job is not sent to them).
async fn hold_for_reboots(hub: &Arc<Hub>, job: &Job, names: &[String]) -> BTreeMap<String, String> {
    let limit = Duration::from_secs(job.timeout());
    let waits = names.iter().filter(|n| hub.rebooting(n)).map(|n| async move {
        tracing::info!(minion = %n, job = %job.job_id, verb = %job.verb, "job held until the minion is back from REBOOT");
        (n.clone(), hub.wait_back(n, limit).await)
    });
    futures::future::join_all(waits)
        .await
        .into_iter()
        .filter_map(|(n, r)| r.err().map(|why| (n, why.to_string())))
        .collect()
}

/// After a QUERY: sends every connected minion the ARG merging the answers, before any later
/// job is sent (they may blueprint with `{{ query }}`).
async fn merge_query(hub: &Arc<Hub>, job: &Job, results: &mut [JobResult]) {
    if !results.iter().all(JobResult::ok) {
        return;
    }
    let mut gathered = Map::new();
    for r in results.iter() {
        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(r.stdout.trim()) {
            let m: Map<String, Value> = m.into_iter().filter(|(_, v)| !v.is_null()).collect();
            if !m.is_empty() {
                gathered.insert(r.minion.clone(), Value::Object(m));
            }
        }
    }
    let arg = query_arg_job(job, gathered);
    let everyone = hub.connected_names();
    // The merging ARG is the QUERY's own business, not a job of the request.
    for a in send_to(hub, &arg, &everyone, &HashMap::new(), None).await {
        if !a.ok() {
            if let Some(r) = results.iter_mut().find(|r| r.minion == a.minion) {
                r.status = Status::Failed;
                r.stderr
                    .push_str(&format!("\nmerging the query results: {}", a.stderr));
            }
        }
    }
}

/// What every queue of one request shares.
struct RequestRun {
    ship: Arc<Shipper>,
    sentinels: Arc<AtomicU64>,
    recording: Option<Arc<Recording>>,
    live: Arc<Tracked>,
    /// Jobs of one queue on their way at once.
    window: usize,
    /// Print each minion's STDOUT/STDERR.
    stream: bool,
    tx: mpsc::UnboundedSender<ControlReply>,
}

/// Runs one queue's jobs in order, reported in order: up to `window` on their way at once
/// (the minions' engines keep a queue's order, so the master need not wait for one job to
/// finish everywhere before sending the next; the window also bounds what each agent holds
/// open). A QUERY is a barrier: everything before it finishes, then it, then its ARG.
async fn run_queue(r: Arc<RequestRun>, jobs: Vec<Job>) -> Vec<(String, bool)> {
    let RequestRun {
        ship,
        sentinels,
        recording,
        live,
        window,
        stream,
        tx,
    } = &*r;
    let (window, stream) = (*window, *stream);
    let mut outcomes = Vec::new();
    let mut report = |job: &Job, results: &[JobResult]| {
        let ok = results.iter().all(JobResult::ok);
        if let Some(r) = &recording {
            r.record(job, results);
        }
        live.done(job, results);
        let _ = tx.send(ControlReply::Progress(report_lines(job, results, stream)));
        outcomes.push((job.job_id.clone(), ok));
    };
    let mut in_flight: futures::stream::FuturesOrdered<Sent> = Default::default();
    // A QUEUESENTINEL (in any request) drops the jobs this queue still holds, as the minions
    // drop the ones queued with them.
    let mut seen = sentinels.load(Ordering::SeqCst);
    for j in jobs {
        if verbs::has(&j.verb, Traits::DRAINS_QUEUES) {
            seen = sentinels.fetch_add(1, Ordering::SeqCst) + 1;
        } else if sentinels.load(Ordering::SeqCst) != seen {
            let why =
                "Omitted due to sentinel: a QUEUESENTINEL went out before this job left the master";
            report(&j, &[failed_result(&j, "master", why.into())]);
            continue;
        }
        let barrier = verbs::has(&j.verb, Traits::BARRIER);
        while in_flight.len() >= window || (barrier && !in_flight.is_empty()) {
            if let Some((job, results)) = in_flight.next().await {
                report(&job, &results);
            }
        }
        let sent = start(ship, live, j).await;
        if barrier {
            let (job, mut results) = sent.await;
            merge_query(ship.hub(), &job, &mut results).await;
            report(&job, &results);
        } else {
            in_flight.push_back(sent);
        }
    }
    while let Some((job, results)) = in_flight.next().await {
        report(&job, &results);
    }
    outcomes
}

impl Directord {
    /// Runs a request's jobs on the connected minions; progress goes to `tx`, the outcome is
    /// the reply.
    pub async fn run(
        &self,
        req: DirectordRequest,
        tx: mpsc::UnboundedSender<ControlReply>,
    ) -> ControlReply {
        accept(self, req).await.run(tx).await
    }

    /// Directord's fire-and-forget submission (`exec|orchestrate --master` without `--poll`,
    /// `--wait` or `--stream`): takes the request in (its run started and journaled, its jobs
    /// PROCESSING for `ingot manage`), runs it on a task of its own, and answers at once with
    /// one `Job received. Task ID: ID` line per job, as Directord's server does.
    pub async fn detach(&self, req: DirectordRequest) -> ControlReply {
        let accepted = accept(self, req).await;
        let stdout = accepted
            .ids
            .iter()
            .map(|id| format!("Job received. Task ID: {id}\n"))
            .collect();
        // Nobody reads the progress: `ingot manage` and the history show the outcome.
        let (tx, _) = mpsc::unbounded_channel();
        tokio::spawn(accepted.run(tx));
        ControlReply::Done { stdout, code: 0 }
    }
}

/// A request the master has taken in: its run started (and journaled open), its jobs known
/// to `ingot manage` as PROCESSING and split into queues; nothing sent yet.
struct Accepted {
    ship: Arc<Shipper>,
    sentinels: Arc<AtomicU64>,
    recording: Option<Arc<Recording>>,
    journaled: Option<Arc<Journal>>,
    live: Arc<Tracked>,
    /// The job ids, in the request's order.
    ids: Vec<String>,
    /// The queues' jobs, queues in order of first appearance.
    queues: Vec<Vec<Job>>,
    window: usize,
    stream: bool,
    check: bool,
    history_command: String,
}

/// Takes in a request: records it as a history run and tracks its jobs, before any goes out.
async fn accept(d: &Directord, req: DirectordRequest) -> Accepted {
    let hub = &d.hub;
    let jobs: Vec<&Job> = req.jobs.iter().collect();
    let recording = Recording::start(d.history.as_ref(), hub, &req.origin, &jobs).map(Arc::new);
    // Journaled as open (on disk before any job goes out), so a restart of this master marks
    // the run interrupted instead of leaving it running in the history for ever.
    let journaled = match (&recording, hub.journal()) {
        (Some(r), Some(j)) => match j.open_run(r.id()).await {
            Ok(()) => Some(j.clone()),
            Err(e) => {
                tracing::warn!(run = %r.id(), "not journaled (a restart of the master would leave it running in the history): {e}");
                None
            }
        },
        _ => None,
    };
    let live = Arc::new(
        d.in_flight.track(
            &req.jobs,
            recording.as_ref().map(|r| r.id()),
            recording
                .as_ref()
                .map_or_else(channel3::Timestamp::now, |r| r.created()),
        ),
    );
    let ids = req.jobs.iter().map(|j| j.job_id.clone()).collect();
    // Queues in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut queues: BTreeMap<String, Vec<Job>> = BTreeMap::new();
    for j in req.jobs {
        let q = j.queue();
        if !queues.contains_key(&q) {
            order.push(q.clone());
        }
        queues.entry(q).or_default().push(j);
    }
    Accepted {
        ship: Shipper::new(hub.clone(), d.master.clone()),
        sentinels: d.sentinels.clone(),
        recording,
        journaled,
        live,
        ids,
        queues: order
            .into_iter()
            .map(|q| queues.remove(&q).unwrap_or_default())
            .collect(),
        window: req.pipeline.max(1),
        stream: req.stream,
        check: req.check,
        history_command: req.history_command,
    }
}

impl Accepted {
    /// Runs the queues concurrently to the end, stores the run; progress goes to `tx`, the
    /// outcome is the reply.
    async fn run(self, tx: mpsc::UnboundedSender<ControlReply>) -> ControlReply {
        let total: usize = self.queues.iter().map(Vec::len).sum();
        let shared = Arc::new(RequestRun {
            ship: self.ship,
            sentinels: self.sentinels,
            recording: self.recording.clone(),
            live: self.live.clone(),
            window: self.window,
            stream: self.stream,
            tx,
        });
        let runs = self
            .queues
            .into_iter()
            .map(|jobs| tokio::spawn(run_queue(shared.clone(), jobs)));
        let mut failed = Vec::new();
        for r in futures::future::join_all(runs).await {
            match r {
                Ok(outcomes) => failed.extend(outcomes.into_iter().filter(|o| !o.1).map(|o| o.0)),
                Err(e) => failed.push(format!("(a queue stopped: {e})")),
            }
        }
        let mut stdout = format!(
            "{total} jobs: {} succeeded, {} failed\n",
            total.saturating_sub(failed.len()),
            failed.len()
        );
        if self.check && !failed.is_empty() {
            stdout.push_str("FAILED JOBS\n");
            for id in &failed {
                stdout.push_str(&format!("{id}\n"));
            }
        }
        if let Some(r) = self.recording {
            stdout.push_str(&r.finish(!failed.is_empty(), &self.history_command));
            if let Some(journal) = self.journaled {
                journal.close_run(r.id());
            }
        }
        // Only now that the run is stored may its jobs leave the master's list (the queues
        // hold clones in `shared`, gone with them).
        drop(shared);
        drop(self.live);
        ControlReply::Done {
            stdout,
            code: i32::from(!failed.is_empty()),
        }
    }
}
