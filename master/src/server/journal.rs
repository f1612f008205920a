//! The master's journal of requests in flight: what lets a run survive a restart of the master.
//!
//! Before the master sends a request that belongs to a recorded run, it appends to
//! `MASTER/logs/inflight.jsonl` the request id with its run, minion and step(s), and waits
//! until the line is on disk (`fdatasync`; concurrent requests share one sync: a writer thread
//! commits whatever is queued at once). A delivered result closes the entry. When the master
//! starts, it reads the file back: the runs it had open are marked `interrupted` in the history,
//! and when a minion re-sends what it spooled for a journaled id ([`LateResults`]), the events
//! and the step outcomes go into that run and step, the result is acknowledged (the minion
//! deletes its spool file) and the request is never sent again.
//!
//! Why a file under `MASTER/` and not a table in the history: the journal belongs to one master,
//! while the history may be a PostgreSQL database several masters share (a table would need an
//! owner key, and each master's start-up sweep would have to stay within its own runs); the file
//! works alike for both backends, needs no schema migration, and syncing a few appended lines is
//! cheaper than waiting for a committed transaction before every request.
//!
//! Records, one JSON object a line: `open` (a recorded run started), `sent` (an [`Entry`]),
//! `done` (its result arrived or it was given up), `close` (the run ended). The file is
//! rewritten with only what is live when it has grown well past that, and at start-up.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use historian::{History, RunHandle, StepEnd, StepOutcome, StepStart, Store};
use runner::EventSink;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::routine::documents::Step;
use crate::routine::link::LinkError;
use minion::wire::{Frame, Op, Reply};

/// The journal's file name in `MASTER/logs/`.
pub const FILE: &str = "inflight.jsonl";

/// Entries older than this are dropped at start-up: their minion never delivered.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 86400);

/// Rewrite the file when it has more lines than this and four times what is live.
const COMPACT_AFTER: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_us() -> i64 {
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

type Waiter = oneshot::Sender<Result<(), String>>;

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

    async fn push_durably(&self, r: Record) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.push(r, Some(tx));
        rx.await
            .map_err(|_| "the journal's writer thread stopped".to_string())?
    }

    /// Records that the run `run` started; on disk when this returns.
    pub async fn open_run(&self, run: &str) -> Result<(), String> {
        self.push_durably(Record::Open { run: run.into() }).await
    }

    /// Records that the run `run` ended (on disk with the next sync).
    pub fn close_run(&self, run: &str) {
        self.push(Record::Close { run: run.into() }, None);
    }

    /// Records a request about to be sent; on disk when this returns.
    pub async fn sent(&self, entry: Entry) -> Result<(), String> {
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
        let result = result.map_err(|e| format!("journal {}: {e}", path.display()));
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

/// A step being performed in a journaled run.
#[derive(Debug, Clone)]
struct OpenStep {
    no: i64,
    kind: String,
    action: String,
    sensitive: Vec<String>,
}

/// What acknowledges a request's result to its minion and closes its journal entry, called
/// once the result is committed to the history (`true`) or lost there (`false`).
pub type Release = Box<dyn FnOnce(bool) + Send + Sync>;

/// A result received whose steps are not recorded yet.
struct HeldResult {
    minion: String,
    /// Its steps still being performed.
    steps: Vec<i64>,
    release: Release,
}

/// The journal's view of one recorded run while it runs: which steps each minion is
/// performing, so a request can be journaled with them, and the results received but not
/// yet recorded, acknowledged once they are.
pub struct RunJournal {
    journal: Arc<Journal>,
    history: Arc<History>,
    run: String,
    steps: Mutex<HashMap<String, Vec<OpenStep>>>,
    held: Mutex<Vec<HeldResult>>,
}

impl std::fmt::Debug for RunJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunJournal")
            .field("run", &self.run)
            .field("steps", &self.steps)
            .field("held", &lock(&self.held).len())
            .finish_non_exhaustive()
    }
}

impl RunJournal {
    /// Journals the start of the run `run`, recorded in `history` (on disk when this returns).
    pub async fn start(
        journal: Arc<Journal>,
        history: Arc<History>,
        run: &str,
    ) -> Result<Arc<Self>, String> {
        journal.open_run(run).await?;
        Ok(Arc::new(Self {
            journal,
            history,
            run: run.into(),
            steps: Mutex::new(HashMap::new()),
            held: Mutex::new(Vec::new()),
        }))
    }

