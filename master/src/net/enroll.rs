//! Enrollment without copying keys: the minion generates its key, sends the public half to the
//! master's enrollment port (TLS, the master authenticated by the CA certificate the minion was
//! given), and picks the signed certificate up once the operator accepted it (`ingot certs
//! accept NAME`) or at once with a one-time token (`ingot certs token`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;

use super::pki::{write_file, Enrollment, Pki, RawPublicKey, MASTER_SERVER_NAME};
use super::wire::{read_frame, write_frame, Frame};

/// The master's TLS configuration for the enrollment port (no client certificate).
pub fn server_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(pki.path("master.crt"))
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", pki.path("master.crt").display()))?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(pki.path("master.key"))
        .map_err(|e| format!("{}: {e}", pki.path("master.key").display()))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
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
            let Ok(Ok(mut tls)) = tokio::time::timeout(limit, acceptor.accept(tcp)).await else {
                return;
            };
            let Ok(Ok(Some(Frame::Enroll {
                name,
                public_key,
                token,
            }))) = tokio::time::timeout(limit, read_frame(&mut tls)).await
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
            let _ = write_frame(&mut tls, &reply).await;
        });
    }
}

/// `ingot minion enroll`: what it needs.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The minion tree.
    pub minion: PathBuf,
    /// The enrollment port `HOST:PORT`.
    pub master: String,
    /// The CA certificate to authenticate the master with.
    pub ca: PathBuf,
    /// The name to ask for.
    pub name: String,
    /// A one-time token.
    pub token: Option<String>,
    /// Give up waiting for acceptance after this long.
    pub wait: Duration,
}

/// Enrolls; `Ok(true)` once `certs/minion.crt` is written, `Ok(false)` when still pending after
/// the wait.
pub async fn enroll(o: &EnrollOptions) -> Result<bool, String> {
    let certs = o.minion.join("certs");
    std::fs::create_dir_all(&certs).map_err(|e| format!("{}: {e}", certs.display()))?;
    let ca_pem = std::fs::read(&o.ca).map_err(|e| format!("{}: {e}", o.ca.display()))?;
    write_file(&certs.join("ca.crt"), &ca_pem, 0o644).map_err(|e| e.to_string())?;
    let key_path = certs.join("minion.key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => {
            rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", key_path.display()))?
        }
        Err(_) => {
            let k = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            write_file(&key_path, k.serialize_pem().as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            k
        }
    };
    let public_key = RawPublicKey(key.public_key_raw().to_vec()).to_hex();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        roots
            .add(c.map_err(|e| format!("{}: {e}", o.ca.display()))?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let deadline = Instant::now() + o.wait;
    let mut said = false;
    loop {
        match attempt(&connector, o, &public_key).await? {
            Some(cert) => {
                write_file(&certs.join("minion.crt"), cert.as_bytes(), 0o644)
                    .map_err(|e| e.to_string())?;
                return Ok(true);
            }
            None => {
                if !said {
                    eprintln!(
                        "ingot: enrollment of {} is pending; on the master run `ingot certs accept {}`",
                        o.name, o.name
                    );
                    said = true;
                }
                if Instant::now() >= deadline {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn attempt(
    connector: &tokio_rustls::TlsConnector,
    o: &EnrollOptions,
    public_key: &str,
) -> Result<Option<String>, String> {
    let tcp = tokio::net::TcpStream::connect(&o.master)
        .await
        .map_err(|e| format!("connecting to {}: {e}", o.master))?;
    let server = rustls::pki_types::ServerName::try_from(MASTER_SERVER_NAME).expect("valid");
    let mut tls = connector
        .connect(server, tcp)
        .await
        .map_err(|e| format!("TLS with {} (is --ca the master's CA?): {e}", o.master))?;
    write_frame(
        &mut tls,
        &Frame::Enroll {
            name: o.name.clone(),
            public_key: public_key.into(),
            token: o.token.clone(),
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    match read_frame(&mut tls).await.map_err(|e| e.to_string())? {
        Some(Frame::Enrolled { cert }) => Ok(Some(cert)),
        Some(Frame::EnrollPending) => Ok(None),
        Some(Frame::Refused { reason }) => Err(format!("enrollment refused: {reason}")),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The default name: this host's name.
pub fn default_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "minion".into())
}

/// Whether `dir` already holds a certificate.
pub fn has_cert(dir: &Path) -> bool {
    dir.join("certs/minion.crt").exists()
}
