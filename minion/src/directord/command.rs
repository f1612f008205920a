//! `ingot exec` and `ingot orchestrate` against one local minion tree, in-process.
//!
//! Both build [`Job`]s on this host (ADD/COPY sources relative to the working directory),
//! submit them to an [`Engine`] for the minion and print Directord's `--poll` lines
//! (`Job Success: ID`, `Job Failed: ID`) with the job's verb string; `--stream` adds each job's
//! STDOUT/STDERR, `--check` lists the failed jobs at the end. Exit code 1 when a job failed,
//! 2 for a bad verb string or file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;

use super::cache::Cache;
use super::engine::{Engine, JobResult, ResolveError, Status};
use super::job::{self, BuildError, Built, Job, Origin};
use super::orchestration::{self, OrchestrationError};
use crate::{layout, Minion};

/// How results are shown (Directord's mutually exclusive modes), and how far ahead jobs are
/// sent through a master.
///
/// Through a master (`--master`) without `--poll`, `--wait` or `--stream` the jobs are
/// submitted and their ids printed (`Job received. Task ID: ID`), as Directord does; on a local
/// `--minion` the command always waits.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Show {
    /// Wait for the jobs and print each one's result as it finishes (through --master,
    /// without --poll, --wait or --stream the command prints the job ids and returns at once;
    /// follow them with `ingot manage --job-info ID`).
    #[arg(long, group = "mode")]
    pub poll: bool,
    /// Same as --poll (Directord shows a spinner).
    #[arg(long, group = "mode")]
    pub wait: bool,
    /// Same as --poll, and print each job's STDOUT and STDERR too.
    #[arg(long, group = "mode")]
    pub stream: bool,
    /// With --poll, --wait or --stream: list the failed jobs at the end.
    #[arg(long)]
    pub check: bool,
    /// Through a master: send up to N jobs of a queue before the slowest target finished the
    /// earlier ones (each minion still runs them in order). The default, 1, sends a job once
    /// every target finished the one before, so minions that share a host or a path (as
    /// Directord's functional suite assumes) never race each other.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub pipeline: u16,
}

impl Show {
    /// Whether the command waits for the jobs' results (`--poll`, `--wait`, `--stream`)
    /// rather than returning once they are submitted.
    pub fn waits(&self) -> bool {
        self.poll || self.wait || self.stream
    }
}

/// Which minion, and its cache.
#[derive(Debug, Clone, clap::Args)]
pub struct Local {
    /// The minion directory (laid out by `ingot init minion DIR`).
    #[arg(long, value_name = "DIR", env = "INGOT_MINION", default_value = layout::DEFAULT_DIR)]
    pub minion: PathBuf,
    /// The minion's name (for targets and QUERY results; default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Hours a cached arg, env or job state stays valid.
    #[arg(long, value_name = "HOURS", default_value_t = 12.0)]
    pub cache_ttl: f64,
}

/// `ingot exec --verb VERB 'STRING'`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// The verb: RUN, ARG, ENV, ADD, COPY, WORKDIR, CACHEFILE, CACHEEVICT, QUERY,
    /// QUEUESENTINEL, DNF, APT, SERVICE, REBOOT, WAIT, QUERY_WAIT, JOB_WAIT, FACTER,
    /// CONTAINER_IMAGE, POD, SECONTEXT, ECHO, or a user component.
    #[arg(long)]
    pub verb: String,
    /// Targets (this minion's name must be among them).
    #[arg(long, num_args = 1..)]
    pub target: Vec<String>,
    /// Run in its own queue.
    #[arg(long)]
    pub force_async: bool,
    /// Run through the master of this tree (`ingot master serve`, over its control socket)
    /// on the connected minions, instead of on the local --minion tree.
    #[arg(long, value_name = "DIR")]
    pub master: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub local: Local,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub show: Show,
    /// The verb string (quote it: options such as --skip-cache belong to the verb).
    #[arg(
        required = true,
        allow_hyphen_values = true,
        trailing_var_arg = true,
        value_name = "STRING"
    )]
    pub string: Vec<String>,
}

