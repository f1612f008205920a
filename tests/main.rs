//! End-to-end tests: the real `ingot` binary against real processes and files.

mod util;

mod apply;
mod apply_paths;
mod bootstrap;
mod directord_cli;
mod directord_local;
mod directord_net;
mod exit_codes;
mod history_commands;
mod interrupts;
mod minion_core;
mod net_loopback;
mod net_netns;
mod net_support;
mod readme;
mod run_command;
mod shell_integration;
