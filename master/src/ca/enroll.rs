//! Enrollment without copying keys, the master's side (the minion's is
//! `minion::agent::enroll`): a minion sends the public half of the key it generated to the
//! enrollment port (TLS, the master authenticated by the CA certificate the minion was given),
//! and the master signs it once the operator accepted it (`ingot certs accept NAME`) or at once
//! with a one-time token (`ingot certs token`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use minion::wire::tls::{certs, key, provider, TlsError};
use minion::wire::{Frame, FrameReader};
use tokio::net::TcpListener;

use crate::ca::{Enrollment, Pki, RawPublicKey};

/// The master's TLS configuration for the enrollment port (no client certificate), from its
/// `certs/` directory.
pub fn server_config(certs_dir: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let hint = "create the CA with `ingot certs init --master DIR`";
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(
            certs(&certs_dir.join("master.crt"), hint)?,
            key(&certs_dir.join("master.key"), hint)?,
        )?;
    Ok(Arc::new(cfg))
}

/// Serves enrollment requests forever.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, pki: Pki, days: f64) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, addr)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (acceptor, pki) = (acceptor.clone(), pki.clone());
        tokio::spawn(async move {
            let limit = Duration::from_secs(10);
            let Ok(Ok(tls)) = tokio::time::timeout(limit, acceptor.accept(tcp)).await else {
                return;
            };
            let mut tls = FrameReader::new(tls);
            let Ok(Ok(Some(Frame::Enroll {
                name,
                public_key,
                token,
            }))) = tokio::time::timeout(limit, tls.next::<Frame>()).await
            else {
                tracing::info!(%addr, "enrollment: no valid request");
                return;
            };
            let reply = match RawPublicKey::from_hex(&public_key) {
                None => Frame::Refused {
                    reason: "the public key is not an uncompressed P-256 point".into(),
                },
                Some(key) => {
                    match pki.enroll(&name, &key, token.as_deref(), &addr.to_string(), days) {
                        Ok(Enrollment::Issued(cert)) => {
                            tracing::info!(%name, %addr, "enrolled");
                            Frame::Enrolled { cert }
                        }
                        Ok(Enrollment::Pending) => {
                            tracing::info!(%name, %addr, "enrollment pending: `ingot certs accept {name}`");
                            Frame::EnrollPending
                        }
                        Ok(Enrollment::Rejected) => Frame::Refused {
                            reason: format!("the operator rejected the enrollment of {name}"),
                        },
                        Err(e) => Frame::Refused {
                            reason: e.to_string(),
                        },
                    }
                }
            };
            let _ = minion::wire::write(tls.get_mut(), &reply).await;
        });
    }
}
