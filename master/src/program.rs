//! `ingot run`: any program through the runner, its output labelled as channel3 events and
//! recorded in the history.

use std::path::PathBuf;
use std::time::Duration;

use crate::exit::CommandError;

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

fn seconds(s: Option<f64>, flag: &str) -> Result<Option<Duration>, CommandError> {
    s.map(|v| {
        Duration::try_from_secs_f64(v).map_err(|_| {
            CommandError::usage(format!(
                "{flag} must be a non-negative number of seconds, not {v}"
            ))
        })
    })
    .transpose()
}

/// `ingot run`: the runner as a command, recorded in the history unless `--no-history`.
/// Returns the child's exit code (128+signal when killed, 127 when it could not be run).
pub fn run(
    rt: &tokio::runtime::Runtime,
    a: RunArgs,
    upstream_fd3: Option<std::os::fd::OwnedFd>,
) -> Result<i32, CommandError> {
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
        .map_err(|e| CommandError::failed(format!("opening the events output: {e}")))?;
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
            Ok(runner::exit::NOT_RUN)
        }
        Err(e) => Err(CommandError::failed(e)),
    }
}
