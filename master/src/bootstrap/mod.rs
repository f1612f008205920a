//! `ingot bootstrap`: from SSH access to a connected fleet, Directord style.
//!
//! Catalogs ([`catalog`]) are YAML files (or `builtin:install|rotate|upgrade`, [`builtin`])
//! deep-merged in order; `ingot_master` (`directord_server`) targets run their jobs first, one
//! after the other, then `ingot_minions` (`directord_clients`) in parallel (`--threads`). Every
//! string is rendered with minijinja against the merged catalog plus `ingot_bootstrap`
//! (`directord_bootstrap`): the target's host, port, username, name, key_file and jobs; `ingot`
//! holds the defaults the built-ins use, overridable per target. Jobs: `RUN cmd` (remote shell),
//! `ADD local remote`, `GET remote local`, and ingot's `LOCAL cmd` (run on the operator machine,
//! split into words, no shell). SSH is the system's OpenSSH ([`ssh`]).

pub mod builtin;
pub mod catalog;
pub mod ssh;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use catalog::{Catalog, CatalogError, JobSpec, TargetSpec};
use ssh::{Destination, SshOptions, SshSession};

/// `ingot bootstrap`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Catalog files (YAML), deep-merged in order; `builtin:install`, `builtin:rotate`,
    /// `builtin:upgrade` name the built-in job lists.
    #[arg(long = "catalog", required = true, value_name = "FILE|builtin:NAME")]
    pub catalogs: Vec<String>,
    /// Minions bootstrapped at once.
    #[arg(long, env = "INGOT_BOOTSTRAP_THREADS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: u32,
    /// SSH private key (`ssh -i`); otherwise the agent and ssh's configuration decide.
    #[arg(long, value_name = "KEY", env = "INGOT_BOOTSTRAP_SSH_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Learn the keys of hosts not yet in known_hosts (StrictHostKeyChecking=accept-new); a
    /// changed key is still refused.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// known_hosts file to check host keys against (default: ssh's own).
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// ssh configuration file (`ssh -F`; default: ~/.ssh/config and /etc/ssh/ssh_config).
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
    /// Seconds to wait for each host's SSH connection.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Seconds each RUN, ADD, GET or LOCAL may take.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub job_timeout: u64,
    /// The master tree whose CA the built-ins issue certificates from (`ingot.master_dir`).
    #[arg(long, value_name = "DIR", env = "INGOT_MASTER", default_value = crate::layout::DEFAULT_DIR)]
    pub master: PathBuf,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One host, ready to run.
#[derive(Debug, Clone)]
struct Host {
    group: &'static str,
    name: String,
    dest: Destination,
    jobs: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Action {
    Run(String),
    Add(PathBuf, String),
    Get(String, PathBuf),
    Local(Vec<String>),
}

#[derive(Debug, Clone)]
struct Step {
    label: String,
    action: Action,
}

/// How one host ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HostReport {
    /// Its name.
    pub name: String,
    /// `master` or `minion`.
    pub group: String,
    /// `host[:port]`.
    pub address: String,
    /// ok, failed, unreachable, host-key-refused, auth-refused.
    pub result: String,
    /// Seconds.
    pub duration: f64,
    /// The step that failed (`connect`, `3/7 RUN ...`).
    pub failed_step: Option<String>,
    /// What the failing step said.
    pub output: Option<String>,
    /// Steps done.
    pub steps_done: usize,
    /// Steps in all.
    pub steps: usize,
}

fn short(s: &str, n: usize) -> String {
    let one = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        format!("{}…", one.chars().take(n - 1).collect::<String>())
    } else {
        one
    }
}

fn defaults(args: &BootstrapArgs, workdir: &std::path::Path) -> Value {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "ingot".into());
    json!({"ingot": {
        "exe": exe,
        "version": env!("CARGO_PKG_VERSION"),
        "master_dir": args.master.display().to_string(),
        "master_address": "",
        "remote_exe": "/usr/local/bin/ingot",
        "minion_dir": minion::DEFAULT_DIR,
        "service": "ingot-minion",
        "service_manager": "auto",
        "sv_dir": "/etc/sv",
        "runit_dir": "/etc/service",
        "machine_id": "",
        "workdir": workdir.display().to_string(),
    }})
}

