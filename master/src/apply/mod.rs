//! `ingot apply`: one path from the command line to the routine, for the local minion tree and
//! for connected minions alike.
//!
//! The arguments become one [`ApplyRequest`] ([`request`]; serializable: for a fleet it travels
//! unchanged over the control socket to the master, [`request_apply`]). Both paths then take the same steps, in
//! [`session`]: start the run in the history, converge every minion at most
//! [`ApplyRequest::concurrency`] at once, finish the run with its status, and turn the reports
//! into the output and the exit code. They differ only in their minions (in-process, or
//! `fleet::RemoteMinion`s) and in where progress goes (stderr, or the control
//! socket).

use std::path::{Path, PathBuf};

use historian::{History, Location};

use crate::control::{ControlReply, ControlRequest};
use crate::exit::{require_dir, CommandError};
use crate::layout::DEFAULT_DIR;
use crate::routine::actors::{Actors, MasterDir};
use crate::routine::link::MinionLink as _;
use crate::routine::local::LocalMinion;
use crate::routine::report::{eprint_line, Style};

pub mod session;

pub use crate::control::ApplyRequest;
pub use session::{converge_all, finish_run, outcome, ApplyOutcome, ProgressObserver};

/// The routine's options, shared by `ingot apply` and `ingot master run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoutineArgs {
    /// Plan only: show the steps and diffs, change nothing.
    #[arg(long)]
    pub check: bool,
    /// With --check: exit 2 when changes are pending.
    #[arg(long, requires = "check")]
    pub detailed_exitcode: bool,
    /// Print one JSON result document on stdout instead of progress and recap.
    #[arg(long)]
    pub json: bool,
    /// Rounds of perform → inspect before giving up as "did not converge".
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rounds: u32,
    /// Stop at the first failed step (later steps are reported skipped).
    #[arg(long)]
    pub fail_fast: bool,
    /// Seconds an actor (prescribe, choreograph) may run.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub actor_timeout: u64,
    /// Minions driven at once (0: all of them).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub concurrency: usize,
}

/// `ingot apply`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApplyArgs {
    /// The master tree (actors/prescribe, actors/choreograph).
    #[arg(long, value_name = "DIR", env = "INGOT_MASTER", default_value = DEFAULT_DIR)]
    pub master: PathBuf,
    /// The minion tree to drive, in-process.
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = minion::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// The minion's name in reports and history (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// How the routine runs.
    #[command(flatten)]
    pub routine: RoutineArgs,
    /// Record into this history (SQLite path or postgres:// URL; default: MASTER/logs/history.db).
    #[arg(long, value_name = "PATH|URL", env = "INGOT_HISTORY")]
    pub history: Option<String>,
    /// Do not record this run (wins over INGOT_HISTORY and the settings file).
    #[arg(long)]
    pub no_history: bool,
    /// Run on these connected minions (names or globs) through the running master
    /// (`ingot master serve`) instead of on the local minion tree (--minion, --name and
    /// --history are then not used: the master records the run).
    #[arg(long, num_args = 1.., value_name = "GLOB")]
    pub targets: Vec<String>,
}

/// The request the command line makes, from this process (its user, its arguments).
pub fn request(routine: &RoutineArgs, targets: Vec<String>, no_history: bool) -> ApplyRequest {
    use std::io::IsTerminal as _;
    ApplyRequest {
        targets,
        check: routine.check,
        max_rounds: routine.max_rounds,
        fail_fast: routine.fail_fast,
        actor_timeout: routine.actor_timeout,
        json: routine.json,
        detailed_exitcode: routine.detailed_exitcode,
        concurrency: routine.concurrency,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        no_history,
        user: historian::current_user(),
        command: std::env::args().collect(),
        history_command: "ingot history".into(),
    }
}

