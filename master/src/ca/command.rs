//! `ingot certs`: the CA, issued certificates and enrollments, from the command line.

use std::path::PathBuf;

use super::{install_minion_cert, now_secs, Pki, PkiError};
use crate::exit::CommandError;
use crate::layout::DEFAULT_DIR;

impl From<PkiError> for CommandError {
    /// A name or state the operator got wrong is bad input; the rest is a failure.
    fn from(e: PkiError) -> Self {
        match e {
            PkiError::NoCa(_)
            | PkiError::Exists(_)
            | PkiError::BadName(_)
            | PkiError::Unknown(_) => CommandError::Usage(e.to_string()),
            other => CommandError::Failed(other.to_string()),
        }
    }
}

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

/// Unix seconds as an RFC 3339 time to the second.
pub fn fmt_time(secs: i64) -> String {
    channel3::Timestamp(secs * 1_000_000)
        .to_string()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
        + "Z"
}

/// Runs `ingot certs`; returns the exit code.
pub fn certs(args: &CertsArgs) -> Result<i32, CommandError> {
    let pki = Pki::new(&args.master);
    match &args.command {
        CertsCommand::Init { sans } => {
            for p in pki.init(sans)? {
                println!("created {}", p.display());
            }
        }
        CertsCommand::Issue { name, out, days } => {
            let cert = pki.issue(name, *days)?;
            let dir = out
                .clone()
                .unwrap_or_else(|| args.master.join("certs").join("issued").join(name));
            for p in install_minion_cert(&dir, &cert)? {
                println!("wrote {}", p.display());
            }
            println!(
                "{name}: fingerprint {} expires {}",
                cert.issued.fingerprint,
                fmt_time(cert.issued.not_after)
            );
        }
        CertsCommand::List { json } => {
            let reg = pki.registry()?;
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
            let r = pki.accept(name, *days)?;
            println!(
                "accepted {name} (from {}): it picks its certificate up at its next attempt",
                r.address
            );
        }
        CertsCommand::Reject { name } => {
            pki.reject(name)?;
            println!("rejected {name}");
        }
        CertsCommand::Token => println!("{}", pki.new_token()?),
        CertsCommand::Revoke { name } => {
            pki.revoke(name)?;
            println!("revoked {name}: refused at its next handshake (and cut within one heartbeat if connected)");
        }
    }
    Ok(0)
}
