//! The `service` resource: a system service, running or stopped, enabled or not, with the
//! one-time actions `start`, `stop`, `restart` and `reload`.
//!
//! Desired state: `name` (identity), `state` (`running` | `stopped`), `enabled` (boolean),
//! `backend` (`systemd` | `runit` | `sysvinit`; chosen automatically when absent), and for
//! runit `service_dir` (the directory `runsvdir` watches, default `/etc/service`), `sv_dir`
//! (where service definitions live, default `/etc/sv`) and `timeout` (seconds `sv` waits,
//! default 10).
//!
//! Backends, and what "enabled" means for each:
//! - **systemd** (only when systemd is PID 1, i.e. `/run/systemd/system` exists): `systemctl
//!   is-active` / `is-enabled` / `start` / `enable` ...
//! - **runit**: the definition is `SV_DIR/NAME` (a directory with a `run` script); enabled means
//!   the link `SERVICE_DIR/NAME` exists, so that `runsvdir` supervises it; state and actions go
//!   through `sv`. Enabling waits (up to about 10 s: `runsvdir` rescans every 5 s) until `runsv`
//!   supervises the service. A runit service must be enabled to run.
//! - **sysvinit**: `/etc/init.d/NAME` run through `service NAME start|stop|status...`; enabled
//!   means a start link in `/etc/rc[2-5].d`, managed with `update-rc.d`.
//!
//! Automatic choice: systemd when it is PID 1; else runit when `sv` is installed and the service
//! has a runit definition or link; else sysvinit when `/etc/init.d/NAME` exists; else runit
//! when `sv` is installed; else sysvinit.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::user::common::{self, diff, parse, Tool};
use super::{Resource, ResourceError};

const KIND: &str = "service";

/// The `service` resource.
pub struct Service;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RunState {
    Running,
    Stopped,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Systemd,
    Runit,
    Sysvinit,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Systemd => "systemd",
            Backend::Runit => "runit",
            Backend::Sysvinit => "sysvinit",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceState {
    name: String,
    state: Option<RunState>,
    enabled: Option<bool>,
    backend: Option<Backend>,
    service_dir: Option<String>,
    sv_dir: Option<String>,
    timeout: Option<u32>,
}

/// What was observed of a service.
struct Status {
    exists: bool,
    running: bool,
    enabled: bool,
    pid: Option<u64>,
}

/// A resolved service: the desired state plus the backend and its paths.
struct Svc {
    d: ServiceState,
    backend: Backend,
    service_dir: PathBuf,
    sv_dir: PathBuf,
    timeout: u32,
}

fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

impl Svc {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let d: ServiceState = parse(KIND, state)?;
        common::check_name("/name", &d.name)?;
        for (ptr, v) in [("/service_dir", &d.service_dir), ("/sv_dir", &d.sv_dir)] {
            if let Some(v) = v {
                if !v.starts_with('/') {
                    return Err(ResourceError::input(
                        ptr,
                        format!("{v:?} must be an absolute path"),
                    ));
                }
            }
        }
        let service_dir = PathBuf::from(d.service_dir.as_deref().unwrap_or("/etc/service"));
        let sv_dir = PathBuf::from(d.sv_dir.as_deref().unwrap_or("/etc/sv"));
        let backend = match d.backend {
            Some(b) => b,
            None if systemd_is_pid1() => Backend::Systemd,
            None if common::have("sv")
                && (sv_dir.join(&d.name).is_dir()
                    || service_dir.join(&d.name).symlink_metadata().is_ok()) =>
            {
                Backend::Runit
            }
            None if Path::new("/etc/init.d").join(&d.name).is_file() => Backend::Sysvinit,
            None if common::have("sv") => Backend::Runit,
            None => Backend::Sysvinit,
        };
        if backend == Backend::Systemd && !systemd_is_pid1() {
            return Err(ResourceError::Failed(
                "backend systemd asked for, but systemd is not PID 1 here (/run/systemd/system is missing); use backend runit or sysvinit".into(),
            ));
        }
        if backend == Backend::Runit
            && d.state == Some(RunState::Running)
            && d.enabled == Some(false)
        {
            return Err(ResourceError::input(
                "/enabled",
                "under runit a service runs only while enabled (linked into service_dir); use enabled: true or state: stopped",
            ));
        }
        let timeout = d.timeout.unwrap_or(10);
        Ok(Self {
            d,
            backend,
            service_dir,
            sv_dir,
            timeout,
        })
    }

    fn name(&self) -> &str {
        &self.d.name
    }

    // ---- runit ----

    fn link(&self) -> PathBuf {
        self.service_dir.join(self.name())
    }

