//! The minion agent: connects out to the master, runs its requests through the minion's
//! dispatch (the same code `ingot facts` / `ingot resource` run), streams events and results
//! back, and spools them to disk so that nothing is lost while the master is unreachable.
//!
//! Spool: `MINION/logs/spool/slot-N.jsonl`, one request's frames per file, one per line
//! (events then the result, numbered, each naming the request id) after a fixed-width first
//! line `{"spooled":ID}`. A slot is taken when a request arrives and freed when the master
//! acknowledges the result by overwriting that line with `{"spooled":null}`, then reused,
//! written over from the start. Neither step frees disk blocks: creating and unlinking a file
//! per request made ext4's inode allocator the largest cost of a short job, and truncating
//! waits for the disk where the filesystem discards freed blocks. So a slot may end with
//! lines of an earlier request; every reader keeps only the frames naming the slot's request.
//! After a reconnect every held slot is sent again in full; the master skips what it already
//! has by sequence number. A request is never run twice: requests are not re-sent, and a
//! request interrupted by the agent's own restart is reported as interrupted, not re-run.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use crate::directord::Engine;
use crate::wire::tls::MASTER_SERVER_NAME;
use crate::wire::{Frame, FrameReader, Op, Reply, WireError, PROTOCOL};
use crate::Minion;
use spool::{is_result, send_lines, slot_frames, Outbox, OutboxSink, Spool, Wire};

pub mod command;
pub mod enroll;
mod host;
pub mod inbox;
mod requests;
mod spool;

pub use host::machine_id;

