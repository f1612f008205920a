//! The minion's job cache (`minion/cache/directord/`): args, envs, job states and parent
//! states, each a JSON file of `{KEY: {"v": VALUE, "t": UNIX_SECONDS}}`. Entries older than the
//! TTL (default 12 h) are ignored and dropped on the next write. Query results live in
//! `args.query` (Directord's layout). Every change is a read-modify-write under an exclusive
//! `flock` on `.lock`, written to a temporary file and renamed into place, so concurrent
//! processes never see a torn file or lose each other's updates.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The default TTL of cache entries: 12 hours (as Directord's docs promise).
pub const DEFAULT_TTL: Duration = Duration::from_secs(12 * 3600);

/// Why the cache could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A file operation failed.
    #[error("job cache {path}: {source} (check that the minion's cache/ directory is writable)")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// CACHEEVICT with a tag that names nothing.
    #[error("nothing cached under {0:?}; tags are all, args, envs, jobs, parents, query, or a job fingerprint or parent id")]
    UnknownTag(String),
}

/// The state of a job or parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Finished successfully.
    Success,
    /// Failed.
    Failed,
    /// Running.
    Processing,
}

/// One bucket of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// `args.json`: template variables (and `query`).
    Args,
    /// `envs.json`: environment variables for commands.
    Envs,
    /// `jobs.json`: fingerprint → last state.
    Jobs,
    /// `parents.json`: parent id → last state.
    Parents,
}

impl Bucket {
    fn file(self) -> &'static str {
        match self {
            Bucket::Args => "args.json",
            Bucket::Envs => "envs.json",
            Bucket::Jobs => "jobs.json",
            Bucket::Parents => "parents.json",
        }
    }
    const ALL: [Bucket; 4] = [Bucket::Args, Bucket::Envs, Bucket::Jobs, Bucket::Parents];

    /// Whether a write waits for the disk. Job and parent states are rewritten after every
    /// job, and an fsync there costs about a millisecond each (two per job: most of a
    /// `RUN echo`). Losing the newest state to a power cut only re-runs a job that had
    /// succeeded (a missing state is never read as success), so those are renamed into place
    /// without it; args and envs, which operators set on purpose, are fsync'd.
    fn durable(self) -> bool {
        matches!(self, Bucket::Args | Bucket::Envs)
    }
}

/// A minion's job cache.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    ttl: Duration,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Deep merge: objects merge key by key; with `extend`, arrays are appended to; anything else
/// is replaced.
pub fn merge(base: &mut Value, new: Value, extend: bool) {
    match (base, new) {
        (Value::Object(b), Value::Object(n)) => {
            for (k, v) in n {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v, extend),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(n)) if extend => b.extend(n),
        (b, n) => *b = n,
    }
}

