//! The `ingot` command line: parse, call into the crates, report errors, exit.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};

mod shell;

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
    /// Debug diagnostics: the same as `--log debug` (Directord's --debug); also INGOT_DEBUG.
    #[arg(long, global = true, env = "INGOT_DEBUG", value_parser = clap::builder::BoolishValueParser::new())]
    debug: bool,
    /// Settings file (YAML `key: value`, keys as the INGOT_* variables in lower case); flags
    /// and INGOT_* variables win over it. Default: $INGOT_CONFIG, else /etc/ingot/config.yaml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program through the runner: its output labelled as channel3 events.
    Run(master::program::RunArgs),
    /// Review recorded runs: list, show, follow, export, prune, stats.
    History(historian::commands::HistoryArgs),
    /// Lay out a directory tree (`ingot init minion DIR`).
    Init {
        #[command(subcommand)]
        what: InitWhat,
    },
    /// Run every executable in the minion's facts/ and print the combined fact document.
    Facts(minion::commands::FactsArgs),
    /// Run one resource action: resources/KIND ACTION with the state (JSON) from stdin.
    Resource(minion::commands::ResourceArgs),
    /// Converge a minion: facts → prescribe → inspect → choreograph → perform, until done.
    Apply(master::apply::ApplyArgs),
    /// Directord: run one verb string (`--verb RUN 'echo hi'`) on a local minion (--minion) or
    /// through the running master (--master).
    Exec(minion::directord::command::ExecArgs),
    /// Directord: run orchestration files (YAML) on a local minion (--minion) or through the
    /// running master (--master).
    Orchestrate(minion::directord::command::OrchestrateArgs),
    /// The master's private CA: init, issue, list, revoke minion certificates.
    Certs(master::ca::command::CertsArgs),
    /// The master server (`serve`), runs through it (`run --targets GLOB...`), its nodes.
    Master(master::daemon::MasterArgs),
    /// The minion agent (`serve`): connects out to the master and runs its requests.
    Minion {
        #[command(subcommand)]
        what: MinionWhat,
    },
    /// Directord's manage: nodes (--list-nodes, --export-nodes, --purge-nodes), the jobs run
    /// through the master (--list-jobs, --job-info, --analyze-job, --analyze-parent,
    /// --analyze-all, --export-jobs, --purge-jobs), the minions' caches (--dump-cache).
    Manage(master::daemon::ManageArgs),
    /// Print a systemd unit file for the master or the minion agent.
    SystemdUnit(master::systemd::SystemdUnitArgs),
    /// Bootstrap hosts over SSH from catalogs (RUN, ADD, GET; builtin:install|rotate|upgrade).
    Bootstrap(master::bootstrap::BootstrapArgs),
    /// Benchmark workloads on real processes and files.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Print a shell completion script (e.g. `ingot completions bash >
    /// /usr/share/bash-completion/completions/ingot`; zsh: a file `_ingot` in $fpath; fish:
    /// ~/.config/fish/completions/ingot.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of ingot (roff; e.g. `ingot man > /usr/local/share/man/man1/ingot.1`,
    /// or read it with `ingot man | man -l -`).
    Man,
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Apply N files that all need creating, then N files already correct (W3).
    Apply(master::bench::BenchApplyArgs),
}

#[derive(Subcommand)]
enum MinionWhat {
    /// Connect to the master and run its requests (reconnecting as needed).
    Serve(minion::agent::command::AgentServeArgs),
    /// Run N minion identities in one process (load tests, as Salt's minionswarm).
    Swarm(master::swarm::SwarmArgs),
    /// Get a certificate: generate the key here, have the master sign it (after `ingot certs
    /// accept NAME`, or at once with --token).
    Enroll(minion::agent::command::EnrollArgs),
}

#[derive(Subcommand)]
enum InitWhat {
    /// A minion tree: logs/, certs/, cache/, facts/, resources/, built-ins linked to this binary.
    Minion(minion::commands::InitMinionArgs),
    /// A master tree: logs/, certs/, actors/, resources/.
    Master(master::layout::InitMasterArgs),
}

