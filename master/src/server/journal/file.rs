//! The journal file `MASTER/logs/inflight.jsonl` and its writer thread: records appended and
//! synced, compacted when they grow, read back at start-up ([`recover`]).

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use historian::History;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// Why the journal could not keep a record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// Writing or syncing the file failed (the disk is full, or the file is not writable).
    #[error("journal {path}: {message} (runs will not survive a restart of the master until this is fixed)")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The writer thread is gone (the master is stopping).
    #[error("the journal's writer thread stopped")]
    Stopped,
}

/// The journal's file name in `MASTER/logs/`.
pub const FILE: &str = "inflight.jsonl";

/// Entries older than this are dropped at start-up: their minion never delivered.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 86400);

/// Rewrite the file when it has more lines than this and four times what is live.
const COMPACT_AFTER: usize = 4096;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn now_us() -> i64 {
    channel3::Timestamp::now().0
}

/// One request in flight that belongs to a recorded run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The request id.
    pub id: String,
    /// The run's id in the history.
    pub run: String,
    /// The minion it was sent to.
    pub minion: String,
    /// What it asks (`facts`, `resources/file conform`), for logs.
    pub what: String,
    /// The resource kind of its steps.
    #[serde(default)]
    pub kind: String,
    /// The action of its steps.
    #[serde(default)]
    pub action: String,
    /// The steps it performs, by number in the run (several: one batch, whose result is an
    /// array); empty for requests outside steps (facts, inspections), whose events belong to
    /// the run.
    #[serde(default)]
    pub steps: Vec<i64>,
    /// Fields of the desired states to mask in the result.
    #[serde(default)]
    pub sensitive: Vec<String>,
    /// When it was sent (microseconds since the epoch).
    pub sent: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Open { run: String },
    Sent(Entry),
    Done { id: String },
    Close { run: String },
}

#[derive(Default)]
struct State {
    open: BTreeSet<String>,
    pending: HashMap<String, Entry>,
}

impl State {
    fn apply(&mut self, r: &Record) {
        match r {
            Record::Open { run } => {
                self.open.insert(run.clone());
            }
            Record::Sent(e) => {
                self.pending.insert(e.id.clone(), e.clone());
            }
            Record::Done { id } => {
                self.pending.remove(id);
            }
            Record::Close { run } => {
                self.open.remove(run);
            }
        }
    }

    fn live(&self) -> usize {
        self.open.len() + self.pending.len()
    }

    /// The records that rebuild this state.
    fn snapshot(&self) -> Vec<Record> {
        let mut pending: Vec<&Entry> = self.pending.values().collect();
        pending.sort_by(|a, b| (a.sent, &a.id).cmp(&(b.sent, &b.id)));
        self.open
            .iter()
            .map(|run| Record::Open { run: run.clone() })
            .chain(pending.into_iter().map(|e| Record::Sent(e.clone())))
            .collect()
    }
}

type Waiter = oneshot::Sender<Result<(), JournalError>>;

#[derive(Default)]
struct Queue {
    state: State,
    records: Vec<Record>,
    waiters: Vec<Waiter>,
    stop: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The journal file and its writer thread.
pub struct Journal {
    shared: Arc<Shared>,
    path: PathBuf,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        lock(&self.shared.queue).stop = true;
        self.shared.wake.notify_all();
    }
}