    /// The result of a request `minion` answered is in hand: `release` it once the history
    /// holds it, that is once the steps it performs (`steps`) ended and their ends are
    /// committed, or, with no steps, once what is queued now is committed.
    pub fn release_when_recorded(&self, minion: &str, steps: Vec<i64>, release: Release) {
        let open = lock(&self.steps)
            .get(minion)
            .is_some_and(|o| o.iter().any(|s| steps.contains(&s.no)));
        if open {
            lock(&self.held).push(HeldResult {
                minion: minion.to_owned(),
                steps,
                release,
            });
        } else {
            self.history.after_commit(release);
        }
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// `minion` begins performing `step`, number `no` in the run.
    pub fn begin_step(&self, minion: &str, no: i64, step: &Step) {
        lock(&self.steps)
            .entry(minion.to_owned())
            .or_default()
            .push(OpenStep {
                no,
                kind: step.kind.clone(),
                action: step.action.clone(),
                sensitive: runner::redact::sensitive_fields(&step.state),
            });
    }

    /// Step `no` on `minion` ended, its end queued for the history: the results waiting for
    /// it are released once that is committed.
    pub fn end_step(&self, minion: &str, no: i64) {
        if let Some(open) = lock(&self.steps).get_mut(minion) {
            open.retain(|s| s.no != no);
        }
        let ready: Vec<HeldResult> = {
            let mut held = lock(&self.held);
            for h in held.iter_mut().filter(|h| h.minion == minion) {
                h.steps.retain(|s| *s != no);
            }
            let (ready, waiting) = std::mem::take(&mut *held)
                .into_iter()
                .partition(|h| h.steps.is_empty());
            *held = waiting;
            ready
        };
        for h in ready {
            self.history.after_commit(h.release);
        }
    }

    /// The entry for request `id` doing `op` on `minion`: with the steps `minion` is performing
    /// when `op` is their action. `None` for what is not recorded (descriptions, jobs).
    pub fn entry(&self, id: &str, minion: &str, op: &Op) -> Option<Entry> {
        let (kind, action) = match op {
            Op::Facts => ("", "facts"),
            Op::Resource { kind, action, .. } => (kind.as_str(), action.as_str()),
            // Descriptions, jobs, transfers and the like are not steps of a recorded run.
            _ => return None,
        };
        let steps: Vec<OpenStep> = lock(&self.steps)
            .get(minion)
            .map(|open| {
                open.iter()
                    .filter(|s| s.kind == kind && s.action == action)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut sensitive: Vec<String> = steps.iter().flat_map(|s| s.sensitive.clone()).collect();
        sensitive.sort();
        sensitive.dedup();
        Some(Entry {
            id: id.into(),
            run: self.run.clone(),
            minion: minion.into(),
            what: op.label(),
            kind: kind.into(),
            action: action.into(),
            steps: steps.iter().map(|s| s.no).collect(),
            sensitive,
            sent: now_us(),
        })
    }

    /// The run ended.
    pub fn finish(&self) {
        self.release_all();
        self.journal.close_run(&self.run);
    }

    /// Releases every held result once what is queued now is committed: their steps will
    /// not end (the run is over).
    fn release_all(&self) {
        for h in std::mem::take(&mut *lock(&self.held)) {
            self.history.after_commit(h.release);
        }
    }
}

impl Drop for RunJournal {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// Frames of a journaled request from before a restart, collected until its result.
struct Late {
    entry: Entry,
    last_seq: u64,
    events: Vec<channel3::Event>,
    /// Its result is being recorded: later copies are ignored.
    closing: bool,
}

/// A reattached run, with the events already stored per minion (counted by step, timestamp,
/// key and data), so that frames re-sent after a restart are not stored twice.
struct Reattached {
    handle: RunHandle,
    stored: HashMap<String, HashMap<EventKey, usize>>,
}

type EventKey = (Option<i64>, i64, String, String);

fn event_key(step: Option<i64>, ev: &channel3::Event) -> EventKey {
    (
        step,
        ev.ts.0,
        ev.message.key.clone(),
        ev.message.data.get().to_owned(),
    )
}

/// What [`LateResults`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The request is journaled: the frame was taken (or ignored as a copy).
    Journaled,
    /// Not a request this master journaled for that minion.
    Unknown,
}

/// Records what minions deliver for requests journaled before the master restarted.
pub struct LateResults {
    journal: Arc<Journal>,
    history: Arc<History>,
    late: Mutex<HashMap<String, Late>>,
    runs: Mutex<HashMap<String, Reattached>>,
}

impl LateResults {
    /// Late results of `journal`'s requests go into `history`.
    pub fn new(journal: Arc<Journal>, history: Arc<History>) -> Arc<Self> {
        Arc::new(Self {
            journal,
            history,
            late: Mutex::new(HashMap::new()),
            runs: Mutex::new(HashMap::new()),
        })
    }

    /// The journal.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// Runs `f` on the collected frames of `id` from `minion`, starting a collection when `id`
    /// is journaled for `minion`.
    fn with_late<T>(&self, minion: &str, id: &str, f: impl FnOnce(&mut Late) -> T) -> Option<T> {
        let mut late = lock(&self.late);
        if !late.contains_key(id) {
            let entry = self.journal.lookup(id).filter(|e| e.minion == minion)?;
            late.insert(
                id.to_owned(),
                Late {
                    entry,
                    last_seq: 0,
                    events: Vec::new(),
                    closing: false,
                },
            );
        }
        late.get_mut(id).map(f)
    }

    /// An event of request `id` from `minion`.
    pub fn event(&self, minion: &str, id: &str, seq: u64, ev: channel3::Event) -> Taken {
        let taken = self.with_late(minion, id, |l| {
            if !l.closing && seq > l.last_seq {
                l.last_seq = seq;
                l.events.push(ev);
            }
        });
        match taken {
            Some(()) => Taken::Journaled,
            None => Taken::Unknown,
        }
    }

    /// The result of request `id` from `minion`: recorded in the background; `ack` gets the
    /// acknowledgement once it is committed.
    pub fn result(
        self: &Arc<Self>,
        minion: &str,
        id: &str,
        reply: Reply,
        ack: mpsc::UnboundedSender<Frame>,
    ) -> Taken {
        let taken = self.with_late(minion, id, |l| {
            if l.closing {
                return None;
            }
            l.closing = true;
            Some((l.entry.clone(), std::mem::take(&mut l.events)))
        });
        let Some(work) = taken else {
            return Taken::Unknown;
        };
        let Some((entry, events)) = work else {
            return Taken::Journaled;
        };
        let this = self.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let rec = this.clone();
            let entry2 = entry.clone();
            let r = tokio::task::spawn_blocking(move || rec.record(&entry2, events, reply))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r);
            lock(&this.late).remove(&id);
            match r {
                Ok(()) => {
                    this.journal.done(&id);
                    if !this.journal.run_pending(&entry.run) {
                        lock(&this.runs).remove(&entry.run);
                    }
                    tracing::info!(
                        minion = %entry.minion,
                        run = %entry.run,
                        %id,
                        "recorded the result of {} delivered after a restart of the master",
                        entry.what
                    );
                    let _ = ack.send(Frame::Ack { id });
                }
                // Not acknowledged: the minion sends it again after its next reconnect.
                Err(e) => tracing::error!(
                    minion = %entry.minion,
                    run = %entry.run,
                    %id,
                    "recording the result of {} delivered after a restart: {e}",
                    entry.what
                ),
            }
        });
        Taken::Journaled
    }

