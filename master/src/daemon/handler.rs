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
    /// The history's location when it is not `MASTER/logs/history.db` (`serve --history`):
    /// the recap then names it in its `ingot history` command.
    pub history_elsewhere: Option<String>,
    /// Directord through this master.
    pub directord: Arc<Directord>,
}

impl Master {
    /// Makes a request's `ingot history` command name this master's history when it is not in
    /// the master tree.
    fn name_history(&self, command: &mut String) {
        if let Some(h) = &self.history_elsewhere {
            *command = format!("ingot history --history {}", shell_words::quote(h));
        }
    }
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
            ControlRequest::Apply(mut req) => {
                self.name_history(&mut req.history_command);
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
            ControlRequest::Directord(mut req) => {
                self.name_history(&mut req.history_command);
                let directord = self.directord.clone();
                if req.detach {
                    let _ = conn.send(&directord.detach(req).await).await;
                } else {
                    stream(conn, move |tx| async move { directord.run(req, tx).await }).await;
                }
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
