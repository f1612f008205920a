//! `ingot manage`: Directord's manage commands on ingot.
//!
//! The job commands (`--list-jobs`, `--job-info`, `--analyze-job`, `--analyze-parent`,
//! `--analyze-all`, `--export-jobs`, `--purge-jobs`) read the master's historian directly, as `ingot history`
//! does, so they answer from what is recorded even while the master is down: the `job` steps
//! that [`crate::directord::recording`] records for every `exec`/`orchestrate --master` request, grouped by
//! job id. A job is recorded once every target answered, so all but `--purge-jobs` first ask
//! the running master for the jobs it has not stored yet ([`ManageRequest::JobsInFlight`]) and
//! show them PROCESSING, as Directord does; with no master running they show the history
//! alone. `--purge-jobs` deletes those runs from the history. `--list-nodes`,
//! `--export-nodes`, `--purge-nodes` and `--dump-cache` need the running master (its control
//! socket): nodes are its sessions, and the caches are read by each connected minion's agent.
//!
//! Tables keep Directord's layouts and field names (tabulate's "simple" style); `--json`
//! gives the same data for scripts.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use historian::{Location, Store};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::control::{self, ControlReply, ControlRequest, ManageRequest};
use crate::directord::recording::{InFlight, LiveJob};
use crate::directord::records::{
    load, matches, merge, nothing_recorded, parse_filter, pick, Filter, JobRecord,
};
use crate::directord::tables::{
    analyze, job_info_table, python_bool, safe, scalar, secs8, tabulate,
};
use crate::exit::CommandError;
use crate::layout::DEFAULT_DIR;
use crate::server::Hub;

/// `ingot manage`: exactly one of the actions.
#[derive(Debug, Clone, clap::Args)]
#[command(group(
    clap::ArgGroup::new("action")
        .required(true)
        .args([
            "list_nodes", "list_jobs", "job_info", "purge_jobs", "purge_nodes", "export_jobs",
            "export_nodes", "analyze_job", "analyze_parent", "analyze_all", "dump_cache",
        ])
))]
pub struct ManageArgs {
    /// The master tree.
    #[arg(long, value_name = "DIR", env = "INGOT_MASTER", default_value = DEFAULT_DIR)]
    pub master: PathBuf,
    /// The master's history for the job commands: an SQLite file or a postgres:// URL
    /// (default: $INGOT_HISTORY, else MASTER/logs/history.db, as `ingot master serve`).
    #[arg(long, value_name = "PATH|URL")]
    pub history: Option<String>,
    /// List minions: name, state (connected, rebooting: inactive after a REBOOT until it
    /// connects again, expired, never-seen, revoked), certificate expiry, version, uptime,
    /// machine id, address (asks the running master).
    #[arg(long)]
    pub list_nodes: bool,
    /// List the Directord jobs run through the master: ID, PARENT_JOB_NAME, VERB,
    /// EXECUTION_TIME (average per minion), PROCESSING (True while the running master has not
    /// sent it or a target has not answered), SUCCESS, FAILED (minion counts).
    #[arg(long)]
    pub list_jobs: bool,
    /// With --list-jobs: only jobs whose status is success, skipped, failed or processing, or
    /// where KEY (ID, PARENT_JOB_ID, PARENT_JOB_NAME, JOB_NAME, VERB, JOB_SHA3_224, NODE,
    /// STATUS, RUN) is VALUE; every filter must match.
    #[arg(long, value_name = "KEY=VALUE|STATUS", num_args = 1.., requires = "list_jobs")]
    pub filter: Vec<String>,
    /// One job's record with every minion's INFO, STDOUT, STDERR and status (while it is
    /// processing: those that answered so far, and PENDING, those still to): a job id, a
    /// unique prefix of one, or `last`.
    #[arg(long, value_name = "ID|last")]
    pub job_info: Option<String>,
    /// Delete every finished Directord run (its jobs) from the history; other runs stay.
    #[arg(long)]
    pub purge_jobs: bool,
    /// Forget the minions that are not connected (the running master; connected ones stay,
    /// forgotten ones come back when they connect).
    #[arg(long)]
    pub purge_nodes: bool,
    /// Write every job's record to FILE as JSON (an object keyed by job id).
    #[arg(long, value_name = "FILE")]
    pub export_jobs: Option<PathBuf>,
    /// Write every known minion (as --list-nodes shows them) to FILE as JSON, an object keyed
    /// by name (asks the running master).
    #[arg(long, value_name = "FILE")]
    pub export_nodes: Option<PathBuf>,
    /// Execution statistics of one job (a job id, a unique prefix, or `last`).
    #[arg(long, value_name = "ID|last")]
    pub analyze_job: Option<String>,
    /// Execution statistics of every job of one parent (an orchestration, or an exec: its
    /// parent id is its job id): a parent id, a unique prefix, or `last`.
    #[arg(long, value_name = "ID|last")]
    pub analyze_parent: Option<String>,
    /// Execution statistics of every job run through the master (ID `all`).
    #[arg(long)]
    pub analyze_all: bool,
    /// Print each connected minion's Directord cache (args, envs, job and parent states) as
    /// JSON, keyed by minion (asks the running master).
    #[arg(long)]
    pub dump_cache: bool,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a manage command failed (see [`CommandError::exit_code`]).
type Failure = CommandError;

impl From<historian::Error> for CommandError {
    fn from(e: historian::Error) -> Self {
        CommandError::Failed(e.to_string())
    }
}

impl From<String> for CommandError {
    /// A failure described in words.
    fn from(e: String) -> Self {
        CommandError::Failed(e)
    }
}

fn pretty(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n"
}

fn list_jobs(jobs: &[JobRecord], filters: &[Filter], json_out: bool) -> Result<String, Failure> {
    let shown: Vec<&JobRecord> = jobs
        .iter()
        .filter(|j| filters.iter().all(|f| matches(j, f)))
        .collect();
    let rows: Vec<Value> = shown.iter().map(|j| j.row()).collect();
    if json_out {
        return Ok(pretty(&rows));
    }
    if rows.is_empty() {
        return Ok("no Directord jobs recorded (matching these filters)\n".into());
    }
    let cols = [
        "ID",
        "PARENT_JOB_NAME",
        "VERB",
        "EXECUTION_TIME",
        "PROCESSING",
        "SUCCESS",
        "FAILED",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|c| match (*c, &r[*c]) {
                    ("EXECUTION_TIME", v) => secs8(v.as_f64().unwrap_or(0.0)),
                    ("PROCESSING", v) => python_bool(v.as_bool().unwrap_or(false)),
                    (_, v) => safe(&scalar(v)),
                })
                .collect()
        })
        .collect();
    let mut out = tabulate(&cols, &table);
    let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_u64()).sum::<u64>();
    let exec: f64 = shown
        .iter()
        .flat_map(|j| &j.nodes)
        .map(|n| n.seen.execution_time)
        .sum();
    let _ = write!(
        out,
        "\nTotal Items: {}\nTotal Execution Time: {}\nTotal Successes: {} (skipped: {})\nTotal Failures: {}\n",
        rows.len(),
        secs8(exec),
        sum("SUCCESS"),
        sum("SKIPPED"),
        sum("FAILED"),
    );
    Ok(out)
}

