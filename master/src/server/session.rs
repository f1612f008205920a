//! One minion as the master knows it, across its connections ([`Session`]), and the life of
//! one request to it ([`Request`]): registered, sent (now, or when the minion connects within
//! the grace period), its events forwarded, its result taken once, and its pending entry
//! removed however the wait ends.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use minion::wire::{Frame, Op, Reply, WireError};
use runner::EventSink;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::journal::{Journal, RunJournal};
use crate::routine::link::Described;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) struct Pending {
    pub(super) events: mpsc::UnboundedSender<channel3::Event>,
    pub(super) result: Option<oneshot::Sender<Reply>>,
    pub(super) last_seq: u64,
    /// The connection (generation) the request went out on, once sent.
    pub(super) sent_on: Option<u64>,
    /// Its result is acknowledged only once recorded (see [`Session::held`]).
    pub(super) hold_ack: bool,
}

/// See [`Session::described`].
#[derive(Default)]
struct DescribeCache {
    pub(super) epoch: (u64, u64),
    pub(super) kinds: HashMap<String, Option<Described>>,
}

pub(super) struct Conn {
    pub(super) tx: mpsc::UnboundedSender<Frame>,
    pub(super) generation: u64,
    pub(super) cut: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
pub(super) struct Info {
    pub(super) machine_id: String,
    pub(super) address: String,
    pub(super) version: String,
    pub(super) started: i64,
    pub(super) connected_since: i64,
    pub(super) last_seen: i64,
}

/// One minion as the master knows it, across connections.
pub struct Session {
    pub(super) name: String,
    pub(super) conn: Mutex<Option<Conn>>,
    pub(super) info: Mutex<Info>,
    pub(super) pending: Mutex<HashMap<String, Pending>>,
    /// Requests of recorded runs whose result arrived but is not committed to the history yet:
    /// not acknowledged until it is (a master dying meanwhile gets it again from the minion's
    /// spool after its restart), and copies re-sent meanwhile are ignored.
    pub(super) held: Mutex<HashSet<String>>,
    /// What this minion's resources said in `describe`, for the connection (generation) and
    /// install epoch that answered. The agent answers `describe` from its own cache for as
    /// long as it runs, forgetting a kind only when the master installs one, so the answers
    /// hold until the minion reconnects or something is installed: a run needs no round trip
    /// for them.
    described: Mutex<DescribeCache>,
    /// Bumped by every install of a user component.
    pub(super) installs: AtomicU64,
    /// Set to the connection (generation) a REBOOT went out on: the minion is inactive until
    /// it connects again (a later generation), so Directord jobs for it are held meanwhile
    /// (see [`crate::directord::relay`]).
    rebooting: Mutex<Option<u64>>,
    /// Bumped on every connect and disconnect, and when `rebooting` changes.
    pub(super) changes: watch::Sender<u64>,
}

impl Session {
    pub(super) fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            conn: Mutex::new(None),
            info: Mutex::new(Info::default()),
            pending: Mutex::new(HashMap::new()),
            held: Mutex::new(HashSet::new()),
            described: Mutex::new(DescribeCache::default()),
            installs: AtomicU64::new(0),
            rebooting: Mutex::new(None),
            changes: watch::channel(0).0,
        }
    }

    /// A REBOOT is about to go out on the current connection: the minion counts as inactive
    /// until it connects again. Returns that connection's generation (`None`: not connected,
    /// nothing marked).
    pub fn mark_rebooting(&self) -> Option<u64> {
        let generation = lock(&self.conn).as_ref().map(|c| c.generation)?;
        *lock(&self.rebooting) = Some(generation);
        tracing::info!(minion = %self.name, "REBOOT sent: inactive until it connects again");
        self.bump();
        Some(generation)
    }

    /// The REBOOT sent on connection `generation` failed while that connection still stands:
    /// the minion answered that it is not rebooting, so it is active again.
    pub fn reboot_not_started(&self, generation: u64) {
        let same = lock(&self.conn).as_ref().map(|c| c.generation) == Some(generation);
        let cleared = same && {
            let mut r = lock(&self.rebooting);
            let ours = *r == Some(generation);
            if ours {
                *r = None;
            }
            ours
        };
        if cleared {
            tracing::info!(minion = %self.name, "the REBOOT failed: active again");
            self.bump();
        }
    }

    /// Marked inactive by a REBOOT and not connected again since.
    pub fn rebooting(&self) -> bool {
        lock(&self.rebooting).is_some()
    }

    /// Connected again as `generation`: a REBOOT sent on an earlier connection is over.
    pub(super) fn back_from_reboot(&self, generation: u64) {
        let mut r = lock(&self.rebooting);
        if r.is_some_and(|g| g < generation) {
            *r = None;
            tracing::info!(minion = %self.name, "back after REBOOT: active again");
        }
    }

    /// The connection (generation) and install epoch `describe` answers are cached for, if
    /// connected.
    pub fn describe_epoch(&self) -> Option<(u64, u64)> {
        let generation = lock(&self.conn).as_ref().map(|c| c.generation)?;
        Some((generation, self.installs.load(Ordering::SeqCst)))
    }

    /// The cached `describe` of `kind`, if answered in `epoch`.
    pub fn cached_describe(&self, epoch: (u64, u64), kind: &str) -> Option<Option<Described>> {
        let c = lock(&self.described);
        (c.epoch == epoch).then(|| c.kinds.get(kind).cloned())?
    }

    /// Caches the answer of a `describe` of `kind` asked in `epoch`, if that is still the
    /// current one.
    pub fn cache_describe(&self, epoch: (u64, u64), kind: &str, d: &Option<Described>) {
        if self.describe_epoch() != Some(epoch) {
            return;
        }
        let mut c = lock(&self.described);
        if c.epoch != epoch {
            *c = DescribeCache {
                epoch,
                kinds: HashMap::new(),
            };
        }
        c.kinds.insert(kind.to_owned(), d.clone());
    }

    /// Acknowledges the result of request `id` on the current connection (if there is none,
    /// the minion sends the result again after reconnecting and gets its ack then).
    fn ack(&self, id: &str) {
        if let Some(c) = lock(&self.conn).as_ref() {
            let _ = c.tx.send(Frame::Ack { id: id.to_owned() });
        }
    }

    /// The result of the held request `id` is committed (or lost: `stored` false): the
    /// journal entry closes, then the minion may forget it.
    pub(super) fn release(&self, id: &str, journal: &Journal, stored: bool) {
        if !stored {
            tracing::error!(minion = %self.name, %id, "the result of this request could not be stored in the history (acknowledged anyway, its step stays without an outcome): check the history database's disk and the errors logged before this");
        }
        // Journal first: a copy arriving in between is still ignored as held, never taken
        // as a late delivery.
        journal.done(id);
        lock(&self.held).remove(id);
        self.ack(id);
    }

    /// Sends request `id` on the current connection and notes which one it went out on.
    pub fn send_request(&self, id: &str, op: &Op) -> bool {
        let Some((tx, generation)) = lock(&self.conn)
            .as_ref()
            .map(|c| (c.tx.clone(), c.generation))
        else {
            return false;
        };
        let sent = tx
            .send(Frame::Request {
                id: id.to_owned(),
                op: op.clone(),
            })
            .is_ok();
        if sent {
            if let Some(p) = lock(&self.pending).get_mut(id) {
                p.sent_on = Some(generation);
            }
        }
        sent
    }

    /// A minion reconnected as connection `generation`, holding (running or spooled) the
    /// requests `held`: any other request sent on an earlier connection never reached it (it
    /// went down with that connection's buffers), so it fails now rather than waiting for a
    /// result that cannot come. It is not re-sent: nothing runs twice.
    pub(super) fn fail_lost(&self, generation: u64, held: &[String]) {
        let mut pending = lock(&self.pending);
        for (id, p) in pending.iter_mut() {
            if p.sent_on.is_some_and(|g| g < generation) && !held.contains(id) {
                if let Some(r) = p.result.take() {
                    tracing::warn!(minion = %self.name, %id, "request lost with the old connection");
                    let _ = r.send(Reply::Err(WireError::Unreachable {
                        message: format!(
                            "the connection to {} dropped before the request reached it; it did not run and was not sent again (run the command again now that the minion is back)",
                            self.name
                        ),
                    }));
                }
            }
        }
    }

    /// The minion's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connected right now.
    pub fn connected(&self) -> bool {
        lock(&self.conn).is_some()
    }

    pub(super) fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }

    /// A user component was installed on the minion: the agent forgot the kind's
    /// `describe`, so does every cache of it here (an answer to a describe asked before is
    /// not kept).
    pub fn installed(&self) {
        self.installs.fetch_add(1, Ordering::SeqCst);
    }

    /// Registers request `id` and sends it now when the minion is connected, before any
    /// `.await`: requests begun one after another reach the minion in that order (a
    /// Directord queue relies on it to pipeline its jobs). `hold_ack`: acknowledge the result
    /// only once [`Session::release`]d (a journaled request of a recorded run).
    pub fn begin(self: &Arc<Self>, id: String, op: Op, hold_ack: bool) -> Request {
        let (etx, events) = mpsc::unbounded_channel();
        let (rtx, result) = oneshot::channel();
        lock(&self.pending).insert(
            id.clone(),
            Pending {
                events: etx,
                result: Some(rtx),
                last_seq: 0,
                sent_on: None,
                hold_ack,
            },
        );
        let sent = self.send_request(&id, &op);
        Request {
            guard: PendingGuard {
                session: self.clone(),
                id,
                journaled: None,
            },
            op,
            sent,
            events,
            result,
        }
    }
}

