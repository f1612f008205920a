//! What the agent does with a request: the minion's dispatch, the Directord job engine,
//! content received from the master, and the questions it asks the master (JOB_WAIT).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use super::{lock, Agent};
use crate::directord::boxed_future::BoxFuture;
use crate::directord::cache::{Cache, JobState};
use crate::directord::engine::{FileSource, JobWait, JobWaitCoordinator};
use crate::directord::{Engine, Job, JobResult};
use crate::dispatch::DispatchError;
use crate::wire::{
    Ask, DescribeAnswer, EndedState, FactsAnswer, Frame, InstallAnswer, InstallState,
    JobStateAnswer, JobWaitAnswer, Op, Reply, WireError,
};
use crate::Minion;

/// JOB_WAIT on a network minion: the master asks each listed minion's agent for its cache
/// state of the job (Directord's coordination notices, relayed by the server).
struct MasterJobWait(Weak<Agent>);

impl JobWaitCoordinator for MasterJobWait {
    fn wait<'a>(
        &'a self,
        _engine: &'a Engine,
        wait: &'a JobWait,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let agent = self.0.upgrade().ok_or("the minion agent is stopping")?;
            let answer = agent
                .ask(Ask::JobWait {
                    sha3_224: wait.sha.clone(),
                    identities: wait.identities.clone(),
                    limit_secs: wait.limit.as_secs(),
                })
                .await?;
            let answer: JobWaitAnswer = serde_json::from_value(answer)
                .map_err(|e| format!("the master's answer to JOB_WAIT is not one: {e}"))?;
            if !answer.failed.is_empty() {
                let failed: Vec<&str> = answer.failed.values().map(String::as_str).collect();
                return Err(failed.join("; "));
            }
            let acked = answer.acked;
            Ok(format!(
                "job {} completed on {}",
                wait.sha,
                acked.join(", ")
            ))
        })
    }
}

/// ADD/COPY sources as the agent received them: `CACHE/transfer/<sha3-224>` (see
/// [`super::inbox`]).
struct ReceivedFiles(PathBuf);

impl FileSource for ReceivedFiles {
    fn fetch<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move {
            let sha = job
                .str("file_sha3_224")
                .filter(|s| super::inbox::valid_sha(s))
                .ok_or("the job carries no valid file_sha3_224")?;
            let p = self.0.join(sha);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "the content of {} ({sha}) has not reached this minion ({} is missing)",
                    job.str("file_from").unwrap_or("the source"),
                    p.display()
                ))
            }
        })
    }
}

