//! The answers to requests and asks, typed: the side that answers serializes one of these into
//! [`super::Reply::Ok`], the side that asked deserializes the same type. (A `Resource` request
//! answers the resource's own JSON output; a `Job` answers `directord::JobResult`; `DumpCache`
//! answers the cache's dump.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The answer to `Op::Facts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FactsAnswer {
    /// The merged fact document.
    pub document: Value,
    /// `[fact, why]` for each fact left out.
    #[serde(default)]
    pub failures: Vec<(String, String)>,
}

/// The answer to `Op::Describe`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DescribeAnswer {
    /// What the resource printed for `describe` (null: it does not describe itself).
    #[serde(default)]
    pub doc: Option<Value>,
    /// Fields that identify an instance.
    #[serde(default)]
    pub identity: Vec<String>,
    /// Whether it takes arrays of states.
    #[serde(default)]
    pub batch: bool,
}

/// How a job ended, as a minion's cache records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedState {
    /// It succeeded.
    Success,
    /// It failed.
    Failed,
}

/// The answer to `Op::JobState`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobStateAnswer {
    /// How the job ended; `None` when it had not ended within the limit.
    pub state: Option<EndedState>,
}

/// The answer to a `TransferOp` step: `have` to `Begin`, nothing to `Chunk`, `stored` to
/// `End`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferAnswer {
    /// `Begin`: the minion already holds the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub have: Option<bool>,
    /// `End`: the content checked out and is in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<bool>,
}

/// What an `Op::Install` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallState {
    /// It was already in place.
    Unchanged,
    /// It was installed (or replaced).
    Installed,
    /// The content is not on the minion: send it first.
    Missing,
}

impl InstallState {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Installed => "installed",
            Self::Missing => "missing",
        }
    }
}

/// The answer to `Op::Install`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstallAnswer {
    /// What happened.
    pub state: InstallState,
}

/// The answer to `Ask::JobWait`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobWaitAnswer {
    /// The minions on which the job ended well.
    #[serde(default)]
    pub acked: Vec<String>,
    /// The minions on which it did not, with why.
    #[serde(default)]
    pub failed: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_keep_their_wire_shape() {
        let t = serde_json::to_value(TransferAnswer {
            have: Some(false),
            stored: None,
        })
        .unwrap();
        assert_eq!(t, serde_json::json!({"have": false}));
        let s: JobStateAnswer = serde_json::from_value(serde_json::json!({"state": null})).unwrap();
        assert_eq!(s.state, None);
        let s: JobStateAnswer =
            serde_json::from_value(serde_json::json!({"state": "failed"})).unwrap();
        assert_eq!(s.state, Some(EndedState::Failed));
        let i: InstallAnswer =
            serde_json::from_value(serde_json::json!({"state": "missing"})).unwrap();
        assert_eq!(i.state, InstallState::Missing);
        let f: FactsAnswer = serde_json::from_value(
            serde_json::json!({"document": {"os": {}}, "failures": [["net", "no route"]]}),
        )
        .unwrap();
        assert_eq!(f.failures, vec![("net".into(), "no route".into())]);
    }
}
