//! `ingot bench`: workloads that measure the real thing end to end (real processes, real files).
//!
//! `ingot bench apply --files N` lays out a master and a minion in a temporary directory, with a
//! prescription of N files, and times the routine twice: with every file needing creation, and
//! with every file already correct (W3). Built-in resources batch, so one inspect process covers
//! all N files; the conforms are one process each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::exit::CommandError;
use crate::record::Forget;
use crate::routine::actors::{Actors, MasterDir};
use crate::routine::local::LocalMinion;
use crate::routine::{converge, ApplyOptions, MinionStatus};

/// Options of `ingot bench apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchApplyArgs {
    /// Files in the prescription.
    #[arg(long, default_value_t = 1000)]
    pub files: usize,
    /// Timed runs of each scenario (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(files: usize) -> Result<(Scratch, PathBuf), String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("ingot-bench-{}-{nanos}", std::process::id()));
    let scratch = Scratch(dir.clone());
    let err = |e: std::io::Error| format!("setting up {}: {e}", dir.display());
    let exe = std::env::current_exe().map_err(err)?;
    minion::init(&dir.join("minion"), &exe, false).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(dir.join("master/actors")).map_err(err)?;
    let target = dir.join("target");
    let states: Vec<_> = (0..files)
        .map(|i| {
            json!({"kind": "file", "path": target.join(format!("f{i:05}")).display().to_string(),
                   "content": format!("file {i}\n"), "mode": "0640"})
        })
        .collect();
    std::fs::write(
        dir.join("master/prescription.json"),
        serde_json::to_vec(&states).expect("JSON"),
    )
    .map_err(err)?;
    let prescribe = dir.join("master/actors/prescribe");
    std::fs::write(
        &prescribe,
        format!(
            "#!/bin/sh\nexec cat {}\n",
            dir.join("master/prescription.json").display()
        ),
    )
    .map_err(err)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&prescribe, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
    Ok((scratch, target))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn reset(target: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(target);
    std::fs::create_dir_all(target).map_err(|e| e.to_string())
}

/// Runs the workload and prints the figures.
pub fn bench_apply(
    rt: &tokio::runtime::Runtime,
    args: &BenchApplyArgs,
) -> Result<i32, CommandError> {
    let (scratch, target) = setup(args.files).map_err(CommandError::Failed)?;
    let master = Actors::new(MasterDir::new(scratch.0.join("master")));
    let opts = ApplyOptions::default();
    let mut create = Vec::new();
    let mut correct = Vec::new();
    for _ in 0..args.iterations.max(1) {
        reset(&target).map_err(CommandError::Failed)?;
        // A fresh link each time, so describe caching is part of what is measured.
        let link = LocalMinion::new("bench", minion::Minion::new(scratch.0.join("minion")));
        let t = Instant::now();
        let r = rt.block_on(converge(&master, &link, &opts, &Forget));
        create.push(t.elapsed());
        if r.status != MinionStatus::Changed {
            return Err(CommandError::failed(format!(
                "the create run did not converge: {:?}",
                r.error
            )));
        }
        let t = Instant::now();
        let r = rt.block_on(converge(&master, &link, &opts, &Forget));
        correct.push(t.elapsed());
        if r.status != MinionStatus::Ok {
            return Err(CommandError::failed(format!(
                "the W3 run found changes: {:?}",
                r.error
            )));
        }
    }
    let (c, w) = (median(create), median(correct));
    if args.json {
        println!(
            "{}",
            json!({"files": args.files, "iterations": args.iterations,
            "create_median_ms": c.as_secs_f64() * 1e3, "correct_median_ms": w.as_secs_f64() * 1e3})
        );
    } else {
        println!(
            "apply of {} files, median of {} runs:",
            args.files, args.iterations
        );
        println!(
            "  all need creating  {:>9.1} ms  ({:.0} µs per file)",
            c.as_secs_f64() * 1e3,
            c.as_secs_f64() * 1e6 / args.files as f64
        );
        println!(
            "  all correct (W3)   {:>9.1} ms  ({:.0} µs per file)",
            w.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e6 / args.files as f64
        );
    }
    Ok(0)
}