/// `ingot orchestrate FILE...`.
#[derive(Debug, Clone, clap::Args)]
pub struct OrchestrateArgs {
    /// Orchestration files (Directord YAML).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Override the targets of every orchestration.
    #[arg(long, num_args = 1..)]
    pub target: Vec<String>,
    /// Run only the jobs with these fingerprints (see --finger-print).
    #[arg(long, num_args = 1.., value_name = "SHA")]
    pub restrict: Vec<String>,
    /// Skip the cache for every job.
    #[arg(long)]
    pub ignore_cache: bool,
    /// Run every orchestration in its own queue.
    #[arg(long)]
    pub force_async: bool,
    /// Print the jobs and their fingerprints; run nothing.
    #[arg(long, group = "mode")]
    pub finger_print: bool,
    /// Run through the master of this tree (`ingot master serve`, over its control socket)
    /// on the connected minions, instead of on the local --minion tree.
    #[arg(long, value_name = "DIR")]
    pub master: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub local: Local,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub show: Show,
}

/// What `ingot exec` does: run the jobs, or print the `--exec-help` text the verb string
/// asked for.
#[derive(Debug, Clone)]
pub enum ExecPlan {
    /// The jobs to run.
    Jobs(Vec<Job>),
    /// `--exec-help` was given: the help text to print instead.
    Help(String),
}

/// Why the jobs of `ingot exec` or `ingot orchestrate` could not be built (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The verb has no resource on the minion, or its option list is bad.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The verb string is bad, or an ADD/COPY source is missing.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// An orchestration file cannot be read or parsed.
    #[error(transparent)]
    Orchestration(#[from] OrchestrationError),
    /// One job of an orchestration file is bad.
    #[error("{}: orchestration {orchestration}, job {job}: {problem}", file.display())]
    Job {
        /// The file.
        file: PathBuf,
        /// The orchestration's position in the file, from 1.
        orchestration: usize,
        /// The job's position in the orchestration, from 1.
        job: usize,
        /// What is wrong with it.
        problem: Box<JobProblem>,
    },
}

/// What is wrong with one job of an orchestration file.
#[derive(Debug, thiserror::Error)]
pub enum JobProblem {
    /// Its verb has no resource on the minion, or the verb's option list is bad.
    #[error(transparent)]
    Resolve(ResolveError),
    /// Its verb string is bad, or an ADD/COPY source is missing.
    #[error(transparent)]
    Build(BuildError),
    /// It asks for `--exec-help`, which only `ingot exec` prints.
    #[error("--exec-help is for `ingot exec`; remove it from the file")]
    ExecHelp,
}

fn engine(local: &Local) -> Result<Engine, String> {
    let dir = &local.minion;
    if !dir.join("resources").is_dir() {
        return Err(format!(
            "{} is not a minion tree (no resources/); run `ingot init minion {}` first",
            dir.display(),
            dir.display()
        ));
    }
    if !(local.cache_ttl.is_finite() && local.cache_ttl >= 0.0) {
        return Err(format!(
            "--cache-ttl must be a non-negative number of hours, not {}",
            local.cache_ttl
        ));
    }
    let cache = Cache::for_minion(dir)
        .map_err(|e| e.to_string())?
        .with_ttl(Duration::from_secs_f64(local.cache_ttl * 3600.0));
    let name = local.name.clone().unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    });
    Ok(Engine::new(Arc::new(Minion::new(dir)), name, cache))
}

