//! [`Directord`]: what the running master holds for Directord.

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use historian::History;
use minion::wire::Ask;

use super::job_wait;
use super::manage;
use super::recording::InFlight;
use crate::control::{ControlReply, ManageRequest};
use crate::server::{Answering, Hub, Questions};

/// Directord in the running master.
pub struct Directord {
    pub(super) hub: Arc<Hub>,
    pub(super) master: PathBuf,
    pub(super) history: Option<Arc<History>>,
    /// The jobs of the requests being run and not stored yet, for `ingot manage`.
    pub(super) in_flight: Arc<InFlight>,
    /// Bumped by every QUEUESENTINEL sent through this master: jobs the master still holds
    /// (not yet sent) from before it are omitted, as the minions omit their queued ones.
    pub(super) sentinels: Arc<AtomicU64>,
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