fn local_user() -> String {
    std::env::var("USER")
        .ok()
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "root".into())
}

/// Renders targets and jobs of one group into hosts.
fn hosts_of(
    catalog: &Catalog,
    group: &'static str,
    keys: [&str; 2],
    key_file: Option<&PathBuf>,
) -> Result<Vec<Host>, CatalogError> {
    let g = if group == "master" {
        &catalog.masters
    } else {
        &catalog.minions
    };
    if g.jobs.is_empty() {
        return Ok(Vec::new());
    }
    let bad = |source: &str, message: String| {
        let (file, key) = source.split_once(": ").unwrap_or((source, ""));
        CatalogError::Key {
            file: file.into(),
            key: key.into(),
            message,
        }
    };
    let merged_group = catalog.merged.get(keys[0]).cloned().unwrap_or(json!({}));
    let group_args = merged_group
        .get("args")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let raw_jobs: Vec<Value> = g
        .jobs
        .iter()
        .map(|j| json!({ j.verb.clone(): j.text.clone() }))
        .collect();
    let mut out = Vec::new();
    for TargetSpec { raw, source } in &g.targets {
        let mut t = group_args.clone();
        for (k, v) in raw {
            t.insert(k.clone(), v.clone());
        }
        let t = match catalog::render_value(source, &Value::Object(t), &catalog.merged)
            .map_err(|m| bad(source, m))?
        {
            Value::Object(m) => m,
            _ => unreachable!("a mapping renders to a mapping"),
        };
        let host = t
            .get("host")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let port = match t.get("port") {
            None => None,
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(Value::String(s)) => s.trim().parse::<u16>().ok(),
            _ => None,
        };
        if t.contains_key("port") && port.is_none() {
            return Err(bad(source, "port must be a number 1-65535".into()));
        }
        let username = t.get("username").and_then(Value::as_str).map(str::to_owned);
        let name = t
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| match port {
                Some(p) if p != 22 => format!("{host}:{p}"),
                _ => host.clone(),
            });
        // The per-host context.
        let mut ctx = catalog.merged.clone();
        let mut bootstrap = t.clone();
        bootstrap.insert("name".into(), json!(name));
        bootstrap.insert("port".into(), json!(port.unwrap_or(22)));
        bootstrap.insert(
            "username".into(),
            json!(username.clone().unwrap_or_else(local_user)),
        );
        bootstrap.insert(
            "key_file".into(),
            json!(key_file.map(|k| k.display().to_string())),
        );
        bootstrap.insert("jobs".into(), Value::Array(raw_jobs.clone()));
        let bootstrap = Value::Object(bootstrap);
        ctx.insert("directord_bootstrap".into(), bootstrap.clone());
        ctx.insert("ingot_bootstrap".into(), bootstrap);
        if let Some(own) = t.get("ingot") {
            let mut ingot = ctx.get("ingot").cloned().unwrap_or(json!({}));
            catalog::merge(&mut ingot, own.clone());
            ctx.insert("ingot".into(), ingot);
        }
        let mut steps = Vec::new();
        let n = g.jobs.len();
        for (i, JobSpec { verb, text, source }) in g.jobs.iter().enumerate() {
            let r = catalog::render(source, text, &ctx).map_err(|m| bad(source, m))?;
            let action = match verb.as_str() {
                "RUN" => Action::Run(r.clone()),
                "ADD" => {
                    let (l, rem) =
                        catalog::two_paths(source, verb, &r).map_err(|m| bad(source, m))?;
                    Action::Add(catalog::local_path(&l), rem)
                }
                "GET" => {
                    let (rem, l) =
                        catalog::two_paths(source, verb, &r).map_err(|m| bad(source, m))?;
                    Action::Get(rem, catalog::local_path(&l))
                }
                _ => {
                    let words = shell_words::split(&r)
                        .map_err(|e| bad(source, format!("LOCAL {r:?}: {e}")))?;
                    if words.is_empty() {
                        return Err(bad(source, "LOCAL needs a command".into()));
                    }
                    Action::Local(words)
                }
            };
            steps.push(Step {
                label: format!("{}/{n} {verb} {}", i + 1, short(&r, 60)),
                action,
            });
        }
        out.push(Host {
            group,
            name,
            dest: Destination {
                host,
                port,
                username,
            },
            jobs: steps,
        });
    }
    Ok(out)
}

