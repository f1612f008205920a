//! A minion's connection to the master: the TLS handshake (the certificate names the minion),
//! `hello`, the checks that refuse a connection, then frames both ways until it ends; and the
//! certificate renewal it carries.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use minion::wire::tls::fingerprint;
use minion::wire::{Frame, FrameReader, PROTOCOL};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::journal::Taken;
use super::session::{Conn, Info, Session};
use super::{lock, Hub};
use crate::ca::{now_secs, RawPublicKey};

/// Tells a connecting minion why it is refused (best effort); returns the reason.
async fn refuse(w: &mut (impl tokio::io::AsyncWrite + Unpin), reason: String) -> String {
    let _ = minion::wire::write(
        w,
        &Frame::Refused {
            reason: reason.clone(),
        },
    )
    .await;
    reason
}

impl Hub {
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
        let tls = tokio::time::timeout(limit, acceptor.accept(tcp))
            .await
            .map_err(|_| "handshake timed out".to_string())?
            .map_err(|e| format!("handshake refused: {e}"))?;
        let mut tls = FrameReader::new(tls);
        let fp = tls
            .get_mut()
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
        let hello = tokio::time::timeout(limit, tls.next::<Frame>())
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
            return Err(refuse(tls.get_mut(), reason).await);
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
            return Err(refuse(tls.get_mut(), reason).await);
        }
        session.fail_lost(generation, &held);
        session.back_from_reboot(generation);
        session.bump();
        tracing::info!(%name, %addr, "minion connected");
        let _ = tx.send(Frame::Welcome {
            name: name.clone(),
            heartbeat: self.opts.heartbeat.as_secs().max(1),
        });

        let (mut reader, mut write_half) = tls.split();
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
        let silence = self.opts.heartbeat * 3;
        let end = loop {
            let frame = tokio::select! {
                _ = cut.notified() => break "cut".to_string(),
                r = tokio::time::timeout(silence, reader.next::<Frame>()) => r,
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
                let event = minion::wire::to_event(ts, name, key, data);
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
                    let reply = hub.answer(&asker, ask).await;
                    let _ = tx.send(Frame::Answer { id, reply });
                });
            }
            other => tracing::warn!(minion = %session.name, "unexpected frame {other:?}"),
        }
    }
}
