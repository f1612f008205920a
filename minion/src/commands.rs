//! The minion's commands: `ingot init minion`, `ingot facts`, `ingot resource`.
//!
//! `src/main.rs` only parses and calls these; each prints its own errors and returns the exit
//! code.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use channel3::{Body, Event};
use runner::{EventSink, ThreadSink, WireFormat};
use serde_json::Value;

use crate::{layout, Minion};

/// `ingot init minion DIR [--force]`.
#[derive(Debug, Clone, clap::Args)]
pub struct InitMinionArgs {
    /// Where to lay out the minion tree (logs/, certs/, cache/, facts/, resources/).
    pub dir: PathBuf,
    /// Accepted for scripts written before init repaired links by itself: built-in links
    /// that lead to another ingot binary (or nowhere) are always pointed at this one, and a
    /// user's files and links to other programs are never touched.
    #[arg(long, hide = true)]
    pub force: bool,
}

/// `ingot facts [--minion DIR] [--timeout S]`.
#[derive(Debug, Clone, clap::Args)]
pub struct FactsArgs {
    /// The minion directory (laid out by `ingot init minion DIR`).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = layout::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// Kill a fact that takes longer than this many seconds (it is then left out).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
    /// Record into this history (SQLite path or postgres:// URL; default: DIR/logs/history.db).
    #[arg(long, value_name = "PATH|URL", env = "INGOT_HISTORY")]
    pub history: Option<String>,
    /// Do not record this command in the history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
}

/// `ingot resource KIND ACTION [--minion DIR] < STATE`.
#[derive(Debug, Clone, clap::Args)]
pub struct ResourceArgs {
    /// The resource kind: an executable in DIR/resources/ (file, user, ...).
    pub kind: String,
    /// inspect, conform, describe, or one of the resource's custom actions.
    pub action: String,
    /// The minion directory (laid out by `ingot init minion DIR`).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = layout::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// Kill the resource after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600.0)]
    pub timeout: f64,
    /// Record into this history (SQLite path or postgres:// URL; default: DIR/logs/history.db).
    #[arg(long, value_name = "PATH|URL", env = "INGOT_HISTORY")]
    pub history: Option<String>,
    /// Do not record this command in the history.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,
}

/// Where a command's events are kept besides the console. The minion knows nothing of the
/// historian; the binary plugs it in through this.
pub trait Record {
    /// The sink for the command's events; `step` is `(kind, action, input)` for a resource
    /// action.
    fn begin(&self, step: Option<(&str, &str, &Value)>) -> Box<dyn EventSink + '_>;
    /// The command ended with this exit code.
    fn end(&self, code: i32);
}

/// Records nothing.
pub struct NoRecord;

impl Record for NoRecord {
    fn begin(&self, _: Option<(&str, &str, &Value)>) -> Box<dyn EventSink + '_> {
        Box::new(runner::NullSink)
    }
    fn end(&self, _: i32) {}
}

/// Both sinks.
struct Both<'a>(&'a dyn EventSink, &'a dyn EventSink);

impl EventSink for Both<'_> {
    fn emit(&self, event: Event) {
        self.0.emit(event.clone());
        self.1.emit(event);
    }
}

fn secs(v: f64, flag: &str) -> Result<Duration, i32> {
    Duration::try_from_secs_f64(v).map_err(|_| {
        eprintln!("ingot: error: {flag} must be a non-negative number of seconds, not {v}");
        2
    })
}

/// Where events go: the parent's channel3 (our fd 3) when there is one; otherwise only the
/// children's stderr lines, passed through to our stderr prefixed with their name.
fn event_sink(upstream_fd3: Option<OwnedFd>) -> Box<dyn EventSinkClose> {
    match upstream_fd3 {
        Some(fd) => Box::new(ThreadSink::new(
            std::fs::File::from(fd),
            WireFormat::Channel3,
        )),
        None => Box::new(StderrLines),
    }
}

trait EventSinkClose: EventSink {
    fn close(&self) {}
}

impl EventSinkClose for ThreadSink {
    fn close(&self) {
        ThreadSink::close(self)
    }
}

struct StderrLines;

impl EventSink for StderrLines {
    fn emit(&self, event: Event) {
        if let Body::Stderr(line) = event.message.body() {
            let name = event.message.name.as_deref().unwrap_or("-");
            let bytes = line.bytes();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "{name}: {}", String::from_utf8_lossy(&bytes));
            if !bytes.ends_with(b"\n") {
                let _ = writeln!(err);
            }
        }
    }
}

impl EventSinkClose for StderrLines {}

fn print_json(v: &Value) {
    let mut out = std::io::stdout().lock();
    let text = if out.is_terminal() {
        serde_json::to_string_pretty(v).unwrap_or_default()
    } else {
        v.to_string()
    };
    let _ = writeln!(out, "{text}").and_then(|_| out.flush());
}

