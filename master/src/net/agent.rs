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
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use minion::directord::cache::{Cache, JobState};
use minion::directord::engine::{BoxFuture, FileSource, JobWait, JobWaitCoordinator};
use minion::directord::{Engine, Job, JobResult};
use minion::dispatch::DispatchError;
use minion::Minion;
use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use super::pki::MASTER_SERVER_NAME;
use super::wire::{read_frame, write_frame, Ask, Frame, Op, Reply, WireError, PROTOCOL};

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
    Tls(#[from] super::tls::TlsError),
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

/// Lets the kernel drop this process's mappings of the executable's code and map back only
/// the pages it runs. The `ingot` binary carries the master, the historian and every built-in;
/// an agent idles in a small part of it, but start-up and fault-around (16 pages mapped per
/// fault) leave megabytes of unrelated code resident. Only read-and-execute mappings of the
/// executable itself are touched: they are never written, so nothing is lost (the pages stay
/// in the page cache and fault back in as needed). Best effort; Linux only.
fn trim_resident_code() {
    let Ok(exe) = std::fs::read_link("/proc/self/exe") else {
        return;
    };
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or_default();
        if perms != "r-xp" || std::path::Path::new(path) != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        // SAFETY: the range is an r-xp mapping of our executable (read from /proc/self/maps):
        // MADV_DONTNEED on a never-written private file mapping only unmaps pages that fault
        // back in unchanged. MADV_RANDOM is a hint: kernels that honour it for fault-around
        // map one page per fault; 6.18 does not (measured: one byte touched per MiB of a
        // cached file maps 64 KiB per touch with or without it).
        unsafe {
            let addr = start as *mut libc::c_void;
            libc::madvise(addr, end - start, libc::MADV_RANDOM);
            libc::madvise(addr, end - start, libc::MADV_DONTNEED);
        }
    }
}

/// `/etc/machine-id`, else `/var/lib/dbus/machine-id`, else the host name.
pub fn machine_id() -> String {
    for p in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Ok(s) = std::fs::read_to_string(p) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_owned();
            }
        }
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

type Wire = mpsc::UnboundedSender<Vec<u8>>;

struct Outbox {
    file: Option<std::fs::File>,
    path: PathBuf,
    seq: u64,
    live: Option<Wire>,
}

impl Outbox {
    fn push(&mut self, make: impl FnOnce(u64) -> Frame) {
        self.seq += 1;
        let frame = make(self.seq);
        let payload = frame.payload();
        if let Some(f) = self.file.as_mut() {
            let mut line = payload.clone();
            line.push(b'\n');
            if let Err(e) = f.write_all(&line) {
                tracing::error!(path = %self.path.display(), "spooling: {e}");
            }
        }
        if let Some(w) = &self.live {
            if w.send(channel3::netstring::encode(&payload)).is_err() {
                self.live = None;
            }
        }
    }
}

struct OutboxSink(Arc<Mutex<Outbox>>, String);

impl runner::EventSink for OutboxSink {
    fn emit(&self, ev: channel3::Event) {
        let id = self.1.clone();
        lock(&self.0).push(|seq| Frame::Event {
            id,
            seq,
            ts: ev.ts.0,
            name: ev.message.name,
            key: ev.message.key,
            data: ev.message.data,
        });
    }
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
            let failed: Vec<String> = answer["failed"]
                .as_object()
                .map(|m| {
                    m.values()
                        .map(|w| w.as_str().unwrap_or_default().to_owned())
                        .collect()
                })
                .unwrap_or_default();
            if !failed.is_empty() {
                return Err(failed.join("; "));
            }
            let acked: Vec<&str> = answer["acked"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            Ok(format!(
                "job {} completed on {}",
                wait.sha,
                acked.join(", ")
            ))
        })
    }
}

/// ADD/COPY sources as the agent received them: `CACHE/transfer/<sha3-224>` (see
/// [`super::transfer`]).
struct ReceivedFiles(PathBuf);

