//! Real-system tests of the built-in `user`, `group`, `cron`, `service` and `package` resources,
//! through the `Resource` trait (`minion::builtin::resource(KIND)`). No mocks: the shadow tools,
//! Debian's `crontab`, runit (`runsvdir`, `sv`) and apt do the work, and the results are checked
//! against the system's own files and tools, not only against `inspect`.
//!
//! Tests that need root or a missing tool print a `skipped: ...` line and return. CI runs as root
//! with the packages from `.ci/apt-packages.txt` installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use minion::builtin::{resource, Resource, ResourceError};
use serde_json::{json, Value};

/// Serialises the tests that change the host's /etc/passwd and /etc/group.
static HOST_ETC: Mutex<()> = Mutex::new(());

/// A stopped, disabled service inspected against `running` + `enabled` reports both changes.
fn assert_wants_started_and_enabled(before: &Value) {
    assert_eq!(
        before["changes"]["state"],
        json!({"observed": "stopped", "desired": "running"}),
        "{before}"
    );
    assert_eq!(
        before["changes"]["enabled"],
        json!({"observed": false, "desired": true}),
        "{before}"
    );
}

fn res(kind: &str) -> &'static dyn Resource {
    resource(kind).unwrap_or_else(|| panic!("the built-in resource {kind} is not registered"))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn have(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<&str> = path.split(':').collect();
    dirs.extend(["/usr/sbin", "/usr/bin", "/sbin", "/bin"]);
    dirs.iter().any(|d| Path::new(d).join(program).is_file())
}

/// Prints why a test is skipped; the caller returns.
fn skip(test: &str, why: &str) {
    println!("skipped: {test}: {why}");
}

/// Whether the result has a non-empty `changes` object.
fn has_changes(v: &Value) -> bool {
    v.get("changes")
        .and_then(Value::as_object)
        .is_some_and(|c| !c.is_empty())
}

fn assert_no_changes(what: &str, v: &Value) {
    assert!(!has_changes(v), "{what}: expected no changes, got {v:#}");
}

/// A name unique to this test run (short: user names are limited to 32 characters).
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", std::process::id() % 100_000)
}

fn sh(program: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// Input validation (no privileges needed)
// ---------------------------------------------------------------------------------------------

#[test]
fn all_five_are_registered_with_valid_schemas() {
    for kind in ["user", "group", "cron", "service", "package"] {
        let r = res(kind);
        assert_eq!(r.kind(), kind);
        assert_eq!(r.identity(), &["name"]);
        let schema = r.schema();
        let validator = jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{kind}: schema does not compile: {e}"));
        assert!(
            validator.is_valid(&json!({"name": "x"})),
            "{kind}: identity only must be valid"
        );
        assert!(
            !validator.is_valid(&json!({"name": "x", "bogus": 1})),
            "{kind}: unknown fields must be rejected"
        );
        assert!(
            !validator.is_valid(&json!({})),
            "{kind}: the name is required"
        );
    }
    assert!(res("service")
        .actions()
        .iter()
        .any(|(a, _)| *a == "restart"));
}

#[test]
fn bad_input_is_an_input_error_naming_the_field() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("user", json!({"name": "-rf"}), "/name"),
        ("user", json!({"name": "a", "bogus": true}), "/bogus"),
        ("user", json!({"name": "a", "comment": "x:y"}), "/comment"),
        ("user", json!({"name": "a", "home": "relative"}), "/home"),
        (
            "group",
            json!({"name": "a", "members": ["ok", "no,pe"]}),
            "/members/1",
        ),
        (
            "cron",
            json!({"name": "a", "user": "root", "schedule": "every day"}),
            "/schedule",
        ),
        (
            "cron",
            json!({"name": "a", "user": "root", "command": "a\nb"}),
            "/command",
        ),
        (
            "package",
            json!({"name": "hello", "state": "latest", "version": "1"}),
            "/version",
        ),
        ("package", json!({"name": "--force"}), "/name"),
        (
            "service",
            json!({"name": "x", "backend": "runit", "state": "running", "enabled": false}),
            "/enabled",
        ),
    ];
    for (kind, state, pointer) in cases {
        match res(kind).inspect(&state) {
            Err(ResourceError::Input {
                pointer: p,
                message,
            }) => {
                assert_eq!(p, pointer, "{kind} {state}: {message}");
                assert!(!message.is_empty());
            }
            other => panic!("{kind} {state}: expected an input error at {pointer}, got {other:?}"),
        }
    }
    match res("user").inspect(&json!(["not", "an", "object"])) {
        Err(e @ ResourceError::Input { .. }) => assert_eq!(e.exit_code(), 2),
        other => panic!("expected an input error, got {other:?}"),
    }
    match res("service").action("explode", &json!({"name": "x"})) {
        Err(ResourceError::UnknownAction { known, .. }) => assert!(known.contains("reload")),
        other => panic!("expected an unknown action, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// user and group in an alternate root
// ---------------------------------------------------------------------------------------------

fn minimal_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/bash\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nusers:x:100:\n").unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\nusers:*::\n").unwrap();
    dir
}

