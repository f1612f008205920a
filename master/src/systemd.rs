//! `ingot systemd-unit master|minion`: unit files for the master and the minion agent.

use std::path::PathBuf;

use crate::daemon::DEFAULT_LISTEN;
use crate::exit::CommandError;
use crate::layout::DEFAULT_DIR;

/// Which agent a unit file is for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UnitKind {
    /// `ingot master serve`.
    Master,
    /// `ingot minion serve`.
    Minion,
}

/// `ingot systemd-unit master|minion`.
#[derive(Debug, Clone, clap::Args)]
pub struct SystemdUnitArgs {
    /// master or minion.
    #[arg(value_enum)]
    pub kind: UnitKind,
    /// The master tree (master units).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DIR)]
    pub master_dir: PathBuf,
    /// The minion tree (minion units).
    #[arg(long, value_name = "DIR", default_value = minion::DEFAULT_DIR)]
    pub minion_dir: PathBuf,
    /// Where the master listens (master units) or is reached (minion units, HOST:PORT).
    #[arg(long, value_name = "ADDR")]
    pub address: Option<String>,
}

/// Prints a systemd unit file for the master or the minion agent.
pub fn systemd_unit(a: &SystemdUnitArgs) -> Result<i32, CommandError> {
    let exe = std::env::current_exe()
        .ok()
        .filter(|p| !p.starts_with("/tmp"))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/ingot"));
    let (what, exec) = match a.kind {
        UnitKind::Master => (
            "master",
            format!(
                "{} master --master {} serve --listen {}",
                exe.display(),
                a.master_dir.display(),
                a.address.as_deref().unwrap_or(DEFAULT_LISTEN)
            ),
        ),
        UnitKind::Minion => (
            "minion",
            format!(
                "{} minion serve --minion {} --master {}",
                exe.display(),
                a.minion_dir.display(),
                a.address.as_deref().ok_or_else(|| {
                    CommandError::usage("a minion unit needs --address HOST:PORT of the master")
                })?
            ),
        ),
    };
    print!(
        "[Unit]\nDescription=ingot {what}\nWants=network-online.target\nAfter=network-online.target\n\n\
         [Service]\nType=simple\nExecStart={exec}\nRestart=always\nRestartSec=2\n\
         Environment=INGOT_LOG=info\nKillMode=mixed\nLimitNOFILE=65536\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    Ok(0)
}
