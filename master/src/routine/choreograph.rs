//! The built-in default choreograph (SPEC §4), used when `actors/choreograph` is absent.

use serde_json::Value;

use crate::routine::documents::{is_meta_field, Step};

/// Whether an observation differs from the desired state: a resource that does not exist
/// while its absence was not asked for (`"exists": false` or `"state": "absent"`) always does;
/// else per its `changes` when the resource reported them, else field by field over the desired
/// fields.
pub fn differs(desired: &Value, observed: &Value) -> bool {
    let missing = observed.get("exists") == Some(&Value::Bool(false));
    let absence_wanted = desired.get("exists") == Some(&Value::Bool(false))
        || desired.get("state").and_then(Value::as_str) == Some("absent");
    if missing && !absence_wanted {
        return true;
    }
    if let Some(changes) = observed.get("changes") {
        return changes.as_object().is_some_and(|c| !c.is_empty());
    }
    let Some(fields) = desired.as_object() else {
        return false;
    };
    let sensitive = runner::redact::sensitive_fields(desired);
    fields
        .iter()
        .any(|(k, v)| !is_meta_field(k) && !sensitive.contains(k) && observed.get(k) != Some(v))
}

/// `conform` for every resource whose observation differs, then the `notify` actions of every
/// resource being conformed (each distinct action once, in order of first mention).
pub fn default_choreograph(prescription: &[Value], observations: &[Value]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut notified: Vec<Step> = Vec::new();
    for (desired, observed) in prescription.iter().zip(observations) {
        // A resource that could not be inspected is reported as failed, not blindly conformed.
        let inspect_failed = observed
            .as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("error"));
        if inspect_failed || !differs(desired, observed) {
            continue;
        }
        let kind = desired
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        steps.push(Step {
            kind,
            action: "conform".into(),
            state: desired.clone(),
        });
        let notes = desired
            .get("notify")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for n in notes {
            if let Ok(step) = serde_json::from_value::<Step>(n) {
                if !notified.contains(&step) {
                    notified.push(step);
                }
            }
        }
    }
    steps.extend(notified);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_decide_when_present() {
        let d = json!({"kind": "file", "path": "/a", "content": "x"});
        assert!(!differs(&d, &json!({"path": "/a", "changes": {}})));
        assert!(differs(
            &d,
            &json!({"path": "/a", "changes": {"content": {}}})
        ));
    }

    #[test]
    fn absence_that_was_not_asked_for_differs() {
        // Nothing to compare field by field, no `changes`: still missing, so still to do.
        let d = json!({"kind": "secret", "name": "db", "value": "s3cr3t", "sensitive": ["value"]});
        assert!(differs(
            &d,
            &json!({"kind": "secret", "name": "db", "exists": false})
        ));
        assert!(differs(
            &d,
            &json!({"kind": "secret", "name": "db", "exists": false, "changes": {}})
        ));
        // Absence asked for, either way it can be said: converged.
        let gone = json!({"kind": "file", "path": "/a", "state": "absent"});
        assert!(!differs(
            &gone,
            &json!({"path": "/a", "exists": false, "changes": {}})
        ));
        let gone = json!({"kind": "x", "name": "a", "exists": false});
        assert!(!differs(
            &gone,
            &json!({"kind": "x", "name": "a", "exists": false})
        ));
    }

    #[test]
    fn field_by_field_without_changes_ignores_meta_and_sensitive() {
        let d = json!({"kind": "user", "name": "a", "shell": "/bin/sh", "password": "h", "sensitive": ["password"]});
        assert!(!differs(
            &d,
            &json!({"kind": "user", "name": "a", "shell": "/bin/sh", "password": "***"})
        ));
        assert!(differs(
            &d,
            &json!({"kind": "user", "name": "a", "shell": "/bin/bash"})
        ));
    }

    #[test]
    fn notify_actions_follow_conforms_once() {
        let restart = json!({"kind": "service", "action": "restart", "state": {"name": "app"}});
        let p = vec![
            json!({"kind": "file", "path": "/a", "notify": [restart]}),
            json!({"kind": "file", "path": "/b", "notify": [restart]}),
            json!({"kind": "file", "path": "/c", "notify": [{"kind": "x", "action": "y", "state": {}}]}),
        ];
        let o = vec![
            json!({"changes": {"content": 1}}),
            json!({"changes": {"mode": 1}}),
            json!({"changes": {}}),
        ];
        let steps = default_choreograph(&p, &o);
        let actions: Vec<_> = steps
            .iter()
            .map(|s| format!("{} {}", s.kind, s.action))
            .collect();
        assert_eq!(actions, ["file conform", "file conform", "service restart"]);
    }
}
