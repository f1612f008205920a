//! The resource executable protocol (SPEC §4), shared by every built-in resource.
//!
//! `resources/KIND ACTION < STATE`: the framework parses the action, reads and validates the
//! state (or a batch: a JSON array of states) against the resource's schema, calls the
//! [`Resource`] and prints the result. Exit codes: 0 success, 1 the action failed (or, for a
//! batch, at least one element failed: the array is still printed, failed elements as
//! `{"error": ...}`), 2 bad usage or bad input (nothing was changed).
//!
//! Values of the fields a state names in `"sensitive"` are masked as `"***"` in what is printed
//! (the observed value and both sides of its `changes` entry), so they never reach a log.

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};
use serde_json::{json, Map, Value};

use super::{known_actions, Resource, ResourceError};

/// Keys every state may carry besides the resource's own fields.
pub const META_KEYS: &[&str] = &["kind", "sensitive", "notify"];

/// The schema the framework validates against: the resource's schema plus `kind` (which must
/// equal the resource's kind), `sensitive` and `notify`, with the identity fields required and
/// unknown fields refused unless the resource says otherwise.
pub fn full_schema(r: &dyn Resource) -> Value {
    let mut schema = r.schema();
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("type").or_insert_with(|| json!("object"));
        obj.entry("additionalProperties")
            .or_insert_with(|| json!(false));
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(props) = props {
            props.insert(
                "kind".into(),
                json!({"const": r.kind(), "description": format!("the resource kind, \"{}\"", r.kind())}),
            );
            props.insert(
                "sensitive".into(),
                json!({"type": "array", "items": {"type": "string"},
                       "description": "names of fields whose values are never logged"}),
            );
            props.insert(
                "notify".into(),
                json!({"type": "array", "description": "one-time actions to run when this resource is conformed",
                       "items": {"type": "object", "required": ["kind", "action"],
                                 "properties": {"kind": {"type": "string"}, "action": {"type": "string"},
                                                "state": {"type": "object"}}}}),
            );
        }
        let required = obj.entry("required").or_insert_with(|| json!([]));
        if let Some(req) = required.as_array_mut() {
            for id in r.identity() {
                if !req.iter().any(|v| v == id) {
                    req.push(json!(id));
                }
            }
        }
    }
    schema
}

/// The `describe` document of a built-in resource.
pub fn describe(r: &dyn Resource) -> Value {
    let mut actions = Map::new();
    actions.insert(
        "inspect".into(),
        json!("print the observed state (with `changes` against the given state)"),
    );
    actions.insert(
        "conform".into(),
        json!("make the given state so (idempotently) and print the observed state"),
    );
    actions.insert(
        "describe".into(),
        json!("print this description (no input)"),
    );
    for (name, help) in r.actions() {
        actions.insert((*name).into(), json!(help));
    }
    json!({
        "kind": r.kind(),
        "description": r.description(),
        "actions": actions,
        "identity": r.identity(),
        "schema": full_schema(r),
        "args": r.args(),
        "batch": true,
    })
}

/// A compiled input checker for one resource.
pub struct Checker {
    kind: &'static str,
    schema: Value,
    validator: Validator,
}

impl Checker {
    /// Compiles the resource's full schema.
    pub fn new(r: &dyn Resource) -> Result<Self, ResourceError> {
        let schema = full_schema(r);
        // Built-in schemas use only draft-7 keywords, and a resource executable compiles its
        // checker on every run: draft 7's meta-schema costs about 0.5 ms to compile, 2020-12's
        // about 2 ms (measured, release). `$schema` would switch drafts back, so it goes.
        let mut draft7 = schema.clone();
        if let Some(o) = draft7.as_object_mut() {
            o.remove("$schema");
        }
        let validator = jsonschema::draft7::new(&draft7).map_err(|e| {
            ResourceError::Failed(format!(
                "the built-in {} resource has an invalid schema ({e}); this is a bug in ingot",
                r.kind()
            ))
        })?;
        Ok(Self {
            kind: r.kind(),
            schema,
            validator,
        })
    }

    /// Checks one state, naming the first offending field and what is expected.
    pub fn check(&self, state: &Value) -> Result<(), ResourceError> {
        if !state.is_object() {
            return Err(ResourceError::input(
                "",
                format!(
                    "expected a JSON object (a {} state), got {}",
                    self.kind,
                    type_name(state)
                ),
            ));
        }
        match self.validator.iter_errors(state).next() {
            None => Ok(()),
            Some(e) => Err(explain(&e, &self.schema, self.kind)),
        }
    }
}

