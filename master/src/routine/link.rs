//! How the master talks to one minion: one interface, [`MinionLink`], for the in-process minion
//! (`routine::local`) and a connected one (`fleet::RemoteMinion`).

use std::future::Future;

use runner::EventSink;
use serde_json::Value;

/// What a resource says about itself (`describe`), as far as the master needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Described {
    /// Fields that identify an instance.
    pub identity: Vec<String>,
    /// It accepts arrays of states.
    pub batch: bool,
    /// JSON Schema of its desired state, when it has one.
    pub schema: Option<Value>,
}

/// Why a call to a minion failed: the program failed, printed something that is not JSON, or
/// could not be run at all. The same type travels the network ([`minion::wire::WireError`]), so
/// a failure reads the same wherever the minion is.
pub type LinkError = minion::wire::WireError;

/// A fact document with the facts that failed.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `{"os": {...}, ...}`.
    pub document: Value,
    /// `(fact, reason)` for each fact left out.
    pub failures: Vec<(String, String)>,
}

/// One minion as the master sees it.
pub trait MinionLink: Send + Sync {
    /// The minion's name.
    fn name(&self) -> &str;
    /// Gathers the fact document.
    fn facts(&self, sink: &dyn EventSink) -> impl Future<Output = Result<Facts, LinkError>> + Send;
    /// `resources/KIND describe` (cached by the implementation); `None` when the resource
    /// does not describe itself.
    fn describe(
        &self,
        kind: &str,
    ) -> impl Future<Output = Result<Option<Described>, LinkError>> + Send;
    /// Runs `resources/KIND ACTION` with `input` on stdin and returns its JSON output.
    fn call(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> impl Future<Output = Result<Value, LinkError>> + Send;
}
