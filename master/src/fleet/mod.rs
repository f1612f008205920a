//! The fleet: a minion connected to this master as a [`MinionLink`] ([`RemoteMinion`]), the
//! same interface the routine drives the in-process minion through, and the fleet's apply
//! ([`apply`]: the master's half of `ingot apply --targets`, and [`request_apply`], the
//! client's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use minion::wire::{DescribeAnswer, FactsAnswer, Op};
use runner::EventSink;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::routine::link::{Described, Facts, LinkError, MinionLink};
use crate::server::journal::RunJournal;
use crate::server::{Hub, Session};

pub mod apply;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An answer of the minion as the type it should be.
fn answer<T: DeserializeOwned>(program: &str, v: Value) -> Result<T, LinkError> {
    serde_json::from_value(v).map_err(|e| LinkError::BadOutput {
        program: program.into(),
        message: format!("the minion's answer is not one: {e}"),
    })
}

/// A minion connected to this master, behind the same interface as the in-process one.
pub struct RemoteMinion {
    hub: Arc<Hub>,
    session: Arc<Session>,
    described: Mutex<HashMap<String, Option<Described>>>,
    /// The recorded run whose requests are journaled before they are sent.
    journal: Option<Arc<RunJournal>>,
}

impl RemoteMinion {
    /// The link to `session`'s minion.
    pub fn new(hub: Arc<Hub>, session: Arc<Session>) -> Self {
        Self {
            hub,
            session,
            described: Mutex::new(HashMap::new()),
            journal: None,
        }
    }

    /// The minion's session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Sends `op` (journaled first when this link belongs to a recorded run) and waits for
    /// its answer, forwarding its events to `sink`.
    async fn request(&self, op: Op, sink: &dyn EventSink) -> Result<Value, LinkError> {
        let id = self.hub.new_id();
        // Journaled (on disk) before it is sent, so its result is recorded even if this
        // master restarts meanwhile.
        let mut journaled = None;
        if let Some(run) = &self.journal {
            if let Some(entry) = run.entry(&id, self.session.name(), &op) {
                let steps = entry.steps.clone();
                match run.journal().sent(entry).await {
                    Ok(()) => journaled = Some((run.clone(), steps)),
                    Err(e) => tracing::warn!(
                        minion = %self.session.name(),
                        "not journaled (its result is lost if the master restarts while it runs): {e}"
                    ),
                }
            }
        }
        let mut request = self.session.begin(id, op, journaled.is_some());
        if let Some((run, steps)) = journaled {
            request.journaled(run, steps);
        }
        request.finish(self.hub.grace(), sink).await
    }

    /// This link with the requests of the recorded run `journal` journaled.
    pub fn journaled(mut self, journal: Option<Arc<RunJournal>>) -> Self {
        self.journal = journal;
        self
    }
}

impl RemoteMinion {
    /// Hands a Directord job to the minion's job engine: it is sent before this returns
    /// (when the minion is connected), and the future yields its result. What it needs
    /// (ADD/COPY content, a user component) is sent before (see [`crate::directord::transfer`]).
    pub fn job(
        &self,
        job: &minion::directord::Job,
    ) -> impl std::future::Future<Output = Result<minion::directord::JobResult, LinkError>>
           + Send
           + 'static {
        let (grace, verb) = (self.hub.grace(), job.verb.clone());
        let request = self.session.begin(
            self.hub.new_id(),
            Op::Job {
                job: Box::new(job.clone()),
            },
            false,
        );
        async move {
            let v = request.finish(grace, &runner::NullSink).await?;
            serde_json::from_value(v).map_err(|e| LinkError::BadOutput {
                program: format!("job {verb}"),
                message: format!("not a job result: {e}"),
            })
        }
    }
}

impl MinionLink for RemoteMinion {
    fn name(&self) -> &str {
        self.session.name()
    }

    async fn facts(&self, sink: &dyn EventSink) -> Result<Facts, LinkError> {
        let v = self.request(Op::Facts, sink).await?;
        let a: FactsAnswer = answer("facts", v)?;
        Ok(Facts {
            document: a.document,
            failures: a.failures,
        })
    }

    async fn describe(&self, kind: &str) -> Result<Option<Described>, LinkError> {
        if let Some(d) = lock(&self.described).get(kind) {
            return Ok(d.clone());
        }
        let epoch = self.session.describe_epoch();
        if let Some(d) = epoch.and_then(|e| self.session.cached_describe(e, kind)) {
            lock(&self.described).insert(kind.to_owned(), d.clone());
            return Ok(d);
        }
        let v = self
            .request(Op::Describe { kind: kind.into() }, &runner::NullSink)
            .await?;
        let a: DescribeAnswer = answer(&format!("resources/{kind} describe"), v)?;
        let d = a.doc.filter(|d| !d.is_null()).map(|doc| Described {
            identity: a.identity,
            batch: a.batch,
            schema: doc.get("schema").cloned(),
        });
        if let Some(e) = epoch {
            self.session.cache_describe(e, kind, &d);
        }
        lock(&self.described).insert(kind.to_owned(), d.clone());
        Ok(d)
    }

    async fn call(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> Result<Value, LinkError> {
        self.request(
            Op::Resource {
                kind: kind.into(),
                action: action.into(),
                input: input.clone(),
            },
            sink,
        )
        .await
    }
}

impl RemoteMinion {
    /// The minion's Directord cache (`ingot manage --dump-cache`).
    pub async fn dump_cache(&self) -> Result<Value, LinkError> {
        self.request(Op::DumpCache, &runner::NullSink).await
    }

    /// Sends `op` (a content transfer step or an install, see [`crate::directord::transfer`]) and
    /// waits for its answer.
    pub async fn call_op(&self, op: Op) -> Result<Value, LinkError> {
        let install = matches!(op, Op::Install { .. });
        let r = self.request(op, &runner::NullSink).await;
        if install {
            self.session.installed();
        }
        r
    }
}
