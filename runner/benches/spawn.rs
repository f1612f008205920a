//! Runner overhead per spawn of `/bin/true` against a bare `std::process::Command` spawn.
use criterion::{criterion_group, criterion_main, Criterion};
use runner::{NullSink, Program};

fn spawn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("spawn_true");
    g.bench_function("bare_std_command", |b| {
        b.iter(|| std::process::Command::new("/bin/true").status().unwrap())
    });
    g.bench_function("bare_tokio_command", |b| {
        b.iter(|| {
            rt.block_on(async {
                tokio::process::Command::new("/bin/true")
                    .status()
                    .await
                    .unwrap()
            })
        })
    });
    let program = Program::new("/bin/true");
    g.bench_function("runner", |b| {
        b.iter(|| rt.block_on(runner::run(&program, &NullSink)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, spawn);
criterion_main!(benches);
