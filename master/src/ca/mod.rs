//! The master's private certificate authority: the CA, the master's certificate, minion
//! certificates, and the registry of issued and revoked certificates consulted at every
//! handshake.
//!
//! Files (all in `MASTER/certs/`, keys mode 0600, the directory 0700):
//! `ca.crt`, `ca.key` (never leaves the master), `ca.json` (the CA's subject, to sign again),
//! `master.crt`, `master.key`, and `registry.json` (every issued minion certificate by name:
//! SHA-256 fingerprint, expiry, revocation). A minion tree gets `certs/minion.crt`,
//! `certs/minion.key` and `certs/ca.crt`.

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde::{Deserialize, Serialize};

pub use minion::wire::tls::{fingerprint, MASTER_SERVER_NAME};

pub mod admission;
pub mod command;
pub mod enroll;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// No CA yet.
    #[error("no CA in {0}; create one with `ingot certs init --master DIR`")]
    NoCa(PathBuf),
    /// `certs init` on a master that already has a CA.
    #[error("{0} already holds a CA; remove the certs directory first to start over (every minion certificate will have to be issued again)")]
    Exists(PathBuf),
    /// rcgen refused.
    #[error("generating a certificate: {0}")]
    Gen(#[from] rcgen::Error),
    /// A name that cannot be a certificate name.
    #[error(
        "{0:?} is not a valid minion name: use letters, digits, '.', '-' and '_' (at most 64)"
    )]
    BadName(String),
    /// The registry is unreadable.
    #[error("{path} is not a valid registry: {message}; restore it from a backup")]
    Registry {
        /// The file.
        path: PathBuf,
        /// The parse error.
        message: String,
    },
    /// Revoking an unknown name.
    #[error("no certificate was issued to {0:?}; see `ingot certs list`")]
    Unknown(String),
    /// A PEM file without what was expected.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The parameters of a minion's client certificate: its name as CN and SAN, valid from an hour
/// ago (clock skew) for `days`; returns them with the expiry in Unix seconds.
fn minion_params(name: &str, now: i64, days: f64) -> Result<(CertificateParams, i64)> {
    let not_after = now + (days * 86400.0) as i64;
    let mut p = CertificateParams::new(vec![name.to_owned()])?;
    p.distinguished_name = dn(name);
    p.not_before = offset(now - 3600);
    p.not_after = offset(not_after);
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok((p, not_after))
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// One issued minion certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// SHA-256 of the certificate's DER, lowercase hex.
    pub fingerprint: String,
    /// Unix seconds.
    pub issued: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds, when revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<i64>,
}

impl Issued {
    /// `valid`, `expired` or `revoked`.
    pub fn state(&self, now: i64) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if self.not_after <= now {
            "expired"
        } else {
            "valid"
        }
    }
}

/// Every issued minion certificate, by name (`certs/registry.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Name → certificate.
    pub minions: BTreeMap<String, Issued>,
}

impl Registry {
    /// The name of the minion holding this (not revoked) certificate.
    pub fn name_of(&self, fingerprint: &str) -> Option<&str> {
        self.minions
            .iter()
            .find(|(_, i)| i.fingerprint == fingerprint && i.revoked.is_none())
            .map(|(n, _)| n.as_str())
    }
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The master's `certs/` directory.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct CaMeta {
    cn: String,
}

/// Writes `data` to `path` atomically (temp file + rename) with `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    minion::agent::write_file(path, data, mode).map_err(io_at(path))
}

fn read_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_at(path))
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(PkiError::BadName(name.into()))
    }
}

