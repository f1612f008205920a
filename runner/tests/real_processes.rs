//! The runner against real processes: sh and python scripts, pipes, fd 3, groups, users.

use std::time::{Duration, Instant};

use channel3::{Body, Message};
use runner::{Collect, ExitKind, Program, Runner};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `ns FRAME` writes a netstring on fd 3 (lengths in bytes: C locale).
const NS: &str = r#"ns() { printf '%d:%s,' "${#1}" "$1" >&3; }; "#;

fn sh(script: &str) -> Program {
    Program::new("/bin/sh")
        .arg("-c")
        .arg(format!("{NS}{script}"))
        .name("jim")
        .env("LC_ALL", "C")
}

fn keys(ms: &[Message]) -> Vec<String> {
    ms.iter().map(|m| m.key.clone()).collect()
}

fn run(p: &Program) -> (runner::Outcome, Vec<Message>) {
    let events = Collect::default();
    let out = rt().block_on(runner::run(p, &events)).unwrap();
    (out, events.messages())
}

#[test]
fn stdin_json_stdout_stderr_fd3_and_exit_code() {
    let p = sh(r#"read x; echo "got $x"; echo warn >&2; ns '[null,"step",{"label":"a"}]'; exit 3"#)
        .json_stdin(&serde_json::json!({"a": 1}));
    let (out, ms) = run(&p);
    assert_eq!(out.exit, ExitKind::Exited(3));
    assert_eq!(out.stdout, b"got {\"a\":1}\n");
    assert_eq!(out.stderr_text(), "warn\n");
    assert_eq!(keys(&ms)[0], "spawn");
    assert_eq!(keys(&ms).last().unwrap(), "exitcode");
    assert!(ms.iter().any(|m| m.key == "stdin"));
    let step = ms
        .iter()
        .find(|m| m.key == "step")
        .expect("the fd-3 frame is forwarded");
    assert_eq!(step.name.as_deref(), Some("jim"));
    assert!(ms.iter().all(|m| m.name.as_deref() == Some("jim")));
}

#[test]
fn sensitive_stdin_fields_are_redacted_in_events_but_delivered() {
    let p = sh("cat")
        .json_stdin(&serde_json::json!({"password": "hunter2", "sensitive": ["password"]}));
    let (out, ms) = run(&p);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hunter2"),
        "the child gets the real value"
    );
    let all: String = ms
        .iter()
        .filter(|m| m.key != "stdout")
        .map(|m| m.data.get().to_owned())
        .collect();
    assert!(
        !all.contains("hunter2"),
        "no event but stdout carries the secret: {all}"
    );
    assert!(all.contains("***"));
}

#[test]
fn secret_env_values_are_redacted_in_spawn() {
    let p = sh("true")
        .env("DB_PASSWORD", "s3cret")
        .env("PLAIN", "visible");
    let (_, ms) = run(&p);
    let spawn = ms[0].data.get();
    assert!(
        !spawn.contains("s3cret") && spawn.contains("visible"),
        "{spawn}"
    );
}

#[test]
fn garbage_then_valid_frames_on_fd3() {
    let p = sh(
        r#"printf 'not a frame' >&3; printf '99999999999:x' >&3; ns '[null,"step",{"label":1}]'; ns '[null,"step",{"label":"b"}]' "#,
    );
    let (out, ms) = run(&p);
    assert!(out.success());
    let fd3: Vec<&Message> = ms
        .iter()
        .filter(|m| m.key == "garbage" || m.key == "step")
        .collect();
    assert!(fd3.iter().any(|m| m.key == "garbage"));
    let steps: Vec<Body> = fd3
        .iter()
        .filter(|m| m.key == "step")
        .map(|m| m.body())
        .collect();
    assert!(
        steps.contains(&Body::Step { label: "b".into() }),
        "{steps:?}"
    );
}