/// Turns a schema violation into an input error naming the field and what is expected.
pub fn explain(e: &ValidationError<'_>, schema: &Value, kind: &str) -> ResourceError {
    let at = e.instance_path().as_str().to_owned();
    let props = schema.get("properties").and_then(Value::as_object);
    let expected = |field: &str| -> String {
        props
            .and_then(|p| p.get(field))
            .and_then(|f| f.get("description"))
            .and_then(Value::as_str)
            .map(|d| format!(" (expected: {d})"))
            .unwrap_or_default()
    };
    match e.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let field = unexpected.first().cloned().unwrap_or_default();
            let known: Vec<&str> = props
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            ResourceError::input(
                format!("{at}/{}", escape_pointer(&field)),
                format!(
                    "unknown field {field:?} for {kind}; known fields: {}",
                    known.join(", ")
                ),
            )
        }
        ValidationErrorKind::Required { property } => {
            let field = property.as_str().unwrap_or_default().to_owned();
            ResourceError::input(
                format!("{at}/{}", escape_pointer(&field)),
                format!(
                    "missing required field {field:?}{}",
                    if at.is_empty() {
                        expected(&field)
                    } else {
                        String::new()
                    }
                ),
            )
        }
        _ => {
            let top = at
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            ResourceError::input(at, format!("{e}{}", expected(&top)))
        }
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Validates one state and runs `action` on it: the in-process path of a resource action.
/// The meta keys (`kind`, `sensitive`, `notify`) are removed before the resource sees the
/// state; the result carries `kind` and has sensitive values masked.
pub fn perform(
    r: &dyn Resource,
    checker: &Checker,
    action: &str,
    state: &Value,
) -> Result<Value, ResourceError> {
    checker.check(state)?;
    act(r, action, state)
}

/// Runs `action` on a state already checked against the resource's schema (see [`perform`]).
pub fn act(r: &dyn Resource, action: &str, state: &Value) -> Result<Value, ResourceError> {
    let mut desired = state.clone();
    let sensitive = runner::redact::sensitive_fields(state);
    if let Some(obj) = desired.as_object_mut() {
        for k in META_KEYS {
            obj.remove(*k);
        }
    }
    let mut out = match action {
        "inspect" => r.inspect(&desired)?,
        "conform" => r.conform(&desired)?,
        other => r.action(other, &desired)?,
    };
    if let Some(obj) = out.as_object_mut() {
        obj.entry("kind")
            .or_insert_with(|| Value::String(r.kind().into()));
        mask(obj, &sensitive);
    }
    Ok(out)
}

fn mask(obj: &mut Map<String, Value>, sensitive: &[String]) {
    const MASK: &str = runner::redact::MASK;
    for field in sensitive {
        if let Some(v) = obj.get_mut(field) {
            *v = json!(MASK);
        }
        if let Some(Value::Object(change)) = obj
            .get_mut("changes")
            .and_then(|c| c.get_mut(field.as_str()))
        {
            for side in ["observed", "desired"] {
                if let Some(v) = change.get_mut(side) {
                    *v = json!(MASK);
                }
            }
        }
    }
}

/// Renders a result object with `kind`, the identity fields and `exists` first (then the rest
/// in the map's order), compactly, so output reads the same whatever the map ordering.
pub fn render(value: &Value, identity: &[&str]) -> String {
    let Value::Object(map) = value else {
        return value.to_string();
    };
    let mut lead: Vec<&str> = vec!["kind"];
    lead.extend(identity.iter().copied());
    lead.push("exists");
    lead.push("error");
    let mut out = String::from("{");
    let mut first = true;
    let mut put = |k: &str, v: &Value, out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&Value::String(k.into()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    };
    for k in &lead {
        if let Some(v) = map.get(*k) {
            put(k, v, &mut out);
        }
    }
    for (k, v) in map {
        if !lead.contains(&k.as_str()) {
            put(k, v, &mut out);
        }
    }
    out.push('}');
    out
}

/// The usage text of a resource executable.
pub fn usage(r: &dyn Resource) -> String {
    let mut s = format!(
        "usage: {kind} ACTION < STATE\n\n{desc}\n\nactions:\n  inspect    print the observed state (with `changes` against the given state)\n  conform    make the given state so and print the observed state\n  describe   print kind, actions, identity, JSON Schema and args as JSON\n",
        kind = r.kind(),
        desc = r.description()
    );
    for (name, help) in r.actions() {
        s.push_str(&format!("  {name:<10} {help}\n"));
    }
    s.push_str(&format!(
        "\nSTATE is a JSON object on stdin identified by {}, or a JSON array of them (a batch).\nExit codes: 0 success, 1 failure, 2 bad usage or bad input (nothing changed).\n",
        r.identity().join(", ")
    ));
    s
}

