//! Running one program: spawn, feed, drain, time out, reap.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use channel3::{Body, Event, Line, Message, SignalInfo, Spawn};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio_util::codec::Decoder as _;

pub use crate::error::RunError;
use crate::identity::Identity;
use crate::lines::LineSplitter;
use crate::outcome::{ExitKind, Outcome};
use crate::program::{Input, Program};
use crate::redact::{env_name_is_secret, redact_state, MASK};
use crate::sink::EventSink;

/// Runs programs with bounded concurrency.
#[derive(Clone)]
pub struct Runner {
    permits: Arc<Semaphore>,
}

impl Runner {
    /// At most `max_concurrent` programs run at once; the rest wait their turn.
    pub fn new(max_concurrent: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        }
    }

    /// Runs `program` once a slot is free.
    pub async fn run(&self, program: &Program, sink: &dyn EventSink) -> Result<Outcome, RunError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("the semaphore is never closed");
        run(program, sink).await
    }
}

type Reader = Box<dyn AsyncRead + Unpin + Send>;
type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// A running child: posix_spawn'd (the usual case) or forked (an identity switch).
enum Proc {
    Spawned(crate::spawn::Child),
    Forked(tokio::process::Child),
}

impl Proc {
    fn id(&self) -> u32 {
        match self {
            Proc::Spawned(c) => c.id(),
            Proc::Forked(c) => c.id().expect("a child not yet waited for has a pid"),
        }
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        match self {
            Proc::Spawned(c) => c.wait().await,
            Proc::Forked(c) => c.wait().await,
        }
    }
}

/// Kills the process group if the run is abandoned (its future dropped) before the end.
struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = killpg(self.pgid, Signal::SIGKILL);
        }
    }
}

const STDERR_TAIL: usize = 64 * 1024;
/// After the group is SIGKILLed, how long to keep draining what is already in the pipes.
const FINAL_DRAIN: Duration = Duration::from_millis(200);

