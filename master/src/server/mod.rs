//! The master server: accepts minions over TLS ([`connection`]), keeps one [`Session`] per
//! minion name across its connections, and carries requests to them and their events and
//! results back ([`session::Request`]). It knows no feature: a minion's questions (frame
//! `ask`, e.g. Directord's JOB_WAIT) go to the [`Questions`] handler it is given, and the
//! features (the fleet's routine, Directord) drive minions through sessions.
//!
//! A session outlives its connections: requests in flight stay pending while a minion is away
//! (up to the grace period), and the events and result it spooled meanwhile are taken after it
//! reconnects, de-duplicated by request id and sequence number. [`journal`] keeps the requests
//! of recorded runs on disk, so a restarted master records the results minions deliver late.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use minion::wire::{Ask, Reply, WireError};
use serde::Serialize;

use crate::ca::admission::RegistryCache;
use crate::ca::now_secs;
use journal::{Journal, LateResults};

mod connection;
pub mod journal;
pub mod session;

pub use session::{Request, Session};

/// Why a minion marked inactive by a REBOOT is not back ([`Hub::wait_back`]).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotBack {
    /// It was forgotten meanwhile.
    #[error("{0} was purged (`ingot manage --purge-nodes`) while this job waited for it to come back after REBOOT; the job was not sent to it")]
    Purged(String),
    /// It did not connect again in time.
    #[error("{name} did not come back within {secs}s after REBOOT (the limit is this job's --timeout); the job was not sent to it: check the machine, then `ingot manage --list-nodes`")]
    Timeout {
        /// The minion.
        name: String,
        /// The limit.
        secs: u64,
    },
}

/// A future of a [`Questions`] answer.
pub type Answering<'a> = Pin<Box<dyn Future<Output = Reply> + Send + 'a>>;

/// Answers the questions minions ask the master (frame `ask`). The server only carries them:
/// the handler is given to it ([`Hub::set_questions`]) by whoever puts the master together.
pub trait Questions: Send + Sync {
    /// The answer to `ask` from the minion `asker`, asking other minions through `hub` if it
    /// must.
    fn answer<'a>(&'a self, hub: &'a Arc<Hub>, asker: &'a str, ask: Ask) -> Answering<'a>;
}

/// Timings of the server.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// Seconds between pings; a connection silent for three of these is cut.
    pub heartbeat: Duration,
    /// How long a request waits for its minion to come back after a disconnect.
    pub grace: Duration,
    /// How long the TLS handshake and `hello` may take.
    pub handshake_timeout: Duration,
    /// Renew a minion's certificate when it expires sooner than this.
    pub renew_before: Duration,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            renew_before: Duration::from_secs(30 * 86400),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What `ingot manage --list-nodes` shows.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// The minion's name.
    pub name: String,
    /// `connected`, `rebooting` (a REBOOT went out and it has not connected again since:
    /// Directord's inactive), `expired` (stopped answering / disconnected), `never-seen` or
    /// `revoked`.
    pub state: String,
    /// Its certificate's expiry (Unix seconds).
    pub cert_expiry: Option<i64>,
    /// The agent's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime: Option<i64>,
    /// Its machine id.
    pub machine_id: String,
    /// The address it connected from.
    pub address: String,
    /// Unix seconds of the last frame from it.
    pub last_seen: Option<i64>,
    /// Unix seconds when its current (or last) connection was made.
    pub connected_since: Option<i64>,
}

/// Every session of the master.
pub struct Hub {
    sessions: Mutex<BTreeMap<String, Arc<Session>>>,
    next_id: AtomicU64,
    boot: String,
    generation: AtomicU64,
    opts: HubOptions,
    registry: Arc<RegistryCache>,
    /// The journal of requests in flight and what records their results after a restart
    /// (set when runs are recorded).
    late: std::sync::OnceLock<Arc<LateResults>>,
    /// Who answers the minions' questions.
    questions: OnceLock<Arc<dyn Questions>>,
}

impl Hub {
    /// How long a request waits for its minion to come back after a disconnect.
    pub fn grace(&self) -> Duration {
        self.opts.grace
    }

    /// A hub checking names against `registry`.
    pub fn new(opts: HubOptions, registry: Arc<RegistryCache>) -> Arc<Self> {
        Arc::new(Self {
            sessions: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            boot: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            generation: AtomicU64::new(1),
            opts,
            registry,
            late: std::sync::OnceLock::new(),
            questions: OnceLock::new(),
        })
    }

    /// Journals the requests of recorded runs in `journal` (see [`crate::server::journal`]), and
    /// records into `history` the results minions deliver for requests journaled before a
    /// restart. Only the first call counts.
    pub fn set_journal(&self, journal: Arc<Journal>, history: Arc<historian::History>) {
        let _ = self.late.set(LateResults::new(journal, history));
    }

    /// Hands the minions' questions to `questions`. Only the first call counts.
    pub fn set_questions(&self, questions: Arc<dyn Questions>) {
        let _ = self.questions.set(questions);
    }

    /// The answer to a minion's question, from the handler (an error when there is none).
    pub(crate) async fn answer(self: &Arc<Self>, asker: &str, ask: Ask) -> Reply {
        match self.questions.get() {
            Some(q) => q.answer(self, asker, ask).await,
            None => Reply::Err(WireError::Unreachable {
                message: "this master answers no questions from minions".into(),
            }),
        }
    }

