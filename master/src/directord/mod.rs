//! Directord through the running master: `ingot exec|orchestrate --master` ([`command`], the
//! operator's side; [`relay`], the master's), their jobs recorded in the history
//! ([`recording`]) and read back ([`records`]) by `ingot manage` ([`manage`]), the content
//! they need sent to the minions ([`transfer`]), and JOB_WAIT across minions ([`job_wait`]).
//!
//! [`Directord`] is what the running master holds for it: the jobs in flight (for `manage`),
//! the QUEUESENTINEL count, and the answerer of the minions' questions.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use historian::History;
use minion::wire::Ask;
use tokio::sync::mpsc;

use crate::control::{ControlReply, DirectordRequest, ManageRequest};
use crate::server::{Answering, Hub, Questions};
use recording::InFlight;

pub mod command;
pub mod job_wait;
pub mod manage;
pub mod recording;
pub mod records;
pub mod relay;
pub mod transfer;

/// Directord in the running master.
pub struct Directord {
    hub: Arc<Hub>,
    master: PathBuf,
    history: Option<Arc<History>>,
    /// The jobs of the requests being run and not stored yet, for `ingot manage`.
    in_flight: Arc<InFlight>,
    /// Bumped by every QUEUESENTINEL sent through this master: jobs the master still holds
    /// (not yet sent) from before it are omitted, as the minions omit their queued ones.
    sentinels: Arc<AtomicU64>,
}

impl Directord {
    /// Directord for the minions of `hub`, the master tree `master`, recording into `history`.
    pub fn new(hub: Arc<Hub>, master: PathBuf, history: Option<Arc<History>>) -> Arc<Self> {
        Arc::new(Self {
            hub,
            master,
            history,
            in_flight: Arc::default(),
            sentinels: Arc::default(),
        })
    }

    /// Runs a request's jobs; progress goes to `tx`, the outcome is the reply.
    pub async fn run(
        &self,
        req: DirectordRequest,
        tx: mpsc::UnboundedSender<ControlReply>,
    ) -> ControlReply {
        relay::run(self, req, tx).await
    }

    /// Answers `ingot manage`'s questions to the running master.
    pub async fn manage(&self, req: ManageRequest) -> ControlReply {
        manage::serve(&self.hub, &self.in_flight, req).await
    }
}

impl Questions for Directord {
    fn answer<'a>(&'a self, hub: &'a Arc<Hub>, asker: &'a str, ask: Ask) -> Answering<'a> {
        Box::pin(job_wait::answer(hub, asker, ask))
    }
}
