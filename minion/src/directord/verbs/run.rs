//! RUN (a shell command) and ECHO (Directord's example user component).
//!
//! RUN has one implementation, [`run_job`], with two entry points that differ only in how one
//! attempt of the command runs: [`run_exec`] (the `job` action of `resources/run`, a plain
//! `/bin/sh -c`) and [`run_here`] (a dispatcher that is the `ingot` binary: the command runs
//! through the runner, in its own process group with the job's timeout, its events going to the
//! engine's sink).

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::support::{detach, sh, Ctx, JobOutput, Ran};
use super::verb::{Traits, Verb};
use crate::directord::boxed_future::BoxFuture;
use crate::directord::syntax::{OptSpec, OptType, VerbSpec};
use crate::DispatchError;

/// The RUN verb (`resources/run`).
pub const RUN: Verb = Verb {
    kind: "run",
    verb: "RUN",
    spec: run_spec,
    exec: run_exec,
    in_process: false,
    here: Some(run_here_boxed),
    traits: Traits::NONE,
};

/// The ECHO verb (`resources/echo`).
pub const ECHO: Verb = Verb {
    kind: "echo",
    verb: "ECHO",
    spec: echo_spec,
    exec: echo_exec,
    in_process: true,
    here: None,
    traits: Traits::NONE,
};

fn run_spec() -> VerbSpec {
    VerbSpec::new(
        "Process run commands: the command runs with /bin/sh -c, the cached ENVs in its environment.",
        vec![
            OptSpec::flag("no_block", "--no-block", "Run a command in 'fire and forget' mode."),
            OptSpec::opt("retry", "--retry", OptType::Int, "Number of times to retry.").default(json!(1)),
            OptSpec::pos("command", OptType::Str, Some("rest"), "the command (blueprinted with the cached args)"),
        ],
    )
}

/// RUN's blueprinted command, or the output that ends the job before anything runs.
#[allow(clippy::result_large_err)]
fn run_command(c: &Ctx) -> Result<String, JobOutput> {
    let raw = c.s("command").unwrap_or_default();
    let cmd = c.render("the command", raw)?;
    if cmd.trim().is_empty() {
        return Err(JobOutput::fail(
            "the command is empty (after blueprinting); give RUN a command",
        )
        .info(cmd));
    }
    Ok(cmd)
}

/// RUN --no-block: started in its own session and left running.
fn run_detached(cmd: String, envs: &[(String, String)]) -> JobOutput {
    match detach(&cmd, envs) {
        Ok(()) => JobOutput::ok("").info(cmd),
        Err(e) => JobOutput::fail(format!("cannot start /bin/sh: {e}")).info(cmd),
    }
}

fn run_output(r: Ran, cmd: String) -> JobOutput {
    JobOutput {
        outcome: r.ok,
        stdout: r.stdout,
        stderr: r.stderr,
        info: cmd,
        ..JobOutput::default()
    }
}

/// RUN itself: blueprints the command, then starts it detached (`--no-block`) or runs it with
/// `attempt` (given the command and the cached ENVs) up to `--retry` times until it succeeds.
/// An error of `attempt` (a timeout, a runner failure) ends the job at once.
async fn run_job<E, F, Fut>(c: &Ctx, mut attempt: F) -> Result<JobOutput, E>
where
    F: FnMut(String, Vec<(String, String)>) -> Fut,
    Fut: Future<Output = Result<Ran, E>>,
{
    let cmd = match run_command(c) {
        Ok(cmd) => cmd,
        Err(out) => return Ok(out),
    };
    let envs = c.env_pairs();
    if c.b("no_block") {
        return Ok(run_detached(cmd, &envs));
    }
    let mut last = attempt(cmd.clone(), envs.clone()).await?;
    for _ in 1..c.i("retry", 1).max(1) {
        if last.ok {
            break;
        }
        last = attempt(cmd.clone(), envs.clone()).await?;
    }
    Ok(run_output(last, cmd))
}

/// The `job` action of `resources/run`: each attempt is `/bin/sh -c COMMAND`, waited for.
fn run_exec(c: &Ctx) -> JobOutput {
    let job = run_job(c, |cmd, envs| {
        std::future::ready(Ok::<_, std::convert::Infallible>(sh(&cmd, &envs)))
    });
    match now_or_never(job) {
        Ok(out) => out,
        Err(never) => match never {},
    }
}

/// The output of a future that never waits (every attempt of [`run_exec`] is ready at once).
fn now_or_never<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("RUN's blocking attempts never wait"),
    }
}

/// RUN inside a dispatcher that is the `ingot` binary (see `crate::inproc`): the command runs
/// through the runner, in its own process group with the job's timeout, and its events go to
/// `sink` directly. Returns the job output as the `job` action would print it.
pub async fn run_here(
    input: &Value,
    runner: &runner::Runner,
    timeout: Duration,
    sink: &dyn runner::EventSink,
) -> Result<Value, DispatchError> {
    let c = Ctx::from_input(input);
    let deadline = Instant::now() + timeout;
    let out = run_job(&c, |cmd, envs| async move {
        let mut p = runner::Program::new("/bin/sh")
            .name("run")
            .arg("-c")
            .arg(&cmd)
            .timeout(deadline.saturating_duration_since(Instant::now()));
        for (k, v) in envs {
            p = p.env(k, v);
        }
        let o = runner.run(&p, sink).await?;
        if o.timed_out {
            return Err(DispatchError::Timeout {
                kind: "run".into(),
                action: "job".into(),
                after: timeout,
            });
        }
        Ok(Ran {
            ok: o.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: o.stderr_text(),
        })
    })
    .await?;
    Ok(serde_json::to_value(out).unwrap_or(Value::Null))
}

fn run_here_boxed<'a>(
    input: &'a Value,
    runner: &'a runner::Runner,
    timeout: Duration,
    sink: &'a dyn runner::EventSink,
) -> BoxFuture<'a, Result<Value, DispatchError>> {
    Box::pin(run_here(input, runner, timeout, sink))
}

fn echo_spec() -> VerbSpec {
    VerbSpec::new(
        "Directord's example user component: prints its argument.",
        vec![OptSpec::pos("echo", OptType::Str, Some("*"), "the text")],
    )
}

fn echo_exec(c: &Ctx) -> JobOutput {
    JobOutput::ok(c.list("echo").join(" "))
}