#[test]
fn binary_output_is_base64_and_exact() {
    let p = sh(r"printf '\377\376bin\n'");
    let (out, ms) = run(&p);
    assert_eq!(out.stdout, b"\xff\xfebin\n");
    let line = ms.iter().find(|m| m.key == "stdout").unwrap();
    match line.body() {
        Body::Stdout(l) => {
            assert!(l.encoding.is_some());
            assert_eq!(l.bytes(), b"\xff\xfebin\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn ten_megabytes_of_stdout_while_fd3_and_stderr_are_busy() {
    let p = Program::new("python3").name("big").arg("-c").arg(
        "import os,sys\n\
         sys.stdout.write(('x'*99+'\\n')*100000)\n\
         sys.stderr.write('e'*300000)\n\
         f=os.fdopen(3,'wb')\n\
         for i in range(2000):\n\
         \x20   p=b'[null,\"step\",{\"label\":\"%d\"}]'%i\n\
         \x20   f.write(b'%d:%s,'%(len(p),p))\n",
    );
    let (out, ms) = run(&p);
    assert!(out.success(), "{}", out.stderr_text());
    assert_eq!(out.stdout.len(), 10_000_000);
    assert_eq!(ms.iter().filter(|m| m.key == "stdout").count(), 100_000);
    assert_eq!(ms.iter().filter(|m| m.key == "step").count(), 2000);
}

fn alive(pattern: &str) -> bool {
    std::process::Command::new("pgrep")
        .arg("-f")
        .arg(pattern)
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn timeout_kills_the_whole_group_including_grandchildren_holding_pipes() {
    let marker = format!("sleep 3{}", std::process::id() % 1000 + 1000);
    let p = sh(&format!("{marker} & {marker} & {marker}; echo never"))
        .timeout(Duration::from_millis(300))
        .grace(Duration::from_millis(300));
    let start = Instant::now();
    let (out, ms) = run(&p);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.timed_out);
    assert_eq!(out.code(), 128 + 15);
    let sig = ms
        .iter()
        .find(|m| m.key == "signal")
        .expect("a signal event");
    assert!(sig.data.get().contains("SIGTERM") && sig.data.get().contains("timeout"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(&marker), "grandchildren survived the timeout");
}

#[test]
fn sigterm_ignoring_child_is_killed_after_grace() {
    let p = sh("trap '' TERM; sleep 5 & wait; sleep 5")
        .timeout(Duration::from_millis(200))
        .grace(Duration::from_millis(200));
    let start = Instant::now();
    let (out, ms) = run(&p);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(out.exit, ExitKind::Signaled(9));
    assert_eq!(ms.iter().filter(|m| m.key == "signal").count(), 2);
}

#[test]
fn background_grandchild_holding_stdout_cannot_hold_the_run() {
    let marker = format!("sleep 4{}", std::process::id() % 1000 + 1000);
    let mut p = sh(&format!("{marker} & echo started"));
    p.leak_timeout = Duration::from_millis(200);
    let start = Instant::now();
    let (out, _) = run(&p);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(out.success());
    assert!(out.leaked);
    assert_eq!(out.stdout, b"started\n");
    std::thread::sleep(Duration::from_millis(100));
    assert!(!alive(&marker));
}

#[test]
fn a_child_that_closes_fd3_or_never_gets_one_still_works() {
    let (out, ms) = run(&sh(
        "exec 3>&-; echo ok; printf x >&3 || echo 'no fd3' >&2; exit 0",
    ));
    assert!(out.success());
    assert!(ms.iter().any(|m| m.key == "stderr"));
    let mut p = sh("printf x >&3 2>/dev/null || echo closed");
    p.channel3 = false;
    let (out, _) = run(&p);
    assert_eq!(out.stdout, b"closed\n");
}

#[test]
fn runs_as_nobody_with_its_groups() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: running as another user needs root");
        return;
    }
    let (out, ms) = run(&sh("id -un; id -u").user("nobody"));
    assert!(out.success(), "{}", out.stderr_text());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("nobody\n"), "{text}");
    assert!(ms[0].data.get().contains("nobody"));
    let (out, _) = run(&sh("id -g").user("nobody").group("daemon"));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "1");
}

