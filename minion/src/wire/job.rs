//! A Directord job as it travels to a minion (its behaviour: `crate::directord::job`).

use serde::{Deserialize, Serialize};
use serde_json::Map;
use serde_json::Value;

/// One job for one minion queue. Serialisable, so the master can send it as is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id (uuid).
    pub job_id: String,
    /// The verb, upper case (`RUN`).
    pub verb: String,
    /// The verb string as written (for display; not part of the fingerprint).
    #[serde(default)]
    pub text: String,
    /// The resource executable that performs it (`run`, `service_verb`).
    pub kind: String,
    /// Every option and positional (plus `timeout`, `run_once`, `skip_cache`, `stdout_arg`,
    /// `stderr_arg`); ADD/COPY add `file_from`, `file_sha3_224` and `file_to`.
    pub fields: Map<String, Value>,
    /// SHA3-224 of the canonical job (see `directord::job::fingerprint`).
    pub sha3_224: String,
    /// Whether a success may be reused (the verb's `cacheable`).
    pub cacheable: bool,
    /// The orchestration this job belongs to (`job_id` for `exec`).
    pub parent_id: String,
    /// SHA3-224 of the orchestration item.
    #[serde(default)]
    pub parent_sha3_224: Option<String>,
    /// Orchestration name.
    #[serde(default)]
    pub parent_name: Option<String>,
    /// Job name.
    #[serde(default)]
    pub job_name: Option<String>,
    /// Run in the parent's own queue (concurrently with other parents).
    #[serde(default)]
    pub parent_async: bool,
    /// Targets (empty: every minion).
    #[serde(default)]
    pub targets: Vec<String>,
}