/// Entry point of a built-in resource executable: `kind` from argv\[0\], `args` after it.
/// Reads stdin, writes stdout/stderr, returns the exit code.
pub fn main(kind: &str, args: &[OsString]) -> i32 {
    let Some(r) = super::resource(kind) else {
        eprintln!(
            "ingot: there is no built-in resource {kind:?}; built-ins: {}",
            super::resources()
                .iter()
                .map(|r| r.kind())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return 2;
    };
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    let code = run(r, args, stdin.lock(), tty, &mut out, &mut err);
    let _ = out.flush();
    code
}

/// Runs the protocol with `args` and `input` in memory: `(exit code, stdout, stderr)`.
pub fn run_args(r: &dyn Resource, args: &[&str], input: &str) -> (i32, String, String) {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run(r, &args, input.as_bytes(), false, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// The protocol over explicit streams (what [`main`] does with the process's own).
pub fn run(
    r: &dyn Resource,
    args: &[OsString],
    mut input: impl Read,
    input_is_terminal: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let kind = r.kind();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(action) = args.first() else {
        let _ = write!(err, "{}", usage(r));
        return 2;
    };
    if let Some(extra) = args.get(1) {
        let _ = writeln!(
            err,
            "{kind}: unexpected argument {extra:?}; the state goes on stdin as JSON\n\n{}",
            usage(r)
        );
        return 2;
    }
    match action.as_str() {
        "-h" | "--help" | "help" => {
            let _ = write!(out, "{}", usage(r));
            return 0;
        }
        "describe" => {
            let _ = writeln!(out, "{}", describe(r));
            return 0;
        }
        _ => {}
    }
    let known =
        action == "inspect" || action == "conform" || r.actions().iter().any(|(n, _)| n == action);
    if !known {
        let e = ResourceError::UnknownAction {
            kind: kind.into(),
            action: action.clone(),
            known: known_actions(r),
        };
        let _ = writeln!(err, "{kind}: error: {e}");
        return 2;
    }
    if input_is_terminal {
        let _ = writeln!(
            err,
            "{kind} {action}: expects a JSON state on stdin, e.g. echo '{{\"{}\": ...}}' | {kind} {action}",
            r.identity().first().copied().unwrap_or("name")
        );
        return 2;
    }
    let mut buf = Vec::new();
    if let Err(e) = input.read_to_end(&mut buf) {
        let _ = writeln!(err, "{kind} {action}: error: cannot read stdin: {e}");
        return 1;
    }
    let doc: Value = match serde_json::from_slice(&buf) {
        Ok(v) => v,
        Err(e) => {
            let _ = writeln!(
                err,
                "{kind} {action}: error: invalid input: stdin is not JSON ({e}); expected a JSON object with the fields of a {kind} state (see `{kind} describe`)"
            );
            return 2;
        }
    };
    let checker = match Checker::new(r) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "{kind} {action}: error: {e}");
            return 1;
        }
    };
    tracing::debug!(kind, action = action.as_str(), "resource action");
    match doc {
        Value::Array(items) => {
            let mut failed = false;
            let mut rendered = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match perform(r, &checker, action, item) {
                    Ok(v) => rendered.push(render(&v, r.identity())),
                    Err(e) => {
                        failed = true;
                        let _ = writeln!(err, "{kind} {action}: error in element {i}: {e}");
                        rendered.push(json!({"error": e.to_string()}).to_string());
                    }
                }
            }
            let _ = writeln!(out, "[{}]", rendered.join(","));
            i32::from(failed)
        }
        Value::Object(_) => match perform(r, &checker, action, &doc) {
            Ok(v) => {
                let _ = writeln!(out, "{}", render(&v, r.identity()));
                0
            }
            Err(e) => {
                let _ = writeln!(err, "{kind} {action}: error: {e}");
                e.exit_code()
            }
        },
        other => {
            let _ = writeln!(
                err,
                "{kind} {action}: error: invalid input: expected a JSON object (a {kind} state) or an array of them, got {}",
                type_name(&other)
            );
            2
        }
    }
}
