//! SSH through the system's OpenSSH (`ssh`, `scp`), run by the runner: one master connection per
//! host (ControlMaster, socket in a private temp dir) that every command of the host reuses.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use runner::{NullSink, Outcome, Program};

/// How to reach hosts.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// `-i KEY`.
    pub key_file: Option<PathBuf>,
    /// `accept-new` instead of `yes` for StrictHostKeyChecking.
    pub accept_new: bool,
    /// `-o UserKnownHostsFile=FILE`.
    pub known_hosts: Option<PathBuf>,
    /// `-F FILE`.
    pub config: Option<PathBuf>,
    /// ConnectTimeout.
    pub connect_timeout: Duration,
    /// Limit for each RUN/ADD/GET.
    pub job_timeout: Duration,
}

/// Where one host is.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Host name or address.
    pub host: String,
    /// Port (else ssh's own configuration decides).
    pub port: Option<u16>,
    /// User (else ssh's own configuration decides).
    pub username: Option<String>,
}

/// Why a connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host key is unknown or does not match.
    HostKey,
    /// Authentication refused.
    Auth,
    /// No route, refused, timed out, name not resolved.
    Unreachable,
}

impl ConnectFailure {
    /// Classifies ssh's complaint.
    pub fn classify(stderr: &str) -> Self {
        let s = stderr.to_lowercase();
        if s.contains("host key verification failed")
            || s.contains("remote host identification has changed")
            || s.contains("no ") && s.contains("host key is known")
        {
            ConnectFailure::HostKey
        } else if s.contains("permission denied") || s.contains("too many authentication") {
            ConnectFailure::Auth
        } else {
            ConnectFailure::Unreachable
        }
    }

    /// The word in the final table.
    pub fn result(&self) -> &'static str {
        match self {
            ConnectFailure::HostKey => "host-key-refused",
            ConnectFailure::Auth => "auth-refused",
            ConnectFailure::Unreachable => "unreachable",
        }
    }

    /// What to do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ConnectFailure::HostKey => "check the host's key (ssh-keyscan) and known_hosts; pass --accept-new-host-keys to learn keys of new hosts",
            ConnectFailure::Auth => "check --key-file, the ssh agent and the target's username",
            ConnectFailure::Unreachable => "check the host, the port and that sshd runs there",
        }
    }
}

/// One open connection.
pub struct SshSession {
    dest: Destination,
    opts: SshOptions,
    control: PathBuf,
    master: Option<tokio::task::JoinHandle<Result<Outcome, runner::RunError>>>,
}

fn text(o: &Outcome) -> String {
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    let e = o.stderr_text();
    if !s.is_empty() && !e.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(&e);
    s.trim_end().to_owned()
}

/// What a failed command said.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Exit code, when it ran.
    pub code: Option<i32>,
    /// Its stdout and stderr (or why it could not run).
    pub output: String,
}