#[test]
fn unknown_user_and_missing_program_are_clear_errors() {
    let events = Collect::default();
    let err = rt()
        .block_on(runner::run(&sh("true").user("no-such-user-xyz"), &events))
        .unwrap_err();
    assert!(err.to_string().contains("no-such-user-xyz"));
    let err = rt()
        .block_on(runner::run(&Program::new("/nonexistent/prog"), &events))
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/prog"), "{err}");
}

#[test]
fn bad_json_stdout_names_the_program() {
    let (out, _) = run(&sh("echo '{oops'"));
    let err = out.json::<serde_json::Value>().unwrap_err().to_string();
    assert!(err.contains("jim") && err.contains("{oops"), "{err}");
}

#[test]
fn bounded_concurrency_limits_parallel_runs() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let runner = Runner::new(2);
    let script = format!(
        "echo start >> {0}; sleep 0.2; echo end >> {0}",
        log.display()
    );
    rt().block_on(async {
        let p = sh(&script);
        let futs: Vec<_> = (0..6).map(|_| runner.run(&p, &runner::NullSink)).collect();
        for r in futures_join(futs).await {
            assert!(r.unwrap().success());
        }
    });
    // At any point at most two runs are between start and end.
    let mut open = 0i32;
    let mut peak = 0;
    for l in std::fs::read_to_string(&log).unwrap().lines() {
        open += if l == "start" { 1 } else { -1 };
        peak = peak.max(open);
    }
    assert_eq!(peak, 2);
}

async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    // Poll all concurrently on one task.
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    set.extend(results.into_iter().map(Option::unwrap));
    set
}

/// Children start the same whichever way they are spawned (posix_spawn normally, fork for an
/// identity switch): own process group, nothing blocked and SIGPIPE at its default (the parent
/// ignores it), the working directory and environment asked for, and fds 0–3 in place.
#[test]
fn children_start_clean_in_their_own_group_with_their_cwd_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
        echo "pgid $(ps -o pgid= -p $$ | tr -d ' ') pid $$"
        grep -E '^Sig(Ign|Blk):' /proc/self/status
        echo "cwd $(pwd)"
        echo "env ${ONLY:-unset} ${HOME:-nohome}"
        ls /proc/$$/fd | sort -n | tr '\n' ' '; echo
    "#;
    let mut base = Program::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .cwd(dir.path());
    base.env = Some(vec![
        ("ONLY".into(), "this".into()),
        ("PATH".into(), "/usr/bin:/bin".into()),
    ]);
    // Switching to root is a no-op as root, and still takes the fork path.
    let mut cases = vec![base.clone()];
    if nix::unistd::geteuid().is_root() {
        cases.push(base.user("root"));
    } else {
        eprintln!("not root: only the posix_spawn path is checked");
    }
    for p in cases {
        let (out, _) = run(&p);
        assert_eq!(out.exit, ExitKind::Exited(0), "{}", out.stderr_text());
        let text = String::from_utf8(out.stdout.clone()).unwrap();
        let ids: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
        assert_eq!(ids[1], ids[3], "its own process group: {text}");
        let ignored = text
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(
            ignored & (1 << (libc_sigpipe() - 1)),
            0,
            "SIGPIPE ignored: {text}"
        );
        assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
        let cwd = dir.path().canonicalize().unwrap();
        assert!(text.contains(&format!("cwd {}", cwd.display())), "{text}");
        assert!(text.contains("env this nohome"), "{text}");
        // 0, 1, 2 and the channel3 pipe on 3 (the shell keeps its own above 9).
        let fds: Vec<u32> = text
            .lines()
            .last()
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        assert_eq!(&fds[..4], &[0, 1, 2, 3], "{text}");
    }
}

fn libc_sigpipe() -> u32 {
    nix::sys::signal::Signal::SIGPIPE as u32
}
