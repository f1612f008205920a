//! The master's local control socket (`MASTER/master.sock`, mode 0660): how `ingot apply
//! --targets`, `ingot master run`, `ingot exec|orchestrate --master` and `ingot manage
//! --list-nodes|--purge-nodes|--dump-cache` reach the running master; `ingot manage`'s job
//! commands ask it for the Directord jobs it has not stored yet.
//! Netstrings of JSON, one request per connection; the master streams progress lines, then the
//! outcome.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use historian::{History, RunMeta, RunStatus};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use super::journal::RunJournal;
use super::server::{Hub, NodeInfo};
use super::wire::{read_payload, MAX_FRAME};
use crate::actors::{Actors, MasterDir};
use crate::apply::{exit_code, result_document, Forget};
use crate::documents::Step;
use crate::record::HistoryObserver;
use crate::report::{progress_line, recap, Style};
use crate::routine::{
    converge, ApplyOptions, MinionReport, MinionStatus, Observer, StepReport, StepWatch,
};

/// The socket's file name in the master tree.
pub const SOCKET: &str = "master.sock";

/// A run of the routine against connected minions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRequest {
    /// Globs over minion names.
    pub targets: Vec<String>,
    /// Plan only.
    pub check: bool,
    /// Round cap.
    pub max_rounds: u32,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// Seconds per actor.
    pub actor_timeout: u64,
    /// One JSON document instead of progress and recap.
    pub json: bool,
    /// Exit 2 when changes are pending (check mode).
    pub detailed_exitcode: bool,
    /// Colour the output.
    pub color: bool,
    /// Who asked.
    pub user: String,
    /// Their command line.
    pub command: Vec<String>,
    /// Do not record.
    pub no_history: bool,
    /// Minions driven at once (0: all).
    #[serde(default)]
    pub concurrency: usize,
}

/// What a local command asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// Every known minion.
    ListNodes,
    /// Run the routine.
    Run(RunRequest),
    /// Run Directord jobs (`ingot exec`/`ingot orchestrate --master`).
    Directord(super::directord::DirectordRequest),
    /// `ingot manage --purge-nodes` / `--dump-cache`.
    Manage(super::manage::ManageRequest),
    /// An ADD/COPY source for the master's store; the content follows (see
    /// [`super::transfer::receive_upload`]).
    Upload(super::transfer::UploadRequest),
}

/// What the master answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlReply {
    /// The nodes.
    Nodes(Vec<NodeInfo>),
    /// A progress line (stderr).
    Progress(String),
    /// The end of a run: what to print on stdout and the exit code.
    Done {
        /// Recap or JSON document.
        stdout: String,
        /// Exit code.
        code: i32,
    },
    /// The request failed.
    Error(String),
}

/// Serves the control socket of `master` forever (mode 0660, owned by `group` when given).
pub async fn serve(
    path: PathBuf,
    group: Option<nix::unistd::Gid>,
    hub: Arc<Hub>,
    master: PathBuf,
    history: Option<Arc<History>>,
) -> std::io::Result<()> {
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(gid) = group {
        nix::unistd::chown(&path, None, Some(gid)).map_err(std::io::Error::from)?;
    }
    loop {
        let (stream, _) = listener.accept().await?;
        let hub = hub.clone();
        let master = master.clone();
        let history = history.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, hub, master, history).await {
                tracing::info!("control connection: {e}");
            }
        });
    }
}

async fn send(w: &mut (impl AsyncWriteExt + Unpin), r: &ControlReply) -> std::io::Result<()> {
    let payload = serde_json::to_vec(r).expect("replies serialize");
    w.write_all(&channel3::netstring::encode(&payload)).await?;
    w.flush().await
}