impl SshSession {
    fn common(&self, scp: bool) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(f) = &self.opts.config {
            a.push("-F".into());
            a.push(f.into());
        }
        let mut o = |s: String| {
            a.push("-o".into());
            a.push(s.into());
        };
        o("BatchMode=yes".into());
        o(format!(
            "StrictHostKeyChecking={}",
            if self.opts.accept_new {
                "accept-new"
            } else {
                "yes"
            }
        ));
        o(format!(
            "ConnectTimeout={}",
            self.opts.connect_timeout.as_secs().max(1)
        ));
        o(format!("ControlPath={}", self.control.display()));
        o("LogLevel=ERROR".into());
        o("ServerAliveInterval=15".into());
        if let Some(k) = &self.opts.known_hosts {
            o(format!("UserKnownHostsFile={}", k.display()));
        }
        if let Some(k) = &self.opts.key_file {
            a.push("-i".into());
            a.push(k.into());
        }
        if let Some(p) = self.dest.port {
            a.push(if scp { "-P" } else { "-p" }.into());
            a.push(p.to_string().into());
        }
        if !scp {
            if let Some(u) = &self.dest.username {
                a.push("-l".into());
                a.push(u.into());
            }
        }
        a
    }

    fn remote(&self, path: &str) -> String {
        let host = if self.dest.host.contains(':') {
            format!("[{}]", self.dest.host)
        } else {
            self.dest.host.clone()
        };
        match &self.dest.username {
            Some(u) => format!("{u}@{host}:{path}"),
            None => format!("{host}:{path}"),
        }
    }

    /// Opens the master connection; on failure returns ssh's complaint.
    pub async fn connect(
        dest: Destination,
        opts: SshOptions,
        control: PathBuf,
    ) -> Result<SshSession, (ConnectFailure, String)> {
        let _ = std::fs::remove_file(&control);
        let mut s = SshSession {
            dest,
            opts,
            control,
            master: None,
        };
        let mut args = s.common(false);
        for o in ["ControlMaster=yes", "ControlPersist=no"] {
            args.push("-o".into());
            args.push(o.into());
        }
        args.extend(["-N".into(), "-T".into(), "--".into()]);
        args.push(s.dest.host.clone().into());
        let prog = Program::new("ssh").name("ssh-master").args(args);
        let mut prog = prog;
        prog.channel3 = false;
        let mut task = tokio::spawn(async move { runner::run(&prog, &NullSink).await });
        let deadline = Instant::now() + s.opts.connect_timeout + Duration::from_secs(5);
        loop {
            if s.control.exists() {
                s.master = Some(task);
                return Ok(s);
            }
            if task.is_finished() {
                let why = match (&mut task).await {
                    Ok(Ok(o)) => {
                        let t = text(&o);
                        if t.is_empty() {
                            format!("ssh exited with {} before connecting", o.code())
                        } else {
                            t
                        }
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err((ConnectFailure::classify(&why), why));
            }
            if Instant::now() > deadline {
                task.abort();
                return Err((
                    ConnectFailure::Unreachable,
                    format!(
                        "no connection within {} s",
                        s.opts.connect_timeout.as_secs() + 5
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    async fn exec(&self, prog: Program) -> Result<String, Failure> {
        let mut prog = prog.timeout(self.opts.job_timeout);
        prog.channel3 = false;
        match runner::run(&prog, &NullSink).await {
            Ok(o) if o.success() => Ok(text(&o)),
            Ok(o) => {
                let mut output = text(&o);
                if o.timed_out {
                    output.push_str(&format!(
                        "\n(killed after {} s: raise --job-timeout)",
                        self.opts.job_timeout.as_secs()
                    ));
                }
                Err(Failure {
                    code: Some(o.code()),
                    output,
                })
            }
            Err(e) => Err(Failure {
                code: None,
                output: e.to_string(),
            }),
        }
    }

    /// RUN: the command through the remote user's shell.
    pub async fn run(&self, command: &str) -> Result<String, Failure> {
        let mut args = self.common(false);
        args.extend(["-o".into(), "ControlMaster=no".into(), "-T".into()]);
        args.push("--".into());
        args.push(self.dest.host.clone().into());
        args.push(command.into());
        self.exec(Program::new("ssh").args(args)).await
    }

    /// ADD: upload `local` to `remote`.
    pub async fn put(&self, local: &Path, remote: &str) -> Result<String, Failure> {
        let mut args = self.common(true);
        args.extend(["-q".into(), "-o".into(), "ControlMaster=no".into()]);
        args.push("--".into());
        args.push(local.into());
        args.push(self.remote(remote).into());
        self.exec(Program::new("scp").args(args)).await
    }

    /// GET: download `remote` to `local`.
    pub async fn get(&self, remote: &str, local: &Path) -> Result<String, Failure> {
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Failure {
                code: None,
                output: format!("cannot create {}: {e}", parent.display()),
            })?;
        }
        let mut args = self.common(true);
        args.extend(["-q".into(), "-o".into(), "ControlMaster=no".into()]);
        args.push("--".into());
        args.push(self.remote(remote).into());
        args.push(local.into());
        self.exec(Program::new("scp").args(args)).await
    }

    /// Closes the master connection.
    pub async fn close(mut self) {
        let mut args = self.common(false);
        args.extend(["-O".into(), "exit".into(), "--".into()]);
        args.push(self.dest.host.clone().into());
        let mut prog = Program::new("ssh")
            .args(args)
            .timeout(Duration::from_secs(5));
        prog.channel3 = false;
        let _ = runner::run(&prog, &NullSink).await;
        if let Some(mut m) = self.master.take() {
            if tokio::time::timeout(Duration::from_secs(3), &mut m)
                .await
                .is_err()
            {
                m.abort();
            }
        }
    }
}

impl Drop for SshSession {
    fn drop(&mut self) {
        // An abandoned session: dropping the runner's future kills ssh's process group.
        if let Some(m) = self.master.take() {
            m.abort();
        }
    }
}
