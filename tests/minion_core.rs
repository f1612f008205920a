//! The minion core through the real binary: `ingot init minion`, busybox built-ins, the file
//! resource, `ingot resource`, `ingot facts`, and the `Minion` dispatch API.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ingot"))
}

/// Runs `cmd` with `input` on stdin.
fn run(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .env_remove("INGOT_MINION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    // A program refusing its arguments may exit before reading: a broken pipe is its answer.
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing stdin: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "--- {cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A fresh minion tree laid out by `ingot init minion`.
fn minion_tree() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minion");
    let out = run(Command::new(bin()).args(["init", "minion"]).arg(&dir), "");
    assert!(out.status.success());
    (tmp, dir)
}

/// Writes an executable script, replacing (never writing through) a symlink at the path.
fn script(path: &Path, body: &str) {
    let _ = std::fs::remove_file(path);
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn init_lays_out_the_tree_with_busybox_links_and_is_safe_to_rerun() {
    let (_tmp, dir) = minion_tree();
    for d in ["logs", "certs", "cache", "facts", "resources"] {
        assert!(dir.join(d).is_dir(), "{d}");
    }
    let exe = std::fs::canonicalize(bin()).unwrap();
    for l in [
        "facts/os",
        "facts/hostname",
        "facts/network",
        "facts/hardware",
        "facts/users",
        "resources/file",
    ] {
        let target = std::fs::read_link(dir.join(l)).unwrap();
        assert_eq!(std::fs::canonicalize(&target).unwrap(), exe, "{l}");
    }
    // A user's replacement, a user's own resource and a built-in's name linked to another
    // program survive re-runs, even with --force.
    std::fs::remove_file(dir.join("facts/os")).unwrap();
    script(&dir.join("facts/os"), "#!/bin/sh\necho '\"mine\"'\n");
    script(&dir.join("resources/mine"), "#!/bin/sh\n");
    std::fs::remove_file(dir.join("resources/user")).unwrap();
    std::os::unix::fs::symlink("/bin/true", dir.join("resources/user")).unwrap();
    // A stale link to an old ingot: repaired without --force.
    std::fs::remove_file(dir.join("resources/file")).unwrap();
    std::os::unix::fs::symlink("/opt/old/ingot", dir.join("resources/file")).unwrap();
    let out = run(Command::new(bin()).args(["init", "minion"]).arg(&dir), "");
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "repaired {}: it led to /opt/old/ingot",
            dir.join("resources/file").display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 repaired"));
    assert_eq!(
        std::fs::canonicalize(dir.join("resources/file")).unwrap(),
        exe
    );
    let out = run(
        Command::new(bin())
            .args(["init", "minion", "--force"])
            .arg(&dir),
        "",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 repaired"));
    assert_eq!(
        std::fs::read_link(dir.join("resources/user")).unwrap(),
        Path::new("/bin/true")
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("facts/os")).unwrap(),
        "#!/bin/sh\necho '\"mine\"'\n"
    );
    assert!(dir.join("resources/mine").is_file());
}

/// The built-ins' links after the `ingot` they point at moved: facts and resources refuse to
/// run with the way out, `ingot init minion` repairs the links, and all works again.
#[test]
fn a_moved_binary_is_reported_and_init_repairs_the_links() {
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    let copy = old.join("ingot");
    std::fs::copy(bin(), &copy).unwrap();
    let dir = tmp.path().join("minion");
    let out = run(Command::new(&copy).args(["init", "minion"]).arg(&dir), "");
    assert!(out.status.success());
    assert_eq!(
        std::fs::canonicalize(std::fs::read_link(dir.join("facts/os")).unwrap()).unwrap(),
        std::fs::canonicalize(&copy).unwrap()
    );
    // The binary moves away: every built-in link now leads nowhere.
    std::fs::rename(&old, tmp.path().join("moved")).unwrap();
    let facts = || {
        run(
            Command::new(bin())
                .args(["facts", "--no-history", "--minion"])
                .arg(&dir),
            "",
        )
    };
    let out = facts();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a lost built-in fails `ingot facts`"
    );
    let err = stderr(&out);
    let hint = format!("re-run `ingot init minion {}`", dir.display());
    assert!(
        err.contains("fact os failed") && err.contains("missing ingot binary"),
        "{err}"
    );
    assert!(err.contains(&hint), "{err}");
    let out = run(
        Command::new(bin())
            .args(["resource", "file", "inspect", "--no-history", "--minion"])
            .arg(&dir),
        &json!({"path": tmp.path().join("x")}).to_string(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&hint), "{}", stderr(&out));

    // Re-running init (no --force) points them at the current binary.
    let out = run(Command::new(bin()).args(["init", "minion"]).arg(&dir), "");
    assert!(out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("repaired") && !err.contains("--force"),
        "{err}"
    );
    let exe = std::fs::canonicalize(bin()).unwrap();
    for l in [
        "facts/os",
        "facts/users",
        "resources/file",
        "resources/cron",
    ] {
        assert_eq!(std::fs::canonicalize(dir.join(l)).unwrap(), exe, "{l}");
    }
    let out = facts();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(json_of(&out)["os"]["kernel"]["release"].is_string());
}

/// A schedule cron would not take is refused (exit 2, naming the field) and nothing is written.
#[test]
fn cron_refuses_a_schedule_out_of_range_and_writes_nothing() {
    let (tmp, dir) = minion_tree();
    let root = tmp.path().join("root");
    let spool = root.join("var/spool/cron/crontabs/root");
    let conform = |schedule: &str| {
        run(
            Command::new(bin())
                .args(["resource", "cron", "conform", "--no-history", "--minion"])
                .arg(&dir),
            &json!({"name": "nightly", "user": "root", "root": root,
                    "schedule": schedule, "command": "/usr/bin/true"})
            .to_string(),
        )
    };
    for (bad, says) in [
        ("99 99 * * *", "minute 99 is out of range 0-59"),
        ("0 3 * * 9", "day of week 9 is out of range 0-7"),
        ("0 3 L * *", "\"L\" is not a day of month"),
    ] {
        let out = conform(bad);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr(&out);
        assert!(
            err.contains("/schedule") && err.contains(says),
            "{bad}: {err}"
        );
        assert!(!spool.exists(), "{bad}: the crontab was written");
    }
    let out = conform("30 3 * * mon-fri");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&spool).unwrap();
    assert!(
        text.contains("# ingot: nightly\n30 3 * * mon-fri /usr/bin/true"),
        "{text}"
    );
}