async fn handle(
    stream: UnixStream,
    hub: Arc<Hub>,
    master: PathBuf,
    history: Option<Arc<History>>,
) -> Result<(), String> {
    let (mut r, mut w) = stream.into_split();
    let payload = read_payload(&mut r, MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("closed before a request")?;
    let req: ControlRequest = serde_json::from_slice(&payload).map_err(|e| e.to_string())?;
    match req {
        ControlRequest::ListNodes => send(&mut w, &ControlReply::Nodes(hub.nodes()))
            .await
            .map_err(|e| e.to_string()),
        ControlRequest::Manage(m) => send(&mut w, &super::manage::serve(hub, m).await)
            .await
            .map_err(|e| e.to_string()),
        ControlRequest::Upload(u) => {
            super::transfer::receive_upload(&master, u, &mut r, &mut w).await
        }
        ControlRequest::Run(_) | ControlRequest::Directord(_) => {
            let (tx, mut rx) = mpsc::unbounded_channel::<ControlReply>();
            let run = match req {
                ControlRequest::Run(req) => {
                    tokio::spawn(run(hub, master, history, req, tx.clone()))
                }
                ControlRequest::Directord(req) => {
                    tokio::spawn(super::directord::run(hub, master, history, req, tx.clone()))
                }
                ControlRequest::ListNodes
                | ControlRequest::Manage(_)
                | ControlRequest::Upload(_) => {
                    unreachable!("handled above")
                }
            };
            drop(tx);
            // Progress goes out as it comes; a client that went away does not stop the run.
            let mut client_ok = true;
            while let Some(msg) = rx.recv().await {
                if client_ok && send(&mut w, &msg).await.is_err() {
                    client_ok = false;
                }
            }
            let done = run.await.map_err(|e| e.to_string())?;
            if client_ok {
                send(&mut w, &done).await.map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

struct Remote<'a> {
    style: Style,
    quiet: bool,
    inner: &'a dyn Observer,
    tx: mpsc::UnboundedSender<ControlReply>,
    journal: Option<&'a RunJournal>,
}

/// A recorded step whose request is journaled with it while it is performed.
struct JournaledStep<'a> {
    inner: Box<dyn StepWatch + 'a>,
    journal: &'a RunJournal,
    minion: String,
    no: i64,
}

impl StepWatch for JournaledStep<'_> {
    fn sink(&self) -> &dyn runner::EventSink {
        self.inner.sink()
    }
    fn step_no(&self) -> Option<i64> {
        Some(self.no)
    }
    fn finish(self: Box<Self>, report: &StepReport) {
        // The end is queued for the history first: results waiting for it are acknowledged
        // once it is committed.
        let (journal, minion, no) = (self.journal, self.minion, self.no);
        self.inner.finish(report);
        journal.end_step(&minion, no);
    }
}

impl Observer for Remote<'_> {
    fn sink(&self, minion: &str) -> Box<dyn runner::EventSink + '_> {
        self.inner.sink(minion)
    }
    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_> {
        let inner = self.inner.begin(minion, step);
        match (self.journal, inner.step_no()) {
            (Some(journal), Some(no)) => {
                journal.begin_step(minion, no, step);
                Box::new(JournaledStep {
                    inner,
                    journal,
                    minion: minion.to_owned(),
                    no,
                })
            }
            _ => inner,
        }
    }
    fn record(&self, minion: &str, step: &StepReport) {
        self.inner.record(minion, step);
    }
    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str) {
        if !self.quiet {
            let _ = self.tx.send(ControlReply::Progress(progress_line(
                &self.style,
                minion,
                what,
                resource,
                outcome,
            )));
        }
        self.inner.progress(minion, what, resource, outcome);
    }
}

fn run_status(reports: &[MinionReport]) -> RunStatus {
    if reports.iter().any(|r| r.status == MinionStatus::Failed) {
        RunStatus::Failed
    } else if reports.iter().any(|r| r.status == MinionStatus::Changed) {
        RunStatus::Changed
    } else {
        RunStatus::Ok
    }
}

