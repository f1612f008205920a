//! End-to-end tests: the real `ingot` binary against real processes and files.

mod util;

mod run_command;
