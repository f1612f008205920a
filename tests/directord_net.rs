//! Directord through the master: three minions on loopback running Directord's own suite,
//! QUERY coordination across minions, and run-once landing on one minion only.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::net_support::Fleet;
use crate::util::{ingot, output};

const NAMES: [&str; 3] = ["d1", "d2", "d3"];

fn fleet() -> Fleet {
    Fleet::with_minions(5, &NAMES)
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn orchestrate(fleet: &Fleet, cwd: &Path, file: &str) -> Output {
    output(
        ingot(cwd)
            .env("INGOT_HISTORY", fleet.path().join("history.db"))
            .args(["orchestrate", file, "--poll", "--check", "--master"])
            .arg(fleet.master_dir()),
    )
}

#[test]
fn directord_suite_runs_green_on_three_minions_through_the_master() {
    let Some(suite) = crate::util::directord_suite() else {
        return;
    };
    let fleet = fleet();
    for file in ["functional-tests.yaml", "functional-tests-query.yaml"] {
        let o = orchestrate(&fleet, &suite, file);
        let out = text(&o);
        assert!(o.status.success(), "{file}: {out}\n{}", fleet.master_log());
        assert!(!out.contains("Job Failed"), "{file}: {out}");
        assert!(out.contains("Job Success"), "{file}: {out}");
        // Every job that is not run-once answered on all three minions.
        for line in out.lines().filter(|l| l.starts_with("Job Success")) {
            if !line.contains("--run-once") {
                assert!(line.contains("[d1, d2, d3]"), "{file}: {line}");
            }
        }
    }
    // The query suite decoded the file found on whichever minion ran the run-once job.
    let hosts = std::fs::read_to_string("/tmp/base64-hosts").unwrap();
    assert_eq!(hosts, std::fs::read_to_string("/etc/hosts").unwrap());
}

#[test]
fn run_once_lands_on_one_minion_and_query_merges_every_minion() {
    let fleet = fleet();
    let d = fleet.path();
    let m = fleet.master_dir();
    let exec = |verb: &str, s: &str| {
        output(
            ingot(d)
                .args(["exec", "--stream", "--verb", verb, "--master"])
                .arg(&m)
                .arg(s),
        )
    };
    let counter = d.join("once.txt");
    let o = exec(
        "RUN",
        &format!("--run-once --skip-cache echo once >> {}", counter.display()),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "once\n");
    assert_eq!(text(&o).matches("Job Success").count(), 1, "{}", text(&o));

    // An ARG on one minion, QUERY everywhere, then every minion sees it through `query`.
    let o = output(
        ingot(d)
            .args([
                "exec", "--poll", "--verb", "ARG", "--target", "d2", "--master",
            ])
            .arg(&m)
            .arg("secret fromd2"),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("[d2]"), "{}", text(&o));
    let o = exec("QUERY", "secret");
    assert!(o.status.success(), "{}", text(&o));
    let o = exec(
        "RUN",
        "--skip-cache echo {{ query.values() | map(attribute='secret') | select('defined') | list | first }}",
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for n in NAMES {
        assert!(out.contains(&format!("STDOUT: {n} = fromd2")), "{out}");
    }

    // ADD over the network: the content travels before the job, named by its hash.
    std::fs::write(d.join("payload.txt"), "payload\n").unwrap();
    let dest = d.join("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let o = exec(
        "ADD",
        &format!(
            "--skip-cache payload.txt \"{}/{{{{ 'copied' }}}}.txt\"",
            dest.display()
        ),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dest.join("copied.txt")).unwrap(),
        "payload\n"
    );

    // Unknown targets: a clear failure.
    let o = output(
        ingot(d)
            .args([
                "exec", "--poll", "--verb", "RUN", "--target", "nope", "--master",
            ])
            .arg(&m)
            .arg("true"),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("Target unknown"), "{}", text(&o));
}

/// `ingot exec --stream --master m --verb VERB STRING` from the fleet's directory.
fn exec(fleet: &Fleet, verb: &str, s: &str) -> Output {
    output(
        ingot(fleet.path())
            .args(["exec", "--stream", "--verb", verb, "--master"])
            .arg(fleet.master_dir())
            .arg(s),
    )
}

/// The files a minion received from the master: `CACHE/transfer/<sha3-224>`.
fn received(fleet: &Fleet, minion: &str) -> Vec<std::path::PathBuf> {
    let dir = fleet.path().join(minion).join("cache/directord/transfer");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    files.sort();
    files
}

/// `text` without terminal colour sequences.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn add_ships_a_file_over_the_frame_cap_in_chunks_and_only_once() {
    use std::os::unix::fs::MetadataExt;
    let fleet = fleet();
    let d = fleet.path();
    // 17 MiB of pseudo-random bytes: more than the 16 MiB frame cap (unoptimised SHA3 makes
    // every further MiB cost the debug build seconds).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big: Vec<u8> = (0..(17 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(d.join("big.bin"), &big).unwrap();
    let dest = d.join("landed");
    let add = format!("--skip-cache big.bin {}/big.bin", dest.display());

    let o = exec(&fleet, "ADD", &add);
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    assert!(out.contains("[d1, d2, d3]"), "{out}");
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
    let mut stamps = Vec::new();
    for n in NAMES {
        let files = received(&fleet, n);
        assert_eq!(files.len(), 1, "{n}: {files:?}");
        assert!(
            std::fs::read(&files[0]).unwrap() == big,
            "{n}: content differs"
        );
        let meta = std::fs::metadata(&files[0]).unwrap();
        stamps.push((meta.ino(), meta.mtime(), meta.mtime_nsec()));
    }
    let log = fleet.master_log();
    assert_eq!(
        log.matches("content uploaded to the master").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("content shipped").count(), 3, "{log}");
    assert!(plain(&log).contains("chunks=17"), "{log}");

    // The same content again (the job runs again: --skip-cache): nothing travels.
    std::fs::remove_file(dest.join("big.bin")).unwrap();
    let o = exec(&fleet, "ADD", &add);
    assert!(o.status.success(), "{}", text(&o));
    assert!(std::fs::read(dest.join("big.bin")).unwrap() == big);
    let log = fleet.master_log();
    assert_eq!(
        log.matches("content uploaded to the master").count(),
        1,
        "{log}"
    );
    assert_eq!(log.matches("content shipped").count(), 3, "{log}");
    assert_eq!(log.matches("content already held").count(), 3, "{log}");
    for (n, before) in NAMES.iter().zip(&stamps) {
        let files = received(&fleet, n);
        let meta = std::fs::metadata(&files[0]).unwrap();
        // Received again, it would be a new file renamed over the old one.
        assert_eq!(meta.ino(), before.0, "{n} received it again");
        // Asked for again: kept another day from now (see transfer::KEEP).
        assert!(
            (meta.mtime(), meta.mtime_nsec()) > (before.1, before.2),
            "{n}'s copy was not renewed"
        );
    }
}