/// Runs the routine against every session matching the request's targets, concurrently.
pub async fn run(
    hub: Arc<Hub>,
    master: PathBuf,
    history: Option<Arc<History>>,
    req: RunRequest,
    tx: mpsc::UnboundedSender<ControlReply>,
) -> ControlReply {
    let mut globs = globset::GlobSetBuilder::new();
    for t in &req.targets {
        match globset::Glob::new(t) {
            Ok(g) => {
                globs.add(g);
            }
            Err(e) => return ControlReply::Error(format!("target {t:?}: {e}")),
        }
    }
    let globs = match globs.build() {
        Ok(g) => g,
        Err(e) => return ControlReply::Error(e.to_string()),
    };
    let sessions = hub.matching(&globs);
    if sessions.is_empty() {
        return ControlReply::Error(format!(
            "no minion matches {}; connected: {}",
            req.targets.join(" "),
            match hub.connected_names() {
                n if n.is_empty() => "none (start `ingot minion serve` on them)".into(),
                n => n.join(", "),
            }
        ));
    }
    let names: Vec<String> = sessions.iter().map(|s| s.name().to_owned()).collect();
    let opts = ApplyOptions {
        check: req.check,
        max_rounds: req.max_rounds,
        fail_fast: req.fail_fast,
        actor_timeout: Duration::from_secs(req.actor_timeout),
    };
    // One prescribe run may serve many minions (a batch actor); one minion needs no batch.
    let actors = match names.len() {
        1 => Actors::new(MasterDir::new(&master)),
        _ => Actors::for_fleet(MasterDir::new(&master)),
    };
    let handle = match (&history, req.no_history) {
        (Some(h), false) => h
            .start_run(RunMeta {
                command: req.command.clone(),
                user: req.user.clone(),
                targets: names.clone(),
            })
            .inspect_err(|e| tracing::warn!("not recording this run: {e}"))
            .ok(),
        _ => None,
    };
    // Its requests are journaled, so the run survives a restart of the master.
    let journal = match (&handle, &history, hub.journal()) {
        (Some(h), Some(history), Some(j)) => RunJournal::start(j.clone(), history.clone(), h.id())
            .await
            .inspect_err(|e| tracing::warn!("not journaling this run's requests: {e}"))
            .ok(),
        _ => None,
    };
    let links: Vec<_> = sessions
        .into_iter()
        .map(|s| hub.link(s).journaled(journal.clone()))
        .collect();
    let recorder: Box<dyn Observer + Send + Sync> = match &handle {
        Some(h) => Box::new(HistoryObserver::new(h)),
        None => Box::new(Forget),
    };
    let observer = Remote {
        style: Style::new(req.color),
        quiet: req.json,
        inner: &*recorder,
        tx,
        journal: journal.as_deref(),
    };
    let limit = match req.concurrency {
        0 => links.len().max(1),
        n => n,
    };
    let permits = tokio::sync::Semaphore::new(limit);
    let (permits, actors, opts, observer) = (&permits, &actors, &opts, &observer);
    let reports: Vec<MinionReport> = futures::future::join_all(links.iter().map(|l| async move {
        let _permit = permits.acquire().await;
        converge(actors, l, opts, observer).await
    }))
    .await;
    if let Some(h) = &handle {
        h.finish(run_status(&reports));
    }
    if let Some(h) = &history {
        if let Err(e) = h.flush() {
            tracing::warn!("the history of this run may be incomplete: {e}");
        }
    }
    if let Some(j) = &journal {
        j.finish();
    }
    let run_id = handle.as_ref().map(|h| h.id().to_owned());
    let stdout = if req.json {
        let doc = result_document(&reports, req.check, run_id.as_deref());
        format!(
            "{}\n",
            serde_json::to_string_pretty(&doc).expect("reports serialize")
        )
    } else {
        let mut s = recap(&reports, req.check, &Style::new(req.color));
        if let Some(id) = &run_id {
            s.push_str(&format!("history: ingot history show {id}\n"));
        }
        s
    };
    ControlReply::Done {
        stdout,
        code: exit_code(&reports, req.detailed_exitcode),
    }
}

/// Why a local command could not talk to the master.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No master listening.
    #[error("cannot reach the master at {path}: {source}; is `ingot master serve --master DIR` running (and may you use its socket)?")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The conversation failed.
    #[error("talking to the master: {0}")]
    Protocol(String),
}

/// Sends `req` to the master of `master_dir` and hands every reply to `on_reply` until the
/// master closes the connection.
pub async fn request(
    master_dir: &Path,
    req: &ControlRequest,
    mut on_reply: impl FnMut(ControlReply),
) -> Result<(), ControlError> {
    let path = master_dir.join(SOCKET);
    let mut s = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.clone(),
            source,
        })?;
    let payload = serde_json::to_vec(req).expect("requests serialize");
    s.write_all(&channel3::netstring::encode(&payload))
        .await
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
    loop {
        match read_payload(&mut s, MAX_FRAME).await {
            Ok(None) => return Ok(()),
            Ok(Some(p)) => on_reply(
                serde_json::from_slice(&p).map_err(|e| ControlError::Protocol(e.to_string()))?,
            ),
            Err(e) => return Err(ControlError::Protocol(e.to_string())),
        }
    }
}
