//! Blueprinting: Jinja templates rendered with the minion's cached args (minijinja, strict
//! undefined, trailing newline kept, the common Python methods `items`, `values`, `keys`,
//! `get`, `split`, `strip`, `lower`, `upper`, `replace`, `startswith`, `endswith`).

use minijinja::value::{from_args, Value as JValue, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, UndefinedBehavior};
use serde_json::{Map, Value};

/// Why a template could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("blueprint of {what} failed: {message} (define the variable first with ARG, --stdout-arg or CACHEFILE, or quote Jinja in paths)")]
pub struct TemplateError {
    /// What was rendered (e.g. "the command").
    pub what: String,
    /// minijinja's explanation.
    pub message: String,
}

fn env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_unknown_method_callback(pycompat);
    env
}

fn pycompat(
    state: &mut State,
    value: &JValue,
    method: &str,
    args: &[JValue],
) -> Result<JValue, Error> {
    match (value.kind(), method) {
        (ValueKind::Map, "items") => {
            let _: () = from_args(args)?;
            state.apply_filter("items", std::slice::from_ref(value))
        }
        (ValueKind::Map, "keys") => {
            let _: () = from_args(args)?;
            Ok(JValue::from(value.try_iter()?.collect::<Vec<_>>()))
        }
        (ValueKind::Map, "values") => {
            let _: () = from_args(args)?;
            let mut out = Vec::new();
            for k in value.try_iter()? {
                out.push(value.get_item(&k)?);
            }
            Ok(JValue::from(out))
        }
        (ValueKind::Map, "get") => {
            let (key, default): (JValue, Option<JValue>) = from_args(args)?;
            let v = value.get_item(&key)?;
            Ok(if v.is_undefined() {
                default.unwrap_or(JValue::from(()))
            } else {
                v
            })
        }
        (ValueKind::String, m) => {
            let s = value.as_str().unwrap_or_default();
            match m {
                "split" => {
                    let (sep,): (Option<String>,) = from_args(args)?;
                    let parts: Vec<String> = match sep {
                        Some(sep) => s.split(sep.as_str()).map(str::to_owned).collect(),
                        None => s.split_whitespace().map(str::to_owned).collect(),
                    };
                    Ok(JValue::from(parts))
                }
                "strip" => Ok(JValue::from(s.trim())),
                "lower" => Ok(JValue::from(s.to_lowercase())),
                "upper" => Ok(JValue::from(s.to_uppercase())),
                "replace" => {
                    let (a, b): (String, String) = from_args(args)?;
                    Ok(JValue::from(s.replace(&a, &b)))
                }
                "startswith" => {
                    let (p,): (String,) = from_args(args)?;
                    Ok(JValue::from(s.starts_with(&p)))
                }
                "endswith" => {
                    let (p,): (String,) = from_args(args)?;
                    Ok(JValue::from(s.ends_with(&p)))
                }
                _ => Err(Error::from(ErrorKind::UnknownMethod)),
            }
        }
        _ => Err(Error::from(ErrorKind::UnknownMethod)),
    }
}

/// Renders `template` with `args` as the context.
pub fn render(
    what: &str,
    template: &str,
    args: &Map<String, Value>,
) -> Result<String, TemplateError> {
    if !template.contains("{{") && !template.contains("{%") && !template.contains("{#") {
        return Ok(template.to_owned());
    }
    env()
        .render_str(template, JValue::from(minijinja::value::Serde(args)))
        .map_err(|e| TemplateError {
            what: what.into(),
            message: e.to_string(),
        })
}

/// Renders every string inside `value` (ARG/ENV values may reference other args).
pub fn render_value(
    what: &str,
    value: &Value,
    args: &Map<String, Value>,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => Value::String(render(what, s, args)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| render_value(what, v, args))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), render_value(what, v, args)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_and_query_idioms() {
        let args = json!({"x": "1", "query": {"a": {"k": "va"}, "b": {}}});
        let args = args.as_object().unwrap();
        assert_eq!(render("t", "v={{ x }}\n", args).unwrap(), "v=1\n");
        let e = render("the command", "{{ nope }}", args).unwrap_err();
        assert!(e.to_string().contains("the command"), "{e}");
        let t = "{{ query.values() | map(attribute='k') | select('defined') | list | first }}";
        assert_eq!(render("t", t, args).unwrap(), "va");
        let t = "{% for n, v in query.items() %}{{ n }} {% endfor %}";
        assert_eq!(render("t", t, args).unwrap(), "a b ");
    }
}
