//! Exec one program the mold way, and report everything it does as channel3 events.
//!
//! A [`Program`] is run directly (never through `sh -c`) in its own process group, with JSON or
//! raw bytes on stdin, stdout captured (and parsed as JSON on request), and stdout, stderr and the
//! child's fd 3 turned into [`channel3::Event`]s for an [`EventSink`]: `spawn`, `stdin`, `stdout`,
//! `stderr`, whatever the child writes on fd 3 relabelled under its name, `signal` and `exitcode`.
//!
//! The runner never leaves a process behind: on timeout the whole group gets SIGTERM, then SIGKILL
//! after a grace period; when the leader exits, grandchildren that still hold its pipes after a
//! short leak timeout are killed with the group, so nothing can make a run outlast
//! `timeout + grace + leak timeout`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runner::RunError> {
//! use runner::{Collect, Program};
//! let events = Collect::default();
//! let out = runner::run(&Program::new("/bin/echo").arg("hi").json_stdin(&serde_json::json!({})), &events).await?;
//! assert_eq!(out.stdout, b"hi\n");
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod command;
mod error;
pub mod exit;
mod fd3;
mod identity;
mod lines;
mod outcome;
mod program;
pub mod redact;
mod run;
mod sink;
mod spawn;

pub use fd3::claim_inherited_fd3;
pub use identity::{gid_of, uid_of, Identity};
pub use outcome::{ExitKind, Outcome};
pub use program::{Input, Program};
pub use run::{run, RunError, Runner};
pub use sink::{Collect, EventSink, NullSink, ThreadSink, WireFormat};
