//! The review scenario both backends must pass: real processes recorded, then every query.

#![allow(dead_code)]

use std::time::Duration;

use historian::commands::HistoryCommand;
use historian::render::Palette;
use historian::{
    History, ListFilter, Location, PruneFilter, RunMeta, RunStatus, StepEnd, StepOutcome,
    StepStart, Store,
};
use serde_json::json;

/// A frame the child writes on fd 3, byte for byte.
pub const FD3_FRAME_PAYLOAD: &[u8] = br#"[null, "step",  {"label": "half way"}]"#;
/// Bytes on fd 3 that are no netstring at all.
pub const FD3_GARBAGE: &[u8] = b"\x1b[2J not a frame\xff\xfe";

fn script() -> String {
    let len = FD3_FRAME_PAYLOAD.len();
    let payload = std::str::from_utf8(FD3_FRAME_PAYLOAD).unwrap();
    // A 100 000-byte line, binary and escape sequences on stderr, a good frame and garbage on fd 3.
    format!(
        "printf 'hello\\n'; head -c 100000 /dev/zero | tr '\\0' x; echo; \
         printf 'bin\\377\\033[31mred\\n' >&2; \
         printf '%s:%s,' {len} '{payload}' >&3; \
         printf '\\033[2J not a frame\\377\\376' >&3"
    )
}

async fn run_process(sink: &dyn runner::EventSink) -> i32 {
    let prog = runner::Program::new("/bin/sh").args(["-c".to_owned(), script()]);
    runner::run(&prog, sink).await.expect("sh runs").code()
}

/// Records run A (failed: web1 file changed with a real process, db1 service failed) and then
/// run B (ok, web1 file unchanged). Returns their ids.
pub fn record_two_runs(location: &Location) -> (String, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let history = History::open(location).expect("history opens");
    let a = history
        .start_run(RunMeta {
            command: vec!["ingot".into(), "apply".into()],
            user: "alice".into(),
            targets: vec!["web1".into(), "db1".into()],
        })
        .unwrap();
    let step = a.begin_step(StepStart {
        minion: "web1".into(),
        kind: "file".into(),
        action: "conform".into(),
        desired: json!({"path": "/etc/app.conf", "content": "pw=hunter2", "sensitive": ["content"]}),
    });
    let code = rt.block_on(run_process(&step.sink()));
    assert_eq!(code, 0);
    step.finish(StepEnd {
        before: Some(json!({"path": "/etc/app.conf", "exists": true, "content": "old hunter2"})),
        after: Some(json!({"path": "/etc/app.conf", "exists": true, "content": "pw=hunter2"})),
        outcome: Some(StepOutcome::Changed),
        error: None,
    });
    let failing = a.begin_step(StepStart {
        minion: "db1".into(),
        kind: "service".into(),
        action: "restart".into(),
        desired: json!({"name": "postgresql"}),
    });
    std::thread::sleep(Duration::from_millis(5));
    failing.finish(StepEnd {
        outcome: Some(StepOutcome::Failed),
        error: Some("service postgresql not found".into()),
        ..StepEnd::default()
    });
    assert_eq!(a.derived_status(), RunStatus::Failed);
    a.finish(a.derived_status());
    let a_id = a.id().to_owned();
    drop(a);
    std::thread::sleep(Duration::from_millis(2));

    let b = history
        .start_run(RunMeta {
            command: vec!["ingot".into(), "apply".into()],
            user: "bob".into(),
            targets: vec!["web1".into()],
        })
        .unwrap();
    b.record_step(historian::StepRecord {
        start: StepStart {
            minion: "web1".into(),
            kind: "file".into(),
            action: "inspect".into(),
            desired: json!({"path": "/etc/motd"}),
        },
        end: StepEnd {
            outcome: Some(StepOutcome::Unchanged),
            ..StepEnd::default()
        },
        started: channel3::Timestamp::now(),
        duration: Duration::from_millis(3),
    });
    b.finish(b.derived_status());
    let b_id = b.id().to_owned();
    drop(b);
    history.close().expect("everything committed");
    (a_id, b_id)
}