fn main() -> ExitCode {
    // Busybox style: invoked under a built-in's name (a symlink in facts/ or resources/), run it.
    let mut argv = std::env::args_os();
    if let Some(name) = argv.next().as_deref().and_then(minion::builtin_name) {
        let name = name.to_owned();
        let args: Vec<_> = argv.collect();
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("INGOT_LOG")
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_writer(std::io::stderr)
            .with_ansi(stderr_is_styled())
            .init();
        let code =
            minion::busybox(std::ffi::OsStr::new(&name), &args).unwrap_or(runner::exit::USAGE);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // Before anything else opens a file: our own fd 3 (if a parent runner gave us one) must not
    // leak into children.
    let upstream_fd3 = runner::claim_inherited_fd3();
    let args: Vec<_> = std::env::args_os().collect();
    if let Err(e) = master::config::apply_to_env(&args) {
        eprintln!("ingot: error: {e}");
        return ExitCode::from(runner::exit::USAGE as u8);
    }
    let cli = Cli::parse();
    let log = if cli.debug { "debug" } else { &cli.log };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(stderr_is_styled())
        .init();
    match dispatch(cli, upstream_fd3) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("ingot: error: {e:#}");
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn dispatch(cli: Cli, upstream_fd3: Option<std::os::fd::OwnedFd>) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Init {
            what: InitWhat::Minion(a),
        } => Ok(minion::commands::init_minion(&a)),
        Command::Init {
            what: InitWhat::Master(a),
        } => {
            master::layout::init_master(&a).context("laying out the master tree")?;
            Ok(0)
        }
        Command::Apply(a) => Ok(master::apply::apply(&rt, &a)?),
        Command::Exec(a) => Ok(match &a.master {
            Some(m) => master::directord::command::exec(&rt, &a, m),
            None => minion::directord::command::exec(&rt, &a),
        }),
        Command::Orchestrate(a) => Ok(match &a.master {
            Some(m) => master::directord::command::orchestrate(&rt, &a, m),
            None => minion::directord::command::orchestrate(&rt, &a),
        }),
        Command::Certs(a) => Ok(master::ca::command::certs(&a)?),
        Command::Master(a) => Ok(master::daemon::master(&rt, &a)?),
        Command::Minion { what } => match what {
            MinionWhat::Serve(a) => Ok(minion::agent::command::serve(&rt, &a)),
            MinionWhat::Enroll(a) => Ok(minion::agent::command::enroll_command(&rt, &a)),
            MinionWhat::Swarm(a) => Ok(master::swarm::swarm(&rt, &a)?),
        },
        Command::Manage(a) => Ok(master::daemon::manage(&rt, &a)?),
        Command::SystemdUnit(a) => Ok(master::systemd::systemd_unit(&a)?),
        Command::Bootstrap(a) => Ok(master::bootstrap::cli(&rt, &a)),
        Command::Bench {
            what: BenchWhat::Apply(a),
        } => Ok(master::bench::bench_apply(&rt, &a)?),
        Command::Facts(a) => {
            let record = master::record::for_command(a.history.as_deref(), a.no_history, &a.minion);
            Ok(minion::commands::facts(&rt, &a, upstream_fd3, &*record))
        }
        Command::Resource(a) => {
            let record = master::record::for_command(a.history.as_deref(), a.no_history, &a.minion);
            Ok(minion::commands::resource(&rt, &a, upstream_fd3, &*record))
        }
        Command::History(a) => Ok(historian::commands::main(a)?),
        Command::Run(a) => Ok(master::program::run(&rt, a, upstream_fd3)?),
        Command::Completions { shell } => shell::completions(Cli::command(), shell),
        Command::Man => shell::man(Cli::command()),
    }
}

/// The exit code of a failed command: the one its error says ([`runner::exit`]), else 1.
fn exit_code(e: &anyhow::Error) -> i32 {
    if let Some(e) = e.downcast_ref::<master::exit::CommandError>() {
        e.exit_code()
    } else if let Some(e) = e.downcast_ref::<historian::Error>() {
        e.exit_code()
    } else {
        runner::exit::FAILED
    }
}

/// Whether ingot's own diagnostics may use colour: stderr is a terminal and `NO_COLOR` is unset.
fn stderr_is_styled() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}
