//! The master: turns a minion's facts into a prescription and drives the minion until it
//! matches, alone or for a fleet of minions connected over mutual TLS.
//!
//! By role:
//! - [`routine`]: the convergence loop (facts → prescribe → inspect → choreograph → perform,
//!   until nothing is left to do), written once against [`routine::link::MinionLink`], with
//!   the actors, the built-in choreograph, the documents' schemas and the operator's report.
//! - [`apply`]: `ingot apply`, one path from arguments to the routine for a local minion and
//!   for a fleet.
//! - [`record`]: the routine's observer that records into the historian.
//! - [`ca`]: the private certificate authority, the registry of issued certificates and
//!   enrollment.
//! - [`server`]: the hub of connected minions (sessions, heartbeats, the journal of requests in
//!   flight); it hands a minion's questions to a handler it is given.
//! - [`fleet`]: a connected minion as a `MinionLink`, and the fleet's apply in the master.
//! - [`control`]: the local control socket's requests and replies, its client and listener.
//! - [`directord`]: Directord through the master: exec/orchestrate relay, job recording and
//!   records, `ingot manage`, content transfer.
//! - [`daemon`]: `ingot master serve|run|nodes`: puts the server, the control socket and the
//!   features together.
//! - [`bootstrap`]: `ingot bootstrap` over SSH; [`bench`]: `ingot bench`; [`config`]: the
//!   settings file; [`layout`]: `ingot init master`; [`program`]: `ingot run`; [`exit`]: the
//!   exit codes of every command.
#![deny(missing_docs)]

pub mod apply;
pub mod bench;
pub mod bootstrap;
pub mod ca;
pub mod config;
pub mod control;
pub mod daemon;
pub mod directord;
pub mod exit;
pub mod fleet;
pub mod layout;
pub mod program;
pub mod record;
pub mod routine;
pub mod server;
pub mod swarm;
pub mod systemd;
