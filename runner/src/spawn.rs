//! Starting a child with `posix_spawn`.
//!
//! std (and tokio) fall back to `fork` whenever anything must happen between fork and exec,
//! and putting the channel3 pipe on fd 3 is such a thing. `fork` copies the parent's page
//! tables: in a master holding a thousand TLS sessions, or a swarm of agents, that copy and
//! its teardown cost more than the exec (most of W1's time). glibc's `posix_spawn` uses a
//! `CLONE_VM | CLONE_VFORK` child instead, and its file actions do the fd 3 mapping, so every
//! program that needs no identity switch starts this way.
//!
//! The child gets: stdin from a pipe or `/dev/null`, stdout and stderr pipes, optionally the
//! channel3 pipe as fd 3 (nothing else: every descriptor of this process is close-on-exec),
//! its own process group, an empty signal mask and SIGPIPE at its default. It is reaped through
//! a pidfd, so waiting is an ordinary readiness event.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use crate::program::{Input, Program};

/// A child started by [`spawn`]; reaped when [`Child::wait`] returns, else on drop.
pub(crate) struct Child {
    pid: libc::pid_t,
    pidfd: AsyncFd<OwnedFd>,
    status: Option<ExitStatus>,
}

/// A started child and the parent's ends of its pipes.
pub(crate) struct Spawned {
    pub child: Child,
    pub stdin: Option<tokio::net::unix::pipe::Sender>,
    pub stdout: tokio::net::unix::pipe::Receiver,
    pub stderr: tokio::net::unix::pipe::Receiver,
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{s:?} contains a NUL byte"),
        )
    })
}

/// A close-on-exec pipe `(read, write)`.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((r, w))
}

/// The fd moved to 10 or above, so no dup2 in the file actions lands on it (dup2 of a
/// descriptor onto itself would keep its close-on-exec flag).
fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 10 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; the result is a new descriptor we then own.
    let moved = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if moved < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `moved` was just returned by fcntl and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

fn nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL)?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
    Ok(())
}

/// The environment the child gets, as `KEY=VALUE` strings.
fn environment(program: &Program) -> io::Result<Vec<CString>> {
    let mut vars: Vec<(OsString, OsString)> = match &program.env {
        Some(e) => e.clone(),
        None => std::env::vars_os().collect(),
    };
    for (k, v) in &program.env_add {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => vars.push((k.clone(), v.clone())),
        }
    }
    vars.iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect()
}

/// Whether [`spawn`] can start `program`: no identity switch, and a bare program name is
/// looked up in this process's own `PATH` (as `posix_spawnp` does) only when the program's
/// environment does not set another.
pub(crate) fn supported(program: &Program) -> bool {
    if program.user.is_some() || program.group.is_some() {
        return false;
    }
    let bare = !program.path.as_os_str().as_bytes().contains(&b'/');
    let sets_path = program.env.is_some() || program.env_add.iter().any(|(k, _)| k == "PATH");
    !(bare && sets_path)
}

/// Starts `program` with `fd3` (the write end of its channel3 pipe) as its fd 3.
pub(crate) fn spawn(program: &Program, fd3: Option<&OwnedFd>) -> io::Result<Spawned> {
    let path = cstring(program.path.as_os_str())?;
    let mut argv: Vec<CString> = vec![path.clone()];
    for a in &program.args {
        argv.push(cstring(a)?);
    }
    let envp = environment(program)?;
    let cwd = program
        .cwd
        .as_ref()
        .map(|d| cstring(d.as_os_str()))
        .transpose()?;

    let stdin = match program.stdin {
        Input::Null => None,
        _ => Some(pipe()?),
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let stdin_r = stdin.as_ref().map(|(r, _)| r.try_clone()).transpose()?;
    let stdin_r = stdin_r.map(high).transpose()?;
    let out_w = high(out_w)?;
    let err_w = high(err_w)?;
    let fd3_w = fd3.map(|f| f.try_clone().and_then(high)).transpose()?;

    let mut ptrs: Vec<*mut libc::c_char> = argv.iter().map(|c| c.as_ptr().cast_mut()).collect();
    ptrs.push(std::ptr::null_mut());
    let mut envs: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr().cast_mut()).collect();
    envs.push(std::ptr::null_mut());
    let devnull = c"/dev/null";

    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // on every path; every pointer handed to posix_spawn outlives the call.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        if let Err(e) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(e);
        }
        let result = (|| -> io::Result<()> {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe_default: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe_default);
            libc::sigaddset(&mut pipe_default, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(
                &mut attr,
                &pipe_default,
            ))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                flags as libc::c_short,
            ))?;
            match &stdin_r {
                Some(r) => check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    r.as_raw_fd(),
                    0,
                ))?,
                None => check(libc::posix_spawn_file_actions_addopen(
                    &mut actions,
                    0,
                    devnull.as_ptr(),
                    libc::O_RDONLY,
                    0,
                ))?,
            }
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                out_w.as_raw_fd(),
                1,
            ))?;
            check(libc::posix_spawn_file_actions_adddup2(
                &mut actions,
                err_w.as_raw_fd(),
                2,
            ))?;
            if let Some(w) = &fd3_w {
                check(libc::posix_spawn_file_actions_adddup2(
                    &mut actions,
                    w.as_raw_fd(),
                    3,
                ))?;
            }
            if let Some(dir) = &cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(
                    &mut actions,
                    dir.as_ptr(),
                ))?;
            }
            let spawn = if path.as_bytes().contains(&b'/') {
                libc::posix_spawn
            } else {
                libc::posix_spawnp
            };
            check(spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                ptrs.as_ptr(),
                envs.as_ptr(),
            ))
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result?;
    }
    // The child has its copies; ours must go so the pipes reach EOF when it exits.
    drop((stdin_r, out_w, err_w, fd3_w));

    let child = Child::new(pid)?;
    let stdin = match stdin {
        Some((_, w)) => {
            nonblocking(&w)?;
            Some(tokio::net::unix::pipe::Sender::from_owned_fd(w)?)
        }
        None => None,
    };
    nonblocking(&out_r)?;
    nonblocking(&err_r)?;
    Ok(Spawned {
        child,
        stdin,
        stdout: tokio::net::unix::pipe::Receiver::from_owned_fd(out_r)?,
        stderr: tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)?,
    })
}

impl Child {
    fn new(pid: libc::pid_t) -> io::Result<Self> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // Without a pidfd we cannot wait asynchronously: do not leave the child behind.
            // SAFETY: plain syscalls on the pid we just created.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(e);
        }
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns `fd`, which stays open and the same until it is dropped.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            pid,
            pidfd,
            status: None,
        })
    }

    /// The child's pid (also its process group id).
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        let s = reap(self.pid)?;
        if s.is_some() {
            self.status = s;
        }
        Ok(s)
    }

    /// Waits for the child to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        loop {
            let mut ready = self.pidfd.readable().await?;
            if let Some(s) = reap(self.pid)? {
                drop(ready);
                self.status = Some(s);
                return Ok(s);
            }
            ready.clear_ready();
        }
    }
}

/// The exit status of `pid` if it has ended (and is now reaped).
fn reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with WNOHANG.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    match rc {
        0 => Ok(None),
        r if r == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() && !matches!(self.try_reap(), Ok(Some(_))) {
            // Abandoned while running: the runner's group guard kills it; reap it off-thread
            // so no zombie is left.
            let pid = self.pid;
            std::thread::spawn(move || {
                // SAFETY: blocking waitpid on our own child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            });
        }
    }
}