/// Runs `program` to completion, emitting its events to `sink`.
pub async fn run(program: &Program, sink: &dyn EventSink) -> Result<Outcome, RunError> {
    let identity = Identity::resolve(program.user.as_deref(), program.group.as_deref())?;
    let (fd3_read, fd3_write) = if program.channel3 {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| RunError::Pipe(e.into()))?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let started = Instant::now();
    let spawn_error = |source| RunError::Spawn {
        path: program.path.display().to_string(),
        source,
    };
    let (mut child, stdin, stdout, stderr): (Proc, Option<Writer>, Reader, Reader) =
        if crate::spawn::supported(program) {
            let s = crate::spawn::spawn(program, fd3_write.as_ref()).map_err(spawn_error)?;
            let stdin = s.stdin.map(|w| Box::new(w) as Writer);
            (
                Proc::Spawned(s.child),
                stdin,
                Box::new(s.stdout),
                Box::new(s.stderr),
            )
        } else {
            let mut cmd = build_command(
                program,
                fd3_write.as_ref().map(AsRawFd::as_raw_fd),
                identity.clone(),
            );
            let spawned = cmd.spawn();
            // The Command holds a copy of fd 3's write end until dropped.
            drop(cmd);
            let mut c = spawned.map_err(spawn_error)?;
            let stdin = c.stdin.take().map(|w| Box::new(w) as Writer);
            let stdout = Box::new(c.stdout.take().expect("stdout is piped"));
            let stderr = Box::new(c.stderr.take().expect("stderr is piped"));
            (Proc::Forked(c), stdin, stdout, stderr)
        };
    // Our copy of the write end must go, or fd 3 never reaches EOF.
    drop(fd3_write);
    let pid = child.id();
    let mut guard = GroupGuard {
        pgid: Pid::from_raw(pid as i32),
        armed: true,
    };

    let emit = |body: Body| sink.emit(Event::now(Message::new(Some(program.name.clone()), &body)));
    emit(Body::Spawn(spawn_event(program, identity.as_ref())));

    let stdin_bytes = stdin_bytes(program, &emit);
    let fd3 = fd3_read
        .map(into_async_receiver)
        .transpose()
        .map_err(RunError::Pipe)?;

    let feed = async move {
        if let (Some(mut stdin), Some(bytes)) = (stdin, stdin_bytes) {
            // EPIPE is fine: a program need not read its input.
            let _ = stdin.write_all(&bytes).await;
            let _ = stdin.shutdown().await;
        }
    };
    let mut stdout_buf = Vec::new();
    let mut stderr_tail = Vec::new();
    let capture = program.capture_stdout;
    let stdout_events = program.stdout_events;
    let read_out = drain_lines(
        stdout,
        |chunk| {
            if capture {
                stdout_buf.extend_from_slice(chunk);
            }
        },
        |line| {
            if stdout_events {
                emit(Body::Stdout(Line::from_bytes(line)))
            }
        },
    );
    let read_err = drain_lines(
        stderr,
        |chunk| {
            stderr_tail.extend_from_slice(chunk);
            if stderr_tail.len() > 2 * STDERR_TAIL {
                stderr_tail.drain(..stderr_tail.len() - STDERR_TAIL);
            }
        },
        |line| emit(Body::Stderr(Line::from_bytes(line))),
    );
    let read_fd3 = async {
        if let Some(fd3) = fd3 {
            drain_channel3(fd3, &program.name, sink).await;
        }
    };
    let (status, timed_out, leaked) = {
        let readers = async { tokio::join!(feed, read_out, read_err, read_fd3) };
        tokio::pin!(readers);

        let waiter = wait_with_timeout(&mut child, program, guard.pgid, &emit);
        tokio::pin!(waiter);
        let mut readers_done = false;
        let (status, timed_out) = loop {
            tokio::select! {
                _ = &mut readers, if !readers_done => readers_done = true,
                r = &mut waiter => break r.map_err(|source| RunError::Wait { name: program.name.clone(), source })?,
            }
        };

        // The leader is gone. Grandchildren may still hold its pipes: give them the leak timeout,
        // then kill the group and take what is already buffered.
        let mut leaked = false;
        if !readers_done
            && tokio::time::timeout(program.leak_timeout, &mut readers)
                .await
                .is_err()
        {
            leaked = true;
            let _ = killpg(guard.pgid, Signal::SIGKILL);
            let _ = tokio::time::timeout(FINAL_DRAIN, &mut readers).await;
        }
        (status, timed_out, leaked)
    };
    // Anything left in the group (a background job that closed its stdio) goes too.
    let _ = killpg(guard.pgid, Signal::SIGKILL);
    guard.armed = false;

    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => ExitKind::Exited(c),
        (None, Some(s)) => ExitKind::Signaled(s),
        (None, None) => ExitKind::Exited(-1),
    };
    let outcome = Outcome {
        name: program.name.clone(),
        exit,
        stdout: stdout_buf,
        stderr_tail: tail(stderr_tail),
        timed_out,
        leaked,
        duration: started.elapsed(),
    };
    emit(Body::Exitcode(outcome.code().into()));
    Ok(outcome)
}

fn tail(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() > STDERR_TAIL {
        v.drain(..v.len() - STDERR_TAIL);
    }
    v
}

fn build_command(
    program: &Program,
    fd3: Option<i32>,
    identity: Option<Identity>,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&program.path);
    cmd.args(&program.args);
    if let Some(env) = &program.env {
        cmd.env_clear();
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
    }
    cmd.envs(program.env_add.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &program.cwd {
        cmd.current_dir(dir);
    }
    cmd.stdin(match program.stdin {
        Input::Null => Stdio::null(),
        _ => Stdio::piped(),
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    // SAFETY: the closure makes only async-signal-safe syscalls (dup2, fcntl, close,
    // setgroups, setgid, setuid) on values prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            match fd3 {
                Some(3) => {
                    if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Some(fd) => {
                    if libc::dup2(fd, 3) == -1 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // No channel: make sure nothing is on fd 3 (scripts must cope with it closed).
                None => {
                    libc::close(3);
                }
            }
            if let Some(id) = &identity {
                id.apply()?;
            }
            Ok(())
        });
    }
    cmd
}

