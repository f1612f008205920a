//! Directord through the running master: `ingot exec --master DIR` and `ingot orchestrate
//! --master DIR`.
//!
//! The operator's CLI builds the jobs (verb strings parsed against a scratch minion tree of
//! the built-ins plus `MASTER/resources/`; ADD/COPY globs expanded in its working directory,
//! each file's content sent base64 with its SHA3-224) and hands them to the master over the
//! control socket. The master resolves each job's targets (the job's `targets` as globs over
//! connected minions, else every connected minion; `--run-once`: the first only) and sends it
//! as an `Op::Job` request to each target, where the agent queues it on its long-lived
//! [`minion::directord::Engine`]. Jobs of one queue (an `async` parent's own, else the general
//! one) go out one after another, each once every target answered the one before; queues
//! run concurrently. After a QUERY the master sends every connected minion an ARG job
//! `{"query": {MINION: {ARGNAME: VALUE}}}` with `extend_args` (minions without the arg
//! contribute no key), so `{{ query }}` templates see every minion's value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use minion::directord::cache::Cache;
use minion::directord::cli::{ExecArgs, OrchestrateArgs};
use minion::directord::engine::Status;
use minion::directord::job;
use minion::directord::{Engine, Job, JobResult};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::control::{request, ControlReply, ControlRequest};
use super::server::Hub;

/// One job and, for ADD/COPY, its source content (base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetJob {
    /// The job.
    pub job: Job,
    /// The source file's content, base64.
    #[serde(default)]
    pub content: Option<String>,
}

/// What `exec`/`orchestrate` ask the master.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DirectordRequest {
    /// The jobs, in order.
    pub jobs: Vec<NetJob>,
    /// Print each minion's STDOUT/STDERR.
    #[serde(default)]
    pub stream: bool,
    /// List the failed jobs at the end.
    #[serde(default)]
    pub check: bool,
}

fn failed_result(job: &Job, minion: &str, why: String) -> JobResult {
    JobResult {
        job_id: job.job_id.clone(),
        sha3_224: job.sha3_224.clone(),
        minion: minion.into(),
        status: Status::Failed,
        stdout: String::new(),
        info: why.clone(),
        stderr: why,
        execution_time: 0.0,
        ended: 0.0,
    }
}

/// The connected minions a job goes to.
fn targets_of(hub: &Hub, job: &Job) -> Result<Vec<String>, String> {
    let connected = hub.connected_names();
    if job.targets.is_empty() {
        if connected.is_empty() {
            return Err("no minion is connected (start `ingot minion serve` on them)".into());
        }
        return Ok(connected);
    }
    let mut b = globset::GlobSetBuilder::new();
    for t in &job.targets {
        b.add(globset::Glob::new(t).map_err(|e| format!("target {t:?}: {e}"))?);
    }
    let globs = b.build().map_err(|e| e.to_string())?;
    let names: Vec<String> = connected
        .iter()
        .filter(|n| globs.is_match(n.as_str()))
        .cloned()
        .collect();
    if names.is_empty() {
        return Err(format!(
            "Target unknown: {} matches no connected minion; connected: [{}]",
            job.targets.join(", "),
            connected.join(", ")
        ));
    }
    Ok(names)
}

async fn send_to(
    hub: &Arc<Hub>,
    job: &Job,
    content: &Option<String>,
    names: &[String],
) -> Vec<JobResult> {
    futures::future::join_all(names.iter().map(|n| async move {
        match hub.connected_session(n) {
            None => failed_result(job, n, format!("minion {n} is not connected")),
            Some(s) => match hub.link(s).job(job, content.clone()).await {
                Ok(r) => r,
                Err(e) => failed_result(job, n, e.to_string()),
            },
        }
    }))
    .await
}

/// The ARG job merging a QUERY's answers into every minion's `query` arg.
fn query_arg_job(query: &Job, gathered: Map<String, Value>) -> Job {
    let mut fields = Map::new();
    fields.insert("key".into(), json!("query"));
    fields.insert("value".into(), Value::Object(gathered));
    fields.insert("extend_args".into(), json!(true));
    fields.insert("skip_cache".into(), json!(true));
    Job {
        job_id: uuid::Uuid::new_v4().to_string(),
        verb: "ARG".into(),
        text: String::new(),
        kind: "arg".into(),
        sha3_224: job::fingerprint("ARG", &fields),
        fields,
        cacheable: false,
        parent_id: query.parent_id.clone(),
        parent_sha3_224: query.parent_sha3_224.clone(),
        parent_name: query.parent_name.clone(),
        job_name: None,
        parent_async: query.parent_async,
        targets: Vec::new(),
    }
}

fn describe(job: &Job) -> String {
    job.job_name
        .clone()
        .unwrap_or_else(|| job.summary().trim().to_owned())
}

