//! Compiled JSON Schemas, shared by every use of the same schema in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde_json::Value;

/// Why a schema could not be compiled: it is not a valid JSON Schema (the message says where;
/// fix the schema).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SchemaError(Box<jsonschema::ValidationError<'static>>);

/// The compiled validator of `schema`, shared by every use of the same schema in this process.
/// Compiling one costs more than a trivial step (regexes, keyword tables), and an agent serving
/// a thousand identities, or a master checking a thousand prescriptions, meets the same few
/// schemas again and again.
pub fn compiled_schema(schema: &Value) -> Result<Arc<Validator>, SchemaError> {
    static SEEN: Mutex<Option<HashMap<String, Arc<Validator>>>> = Mutex::new(None);
    let key = schema.to_string();
    if let Some(v) = SEEN
        .lock()
        .expect("schema memo")
        .get_or_insert_default()
        .get(&key)
    {
        return Ok(v.clone());
    }
    let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| SchemaError(Box::new(e)))?);
    let mut seen = SEEN.lock().expect("schema memo");
    let seen = seen.get_or_insert_default();
    // Schemas come from describe documents: a handful per kind and version. The bound only
    // matters for a resource that prints a new schema every time.
    if seen.len() >= 512 {
        seen.clear();
    }
    seen.insert(key, v.clone());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_same_schema_compiles_once_and_a_bad_one_says_why() {
        let schema = json!({"type": "object", "required": ["kind"]});
        let a = compiled_schema(&schema).unwrap();
        let b = compiled_schema(&schema.clone()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e = compiled_schema(&json!({"type": 12})).unwrap_err();
        let direct = jsonschema::validator_for(&json!({"type": 12})).unwrap_err();
        assert_eq!(e.to_string(), direct.to_string());
    }
}