impl FileSource for ReceivedFiles {
    fn fetch<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<PathBuf, String>> {
        Box::pin(async move {
            let sha = job
                .str("file_sha3_224")
                .filter(|s| super::transfer::valid_sha(s))
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

/// The spool directory's slots: which request holds which file, and which are free.
struct Spool {
    dir: PathBuf,
    held: HashMap<String, PathBuf>,
    free: Vec<PathBuf>,
    next: u64,
}

impl Spool {
    /// Reads the slots left by an earlier run: empty ones are free, the others are held by
    /// the request their first frame names.
    fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let mut spool = Self {
            dir,
            held: HashMap::new(),
            free: Vec::new(),
            next: 0,
        };
        for e in std::fs::read_dir(&spool.dir)?.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".jsonl") {
                continue;
            }
            if let Some(n) = name
                .strip_prefix("slot-")
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                spool.next = spool.next.max(n + 1);
            }
            match slot_frames(&path) {
                Some((id, _)) => {
                    spool.held.insert(id, path);
                }
                None => spool.free.push(path),
            }
        }
        Ok(spool)
    }

    /// A slot for request `id`, named by its first line and open for writing after it.
    fn take(&mut self, id: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let path = match self.free.pop() {
            Some(p) => p,
            None => {
                self.next += 1;
                self.dir.join(format!("slot-{}.jsonl", self.next - 1))
            }
        };
        // Not truncated (see the module documentation): what follows is written over.
        #[allow(clippy::suspicious_open_options)]
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .open(&path);
        // The first line names the request, so a slot whose request never got to print
        // anything is still reported interrupted after a crash.
        let file = file.and_then(|mut f| {
            f.write_all(&slot_header(Some(id)))?;
            Ok(f)
        });
        match file {
            Ok(f) => {
                self.held.insert(id.to_owned(), path.clone());
                Ok((path, f))
            }
            Err(e) => {
                self.free.push(path);
                Err(e)
            }
        }
    }

    /// The master has the result of `id`: its slot is marked free and reused.
    fn release(&mut self, id: &str) {
        if let Some(path) = self.held.remove(id) {
            let freed = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(&slot_header(None)));
            match freed {
                Ok(()) => self.free.push(path),
                Err(e) => tracing::warn!(path = %path.display(), "emptying a spool slot: {e}"),
            }
        }
    }

    /// Held slots, by request id.
    fn held(&self) -> Vec<(String, PathBuf)> {
        let mut out: Vec<(String, PathBuf)> = self
            .held
            .iter()
            .map(|(i, p)| (i.clone(), p.clone()))
            .collect();
        out.sort();
        out
    }
}

/// The width of a slot's first line, so that freeing a slot rewrites it in place: a
/// `{"spooled":ID}` with the longest valid id fits.
const SLOT_HEADER_LEN: usize = 160;

/// A slot's first line: the request holding it, or `None` for a free slot.
fn slot_header(id: Option<&str>) -> Vec<u8> {
    let mut line = json!({ "spooled": id }).to_string().into_bytes();
    line.resize(line.len().max(SLOT_HEADER_LEN - 1), b' ');
    line.push(b'\n');
    line
}

/// The request holding a slot and its frames (in the order written), or `None` for a free
/// slot. Lines left from an earlier request, or torn by a crash, are not its frames.
fn slot_frames(path: &Path) -> Option<(String, Vec<String>)> {
    let mut lines = read_lines(path).into_iter();
    let first = lines.next()?;
    let id = frame_id(&first)?;
    let mine = |l: &String| {
        serde_json::from_str::<Frame>(l).is_ok_and(|f| match f {
            Frame::Event { id: i, .. } | Frame::Result { id: i, .. } => i == id,
            _ => false,
        })
    };
    let frames = std::iter::once(first)
        .chain(lines)
        .filter(|l| mine(l))
        .collect();
    Some((id, frames))
}

