//! Content for Directord jobs through the master: ADD/COPY sources and user components.
//!
//! ```text
//! operator CLI ──Upload (control socket, raw 1 MiB netstrings)──▶ MASTER/transfer/<sha>
//! master ──Transfer Begin/Chunk…/End (1 MiB, each with its SHA3-224)──▶ CACHE/transfer/<sha>
//! master ──Install {kind, sha}──▶ MINION/resources/<kind> (0755, by rename)
//! ```
//!
//! Content is addressed by its SHA3-224 everywhere, so what a side holds is never sent to it
//! again. The operator's `ingot exec|orchestrate --master` uploads each ADD/COPY source to
//! the master's store `MASTER/transfer/` (0700) unless the master holds it (the master never
//! reads a path an operator names: a control-socket user could otherwise ship the master's
//! own secrets). Before a job goes to a minion the master makes sure the minion holds what
//! the job needs ([`Shipper::prepare`]): `Begin` answers whether the minion has
//! `CACHE/transfer/<sha>`; if not, chunks follow (at most [`WINDOW`] in flight per minion and
//! [`CHUNKS_IN_FLIGHT`] in all, read from disk as they go) and `End`, after which the agent
//! has checked every chunk and the whole content and renamed `.<sha>.part` into place. A
//! mismatch fails the job with Directord's "Data integrity failure". A job whose verb
//! resolves to an executable in `MASTER/resources/` first gets that executable installed
//! on the minion (by content hash, so a changed file is installed again), and the agent
//! forgets what it had cached about the kind. Built-ins are never replaced.
//!
//! The store's entries unused for [`KEEP`] are removed at the next upload.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{
    DirBuilderExt as _, FileExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use futures::StreamExt as _;
use minion::directord::job::{file_sha3, sha3_hex};
use minion::directord::Job;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha3::{Digest as _, Sha3_224};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::control::{ControlReply, ControlRequest, SOCKET};
use super::server::Hub;
use super::wire::{read_payload, Op, TransferOp, MAX_FRAME};

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// The largest chunk a receiver accepts.
pub const MAX_CHUNK: usize = 4 << 20;

/// Chunks on their way to one minion at once.
pub const WINDOW: usize = 4;

/// Chunks on their way to all minions at once (bounds the master's memory).
pub const CHUNKS_IN_FLIGHT: usize = 16;

/// How long a store keeps content nobody used: the master's `MASTER/transfer/` and each
/// minion's `CACHE/transfer/` (using content, or asking whether it is held, renews it).
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

