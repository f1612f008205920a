//! The master: turns a minion's facts into a prescription and drives the minion until it
//! matches.
//!
//! [`routine::converge`] is the loop users run every day (facts → prescribe → inspect →
//! choreograph → perform → inspect again, until nothing is left to do), written once against the
//! [`link::MinionLink`] interface so that the in-process minion ([`local::LocalMinion`]) and a
//! remote one behave the same. [`actors`] runs `actors/prescribe` and `actors/choreograph`,
//! [`documents`] validates what they print, [`choreograph`] is the built-in default, [`report`]
//! is what the operator sees, and [`apply`] is the `ingot apply` command.
#![deny(missing_docs)]

pub mod actors;
pub mod apply;
pub mod bench;
pub mod bootstrap;
pub mod choreograph;
pub mod cli;
pub mod config;
pub mod documents;
pub mod link;
pub mod local;
pub mod net;
pub mod record;
pub mod report;
pub mod routine;