/// The request id a spool slot's first line names.
fn frame_id(line: &str) -> Option<String> {
    if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(line) {
        if let Some(Value::String(id)) = m.get("spooled") {
            return Some(id.clone());
        }
    }
    match serde_json::from_str::<Frame>(line).ok()? {
        Frame::Event { id, .. } | Frame::Result { id, .. } => Some(id),
        _ => None,
    }
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
            started: super::pki::now_secs(),
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
        super::tls::client_config(&self.opts.minion.join("certs"))?;
        if self.opts.trim_code {
            trim_resident_code();
        }
        let mut backoff = Duration::from_millis(250);
        loop {
            let connector = match super::tls::client_config(&self.opts.minion.join("certs")) {
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
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(server, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        write_frame(
            &mut tls,
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
        let first = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut tls))
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
        let (read_half, mut write_half) = tokio::io::split(tls);
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
            trim_resident_code();
        }
        let mut reader = BufReader::new(read_half);
        let end = loop {
            match tokio::time::timeout(heartbeat * 3, read_frame(&mut reader)).await {
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
                        match super::pki::write_file(&path, cert.as_bytes(), 0o644) {
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
        let pem = std::fs::read_to_string(self.opts.minion.join("certs/minion.key")).ok()?;
        let key = rcgen::KeyPair::from_pem(&pem).ok()?;
        (key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256)
            .then(|| super::pki::RawPublicKey(key.public_key_raw().to_vec()).to_hex())
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
            Ok(Reply::Err(e)) => Err(crate::link::LinkError::from(e).to_string()),
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
    fn submit_job(
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
            Op::Transfer(t) => super::transfer::Inbox::new(dir).step(t).map(|v| (v, None)),
            Op::Install { kind, sha3_224 } => {
                super::transfer::install(&minion, &dir, &kind, &sha3_224).map(|i| {
                    let replaced = (i == super::transfer::Installed::Installed).then_some(kind);
                    (json!({"state": i.as_str()}), replaced)
                })
            }
            _ => Err("not a transfer".into()),
        })
        .await
        .map_err(|e| format!("the transfer task failed: {e}"))??;
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

    async fn dispatch(&self, op: &Op, sink: &dyn runner::EventSink) -> Reply {
        match op {
            Op::Facts => match self.minion.facts(sink).await {
                Ok(r) => Reply::Ok(json!({
                    "document": Value::Object(r.document),
                    "failures": r.failures.iter().map(|p| json!([p.name, p.reason])).collect::<Vec<_>>(),
                })),
                Err(e) => Reply::Err(WireError::Unreachable {
                    message: e.to_string(),
                }),
            },
            Op::Describe { kind } => match self.minion.describe(kind, sink).await {
                Ok(d) => Reply::Ok(json!({
                    "doc": d.doc,
                    "identity": d.identity(),
                    "batch": d.batch(),
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
                        match minion::directord::engine::job_end(&cache, sha3_224, limit).await {
                            Some(JobState::Success) => json!("success"),
                            Some(JobState::Failed) => json!("failed"),
                            Some(JobState::Processing) | None => Value::Null,
                        };
                    Reply::Ok(json!({ "state": state }))
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

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn is_result(line: &str) -> bool {
    serde_json::from_str::<Frame>(line)
        .map(|f| matches!(f, Frame::Result { .. }))
        .unwrap_or(false)
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::File::open(path)
        .map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn send_lines(path: &Path, tx: &Wire) {
    for line in slot_frames(path).map(|(_, f)| f).unwrap_or_default() {
        let _ = tx.send(channel3::netstring::encode(line.as_bytes()));
    }
}

/// A dispatch failure as it travels back to the master.
fn wire_error(e: DispatchError) -> WireError {
    crate::link::LinkError::from(e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, seq: u64, line: &str) -> Vec<u8> {
        let mut b = Frame::Event {
            id: id.into(),
            seq,
            ts: 1,
            name: Some("run".into()),
            key: "stdout".into(),
            data: serde_json::value::to_raw_value(&json!({ "line": line })).unwrap(),
        }
        .payload();
        b.push(b'\n');
        b
    }

    #[test]
    fn a_reused_slot_holds_only_its_own_requests_frames() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path().join("spool")).unwrap();
        let (path, mut f) = spool.take("first").unwrap();
        for seq in 1..=3 {
            f.write_all(&event("first", seq, &"long output ".repeat(20)))
                .unwrap();
        }
        drop(f);
        spool.release("first");
        assert!(slot_frames(&path).is_none(), "a released slot is free");
        assert!(Spool::open(dir.path().join("spool"))
            .unwrap()
            .held
            .is_empty());

        // Reused: written over from the start, shorter than what was there.
        let (again, mut f) = spool.take("second").unwrap();
        assert_eq!(again, path, "the free slot is reused");
        f.write_all(&event("second", 1, "short")).unwrap();
        drop(f);
        let (id, frames) = slot_frames(&path).unwrap();
        assert_eq!(id, "second");
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(frames[0].contains("short"));
        let reopened = Spool::open(dir.path().join("spool")).unwrap();
        assert_eq!(reopened.held.get("second"), Some(&path));
    }
}
