//! A master and minions on loopback over real TLS: a full apply, refusals, failures.

use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::net_support::{holds_unacked_result, report, spool_drained, wait_for, Fleet, Relay};
use crate::util::{ingot, output};

#[test]
fn three_minions_converge_through_the_master_with_one_recap_and_history() {
    let mut fleet = Fleet::start(5);
    for n in ["web1", "web2", "db1"] {
        fleet.minion_tree(n, "");
        fleet.start_minion(n, &format!("machine-{n}"), None);
    }
    fleet.wait_connected(&["web1", "web2", "db1"]);

    let (code, doc) = fleet.run(&["web*", "db1"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["status"], "changed", "{doc:#}");
    assert_eq!(doc["minions"].as_array().unwrap().len(), 3);
    for n in ["web1", "web2", "db1"] {
        assert_eq!(report(&doc, n)["status"], "changed", "{doc:#}");
        assert_eq!(
            fleet.motd(n).as_deref(),
            Some(format!("hello {n}\n").as_str())
        );
    }
    // Only the matching minions.
    let (_, doc) = fleet.run(&["web2"]);
    assert_eq!(doc["minions"].as_array().unwrap().len(), 1);
    assert_eq!(report(&doc, "web2")["status"], "ok", "idempotent: {doc:#}");

    // `ingot apply --targets` is the same run.
    let out =
        output(ingot(fleet.path()).args(["apply", "--master", "m", "--json", "--targets", "db*"]));
    assert!(out.status.success());
    let one: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report(&one, "db1")["status"], "ok", "{one:#}");
    assert_eq!(one["minions"].as_array().unwrap().len(), 1);

    // The text recap: one table for all.
    let out =
        output(ingot(fleet.path()).args(["master", "--master", "m", "run", "--targets", "*"]));
    assert!(out.status.success());
    let recap = String::from_utf8_lossy(&out.stdout);
    for n in ["web1", "web2", "db1"] {
        assert!(recap.contains(n), "{recap}");
    }
    assert!(recap.contains("ingot history --master m show"), "{recap}");

    // History on the master: the runs, with the minions' events.
    let out = fleet.history_show(doc["run"].as_str().unwrap());
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("facts/me") && shown.contains("web2"),
        "{shown}"
    );

    // Spools are emptied once the master acknowledged the results.
    let empty = wait_for(Duration::from_secs(5), || {
        ["web1", "web2", "db1"]
            .iter()
            .all(|n| spool_drained(&fleet.path().join(n)))
            .then_some(())
    });
    assert!(empty.is_some(), "spool files left behind");

    // The node list: name, expiry, version, uptime, machine id, address.
    let nodes = fleet.nodes();
    let web1 = nodes.iter().find(|n| n["name"] == "web1").unwrap();
    assert_eq!(web1["machine_id"], "machine-web1");
    assert_eq!(web1["version"], env!("CARGO_PKG_VERSION"));
    assert!(web1["cert_expiry"].as_i64().unwrap() > 0);
    assert!(web1["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(web1["uptime"].as_i64().is_some());
    let table = output(ingot(fleet.path()).args(["manage", "--master", "m", "--list-nodes"]));
    assert!(String::from_utf8_lossy(&table.stdout).contains("machine-db1"));

    // The control socket is not world-accessible.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fleet.master_dir().join("master.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    assert!(fleet.master_alive());
}

#[test]
fn refusals_leave_the_master_serving() {
    let mut fleet = Fleet::start(5);
    let good = fleet.minion_tree("good", "");
    fleet.start_minion("good", "m-good", None);
    fleet.wait_connected(&["good"]);
    let port = fleet.port;

    // Plain TCP junk, an oversized frame claim, a half-open connection.
    let mut junk = TcpStream::connect(("127.0.0.1", port)).unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    big.write_all(b"99999999999999:").unwrap();
    let _half_open = TcpStream::connect(("127.0.0.1", port)).unwrap();

    // A certificate from another CA (the minion trusts our master, the master not it).
    let d = fleet.path().to_owned();
    assert!(output(ingot(&d).args(["init", "master", "other"]))
        .status
        .success());
    assert!(
        output(ingot(&d).args(["certs", "init", "--master", "other"]))
            .status
            .success()
    );
    let foreign = fleet.minion_tree("foreign", "");
    assert!(output(
        ingot(&d)
            .args(["certs", "issue", "foreign", "--master", "other", "--out"])
            .arg(foreign.join("certs"))
    )
    .status
    .success());
    std::fs::copy(good.join("certs/ca.crt"), foreign.join("certs/ca.crt")).unwrap();
    fleet.start_minion("foreign", "m-foreign", None);

    // A revoked certificate, and an expired one.
    fleet.minion_tree("revoked", "");
    assert!(
        output(ingot(&d).args(["certs", "revoke", "revoked", "--master", "m"]))
            .status
            .success()
    );
    fleet.start_minion("revoked", "m-revoked", None);
    let expired = fleet.minion_tree("expired", "");
    assert!(output(
        ingot(&d)
            .args(["certs", "issue", "expired", "--days", "0", "--master", "m", "--out"])
            .arg(expired.join("certs"))
    )
    .status
    .success());
    // Past the second it expires in.
    std::thread::sleep(Duration::from_millis(1100));
    fleet.start_minion("expired", "m-expired", None);

    // A second connection claiming a held name from another machine.
    let twin = d.join("twin");
    std::fs::create_dir_all(twin.join("logs")).unwrap();
    for sub in ["certs", "facts", "resources", "cache"] {
        std::fs::create_dir_all(twin.join(sub)).unwrap();
    }
    for f in ["minion.crt", "minion.key", "ca.crt"] {
        std::fs::copy(good.join("certs").join(f), twin.join("certs").join(f)).unwrap();
    }
    fleet.start_minion("twin", "m-impostor", None);

    let refused = wait_for(Duration::from_secs(20), || {
        (fleet.minion_log("foreign").contains("TLS handshake")
            || fleet.minion_log("foreign").contains("refused"))
        .then_some(())?;
        fleet
            .minion_log("revoked")
            .contains("refused")
            .then_some(())?;
        fleet
            .minion_log("expired")
            .contains("refused")
            .then_some(())?;
        fleet
            .minion_log("twin")
            .contains("is held by machine m-good")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "foreign: {}\nrevoked: {}\nexpired: {}\ntwin: {}",
        fleet.minion_log("foreign"),
        fleet.minion_log("revoked"),
        fleet.minion_log("expired"),
        fleet.minion_log("twin")
    );
    let list = output(ingot(&d).args(["certs", "list", "--master", "m", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let state = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(state("revoked"), "revoked");
    assert_eq!(state("expired"), "expired");
    assert_eq!(state("good"), "valid");

    // The master still serves, quickly, and the twin did not take the name over.
    assert!(fleet.master_alive(), "{}", fleet.master_log());
    let t = Instant::now();
    let (code, doc) = fleet.run(&["good"]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(t.elapsed() < Duration::from_secs(10));
    let good_node = fleet
        .nodes()
        .into_iter()
        .find(|n| n["name"] == "good")
        .unwrap();
    assert_eq!(good_node["machine_id"], "m-good");
    assert_eq!(good_node["state"], "connected");
    for n in ["foreign", "revoked", "expired"] {
        assert_ne!(fleet.state_of(n).as_deref(), Some("connected"), "{n}");
    }

    // Revoking a connected minion cuts it.
    assert!(
        output(ingot(&d).args(["certs", "revoke", "good", "--master", "m"]))
            .status
            .success()
    );
    let cut = wait_for(Duration::from_secs(10), || {
        (fleet.state_of("good").as_deref() != Some("connected")).then_some(())
    });
    assert!(cut.is_some(), "revoked minion still connected");
    assert!(fleet.master_alive());
}

#[test]
fn a_minion_killed_mid_run_is_reported_unreachable_and_the_others_finish() {
    let mut fleet = Fleet::start(2);
    let marker = fleet.path().join("slow-started");
    for n in ["m1", "m2"] {
        fleet.minion_tree(n, "");
        fleet.start_minion(n, n, None);
    }
    fleet.minion_tree("slow", &format!("touch {}; sleep 30", marker.display()));
    fleet.start_minion("slow", "slow", None);
    fleet.wait_connected(&["m1", "m2", "slow"]);

    let d = fleet.path().to_owned();
    let run = std::thread::spawn(move || {
        let out = ingot(&d)
            .args(["master", "--master", "m", "run", "--json", "--targets", "*"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    assert!(wait_for(Duration::from_secs(20), || marker.exists().then_some(())).is_some());
    fleet.kill_minion("slow");
    let (code, stdout) = run.join().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON document");
    assert_eq!(code, Some(1), "{doc:#}");
    let slow = report(&doc, "slow");
    assert_eq!(slow["status"], "failed");
    assert!(
        slow["error"].as_str().unwrap().contains("unreachable"),
        "{slow:#}"
    );
    for n in ["m1", "m2"] {
        assert_eq!(report(&doc, n)["status"], "changed", "{doc:#}");
    }
    assert_eq!(fleet.state_of("slow").as_deref(), Some("expired"));
    assert!(fleet.master_alive());
}

#[test]
fn work_done_while_disconnected_is_delivered_once_after_reconnecting() {
    let mut fleet = Fleet::start(20);
    let relay = Relay::start(fleet.port);
    let d = fleet.path().to_owned();
    let (started, count) = (d.join("started"), d.join("runs"));
    // The fact runs long enough to be cut off; it counts its runs and talks after the cut.
    fleet.minion_tree(
        "far",
        &format!(
            "echo run >> {count}; touch {started}; sleep 2; echo 'said while cut off' >&2",
            count = count.display(),
            started = started.display()
        ),
    );
    fleet.start_minion("far", "far", Some(format!("127.0.0.1:{}", relay.port)));
    fleet.wait_connected(&["far"]);

    let run = std::thread::spawn(move || {
        let out = crate::net_support::master_run(&d, &["far"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    });
    assert!(wait_for(Duration::from_secs(20), || started.exists().then_some(())).is_some());
    relay.cut();
    std::thread::sleep(Duration::from_millis(3000));
    relay.reopen();
    let (code, stdout) = run.join().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON document");
    assert_eq!(code, Some(0), "{doc:#}\n{}", fleet.minion_log("far"));
    assert_eq!(report(&doc, "far")["status"], "changed");
    assert_eq!(
        std::fs::read_to_string(&count).unwrap(),
        "run\n",
        "the fact ran once"
    );
    assert!(fleet.minion_log("far").contains("disconnected"));

    // The line written while cut off reached the master's history.
    let out = fleet.history_show(doc["run"].as_str().unwrap());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(shown.matches("said while cut off").count(), 1, "{shown}");
    // Events sent before the cut and replayed after it are not stored twice.
    assert_eq!(shown.matches("far/facts/me").count(), 1, "{shown}");
}

#[test]
fn enrollment_without_copying_keys_by_token_or_by_the_operator() {
    let mut fleet = Fleet::start(5);
    let d = fleet.path().to_owned();
    let enroll_addr = format!("127.0.0.1:{}", fleet.enroll_port);
    let ca = fleet.master_dir().join("certs/ca.crt");
    let enroll = |name: &str, extra: &[&str]| {
        let tree = d.join(name);
        assert!(output(ingot(&d).args(["init", "minion"]).arg(&tree))
            .status
            .success());
        crate::util::script(
            &tree.join("facts/me"),
            &format!("#!/bin/sh\necho '\"{name}\"'\n"),
        );
        let mut c = ingot(&d);
        c.args([
            "minion",
            "enroll",
            "--minion",
            name,
            "--master",
            &enroll_addr,
            "--name",
            name,
        ])
        .arg("--ca")
        .arg(&ca)
        .args(extra);
        c
    };

    // With a one-time token: accepted at once; the token does not work twice.
    let token = output(ingot(&d).args(["certs", "token", "--master", "m"]));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let out = output(&mut enroll("tok", &["--token", &token, "--wait", "0"]));
    assert!(out.status.success());
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(d.join("tok/certs/minion.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let out = output(&mut enroll("tok2", &["--token", &token, "--wait", "0"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "a used token must not accept again"
    );

    // Without: pending until the operator accepts.
    let pending = |name: &str| {
        wait_for(Duration::from_secs(10), || {
            let out = ingot(&d)
                .args(["certs", "pending", "--master", "m", "--json"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!("\"{name}\""))
                .then_some(())
        })
        .is_some()
    };
    let mut waiting = enroll("ops", &["--wait", "30"]).spawn().unwrap();
    assert!(pending("ops"), "ops not pending");
    assert!(
        output(ingot(&d).args(["certs", "accept", "ops", "--master", "m"]))
            .status
            .success()
    );
    assert!(waiting.wait().unwrap().success());

    // Rejected requests fail.
    let mut rejected = enroll("nope", &["--wait", "30"]).spawn().unwrap();
    assert!(pending("nope"), "nope not pending");
    assert!(
        output(ingot(&d).args(["certs", "reject", "nope", "--master", "m"]))
            .status
            .success()
    );
    assert_eq!(rejected.wait().unwrap().code(), Some(1));

    // The enrolled minions work like issued ones.
    fleet.start_minion("tok", "m-tok", None);
    fleet.start_minion("ops", "m-ops", None);
    fleet.wait_connected(&["tok", "ops"]);
    let (code, doc) = fleet.run(&["tok", "ops"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(report(&doc, "ops")["status"], "changed");
    // The CA key never left the master.
    assert!(!d.join("ops/certs/ca.key").exists());
}

#[test]
fn certificates_near_expiry_are_renewed_without_the_operator() {
    let mut fleet = Fleet::start(5);
    let d = fleet.path().to_owned();
    let tree = fleet.minion_tree("short", "");
    // Ten days left: inside the default 30-day renewal window.
    assert!(output(
        ingot(&d)
            .args(["certs", "issue", "short", "--days", "10", "--master", "m", "--out"])
            .arg(tree.join("certs"))
    )
    .status
    .success());
    let before = std::fs::read_to_string(tree.join("certs/minion.crt")).unwrap();
    let key_before = std::fs::read_to_string(tree.join("certs/minion.key")).unwrap();
    let fingerprint = || {
        let out = ingot(&d)
            .args(["certs", "list", "--master", "m", "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "short")
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let old_fp = fingerprint();
    fleet.start_minion("short", "m-short", None);
    let renewed = wait_for(Duration::from_secs(20), || {
        let now = std::fs::read_to_string(tree.join("certs/minion.crt")).unwrap_or_default();
        (now != before && fingerprint() != old_fp).then_some(())
    });
    assert!(renewed.is_some(), "{}", fleet.minion_log("short"));
    // Same key, new certificate, and the minion is back with it.
    assert_eq!(
        std::fs::read_to_string(tree.join("certs/minion.key")).unwrap(),
        key_before
    );
    std::thread::sleep(Duration::from_millis(1500));
    fleet.wait_connected(&["short"]);
    // Renewed for at least three windows (90 days), so not renewed again on reconnecting.
    let list = output(ingot(&d).args(["certs", "list", "--master", "m", "--json"]));
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let entry = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "short")
        .unwrap()
        .clone();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        entry["expiry"].as_i64().unwrap() - now > 80 * 86400,
        "{entry}"
    );
    let renewed_fp = fingerprint();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fingerprint(), renewed_fp, "renewed again");
    assert_eq!(fleet.state_of("short").as_deref(), Some("connected"));
    let (code, doc) = fleet.run(&["short"]);
    assert_eq!(code, 0, "{doc:#}");
}

/// A resource whose conform takes `secs` seconds: it counts its runs, says something on
/// stderr before and after, and touches a marker once it has started.
fn slow_resource(dir: &std::path::Path, name: &str, secs: u32) -> String {
    let (count, started) = (
        dir.join(format!("count-{name}")),
        dir.join(format!("started-{name}")),
    );
    format!(
        r#"#!/bin/sh
case $1 in
 describe) exit 1;;
 inspect) cat >/dev/null
   if [ -s {count} ]; then echo '{{"kind":"slow","name":"{name}"}}'
   else echo '{{"kind":"slow","name":"{name}","changes":{{"done":{{"observed":false,"desired":true}}}}}}'; fi;;
 conform) cat >/dev/null
   echo "conform of {name} begins" >&2
   echo run >> {count}
   touch {started}
   sleep {secs}
   echo "conform of {name} ends" >&2
   echo '{{"kind":"slow","name":"{name}"}}';;
esac
"#,
        count = count.display(),
        started = started.display(),
    )
}

#[test]
fn a_run_survives_a_restart_of_the_master() {
    let names = ["r0", "r1", "r2", "r3"];
    let mut fleet = Fleet::start(30);
    let d = fleet.path().to_owned();
    crate::util::script(
        &fleet.master_dir().join("actors/prescribe"),
        r#"#!/bin/sh
me=$(sed -n 's/.*"me":"\([^"]*\)".*/\1/p')
echo "[{\"kind\":\"slow\",\"name\":\"$me\"}]"
"#,
    );
    for n in names {
        let tree = fleet.minion_tree(n, "");
        // r0 ends while the master runs but stores nothing (its result reaches the master,
        // which must not acknowledge what it has not stored); r1 ends while the master is
        // down (its result waits in the spool); the others end after the master is back
        // (their events and results reach it live).
        let secs = match n {
            "r0" => 1,
            "r1" => 2,
            _ => 5,
        };
        crate::util::script(&tree.join("resources/slow"), &slow_resource(&d, n, secs));
        fleet.start_minion(n, &format!("machine-{n}"), None);
    }
    fleet.wait_connected(&names);

    let dir = d.clone();
    let client = std::thread::spawn(move || {
        crate::net_support::master_run(&dir, &["r*"])
            .output()
            .unwrap()
    });
    let all_started = wait_for(Duration::from_secs(30), || {
        names
            .iter()
            .all(|n| d.join(format!("started-{n}")).exists())
            .then_some(())
    });
    assert!(all_started.is_some(), "{}", fleet.master_log());
    let hold = d.join("hold-commits");
    std::fs::write(&hold, "").unwrap();
    // r0's result went to the master, which cannot store it: the minion must keep it.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        holds_unacked_result(&d.join("r0")),
        "r0's result was acknowledged before it was stored\n{}",
        fleet.minion_log("r0")
    );
    // The master dies with r0's result received but not stored, and while the other
    // conforms run; the minions carry on and spool.
    fleet.kill_master();
    std::fs::remove_file(&hold).unwrap();
    let client = client.join().unwrap();
    assert!(
        !client.status.success(),
        "the run's client sees the master go"
    );
    let r1_spooled = wait_for(Duration::from_secs(10), || {
        holds_unacked_result(&d.join("r1")).then_some(())
    });
    assert!(r1_spooled.is_some(), "{}", fleet.minion_log("r1"));
    fleet.start_master(30);
    fleet.wait_connected(&names);

    // The run was marked interrupted at start-up.
    let list = |status: &str| fleet.runs_with_status(status);
    let interrupted = list("interrupted");
    assert_eq!(interrupted.len(), 1, "{interrupted:?}");
    assert!(list("running").is_empty());
    let run = interrupted[0]["id"].as_str().unwrap().to_owned();
    assert!(
        interrupted[0]["ended_us"].as_i64().is_some(),
        "{interrupted:?}"
    );

    // The results the minions spooled reach that run: each step with its outcome and events.
    let steps_done = |doc: &serde_json::Value| {
        names.iter().all(|n| {
            doc["steps"].as_array().unwrap().iter().any(|s| {
                s["minion"] == *n
                    && s["kind"] == "slow"
                    && s["action"] == "conform"
                    && s["outcome"] == "changed"
            })
        })
    };
    let doc = wait_for(Duration::from_secs(30), || {
        let out = fleet.history_show(&run);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        steps_done(&doc).then_some(doc)
    })
    .unwrap_or_else(|| {
        panic!(
            "the steps' results were not recorded: {}\nmaster log:\n{}",
            String::from_utf8_lossy(&fleet.history_show(&run).stdout),
            fleet.master_log()
        )
    });
    assert_eq!(doc["run"]["status"], "interrupted", "{doc:#}");
    let events = doc["events"].as_array().unwrap();
    for n in names {
        let step = doc["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["minion"] == n && s["action"] == "conform")
            .unwrap();
        assert_eq!(step["after"]["name"], n, "{step:#}");
        for said in ["begins", "ends"] {
            let line = format!("conform of {n} {said}");
            let found: Vec<_> = events
                .iter()
                .filter(|e| e["key"] == "stderr" && e["data"]["line"] == format!("{line}\n"))
                .collect();
            assert_eq!(found.len(), 1, "{line:?} once: {found:#?}");
            assert_eq!(found[0]["step"], step["no"], "{found:#?}");
            assert_eq!(found[0]["minion"], n);
        }
        // Nothing ran twice.
        assert_eq!(
            std::fs::read_to_string(d.join(format!("count-{n}"))).unwrap(),
            "run\n",
            "{n}'s conform ran once"
        );
    }
    assert!(fleet
        .master_log()
        .contains("delivered after a restart of the master"));

    // Acknowledged: the spools empty.
    let empty = wait_for(Duration::from_secs(10), || {
        names
            .iter()
            .all(|n| spool_drained(&d.join(n)))
            .then_some(())
    });
    assert!(
        empty.is_some(),
        "spool left behind\nmaster log:\n{}",
        fleet.master_log()
    );
    for n in names {
        assert_eq!(
            std::fs::read_to_string(d.join(format!("count-{n}"))).unwrap(),
            "run\n"
        );
    }
    assert!(fleet.master_alive());
}

/// Whether the peer closes `s` within `limit` (end of stream or a reset), reading past anything
/// it sends first.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    use std::io::Read as _;
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// `openssl s_client` with the certificate of the minion tree `tree`: the raw bytes of a
/// minion's side of the TLS connection (`None` without openssl).
fn raw_tls_client(tree: &std::path::Path, port: u16) -> Option<std::process::Child> {
    use std::process::{Command, Stdio};
    Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-tls1_3",
            "-servername",
            "ingot-master",
        ])
        .args(["-connect", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(tree.join("certs/minion.crt"))
        .arg("-key")
        .arg(tree.join("certs/minion.key"))
        .arg("-CAfile")
        .arg(tree.join("certs/ca.crt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .inspect_err(|e| eprintln!("openssl s_client unavailable ({e}): raw TLS cases skipped"))
        .ok()
}

#[test]
fn stalled_handshakes_and_garbage_after_one_leave_the_master_serving() {
    let timeout = 8;
    let mut fleet = Fleet::start_with(5, &["--handshake-timeout", &timeout.to_string()]);
    let port = fleet.port;

    // One client opens TCP and starts nothing; another stops in the middle of its ClientHello.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut partial = TcpStream::connect(("127.0.0.1", port)).unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    // Meanwhile a minion connects.
    fleet.minion_tree("good", "");
    fleet.start_minion("good", "m-good", None);
    fleet.wait_connected(&["good"]);
    assert!(
        opened.elapsed() < Duration::from_secs(timeout),
        "the minion connected only after the stalled handshakes timed out"
    );
    // The stalled clients are cut at the timeout.
    for s in [&mut silent, &mut partial] {
        assert!(closed_within(s, Duration::from_secs(timeout + 10)));
    }
    assert!(opened.elapsed() >= Duration::from_secs(timeout - 1));
    // (Logged just after the connection is dropped.)
    let logged = wait_for(Duration::from_secs(5), || {
        (fleet.master_log().matches("handshake timed out").count() == 2).then_some(())
    });
    assert!(logged.is_some(), "{}", fleet.master_log());

    let raw = fleet.minion_tree("raw", "");
    let hello = format!(
        r#"{{"hello":{{"protocol":{},"version":"test","machine_id":"m-raw","started":0}}}}"#,
        minion::wire::PROTOCOL
    );
    if let Some(mut client) = raw_tls_client(&raw, port) {
        // A minion that says hello, is welcomed, then sends bytes that are not a netstring.
        let mut stdin = client.stdin.take().unwrap();
        let mut stdout = client.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
                if String::from_utf8_lossy(&seen).contains("\"welcome\"") {
                    let _ = tx.send(());
                }
            }
        });
        stdin
            .write_all(format!("{}:{hello},", hello.len()).as_bytes())
            .unwrap();
        stdin.flush().unwrap();
        assert!(
            rx.recv_timeout(Duration::from_secs(20)).is_ok(),
            "no welcome: {}",
            fleet.master_log()
        );
        assert_eq!(fleet.state_of("raw").as_deref(), Some("connected"));
        // The master cuts a client that sent junk, and says so in its log.
        let cut_and_logged = |client: &mut std::process::Child, said: &dyn Fn(&str) -> bool| {
            let ended = wait_for(Duration::from_secs(10), || client.try_wait().unwrap());
            assert!(ended.is_some(), "the master kept the connection");
            let logged = wait_for(Duration::from_secs(5), || {
                fleet.master_log().lines().any(said).then_some(())
            });
            assert!(logged.is_some(), "{}", fleet.master_log());
        };
        stdin.write_all(b"GARBAGE, not a netstring\n").unwrap();
        stdin.flush().unwrap();
        cut_and_logged(&mut client, &|l| {
            l.contains("minion disconnected: malformed frame") && l.contains("raw")
        });

        // And one that sends garbage instead of its hello.
        let mut client = raw_tls_client(&raw, port).unwrap();
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        stdin.flush().unwrap();
        cut_and_logged(&mut client, &|l| l.contains("raw: malformed frame"));
    }

    // The master still serves.
    assert!(fleet.master_alive(), "{}", fleet.master_log());
    assert_eq!(fleet.state_of("good").as_deref(), Some("connected"));
    let (code, doc) = fleet.run(&["good"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(report(&doc, "good")["status"], "changed", "{doc:#}");
}

#[test]
fn a_request_lost_with_its_connection_fails_instead_of_waiting_forever() {
    // A long grace: a request that waited for its result would wait far past the deadline below.
    let mut fleet = Fleet::start(120);
    let relay = Relay::start(fleet.port);
    let d = fleet.path().to_owned();
    let count = d.join("runs");
    fleet.minion_tree("lost", &format!("echo run >> {}", count.display()));
    fleet.start_minion("lost", "lost", Some(format!("127.0.0.1:{}", relay.port)));
    fleet.wait_connected(&["lost"]);

    // The connection goes silent without closing: the facts request goes out into it and
    // never arrives; both ends notice the silence and the minion connects again.
    relay.blackhole();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = crate::net_support::master_run(&d, &["lost"])
            .output()
            .unwrap();
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(45))
        .expect("the run kept waiting for a request the minion never received");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON document");
    assert_ne!(out.status.code(), Some(0), "{doc:#}");
    assert!(
        doc.to_string()
            .contains("did not run and was not sent again"),
        "{doc:#}\n{}",
        fleet.master_log()
    );
    assert!(!count.exists(), "the lost request ran after all");
    fleet.wait_connected(&["lost"]);
}

/// A batch `actors/prescribe` (its `describe` says `"batch": true`) gets the facts of many
/// minions in one run; an `{"error"}` element fails only its minion, and a wrong number of
/// results fails every minion of the batch with a message saying what to print.
#[test]
fn a_batch_prescribe_serves_many_minions_with_few_runs() {
    const COUNT: usize = 24;
    let mut fleet = Fleet::start(5);
    let d = fleet.path().to_path_buf();
    let actor = |results: &str| {
        let body = format!(
            r#"#!/usr/bin/env python3
import json, sys
if sys.argv[1:] == ["describe"]:
    print(json.dumps({{"batch": True}}))
    sys.exit(0)
docs = json.load(sys.stdin)
with open("{log}", "a") as f:
    f.write("%d\n" % len(docs))
out = []
for d in docs:
    me = d["me"]
    if me.endswith("0003"):
        out.append({{"error": "no role for " + me}})
    else:
        out.append([{{"kind": "file", "path": "{out}/" + me, "content": "hello\n"}}])
print(json.dumps(out{results}))
"#,
            log = d.join("prescribe.log").display(),
            out = d.join("out").display(),
        );
        let path = d.join("m/actors/prescribe");
        let tmp = d.join("prescribe.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    actor("");
    std::fs::create_dir_all(d.join("out")).unwrap();
    let names = fleet.start_swarm(COUNT);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    fleet.wait_connected(&refs);

    let (code, doc) = fleet.run(&["swarm-*"]);
    assert_ne!(code, 0, "one minion's prescription failed: {doc:#}");
    for n in &names {
        let r = report(&doc, n);
        if n.ends_with("0003") {
            assert_eq!(r["status"], "failed", "{r:#}");
            assert!(
                r["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("no role for swarm-0003"),
                "{r:#}"
            );
            assert!(!d.join("out").join(n).exists());
        } else {
            assert_eq!(r["status"], "changed", "{r:#}");
            assert_eq!(
                std::fs::read_to_string(d.join("out").join(n)).unwrap(),
                "hello\n"
            );
        }
    }
    let log = std::fs::read_to_string(d.join("prescribe.log")).unwrap();
    let batches: Vec<usize> = log.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(
        batches.iter().sum::<usize>(),
        COUNT,
        "every minion once: {batches:?}"
    );
    assert!(
        batches.len() < COUNT,
        "minions whose facts arrived while a batch ran share the next one: {batches:?}"
    );

    // A batch that prints the wrong number of prescriptions fails them all, clearly (the
    // changed actor is asked `describe` again).
    actor("[1:]");
    let (code, doc) = fleet.run(&["swarm-000*"]);
    assert_ne!(code, 0);
    for n in names.iter().filter(|n| n.starts_with("swarm-000")) {
        let r = report(&doc, n);
        assert_eq!(r["status"], "failed", "{r:#}");
        let why = r["error"].as_str().unwrap_or_default();
        assert!(
            why.contains("results for") && why.contains("fix: print one prescription"),
            "{why}"
        );
    }
}
