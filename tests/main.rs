//! End-to-end tests: the real `ingot` binary against real processes and files.

mod util;

mod apply;
mod minion_core;
mod run_command;
