//! The master's commands: `ingot init master` and `ingot apply`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use historian::{History, Location, RunMeta, RunStatus};

use crate::apply::{apply_to, exit_code, print_outcome, ApplyCommand, Forget};
use crate::local::LocalMinion;
use crate::record::HistoryObserver;
use crate::routine::{ApplyOptions, MinionReport, MinionStatus};

/// Where a master tree lives when no `--master` is given.
pub const DEFAULT_DIR: &str = "/var/lib/ingot/master";

/// `ingot init master DIR`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitMasterArgs {
    /// The directory to lay out (created if missing).
    pub dir: PathBuf,
}

/// The routine's options, shared by `ingot apply` and `ingot master run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RoutineArgs {
    /// Plan only: show the steps and diffs, change nothing.
    #[arg(long)]
    pub check: bool,
    /// With --check: exit 2 when changes are pending.
    #[arg(long)]
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
}

impl RoutineArgs {
    /// As the routine's options.
    pub fn options(&self) -> ApplyOptions {
        ApplyOptions {
            check: self.check,
            max_rounds: self.max_rounds,
            fail_fast: self.fail_fast,
            actor_timeout: Duration::from_secs(self.actor_timeout),
        }
    }
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
    /// Do not record this run.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// Run on these connected minions (names or globs) through the running master
    /// (`ingot master serve`) instead of on the local minion tree (--minion, --name and
    /// --history are then not used: the master records the run).
    #[arg(long, num_args = 1.., value_name = "GLOB")]
    pub targets: Vec<String>,
}

/// Lays out a master tree; safe to re-run (existing files are left alone).
pub fn init_master(args: &InitMasterArgs) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for (sub, mode) in [
        ("logs", 0o755),
        ("certs", 0o700),
        ("actors", 0o755),
        ("resources", 0o755),
    ] {
        let path = args.dir.join(sub);
        let existed = path.is_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(&path)?;
        if sub == "certs" {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        println!(
            "{} {}",
            if existed { "exists " } else { "created" },
            path.display()
        );
    }
    let prescribe = args.dir.join("actors/prescribe");
    if !prescribe.exists() {
        println!(
            "next: write {} (reads facts on stdin, prints a JSON array of resource states)",
            prescribe.display()
        );
    }
    Ok(())
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "local".into())
}

fn run_status(reports: &[MinionReport]) -> RunStatus {
    if reports.iter().any(|r| r.status == MinionStatus::Failed) {
        RunStatus::Failed
    } else if reports
        .iter()
        .any(|r| matches!(r.status, MinionStatus::Changed))
    {
        RunStatus::Changed
    } else {
        RunStatus::Ok
    }
}

fn check_dir(path: &Path, what: &str, init: &str) -> Result<(), String> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "{what} {} does not exist; create it with `ingot init {init} {}` or pass --{init} DIR",
            path.display(),
            path.display()
        ))
    }
}

/// `ingot apply` against a local minion tree; returns the exit code.
pub fn apply(rt: &tokio::runtime::Runtime, args: &ApplyArgs) -> Result<i32, String> {
    if !args.targets.is_empty() {
        return crate::net::cli::apply_remote(rt, args);
    }
    check_dir(&args.master, "master tree", "master")?;
    check_dir(&args.minion, "minion tree", "minion")?;
    let cmd = ApplyCommand {
        master: args.master.clone(),
        minion: args.minion.clone(),
        options: args.routine.options(),
        json: args.routine.json,
        detailed_exitcode: args.routine.detailed_exitcode,
    };
    let name = args.name.clone().unwrap_or_else(host_name);
    let link = LocalMinion::new(name.clone(), minion::Minion::new(&args.minion));
    let history = if args.no_history {
        None
    } else {
        let location = Location::resolve(args.history.as_deref(), Some(&args.master), None);
        match History::open(&location) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("ingot: warning: not recording this run ({e}); pass --no-history to silence this");
                None
            }
        }
    };
    let run = history.as_ref().and_then(|h| {
        h.start_run(RunMeta::current(vec![name.clone()]))
            .inspect_err(|e| eprintln!("ingot: warning: not recording this run: {e}"))
            .ok()
    });
    let reports = match &run {
        Some(run) => rt.block_on(apply_to(&cmd, &link, &HistoryObserver::new(run))),
        None => rt.block_on(apply_to(&cmd, &link, &Forget)),
    };
    if let Some(run) = &run {
        run.finish(run_status(&reports));
    }
    let run_id = run.as_ref().map(|r| r.id().to_owned());
    if let Some(h) = history {
        if let Err(e) = h.close() {
            eprintln!("ingot: warning: the history of this run may be incomplete: {e}");
        }
    }
    print_outcome(&cmd, &reports, run_id.as_deref());
    Ok(exit_code(&reports, cmd.detailed_exitcode))
}

/// `ingot run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The channel3 name of the child (default: the program's file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Kill the child's process group after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL on timeout.
    #[arg(long, value_name = "SECS")]
    pub grace: Option<f64>,
    /// Run as this user (name or uid).
    #[arg(long)]
    pub user: Option<String>,
    /// Run with this group (name or gid).
    #[arg(long)]
    pub group: Option<String>,
    /// Working directory of the child.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Write the channel3 events to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Record into this history (SQLite path or postgres:// URL; default: $INGOT_HISTORY, else
    /// $XDG_STATE_HOME/ingot/history.db).
    #[arg(long, value_name = "PATH|URL")]
    pub history: Option<String>,
    /// Do not record this run in the history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROG ARGS")]
    pub argv: Vec<String>,
}

fn seconds(s: Option<f64>, flag: &str) -> Result<Option<Duration>, String> {
    s.map(|v| {
        Duration::try_from_secs_f64(v)
            .map_err(|_| format!("{flag} must be a non-negative number of seconds, not {v}"))
    })
    .transpose()
}

/// `ingot run`: the runner as a command, recorded in the history unless `--no-history`.
/// Returns the child's exit code (128+signal when killed, 127 when it could not be run).
pub fn run(
    rt: &tokio::runtime::Runtime,
    a: RunArgs,
    upstream_fd3: Option<std::os::fd::OwnedFd>,
) -> Result<i32, String> {
    let cmd = runner::command::RunCommand {
        argv: a.argv,
        name: a.name,
        timeout: seconds(a.timeout, "--timeout")?,
        grace: seconds(a.grace, "--grace")?,
        user: a.user,
        group: a.group,
        cwd: a.cwd,
        events: a.events,
    };
    let sink = runner::command::event_output(upstream_fd3, cmd.events.as_ref())
        .map_err(|e| format!("opening the events output: {e}"))?;
    let history = historian::open_for_command(a.history.as_deref(), a.no_history);
    let recording = history.as_ref().and_then(|h| {
        historian::CommandRecording::start(h, &cmd)
            .inspect_err(|e| eprintln!("ingot: warning: not recording this run: {e}"))
            .ok()
    });
    let code = match &recording {
        Some(r) => rt.block_on(runner::command::run_command(
            &cmd,
            &historian::Tee(r.sink(), &sink),
        )),
        None => rt.block_on(runner::command::run_command(&cmd, &sink)),
    };
    sink.close();
    if let Some(r) = recording {
        r.finish(&code);
    }
    if let Some(Err(e)) = history.map(historian::History::close) {
        eprintln!("ingot: warning: the history may be incomplete: {e}");
    }
    match code {
        Ok(c) => Ok(c),
        Err(e @ runner::RunError::Spawn { .. }) => {
            eprintln!("ingot: error: {e}");
            Ok(127)
        }
        Err(e) => Err(e.to_string()),
    }
}