/// A user verb: `describe` publishes its option list, `job` prints a job output.
fn hello_verb(version: &str) -> String {
    format!(
        r#"#!/bin/sh
case "$1" in
describe) cat <<'EOF'
{{"description": "greets", "actions": {{"job": "greet"}}, "args": {{"help": "Say hello.", "cacheable": false, "options": [{{"name": "whom", "type": "str", "nargs": "rest", "help": "whom to greet"}}]}}}}
EOF
;;
job) input=$(cat)
  whom=$(printf '%s' "$input" | sed -n 's/.*"whom":"\([^"]*\)".*/\1/p')
  me=$(printf '%s' "$input" | sed -n 's/.*"minion":"\([^"]*\)".*/\1/p')
  printf '{{"outcome": true, "stdout": "hello %s from %s ({version})"}}\n' "$whom" "$me";;
*) echo "unknown action $1" >&2; exit 2;;
esac
"#
    )
}

#[test]
fn user_components_are_shipped_to_minions_and_again_when_they_change() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = fleet();
    let m = fleet.master_dir();
    let master_file = m.join("resources/hello");
    crate::util::script(&master_file, &hello_verb("v1"));
    let installed = |n: &str| fleet.path().join(n).join("resources/hello");
    let o = exec(&fleet, "HELLO", "world");
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    for n in NAMES {
        assert!(
            out.contains(&format!("STDOUT: {n} = hello world from {n} (v1)")),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(installed(n)).unwrap(),
            hello_verb("v1")
        );
        let meta = std::fs::symlink_metadata(installed(n)).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    }
    let installs = || {
        fleet
            .master_log()
            .matches("user component installed")
            .count()
    };
    assert_eq!(installs(), 3, "{}", fleet.master_log());

    // Unchanged: not installed again.
    let o = exec(&fleet, "HELLO", "again");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(installs(), 3);

    // Changed on the master: every minion runs the new content next time.
    crate::util::script(&master_file, &hello_verb("v2"));
    let o = exec(&fleet, "HELLO", "world");
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    for n in NAMES {
        assert!(
            out.contains(&format!("STDOUT: {n} = hello world from {n} (v2)")),
            "{out}"
        );
        assert_eq!(
            std::fs::read_to_string(installed(n)).unwrap(),
            hello_verb("v2")
        );
    }
    assert_eq!(installs(), 6);

    // A file named like a built-in is never shipped (a minion's built-ins are symlinks to
    // ingot): the job fails, saying so.
    crate::util::script(&m.join("resources/echo"), &hello_verb("impostor"));
    let o = exec(&fleet, "ECHO", "hi");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("built-in"), "{out}");
    for n in NAMES {
        let entry = fleet.path().join(n).join("resources/echo");
        let meta = std::fs::symlink_metadata(entry).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "{n}: the built-in was replaced"
        );
    }
}