    /// The journal of requests in flight, when runs are recorded.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.late.get().map(|l| l.journal())
    }

    /// A new request id, unique across restarts of this master.
    pub fn new_id(&self) -> String {
        format!(
            "{}-{}",
            self.boot,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub(crate) fn session(&self, name: &str) -> Arc<Session> {
        lock(&self.sessions)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(Session::new(name)))
            .clone()
    }

    /// Sessions whose names match one of `globs`, in name order.
    pub fn matching(&self, globs: &globset::GlobSet) -> Vec<Arc<Session>> {
        lock(&self.sessions)
            .values()
            .filter(|s| globs.is_match(&s.name))
            .cloned()
            .collect()
    }

    /// The session of the minion `name`, when it is connected.
    pub fn connected_session(&self, name: &str) -> Option<Arc<Session>> {
        lock(&self.sessions)
            .get(name)
            .filter(|s| s.connected())
            .cloned()
    }

    /// Names of connected minions.
    pub fn connected_names(&self) -> Vec<String> {
        lock(&self.sessions)
            .values()
            .filter(|s| s.connected())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Names of the minions a Directord job may target: the connected ones and those away
    /// after a REBOOT (their jobs wait for them, see [`Hub::wait_back`]), in name order.
    pub fn target_names(&self) -> Vec<String> {
        lock(&self.sessions)
            .values()
            .filter(|s| s.connected() || s.rebooting())
            .map(|s| s.name.clone())
            .collect()
    }

    /// Whether `name` is marked inactive by a REBOOT.
    pub fn rebooting(&self, name: &str) -> bool {
        lock(&self.sessions)
            .get(name)
            .is_some_and(|s| s.rebooting())
    }

    /// Waits until `name`, marked inactive by a REBOOT, has connected again on a new
    /// connection; `Err` with why when it has not within `limit`, or was purged meanwhile.
    pub async fn wait_back(&self, name: &str, limit: Duration) -> Result<(), NotBack> {
        let Some(session) = lock(&self.sessions).get(name).cloned() else {
            return Ok(());
        };
        let mut changes = session.changes.subscribe();
        // A limit too far to add to now (a huge --timeout) never runs out.
        let deadline = Instant::now().checked_add(limit);
        loop {
            changes.borrow_and_update();
            let current = lock(&self.sessions)
                .get(name)
                .is_some_and(|s| Arc::ptr_eq(s, &session));
            if !current {
                return Err(NotBack::Purged(name.to_owned()));
            }
            if !session.rebooting() {
                return Ok(());
            }
            let wait = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if wait.is_zero() || tokio::time::timeout(wait, changes.changed()).await.is_err() {
                return Err(NotBack::Timeout {
                    name: name.to_owned(),
                    secs: limit.as_secs(),
                });
            }
        }
    }

    /// Everything known about every minion (sessions, and issued certificates never seen).
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let reg = self.registry.get();
        let now = now_secs();
        let sessions = lock(&self.sessions).clone();
        let mut out: BTreeMap<String, NodeInfo> = BTreeMap::new();
        for (name, s) in &sessions {
            // `conn` before `info`, as a connecting minion takes them: never both the other
            // way round (a deadlock with `ingot manage --list-nodes` while a minion connects).
            let connected = s.connected();
            let rebooting = s.rebooting();
            let info = lock(&s.info);
            let alive = connected
                && now - info.last_seen <= 3 * self.opts.heartbeat.as_secs().max(1) as i64;
            let state = match (rebooting, alive) {
                (true, _) => "rebooting",
                (false, true) => "connected",
                (false, false) => "expired",
            };
            out.insert(
                name.clone(),
                NodeInfo {
                    name: name.clone(),
                    state: state.into(),
                    cert_expiry: reg.minions.get(name).map(|i| i.not_after),
                    version: info.version.clone(),
                    uptime: Some(now - info.started),
                    machine_id: info.machine_id.clone(),
                    address: info.address.clone(),
                    last_seen: Some(info.last_seen),
                    connected_since: Some(info.connected_since),
                },
            );
        }
        for (name, i) in &reg.minions {
            out.entry(name.clone()).or_insert_with(|| NodeInfo {
                name: name.clone(),
                state: if i.revoked.is_some() {
                    "revoked".into()
                } else {
                    "never-seen".into()
                },
                cert_expiry: Some(i.not_after),
                version: String::new(),
                uptime: None,
                machine_id: String::new(),
                address: String::new(),
                last_seen: None,
                connected_since: None,
            });
        }
        out.into_values().collect()
    }
}

impl Hub {
    /// Forgets the minions that are not connected and wait for no request (`ingot manage
    /// --purge-nodes`); a forgotten minion comes back when it connects. Returns their names.
    pub fn purge_nodes(&self) -> Vec<String> {
        let mut sessions = lock(&self.sessions);
        let idle: Vec<String> = sessions
            .values()
            .filter(|s| !s.connected() && lock(&s.pending).is_empty())
            .map(|s| s.name.clone())
            .collect();
        for n in &idle {
            if let Some(s) = sessions.remove(n) {
                // A job held for it after a REBOOT stops waiting (see `wait_back`).
                s.bump();
            }
        }
        idle
    }
}
