//! `ingot certs ...`, `ingot master serve|run|nodes`, `ingot minion serve`,
//! `ingot manage` (`--list-nodes` here, the Directord job commands in [`super::manage`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::control::{self, ControlReply, ControlRequest, RunRequest};
use super::pki::{install_minion_cert, now_secs, Pki};
use super::server::{Hub, HubOptions, NodeInfo};
use crate::cli::DEFAULT_DIR;

/// The default port of the master.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:4506";

/// `ingot certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// The master tree (its certs/ holds the CA).
    #[arg(long, value_name = "DIR", env = "INGOT_MASTER", default_value = DEFAULT_DIR, global = true)]
    pub master: PathBuf,
    #[command(subcommand)]
    /// What to do.
    pub command: CertsCommand,
}

/// `ingot certs` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CertsCommand {
    /// Create the CA and the master's certificate (TLS 1.3, keys 0600).
    Init {
        /// More DNS names or IP addresses for the master's certificate.
        #[arg(long = "san", value_name = "NAME|IP")]
        sans: Vec<String>,
    },
    /// Issue a certificate and key for minion NAME (re-issuing replaces the old one).
    Issue {
        /// The minion's name (its certificate's CN).
        name: String,
        /// Write minion.crt, minion.key and ca.crt here (e.g. MINION/certs; default:
        /// MASTER/certs/issued/NAME).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Days of validity.
        #[arg(long, default_value_t = 365.0)]
        days: f64,
    },
    /// List issued certificates: name, expiry, fingerprint, state.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke NAME's certificate: refused at its next handshake, cut if connected.
    Revoke {
        /// The minion.
        name: String,
    },
    /// Enrollment requests waiting for accept or reject.
    Pending {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Accept NAME's enrollment: its key is signed; it picks the certificate up itself.
    Accept {
        /// The minion.
        name: String,
        /// Days of validity.
        #[arg(long, default_value_t = 365.0)]
        days: f64,
    },
    /// Reject NAME's enrollment.
    Reject {
        /// The minion.
        name: String,
    },
    /// Print a one-time token: `ingot minion enroll --token T` is then accepted at once.
    Token,
}

fn fmt_time(secs: i64) -> String {
    humantime_like(secs)
}

fn humantime_like(secs: i64) -> String {
    channel3::Timestamp(secs * 1_000_000)
        .to_string()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
        + "Z"
}

