//! The master's journal of requests in flight: what lets a run survive a restart of the master.
//!
//! Before the master sends a request that belongs to a recorded run, it appends to
//! `MASTER/logs/inflight.jsonl` the request id with its run, minion and step(s), and waits
//! until the line is on disk (`fdatasync`; concurrent requests share one sync: a writer thread
//! commits whatever is queued at once). A delivered result closes the entry. When the master
//! starts, it reads the file back: the runs it had open are marked `interrupted` in the history,
//! and when a minion re-sends what it spooled for a journaled id ([`LateResults`]), the events
//! and the step outcomes go into that run and step, the result is acknowledged (the minion
//! deletes its spool file) and the request is never sent again.
//!
//! Why a file under `MASTER/` and not a table in the history: the journal belongs to one master,
//! while the history may be a PostgreSQL database several masters share (a table would need an
//! owner key, and each master's start-up sweep would have to stay within its own runs); the file
//! works alike for both backends, needs no schema migration, and syncing a few appended lines is
//! cheaper than waiting for a committed transaction before every request.
//!
//! Records, one JSON object a line: `open` (a recorded run started), `sent` (an [`Entry`]),
//! `done` (its result arrived or it was given up), `close` (the run ended). The file is
//! rewritten with only what is live when it has grown well past that, and at start-up.

mod file;
mod late;
mod run;

pub use file::{recover, Entry, Journal, JournalError, FILE};
pub use late::{LateResults, Taken};
pub use run::{Release, RunJournal};
