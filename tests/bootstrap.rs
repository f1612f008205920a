//! `ingot bootstrap` against real sshd instances on loopback ports (root only; skipped
//! otherwise): RUN/ADD/GET on three hosts, masters before minions, and the reports of a wrong
//! host key, an unreachable host and a failing RUN while the other hosts carry on.

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{ingot, output};

const SSHD: &str = "/usr/sbin/sshd";

/// Why these tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        return Some("not root (sshd needs root to log in as root)".into());
    }
    if !Path::new(SSHD).exists() {
        return Some(format!(
            "{SSHD} is missing (apt-get install openssh-server)"
        ));
    }
    for tool in ["ssh", "scp", "ssh-keygen"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "{tool} is missing (apt-get install openssh-client)"
            ));
        }
    }
    None
}

macro_rules! require_sshd {
    () => {
        if let Some(why) = unavailable() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ingot-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "ssh-keygen failed");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sshd on 127.0.0.1, killed on drop.
struct Sshd {
    port: u16,
    host_pub: String,
    child: Child,
}

impl Sshd {
    fn start(dir: &Path, n: usize) -> Sshd {
        std::fs::create_dir_all("/run/sshd").unwrap();
        let key = dir.join(format!("host_{n}"));
        keygen(&key);
        let host_pub = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let port = free_port();
        let cfg = dir.join(format!("sshd_{n}.conf"));
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\nMaxStartups 100\nMaxSessions 100\n",
                key.display(),
                dir.join("authorized_keys").display(),
                dir.join(format!("sshd_{n}.pid")).display(),
            ),
        )
        .unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("sshd_{n}.log"))).unwrap())
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd {
            port,
            host_pub,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = sshd.child.try_wait() {
                let log = std::fs::read_to_string(dir.join(format!("sshd_{n}.log")));
                panic!("sshd exited with {st}: {log:?}");
            }
            assert!(Instant::now() < deadline, "sshd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}\n", self.port, self.host_pub)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temp dir with a user key, N sshds and a known_hosts file for them.
struct Lab {
    dir: tempfile::TempDir,
    sshds: Vec<Sshd>,
}

impl Lab {
    fn start(n: usize) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        keygen(&dir.path().join("id"));
        std::fs::copy(
            dir.path().join("id.pub"),
            dir.path().join("authorized_keys"),
        )
        .unwrap();
        let sshds: Vec<Sshd> = (0..n).map(|i| Sshd::start(dir.path(), i)).collect();
        let known: String = sshds.iter().map(Sshd::known_hosts_line).collect();
        std::fs::write(dir.path().join("known_hosts"), known).unwrap();
        Lab { dir, sshds }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn port(&self, i: usize) -> u16 {
        self.sshds[i].port
    }

    fn bootstrap(&self, catalogs: &[&str], extra: &[&str]) -> (i32, String, String) {
        let mut cmd = ingot(self.path());
        cmd.arg("bootstrap");
        for c in catalogs {
            cmd.args(["--catalog", c]);
        }
        cmd.arg("--key-file")
            .arg(self.p("id"))
            .arg("--known-hosts")
            .arg(self.p("known_hosts"))
            .args(["--connect-timeout", "5"])
            .args(extra);
        let out = output(&mut cmd);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn row<'a>(table: &'a str, host: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .unwrap_or_else(|| panic!("no row for {host} in:\n{table}"))
}

#[test]
fn three_hosts_run_add_get_masters_first() {
    require_sshd!();
    let lab = Lab::start(3);
    let d = lab.path().display().to_string();
    std::fs::write(lab.p("payload.txt"), "payload bytes\n").unwrap();
    // An inventory in Directord's spelling, the jobs in ingot's: merged in order.
    std::fs::write(
        lab.p("inventory.yaml"),
        format!(
            "directord_server:\n  targets:\n  - {{host: 127.0.0.1, port: {p0}, name: boss}}\n\
             ingot_minions:\n  args:\n    username: root\n  targets:\n\
             \x20 - {{host: 127.0.0.1, port: {p0}, name: h1}}\n\
             \x20 - {{host: 127.0.0.1, port: {p1}, name: h2}}\n\
             \x20 - {{host: 127.0.0.1, port: {p2}, name: h3}}\n",
            p0 = lab.port(0),
            p1 = lab.port(1),
            p2 = lab.port(2)
        ),
    )
    .unwrap();
    std::fs::write(
        lab.p("jobs.yaml"),
        format!(
            r#"greeting: hello
ingot_master:
  jobs:
  - RUN: mkdir -p {d}/remote && echo "{{{{ directord_bootstrap.name }}}}" > {d}/remote/master-done
ingot_minions:
  jobs:
  - RUN: test -f {d}/remote/master-done
  - - RUN: mkdir -p {d}/remote/{{{{ ingot_bootstrap.name }}}} && echo "{{{{ greeting }}}} from {{{{ ingot_bootstrap.name }}}} port {{{{ ingot_bootstrap.port }}}} master {{{{ ingot_master.targets[0].name }}}}" > {d}/remote/{{{{ ingot_bootstrap.name }}}}/greeting
    - ADD: payload.txt "{d}/remote/{{{{ ingot_bootstrap.name }}}}/payload copy.txt"
  - GET: {d}/remote/{{{{ ingot_bootstrap.name }}}}/greeting got/{{{{ ingot_bootstrap.name }}}}.txt
"#
        ),
    )
    .unwrap();
    let (code, table, err) = lab.bootstrap(&["inventory.yaml", "jobs.yaml"], &["--threads", "2"]);
    assert_eq!(code, 0, "{table}\n{err}");
    for h in ["boss", "h1", "h2", "h3"] {
        assert!(row(&table, h).contains(" ok "), "{table}");
    }
    assert!(table.contains("4 of 4 hosts succeeded"), "{table}");
    assert_eq!(
        std::fs::read_to_string(lab.p("remote/master-done")).unwrap(),
        "boss\n"
    );
    for (i, h) in ["h1", "h2", "h3"].iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(lab.p(&format!("remote/{h}/payload copy.txt"))).unwrap(),
            "payload bytes\n"
        );
        assert_eq!(
            std::fs::read_to_string(lab.p(&format!("got/{h}.txt"))).unwrap(),
            format!("hello from {h} port {} master boss\n", lab.port(i))
        );
        assert!(
            err.contains(&format!("[{h}] 4/4 GET")),
            "progress lines: {err}"
        );
    }
    // The master finished before any minion started.
    let boss_done = err.find("[boss] done").expect("boss finished");
    let first_minion = err.find("[h1] connecting").expect("h1 started");
    assert!(boss_done < first_minion, "{err}");

    // --accept-new-host-keys learns a new host's key into the known_hosts file.
    std::fs::write(lab.p("known_hosts"), "").unwrap();
    std::fs::write(
        lab.p("one.yaml"),
        format!(
            "ingot_minions:\n  targets: [{{host: 127.0.0.1, port: {}, name: fresh}}]\n  jobs: [{{RUN: 'true'}}]\n",
            lab.port(1)
        ),
    )
    .unwrap();
    let (code, table, _) = lab.bootstrap(&["one.yaml"], &[]);
    assert_eq!(
        code, 1,
        "unknown host key without --accept-new-host-keys: {table}"
    );
    assert!(row(&table, "fresh").contains("host-key-refused"), "{table}");
    let (code, table, _) = lab.bootstrap(&["one.yaml"], &["--accept-new-host-keys"]);
    assert_eq!(code, 0, "{table}");
    // (Debian's ssh_config hashes the names: ask ssh-keygen.)
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", lab.port(1)))
        .arg("-f")
        .arg(lab.p("known_hosts"))
        .output()
        .unwrap();
    assert!(
        found.status.success() && !found.stdout.is_empty(),
        "the key was not learned: {:?}",
        std::fs::read_to_string(lab.p("known_hosts"))
    );
}

