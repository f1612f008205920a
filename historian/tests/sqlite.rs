//! The review commands against a real SQLite file.

mod common;

use historian::{History, Location, RunMeta, RunStatus, Store};

#[test]
fn review_commands_work_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("logs/history.db"));
    common::check_review(&location);
    let Location::Sqlite(path) = &location else {
        unreachable!()
    };
    assert_eq!(historian::sqlite_integrity_check(path).unwrap(), "ok");
}

#[test]
fn readers_never_create_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("none.db");
    let err = Store::open(&Location::Sqlite(path.clone())).unwrap_err();
    assert!(matches!(err, historian::Error::Missing(_)), "{err}");
    assert!(
        err.to_string().contains("--history"),
        "the message says what to do: {err}"
    );
    assert!(!path.exists());
}

#[test]
fn a_reader_sees_a_live_run_while_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("h.db"));
    let history = History::open(&location).unwrap();
    let run = history.start_run(RunMeta::current(vec![])).unwrap();
    let mut store = Store::open(&location).unwrap();
    let live = store.find("last").unwrap();
    assert_eq!(
        live.status,
        RunStatus::Running,
        "start_run commits before returning"
    );
    let sink = run.sink("m");
    for i in 0..1000 {
        runner::EventSink::emit(&sink, line_event(i));
    }
    history.flush().unwrap();
    assert_eq!(store.events_after(&live, 0, 10_000).unwrap().len(), 1000);
    run.finish(RunStatus::Ok);
    history.flush().unwrap();
    assert_eq!(store.refresh(&live).unwrap().status, RunStatus::Ok);
}

#[test]
fn a_dropped_run_is_recorded_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("h.db"));
    let history = History::open(&location).unwrap();
    drop(history.start_run(RunMeta::current(vec![])).unwrap());
    history.close().unwrap();
    let mut store = Store::open(&location).unwrap();
    assert_eq!(store.find("last").unwrap().status, RunStatus::Failed);
}

#[test]
fn a_newer_schema_is_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    drop(History::open(&Location::Sqlite(path.clone())).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&Location::Sqlite(path)).unwrap_err();
    assert!(
        matches!(err, historian::Error::TooNew { found: 99, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade ingot"), "{err}");
}

fn line_event(i: usize) -> channel3::Event {
    channel3::Event::now(channel3::Message::new(
        Some("p".into()),
        &channel3::Body::Stdout(channel3::Line::from_bytes(format!("line {i}\n").as_bytes())),
    ))
}
