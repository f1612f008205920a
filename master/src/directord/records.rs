//! Directord job records read back from the master's history: the `job` steps that
//! [`crate::directord::recording`] records, grouped by job id ([`load`]), joined by the jobs the running
//! master has not stored yet ([`merge`]: PROCESSING while a target has not answered), picked
//! by id or prefix ([`pick`]) and filtered ([`parse_filter`]); `super::tables` shows them as
//! Directord does. `ingot manage` (`crate::directord::manage`) puts them together.

use std::collections::{BTreeSet, HashMap};

use historian::{Location, StepOutcome, Store};
use minion::directord::engine::Status;
use serde_json::{json, Map, Value};

use crate::directord::recording::{LiveJob, NodeResult, Observation, ACTION};

/// A job as recorded: its definition and every minion's result.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The historian run of the request it came in.
    pub run: String,
    /// The job as sent (the step's desired state).
    pub definition: Map<String, Value>,
    /// When the master received it (microseconds).
    pub created_us: i64,
    /// Its place in its request.
    pub index: u64,
    /// The minions' results (so far, while processing).
    pub nodes: Vec<NodeResult>,
    /// Directord's PROCESSING: the running master has not sent it yet, or a target has not
    /// answered.
    pub processing: bool,
    /// The targets that have not answered (empty before the job is sent).
    pub pending: Vec<String>,
}

impl From<LiveJob> for JobRecord {
    fn from(live: LiveJob) -> Self {
        let (processing, pending) = (live.processing(), live.pending());
        let d = live.definition;
        Self {
            run: live.run,
            created_us: d.get("created_us").and_then(Value::as_i64).unwrap_or(0),
            index: d.get("index").and_then(Value::as_u64).unwrap_or(0),
            definition: d,
            nodes: live.answered,
            processing,
            pending,
        }
    }
}

fn text_of(m: &Map<String, Value>, key: &str) -> String {
    m.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

impl JobRecord {
    /// The job id.
    pub fn id(&self) -> String {
        text_of(&self.definition, "job_id")
    }

    /// The parent (orchestration) id.
    pub fn parent_id(&self) -> String {
        text_of(&self.definition, "parent_id")
    }

    /// The parent's name, else its id (Directord's PARENT_JOB_NAME).
    pub fn parent_name(&self) -> String {
        match text_of(&self.definition, "parent_name") {
            n if n.is_empty() => self.parent_id(),
            n => n,
        }
    }

    /// The verb.
    pub fn verb(&self) -> String {
        text_of(&self.definition, "verb")
    }

    fn results(&self, s: Status) -> impl Iterator<Item = &NodeResult> {
        self.nodes.iter().filter(move |n| n.seen.status == s)
    }

    fn names(&self, s: Status) -> Vec<&str> {
        self.results(s).map(|n| n.node.as_str()).collect()
    }

    /// `processing` until every target answered; then `failed` when a minion failed,
    /// `skipped` when every one skipped it, else `success`.
    pub fn status(&self) -> &'static str {
        if self.processing {
            "processing"
        } else if self.results(Status::Failed).next().is_some() {
            "failed"
        } else if !self.nodes.is_empty()
            && self.results(Status::Skipped).count() == self.nodes.len()
        {
            "skipped"
        } else {
            "success"
        }
    }

    pub(crate) fn average(&self, f: impl Fn(&Observation) -> f64) -> f64 {
        match self.nodes.len() {
            0 => 0.0,
            n => self.nodes.iter().map(|r| f(&r.seen)).sum::<f64>() / n as f64,
        }
    }

    /// Directord's `--list-jobs` row.
    pub(crate) fn row(&self) -> Value {
        json!({
            "ID": self.id(),
            "PARENT_JOB_ID": self.parent_id(),
            "PARENT_JOB_NAME": self.parent_name(),
            "JOB_NAME": text_of(&self.definition, "job_name"),
            "VERB": self.verb(),
            "EXECUTION_TIME": self.average(|o| o.execution_time),
            "PROCESSING": self.processing,
            "SUCCESS": self.results(Status::Success).count() + self.results(Status::Skipped).count(),
            "SKIPPED": self.results(Status::Skipped).count(),
            "FAILED": self.results(Status::Failed).count(),
            "STATUS": self.status(),
            "RUN": self.run,
        })
    }

    /// Directord's job record (`--job-info --json`, `--export-jobs`).
    pub(crate) fn record(&self) -> Value {
        let per = |f: &dyn Fn(&NodeResult) -> Value| -> Map<String, Value> {
            self.nodes.iter().map(|n| (n.node.clone(), f(n))).collect()
        };
        let latest = |f: fn(&Observation) -> f64| {
            self.nodes.iter().map(|n| f(&n.seen)).fold(0.0f64, f64::max)
        };
        json!({
            "ID": self.id(),
            "JOB_DEFINITION": definition(&self.definition),
            "JOB_SHA3_224": text_of(&self.definition, "sha3_224"),
            "JOB_NAME": text_of(&self.definition, "job_name"),
            "PARENT_JOB_ID": self.parent_id(),
            "PARENT_JOB_NAME": self.parent_name(),
            "PARENT_SHA3_224": text_of(&self.definition, "parent_sha3_224"),
            "VERB": self.verb(),
            "CREATED_TIMESTAMP": self.created_us as f64 / 1e6,
            "COMPONENT_TIMESTAMP": latest(|o| o.component_timestamp),
            "RETURN_TIMESTAMP": latest(|o| o.return_timestamp),
            "INFO": per(&|n| n.seen.info.clone().into()),
            "STDOUT": per(&|n| n.seen.stdout.clone().into()),
            "STDERR": per(&|n| n.seen.stderr.clone().into()),
            "PROCESSING": self.processing,
            "PENDING": self.pending,
            "SUCCESS": self.names(Status::Success),
            "SKIPPED": self.names(Status::Skipped),
            "FAILED": self.names(Status::Failed),
            "EXECUTION_TIME": per(&|n| n.seen.execution_time.into()),
            "ROUNDTRIP_TIME": per(&|n| n.seen.roundtrip_time.into()),
            "RUN": self.run,
        })
    }
}