#[test]
fn seed_example_verbatim() {
    let (_tmp, dir) = minion_tree();
    let file = dir.join("resources/file");
    if !Path::new("/tmp/foo").exists() {
        let out = run(
            Command::new("/bin/sh").arg("-c").arg(format!(
                "echo '{{\"path\":\"/tmp/foo\"}}' | {} inspect",
                file.display()
            )),
            "",
        );
        assert!(out.status.success());
        assert_eq!(
            out.stdout,
            b"{\"kind\":\"file\",\"path\":\"/tmp/foo\",\"exists\":false}\n"
        );
    }
    // The same shape for a path that surely does not exist.
    let missing = _tmp.path().join("foo");
    let out = run(
        Command::new(&file).arg("inspect"),
        &json!({"path": missing}).to_string(),
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "{{\"kind\":\"file\",\"path\":\"{}\",\"exists\":false}}\n",
            missing.display()
        )
    );
}

#[test]
fn file_inspect_conform_inspect_through_busybox_and_ingot_resource() {
    let (tmp, dir) = minion_tree();
    let file = dir.join("resources/file");
    for (i, mode) in ["0640", "0755"].into_iter().enumerate() {
        let path = tmp.path().join(format!("f{i}"));
        let want = json!({"path": path, "content": "hi\n", "mode": mode}).to_string();
        let before = json_of(&run(Command::new(&file).arg("inspect"), &want));
        assert_eq!(
            before["changes"],
            json!({"exists": {"observed": false, "desired": true}})
        );
        // Conform through `ingot resource` (the dispatch function), inspect through busybox.
        let out = run(
            Command::new(bin())
                .args(["resource", "file", "conform", "--minion"])
                .arg(&dir),
            &want,
        );
        assert!(out.status.success());
        let after = json_of(&out);
        assert_eq!(after["kind"], "file");
        assert_eq!(after["mode"], mode);
        assert_eq!(after["changes"], json!({}));
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            u32::from_str_radix(mode, 8).unwrap()
        );
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let again = json_of(&run(Command::new(&file).arg("conform"), &want));
        assert_eq!(again["changes"], json!({}));
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            mtime,
            "a second conform changes nothing"
        );
        let seen = json_of(&run(Command::new(&file).arg("inspect"), &want));
        assert_eq!(seen["changes"], json!({}));
        assert_eq!(seen["size"], 3);
    }
}

