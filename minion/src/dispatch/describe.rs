//! What ingot knows about a resource kind from its `describe`: the document, the compiled
//! schema states are checked against, and the built-in serving the kind in this process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jsonschema::Validator;
use runner::{EventSink, Program, Runner};
use serde_json::Value;

use super::error::DispatchError;
use super::output::{last_line, tail_suffix};
use super::schema::compiled_schema;
use crate::builtin;

/// What ingot knows about a resource kind from its `describe`.
pub struct Description {
    /// The kind.
    pub kind: String,
    /// The `describe` document, or `None` when it is missing or failed.
    pub doc: Option<Value>,
    /// Why there is no document.
    pub problem: Option<String>,
    validator: Option<Arc<Validator>>,
    /// The built-in serving this kind when `resources/KIND` is the running executable itself
    /// (see `crate::inproc`); decided with the describe and forgotten with it.
    builtin: Option<&'static dyn builtin::Resource>,
}

impl Description {
    /// The built-in this process serves the kind with instead of an exec, if any.
    pub fn builtin(&self) -> Option<&'static dyn builtin::Resource> {
        self.builtin
    }
}

impl std::fmt::Debug for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Description")
            .field("kind", &self.kind)
            .field("doc", &self.doc)
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

impl Description {
    /// Whether the resource accepts a JSON array of states in one process.
    pub fn batch(&self) -> bool {
        self.doc
            .as_ref()
            .and_then(|d| d.get("batch"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The actions `describe` lists (`None` when unknown).
    pub fn actions(&self) -> Option<Vec<String>> {
        let doc = self.doc.as_ref()?;
        let mut names: Vec<String> = match doc.get("actions") {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Into::into).collect(),
            _ => return None,
        };
        for implicit in ["inspect", "conform", "describe"] {
            if !names.iter().any(|n| n == implicit) {
                names.push(implicit.into());
            }
        }
        Some(names)
    }

    /// The identity fields (empty when unknown).
    pub fn identity(&self) -> Vec<String> {
        self.doc
            .as_ref()
            .and_then(|d| d.get("identity"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(Into::into).collect())
            .unwrap_or_default()
    }

    /// Checks one state (an object that already carries `kind`) against the schema, or only
    /// its shape when there is no schema.
    pub fn check(&self, state: &Value) -> Result<(), DispatchError> {
        let invalid = |pointer: &str, message: String| DispatchError::Invalid {
            kind: self.kind.clone(),
            pointer: pointer.into(),
            message,
        };
        let Some(obj) = state.as_object() else {
            return Err(invalid(
                "",
                "expected a JSON object (a resource state)".into(),
            ));
        };
        match obj.get("kind") {
            Some(Value::String(k)) if *k == self.kind => {}
            Some(other) => {
                return Err(invalid(
                    "/kind",
                    format!("is {other}, but this is the {:?} resource", self.kind),
                ))
            }
            None => return Err(invalid("/kind", "missing required field \"kind\"".into())),
        }
        if let (Some(v), Some(doc)) = (&self.validator, &self.doc) {
            if let Some(e) = v.iter_errors(state).next() {
                let schema = doc.get("schema").cloned().unwrap_or(Value::Null);
                return Err(
                    match crate::builtin::protocol::explain(&e, &schema, &self.kind) {
                        crate::builtin::ResourceError::Input { pointer, message } => {
                            invalid(&pointer, message)
                        }
                        other => invalid(e.instance_path().as_str(), other.to_string()),
                    },
                );
            }
        }
        Ok(())
    }
}

/// Runs `resources/KIND describe` (at `path`), or computes it in this process when the entry is
/// the running executable, and compiles its schema. Where `describe` is missing or fails, the
/// description has no document (logged).
pub(super) async fn probe(
    runner: &Runner,
    kind: &str,
    path: &Path,
    sink: &dyn EventSink,
) -> Description {
    let here = crate::inproc::builtin_here(kind, path);
    let run = match here {
        Some(r) => Ok(builtin::protocol::describe(r)),
        None => {
            let program = Program::new(path)
                .name(kind)
                .arg("describe")
                .timeout(Duration::from_secs(30));
            Err(runner.run(&program, sink).await)
        }
    };
    let doc = match run {
        Ok(doc) => Ok(doc),
        Err(Err(e)) => Err(e.to_string()),
        Err(Ok(o)) if !o.success() => Err(format!(
            "describe exited with code {}{}",
            o.code(),
            tail_suffix(&last_line(&o.stderr_text()))
        )),
        Err(Ok(o)) => serde_json::from_slice::<Value>(&o.stdout)
            .map_err(|e| format!("describe printed invalid JSON ({e})")),
    };
    match doc.and_then(|d| compile(&d).map(|v| (d, v))) {
        Ok((doc, validator)) => Description {
            kind: kind.into(),
            doc: Some(doc),
            problem: None,
            validator,
            builtin: here,
        },
        Err(reason) => {
            tracing::warn!(
                    kind,
                    "resource {kind} has no usable describe ({reason}); only checking that its states are JSON objects with kind"
                );
            Description {
                kind: kind.into(),
                doc: None,
                problem: Some(reason),
                validator: None,
                builtin: here,
            }
        }
    }
}

/// Checks a describe document's shape and compiles its schema.
fn compile(doc: &Value) -> Result<Option<Arc<Validator>>, String> {
    if !doc.is_object() {
        return Err("describe did not print a JSON object".into());
    }
    match doc.get("schema") {
        None | Some(Value::Null) => Ok(None),
        Some(schema) => compiled_schema(schema)
            .map(Some)
            .map_err(|e| format!("describe's schema is not a valid JSON Schema: {e}")),
    }
}