/// How the agent runs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The minion tree.
    pub minion: PathBuf,
    /// `HOST:PORT` of the master.
    pub master: String,
    /// This machine's id (default: `/etc/machine-id`).
    pub machine_id: String,
    /// The longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// Let the kernel drop the code start-up needed, and again once welcomed the code the
    /// connection needed (see [`trim_resident_code`]): for an agent alone in its process,
    /// not a swarm.
    pub trim_code: bool,
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// TLS material is missing or bad.
    #[error(transparent)]
    Tls(#[from] crate::wire::tls::TlsError),
    /// The spool directory cannot be used.
    #[error("spool {path}: {source} (check that the minion tree exists and is writable)")]
    Spool {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Writes `data` to `path` durably and atomically (a temporary file renamed over it), with
/// `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)
}

/// The agent's state across connections.
pub struct Agent {
    minion: Minion,
    spool: Mutex<Spool>,
    active: Mutex<HashMap<String, Arc<Mutex<Outbox>>>>,
    current: Mutex<Option<Wire>>,
    opts: AgentOptions,
    started: i64,
    /// The name the master welcomed us under (the engine's name).
    name: Mutex<Option<String>>,
    /// The Directord job engine, created at the first job and kept for the agent's life.
    engine: Mutex<Option<Engine>>,
    /// Questions sent to the master (`ask` frames) awaiting their `answer`, by id.
    asks: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    next_ask: AtomicU64,
}

fn jitter(d: Duration) -> Duration {
    // 0.5 .. 1.5 × d, from a random u16.
    let r = (uuid::Uuid::new_v4().as_u128() & 0xffff) as f64 / 65536.0;
    d.mul_f64(0.5 + r)
}

impl Agent {
    /// An agent for the minion tree in `opts`; finishes spool files left by a previous run.
    pub fn new(opts: AgentOptions) -> Result<Arc<Self>, AgentError> {
        let dir = opts.minion.join("logs").join("spool");
        let spool =
            Spool::open(dir.clone()).map_err(|source| AgentError::Spool { path: dir, source })?;
        let agent = Arc::new(Self {
            minion: Minion::new(&opts.minion),
            spool: Mutex::new(spool),
            active: Mutex::new(HashMap::new()),
            current: Mutex::new(None),
            opts,
            started: now_secs(),
            name: Mutex::new(None),
            engine: Mutex::new(None),
            asks: Mutex::new(HashMap::new()),
            next_ask: AtomicU64::new(1),
        });
        agent.close_interrupted();
        Ok(agent)
    }

    /// Spool files without a result: the agent stopped while they ran. They get a result that
    /// says so (they are not run again).
    fn close_interrupted(&self) {
        for (_, path) in self.spooled() {
            let Some((id, frames)) = slot_frames(&path) else {
                continue;
            };
            if frames.iter().any(|l| is_result(l)) {
                continue;
            }
            let seq = frames.len() as u64 + 1;
            let f = Frame::Result {
                id: id.clone(),
                seq,
                reply: Reply::Err(WireError::Unreachable {
                    message:
                        "interrupted: the minion agent stopped while this ran; it was not run again"
                            .into(),
                }),
            };
            if let Ok(mut file) = std::fs::OpenOptions::new().append(true).open(&path) {
                // On a line of its own even after a torn last line.
                let mut line = vec![b'\n'];
                line.extend(f.payload());
                line.push(b'\n');
                let _ = file.write_all(&line);
            }
            tracing::warn!(%id, "request interrupted by an agent restart; reporting it as such");
        }
    }

    /// Every request this agent holds: running, or with frames spooled.
    fn held_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.active).keys().cloned().collect();
        ids.extend(lock(&self.spool).held.keys().cloned());
        ids.sort();
        ids.dedup();
        ids
    }

    fn spooled(&self) -> Vec<(String, PathBuf)> {
        lock(&self.spool).held()
    }

    /// Connects and serves forever, reconnecting with exponential backoff and jitter.
    pub async fn run(self: Arc<Self>) -> Result<(), AgentError> {
        // Fail early on missing material; reloaded at every attempt (renewals).
        crate::wire::tls::client_config(&self.opts.minion.join("certs"))?;
        if self.opts.trim_code {
            host::trim_resident_code();
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let connector = match crate::wire::tls::client_config(&self.opts.minion.join("certs")) {
                Ok(tls) => tokio_rustls::TlsConnector::from(tls),
                Err(e) => {
                    tracing::error!("{e}");
                    tokio::time::sleep(self.opts.max_backoff).await;
                    continue;
                }
            };
            match self.clone().session(&connector).await {
                Ok(()) => backoff = Duration::from_millis(250),
                Err(e) => tracing::warn!(master = %self.opts.master, "{e}"),
            }
            let wait = jitter(backoff);
            tracing::info!("reconnecting in {:.1}s", wait.as_secs_f64());
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.opts.max_backoff);
        }
    }

    /// One connection: `Ok` when it was welcomed (and later ended), `Err` when it never was.
    async fn session(
        self: Arc<Self>,
        connector: &tokio_rustls::TlsConnector,
    ) -> Result<(), String> {
        let tcp = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(&self.opts.master),
        )
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("connecting: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let server =
            rustls::pki_types::ServerName::try_from(MASTER_SERVER_NAME).expect("a valid DNS name");
        let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(server, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        let (read_half, mut write_half) = tokio::io::split(tls);
        let mut reader = FrameReader::new(read_half);
        crate::wire::write(
            &mut write_half,
            &Frame::Hello {
                protocol: PROTOCOL,
                version: env!("CARGO_PKG_VERSION").into(),
                machine_id: self.opts.machine_id.clone(),
                started: self.started,
                public_key: self.public_key(),
                held: self.held_ids(),
            },
        )
        .await
        .map_err(|e| format!("sending hello: {e}"))?;
        let first = tokio::time::timeout(Duration::from_secs(10), reader.next::<Frame>())
            .await
            .map_err(|_| "no answer to hello".to_string())?
            .map_err(|e| format!("the master refused the certificate or the connection: {e}"))?;
        let heartbeat = match first {
            Some(Frame::Welcome { name, heartbeat }) => {
                tracing::info!(%name, master = %self.opts.master, "connected");
                *lock(&self.name) = Some(name);
                Duration::from_secs(heartbeat.max(1))
            }
            Some(Frame::Refused { reason }) => return Err(format!("refused: {reason}")),
            None => return Err("the master closed the connection (certificate refused?)".into()),
            Some(other) => return Err(format!("unexpected first frame {other:?}")),
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let writer = tokio::spawn(async move {
            while let Some(mut buf) = rx.recv().await {
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(b) => buf.extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                if write_half.write_all(&buf).await.is_err() || write_half.flush().await.is_err() {
                    break;
                }
            }
        });
        *lock(&self.current) = Some(tx.clone());
        self.replay(&tx);
        if self.opts.trim_code {
            // The handshake's code (certificate parsing, signature checks) is not needed
            // until the next connection.
            host::trim_resident_code();
        }
        let end = loop {
            match tokio::time::timeout(heartbeat * 3, reader.next::<Frame>()).await {
                Err(_) => {
                    break format!("no word from the master for {}s", (heartbeat * 3).as_secs())
                }
                Ok(Err(e)) => break e.to_string(),
                Ok(Ok(None)) => break "closed by the master".into(),
                Ok(Ok(Some(f))) => match f {
                    Frame::Request { id, op } => self.start(id, op),
                    Frame::Ack { id } => {
                        lock(&self.spool).release(&id);
                    }
                    Frame::Renewed { cert } => {
                        let path = self.opts.minion.join("certs/minion.crt");
                        match write_file(&path, cert.as_bytes(), 0o644) {
                            Ok(()) => tracing::info!("certificate renewed: {}", path.display()),
                            Err(e) => tracing::error!("storing the renewed certificate: {e}"),
                        }
                    }
                    Frame::Ping { n } => {
                        let _ = tx.send(Frame::Pong { n }.encode());
                    }
                    Frame::Answer { id, reply } => match lock(&self.asks).remove(&id) {
                        Some(waiting) => {
                            let _ = waiting.send(reply);
                        }
                        None => tracing::warn!(%id, "an answer to no question of ours"),
                    },
                    other => tracing::warn!("unexpected frame {other:?}"),
                },
            }
        };
        {
            let mut cur = lock(&self.current);
            if cur.as_ref().is_some_and(|c| c.same_channel(&tx)) {
                *cur = None;
            }
        }
        drop(tx);
        writer.abort();
        // Their answers would come on this connection: the askers learn it is gone.
        lock(&self.asks).clear();
        tracing::warn!(master = %self.opts.master, "disconnected: {end}");
        Ok(())
    }

    fn public_key(&self) -> Option<String> {
        crate::wire::tls::public_key_hex(&self.opts.minion.join("certs/minion.key"))
    }

    /// Sends every spool file again, and attaches running requests to the new connection.
    fn replay(&self, tx: &Wire) {
        for (id, path) in self.spooled() {
            let outbox = lock(&self.active).get(&id).cloned();
            match outbox {
                Some(o) => {
                    let mut o = lock(&o);
                    send_lines(&path, tx);
                    o.live = Some(tx.clone());
                }
                None => send_lines(&path, tx),
            }
        }
    }

    fn start(self: &Arc<Self>, id: String, op: Op) {
        if lock(&self.active).contains_key(&id)
            || lock(&self.spool).held.contains_key(&id)
            || !valid_id(&id)
        {
            tracing::warn!(%id, "duplicate or invalid request id: not run again");
            return;
        }
        let (path, file) = match lock(&self.spool).take(&id) {
            Ok((p, f)) => (p, Some(f)),
            Err(e) => {
                tracing::error!(spool = %self.opts.minion.display(), "cannot spool: {e}");
                (PathBuf::new(), None)
            }
        };
        let outbox = Arc::new(Mutex::new(Outbox {
            file,
            path,
            seq: 0,
            live: lock(&self.current).clone(),
        }));
        lock(&self.active).insert(id.clone(), outbox.clone());
        // A job is queued now, in the order its frame arrived (per-parent queue order).
        let queued = match &op {
            Op::Job { job } => Some(self.submit_job(job)),
            _ => None,
        };
        let agent = self.clone();
        tokio::spawn(async move {
            tracing::debug!(%id, op = %op.label(), "request");
            let sink = OutboxSink(outbox.clone(), id.clone());
            let reply = match queued {
                Some(Ok(rx)) => match rx.await {
                    Ok(r) => Reply::Ok(serde_json::to_value(r).expect("results serialize")),
                    Err(_) => Reply::Err(WireError::Unreachable {
                        message: "the job engine stopped before the job ended".into(),
                    }),
                },
                Some(Err(message)) => Reply::Err(WireError::Unreachable { message }),
                None => agent.dispatch(&op, &sink).await,
            };
            lock(&outbox).push(|seq| Frame::Result {
                id: id.clone(),
                seq,
                reply,
            });
            lock(&agent.active).remove(&id);
        });
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