fn offset(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn random_serial() -> SerialNumber {
    let mut b = uuid::Uuid::new_v4().as_bytes().to_vec();
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

/// A minion's certificate files as issued.
#[derive(Debug, Clone)]
pub struct MinionCert {
    /// PEM of the certificate.
    pub cert_pem: String,
    /// PEM of its private key.
    pub key_pem: String,
    /// PEM of the CA certificate.
    pub ca_pem: String,
    /// What the registry recorded.
    pub issued: Issued,
}

impl Pki {
    /// The PKI of the master tree `master`.
    pub fn new(master: &Path) -> Self {
        Self {
            dir: master.join("certs"),
        }
    }

    /// `certs/NAME`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `certs/registry.json`.
    pub fn registry_path(&self) -> PathBuf {
        self.path("registry.json")
    }

    /// Creates the CA and the master's certificate (`extra_names`: more DNS names or IPs for
    /// the master's certificate).
    pub fn init(&self, extra_names: &[String]) -> Result<Vec<PathBuf>> {
        if self.path("ca.key").exists() {
            return Err(PkiError::Exists(self.dir.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(io_at(&self.dir))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_at(&self.dir))?;
        let cn = format!(
            "ingot CA {}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params(&cn);
        let mut params = ca_params.clone();
        let now = now_secs();
        params.not_before = offset(now - 3600);
        params.not_after = offset(now + 20 * 365 * 86400);
        params.serial_number = Some(random_serial());
        let ca_cert = params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names = vec![MASTER_SERVER_NAME.to_owned()];
        names.extend(extra_names.iter().cloned());
        let mut mp = CertificateParams::new(names)?;
        mp.distinguished_name = dn(MASTER_SERVER_NAME);
        mp.not_before = offset(now - 3600);
        mp.not_after = offset(now + 5 * 365 * 86400);
        mp.serial_number = Some(random_serial());
        mp.use_authority_key_identifier_extension = true;
        mp.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        mp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let master_key = KeyPair::generate()?;
        let master_cert = mp.signed_by(&master_key, &issuer)?;

        let files = [
            ("ca.key", issuer.key().serialize_pem(), 0o600),
            ("ca.crt", ca_cert.pem(), 0o644),
            (
                "ca.json",
                serde_json::to_string(&CaMeta { cn }).expect("serializes"),
                0o600,
            ),
            ("master.key", master_key.serialize_pem(), 0o600),
            ("master.crt", master_cert.pem(), 0o644),
        ];
        let mut written = Vec::new();
        for (name, data, mode) in files {
            write_file(&self.path(name), data.as_bytes(), mode)?;
            written.push(self.path(name));
        }
        if !self.registry_path().exists() {
            self.save(&Registry::default())?;
        }
        Ok(written)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let key_path = self.path("ca.key");
        if !key_path.exists() {
            return Err(PkiError::NoCa(self.dir.clone()));
        }
        let key = KeyPair::from_pem(&read_string(&key_path)?)?;
        let meta_path = self.path("ca.json");
        let meta: CaMeta =
            serde_json::from_str(&read_string(&meta_path)?).map_err(|e| PkiError::Registry {
                path: meta_path.clone(),
                message: e.to_string(),
            })?;
        Ok(Issuer::new(ca_params(&meta.cn), key))
    }

    /// The registry (empty when missing).
    pub fn registry(&self) -> Result<Registry> {
        let path = self.registry_path();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| PkiError::Registry {
                path,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn save(&self, reg: &Registry) -> Result<()> {
        let data = serde_json::to_vec_pretty(reg).expect("registry serializes");
        write_file(&self.registry_path(), &data, 0o600)
    }

    /// Issues (or re-issues, replacing the old one) a certificate for minion `name`, valid for
    /// `days`.
    pub fn issue(&self, name: &str, days: f64) -> Result<MinionCert> {
        let mut one = self.issue_many(&[name.to_owned()], days)?;
        Ok(one.remove(0))
    }

    /// Issues certificates for many names under one registry update (load tests, fleets).
    pub fn issue_many(&self, names: &[String], days: f64) -> Result<Vec<MinionCert>> {
        let issuer = self.issuer()?;
        let ca_pem = read_string(&self.path("ca.crt"))?;
        let now = now_secs();
        let mut out = Vec::new();
        for name in names {
            check_name(name)?;
            let (p, not_after) = minion_params(name, now, days)?;
            let key = KeyPair::generate()?;
            let cert = p.signed_by(&key, &issuer)?;
            out.push(MinionCert {
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
                ca_pem: ca_pem.clone(),
                issued: Issued {
                    fingerprint: fingerprint(cert.der()),
                    issued: now,
                    not_after,
                    revoked: None,
                },
            });
        }
        let _lock = self.lock()?;
        let mut reg = self.registry()?;
        for (name, c) in names.iter().zip(&out) {
            reg.minions.insert(name.clone(), c.issued.clone());
        }
        self.save(&reg)?;
        Ok(out)
    }

    /// Marks `name`'s certificate revoked: refused at its next handshake.
    pub fn revoke(&self, name: &str) -> Result<Issued> {
        let _lock = self.lock()?;
        let mut reg = self.registry()?;
        let entry = reg
            .minions
            .get_mut(name)
            .ok_or_else(|| PkiError::Unknown(name.into()))?;
        entry.revoked.get_or_insert(now_secs());
        let out = entry.clone();
        self.save(&reg)?;
        Ok(out)
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let path = self.path(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_at(&path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io_at(&path)(std::io::Error::from(e)))
    }
}

/// A P-256 public key sent by an enrolling minion (its uncompressed point, as
/// `KeyPair::public_key_raw` gives it): the private key never leaves the minion.
#[derive(Debug, Clone)]
pub struct RawPublicKey(pub Vec<u8>);

impl RawPublicKey {
    /// Parses lowercase or uppercase hex of a 65-byte uncompressed P-256 point.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 130 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        bytes.filter(|b| b[0] == 4).map(Self)
    }

    /// Hex of the point.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl rcgen::PublicKeyData for RawPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

/// An enrollment request waiting for `ingot certs accept|reject NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The name asked for.
    pub name: String,
    /// The public key (hex).
    pub public_key: String,
    /// Where it came from.
    pub address: String,
    /// Unix seconds.
    pub requested: i64,
}

/// What the master answers an enrolling minion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrollment {
    /// Signed: the certificate PEM.
    Issued(String),
    /// Waiting for the operator.
    Pending,
    /// The operator rejected this key for this name.
    Rejected,
}

impl Pki {
    fn sub(&self, dir: &str, name: &str) -> PathBuf {
        self.dir.join(dir).join(format!("{name}.json"))
    }

    /// Signs `key` for `name` (enrollment, renewal), replacing any earlier certificate.
    pub fn issue_for_key(&self, name: &str, key: &RawPublicKey, days: f64) -> Result<String> {
        let issuer = self.issuer()?;
        let now = now_secs();
        let (p, not_after) = minion_params(name, now, days)?;
        let cert = p.signed_by(key, &issuer)?;
        let _lock = self.lock()?;
        let mut reg = self.registry()?;
        reg.minions.insert(
            name.to_owned(),
            Issued {
                fingerprint: fingerprint(cert.der()),
                issued: now,
                not_after,
                revoked: None,
            },
        );
        self.save(&reg)?;
        let done = serde_json::json!({"public_key": key.to_hex(), "cert": cert.pem()});
        let path = self.sub("enrolled", name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io_at(&path))?;
        write_file(&path, done.to_string().as_bytes(), 0o600)?;
        Ok(cert.pem())
    }

    /// Creates a one-time enrollment token: a minion presenting it is accepted at once.
    pub fn new_token(&self) -> Result<String> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.dir.join("tokens");
        std::fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        write_file(&dir.join(&token), b"", 0o600)?;
        Ok(token)
    }

    /// Handles an enrollment request from `address`.
    pub fn enroll(
        &self,
        name: &str,
        key: &RawPublicKey,
        token: Option<&str>,
        address: &str,
        days: f64,
    ) -> Result<Enrollment> {
        check_name(name)?;
        let hex = key.to_hex();
        let read = |dir: &str| -> Option<serde_json::Value> {
            serde_json::from_slice(&std::fs::read(self.sub(dir, name)).ok()?).ok()
        };
        if let Some(done) = read("enrolled") {
            if done["public_key"] == hex.as_str() {
                if let Some(cert) = done["cert"].as_str() {
                    return Ok(Enrollment::Issued(cert.to_owned()));
                }
            }
        }
        if read("rejected").is_some_and(|r| r["public_key"] == hex.as_str()) {
            return Ok(Enrollment::Rejected);
        }
        if let Some(t) = token.filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()))
        {
            // One-time: whoever removes the file first uses it.
            if std::fs::remove_file(self.dir.join("tokens").join(t)).is_ok() {
                let _ = std::fs::remove_file(self.sub("pending", name));
                return self.issue_for_key(name, key, days).map(Enrollment::Issued);
            }
        }
        let req = EnrollRequest {
            name: name.into(),
            public_key: hex,
            address: address.into(),
            requested: now_secs(),
        };
        let path = self.sub("pending", name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io_at(&path))?;
        write_file(&path, &serde_json::to_vec(&req).expect("serializes"), 0o600)?;
        Ok(Enrollment::Pending)
    }

    /// Enrollment requests waiting for the operator.
    pub fn pending(&self) -> Vec<EnrollRequest> {
        let mut v: Vec<EnrollRequest> = std::fs::read_dir(self.dir.join("pending"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn take_pending(&self, name: &str) -> Result<EnrollRequest> {
        let path = self.sub("pending", name);
        let req: EnrollRequest = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                PkiError::Unknown(format!(
                    "{name} (no pending enrollment; see `ingot certs pending`)"
                ))
            })?;
        let _ = std::fs::remove_file(&path);
        Ok(req)
    }

    /// Accepts `name`'s pending request: signs its key (picked up at its next attempt).
    pub fn accept(&self, name: &str, days: f64) -> Result<EnrollRequest> {
        let req = self.take_pending(name)?;
        let key = RawPublicKey::from_hex(&req.public_key).ok_or_else(|| PkiError::Pem {
            path: self.sub("pending", name),
            message: "not a P-256 public key".into(),
        })?;
        self.issue_for_key(name, &key, days)?;
        Ok(req)
    }

    /// Rejects `name`'s pending request.
    pub fn reject(&self, name: &str) -> Result<EnrollRequest> {
        let req = self.take_pending(name)?;
        let path = self.sub("rejected", name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).map_err(io_at(&path))?;
        write_file(&path, &serde_json::to_vec(&req).expect("serializes"), 0o600)?;
        Ok(req)
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Writes a minion's certificate, key (0600) and the CA certificate into `dir` (a minion
/// tree's `certs/`).
pub fn install_minion_cert(dir: &Path, cert: &MinionCert) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io_at(dir))?;
    let files = [
        ("minion.key", &cert.key_pem, 0o600),
        ("minion.crt", &cert.cert_pem, 0o644),
        ("ca.crt", &cert.ca_pem, 0o644),
    ];
    let mut out = Vec::new();
    for (name, data, mode) in files {
        let p = dir.join(name);
        write_file(&p, data.as_bytes(), mode)?;
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_revoke_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let pki = Pki::new(d.path());
        pki.init(&["127.0.0.1".into()]).unwrap();
        assert!(matches!(pki.init(&[]), Err(PkiError::Exists(_))));
        let mode = |p: &str| std::fs::metadata(pki.path(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("ca.key"), 0o600);
        assert_eq!(mode("master.key"), 0o600);
        let c = pki.issue("web1", 30.0).unwrap();
        assert_eq!(c.issued.state(now_secs()), "valid");
        assert!(pki.issue("bad name", 1.0).is_err());
        let reg = pki.registry().unwrap();
        assert_eq!(reg.name_of(&c.issued.fingerprint), Some("web1"));
        pki.revoke("web1").unwrap();
        assert_eq!(pki.registry().unwrap().name_of(&c.issued.fingerprint), None);
        assert!(matches!(pki.revoke("nope"), Err(PkiError::Unknown(_))));
        let out = d.path().join("m/certs");
        install_minion_cert(&out, &c).unwrap();
        assert_eq!(
            std::fs::metadata(out.join("minion.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
}
