//! The one way into a minion: facts and resource actions, run through the runner.
//!
//! The shell (`ingot facts`, `ingot resource`), the master's in-process minion and the network
//! all call [`Minion::facts`] and [`Minion::resource`].
//!
//! - [`error`]: [`DispatchError`] and [`FactsError`].
//! - [`facts`]: gathering `facts/` into one document ([`FactReport`]).
//! - [`describe`]: a kind's `describe` ([`Description`]) and checking states against it.
//! - [`schema`]: compiled JSON Schemas, shared in the process ([`compiled_schema`]).
//! - `exec`: running one action as a process and reading its result.
//!
//! This file holds [`Minion`] and its public API; the modules above do not use it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runner::{EventSink, Runner};
use serde_json::Value;

pub mod describe;
pub mod error;
mod exec;
pub mod facts;
mod join;
mod output;
pub mod schema;

pub use describe::Description;
pub use error::{DispatchError, FactsError};
pub use facts::{FactProblem, FactReport};
pub use schema::{compiled_schema, SchemaError};

use join::join_all;

/// A minion rooted at a directory laid out by `ingot init minion`.
pub struct Minion {
    dir: PathBuf,
    runner: Runner,
    fact_timeout: Duration,
    resource_timeout: Duration,
    describes: Mutex<HashMap<String, Arc<Description>>>,
}