impl Journal {
    /// Opens (creating) the journal at `path` and reads it back: the runs that were open when
    /// its master stopped are returned (and forgotten: they are over); the requests still in
    /// flight are kept for [`Journal::lookup`]. The file is rewritten with just those.
    pub fn open(path: &Path) -> std::io::Result<(Arc<Self>, Vec<String>)> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut state = State::default();
        match std::fs::File::open(path) {
            Ok(f) => {
                for line in std::io::BufReader::new(f).lines() {
                    // A torn last line (a crash mid-write) is not JSON: skipped.
                    if let Ok(r) = serde_json::from_str::<Record>(&line?) {
                        state.apply(&r);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let interrupted: Vec<String> = std::mem::take(&mut state.open).into_iter().collect();
        let oldest = now_us() - FORGET_AFTER.as_micros() as i64;
        state.pending.retain(|id, e| {
            let keep = e.sent >= oldest;
            if !keep {
                tracing::warn!(%id, minion = %e.minion, run = %e.run, "no result came for {} in {} days: forgotten", e.what, FORGET_AFTER.as_secs() / 86400);
            }
            keep
        });
        let snapshot = state.snapshot();
        let file = rewrite(path, &snapshot)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                state,
                ..Queue::default()
            }),
            wake: Condvar::new(),
        });
        let thread = {
            let shared = shared.clone();
            let path = path.to_owned();
            let lines = snapshot.len();
            move || writer(shared, path, file, lines)
        };
        std::thread::Builder::new()
            .name("master-journal".into())
            .spawn(thread)?;
        Ok((
            Arc::new(Self {
                shared,
                path: path.to_owned(),
            }),
            interrupted,
        ))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn push(&self, r: Record, waiter: Option<Waiter>) {
        let mut q = lock(&self.shared.queue);
        q.state.apply(&r);
        q.records.push(r);
        q.waiters.extend(waiter);
        drop(q);
        self.shared.wake.notify_one();
    }

    async fn push_durably(&self, r: Record) -> Result<(), JournalError> {
        let (tx, rx) = oneshot::channel();
        self.push(r, Some(tx));
        rx.await.map_err(|_| JournalError::Stopped)?
    }

    /// Records that the run `run` started; on disk when this returns.
    pub async fn open_run(&self, run: &str) -> Result<(), JournalError> {
        self.push_durably(Record::Open { run: run.into() }).await
    }

    /// Records that the run `run` ended (on disk with the next sync).
    pub fn close_run(&self, run: &str) {
        self.push(Record::Close { run: run.into() }, None);
    }

    /// Records a request about to be sent; on disk when this returns.
    pub async fn sent(&self, entry: Entry) -> Result<(), JournalError> {
        self.push_durably(Record::Sent(entry)).await
    }

    /// Closes the entry of request `id`, if there is one (on disk with the next sync).
    pub fn done(&self, id: &str) {
        let known = lock(&self.shared.queue).state.pending.contains_key(id);
        if known {
            self.push(Record::Done { id: id.into() }, None);
        }
    }

    /// The entry of request `id`, while it is in flight.
    pub fn lookup(&self, id: &str) -> Option<Entry> {
        lock(&self.shared.queue).state.pending.get(id).cloned()
    }

    /// Whether any request of the run `run` is still in flight.
    pub fn run_pending(&self, run: &str) -> bool {
        lock(&self.shared.queue)
            .state
            .pending
            .values()
            .any(|e| e.run == run)
    }

    /// Requests in flight.
    pub fn pending(&self) -> usize {
        lock(&self.shared.queue).state.pending.len()
    }
}