impl Cache {
    /// Opens (creating) the cache in `dir`, e.g. `MINION/cache/directord`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CacheError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            dir,
            ttl: DEFAULT_TTL,
        })
    }

    /// The cache of the minion tree at `minion_dir`.
    pub fn for_minion(minion_dir: &Path) -> Result<Self, CacheError> {
        Self::open(minion_dir.join("cache").join("directord"))
    }

    /// Sets the TTL.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
        let path = path.to_owned();
        move |source| CacheError::Io { path, source }
    }

    fn read_raw(&self, b: Bucket) -> Result<Map<String, Value>, CacheError> {
        let path = self.dir.join(b.file());
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    fn live(&self, raw: Map<String, Value>) -> Map<String, Value> {
        let oldest = now().saturating_sub(self.ttl.as_secs());
        raw.into_iter()
            .filter(|(_, e)| e.get("t").and_then(Value::as_u64).unwrap_or(0) >= oldest)
            .filter_map(|(k, e)| e.get("v").cloned().map(|v| (k, v)))
            .collect()
    }

    fn write_raw(&self, b: Bucket, map: &Map<String, Value>) -> Result<(), CacheError> {
        let path = self.dir.join(b.file());
        let bytes = serde_json::to_vec(map).unwrap_or_default();
        replace_file(&path, &bytes, b.durable()).map_err(self.io(&path))
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T, CacheError>) -> Result<T, CacheError> {
        let lock_path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(self.io(&lock_path))?;
        let guard = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
            |(_, e)| CacheError::Io {
                path: lock_path.clone(),
                source: std::io::Error::from(e),
            },
        )?;
        let r = f();
        drop(guard);
        r
    }

    /// Changes one bucket: `f` gets the live entries (values only) and returns the new ones;
    /// unchanged entries keep their timestamps.
    fn update(
        &self,
        b: Bucket,
        f: impl FnOnce(&mut Map<String, Value>) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        self.locked(|| {
            let raw = self.read_raw(b)?;
            let mut live = self.live(raw.clone());
            let before = live.clone();
            f(&mut live)?;
            let t = now();
            let out: Map<String, Value> = live
                .into_iter()
                .map(|(k, v)| {
                    let entry = match (before.get(&k), raw.get(&k)) {
                        (Some(old), Some(e)) if *old == v => e.clone(),
                        _ => json!({"v": v, "t": t}),
                    };
                    (k, entry)
                })
                .collect();
            // Re-recording a state that is already there (a `--skip-cache` job run again)
            // changes nothing: no write, no new inode.
            if out == raw {
                return Ok(());
            }
            self.write_raw(b, &out)
        })
    }

    /// The live entries of a bucket.
    pub fn get(&self, b: Bucket) -> Result<Map<String, Value>, CacheError> {
        Ok(self.live(self.read_raw(b)?))
    }

    /// Deep-merges `values` into a bucket (see [`merge`]).
    pub fn merge_into(
        &self,
        b: Bucket,
        values: Map<String, Value>,
        extend: bool,
    ) -> Result<(), CacheError> {
        self.update(b, |live| {
            for (k, v) in values {
                match live.get_mut(&k) {
                    Some(existing) => merge(existing, v, extend),
                    None => {
                        live.insert(k, v);
                    }
                }
            }
            Ok(())
        })
    }

    /// The last state of a job fingerprint or parent id.
    pub fn state(&self, b: Bucket, key: &str) -> Option<JobState> {
        self.get(b)
            .ok()?
            .get(key)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// Records the state of a job fingerprint or parent id.
    pub fn set_state(&self, b: Bucket, key: &str, state: JobState) -> Result<(), CacheError> {
        self.update(b, |live| {
            live.insert(key.into(), json!(state));
            Ok(())
        })
    }

    /// CACHEEVICT: `all`, a bucket name (`args`, `envs`, `jobs`, `parents`), `query` (the
    /// query results in args), or one job fingerprint / parent id / arg name.
    pub fn evict(&self, tag: &str) -> Result<(), CacheError> {
        let bucket = match tag {
            "all" => {
                return self.locked(|| {
                    for b in Bucket::ALL {
                        self.write_raw(b, &Map::new())?;
                    }
                    Ok(())
                })
            }
            "args" => Some(Bucket::Args),
            "envs" => Some(Bucket::Envs),
            "jobs" => Some(Bucket::Jobs),
            "parents" => Some(Bucket::Parents),
            _ => None,
        };
        if let Some(b) = bucket {
            return self.locked(|| self.write_raw(b, &Map::new()));
        }
        let key = if tag == "query" { "query" } else { tag };
        let mut found = false;
        for b in Bucket::ALL {
            self.update(b, |live| {
                found |= live.remove(key).is_some();
                Ok(())
            })?;
        }
        if found || tag == "query" {
            Ok(())
        } else {
            Err(CacheError::UnknownTag(tag.into()))
        }
    }

    /// Everything live, as `{"args": …, "envs": …, "jobs": …, "parents": …}`.
    pub fn dump(&self) -> Result<Value, CacheError> {
        Ok(json!({
            "args": self.get(Bucket::Args)?,
            "envs": self.get(Bucket::Envs)?,
            "jobs": self.get(Bucket::Jobs)?,
            "parents": self.get(Bucket::Parents)?,
        }))
    }
}

/// Writes a file atomically: a temporary file in the same directory, fsync'd, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_file(path, bytes, true)
}

/// Replaces `path` with `bytes` through a temporary file and a rename (readers see the old
/// file or the new one, never a torn one); `durable` also fsyncs before the rename.
fn replace_file(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_extend_evict_ttl() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let m = |v: Value| v.as_object().unwrap().clone();
        c.merge_into(Bucket::Args, m(json!({"a": [1], "q": {"x": 1}})), false)
            .unwrap();
        c.merge_into(Bucket::Args, m(json!({"a": [2], "q": {"y": 2}})), true)
            .unwrap();
        assert_eq!(
            Value::Object(c.get(Bucket::Args).unwrap()),
            json!({"a": [1, 2], "q": {"x": 1, "y": 2}})
        );
        c.set_state(Bucket::Jobs, "sha", JobState::Success).unwrap();
        assert_eq!(c.state(Bucket::Jobs, "sha"), Some(JobState::Success));
        c.evict("jobs").unwrap();
        assert_eq!(c.state(Bucket::Jobs, "sha"), None);
        assert!(c.evict("nothing-here").is_err());
        c.evict("all").unwrap();
        assert!(c.get(Bucket::Args).unwrap().is_empty());
        // TTL 0: everything written earlier than this second is gone.
        c.merge_into(Bucket::Envs, m(json!({"E": "1"})), false)
            .unwrap();
        let old = Cache::open(d.path()).unwrap().with_ttl(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(old.get(Bucket::Envs).unwrap().is_empty());
    }
}
