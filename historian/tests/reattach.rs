//! A run whose recorder died: marked interrupted, then completed by results that arrive late.

use historian::{
    History, ListFilter, Location, RunMeta, RunStatus, StepEnd, StepOutcome, StepStart, Store,
};
use runner::EventSink;
use serde_json::json;

fn said(text: &str) -> channel3::Event {
    channel3::Event::now(channel3::Message::new(
        Some("file".into()),
        &channel3::Body::Stderr(channel3::Line::from_bytes(text.as_bytes())),
    ))
}

/// The start of a `file` conform on web1 wanting `desired`.
fn conform_of_file(desired: serde_json::Value) -> StepStart {
    StepStart {
        minion: "web1".into(),
        kind: "file".into(),
        action: "conform".into(),
        desired,
    }
}

#[test]
fn a_run_left_running_is_interrupted_then_completed_by_late_results() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("history.db"));
    let id = {
        let history = History::open(&location).unwrap();
        let run = history
            .start_run(RunMeta::current(vec!["web1".into()]))
            .unwrap();
        let step = run.begin_step(conform_of_file(
            json!({"path": "/a", "token": "s3cret", "sensitive": ["token"]}),
        ));
        step.sink().emit(said("before the crash\n"));
        history.flush().unwrap();
        let id = run.id().to_owned();
        // The recorder dies: neither the step nor the run is ended.
        std::mem::forget(step);
        std::mem::forget(run);
        id
    };

    let history = History::open(&location).unwrap();
    assert!(history.interrupt_run(&id).unwrap());
    assert!(!history.interrupt_run(&id).unwrap(), "only a running run");
    assert!(!history.interrupt_run("no-such-run").unwrap());

    let run = history.reattach_run(&id).unwrap();
    assert_eq!(run.id(), id);
    run.step_sink("web1", 1).emit(said("after the restart\n"));
    // Step 1 was stored: it keeps its start; step 2 never was: it is created.
    run.end_step(
        1,
        conform_of_file(json!({"sensitive": ["token"]})),
        StepEnd {
            after: Some(json!({"path": "/a", "token": "s3cret"})),
            outcome: Some(StepOutcome::Changed),
            ..StepEnd::default()
        },
        channel3::Timestamp::now(),
        std::time::Duration::from_millis(1500),
    );
    run.end_step(
        2,
        conform_of_file(serde_json::Value::Null),
        StepEnd {
            outcome: Some(StepOutcome::Failed),
            error: Some("no space left".into()),
            ..StepEnd::default()
        },
        channel3::Timestamp::now(),
        std::time::Duration::from_millis(20),
    );
    // A reattached handle never ends the run.
    run.finish(RunStatus::Ok);
    drop(run);
    history.flush().unwrap();

    let mut store = Store::open(&location).unwrap();
    let detail = store.detail(&id).unwrap();
    assert_eq!(detail.run.status, RunStatus::Interrupted);
    assert!(detail.run.ended_us.is_some());
    assert_eq!(detail.steps.len(), 2);
    let (one, two) = (&detail.steps[0], &detail.steps[1]);
    assert_eq!(one.outcome, StepOutcome::Changed);
    assert_eq!(one.desired.as_ref().unwrap()["path"], "/a");
    assert_ne!(one.desired.as_ref().unwrap()["token"], "s3cret");
    assert_ne!(one.after.as_ref().unwrap()["token"], "s3cret");
    assert_eq!(one.duration_us, Some(1_500_000));
    assert_eq!(two.outcome, StepOutcome::Failed);
    assert_eq!(two.error.as_deref(), Some("no space left"));
    assert_eq!(two.desired, None);
    let lines: Vec<(Option<i64>, &str)> = detail
        .events
        .iter()
        .map(|e| (e.step, e.data.as_str()))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(|(step, _)| *step == Some(1)), "{lines:?}");
    assert!(lines[1].1.contains("after the restart"), "{lines:?}");
    assert_eq!(detail.run.events, 2);

    let interrupted = store
        .list(&ListFilter {
            status: Some(RunStatus::Interrupted),
            ..ListFilter::default()
        })
        .unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].id, id);
}

#[test]
fn after_commit_runs_once_what_came_before_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("history.db"));
    let history = History::open(&location).unwrap();
    let run = history
        .start_run(RunMeta::current(vec!["web1".into()]))
        .unwrap();
    let step = run.begin_step(conform_of_file(json!({"path": "/a"})));
    step.finish(StepEnd {
        outcome: Some(StepOutcome::Changed),
        ..StepEnd::default()
    });
    // The callback reads the store from another connection: the step's end must be there.
    let (tx, rx) = std::sync::mpsc::channel();
    let (loc, id) = (location.clone(), run.id().to_owned());
    history.after_commit(move |stored| {
        let mut store = Store::open(&loc).unwrap();
        let found = store.find(&id).unwrap();
        let steps = store.steps(&found).unwrap();
        let _ = tx.send((stored, steps.first().map(|s| s.outcome)));
    });
    let (stored, outcome) = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("called");
    assert!(stored);
    assert_eq!(outcome, Some(StepOutcome::Changed));
}