fn line_of(file: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

const HASH1: &str = "$6$ingotsalt$Jq0yT3b7yqR1m3Q0mUeO8vC5yYzj6o3Lr3y9V2l8m6QkG0h9v6a1YxS0u0cX8e3eQkD2b1xJm6b8u4n2c0a7Z.";
const HASH2: &str = "$6$othersalt$9pQ2fK1x7cYzVb5nM3lT0hR8wE6uI4oA2sD1gF9jH7kL5zX3cV1bN0mQ8wE6rT4yU2iO0pA9sD7fG5hJ3kL1z/";

#[test]
fn user_and_group_in_an_alternate_root() {
    let t = "user_and_group_in_an_alternate_root";
    if !is_root() {
        return skip(t, "the shadow tools need root, even with --prefix");
    }
    if !have("useradd") || !have("groupadd") {
        return skip(t, "useradd/groupadd are not installed (Debian: passwd)");
    }
    let dir = minimal_root();
    let root = dir.path().display().to_string();
    let etc = dir.path().join("etc");
    let (user, group) = (res("user"), res("group"));

    // Groups first: devs with a fixed gid, ops with any.
    let devs = json!({"name": "devs", "gid": 2345, "root": root});
    let before = group.inspect(&devs).unwrap();
    assert_eq!(before["exists"], json!(false), "{before}");
    assert_eq!(
        before["changes"]["state"],
        json!({"observed": "absent", "desired": "present"})
    );
    let after = group.conform(&devs).unwrap();
    assert_eq!(after["exists"], json!(true), "{after}");
    assert_eq!(after["gid"], json!(2345));
    assert_no_changes("group conform", &after);
    assert_eq!(
        line_of(&etc.join("group"), "devs").as_deref(),
        Some("devs:x:2345:")
    );
    assert_no_changes("second group conform", &group.conform(&devs).unwrap());
    group
        .conform(&json!({"name": "ops", "root": root, "system": true}))
        .unwrap();
    assert!(line_of(&etc.join("group"), "ops").is_some());

    // A user with every field.
    let alice = json!({
        "name": "alice", "root": root, "uid": 2346, "group": "devs", "groups": ["ops"],
        "home": "/home/alice", "shell": "/bin/sh", "comment": "Alice A", "password": HASH1,
        "create_home": false,
    });
    let before = user.inspect(&alice).unwrap();
    assert_eq!(before["exists"], json!(false));
    assert!(has_changes(&before));
    let after = user.conform(&alice).unwrap();
    assert_eq!(after["exists"], json!(true), "{after}");
    assert_eq!(after["uid"], json!(2346));
    assert_eq!(after["gid"], json!(2345));
    assert_eq!(after["group"], json!("devs"));
    assert_eq!(after["groups"], json!(["ops"]));
    assert_eq!(after["home"], json!("/home/alice"));
    assert_eq!(after["shell"], json!("/bin/sh"));
    assert_eq!(after["comment"], json!("Alice A"));
    assert_eq!(after["password"], json!("***"));
    assert_eq!(after["sensitive"], json!(["password"]));
    assert_no_changes("user conform", &after);
    assert!(
        !after.to_string().contains("ingotsalt"),
        "the hash leaked: {after}"
    );
    // The files themselves, not only inspect.
    assert_eq!(
        line_of(&etc.join("passwd"), "alice").as_deref(),
        Some("alice:x:2346:2345:Alice A:/home/alice:/bin/sh")
    );
    assert!(line_of(&etc.join("shadow"), "alice")
        .unwrap()
        .starts_with(&format!("alice:{HASH1}:")));
    assert!(line_of(&etc.join("group"), "ops")
        .unwrap()
        .ends_with(":alice"));
    assert!(
        !dir.path().join("home/alice").exists(),
        "create_home false made a home"
    );
    let again = user.conform(&alice).unwrap();
    assert_no_changes("second user conform", &again);
    assert_no_changes("inspect after conform", &user.inspect(&alice).unwrap());

    // Changes: shell, groups emptied, another password (masked in changes).
    let changed = json!({"name": "alice", "root": root, "shell": "/bin/bash", "groups": [], "password": HASH2});
    let diff = user.inspect(&changed).unwrap();
    assert_eq!(
        diff["changes"]["shell"],
        json!({"observed": "/bin/sh", "desired": "/bin/bash"})
    );
    assert_eq!(
        diff["changes"]["groups"],
        json!({"observed": ["ops"], "desired": []})
    );
    assert_eq!(
        diff["changes"]["password"],
        json!({"observed": "***", "desired": "***"})
    );
    assert!(!diff.to_string().contains("salt$"), "a hash leaked: {diff}");
    let after = user.conform(&changed).unwrap();
    assert_no_changes("user change", &after);
    assert_eq!(after["groups"], json!([]));
    assert!(line_of(&etc.join("shadow"), "alice")
        .unwrap()
        .starts_with(&format!("alice:{HASH2}:")));
    assert!(
        line_of(&etc.join("group"), "ops").unwrap().ends_with(':'),
        "alice is still in ops"
    );

    // Group membership from the group side.
    let members = json!({"name": "devs", "root": root, "members": ["alice"]});
    assert_eq!(
        group.inspect(&members).unwrap()["changes"]["members"],
        json!({"observed": [], "desired": ["alice"]})
    );
    let after = group.conform(&members).unwrap();
    assert_eq!(after["members"], json!(["alice"]));
    assert_no_changes("group members", &after);
    assert_eq!(
        line_of(&etc.join("group"), "devs").as_deref(),
        Some("devs:x:2345:alice")
    );
    let after = group
        .conform(&json!({"name": "devs", "root": root, "members": []}))
        .unwrap();
    assert_eq!(after["members"], json!([]));

    // A group password is masked too.
    let gp = json!({"name": "ops", "root": root, "password": HASH1});
    let after = group.conform(&gp).unwrap();
    assert_eq!(after["password"], json!("***"));
    assert_eq!(
        after["changes"],
        json!({}),
        "a password-bearing state says explicitly: no changes"
    );
    assert!(!after.to_string().contains("ingotsalt"));
    assert!(line_of(&etc.join("gshadow"), "ops")
        .unwrap()
        .starts_with(&format!("ops:{HASH1}:")));

    // A missing supplementary group: a clear failure naming the tool and what to check.
    match user.conform(&json!({"name": "bob", "root": root, "groups": ["nope"]})) {
        Err(ResourceError::Failed(msg)) => {
            assert!(
                msg.contains("useradd") && msg.contains("nope") && msg.contains("group resource"),
                "{msg}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(line_of(&etc.join("passwd"), "bob").is_none());

    // Removal, idempotently; devs can go once alice (whose primary group it is) is gone.
    let gone = json!({"name": "alice", "root": root, "state": "absent"});
    assert!(has_changes(&user.inspect(&gone).unwrap()));
    let after = user.conform(&gone).unwrap();
    assert_eq!(after["exists"], json!(false));
    assert_no_changes("user removal", &after);
    assert_no_changes("second user removal", &user.conform(&gone).unwrap());
    assert!(line_of(&etc.join("passwd"), "alice").is_none());
    for g in ["devs", "ops"] {
        let gone = json!({"name": g, "root": root, "state": "absent"});
        assert_no_changes("group removal", &group.conform(&gone).unwrap());
        assert_no_changes("second group removal", &group.conform(&gone).unwrap());
        assert!(line_of(&etc.join("group"), g).is_none());
    }
    // The host was not touched.
    let host = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !host.contains("Alice A"),
        "the host's /etc/passwd was changed"
    );
}

// ---------------------------------------------------------------------------------------------
// user and group on the host
// ---------------------------------------------------------------------------------------------

/// Removes a throwaway user and group from the host, whatever happens in the test.
struct HostCleanup {
    users: Vec<String>,
    groups: Vec<String>,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = Command::new("userdel").arg(u).output();
        }
        for g in &self.groups {
            let _ = Command::new("groupdel").arg(g).output();
        }
    }
}

#[test]
fn user_and_group_on_the_host() {
    let t = "user_and_group_on_the_host";
    if !is_root() {
        return skip(t, "managing host accounts needs root");
    }
    if !have("useradd") || !have("getent") {
        return skip(t, "useradd/getent are not installed");
    }
    let _lock = HOST_ETC.lock().unwrap_or_else(|e| e.into_inner());
    let (uname, gname) = (unique("ingotu"), unique("ingotg"));
    let _cleanup = HostCleanup {
        users: vec![uname.clone()],
        groups: vec![gname.clone()],
    };
    let home = tempfile::tempdir().unwrap();
    let home_dir = home.path().join("h").display().to_string();
    let (user, group) = (res("user"), res("group"));

    let g = json!({"name": gname});
    assert_eq!(group.inspect(&g).unwrap()["exists"], json!(false));
    let after = group.conform(&g).unwrap();
    assert_eq!(after["exists"], json!(true));
    let gid = after["gid"].as_u64().unwrap();
    let (ok, out, _) = sh("getent", &["group", &gname]);
    assert!(ok && out.starts_with(&format!("{gname}:x:{gid}:")), "{out}");
    assert_no_changes("second host group conform", &group.conform(&g).unwrap());

    let u = json!({
        "name": uname, "group": gname, "groups": [gname], "home": home_dir, "shell": "/bin/false",
        "comment": "ingot test", "create_home": true, "password": HASH1,
    });
    let after = user.conform(&u).unwrap();
    assert_no_changes("host user conform", &after);
    assert_eq!(after["gid"].as_u64(), Some(gid));
    assert_eq!(after["password"], json!("***"));
    let (ok, out, _) = sh("getent", &["passwd", &uname]);
    assert!(ok, "getent does not know {uname}");
    let fields: Vec<&str> = out.trim().split(':').collect();
    assert_eq!(fields[3], gid.to_string());
    assert_eq!(
        &fields[4..],
        &["ingot test", home_dir.as_str(), "/bin/false"]
    );
    assert!(
        Path::new(&home_dir).is_dir(),
        "create_home did not create {home_dir}"
    );
    let (ok, out, _) = sh("getent", &["shadow", &uname]);
    assert!(
        ok && out.starts_with(&format!("{uname}:{HASH1}:")),
        "chpasswd -e did not set the hash"
    );
    let (_, out, _) = sh("id", &["-nG", &uname]);
    assert!(out.split_whitespace().any(|g| g == gname), "{out}");
    assert_no_changes("second host user conform", &user.conform(&u).unwrap());

    let changed = json!({"name": uname, "comment": "changed", "password": HASH2});
    let after = user.conform(&changed).unwrap();
    assert_eq!(after["comment"], json!("changed"));
    assert_no_changes("host user change", &after);
    let (_, out, _) = sh("getent", &["shadow", &uname]);
    assert!(out.starts_with(&format!("{uname}:{HASH2}:")));

    let gone = json!({"name": uname, "state": "absent", "remove_home": true});
    assert_eq!(user.conform(&gone).unwrap()["exists"], json!(false));
    assert_no_changes("second host user removal", &user.conform(&gone).unwrap());
    assert!(!sh("getent", &["passwd", &uname]).0);
    assert!(
        !Path::new(&home_dir).exists(),
        "remove_home left {home_dir}"
    );
    let gone = json!({"name": gname, "state": "absent"});
    assert_eq!(group.conform(&gone).unwrap()["exists"], json!(false));
    assert!(!sh("getent", &["group", &gname]).0);
}

// ---------------------------------------------------------------------------------------------
// cron
// ---------------------------------------------------------------------------------------------

fn crontab_of(user: &str) -> String {
    let (ok, out, err) = sh("crontab", &["-l", "-u", user]);
    if ok {
        out
    } else {
        assert!(err.contains("no crontab"), "crontab -l failed: {err}");
        String::new()
    }
}

#[test]
fn cron_entries_in_a_users_crontab() {
    let t = "cron_entries_in_a_users_crontab";
    if !is_root() {
        return skip(t, "a throwaway user's crontab needs root");
    }
    if !have("crontab") || !have("useradd") {
        return skip(t, "crontab is not installed (Debian: apt-get install cron)");
    }
    let _lock = HOST_ETC.lock().unwrap_or_else(|e| e.into_inner());
    let uname = unique("ingotc");
    let _cleanup = HostCleanup {
        users: vec![uname.clone()],
        groups: vec![],
    };
    struct CrontabCleanup(String);
    impl Drop for CrontabCleanup {
        fn drop(&mut self) {
            let _ = Command::new("crontab").args(["-r", "-u", &self.0]).output();
        }
    }
    let (ok, _, err) = sh("useradd", &["-M", "-s", "/bin/false", &uname]);
    assert!(ok, "useradd {uname}: {err}");
    let _crontab = CrontabCleanup(uname.clone());

    // Someone else's lines, which must survive untouched and in order.
    let foreign =
        "MAILTO=\"\"\n# kept: a comment ingot does not own\n0 1 * * * /bin/true foreign\n";
    let mut child = Command::new("crontab")
        .args(["-u", &uname, "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(foreign.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());

    let cron = res("cron");
    let entry = json!({"name": "backup", "user": uname, "schedule": "*/5  * * * *", "command": "/bin/echo hi > /dev/null"});
    let before = cron.inspect(&entry).unwrap();
    assert_eq!(before["exists"], json!(false));
    assert!(has_changes(&before));
    let after = cron.conform(&entry).unwrap();
    assert_eq!(after["exists"], json!(true), "{after}");
    assert_eq!(after["schedule"], json!("*/5 * * * *"));
    assert_eq!(after["command"], json!("/bin/echo hi > /dev/null"));
    assert_no_changes("cron conform", &after);
    let text = crontab_of(&uname);
    assert!(text.starts_with(foreign), "foreign lines changed:\n{text}");
    assert!(
        text.contains("# ingot: backup\n*/5 * * * * /bin/echo hi > /dev/null\n"),
        "{text}"
    );
    assert_no_changes("second cron conform", &cron.conform(&entry).unwrap());
    assert_eq!(
        crontab_of(&uname),
        text,
        "an idempotent conform rewrote the crontab"
    );

    // A second entry, then a change of the first in place.
    let other =
        json!({"name": "report", "user": uname, "schedule": "@daily", "command": "/bin/true"});
    cron.conform(&other).unwrap();
    let moved = json!({"name": "backup", "user": uname, "schedule": "30 2 * * 1-5", "command": "/bin/echo hi > /dev/null"});
    assert_eq!(
        cron.inspect(&moved).unwrap()["changes"]["schedule"],
        json!({"observed": "*/5 * * * *", "desired": "30 2 * * 1-5"})
    );
    assert_no_changes("cron change", &cron.conform(&moved).unwrap());
    let text = crontab_of(&uname);
    assert_eq!(
        text,
        format!("{foreign}# ingot: backup\n30 2 * * 1-5 /bin/echo hi > /dev/null\n# ingot: report\n@daily /bin/true\n")
    );

    // Removal leaves the rest alone.
    let gone = json!({"name": "backup", "user": uname, "state": "absent"});
    let after = cron.conform(&gone).unwrap();
    assert_eq!(after["exists"], json!(false));
    assert_no_changes("cron removal", &after);
    assert_no_changes("second cron removal", &cron.conform(&gone).unwrap());
    assert_eq!(
        crontab_of(&uname),
        format!("{foreign}# ingot: report\n@daily /bin/true\n")
    );
    cron.conform(&json!({"name": "report", "user": uname, "state": "absent"}))
        .unwrap();
    assert_eq!(crontab_of(&uname), foreign);

    // Conform of a present entry needs schedule and command.
    assert!(matches!(
        cron.conform(&json!({"name": "x", "user": uname})),
        Err(ResourceError::Input { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// service under runit
// ---------------------------------------------------------------------------------------------

/// A private runsvdir on a temp dir, stopped (with its services) when dropped.
struct Runsvdir {
    child: Child,
    service_dir: PathBuf,
}

impl Drop for Runsvdir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.service_dir) {
            for e in entries.flatten() {
                let p = e.path().display().to_string();
                let _ = Command::new("sv")
                    .args(["-w", "5", "force-stop", &p])
                    .output();
                let _ = Command::new("sv").args(["exit", &p]).output();
                // Let runsvdir reap its runsv before it goes (else init inherits a zombie).
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && runsv_alive(&e.path()) {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        // HUP: runsvdir sends TERM to every runsv and exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a runsv supervises this service directory: its `supervise/ok` FIFO has a reader.
fn runsv_alive(service: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(service.join("supervise/ok"))
        .is_ok()
}

fn pid_alive(pid: u64) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

#[test]
fn service_under_runit() {
    let t = "service_under_runit";
    if !have("runsvdir") || !have("sv") {
        return skip(t, "runit is not installed (Debian: apt-get install runit)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (sv_dir, service_dir) = (dir.path().join("sv"), dir.path().join("service"));
    let name = "ingot-sleeper";
    let def = sv_dir.join(name);
    std::fs::create_dir_all(&def).unwrap();
    std::fs::create_dir_all(&service_dir).unwrap();
    let run = def.join("run");
    std::fs::write(&run, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let child = Command::new("runsvdir")
        .arg(&service_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _runsvdir = Runsvdir {
        child,
        service_dir: service_dir.clone(),
    };
    let svc = res("service");
    let base = json!({
        "name": name,
        "sv_dir": sv_dir.display().to_string(),
        "service_dir": service_dir.display().to_string(),
    });
    let with = |extra: Value| {
        let mut s = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };

    // Chosen automatically (systemd is not PID 1 here; the runit definition exists).
    if !Path::new("/run/systemd/system").exists() {
        assert_eq!(svc.inspect(&base).unwrap()["backend"], json!("runit"));
    }

    let want = with(json!({"backend": "runit", "state": "running", "enabled": true}));
    let before = svc.inspect(&want).unwrap();
    assert_eq!(before["exists"], json!(true), "{before}");
    assert_eq!(before["enabled"], json!(false));
    assert_eq!(before["state"], json!("stopped"));
    assert_wants_started_and_enabled(&before);

    let after = svc.conform(&want).unwrap();
    assert_no_changes("service conform", &after);
    assert_eq!(after["state"], json!("running"), "{after}");
    let pid = after["pid"].as_u64().expect("a running service has a pid");
    assert!(pid_alive(pid), "pid {pid} is not alive");
    assert!(service_dir
        .join(name)
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    let (_, out, _) = sh(
        "sv",
        &["status", &service_dir.join(name).display().to_string()],
    );
    assert!(out.starts_with("run:"), "sv status says: {out}");
    let again = svc.conform(&want).unwrap();
    assert_no_changes("second service conform", &again);
    assert_eq!(
        again["pid"].as_u64(),
        Some(pid),
        "an idempotent conform restarted the service"
    );

    // restart: a new process.
    let after = svc.action("restart", &base).unwrap();
    let pid2 = after["pid"].as_u64().expect("running after restart");
    assert_ne!(pid2, pid, "restart kept the old process");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!pid_alive(pid), "the old process survived a restart");

    // reload (sv hup) keeps it running: sleep dies on HUP, runsv restarts it.
    let after = svc.action("reload", &base).unwrap();
    assert_eq!(after["enabled"], json!(true));

    // stop, then the desired state running shows a change again; conform stopped is a no-op.
    let after = svc.action("stop", &base).unwrap();
    assert_eq!(after["state"], json!("stopped"), "{after}");
    assert!(after.get("pid").is_none());
    assert!(has_changes(&svc.inspect(&want).unwrap()));
    let stopped = with(json!({"state": "stopped"}));
    assert_no_changes("conform stopped", &svc.conform(&stopped).unwrap());
    let after = svc.action("start", &base).unwrap();
    assert_eq!(after["state"], json!("running"));
    let pid3 = after["pid"].as_u64().unwrap();

    // Disabled and stopped: the link goes, the process ends.
    let off = with(json!({"state": "stopped", "enabled": false}));
    let after = svc.conform(&off).unwrap();
    assert_no_changes("disable", &after);
    assert_eq!(after["enabled"], json!(false));
    assert!(
        service_dir.join(name).symlink_metadata().is_err(),
        "the link is still there"
    );
    assert!(
        !pid_alive(pid3),
        "the service still runs after stop + disable"
    );
    assert_no_changes("second disable", &svc.conform(&off).unwrap());

    // A service without a definition: a clear failure.
    let missing = json!({
        "name": "ingot-nothing", "backend": "runit", "state": "running", "enabled": true,
        "sv_dir": sv_dir.display().to_string(), "service_dir": service_dir.display().to_string(),
    });
    match svc.conform(&missing) {
        Err(ResourceError::Failed(msg)) => assert!(msg.contains("no runit definition"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn service_systemd_backend_refused_when_not_pid1() {
    if Path::new("/run/systemd/system").exists() {
        return skip(
            "service_systemd_backend_refused_when_not_pid1",
            "systemd is PID 1 here",
        );
    }
    match res("service").inspect(&json!({"name": "ssh", "backend": "systemd"})) {
        Err(ResourceError::Failed(msg)) => {
            assert!(msg.contains("not PID 1") && msg.contains("runit"), "{msg}")
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// package with apt
// ---------------------------------------------------------------------------------------------

fn dpkg_version(name: &str) -> Option<String> {
    let (ok, out, _) = sh(
        "dpkg-query",
        &["-W", "-f", "${db:Status-Abbrev}|${Version}", name],
    );
    (ok && out.starts_with("ii")).then(|| out.split('|').nth(1).unwrap_or_default().to_string())
}

#[test]
fn package_with_apt() {
    let t = "package_with_apt";
    if !is_root() {
        return skip(t, "apt-get needs root");
    }
    if !have("apt-get") || !have("dpkg-query") {
        return skip(t, "not a Debian system (no apt-get/dpkg-query)");
    }
    let pkg_name = "hello";
    let (_, policy, _) = sh("apt-cache", &["policy", pkg_name]);
    if !policy.contains("Candidate:") || policy.contains("Candidate: (none)") {
        return skip(
            t,
            "the package lists do not know `hello`; run apt-get update",
        );
    }
    let initially = dpkg_version(pkg_name);
    struct Restore(Option<String>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let installed = dpkg_version("hello").is_some();
            let args: &[&str] = match (&self.0, installed) {
                (Some(_), false) => &["install", "-y", "-q", "hello"],
                (None, true) => &["remove", "-y", "-q", "hello"],
                _ => return,
            };
            let _ = Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .output();
        }
    }
    let _restore = Restore(initially.clone());
    let pkg = res("package");

    let absent = json!({"name": pkg_name, "state": "absent"});
    let after = pkg.conform(&absent).unwrap();
    assert_eq!(after["exists"], json!(false), "{after}");
    assert_no_changes("package absent", &after);
    assert_eq!(dpkg_version(pkg_name), None);

    let present = json!({"name": pkg_name});
    let before = pkg.inspect(&present).unwrap();
    assert_eq!(before["backend"], json!("apt"));
    assert_eq!(
        before["changes"]["state"],
        json!({"observed": "absent", "desired": "present"})
    );
    let after = pkg.conform(&present).unwrap();
    assert_no_changes("package install", &after);
    assert_eq!(after["state"], json!("present"));
    let version = dpkg_version(pkg_name).expect("dpkg does not list hello as installed");
    assert_eq!(after["version"], json!(version));
    assert_no_changes("second package conform", &pkg.conform(&present).unwrap());

    // latest: the installed version is the candidate.
    let latest = json!({"name": pkg_name, "state": "latest"});
    let after = pkg.conform(&latest).unwrap();
    assert_no_changes("package latest", &after);
    assert_eq!(after["state"], json!("latest"));
    assert_eq!(after["candidate"], json!(version));

    // An exact version: the installed one is no change, another one is.
    assert_no_changes(
        "version pin",
        &pkg.inspect(&json!({"name": pkg_name, "version": version}))
            .unwrap(),
    );
    let other = pkg
        .inspect(&json!({"name": pkg_name, "version": "0.0-0"}))
        .unwrap();
    assert_eq!(
        other["changes"]["version"],
        json!({"observed": version, "desired": "0.0-0"})
    );
    match pkg.conform(&json!({"name": pkg_name, "version": "0.0-0"})) {
        Err(ResourceError::Failed(msg)) => {
            assert!(msg.contains("apt-get") && msg.contains("0.0-0"), "{msg}")
        }
        other => panic!("expected a failure for a version that does not exist, got {other:?}"),
    }

    let after = pkg.conform(&absent).unwrap();
    assert_eq!(after["exists"], json!(false));
    assert_no_changes("package removal", &after);
    assert_no_changes("second package removal", &pkg.conform(&absent).unwrap());
    assert_eq!(dpkg_version(pkg_name), None);

    // An unknown package: a clear failure that says what to try.
    match pkg.conform(&json!({"name": "ingot-no-such-package-xyz"})) {
        Err(ResourceError::Failed(msg)) => assert!(msg.contains("update_cache"), "{msg}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// service under sysvinit (a throwaway init script)
// ---------------------------------------------------------------------------------------------

#[test]
fn service_under_sysvinit() {
    let t = "service_under_sysvinit";
    if !is_root() {
        return skip(t, "init scripts and rc links need root");
    }
    if !have("service") || !have("update-rc.d") {
        return skip(
            t,
            "service/update-rc.d are not installed (Debian: init-system-helpers)",
        );
    }
    let name = unique("ingot-sysv-");
    let script = PathBuf::from("/etc/init.d").join(&name);
    let pidfile = format!("/run/{name}.pid");
    struct Cleanup(String, PathBuf, String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = Command::new(&self.1).arg("stop").output();
            let _ = Command::new("update-rc.d")
                .args(["-f", &self.0, "remove"])
                .output();
            let _ = std::fs::remove_file(&self.1);
            let _ = std::fs::remove_file(&self.2);
        }
    }
    let _cleanup = Cleanup(name.clone(), script.clone(), pidfile.clone());
    let text = format!(
        r#"#!/bin/sh
### BEGIN INIT INFO
# Provides:          {name}
# Required-Start:
# Required-Stop:
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: ingot test service
### END INIT INFO
PIDFILE={pidfile}
running() {{ [ -f $PIDFILE ] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; }}
case "$1" in
  start) running || {{ setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > $PIDFILE; }} ;;
  stop) running && kill "$(cat $PIDFILE)"; rm -f $PIDFILE ;;
  restart|reload|force-reload) "$0" stop; "$0" start ;;
  status) running || exit 3 ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
exit 0
"#
    );
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let svc = res("service");
    // Chosen automatically: no runit definition, but an init script (and systemd is not PID 1).
    let auto =
        json!({"name": name, "sv_dir": "/nonexistent-sv", "service_dir": "/nonexistent-service"});
    if !Path::new("/run/systemd/system").exists() {
        assert_eq!(svc.inspect(&auto).unwrap()["backend"], json!("sysvinit"));
    }
    let want = json!({"name": name, "backend": "sysvinit", "state": "running", "enabled": true});
    let before = svc.inspect(&want).unwrap();
    assert_eq!(before["exists"], json!(true));
    assert_wants_started_and_enabled(&before);
    let after = svc.conform(&want).unwrap();
    assert_no_changes("sysvinit conform", &after);
    let pid: u64 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    let has_start_link = std::fs::read_dir("/etc/rc2.d").unwrap().flatten().any(|e| {
        e.file_name().to_string_lossy().ends_with(name.as_str())
            && e.file_name().to_string_lossy().starts_with('S')
    });
    assert!(
        has_start_link,
        "update-rc.d made no start link in /etc/rc2.d"
    );
    assert_no_changes("second sysvinit conform", &svc.conform(&want).unwrap());
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        pid.to_string(),
        "restarted"
    );

    let after = svc
        .action("restart", &json!({"name": name, "backend": "sysvinit"}))
        .unwrap();
    assert_eq!(after["state"], json!("running"));
    assert!(
        !pid_alive(pid) || std::fs::read_to_string(&pidfile).unwrap().trim() != pid.to_string()
    );

    let off = json!({"name": name, "backend": "sysvinit", "state": "stopped", "enabled": false});
    let after = svc.conform(&off).unwrap();
    assert_no_changes("sysvinit stop + disable", &after);
    assert!(!Path::new(&pidfile).exists());
    assert_no_changes(
        "second sysvinit stop + disable",
        &svc.conform(&off).unwrap(),
    );
}
