//! Directord's CLI through the master, as scripts use it: fire-and-forget `exec` and
//! `orchestrate` (the job ids at once, followed with `manage --job-info`), `manage
//! --analyze-all`, `manage --export-nodes`, and the global `--debug`.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::net_support::{wait_for, Fleet};
use crate::util::{ingot, output};

const NAMES: [&str; 2] = ["c1", "c2"];

fn fleet() -> Fleet {
    Fleet::with_minions(5, &NAMES)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `ingot manage --master m ARGS` against the master's own history.
fn manage(fleet: &Fleet, args: &[&str]) -> Output {
    output(
        ingot(fleet.path())
            .env_remove("INGOT_HISTORY")
            .args(["manage", "--master", "m"])
            .args(args),
    )
}

fn manage_json(fleet: &Fleet, args: &[&str]) -> Value {
    let o = manage(fleet, &[args, &["--json"]].concat());
    assert!(o.status.success(), "manage {args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `ingot exec MODE... --verb VERB --master m STRING` from the fleet's directory.
fn exec(fleet: &Fleet, modes: &[&str], verb: &str, s: &str) -> Output {
    output(
        ingot(fleet.path())
            .arg("exec")
            .args(modes)
            .args(["--verb", verb, "--master"])
            .arg(fleet.master_dir())
            .arg(s),
    )
}

/// `ingot orchestrate FILE MODE... --master m` from the fleet's directory.
fn orchestrate(fleet: &Fleet, file: &str, modes: &[&str]) -> Output {
    output(
        ingot(fleet.path())
            .args(["orchestrate", file])
            .args(modes)
            .arg("--master")
            .arg(fleet.master_dir()),
    )
}

/// The ids of Directord's `Job received. Task ID: ID` lines: every line must be one.
fn received(out: &str) -> Vec<String> {
    out.lines()
        .map(|l| {
            l.strip_prefix("Job received. Task ID: ")
                .unwrap_or_else(|| panic!("not a `Job received` line: {l:?} in\n{out}"))
                .to_owned()
        })
        .collect()
}

/// `--job-info ID --json` once the job is no longer processing.
fn finished(fleet: &Fleet, id: &str) -> Value {
    wait_for(Duration::from_secs(30), || {
        let info = manage_json(fleet, &["--job-info", id]);
        (info["PROCESSING"] == false).then_some(info)
    })
    .unwrap_or_else(|| panic!("job {id} never finished\n{}", fleet.master_log()))
}

#[test]
fn exec_and_orchestrate_through_the_master_return_the_job_ids_at_once() {
    let fleet = fleet();
    let d = fleet.path();
    // The job waits for the test (at most 15 s, so a failed test leaves no shell behind).
    let gate = d.join("gate");
    let gated = format!(
        "--skip-cache i=0; until [ -e {} ] || [ $i -ge 300 ]; do sleep 0.05; i=$((i+1)); done; echo through",
        gate.display()
    );
    let started = Instant::now();
    let o = exec(&fleet, &[], "RUN", &gated);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ids = received(&text(&o));
    assert_eq!(ids.len(), 1, "{}", text(&o));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "exec waited for the job"
    );
    assert!(!gate.exists());

    // PROCESSING at once, in --job-info and --list-jobs, tables and JSON.
    let info = manage_json(&fleet, &["--job-info", &ids[0]]);
    assert_eq!(info["PROCESSING"], true, "{info:#}");
    let processing = manage_json(&fleet, &["--list-jobs", "--filter", "processing"]);
    assert!(
        processing
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ID"] == ids[0].as_str()),
        "{processing:#}"
    );
    let t = text(&manage(&fleet, &["--job-info", &ids[0]]));
    assert!(
        t.lines()
            .any(|l| l.starts_with("PROCESSING") && l.ends_with("True")),
        "{t}"
    );

    // The master runs it after the client is gone, and stores its run.
    std::fs::write(&gate, "").unwrap();
    let done = finished(&fleet, &ids[0]);
    assert_eq!(done["SUCCESS"], json!(["c1", "c2"]), "{done:#}");
    assert_eq!(
        done["STDOUT"]["c1"].as_str().map(str::trim),
        Some("through")
    );
    let stored = wait_for(Duration::from_secs(20), || {
        fleet.runs_with_status("running").is_empty().then_some(())
    });
    assert!(stored.is_some(), "{:#?}", fleet.runs_with_status("running"));

    // orchestrate: one line per job, in the file's order.
    std::fs::write(
        d.join("two.yaml"),
        "- name: two\n  jobs:\n  - RUN: --skip-cache echo one\n  - RUN: --skip-cache echo two\n",
    )
    .unwrap();
    let o = orchestrate(&fleet, "two.yaml", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let ids = received(&text(&o));
    assert_eq!(ids.len(), 2, "{}", text(&o));
    for (id, word) in ids.iter().zip(["one", "two"]) {
        let info = finished(&fleet, id);
        assert_eq!(info["JOB_DEFINITION"]["command"], format!("echo {word}"));
        assert_eq!(info["PARENT_JOB_NAME"], "two");
        assert_eq!(info["SUCCESS"], json!(["c1", "c2"]), "{info:#}");
    }

    // --check alone does not wait either, and says so.
    let o = orchestrate(&fleet, "two.yaml", &["--check"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(received(&text(&o)).len(), 2);
    assert!(
        stderr(&o).contains("--check lists the failed jobs only with --poll, --wait or --stream"),
        "{}",
        stderr(&o)
    );

    // --poll, --wait and --stream wait and print each job's result, as before.
    for mode in ["--poll", "--wait", "--stream"] {
        let o = exec(&fleet, &[mode], "RUN", "--skip-cache echo waited");
        let out = text(&o);
        assert!(o.status.success(), "{mode}: {out}");
        assert!(out.contains("Job Success"), "{mode}: {out}");
        assert!(!out.contains("Job received"), "{mode}: {out}");
        assert_eq!(
            out.contains("STDOUT: c1 = waited"),
            mode == "--stream",
            "{out}"
        );
    }
    let o = exec(&fleet, &["--poll"], "RUN", "--skip-cache exit 3");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn manage_analyzes_every_job_and_exports_the_nodes() {
    let mut fleet = fleet();
    let d = fleet.path().to_owned();

    // Nothing recorded yet: a clear failure.
    let o = manage(&fleet, &["--analyze-all"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        stderr(&o).contains("no Directord job is recorded"),
        "{}",
        stderr(&o)
    );

    // An exec, and an orchestration whose second job fails on c2.
    let o = exec(&fleet, &["--poll"], "RUN", "--skip-cache echo hi");
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        d.join("mixed.yaml"),
        "- name: fine\n  jobs:\n  - RUN: --skip-cache echo fine\n\
         - name: broken\n  targets: [c2]\n  jobs:\n  - RUN: --skip-cache exit 3\n",
    )
    .unwrap();
    let o = orchestrate(&fleet, "mixed.yaml", &["--poll"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    let all = manage_json(&fleet, &["--analyze-all"]);
    assert_eq!(all["ID"], "all", "{all:#}");
    assert_eq!(all["TOTAL_JOBS"], 3, "{all:#}");
    assert_eq!(
        (
            all["TOTAL_SUCCESSES"].as_u64(),
            all["TOTAL_FAILURES"].as_u64(),
            all["TOTAL_NODE_COUNT"].as_u64()
        ),
        (Some(4), Some(1), Some(2)),
        "{all:#}"
    );
    // The same figures as each job's own analysis, summed.
    let rows = manage_json(&fleet, &["--list-jobs"]);
    let combined: f64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            manage_json(&fleet, &["--analyze-job", r["ID"].as_str().unwrap()])
                ["COMBINED_EXECUTION_TIME"]
                .as_f64()
                .unwrap()
        })
        .sum();
    let all_combined = all["COMBINED_EXECUTION_TIME"].as_f64().unwrap();
    assert!(
        combined > 0.0 && (all_combined - combined).abs() < 1e-6,
        "{all_combined} vs {combined}"
    );
    let o = manage(&fleet, &["--analyze-all"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let header: Vec<&str> = t.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["KEY", "VALUE"], "{t}");
    for (key, value) in [("ID", "all"), ("TOTAL_JOBS", "3"), ("TOTAL_FAILURES", "1")] {
        assert!(
            t.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == [key, value]),
            "{key}: {t}"
        );
    }

    // --export-nodes: every node, as --list-nodes knows them, keyed by name.
    let file = d.join("nodes.yaml");
    let o = manage(&fleet, &["--export-nodes", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        text(&o),
        format!("Exported data to [ {} ]\n", file.display())
    );
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let doc = doc.as_object().unwrap();
    assert_eq!(
        doc.keys().collect::<Vec<_>>(),
        NAMES.iter().collect::<Vec<_>>()
    );
    for n in NAMES {
        let node = &doc[n];
        assert_eq!(node["name"], n, "{node:#}");
        assert_eq!(node["state"], "connected", "{node:#}");
        assert_eq!(node["machine_id"], format!("machine-{n}"), "{node:#}");
        assert!(node["version"].as_str().is_some_and(|v| !v.is_empty()));
    }
    let o = manage(&fleet, &["--export-nodes", "nodes.json", "--json"]);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["nodes"], 2, "{summary:#}");
    assert!(d.join("nodes.json").is_file());

    // A file that cannot be written: exit 1, saying which.
    let o = manage(&fleet, &["--export-nodes", "no/such/dir/nodes.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot write the nodes to no/such/dir/nodes.yaml"),
        "{}",
        stderr(&o)
    );

    // Without the master: the nodes are unavailable (exit 3, nothing written); the analysis
    // still reads the history.
    fleet.kill_master();
    let o = manage(&fleet, &["--export-nodes", "later.yaml"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("cannot reach the master"),
        "{}",
        stderr(&o)
    );
    assert!(!d.join("later.yaml").exists());
    assert_eq!(manage_json(&fleet, &["--analyze-all"])["TOTAL_JOBS"], 3);
}

/// Lines of a minion's log that are debug diagnostics of a request it ran.
fn debug_requests(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("DEBUG") && l.contains("request"))
        .count()
}

#[test]
fn debug_is_log_debug() {
    let mut fleet = Fleet::start(5);
    let quiet = [("INGOT_LOG", "warn")];
    for n in ["g1", "g2", "g3"] {
        fleet.minion_tree(n, "");
    }
    fleet.start_minion_with_args("g1", "machine-g1", &["--debug"], &quiet);
    fleet.start_minion_with_args("g2", "machine-g2", &["--log", "debug"], &quiet);
    fleet.start_minion_with_args("g3", "machine-g3", &[], &quiet);
    fleet.wait_connected(&["g1", "g2", "g3"]);
    let o = exec(&fleet, &["--poll"], "RUN", "--skip-cache true");
    assert!(o.status.success(), "{}", text(&o));
    for n in ["g1", "g2"] {
        let seen = wait_for(Duration::from_secs(10), || {
            (debug_requests(&fleet.minion_log(n)) > 0).then_some(())
        });
        assert!(seen.is_some(), "{n}:\n{}", fleet.minion_log(n));
    }
    assert!(
        !fleet.minion_log("g3").contains("DEBUG"),
        "{}",
        fleet.minion_log("g3")
    );

    // Before the command too, as Directord's `directord --debug exec ...`.
    let o = output(
        ingot(fleet.path())
            .args(["--debug", "manage", "--master", "m", "--list-nodes"])
            .env("INGOT_LOG", "warn"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(text(&o).contains("g1"), "{}", text(&o));
}
