//! The master's local control socket (`MASTER/master.sock`, mode 0660): how `ingot apply
//! --targets`, `ingot master run`, `ingot exec|orchestrate --master` and `ingot manage` reach
//! the running master. Every request and reply is here; the client is [`request`], the
//! master's side [`listen`], which hands each request to the [`Handler`] it is given.
//!
//! Netstrings of JSON, one request per connection; the master streams progress lines, then the
//! outcome. An upload's content follows its request on the same connection as raw netstrings.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use historian::RunMeta;
use minion::directord::Job;
use minion::wire::FrameReader;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

use crate::routine::ApplyOptions;
use crate::server::NodeInfo;

/// The socket's file name in the master tree.
pub const SOCKET: &str = "master.sock";

/// What one apply asks, wherever it runs (`ingot apply`, with or without `--targets`; `ingot
/// master run`): every option means the same for the local minion and for a fleet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    /// Globs over connected minions' names (empty: the local minion tree).
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
    /// With `check`: exit 2 when changes are pending.
    pub detailed_exitcode: bool,
    /// Minions driven at once (0: all).
    pub concurrency: usize,
    /// Colour the recap (the client's stdout is a terminal and `NO_COLOR` is unset).
    pub color: bool,
    /// Do not record.
    pub no_history: bool,
    /// Who asked.
    pub user: String,
    /// Their command line.
    pub command: Vec<String>,
    /// The command that shows this request's run, as the recap prints it (`ingot history
    /// --master DIR`, with the master tree as the operator named it).
    #[serde(default = "default_history_command")]
    pub history_command: String,
}

fn default_history_command() -> String {
    "ingot history".into()
}

impl ApplyRequest {
    /// The routine's options.
    pub fn options(&self) -> ApplyOptions {
        ApplyOptions {
            check: self.check,
            max_rounds: self.max_rounds,
            fail_fast: self.fail_fast,
            actor_timeout: Duration::from_secs(self.actor_timeout),
        }
    }

    /// The history record of a run of this request on `targets`.
    pub fn run_meta(&self, targets: Vec<String>) -> RunMeta {
        RunMeta {
            command: self.command.clone(),
            user: self.user.clone(),
            targets,
        }
    }
}

/// What a local command asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlRequest {
    /// Every known minion.
    ListNodes,
    /// Run the routine on connected minions.
    Apply(ApplyRequest),
    /// Run Directord jobs (`ingot exec`/`ingot orchestrate --master`).
    Directord(DirectordRequest),
    /// `ingot manage --purge-nodes` / `--dump-cache` / the jobs in flight.
    Manage(ManageRequest),
    /// An ADD/COPY source for the master's store; the content follows.
    Upload(UploadRequest),
}

/// Who sent a request: recorded as its run's user and command line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// The operator.
    pub user: String,
    /// Their command line.
    pub command: Vec<String>,
}

impl Requester {
    /// This process's user and command line.
    pub fn current() -> Self {
        Self {
            user: historian::current_user(),
            command: std::env::args().collect(),
        }
    }
}

/// What `exec`/`orchestrate` ask the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectordRequest {
    /// The jobs, in order (ADD/COPY content is uploaded before).
    pub jobs: Vec<Job>,
    /// Print each minion's STDOUT/STDERR.
    #[serde(default)]
    pub stream: bool,
    /// Jobs of one queue on their way at once (`--pipeline`; 0 counts as 1).
    #[serde(default)]
    pub pipeline: usize,
    /// List the failed jobs at the end.
    #[serde(default)]
    pub check: bool,
    /// Directord's fire-and-forget: answer at once with the job ids (`Job received. Task ID:
    /// ID`, once the run is recorded and the jobs show PROCESSING in `ingot manage`) and run
    /// them after the client is gone.
    #[serde(default)]
    pub detach: bool,
    /// Who asked (recorded as the run's user and command line).
    #[serde(default)]
    pub origin: Requester,
    /// The command that shows the request's run, as its last line prints it.
    #[serde(default = "default_history_command")]
    pub history_command: String,
}

