//! The waiting verbs: WAIT (seconds, a URL or a command), QUERY_WAIT (QUERY results in this
//! minion's cache) and JOB_WAIT (a job on other minions, which the engine waits for: the verb
//! only reports what to wait for). WAIT and QUERY_WAIT keep their own process so `--timeout`
//! can end them; JOB_WAIT returns at once and runs in-process.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::{prog, sh, Ctx, JobOutput};
use super::verb::{Traits, Verb};
use crate::directord::cache::{Bucket, Cache};
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};

/// The WAIT verb (`resources/wait`).
pub const WAIT: Verb = Verb {
    kind: "wait",
    verb: "WAIT",
    spec: wait_spec,
    exec: wait_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The QUERY_WAIT verb (`resources/query_wait`).
pub const QUERY_WAIT: Verb = Verb {
    kind: "query_wait",
    verb: "QUERY_WAIT",
    spec: query_wait_spec,
    exec: query_wait_exec,
    in_process: false,
    here: None,
    traits: Traits::NONE,
};

/// The JOB_WAIT verb (`resources/job_wait`).
pub const JOB_WAIT: Verb = Verb {
    kind: "job_wait",
    verb: "JOB_WAIT",
    spec: job_wait_spec,
    exec: job_wait_exec,
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

fn wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until a condition is met: --seconds N, --url URL (HTTP 200-399) or --cmd COMMAND (exit 0).",
        vec![
            OptSpec::opt("seconds", "--seconds", OptType::Int, "Wait this many seconds."),
            OptSpec::flag("url", "--url", "Wait for the URL given as the rest of the string."),
            OptSpec::flag("cmd", "--cmd", "Wait for the command given as the rest of the string."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of attempts.").default(json!(30)),
            OptSpec::opt("retry_wait", "--retry-wait", OptType::Int, "Seconds between attempts.").default(json!(1)),
            OptSpec::flag("insecure", "--insecure", "Skip TLS verification for --url."),
            OptSpec::pos("data", OptType::Str, Some("rest"), "the URL or command (blueprinted)"),
        ],
    )
    .group("condition", &["seconds", "url", "cmd"], true)
}

fn wait_exec(c: &Ctx) -> JobOutput {
    if let Some(s) = c.job.get("seconds").and_then(Value::as_u64) {
        std::thread::sleep(Duration::from_secs(s));
        return JobOutput::ok(format!("waited {s} seconds"));
    }
    let data = match c.render("the condition", c.s("data").unwrap_or_default()) {
        Ok(d) => d,
        Err(e) => return e,
    };
    if data.trim().is_empty() {
        return JobOutput::fail("WAIT --url/--cmd needs the URL or command after it");
    }
    let envs = c.env_pairs();
    let attempts = c.i("retry", 30).max(0) + 1;
    let pause = Duration::from_secs(c.i("retry_wait", 1).max(0) as u64);
    let mut last = None;
    for k in 0..attempts {
        let r = if c.b("url") {
            let mut a = vec![
                "-sS".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
            ];
            if c.b("insecure") {
                a.push("-k".into());
            }
            a.push(data.clone());
            let mut r = prog("curl", &a, &envs);
            let code: u32 = r.stdout.trim().parse().unwrap_or(0);
            r.ok = (200..400).contains(&code);
            r
        } else {
            sh(&data, &envs)
        };
        if r.ok {
            return JobOutput {
                stdout: r.stdout,
                ..JobOutput::ok("").info(data)
            };
        }
        last = Some(r);
        if k + 1 < attempts {
            std::thread::sleep(pause);
        }
    }
    let r = last.expect("one attempt");
    JobOutput {
        outcome: false,
        stdout: r.stdout,
        stderr: format!("{}condition not met after {attempts} attempts", r.stderr),
        info: data,
        ..JobOutput::default()
    }
}

fn query_wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until the query results hold ITEM for every listed identity (any identity when none).",
        vec![
            OptSpec::opt("query_timeout", "--query-timeout", OptType::Int, "Seconds to wait.").default(json!(600)),
            OptSpec::opt("identity", "--identity", OptType::Str, "Minions that must have answered.").nargs("+"),
            OptSpec::pos("item", OptType::Str, None, "the queried arg name"),
        ],
    )
    .uncached()
}

fn query_wait_exec(c: &Ctx) -> JobOutput {
    let item = c.s("item").unwrap_or_default().to_owned();
    let ids = c.list("identity");
    let Some(dir) = &c.cache_dir else {
        return JobOutput::fail("QUERY_WAIT needs the minion cache (cache_dir)");
    };
    let cache = match Cache::open(dir) {
        Ok(c) => c,
        Err(e) => return JobOutput::fail(e.to_string()),
    };
    let limit = Duration::from_secs(c.i("query_timeout", 600).max(0) as u64);
    let start = Instant::now();
    loop {
        let q = cache
            .get(Bucket::Args)
            .ok()
            .and_then(|a| a.get("query").and_then(Value::as_object).cloned())
            .unwrap_or_default();
        let has = |id: &str| q.get(id).and_then(|v| v.get(&item)).is_some();
        let done = if ids.is_empty() {
            q.keys().any(|id| has(id))
        } else {
            ids.iter().all(|id| has(id))
        };
        if done {
            return JobOutput::ok(format!("query {item} complete")).info(item);
        }
        if start.elapsed() >= limit {
            return JobOutput::fail(format!("Timeout after {} seconds", limit.as_secs()))
                .info(item);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn job_wait_spec() -> VerbSpec {
    VerbSpec::new(
        "Wait until the job with fingerprint SHA has finished on the listed identities.",
        vec![
            OptSpec::opt(
                "identity",
                "--identity",
                OptType::Str,
                "Minions that must have finished the job.",
            )
            .nargs("+")
            .required(),
            OptSpec::pos("sha", OptType::Str, None, "the job's SHA3-224"),
        ],
    )
    .uncached()
}

fn job_wait_exec(c: &Ctx) -> JobOutput {
    let sha = c.s("sha").unwrap_or_default().trim().to_ascii_lowercase();
    let identities = c.list("identity");
    if sha.is_empty() {
        return JobOutput::fail("JOB_WAIT needs the job's SHA3-224 (see `ingot orchestrate --finger-print` or `ingot manage --job-info`)");
    }
    if identities.is_empty() {
        return JobOutput::fail(
            "JOB_WAIT needs --identity NAME [NAME ...]: the minions whose cache to check",
        )
        .info(sha);
    }
    // The waiting is the engine's: the job's state lives in the listed minions' caches, which
    // only the master can reach (see `engine::JobWaitCoordinator`).
    JobOutput {
        job_wait: Some(json!({"sha": sha, "identities": identities})),
        ..JobOutput::ok("").info(sha)
    }
}
