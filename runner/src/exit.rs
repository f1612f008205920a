//! The exit codes of every `ingot` command: the one table (README.md, "Exit codes", says the
//! same). A command that can fail in more than one way maps each error to one of these; no
//! command invents another.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (with `--check`: nothing to change, or changes pending without `--detailed-exitcode`) |
//! | 1 | the work ran and failed: a step or job failed, the routine did not converge, a program exited non-zero |
//! | 2 | usage or bad input: a flag, a file, a directory that is not there, an unknown run id, targets that match nothing |
//! | 2 | with `apply --check --detailed-exitcode`: changes are pending (nothing failed) |
//! | 3 | unavailable: the master cannot be reached, or the tree is locked by another process |
//! | 130 | interrupted (SIGINT or SIGTERM) |
//!
//! `ingot run PROG` and the busybox built-ins exit with their program's own code instead (a
//! program that could not be started: 127, as a shell says).

/// Success.
pub const SUCCESS: i32 = 0;
/// The work ran and failed.
pub const FAILED: i32 = 1;
/// Usage or bad input; nothing was done.
pub const USAGE: i32 = 2;
/// `apply --check --detailed-exitcode`: changes are pending (a plan to approve, not a failure).
pub const CHANGES_PENDING: i32 = 2;
/// The master cannot be reached, or the tree is locked by another process.
pub const UNAVAILABLE: i32 = 3;
/// Interrupted by SIGINT or SIGTERM (128 + SIGINT, as a shell reports it).
pub const INTERRUPTED: i32 = 130;
/// A program `ingot run` was asked to run could not be started (as `sh` says it).
pub const NOT_RUN: i32 = 127;
