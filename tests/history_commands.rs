//! `ingot facts` and `ingot resource` record into the minion's history by default.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::ingot_bin;

fn run(dir: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(ingot_bin())
        .current_dir(dir)
        .env_remove("INGOT_HISTORY")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn history_json(dir: &std::path::Path, args: &[&str]) -> Value {
    let db = dir.join("m/logs/history.db");
    let out = run(
        dir,
        &[
            &["history"],
            args,
            &["--json", "--history", db.to_str().unwrap()],
        ]
        .concat(),
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn facts_and_resource_record_by_default_and_no_history_opts_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(run(dir, &["init", "minion", "m"], "").status.success());
    assert!(run(dir, &["facts", "--minion", "m"], "").status.success());
    let target = dir.join("f");
    let state = format!("{{\"path\":\"{}\",\"content\":\"x\\n\"}}", target.display());
    let out = run(
        dir,
        &["resource", "file", "conform", "--minion", "m"],
        &state,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let quiet = format!("{{\"path\":\"{}/g\",\"content\":\"x\\n\"}}", dir.display());
    assert!(run(
        dir,
        &[
            "resource",
            "file",
            "conform",
            "--minion",
            "m",
            "--no-history"
        ],
        &quiet
    )
    .status
    .success());

    let runs = history_json(dir, &["list"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "facts and the recorded conform: {runs:?}");
    let last = history_json(dir, &["show", "last"]);
    let steps: Vec<(String, String, String)> = last["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().into(),
                s["action"].as_str().unwrap().into(),
                s["outcome"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [(
            "file".to_string(),
            "conform".to_string(),
            "changed".to_string()
        )]
    );
    assert!(
        !last["events"].as_array().unwrap().is_empty(),
        "the resource's events are kept"
    );
    let facts_run = &runs[1];
    assert_eq!(facts_run["status"], "ok");
    assert!(
        facts_run["events"].as_u64().unwrap() > 5,
        "every fact's events: {facts_run}"
    );
}
