//! The `ingot` command line: parse, call into the crates, report errors, exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ingot",
    version,
    about = "A script-driven configuration orchestrator"
)]
struct Cli {
    /// Log filter for ingot's own diagnostics (e.g. debug, ingot=trace); also INGOT_LOG.
    #[arg(long, global = true, env = "INGOT_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program through the runner: its output labelled as channel3 events.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// The channel3 name of the child (default: the program's file name).
    #[arg(long)]
    name: Option<String>,
    /// Kill the child's process group after this many seconds.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL on timeout.
    #[arg(long, value_name = "SECS")]
    grace: Option<f64>,
    /// Run as this user (name or uid).
    #[arg(long)]
    user: Option<String>,
    /// Run with this group (name or gid).
    #[arg(long)]
    group: Option<String>,
    /// Working directory of the child.
    #[arg(long)]
    cwd: Option<PathBuf>,
    /// Write the channel3 events to this file instead of stderr.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROG ARGS")]
    argv: Vec<String>,
}

fn seconds(s: Option<f64>, flag: &str) -> anyhow::Result<Option<Duration>> {
    s.map(|v| {
        Duration::try_from_secs_f64(v)
            .with_context(|| format!("{flag} must be a non-negative number of seconds, not {v}"))
    })
    .transpose()
}

fn main() -> ExitCode {
    // Before anything else opens a file: our own fd 3 (if a parent runner gave us one) must not
    // leak into children.
    let upstream_fd3 = runner::claim_inherited_fd3();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match dispatch(cli, upstream_fd3) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ingot: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli, upstream_fd3: Option<std::os::fd::OwnedFd>) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Run(a) => {
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
                .context("opening the events output")?;
            let code = rt.block_on(runner::command::run_command(&cmd, &sink));
            sink.close();
            match code {
                Ok(c) => Ok(c),
                Err(e @ runner::RunError::Spawn { .. }) => {
                    eprintln!("ingot: error: {e}");
                    Ok(127)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}