/// Runs `ingot certs`; returns the exit code.
pub fn certs(args: &CertsArgs) -> Result<i32, String> {
    let pki = Pki::new(&args.master);
    match &args.command {
        CertsCommand::Init { sans } => {
            for p in pki.init(sans).map_err(|e| e.to_string())? {
                println!("created {}", p.display());
            }
        }
        CertsCommand::Issue { name, out, days } => {
            let cert = pki.issue(name, *days).map_err(|e| e.to_string())?;
            let dir = out
                .clone()
                .unwrap_or_else(|| args.master.join("certs").join("issued").join(name));
            for p in install_minion_cert(&dir, &cert).map_err(|e| e.to_string())? {
                println!("wrote {}", p.display());
            }
            println!(
                "{name}: fingerprint {} expires {}",
                cert.issued.fingerprint,
                fmt_time(cert.issued.not_after)
            );
        }
        CertsCommand::List { json } => {
            let reg = pki.registry().map_err(|e| e.to_string())?;
            let now = now_secs();
            if *json {
                let v: Vec<_> = reg
                    .minions
                    .iter()
                    .map(|(n, i)| {
                        serde_json::json!({
                            "name": n, "expiry": i.not_after, "fingerprint": i.fingerprint,
                            "state": i.state(now), "issued": i.issued, "revoked": i.revoked,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
            } else {
                println!(
                    "{:<24} {:<21} {:<8} FINGERPRINT (SHA-256)",
                    "NAME", "EXPIRES", "STATE"
                );
                for (n, i) in &reg.minions {
                    println!(
                        "{:<24} {:<21} {:<8} {}",
                        n,
                        fmt_time(i.not_after),
                        i.state(now),
                        i.fingerprint
                    );
                }
            }
        }
        CertsCommand::Pending { json } => {
            let p = pki.pending();
            if *json {
                println!("{}", serde_json::to_string_pretty(&p).expect("serializes"));
            } else {
                println!("{:<24} {:<21} {:<22} KEY", "NAME", "REQUESTED", "FROM");
                for r in p {
                    println!(
                        "{:<24} {:<21} {:<22} {}…",
                        r.name,
                        fmt_time(r.requested),
                        r.address,
                        &r.public_key[..16.min(r.public_key.len())]
                    );
                }
            }
        }
        CertsCommand::Accept { name, days } => {
            let r = pki.accept(name, *days).map_err(|e| e.to_string())?;
            println!(
                "accepted {name} (from {}): it picks its certificate up at its next attempt",
                r.address
            );
        }
        CertsCommand::Reject { name } => {
            pki.reject(name).map_err(|e| e.to_string())?;
            println!("rejected {name}");
        }
        CertsCommand::Token => println!("{}", pki.new_token().map_err(|e| e.to_string())?),
        CertsCommand::Revoke { name } => {
            pki.revoke(name).map_err(|e| e.to_string())?;
            println!("revoked {name}: refused at its next handshake (and cut within one heartbeat if connected)");
        }
    }
    Ok(0)
}

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
    Serve(ServeArgs),
    /// Run the routine on connected minions through the running master.
    Run(RunArgs),
    /// List known minions (same as `ingot manage --list-nodes`).
    Nodes {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `ingot master serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
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
pub struct RunArgs {
    /// Minion names or globs (`web*`).
    #[arg(long = "targets", num_args = 1.., required = true, value_name = "GLOB")]
    pub targets: Vec<String>,
    /// How the routine runs.
    #[command(flatten)]
    pub routine: crate::cli::RoutineArgs,
    /// Do not record this run.
    #[arg(long)]
    pub no_history: bool,
    /// Minions driven at once (0: all at once).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// `ingot minion`.
#[derive(Debug, Clone, clap::Args)]
pub struct MinionArgs {
    #[command(subcommand)]
    /// What to do.
    pub command: MinionCommand,
}

/// `ingot minion` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum MinionCommand {
    /// Connect to the master and run its requests (reconnecting as needed).
    Serve(MinionServeArgs),
    /// Run N minion identities in one process (load tests, as Salt's minionswarm).
    Swarm(SwarmArgs),
    /// Get a certificate: generate the key here, have the master sign it (after `ingot certs
    /// accept NAME`, or at once with --token).
    Enroll(EnrollArgs),
}

/// `ingot minion enroll`.
#[derive(Debug, Clone, clap::Args)]
pub struct EnrollArgs {
    /// The minion tree (the key and certificate go to its certs/).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = minion::DEFAULT_DIR)]
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

/// `ingot minion serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct MinionServeArgs {
    /// The minion tree (certs/ holds minion.crt, minion.key, ca.crt).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = minion::DEFAULT_DIR)]
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

pub use super::manage::ManageArgs;

/// Runs `ingot master ...`; returns the exit code.
pub fn master(rt: &tokio::runtime::Runtime, args: &MasterArgs) -> Result<i32, String> {
    match &args.command {
        MasterCommand::Serve(s) => rt.block_on(serve(args.master.clone(), s.clone())),
        MasterCommand::Run(r) => rt.block_on(run(args.master.clone(), r)),
        MasterCommand::Nodes { json } => rt.block_on(nodes(args.master.clone(), *json)),
    }
}

/// Runs `ingot manage`: `--list-nodes` here, the rest in [`super::manage`].
pub fn manage(rt: &tokio::runtime::Runtime, args: &ManageArgs) -> Result<i32, String> {
    if args.list_nodes {
        return rt.block_on(nodes(args.master.clone(), args.json));
    }
    super::manage::run(rt, args)
}

async fn serve(master: PathBuf, args: ServeArgs) -> Result<i32, String> {
    if !master.is_dir() {
        return Err(format!(
            "master tree {} does not exist; create it with `ingot init master {}`",
            master.display(),
            master.display()
        ));
    }
    let pki = Pki::new(&master);
    let registry = Arc::new(super::tls::RegistryCache::new(pki.clone()));
    let tls = super::tls::server_config(&pki, registry.clone()).map_err(|e| e.to_string())?;
    let hub = Hub::new(
        HubOptions {
            heartbeat: Duration::from_secs(args.heartbeat.max(1)),
            grace: Duration::from_secs(args.grace),
            renew_before: Duration::try_from_secs_f64(args.renew_before * 86400.0)
                .map_err(|e| format!("--renew-before: {e}"))?,
            handshake_timeout: Duration::try_from_secs_f64(args.handshake_timeout)
                .map_err(|e| format!("--handshake-timeout: {e}"))?,
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
        match super::journal::recover(&master, h) {
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
            format!(
                "listening on {}: {e} (pick another --listen ADDR)",
                args.listen
            )
        })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let sock = master.join(control::SOCKET);
    let enroll_task = match &args.enroll_listen {
        None => None,
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("--enroll-listen {addr}: {e}"))?;
            eprintln!(
                "ingot master: enrollment on {}",
                l.local_addr().map_err(|e| e.to_string())?
            );
            let cfg = super::enroll::server_config(&pki)?;
            Some(tokio::spawn(super::enroll::serve(
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
    let group = match &args.socket_group {
        None => None,
        Some(g) => Some(
            nix::unistd::Group::from_name(g)
                .ok()
                .flatten()
                .ok_or_else(|| format!("--socket-group {g}: no such group"))?
                .gid,
        ),
    };
    let ctl = tokio::spawn(control::serve(
        sock.clone(),
        group,
        hub,
        master,
        history.clone(),
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let result = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(0),
        _ = term.recv() => Ok(0),
        r = ctl => Err(format!("control socket {}: {:?}", sock.display(), r)),
        _ = net => Err("the listener stopped".to_string()),
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

/// `ingot apply --targets GLOB...`: the same as `ingot master run`.
pub fn apply_remote(
    rt: &tokio::runtime::Runtime,
    a: &crate::cli::ApplyArgs,
) -> Result<i32, String> {
    let args = RunArgs {
        targets: a.targets.clone(),
        routine: a.routine.clone(),
        no_history: a.no_history,
        concurrency: 64,
    };
    rt.block_on(run(a.master.clone(), &args))
}

async fn run(master: PathBuf, args: &RunArgs) -> Result<i32, String> {
    use std::io::IsTerminal;
    let req = ControlRequest::Run(RunRequest {
        targets: args.targets.clone(),
        check: args.routine.check,
        max_rounds: args.routine.max_rounds,
        fail_fast: args.routine.fail_fast,
        actor_timeout: args.routine.actor_timeout,
        json: args.routine.json,
        detailed_exitcode: args.routine.detailed_exitcode,
        color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        user: historian::current_user(),
        command: std::env::args().collect(),
        no_history: args.no_history,
        concurrency: args.concurrency,
    });
    let mut code = None;
    let mut error = None;
    control::request(&master, &req, |reply| match reply {
        ControlReply::Progress(line) => crate::report::eprint_line(&line),
        ControlReply::Done { stdout, code: c } => {
            print!("{stdout}");
            code = Some(c);
        }
        ControlReply::Error(e) => error = Some(e),
        ControlReply::Nodes(_) => {}
    })
    .await
    .map_err(|e| e.to_string())?;
    match (error, code) {
        (Some(e), _) => Err(e),
        (None, Some(c)) => Ok(c),
        (None, None) => Err(
            "the master closed the connection before the run finished (did it stop or restart?); \
             see `ingot history list` on the master for what was recorded"
                .into(),
        ),
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

async fn nodes(master: PathBuf, json: bool) -> Result<i32, String> {
    let mut nodes: Vec<NodeInfo> = Vec::new();
    let mut error = None;
    control::request(&master, &ControlRequest::ListNodes, |r| match r {
        ControlReply::Nodes(n) => nodes = n,
        ControlReply::Error(e) => error = Some(e),
        _ => {}
    })
    .await
    .map_err(|e| e.to_string())?;
    if let Some(e) = error {
        return Err(e);
    }
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
            n.cert_expiry.map(fmt_time).unwrap_or_else(|| "-".into()),
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

/// Runs `ingot minion ...`; returns the exit code.
pub fn minion(rt: &tokio::runtime::Runtime, args: &MinionArgs) -> Result<i32, String> {
    match &args.command {
        MinionCommand::Serve(a) => {
            if !a.minion.is_dir() {
                return Err(format!(
                    "minion tree {} does not exist; create it with `ingot init minion {}`",
                    a.minion.display(),
                    a.minion.display()
                ));
            }
            let opts = super::agent::AgentOptions {
                minion: a.minion.clone(),
                master: a.master.clone(),
                machine_id: a
                    .machine_id
                    .clone()
                    .unwrap_or_else(super::agent::machine_id),
                max_backoff: Duration::try_from_secs_f64(a.max_backoff)
                    .map_err(|e| format!("--max-backoff: {e}"))?,
                trim_code: true,
            };
            let agent = super::agent::Agent::new(opts).map_err(|e| e.to_string())?;
            rt.block_on(async move {
                tokio::select! {
                    r = agent.run() => r.map(|_| 0).map_err(|e| e.to_string()),
                    _ = tokio::signal::ctrl_c() => Ok(0),
                }
            })
        }
        MinionCommand::Swarm(a) => swarm(rt, a),
        MinionCommand::Enroll(a) => {
            let o = super::enroll::EnrollOptions {
                minion: a.minion.clone(),
                master: a.master.clone(),
                ca: a.ca.clone(),
                name: a.name.clone().unwrap_or_else(super::enroll::default_name),
                token: a.token.clone(),
                wait: Duration::from_secs(a.wait),
            };
            match rt.block_on(super::enroll::enroll(&o))? {
                true => {
                    println!(
                        "enrolled as {}: {}",
                        o.name,
                        o.minion.join("certs/minion.crt").display()
                    );
                    Ok(0)
                }
                false => {
                    eprintln!("ingot: still pending after {}s", a.wait);
                    Ok(3)
                }
            }
        }
    }
}

fn swarm(rt: &tokio::runtime::Runtime, a: &SwarmArgs) -> Result<i32, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let names: Vec<String> = (0..a.count)
        .map(|i| format!("{}{i:04}", a.prefix))
        .collect();
    let mut missing = Vec::new();
    for n in &names {
        let tree = a.dir.join(n);
        for sub in ["logs", "certs", "cache", "facts", "resources"] {
            std::fs::create_dir_all(tree.join(sub)).map_err(|e| e.to_string())?;
        }
        let file = tree.join("resources/file");
        if !file.exists() {
            std::os::unix::fs::symlink(&exe, &file).map_err(|e| e.to_string())?;
        }
        // A static fact: a thousand identities on one machine should not cost a thousand
        // fact processes per run, which separate machines would pay in parallel.
        let _ = std::fs::remove_file(tree.join("facts/me"));
        std::fs::write(tree.join("facts/me.json"), format!("\"{n}\"\n"))
            .map_err(|e| e.to_string())?;
        if !tree.join("certs/minion.crt").exists() {
            missing.push(n.clone());
        }
    }
    if !missing.is_empty() {
        let m = a.issue_from.as_ref().ok_or_else(|| {
            format!(
                "{} minions have no certificate; pass --issue-from MASTER_DIR",
                missing.len()
            )
        })?;
        let certs = Pki::new(m)
            // As `certs issue` does: a shorter life would be inside the renewal window, and
            // every identity would be renewed (and reconnect) as soon as it connected.
            .issue_many(&missing, 365.0)
            .map_err(|e| e.to_string())?;
        for (n, c) in missing.iter().zip(&certs) {
            install_minion_cert(&a.dir.join(n).join("certs"), c).map_err(|e| e.to_string())?;
        }
    }
    rt.block_on(async move {
        for n in &names {
            let agent = super::agent::Agent::new(super::agent::AgentOptions {
                minion: a.dir.join(n),
                master: a.master.clone(),
                machine_id: format!("swarm-{n}"),
                max_backoff: Duration::from_secs(5),
                // A thousand identities share this process's code.
                trim_code: false,
            })
            .map_err(|e| e.to_string())?;
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
pub fn systemd_unit(a: &SystemdUnitArgs) -> Result<i32, String> {
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
                a.address
                    .as_deref()
                    .ok_or("a minion unit needs --address HOST:PORT of the master")?
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
