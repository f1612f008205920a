//! Inspect of 1000 file resources already in the desired state, one process per resource
//! through the runner (the real `ingot` binary via `resources/file` symlinks), against a bare
//! spawn of `/bin/true` 1000 times.
//!
//! Build the binary first (the benchmark runs it, it does not build it):
//! `cargo build --release --bin ingot && cargo bench -p minion --bench inspect`
//! (or point `INGOT_BIN` at an `ingot` binary).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use runner::{NullSink, Program};
use serde_json::{json, Value};

const N: usize = 1000;

fn ingot_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("INGOT_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("ingot");
        if p.exists() {
            return std::fs::canonicalize(p).expect("canonical path");
        }
    }
    panic!("no ingot binary: run `cargo build --release --bin ingot` first or set INGOT_BIN");
}

fn bench(c: &mut Criterion) {
    let bin = ingot_bin();
    eprintln!("using {}", bin.display());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("minion");
    minion::init(&dir, &bin, false).expect("init minion");
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let states: Vec<Value> = (0..N)
        .map(|i| json!({"kind": "file", "path": files.join(format!("f{i}")), "content": "x\n", "mode": "0644"}))
        .collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let m = minion::Minion::new(&dir).with_runner(runner::Runner::new(1));
    rt.block_on(async {
        let r = m
            .resource("file", "conform", &Value::Array(states.clone()), &NullSink)
            .await
            .unwrap();
        assert!(r
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["changes"] == json!({})));
    });

    let mut g = c.benchmark_group("inspect_1000");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(15));
    g.bench_function("file_inspect_one_process_each_via_runner", |b| {
        b.iter(|| {
            rt.block_on(async {
                for s in &states {
                    let v = m.resource("file", "inspect", s, &NullSink).await.unwrap();
                    assert_eq!(v["changes"], json!({}));
                }
            })
        })
    });
    g.bench_function("file_inspect_one_batch_process_via_runner", |b| {
        let batch = Value::Array(states.clone());
        b.iter(|| {
            rt.block_on(async {
                let v = m
                    .resource("file", "inspect", &batch, &NullSink)
                    .await
                    .unwrap();
                assert_eq!(v.as_array().unwrap().len(), N);
            })
        })
    });
    g.bench_function("bin_true_bare_spawn", |b| {
        b.iter(|| {
            for _ in 0..N {
                let s = Command::new("/bin/true")
                    .stdin(Stdio::null())
                    .status()
                    .unwrap();
                assert!(s.success());
            }
        })
    });
    g.bench_function("bin_true_via_runner", |b| {
        let p = Program::new("/bin/true");
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..N {
                    assert!(runner::run(&p, &NullSink).await.unwrap().success());
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
