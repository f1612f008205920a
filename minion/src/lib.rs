//! The minion: where ingot touches real systems.
//!
//! It gathers facts (every executable in `facts/`, run in parallel through the runner), and
//! dispatches resource actions (`resources/KIND ACTION` with a state on stdin) through one
//! function that the shell (`ingot resource`) and the network both call. The built-in facts
//! and resources live in [`builtin`]; each is reachable as its own executable through a symlink
//! to the `ingot` binary (busybox style: argv\[0\] selects it).
#![deny(missing_docs)]

pub mod builtin;