fn cli(location: &Location, cmd: HistoryCommand) -> (i32, Vec<u8>) {
    let mut out = Vec::new();
    let code = historian::commands::run(location, cmd, &mut out, Palette::default())
        .expect("command runs");
    (code, out)
}

fn ids(runs: &[historian::RunSummary]) -> Vec<&str> {
    runs.iter().map(|r| r.id.as_str()).collect()
}

/// Every review query against the two recorded runs.
pub fn check_review(location: &Location) {
    let (a, b) = record_two_runs(location);
    let mut store = Store::open(location).expect("store opens");

    // list: newest first, with filters and counts.
    let all = store.list(&ListFilter::default()).unwrap();
    assert_eq!(ids(&all), [b.as_str(), a.as_str()]);
    assert_eq!((all[1].steps, all[1].changed, all[1].failed), (2, 1, 1));
    assert_eq!(all[1].status, RunStatus::Failed);
    assert_eq!(
        all[1].minions,
        ["db1", "web1"],
        "minions with steps or events"
    );
    let only = |f: ListFilter, store: &mut Store| {
        store
            .list(&f)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        only(
            ListFilter {
                status: Some(RunStatus::Failed),
                ..Default::default()
            },
            &mut store
        ),
        [a.as_str()]
    );
    assert_eq!(
        only(
            ListFilter {
                status: Some(RunStatus::Ok),
                ..Default::default()
            },
            &mut store
        ),
        [b.as_str()]
    );
    assert_eq!(
        only(
            ListFilter {
                resource: Some("service".into()),
                ..Default::default()
            },
            &mut store
        ),
        [a.as_str()]
    );
    assert_eq!(
        only(
            ListFilter {
                minion: Some("web1".into()),
                ..Default::default()
            },
            &mut store
        )
        .len(),
        2
    );
    assert_eq!(
        only(
            ListFilter {
                limit: 1,
                ..Default::default()
            },
            &mut store
        ),
        [b.as_str()]
    );
    let future = channel3::Timestamp(channel3::Timestamp::now().0 + 60_000_000);
    assert!(only(
        ListFilter {
            since: Some(future),
            ..Default::default()
        },
        &mut store
    )
    .is_empty());

    // find: last, prefixes.
    assert_eq!(store.find("last").unwrap().id, b);
    assert_eq!(store.find(&a[..30]).unwrap().id, a);
    assert!(matches!(
        store.find("ffffffff"),
        Err(historian::Error::NoSuchRun(_))
    ));

    // detail: redaction, exact raw bytes, huge line, binary.
    let d = store.detail(&a).unwrap();
    assert_eq!(d.steps.len(), 2);
    let s1 = &d.steps[0];
    assert_eq!(s1.desired.as_ref().unwrap()["content"], "***");
    assert_eq!(s1.before.as_ref().unwrap()["content"], "***");
    assert_eq!(s1.after.as_ref().unwrap()["content"], "***");
    assert!(s1.duration_us.unwrap() > 0);
    assert_eq!(
        d.steps[1].error.as_deref(),
        Some("service postgresql not found")
    );
    let with_raw: Vec<_> = d.events.iter().filter_map(|e| e.raw.clone()).collect();
    assert!(
        with_raw.iter().any(|r| r == FD3_FRAME_PAYLOAD),
        "exact frame kept"
    );
    assert!(
        with_raw
            .iter()
            .any(|r| r.windows(FD3_GARBAGE.len()).any(|w| w == FD3_GARBAGE)),
        "garbage kept byte for byte"
    );
    let stdout: usize = d
        .events
        .iter()
        .filter(|e| e.key == "stdout")
        .map(|e| {
            serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["line"]
                .as_str()
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(stdout, "hello\n".len() + 100_001);
    assert!(d
        .events
        .iter()
        .all(|e| e.step == Some(1) && e.minion == "web1"));
    assert_eq!(d.run.events as usize, d.events.len());

    // show: the tree, safe for a terminal, failures first on request.
    let (code, out) = cli(
        location,
        HistoryCommand::Show {
            run: a.clone(),
            failed: false,
            raw: false,
            json: false,
        },
    );
    assert_eq!(code, 1, "a failed run shows with exit 1");
    let text = String::from_utf8(out).expect("show prints UTF-8 even for binary output");
    assert!(
        !text.contains('\x1b'),
        "no escape sequence reaches the terminal:\n{text}"
    );
    assert!(!text.contains("hunter2"));
    assert!(text.contains("[binary] bin\\xff\\u{1b}[31mred"), "{text}");
    assert!(text.find("minion web1").unwrap() < text.find("minion db1").unwrap());
    assert!(text.contains("process sh") && text.contains("hello"));
    assert!(text.lines().all(|l| l.len() < 3000), "huge lines are cut");
    let (_, out) = cli(
        location,
        HistoryCommand::Show {
            run: a.clone(),
            failed: true,
            raw: false,
            json: false,
        },
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.find("minion db1").unwrap() < text.find("minion web1").unwrap(),
        "{text}"
    );

    // show --raw: a channel3 stream holding the frames exactly as received.
    let (_, out) = cli(
        location,
        HistoryCommand::Show {
            run: a.clone(),
            failed: false,
            raw: true,
            json: false,
        },
    );
    let frames: Vec<channel3::Message> = channel3::Reader::new(&out[..])
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(frames.len(), d.events.len());
    let mut expect = Vec::new();
    channel3::netstring::encode_into(FD3_FRAME_PAYLOAD, &mut expect);
    assert!(out.windows(expect.len()).any(|w| w == expect));

    // show --json and export agree with the store.
    let (_, out) = cli(
        location,
        HistoryCommand::Show {
            run: b.clone(),
            failed: false,
            raw: false,
            json: true,
        },
    );
    let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(doc["run"]["id"], b);
    assert_eq!(doc["steps"][0]["outcome"], "unchanged");
    let (_, out) = cli(
        location,
        HistoryCommand::Export {
            run: a.clone(),
            format: historian::commands::ExportFormat::Jsonl,
        },
    );
    let lines: Vec<serde_json::Value> = out
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "run");
    assert_eq!(lines.iter().filter(|l| l["type"] == "step").count(), 2);
    assert_eq!(
        lines.iter().filter(|l| l["type"] == "event").count(),
        d.events.len()
    );
    assert!(lines.iter().any(|l| l["raw_b64"].is_string()));

    // stats.
    let stats = store.stats(5).unwrap();
    assert_eq!((stats.runs, stats.steps), (2, 3));
    assert_eq!(stats.events as usize, d.events.len());
    assert_eq!(stats.failures_by_resource.len(), 1);
    assert_eq!(
        (
            stats.failures_by_resource[0].name.as_str(),
            stats.failures_by_resource[0].failed
        ),
        ("service", 1)
    );
    assert_eq!(stats.failures_by_minion[0].name, "db1");
    assert!(stats.slowest[0].duration_us >= stats.slowest[1].duration_us);

    // prune: dry run changes nothing; by status deletes only matching runs with their rows.
    let everything = PruneFilter {
        before: channel3::Timestamp::now(),
        statuses: vec![],
    };
    let dry = store.prune(&everything, true).unwrap();
    assert_eq!(dry.runs.len(), 2);
    assert_eq!(store.list(&ListFilter::default()).unwrap().len(), 2);
    let old = PruneFilter {
        before: channel3::Timestamp(0),
        statuses: vec![],
    };
    assert!(
        store.prune(&old, false).unwrap().runs.is_empty(),
        "nothing is that old"
    );
    let failed = PruneFilter {
        before: channel3::Timestamp::now(),
        statuses: vec![RunStatus::Failed],
    };
    let gone = store.prune(&failed, false).unwrap();
    assert_eq!(gone.runs, [a.as_str()]);
    assert_eq!(gone.events as usize, d.events.len());
    assert_eq!(
        ids(&store.list(&ListFilter::default()).unwrap()),
        [b.as_str()]
    );
    assert!(store.find(&a).is_err());
    assert_eq!(store.stats(5).unwrap().events, 0);
}

/// Steps found by action across runs, then some runs deleted by id (running runs kept).
pub fn check_action_steps_and_delete(location: &Location) {
    let history = History::open(location).expect("history opens");
    let job = |run: &historian::RunHandle, minion: &str, id: &str, outcome| {
        run.record_step(historian::StepRecord {
            start: StepStart {
                minion: minion.into(),
                kind: "run".into(),
                action: "job".into(),
                desired: json!({"job_id": id, "verb": "RUN"}),
            },
            end: StepEnd {
                after: Some(json!({"stdout": "hi\n"})),
                outcome: Some(outcome),
                ..StepEnd::default()
            },
            started: channel3::Timestamp::now(),
            duration: Duration::from_millis(2),
        })
    };
    let first = history
        .start_run(RunMeta::current(vec!["d1".into()]))
        .unwrap();
    job(&first, "d1", "j1", StepOutcome::Changed);
    job(&first, "d2", "j1", StepOutcome::Failed);
    first.record_step(historian::StepRecord {
        start: StepStart {
            minion: "d1".into(),
            kind: "file".into(),
            action: "conform".into(),
            desired: json!({}),
        },
        end: StepEnd::default(),
        started: channel3::Timestamp::now(),
        duration: Duration::ZERO,
    });
    first.finish(first.derived_status());
    std::thread::sleep(Duration::from_millis(2));
    let live = history
        .start_run(RunMeta::current(vec!["d1".into()]))
        .unwrap();
    let no = job(&live, "d1", "j2", StepOutcome::Unchanged);
    runner::EventSink::emit(
        &live.step_sink("d1", no),
        channel3::Event::now(channel3::Message::new(
            Some("run".into()),
            &channel3::Body::Stdout(channel3::Line::from_bytes(b"hi\n")),
        )),
    );
    history.flush().unwrap();

    let mut store = Store::open(location).expect("store opens");
    let found = store.steps_with_action("job").unwrap();
    let seen: Vec<(&str, &str, StepOutcome)> = found
        .iter()
        .map(|s| {
            (
                s.step.desired.as_ref().unwrap()["job_id"].as_str().unwrap(),
                s.step.minion.as_str(),
                s.step.outcome,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("j1", "d1", StepOutcome::Changed),
            ("j1", "d2", StepOutcome::Failed),
            ("j2", "d1", StepOutcome::Unchanged)
        ]
    );
    assert_eq!(found[0].run, first.id());
    assert_eq!(found[0].status, RunStatus::Failed);
    assert_eq!(found[2].status, RunStatus::Running);
    assert_eq!(found[0].step.after.as_ref().unwrap()["stdout"], "hi\n");
    let d = store.detail(live.id()).unwrap();
    assert_eq!(d.events.len(), 1);
    assert_eq!(d.events[0].step, Some(no), "the event belongs to its step");

    // A running run and an unknown id are left alone.
    let ids = vec![
        first.id().to_owned(),
        live.id().to_owned(),
        "nope".to_owned(),
    ];
    let gone = store.delete_runs(&ids).unwrap();
    assert_eq!(gone.runs, [first.id()]);
    assert_eq!(gone.steps, 3);
    assert!(store.find(first.id()).is_err());
    assert_eq!(store.steps_with_action("job").unwrap().len(), 1);
    live.finish(live.derived_status());
    history.flush().unwrap();
    let gone = store.delete_runs(&ids[1..]).unwrap();
    assert_eq!((gone.runs.len(), gone.events), (1, 1));
    assert!(store.steps_with_action("job").unwrap().is_empty());
}