impl Minion {
    /// Default time a single fact may take.
    pub const FACT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default time a resource action may take (Directord's job default).
    pub const RESOURCE_TIMEOUT: Duration = Duration::from_secs(600);

    /// A minion at `dir`, running at most 16 processes at once.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            runner: Runner::new(16),
            fact_timeout: Self::FACT_TIMEOUT,
            resource_timeout: Self::RESOURCE_TIMEOUT,
            describes: Mutex::new(HashMap::new()),
        }
    }

    /// Uses this runner (and its concurrency bound).
    pub fn with_runner(mut self, runner: Runner) -> Self {
        self.runner = runner;
        self
    }

    /// Sets the per-fact timeout.
    pub fn with_fact_timeout(mut self, t: Duration) -> Self {
        self.fact_timeout = t;
        self
    }

    /// Sets the per-action timeout.
    pub fn with_resource_timeout(mut self, t: Duration) -> Self {
        self.resource_timeout = t;
        self
    }

    /// The minion directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs every executable in `facts/` in parallel and combines their output (SPEC §4);
    /// a non-executable `NAME.json` is the static fact `NAME`, and a built-in fact linked to the
    /// running executable is gathered in this process. A fact that fails is left out and listed
    /// in [`FactReport::failures`] (also sent to the sink as a `fact_failed` event); hidden
    /// files, directories and other non-executables are skipped with a warning.
    pub async fn facts(&self, sink: &dyn EventSink) -> Result<FactReport, FactsError> {
        facts::gather(
            &self.dir.join("facts"),
            &self.runner,
            self.fact_timeout,
            sink,
        )
        .await
    }

    /// The description of a resource kind, from `resources/KIND describe`, cached per kind.
    /// Where `describe` is missing or fails, the description has no document and states are
    /// only checked to be JSON objects with `kind` (logged once per kind).
    pub async fn describe(
        &self,
        kind: &str,
        sink: &dyn EventSink,
    ) -> Result<Arc<Description>, DispatchError> {
        let path = self.resource_path(kind)?;
        if let Some(d) = self.lock_describes().get(kind) {
            return Ok(d.clone());
        }
        let desc = Arc::new(describe::probe(&self.runner, kind, &path, sink).await);
        self.lock_describes()
            .entry(kind.into())
            .or_insert_with(|| desc.clone());
        Ok(desc)
    }

    fn lock_describes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Description>>> {
        self.describes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the cached `describe` of `kind` (its executable was replaced).
    pub fn forget(&self, kind: &str) {
        self.lock_describes().remove(kind);
    }

    /// The runner every program of this minion goes through.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// `resources/KIND`, when the kind is a plain name and the entry exists.
    pub fn resource_path(&self, kind: &str) -> Result<PathBuf, DispatchError> {
        if kind.is_empty() || kind.contains('/') || kind.starts_with('.') || kind.contains('\0') {
            return Err(DispatchError::BadKind(kind.into()));
        }
        let path = self.dir.join("resources").join(kind);
        if std::fs::metadata(&path).is_err() {
            if let Some(target) = crate::layout::dangling_builtin(&path) {
                return Err(DispatchError::BrokenLink(
                    crate::layout::broken_link_reason(&path, &target),
                ));
            }
            return Err(DispatchError::NotFound {
                kind: kind.into(),
                path,
            });
        }
        Ok(path)
    }

    /// Runs `resources/KIND ACTION` with `input` on stdin and returns its parsed output.
    ///
    /// `input` is one state or an array of states. States without `kind` get it; a state with
    /// another `kind` is refused. Each state is checked against the resource's schema (from
    /// `describe`) before anything runs. An array goes to one process when the resource
    /// supports batches, else to one process per state (in parallel); either way the result is
    /// an array in the same order where a failed element is `{"error": ...}`.
    /// `describe` returns the (cached) describe document.
    pub async fn resource(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> Result<Value, DispatchError> {
        self.resource_with_timeout(kind, action, input, self.resource_timeout, sink)
            .await
    }

    /// [`Minion::resource`] with a timeout for this call only (a Directord job's `--timeout`):
    /// past it the resource's whole process group is killed.
    pub async fn resource_with_timeout(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Value, DispatchError> {
        let path = self.resource_path(kind)?;
        let desc = self.describe(kind, sink).await?;
        if action == "describe" {
            return desc.doc.clone().ok_or_else(|| DispatchError::NoDescribe {
                kind: kind.into(),
                reason: desc.problem.clone().unwrap_or_default(),
            });
        }
        if let Some(actions) = desc.actions() {
            if !actions.iter().any(|a| a == action) {
                return Err(DispatchError::UnknownAction {
                    kind: kind.into(),
                    action: action.into(),
                    known: actions.join(", "),
                });
            }
        }
        // The running binary itself under a built-in's name: no exec (see `inproc`).
        let here = desc.builtin().filter(|r| r.in_process());
        let with_kind = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Some(obj) = v.as_object_mut() {
                obj.entry("kind")
                    .or_insert_with(|| Value::String(kind.into()));
            }
            v
        };
        match input {
            Value::Array(items) => {
                let states: Vec<Result<Value, DispatchError>> = items
                    .iter()
                    .map(|s| {
                        let s = with_kind(s);
                        desc.check(&s).map(|_| s)
                    })
                    .collect();
                let valid: Vec<Value> = states
                    .iter()
                    .filter_map(|s| s.as_ref().ok().cloned())
                    .collect();
                let mut results: Vec<Value> = if valid.is_empty() {
                    Vec::new()
                } else if let Some(r) = here {
                    match crate::inproc::perform(r, action, Value::Array(valid), timeout, sink)
                        .await?
                    {
                        Value::Array(items) => items,
                        other => vec![other],
                    }
                } else if desc.batch() {
                    exec::run_batch(&self.runner, &path, kind, action, valid, timeout, sink).await?
                } else {
                    let runs = valid
                        .iter()
                        .map(|s| exec::run_one(&self.runner, &path, kind, action, s, timeout, sink))
                        .collect();
                    join_all(runs)
                        .await
                        .into_iter()
                        .map(|r| r.unwrap_or_else(|e| e.to_element()))
                        .collect()
                };
                results.reverse();
                Ok(Value::Array(
                    states
                        .into_iter()
                        .map(|s| match s {
                            Ok(_) => results.pop().unwrap_or(Value::Null),
                            Err(e) => e.to_element(),
                        })
                        .collect(),
                ))
            }
            other => {
                let state = with_kind(other);
                desc.check(&state)?;
                if let Some(r) = here {
                    return crate::inproc::perform(r, action, state, timeout, sink).await;
                }
                exec::run_one(&self.runner, &path, kind, action, &state, timeout, sink).await
            }
        }
    }
}
