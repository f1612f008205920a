//! A master and minions as real processes over real TLS, for the network tests.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{ingot, ingot_bin, output, script};

/// Everything a run needs: a master tree with the CA, minion trees, their processes.
pub struct Fleet {
    pub dir: tempfile::TempDir,
    host: String,
    pub port: u16,
    pub enroll_port: u16,
    master: Option<Child>,
    /// Extra arguments of `ingot master serve`.
    master_args: Vec<String>,
    /// Extra environment of `ingot master serve` (its actors inherit it).
    pub master_env: Vec<(String, String)>,
    minions: Vec<(String, Child)>,
}

/// The prescription of these tests: one file per minion, named by its `me` fact.
const PRESCRIBE: &str = r#"#!/bin/sh
facts=$(cat)
me=$(printf '%s' "$facts" | sed -n 's/.*"me":"\([^"]*\)".*/\1/p')
cat <<JSON
[{"kind":"file","path":"$OUT/$me/motd","parents":true,"content":"hello $me\n","mode":"0644"}]
JSON
"#;

impl Fleet {
    /// [`Fleet::start`] with a connected minion for each of `names` (machine id
    /// `machine-NAME`).
    pub fn with_minions(grace: u64, names: &[&str]) -> Self {
        let mut fleet = Self::start(grace);
        for n in names {
            fleet.minion_tree(n, "");
            fleet.start_minion(n, &format!("machine-{n}"), None);
        }
        fleet.wait_connected(names);
        fleet
    }

    /// A master tree with a CA, its server listening on a free loopback port.
    pub fn start(grace: u64) -> Self {
        Self::start_on("127.0.0.1", grace)
    }

    /// Like [`Fleet::start`], with extra arguments for `ingot master serve`.
    pub fn start_with(grace: u64, master_args: &[&str]) -> Self {
        Self::start_full("127.0.0.1", grace, master_args)
    }

    /// Like [`Fleet::start`], the master listening on `host`.
    pub fn start_on(host: &str, grace: u64) -> Self {
        Self::start_full(host, grace, &[])
    }

    /// Like [`Fleet::start`], the trees under /var/tmp: minions started with
    /// [`Fleet::start_minion_private_tmp`] get their own /tmp, which would hide them there.
    pub fn start_outside_tmp(grace: u64) -> Self {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        Self::start_in(dir, "127.0.0.1", grace, &[])
    }

