//! The `package` resource: a system package, installed (optionally at an exact version),
//! up to date, or removed, through the system's package manager.
//!
//! Desired state: `name` (identity), `state` (`present` | `absent` | `latest`, default
//! `present`), `version` (exact version as the package manager reports it, e.g. apt `2.10-3`;
//! for dnf `2.10` also matches `2.10-3.fc40`; only with `present`), `backend` (`apt` | `dnf`;
//! detected when absent: apt when `dpkg-query` and `apt-get` exist, else dnf), `update_cache`
//! (refresh the package lists before installing or upgrading; with `latest` before every
//! check) and `purge` (apt: remove configuration files too).
//!
//! - **apt**: observed with `dpkg-query -W` and `apt-cache policy`; changed with `apt-get` run
//!   with `DEBIAN_FRONTEND=noninteractive`, keeping existing configuration files, and waiting
//!   up to two minutes for the dpkg lock held by another apt.
//! - **dnf**: observed with `rpm -q` and `dnf repoquery`; changed with `dnf install/upgrade/
//!   remove -y`.
//!
//! The observed `state` is `absent`, `present`, or `latest` when `latest` was asked for and the
//! installed version is the candidate (then `candidate` is reported as well).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::user::common::{self, diff, parse, Tool};
use super::{Resource, ResourceError};

const KIND: &str = "package";

/// The `package` resource.
pub struct Package;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PkgState {
    #[default]
    Present,
    Absent,
    Latest,
}