static CHUNK_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CHUNKS_IN_FLIGHT);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A SHA3-224 in hex: 56 lower-case hex digits (it names files, so nothing else passes).
pub fn valid_sha(s: &str) -> bool {
    s.len() == 56
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn checked_sha(s: &str) -> Result<&str, String> {
    if valid_sha(s) {
        Ok(s)
    } else {
        Err(format!(
            "{s:?} is not a SHA3-224 (56 lower-case hex digits)"
        ))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

fn tmp_name(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(".{what}.{}.tmp", uuid::Uuid::new_v4().simple()))
}

// ---------------------------------------------------------------------------------------------
// The master's store: MASTER/transfer/<sha>.

/// `MASTER/transfer`, created 0700.
pub fn store(master: &Path) -> Result<PathBuf, String> {
    let dir = master.join("transfer");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Copies `src` into the store (unless it holds that content) and returns its SHA3-224.
pub fn stage(master: &Path, src: &Path) -> Result<String, String> {
    let dir = store(master)?;
    let sha = file_sha3(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    let dst = dir.join(&sha);
    if dst.is_file() {
        touch(&dst);
        return Ok(sha);
    }
    let tmp = tmp_name(&dir, &sha);
    let copied = std::fs::copy(src, &tmp)
        .map_err(|e| format!("copying {} into {}: {e}", src.display(), dir.display()))
        .and_then(|_| {
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            match file_sha3(&tmp) {
                Ok(h) if h == sha => Ok(()),
                Ok(_) => Err(format!(
                    "{} changed while it was read; run the command again",
                    src.display()
                )),
                Err(e) => Err(e.to_string()),
            }
        })
        .and_then(|()| std::fs::rename(&tmp, &dst).map_err(|e| e.to_string()));
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(sha)
}

/// Removes the store's entries (and abandoned temporary files) older than `keep`.
pub fn prune(dir: &Path, keep: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > keep);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// What `ingot exec|orchestrate --master` uploads: the file follows as raw netstrings of at
/// most [`MAX_CHUNK`] bytes, then an empty one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRequest {
    /// SHA3-224 of the content.
    pub sha3_224: String,
    /// Its size in bytes.
    pub size: u64,
}

async fn reply(w: &mut (impl AsyncWrite + Unpin), r: &ControlReply) -> Result<(), String> {
    let payload = serde_json::to_vec(r).expect("replies serialize");
    w.write_all(&channel3::netstring::encode(&payload))
        .await
        .map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// The master's side of an upload: answers `Done` ("have") when the store holds the content,
/// else `Progress` ("send"), reads the chunks into a temporary file while hashing, and answers
/// `Done` ("stored") or `Error` (Data integrity failure).
pub async fn receive_upload(
    master: &Path,
    req: UploadRequest,
    r: &mut (impl AsyncRead + Unpin),
    w: &mut (impl AsyncWrite + Unpin),
) -> Result<(), String> {
    let outcome = async {
        let sha = checked_sha(&req.sha3_224)?.to_owned();
        let dir = store(master)?;
        let dst = dir.join(&sha);
        if dst.is_file() {
            touch(&dst);
            return Ok(false);
        }
        reply(w, &ControlReply::Progress("send\n".into())).await?;
        let tmp = tmp_name(&dir, &sha);
        let got = receive_into(&tmp, &req, r).await;
        let got = got.and_then(|()| {
            std::fs::rename(&tmp, &dst).map_err(|e| format!("storing {}: {e}", dst.display()))
        });
        if got.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        got?;
        prune(&dir, KEEP);
        tracing::info!(sha = %sha, bytes = req.size, "content uploaded to the master");
        Ok::<bool, String>(true)
    }
    .await;
    match outcome {
        Ok(stored) => {
            let stdout = if stored { "stored" } else { "have" };
            reply(
                w,
                &ControlReply::Done {
                    stdout: stdout.into(),
                    code: 0,
                },
            )
            .await
        }
        Err(e) => reply(w, &ControlReply::Error(e)).await,
    }
}

async fn receive_into(
    tmp: &Path,
    req: &UploadRequest,
    r: &mut (impl AsyncRead + Unpin),
) -> Result<(), String> {
    let mut file = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let mut hasher = Sha3_224::new();
    let mut total: u64 = 0;
    loop {
        let chunk = read_payload(r, MAX_CHUNK)
            .await
            .map_err(|e| format!("receiving the content: {e}"))?
            .ok_or("the client went away during the upload")?;
        if chunk.is_empty() {
            break;
        }
        total += chunk.len() as u64;
        if total > req.size {
            return Err(format!(
                "Data integrity failure: more than the announced {} bytes arrived",
                req.size
            ));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    }
    let got = hex(&hasher.finalize());
    if total != req.size || got != req.sha3_224 {
        return Err(format!(
            "Data integrity failure: {total} bytes with SHA3-224 {got} arrived, the job says {} bytes with {}; did the file change while the jobs were built? run again",
            req.size, req.sha3_224
        ));
    }
    file.sync_all()
        .map_err(|e| format!("writing {}: {e}", tmp.display()))
}

/// The operator's side: uploads `path` (whose SHA3-224 is `sha`) to the master of
/// `master_dir` unless it holds that content already.
pub async fn upload(master_dir: &Path, path: &Path, sha: &str) -> Result<(), String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .len();
    let sock = master_dir.join(SOCKET);
    let mut s = tokio::net::UnixStream::connect(&sock).await.map_err(|e| {
        format!(
            "cannot reach the master at {}: {e}; is `ingot master serve --master DIR` running (and may you use its socket)?",
            sock.display()
        )
    })?;
    let req = ControlRequest::Upload(UploadRequest {
        sha3_224: sha.to_owned(),
        size,
    });
    let payload = serde_json::to_vec(&req).expect("requests serialize");
    let io = |e: std::io::Error| format!("talking to the master: {e}");
    s.write_all(&channel3::netstring::encode(&payload))
        .await
        .map_err(io)?;
    let (mut r, mut w) = s.split();
    match answer(&mut r).await? {
        ControlReply::Done { .. } => return Ok(()),
        ControlReply::Error(e) => return Err(e),
        _ => {}
    }
    // Err((true, why)): this side could not read the file; Err((false, why)): sending failed.
    let sent = async {
        let mut buf = vec![0u8; CHUNK];
        let mut left = size;
        let io = |e: std::io::Error| (false, format!("talking to the master: {e}"));
        while left > 0 {
            let n = (left as usize).min(CHUNK);
            file.read_exact(&mut buf[..n])
                .await
                .map_err(|e| (true, format!("reading {}: {e}", path.display())))?;
            w.write_all(&channel3::netstring::encode(&buf[..n]))
                .await
                .map_err(io)?;
            left -= n as u64;
        }
        w.write_all(b"0:,").await.map_err(io)?;
        w.flush().await.map_err(io)
    }
    .await;
    match sent {
        Err((true, e)) => {
            // Ends the upload short: the master stores nothing.
            let _ = w.shutdown().await;
            Err(e)
        }
        // The master may have stopped reading to say why (e.g. more bytes than announced).
        Err((false, e)) => match answer(&mut r).await {
            Ok(ControlReply::Error(why)) => Err(why),
            _ => Err(e),
        },
        Ok(()) => match answer(&mut r).await? {
            ControlReply::Error(e) => Err(e),
            _ => Ok(()),
        },
    }
}

async fn answer(r: &mut (impl AsyncRead + Unpin)) -> Result<ControlReply, String> {
    let p = read_payload(r, MAX_FRAME)
        .await
        .map_err(|e| format!("talking to the master: {e}"))?
        .ok_or("the master closed the connection (is it older than this ingot?)")?;
    serde_json::from_slice::<ControlReply>(&p).map_err(|e| format!("talking to the master: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Master → minion.

/// A gate per `(minion, sha)`.
type Gates = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// One `(minion, sha)` transfer at a time, across requests.
static SENDING: LazyLock<Mutex<Gates>> = LazyLock::new(Default::default);

/// Gets what a request's jobs need onto the minions: ADD/COPY sources and user components.
/// One per Directord request; it remembers what each minion is known to hold meanwhile.
pub struct Shipper {
    hub: Arc<Hub>,
    master: PathBuf,
    held: Mutex<HashSet<(String, String)>>,
    installed: Mutex<HashSet<(String, String, String)>>,
    components: tokio::sync::Mutex<HashMap<String, Result<Option<String>, String>>>,
}

impl Shipper {
    /// For the master tree `master`.
    pub fn new(hub: Arc<Hub>, master: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            hub,
            master,
            held: Mutex::new(HashSet::new()),
            installed: Mutex::new(HashSet::new()),
            components: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The hub.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Makes sure each of `names` holds what `job` needs; returns the minions where that
    /// failed, with why.
    pub async fn prepare(&self, job: &Job, names: &[String]) -> HashMap<String, String> {
        let mut failed = HashMap::new();
        match self.component(&job.kind).await {
            Err(e) => {
                return names.iter().map(|n| (n.clone(), e.clone())).collect();
            }
            Ok(Some(sha)) => {
                let each = names.iter().map(|n| self.install(n, &job.kind, &sha));
                for (n, r) in names.iter().zip(futures::future::join_all(each).await) {
                    if let Err(e) = r {
                        failed.insert(n.clone(), e);
                    }
                }
            }
            Ok(None) => {}
        }
        if job.fields.contains_key("file_from") {
            let sha = job.str("file_sha3_224").unwrap_or_default();
            let rest: Vec<&String> = names.iter().filter(|n| !failed.contains_key(*n)).collect();
            let each = rest.iter().map(|n| self.content(n, sha));
            for (n, r) in rest.iter().zip(futures::future::join_all(each).await) {
                if let Err(e) = r {
                    failed.insert((*n).clone(), e);
                }
            }
        }
        failed
    }

    /// The SHA3-224 of `MASTER/resources/<kind>` (copied into the store) when it is a user
    /// component to ship; `None` when the master has no such file (a built-in, or a resource
    /// installed on the minions by other means).
    async fn component(&self, kind: &str) -> Result<Option<String>, String> {
        let mut memo = self.components.lock().await;
        if let Some(r) = memo.get(kind) {
            return r.clone();
        }
        let (master, k) = (self.master.clone(), kind.to_owned());
        let r = tokio::task::spawn_blocking(move || component_sha(&master, &k))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        memo.insert(kind.to_owned(), r.clone());
        r
    }

    /// Installs `kind` with content `sha` on minion `name` unless it has it.
    async fn install(&self, name: &str, kind: &str, sha: &str) -> Result<(), String> {
        let key = (name.to_owned(), kind.to_owned(), sha.to_owned());
        if lock(&self.installed).contains(&key) {
            return Ok(());
        }
        let link = self.link(name)?;
        for attempt in 0..2 {
            let v = link
                .call_op(Op::Install {
                    kind: kind.into(),
                    sha3_224: sha.into(),
                })
                .await
                .map_err(|e| format!("installing resources/{kind}: {e}"))?;
            match v.get("state").and_then(Value::as_str) {
                Some("unchanged") => break,
                Some("installed") => {
                    tracing::info!(minion = %name, %kind, %sha, "user component installed");
                    break;
                }
                Some("missing") if attempt == 0 => {
                    lock(&self.held).remove(&(name.to_owned(), sha.to_owned()));
                    self.content(name, sha).await?;
                }
                _ => {
                    return Err(format!(
                        "installing resources/{kind}: unexpected answer {v}"
                    ))
                }
            }
        }
        lock(&self.installed).insert(key);
        Ok(())
    }

    fn link(&self, name: &str) -> Result<super::server::RemoteMinion, String> {
        let s = self
            .hub
            .connected_session(name)
            .ok_or_else(|| format!("minion {name} is not connected"))?;
        Ok(self.hub.link(s))
    }

    /// Makes sure minion `name` holds the content `sha` from the store.
    async fn content(&self, name: &str, sha: &str) -> Result<(), String> {
        let sha = checked_sha(sha)?;
        let key = (name.to_owned(), sha.to_owned());
        if lock(&self.held).contains(&key) {
            return Ok(());
        }
        let path = store(&self.master)?.join(sha);
        let size = std::fs::metadata(&path)
            .map_err(|_| {
                format!(
                    "the content {sha} is not in {}: it was not uploaded with the request; run the command again",
                    path.display()
                )
            })?
            .len();
        touch(&path);
        let gate = lock(&SENDING).entry(key.clone()).or_default().clone();
        let sent = {
            let _one = gate.lock().await;
            self.send(name, &path, sha, size).await
        };
        {
            let mut sending = lock(&SENDING);
            if sending.get(&key).is_some_and(|g| Arc::strong_count(g) <= 2) {
                sending.remove(&key);
            }
        }
        sent?;
        lock(&self.held).insert(key);
        Ok(())
    }

    async fn send(&self, name: &str, path: &Path, sha: &str, size: u64) -> Result<(), String> {
        let link = self.link(name)?;
        let began = link
            .call_op(Op::Transfer(TransferOp::Begin {
                sha3_224: sha.into(),
                size,
            }))
            .await
            .map_err(|e| e.to_string())?;
        if began.get("have").and_then(Value::as_bool) == Some(true) {
            tracing::info!(minion = %name, %sha, "content already held: not sent again");
            return Ok(());
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        let (mut offset, mut chunks) = (0u64, 0u64);
        while offset < size {
            while in_flight.len() >= WINDOW {
                if let Some(r) = in_flight.next().await {
                    r?;
                }
            }
            // Waiting for a permit keeps this minion's chunks moving (they hold permits too,
            // and a request goes out only when its future is polled).
            let permit = loop {
                tokio::select! {
                    biased;
                    Some(r) = in_flight.next(), if !in_flight.is_empty() => r?,
                    p = CHUNK_PERMITS.acquire() => break p.map_err(|e| e.to_string())?,
                }
            };
            let n = ((size - offset) as usize).min(CHUNK);
            let mut buf = vec![0u8; n];
            file.read_exact(&mut buf)
                .await
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            // Hashing and encoding a megabyte is CPU work: off the runtime's threads, so
            // heartbeats and other minions' frames keep moving meanwhile.
            let (chunk_sha3_224, data) = tokio::task::spawn_blocking(move || {
                (
                    sha3_hex(&buf),
                    base64::engine::general_purpose::STANDARD.encode(&buf),
                )
            })
            .await
            .map_err(|e| format!("encoding a chunk: {e}"))?;
            let op = Op::Transfer(TransferOp::Chunk {
                sha3_224: sha.into(),
                offset,
                chunk_sha3_224,
                data,
            });
            let call = link.call_op(op);
            in_flight.push(async move {
                let r = call.await.map(|_| ()).map_err(|e| e.to_string());
                drop(permit);
                r
            });
            offset += n as u64;
            chunks += 1;
        }
        while let Some(r) = in_flight.next().await {
            r?;
        }
        link.call_op(Op::Transfer(TransferOp::End {
            sha3_224: sha.into(),
            size,
        }))
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(minion = %name, %sha, bytes = size, chunks, "content shipped");
        Ok(())
    }
}

fn component_sha(master: &Path, kind: &str) -> Result<Option<String>, String> {
    if !valid_kind(kind) {
        return Ok(None);
    }
    let path = master.join("resources").join(kind);
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
        Ok(_) if minion::builtin::resource(kind).is_some() => {
            // A link to ingot itself is the built-in; anything else would replace it.
            let exe = std::env::current_exe().and_then(std::fs::canonicalize).ok();
            if exe.is_some() && std::fs::canonicalize(&path).ok() == exe {
                return Ok(None);
            }
            Err(format!(
                "{} has the name of the built-in resource {kind:?}, and built-ins are never replaced on minions: rename it (a verb VERB resolves to resources/<verb>, else resources/<verb>_verb)",
                path.display()
            ))
        }
        Ok(_) => stage(master, &path).map(Some),
    }
}

fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && !kind.starts_with('.') && !kind.contains(['/', '\0'])
}

// ---------------------------------------------------------------------------------------------
// The agent's side.

/// A minion's `CACHE/transfer/`: content received from the master, by SHA3-224.
pub struct Inbox {
    dir: PathBuf,
}

impl Inbox {
    /// The directory (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn part(&self, sha: &str) -> PathBuf {
        self.dir.join(format!(".{sha}.part"))
    }

    /// Performs one transfer step; returns its answer.
    pub fn step(&self, op: TransferOp) -> Result<Value, String> {
        match op {
            TransferOp::Begin { sha3_224, size } => self
                .begin(&sha3_224, size)
                .map(|have| json!({"have": have})),
            TransferOp::Chunk {
                sha3_224,
                offset,
                chunk_sha3_224,
                data,
            } => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| {
                        format!("Data integrity failure: chunk at offset {offset} of {sha3_224} is not base64: {e}")
                    })?;
                self.chunk(&sha3_224, offset, &chunk_sha3_224, &bytes)
                    .map(|()| json!({}))
            }
            TransferOp::End { sha3_224, size } => {
                self.end(&sha3_224, size).map(|()| json!({"stored": true}))
            }
        }
    }

    /// Whether `CACHE/transfer/<sha>` is here; if not, an empty part of `size` bytes is
    /// started (replacing one left by an interrupted transfer).
    pub fn begin(&self, sha: &str, size: u64) -> Result<bool, String> {
        let sha = checked_sha(sha)?;
        let held = self.dir.join(sha);
        if held.is_file() {
            // Wanted again: kept another [`KEEP`] from now.
            touch(&held);
            return Ok(true);
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let part = self.part(sha);
        let f = std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .map_err(|e| format!("creating {}: {e}", part.display()))?;
        f.set_len(size)
            .map_err(|e| format!("sizing {}: {e}", part.display()))?;
        Ok(false)
    }

    /// Writes one chunk at `offset` once its SHA3-224 is `chunk_sha`.
    pub fn chunk(
        &self,
        sha: &str,
        offset: u64,
        chunk_sha: &str,
        data: &[u8],
    ) -> Result<(), String> {
        let sha = checked_sha(sha)?;
        if data.len() > MAX_CHUNK {
            return Err(format!(
                "a chunk of {} bytes is over the {MAX_CHUNK}-byte limit",
                data.len()
            ));
        }
        let got = sha3_hex(data);
        if got != chunk_sha {
            return Err(format!(
                "Data integrity failure: the chunk at offset {offset} of {sha} arrived with SHA3-224 {got}, it was sent with {chunk_sha}"
            ));
        }
        let part = self.part(sha);
        let f = std::fs::File::options()
            .write(true)
            .open(&part)
            .map_err(|e| {
                format!(
                    "no transfer of {sha} was begun here ({}: {e})",
                    part.display()
                )
            })?;
        let len = f.metadata().map_err(|e| e.to_string())?.len();
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > len)
        {
            return Err(format!(
                "Data integrity failure: a chunk of {} bytes at offset {offset} is past the end of {sha} ({len} bytes)",
                data.len()
            ));
        }
        f.write_all_at(data, offset)
            .map_err(|e| format!("writing {}: {e}", part.display()))
    }

    /// Checks the whole part (size and SHA3-224) and renames it to `CACHE/transfer/<sha>`;
    /// a part that does not check out is removed.
    pub fn end(&self, sha: &str, size: u64) -> Result<(), String> {
        let sha = checked_sha(sha)?;
        let part = self.part(sha);
        let checked = (|| {
            let mut f = std::fs::File::open(&part).map_err(|e| {
                format!(
                    "no transfer of {sha} was begun here ({}: {e})",
                    part.display()
                )
            })?;
            let len = f.metadata().map_err(|e| e.to_string())?.len();
            let mut h = Sha3_224::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = f.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
            let got = hex(&h.finalize());
            if len != size || got != sha {
                return Err(format!(
                    "Data integrity failure: the content received ({len} bytes, SHA3-224 {got}) is not what was sent ({size} bytes, SHA3-224 {sha})"
                ));
            }
            f.sync_all().map_err(|e| e.to_string())?;
            std::fs::rename(&part, self.dir.join(sha))
                .map_err(|e| format!("storing {}: {e}", self.dir.join(sha).display()))
        })();
        if checked.is_err() {
            let _ = std::fs::remove_file(&part);
        } else {
            // Content nobody asked for in [`KEEP`], and parts abandoned as long, go.
            prune(&self.dir, KEEP);
        }
        checked
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// `resources/<kind>` already had that content (and mode 0755).
    Unchanged,
    /// It was installed.
    Installed,
    /// `CACHE/transfer/<sha>` is not here: send it first.
    Missing,
}

impl Installed {
    /// The answer's `state`.
    pub fn as_str(self) -> &'static str {
        match self {
            Installed::Unchanged => "unchanged",
            Installed::Installed => "installed",
            Installed::Missing => "missing",
        }
    }
}

/// Installs `transfer/<sha>` as `minion/resources/<kind>` (0755): copied next to it, checked,
/// then renamed over the directory entry (a symlink there is replaced, never written
/// through). The minion's built-ins are refused.
pub fn install(minion: &Path, transfer: &Path, kind: &str, sha: &str) -> Result<Installed, String> {
    let sha = checked_sha(sha)?;
    if !valid_kind(kind) {
        return Err(format!("{kind:?} is not a resource kind"));
    }
    if minion::builtin::resource(kind).is_some() {
        return Err(format!(
            "resources/{kind} is a built-in of this minion; the master does not replace built-ins (rename MASTER/resources/{kind})"
        ));
    }
    let resources = minion.join("resources");
    let dest = resources.join(kind);
    if let Ok(m) = std::fs::symlink_metadata(&dest) {
        if m.is_file()
            && m.permissions().mode() & 0o777 == 0o755
            && file_sha3(&dest).is_ok_and(|h| h == sha)
        {
            return Ok(Installed::Unchanged);
        }
    }
    let src = transfer.join(sha);
    if !src.is_file() {
        return Ok(Installed::Missing);
    }
    let tmp = tmp_name(&resources, kind);
    let done = (|| {
        let mut from =
            std::fs::File::open(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
        let mut to = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&tmp)
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        std::io::copy(&mut from, &mut to).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        to.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        to.sync_all().map_err(|e| e.to_string())?;
        drop(to);
        let got = file_sha3(&tmp).map_err(|e| e.to_string())?;
        if got != sha {
            return Err(format!(
                "Data integrity failure: resources/{kind} would have SHA3-224 {got}, not {sha}"
            ));
        }
        std::fs::rename(&tmp, &dest).map_err(|e| format!("installing {}: {e}", dest.display()))
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done.map(|()| Installed::Installed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        sha3_hex(b)
    }

    #[test]
    fn chunks_are_checked_one_by_one_and_as_a_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let inbox = Inbox::new(tmp.path().join("transfer"));
        let content: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
        let whole = sha(&content);
        assert!(!inbox.begin(&whole, content.len() as u64).unwrap());
        let (a, b) = content.split_at(1000);
        // Out of order is fine.
        inbox.chunk(&whole, 1000, &sha(b), b).unwrap();
        // A corrupt chunk is refused and not written.
        let mut bad = a.to_vec();
        bad[10] ^= 1;
        let e = inbox.chunk(&whole, 0, &sha(a), &bad).unwrap_err();
        assert!(e.starts_with("Data integrity failure"), "{e}");
        // Past the end.
        let e = inbox.chunk(&whole, 2500, &sha(b), b).unwrap_err();
        assert!(e.contains("past the end"), "{e}");
        // Ending with a hole: the whole does not check out, the part is gone.
        let e = inbox.end(&whole, content.len() as u64).unwrap_err();
        assert!(e.starts_with("Data integrity failure"), "{e}");
        assert!(!inbox.part(&whole).exists());
        assert!(!tmp.path().join("transfer").join(&whole).exists());
        // Again, properly.
        assert!(!inbox.begin(&whole, content.len() as u64).unwrap());
        inbox.chunk(&whole, 0, &sha(a), a).unwrap();
        inbox.chunk(&whole, 1000, &sha(b), b).unwrap();
        inbox.end(&whole, content.len() as u64).unwrap();
        let stored = tmp.path().join("transfer").join(&whole);
        assert_eq!(std::fs::read(&stored).unwrap(), content);
        assert!(
            inbox.begin(&whole, content.len() as u64).unwrap(),
            "held now"
        );
        // Names are hashes only.
        assert!(inbox.begin("../../etc/passwd", 1).is_err());
        // Through the wire form, base64 included.
        let e = inbox
            .step(TransferOp::Chunk {
                sha3_224: whole.clone(),
                offset: 0,
                chunk_sha3_224: whole.clone(),
                data: "%%%".into(),
            })
            .unwrap_err();
        assert!(e.starts_with("Data integrity failure"), "{e}");
    }

    #[test]
    fn a_minion_keeps_received_content_while_it_is_wanted_and_prunes_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("transfer");
        let inbox = Inbox::new(&dir);
        let receive = |content: &[u8]| {
            let whole = sha(content);
            assert!(!inbox.begin(&whole, content.len() as u64).unwrap());
            inbox.chunk(&whole, 0, &whole, content).unwrap();
            inbox.end(&whole, content.len() as u64).unwrap();
            whole
        };
        let age = |path: &Path| {
            let two_days = SystemTime::now() - 2 * KEEP;
            std::fs::File::options()
                .append(true)
                .open(path)
                .unwrap()
                .set_modified(two_days)
                .unwrap();
        };
        let (wanted, unused) = (receive(b"wanted"), receive(b"unused"));
        let abandoned = inbox.part(&sha(b"abandoned"));
        std::fs::write(&abandoned, b"half").unwrap();
        for p in [dir.join(&wanted), dir.join(&unused), abandoned.clone()] {
            age(&p);
        }
        // Asked for again (a job needs it): renewed.
        assert!(inbox.begin(&wanted, 6).unwrap());
        // The next content received sweeps what nobody wanted for longer than KEEP.
        let fresh = receive(b"fresh");
        assert!(dir.join(&wanted).is_file());
        assert!(dir.join(&fresh).is_file());
        assert!(!dir.join(&unused).exists(), "unused for two days");
        assert!(!abandoned.exists(), "abandoned for two days");
    }

    async fn upload_replies(master: &Path, content: &[u8], sent: &[u8]) -> Vec<ControlReply> {
        let req = UploadRequest {
            sha3_224: sha(content),
            size: content.len() as u64,
        };
        let mut input = channel3::netstring::encode(sent);
        input.extend_from_slice(b"0:,");
        let mut out = Vec::new();
        receive_upload(master, req, &mut &input[..], &mut out)
            .await
            .unwrap();
        let mut replies = Vec::new();
        let mut r = &out[..];
        while let Some(p) = read_payload(&mut r, MAX_FRAME).await.unwrap() {
            replies.push(serde_json::from_slice(&p).unwrap());
        }
        replies
    }

    #[tokio::test]
    async fn uploads_are_verified_and_stored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path();
        let stored = m.join("transfer").join(sha(b"hello"));
        let r = upload_replies(m, b"hello", b"hellX").await;
        assert!(
            matches!(&r[..], [ControlReply::Progress(_), ControlReply::Error(e)] if e.starts_with("Data integrity failure")),
            "{r:?}"
        );
        assert!(!stored.exists());
        assert_eq!(std::fs::read_dir(m.join("transfer")).unwrap().count(), 0);
        let r = upload_replies(m, b"hello", b"hello").await;
        assert!(
            matches!(&r[..], [ControlReply::Progress(_), ControlReply::Done { stdout, code: 0 }] if stdout == "stored"),
            "{r:?}"
        );
        assert_eq!(std::fs::read(&stored).unwrap(), b"hello");
        let r = upload_replies(m, b"hello", b"").await;
        assert!(
            matches!(&r[..], [ControlReply::Done { stdout, code: 0 }] if stdout == "have"),
            "{r:?}"
        );
    }

    #[test]
    fn install_replaces_the_entry_never_a_builtin_nor_through_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let m = tmp.path().join("minion");
        std::fs::create_dir_all(m.join("resources")).unwrap();
        let transfer = tmp.path().join("transfer");
        let inbox = Inbox::new(&transfer);
        let v1 = b"#!/bin/sh\necho v1\n";
        let s1 = sha(v1);
        assert_eq!(
            install(&m, &transfer, "hello", &s1).unwrap(),
            Installed::Missing
        );
        assert!(!inbox.begin(&s1, v1.len() as u64).unwrap());
        inbox.chunk(&s1, 0, &s1, v1).unwrap();
        inbox.end(&s1, v1.len() as u64).unwrap();
        // The entry is a symlink to a file elsewhere: replaced, the target untouched.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep me").unwrap();
        std::os::unix::fs::symlink(&elsewhere, m.join("resources/hello")).unwrap();
        assert_eq!(
            install(&m, &transfer, "hello", &s1).unwrap(),
            Installed::Installed
        );
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep me");
        let meta = std::fs::symlink_metadata(m.join("resources/hello")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(m.join("resources/hello")).unwrap(), v1);
        assert_eq!(
            install(&m, &transfer, "hello", &s1).unwrap(),
            Installed::Unchanged
        );
        // Built-ins and odd names are refused.
        let e = install(&m, &transfer, "run", &s1).unwrap_err();
        assert!(e.contains("built-in"), "{e}");
        assert!(install(&m, &transfer, "../x", &s1).is_err());
        assert!(install(&m, &transfer, "hello", "nope").is_err());
    }
}