    fn start_full(host: &str, grace: u64, master_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), host, grace, master_args)
    }

    fn start_in(dir: tempfile::TempDir, host: &str, grace: u64, master_args: &[&str]) -> Self {
        let d = dir.path();
        let m = d.join("m");
        assert!(output(ingot(d).args(["init", "master"]).arg(&m))
            .status
            .success());
        script(
            &m.join("actors/prescribe"),
            &PRESCRIBE.replace("$OUT", &d.join("out").display().to_string()),
        );
        assert!(output(ingot(d).args(["certs", "init", "--master"]).arg(&m))
            .status
            .success());
        let mut fleet = Fleet {
            dir,
            host: host.to_owned(),
            port: 0,
            enroll_port: 0,
            master: None,
            master_args: master_args.iter().map(|a| a.to_string()).collect(),
            master_env: Vec::new(),
            minions: Vec::new(),
        };
        fleet.start_master(grace);
        fleet
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn master_dir(&self) -> PathBuf {
        self.path().join("m")
    }

    /// Starts `ingot master serve` (port 0 the first time, the same port again after).
    pub fn start_master(&mut self, grace: u64) {
        let log = self.path().join("master.log");
        let _ = std::fs::remove_file(&log);
        let listen = format!("{}:{}", self.host, self.port);
        let child = Command::new(ingot_bin())
            .current_dir(self.path())
            .env_remove("INGOT_HISTORY")
            .env("INGOT_LOG", "info")
            // Debug builds: while this file exists the master's history commits nothing.
            .env("INGOT_TEST_HOLD_COMMITS", self.path().join("hold-commits"))
            .args(["master", "--master", "m", "serve", "--listen", &listen])
            .args(["--heartbeat", "1", "--grace", &grace.to_string()])
            .args(["--enroll-listen", &format!("{}:0", self.host)])
            .args(&self.master_args)
            .envs(self.master_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        self.master = Some(child);
        let port = wait_for(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.split(&format!("listening on {}:", self.host))
                .nth(1)?
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u16>()
                .ok()
        })
        .unwrap_or_else(|| panic!("the master did not start: {}", self.master_log()));
        self.port = port;
        let text = self.master_log();
        self.enroll_port = text
            .split("enrollment on ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no enrollment port: {text}"));
    }

    /// `ingot history list --json --status STATUS` from the master's history.
    pub fn runs_with_status(&self, status: &str) -> Vec<serde_json::Value> {
        let out = output(ingot(self.path()).args([
            "history",
            "--history",
            "m/logs/history.db",
            "list",
            "--json",
            "--status",
            status,
        ]));
        assert!(out.status.success());
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// `ingot history show RUN --json` from the master's history.
    pub fn history_show(&self, run: &str) -> std::process::Output {
        output(
            ingot(self.path())
                .args([
                    "history",
                    "--history",
                    "m/logs/history.db",
                    "show",
                    "--json",
                ])
                .arg(run),
        )
    }

    pub fn master_log(&self) -> String {
        std::fs::read_to_string(self.path().join("master.log")).unwrap_or_default()
    }

    /// kill -9 the master (a crash: nothing is cleaned up); [`Fleet::start_master`] starts it
    /// again on the same port.
    pub fn kill_master(&mut self) {
        if let Some(mut c) = self.master.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The running master's pid.
    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().expect("a master runs").id()
    }

    /// The master is still running.
    pub fn master_alive(&mut self) -> bool {
        matches!(self.master.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// A minion tree with a certificate for `name` and a `me` fact (`fact_body` runs first).
    pub fn minion_tree(&self, name: &str, fact_body: &str) -> PathBuf {
        let d = self.path();
        let tree = d.join(name);
        assert!(output(ingot(d).args(["init", "minion"]).arg(&tree))
            .status
            .success());
        script(
            &tree.join("facts/me"),
            &format!("#!/bin/sh\n{fact_body}\necho '\"{name}\"'\n"),
        );
        let out = output(
            ingot(d)
                .args(["certs", "issue", name, "--master", "m", "--out"])
                .arg(tree.join("certs")),
        );
        assert!(out.status.success());
        tree
    }

    /// Starts `ingot minion serve` for the tree `name` against `addr` (default: the master).
    pub fn start_minion(&mut self, name: &str, machine_id: &str, addr: Option<String>) {
        self.start_minion_in(None, name, machine_id, addr)
    }

    /// Like [`Fleet::start_minion`] against the master, with `env` added to the agent's
    /// environment (which the jobs it runs inherit), e.g. a `PATH` with fake tools first.
    pub fn start_minion_with_env(&mut self, name: &str, machine_id: &str, env: &[(&str, &str)]) {
        self.start_minion_wrapped(&[], name, machine_id, None, env)
    }

    /// Like [`Fleet::start_minion`] against the master, with `args` added to `ingot minion
    /// serve`'s (global flags such as `--debug` among them) and `env` to its environment.
    pub fn start_minion_with_args(
        &mut self,
        name: &str,
        machine_id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) {
        self.start_minion_full(&[], name, machine_id, None, env, args)
    }

    /// Like [`Fleet::start_minion`], inside network namespace `netns` when given.
    pub fn start_minion_in(
        &mut self,
        netns: Option<&str>,
        name: &str,
        machine_id: &str,
        addr: Option<String>,
    ) {
        match netns {
            Some(ns) => {
                self.start_minion_wrapped(&["ip", "netns", "exec", ns], name, machine_id, addr, &[])
            }
            None => self.start_minion_wrapped(&[], name, machine_id, addr, &[]),
        }
    }

    /// Like [`Fleet::start_minion`], in its own mount namespace with a private, empty /tmp
    /// (as on a machine of its own): root only. The fleet must be outside /tmp
    /// ([`Fleet::start_outside_tmp`]).
    pub fn start_minion_private_tmp(&mut self, name: &str, machine_id: &str) {
        assert!(
            !self.path().starts_with("/tmp"),
            "the fleet's trees are under /tmp"
        );
        // The ingot binary (and the links to it in resources/) may live under /tmp (a clone
        // there): its directory is bound aside first and bound back over the new /tmp.
        const SCRIPT: &str = r#"bin=$1 stash=$2; shift 2
mkdir -p "$stash" && mount --bind "$bin" "$stash" &&
mount -t tmpfs ingot-minion-tmp /tmp &&
mkdir -p "$bin" && mount --bind "$stash" "$bin" && exec "$@""#;
        let bin = ingot_bin();
        let bin_dir = bin.parent().unwrap().display().to_string();
        let stash = self
            .path()
            .join(format!(".bin-{name}"))
            .display()
            .to_string();
        let wrap = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            SCRIPT,
            "sh",
            &bin_dir,
            &stash,
        ];
        self.start_minion_wrapped(&wrap, name, machine_id, None, &[])
    }

    /// `ingot minion serve` for `name`, run through the command `wrap` (empty: directly),
    /// with `env` added to its environment.
    fn start_minion_wrapped(
        &mut self,
        wrap: &[&str],
        name: &str,
        machine_id: &str,
        addr: Option<String>,
        env: &[(&str, &str)],
    ) {
        self.start_minion_full(wrap, name, machine_id, addr, env, &[])
    }

    /// Like [`Fleet::start_minion_wrapped`], with `extra` arguments after the others.
    fn start_minion_full(
        &mut self,
        wrap: &[&str],
        name: &str,
        machine_id: &str,
        addr: Option<String>,
        env: &[(&str, &str)],
        extra: &[&str],
    ) {
        let addr = addr.unwrap_or_else(|| format!("127.0.0.1:{}", self.port));
        let mut cmd = match wrap.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(ingot_bin());
                c
            }
            None => Command::new(ingot_bin()),
        };
        let child = cmd
            .current_dir(self.path())
            .env("INGOT_LOG", "info")
            .envs(env.iter().copied())
            .args(["minion", "serve", "--minion", name, "--master", &addr])
            .args(["--machine-id", machine_id, "--max-backoff", "0.5"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.path().join(format!("{name}.log")))
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        self.minions.push((name.to_owned(), child));
    }

    /// `ingot minion swarm --count N`: N minion identities `swarm-0000`... in one process,
    /// their trees under `swarm/` with a static `me` fact, certificates issued by the master.
    pub fn start_swarm(&mut self, count: usize) -> Vec<String> {
        let child = Command::new(ingot_bin())
            .current_dir(self.path())
            .env("INGOT_LOG", "info")
            .args([
                "minion",
                "swarm",
                "--count",
                &count.to_string(),
                "--dir",
                "swarm",
            ])
            .args(["--master", &format!("127.0.0.1:{}", self.port)])
            .args(["--issue-from", "m"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.path().join("swarm.log")).unwrap())
            .spawn()
            .unwrap();
        self.minions.push(("swarm".to_owned(), child));
        (0..count).map(|i| format!("swarm-{i:04}")).collect()
    }

    pub fn minion_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// kill -9 the minion process `name`.
    pub fn kill_minion(&mut self, name: &str) {
        for (n, c) in &mut self.minions {
            if n == name {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// `ingot manage --list-nodes --json`.
    pub fn nodes(&self) -> Vec<Value> {
        let out = ingot(self.path())
            .args(["manage", "--master", "m", "--list-nodes", "--json"])
            .output()
            .unwrap();
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn state_of(&self, name: &str) -> Option<String> {
        self.nodes()
            .into_iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["state"].as_str().map(String::from))
    }

    /// Waits until every name is connected.
    pub fn wait_connected(&self, names: &[&str]) {
        let ok = wait_for(Duration::from_secs(30), || {
            names
                .iter()
                .all(|n| self.state_of(n).as_deref() == Some("connected"))
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "not all of {names:?} connected: {:?}\nmaster log:\n{}",
            self.nodes(),
            self.master_log()
        );
    }

    /// `ingot master run --targets ... --json`: the exit code and the document.
    pub fn run(&self, targets: &[&str]) -> (i32, Value) {
        let out = output(&mut master_run(self.path(), targets));
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON document ({e}): {}\nmaster log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                self.master_log()
            )
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    pub fn motd(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.path().join("out").join(name).join("motd")).ok()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, c) in &mut self.minions {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(c) = self.master.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The report of `minion` in a run document.
pub fn report<'a>(doc: &'a Value, minion: &str) -> &'a Value {
    doc["minions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["minion"] == minion)
        .unwrap_or_else(|| panic!("no report for {minion} in {doc}"))
}

/// A TCP relay that can cut every connection through it (a network failure between a minion
/// and the master) and later carry new ones again.
pub struct Relay {
    pub port: u16,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    open: Arc<Mutex<bool>>,
    /// One flag per connection so far: set, its bytes are read and dropped.
    holes: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>>,
}

impl Relay {
    pub fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let open = Arc::new(Mutex::new(true));
        let holes: Arc<Mutex<Vec<Arc<std::sync::atomic::AtomicBool>>>> = Arc::default();
        let (c2, o2, h2) = (conns.clone(), open.clone(), holes.clone());
        std::thread::spawn(move || {
            for down in listener.incoming().flatten() {
                if !*o2.lock().unwrap() {
                    let _ = down.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let mut list = c2.lock().unwrap();
                list.push(down.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                let hole = Arc::new(std::sync::atomic::AtomicBool::new(false));
                h2.lock().unwrap().push(hole.clone());
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up, down),
                ] {
                    let hole = hole.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(_) if hole.load(std::sync::atomic::Ordering::SeqCst) => {}
                                Ok(n) => {
                                    if std::io::Write::write_all(&mut to, &buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            port,
            conns,
            open,
            holes,
        }
    }

    /// Every connection so far silently drops what it carries, both ways, while staying open
    /// (a peer that vanished without a FIN); new connections work.
    pub fn blackhole(&self) {
        for h in self.holes.lock().unwrap().iter() {
            h.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Cuts every connection and refuses new ones until [`Relay::reopen`].
    pub fn cut(&self) {
        *self.open.lock().unwrap() = false;
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    pub fn reopen(&self) {
        *self.open.lock().unwrap() = true;
    }
}

/// The minion tree's spool holds no undelivered frame: every slot is free (its first line is
/// `{"spooled":null}`; slots are reused, not removed, once the master acknowledged them).
pub fn spool_drained(minion_tree: &Path) -> bool {
    std::fs::read_dir(minion_tree.join("logs/spool"))
        .map(|d| {
            d.flatten().all(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                let first = text.lines().next().unwrap_or_default().trim();
                first.is_empty() || first == r#"{"spooled":null}"#
            })
        })
        .unwrap_or(false)
}

/// Whether the minion's spool holds a result the master has not acknowledged: a slot still
/// taken by a request (its first line names it) with that request's result frame in it.
pub fn holds_unacked_result(minion_tree: &Path) -> bool {
    let Ok(dir) = std::fs::read_dir(minion_tree.join("logs/spool")) else {
        return false;
    };
    dir.flatten().any(|e| {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = text.lines();
        let header: serde_json::Value =
            serde_json::from_str(lines.next().unwrap_or_default().trim()).unwrap_or_default();
        let Some(id) = header["spooled"].as_str() else {
            return false;
        };
        lines.any(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|f| f["result"]["id"].as_str() == Some(id))
        })
    })
}

/// `ingot master --master m run --json --targets TARGETS...` in `dir` (for runs started on
/// another thread while the test disturbs the fleet).
pub fn master_run(dir: &Path, targets: &[&str]) -> Command {
    let mut c = ingot(dir);
    c.args(["master", "--master", "m", "run", "--json", "--targets"])
        .args(targets);
    c
}
