//! The review commands against a real PostgreSQL server, started by the test in a temporary
//! directory (initdb + pg_ctl from /usr/lib/postgresql/15/bin, as the `postgres` user when we
//! are root). Skipped, with a message, only when those binaries are missing.
#![cfg(feature = "postgres")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use historian::{History, Location, RunMeta, RunStatus, Store};

const BIN: &str = "/usr/lib/postgresql/15/bin";

struct Server {
    dir: tempfile::TempDir,
    url: String,
}

impl Server {
    fn start() -> Option<Self> {
        if !Path::new(BIN).join("initdb").exists() {
            eprintln!(
                "SKIPPED: PostgreSQL tests need {BIN}/initdb and pg_ctl \
                 (apt-get install postgresql; .ci/run does this)"
            );
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("historian-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let uid: u32 = output("id", &["-u", "postgres"]).trim().parse().unwrap();
            let gid: u32 = output("id", &["-g", "postgres"]).trim().parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let d = dir.path().display();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        as_postgres(&format!(
            "{BIN}/initdb -D {d}/data -A trust -U postgres --no-sync >{d}/initdb.log 2>&1"
        ));
        as_postgres(&format!(
            "{BIN}/pg_ctl -D {d}/data -l {d}/server.log -w -o \
             \"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c fsync=off\" start >/dev/null"
        ));
        Some(Self {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            dir,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let d = self.data();
        let _ = run_shell(&format!(
            "{BIN}/pg_ctl -D {} -m immediate -w stop >/dev/null",
            d.display()
        ));
    }
}

fn is_root() -> bool {
    output("id", &["-u"]).trim() == "0"
}

fn output(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().unwrap();
    assert!(o.status.success(), "{prog} {args:?} failed");
    String::from_utf8(o.stdout).unwrap()
}

fn run_shell(cmd: &str) -> std::process::ExitStatus {
    let mut c = if is_root() {
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", cmd]);
        c
    } else {
        let mut c = Command::new("/bin/sh");
        c.args(["-c", cmd]);
        c
    };
    c.status().unwrap()
}

fn as_postgres(cmd: &str) {
    assert!(run_shell(cmd).success(), "failed: {cmd}");
}

#[test]
fn review_commands_work_on_postgres() {
    let Some(server) = Server::start() else {
        return;
    };
    let location = Location::parse(&server.url);
    assert!(matches!(location, Location::Postgres(_)));
    common::check_review(&location);
}

#[test]
fn steps_by_action_and_deleting_runs_on_postgres() {
    let Some(server) = Server::start() else {
        return;
    };
    common::check_action_steps_and_delete(&Location::parse(&server.url));
}

#[test]
fn two_writers_share_one_postgres_history() {
    let Some(server) = Server::start() else {
        return;
    };
    let location = Location::parse(&server.url);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let location = location.clone();
            std::thread::spawn(move || {
                let h = History::open(&location).unwrap();
                let run = h
                    .start_run(RunMeta::current(vec![format!("m{t}")]))
                    .unwrap();
                let sink = run.sink(&format!("m{t}"));
                for i in 0..5000 {
                    runner::EventSink::emit(
                        &sink,
                        channel3::Event::now(channel3::Message::new(
                            Some("p".into()),
                            &channel3::Body::Stdout(channel3::Line::from_bytes(
                                format!("{i}\0nul\n").as_bytes(),
                            )),
                        )),
                    );
                }
                run.finish(RunStatus::Ok);
                h.close().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut store = Store::open(&location).unwrap();
    let runs = store.list(&historian::ListFilter::default()).unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert_eq!(r.status, RunStatus::Ok);
        let events = store.events(r).unwrap();
        assert_eq!(events.len(), 5000);
        assert_eq!(r.events, 5000);
        assert!(events[7].data.contains("7\\u0000nul"), "{}", events[7].data);
    }
}
