//! Ingest throughput: a stream of small channel3 events recorded into an SQLite history while
//! a reader runs `ingot history show` (the real command, rendering the tree) over and over.
//!
//! `cargo bench -p historian` — the figure is the `thrpt` line, in events per second.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use historian::commands::HistoryCommand;
use historian::{History, Location, RunMeta, RunStatus};
use runner::EventSink;

const EVENTS_PER_ITER: u64 = 100_000;

fn event(i: u64) -> channel3::Event {
    channel3::Event::now(channel3::Message::new(
        Some("app/worker".into()),
        &channel3::Body::Stdout(channel3::Line::from_bytes(
            format!("request {i} served in 3ms\n").as_bytes(),
        )),
    ))
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let location = Location::Sqlite(dir.path().join("history.db"));
    let history = History::open(&location).unwrap();

    // A finished run of 2 000 events for the reader to show.
    let shown = history
        .start_run(RunMeta::current(vec!["web1".into()]))
        .unwrap();
    let sink = shown.sink("web1");
    for i in 0..2000 {
        sink.emit(event(i));
    }
    shown.finish(RunStatus::Ok);
    let shown_id = shown.id().to_owned();
    history.flush().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let shows = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, shows, location) = (stop.clone(), shows.clone(), location.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let cmd = HistoryCommand::Show {
                    run: shown_id.clone(),
                    failed: false,
                    raw: false,
                    json: false,
                };
                historian::commands::run(&location, cmd, &mut std::io::sink(), Default::default())
                    .unwrap();
                shows.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let run = history
        .start_run(RunMeta::current(vec!["web1".into()]))
        .unwrap();
    let sink = run.sink("web1");
    let mut group = c.benchmark_group("historian");
    group.throughput(Throughput::Elements(EVENTS_PER_ITER));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    let mut n = 0u64;
    group.bench_function("ingest_small_events_while_showing", |b| {
        b.iter(|| {
            for _ in 0..EVENTS_PER_ITER {
                sink.emit(event(n));
                n += 1;
            }
            history.flush().unwrap();
        })
    });
    group.finish();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    run.finish(RunStatus::Ok);
    history.close().unwrap();
    eprintln!(
        "reader completed {} `history show` runs of a 2000-event run during the benchmark",
        shows.load(Ordering::Relaxed)
    );
}

criterion_group!(benches, ingest);
criterion_main!(benches);
