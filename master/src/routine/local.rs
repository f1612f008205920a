//! The in-process minion: the master's routine calling the minion's dispatch directly, behind
//! the same [`MinionLink`] interface a remote minion has.

use minion::dispatch::Minion;
use runner::EventSink;
use serde_json::Value;

use crate::routine::link::{Described, Facts, LinkError, MinionLink};

/// A minion tree on this machine, driven in-process.
pub struct LocalMinion {
    name: String,
    minion: Minion,
}

impl LocalMinion {
    /// Drives the minion tree `minion` under the name `name`.
    pub fn new(name: impl Into<String>, minion: Minion) -> Self {
        Self {
            name: name.into(),
            minion,
        }
    }
}

impl MinionLink for LocalMinion {
    fn name(&self) -> &str {
        &self.name
    }

    async fn facts(&self, sink: &dyn EventSink) -> Result<Facts, LinkError> {
        let report = self
            .minion
            .facts(sink)
            .await
            .map_err(|e| LinkError::Unreachable {
                message: e.to_string(),
            })?;
        Ok(Facts {
            document: Value::Object(report.document),
            failures: report
                .failures
                .into_iter()
                .map(|p| (p.name, p.reason))
                .collect(),
        })
    }

    async fn describe(&self, kind: &str) -> Result<Option<Described>, LinkError> {
        let d = self
            .minion
            .describe(kind, &runner::NullSink)
            .await
            .map_err(LinkError::from)?;
        Ok(d.doc.as_ref().map(|doc| Described {
            identity: d.identity(),
            batch: d.batch(),
            schema: doc.get("schema").cloned(),
        }))
    }

    async fn call(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> Result<Value, LinkError> {
        self.minion
            .resource(kind, action, input, sink)
            .await
            .map_err(LinkError::from)
    }
}
