//! TLS 1.3 with mutual certificates from the master's private CA (rustls with ring).
//!
//! The master's client verifier checks the chain and validity period (webpki), then looks the
//! certificate's fingerprint up in the registry (`certs/registry.json`, re-read whenever it
//! changes): unknown, re-issued and revoked certificates are refused during the handshake,
//! before any frame is read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::pki::{fingerprint, Pki, Registry};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing or unreadable.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built.
    #[error("client verifier: {0}")]
    Verifier(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |message: String| TlsError::Pem {
        path: path.to_owned(),
        message,
    };
    let v = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("{e}; {hint}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if v.is_empty() {
        return Err(bad(format!("no certificate in it; {hint}")));
    }
    Ok(v)
}

fn key(path: &Path, hint: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: format!("{e}; {hint}"),
    })
}

fn roots(path: &Path, hint: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, hint)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

/// The registry, re-read when its file changes.
#[derive(Debug)]
pub struct RegistryCache {
    pki: Pki,
    cached: Mutex<(Option<SystemTime>, Arc<Registry>)>,
}

impl RegistryCache {
    /// Watches the registry of `pki`.
    pub fn new(pki: Pki) -> Self {
        Self {
            pki,
            cached: Mutex::new((None, Arc::new(Registry::default()))),
        }
    }

    /// The PKI whose registry this is.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The current registry (a `stat` per call; re-read when modified).
    pub fn get(&self) -> Arc<Registry> {
        let path = self.pki.registry_path();
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        let mut c = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if c.0.is_none() || c.0 != mtime {
            match self.pki.registry() {
                Ok(r) => *c = (mtime, Arc::new(r)),
                Err(e) => tracing::error!("{e}; keeping the previous registry"),
            }
        }
        c.1.clone()
    }
}

#[derive(Debug)]
struct RegistryVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    registry: Arc<RegistryCache>,
}

impl ClientCertVerifier for RegistryVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| tracing::warn!("refused a client certificate: {e}"))?;
        let fp = fingerprint(end_entity);
        if self.registry.get().name_of(&fp).is_none() {
            tracing::warn!(fingerprint = %fp, "refused a revoked or unknown client certificate");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Revoked,
            ));
        }
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The master's TLS configuration: its certificate, minion certificates required.
pub fn server_config(
    pki: &Pki,
    registry: Arc<RegistryCache>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let hint = "create the CA with `ingot certs init --master DIR`";
    let roots = roots(&pki.path("ca.crt"), hint)?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let verifier = Arc::new(RegistryVerifier { inner, registry });
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&pki.path("master.crt"), hint)?,
            key(&pki.path("master.key"), hint)?,
        )?;
    Ok(Arc::new(cfg))
}

/// A minion's TLS configuration from its `certs/` directory.
pub fn client_config(certs_dir: &Path) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let hint = "issue a certificate with `ingot certs issue NAME --master DIR --out MINION/certs`";
    let roots = roots(&certs_dir.join("ca.crt"), hint)?;
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            certs(&certs_dir.join("minion.crt"), hint)?,
            key(&certs_dir.join("minion.key"), hint)?,
        )?;
    Ok(Arc::new(cfg))
}

/// The fingerprint of a minion's own certificate (`certs/minion.crt`).
pub fn own_fingerprint(certs_dir: &Path) -> Result<String, TlsError> {
    let c = certs(&certs_dir.join("minion.crt"), "issue a certificate first")?;
    Ok(fingerprint(&c[0]))
}