/// Removes a request's pending entry (and closes its journal entry) however its wait ends
/// (or if it is never awaited).
struct PendingGuard {
    session: Arc<Session>,
    id: String,
    /// The recorded run that journaled this request, with the steps it performs.
    pub(super) journaled: Option<(Arc<RunJournal>, Vec<i64>)>,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        // Only a journaled request's result is ever held.
        let held = self.journaled.is_some() && lock(&self.session.held).contains(&self.id);
        // Journal first: a frame arriving in between still finds the pending entry, so it is
        // never taken as a late delivery.
        if let (Some((run, _)), false) = (&self.journaled, held) {
            run.journal().done(&self.id);
        }
        lock(&self.session.pending).remove(&self.id);
        // A result received is acknowledged (and its entry closed) once it is in the
        // history: after its steps ended (the routine records them once the request
        // returns), else with what is queued now (its events, forwarded before this).
        if let (Some((run, steps)), true) = (self.journaled.take(), held) {
            let (session, journal, id) =
                (self.session.clone(), run.journal().clone(), self.id.clone());
            run.release_when_recorded(
                &self.session.name,
                steps,
                Box::new(move |stored| session.release(&id, &journal, stored)),
            );
        }
    }
}

/// A request registered with its session and, if the minion was connected, already sent.
pub struct Request {
    guard: PendingGuard,
    op: Op,
    sent: bool,
    events: mpsc::UnboundedReceiver<channel3::Event>,
    result: oneshot::Receiver<Reply>,
}

