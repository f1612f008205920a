//! The cache verbs: ARG, ENV, CACHEFILE, CACHEEVICT, QUERY, QUEUESENTINEL. None starts a
//! program: each only reports what the engine is to store, evict or gather (see
//! [`JobOutput`]), so all run in-process.

use serde_json::{json, Map, Value};

use super::support::{Ctx, JobOutput};
use super::verb::{Traits, Verb};
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};
use crate::directord::template;

/// The ARG verb (`resources/arg`).
pub const ARG: Verb = Verb {
    kind: "arg",
    verb: "ARG",
    spec: cache_spec,
    exec: |c| kv(c, false),
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

/// The ENV verb (`resources/env`).
pub const ENV: Verb = Verb {
    kind: "env",
    verb: "ENV",
    spec: cache_spec,
    exec: |c| kv(c, true),
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

/// The CACHEFILE verb (`resources/cachefile`).
pub const CACHEFILE: Verb = Verb {
    kind: "cachefile",
    verb: "CACHEFILE",
    spec: cachefile_spec,
    exec: cachefile_exec,
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

/// The CACHEEVICT verb (`resources/cacheevict`).
pub const CACHEEVICT: Verb = Verb {
    kind: "cacheevict",
    verb: "CACHEEVICT",
    spec: cacheevict_spec,
    exec: cacheevict_exec,
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

/// The QUERY verb (`resources/query`).
pub const QUERY: Verb = Verb {
    kind: "query",
    verb: "QUERY",
    spec: query_spec,
    exec: query_exec,
    in_process: true,
    here: None,
    traits: Traits::BARRIER,
};

/// The QUEUESENTINEL verb (`resources/queuesentinel`).
pub const QUEUESENTINEL: Verb = Verb {
    kind: "queuesentinel",
    verb: "QUEUESENTINEL",
    spec: sentinel_spec,
    exec: sentinel_exec,
    in_process: true,
    here: None,
    traits: Traits::DRAINS_QUEUES,
};

fn cache_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cache commands: KEY VALUE (a Python-style literal: 'text', ['a'], {\"a\": 1}, 1, 1.2).",
        vec![
            OptSpec::flag("extend_args", "--extend-args", "When setting an ARG, allow complex args to extend existing ones."),
            OptSpec::pos("key", OptType::Str, None, "the name"),
            OptSpec::pos("value", OptType::Literal, Some("rest"), "the value (blueprinted with the cached args)"),
        ],
    )
    .uncached()
}

fn kv(c: &Ctx, env: bool) -> JobOutput {
    let Some(key) = c.s("key") else {
        return JobOutput::fail("missing KEY");
    };
    let value = c.job.get("value").cloned().unwrap_or(Value::Null);
    let value = match template::render_value("the value", &value, &c.args) {
        Ok(v) => v,
        Err(e) => return JobOutput::fail(e.to_string()),
    };
    let kind = match &value {
        Value::String(_) => "str",
        Value::Number(n) if n.is_i64() || n.is_u64() => "int",
        Value::Number(_) => "float",
        Value::Bool(_) => "bool",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
        Value::Null => "None",
    };
    let info = format!("type:{kind}, value:{value}");
    let mut m = Map::new();
    if env {
        let s = value
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        m.insert(key.into(), Value::String(s));
        JobOutput {
            set_envs: Some(m),
            extend_args: c.b("extend_args"),
            ..JobOutput::ok("envs added to cache").info(info)
        }
    } else {
        m.insert(key.into(), value);
        JobOutput {
            set_args: Some(m),
            extend_args: c.b("extend_args"),
            ..JobOutput::ok("args added to cache").info(info)
        }
    }
}

fn cachefile_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cachefile commands: load a JSON or YAML file on the minion into the args.",
        vec![OptSpec::pos(
            "path",
            OptType::Str,
            None,
            "the file (on the minion)",
        )],
    )
    .uncached()
}

fn cachefile_exec(c: &Ctx) -> JobOutput {
    let path = c.s("path").unwrap_or_default();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return JobOutput::fail(format!("cannot read {path}: {e}")),
    };
    let doc: Value = match serde_saphyr::from_str(&text) {
        Ok(v) => v,
        Err(e) => return JobOutput::fail(format!("{path} is not YAML or JSON: {e}")),
    };
    match doc {
        Value::Object(m) => JobOutput {
            set_args: Some(m),
            extend_args: true,
            ..JobOutput::ok("Cache file loaded").info(path)
        },
        Value::Null => JobOutput::ok("Cache file loaded").info(path),
        _ => JobOutput::fail(format!("{path} must hold a mapping of names to values")),
    }
}

fn cacheevict_spec() -> VerbSpec {
    VerbSpec::new(
        "Process cacheevict commands: evict all tagged cached items (all, args, envs, jobs, parents, query, or a job fingerprint / parent id).",
        vec![OptSpec::pos("cacheevict", OptType::Str, None, "the tag")],
    )
    .uncached()
}

fn cacheevict_exec(c: &Ctx) -> JobOutput {
    let tag = c.s("cacheevict").unwrap_or("all").to_owned();
    JobOutput {
        evict: Some(tag.clone()),
        ..JobOutput::ok(format!("Cache evicted: {tag}")).info(tag)
    }
}

fn query_spec() -> VerbSpec {
    VerbSpec::new(
        "Query an arg on every minion; the results are merged into every minion's `query` arg.",
        vec![
            OptSpec::flag(
                "no_wait",
                "--no-wait",
                "Disable waiting for the queried key to be present in the local cache.",
            ),
            OptSpec::pos("query", OptType::Str, None, "the arg name"),
        ],
    )
    .uncached()
}

fn query_exec(c: &Ctx) -> JobOutput {
    let name = c.s("query").unwrap_or_default().to_owned();
    let value = c.args.get(&name).cloned().unwrap_or(Value::Null);
    JobOutput {
        query: Some(json!({"name": name, "value": value})),
        ..JobOutput::ok(json!({ name.clone(): value }).to_string()).info(name)
    }
}

fn sentinel_spec() -> VerbSpec {
    VerbSpec::new(
        "Drain every queue on the minion: queued jobs are reported failed.",
        vec![OptSpec::pos(
            "data",
            OptType::Str,
            Some("*"),
            "a placeholder (e.g. true)",
        )],
    )
    .uncached()
}

fn sentinel_exec(_: &Ctx) -> JobOutput {
    JobOutput::ok("")
}
