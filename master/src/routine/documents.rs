//! The documents that cross the master's boundaries, and their JSON Schema validation.
//!
//! Every document an actor prints is checked here before anything acts on it, so a broken actor
//! gets an error naming the actor, the entry, the schema path and the fix — and changes nothing.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// One step of a choreography.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The resource kind.
    pub kind: String,
    /// `conform` or a custom action.
    pub action: String,
    /// The state given to the action.
    pub state: Value,
}

/// A document that failed its schema.
#[derive(Debug, thiserror::Error)]
#[error("{actor} printed an invalid {document}: {problems}\n  fix: {fix}")]
pub struct InvalidDocument {
    /// The actor that printed it, e.g. `actors/prescribe`.
    pub actor: String,
    /// What it was meant to be, e.g. `prescription`.
    pub document: &'static str,
    /// Each violation: the entry, its JSON pointer, the message and the schema path.
    pub problems: String,
    /// What a correct document looks like.
    pub fix: &'static str,
}

fn kind_schema() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"})
}

fn step_schema() -> Value {
    json!({
        "type": "object",
        "required": ["kind", "action", "state"],
        "properties": {
            "kind": kind_schema(),
            "action": {"type": "string", "minLength": 1},
            "state": {"type": "object"}
        },
        "additionalProperties": false
    })
}

/// Schema of a prescription: an array of resource states, each an object with a `kind`.
pub fn prescription_schema() -> Value {
    json!({
        "type": "array",
        "items": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": kind_schema(),
                "sensitive": {"type": "array", "items": {"type": "string"}},
                "notify": {"type": "array", "items": step_schema()}
            }
        }
    })
}

/// Schema of a choreography: an array of steps.
pub fn steps_schema() -> Value {
    json!({"type": "array", "items": step_schema()})
}

fn validator(
    cell: &'static OnceLock<jsonschema::Validator>,
    schema: fn() -> Value,
) -> &'static jsonschema::Validator {
    cell.get_or_init(|| {
        jsonschema::validator_for(&schema()).expect("the built-in schemas are valid")
    })
}

/// Checks `doc` against `schema`, collecting up to five violations into one error.
pub fn check(
    validator: &jsonschema::Validator,
    doc: &Value,
    actor: &str,
    document: &'static str,
    fix: &'static str,
) -> Result<(), InvalidDocument> {
    let problems: Vec<String> = validator
        .iter_errors(doc)
        .take(5)
        .map(|e| {
            let at = e.instance_path().to_string();
            let entry = at.split('/').nth(1).and_then(|i| i.parse::<usize>().ok());
            let place = match entry {
                Some(i) => format!("entry {i} (at {at})"),
                None if at.is_empty() => "the document".to_string(),
                None => format!("at {at}"),
            };
            format!("{place}: {e} (schema path {})", e.schema_path())
        })
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    Err(InvalidDocument {
        actor: actor.into(),
        document,
        problems: problems.join("; "),
        fix,
    })
}

/// Validates a prescription printed by `actor`.
pub fn check_prescription(doc: &Value, actor: &str) -> Result<(), InvalidDocument> {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        validator(&V, prescription_schema),
        doc,
        actor,
        "prescription",
        "print a JSON array of resource states, each an object with a string \"kind\", e.g. [{\"kind\":\"file\",\"path\":\"/etc/motd\",\"content\":\"hi\\n\"}]",
    )
}

/// Validates a step list printed by `actor`.
pub fn check_steps(doc: &Value, actor: &str) -> Result<(), InvalidDocument> {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    check(
        validator(&V, steps_schema),
        doc,
        actor,
        "step list",
        "print a JSON array of steps {\"kind\": K, \"action\": \"conform\" or a custom action, \"state\": {...}}",
    )
}

/// The fields of a state that describe the resource (not ingot's own annotations).
pub fn is_meta_field(field: &str) -> bool {
    matches!(
        field,
        "kind" | "sensitive" | "notify" | "changes" | "exists" | "after"
    )
}

/// A short, stable label for a resource: its kind and its identity fields (or first field).
pub fn label(state: &Value, identity: &[String]) -> String {
    let kind = state.get("kind").and_then(Value::as_str).unwrap_or("?");
    let fields: Vec<String> = identity
        .iter()
        .filter_map(|f| state.get(f))
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .collect();
    if !fields.is_empty() {
        return format!("{kind} {}", fields.join(" "));
    }
    let first = ["name", "path", "id"].iter().find_map(|f| state.get(*f));
    match first {
        Some(v) => format!(
            "{kind} {}",
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        ),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prescription_errors_name_the_entry_and_the_schema_path() {
        let doc = json!([{"kind": "file"}, {"path": "/x"}, {"kind": 5}]);
        let e = check_prescription(&doc, "actors/prescribe")
            .unwrap_err()
            .to_string();
        assert!(e.contains("actors/prescribe"), "{e}");
        assert!(e.contains("entry 1"), "{e}");
        assert!(e.contains("entry 2 (at /2/kind)"), "{e}");
        assert!(e.contains("schema path"), "{e}");
        assert!(e.contains("fix:"), "{e}");
        check_prescription(&json!([{"kind": "file", "path": "/x"}]), "p").unwrap();
    }

    #[test]
    fn steps_need_kind_action_and_state() {
        assert!(check_steps(
            &json!([{"kind": "file", "action": "conform", "state": {}}]),
            "c"
        )
        .is_ok());
        let e = check_steps(
            &json!([{"kind": "file", "state": {}}]),
            "actors/choreograph",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("entry 0") && e.contains("action"), "{e}");
        assert!(check_steps(&json!({"not": "a list"}), "c").is_err());
    }
}