fn progress(line: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{line}");
}

fn indent(s: &str) -> String {
    if s.is_empty() {
        return "    (no output)".into();
    }
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn bootstrap_host(host: Host, opts: SshOptions, control: PathBuf) -> HostReport {
    let started = Instant::now();
    let address = match host.dest.port {
        Some(p) => format!("{}:{p}", host.dest.host),
        None => host.dest.host.clone(),
    };
    let mut report = HostReport {
        name: host.name.clone(),
        group: host.group.into(),
        address: address.clone(),
        result: "ok".into(),
        duration: 0.0,
        failed_step: None,
        output: None,
        steps_done: 0,
        steps: host.jobs.len(),
    };
    let tag = format!("[{}]", host.name);
    let job_timeout = opts.job_timeout;
    progress(&format!("{tag} connecting to {address}"));
    let session = match SshSession::connect(host.dest.clone(), opts, control).await {
        Ok(s) => s,
        Err((kind, why)) => {
            progress(&format!(
                "{tag} {}: step connect to {address}: {}\n{}",
                kind.result(),
                kind.hint(),
                indent(&why)
            ));
            report.result = kind.result().into();
            report.failed_step = Some("connect".into());
            report.output = Some(why);
            report.duration = started.elapsed().as_secs_f64();
            return report;
        }
    };
    for step in &host.jobs {
        let t = Instant::now();
        let r = match &step.action {
            Action::Run(c) => session.run(c).await,
            Action::Add(l, r) => session.put(l, r).await,
            Action::Get(r, l) => session.get(r, l).await,
            Action::Local(words) => {
                let mut p = runner::Program::new(&words[0])
                    .args(&words[1..])
                    .timeout(job_timeout);
                p.channel3 = false;
                match runner::run(&p, &runner::NullSink).await {
                    Ok(o) if o.success() => Ok(String::new()),
                    Ok(o) => Err(ssh::Failure {
                        code: Some(o.code()),
                        output: format!(
                            "{}{}",
                            String::from_utf8_lossy(&o.stdout),
                            o.stderr_text()
                        )
                        .trim_end()
                        .to_owned(),
                    }),
                    Err(e) => Err(ssh::Failure {
                        code: None,
                        output: e.to_string(),
                    }),
                }
            }
        };
        match r {
            Ok(_) => {
                report.steps_done += 1;
                progress(&format!(
                    "{tag} {} ok ({:.1}s)",
                    step.label,
                    t.elapsed().as_secs_f64()
                ));
            }
            Err(f) => {
                let how = match f.code {
                    Some(c) => format!("exit code {c}"),
                    None => "could not run".into(),
                };
                progress(&format!(
                    "{tag} FAILED {} ({how}):\n{}",
                    step.label,
                    indent(&f.output)
                ));
                report.result = "failed".into();
                report.failed_step = Some(step.label.clone());
                report.output = Some(format!("{how}\n{}", f.output).trim_end().to_owned());
                break;
            }
        }
    }
    session.close().await;
    report.duration = started.elapsed().as_secs_f64();
    if report.result == "ok" {
        progress(&format!(
            "{tag} done: {} steps in {:.1}s",
            report.steps, report.duration
        ));
    }
    report
}

fn table(reports: &[HostReport]) -> String {
    let w = reports
        .iter()
        .map(|r| r.name.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut s = format!(
        "{:<w$}  {:<7} {:<17} {:>9}  FAILING STEP\n",
        "HOST", "GROUP", "RESULT", "DURATION"
    );
    for r in reports {
        s.push_str(&format!(
            "{:<w$}  {:<7} {:<17} {:>8.1}s  {}\n",
            r.name,
            r.group,
            r.result,
            r.duration,
            r.failed_step.as_deref().unwrap_or("-")
        ));
    }
    let ok = reports.iter().filter(|r| r.result == "ok").count();
    s.push_str(&format!("{ok} of {} hosts succeeded\n", reports.len()));
    s
}

/// Runs `ingot bootstrap`; prints its own errors; returns the exit code (0 all succeeded, 1 a
/// host failed, 2 bad catalogs or usage).
pub fn cli(rt: &tokio::runtime::Runtime, args: &BootstrapArgs) -> i32 {
    let workdir = match tempfile::Builder::new().prefix("ingot-bs-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("ingot: error: cannot create a private temp dir: {e} (check TMPDIR)");
            return 1;
        }
    };
    let hosts = match plan(args, workdir.path()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("ingot: error: {e}");
            return 2;
        }
    };
    let reports = rt.block_on(execute(args, hosts, workdir.path()));
    if args.json {
        let ok = reports.iter().all(|r| r.result == "ok");
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"ok": ok, "hosts": reports})).expect("serializes")
        );
    } else {
        print!("{}", table(&reports));
        for r in reports.iter().filter(|r| r.result != "ok") {
            println!(
                "\n{} ({}, {}): {} at step {}:\n{}",
                r.name,
                r.address,
                r.group,
                r.result,
                r.failed_step.as_deref().unwrap_or("-"),
                indent(r.output.as_deref().unwrap_or(""))
            );
        }
    }
    if reports.iter().all(|r| r.result == "ok") {
        0
    } else {
        1
    }
}

