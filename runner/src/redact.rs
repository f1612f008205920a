//! Keeping secrets out of events (SPEC §4: values named in a state's `sensitive` list).

use serde_json::Value;

/// What a redacted value is replaced by.
pub const MASK: &str = "***";

/// Keys under which a document nests other states.
const NESTED_STATES: &[&str] = &["state", "desired", "observed", "before", "after"];

/// Replaces the values of the fields a state names in its `"sensitive": [FIELD, ...]` with
/// `"***"`. Arrays (batches of states) are redacted element by element; anything else is
/// returned unchanged.
pub fn redact_state(value: &Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.iter().map(redact_state).collect()),
        Value::Object(map) => {
            let mut out = map.clone();
            if let Some(Value::Array(fields)) = map.get("sensitive") {
                for field in fields.iter().filter_map(Value::as_str) {
                    if let Some(v) = out.get_mut(field) {
                        *v = Value::String(MASK.into());
                    }
                }
            }
            // Nested states (a step's "state", an observation's "before"/"after") carry their
            // own lists.
            for key in NESTED_STATES {
                if let Some(inner) = out.get(*key).map(redact_state) {
                    out.insert((*key).into(), inner);
                }
            }
            Value::Object(out)
        }
        _ => value.clone(),
    }
}

/// The sensitive field names a state declares.
pub fn sensitive_fields(value: &Value) -> Vec<String> {
    value
        .get("sensitive")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an environment variable's value should be redacted in `spawn` events.
pub fn env_name_is_secret(name: &str, extra: &[String]) -> bool {
    let upper = name.to_ascii_uppercase();
    extra.iter().any(|e| e.eq_ignore_ascii_case(name))
        || ["PASSWORD", "PASSWD", "SECRET", "TOKEN", "CREDENTIAL"]
            .iter()
            .any(|w| upper.contains(w))
        || upper.ends_with("KEY")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn named_fields_are_masked_in_states_and_batches() {
        let s = json!({"name": "bob", "password": "hash", "sensitive": ["password"]});
        assert_eq!(redact_state(&s)["password"], "***");
        assert_eq!(redact_state(&s)["name"], "bob");
        assert_eq!(redact_state(&json!([s.clone()]))[0]["password"], "***");
        let step = json!({"kind": "user", "state": s});
        assert_eq!(redact_state(&step)["state"]["password"], "***");
    }

    #[test]
    fn secret_looking_env_names() {
        assert!(env_name_is_secret("DB_PASSWORD", &[]));
        assert!(env_name_is_secret("AWS_SECRET_ACCESS_KEY", &[]));
        assert!(env_name_is_secret("custom", &["CUSTOM".into()]));
        assert!(!env_name_is_secret("PATH", &[]));
    }
}
