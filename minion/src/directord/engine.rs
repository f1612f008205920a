//! The job engine of one minion: per-parent queues, the cache rules, and running a job's verb
//! through [`Minion::resource_with_timeout`] (the same dispatch as every resource action).
//!
//! ```text
//! Engine::new(minion, name, cache)      one per minion (in-process, or in the minion agent)
//!   .with_query(coordinator)            QUERY: how results of every minion are gathered
//!   .with_job_wait(coordinator)         JOB_WAIT: how other minions' job states are learnt
//!   .with_files(source)                 ADD/COPY: where a source file's content comes from
//!   .with_sink(sink)                    channel3 events of every process
//! engine.resolve(verb)                  (kind, option list) from the resource's describe
//! engine.submit(job) -> Receiver        queue it; the receiver yields its JobResult
//! engine.execute(&job).await            run it now, outside any queue
//! ```
//!
//! Queues: a job of an `async` orchestration goes to that parent's own queue, every other job
//! to the `general` queue; each queue runs its jobs one at a time, in submission order, and
//! queues run concurrently. A failed job marks its parent failed: later jobs of that parent on
//! this minion, queued ones included, fail with "Job omitted, parent failure". A
//! QUEUESENTINEL job (a verb with [`Traits::DRAINS_QUEUES`]) is handled at submission: every
//! job submitted before it and not yet started is reported failed ("Omitted due to sentinel
//! from ID").
//!
//! A network minion agent receives [`Job`]s (serde) from the master and calls `submit`; the
//! master's QUERY fan-in plugs in as a [`QueryCoordinator`], its JOB_WAIT relay (asking each
//! listed minion's agent for its cache state of the job) as a [`JobWaitCoordinator`], file
//! transfer as a [`FileSource`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runner::{EventSink, NullSink};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::boxed_future::BoxFuture;
use super::cache::{Bucket, Cache, JobState};
use super::job::Job;
use super::syntax::{VerbError, VerbSpec};
use super::verbs::{JobOutput, Traits};
use crate::{DispatchError, Minion};

/// Gathers a QUERY's results from every minion: returns `{identity: {ARGNAME: value}}` for
/// the minions that hold the arg (a minion without it contributes no key).
pub trait QueryCoordinator: Send + Sync {
    /// This minion's answer is `value` (null when it has no such arg).
    fn gather<'a>(
        &'a self,
        job: &'a Job,
        minion: &'a str,
        name: &'a str,
        value: Value,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>>;
}

/// One minion alone: the result is this minion's own value.
pub struct LocalQuery;

impl QueryCoordinator for LocalQuery {
    fn gather<'a>(
        &'a self,
        _job: &'a Job,
        minion: &'a str,
        name: &'a str,
        value: Value,
    ) -> BoxFuture<'a, Result<Map<String, Value>, String>> {
        Box::pin(async move {
            let mut m = Map::new();
            if !value.is_null() {
                m.insert(minion.into(), json!({ name: value }));
            }
            Ok(m)
        })
    }
}

/// What a JOB_WAIT asks: has the job with fingerprint `sha` ended on each of `identities`?
#[derive(Debug, Clone)]
pub struct JobWait {
    /// The job's SHA3-224.
    pub sha: String,
    /// The minions whose caches must show it ended.
    pub identities: Vec<String>,
    /// How long each may take (the JOB_WAIT job's `--timeout`; Directord's 2400 × 0.25 s is
    /// the default 600).
    pub limit: Duration,
}