#[test]
fn wrong_key_unreachable_and_failing_run_are_reported_while_others_succeed() {
    require_sshd!();
    let lab = Lab::start(3);
    let d = lab.path().display().to_string();
    // sshd 1's entry in known_hosts carries another key.
    keygen(&lab.p("impostor"));
    let impostor = std::fs::read_to_string(lab.p("impostor.pub")).unwrap();
    let impostor: Vec<&str> = impostor.split_whitespace().take(2).collect();
    std::fs::write(
        lab.p("known_hosts"),
        format!(
            "{}[127.0.0.1]:{} {}\n{}",
            lab.sshds[0].known_hosts_line(),
            lab.port(1),
            impostor.join(" "),
            lab.sshds[2].known_hosts_line()
        ),
    )
    .unwrap();
    let closed = free_port();
    std::fs::write(
        lab.p("catalog.yaml"),
        format!(
            r#"ingot_minions:
  targets:
  - {{host: 127.0.0.1, port: {p0}, name: good}}
  - {{host: 127.0.0.1, port: {p1}, name: badkey}}
  - {{host: 127.0.0.1, port: {closed}, name: closed}}
  - {{host: 127.0.0.1, port: {p2}, name: failing}}
  jobs:
  - RUN: "{{% if ingot_bootstrap.name == 'failing' %}}echo boom-stdout; echo boom-stderr >&2; exit 3{{% else %}}true{{% endif %}}"
  - RUN: mkdir -p {d}/out && touch {d}/out/{{{{ ingot_bootstrap.name }}}}
"#,
            p0 = lab.port(0),
            p1 = lab.port(1),
            p2 = lab.port(2),
        ),
    )
    .unwrap();
    let (code, table, err) = lab.bootstrap(&["catalog.yaml"], &[]);
    assert_eq!(code, 1, "{table}\n{err}");
    assert!(row(&table, "good").contains(" ok "), "{table}");
    assert!(lab.p("out/good").exists(), "the good host carried on");
    let badkey = row(&table, "badkey");
    assert!(
        badkey.contains("host-key-refused") && badkey.contains("connect"),
        "{table}"
    );
    let closed_row = row(&table, "closed");
    assert!(
        closed_row.contains("unreachable") && closed_row.contains("connect"),
        "{table}"
    );
    let failing = row(&table, "failing");
    assert!(
        failing.contains("failed") && failing.contains("1/2 RUN"),
        "{table}"
    );
    assert!(
        !lab.p("out/failing").exists(),
        "a failed step stops its host"
    );
    assert!(!lab.p("out/badkey").exists());
    // The details: host, step and output.
    assert!(
        table.contains("boom-stdout") && table.contains("boom-stderr"),
        "{table}"
    );
    assert!(table.contains("exit code 3"), "{table}");
    assert!(
        table.contains("Host key verification failed") || table.contains("HOST IDENTIFICATION"),
        "{table}"
    );
    assert!(table.contains("Connection refused"), "{table}");
    assert!(table.contains("1 of 4 hosts succeeded"), "{table}");
    assert!(err.contains("[failing] FAILED 1/2 RUN"), "{err}");

    // The same as JSON.
    let (code, json, _) = lab.bootstrap(&["catalog.yaml"], &["--json"]);
    assert_eq!(code, 1);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["ok"], false);
    let by = |n: &str| {
        doc["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(by("good")["result"], "ok");
    assert_eq!(by("badkey")["result"], "host-key-refused");
    assert_eq!(by("closed")["result"], "unreachable");
    assert_eq!(by("failing")["result"], "failed");
    assert!(by("failing")["output"]
        .as_str()
        .unwrap()
        .contains("boom-stderr"));
}

#[test]
fn bad_catalogs_exit_2_naming_the_file_and_key() {
    // No sshd needed: the catalog is refused before any connection.
    let dir = tempfile::tempdir().unwrap();
    let run = |file: &str, body: &str| {
        std::fs::write(dir.path().join(file), body).unwrap();
        let out = output(
            ingot(dir.path())
                .args(["bootstrap", "--catalog", file])
                .env("HOME", dir.path()),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(
        "a.yaml",
        "ingot_minions:\n  targets:\n  - {host: h, port: 70000}\n  jobs: [{RUN: 'true'}]\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("a.yaml") && err.contains("ingot_minions.targets[0].port"),
        "{err}"
    );
    let (code, err) = run(
        "b.yaml",
        "directord_clients:\n  targets: [{host: h}]\n  jobs:\n  - RUN: 'true'\n  - COPY: a b\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("b.yaml") && err.contains("directord_clients.jobs[1]") && err.contains("COPY"),
        "{err}"
    );
    let (code, err) = run(
        "c.yaml",
        "ingot_minions:\n  targets: [{host: h}]\n  jobs:\n  - RUN: echo {{ nope }}\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("c.yaml") && err.contains("ingot_minions.jobs[0].RUN"),
        "{err}"
    );
    let (code, err) = run("d.yaml", "ingot_minions: [oops\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("d.yaml"), "{err}");
    let (code, err) = run("e.yaml", "ingot_minions:\n  targets: [{host: h}]\n");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no targets with jobs"), "{err}");
    let out = output(ingot(dir.path()).args([
        "bootstrap",
        "--catalog",
        "e.yaml",
        "--catalog",
        "builtin:install",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ingot.master_address"));
}

/// runsvdir over a test directory; on drop every service and runsv exits, then runsvdir.
struct Runit {
    dir: PathBuf,
    child: Child,
}

impl Runit {
    fn start(dir: PathBuf) -> Runit {
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("runsvdir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("runsvdir starts");
        Runit { dir, child }
    }
}

impl Drop for Runit {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let _ = Command::new("sv")
                    .args(["-w", "5", "force-stop"])
                    .arg(e.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ = Command::new("sv")
                    .arg("exit")
                    .arg(e.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let _ = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fingerprints(fleet: &crate::net_support::Fleet) -> std::collections::BTreeMap<String, String> {
    let out = output(ingot(fleet.path()).args(["certs", "--master", "m", "list", "--json"]));
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["fingerprint"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn builtin_install_connects_minions_that_apply_then_rotate_reissues_and_they_reconnect() {
    require_sshd!();
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    if !on_path("runsvdir") || !on_path("sv") {
        eprintln!("skipped: runsvdir is not installed (apt-get install runit)");
        return;
    }
    let lab = Lab::start(3);
    let fleet = crate::net_support::Fleet::start(5);
    let d = fleet.path().display().to_string();
    let runit = Runit::start(fleet.path().join("service"));
    let mut targets = String::new();
    for i in 0..3 {
        targets.push_str(&format!(
            "  - host: 127.0.0.1\n    port: {port}\n    name: m{i}\n    ingot:\n\
             \x20     remote_exe: {d}/h{i}/bin/ingot\n      minion_dir: {d}/h{i}/minion\n\
             \x20     service: ingot-m{i}\n      machine_id: machine-m{i}\n",
            port = lab.port(i)
        ));
    }
    std::fs::write(
        lab.p("fleet.yaml"),
        format!(
            "ingot:\n  master_address: 127.0.0.1:{mport}\n  master_dir: {d}/m\n  service_manager: runit\n\
             \x20 sv_dir: {d}/sv\n  runit_dir: {svc}\ningot_minions:\n  targets:\n{targets}",
            mport = fleet.port,
            svc = runit.dir.display(),
        ),
    )
    .unwrap();
    // A `me` fact for the test prescription, after the built-in's jobs (lists extend).
    std::fs::write(
        lab.p("facts.yaml"),
        "ingot_minions:\n  jobs:\n  - RUN: |\n      mkdir -p '{{ ingot.minion_dir }}/facts'\n      printf '#!/bin/sh\\necho \\x27\"%s\"\\x27\\n' '{{ ingot_bootstrap.name }}' > '{{ ingot.minion_dir }}/facts/me'\n      chmod 755 '{{ ingot.minion_dir }}/facts/me'\n",
    )
    .unwrap();
    let (code, table, err) = lab.bootstrap(&["fleet.yaml", "builtin:install", "facts.yaml"], &[]);
    assert_eq!(code, 0, "{table}\n{err}");
    for i in 0..3 {
        assert!(row(&table, &format!("m{i}")).contains(" ok "), "{table}");
        assert!(fleet.path().join(format!("h{i}/bin/ingot")).exists());
        assert!(fleet
            .path()
            .join(format!("h{i}/minion/certs/minion.key"))
            .exists());
    }
    fleet.wait_connected(&["m0", "m1", "m2"]);
    let (code, doc) = fleet.run(&["m*"]);
    assert_eq!(code, 0, "{doc:#}");
    for n in ["m0", "m1", "m2"] {
        assert_eq!(
            fleet.motd(n).as_deref(),
            Some(format!("hello {n}\n").as_str()),
            "{doc:#}"
        );
    }

    // Rotation: new certificates, restarted agents that reconnect and apply again.
    let before = fingerprints(&fleet);
    let (code, table, err) = lab.bootstrap(&["fleet.yaml", "builtin:rotate"], &[]);
    assert_eq!(code, 0, "{table}\n{err}");
    let after = fingerprints(&fleet);
    for n in ["m0", "m1", "m2"] {
        assert_ne!(before[n], after[n], "{n}'s certificate was re-issued");
    }
    std::fs::remove_dir_all(fleet.path().join("out")).unwrap();
    fleet.wait_connected(&["m0", "m1", "m2"]);
    let (code, doc) = fleet.run(&["m*"]);
    assert_eq!(code, 0, "{doc:#}");
    for n in ["m0", "m1", "m2"] {
        assert_eq!(
            fleet.motd(n).as_deref(),
            Some(format!("hello {n}\n").as_str()),
            "{doc:#}"
        );
    }

    // Upgrade: the binary shipped again, the agents restarted and back.
    let stamp = |i: usize| {
        std::fs::metadata(fleet.path().join(format!("h{i}/bin/ingot")))
            .unwrap()
            .modified()
            .unwrap()
    };
    let old: Vec<_> = (0..3).map(stamp).collect();
    std::thread::sleep(Duration::from_millis(20));
    let (code, table, err) = lab.bootstrap(&["fleet.yaml", "builtin:upgrade"], &[]);
    assert_eq!(code, 0, "{table}\n{err}");
    for (i, t) in old.iter().enumerate() {
        assert_ne!(stamp(i), *t, "h{i}'s binary was replaced");
    }
    fleet.wait_connected(&["m0", "m1", "m2"]);
    drop(runit);
}
