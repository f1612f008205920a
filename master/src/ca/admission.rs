//! Which minions may connect: the registry of issued certificates, re-read whenever its file
//! changes, consulted at every TLS handshake (through [`minion::wire::tls::AdmitPeer`]) and
//! to name the minion a certificate belongs to.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::{Pki, Registry};

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

impl minion::wire::tls::AdmitPeer for RegistryCache {
    fn admits(&self, fingerprint: &str) -> bool {
        self.get().name_of(fingerprint).is_some()
    }
}
