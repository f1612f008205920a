//! `ingot master serve|run|nodes` and `ingot manage`'s `--list-nodes`: the master as a running
//! process. [`serve`] puts it together: the server ([`crate::server::Hub`]) with its journal
//! and TLS, the Directord service as the answerer of minions' questions, and the control socket
//! with [`handler::Master`] dispatching local commands to the features.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::ca::admission::RegistryCache;
use crate::ca::Pki;
use crate::control::{self, ControlReply, ControlRequest};
use crate::directord::Directord;
use crate::exit::{require_dir, CommandError};
use crate::layout::DEFAULT_DIR;
use crate::server::{Hub, HubOptions, NodeInfo};

pub mod handler;

pub use crate::directord::manage::ManageArgs;

/// The default port of the master.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4506";

/// `ingot master`.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterArgs {
    /// The master tree.
    #[arg(long, value_name = "DIR", env = "INGOT_MASTER", default_value = DEFAULT_DIR, global = true)]
    pub master: PathBuf,
    #[command(subcommand)]
    /// What to do.
    pub command: MasterCommand,
}

/// `ingot master` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MasterCommand {
    /// Accept minions over TLS and serve local commands on MASTER/master.sock.
    Serve(MasterServeArgs),
    /// Run the routine on connected minions through the running master.
    Run(FleetRunArgs),
    /// List known minions (same as `ingot manage --list-nodes`).
    Nodes {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `ingot master serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct MasterServeArgs {
    /// Address to listen on for minions.
    #[arg(long, value_name = "ADDR", env = "INGOT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Seconds between heartbeats (a minion silent for three is shown expired).
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    pub heartbeat: u64,
    /// Seconds a request waits for a disconnected minion to come back before it is reported
    /// unreachable.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub grace: u64,
    /// Record into this history (default: MASTER/logs/history.db).
    #[arg(long, value_name = "PATH|URL", env = "INGOT_HISTORY")]
    pub history: Option<String>,
    /// Renew minion certificates that expire within this many days (on their connection).
    #[arg(long, value_name = "DAYS", default_value_t = 30.0)]
    pub renew_before: f64,
    /// Also accept enrollment requests (`ingot minion enroll`) on this address.
    #[arg(long, value_name = "ADDR", env = "INGOT_ENROLL_LISTEN")]
    pub enroll_listen: Option<String>,
    /// Group owning the control socket MASTER/master.sock (mode 0660), so its members may run
    /// `ingot master run` / `ingot manage` without being root.
    #[arg(long, value_name = "GROUP", env = "INGOT_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Seconds a new connection may take for its TLS handshake and its `hello`; a client that
    /// stalls longer is cut (others connect meanwhile).
    #[arg(
        long,
        value_name = "SECS",
        env = "INGOT_HANDSHAKE_TIMEOUT",
        default_value_t = 10.0
    )]
    pub handshake_timeout: f64,
}

/// `ingot master run`.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetRunArgs {
    /// Minion names or globs (`web*`).
    #[arg(long = "targets", num_args = 1.., required = true, value_name = "GLOB")]
    pub targets: Vec<String>,
    /// How the routine runs.
    #[command(flatten)]
    pub routine: crate::apply::RoutineArgs,
    /// Do not record this run.
    #[arg(long)]
    pub no_history: bool,
}

/// Runs `ingot master ...`; returns the exit code.
pub fn master(rt: &tokio::runtime::Runtime, args: &MasterArgs) -> Result<i32, CommandError> {
    match &args.command {
        MasterCommand::Serve(s) => rt.block_on(serve(args.master.clone(), s.clone())),
        MasterCommand::Run(r) => {
            let mut req = crate::apply::request(&r.routine, r.targets.clone(), r.no_history);
            req.history_command = crate::apply::history_command(&args.master, None);
            rt.block_on(crate::apply::request_apply(&args.master, &req))
        }
        MasterCommand::Nodes { json } => rt.block_on(nodes(args.master.clone(), *json)),
    }
}

/// Runs `ingot manage`: `--list-nodes` here, the rest in [`crate::directord::manage`].
pub fn manage(rt: &tokio::runtime::Runtime, args: &ManageArgs) -> Result<i32, CommandError> {
    if args.list_nodes {
        return rt.block_on(nodes(args.master.clone(), args.json));
    }
    if let Some(file) = &args.export_nodes {
        return rt.block_on(export_nodes(&args.master, file, args.json));
    }
    crate::directord::manage::run(rt, args)
}

async fn serve(master: PathBuf, args: MasterServeArgs) -> Result<i32, CommandError> {
    require_dir(&master, "master tree", "master")?;
    // The tree's lock first: a second master on this tree stops here, before it touches the
    // socket, the journal or the history of the one running. Held for this master's life.
    let _lock = lock_tree(&master)?;
    let sock = master.join(control::SOCKET);
    let group = match &args.socket_group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| CommandError::usage(format!("--socket-group {g}: no such group")))?
                .gid,
        ),
    };
    let control_socket = control::bind(&sock, group).await.map_err(|e| match e {
        control::ListenError::InUse(_) => CommandError::Locked(e.to_string()),
        other => CommandError::failed(other),
    })?;
    let pki = Pki::new(&master);
    let registry = Arc::new(RegistryCache::new(pki.clone()));
    let tls = minion::wire::tls::server_config(&master.join("certs"), registry.clone())
        .map_err(|e| CommandError::Usage(e.to_string()))?;
    let hub = Hub::new(
        HubOptions {
            heartbeat: Duration::from_secs(args.heartbeat.max(1)),
            grace: Duration::from_secs(args.grace),
            renew_before: Duration::try_from_secs_f64(args.renew_before * 86400.0)
                .map_err(|e| CommandError::usage(format!("--renew-before: {e}")))?,
            handshake_timeout: Duration::try_from_secs_f64(args.handshake_timeout)
                .map_err(|e| CommandError::usage(format!("--handshake-timeout: {e}")))?,
        },
        registry,
    );
    let location = historian::Location::resolve(args.history.as_deref(), Some(&master), None);
    let history = match historian::History::open(&location) {
        Ok(h) => Some(Arc::new(h)),
        Err(e) => {
            tracing::warn!("not recording runs ({e})");
            eprintln!("ingot: warning: not recording runs: {e}");
            None
        }
    };
    // The requests of recorded runs are journaled; runs a previous master left open are
    // marked interrupted, and results delivered for them now are still recorded.
    if let Some(h) = &history {
        match crate::server::journal::recover(&master, h) {
            Ok(journal) => hub.set_journal(journal, h.clone()),
            Err(e) => {
                tracing::warn!("runs will not survive a restart of the master: {e}");
                eprintln!("ingot: warning: runs will not survive a restart of the master: {e}");
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            CommandError::failed(format!(
                "listening on {}: {e} (pick another --listen ADDR)",
                args.listen
            ))
        })?;
    let local = listener
        .local_addr()
        .map_err(CommandError::io(&args.listen))?;
    let enroll_task = match &args.enroll_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| CommandError::failed(format!("--enroll-listen {addr}: {e}")))?;
            eprintln!(
                "ingot master: enrollment on {}",
                l.local_addr().map_err(CommandError::io(addr))?
            );
            let cfg = crate::ca::enroll::server_config(&master.join("certs"))
                .map_err(|e| CommandError::Usage(e.to_string()))?;
            Some(tokio::spawn(crate::ca::enroll::serve(
                l,
                cfg,
                pki.clone(),
                365.0,
            )))
        }
    };
    eprintln!(
        "ingot master: listening on {local}, control socket {}",
        sock.display()
    );
    let net = tokio::spawn(hub.clone().serve(listener, tls));
    let directord = Directord::new(hub.clone(), master.clone(), history.clone());
    hub.set_questions(directord.clone());
    // Where `ingot history` finds these runs, when not in the master tree.
    let history_elsewhere = (location
        != historian::Location::Sqlite(historian::default_path(Some(&master), None)))
    .then(|| location.to_string());
    let handler = Arc::new(handler::Master {
        hub,
        history_elsewhere,
        master,
        history: history.clone(),
        directord,
    });
    let ctl = tokio::spawn(control::listen(control_socket, handler));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CommandError::failed(format!("handling SIGTERM: {e}")))?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(0),
        _ = term.recv() => Ok(0),
        r = ctl => Err(CommandError::failed(format!("control socket {}: {:?}", sock.display(), r))),
        _ = net => Err(CommandError::failed("the listener stopped")),
    };
    let _ = std::fs::remove_file(&sock);
    if let Some(t) = enroll_task {
        t.abort();
    }
    if let Some(h) = history {
        if let Err(e) = h.flush() {
            eprintln!("ingot: warning: history may be incomplete: {e}");
        }
    }
    result
}

/// The lock file of a master tree: held (flock) by the master serving it, with its pid.
pub const LOCK: &str = "master.lock";

/// Takes the master tree's lock for this process, or says which master holds it.
fn lock_tree(master: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, CommandError> {
    use std::io::{Read as _, Seek as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = master.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(CommandError::io(&path))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            let pid = std::process::id().to_string();
            let written = locked
                .set_len(0)
                .and_then(|()| locked.rewind())
                .and_then(|()| locked.write_all(pid.as_bytes()));
            written.map_err(CommandError::io(&path))?;
            Ok(locked)
        }
        Err((mut file, _)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            Err(CommandError::Locked(format!(
                "a master (pid {}) is already serving {}: stop it first (`kill {}`), or serve another tree with --master DIR",
                pid.trim(),
                master.display(),
                pid.trim()
            )))
        }
    }
}

fn fmt_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

/// Every minion the running master of `master` knows.
async fn fetch_nodes(master: &Path) -> Result<Vec<NodeInfo>, CommandError> {
    let mut nodes: Vec<NodeInfo> = Vec::new();
    let mut error = None;
    control::request(master, &ControlRequest::ListNodes, |r| match r {
        ControlReply::Nodes(n) => nodes = n,
        ControlReply::Error(e) => error = Some(e),
        _ => {}
    })
    .await?;
    match error {
        Some(e) => Err(CommandError::Failed(e)),
        None => Ok(nodes),
    }
}

/// `ingot manage --export-nodes FILE`: the nodes as `--list-nodes --json` gives them, as one
/// JSON object keyed by name (JSON is YAML too, for scripts that read Directord's YAML dump);
/// prints Directord's `Exported data to [ FILE ]`.
async fn export_nodes(master: &Path, file: &Path, json: bool) -> Result<i32, CommandError> {
    let nodes = fetch_nodes(master).await?;
    let doc: serde_json::Map<String, serde_json::Value> = nodes
        .iter()
        .map(|n| {
            let v = serde_json::to_value(n).expect("node infos serialize");
            (n.name.clone(), v)
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
    bytes.push(b'\n');
    std::fs::write(file, bytes).map_err(|e| {
        CommandError::Failed(format!(
            "cannot write the nodes to {}: {e}; name a file in a directory you may write to",
            file.display()
        ))
    })?;
    if json {
        let out = serde_json::json!({"file": file, "nodes": nodes.len()});
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("serializes")
        );
    } else {
        println!("Exported data to [ {} ]", file.display());
    }
    Ok(0)
}

async fn nodes(master: PathBuf, json: bool) -> Result<i32, CommandError> {
    let nodes = fetch_nodes(&master).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&nodes).expect("serializes")
        );
        return Ok(0);
    }
    println!(
        "{:<20} {:<10} {:<21} {:<8} {:<9} {:<34} ADDRESS",
        "NAME", "STATE", "CERT EXPIRES", "VERSION", "UPTIME", "MACHINE ID"
    );
    for n in nodes {
        println!(
            "{:<20} {:<10} {:<21} {:<8} {:<9} {:<34} {}",
            n.name,
            n.state,
            n.cert_expiry
                .map(crate::ca::command::fmt_time)
                .unwrap_or_else(|| "-".into()),
            if n.version.is_empty() {
                "-"
            } else {
                &n.version
            },
            n.uptime.map(fmt_duration).unwrap_or_else(|| "-".into()),
            if n.machine_id.is_empty() {
                "-"
            } else {
                &n.machine_id
            },
            if n.address.is_empty() {
                "-"
            } else {
                &n.address
            },
        );
    }
    Ok(0)
}