/// Answers a JOB_WAIT (Directord's coordination notice / ack): `Ok` with what to print when the
/// job succeeded on every listed identity, else why not, naming the identities.
pub trait JobWaitCoordinator: Send + Sync {
    /// Waits for `wait` on behalf of `engine`'s minion.
    fn wait<'a>(
        &'a self,
        engine: &'a Engine,
        wait: &'a JobWait,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// How often a minion looks at its cache for the end of a job (Directord: 0.25 s).
const JOB_POLL: Duration = Duration::from_millis(250);

/// Polls `cache` until the job `sha` is recorded as succeeded or failed, for up to `limit`;
/// `None` when it did not end in time.
pub async fn job_end(cache: &Cache, sha: &str, limit: Duration) -> Option<JobState> {
    // A limit too far to add to now (a huge --timeout) never runs out.
    let deadline = Instant::now().checked_add(limit);
    loop {
        match cache.state(Bucket::Jobs, sha) {
            Some(s @ (JobState::Success | JobState::Failed)) => return Some(s),
            Some(JobState::Processing) | None => {}
        }
        let left = deadline.map_or(JOB_POLL, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return None;
        }
        tokio::time::sleep(left.min(JOB_POLL)).await;
    }
}

/// One minion alone (`ingot exec`/`orchestrate` without a master): only its own cache can be
/// checked, so any other identity is an error that says to go through a master.
pub struct LocalJobWait;

impl JobWaitCoordinator for LocalJobWait {
    fn wait<'a>(
        &'a self,
        engine: &'a Engine,
        wait: &'a JobWait,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let me = engine.name();
            let others: Vec<&str> = wait
                .identities
                .iter()
                .map(String::as_str)
                .filter(|i| *i != me)
                .collect();
            if !others.is_empty() {
                return Err(format!(
                    "without a master only this minion ({me}) can be checked, but --identity also names {}: run the job through a master (`ingot exec --master DIR`, `ingot orchestrate --master DIR`)",
                    others.join(", ")
                ));
            }
            let sha = &wait.sha;
            match job_end(engine.cache(), sha, wait.limit).await {
                Some(JobState::Success) => Ok(format!("job {sha} completed on {me}")),
                Some(JobState::Failed) => Err(format!("job {sha} failed on {me}")),
                Some(JobState::Processing) | None => Err(format!(
                    "job {sha} did not end on {me} within {}s (JOB_WAIT's --timeout)",
                    wait.limit.as_secs()
                )),
            }
        })
    }
}

/// Provides the content of an ADD/COPY source as a local file.
pub trait FileSource: Send + Sync {
    /// A local path holding the content of `job.fields.file_from` (whose SHA3-224 is
    /// `file_sha3_224`).
    fn fetch<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<PathBuf, String>>;
}

/// The operator's host is this host: the source path itself.
pub struct LocalFiles;

impl FileSource for LocalFiles {
    fn fetch<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move {
            job.str("file_from")
                .map(PathBuf::from)
                .ok_or_else(|| "the job names no source file".to_owned())
        })
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// It ran and succeeded.
    Success,
    /// Its fingerprint last succeeded: not run ("task skipped").
    Skipped,
    /// It failed (or was omitted).
    Failed,
}

/// The result of one job on one minion.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResult {
    /// The job id.
    pub job_id: String,
    /// Its fingerprint.
    pub sha3_224: String,
    /// The minion.
    pub minion: String,
    /// How it ended.
    pub status: Status,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr (or why it failed).
    pub stderr: String,
    /// Directord's INFO.
    pub info: String,
    /// Seconds it took.
    pub execution_time: f64,
    /// Unix time it ended.
    pub ended: f64,
}

impl JobResult {
    /// Success or skipped.
    pub fn ok(&self) -> bool {
        self.status != Status::Failed
    }
}

struct Queued {
    seq: u64,
    job: Job,
    done: oneshot::Sender<JobResult>,
}

struct Inner {
    minion: Arc<Minion>,
    name: String,
    cache: Cache,
    query: Arc<dyn QueryCoordinator>,
    job_wait: Arc<dyn JobWaitCoordinator>,
    files: Arc<dyn FileSource>,
    sink: Arc<dyn EventSink>,
    queues: Mutex<HashMap<String, mpsc::UnboundedSender<Queued>>>,
    seq: AtomicU64,
    drained_below: AtomicU64,
    failed_parents: Mutex<HashSet<String>>,
    kinds: Mutex<HashMap<String, (String, VerbSpec)>>,
}