fn export_jobs(
    jobs: &[JobRecord],
    file: &std::path::Path,
    json_out: bool,
) -> Result<String, Failure> {
    let doc: Map<String, Value> = jobs.iter().map(|j| (j.id(), j.record())).collect();
    let bytes = serde_json::to_vec_pretty(&doc).expect("JSON values serialize");
    std::fs::write(file, [bytes, b"\n".to_vec()].concat())
        .map_err(|e| format!("writing {}: {e}", file.display()))?;
    Ok(if json_out {
        pretty(&json!({"file": file, "jobs": jobs.len()}))
    } else {
        format!("Exported data to [ {} ]\n", file.display())
    })
}

fn purge_jobs(store: &mut Store, jobs: &[JobRecord], json_out: bool) -> Result<String, Failure> {
    let mut runs: Vec<String> = Vec::new();
    for j in jobs {
        if !runs.contains(&j.run) {
            runs.push(j.run.clone());
        }
    }
    let report = store.delete_runs(&runs)?;
    let purged = jobs.iter().filter(|j| report.runs.contains(&j.run)).count();
    let kept: Vec<&String> = runs.iter().filter(|r| !report.runs.contains(r)).collect();
    if json_out {
        return Ok(pretty(&json!({
            "jobs": purged, "runs": report.runs, "steps": report.steps,
            "events": report.events, "kept_running": kept,
        })));
    }
    let mut out = format!(
        "Purged {purged} jobs ({} runs, {} steps, {} events) from {}\n",
        report.runs.len(),
        report.steps,
        report.events,
        store.location()
    );
    if !kept.is_empty() {
        let _ = writeln!(
            out,
            "kept {} runs still running: {}",
            kept.len(),
            kept.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(out)
}

/// How long the job commands wait for the running master's jobs.
const LIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The jobs the master of `master` is running and has not stored yet: none, silently, when
/// no master is running (the history is all there is); none, with a note on stderr, when one
/// is there but does not answer.
fn live_jobs(rt: &tokio::runtime::Runtime, master: &Path) -> Vec<JobRecord> {
    let mut answer = None;
    let mut error = None;
    let asked = rt.block_on(async {
        tokio::time::timeout(
            LIVE_TIMEOUT,
            control::request(
                master,
                &ControlRequest::Manage(ManageRequest::JobsInFlight),
                |r| match r {
                    ControlReply::Done { stdout, .. } => answer = Some(stdout),
                    ControlReply::Error(e) => error = Some(e),
                    _ => {}
                },
            ),
        )
        .await
    });
    let why = match asked {
        Err(_) => format!("no answer within {}s", LIVE_TIMEOUT.as_secs()),
        Ok(Err(control::ControlError::Connect { source, .. }))
            if matches!(
                source.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Vec::new();
        }
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => match (error, answer) {
            (Some(e), _) => e,
            (None, None) => {
                "it closed the connection without an answer (is `ingot master serve` this version?)"
                    .into()
            }
            (None, Some(doc)) => match serde_json::from_str::<Vec<LiveJob>>(&doc) {
                Ok(live) => return live.into_iter().map(JobRecord::from).collect(),
                Err(e) => format!("its answer: {e}"),
            },
        },
    };
    eprintln!(
        "ingot manage: note: jobs still running are not shown, only the history: asking the \
         master at {}: {why}",
        master.display()
    );
    Vec::new()
}

/// The job commands, against the history and the running master.
fn jobs_command(rt: &tokio::runtime::Runtime, args: &ManageArgs) -> Result<String, Failure> {
    let location = Location::resolve(args.history.as_deref(), Some(&args.master), None);
    // Before opening anything: a usage error is a usage error.
    let filters: Vec<Filter> = args
        .filter
        .iter()
        .map(|f| parse_filter(f))
        .collect::<Result<_, _>>()
        .map_err(Failure::Usage)?;
    // The master first: it keeps a job until its run is stored, so a job that finishes in
    // between is then in the history (see `merge`).
    let live = if args.purge_jobs {
        Vec::new()
    } else {
        live_jobs(rt, &args.master)
    };
    let mut store = Store::open(&location)?;
    let jobs = merge(load(&mut store)?, live);
    let ids: Vec<String> = jobs.iter().map(JobRecord::id).collect();
    if args.list_jobs {
        list_jobs(&jobs, &filters, args.json)
    } else if let Some(sel) = &args.job_info {
        let id = pick(sel, &ids, "job", &location)?;
        let job = jobs.iter().find(|j| j.id() == id).expect("picked");
        Ok(if args.json {
            pretty(&job.record())
        } else {
            job_info_table(job)
        })
    } else if let Some(sel) = &args.analyze_job {
        let id = pick(sel, &ids, "job", &location)?;
        let job = jobs.iter().find(|j| j.id() == id).expect("picked");
        let a = analyze(id, &[job]);
        Ok(if args.json {
            pretty(&a.json())
        } else {
            a.table()
        })
    } else if let Some(sel) = &args.analyze_parent {
        let parents: Vec<String> = jobs.iter().map(JobRecord::parent_id).collect();
        let id = pick(sel, &parents, "parent", &location)?;
        let of: Vec<&JobRecord> = jobs.iter().filter(|j| j.parent_id() == id).collect();
        let a = analyze(id, &of);
        Ok(if args.json {
            pretty(&a.json())
        } else {
            a.table()
        })
    } else if args.analyze_all {
        if jobs.is_empty() {
            return Err(Failure::Failed(nothing_recorded(&location)));
        }
        let a = analyze("all", &jobs.iter().collect::<Vec<_>>());
        Ok(if args.json {
            pretty(&a.json())
        } else {
            a.table()
        })
    } else if let Some(file) = &args.export_jobs {
        export_jobs(&jobs, file, args.json)
    } else if args.purge_jobs {
        // Only what is stored: a job still running has nothing to purge yet.
        purge_jobs(&mut store, &jobs, args.json)
    } else {
        Err(Failure::Usage("nothing to do".into()))
    }
}

/// Runs `ingot manage` (everything but `--list-nodes`); returns the exit code.
pub fn run(rt: &tokio::runtime::Runtime, args: &ManageArgs) -> Result<i32, CommandError> {
    let out = if args.purge_nodes || args.dump_cache {
        ask_master(rt, args)
    } else {
        jobs_command(rt, args)
    }?;
    print!("{out}");
    Ok(runner::exit::SUCCESS)
}

/// `--purge-nodes`, `--dump-cache`: asks the running master.
fn ask_master(rt: &tokio::runtime::Runtime, args: &ManageArgs) -> Result<String, Failure> {
    let req = if args.purge_nodes {
        ManageRequest::PurgeNodes
    } else {
        ManageRequest::DumpCache
    };
    let mut answer: Option<(String, i32)> = None;
    let mut error = None;
    rt.block_on(control::request(
        &args.master,
        &ControlRequest::Manage(req),
        |r| match r {
            ControlReply::Done { stdout, code } => answer = Some((stdout, code)),
            ControlReply::Usage(e) => error = Some(Failure::Usage(e)),
            ControlReply::Error(e) => error = Some(Failure::Failed(e)),
            _ => {}
        },
    ))?;
    if let Some(e) = error {
        return Err(e);
    }
    let (doc, _) =
        answer.ok_or_else(|| "the master closed the connection without an answer".to_string())?;
    let doc: Value = serde_json::from_str(&doc).map_err(|e| format!("the master's answer: {e}"))?;
    match req {
        ManageRequest::DumpCache => {
            let errors = doc["errors"].as_object().cloned().unwrap_or_default();
            for (name, e) in &errors {
                eprintln!("ingot manage: {name}: {}", scalar(e));
            }
            let out = pretty(&doc["caches"]);
            if errors.is_empty() {
                Ok(out)
            } else {
                print!("{out}");
                Err(Failure::Failed(format!(
                    "{} minion(s) did not answer: {}",
                    errors.len(),
                    errors.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        }
        // Not asked here (see `live_jobs`); the document is the answer.
        ManageRequest::JobsInFlight => Ok(pretty(&doc)),
        ManageRequest::PurgeNodes => Ok(if args.json {
            pretty(&doc)
        } else {
            let names = |k: &str| {
                doc[k]
                    .as_array()
                    .map(|a| a.iter().map(scalar).collect::<Vec<_>>())
                    .unwrap_or_default()
            };
            let (purged, kept) = (names("purged"), names("kept"));
            format!(
                "Purged {} nodes{}{}\n",
                purged.len(),
                if purged.is_empty() {
                    String::new()
                } else {
                    format!(": {}", purged.join(", "))
                },
                if kept.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (kept {} connected or busy: {})",
                        kept.len(),
                        kept.join(", ")
                    )
                }
            )
        }),
    }
}

/// How long the master waits for a minion's cache.
const DUMP_TIMEOUT: Duration = Duration::from_secs(30);

/// The master's side of a [`ManageRequest`]: a JSON document in `Done`'s stdout.
pub async fn serve(hub: &Arc<Hub>, in_flight: &InFlight, req: ManageRequest) -> ControlReply {
    match req {
        ManageRequest::JobsInFlight => ControlReply::Done {
            stdout: serde_json::to_string(&in_flight.snapshot()).expect("JSON values serialize"),
            code: 0,
        },
        ManageRequest::PurgeNodes => {
            let purged = hub.purge_nodes();
            // What is left of the sessions: connected, or awaited by a request.
            let kept: Vec<String> = hub
                .nodes()
                .into_iter()
                .filter(|n| matches!(n.state.as_str(), "connected" | "rebooting" | "expired"))
                .map(|n| n.name)
                .collect();
            ControlReply::Done {
                stdout: json!({"purged": purged, "kept": kept}).to_string(),
                code: 0,
            }
        }
        ManageRequest::DumpCache => {
            let names = hub.connected_names();
            if names.is_empty() {
                return ControlReply::Error(
                    "no minion is connected (start `ingot minion serve` on them)".into(),
                );
            }
            let answers = futures::future::join_all(names.iter().map(|n| {
                let hub = hub.clone();
                async move {
                    let Some(s) = hub.connected_session(n) else {
                        return Err(format!("minion {n} is not connected"));
                    };
                    match tokio::time::timeout(
                        DUMP_TIMEOUT,
                        crate::fleet::RemoteMinion::new(hub.clone(), s).dump_cache(),
                    )
                    .await
                    {
                        Err(_) => Err(format!(
                            "no answer within {}s (is its agent this version?)",
                            DUMP_TIMEOUT.as_secs()
                        )),
                        Ok(r) => r.map_err(|e| e.to_string()),
                    }
                }
            }))
            .await;
            let (mut caches, mut errors) = (Map::new(), Map::new());
            for (n, a) in names.into_iter().zip(answers) {
                match a {
                    Ok(v) => caches.insert(n, v),
                    Err(e) => errors.insert(n, e.into()),
                };
            }
            let code = i32::from(!errors.is_empty());
            ControlReply::Done {
                stdout: json!({"caches": caches, "errors": errors}).to_string(),
                code,
            }
        }
    }
}
