//! A writer killed with SIGKILL mid-ingest leaves a database that opens cleanly and holds every
//! event it acknowledged.
//!
//! The writer is this test binary run again as a child (the ignored test `crash_writer_child`),
//! which ingests numbered events forever and prints `acked N` after each committed batch.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use historian::{History, ListFilter, Location, RunMeta, Store, WriterOptions};

const CHILD_ENV: &str = "HISTORIAN_CRASH_CHILD_DB";

#[test]
#[ignore = "run by sigkill_mid_ingest_keeps_every_acknowledged_event as a child process"]
fn crash_writer_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        panic!("only run as the child of sigkill_mid_ingest_keeps_every_acknowledged_event");
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let opts = WriterOptions {
        max_batch: 4096,
        on_commit: Some(Box::new(move |c| {
            use std::io::Write;
            let mut o = out.lock().unwrap();
            let _ = writeln!(o, "acked {}", c.total_events);
            let _ = o.flush();
        })),
        ..WriterOptions::default()
    };
    let history = History::open_with(&Location::Sqlite(path.into()), opts).unwrap();
    let run = history
        .start_run(RunMeta::current(vec!["crash".into()]))
        .unwrap();
    let sink = run.sink("m1");
    let big = "y".repeat(3000);
    for i in 0u64.. {
        // Numbered events, some large, some binary, so a torn write would show.
        let text = if i % 97 == 0 {
            format!("{i} {big}\n")
        } else {
            format!("{i}\n")
        };
        let mut bytes = text.into_bytes();
        if i % 89 == 0 {
            bytes.push(0xff);
        }
        let m = channel3::Message::new(
            Some("writer".into()),
            &channel3::Body::Stdout(channel3::Line::from_bytes(&bytes)),
        );
        runner::EventSink::emit(&sink, channel3::Event::now(m));
    }
}

#[test]
fn sigkill_mid_ingest_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = 0u64;
    let mut acks = 0;
    // Kill after many commits, while the child is in full flow (it never stops by itself).
    while acks < 40 || acked < 50_000 {
        let line = lines.next().expect("child keeps acknowledging").unwrap();
        if let Some(n) = line.strip_prefix("acked ") {
            acked = n.parse().unwrap();
            acks += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    assert_eq!(historian::sqlite_integrity_check(&path).unwrap(), "ok");
    let mut store = Store::open(&Location::Sqlite(path.clone())).unwrap();
    let runs = store.list(&ListFilter::default()).unwrap();
    assert_eq!(runs.len(), 1);
    let events = store.events(&runs[0]).unwrap();
    assert!(
        events.len() as u64 >= acked,
        "{} events stored, {acked} acknowledged",
        events.len()
    );
    assert_eq!(
        runs[0].events as usize,
        events.len(),
        "the run's counter is consistent"
    );
    for (i, e) in events.iter().enumerate() {
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        let line = channel3::Line {
            line: data["line"].as_str().unwrap().to_owned(),
            encoding: serde_json::from_value(data["encoding"].clone()).unwrap_or(None),
        };
        let bytes = line.bytes();
        let n: &[u8] = bytes.split(|&b| b == b' ' || b == b'\n').next().unwrap();
        assert_eq!(
            std::str::from_utf8(n).unwrap(),
            i.to_string(),
            "event {i} in order and intact"
        );
    }
    // And the database still takes writes after the crash.
    let history = History::open(&Location::Sqlite(path)).unwrap();
    history
        .start_run(RunMeta::current(vec![]))
        .unwrap()
        .finish(historian::RunStatus::Ok);
    history.close().unwrap();
}
