//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes (the writer thread, batched `BEGIN IMMEDIATE` transactions); any number
//! of other connections read concurrently. `synchronous = NORMAL` in WAL mode means a committed
//! transaction survives the writer process being killed at any point (the WAL is in the page
//! cache); only a power failure may lose the last commits.
//!
//! - [`connection`]: [`Sqlite`], opening a database (creating it and migrating as needed).
//! - [`schema`]: the migrations and how event rowids are laid out.
//! - [`checkpoint`]: copying the WAL back on a thread of its own.
//! - [`write`]: the writer's batches ([`crate::backend::WriteBackend`]).
//! - [`raw_insert`]: the multi-row event `INSERT`s through the C API.
//! - [`read`]: queries, pruning and statistics ([`crate::backend::ReadBackend`]).

mod checkpoint;
mod connection;
mod raw_insert;
mod read;
mod schema;
mod write;

pub(crate) use connection::Sqlite;