fn spawn_event(program: &Program, identity: Option<&Identity>) -> Spawn {
    let mut env = std::collections::BTreeMap::new();
    let inherited: Vec<(String, String)> = match &program.env {
        Some(e) => e
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect(),
        None => Vec::new(),
    };
    let added = program.env_add.iter().map(|(k, v)| {
        (
            k.to_string_lossy().into_owned(),
            v.to_string_lossy().into_owned(),
        )
    });
    for (k, v) in inherited.into_iter().chain(added) {
        let v = if env_name_is_secret(&k, &program.sensitive_env) {
            MASK.to_owned()
        } else {
            v
        };
        env.insert(k, v);
    }
    Spawn {
        path: program.path.display().to_string(),
        env,
        args: program
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        user: program
            .user
            .clone()
            .or_else(|| identity.and_then(|i| i.uid).map(|u| u.to_string())),
        group: program.group.clone(),
    }
}

/// The bytes to write on stdin, emitting `stdin` events (redacted) as a side effect.
fn stdin_bytes(program: &Program, emit: &impl Fn(Body)) -> Option<Vec<u8>> {
    let (bytes, shown) = match &program.stdin {
        Input::Null => return None,
        Input::Bytes(b) => (b.clone(), b.clone()),
        Input::Json(v) => {
            let bytes = serde_json::to_vec(v).expect("JSON values serialize");
            let mut shown = serde_json::to_vec(&redact_state(v)).expect("JSON values serialize");
            shown.push(b'\n');
            (bytes, shown)
        }
    };
    let mut splitter = LineSplitter::default();
    splitter.push(&shown, |l| emit(Body::Stdin(Line::from_bytes(l))));
    splitter.finish(|l| emit(Body::Stdin(Line::from_bytes(l))));
    Some(bytes)
}

async fn drain_lines<R: AsyncRead + Unpin>(
    mut pipe: R,
    mut keep: impl FnMut(&[u8]),
    mut line: impl FnMut(&[u8]),
) {
    let mut splitter = LineSplitter::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                keep(&buf[..n]);
                splitter.push(&buf[..n], &mut line);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    splitter.finish(&mut line);
}

fn into_async_receiver(fd: OwnedFd) -> io::Result<tokio::net::unix::pipe::Receiver> {
    // O_NONBLOCK on the read end only: it is per open file description, and the child's write
    // end must stay blocking.
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
}

async fn drain_channel3(
    mut pipe: tokio::net::unix::pipe::Receiver,
    name: &str,
    sink: &dyn EventSink,
) {
    let mut codec = channel3::Channel3Codec::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Ok(Some(mut m)) = codec.decode(&mut buf) {
            m.relabel(name);
            sink.emit(Event::now(m));
        }
        match pipe.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    while let Ok(Some(mut m)) = codec.decode_eof(&mut buf) {
        m.relabel(name);
        sink.emit(Event::now(m));
    }
}

async fn wait_with_timeout(
    child: &mut Proc,
    program: &Program,
    pgid: Pid,
    emit: &impl Fn(Body),
) -> io::Result<(ExitStatus, bool)> {
    let Some(limit) = program.timeout else {
        return Ok((child.wait().await?, false));
    };
    if let Ok(status) = tokio::time::timeout(limit, child.wait()).await {
        return Ok((status?, false));
    }
    let signal = |sig: Signal| {
        let _ = killpg(pgid, sig);
        emit(Body::Signal(SignalInfo {
            signal: sig.as_str().into(),
            reason: "timeout".into(),
        }));
    };
    signal(Signal::SIGTERM);
    if let Ok(status) = tokio::time::timeout(program.grace, child.wait()).await {
        return Ok((status?, true));
    }
    signal(Signal::SIGKILL);
    Ok((child.wait().await?, true))
}
