//! `ingot minion serve` and `ingot minion enroll`: the agent and its enrollment from the
//! command line. Errors are printed here; the functions return the exit code
//! ([`runner::exit`]).

use std::path::PathBuf;
use std::time::Duration;

use runner::exit;

use super::enroll::{default_name, enroll, EnrollOptions};
use super::{machine_id, Agent, AgentOptions};

/// `ingot minion serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentServeArgs {
    /// The minion tree (certs/ holds minion.crt, minion.key, ca.crt).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = crate::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// The master's HOST:PORT.
    #[arg(long = "master", value_name = "HOST:PORT", env = "INGOT_MASTER_ADDR")]
    pub master: String,
    /// This machine's id (default: /etc/machine-id).
    #[arg(long, value_name = "ID")]
    pub machine_id: Option<String>,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub max_backoff: f64,
}

/// `ingot minion enroll`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// The minion tree (the key and certificate go to its certs/).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = crate::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// The master's enrollment address HOST:PORT (`master serve --enroll-listen`).
    #[arg(long = "master", value_name = "HOST:PORT")]
    pub master: String,
    /// The master's CA certificate (MASTER/certs/ca.crt; public, safe to copy).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// The name to ask for (default: this host's name).
    #[arg(long)]
    pub name: Option<String>,
    /// A one-time token from `ingot certs token`.
    #[arg(long, env = "INGOT_ENROLL_TOKEN")]
    pub token: Option<String>,
    /// Seconds to wait for the operator to accept (exit 3 when still pending).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub wait: u64,
}

fn fail(code: i32, message: impl std::fmt::Display) -> i32 {
    eprintln!("ingot: error: {message}");
    code
}

/// `ingot minion serve`: connects to the master and runs its requests until interrupted.
pub fn serve(rt: &tokio::runtime::Runtime, a: &AgentServeArgs) -> i32 {
    if !a.minion.is_dir() {
        return fail(
            exit::USAGE,
            format!(
                "minion tree {} does not exist; create it with `ingot init minion {}`",
                a.minion.display(),
                a.minion.display()
            ),
        );
    }
    let max_backoff = match Duration::try_from_secs_f64(a.max_backoff) {
        Ok(d) => d,
        Err(e) => return fail(exit::USAGE, format!("--max-backoff: {e}")),
    };
    let opts = AgentOptions {
        minion: a.minion.clone(),
        master: a.master.clone(),
        machine_id: a.machine_id.clone().unwrap_or_else(machine_id),
        max_backoff,
        trim_code: true,
    };
    let agent = match Agent::new(opts) {
        Ok(agent) => agent,
        Err(e) => return fail(exit::FAILED, e),
    };
    rt.block_on(async move {
        tokio::select! {
            r = agent.run() => match r {
                Ok(()) => exit::SUCCESS,
                Err(e) => fail(exit::USAGE, e),
            },
            _ = tokio::signal::ctrl_c() => exit::SUCCESS,
        }
    })
}

/// `ingot minion enroll`: exit 0 once enrolled, 3 when still pending after `--wait`.
pub fn enroll_command(rt: &tokio::runtime::Runtime, a: &EnrollArgs) -> i32 {
    let o = EnrollOptions {
        minion: a.minion.clone(),
        master: a.master.clone(),
        ca: a.ca.clone(),
        name: a.name.clone().unwrap_or_else(default_name),
        token: a.token.clone(),
        wait: Duration::from_secs(a.wait),
    };
    match rt.block_on(enroll(&o)) {
        Ok(true) => {
            println!(
                "enrolled as {}: {}",
                o.name,
                o.minion.join("certs/minion.crt").display()
            );
            exit::SUCCESS
        }
        Ok(false) => fail(
            exit::UNAVAILABLE,
            format!(
                "still pending after {}s; on the master run `ingot certs accept {}`, then enroll again",
                a.wait, o.name
            ),
        ),
        Err(e) => fail(exit::FAILED, e),
    }
}