/// Writes `records` to a new file, syncs it and renames it over `path`; the result is open for
/// appending.
fn rewrite(path: &Path, records: &[Record]) -> std::io::Result<std::fs::File> {
    let tmp = path.with_extension("jsonl.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).expect("records serialize");
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    std::fs::OpenOptions::new().append(true).open(path)
}

/// The writer thread: appends what is queued and syncs once for all of it; rewrites the file
/// from the state when it has grown well past what is live.
fn writer(shared: Arc<Shared>, path: PathBuf, mut file: std::fs::File, mut lines: usize) {
    // After a failed write the last line may be torn: start the next on a fresh line.
    let mut torn = false;
    loop {
        let (records, waiters, snapshot) = {
            let mut q = lock(&shared.queue);
            while q.records.is_empty() && !q.stop {
                q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
            if q.records.is_empty() {
                return;
            }
            let records = std::mem::take(&mut q.records);
            let waiters = std::mem::take(&mut q.waiters);
            let total = lines + records.len();
            // The state already holds these records: a snapshot replaces them.
            let snapshot =
                (total > COMPACT_AFTER && total > 4 * q.state.live()).then(|| q.state.snapshot());
            (records, waiters, snapshot)
        };
        let result = match snapshot {
            Some(snap) => rewrite(&path, &snap).map(|f| {
                file = f;
                lines = snap.len();
                torn = false;
            }),
            None => {
                let mut buf = Vec::new();
                if torn {
                    buf.push(b'\n');
                }
                for r in &records {
                    serde_json::to_writer(&mut buf, r).expect("records serialize");
                    buf.push(b'\n');
                }
                let r = file.write_all(&buf).and_then(|()| file.sync_data());
                torn = r.is_err();
                lines += records.len();
                r
            }
        };
        let result = result.map_err(|e| JournalError::Io {
            path: path.clone(),
            message: e.to_string(),
        });
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// Opens the journal of the master tree `master`, marks the runs it had open as interrupted in
/// `history`, and returns the journal for [`LateResults`].
pub fn recover(master: &Path, history: &History) -> Result<Arc<Journal>, JournalError> {
    let path = master.join("logs").join(FILE);
    let (journal, interrupted) = Journal::open(&path).map_err(|e| JournalError::Io {
        path: path.clone(),
        message: e.to_string(),
    })?;
    for run in interrupted {
        match history.interrupt_run(&run) {
            Ok(true) => tracing::warn!(
                %run,
                "run interrupted by a restart of the master; results its minions deliver now are still recorded"
            ),
            Ok(false) => {}
            Err(e) => tracing::error!(%run, "marking the run interrupted: {e}"),
        }
    }
    let n = journal.pending();
    if n > 0 {
        tracing::info!(
            "{n} request(s) were in flight when the master stopped; their results are recorded when their minions deliver them"
        );
    }
    Ok(journal)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::server::journal) fn entry(id: &str, run: &str) -> Entry {
        Entry {
            id: id.into(),
            run: run.into(),
            minion: "web1".into(),
            what: "resources/file conform".into(),
            kind: "file".into(),
            action: "conform".into(),
            steps: vec![3],
            sensitive: vec![],
            sent: now_us(),
        }
    }

    #[tokio::test]
    async fn a_reopened_journal_has_the_requests_in_flight_and_the_runs_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs").join(FILE);
        {
            let (j, open) = Journal::open(&path).unwrap();
            assert!(open.is_empty());
            j.open_run("r1").await.unwrap();
            j.open_run("r2").await.unwrap();
            j.sent(entry("a-1", "r1")).await.unwrap();
            j.sent(entry("a-2", "r1")).await.unwrap();
            j.sent(entry("a-3", "r2")).await.unwrap();
            j.done("a-2");
            j.close_run("r2");
            j.done("a-3");
            // The lazy records reach the disk with the next durable one.
            j.sent(entry("a-4", "r1")).await.unwrap();
            assert_eq!(j.lookup("a-1").unwrap().steps, [3]);
            assert!(j.lookup("a-2").is_none());
            assert!(j.run_pending("r1"));
            assert!(!j.run_pending("r2"));
        }
        // A torn last line, as a crash mid-write leaves it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"op\":\"sent\",\"id\":\"a-")
            .unwrap();
        let (j, open) = Journal::open(&path).unwrap();
        assert_eq!(open, ["r1"]);
        assert_eq!(j.pending(), 2);
        assert_eq!(j.lookup("a-1").unwrap().run, "r1");
        assert!(j.lookup("a-4").is_some());
        // Rewritten with only what is live; read again, the runs are no longer open.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        drop(j);
        let (j, open) = Journal::open(&path).unwrap();
        assert!(open.is_empty());
        assert_eq!(j.pending(), 2);
    }

    #[tokio::test]
    async fn the_file_is_compacted_when_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let (j, _) = Journal::open(&path).unwrap();
        for i in 0..(COMPACT_AFTER + 10) {
            let id = format!("b-{i}");
            j.sent(entry(&id, "r")).await.unwrap();
            j.done(&id);
        }
        j.sent(entry("last", "r")).await.unwrap();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < COMPACT_AFTER, "{lines} lines");
        assert_eq!(j.pending(), 1);
    }
}
