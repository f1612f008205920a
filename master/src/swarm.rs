//! `ingot minion swarm`: many minion identities in one process, for load tests (as Salt's
//! minionswarm); it issues missing certificates from a master tree on the same machine.

use std::path::PathBuf;
use std::time::Duration;

use crate::ca::{install_minion_cert, Pki};
use crate::exit::CommandError;

/// `ingot minion swarm`.
#[derive(Debug, Clone, clap::Args)]
pub struct SwarmArgs {
    /// How many minions.
    #[arg(long, default_value_t = 100)]
    pub count: usize,
    /// Where their trees go (DIR/PREFIXNNNN); created with a static `me` fact (facts/me.json)
    /// and the file resource.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Name prefix.
    #[arg(long, default_value = "swarm-")]
    pub prefix: String,
    /// The master's HOST:PORT.
    #[arg(long = "master", value_name = "HOST:PORT")]
    pub master: String,
    /// A master tree on this machine to issue missing certificates from.
    #[arg(long, value_name = "DIR")]
    pub issue_from: Option<PathBuf>,
}

/// Runs `ingot minion swarm`: `count` agents in this process until interrupted.
pub fn swarm(rt: &tokio::runtime::Runtime, a: &SwarmArgs) -> Result<i32, CommandError> {
    let exe = std::env::current_exe().map_err(CommandError::io("/proc/self/exe"))?;
    let names: Vec<String> = (0..a.count)
        .map(|i| format!("{}{i:04}", a.prefix))
        .collect();
    let mut missing = Vec::new();
    for n in &names {
        let tree = a.dir.join(n);
        for sub in ["logs", "certs", "cache", "facts", "resources"] {
            std::fs::create_dir_all(tree.join(sub)).map_err(CommandError::io(tree.join(sub)))?;
        }
        let file = tree.join("resources/file");
        if !file.exists() {
            std::os::unix::fs::symlink(&exe, &file).map_err(CommandError::io(&file))?;
        }
        // A static fact: a thousand identities on one machine should not cost a thousand
        // fact processes per run, which separate machines would pay in parallel.
        let _ = std::fs::remove_file(tree.join("facts/me"));
        let me = tree.join("facts/me.json");
        std::fs::write(&me, format!("\"{n}\"\n")).map_err(CommandError::io(&me))?;
        if !tree.join("certs/minion.crt").exists() {
            missing.push(n.clone());
        }
    }
    if !missing.is_empty() {
        let m = a.issue_from.as_ref().ok_or_else(|| {
            CommandError::usage(format!(
                "{} minions have no certificate; pass --issue-from MASTER_DIR",
                missing.len()
            ))
        })?;
        let certs = Pki::new(m)
            // As `certs issue` does: a shorter life would be inside the renewal window, and
            // every identity would be renewed (and reconnect) as soon as it connected.
            .issue_many(&missing, 365.0)?;
        for (n, c) in missing.iter().zip(&certs) {
            install_minion_cert(&a.dir.join(n).join("certs"), c)?;
        }
    }
    rt.block_on(async move {
        for n in &names {
            let agent = minion::agent::Agent::new(minion::agent::AgentOptions {
                minion: a.dir.join(n),
                master: a.master.clone(),
                machine_id: format!("swarm-{n}"),
                max_backoff: Duration::from_secs(5),
                // A thousand identities share this process's code.
                trim_code: false,
            })
            .map_err(CommandError::failed)?;
            tokio::spawn(async move {
                if let Err(e) = agent.run().await {
                    tracing::error!("{e}");
                }
            });
        }
        eprintln!("ingot minion swarm: {} minions started", names.len());
        let _ = tokio::signal::ctrl_c().await;
        Ok(0)
    })
}