    fn definition(&self) -> PathBuf {
        self.sv_dir.join(self.name())
    }

    /// Whether a `runsv` supervises the service: its `supervise/ok` FIFO has a reader.
    fn supervised(&self) -> bool {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.link().join("supervise/ok"))
            .is_ok()
    }

    fn sv(&self, command: &str) -> Tool {
        Tool::new("sv")
            .arg("-w")
            .arg(self.timeout.to_string())
            .arg(command)
            .arg(self.link().display().to_string())
            .hint(format!(
                "check the service's run script and its log (sv status {}); install runit if sv is missing",
                self.link().display()
            ))
    }

    fn runit_status(&self) -> Result<Status, ResourceError> {
        let enabled = self.link().symlink_metadata().is_ok();
        let exists = enabled || self.definition().is_dir();
        if !enabled || !self.supervised() {
            return Ok(Status {
                exists,
                running: false,
                enabled,
                pid: None,
            });
        }
        let tool = Tool::new("sv")
            .arg("status")
            .arg(self.link().display().to_string());
        let out = tool.outcome()?;
        // "run: /etc/service/x: (pid 123) 4s; ..." or "down: ...": the first word is the state.
        let running = out.stdout.starts_with("run:");
        let pid = out
            .stdout
            .split("(pid ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|p| p.trim().parse().ok());
        if !running && !out.stdout.starts_with("down:") && !out.stdout.starts_with("finish:") {
            return Err(tool.error(&out));
        }
        Ok(Status {
            exists,
            running,
            enabled,
            pid,
        })
    }

    fn runit_wait_supervised(&self) -> Result<(), ResourceError> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(self.timeout.max(7)));
        while !self.supervised() {
            if Instant::now() > deadline {
                return Err(ResourceError::Failed(format!(
                    "no runsv picked up {} within {} s: is runsvdir running on {}? (start it, or set service_dir to the directory it watches)",
                    self.link().display(),
                    self.timeout.max(7),
                    self.service_dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    fn runit_enable(&self) -> Result<(), ResourceError> {
        let def = self.definition();
        if !def.join("run").is_file() {
            return Err(ResourceError::Failed(format!(
                "cannot enable {}: there is no runit service definition {} (a directory with an executable run script); create it first",
                self.name(),
                def.display()
            )));
        }
        let link = self.link();
        std::os::unix::fs::symlink(&def, &link).map_err(|source| ResourceError::Io {
            path: link.display().to_string(),
            source,
        })?;
        self.runit_wait_supervised()
    }

    fn runit_disable(&self) -> Result<(), ResourceError> {
        let link = self.link();
        let meta = link
            .symlink_metadata()
            .map_err(|source| ResourceError::Io {
                path: link.display().to_string(),
                source,
            })?;
        if !meta.file_type().is_symlink() {
            return Err(ResourceError::Failed(format!(
                "{} is a directory, not a link to a service definition; move it to {} and link it, or remove it by hand",
                link.display(),
                self.definition().display()
            )));
        }
        if self.supervised() {
            self.sv("stop").run()?;
            self.sv("exit").run()?;
        }
        std::fs::remove_file(&link).map_err(|source| ResourceError::Io {
            path: link.display().to_string(),
            source,
        })
    }

    fn runit_action(&self, action: &str) -> Result<(), ResourceError> {
        if self.link().symlink_metadata().is_err() || !self.supervised() {
            if action == "stop" {
                return Ok(());
            }
            return Err(ResourceError::Failed(format!(
                "cannot {action} {}: it is not supervised by runsv; enable it (link {} into {}) and make sure runsvdir runs on {}",
                self.name(),
                self.definition().display(),
                self.service_dir.display(),
                self.service_dir.display()
            )));
        }
        let cmd = match action {
            "reload" => "hup",
            other => other,
        };
        let old_pid = if action == "restart" {
            self.runit_status()?.pid
        } else {
            None
        };
        if action == "start" {
            return self.runit_start();
        }
        let tool = self.sv(cmd);
        let out = tool.outcome()?;
        if !out.ok() {
            return Err(tool.error(&out));
        }
        if action == "restart" && old_pid.is_some() {
            // `sv -w` compares times at one-second resolution: a process started in the same
            // second passes its check before runsv has replaced it. Wait for the new process.
            let deadline = Instant::now() + Duration::from_secs(u64::from(self.timeout));
            loop {
                let s = self.runit_status()?;
                if s.running && s.pid.is_some() && s.pid != old_pid {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(ResourceError::Failed(format!(
                        "{} did not come back with a new process within {} s of `sv restart`; check its run script and log (sv status {})",
                        self.name(),
                        self.timeout,
                        self.link().display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// `sv up`, repeated every second until the service runs: runsv can drop an `up` that
    /// arrives while it waits out its one-second restart delay (e.g. right after a quick stop).
    fn runit_start(&self) -> Result<(), ResourceError> {
        let deadline = Instant::now() + Duration::from_secs(u64::from(self.timeout));
        loop {
            Tool::new("sv")
                .arg("up")
                .arg(self.link().display().to_string())
                .hint("install runit")
                .run()?;
            let again = Instant::now() + Duration::from_secs(1);
            while Instant::now() < again {
                if self.runit_status()?.running {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if Instant::now() > deadline {
                let status = Tool::new("sv")
                    .arg("status")
                    .arg(self.link().display().to_string())
                    .outcome()
                    .map(|o| o.stdout.trim().to_string())
                    .unwrap_or_default();
                return Err(ResourceError::Failed(format!(
                    "{} did not start within {} s ({status}); check its run script and log",
                    self.name(),
                    self.timeout
                )));
            }
        }
    }

    // ---- systemd ----

    fn systemctl(&self) -> Tool {
        Tool::new("systemctl").hint(format!(
            "see `systemctl status {}` and `journalctl -u {}`",
            self.name(),
            self.name()
        ))
    }

    fn systemd_status(&self) -> Result<Status, ResourceError> {
        let load = self
            .systemctl()
            .args(["show", "--property=LoadState", "--value", self.name()])
            .run()?;
        let exists = load.trim() == "loaded";
        let active = self
            .systemctl()
            .args(["is-active", self.name()])
            .outcome()?;
        let enabled = self
            .systemctl()
            .args(["is-enabled", self.name()])
            .outcome()?;
        let pid = self
            .systemctl()
            .args(["show", "--property=MainPID", "--value", self.name()])
            .run()
            .ok()
            .and_then(|p| p.trim().parse::<u64>().ok())
            .filter(|p| *p != 0);
        Ok(Status {
            exists,
            running: active.stdout.trim() == "active",
            enabled: matches!(enabled.stdout.trim(), "enabled" | "enabled-runtime"),
            pid,
        })
    }

    // ---- sysvinit ----

    fn init_script(&self) -> PathBuf {
        Path::new("/etc/init.d").join(self.name())
    }

    fn sysv_status(&self) -> Result<Status, ResourceError> {
        let exists = self.init_script().is_file();
        if !exists {
            return Ok(Status {
                exists,
                running: false,
                enabled: false,
                pid: None,
            });
        }
        let status = Tool::new("service")
            .args([self.name(), "status"])
            .outcome()?;
        let enabled = (2..=5).any(|level| {
            std::fs::read_dir(format!("/etc/rc{level}.d"))
                .map(|dir| {
                    dir.flatten().any(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.starts_with('S') && n.get(3..) == Some(self.name())
                    })
                })
                .unwrap_or(false)
        });
        Ok(Status {
            exists,
            running: status.ok(),
            enabled,
            pid: None,
        })
    }

    fn service_cmd(&self, action: &str) -> Result<(), ResourceError> {
        Tool::new("service")
            .args([self.name(), action])
            .hint(format!(
                "check {} and the service's logs",
                self.init_script().display()
            ))
            .run()
            .map(drop)
    }

    fn update_rc(&self, enable: bool) -> Result<(), ResourceError> {
        let t = || {
            Tool::new("update-rc.d").hint(format!(
                "check the LSB header of {}; update-rc.d needs root",
                self.init_script().display()
            ))
        };
        if enable {
            t().args([self.name(), "defaults"]).run()?;
            t().args([self.name(), "enable"]).run()?;
        } else {
            t().args([self.name(), "disable"]).run()?;
        }
        Ok(())
    }

    // ---- dispatch ----

    fn status(&self) -> Result<Status, ResourceError> {
        match self.backend {
            Backend::Systemd => self.systemd_status(),
            Backend::Runit => self.runit_status(),
            Backend::Sysvinit => self.sysv_status(),
        }
    }

    fn act(&self, action: &str) -> Result<(), ResourceError> {
        match self.backend {
            Backend::Systemd => self.systemctl().args([action, self.name()]).run().map(drop),
            Backend::Runit => self.runit_action(action),
            Backend::Sysvinit => self.service_cmd(action),
        }
    }

    fn set_enabled(&self, enable: bool) -> Result<(), ResourceError> {
        match self.backend {
            Backend::Systemd => self
                .systemctl()
                .args([if enable { "enable" } else { "disable" }, self.name()])
                .run()
                .map(drop),
            Backend::Runit if enable => self.runit_enable(),
            Backend::Runit => self.runit_disable(),
            Backend::Sysvinit => self.update_rc(enable),
        }
    }

    fn observe(&self) -> Result<Value, ResourceError> {
        let s = self.status()?;
        let mut o = Map::new();
        o.insert("kind".into(), json!(KIND));
        o.insert("name".into(), json!(self.name()));
        o.insert("backend".into(), json!(self.backend.as_str()));
        if self.backend == Backend::Runit {
            o.insert(
                "service_dir".into(),
                json!(self.service_dir.display().to_string()),
            );
            o.insert("sv_dir".into(), json!(self.sv_dir.display().to_string()));
        }
        o.insert("exists".into(), json!(s.exists));
        let state = if s.running {
            RunState::Running
        } else {
            RunState::Stopped
        };
        o.insert("state".into(), json!(state.as_str()));
        o.insert("enabled".into(), json!(s.enabled));
        if let Some(pid) = s.pid {
            o.insert("pid".into(), json!(pid));
        }
        let mut changes = Map::new();
        if let Some(want) = self.d.state {
            diff(
                &mut changes,
                "state",
                &json!(state.as_str()),
                &json!(want.as_str()),
            );
        }
        if let Some(want) = self.d.enabled {
            diff(&mut changes, "enabled", &json!(s.enabled), &json!(want));
        }
        if let Some(want) = self.d.backend {
            diff(
                &mut changes,
                "backend",
                &json!(self.backend.as_str()),
                &json!(want.as_str()),
            );
        }
        Ok(common::with_changes(o, changes))
    }

    fn require_exists(&self, s: &Status) -> Result<(), ResourceError> {
        if s.exists {
            return Ok(());
        }
        let where_ = match self.backend {
            Backend::Systemd => format!("no systemd unit {} is loaded", self.name()),
            Backend::Runit => format!(
                "there is no runit definition {}",
                self.definition().display()
            ),
            Backend::Sysvinit => {
                format!("there is no init script {}", self.init_script().display())
            }
        };
        Err(ResourceError::Failed(format!(
            "service {} ({}): {where_}; install or create it first, or choose another backend",
            self.name(),
            self.backend.as_str()
        )))
    }

    fn conform(&self) -> Result<Value, ResourceError> {
        let s = self.status()?;
        let wants_something =
            self.d.enabled == Some(true) || self.d.state == Some(RunState::Running);
        if wants_something {
            self.require_exists(&s)?;
        }
        if self.d.enabled == Some(true) && !s.enabled {
            self.set_enabled(true)?;
        }
        let s = self.status()?;
        match self.d.state {
            Some(RunState::Running) if !s.running => self.act("start")?,
            Some(RunState::Stopped) if s.running => self.act("stop")?,
            _ => {}
        }
        if self.d.enabled == Some(false) && s.enabled {
            self.set_enabled(false)?;
        }
        self.observe()
    }
}

impl Resource for Service {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A system service, running or stopped, enabled or not, under systemd (when PID 1), runit or sysvinit."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "service",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "minLength": 1, "pattern": "^[^-:,/\\s][^:,/\\s]*$"},
                "state": {"enum": ["running", "stopped"]},
                "enabled": {"type": "boolean", "description": "Started at boot (systemd, sysvinit) or linked into service_dir (runit)."},
                "backend": {"enum": ["systemd", "runit", "sysvinit"], "description": "Default: chosen automatically."},
                "service_dir": {"type": "string", "pattern": "^/", "description": "runit: the directory runsvdir watches (default /etc/service)."},
                "sv_dir": {"type": "string", "pattern": "^/", "description": "runit: where service definitions live (default /etc/sv)."},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "runit: seconds sv waits for a state change (default 10)."},
            }
        })
    }

    fn actions(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("start", "Start the service (no-op when running)."),
            ("stop", "Stop the service (no-op when stopped)."),
            ("restart", "Restart the service (starts it when stopped)."),
            ("reload", "Ask the service to reload its configuration (systemctl reload, sv hup, service reload)."),
        ]
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        Svc::parse(desired)?.observe()
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        Svc::parse(desired)?.conform()
    }

    fn action(&self, action: &str, state: &Value) -> Result<Value, ResourceError> {
        if !self.actions().iter().any(|(n, _)| *n == action) {
            return Err(ResourceError::UnknownAction {
                kind: KIND.into(),
                action: action.into(),
                known: super::known_actions(self),
            });
        }
        let svc = Svc::parse(state)?;
        let s = svc.status()?;
        svc.require_exists(&s)?;
        svc.act(action)?;
        svc.observe()
    }
}
