//! Directord on one local minion: `ingot exec` and `ingot orchestrate` with the real binary.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::util::{ingot, output};

fn minion(dir: &Path) -> PathBuf {
    let m = dir.join("minion");
    let out = output(ingot(dir).args(["init", "minion"]).arg(&m));
    assert!(out.status.success());
    m
}

fn exec(dir: &Path, m: &Path, verb: &str, s: &str) -> Output {
    output(
        ingot(dir)
            .args(["exec", "--name", "m1", "--verb", verb, "--minion"])
            .arg(m)
            .arg(s),
    )
}

fn orchestrate(dir: &Path, m: &Path, file: &Path, extra: &[&str]) -> Output {
    output(
        ingot(dir)
            .args(["orchestrate", "--name", "m1", "--minion"])
            .arg(m)
            .args(extra)
            .arg(file),
    )
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn functional_suite_runs_green_then_from_cache() {
    let Some(suite) = crate::util::directord_suite() else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let run = || {
        output(
            ingot(&suite)
                .env("INGOT_HISTORY", d.path().join("history.db"))
                .args([
                    "orchestrate",
                    "functional-tests.yaml",
                    "--check",
                    "--minion",
                ])
                .arg(&m),
        )
    };
    let first = run();
    let out = text(&first);
    assert!(first.status.success(), "{out}");
    assert!(!out.contains("Job Failed"), "{out}");
    assert_eq!(out.matches("Job Success").count(), 54, "{out}");
    let second = run();
    let out = text(&second);
    assert!(second.status.success(), "{out}");
    // The suite ends with CACHEEVICT all, so the second run executes everything again.
    assert!(!out.contains("Job Failed"), "{out}");
    assert!(!out.contains("task skipped"), "{out}");
}

#[test]
fn cache_skips_successes_but_reruns_failures_and_skip_cache() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let f = d.path().join("count");
    let cmd = format!("echo x >> {}", f.display());
    assert!(exec(d.path(), &m, "RUN", &cmd).status.success());
    let again = exec(d.path(), &m, "RUN", &cmd);
    assert!(again.status.success());
    assert!(text(&again).contains("task skipped"), "{}", text(&again));
    assert_eq!(lines(&f), 1);
    assert!(exec(d.path(), &m, "RUN", &format!("--skip-cache {cmd}"))
        .status
        .success());
    assert_eq!(lines(&f), 2);

    let g = d.path().join("fails");
    let failing = format!("echo x >> {}; exit 3", g.display());
    let o = exec(d.path(), &m, "RUN", &failing);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("Job Failed"), "{}", text(&o));
    assert_eq!(exec(d.path(), &m, "RUN", &failing).status.code(), Some(1));
    assert_eq!(lines(&g), 2, "a failure is never a cache hit");
}

#[test]
fn env_and_stdout_arg_feed_later_jobs() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let f = d.path().join("out");
    let yaml = d.path().join("o.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- jobs:\n  - ENV: GREETING 'hello  there'\n  - RUN: --stdout-arg who echo world\n  - RUN: echo \"$GREETING {{{{ who }}}}\" > {}\n",
            f.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "hello  there world\n");
}

#[test]
fn parent_failure_stops_its_later_jobs_only() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let (a, b) = (d.path().join("after"), d.path().join("other"));
    let yaml = d.path().join("o.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- jobs:\n  - RUN: --skip-cache true\n  - RUN: --skip-cache false\n  - RUN: touch {}\n- jobs:\n  - RUN: touch {}\n",
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &["--check"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("Job omitted, parent failure"), "{out}");
    assert!(out.contains("FAILED JOBS"), "{out}");
    assert!(!a.exists(), "a job after the failure ran");
    assert!(b.exists(), "another orchestration was stopped too");
}

#[test]
fn timeout_kills_the_command_and_its_children() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let pid = d.path().join("pid");
    let start = Instant::now();
    let o = exec(
        d.path(),
        &m,
        "RUN",
        &format!(
            "--timeout 1 --skip-cache sleep 60 & echo $! > {}; wait",
            pid.display()
        ),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("timed out after 1s"), "{}", text(&o));
    assert!(start.elapsed() < Duration::from_secs(20));
    let child: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let alive = std::path::Path::new(&format!("/proc/{child}")).exists()
        && !std::fs::read_to_string(format!("/proc/{child}/stat"))
            .unwrap_or_default()
            .contains(") Z");
    assert!(
        !alive,
        "the backgrounded sleep {child} survived the timeout"
    );
}

#[test]
fn async_orchestrations_overlap_and_sentinel_drains_queues() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let yaml = d.path().join("a.yaml");
    std::fs::write(
        &yaml,
        "- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n- async: true\n  jobs:\n  - RUN: --skip-cache sleep 2\n",
    )
    .unwrap();
    let start = Instant::now();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_millis(5000),
        "3 × 2 s took {:?}",
        start.elapsed()
    );

    let late = d.path().join("late");
    let yaml = d.path().join("s.yaml");
    std::fs::write(
        &yaml,
        format!(
            "- async: true\n  jobs:\n  - RUN: --skip-cache sleep 1\n  - RUN: touch {}\n- jobs:\n  - QUEUESENTINEL: true\n",
            late.display()
        ),
    )
    .unwrap();
    let o = orchestrate(d.path(), &m, &yaml, &[]);
    assert!(text(&o).contains("Omitted due to sentinel"), "{}", text(&o));
    assert!(!late.exists(), "a queued job ran after QUEUESENTINEL");
}

#[test]
fn bad_verb_strings_and_unknown_verbs_are_clear() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let o = exec(d.path(), &m, "RUN", "--bogus echo hi");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unknown option --bogus") && err.contains("--skip-cache"),
        "{err}"
    );
    let o = exec(d.path(), &m, "NOPE", "x");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("NOPE: no such verb"));
    let o = exec(d.path(), &m, "SERVICE", "--restarted --stopped nginx");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot be combined"));
    let o = exec(d.path(), &m, "ADD", "missing.txt /tmp/x");
    assert!(String::from_utf8_lossy(&o.stderr).contains("[ missing.txt ] was not found"));
    let o = exec(d.path(), &m, "RUN", "--exec-help");
    assert!(o.status.success());
    assert!(text(&o).starts_with("usage: RUN"), "{}", text(&o));
}

#[test]
fn job_wait_without_a_master_checks_this_minion_only() {
    let d = tempfile::tempdir().unwrap();
    let m = minion(d.path());
    let o = exec(d.path(), &m, "RUN", "echo waited for");
    assert!(o.status.success(), "{}", text(&o));
    let jobs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.join("cache/directord/jobs.json")).unwrap())
            .unwrap();
    let sha = jobs.as_object().unwrap().keys().next().unwrap().clone();
    let stream = |s: &str| {
        output(
            ingot(d.path())
                .args(["exec", "--stream", "--name", "m1", "--verb", "JOB_WAIT"])
                .arg("--minion")
                .arg(&m)
                .arg(s),
        )
    };
    let o = stream(&format!("--timeout 5 --identity m1 {sha}"));
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("STDOUT: m1 = job {sha} completed on m1")),
        "{out}"
    );
    // Another identity cannot be checked from here: said so, naming it, at once.
    let started = Instant::now();
    let o = stream(&format!("--identity m1 elsewhere {sha}"));
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("without a master only this minion (m1) can be checked")
            && out.contains("--identity also names elsewhere"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