#[test]
fn bad_input_usage_and_unknown_actions_exit_2() {
    let (tmp, dir) = minion_tree();
    let file = dir.join("resources/file");
    let target = tmp.path().join("never");
    let out = run(&mut Command::new(&file), "");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("usage: file ACTION"));
    let out = run(Command::new(&file).arg("frobnicate"), "{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown action \"frobnicate\""));
    for (input, field) in [
        ("{not json".to_string(), "not JSON"),
        (json!({"path": target, "mode": 640}).to_string(), "/mode"),
        (json!({"path": target, "owner": []}).to_string(), "/owner"),
        (json!({"path": target, "bogus": true}).to_string(), "/bogus"),
        (json!({"content": "x"}).to_string(), "/path"),
    ] {
        for cmd in [
            Command::new(&file).arg("conform"),
            Command::new(bin())
                .args(["resource", "file", "conform", "--minion"])
                .arg(&dir),
        ] {
            let out = run(cmd, &input);
            assert_eq!(out.status.code(), Some(2), "{input}");
            assert!(stderr(&out).contains(field), "{input}: {}", stderr(&out));
            assert!(!target.exists());
        }
    }
    let out = run(
        Command::new(bin())
            .args(["resource", "file", "explode", "--minion"])
            .arg(&dir),
        "{}",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown action"), "{}", stderr(&out));
    let out = run(
        Command::new(bin())
            .args(["resource", "nosuch", "inspect", "--minion"])
            .arg(&dir),
        "{}",
    );
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("ingot init minion"));
}

#[test]
fn describe_through_busybox_and_dispatch() {
    let (_tmp, dir) = minion_tree();
    let direct = json_of(&run(
        Command::new(dir.join("resources/file")).arg("describe"),
        "",
    ));
    let via = json_of(&run(
        Command::new(bin())
            .args(["resource", "file", "describe", "--minion"])
            .arg(&dir),
        "",
    ));
    assert_eq!(direct, via);
    assert_eq!(direct["kind"], "file");
    assert_eq!(direct["batch"], true);
    assert_eq!(direct["identity"], json!(["path"]));
    assert!(direct["schema"]["properties"]["mode"].is_object());
}

