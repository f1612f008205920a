//! A run's life across a real SIGINT: the apply stops its children, records the run
//! `interrupted`, prints what it did, and exits 130; `history follow` ends on it.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{ingot, output, script};

fn alive(pid: i32) -> bool {
    // Signal 0: whether the process (not yet reaped by its parent) is still there.
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn wait_for_file(path: &Path, limit: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.trim().is_empty() {
                return Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn sigint_during_apply_stops_the_step_records_the_run_interrupted_and_exits_130() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for what in ["master", "minion"] {
        assert!(output(ingot(d).args(["init", what, what])).status.success());
    }
    let done = d.join("first.txt");
    let pid_file = d.join("slow.pid");
    // A resource whose conform runs for a long time (its pid written first).
    script(
        &d.join("minion/resources/slow"),
        &format!(
            "#!/bin/sh\ncase $1 in\n describe) exit 1;;\n inspect) cat >/dev/null; echo '{{\"kind\":\"slow\",\"name\":\"x\",\"changes\":{{\"v\":{{\"observed\":1,\"desired\":2}}}}}}';;\n conform) cat >/dev/null; echo $$ > {}; exec sleep 60;;\nesac\n",
            pid_file.display()
        ),
    );
    script(
        &d.join("master/actors/prescribe"),
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho '[{{\"kind\":\"file\",\"path\":\"{}\",\"content\":\"one\"}}, {{\"kind\":\"slow\",\"name\":\"x\"}}]'\n",
            done.display()
        ),
    );
    // Recorded in the master tree, as an operator's apply is.
    let child = ingot(d)
        .env_remove("INGOT_HISTORY")
        .args([
            "apply", "--master", "master", "--minion", "minion", "--name", "m1",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let slow: i32 = wait_for_file(&pid_file, Duration::from_secs(30))
        .expect("the slow step started")
        .trim()
        .parse()
        .unwrap();
    assert!(alive(slow));
    let sent = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "ingot's own warnings carry no colour codes off a terminal: {stderr}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "stopped at once, not after the step"
    );
    // The step that was running was stopped with its process group.
    let gone = Instant::now();
    while alive(slow) && gone.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(slow), "the running step's process was killed");
    // The partial recap: what finished, and why it stopped.
    assert!(stdout.contains("INTERRUPTED m1"), "{stdout}");
    assert!(stdout.contains("interrupted by SIGINT"), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");
    assert!(
        stdout.contains("history: ingot history --master master show "),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&done).unwrap(), "one");
    // The hint works as printed; the history says interrupted; following it ends at once.
    let hint = stdout
        .lines()
        .find_map(|l| l.strip_prefix("history: "))
        .unwrap()
        .to_owned();
    let pasted = |cmd: &str| {
        let bin = crate::util::ingot_bin();
        let path = format!(
            "{}:{}",
            bin.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        output(
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .current_dir(d)
                .env("PATH", path)
                .env_remove("INGOT_HISTORY"),
        )
    };
    let show = pasted(&hint);
    assert_eq!(show.status.code(), Some(0), "`{hint}` works when pasted");
    assert!(
        String::from_utf8_lossy(&show.stdout).contains("interrupted by SIGINT"),
        "the history says why: {}",
        String::from_utf8_lossy(&show.stdout)
    );
    let list_cmd = hint.replace(" show ", " list --json # ");
    let runs: Value = serde_json::from_slice(&pasted(&list_cmd).stdout).unwrap();
    assert_eq!(runs[0]["status"], "interrupted", "{runs}");
    let started = Instant::now();
    let follow = pasted(&hint.replace(" show ", " follow "));
    assert!(follow.status.code().is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "follow ended on the interrupted run"
    );
}