/// The job definition without the recording's own keys, fields flattened to the top as in
/// Directord's job dictionaries.
fn definition(d: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in d {
        match (k.as_str(), v) {
            ("created_us" | "index", _) => {}
            ("fields", Value::Object(f)) => {
                for (fk, fv) in f {
                    out.insert(fk.clone(), fv.clone());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// A stored observation, or what the outcome alone says.
fn observation(after: Option<&Value>, outcome: StepOutcome) -> Observation {
    if let Some(o) = after.and_then(|v| serde_json::from_value(v.clone()).ok()) {
        return o;
    }
    Observation {
        status: match outcome {
            StepOutcome::Unchanged => Status::Skipped,
            StepOutcome::Changed => Status::Success,
            _ => Status::Failed,
        },
        stdout: String::new(),
        stderr: String::new(),
        info: String::new(),
        execution_time: 0.0,
        component_timestamp: 0.0,
        return_timestamp: 0.0,
        roundtrip_time: 0.0,
    }
}

/// Every recorded job, oldest first (by when the master received it, then request order).
pub fn load(store: &mut Store) -> historian::Result<Vec<JobRecord>> {
    let mut jobs: Vec<JobRecord> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for s in store.steps_with_action(ACTION)? {
        let Some(Value::Object(d)) = s.step.desired else {
            continue;
        };
        let id = text_of(&d, "job_id");
        if id.is_empty() || text_of(&d, "verb").is_empty() {
            continue;
        }
        let node = NodeResult {
            node: s.step.minion.clone(),
            seen: observation(s.step.after.as_ref(), s.step.outcome),
        };
        match at.get(&id) {
            Some(&i) => jobs[i].nodes.push(node),
            None => {
                at.insert(id, jobs.len());
                jobs.push(JobRecord {
                    run: s.run,
                    created_us: d
                        .get("created_us")
                        .and_then(Value::as_i64)
                        .unwrap_or(s.step.started_us.0),
                    index: d.get("index").and_then(Value::as_u64).unwrap_or(0),
                    definition: d,
                    nodes: vec![node],
                    processing: false,
                    pending: Vec::new(),
                });
            }
        }
    }
    jobs.sort_by_key(|j| (j.created_us, j.index));
    Ok(jobs)
}

/// The `stored` jobs and the `live` ones the running master has not stored yet, oldest
/// first. A job in both is shown as stored: the master keeps a job until its run is stored,
/// so it may be in both for a moment, and the history is what stays.
pub fn merge(stored: Vec<JobRecord>, live: Vec<JobRecord>) -> Vec<JobRecord> {
    let known: BTreeSet<String> = stored.iter().map(JobRecord::id).collect();
    let mut jobs = stored;
    jobs.extend(live.into_iter().filter(|j| !known.contains(&j.id())));
    jobs.sort_by_key(|j| (j.created_us, j.index));
    jobs
}
/// What to name in "no such job" errors: at most this many, newest first.
const SHOWN: usize = 10;

fn known<'a>(items: impl DoubleEndedIterator<Item = &'a String>, total: usize) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for i in items.rev() {
        if !seen.contains(&i.as_str()) {
            seen.push(i);
        }
        if seen.len() == SHOWN {
            break;
        }
    }
    let more = if total > seen.len() {
        format!(" (newest {} of {total})", seen.len())
    } else {
        String::new()
    };
    format!("{}{more}", seen.join(", "))
}

pub(crate) fn nothing_recorded(location: &Location) -> String {
    format!(
        "no Directord job is recorded in {location} (run some with `ingot exec --master DIR` or \
         `ingot orchestrate --master DIR`; the master's history is MASTER/logs/history.db unless \
         --history or INGOT_HISTORY say otherwise)"
    )
}

/// The one id of `ids` that `sel` names: `last`, an exact id or a unique prefix.
pub(crate) fn pick<'a>(
    sel: &str,
    ids: &'a [String],
    what: &str,
    location: &Location,
) -> Result<&'a str, String> {
    if ids.is_empty() {
        return Err(nothing_recorded(location));
    }
    if sel == "last" {
        return Ok(ids.last().expect("not empty"));
    }
    if let Some(id) = ids.iter().find(|i| *i == sel) {
        return Ok(id);
    }
    let found: BTreeSet<&String> = ids
        .iter()
        .filter(|i| !sel.is_empty() && i.starts_with(sel))
        .collect();
    let mut found = found.into_iter();
    match (found.next(), found.len()) {
        (Some(id), 0) => Ok(id),
        (None, _) => {
            let unique: BTreeSet<&String> = ids.iter().collect();
            Err(format!(
                "no {what} {sel:?} in {location}; known: {} (see `ingot manage --list-jobs`)",
                known(ids.iter(), unique.len())
            ))
        }
        (Some(first), more) => Err(format!(
            "{what} {sel:?} is ambiguous: {} match ({first}, {}); give more of the id",
            more + 1,
            found.map(String::as_str).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// One `--filter`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Field(String, String),
}

const FILTER_KEYS: [&str; 9] = [
    "ID",
    "PARENT_JOB_ID",
    "PARENT_JOB_NAME",
    "JOB_NAME",
    "VERB",
    "JOB_SHA3_224",
    "NODE",
    "STATUS",
    "RUN",
];

const STATUSES: [&str; 4] = ["success", "skipped", "failed", "processing"];

pub(crate) fn parse_filter(s: &str) -> Result<Filter, String> {
    match s.split_once('=') {
        None if STATUSES.contains(&s.to_ascii_lowercase().as_str()) => {
            Ok(Filter::Field("STATUS".into(), s.to_ascii_lowercase()))
        }
        None => Err(format!(
            "--filter {s:?}: give KEY=VALUE or a status ({})",
            STATUSES.join(", ")
        )),
        Some((k, v)) => {
            let key = k.trim().to_ascii_uppercase().replace('-', "_");
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(format!(
                    "--filter {s:?}: unknown key {k:?}; keys are {}",
                    FILTER_KEYS.join(", ")
                ));
            }
            if key == "STATUS" && !STATUSES.contains(&v.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "--filter {s:?}: a status is one of {}",
                    STATUSES.join(", ")
                ));
            }
            Ok(Filter::Field(key, v.to_owned()))
        }
    }
}

pub(crate) fn matches(job: &JobRecord, f: &Filter) -> bool {
    let Filter::Field(key, value) = f;
    let d = &job.definition;
    match key.as_str() {
        "ID" => job.id() == *value,
        "PARENT_JOB_ID" => job.parent_id() == *value,
        "PARENT_JOB_NAME" => job.parent_name() == *value,
        "JOB_NAME" => text_of(d, "job_name") == *value,
        "VERB" => job.verb().eq_ignore_ascii_case(value),
        "JOB_SHA3_224" => text_of(d, "sha3_224") == *value,
        "NODE" => job.nodes.iter().any(|n| n.node == *value),
        "STATUS" => job.status().eq_ignore_ascii_case(value),
        "RUN" => job.run.starts_with(value.as_str()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directord::tables::*;

    fn node(name: &str, status: Status, exec: f64, ret: f64) -> NodeResult {
        NodeResult {
            node: name.into(),
            seen: Observation {
                status,
                stdout: format!("out of {name}\nsecond line"),
                stderr: String::new(),
                info: String::new(),
                execution_time: exec,
                component_timestamp: ret,
                return_timestamp: ret,
                roundtrip_time: ret - 100.0,
            },
        }
    }

    fn job(id: &str, parent: &str, verb: &str, nodes: Vec<NodeResult>) -> JobRecord {
        let d = json!({
            "job_id": id, "verb": verb, "parent_id": parent, "sha3_224": "abc",
            "text": "echo hi", "kind": "run", "fields": {"command": "echo hi", "timeout": 600},
            "created_us": 100_000_000, "index": 0,
        });
        JobRecord {
            run: "run-1".into(),
            definition: d.as_object().unwrap().clone(),
            created_us: 100_000_000,
            index: 0,
            nodes,
            processing: false,
            pending: Vec::new(),
        }
    }

    #[test]
    fn tables_are_tabulate_simple() {
        let t = tabulate(&["A", "LONGER"], &[vec!["xyz".into(), "1\n2".into()]]);
        assert_eq!(t, "A    LONGER\n---  ------\nxyz  1\n     2\n");
    }

    #[test]
    fn statuses_and_filters() {
        let ok = job(
            "j1",
            "p",
            "RUN",
            vec![node("d1", Status::Success, 1.0, 101.0)],
        );
        let skipped = job(
            "j2",
            "p",
            "ARG",
            vec![node("d1", Status::Skipped, 0.0, 101.0)],
        );
        let bad = job(
            "j3",
            "p",
            "RUN",
            vec![
                node("d1", Status::Success, 1.0, 101.0),
                node("d2", Status::Failed, 2.0, 102.0),
            ],
        );
        assert_eq!(
            [ok.status(), skipped.status(), bad.status()],
            ["success", "skipped", "failed"]
        );
        let f = parse_filter("verb=run").unwrap();
        assert!(matches(&ok, &f) && !matches(&skipped, &f));
        assert!(matches(&bad, &parse_filter("failed").unwrap()));
        assert!(matches(&bad, &parse_filter("NODE=d2").unwrap()));
        assert!(parse_filter("colour=red").unwrap_err().contains("keys are"));
        assert!(parse_filter("weird").is_err());
    }

    #[test]
    fn analysis_counts_and_extremes() {
        let a = job(
            "j1",
            "p",
            "RUN",
            vec![
                node("d1", Status::Success, 1.0, 101.0),
                node("d2", Status::Failed, 3.0, 103.0),
            ],
        );
        let b = job(
            "j2",
            "p",
            "RUN",
            vec![node("d1", Status::Skipped, 0.5, 104.0)],
        );
        let r = analyze("p", &[&a, &b]);
        assert_eq!(r.total_jobs, 2);
        assert_eq!(
            (r.total_successes, r.total_skipped, r.total_failures),
            (1, 1, 1)
        );
        assert_eq!(r.total_node_count, 2);
        assert_eq!(r.combined_execution_time, 4.5);
        assert_eq!(r.total_avg_execution_time, 1.5);
        assert_eq!(r.fastest_node_execution, Some(("d1".into(), 1.5)));
        assert_eq!(r.slowest_node_execution, Some(("d2".into(), 3.0)));
        assert_eq!(r.actual_runtime, 4.0);
        let t = r.table();
        assert!(
            t.lines()
                .any(|l| l.starts_with("FASTEST_NODE_EXECUTION ")
                    && l.ends_with("  d1 = 1.50000000")),
            "{t}"
        );
    }

    #[test]
    fn ids_are_picked_by_prefix_or_last_with_clear_errors() {
        let loc = Location::Sqlite("h.db".into());
        let ids: Vec<String> = vec!["abc-1".into(), "abd-2".into(), "zzz".into()];
        assert_eq!(pick("last", &ids, "job", &loc).unwrap(), "zzz");
        assert_eq!(pick("abc", &ids, "job", &loc).unwrap(), "abc-1");
        assert!(pick("ab", &ids, "job", &loc)
            .unwrap_err()
            .contains("ambiguous"));
        let e = pick("nope", &ids, "job", &loc).unwrap_err();
        assert!(e.contains("zzz, abd-2, abc-1"), "{e}");
        assert!(pick("x", &[], "job", &loc)
            .unwrap_err()
            .contains("no Directord job"));
    }

    #[test]
    fn live_jobs_show_processing_and_the_history_wins_once_stored() {
        let mut stored = job(
            "j1",
            "p",
            "RUN",
            vec![node("d1", Status::Success, 1.0, 101.0)],
        );
        stored.created_us = 50;
        let live = |id: &str, targets: Option<Vec<&str>>, answered: Vec<NodeResult>| {
            let mut d = job(id, "p", "RUN", vec![]).definition;
            d.insert("created_us".into(), 100.into());
            // Its place in its request: j2 before j3.
            d.insert("index".into(), u64::from(id == "j3").into());
            JobRecord::from(LiveJob {
                definition: d,
                run: "run-2".into(),
                targets: targets.map(|t| t.into_iter().map(String::from).collect()),
                answered,
                done: false,
            })
        };
        let running = live(
            "j2",
            Some(vec!["d1", "d2"]),
            vec![node("d1", Status::Success, 1.0, 101.0)],
        );
        let held = live("j3", None, vec![]);
        // The stored j1 stands for its live copy (the master keeps it until stored).
        let jobs = merge(
            vec![stored],
            vec![held, live("j1", Some(vec!["d1"]), vec![]), running],
        );
        let ids: Vec<String> = jobs.iter().map(JobRecord::id).collect();
        assert_eq!(ids, ["j1", "j2", "j3"]);
        assert!(!jobs[0].processing);
        assert_eq!(jobs[0].status(), "success");

        let row = jobs[1].row();
        assert_eq!(
            (row["PROCESSING"].as_bool(), row["STATUS"].as_str()),
            (Some(true), Some("processing"))
        );
        assert_eq!(row["SUCCESS"], 1);
        let r = jobs[1].record();
        assert_eq!(r["PENDING"], json!(["d2"]));
        assert_eq!(r["SUCCESS"], json!(["d1"]));
        let t = job_info_table(&jobs[1]);
        assert!(
            t.lines()
                .any(|l| l.starts_with("PROCESSING ") && l.ends_with(" True")),
            "{t}"
        );
        assert!(
            t.lines()
                .any(|l| l.starts_with("PENDING ") && l.ends_with(" d2")),
            "{t}"
        );
        assert!(job_info_table(&jobs[2]).contains("not sent yet"));
        let processing = parse_filter("processing").unwrap();
        let shown: Vec<String> = jobs
            .iter()
            .filter(|j| matches(j, &processing))
            .map(JobRecord::id)
            .collect();
        assert_eq!(shown, ["j2", "j3"]);
        let t = job_info_table(&jobs[0]);
        assert!(
            t.lines()
                .any(|l| l.starts_with("PROCESSING ") && l.ends_with(" False")),
            "{t}"
        );
        assert!(!t.contains("PENDING"), "{t}");
    }

    #[test]
    fn job_info_shows_each_minion() {
        let j = job(
            "j1",
            "p",
            "RUN",
            vec![
                node("d1", Status::Success, 1.0, 101.0),
                node("d2", Status::Skipped, 0.0, 101.0),
            ],
        );
        let t = job_info_table(&j);
        assert!(t.contains("d1 = out of d1"), "{t}");
        assert!(t.contains("SUCCESS"), "{t}");
        assert!(t.contains("command = echo hi"), "{t}");
        assert!(!t.contains("created_us"), "{t}");
        let r = j.record();
        assert_eq!(r["SUCCESS"], json!(["d1"]));
        assert_eq!(r["SKIPPED"], json!(["d2"]));
        assert_eq!(r["STDOUT"]["d2"], "out of d2\nsecond line");
    }
}