/// The `ingot history` command that finds the history an apply with these flags records into,
/// to print in its recap: with `--master DIR` unless DIR is the default tree, or the
/// `--history` given on the command line (a location from `$INGOT_HISTORY` needs no flag).
pub fn history_command(master: &Path, history: Option<&str>) -> String {
    let from_env = std::env::var(historian::ENV_VAR).ok();
    match history {
        Some(h) if from_env.as_deref() != Some(h) => {
            format!("ingot history --history {}", shell_words::quote(h))
        }
        Some(_) => "ingot history".into(),
        None => format!("ingot history{}", crate::layout::master_flag(master)),
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "local".into())
}

/// `ingot apply`: on the local minion tree, or with `--targets` on connected minions through
/// the running master. Returns the exit code.
pub fn apply(rt: &tokio::runtime::Runtime, args: &ApplyArgs) -> Result<i32, CommandError> {
    let mut req = request(&args.routine, args.targets.clone(), args.no_history);
    req.history_command = history_command(&args.master, args.history.as_deref());
    if !req.targets.is_empty() {
        return rt.block_on(request_apply(&args.master, &req));
    }
    require_dir(&args.master, "master tree", "master")?;
    require_dir(&args.minion, "minion tree", "minion")?;
    let name = args.name.clone().unwrap_or_else(host_name);
    let history = if req.no_history {
        None
    } else {
        let location = Location::resolve(args.history.as_deref(), Some(&args.master), None);
        History::open(&location)
            .inspect_err(|e| {
                eprintln!(
                    "ingot: warning: not recording this run ({e}); pass --no-history to silence this"
                )
            })
            .ok()
    };
    let done = rt.block_on(apply_local(
        &req,
        &args.master,
        &args.minion,
        name,
        history.as_ref(),
    ));
    if let Some(h) = history {
        if let Err(e) = h.close() {
            eprintln!("ingot: warning: the history of this run may be incomplete: {e}");
        }
    }
    print!("{}", done.stdout);
    Ok(done.code)
}

/// The local half of the one path: the minion tree `minion`, in-process, under `name`.
async fn apply_local(
    req: &ApplyRequest,
    master: &Path,
    minion: &Path,
    name: String,
    history: Option<&History>,
) -> ApplyOutcome {
    let link = LocalMinion::new(name.clone(), minion::Minion::new(minion));
    let run = session::start_run(req, history, vec![name]);
    let actors = Actors::new(MasterDir::new(master));
    let started = std::time::Instant::now();
    let reports = {
        let recorder = session::recorder(run.as_ref());
        let observer = ProgressObserver::new(Style::stderr(), req.json, &*recorder, |line| {
            eprint_line(&line)
        });
        let tally = session::Tally::new(&observer);
        tokio::select! {
            reports = converge_all(req, &actors, std::slice::from_ref(&link), &tally) => reports,
            // Dropping the routine kills the process group of whatever runs (the runner's
            // guarantee) and ends the step being performed as abandoned.
            signal = session::stop_signal() => {
                tally.interrupted(&[link.name().to_owned()], signal, started.elapsed())
            }
        }
    };
    let run_id = finish_run(run, &reports);
    outcome(req, &reports, run_id.as_deref(), &Style::new(req.color))
}

/// `ingot apply --targets GLOB...` / `ingot master run`: asks the running master of
/// `master_dir` to apply `req`, printing its progress on stderr and its outcome on stdout;
/// returns the exit code.
pub async fn request_apply(master_dir: &Path, req: &ApplyRequest) -> Result<i32, CommandError> {
    let mut code = None;
    let mut error = None;
    crate::control::request(
        master_dir,
        &ControlRequest::Apply(req.clone()),
        |reply| match reply {
            ControlReply::Progress(line) => crate::routine::report::eprint_line(&line),
            ControlReply::Done { stdout, code: c } => {
                print!("{stdout}");
                code = Some(c);
            }
            ControlReply::Usage(e) => error = Some(CommandError::Usage(e)),
            ControlReply::Error(e) => error = Some(CommandError::Failed(e)),
            ControlReply::Nodes(_) => {}
        },
    )
    .await?;
    match (error, code) {
        (Some(e), _) => Err(e),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(CommandError::failed(
            "the master closed the connection before the run finished (did it stop or restart?); \
             see `ingot history list` on the master for what was recorded",
        )),
    }
}
