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
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use base64::Engine as _;
use futures::StreamExt as _;
use minion::agent::inbox::{
    checked_sha, prune, tmp_name, touch, valid_kind, TransferError, KEEP, MAX_CHUNK,
};
use minion::directord::job::{file_sha3, sha3_hex};
use minion::directord::Job;
use minion::wire::tls::hex;
use minion::wire::{FrameReader, InstallAnswer, InstallState, Op, TransferAnswer, TransferOp};
use sha3::{Digest as _, Sha3_224};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::control::{ControlReply, ControlRequest, UploadRequest, SOCKET};
use crate::fleet::RemoteMinion;
use crate::server::Hub;

/// Bytes per chunk.
pub const CHUNK: usize = 1 << 20;

/// Chunks on their way to one minion at once.
pub const WINDOW: usize = 4;

/// Chunks on their way to all minions at once (bounds the master's memory).
pub const CHUNKS_IN_FLIGHT: usize = 16;

static CHUNK_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CHUNKS_IN_FLIGHT);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The master's store: MASTER/transfer/<sha>.

/// `MASTER/transfer`, created 0700.
pub fn store(master: &Path) -> Result<PathBuf, TransferError> {
    let dir = master.join("transfer");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

/// Copies `src` into the store (unless it holds that content) and returns its SHA3-224.
pub fn stage(master: &Path, src: &Path) -> Result<String, TransferError> {
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
        return Err(e.into());
    }
    Ok(sha)
}

async fn reply(w: &mut (impl AsyncWrite + Unpin), r: &ControlReply) -> Result<(), String> {
    minion::wire::write(w, r).await.map_err(|e| e.to_string())
}

/// The master's side of an upload: answers `Done` ("have") when the store holds the content,
/// else `Progress` ("send"), reads the chunks into a temporary file while hashing, and answers
/// `Done` ("stored") or `Error` (Data integrity failure).
pub async fn receive_upload(
    master: &Path,
    req: UploadRequest,
    r: &mut FrameReader<impl AsyncRead + Unpin>,
    w: &mut (impl AsyncWrite + Unpin),
) -> Result<(), TransferError> {
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
    .map_err(TransferError)
}

async fn receive_into(
    tmp: &Path,
    req: &UploadRequest,
    r: &mut FrameReader<impl AsyncRead + Unpin>,
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
        let chunk = r
            .payload()
            .await
            .map_err(|e| format!("receiving the content: {e}"))?
            .ok_or("the client went away during the upload")?;
        if chunk.is_empty() {
            break;
        }
        if chunk.len() > MAX_CHUNK {
            return Err(format!(
                "a chunk of {} bytes is over the {MAX_CHUNK}-byte limit",
                chunk.len()
            ));
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
pub async fn upload(master_dir: &Path, path: &Path, sha: &str) -> Result<(), TransferError> {
    upload_content(master_dir, path, sha)
        .await
        .map_err(TransferError)
}

async fn upload_content(master_dir: &Path, path: &Path, sha: &str) -> Result<(), String> {
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
    let io = |e: std::io::Error| format!("talking to the master: {e}");
    s.write_all(&minion::wire::encode(&req)).await.map_err(io)?;
    let (r, mut w) = s.split();
    let mut r = FrameReader::new(r);
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

async fn answer(r: &mut FrameReader<impl AsyncRead + Unpin>) -> Result<ControlReply, String> {
    r.next::<ControlReply>()
        .await
        .map_err(|e| format!("talking to the master: {e}"))?
        .ok_or_else(|| "the master closed the connection (is it older than this ingot?)".into())
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
    /// The hub whose minions it ships to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

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
            let answer: Result<InstallAnswer, _> = serde_json::from_value(v.clone());
            match answer.map(|a| a.state) {
                Ok(InstallState::Unchanged) => break,
                Ok(InstallState::Installed) => {
                    tracing::info!(minion = %name, %kind, %sha, "user component installed");
                    break;
                }
                Ok(InstallState::Missing) if attempt == 0 => {
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

    fn link(&self, name: &str) -> Result<RemoteMinion, String> {
        let s = self
            .hub
            .connected_session(name)
            .ok_or_else(|| format!("minion {name} is not connected"))?;
        Ok(RemoteMinion::new(self.hub.clone(), s))
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
        let began: TransferAnswer = serde_json::from_value(began)
            .map_err(|e| format!("{name} answered a transfer with something else: {e}"))?;
        if began.have == Some(true) {
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
        Ok(_) => stage(master, &path).map(Some).map_err(String::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        sha3_hex(b)
    }

    async fn upload_replies(master: &Path, content: &[u8], sent: &[u8]) -> Vec<ControlReply> {
        let req = UploadRequest {
            sha3_224: sha(content),
            size: content.len() as u64,
        };
        let mut input = channel3::netstring::encode(sent);
        input.extend_from_slice(b"0:,");
        let mut out = Vec::new();
        receive_upload(master, req, &mut FrameReader::new(&input[..]), &mut out)
            .await
            .unwrap();
        let mut replies = Vec::new();
        let mut r = FrameReader::new(&out[..]);
        while let Some(reply) = r.next().await.unwrap() {
            replies.push(reply);
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
}
