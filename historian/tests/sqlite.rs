//! The review commands against a real SQLite file.

mod common;

use historian::{History, ListFilter, Location, RunMeta, RunStatus, Store};

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
fn steps_by_action_and_deleting_runs_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    common::check_action_steps_and_delete(&Location::Sqlite(dir.path().join("h.db")));
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

#[test]
fn interleaved_runs_keep_their_own_events_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("h.db"));
    let history = History::open(&location).unwrap();
    let a = history.start_run(RunMeta::current(vec![])).unwrap();
    let b = history.start_run(RunMeta::current(vec![])).unwrap();
    let (sa, sb, sc) = (a.sink("m1"), b.sink("m2"), b.sink("m3"));
    for i in 0..5000 {
        runner::EventSink::emit(&sa, line_event(i));
        if i % 3 == 0 {
            runner::EventSink::emit(&sb, line_event(i));
        }
        if i % 7 == 0 {
            runner::EventSink::emit(&sc, line_event(i));
        }
    }
    a.finish(RunStatus::Ok);
    b.finish(RunStatus::Ok);
    history.close().unwrap();

    let mut store = Store::open(&location).unwrap();
    let ra = store.find(a.id()).unwrap();
    let rb = store.find(b.id()).unwrap();
    let ea = store.events(&ra).unwrap();
    assert_eq!(ea.len(), 5000);
    assert_eq!(ra.events, 5000);
    for (i, e) in ea.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "positions count the run's events");
        assert_eq!(e.minion, "m1");
        assert!(e.data.contains(&format!("line {i}\\n")), "{}", e.data);
    }
    let eb = store.events(&rb).unwrap();
    assert_eq!(eb.len(), 1667 + 715);
    assert_eq!(rb.events, eb.len() as i64);
    assert_eq!(rb.minions, ["m2", "m3"]);
    assert!(eb.windows(2).all(|w| w[0].seq < w[1].seq));
    let page = store.events_after(&rb, 10, 5).unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
}

/// The schema of version 1, as `ingot` created it before events were keyed by run.
const SCHEMA_V1: &str = "
    CREATE TABLE runs (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, command TEXT NOT NULL,
        user TEXT NOT NULL, targets TEXT NOT NULL, started_us INTEGER NOT NULL,
        ended_us INTEGER, status TEXT NOT NULL, events INTEGER NOT NULL DEFAULT 0);
    CREATE INDEX runs_started ON runs(started_us);
    CREATE TABLE run_minions (run_id INTEGER NOT NULL, minion TEXT NOT NULL,
        PRIMARY KEY (run_id, minion)) WITHOUT ROWID;
    CREATE INDEX run_minions_minion ON run_minions(minion);
    CREATE TABLE steps (run_id INTEGER NOT NULL, no INTEGER NOT NULL, minion TEXT NOT NULL,
        kind TEXT NOT NULL, action TEXT NOT NULL, desired TEXT, before TEXT, after TEXT,
        outcome TEXT NOT NULL, started_us INTEGER NOT NULL, duration_us INTEGER, error TEXT,
        PRIMARY KEY (run_id, no));
    CREATE INDEX steps_kind ON steps(kind);
    CREATE TABLE events (id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, minion TEXT NOT NULL,
        step INTEGER, name TEXT, ts_us INTEGER NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL,
        raw BLOB);
    CREATE INDEX events_run ON events(run_id, id);
    PRAGMA user_version = 1;";

#[test]
fn a_version_1_database_opens_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.execute_batch(
        "INSERT INTO runs VALUES
            (1, '01900000-0000-7000-8000-000000000001', '[\"a\"]', 'u', '[\"m\"]', 10, 20, 'ok', 3),
            (2, '01900000-0000-7000-8000-000000000002', '[\"b\"]', 'u', '[\"m\"]', 30, 40, 'ok', 2);
         INSERT INTO run_minions VALUES (1, 'm'), (2, 'm');",
    )
    .unwrap();
    // Interleaved, as two writers would leave them; one with a raw frame.
    for (id, run) in [(1, 1), (2, 2), (3, 1), (4, 2), (5, 1)] {
        let raw: Option<Vec<u8>> = (id == 3).then(|| b"raw \xff bytes".to_vec());
        conn.execute(
            "INSERT INTO events VALUES (?1, ?2, 'm', NULL, 'p', ?3, 'stdout', ?4, ?5)",
            rusqlite::params![id, run, 100 + id, format!(r#"{{"line":"e{id}"}}"#), raw],
        )
        .unwrap();
    }
    drop(conn);

    let location = Location::Sqlite(path.clone());
    let mut store = Store::open(&location).unwrap();
    let runs = store.list(&ListFilter::default()).unwrap();
    assert_eq!(runs.len(), 2);
    let (r2, r1) = (&runs[0], &runs[1]);
    let e1 = store.events(r1).unwrap();
    let e2 = store.events(r2).unwrap();
    let data = |es: &[historian::EventRow]| es.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
    assert_eq!(
        data(&e1),
        [r#"{"line":"e1"}"#, r#"{"line":"e3"}"#, r#"{"line":"e5"}"#]
    );
    assert_eq!(data(&e2), [r#"{"line":"e2"}"#, r#"{"line":"e4"}"#]);
    assert_eq!(e1.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(e1[1].raw.as_deref(), Some(&b"raw \xff bytes"[..]));
    assert_eq!(e1[1].ts.0, 103);
    assert_eq!(store.events_after(r1, 2, 10).unwrap().len(), 1);
    drop(store);

    // It takes new runs afterwards.
    let history = History::open(&location).unwrap();
    let run = history.start_run(RunMeta::current(vec![])).unwrap();
    let sink = run.sink("m");
    for i in 0..10 {
        runner::EventSink::emit(&sink, line_event(i));
    }
    run.finish(RunStatus::Ok);
    history.close().unwrap();
    let mut store = Store::open(&location).unwrap();
    let last = store.find("last").unwrap();
    assert_eq!(store.events(&last).unwrap().len(), 10);
    assert_eq!(store.events(r1).unwrap().len(), 3);
    assert_eq!(historian::sqlite_integrity_check(&path).unwrap(), "ok");
}