#[test]
fn facts_combine_builtins_and_scripts_and_report_failures() {
    let (_tmp, dir) = minion_tree();
    let facts = dir.join("facts");
    script(&facts.join("cats"), "#!/bin/sh\necho '{\"cats\": 10}'\n");
    script(&facts.join("broken"), "#!/bin/sh\necho oops >&2\nexit 3\n");
    script(&facts.join("garbled"), "#!/bin/sh\necho 'not json'\n");
    script(&facts.join("slow"), "#!/bin/sh\nexec sleep 30\n");
    script(&facts.join(".hidden"), "#!/bin/sh\necho 1\n");
    std::fs::write(facts.join("plain"), "not executable").unwrap();
    std::fs::create_dir(facts.join("subdir")).unwrap();
    let started = std::time::Instant::now();
    let out = run(
        Command::new(bin())
            .args(["facts", "--timeout", "1", "--minion"])
            .arg(&dir),
        "",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1), "a failed fact makes it exit 1");
    let doc = json_of(&out);
    assert_eq!(doc["cats"], json!({"cats": 10}));
    for name in ["os", "hostname", "network", "hardware", "users"] {
        assert!(doc[name].is_object(), "{name}");
    }
    assert!(doc["os"]["kernel"]["release"].is_string());
    assert!(doc["users"]["users"]["root"]["uid"] == 0);
    assert!(doc["hardware"]["cpus"]["count"].as_u64().unwrap() >= 1);
    for gone in ["broken", "garbled", "slow", ".hidden", "plain", "subdir"] {
        assert!(doc.get(gone).is_none(), "{gone}");
    }
    let err = stderr(&out);
    assert!(
        err.contains("fact broken failed: exited with code 3: oops"),
        "{err}"
    );
    assert!(
        err.contains("fact garbled failed: printed invalid JSON"),
        "{err}"
    );
    assert!(err.contains("fact slow failed: timed out"), "{err}");
    assert!(err.contains("not executable"), "{err}");

    // Each built-in fact is a real executable printing JSON.
    for name in ["os", "hostname", "network", "hardware", "users"] {
        let out = run(&mut Command::new(facts.join(name)), "");
        assert!(out.status.success(), "{name}");
        assert!(json_of(&out).is_object());
    }
}

#[test]
fn dispatch_api_batches_and_user_resources_without_describe() {
    let (tmp, dir) = minion_tree();
    // A user resource without describe: prints back what it got, plus its argv.
    script(
        &dir.join("resources/my-echo"),
        "#!/bin/sh\n[ \"$1\" = describe ] && exit 1\nread -r line\necho \"{\\\"action\\\": \\\"$1\\\", \\\"got\\\": $line}\"\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = minion::Minion::new(&dir);
    let sink = runner::Collect::default();
    rt.block_on(async {
        // Built-in, batch: one process, results in order, a bad element is an error in place.
        let a = tmp.path().join("a");
        let out = m
            .resource(
                "file",
                "conform",
                &json!([{"path": a, "content": "A"}, {"path": 1}, {"path": tmp.path().join("b")}]),
                &sink,
            )
            .await
            .unwrap();
        let items = out.as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0]["changes"], json!({}));
        assert!(items[1]["error"].as_str().unwrap().contains("/path"));
        assert_eq!(items[2]["exists"], true);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "A");

        // Kind is added; a wrong kind is refused before anything runs.
        let err = m
            .resource(
                "file",
                "inspect",
                &json!({"kind": "user", "path": "/x"}),
                &sink,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, minion::DispatchError::Invalid { .. }),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);

        // A user resource without describe: only "object with kind" is checked.
        let out = m
            .resource("my-echo", "inspect", &json!({"anything": 1}), &sink)
            .await
            .unwrap();
        assert_eq!(out["action"], "inspect");
        assert_eq!(out["got"], json!({"kind": "my-echo", "anything": 1}));
        let err = m
            .resource("my-echo", "inspect", &json!("a string"), &sink)
            .await
            .unwrap_err();
        assert!(
            matches!(err, minion::DispatchError::Invalid { .. }),
            "{err}"
        );
        // No batch support: one process per element.
        let out = m
            .resource("my-echo", "inspect", &json!([{"n": 1}, {"n": 2}]), &sink)
            .await
            .unwrap();
        assert_eq!(out[0]["got"]["n"], 1);
        assert_eq!(out[1]["got"]["n"], 2);
        let desc = m.describe("my-echo", &sink).await.unwrap();
        assert!(desc.doc.is_none());
        assert!(
            desc.problem
                .as_deref()
                .unwrap()
                .contains("exited with code 1"),
            "{desc:?}"
        );
    });
    // Events name the resource process.
    assert!(sink
        .messages()
        .iter()
        .any(|m| m.name.as_deref() == Some("file") && m.key == "spawn"));
}
