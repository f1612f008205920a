//! The writer thread: the only place that writes, in batched transactions fed by a channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::backend::{Op, WriteBackend};
use crate::{Error, Result};

/// What a commit acknowledged (passed to [`WriterOptions::on_commit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Commit {
    /// Events in this batch.
    pub batch_events: u64,
    /// Events committed by this writer so far (all batches).
    pub total_events: u64,
}

/// A callback run on the writer thread after each committed batch.
pub type CommitHook = Box<dyn FnMut(Commit) + Send>;

/// Tuning of the writer thread.
pub struct WriterOptions {
    /// Most operations in one transaction.
    pub max_batch: usize,
    /// Operations queued before senders wait (back-pressure instead of unbounded memory).
    pub queue: usize,
    /// Run after each commit: lets a caller acknowledge durable events.
    pub on_commit: Option<CommitHook>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch: 16 * 1024,
            queue: 64 * 1024,
            on_commit: None,
        }
    }
}

impl std::fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterOptions")
            .field("max_batch", &self.max_batch)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
pub(crate) struct WriterState {
    /// The first write failure not yet reported by a flush.
    error: Mutex<Option<String>>,
    /// Events committed.
    pub committed: AtomicU64,
}

/// The sending side and the thread.
pub(crate) struct Writer {
    pub tx: SyncSender<Op>,
    thread: Mutex<Option<JoinHandle<()>>>,
    state: Arc<WriterState>,
}

impl Writer {
    pub fn spawn(backend: Box<dyn WriteBackend>, mut opts: WriterOptions) -> Self {
        let (tx, rx) = mpsc::sync_channel(opts.queue.max(1));
        let state = Arc::new(WriterState::default());
        let st = state.clone();
        let hook = opts.on_commit.take();
        let max = opts.max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("historian-writer".into())
            .spawn(move || writer_loop(backend, rx, st, hook, max))
            .expect("spawning the historian writer thread");
        Self {
            tx,
            thread: Mutex::new(Some(thread)),
            state,
        }
    }

    /// Sends an operation; an error means the writer thread is gone.
    pub fn send(&self, op: Op) -> Result<()> {
        self.tx
            .send(op)
            .map_err(|_| Error::Writer("the writer thread has stopped".into()))
    }

    /// Waits until everything sent before is committed; reports a write failure since the
    /// last flush.
    pub fn flush(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Op::Flush(tx))?;
        rx.recv()
            .map_err(|_| Error::Writer("the writer thread has stopped".into()))?;
        match self.take_error() {
            Some(e) => Err(Error::Writer(e)),
            None => Ok(()),
        }
    }

    pub fn take_error(&self) -> Option<String> {
        self.state
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn committed(&self) -> u64 {
        self.state.committed.load(Ordering::Relaxed)
    }

    /// Commits everything queued, stops the thread and waits for it. Sinks still alive
    /// afterwards drop their events.
    pub fn stop(&self) {
        let _ = self.tx.send(Op::Stop);
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn writer_loop(
    mut backend: Box<dyn WriteBackend>,
    rx: Receiver<Op>,
    state: Arc<WriterState>,
    mut hook: Option<CommitHook>,
    max: usize,
) {
    let mut batch: Vec<Op> = Vec::with_capacity(max);
    let mut total = 0u64;
    let mut stop = false;
    while let Ok(first) = rx.recv() {
        stop |= matches!(first, Op::Stop);
        batch.push(first);
        while batch.len() < max && !stop {
            match rx.try_recv() {
                Ok(op) => {
                    stop |= matches!(op, Op::Stop);
                    batch.push(op);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let events = batch
            .iter()
            .filter(|op| matches!(op, Op::Event { .. }))
            .count() as u64;
        #[cfg(debug_assertions)]
        hold_for_tests();
        let result = backend.write_batch(&batch);
        let mut keys = match &result {
            Ok(keys) => {
                total += events;
                state.committed.store(total, Ordering::Relaxed);
                keys.clone().into_iter()
            }
            Err(e) => {
                tracing::error!(error = %e, events, "history batch lost");
                let mut slot = state.error.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert_with(|| e.to_string());
                Vec::new().into_iter()
            }
        };
        for op in batch.drain(..) {
            match op {
                Op::StartRun { reply, .. } => {
                    let answer = match (&result, keys.next()) {
                        (Ok(_), Some(k)) => Ok(k),
                        (Err(e), _) => Err(e.to_string()),
                        (Ok(_), None) => Err("no key for a new run".into()),
                    };
                    let _ = reply.send(answer);
                }
                Op::Flush(reply) => {
                    let _ = reply.send(());
                }
                Op::AfterCommit(f) => f(result.is_ok()),
                _ => {}
            }
        }
        if let (Ok(_), Some(h)) = (&result, hook.as_mut()) {
            h(Commit {
                batch_events: events,
                total_events: total,
            });
        }
        if stop {
            break;
        }
    }
}

/// Debug builds only: while the file named by `INGOT_TEST_HOLD_COMMITS` exists, nothing is
/// committed. Tests use it to stop a master between receiving a result and storing it.
#[cfg(debug_assertions)]
fn hold_for_tests() {
    static HOLD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let hold = HOLD.get_or_init(|| std::env::var_os("INGOT_TEST_HOLD_COMMITS").map(Into::into));
    if let Some(path) = hold {
        while path.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
