//! The master server: accepts minions over TLS, keeps one session per minion name, and drives
//! them through [`RemoteMinion`], the network implementation of [`MinionLink`].
//!
//! A session outlives its connections: requests in flight stay pending while a minion is away
//! (up to the grace period), and the events and result it spooled meanwhile are taken after it
//! reconnects, de-duplicated by request id and sequence number.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runner::EventSink;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::journal::{Journal, LateResults, RunJournal, Taken};
use super::pki::{fingerprint, now_secs, RawPublicKey};
use super::tls::RegistryCache;
use super::wire::{read_frame, write_frame, Frame, Op, Reply, PROTOCOL};
use crate::link::{Described, Facts, LinkError, MinionLink};

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

struct Pending {
    events: mpsc::UnboundedSender<channel3::Event>,
    result: Option<oneshot::Sender<Reply>>,
    last_seq: u64,
    /// The connection (generation) the request went out on, once sent.
    sent_on: Option<u64>,
    /// Its result is acknowledged only once recorded (see [`Session::held`]).
    hold_ack: bool,
}

/// See [`Session::described`].
#[derive(Default)]
struct DescribeCache {
    epoch: (u64, u64),
    kinds: HashMap<String, Option<Described>>,
}

struct Conn {
    tx: mpsc::UnboundedSender<Frame>,
    generation: u64,
    cut: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct Info {
    machine_id: String,
    address: String,
    version: String,
    started: i64,
    connected_since: i64,
    last_seen: i64,
}

/// One minion as the master knows it, across connections.
pub struct Session {
    name: String,
    conn: Mutex<Option<Conn>>,
    info: Mutex<Info>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Requests of recorded runs whose result arrived but is not committed to the history yet:
    /// not acknowledged until it is (a master dying meanwhile gets it again from the minion's
    /// spool after its restart), and copies re-sent meanwhile are ignored.
    held: Mutex<HashSet<String>>,
    /// What this minion's resources said in `describe`, for the connection (generation) and
    /// install epoch that answered. The agent answers `describe` from its own cache for as
    /// long as it runs, forgetting a kind only when the master installs one, so the answers
    /// hold until the minion reconnects or something is installed: a run needs no round trip
    /// for them.
    described: Mutex<DescribeCache>,
    /// Bumped by every install of a user component.
    installs: AtomicU64,
    /// Set to the connection (generation) a REBOOT went out on: the minion is inactive until
    /// it connects again (a later generation), so Directord jobs for it are held meanwhile
    /// (see [`super::directord`]).
    rebooting: Mutex<Option<u64>>,
    /// Bumped on every connect and disconnect, and when `rebooting` changes.
    changes: watch::Sender<u64>,
}

impl Session {
    fn new(name: &str) -> Self {
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
    fn back_from_reboot(&self, generation: u64) {
        let mut r = lock(&self.rebooting);
        if r.is_some_and(|g| g < generation) {
            *r = None;
            tracing::info!(minion = %self.name, "back after REBOOT: active again");
        }
    }

    /// The connection (generation) and install epoch `describe` answers are cached for, if
    /// connected.
    fn describe_epoch(&self) -> Option<(u64, u64)> {
        let generation = lock(&self.conn).as_ref().map(|c| c.generation)?;
        Some((generation, self.installs.load(Ordering::SeqCst)))
    }

    /// The cached `describe` of `kind`, if answered in `epoch`.
    fn cached_describe(&self, epoch: (u64, u64), kind: &str) -> Option<Option<Described>> {
        let c = lock(&self.described);
        (c.epoch == epoch).then(|| c.kinds.get(kind).cloned())?
    }

    /// Caches the answer of a `describe` of `kind` asked in `epoch`, if that is still the
    /// current one.
    fn cache_describe(&self, epoch: (u64, u64), kind: &str, d: &Option<Described>) {
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
    fn release(&self, id: &str, journal: &Journal, stored: bool) {
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
    fn send_request(&self, id: &str, op: &Op) -> bool {
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
    fn fail_lost(&self, generation: u64, held: &[String]) {
        let mut pending = lock(&self.pending);
        for (id, p) in pending.iter_mut() {
            if p.sent_on.is_some_and(|g| g < generation) && !held.contains(id) {
                if let Some(r) = p.result.take() {
                    tracing::warn!(minion = %self.name, %id, "request lost with the old connection");
                    let _ = r.send(Reply::Err(super::wire::WireError::Unreachable {
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

    fn bump(&self) {
        self.changes.send_modify(|g| *g += 1);
    }
}

/// Tells a connecting minion why it is refused (best effort); returns the reason.
async fn refuse(w: &mut (impl tokio::io::AsyncWrite + Unpin), reason: String) -> String {
    let _ = write_frame(
        w,
        &Frame::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    reason
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
    /// Bumped by every QUEUESENTINEL sent through this master: Directord jobs the master still
    /// holds (not yet sent) from before it are omitted, as the minions omit their queued ones.
    sentinels: AtomicU64,
    /// The Directord jobs of the requests being run, for `ingot manage` (see
    /// [`super::jobs::InFlight`]).
    directord_jobs: Arc<super::jobs::InFlight>,
}

impl Hub {
    /// How many QUEUESENTINELs this master has sent.
    pub fn sentinels(&self) -> u64 {
        self.sentinels.load(Ordering::SeqCst)
    }

    /// A QUEUESENTINEL is being sent: jobs held from before it are to be dropped.
    pub fn raise_sentinel(&self) {
        self.sentinels.fetch_add(1, Ordering::SeqCst);
    }

    /// The Directord jobs this master is running and has not stored yet.
    pub fn directord_jobs(&self) -> &Arc<super::jobs::InFlight> {
        &self.directord_jobs
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
            sentinels: AtomicU64::new(0),
            directord_jobs: Arc::default(),
        })
    }

    /// Journals the requests of recorded runs in `journal` (see [`super::journal`]), and
    /// records into `history` the results minions deliver for requests journaled before a
    /// restart. Only the first call counts.
    pub fn set_journal(&self, journal: Arc<Journal>, history: Arc<historian::History>) {
        let _ = self.late.set(LateResults::new(journal, history));
    }

    /// The journal of requests in flight, when runs are recorded.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.late.get().map(|l| l.journal())
    }

    fn new_id(&self) -> String {
        format!(
            "{}-{}",
            self.boot,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn session(&self, name: &str) -> Arc<Session> {
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
    pub async fn wait_back(&self, name: &str, limit: Duration) -> Result<(), String> {
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
                return Err(format!(
                    "{name} was purged (`ingot manage --purge-nodes`) while this job waited for it to come back after REBOOT; the job was not sent to it"
                ));
            }
            if !session.rebooting() {
                return Ok(());
            }
            let wait = deadline.map_or(Duration::MAX, |d| {
                d.saturating_duration_since(Instant::now())
            });
            if wait.is_zero() || tokio::time::timeout(wait, changes.changed()).await.is_err() {
                return Err(format!(
                    "{name} did not come back within {}s after REBOOT (the limit is this job's --timeout); the job was not sent to it: check the machine, then `ingot manage --list-nodes`",
                    limit.as_secs()
                ));
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

    /// The link to one session.
    pub fn link(self: &Arc<Self>, session: Arc<Session>) -> RemoteMinion {
        RemoteMinion {
            hub: self.clone(),
            session,
            described: Mutex::new(HashMap::new()),
            journal: None,
        }
    }

    /// Accepts minions on `listener` forever.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, tls: Arc<rustls::ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let hub = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(e) = hub.connection(acceptor, tcp, addr).await {
                    tracing::info!(%addr, "connection ended: {e}");
                }
            });
        }
    }

    async fn connection(
        self: Arc<Self>,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<(), String> {
        let _ = tcp.set_nodelay(true);
        let limit = self.opts.handshake_timeout;
        let mut tls = tokio::time::timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake refused: {e}"))?;
        let fp = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| fingerprint(c))
            .ok_or("no client certificate")?;
        let name = self
            .registry
            .get()
            .name_of(&fp)
            .ok_or("certificate not in the registry")?
            .to_owned();
        let hello = tokio::time::timeout(limit, read_frame(&mut tls))
            .await
            .map_err(|_| format!("{name}: no hello in time"))?
            .map_err(|e| format!("{name}: {e}"))?;
        let Some(Frame::Hello {
            protocol,
            version,
            machine_id,
            started,
            public_key,
            held,
        }) = hello
        else {
            return Err(format!("{name}: the first frame was not hello"));
        };
        if protocol != PROTOCOL {
            let reason = format!("protocol {protocol} is not supported (the master speaks {PROTOCOL}); upgrade ingot on the minion");
            return Err(refuse(&mut tls, reason).await);
        }
        let session = self.session(&name);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(tokio::sync::Notify::new());
        let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
        let refused = {
            let mut conn = lock(&session.conn);
            let held_by = lock(&session.info).machine_id.clone();
            match conn.as_ref() {
                Some(_) if held_by != machine_id => Some(format!(
                    "the name {name} is held by machine {held_by}; this connection from machine {machine_id} is refused"
                )),
                old => {
                    // The same machine again: its old connection is stale.
                    if let Some(old) = old {
                        old.cut.notify_one();
                    }
                    *conn = Some(Conn {
                        tx: tx.clone(),
                        generation,
                        cut: cut.clone(),
                    });
                    let now = now_secs();
                    *lock(&session.info) = Info {
                        machine_id: machine_id.clone(),
                        address: addr.to_string(),
                        version,
                        started,
                        connected_since: now,
                        last_seen: now,
                    };
                    None
                }
            }
        };
        if let Some(reason) = refused {
            tracing::warn!(%addr, "{reason}");
            return Err(refuse(&mut tls, reason).await);
        }
        session.fail_lost(generation, &held);
        session.back_from_reboot(generation);
        session.bump();
        tracing::info!(%name, %addr, "minion connected");
        let _ = tx.send(Frame::Welcome {
            name: name.clone(),
            heartbeat: self.opts.heartbeat.as_secs().max(1),
        });

        let (read_half, mut write_half) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                let mut buf = f.encode();
                // Batch whatever else is queued into one write.
                while buf.len() < 256 * 1024 {
                    match rx.try_recv() {
                        Ok(f) => buf.extend_from_slice(&f.encode()),
                        Err(_) => break,
                    }
                }
                if write_half.write_all(&buf).await.is_err() || write_half.flush().await.is_err() {
                    break;
                }
            }
            let _ = write_half.shutdown().await;
        });
        let pinger = {
            let tx = tx.clone();
            let hub = self.clone();
            let cut = cut.clone();
            let period = self.opts.heartbeat;
            let name = name.clone();
            let key = public_key.as_deref().and_then(RawPublicKey::from_hex);
            tokio::spawn(async move {
                let mut n = 0;
                let mut renewed = false;
                loop {
                    if !renewed {
                        if let Some(key) = &key {
                            renewed = hub.renew_if_due(&name, &fp, key, &tx);
                        }
                    }
                    tokio::time::sleep(period).await;
                    n += 1;
                    if hub.registry.get().name_of(&fp) != Some(name.as_str()) {
                        tracing::warn!(%name, "certificate revoked or replaced: cutting the connection");
                        cut.notify_one();
                        return;
                    }
                    if tx.send(Frame::Ping { n }).is_err() {
                        return;
                    }
                }
            })
        };
        let mut reader = BufReader::new(read_half);
        let silence = self.opts.heartbeat * 3;
        let end = loop {
            let frame = tokio::select! {
                _ = cut.notified() => break "cut".to_string(),
                r = tokio::time::timeout(silence, read_frame(&mut reader)) => r,
            };
            match frame {
                Err(_) => break format!("silent for {}s", silence.as_secs()),
                Ok(Err(e)) => break e.to_string(),
                Ok(Ok(None)) => break "closed by the minion".into(),
                Ok(Ok(Some(f))) => {
                    lock(&session.info).last_seen = now_secs();
                    self.take(&session, f, &tx);
                }
            }
        };
        pinger.abort();
        {
            let mut conn = lock(&session.conn);
            if conn.as_ref().map(|c| c.generation) == Some(generation) {
                *conn = None;
            }
        }
        drop(tx);
        session.bump();
        let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        tracing::info!(%name, %addr, "minion disconnected: {end}");
        Ok(())
    }

    /// Sends a renewed certificate when `fp` (the connection's certificate) is `name`'s current
    /// one and expires within the renewal window; `true` when it did.
    fn renew_if_due(
        &self,
        name: &str,
        fp: &str,
        key: &RawPublicKey,
        tx: &mpsc::UnboundedSender<Frame>,
    ) -> bool {
        let reg = self.registry.get();
        let Some(entry) = reg.minions.get(name).filter(|e| e.fingerprint == fp) else {
            return false;
        };
        let now = now_secs();
        if entry.not_after - now > self.opts.renew_before.as_secs() as i64 {
            return false;
        }
        // At least three windows long, so a renewed certificate is never due again at once.
        let lifetime = (entry.not_after - entry.issued)
            .max(3 * self.opts.renew_before.as_secs() as i64)
            .max(86400);
        match self
            .registry
            .pki()
            .issue_for_key(name, key, lifetime as f64 / 86400.0)
        {
            Ok(cert) => {
                tracing::info!(%name, "certificate renewed");
                let _ = tx.send(Frame::Renewed { cert });
                true
            }
            Err(e) => {
                tracing::error!(%name, "renewing the certificate: {e}");
                false
            }
        }
    }

    fn take(self: &Arc<Self>, session: &Session, f: Frame, tx: &mpsc::UnboundedSender<Frame>) {
        match f {
            Frame::Event {
                id,
                seq,
                ts,
                name,
                key,
                data,
            } => {
                let event = super::wire::to_event(ts, name, key, data);
                let unknown = {
                    let mut pending = lock(&session.pending);
                    match pending.get_mut(&id) {
                        Some(p) => {
                            if seq > p.last_seq {
                                p.last_seq = seq;
                                let _ = p.events.send(event);
                            }
                            None
                        }
                        None => Some(event),
                    }
                };
                // Not waited for here: perhaps journaled before a restart.
                if let (Some(event), Some(late)) = (unknown, self.late.get()) {
                    late.event(&session.name, &id, seq, event);
                }
            }
            Frame::Result { id, seq, reply } => {
                let taken = {
                    let mut pending = lock(&session.pending);
                    match pending.get_mut(&id) {
                        Some(p) if seq > p.last_seq => {
                            p.last_seq = seq;
                            p.result.take().map(|r| (r, p.hold_ack))
                        }
                        _ => None,
                    }
                };
                match taken {
                    Some((r, true)) => {
                        // Acknowledged by `Session::release` once recorded.
                        lock(&session.held).insert(id.clone());
                        if r.send(reply).is_ok() {
                            return;
                        }
                        // Nobody waits any more: nothing will record it.
                        lock(&session.held).remove(&id);
                    }
                    Some((r, false)) => {
                        let _ = r.send(reply);
                    }
                    None if lock(&session.held).contains(&id) => return,
                    None if lock(&session.pending).contains_key(&id) => {
                        // A copy of a result already taken.
                    }
                    None => {
                        // Journaled before a restart: acknowledged once recorded.
                        if let Some(late) = self.late.get() {
                            if late.result(&session.name, &id, reply, tx.clone())
                                == Taken::Journaled
                            {
                                return;
                            }
                        }
                        tracing::info!(
                            minion = %session.name,
                            %id,
                            "result of a request this master does not wait for (already recorded, given up, or sent before a restart and not journaled): acknowledged and dropped"
                        );
                    }
                }
                // Stored (or known to be unwanted): the minion may forget it.
                let _ = tx.send(Frame::Ack { id });
            }
            Frame::Pong { .. } => {}
            Frame::Ask { id, ask } => {
                // Answered on this connection; if it drops first, the minion fails the ask.
                let (hub, tx, asker) = (self.clone(), tx.clone(), session.name.clone());
                tokio::spawn(async move {
                    let reply = super::directord::answer(&hub, &asker, ask).await;
                    let _ = tx.send(Frame::Answer { id, reply });
                });
            }
            other => tracing::warn!(minion = %session.name, "unexpected frame {other:?}"),
        }
    }
}

/// A minion connected to this master, behind the same interface as the in-process one.
pub struct RemoteMinion {
    hub: Arc<Hub>,
    session: Arc<Session>,
    described: Mutex<HashMap<String, Option<Described>>>,
    /// The recorded run whose requests are journaled before they are sent.
    journal: Option<Arc<RunJournal>>,
}

/// Removes a request's pending entry (and closes its journal entry) however its wait ends
/// (or if it is never awaited).
struct PendingGuard {
    session: Arc<Session>,
    id: String,
    /// The recorded run that journaled this request, with the steps it performs.
    journaled: Option<(Arc<RunJournal>, Vec<i64>)>,
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
struct InFlight {
    guard: PendingGuard,
    op: Op,
    sent: bool,
    events: mpsc::UnboundedReceiver<channel3::Event>,
    result: oneshot::Receiver<Reply>,
}

impl RemoteMinion {
    /// Registers a request and sends it now when the minion is connected, before any
    /// `.await`: requests begun one after another reach the minion in that order (a
    /// Directord queue relies on it to pipeline its jobs).
    fn begin(&self, op: Op) -> InFlight {
        self.begin_as(self.hub.new_id(), op, false)
    }

    /// `hold_ack`: acknowledge the result only once [`Session::release`]d.
    fn begin_as(&self, id: String, op: Op, hold_ack: bool) -> InFlight {
        let (etx, events) = mpsc::unbounded_channel();
        let (rtx, result) = oneshot::channel();
        lock(&self.session.pending).insert(
            id.clone(),
            Pending {
                events: etx,
                result: Some(rtx),
                last_seq: 0,
                sent_on: None,
                hold_ack,
            },
        );
        let sent = self.session.send_request(&id, &op);
        InFlight {
            guard: PendingGuard {
                session: self.session.clone(),
                id,
                journaled: None,
            },
            op,
            sent,
            events,
            result,
        }
    }

    async fn request(&self, op: Op, sink: &dyn EventSink) -> Result<Value, LinkError> {
        let id = self.hub.new_id();
        // Journaled (on disk) before it is sent, so its result is recorded even if this
        // master restarts meanwhile.
        let mut journaled = None;
        if let Some(run) = &self.journal {
            if let Some(entry) = run.entry(&id, &self.session.name, &op) {
                let steps = entry.steps.clone();
                match run.journal().sent(entry).await {
                    Ok(()) => journaled = Some((run.clone(), steps)),
                    Err(e) => tracing::warn!(
                        minion = %self.session.name,
                        "not journaled (its result is lost if the master restarts while it runs): {e}"
                    ),
                }
            }
        }
        let mut f = self.begin_as(id, op, journaled.is_some());
        f.guard.journaled = journaled;
        self.finish(f, sink).await
    }

    /// This link with the requests of the recorded run `journal` journaled.
    pub fn journaled(mut self, journal: Option<Arc<RunJournal>>) -> Self {
        self.journal = journal;
        self
    }

    /// Sends the request if `begin` could not (waiting up to the grace period for a
    /// connection), then waits for its result, forwarding its events to `sink`.
    async fn finish(&self, f: InFlight, sink: &dyn EventSink) -> Result<Value, LinkError> {
        let InFlight {
            guard,
            op,
            sent,
            events: mut erx,
            result: mut rrx,
        } = f;
        let id = guard.id.clone();
        let label = op.label();
        let grace = self.hub.opts.grace;
        let mut changes = self.session.changes.subscribe();
        let name = &self.session.name;
        let unreachable = |what: &str| {
            LinkError::Unreachable(format!(
                "minion {name} unreachable: {what} ({label}); check `ingot manage --list-nodes` and the minion agent's log"
            ))
        };
        // Send, waiting up to the grace period for a connection.
        let deadline = Instant::now() + grace;
        let mut sent = sent;
        while !sent {
            changes.borrow_and_update();
            if self.session.send_request(&id, &op) {
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
        let mut away_since = (!self.session.connected()).then(Instant::now);
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
                        Ok(Reply::Err(e)) => Err(LinkError::from(e)),
                        Err(_) => Err(unreachable("the request was dropped")),
                    };
                }
                r = changes.changed() => {
                    if r.is_err() {
                        return Err(unreachable("the session ended"));
                    }
                    away_since = if self.session.connected() {
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

impl RemoteMinion {
    /// Hands a Directord job to the minion's job engine: it is sent before this returns
    /// (when the minion is connected), and the future yields its result. What it needs
    /// (ADD/COPY content, a user component) is sent before (see [`super::transfer`]).
    pub fn job(
        &self,
        job: &minion::directord::Job,
    ) -> impl std::future::Future<Output = Result<minion::directord::JobResult, LinkError>>
           + Send
           + 'static {
        let me = self.hub.link(self.session.clone());
        let verb = job.verb.clone();
        let f = me.begin(Op::Job {
            job: Box::new(job.clone()),
        });
        async move {
            let v = me.finish(f, &runner::NullSink).await?;
            serde_json::from_value(v).map_err(|e| LinkError::BadOutput {
                program: format!("job {verb}"),
                message: format!("not a job result: {e}"),
            })
        }
    }
}

impl MinionLink for RemoteMinion {
    fn name(&self) -> &str {
        &self.session.name
    }

    async fn facts(&self, sink: &dyn EventSink) -> Result<Facts, LinkError> {
        let v = self.request(Op::Facts, sink).await?;
        let bad = |m: &str| LinkError::BadOutput {
            program: "facts".into(),
            message: m.into(),
        };
        let document = v
            .get("document")
            .cloned()
            .ok_or_else(|| bad("no document"))?;
        let failures = v
            .get("failures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| {
                        Some((
                            f.get(0)?.as_str()?.to_owned(),
                            f.get(1)?.as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Facts { document, failures })
    }

    async fn describe(&self, kind: &str) -> Result<Option<Described>, LinkError> {
        if let Some(d) = lock(&self.described).get(kind) {
            return Ok(d.clone());
        }
        let epoch = self.session.describe_epoch();
        if let Some(d) = epoch.and_then(|e| self.session.cached_describe(e, kind)) {
            lock(&self.described).insert(kind.to_owned(), d.clone());
            return Ok(d);
        }
        let v = self
            .request(Op::Describe { kind: kind.into() }, &runner::NullSink)
            .await?;
        let d = (!v.get("doc").is_none_or(Value::is_null)).then(|| Described {
            identity: v
                .get("identity")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            batch: v.get("batch").and_then(Value::as_bool).unwrap_or(false),
            schema: v.get("doc").and_then(|d| d.get("schema")).cloned(),
        });
        if let Some(e) = epoch {
            self.session.cache_describe(e, kind, &d);
        }
        lock(&self.described).insert(kind.to_owned(), d.clone());
        Ok(d)
    }

    async fn call(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> Result<Value, LinkError> {
        self.request(
            Op::Resource {
                kind: kind.into(),
                action: action.into(),
                input: input.clone(),
            },
            sink,
        )
        .await
    }
}

impl RemoteMinion {
    /// The minion's Directord cache (`ingot manage --dump-cache`).
    pub async fn dump_cache(&self) -> Result<Value, LinkError> {
        self.request(Op::DumpCache, &runner::NullSink).await
    }

    /// Sends `op` (a content transfer step or an install, see [`super::transfer`]) and
    /// waits for its answer.
    pub async fn call_op(&self, op: Op) -> Result<Value, LinkError> {
        let install = matches!(op, Op::Install { .. });
        let r = self.request(op, &runner::NullSink).await;
        if install {
            // The agent forgot the kind's describe: so does every cache of it here. A
            // describe answered meanwhile is not cached (its epoch is over).
            self.session.installs.fetch_add(1, Ordering::SeqCst);
        }
        r
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

#[cfg(test)]
mod tests {
    use super::*;

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