/// The job engine of one minion (cheap to clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Engine {
    /// An engine for `minion`, known to the cluster as `name`.
    pub fn new(minion: Arc<Minion>, name: impl Into<String>, cache: Cache) -> Self {
        Self {
            inner: Arc::new(Inner {
                minion,
                name: name.into(),
                cache,
                query: Arc::new(LocalQuery),
                job_wait: Arc::new(LocalJobWait),
                files: Arc::new(LocalFiles),
                sink: Arc::new(NullSink),
                queues: Mutex::new(HashMap::new()),
                seq: AtomicU64::new(1),
                drained_below: AtomicU64::new(0),
                failed_parents: Mutex::new(HashSet::new()),
                kinds: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn rebuild(self, f: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("configure the engine before cloning it"));
        f(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Uses this QUERY coordinator (default: [`LocalQuery`]).
    pub fn with_query(self, q: Arc<dyn QueryCoordinator>) -> Self {
        self.rebuild(|i| i.query = q)
    }

    /// Uses this JOB_WAIT coordinator (default: [`LocalJobWait`]).
    pub fn with_job_wait(self, w: Arc<dyn JobWaitCoordinator>) -> Self {
        self.rebuild(|i| i.job_wait = w)
    }

    /// Uses this file source (default: [`LocalFiles`]).
    pub fn with_files(self, f: Arc<dyn FileSource>) -> Self {
        self.rebuild(|i| i.files = f)
    }

    /// Sends every process's events here.
    pub fn with_sink(self, s: Arc<dyn EventSink>) -> Self {
        self.rebuild(|i| i.sink = s)
    }

    /// The minion's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.inner.cache
    }

    /// The resource kind and option list of a verb: `resources/<verb>` when its describe has
    /// a verb option list, else `resources/<verb>_verb` (so `SERVICE` is `service_verb`, next
    /// to the mold-style `service`).
    pub async fn resolve(&self, verb: &str) -> Result<(String, VerbSpec), ResolveError> {
        let lower = verb.to_lowercase();
        if let Some(r) = lock(&self.inner.kinds).get(&lower) {
            return Ok(r.clone());
        }
        let mut last = None;
        for kind in [lower.clone(), format!("{lower}_verb")] {
            match self.inner.minion.describe(&kind, &*self.inner.sink).await {
                Ok(desc) => {
                    let args = desc
                        .doc
                        .as_ref()
                        .and_then(|d| d.get("args"))
                        .cloned()
                        .unwrap_or(Value::Null);
                    match VerbSpec::from_describe(verb, &args)? {
                        Some(spec) => {
                            lock(&self.inner.kinds).insert(lower, (kind.clone(), spec.clone()));
                            return Ok((kind, spec));
                        }
                        None => {
                            last = Some(ResolveError::Verb(VerbError::NotAVerb {
                                verb: verb.to_uppercase(),
                                kind,
                            }))
                        }
                    }
                }
                Err(DispatchError::NotFound { .. }) => {
                    if last.is_none() {
                        last = Some(ResolveError::NotFound {
                            verb: verb.to_uppercase(),
                            kind: lower.clone(),
                        });
                    }
                }
                Err(e) => return Err(ResolveError::Dispatch(e)),
            }
        }
        Err(last.expect("two kinds tried"))
    }

    /// Forgets what is cached about resource `kind` because its executable was replaced: the
    /// verbs resolved to it (or that may resolve to it now) and its describe.
    pub fn forget(&self, kind: &str) {
        lock(&self.inner.kinds).retain(|verb, (k, _)| k != kind && verb != kind);
        self.inner.minion.forget(kind);
    }

    /// Queues a job; the receiver yields its result. Must be called within a tokio runtime.
    pub fn submit(&self, job: Job) -> oneshot::Receiver<JobResult> {
        let (tx, rx) = oneshot::channel();
        let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst);
        if super::verbs::has(&job.verb, Traits::DRAINS_QUEUES) {
            self.inner.drained_below.fetch_max(seq, Ordering::SeqCst);
            let _ = tx.send(self.result(&job, Status::Success, JobOutput::default(), 0.0));
            return rx;
        }
        let queue = job.queue();
        let mut queues = lock(&self.inner.queues);
        let sender = queues.entry(queue).or_insert_with(|| {
            let (qtx, mut qrx) = mpsc::unbounded_channel::<Queued>();
            let me = self.clone();
            tokio::spawn(async move {
                while let Some(q) = qrx.recv().await {
                    let r = if q.seq < me.inner.drained_below.load(Ordering::SeqCst) {
                        me.omitted(&q.job, "Omitted due to sentinel")
                    } else {
                        me.execute(&q.job).await
                    };
                    let _ = q.done.send(r);
                }
            });
            qtx
        });
        let _ = sender.send(Queued { seq, job, done: tx });
        rx
    }

    fn omitted(&self, job: &Job, why: &str) -> JobResult {
        let out = JobOutput {
            stderr: why.into(),
            info: why.into(),
            ..JobOutput::default()
        };
        self.record(job, false);
        self.result(job, Status::Failed, out, 0.0)
    }

    fn result(&self, job: &Job, status: Status, out: JobOutput, secs: f64) -> JobResult {
        JobResult {
            job_id: job.job_id.clone(),
            sha3_224: job.sha3_224.clone(),
            minion: self.inner.name.clone(),
            status,
            stdout: out.stdout,
            stderr: out.stderr,
            info: out.info,
            execution_time: secs,
            ended: unix_now(),
        }
    }

    fn record(&self, job: &Job, ok: bool) {
        let state = if ok {
            JobState::Success
        } else {
            JobState::Failed
        };
        if !ok {
            lock(&self.inner.failed_parents).insert(job.parent_id.clone());
        }
        let c = &self.inner.cache;
        if let Err(e) = c
            .set_state(Bucket::Jobs, &job.sha3_224, state)
            .and_then(|_| c.set_state(Bucket::Parents, &job.parent_id, state))
        {
            tracing::warn!("recording job {}: {e}", job.job_id);
        }
    }

    /// Runs a job now (no queue): parent check, cache check, blueprint context, the verb's
    /// resource with the job's timeout, then the cache effects and `--stdout-arg/--stderr-arg`.
    pub async fn execute(&self, job: &Job) -> JobResult {
        let inner = &self.inner;
        if !job.targets.is_empty() && !job.targets.iter().any(|t| *t == inner.name) {
            return self.omitted(
                job,
                &format!(
                    "Target unknown. Available targets [{}]; the job targets {}",
                    inner.name,
                    job.targets.join(", ")
                ),
            );
        }
        if lock(&inner.failed_parents).contains(&job.parent_id)
            || inner.cache.state(Bucket::Parents, &job.parent_id) == Some(JobState::Failed)
        {
            let out = JobOutput {
                stderr: "Job omitted, parent failure: an earlier job of this orchestration failed on this minion".into(),
                info: "Job omitted, parent failure".into(),
                ..JobOutput::default()
            };
            return self.result(job, Status::Failed, out, 0.0);
        }
        if let Some(why) = job.str(super::job::NOT_STARTED) {
            return self.omitted(job, why);
        }
        if job.cacheable
            && !job.flag("skip_cache")
            && inner.cache.state(Bucket::Jobs, &job.sha3_224) == Some(JobState::Success)
        {
            let _ = inner
                .cache
                .set_state(Bucket::Parents, &job.parent_id, JobState::Success);
            let out = JobOutput {
                info: "task skipped".into(),
                ..JobOutput::default()
            };
            return self.result(job, Status::Skipped, out, 0.0);
        }
        let start = Instant::now();
        let out = self.perform(job).await;
        let secs = start.elapsed().as_secs_f64();
        let out = match out {
            Ok(o) => o,
            Err(msg) => JobOutput::fail(msg),
        };
        let mut out = out;
        if out.outcome {
            if let Err(e) = self.apply(job, &mut out).await {
                out.outcome = false;
                out.stderr.push_str(&e);
            }
        }
        // --stdout-arg / --stderr-arg: the output as an arg on this minion.
        let mut saved = Map::new();
        if let Some(name) = job.str("stdout_arg").filter(|s| !s.is_empty()) {
            saved.insert(name.into(), Value::String(out.stdout.trim().into()));
        }
        if let Some(name) = job.str("stderr_arg").filter(|s| !s.is_empty()) {
            saved.insert(name.into(), Value::String(out.stderr.trim().into()));
        }
        if !saved.is_empty() {
            if let Err(e) = inner.cache.merge_into(Bucket::Args, saved, false) {
                out.outcome = false;
                out.stderr
                    .push_str(&format!("\nstoring the output arg: {e}"));
            }
        }
        self.record(job, out.outcome);
        let status = if out.outcome {
            Status::Success
        } else {
            Status::Failed
        };
        self.result(job, status, out, secs)
    }

    async fn perform(&self, job: &Job) -> Result<JobOutput, String> {
        let inner = &self.inner;
        let c = &inner.cache;
        let args = c.get(Bucket::Args).map_err(|e| e.to_string())?;
        let envs = c.get(Bucket::Envs).map_err(|e| e.to_string())?;
        let source = if job.fields.contains_key("file_from") {
            Some(inner.files.fetch(job).await?)
        } else {
            None
        };
        let mut fields = job.fields.clone();
        fields.insert("verb".into(), Value::String(job.verb.clone()));
        fields.insert("job_sha3_224".into(), Value::String(job.sha3_224.clone()));
        let input = json!({
            "job": fields,
            "args": args,
            "envs": envs,
            "cache_dir": c.dir(),
            "source": source,
            "minion": inner.name,
        });
        let timeout = Duration::from_secs(job.timeout());
        let minion = &inner.minion;
        // A verb with an entry point for the `ingot` binary itself (RUN), when its
        // `resources/KIND` is this binary: its command is the only process (see `inproc`).
        let here = match super::verbs::by_kind(&job.kind).and_then(|v| v.here) {
            Some(here)
                if minion
                    .describe(&job.kind, &*inner.sink)
                    .await
                    .is_ok_and(|d| d.builtin().is_some()) =>
            {
                Some(here)
            }
            _ => None,
        };
        let ran = if let Some(here) = here {
            here(&input, minion.runner(), timeout, &*inner.sink).await
        } else {
            minion
                .resource_with_timeout(&job.kind, "job", &input, timeout, &*inner.sink)
                .await
        };
        match ran {
            Ok(v) => serde_json::from_value::<JobOutput>(v.clone()).map_err(|e| {
                format!(
                    "{} printed a result that is not a job output ({e}): {v}",
                    job.kind
                )
            }),
            Err(DispatchError::Timeout { after, .. }) => Err(format!(
                "timed out after {}s; the job's process group was killed (raise --timeout)",
                after.as_secs()
            )),
            Err(DispatchError::Failed { code, stderr, .. }) => Ok(JobOutput {
                outcome: false,
                stderr: if stderr.is_empty() {
                    format!("{} exited with code {code}", job.kind)
                } else {
                    stderr
                },
                ..JobOutput::default()
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn apply(&self, job: &Job, out: &mut JobOutput) -> Result<(), String> {
        let inner = &self.inner;
        let c = &inner.cache;
        let err = |e: super::cache::CacheError| format!("\n{e}");
        if let Some(a) = &out.set_args {
            c.merge_into(Bucket::Args, a.clone(), out.extend_args)
                .map_err(err)?;
        }
        if let Some(e) = &out.set_envs {
            c.merge_into(Bucket::Envs, e.clone(), out.extend_args)
                .map_err(err)?;
        }
        if let Some(tag) = &out.evict {
            c.evict(tag).map_err(err)?;
        }
        if let Some(q) = &out.query {
            let name = q.get("name").and_then(Value::as_str).unwrap_or_default();
            let value = q.get("value").cloned().unwrap_or(Value::Null);
            let gathered = inner
                .query
                .gather(job, &inner.name, name, value)
                .await
                .map_err(|e| format!("\nQUERY {name}: {e}"))?;
            let mut m = Map::new();
            m.insert("query".into(), Value::Object(gathered));
            c.merge_into(Bucket::Args, m, true).map_err(err)?;
        }
        if let Some(w) = out.job_wait.take() {
            out.stdout = self.wait_for_job(job, &w).await?;
        }
        Ok(())
    }

    /// A JOB_WAIT's wait, through the coordinator; the limit is the job's `--timeout`.
    async fn wait_for_job(&self, job: &Job, w: &Value) -> Result<String, String> {
        let wait = JobWait {
            sha: w["sha"].as_str().unwrap_or_default().to_owned(),
            identities: w["identities"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| i.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            limit: Duration::from_secs(job.timeout()),
        };
        // The coordinator keeps to the limit; this bounds a master that never answers.
        let outer = wait.limit.saturating_add(Duration::from_secs(30));
        match tokio::time::timeout(outer, self.inner.job_wait.wait(self, &wait)).await {
            Ok(r) => r.map_err(|e| format!("\nJOB_WAIT: {e}")),
            Err(_) => Err(format!(
                "\nJOB_WAIT {}: no answer within {}s",
                wait.sha,
                outer.as_secs()
            )),
        }
    }
}

/// Why a verb has no resource.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither `resources/<verb>` nor `resources/<verb>_verb` exists.
    #[error("{verb}: no such verb: neither resources/{kind} nor resources/{kind}_verb exists (a verb of your own is an executable of that name in MASTER/resources/ with --master, or in MINION/resources/)")]
    NotFound {
        /// The verb.
        verb: String,
        /// The executable name it resolves to (lower case).
        kind: String,
    },
    /// Its option list is bad, or it is not a verb.
    #[error(transparent)]
    Verb(#[from] VerbError),
    /// describe failed.
    #[error(transparent)]
    Dispatch(DispatchError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn verb(path: &std::path::Path, option: &str) {
        let body = format!(
            "#!/bin/sh\n[ \"$1\" = describe ] && echo '{{\"actions\": [\"job\"], \"args\": [{{\"name\": \"{option}\", \"type\": \"str\"}}]}}'\n"
        );
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[tokio::test]
    async fn forget_drops_what_was_resolved_and_described() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("resources")).unwrap();
        let exe = tmp.path().join("resources/hello");
        verb(&exe, "first");
        let cache = Cache::for_minion(tmp.path()).unwrap();
        let engine = Engine::new(Arc::new(Minion::new(tmp.path())), "t", cache);
        let name = |s: &VerbSpec| s.options[0].name.clone();
        let (kind, spec) = engine.resolve("HELLO").await.unwrap();
        assert_eq!((kind.as_str(), name(&spec)), ("hello", "first".into()));
        verb(&exe, "second");
        assert_eq!(name(&engine.resolve("HELLO").await.unwrap().1), "first");
        engine.forget("hello");
        assert_eq!(name(&engine.resolve("HELLO").await.unwrap().1), "second");
    }
}