fn plan(args: &BootstrapArgs, workdir: &std::path::Path) -> Result<Vec<Host>, CatalogError> {
    let catalog = catalog::load(&args.catalogs, defaults(args, workdir))?;
    for b in &catalog.builtins {
        if builtin::needs_master_address(b) {
            let addr = catalog
                .merged
                .get("ingot")
                .and_then(|i| i.get("master_address"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let per_target = catalog.minions.targets.iter().all(|t| {
                t.raw
                    .get("ingot")
                    .and_then(|i| i.get("master_address"))
                    .is_some()
            });
            if addr.is_empty() && !per_target {
                return Err(CatalogError::Key {
                    file: format!("builtin:{b}"),
                    key: "ingot.master_address".into(),
                    message: "not set: add `ingot: {master_address: \"HOST:PORT\"}` (where the minions reach `ingot master serve`) to a catalog".into(),
                });
            }
        }
    }
    let mut hosts = hosts_of(
        &catalog,
        "master",
        catalog::MASTER_KEYS,
        args.key_file.as_ref(),
    )?;
    hosts.extend(hosts_of(
        &catalog,
        "minion",
        catalog::MINION_KEYS,
        args.key_file.as_ref(),
    )?);
    if hosts.is_empty() {
        return Err(CatalogError::Empty);
    }
    Ok(hosts)
}

async fn execute(
    args: &BootstrapArgs,
    hosts: Vec<Host>,
    workdir: &std::path::Path,
) -> Vec<HostReport> {
    let opts = SshOptions {
        key_file: args.key_file.clone(),
        accept_new: args.accept_new_host_keys,
        known_hosts: args.known_hosts.clone(),
        config: args.ssh_config.clone(),
        connect_timeout: Duration::from_secs(args.connect_timeout.max(1)),
        job_timeout: Duration::from_secs(args.job_timeout.max(1)),
    };
    // Control sockets live in a private (0700) directory with a short path (sun_path is small).
    let sockets = workdir.join("s");
    let _ = std::fs::create_dir_all(&sockets);
    let mut reports = Vec::new();
    let (masters, minions): (Vec<_>, Vec<_>) = hosts.into_iter().partition(|h| h.group == "master");
    let mut n = 0usize;
    for h in masters {
        n += 1;
        reports.push(bootstrap_host(h, opts.clone(), sockets.join(format!("{n}"))).await);
    }
    let permits = Arc::new(tokio::sync::Semaphore::new(args.threads as usize));
    let mut tasks = Vec::new();
    for h in minions {
        n += 1;
        let control = sockets.join(format!("{n}"));
        let opts = opts.clone();
        let permits = permits.clone();
        tasks.push(tokio::spawn(async move {
            let _p = permits.acquire_owned().await.expect("never closed");
            bootstrap_host(h, opts, control).await
        }));
    }
    for t in tasks {
        match t.await {
            Ok(r) => reports.push(r),
            Err(e) => progress(&format!("ingot: a host's task failed: {e}")),
        }
    }
    reports
}