    /// Stores the events not stored yet, the steps' outcomes, and waits for the commit.
    fn record(
        &self,
        entry: &Entry,
        events: Vec<channel3::Event>,
        reply: Reply,
    ) -> Result<(), String> {
        let step = entry.steps.first().copied();
        let (handle, mut stored) = self.reattach(&entry.run, &entry.minion)?;
        let sink = match step {
            Some(no) => handle.step_sink(&entry.minion, no),
            None => handle.sink(&entry.minion),
        };
        let span = events
            .first()
            .zip(events.last())
            .map(|(a, b)| Duration::from_micros((b.ts.0 - a.ts.0).max(0) as u64));
        for ev in events {
            let key = event_key(step, &ev);
            match stored.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => sink.emit(ev),
            }
        }
        if !entry.steps.is_empty() {
            let duration = span
                .unwrap_or_else(|| Duration::from_micros((now_us() - entry.sent).max(0) as u64));
            let each = duration / entry.steps.len() as u32;
            let mask = json!({ "sensitive": entry.sensitive });
            for (no, result) in entry.steps.iter().zip(step_results(entry, reply)) {
                let end = match result {
                    Ok(after) => StepEnd {
                        after: Some(if entry.sensitive.is_empty() {
                            after
                        } else {
                            crate::routine::redact_with(&after, &mask)
                        }),
                        outcome: Some(StepOutcome::Changed),
                        ..StepEnd::default()
                    },
                    Err(error) => StepEnd {
                        outcome: Some(StepOutcome::Failed),
                        error: Some(error),
                        ..StepEnd::default()
                    },
                };
                handle.end_step(
                    *no,
                    StepStart {
                        minion: entry.minion.clone(),
                        kind: entry.kind.clone(),
                        action: entry.action.clone(),
                        desired: Value::Null,
                    },
                    end,
                    channel3::Timestamp(entry.sent),
                    each,
                );
            }
        }
        // Copies of these events sent again are counted as stored from now on.
        self.history.flush().map_err(|e| e.to_string())
    }

    /// The run's handle and the events stored for `minion` (loaded once per run and minion).
    fn reattach(
        &self,
        run: &str,
        minion: &str,
    ) -> Result<(RunHandle, HashMap<EventKey, usize>), String> {
        let mut runs = lock(&self.runs);
        if !runs.contains_key(run) {
            let handle = self
                .history
                .reattach_run(run)
                .map_err(|e| format!("reopening run {run}: {e}"))?;
            runs.insert(
                run.to_owned(),
                Reattached {
                    handle,
                    stored: HashMap::new(),
                },
            );
        }
        let r = runs.get_mut(run).expect("inserted above");
        if !r.stored.contains_key(minion) {
            let counts = stored_events(&self.history, run, minion)?;
            r.stored.insert(minion.to_owned(), counts);
        }
        // Handed out, not shared: each request's events are matched against what was stored
        // before the restart, and no two requests store the same events.
        let stored = r.stored.get(minion).cloned().unwrap_or_default();
        Ok((r.handle.clone(), stored))
    }
}