impl PkgState {
    fn as_str(self) -> &'static str {
        match self {
            PkgState::Present => "present",
            PkgState::Absent => "absent",
            PkgState::Latest => "latest",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Backend {
    Apt,
    Dnf,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Apt => "apt",
            Backend::Dnf => "dnf",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackageState {
    name: String,
    #[serde(default)]
    state: PkgState,
    version: Option<String>,
    backend: Option<Backend>,
    update_cache: Option<bool>,
    purge: Option<bool>,
}

fn check_token(pointer: &str, v: &str, what: &str) -> Result<(), ResourceError> {
    if v.is_empty()
        || v.starts_with('-')
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+.-_~:".contains(c))
    {
        return Err(ResourceError::input(
            pointer,
            format!("{v:?} is not a valid {what}: use letters, digits and + . - _ ~ : only, not starting with '-'"),
        ));
    }
    Ok(())
}

struct Pkg {
    d: PackageState,
    backend: Backend,
}

/// What the package manager says about a package.
struct Observed {
    installed: Option<String>,
    candidate: Option<String>,
}

/// Options of every apt-get call: no prompts, wait for another apt's lock instead of failing,
/// keep changed configuration files.
pub(crate) const APT_OPTS: &[&str] = &[
    "-y",
    "-q",
    "-o",
    "DPkg::Lock::Timeout=120",
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
];

impl Pkg {
    fn parse(state: &Value) -> Result<Self, ResourceError> {
        let d: PackageState = parse(KIND, state)?;
        check_token("/name", &d.name, "package name")?;
        if let Some(v) = &d.version {
            check_token("/version", v, "version")?;
            if d.state != PkgState::Present {
                return Err(ResourceError::input(
                    "/version",
                    format!(
                        "a version can only be asked for with state present, not {}",
                        d.state.as_str()
                    ),
                ));
            }
        }
        let backend = match d.backend {
            Some(b) => b,
            None if common::have("dpkg-query") && common::have("apt-get") => Backend::Apt,
            None if common::have("dnf") => Backend::Dnf,
            None => {
                return Err(ResourceError::Failed(
                    "no supported package manager found (apt-get/dpkg-query or dnf); set backend explicitly if it is installed elsewhere on PATH".into(),
                ))
            }
        };
        Ok(Self { d, backend })
    }

    fn name(&self) -> &str {
        &self.d.name
    }

    fn installed(&self) -> Result<Option<String>, ResourceError> {
        match self.backend {
            Backend::Apt => {
                let tool = Tool::new("dpkg-query")
                    .args(["-W", "-f", "${db:Status-Abbrev}\t${Version}\n", self.name()])
                    .hint("install dpkg, or set backend to the system's package manager");
                let out = tool.outcome()?;
                if !out.ok() {
                    if out.stderr.contains("no packages found") {
                        return Ok(None);
                    }
                    return Err(tool.error(&out));
                }
                // Status abbreviation: desired, status, error flag. Installed: i, or
                // installed with pending triggers (W, t).
                Ok(out.stdout.lines().find_map(|l| {
                    let (abbrev, version) = l.split_once('\t')?;
                    let status = abbrev.chars().nth(1)?;
                    matches!(status, 'i' | 'W' | 't').then(|| version.trim().to_string())
                }))
            }
            Backend::Dnf => {
                let tool = Tool::new("rpm")
                    .args([
                        "-q",
                        "--qf",
                        "%{EPOCH}:%{VERSION}-%{RELEASE}\n",
                        self.name(),
                    ])
                    .hint("install rpm, or set backend to the system's package manager");
                let out = tool.outcome()?;
                if !out.ok() {
                    if out.stdout.contains("is not installed")
                        || out.stderr.contains("is not installed")
                    {
                        return Ok(None);
                    }
                    return Err(tool.error(&out));
                }
                Ok(out.stdout.lines().next().map(|l| {
                    let l = l.trim();
                    l.strip_prefix("(none):")
                        .or_else(|| l.strip_prefix("0:"))
                        .unwrap_or(l)
                        .to_string()
                }))
            }
        }
    }

    fn candidate(&self) -> Result<Option<String>, ResourceError> {
        match self.backend {
            Backend::Apt => {
                let out = Tool::new("apt-cache")
                    .args(["policy", self.name()])
                    .hint("check that apt works (apt-get update)")
                    .run()?;
                Ok(out
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("Candidate:"))
                    .map(|c| c.trim().to_string())
                    .filter(|c| c != "(none)" && !c.is_empty()))
            }
            Backend::Dnf => {
                let out = Tool::new("dnf")
                    .args([
                        "-q",
                        "repoquery",
                        "--latest-limit=1",
                        "--qf",
                        "%{evr}\n",
                        self.name(),
                    ])
                    .hint("check that dnf works (dnf makecache)")
                    .run()?;
                Ok(out
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .map(str::to_string))
            }
        }
    }

    fn version_matches(&self, installed: &str, want: &str) -> bool {
        installed == want
            || (self.backend == Backend::Dnf
                && installed
                    .strip_prefix(want)
                    .is_some_and(|rest| rest.starts_with('-')))
    }

    fn look(&self) -> Result<Observed, ResourceError> {
        let installed = self.installed()?;
        let candidate = if self.d.state == PkgState::Latest {
            self.candidate()?
        } else {
            None
        };
        Ok(Observed {
            installed,
            candidate,
        })
    }

    fn observe(&self) -> Result<Value, ResourceError> {
        let ob = self.look()?;
        let mut o = Map::new();
        o.insert("kind".into(), json!(KIND));
        o.insert("name".into(), json!(self.name()));
        o.insert("backend".into(), json!(self.backend.as_str()));
        o.insert("exists".into(), json!(ob.installed.is_some()));
        let state = match (&ob.installed, &ob.candidate) {
            (None, _) => PkgState::Absent,
            (Some(i), Some(c)) if self.d.state == PkgState::Latest && i == c => PkgState::Latest,
            _ => PkgState::Present,
        };
        o.insert("state".into(), json!(state.as_str()));
        if let Some(v) = &ob.installed {
            o.insert("version".into(), json!(v));
        }
        if let Some(c) = &ob.candidate {
            o.insert("candidate".into(), json!(c));
        }
        let mut changes = Map::new();
        diff(
            &mut changes,
            "state",
            &json!(state.as_str()),
            &json!(self.d.state.as_str()),
        );
        if let Some(want) = &self.d.version {
            let same = ob
                .installed
                .as_deref()
                .is_some_and(|i| self.version_matches(i, want));
            if !same {
                changes.insert(
                    "version".into(),
                    json!({"observed": ob.installed, "desired": want}),
                );
            }
        }
        Ok(common::with_changes(o, changes))
    }

    fn update_cache(&self) -> Result<(), ResourceError> {
        match self.backend {
            Backend::Apt => Tool::new("apt-get")
                .args(["update", "-q", "-o", "DPkg::Lock::Timeout=120"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .hint("check the sources in /etc/apt/sources.list(.d) and the network; apt-get needs root")
                .run()
                .map(drop),
            Backend::Dnf => Tool::new("dnf")
                .args(["makecache", "-y", "-q"])
                .hint("check the repositories in /etc/yum.repos.d and the network; dnf needs root")
                .run()
                .map(drop),
        }
    }

    fn install(&self, spec: String, upgrade: bool) -> Result<(), ResourceError> {
        let hint = format!(
            "check that {} exists in the configured repositories (refresh them with update_cache: true or `apt-get update` / `dnf makecache`) and that you run as root",
            self.name()
        );
        match self.backend {
            Backend::Apt => Tool::new("apt-get")
                .arg("install")
                .args(APT_OPTS.iter().copied())
                .arg("--allow-downgrades")
                .arg(spec)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .hint(hint)
                .run()
                .map(drop),
            Backend::Dnf => Tool::new("dnf")
                .args([if upgrade { "upgrade" } else { "install" }, "-y", "-q"])
                .arg(spec)
                .hint(hint)
                .run()
                .map(drop),
        }
    }

    fn remove(&self) -> Result<(), ResourceError> {
        let hint = "check that no other installed package depends on it (the tool's output names them) and that you run as root";
        match self.backend {
            Backend::Apt => Tool::new("apt-get")
                .arg(if self.d.purge == Some(true) {
                    "purge"
                } else {
                    "remove"
                })
                .args(APT_OPTS.iter().copied())
                .arg(self.name())
                .env("DEBIAN_FRONTEND", "noninteractive")
                .hint(hint)
                .run()
                .map(drop),
            Backend::Dnf => Tool::new("dnf")
                .args(["remove", "-y", "-q", self.name()])
                .hint(hint)
                .run()
                .map(drop),
        }
    }

    fn conform(&self) -> Result<Value, ResourceError> {
        let refresh = self.d.update_cache == Some(true);
        let installed = self.installed()?;
        match self.d.state {
            PkgState::Absent => {
                if installed.is_some() {
                    self.remove()?;
                }
            }
            PkgState::Present => match (&self.d.version, &installed) {
                (Some(want), Some(have)) if self.version_matches(have, want) => {}
                (None, Some(_)) => {}
                (want, _) => {
                    if refresh {
                        self.update_cache()?;
                    }
                    let spec = match (want, self.backend) {
                        (Some(v), Backend::Apt) => format!("{}={v}", self.name()),
                        (Some(v), Backend::Dnf) => format!("{}-{v}", self.name()),
                        (None, _) => self.name().to_string(),
                    };
                    self.install(spec, false)?;
                }
            },
            PkgState::Latest => {
                if refresh {
                    self.update_cache()?;
                }
                let candidate = self.candidate()?.ok_or_else(|| {
                    ResourceError::Failed(format!(
                        "{} has no installation candidate in the configured repositories; refresh them (update_cache: true) or check the name",
                        self.name()
                    ))
                })?;
                if installed.as_deref() != Some(candidate.as_str()) {
                    self.install(self.name().to_string(), installed.is_some())?;
                }
            }
        }
        self.observe()
    }
}

impl Resource for Package {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn description(&self) -> &'static str {
        "A system package, installed, at a version, up to date or removed, through apt (dpkg) or dnf."
    }

    fn identity(&self) -> &'static [&'static str] {
        &["name"]
    }

    fn schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "package",
            "type": "object",
            "required": ["name"],
            "additionalProperties": false,
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9+._~:][A-Za-z0-9+._~:-]*$"},
                "state": {"enum": ["present", "absent", "latest"], "default": "present"},
                "version": {"type": "string", "pattern": "^[A-Za-z0-9+._~:][A-Za-z0-9+._~:-]*$", "description": "Exact version (with state present), e.g. 2.10-3."},
                "backend": {"enum": ["apt", "dnf"], "description": "Default: apt when dpkg-query and apt-get exist, else dnf."},
                "update_cache": {"type": "boolean", "description": "Refresh the package lists before installing or upgrading."},
                "purge": {"type": "boolean", "description": "apt: remove configuration files too when absent."},
            }
        })
    }

    fn inspect(&self, desired: &Value) -> Result<Value, ResourceError> {
        Pkg::parse(desired)?.observe()
    }

    fn conform(&self, desired: &Value) -> Result<Value, ResourceError> {
        Pkg::parse(desired)?.conform()
    }
}
