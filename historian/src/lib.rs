//! The historian: every run, step and channel3 event, stored durably and reviewable.
//!
//! Recording: [`History::open`] a [`Location`] (an SQLite file in WAL mode by default, or a
//! `postgres://` URL), [`History::start_run`], hand each runner a sink from
//! [`RunHandle::sink`] or [`StepHandle::sink`], record steps with [`RunHandle::begin_step`] /
//! [`StepHandle::finish`] (or [`RunHandle::record_step`] after the fact), then
//! [`RunHandle::finish`]. One writer thread commits batches of whatever is queued, so recording
//! costs the caller a channel send; desired states and observations are redacted
//! ([`runner::redact`]) before they are stored; events keep their raw bytes as received.
//!
//! Reviewing: [`Store`] lists, shows, exports, prunes and summarises runs; [`cli`] is
//! `ingot history`.
//!
//! ```
//! use historian::{History, Location, RunMeta, RunStatus, Store, StepStart, StepEnd, StepOutcome};
//! use runner::EventSink;
//! # let dir = tempfile::tempdir().unwrap();
//! let location = Location::Sqlite(dir.path().join("history.db"));
//! let history = History::open(&location).unwrap();
//! let run = history.start_run(RunMeta::current(vec!["web1".into()])).unwrap();
//! let step = run.begin_step(StepStart {
//!     minion: "web1".into(),
//!     kind: "file".into(),
//!     action: "conform".into(),
//!     desired: serde_json::json!({"path": "/etc/motd", "content": "hi\n"}),
//! });
//! step.sink().emit(channel3::Event::now(channel3::Message::new(
//!     Some("file".into()),
//!     &channel3::Body::Exitcode(0),
//! )));
//! step.finish(StepEnd { outcome: Some(StepOutcome::Changed), ..StepEnd::default() });
//! run.finish(run.derived_status());
//! history.flush().unwrap();
//!
//! let mut store = Store::open(&location).unwrap();
//! let detail = store.detail("last").unwrap();
//! assert_eq!(detail.run.status, RunStatus::Changed);
//! assert_eq!(detail.events.len(), 1);
//! ```
#![deny(missing_docs)]

mod backend;
pub mod commands;
mod error;
mod history;
mod location;
mod model;
#[cfg(feature = "postgres")]
mod postgres;
mod recording;
pub mod render;
mod sqlite;
mod store;
mod writer;

pub use error::{Error, Result};
pub use history::{History, HistorySink, RunHandle, StepHandle, Tee};
pub use location::{default_path, Location, ENV_VAR};
pub use model::{
    current_user, EventRow, FailureCount, ListFilter, PruneFilter, PruneReport, RunMeta, RunStatus,
    RunStep, RunSummary, SlowStep, Stats, StepEnd, StepOutcome, StepRecord, StepRow, StepStart,
};
pub use recording::{open_for_command, CommandRecording, LOCAL};
pub use store::{RunDetail, Store};
pub use writer::{Commit, CommitHook, WriterOptions};

/// Checks an SQLite history file with `PRAGMA integrity_check`; `Ok("ok")` when sound.
pub fn sqlite_integrity_check(path: &std::path::Path) -> Result<String> {
    sqlite::Sqlite::open_existing(path)?.integrity_check()
}