/// The events of `minion` stored in run `run`, counted by [`EventKey`].
fn stored_events(
    history: &History,
    run: &str,
    minion: &str,
) -> Result<HashMap<EventKey, usize>, String> {
    let wrap = |e: historian::Error| format!("reading run {run}: {e}");
    let mut store = Store::open(history.location()).map_err(wrap)?;
    let summary = store.find(run).map_err(wrap)?;
    let mut counts = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.events_after(&summary, after, 10_000).map_err(wrap)?;
        let Some(last) = page.last() else {
            return Ok(counts);
        };
        after = last.seq;
        for e in page.into_iter().filter(|e| e.minion == minion) {
            *counts.entry((e.step, e.ts.0, e.key, e.data)).or_insert(0) += 1;
        }
    }
}

/// Each step's result from the reply of the request that performed them (one element each
/// for a batch).
fn step_results(entry: &Entry, reply: Reply) -> Vec<Result<Value, String>> {
    let n = entry.steps.len();
    match reply {
        Reply::Ok(v) if n == 1 => vec![Ok(v)],
        Reply::Ok(Value::Array(items)) if items.len() == n => items
            .into_iter()
            .map(|v| match v.get("error") {
                Some(e) if v.as_object().is_some_and(|o| o.len() == 1) => Err(format!(
                    "resources/{} conform: {}",
                    entry.kind,
                    e.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.to_string())
                )),
                _ => Ok(v),
            })
            .collect(),
        Reply::Ok(_) => vec![
            Err(format!(
                "resources/{} conform: a batch of {n} states must give as many results",
                entry.kind
            ));
            n
        ],
        Reply::Err(e) => vec![Err(LinkError::from(e).to_string()); n],
    }
}

/// Opens the journal of the master tree `master`, marks the runs it had open as interrupted in
/// `history`, and returns the journal for [`LateResults`].
pub fn recover(master: &Path, history: &History) -> Result<Arc<Journal>, String> {
    let path = master.join("logs").join(FILE);
    let (journal, interrupted) =
        Journal::open(&path).map_err(|e| format!("journal {}: {e}", path.display()))?;
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
mod tests {
    use super::*;

    fn entry(id: &str, run: &str) -> Entry {
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

    #[test]
    fn batch_results_are_split_per_step() {
        let mut e = entry("x", "r");
        e.steps = vec![4, 5];
        let r = step_results(
            &e,
            Reply::Ok(json!([{"path": "/a"}, {"error": "no space"}])),
        );
        assert_eq!(r[0], Ok(json!({"path": "/a"})));
        assert_eq!(r[1], Err("resources/file conform: no space".into()));
        let r = step_results(&e, Reply::Ok(json!({"x": 1})));
        assert!(r.iter().all(Result::is_err));
    }
}