/// `ingot manage --master m ...` against the master's own history (MASTER/logs/history.db).
fn manage(fleet: &Fleet, args: &[&str]) -> Output {
    output(
        ingot(fleet.path())
            .env_remove("INGOT_HISTORY")
            .args(["manage", "--master", "m"])
            .args(args),
    )
}

fn manage_json(fleet: &Fleet, args: &[&str]) -> serde_json::Value {
    let o = manage(fleet, &[args, &["--json"]].concat());
    assert!(o.status.success(), "manage {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn manage_lists_analyzes_exports_and_purges_the_jobs_run_through_the_master() {
    let mut fleet = fleet();
    let d = fleet.path().to_owned();
    let orch = d.join("orch.yaml");
    std::fs::write(
        &orch,
        format!(
            "- name: setup\n  jobs:\n  - ARG: greeting hello\n  - WORKDIR: {}/work\n  \
             - RUN: --skip-cache echo {{{{ greeting }}}}\n\
             - name: broken\n  async: true\n  targets: [d2]\n  jobs:\n  - RUN: --skip-cache exit 3\n",
            d.display()
        ),
    )
    .unwrap();
    // Twice: the second time WORKDIR is skipped (cached), the rest runs again.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let o = orchestrate(&fleet, &d, "orch.yaml");
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}\n{}", fleet.master_log());
        // `history: ingot history [--master DIR] show RUN`
        let run = out
            .lines()
            .find(|l| l.starts_with("history: ingot history"))
            .and_then(|l| l.split(" show ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no history line: {out}"))
            .to_owned();
        runs.push(run);
    }

    // --list-jobs: every job of both runs, with its status and counts.
    let rows = manage_json(&fleet, &["--list-jobs"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 8, "{rows:#?}");
    let verbs: Vec<&str> = rows.iter().map(|r| r["VERB"].as_str().unwrap()).collect();
    assert_eq!(
        verbs,
        ["ARG", "WORKDIR", "RUN", "RUN", "ARG", "WORKDIR", "RUN", "RUN"]
    );
    let status: Vec<&str> = rows.iter().map(|r| r["STATUS"].as_str().unwrap()).collect();
    assert_eq!(
        status,
        ["success", "success", "success", "failed", "success", "skipped", "success", "failed"]
    );
    assert_eq!(
        (rows[3]["SUCCESS"].as_u64(), rows[3]["FAILED"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(
        (rows[5]["SUCCESS"].as_u64(), rows[5]["SKIPPED"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(rows[0]["PARENT_JOB_NAME"], "setup");
    assert_eq!(rows[3]["PARENT_JOB_NAME"], "broken");
    assert_eq!(
        (rows[0]["RUN"].as_str(), rows[4]["RUN"].as_str()),
        (Some(&*runs[0]), Some(&*runs[1]))
    );
    let o = manage(&fleet, &["--list-jobs"]);
    let table = text(&o);
    assert!(o.status.success());
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "PARENT_JOB_NAME",
            "VERB",
            "EXECUTION_TIME",
            "PROCESSING",
            "SUCCESS",
            "FAILED"
        ]
    );
    assert!(table.contains("Total Items: 8"), "{table}");
    let failed = manage_json(&fleet, &["--list-jobs", "--filter", "failed"]);
    assert_eq!(failed.as_array().unwrap().len(), 2);
    let one = manage_json(
        &fleet,
        &["--list-jobs", "--filter", "VERB=workdir", "STATUS=skipped"],
    );
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(
        manage(&fleet, &["--list-jobs", "--filter", "colour=red"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        manage(&fleet, &[]).status.code(),
        Some(2),
        "an action is required"
    );

    // --job-info: every minion's result, by id and as `last`.
    let echo = rows[6]["ID"].as_str().unwrap();
    let info = manage_json(&fleet, &["--job-info", echo]);
    for n in NAMES {
        assert_eq!(
            info["STDOUT"][n].as_str().map(str::trim),
            Some("hello"),
            "{info:#}"
        );
    }
    assert_eq!(info["SUCCESS"], serde_json::json!(["d1", "d2", "d3"]));
    assert_eq!(info["JOB_DEFINITION"]["command"], "echo {{ greeting }}");
    let o = manage(&fleet, &["--job-info", &echo[..13]]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for n in NAMES {
        assert!(t.contains(&format!("{n} = hello")), "{t}");
    }
    assert!(
        t.lines()
            .any(|l| l.starts_with("VERB") && l.ends_with("RUN")),
        "{t}"
    );
    let last = manage_json(&fleet, &["--job-info", "last"]);
    assert_eq!(last["ID"], rows[7]["ID"]);
    assert_eq!(last["FAILED"], serde_json::json!(["d2"]));
    assert_eq!(last["PARENT_JOB_NAME"], "broken");

    // Unknown ids: exit 1, naming what exists.
    let o = manage(&fleet, &["--job-info", "no-such-job"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no-such-job") && err.contains(last["ID"].as_str().unwrap()),
        "{err}"
    );
    assert_eq!(
        manage(&fleet, &["--analyze-parent", "no-such-parent"])
            .status
            .code(),
        Some(1)
    );

    // --analyze-parent / --analyze-job: Directord's counts.
    let setup = rows[4]["PARENT_JOB_ID"].as_str().unwrap();
    let a = manage_json(&fleet, &["--analyze-parent", setup]);
    assert_eq!(a["TOTAL_JOBS"], 3, "{a:#}");
    assert_eq!(
        (a["TOTAL_SUCCESSES"].as_u64(), a["TOTAL_SKIPPED"].as_u64()),
        (Some(6), Some(3))
    );
    assert_eq!(
        (a["TOTAL_FAILURES"].as_u64(), a["TOTAL_NODE_COUNT"].as_u64()),
        (Some(0), Some(3))
    );
    assert!(a["COMBINED_EXECUTION_TIME"].as_f64().unwrap() > 0.0);
    assert!(a["FASTEST_NODE_EXECUTION"]["node"].is_string());
    let o = manage(&fleet, &["--analyze-parent", setup]);
    assert!(text(&o).contains("TOTAL_NODE_COUNT"), "{}", text(&o));
    let a = manage_json(&fleet, &["--analyze-job", rows[3]["ID"].as_str().unwrap()]);
    assert_eq!(
        (a["TOTAL_FAILURES"].as_u64(), a["TOTAL_NODE_COUNT"].as_u64()),
        (Some(1), Some(1))
    );

    // `ingot history` shows the same runs: one step per job and minion.
    let list = output(ingot(&d).args([
        "history",
        "--history",
        "m/logs/history.db",
        "list",
        "--json",
    ]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [&*runs[1], &*runs[0]]);
    assert_eq!(list[0]["status"], "failed");
    assert_eq!(list[0]["steps"], 10);
    assert!(
        list[0]["command"].to_string().contains("orchestrate"),
        "{list:#}"
    );
    let show: serde_json::Value =
        serde_json::from_slice(&fleet.history_show(&runs[0]).stdout).unwrap();
    let steps = show["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["action"] == "job"), "{show:#}");
    let echo_steps: Vec<_> = steps
        .iter()
        .filter(|s| s["desired"]["job_id"] == rows[2]["ID"])
        .collect();
    assert_eq!(echo_steps.len(), 3);
    assert!(echo_steps
        .iter()
        .all(|s| s["kind"] == "run" && s["outcome"] == "changed"));
    assert!(show["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "stdout"));
    let tree = output(
        ingot(&d)
            .args(["history", "--history", "m/logs/history.db", "show"])
            .arg(&runs[0]),
    );
    assert!(text(&tree).contains("hello"), "{}", text(&tree));

    // --export-jobs: a JSON file of every job.
    let file = d.join("jobs.json");
    let o = manage(&fleet, &["--export-jobs", file.to_str().unwrap()]);
    assert!(text(&o).contains("Exported data to"), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let doc = doc.as_object().unwrap();
    assert_eq!(doc.len(), 8);
    assert_eq!(
        doc[echo]["STDOUT"]["d1"].as_str().map(str::trim),
        Some("hello")
    );

    // --dump-cache: every minion's cache, with the ARG's value.
    let caches = manage_json(&fleet, &["--dump-cache"]);
    for n in NAMES {
        assert_eq!(caches[n]["args"]["greeting"], "hello", "{caches:#}");
    }

    // --purge-jobs empties the list (and the history of those runs).
    let o = manage(&fleet, &["--purge-jobs"]);
    assert!(text(&o).contains("Purged 8 jobs"), "{}", text(&o));
    assert_eq!(manage_json(&fleet, &["--list-jobs"]), serde_json::json!([]));
    assert!(fleet.history_show(&runs[0]).status.code() != Some(0));

    // --purge-nodes forgets a minion that went away, not the connected ones.
    fleet.kill_minion("d3");
    let gone = crate::net_support::wait_for(std::time::Duration::from_secs(20), || {
        (fleet.state_of("d3").as_deref() == Some("expired")).then_some(())
    });
    assert!(gone.is_some(), "{:?}", fleet.nodes());
    let purged = manage_json(&fleet, &["--purge-nodes"]);
    assert_eq!(purged["purged"], serde_json::json!(["d3"]), "{purged:#}");
    assert_eq!(fleet.state_of("d1").as_deref(), Some("connected"));
    assert_eq!(fleet.state_of("d3").as_deref(), Some("never-seen"));
}

#[test]
fn queuesentinel_through_the_master_drops_the_jobs_not_yet_run() {
    let fleet = fleet();
    let mut yaml = String::from("- name: slow\n  jobs:\n");
    for i in 0..30 {
        yaml.push_str(&format!("  - RUN: --skip-cache sleep 0.3; echo done {i}\n"));
    }
    std::fs::write(fleet.path().join("slow.yaml"), yaml).unwrap();
    let mut slow = ingot(fleet.path())
        .env("INGOT_HISTORY", fleet.path().join("history.db"))
        .args(["orchestrate", "slow.yaml", "--poll", "--master"])
        .arg(fleet.master_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first job is through, drain every queue.
    use std::io::BufRead as _;
    let mut lines = std::io::BufReader::new(slow.stdout.take().unwrap()).lines();
    let mut shown = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        shown.push_str(&line);
        shown.push('\n');
        if line.starts_with("Job Success") {
            break;
        }
    }
    let o = exec(&fleet, "QUEUESENTINEL", "true");
    assert!(o.status.success(), "{}", text(&o));
    for line in lines {
        shown.push_str(&line.unwrap());
        shown.push('\n');
    }
    let status = slow.wait().unwrap();
    let ran = shown
        .lines()
        .filter(|l| l.starts_with("Job Success"))
        .count();
    let dropped = shown.matches("Omitted due to sentinel").count();
    assert!(!status.success(), "{shown}");
    assert!((1..30).contains(&ran), "{ran} jobs ran: {shown}");
    assert!(dropped >= 1, "{shown}");
    assert!(
        shown.contains("30 jobs:"),
        "every job is accounted for: {shown}"
    );
}

/// Directord's whole functional suite (all but the queue-sentinel file, which needs an operator
/// to cancel it: see `queuesentinel_through_the_master_drops_the_jobs_not_yet_run`) on three
/// minions that each have their own /tmp, as three machines would: the suite's jobs create and
/// remove the same paths under /tmp on every minion at once.
#[test]
fn every_suite_file_runs_green_on_three_minions_with_their_own_tmp() {
    let Some(suite) = crate::util::directord_suite() else {
        return;
    };
    if !crate::util::running_as_root() {
        eprintln!("skipping: giving each minion its own /tmp needs root (mount namespaces)");
        return;
    }
    let mut fleet = Fleet::start_outside_tmp(5);
    for n in NAMES {
        fleet.minion_tree(n, "");
        fleet.start_minion_private_tmp(n, &format!("machine-{n}"));
    }
    fleet.wait_connected(&NAMES);
    for file in [
        "functional-tests.yaml",
        "functional-tests-async.yaml",
        "functional-tests-async-race.yaml",
        "functional-tests-async-transfer.yaml",
        "functional-tests-async-time.yaml",
        "functional-tests-query.yaml",
    ] {
        let o = orchestrate(&fleet, &suite, file);
        let out = text(&o);
        assert!(o.status.success(), "{file}: {out}\n{}", fleet.master_log());
        assert!(!out.contains("Job Failed"), "{file}: {out}");
        assert!(out.contains("Job Success"), "{file}: {out}");
    }
}

/// A `systemctl` that records its arguments (one per line) in `record` instead of rebooting
/// anything; returns a PATH with it first.
fn fake_systemctl(fleet: &Fleet, record: &Path) -> String {
    let bin = fleet.path().join("fake-bin");
    crate::util::script(
        &bin.join("systemctl"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {0}.tmp && mv {0}.tmp {0}\n",
            record.display()
        ),
    );
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Writes orchestration `file`: REBOOT, then a RUN (with `run_options`) touching `marker`
/// in the fleet's directory, whose path it returns.
fn reboot_then_touch(fleet: &Fleet, file: &str, run_options: &str, marker: &str) -> PathBuf {
    let marker = fleet.path().join(marker);
    std::fs::write(
        fleet.path().join(file),
        format!(
            "- jobs:\n  - REBOOT: 0\n  - RUN: {run_options}--skip-cache touch {}\n",
            marker.display()
        ),
    )
    .unwrap();
    marker
}

#[test]
fn reboot_holds_the_next_jobs_until_the_minion_connects_again() {
    use crate::net_support::wait_for;
    use std::time::Duration;
    let mut fleet = Fleet::start(5);
    fleet.minion_tree("r1", "");
    let record = fleet.path().join("systemctl.args");
    let path = fake_systemctl(&fleet, &record);
    fleet.start_minion_with_env("r1", "machine-r1", &[("PATH", &path)]);
    fleet.wait_connected(&["r1"]);
    let after = reboot_then_touch(&fleet, "reboot.yaml", "", "after-reboot");
    let orchestration = ingot(fleet.path())
        .args(["orchestrate", "reboot.yaml", "--poll", "--master"])
        .arg(fleet.master_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The minion ran Directord's reboot command (through the fake systemctl).
    let args = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&record).ok()
    })
    .unwrap_or_else(|| panic!("systemctl never ran\n{}", fleet.master_log()));
    assert_eq!(args, "--message=Directord reboot instruction\nreboot\n");
    // Inactive from then on, and the next job is held while the old connection still stands.
    assert_eq!(fleet.state_of("r1").as_deref(), Some("rebooting"));
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !after.exists(),
        "the job after REBOOT went out before the minion came back"
    );
    // The "reboot": the agent goes away, and the job still waits.
    fleet.kill_minion("r1");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!after.exists());
    assert_eq!(fleet.state_of("r1").as_deref(), Some("rebooting"));

    // Back on a new connection: the held job goes out and the orchestration succeeds.
    fleet.start_minion_with_env("r1", "machine-r1", &[("PATH", &path)]);
    let o = orchestration.wait_with_output().unwrap();
    let out = text(&o);
    assert!(
        o.status.success(),
        "{out}{}\n{}",
        String::from_utf8_lossy(&o.stderr),
        fleet.master_log()
    );
    assert_eq!(out.matches("Job Success").count(), 2, "{out}");
    assert!(after.exists());
    fleet.wait_connected(&["r1"]);
    assert!(
        fleet
            .master_log()
            .contains("held until the minion is back from REBOOT"),
        "{}",
        fleet.master_log()
    );

    // A minion that does not come back: the held job fails there after its own --timeout,
    // saying so, and never runs.
    let never = reboot_then_touch(&fleet, "gone.yaml", "--timeout 2 ", "never");
    let o = orchestrate(&fleet, fleet.path(), "gone.yaml");
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("r1 did not come back within 2s after REBOOT"),
        "{out}"
    );
    assert!(!never.exists());
}

/// `ingot exec --stream --target TARGET --master m --verb VERB STRING`.
fn exec_on(fleet: &Fleet, target: &str, verb: &str, s: &str) -> Output {
    output(
        ingot(fleet.path())
            .args(["exec", "--stream", "--target", target, "--verb", verb])
            .arg("--master")
            .arg(fleet.master_dir())
            .arg(s),
    )
}

#[test]
fn job_wait_asks_the_listed_minions_through_the_master() {
    use std::time::{Duration, Instant};
    let mut fleet = Fleet::start(5);
    for n in ["w1", "w2"] {
        fleet.minion_tree(n, "");
        fleet.start_minion(n, &format!("machine-{n}"), None);
    }
    fleet.wait_connected(&["w1", "w2"]);
    let last_sha = || {
        manage_json(&fleet, &["--job-info", "last"])["JOB_SHA3_224"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // JOB_WAIT on w2 fails (exit 1), saying `why`.
    fn job_wait_fails(fleet: &Fleet, args: String, why: &str) {
        let o = exec_on(fleet, "w2", "JOB_WAIT", &args);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains(why), "{out}");
    }
    // `JOB_WAIT --timeout 60` for `sha` on w1, from w2, left running for a second.
    fn job_wait_in_background(fleet: &Fleet, sha: &str) -> std::process::Child {
        let child = ingot(fleet.path())
            .args(["exec", "--stream", "--target", "w2", "--verb", "JOB_WAIT"])
            .arg("--master")
            .arg(fleet.master_dir())
            .arg(format!("--timeout 60 --identity w1 {sha}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_secs(1));
        child
    }
    // A job that succeeded on w1: JOB_WAIT on w2 for it succeeds (w2 never ran it).
    let o = exec_on(&fleet, "w1", "RUN", "echo done on w1");
    assert!(o.status.success(), "{}", text(&o));
    let done = last_sha();
    let o = exec_on(
        &fleet,
        "w2",
        "JOB_WAIT",
        &format!("--timeout 5 --identity w1 {done}"),
    );
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    assert!(
        out.contains(&format!("STDOUT: w2 = job {done} completed on w1")),
        "{out}"
    );

    // A job that failed on w1: JOB_WAIT fails, naming w1.
    let o = exec_on(&fleet, "w1", "RUN", "exit 3");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed = last_sha();
    job_wait_fails(
        &fleet,
        format!("--timeout 5 --identity w1 {failed}"),
        &format!("job {failed} failed on w1"),
    );

    // An identity the master does not know: a clear failure naming it.
    job_wait_fails(
        &fleet,
        format!("--timeout 5 --identity w1 nosuch {done}"),
        "nosuch is not a minion of this master",
    );

    // Waiting: a JOB_WAIT started before the job runs on w1 succeeds once it has (its
    // fingerprint is known from w2, whose own cache does not count).
    let o = exec_on(&fleet, "w2", "RUN", "echo later");
    assert!(o.status.success(), "{}", text(&o));
    let later = last_sha();
    let waiting = job_wait_in_background(&fleet, &later);
    let o = exec_on(&fleet, "w1", "RUN", "echo later");
    assert!(o.status.success(), "{}", text(&o));
    let o = waiting.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    assert!(
        out.contains(&format!("job {later} completed on w1")),
        "{out}"
    );

    // Never run on w1: JOB_WAIT gives up after its --timeout, saying so.
    let never = "0".repeat(56);
    let start = Instant::now();
    job_wait_fails(
        &fleet,
        format!("--timeout 2 --identity w1 {never}"),
        &format!("job {never} did not end on w1 within 2s"),
    );
    assert!(start.elapsed() >= Duration::from_secs(2));

    // A minion that is away and stays away: named, with its state, after the --timeout.
    fleet.kill_minion("w1");
    let gone = crate::net_support::wait_for(Duration::from_secs(20), || {
        (fleet.state_of("w1").as_deref() == Some("expired")).then_some(())
    });
    assert!(gone.is_some(), "{:?}", fleet.nodes());
    let start = Instant::now();
    job_wait_fails(
        &fleet,
        format!("--timeout 2 --identity w1 {done}"),
        "w1 is not connected to the master (expired) and did not connect within 2s",
    );
    assert!(start.elapsed() >= Duration::from_secs(2));

    // One that comes back within the --timeout (a restart, a reboot) is asked then.
    let waiting = job_wait_in_background(&fleet, &done);
    fleet.start_minion("w1", "machine-w1", None);
    let o = waiting.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}\n{}", fleet.master_log());
    assert!(
        out.contains(&format!("job {done} completed on w1")),
        "{out}"
    );
}

/// `ingot manage` while a job runs: the running master's jobs are listed PROCESSING with the
/// answers so far (and a job it still holds), then as stored once done; with the master down,
/// the history alone, without complaint.
#[test]
fn manage_lists_jobs_still_running_as_processing() {
    use std::time::Duration;
    let mut fleet = Fleet::start(5);
    for n in ["p1", "p2"] {
        fleet.minion_tree(n, "");
        fleet.start_minion(n, &format!("machine-{n}"), None);
    }
    fleet.wait_connected(&["p1", "p2"]);
    let d = fleet.path().to_owned();
    // p1 passes its gate at once, p2 waits for the test to create it (at most 15 s, so a
    // failed test leaves no shell behind): the job is half answered while the test looks.
    let gate = d.join("release");
    for (n, g) in [("p1", "/".to_owned()), ("p2", gate.display().to_string())] {
        let o = exec_on(&fleet, n, "ARG", &format!("gate {g}"));
        assert!(o.status.success(), "{}", text(&o));
    }
    std::fs::write(
        d.join("gated.yaml"),
        "- name: gated\n  jobs:\n  \
         - RUN: '--skip-cache i=0; until [ -e {{ gate }} ] || [ $i -ge 300 ]; do sleep 0.05; i=$((i+1)); done; echo through'\n  \
         - RUN: --skip-cache echo after\n",
    )
    .unwrap();
    let running = ingot(&d)
        .args(["orchestrate", "gated.yaml", "--poll", "--master"])
        .arg(fleet.master_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gated = |rows: &serde_json::Value| -> Vec<serde_json::Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["PARENT_JOB_NAME"] == "gated")
            .cloned()
            .collect()
    };
    let rows = crate::net_support::wait_for(Duration::from_secs(20), || {
        let rows = gated(&manage_json(&fleet, &["--list-jobs"]));
        (rows.len() == 2 && rows[0]["SUCCESS"] == 1).then_some(rows)
    })
    .unwrap_or_else(|| {
        panic!(
            "p1's answer never showed: {:#}\n{}",
            manage_json(&fleet, &["--list-jobs"]),
            fleet.master_log()
        )
    });
    // Sent, answered by p1 only; the next job is held in the master behind it.
    for r in &rows {
        assert_eq!(r["PROCESSING"], true, "{r:#}");
        assert_eq!(r["STATUS"], "processing", "{r:#}");
        assert_eq!(r["FAILED"], 0, "{r:#}");
    }
    assert_eq!(rows[1]["SUCCESS"], 0);
    let id = rows[0]["ID"].as_str().unwrap();
    let processing = manage_json(&fleet, &["--list-jobs", "--filter", "processing"]);
    let ids: Vec<&str> = processing
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id, rows[1]["ID"].as_str().unwrap()], "{processing:#}");
    let info = manage_json(&fleet, &["--job-info", id]);
    assert_eq!(info["PROCESSING"], true, "{info:#}");
    assert_eq!(info["SUCCESS"], serde_json::json!(["p1"]), "{info:#}");
    assert_eq!(info["PENDING"], serde_json::json!(["p2"]), "{info:#}");
    assert_eq!(
        info["STDOUT"]["p1"].as_str().map(str::trim),
        Some("through")
    );
    assert_eq!(
        info["JOB_DEFINITION"]["targets"],
        serde_json::json!(["p1", "p2"])
    );
    // The tables: PROCESSING True, and who is still to answer.
    let o = manage(&fleet, &["--list-jobs", "--filter", "processing"]);
    let table = text(&o);
    assert!(o.status.success() && o.stderr.is_empty(), "{table}");
    let line = table.lines().find(|l| l.starts_with(id)).unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("True"), "{table}");
    let o = manage(&fleet, &["--job-info", id]);
    let t = text(&o);
    assert!(
        t.lines()
            .any(|l| l.starts_with("PROCESSING") && l.ends_with("True")),
        "{t}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("PENDING") && l.ends_with("p2")),
        "{t}"
    );

    std::fs::write(&gate, "").unwrap();
    let o = running.wait_with_output().unwrap();
    assert!(o.status.success(), "{}\n{}", text(&o), fleet.master_log());

    // Done: stored, no longer processing, a success on both.
    let rows = gated(&manage_json(&fleet, &["--list-jobs"]));
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for r in &rows {
        assert_eq!(r["PROCESSING"], false, "{r:#}");
        assert_eq!(r["STATUS"], "success", "{r:#}");
        assert_eq!(r["SUCCESS"], 2, "{r:#}");
    }
    assert_eq!(
        manage_json(&fleet, &["--list-jobs", "--filter", "processing"]),
        serde_json::json!([])
    );
    let info = manage_json(&fleet, &["--job-info", id]);
    assert_eq!(info["PROCESSING"], false, "{info:#}");
    assert_eq!(info["SUCCESS"], serde_json::json!(["p1", "p2"]), "{info:#}");
    let o = manage(&fleet, &["--list-jobs"]);
    let table = text(&o);
    let line = table.lines().find(|l| l.starts_with(id)).unwrap();
    assert_eq!(line.split_whitespace().nth(4), Some("False"), "{table}");

    // No master: the history alone, and nothing to complain about.
    fleet.kill_master();
    let o = manage(&fleet, &["--list-jobs", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(gated(&all), rows);
}

#[test]
fn a_restart_of_the_master_leaves_an_unfinished_orchestration_interrupted_not_running() {
    use std::time::Duration;
    let mut fleet = Fleet::start(5);
    fleet.minion_tree("i1", "");
    fleet.start_minion("i1", "machine-i1", None);
    fleet.wait_connected(&["i1"]);
    let d = fleet.path().to_owned();
    // The job waits for the test (at most 15 s, so a failed test leaves no shell behind).
    let gate = d.join("release");
    std::fs::write(
        d.join("gated.yaml"),
        format!(
            "- name: gated\n  jobs:\n  \
             - RUN: '--skip-cache i=0; until [ -e {} ] || [ $i -ge 300 ]; do sleep 0.05; i=$((i+1)); done'\n",
            gate.display()
        ),
    )
    .unwrap();
    let client = ingot(&d)
        .args(["orchestrate", "gated.yaml", "--poll", "--master"])
        .arg(fleet.master_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let sent = crate::net_support::wait_for(Duration::from_secs(20), || {
        let rows = manage_json(&fleet, &["--list-jobs", "--filter", "processing"]);
        (rows.as_array()?.len() == 1).then_some(())
    });
    assert!(sent.is_some(), "{}", fleet.master_log());

    fleet.kill_master();
    let o = client.wait_with_output().unwrap();
    assert!(!o.status.success(), "the client sees its master go");
    fleet.start_master(5);
    fleet.wait_connected(&["i1"]);
    std::fs::write(&gate, "").unwrap();

    let runs = |status: &str| fleet.runs_with_status(status);
    assert_eq!(runs("running"), Vec::<serde_json::Value>::new());
    let interrupted = runs("interrupted");
    assert_eq!(interrupted.len(), 1, "{interrupted:#?}");
    assert_eq!(
        interrupted[0]["command"][1], "orchestrate",
        "{interrupted:#?}"
    );
    // Nothing is processing any more: the master that ran it is gone.
    assert_eq!(
        manage_json(&fleet, &["--list-jobs", "--filter", "processing"]),
        serde_json::json!([])
    );
}