impl Agent {
    /// Asks the master `ask` on the current connection and waits for its answer.
    async fn ask(&self, ask: Ask) -> Result<Value, String> {
        let lost = "the connection to the master dropped before it answered; run the job again once `ingot manage --list-nodes` shows this minion connected";
        let wire = lock(&self.current).clone().ok_or(
            "not connected to the master, which is needed to reach the other minions; the agent reconnects by itself: run the job again once `ingot manage --list-nodes` shows this minion connected",
        )?;
        let id = self.next_ask.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.asks).insert(id, tx);
        if wire.send(Frame::Ask { id, ask }.encode()).is_err() {
            lock(&self.asks).remove(&id);
            return Err(lost.into());
        }
        match rx.await {
            Ok(Reply::Ok(v)) => Ok(v),
            Ok(Reply::Err(e)) => Err(e.to_string()),
            Err(_) => Err(lost.into()),
        }
    }

    /// The job engine (created on first use, under the welcomed name).
    fn engine(self: &Arc<Self>) -> Result<Engine, String> {
        let mut slot = lock(&self.engine);
        if let Some(e) = slot.as_ref() {
            return Ok(e.clone());
        }
        let name = lock(&self.name)
            .clone()
            .ok_or("a job arrived before the master welcomed this minion")?;
        let cache = Cache::for_minion(&self.opts.minion).map_err(|e| e.to_string())?;
        let transfer = cache.dir().join("transfer");
        let engine = Engine::new(Arc::new(Minion::new(&self.opts.minion)), name, cache)
            .with_files(Arc::new(ReceivedFiles(transfer)))
            .with_job_wait(Arc::new(MasterJobWait(Arc::downgrade(self))));
        *slot = Some(engine.clone());
        Ok(engine)
    }

    /// Queues the job (its ADD/COPY content arrived before, with [`Op::Transfer`]).
    pub(super) fn submit_job(
        self: &Arc<Self>,
        job: &Job,
    ) -> Result<tokio::sync::oneshot::Receiver<JobResult>, String> {
        Ok(self.engine()?.submit(job.clone()))
    }

    /// `MINION/cache/directord/transfer`: content received from the master.
    fn transfer_dir(&self) -> PathBuf {
        Cache::for_minion(&self.opts.minion)
            .map(|c| c.dir().to_owned())
            .unwrap_or_else(|_| self.opts.minion.join("cache").join("directord"))
            .join("transfer")
    }

    /// A transfer step or an install, off the async threads (they hash whole files).
    async fn receive(&self, op: &Op) -> Result<Value, String> {
        let (dir, minion) = (self.transfer_dir(), self.opts.minion.clone());
        let op = op.clone();
        let done = tokio::task::spawn_blocking(move || match op {
            Op::Transfer(t) => super::inbox::Inbox::new(dir)
                .step(t)
                .map(|a| (to_value(&a), None)),
            Op::Install { kind, sha3_224 } => {
                super::inbox::install(&minion, &dir, &kind, &sha3_224).map(|state| {
                    let replaced = (state == InstallState::Installed).then_some(kind);
                    (to_value(&InstallAnswer { state }), replaced)
                })
            }
            _ => Err(super::inbox::TransferError("not a transfer".into())),
        })
        .await
        .map_err(|e| format!("the transfer task failed: {e}"))?
        .map_err(|e| e.0)?;
        if let (Some(kind), v) = (&done.1, &done.0) {
            // The executable changed: nothing cached about it holds any more.
            self.minion.forget(kind);
            if let Some(e) = lock(&self.engine).as_ref() {
                e.forget(kind);
            }
            tracing::info!(%kind, "user component installed: {v}");
        }
        Ok(done.0)
    }

    pub(super) async fn dispatch(&self, op: &Op, sink: &dyn runner::EventSink) -> Reply {
        match op {
            Op::Facts => match self.minion.facts(sink).await {
                Ok(r) => Reply::Ok(to_value(&FactsAnswer {
                    document: Value::Object(r.document),
                    failures: r.failures.into_iter().map(|p| (p.name, p.reason)).collect(),
                })),
                Err(e) => Reply::Err(WireError::Unreachable {
                    message: e.to_string(),
                }),
            },
            Op::Describe { kind } => match self.minion.describe(kind, sink).await {
                Ok(d) => Reply::Ok(to_value(&DescribeAnswer {
                    identity: d.identity(),
                    batch: d.batch(),
                    doc: d.doc.clone(),
                })),
                Err(e) => Reply::Err(wire_error(e)),
            },
            Op::Resource {
                kind,
                action,
                input,
            } => match self.minion.resource(kind, action, input, sink).await {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Err(wire_error(e)),
            },
            Op::Job { .. } => Reply::Err(WireError::Unreachable {
                message: "a job is queued when it arrives, not dispatched".into(),
            }),
            Op::Transfer(_) | Op::Install { .. } => match self.receive(op).await {
                Ok(v) => Reply::Ok(v),
                Err(message) => Reply::Err(WireError::Unreachable { message }),
            },
            Op::JobState {
                sha3_224,
                limit_secs,
            } => match Cache::for_minion(&self.opts.minion) {
                Ok(cache) => {
                    let limit = Duration::from_secs(*limit_secs);
                    let state =
                        match crate::directord::engine::job_end(&cache, sha3_224, limit).await {
                            Some(JobState::Success) => Some(EndedState::Success),
                            Some(JobState::Failed) => Some(EndedState::Failed),
                            Some(JobState::Processing) | None => None,
                        };
                    Reply::Ok(to_value(&JobStateAnswer { state }))
                }
                Err(e) => Reply::Err(WireError::Unreachable {
                    message: e.to_string(),
                }),
            },
            Op::DumpCache => match Cache::for_minion(&self.opts.minion).and_then(|c| c.dump()) {
                Ok(v) => Reply::Ok(v),
                Err(e) => Reply::Err(WireError::Unreachable {
                    message: e.to_string(),
                }),
            },
        }
    }
}

impl From<DispatchError> for WireError {
    /// A dispatch failure as the master sees it, locally and over the network alike.
    fn from(e: DispatchError) -> Self {
        wire_error(e)
    }
}

fn wire_error(e: DispatchError) -> WireError {
    match e {
        DispatchError::Failed {
            kind,
            action,
            code,
            stderr,
        } => WireError::Failed {
            program: format!("resources/{kind} {action}"),
            code,
            stderr,
        },
        DispatchError::BadOutput {
            kind,
            action,
            reason,
        } => WireError::BadOutput {
            program: format!("resources/{kind} {action}"),
            message: reason,
        },
        other => WireError::Unreachable {
            message: other.to_string(),
        },
    }
}

/// An answer as the JSON of a reply.
fn to_value(answer: &impl serde::Serialize) -> Value {
    serde_json::to_value(answer).expect("answers serialize")
}
