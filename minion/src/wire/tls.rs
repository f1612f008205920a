//! TLS 1.3 with mutual certificates from the master's private CA (rustls with ring): the
//! minion's client configuration, and the master's server configuration around a peer check
//! the master supplies.
//!
//! The master's client verifier checks the chain and validity period (webpki), then asks the
//! [`AdmitPeer`] it was given about the certificate's fingerprint (the master's CA answers from
//! its registry): unknown, re-issued and revoked certificates are refused during the handshake,
//! before any frame is read.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use sha2::{Digest as _, Sha256};

/// The name the master's certificate is issued for, whatever address it is reached at.
pub const MASTER_SERVER_NAME: &str = "ingot-master";

/// Decides whether a verified client certificate (by its SHA-256 fingerprint) may connect.
pub trait AdmitPeer: Send + Sync + std::fmt::Debug {
    /// `true` when the certificate with this fingerprint is known and not revoked.
    fn admits(&self, fingerprint: &str) -> bool;
}

/// SHA-256 of DER bytes, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Hex of the P-256 public key (uncompressed point) of the PEM private key at `path`, as an
/// enrolling or renewing minion sends it; `None` when it is not a P-256 key.
pub fn public_key_hex(path: &Path) -> Option<String> {
    let pem = std::fs::read_to_string(path).ok()?;
    let key = rcgen::KeyPair::from_pem(&pem).ok()?;
    (key.algorithm() == &rcgen::PKCS_ECDSA_P256_SHA256).then(|| hex(key.public_key_raw()))
}

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
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider ingot uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates in the PEM file at `path`; `hint` says how to make it.
pub fn certs(path: &Path, hint: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

/// The private key in the PEM file at `path`; `hint` says how to make it.
pub fn key(path: &Path, hint: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: format!("{e}; {hint}"),
    })
}

/// A root store of the certificates at `path`.
pub fn roots(path: &Path, hint: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, hint)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

#[derive(Debug)]
struct PeerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    admit: Arc<dyn AdmitPeer>,
}

impl ClientCertVerifier for PeerVerifier {
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
        if !self.admit.admits(&fp) {
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

/// The master's TLS configuration from its `certs/` directory: its certificate, client
/// certificates of the same CA required, each admitted by `admit`.
pub fn server_config(
    certs_dir: &Path,
    admit: Arc<dyn AdmitPeer>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let hint = "create the CA with `ingot certs init --master DIR`";
    let roots = roots(&certs_dir.join("ca.crt"), hint)?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider()).build()?;
    let verifier = Arc::new(PeerVerifier { inner, admit });
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            certs(&certs_dir.join("master.crt"), hint)?,
            key(&certs_dir.join("master.key"), hint)?,
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