fn report(job: &Job, r: &JobResult, show: &Show) {
    let what = job
        .job_name
        .clone()
        .unwrap_or_else(|| job.summary().trim().to_owned());
    match r.status {
        Status::Success => println!("Job Success: {}  {what}", r.job_id),
        Status::Skipped => println!("Job Success: {}  {what} (task skipped)", r.job_id),
        Status::Failed => println!("Job Failed: {}  {what}", r.job_id),
    }
    if show.stream {
        if !r.stdout.trim().is_empty() {
            println!("STDOUT: {} = {}", r.minion, r.stdout.trim_end());
        }
        if !r.stderr.trim().is_empty() {
            println!("STDERR: {} = {}", r.minion, r.stderr.trim_end());
        }
    } else if r.status == Status::Failed {
        for line in r.stderr.trim().lines().take(20) {
            println!("    {line}");
        }
        if !r.info.is_empty() && r.info != r.stderr {
            println!("    INFO: {}", r.info);
        }
    }
}

async fn run_jobs(engine: &Engine, jobs: Vec<Job>, show: &Show) -> i32 {
    let pending: Vec<_> = jobs
        .into_iter()
        .map(|j| {
            let rx = engine.submit(j.clone());
            (j, rx)
        })
        .collect();
    let mut failed = Vec::new();
    for (job, rx) in pending {
        match rx.await {
            Ok(r) => {
                report(&job, &r, show);
                if !r.ok() {
                    failed.push(job.job_id.clone());
                }
            }
            Err(_) => {
                println!("Job Failed: {}  (the engine stopped)", job.job_id);
                failed.push(job.job_id.clone());
            }
        }
    }
    if show.check && !failed.is_empty() {
        println!("FAILED JOBS");
        for id in &failed {
            println!("{id}");
        }
    }
    i32::from(!failed.is_empty())
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

/// The jobs of one `ingot exec`: the verb string built into jobs (or its `--exec-help` text)
/// with one parent, so every file of an ADD glob shares it.
fn exec_jobs(
    a: &ExecArgs,
    spec: &super::syntax::VerbSpec,
    kind: &str,
) -> Result<ExecPlan, BuildError> {
    let origin = Origin {
        parent_async: a.force_async,
        targets: a.target.clone(),
        ..Origin::default()
    };
    let text = a.string.join(" ");
    let jobs = match job::build(
        spec,
        &a.verb,
        kind,
        &text,
        &Default::default(),
        &origin,
        &cwd(),
    )? {
        Built::Jobs(jobs) => jobs,
        Built::Help(help) => return Ok(ExecPlan::Help(help)),
    };
    let parent = jobs.first().map(|j| j.job_id.clone()).unwrap_or_default();
    Ok(ExecPlan::Jobs(
        jobs.into_iter()
            .map(|mut j| {
                j.parent_id = parent.clone();
                j
            })
            .collect(),
    ))
}

fn usage_error(cmd: &str, e: impl std::fmt::Display) -> i32 {
    eprintln!("ingot {cmd}: error: {e}");
    2
}

/// The jobs `ingot exec` runs, or the `--exec-help` text to print instead. The local and the
/// network `exec` both start here.
pub async fn exec_plan(engine: &Engine, a: &ExecArgs) -> Result<ExecPlan, PlanError> {
    let (kind, spec) = engine.resolve(&a.verb).await?;
    Ok(exec_jobs(a, &spec, &kind)?)
}

/// `ingot exec`: returns the exit code.
pub fn exec(rt: &Runtime, a: &ExecArgs) -> i32 {
    let engine = match engine(&a.local) {
        Ok(e) => e,
        Err(e) => return usage_error("exec", e),
    };
    rt.block_on(async {
        match exec_plan(&engine, a).await {
            Ok(ExecPlan::Jobs(jobs)) => run_jobs(&engine, jobs, &a.show).await,
            Ok(ExecPlan::Help(help)) => {
                print!("{help}");
                0
            }
            Err(e) => usage_error("exec", e),
        }
    })
}

/// Builds every job of the files, in order.
pub async fn plan(
    engine: &Engine,
    files: &[PathBuf],
    targets: &[String],
    ignore_cache: bool,
    force_async: bool,
    cwd: &Path,
) -> Result<Vec<Job>, PlanError> {
    let mut jobs = Vec::new();
    for f in files {
        let orchs = orchestration::parse_file(f)?;
        for (oi, o) in orchs.iter().enumerate() {
            let parent_id = uuid::Uuid::new_v4().to_string();
            for (ji, line) in o.jobs.iter().enumerate() {
                let at = |problem: JobProblem| PlanError::Job {
                    file: f.clone(),
                    orchestration: oi + 1,
                    job: ji + 1,
                    problem: Box::new(problem),
                };
                let (kind, spec) = engine
                    .resolve(&line.verb)
                    .await
                    .map_err(|e| at(JobProblem::Resolve(e)))?;
                let t = line
                    .assign
                    .clone()
                    .or_else(|| (!targets.is_empty()).then(|| targets.to_vec()))
                    .unwrap_or_else(|| o.effective_targets());
                let origin = Origin {
                    parent_id: Some(parent_id.clone()),
                    parent_sha3_224: Some(o.sha3_224.clone()),
                    parent_name: o.name.clone(),
                    job_name: line.name.clone(),
                    parent_async: o.is_async || force_async,
                    targets: t,
                    ignore_cache,
                };
                match job::build(
                    &spec, &line.verb, &kind, &line.text, &line.vars, &origin, cwd,
                ) {
                    Ok(Built::Jobs(js)) => jobs.extend(js),
                    Ok(Built::Help(_)) => return Err(at(JobProblem::ExecHelp)),
                    Err(e) => return Err(at(JobProblem::Build(e))),
                }
            }
        }
    }
    Ok(jobs)
}

/// The jobs `ingot orchestrate` runs (`--restrict` applied), or `None` when `--finger-print`
/// printed them instead. The local and the network `orchestrate` both start here.
pub async fn orchestrate_plan(
    engine: &Engine,
    a: &OrchestrateArgs,
) -> Result<Option<Vec<Job>>, PlanError> {
    let jobs = plan(
        engine,
        &a.files,
        &a.target,
        a.ignore_cache,
        a.force_async,
        &cwd(),
    )
    .await?;
    if a.finger_print {
        print_fingerprints(&jobs);
        return Ok(None);
    }
    Ok(Some(if a.restrict.is_empty() {
        jobs
    } else {
        jobs.into_iter()
            .filter(|j| a.restrict.contains(&j.sha3_224))
            .collect()
    }))
}

/// Directord's `--finger-print` table.
fn print_fingerprints(jobs: &[Job]) {
    println!(
        "{:<6} {:<56} {:<14} {:<30} JOB",
        "COUNT", "PARENT", "VERB", "EXEC"
    );
    for (i, j) in jobs.iter().enumerate() {
        let parent = j
            .parent_name
            .clone()
            .or_else(|| j.parent_sha3_224.clone())
            .unwrap_or_default();
        let mut exec = j.summary();
        exec = exec.trim_start_matches(&j.verb).trim().to_owned();
        if exec.chars().count() > 30 {
            exec = exec.chars().take(27).collect::<String>() + "...";
        }
        let name = j.job_name.clone().unwrap_or_else(|| j.sha3_224.clone());
        println!("{:<6} {:<56} {:<14} {:<30} {name}", i, parent, j.verb, exec);
    }
}

/// `ingot orchestrate`: returns the exit code.
pub fn orchestrate(rt: &Runtime, a: &OrchestrateArgs) -> i32 {
    let engine = match engine(&a.local) {
        Ok(e) => e,
        Err(e) => return usage_error("orchestrate", e),
    };
    rt.block_on(async {
        match orchestrate_plan(&engine, a).await {
            Ok(Some(jobs)) => run_jobs(&engine, jobs, &a.show).await,
            Ok(None) => 0,
            Err(e) => usage_error("orchestrate", e),
        }
    })
}