fn report_lines(job: &Job, results: &[JobResult], stream: bool) -> String {
    let mut s = String::new();
    let failed: Vec<&JobResult> = results.iter().filter(|r| !r.ok()).collect();
    let skipped = results.iter().all(|r| r.status == Status::Skipped);
    let names: Vec<&str> = results.iter().map(|r| r.minion.as_str()).collect();
    let what = describe(job);
    if failed.is_empty() {
        s.push_str(&format!(
            "Job Success: {}  {what}{}  [{}]\n",
            job.job_id,
            if skipped { " (task skipped)" } else { "" },
            names.join(", ")
        ));
    } else {
        let bad: Vec<&str> = failed.iter().map(|r| r.minion.as_str()).collect();
        s.push_str(&format!(
            "Job Failed: {}  {what}  [failed on {} of {}: {}]\n",
            job.job_id,
            failed.len(),
            results.len(),
            bad.join(", ")
        ));
    }
    for r in results {
        if stream {
            if !r.stdout.trim().is_empty() {
                s.push_str(&format!("STDOUT: {} = {}\n", r.minion, r.stdout.trim_end()));
            }
            if !r.stderr.trim().is_empty() {
                s.push_str(&format!("STDERR: {} = {}\n", r.minion, r.stderr.trim_end()));
            }
        } else if !r.ok() {
            for line in r.stderr.trim().lines().take(20) {
                s.push_str(&format!("    {}: {line}\n", r.minion));
            }
        }
    }
    s
}

/// Runs one queue's jobs in order.
async fn run_queue(
    hub: Arc<Hub>,
    jobs: Vec<NetJob>,
    stream: bool,
    tx: mpsc::UnboundedSender<ControlReply>,
) -> Vec<(String, bool)> {
    let mut outcomes = Vec::new();
    for NetJob { mut job, content } in jobs {
        let results = match targets_of(&hub, &job) {
            Err(e) => vec![failed_result(&job, "-", e)],
            Ok(mut names) => {
                if job.flag("run_once") {
                    names.truncate(1);
                }
                job.targets = names.clone();
                let mut results = send_to(&hub, &job, &content, &names).await;
                if job.verb == "QUERY" && results.iter().all(JobResult::ok) {
                    let mut gathered = Map::new();
                    for r in &results {
                        if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(r.stdout.trim())
                        {
                            let m: Map<String, Value> =
                                m.into_iter().filter(|(_, v)| !v.is_null()).collect();
                            if !m.is_empty() {
                                gathered.insert(r.minion.clone(), Value::Object(m));
                            }
                        }
                    }
                    let arg = query_arg_job(&job, gathered);
                    let everyone = hub.connected_names();
                    for a in send_to(&hub, &arg, &None, &everyone).await {
                        if !a.ok() {
                            if let Some(r) = results.iter_mut().find(|r| r.minion == a.minion) {
                                r.status = Status::Failed;
                                r.stderr.push_str(&format!(
                                    "\nmerging the query results: {}",
                                    a.stderr
                                ));
                            }
                        }
                    }
                }
                results
            }
        };
        let ok = results.iter().all(JobResult::ok);
        let _ = tx.send(ControlReply::Progress(report_lines(&job, &results, stream)));
        outcomes.push((job.job_id.clone(), ok));
    }
    outcomes
}

/// The master's side: runs the request's jobs on the connected minions.
pub async fn run(
    hub: Arc<Hub>,
    req: DirectordRequest,
    tx: mpsc::UnboundedSender<ControlReply>,
) -> ControlReply {
    // Queues in order of first appearance.
    let mut order: Vec<String> = Vec::new();
    let mut queues: BTreeMap<String, Vec<NetJob>> = BTreeMap::new();
    for j in req.jobs {
        let q = j.job.queue();
        if !queues.contains_key(&q) {
            order.push(q.clone());
        }
        queues.entry(q).or_default().push(j);
    }
    let total: usize = queues.values().map(Vec::len).sum();
    let runs = order.into_iter().map(|q| {
        let jobs = queues.remove(&q).unwrap_or_default();
        tokio::spawn(run_queue(hub.clone(), jobs, req.stream, tx.clone()))
    });
    let mut failed = Vec::new();
    for r in futures::future::join_all(runs).await {
        match r {
            Ok(outcomes) => failed.extend(outcomes.into_iter().filter(|o| !o.1).map(|o| o.0)),
            Err(e) => failed.push(format!("(a queue stopped: {e})")),
        }
    }
    let mut stdout = format!(
        "{total} jobs: {} succeeded, {} failed\n",
        total.saturating_sub(failed.len()),
        failed.len()
    );
    if req.check && !failed.is_empty() {
        stdout.push_str("FAILED JOBS\n");
        for id in &failed {
            stdout.push_str(&format!("{id}\n"));
        }
    }
    ControlReply::Done {
        stdout,
        code: i32::from(!failed.is_empty()),
    }
}

