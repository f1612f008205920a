//! The minion: where ingot touches real systems.
//!
//! It gathers facts (every executable in `facts/`, run in parallel through the runner), and
//! dispatches resource actions (`resources/KIND ACTION` with a state on stdin) through one
//! function that the shell (`ingot resource`) and the network both call. The built-in facts
//! and resources live in [`builtin`]; each is reachable as its own executable through a symlink
//! to the `ingot` binary (busybox style: argv\[0\] selects it).
//!
//! On a fleet, [`agent`] connects out to the master over mutual TLS, runs its requests through
//! the same dispatch and spools what it sends; [`wire`] is the master↔minion protocol (every
//! frame, request and answer as a type, the framing and the TLS configuration) that both sides
//! speak. [`directord`] is Directord's verbs and job engine on this minion; [`commands`] are
//! `ingot facts`, `ingot resource` and `ingot init minion`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let minion = minion::Minion::new("/var/lib/ingot/minion");
//! let sink = runner::NullSink;
//! let facts = minion.facts(&sink).await?; // FactReport { document, failures, skipped }
//! let observed = minion
//!     .resource("file", "inspect", &serde_json::json!({"path": "/etc/motd"}), &sink)
//!     .await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod agent;
pub mod builtin;
pub mod commands;
pub mod directord;
pub mod dispatch;
pub mod inproc;
pub mod layout;
pub mod wire;

pub use dispatch::{Description, DispatchError, FactProblem, FactReport, FactsError, Minion};
pub use layout::{init, InitError, InitReport, DEFAULT_DIR};

use std::ffi::OsString;

/// Busybox dispatch: when the program was invoked under the name of a built-in resource or
/// fact (a symlink in `resources/` or `facts/` to `ingot`), runs it and returns its exit code.
/// Returns `None` for `ingot` itself (or any other name), so the normal CLI runs.
pub fn busybox(argv0: &std::ffi::OsStr, args: &[OsString]) -> Option<i32> {
    let name = builtin_name(argv0)?;
    if builtin::resource(name).is_some() {
        return Some(builtin::protocol::main(name, args));
    }
    if builtin::facts::fact(name).is_some() {
        return Some(builtin::facts::main(name, args));
    }
    None
}

/// The built-in resource or fact that `argv0` names (its file name), if any; never for `ingot`.
pub fn builtin_name(argv0: &std::ffi::OsStr) -> Option<&str> {
    let name = std::path::Path::new(argv0).file_name()?.to_str()?;
    if name == "ingot" {
        return None;
    }
    (builtin::resource(name).is_some() || builtin::facts::fact(name).is_some()).then_some(name)
}