/// `ingot init minion`.
pub fn init_minion(args: &InitMinionArgs) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("ingot: error: cannot find the running ingot binary to link to: {e}");
            return runner::exit::FAILED;
        }
    };
    match layout::init(&args.dir, &exe, args.force) {
        Ok(r) => {
            for (path, was) in &r.repaired {
                eprintln!(
                    "ingot: repaired {}: it led to {}, now to {}",
                    path.display(),
                    was.display(),
                    exe.display()
                );
            }
            for (path, why) in &r.kept {
                eprintln!("ingot: kept {}: {why}", path.display());
            }
            println!(
                "minion tree at {}: {} directories created, {} links created, {} repaired, {} already in place, {} kept",
                args.dir.display(),
                r.created.len(),
                r.linked.len(),
                r.repaired.len(),
                r.unchanged.len(),
                r.kept.len()
            );
            0
        }
        Err(e) => {
            eprintln!("ingot: error: {e}");
            runner::exit::FAILED
        }
    }
}

/// `ingot facts`: prints the fact document; exits 1 when a fact failed.
pub fn facts(
    rt: &tokio::runtime::Runtime,
    args: &FactsArgs,
    upstream_fd3: Option<OwnedFd>,
    record: &dyn Record,
) -> i32 {
    let code = facts_inner(rt, args, upstream_fd3, record);
    record.end(code);
    code
}

fn facts_inner(
    rt: &tokio::runtime::Runtime,
    args: &FactsArgs,
    upstream_fd3: Option<OwnedFd>,
    record: &dyn Record,
) -> i32 {
    let timeout = match secs(args.timeout, "--timeout") {
        Ok(t) => t,
        Err(c) => return c,
    };
    let m = Minion::new(&args.minion).with_fact_timeout(timeout);
    let sink = event_sink(upstream_fd3);
    let kept = record.begin(None);
    let result = rt.block_on(m.facts(&Both(&*sink, &*kept)));
    sink.close();
    match result {
        Ok(r) => {
            for p in &r.failures {
                eprintln!("ingot: fact {} failed: {}", p.name, p.reason);
            }
            print_json(&Value::Object(r.document.clone()));
            i32::from(!r.ok())
        }
        Err(e) => {
            // No facts/ to list: the tree is not there (or not a minion tree).
            eprintln!("ingot: error: {e}");
            runner::exit::USAGE
        }
    }
}

/// `ingot resource KIND ACTION < STATE`: prints the result; exits with the resource's code.
pub fn resource(
    rt: &tokio::runtime::Runtime,
    args: &ResourceArgs,
    upstream_fd3: Option<OwnedFd>,
    record: &dyn Record,
) -> i32 {
    let code = resource_inner(rt, args, upstream_fd3, record);
    record.end(code);
    code
}

fn resource_inner(
    rt: &tokio::runtime::Runtime,
    args: &ResourceArgs,
    upstream_fd3: Option<OwnedFd>,
    record: &dyn Record,
) -> i32 {
    let timeout = match secs(args.timeout, "--timeout") {
        Ok(t) => t,
        Err(c) => return c,
    };
    let input = if args.action == "describe" {
        Value::Null
    } else {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!(
                "ingot: error: {} {} expects a JSON state on stdin, e.g. echo '{{...}}' | ingot resource {} {}",
                args.kind, args.action, args.kind, args.action
            );
            return 2;
        }
        let mut buf = Vec::new();
        if let Err(e) = stdin.lock().read_to_end(&mut buf) {
            eprintln!("ingot: error: cannot read stdin: {e}");
            return 1;
        }
        match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "ingot: error: invalid input: stdin is not JSON ({e}); expected a {} state (a JSON object) or an array of them",
                    args.kind
                );
                return 2;
            }
        }
    };
    let m = Minion::new(&args.minion).with_resource_timeout(timeout);
    let sink = event_sink(upstream_fd3);
    let kept = record.begin(Some((&args.kind, &args.action, &input)));
    let result = rt.block_on(m.resource(&args.kind, &args.action, &input, &Both(&*sink, &*kept)));
    sink.close();
    match result {
        Ok(v) => {
            print_json(&v);
            // A batch with failed elements still prints everything, and exits 1.
            match &v {
                Value::Array(items) if items.iter().any(|i| i.get("error").is_some()) => 1,
                _ => 0,
            }
        }
        Err(crate::DispatchError::Failed {
            kind, action, code, ..
        }) => {
            // Its stderr has already been passed through above.
            eprintln!("ingot: error: {kind} {action} failed with exit code {code}");
            code
        }
        Err(e) => {
            eprintln!("ingot: error: {e}");
            e.exit_code()
        }
    }
}