/// A scratch minion tree (built-ins plus `MASTER/resources/*`) to parse verb strings with.
fn operator_engine(master: &Path) -> Result<(tempfile::TempDir, Engine), String> {
    let tmp = tempfile::Builder::new()
        .prefix("ingot-operator")
        .tempdir()
        .map_err(|e| format!("creating a scratch directory: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("locating ingot: {e}"))?;
    minion::layout::init(tmp.path(), &exe, false).map_err(|e| e.to_string())?;
    if let Ok(dir) = std::fs::read_dir(master.join("resources")) {
        for e in dir.flatten() {
            let link = tmp.path().join("resources").join(e.file_name());
            if !link.exists() {
                let _ = std::os::unix::fs::symlink(e.path(), link);
            }
        }
    }
    let cache = Cache::for_minion(tmp.path()).map_err(|e| e.to_string())?;
    let m = Arc::new(minion::Minion::new(tmp.path()));
    Ok((tmp, Engine::new(m, "operator", cache)))
}

fn attach(jobs: Vec<Job>) -> Result<Vec<NetJob>, String> {
    use base64::Engine as _;
    jobs.into_iter()
        .map(|job| {
            let content = match job.str("file_from") {
                None => None,
                Some(p) => {
                    let bytes = std::fs::read(p).map_err(|e| format!("reading {p}: {e}"))?;
                    if job.str("file_sha3_224") != Some(job::sha3_hex(&bytes).as_str()) {
                        return Err(format!("{p} changed while the jobs were built; run again"));
                    }
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            };
            Ok(NetJob { job, content })
        })
        .collect()
}

fn cwd() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."))
}

fn send(rt: &Runtime, master: &Path, req: DirectordRequest, cmd: &str) -> i32 {
    let mut code = 1;
    let r = rt.block_on(request(master, &ControlRequest::Directord(req), |reply| {
        match reply {
            ControlReply::Progress(p) => print!("{p}"),
            ControlReply::Done { stdout, code: c } => {
                print!("{stdout}");
                code = c;
            }
            ControlReply::Error(e) => {
                eprintln!("ingot {cmd}: error: {e}");
                code = 2;
            }
            ControlReply::Nodes(_) => {}
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }));
    match r {
        Ok(()) => code,
        Err(e) => {
            eprintln!("ingot {cmd}: error: {e}");
            2
        }
    }
}

/// `ingot exec --master DIR`: returns the exit code.
pub fn exec(rt: &Runtime, a: &ExecArgs, master: &Path) -> i32 {
    let built: Result<Result<Vec<Job>, String>, String> = rt.block_on(async {
        let (_tmp, engine) = operator_engine(master)?;
        let (kind, spec) = engine.resolve(&a.verb).await.map_err(|e| e.to_string())?;
        minion::directord::cli::exec_jobs(a, &spec, &kind).map_err(|e| e.to_string())
    });
    let jobs = match built {
        Ok(Ok(jobs)) => jobs,
        Ok(Err(help)) => {
            print!("{help}");
            return 0;
        }
        Err(e) => {
            eprintln!("ingot exec: error: {e}");
            return 2;
        }
    };

    let jobs = match attach(jobs) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("ingot exec: error: {e}");
            return 2;
        }
    };
    let req = DirectordRequest {
        jobs,
        stream: a.show.stream,
        check: a.show.check,
    };
    send(rt, master, req, "exec")
}

/// `ingot orchestrate --master DIR`: returns the exit code.
pub fn orchestrate(rt: &Runtime, a: &OrchestrateArgs, master: &Path) -> i32 {
    let built = rt.block_on(async {
        let (_tmp, engine) = operator_engine(master)?;
        minion::directord::cli::plan(
            &engine,
            &a.files,
            &a.target,
            a.ignore_cache,
            a.force_async,
            &cwd(),
        )
        .await
    });
    let jobs = match built {
        Ok(j) => j,
        Err(e) => {
            eprintln!("ingot orchestrate: error: {e}");
            return 2;
        }
    };
    if a.finger_print {
        for (i, j) in jobs.iter().enumerate() {
            println!("{i:<6} {:<14} {}  {}", j.verb, j.sha3_224, describe(j));
        }
        return 0;
    }
    let jobs: Vec<Job> = if a.restrict.is_empty() {
        jobs
    } else {
        jobs.into_iter()
            .filter(|j| a.restrict.contains(&j.sha3_224))
            .collect()
    };
    let jobs = match attach(jobs) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("ingot orchestrate: error: {e}");
            return 2;
        }
    };
    let req = DirectordRequest {
        jobs,
        stream: a.show.stream,
        check: a.show.check,
    };
    send(rt, master, req, "orchestrate")
}
