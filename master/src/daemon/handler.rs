//! The running master's answer to each control request: it dispatches to the feature that owns
//! it (the fleet's apply, Directord, `ingot manage`, uploads) and streams the replies.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use historian::History;
use tokio::sync::mpsc;

use crate::control::{Connection, ControlReply, ControlRequest, Handler};
use crate::directord::Directord;
use crate::server::Hub;

/// What the running master holds for its control requests.
pub struct Master {
    /// The connected minions.
    pub hub: Arc<Hub>,
    /// The master tree.
    pub master: PathBuf,
    /// Where runs are recorded.
    pub history: Option<Arc<History>>,
    /// Directord through this master.
    pub directord: Arc<Directord>,
}

impl Handler for Master {
    async fn handle(self: Arc<Self>, req: ControlRequest, mut conn: Connection) {
        match req {
            ControlRequest::ListNodes => {
                let _ = conn.send(&ControlReply::Nodes(self.hub.nodes())).await;
            }
            ControlRequest::Manage(m) => {
                let _ = conn.send(&self.directord.manage(m).await).await;
            }
            ControlRequest::Upload(u) => {
                let Connection { reader, writer } = &mut conn;
                if let Err(e) =
                    crate::directord::transfer::receive_upload(&self.master, u, reader, writer)
                        .await
                {
                    tracing::info!("upload: {e}");
                }
            }
            ControlRequest::Apply(req) => {
                let me = self.clone();
                stream(conn, move |tx| async move {
                    crate::fleet::apply::apply(
                        me.hub.clone(),
                        &me.master,
                        me.history.clone(),
                        req,
                        tx,
                    )
                    .await
                })
                .await;
            }
            ControlRequest::Directord(req) => {
                let directord = self.directord.clone();
                stream(conn, move |tx| async move { directord.run(req, tx).await }).await;
            }
        }
    }
}

/// Runs `work` on its own task, sending its progress to the client as it comes and its outcome
/// at the end; a client that went away does not stop the work.
async fn stream<F, Fut>(mut conn: Connection, work: F)
where
    F: FnOnce(mpsc::UnboundedSender<ControlReply>) -> Fut,
    Fut: Future<Output = ControlReply> + Send + 'static,
{
    let (tx, mut rx) = mpsc::unbounded_channel::<ControlReply>();
    let run = tokio::spawn(work(tx));
    let mut client_ok = true;
    while let Some(msg) = rx.recv().await {
        if client_ok && conn.send(&msg).await.is_err() {
            client_ok = false;
        }
    }
    let done = match run.await {
        Ok(done) => done,
        Err(e) => ControlReply::Error(format!("the master's task failed: {e}")),
    };
    if client_ok {
        let _ = conn.send(&done).await;
    }
}
