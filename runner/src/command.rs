//! `ingot run`: the runner as a command.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::{run, EventSink, Program, RunError, ThreadSink, WireFormat};

/// Options of `ingot run`.
#[derive(Debug, Clone)]
pub struct RunCommand {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Channel3 name (default: the program's file name).
    pub name: Option<String>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL.
    pub grace: Option<Duration>,
    /// Run as this user.
    pub user: Option<String>,
    /// Run with this group.
    pub group: Option<String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Write events (channel3 netstrings) to this file instead of stderr.
    pub events: Option<PathBuf>,
}

/// Where `ingot run` sends events: the parent's channel (our fd 3) when there is one, else an
/// events file, else readable lines on stderr. Stdin and stdout pass through untouched.
pub fn event_output(
    upstream_fd3: Option<OwnedFd>,
    events_file: Option<&PathBuf>,
) -> io::Result<ThreadSink> {
    Ok(match (upstream_fd3, events_file) {
        (_, Some(path)) => ThreadSink::new(File::create(path)?, WireFormat::Channel3),
        (Some(fd), None) => ThreadSink::new(File::from(fd), WireFormat::Channel3),
        (None, None) => ThreadSink::new(io::stderr(), WireFormat::Text),
    })
}

/// Runs the command, passing our stdin through, writing the child's stdout to ours, and
/// returns the exit code to exit with (the child's, or 128+signal).
pub async fn run_command(cmd: &RunCommand, sink: &dyn EventSink) -> Result<i32, RunError> {
    let (prog, args) = cmd.argv.split_first().expect("clap requires a program");
    let mut program = Program::new(prog).args(args);
    if let Some(name) = &cmd.name {
        program.name = name.clone();
    }
    program.timeout = cmd.timeout;
    if let Some(g) = cmd.grace {
        program.grace = g;
    }
    program.user = cmd.user.clone();
    program.group = cmd.group.clone();
    program.cwd = cmd.cwd.clone();
    program.stdin = stdin_input();
    let outcome = run(&program, sink).await?;
    let mut out = io::stdout().lock();
    let _ = out.write_all(&outcome.stdout).and_then(|_| out.flush());
    Ok(outcome.code())
}

/// Our stdin, read fully when it is a pipe or file; nothing when it is a terminal.
fn stdin_input() -> crate::Input {
    use std::io::{IsTerminal, Read};
    let stdin = io::stdin();
    if stdin.is_terminal() {
        return crate::Input::Null;
    }
    let mut buf = Vec::new();
    match stdin.lock().read_to_end(&mut buf) {
        Ok(_) => crate::Input::Bytes(buf),
        Err(_) => crate::Input::Null,
    }
}
