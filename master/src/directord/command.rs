//! The operator's side of `ingot exec --master DIR` and `ingot orchestrate --master DIR`: the
//! jobs are built here (verb strings parsed against a scratch minion tree of the built-ins plus
//! `MASTER/resources/`; ADD/COPY globs expanded in the working directory, each file named by
//! its SHA3-224 and uploaded to the master's store unless it holds that content), then handed
//! to the running master over the control socket ([`super::relay`] runs them there). As in
//! Directord, without `--poll`, `--wait` or `--stream` the command returns once the master
//! took the jobs in, printing `Job received. Task ID: ID` for each (follow them with `ingot
//! manage --job-info ID`); with one of them it prints each job's result as it finishes. Errors
//! are printed here; the functions return the exit code ([`runner::exit`]).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use minion::directord::cache::Cache;
use minion::directord::command::{ExecArgs, ExecPlan, OrchestrateArgs, Show};
use minion::directord::{Engine, Job};
use runner::exit;
use tokio::runtime::Runtime;

use crate::control::{request, ControlReply, ControlRequest, DirectordRequest, Requester};
use crate::exit::CommandError;

/// A scratch minion tree (built-ins plus `MASTER/resources/*`) to parse verb strings with.
fn operator_engine(master: &Path) -> Result<(tempfile::TempDir, Engine), String> {
    let tmp = tempfile::Builder::new()
        .prefix("ingot-operator")
        .tempdir()
        .map_err(|e| format!("creating a scratch directory: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("locating ingot: {e}"))?;
    minion::layout::init(tmp.path(), &exe, false).map_err(|e| e.to_string())?;
    if let Ok(dir) = std::fs::read_dir(master.join("resources")) {
        for e in dir.flatten() {
            let link = tmp.path().join("resources").join(e.file_name());
            if !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    let cache = Cache::for_minion(tmp.path()).map_err(|e| e.to_string())?;
    let m = Arc::new(minion::Minion::new(tmp.path()));
    Ok((tmp, Engine::new(m, "operator", cache)))
}

/// Uploads the ADD/COPY sources of `jobs` to the master's store (content it holds is not
/// sent again).
fn upload_sources(rt: &Runtime, master: &Path, jobs: &[Job]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for j in jobs {
        if let (Some(from), Some(sha)) = (j.str("file_from"), j.str("file_sha3_224")) {
            if seen.insert(sha) {
                rt.block_on(super::transfer::upload(master, Path::new(from), sha))
                    .map_err(|e| format!("{from}: {e}"))?;
            }
        }
    }
    Ok(())
}

fn send(rt: &Runtime, master: &Path, req: DirectordRequest, cmd: &str) -> i32 {
    let mut code = exit::FAILED;
    let history = req.history_command.clone();
    let req = ControlRequest::Directord(req);
    let asked = request(master, &req, |reply| {
        match reply {
            ControlReply::Progress(p) => print!("{p}"),
            ControlReply::Done { stdout, code: c } => {
                print!("{stdout}");
                code = c;
            }
            ControlReply::Usage(e) => {
                eprintln!("ingot {cmd}: error: {e}");
                code = exit::USAGE;
            }
            ControlReply::Error(e) => {
                eprintln!("ingot {cmd}: error: {e}");
                code = exit::FAILED;
            }
            ControlReply::Nodes(_) => {}
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    });
    let r = rt.block_on(async {
        tokio::select! {
            r = asked => Some(r),
            signal = crate::apply::session::stop_signal() => {
                eprintln!(
                    "ingot {cmd}: interrupted by {signal}: the jobs already sent go on in the master; see them with `ingot manage{} --list-jobs` or `{history} list`",
                    crate::layout::master_flag(master)
                );
                None
            }
        }
    });
    let Some(r) = r else {
        return exit::INTERRUPTED;
    };
    match r {
        Ok(()) => code,
        Err(e) => {
            eprintln!("ingot {cmd}: error: {e}");
            CommandError::from(e).exit_code()
        }
    }
}

fn usage_error(cmd: &str, e: impl std::fmt::Display) -> i32 {
    eprintln!("ingot {cmd}: error: {e}");
    exit::USAGE
}

/// Uploads the jobs' ADD/COPY sources and hands the jobs to the master.
fn submit(rt: &Runtime, master: &Path, jobs: Vec<Job>, show: &Show, cmd: &str) -> i32 {
    if let Err(e) = upload_sources(rt, master, &jobs) {
        return usage_error(cmd, e);
    }
    let detach = !show.waits();
    if detach && show.check {
        eprintln!(
            "ingot {cmd}: note: --check lists the failed jobs only with --poll, --wait or --stream; \
             the jobs are submitted without waiting (see them with `ingot manage{} --list-jobs`)",
            crate::layout::master_flag(master)
        );
    }
    let req = DirectordRequest {
        jobs,
        stream: show.stream,
        pipeline: show.pipeline.into(),
        check: show.check,
        detach,
        origin: Requester::current(),
        history_command: crate::apply::history_command(master, None),
    };
    send(rt, master, req, cmd)
}

/// `ingot exec --master DIR`: returns the exit code.
pub fn exec(rt: &Runtime, a: &ExecArgs, master: &Path) -> i32 {
    let built = rt.block_on(async {
        let (_tmp, engine) = operator_engine(master)?;
        minion::directord::command::exec_plan(&engine, a)
            .await
            .map_err(|e| e.to_string())
    });
    match built {
        Ok(ExecPlan::Jobs(jobs)) => submit(rt, master, jobs, &a.show, "exec"),
        Ok(ExecPlan::Help(help)) => {
            print!("{help}");
            exit::SUCCESS
        }
        Err(e) => usage_error("exec", e),
    }
}

/// `ingot orchestrate --master DIR`: returns the exit code.
pub fn orchestrate(rt: &Runtime, a: &OrchestrateArgs, master: &Path) -> i32 {
    let built = rt.block_on(async {
        let (_tmp, engine) = operator_engine(master)?;
        minion::directord::command::orchestrate_plan(&engine, a)
            .await
            .map_err(|e| e.to_string())
    });
    match built {
        Ok(Some(jobs)) => submit(rt, master, jobs, &a.show, "orchestrate"),
        Ok(None) => exit::SUCCESS,
        Err(e) => usage_error("orchestrate", e),
    }
}