/// What `ingot manage` asks the running master (besides `--list-nodes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManageRequest {
    /// Forget the minions that are not connected.
    PurgeNodes,
    /// Every connected minion's Directord cache.
    DumpCache,
    /// The Directord jobs the master is running and has not stored yet (JSON: an array of
    /// `directord::recording::LiveJob`).
    JobsInFlight,
}

/// What `ingot exec|orchestrate --master` uploads: the file follows as raw netstrings of at
/// most `minion::agent::inbox::MAX_CHUNK` bytes, then an empty one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRequest {
    /// SHA3-224 of the content.
    pub sha3_224: String,
    /// Its size in bytes.
    pub size: u64,
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
    /// The request was bad input (exit 2): what was wrong and what to do.
    Usage(String),
    /// The request failed.
    Error(String),
}

/// The master's side of a connection: the request's reader (an upload's content follows it)
/// and the writer replies go to.
pub struct Connection {
    /// Frames after the request.
    pub reader: FrameReader<OwnedReadHalf>,
    /// Where replies go.
    pub writer: OwnedWriteHalf,
}

impl Connection {
    /// Sends one reply.
    pub async fn send(&mut self, r: &ControlReply) -> std::io::Result<()> {
        minion::wire::write(&mut self.writer, r).await
    }
}

/// The master's handling of control requests.
pub trait Handler: Send + Sync + 'static {
    /// Handles `req` on `conn` (replies, then the connection closes).
    fn handle(
        self: Arc<Self>,
        req: ControlRequest,
        conn: Connection,
    ) -> impl std::future::Future<Output = ()> + Send;
}

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another process holds the socket: a master is running on this tree.
    #[error("a master is already serving {0} (its control socket answers); stop it first, or serve another tree with --master DIR")]
    InUse(PathBuf),
    /// The socket could not be made or accepted on.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the control socket at `path` (mode 0660, owned by `group` when given). A socket
/// left by a master that is gone is replaced; one a live master answers on is not.
pub async fn bind(
    path: &Path,
    group: Option<nix::unistd::Gid>,
) -> Result<UnixListener, ListenError> {
    let io = |source| ListenError::Io {
        path: path.to_owned(),
        source,
    };
    if UnixStream::connect(path).await.is_ok() {
        return Err(ListenError::InUse(path.to_owned()));
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io)?;
    if let Some(gid) = group {
        nix::unistd::chown(path, None, Some(gid))
            .map_err(std::io::Error::from)
            .map_err(io)?;
    }
    Ok(listener)
}

/// Serves `listener` forever, each connection's request handed to `handler`.
pub async fn listen<H: Handler>(listener: UnixListener, handler: Arc<H>) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let handler = handler.clone();
        tokio::spawn(async move {
            let (r, writer) = stream.into_split();
            let mut reader = FrameReader::new(r);
            match reader.next::<ControlRequest>().await {
                Ok(Some(req)) => handler.handle(req, Connection { reader, writer }).await,
                Ok(None) => tracing::info!("control connection closed before a request"),
                Err(e) => {
                    tracing::info!("control connection: {e}");
                    let mut conn = Connection { reader, writer };
                    let _ = conn
                        .send(&ControlReply::Error(format!("not a control request: {e}")))
                        .await;
                }
            }
        });
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
    s.write_all(&minion::wire::encode(req))
        .await
        .map_err(|e| ControlError::Protocol(e.to_string()))?;
    let mut replies = FrameReader::new(s);
    loop {
        match replies.next::<ControlReply>().await {
            Ok(None) => return Ok(()),
            Ok(Some(r)) => on_reply(r),
            Err(e) => return Err(ControlError::Protocol(e.to_string())),
        }
    }
}

impl From<ControlError> for crate::exit::CommandError {
    /// Not reaching the master is "unavailable" (exit 3); a conversation that broke is a
    /// failure.
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Connect { .. } => Self::Unreachable(e.to_string()),
            ControlError::Protocol(_) => Self::Failed(e.to_string()),
        }
    }
}
