//! `ingot minion enroll`, the minion's side: it generates its key, sends the public half to
//! the master's enrollment port (TLS, the master authenticated by the CA certificate the minion
//! was given), and picks the signed certificate up once the operator accepted it (`ingot certs
//! accept NAME`) or at once with a one-time token (`ingot certs token`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::write_file;
use crate::wire::tls::{hex, provider, roots, MASTER_SERVER_NAME};
use crate::wire::{write, Frame, FrameReader};

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A file of the minion tree or the CA certificate could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key or the CA certificate is not usable.
    #[error("{0}")]
    Material(String),
    /// The CA certificate is not one.
    #[error(transparent)]
    Tls(#[from] crate::wire::tls::TlsError),
    /// The enrollment port could not be reached or spoke no protocol.
    #[error("{0}")]
    Connection(String),
    /// The master refused the enrollment.
    #[error("enrollment refused: {0}")]
    Refused(String),
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> EnrollError + '_ {
    move |source| EnrollError::Io {
        path: path.to_owned(),
        source,
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
pub async fn enroll(o: &EnrollOptions) -> Result<bool, EnrollError> {
    let certs = o.minion.join("certs");
    std::fs::create_dir_all(&certs).map_err(io_at(&certs))?;
    let ca_pem = std::fs::read(&o.ca).map_err(io_at(&o.ca))?;
    let ca_path = certs.join("ca.crt");
    write_file(&ca_path, &ca_pem, 0o644).map_err(io_at(&ca_path))?;
    let key_path = certs.join("minion.key");
    let key = match std::fs::read_to_string(&key_path) {
        Ok(pem) => rcgen::KeyPair::from_pem(&pem)
            .map_err(|e| EnrollError::Material(format!("{}: {e}", key_path.display())))?,
        Err(_) => {
            let k = rcgen::KeyPair::generate()
                .map_err(|e| EnrollError::Material(format!("generating a key: {e}")))?;
            write_file(&key_path, k.serialize_pem().as_bytes(), 0o600).map_err(io_at(&key_path))?;
            k
        }
    };
    let public_key = hex(key.public_key_raw());
    let roots = roots(
        &o.ca,
        "pass the master's CA certificate (MASTER/certs/ca.crt) as --ca",
    )?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(crate::wire::tls::TlsError::from)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let deadline = Instant::now() + o.wait;
    let mut said = false;
    loop {
        match attempt(&connector, o, &public_key).await? {
            Some(cert) => {
                let crt = certs.join("minion.crt");
                write_file(&crt, cert.as_bytes(), 0o644).map_err(io_at(&crt))?;
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
) -> Result<Option<String>, EnrollError> {
    let tcp = tokio::net::TcpStream::connect(&o.master)
        .await
        .map_err(|e| EnrollError::Connection(format!("connecting to {}: {e}", o.master)))?;
    let server = rustls::pki_types::ServerName::try_from(MASTER_SERVER_NAME).expect("valid");
    let mut tls = connector.connect(server, tcp).await.map_err(|e| {
        EnrollError::Connection(format!(
            "TLS with {} (is --ca the master's CA?): {e}",
            o.master
        ))
    })?;
    write(
        &mut tls,
        &Frame::Enroll {
            name: o.name.clone(),
            public_key: public_key.into(),
            token: o.token.clone(),
        },
    )
    .await
    .map_err(|e| EnrollError::Connection(e.to_string()))?;
    let answer = FrameReader::new(tls)
        .next::<Frame>()
        .await
        .map_err(|e| EnrollError::Connection(e.to_string()))?;
    match answer {
        Some(Frame::Enrolled { cert }) => Ok(Some(cert)),
        Some(Frame::EnrollPending) => Ok(None),
        Some(Frame::Refused { reason }) => Err(EnrollError::Refused(reason)),
        other => Err(EnrollError::Connection(format!(
            "unexpected answer {other:?} from {}",
            o.master
        ))),
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
