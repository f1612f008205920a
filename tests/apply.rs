//! `ingot apply` end to end: the examples in throwaway roots, check mode, convergence failures,
//! broken actors, secrets.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::util::{ingot, output, script};

/// A master and a minion tree plus an alternate root with a minimal etc/.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(example: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let w = Self { dir };
        std::fs::create_dir_all(w.root().join("etc/service")).unwrap();
        for f in ["passwd", "group", "shadow", "gshadow"] {
            let host = std::fs::read_to_string(Path::new("/etc").join(f)).unwrap_or_default();
            let root_line: String = host
                .lines()
                .filter(|l| l.starts_with("root:"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(w.root().join("etc").join(f), root_line).unwrap();
        }
        for what in ["master", "minion"] {
            let out = output(
                ingot(w.path())
                    .args(["init", what])
                    .arg(w.path().join(what)),
            );
            assert!(out.status.success());
        }
        let ex = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        for sub in ["master/actors", "minion/resources", "minion/facts"] {
            let Ok(entries) = std::fs::read_dir(ex.join(sub)) else {
                continue;
            };
            for e in entries {
                let e = e.unwrap();
                std::fs::copy(e.path(), w.path().join(sub).join(e.file_name())).unwrap();
            }
        }
        w
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    fn apply(&self, extra: &[&str]) -> Output {
        output(
            ingot(self.path())
                .env("INGOT_ROOT", self.root())
                .env("INGOT_HISTORY", self.path().join("history.db"))
                .args([
                    "apply", "--master", "master", "--minion", "minion", "--name", "m1",
                ])
                .args(extra),
        )
    }

    fn apply_json(&self, extra: &[&str]) -> (Option<i32>, Value) {
        let out = self.apply(&[&["--json"], extra].concat());
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "--json output is JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        (out.status.code(), doc)
    }

    fn prescribe(&self, body: &str) {
        script(&self.path().join("master/actors/prescribe"), body);
    }
}

fn steps(doc: &Value) -> Vec<&Value> {
    doc["minions"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .collect()
}

#[test]
fn basics_first_run_changes_second_run_changes_nothing() {
    let w = World::new("basics");
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "changed");
    assert_eq!(steps(&doc).len(), 7);
    assert!(steps(&doc).iter().all(|s| s["outcome"] == "changed"));
    let motd = std::fs::read_to_string(w.root().join("etc/motd")).unwrap();
    assert!(motd.contains("managed by ingot"));
    assert!(std::fs::read_to_string(w.root().join("etc/passwd"))
        .unwrap()
        .contains("demo:x:4242:4242"));
    let cron = std::fs::read_to_string(w.root().join("var/spool/cron/crontabs/root")).unwrap();
    assert!(cron.contains("# ingot: demo-cleanup"));
    assert!(w.root().join("srv/demo/data").is_dir());

    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(doc["status"], "ok", "{doc:#}");
    assert!(steps(&doc).is_empty());
    assert_eq!(doc["minions"][0]["rounds"], 1);
}

#[test]
fn recap_and_history_are_shown() {
    let w = World::new("basics");
    let out = w.apply(&[]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("m1") && text.contains("changed"), "{text}");
    assert!(text.contains("ingot history show"), "{text}");
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(
        progress.contains("conform") && progress.contains("/etc/motd"),
        "{progress}"
    );
    let hist = output(
        ingot(w.path())
            .args(["history", "show", "last", "--json", "--history"])
            .arg(w.path().join("history.db")),
    );
    assert!(hist.status.success());
    let h: Value = serde_json::from_slice(&hist.stdout).unwrap();
    assert_eq!(h["run"]["status"], "changed", "{h:#}");
}

#[test]
fn check_after_a_manual_edit_reports_exactly_that_edit_and_changes_nothing() {
    let w = World::new("basics");
    assert!(w.apply(&[]).status.success());
    let motd = w.root().join("etc/motd");
    std::fs::write(&motd, "hand edited\n").unwrap();
    let (code, doc) = w.apply_json(&["--check", "--detailed-exitcode"]);
    assert_eq!(code, Some(2), "{doc:#}");
    assert_eq!(doc["status"], "pending");
    let planned = steps(&doc);
    assert_eq!(planned.len(), 1, "{doc:#}");
    assert_eq!(planned[0]["outcome"], "would-change");
    assert!(planned[0]["resource"]
        .as_str()
        .unwrap()
        .ends_with("/etc/motd"));
    assert_eq!(
        std::fs::read_to_string(&motd).unwrap(),
        "hand edited\n",
        "--check changed the file"
    );
    let out = w.apply(&["--check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("-hand edited") && text.contains("+Welcome to"),
        "a unified diff: {text}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "without --detailed-exitcode pending is success"
    );
    // The check runs that found the edit are stored as drift, and can be listed as such.
    let history = |args: &[&str]| {
        let out = output(
            ingot(w.path())
                .args(["history", "list", "--json"])
                .args(args),
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let drift = history(&["--status", "drift"]);
    assert_eq!(drift.as_array().map(Vec::len), Some(2), "{drift:#}");
    assert!(drift
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["status"] == "drift"));
    let all = history(&[]);
    assert_eq!(all[2]["status"], "changed", "the first apply: {all:#}");
    let why = drift[0]["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("m1: drifted: file ") && why.contains("/etc/motd"),
        "the drift is named: {why}"
    );
}

#[test]
fn a_failed_runs_reason_is_stored_and_shown() {
    let w = World::new("basics");
    w.prescribe("#!/bin/sh\ncat >/dev/null\necho 'no role for this host' >&2\nexit 3\n");
    assert_eq!(w.apply(&[]).status.code(), Some(1));
    let out = output(ingot(w.path()).args(["history", "show", "last"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("failed: m1: actors/prescribe failed with exit code 3")
            && text.contains("no role for this host"),
        "history show says why: {text}"
    );
    let out = output(ingot(w.path()).args(["history", "list", "--json"]));
    let runs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(runs[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("exit code 3")));
}

#[test]
fn a_resource_that_never_converges_fails_with_the_cap_message() {
    let w = World::new("basics");
    script(
        &w.path().join("minion/resources/stubborn"),
        "#!/bin/sh\ncase $1 in\n describe) exit 1;;\n inspect) cat >/dev/null; echo '{\"kind\":\"stubborn\",\"name\":\"x\",\"changes\":{\"v\":{\"observed\":1,\"desired\":2}}}';;\n conform) cat >/dev/null; echo '{}';;\nesac\n",
    );
    w.prescribe("#!/bin/sh\necho '[{\"kind\":\"stubborn\",\"name\":\"x\"}]'\n");
    let (code, doc) = w.apply_json(&["--max-rounds", "2"]);
    assert_eq!(code, Some(1));
    let err = doc["minions"][0]["error"].as_str().unwrap();
    assert!(
        err.contains("did not converge after 2 rounds") && err.contains("stubborn x"),
        "{err}"
    );
    assert_eq!(steps(&doc).len(), 2, "one conform per round");
}

fn assert_broken_prescribe(w: &World, body: &str, expect: &[&str]) {
    w.prescribe(body);
    let out = w.apply(&[]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for e in expect {
        assert!(text.contains(e), "expected {e:?} in:\n{text}");
    }
    assert!(
        !w.root().join("etc/motd").exists(),
        "a broken prescription changed something"
    );
}

#[test]
fn broken_prescribe_gives_a_clear_error_and_changes_nothing() {
    let w = World::new("basics");
    assert_broken_prescribe(
        &w,
        "#!/bin/sh\necho '[{\"kind\": \"file\",'\n",
        &["actors/prescribe printed invalid JSON", "fix:"],
    );
    assert_broken_prescribe(
        &w,
        "#!/bin/sh\necho '[{\"kind\":\"file\",\"path\":\"/x\"},{\"path\":\"/y\"}]'\n",
        &[
            "actors/prescribe printed an invalid prescription",
            "entry 1",
            "kind",
            "fix:",
        ],
    );
    assert_broken_prescribe(
        &w,
        &format!(
            "#!/bin/sh\necho '[{{\"kind\":\"file\",\"path\":\"{}/etc/motd\",\"mode\":\"rwx\"}}]'\n",
            w.root().display()
        ),
        &["entry 0 (file)", "/0/mode", "ingot resource KIND describe"],
    );
    assert_broken_prescribe(
        &w,
        "#!/bin/sh\necho 'no facts for me' >&2\nexit 3\n",
        &[
            "actors/prescribe failed with exit code 3",
            "no facts for me",
        ],
    );
}

#[test]
fn a_failed_step_fails_the_minion_but_independent_steps_still_run() {
    let w = World::new("basics");
    let root = w.root();
    w.prescribe(&format!(
        "#!/bin/sh\necho '[{{\"kind\":\"file\",\"path\":\"/proc/version\",\"content\":\"x\"}},{{\"kind\":\"file\",\"path\":\"{}/after\",\"content\":\"ok\\\\n\"}}]'\n",
        root.display()
    ));
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(1));
    let outcomes: Vec<&str> = steps(&doc)
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "changed"], "{doc:#}");
    assert!(root.join("after").exists());
    std::fs::remove_file(root.join("after")).unwrap();
    let (code, doc) = w.apply_json(&["--fail-fast"]);
    assert_eq!(code, Some(1));
    let outcomes: Vec<&str> = steps(&doc)
        .iter()
        .map(|s| s["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "skipped"]);
    assert!(!root.join("after").exists());
}

#[test]
fn sensitive_values_never_reach_output_or_history() {
    let w = World::new("basics");
    let secret = "$6$saltsalt$SECRETHASHVALUEthatmustnotleak";
    w.prescribe(&format!(
        "#!/bin/sh\ncat <<'J'\n[{{\"kind\":\"user\",\"root\":\"{}\",\"name\":\"sec\",\"password\":\"{secret}\",\"sensitive\":[\"password\"]}}]\nJ\n",
        w.root().display()
    ));
    for args in [&["--json"][..], &[][..], &["--check"][..]] {
        if args == ["--check"] {
            assert!(
                std::fs::read_to_string(w.root().join("etc/shadow"))
                    .unwrap()
                    .contains("SECRETHASH"),
                "the hash was set"
            );
            // Make the password differ so the plan has a diff for it.
            let shadow = w.root().join("etc/shadow");
            let text = std::fs::read_to_string(&shadow)
                .unwrap()
                .replace(secret, "$6$other$hash");
            std::fs::write(&shadow, text).unwrap();
        }
        let out = w.apply(args);
        let all = [out.stdout.clone(), out.stderr.clone()].concat();
        assert!(
            !String::from_utf8_lossy(&all).contains("SECRETHASH"),
            "leak with {args:?}"
        );
    }
    // The history files (database and WAL) hold no trace of it.
    for entry in std::fs::read_dir(w.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("history.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(10).any(|win| win == b"SECRETHASH"),
                "secret in {}",
                p.display()
            );
        }
    }
}

fn runsvdir(root: &Path) -> Option<std::process::Child> {
    let child = std::process::Command::new("runsvdir")
        .arg(root.join("etc/service"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    match child {
        Ok(c) => Some(c),
        Err(_) => {
            eprintln!("skipped: runsvdir is not installed (apt-get install runit)");
            None
        }
    }
}

struct Reap(std::process::Child, PathBuf);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sv")
            .arg("-w")
            .arg("2")
            .arg("force-stop")
            .arg(self.1.join("etc/service/webapp"))
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg("runsv webapp")
            .status();
    }
}

fn service_pid(root: &Path) -> Option<u32> {
    std::fs::read_to_string(root.join("etc/service/webapp/supervise/pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn webapp_converges_and_restarts_its_service_when_the_config_changes() {
    let w = World::new("webapp");
    let Some(child) = runsvdir(&w.root()) else {
        return;
    };
    let _reap = Reap(child, w.root());
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let conf = std::fs::read_to_string(w.root().join("srv/webapp/conf/app.conf")).unwrap();
    assert!(
        conf.contains("server_name =") && conf.contains("python = 3"),
        "rendered from facts: {conf}"
    );
    let actions: Vec<String> = steps(&doc)
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["kind"].as_str().unwrap(),
                s["action"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        actions.contains(&"service restart".to_string()),
        "{actions:?}"
    );
    assert!(actions.contains(&"line conform".to_string()));
    let pid = service_pid(&w.root()).expect("the service runs");

    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0));
    assert!(
        steps(&doc).is_empty(),
        "second run changes nothing: {doc:#}"
    );
    assert_eq!(
        service_pid(&w.root()),
        Some(pid),
        "no restart without a config change"
    );

    std::fs::write(w.root().join("srv/webapp/conf/app.conf"), "tampered\n").unwrap();
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0), "{doc:#}");
    let actions: Vec<String> = steps(&doc)
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["resource"].as_str().unwrap(),
                s["action"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert!(
        actions[0].ends_with("app.conf conform") && actions[1] == "service webapp restart",
        "{actions:?}"
    );
    let new_pid = service_pid(&w.root()).expect("still running");
    assert_ne!(new_pid, pid, "the service was restarted");
}

#[test]
fn settings_come_from_the_config_file_below_env_and_flags() {
    let w = World::new("basics");
    let cfg = w.path().join("config.yaml");
    std::fs::write(
        &cfg,
        format!(
            "master: {}\nminion: {}\n",
            w.path().join("master").display(),
            w.path().join("minion").display()
        ),
    )
    .unwrap();
    let base = |c: &mut std::process::Command| {
        c.env("INGOT_ROOT", w.root())
            .env("INGOT_HISTORY", w.path().join("history.db"))
            .env_remove("INGOT_MASTER")
            .env_remove("INGOT_MINION");
    };
    let mut c = ingot(w.path());
    base(&mut c);
    let out = output(
        c.args(["--config"])
            .arg(&cfg)
            .args(["apply", "--name", "m1", "--json"]),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "master and minion came from the file"
    );
    // The environment beats the file.
    let mut c = ingot(w.path());
    base(&mut c);
    let out = output(
        c.env("INGOT_MASTER", w.path().join("nowhere"))
            .args(["--config"])
            .arg(&cfg)
            .args(["apply", "--name", "m1"]),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing master tree is bad input"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));
    // A flag beats both.
    let mut c = ingot(w.path());
    base(&mut c);
    let out = output(
        c.env("INGOT_MASTER", w.path().join("nowhere"))
            .args(["--config"])
            .arg(&cfg)
            .args(["apply", "--name", "m1", "--master", "master"]),
    );
    assert_eq!(out.status.code(), Some(0));
    // A bad file is a usage error naming the file and the key.
    std::fs::write(&cfg, "mastr: x\n").unwrap();
    let mut c = ingot(w.path());
    base(&mut c);
    let out = output(c.args(["--config"]).arg(&cfg).args(["apply"]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.yaml") && err.contains("mastr"),
        "{err}"
    );
}

/// A built-in fact whose link leads to a moved `ingot` stops the minion's run before prescribe:
/// a fact document missing it could prescribe away what depends on it.
#[test]
fn a_built_in_fact_lost_to_a_moved_binary_fails_before_prescribe() {
    let w = World::new("basics");
    let marker = w.path().join("prescribed");
    w.prescribe(&format!(
        "#!/bin/sh\ntouch '{}'\necho '[]'\n",
        marker.display()
    ));
    let os = w.path().join("minion/facts/os");
    std::fs::remove_file(&os).unwrap();
    std::os::unix::fs::symlink(w.path().join("gone/ingot"), &os).unwrap();
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(1), "{doc:#}");
    let err = doc["minions"][0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("fact os") && err.contains("re-run `ingot init minion"),
        "{doc:#}"
    );
    assert!(
        !marker.exists(),
        "prescribe ran on a fact document without os"
    );

    // Once init has repaired the link, the same apply prescribes.
    let out = output(
        ingot(w.path())
            .args(["init", "minion"])
            .arg(w.path().join("minion")),
    );
    assert!(out.status.success());
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert!(marker.exists());
}

#[test]
fn a_missing_resource_is_created_even_when_nothing_else_differs() {
    // Its only field besides the name is sensitive (never compared): before, a resource that
    // reported `exists: false` was called converged and never created.
    let w = World::new("basics");
    let made = w.path().join("secret-made");
    script(
        &w.path().join("minion/resources/secret"),
        &format!(
            "#!/bin/sh\nf={}\ncase $1 in\n describe) exit 1;;\n inspect) cat >/dev/null; if [ -e $f ]; then e=true; else e=false; fi; echo \"{{\\\"kind\\\":\\\"secret\\\",\\\"name\\\":\\\"db\\\",\\\"exists\\\":$e}}\";;\n conform) cat >/dev/null; touch $f; echo '{{\"kind\":\"secret\",\"name\":\"db\",\"exists\":true}}';;\nesac\n",
            made.display()
        ),
    );
    w.prescribe(
        "#!/bin/sh\necho '[{\"kind\":\"secret\",\"name\":\"db\",\"value\":\"s3cr3t\",\"sensitive\":[\"value\"]}]'\n",
    );
    let (code, doc) = w.apply_json(&[]);
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["status"], "changed", "{doc:#}");
    assert!(made.exists(), "conformed");
    let (_, doc) = w.apply_json(&[]);
    assert_eq!(doc["status"], "ok", "then converged: {doc:#}");
}
