//! A minion's `CACHE/transfer/`: content the master sends (ADD/COPY sources, user components),
//! received in verified chunks and kept by SHA3-224; and the install of a user component as
//! `MINION/resources/<kind>`. The master's own store (`MASTER/transfer/`) uses the same
//! helpers for naming, renewing and pruning content.

use std::io::Read as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use sha3::{Digest as _, Sha3_224};

use crate::directord::job::{file_sha3, sha3_hex};
use crate::wire::tls::hex;
use crate::wire::{InstallState, TransferAnswer, TransferOp};

/// The largest chunk a receiver accepts.
pub const MAX_CHUNK: usize = 4 << 20;

/// How long a store keeps content nobody used: the master's `MASTER/transfer/` and each
/// minion's `CACHE/transfer/` (using content, or asking whether it is held, renews it).
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Why content could not be received or installed (the text says what and what to do; a
/// content mismatch says "Data integrity failure", as Directord does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TransferError(pub String);

impl From<String> for TransferError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<TransferError> for String {
    fn from(e: TransferError) -> Self {
        e.0
    }
}

/// A SHA3-224 in hex: 56 lower-case hex digits (it names files, so nothing else passes).
pub fn valid_sha(s: &str) -> bool {
    s.len() == 56
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `s` when it is a SHA3-224 in hex, else why not.
pub fn checked_sha(s: &str) -> Result<&str, TransferError> {
    if valid_sha(s) {
        Ok(s)
    } else {
        Err(TransferError(format!(
            "{s:?} is not a SHA3-224 (56 lower-case hex digits)"
        )))
    }
}

/// Marks content as wanted now (a store keeps it [`KEEP`] from its last use).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// A temporary name in `dir` for content on its way to `what`.
pub fn tmp_name(dir: &Path, what: &str) -> PathBuf {
    dir.join(format!(".{what}.{}.tmp", uuid::Uuid::new_v4().simple()))
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

/// Whether `kind` can name a file in `resources/`.
pub fn valid_kind(kind: &str) -> bool {
    !kind.is_empty() && !kind.starts_with('.') && !kind.contains(['/', '\0'])
}

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
    pub fn step(&self, op: TransferOp) -> Result<TransferAnswer, TransferError> {
        match op {
            TransferOp::Begin { sha3_224, size } => {
                self.begin(&sha3_224, size).map(|have| TransferAnswer {
                    have: Some(have),
                    stored: None,
                })
            }
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
                    .map(|()| TransferAnswer::default())
            }
            TransferOp::End { sha3_224, size } => {
                self.end(&sha3_224, size).map(|()| TransferAnswer {
                    have: None,
                    stored: Some(true),
                })
            }
        }
    }

    /// Whether `CACHE/transfer/<sha>` is here; if not, an empty part of `size` bytes is
    /// started (replacing one left by an interrupted transfer).
    pub fn begin(&self, sha: &str, size: u64) -> Result<bool, TransferError> {
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
    ) -> Result<(), TransferError> {
        let sha = checked_sha(sha)?;
        if data.len() > MAX_CHUNK {
            return Err(format!(
                "a chunk of {} bytes is over the {MAX_CHUNK}-byte limit",
                data.len()
            )
            .into());
        }
        let got = sha3_hex(data);
        if got != chunk_sha {
            return Err(format!(
                "Data integrity failure: the chunk at offset {offset} of {sha} arrived with SHA3-224 {got}, it was sent with {chunk_sha}"
            ).into());
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
            ).into());
        }
        f.write_all_at(data, offset)
            .map_err(|e| format!("writing {}: {e}", part.display()).into())
    }

    /// Checks the whole part (size and SHA3-224) and renames it to `CACHE/transfer/<sha>`;
    /// a part that does not check out is removed.
    pub fn end(&self, sha: &str, size: u64) -> Result<(), TransferError> {
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
        checked.map_err(TransferError)
    }
}

/// Installs `transfer/<sha>` as `minion/resources/<kind>` (0755): copied next to it, checked,
/// then renamed over the directory entry (a symlink there is replaced, never written
/// through). The minion's built-ins are refused.
pub fn install(
    minion: &Path,
    transfer: &Path,
    kind: &str,
    sha: &str,
) -> Result<InstallState, TransferError> {
    let sha = checked_sha(sha)?;
    if !valid_kind(kind) {
        return Err(format!("{kind:?} is not a resource kind").into());
    }
    if crate::builtin::resource(kind).is_some() {
        return Err(format!(
            "resources/{kind} is a built-in of this minion; the master does not replace built-ins (rename MASTER/resources/{kind})"
        ).into());
    }
    let resources = minion.join("resources");
    let dest = resources.join(kind);
    if let Ok(m) = std::fs::symlink_metadata(&dest) {
        if m.is_file()
            && m.permissions().mode() & 0o777 == 0o755
            && file_sha3(&dest).is_ok_and(|h| h == sha)
        {
            return Ok(InstallState::Unchanged);
        }
    }
    let src = transfer.join(sha);
    if !src.is_file() {
        return Ok(InstallState::Missing);
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
    done.map(|()| InstallState::Installed)
        .map_err(TransferError)
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
        assert!(e.0.starts_with("Data integrity failure"), "{e}");
        // Past the end.
        let e = inbox.chunk(&whole, 2500, &sha(b), b).unwrap_err();
        assert!(e.0.contains("past the end"), "{e}");
        // Ending with a hole: the whole does not check out, the part is gone.
        let e = inbox.end(&whole, content.len() as u64).unwrap_err();
        assert!(e.0.starts_with("Data integrity failure"), "{e}");
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
        assert!(e.0.starts_with("Data integrity failure"), "{e}");
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
            InstallState::Missing
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
            InstallState::Installed
        );
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "keep me");
        let meta = std::fs::symlink_metadata(m.join("resources/hello")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(std::fs::read(m.join("resources/hello")).unwrap(), v1);
        assert_eq!(
            install(&m, &transfer, "hello", &s1).unwrap(),
            InstallState::Unchanged
        );
        // Built-ins and odd names are refused.
        let e = install(&m, &transfer, "run", &s1).unwrap_err();
        assert!(e.0.contains("built-in"), "{e}");
        assert!(install(&m, &transfer, "../x", &s1).is_err());
        assert!(install(&m, &transfer, "hello", "nope").is_err());
    }
}