impl Request {
    /// The request's id.
    pub fn id(&self) -> &str {
        &self.guard.id
    }

    /// The recorded run that journaled this request, with the steps it performs: its pending
    /// entry and journal entry close together, and a held result is released once those
    /// steps are stored.
    pub fn journaled(&mut self, run: Arc<RunJournal>, steps: Vec<i64>) {
        self.guard.journaled = Some((run, steps));
    }

    /// Sends the request if [`Session::begin`] could not (waiting up to `grace` for a
    /// connection), then waits for its result, forwarding its events to `sink`; a minion away
    /// for longer than `grace` fails it as unreachable.
    pub async fn finish(self, grace: Duration, sink: &dyn EventSink) -> Result<Value, WireError> {
        let Request {
            guard,
            op,
            sent,
            events: mut erx,
            result: mut rrx,
        } = self;
        let session = guard.session.clone();
        let id = guard.id.clone();
        let label = op.label();
        let mut changes = session.changes.subscribe();
        let name = &session.name;
        let unreachable = |what: &str| {
            WireError::Unreachable {
                message: format!(
                    "minion {name} unreachable: {what} ({label}); check `ingot manage --list-nodes` and the minion agent's log"
                ),
            }
        };
        // Send, waiting up to the grace period for a connection.
        let deadline = Instant::now() + grace;
        let mut sent = sent;
        while !sent {
            changes.borrow_and_update();
            if session.send_request(&id, &op) {
                sent = true;
                continue;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() || tokio::time::timeout(wait, changes.changed()).await.is_err() {
                return Err(unreachable(&format!(
                    "not connected within {}s",
                    grace.as_secs()
                )));
            }
        }
        // Wait for the result, forwarding events; give up when the minion stays away (it may
        // have left between `begin` and the subscription above).
        let mut away_since = (!session.connected()).then(Instant::now);
        loop {
            let give_up = away_since.map(|t| t + grace);
            tokio::select! {
                Some(ev) = erx.recv() => sink.emit(ev),
                r = &mut rrx => {
                    while let Ok(ev) = erx.try_recv() {
                        sink.emit(ev);
                    }
                    return match r {
                        Ok(Reply::Ok(v)) => Ok(v),
                        Ok(Reply::Err(e)) => Err(e),
                        Err(_) => Err(unreachable("the request was dropped")),
                    };
                }
                r = changes.changed() => {
                    if r.is_err() {
                        return Err(unreachable("the session ended"));
                    }
                    away_since = if session.connected() {
                        None
                    } else {
                        away_since.or(Some(Instant::now()))
                    };
                }
                _ = async { tokio::time::sleep_until(give_up.expect("set").into()).await }, if give_up.is_some() => {
                    return Err(unreachable(&format!(
                        "disconnected while it ran and did not come back within {}s",
                        grace.as_secs()
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn connect(s: &Session, generation: u64) {
        *lock(&s.conn) = Some(Conn {
            tx: mpsc::unbounded_channel().0,
            generation,
            cut: Arc::new(tokio::sync::Notify::new()),
        });
    }

    #[test]
    fn describe_answers_hold_for_one_connection_until_an_install() {
        let s = Session::new("web1");
        assert_eq!(s.describe_epoch(), None, "not connected: nothing cached");
        connect(&s, 1);
        let epoch = s.describe_epoch().unwrap();
        let file = Some(Described {
            identity: vec!["path".into()],
            batch: true,
            schema: None,
        });
        assert_eq!(s.cached_describe(epoch, "file"), None);
        s.cache_describe(epoch, "file", &file);
        s.cache_describe(epoch, "nothing", &None);
        assert_eq!(s.cached_describe(epoch, "file"), Some(file.clone()));
        assert_eq!(s.cached_describe(epoch, "nothing"), Some(None));

        // An install makes the agent forget: so does the cache, and an answer to a describe
        // asked before it is not kept.
        s.installs.fetch_add(1, Ordering::SeqCst);
        let after = s.describe_epoch().unwrap();
        assert_ne!(after, epoch);
        assert_eq!(s.cached_describe(after, "file"), None);
        s.cache_describe(epoch, "file", &file);
        assert_eq!(s.cached_describe(after, "file"), None);
        s.cache_describe(after, "file", &file);
        assert_eq!(s.cached_describe(after, "file"), Some(file.clone()));

        // A new connection may be a new agent: asked again.
        connect(&s, 2);
        let again = s.describe_epoch().unwrap();
        assert_eq!(s.cached_describe(again, "file"), None);
    }
}
