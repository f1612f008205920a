//! Directord's tables, as `ingot manage` prints them: tabulate's "simple" style, a job's info,
//! the analysis of jobs and parents ([`analyze`]), and the cell formats they share.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use channel3::Timestamp;
use minion::directord::engine::Status;
use serde::Serialize;
use serde_json::{json, Value};

use super::records::JobRecord;

/// A table in tabulate's "simple" style: headers, a dashed rule, left-aligned cells; a
/// multi-line cell continues on the next lines in its column.
pub fn tabulate(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.lines().map(|l| l.chars().count()).max().unwrap_or(0);
            if i < widths.len() {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, headers);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(
        &mut out,
        &rule.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for row in rows {
        let split: Vec<Vec<&str>> = row.iter().map(|c| c.lines().collect()).collect();
        let height = split.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for k in 0..height {
            let cells: Vec<&str> = split
                .iter()
                .map(|c| c.get(k).copied().unwrap_or(""))
                .collect();
            line(&mut out, &cells);
        }
    }
    out
}

pub(crate) fn kv_table(rows: Vec<(&str, String)>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|(k, v)| vec![k.to_owned(), v])
        .collect();
    tabulate(&["KEY", "VALUE"], &rows)
}

/// Terminal-safe text, one line per line.
pub(crate) fn safe(s: &str) -> String {
    s.trim_end()
        .lines()
        .map(|l| historian::render::safe_text(l.as_bytes(), 2000))
        .collect::<Vec<_>>()
        .join("\n")
}

pub(crate) fn secs8(s: f64) -> String {
    format!("{s:.8}")
}

fn when(secs: f64) -> String {
    if secs <= 0.0 {
        return String::new();
    }
    Timestamp((secs * 1e6) as i64).to_string()
}

pub(crate) fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `--job-info` as Directord's KEY/VALUE table.
pub(crate) fn job_info_table(job: &JobRecord) -> String {
    let r = job.record();
    let per_node = |key: &str| -> String {
        job.nodes
            .iter()
            .filter_map(|n| {
                let t = match key {
                    "INFO" => &n.seen.info,
                    "STDOUT" => &n.seen.stdout,
                    _ => &n.seen.stderr,
                };
                (!t.trim().is_empty()).then(|| format!("{} = {}", n.node, safe(t)))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let def = r["JOB_DEFINITION"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{k} = {}", safe(&scalar(v))))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let list = |key: &str| -> String {
        r[key]
            .as_array()
            .map(|a| a.iter().map(scalar).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let mut rows = vec![
        ("ID", job.id()),
        ("JOB_DEFINITION", def),
        ("JOB_SHA3_224", scalar(&r["JOB_SHA3_224"])),
        ("JOB_NAME", scalar(&r["JOB_NAME"])),
        ("PARENT_JOB_ID", job.parent_id()),
        ("PARENT_JOB_NAME", job.parent_name()),
        ("VERB", job.verb()),
        ("CREATED_TIMESTAMP", when(job.created_us as f64 / 1e6)),
        (
            "COMPONENT_TIMESTAMP",
            when(r["COMPONENT_TIMESTAMP"].as_f64().unwrap_or(0.0)),
        ),
        (
            "RETURN_TIMESTAMP",
            when(r["RETURN_TIMESTAMP"].as_f64().unwrap_or(0.0)),
        ),
        ("INFO", per_node("INFO")),
        ("STDOUT", per_node("STDOUT")),
        ("STDERR", per_node("STDERR")),
        ("PROCESSING", python_bool(job.processing)),
        ("SUCCESS", list("SUCCESS")),
        ("SKIPPED", list("SKIPPED")),
        ("FAILED", list("FAILED")),
        ("EXECUTION_TIME", secs8(job.average(|o| o.execution_time))),
        ("ROUNDTRIP_TIME", secs8(job.average(|o| o.roundtrip_time))),
        ("RUN", job.run.clone()),
    ];
    if job.processing {
        // Where it stands: which minions it waits for (a row Directord does not have).
        let pending = match job.pending.as_slice() {
            [] => "not sent yet: the master holds it until the jobs before it in its queue are answered"
                .to_owned(),
            names => names.join(", "),
        };
        rows.insert(
            rows.iter()
                .position(|(k, _)| *k == "SUCCESS")
                .unwrap_or(rows.len()),
            ("PENDING", pending),
        );
    }
    kv_table(rows)
}

/// A boolean as Directord's tables print it (Python's `str(bool)`).
pub(crate) fn python_bool(b: bool) -> String {
    if b { "True" } else { "False" }.into()
}

/// Directord's analysis of some jobs (one job, or one parent's).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct Analysis {
    /// The job or parent id.
    pub id: String,
    /// Jobs analysed.
    pub total_jobs: usize,
    /// Seconds from the first job's arrival at the master to the last answer.
    pub actual_runtime: f64,
    /// Execution seconds of every job on every minion.
    pub combined_execution_time: f64,
    /// `combined_execution_time` per result (job and minion).
    pub total_avg_execution_time: f64,
    /// The minion with the least execution time in all, and that time.
    pub fastest_node_execution: Option<(String, f64)>,
    /// The minion with the most execution time in all.
    pub slowest_node_execution: Option<(String, f64)>,
    /// The minion with the least round-trip time in all.
    pub fastest_node_roundtrip: Option<(String, f64)>,
    /// The minion with the most round-trip time in all.
    pub slowest_node_roundtrip: Option<(String, f64)>,
    /// Results that succeeded (ran).
    pub total_successes: usize,
    /// Results skipped (the minion's cache said it had succeeded).
    pub total_skipped: usize,
    /// Results that failed.
    pub total_failures: usize,
    /// Distinct minions.
    pub total_node_count: usize,
}

/// Analyses `jobs` under the name `id`.
pub fn analyze(id: &str, jobs: &[&JobRecord]) -> Analysis {
    let mut exec: BTreeMap<&str, f64> = BTreeMap::new();
    let mut round: BTreeMap<&str, f64> = BTreeMap::new();
    let (mut results, mut combined) = (0usize, 0.0f64);
    let (mut first, mut last) = (i64::MAX, 0.0f64);
    let count = |s: Status| -> usize {
        jobs.iter()
            .map(|j| j.nodes.iter().filter(|n| n.seen.status == s).count())
            .sum()
    };
    for j in jobs {
        first = first.min(j.created_us);
        for n in &j.nodes {
            last = last.max(n.seen.return_timestamp);
            if n.node == "-" {
                continue;
            }
            results += 1;
            combined += n.seen.execution_time;
            *exec.entry(&n.node).or_default() += n.seen.execution_time;
            *round.entry(&n.node).or_default() += n.seen.roundtrip_time;
        }
    }
    let extreme = |m: &BTreeMap<&str, f64>, slowest: bool| -> Option<(String, f64)> {
        let mut it = m.iter();
        let (mut name, mut best) = it.next()?;
        for (n, t) in it {
            if (slowest && t > best) || (!slowest && t < best) {
                (name, best) = (n, t);
            }
        }
        Some((name.to_string(), *best))
    };
    Analysis {
        id: id.to_owned(),
        total_jobs: jobs.len(),
        actual_runtime: if jobs.is_empty() {
            0.0
        } else {
            (last - first as f64 / 1e6).max(0.0)
        },
        combined_execution_time: combined,
        total_avg_execution_time: if results == 0 {
            0.0
        } else {
            combined / results as f64
        },
        fastest_node_execution: extreme(&exec, false),
        slowest_node_execution: extreme(&exec, true),
        fastest_node_roundtrip: extreme(&round, false),
        slowest_node_roundtrip: extreme(&round, true),
        total_successes: count(Status::Success),
        total_skipped: count(Status::Skipped),
        total_failures: count(Status::Failed),
        total_node_count: exec.len(),
    }
}

impl Analysis {
    pub(crate) fn json(&self) -> Value {
        let pair = |p: &Option<(String, f64)>| match p {
            Some((n, t)) => json!({"node": n, "seconds": t}),
            None => Value::Null,
        };
        let mut v = serde_json::to_value(self).unwrap_or_default();
        for (key, p) in [
            ("FASTEST_NODE_EXECUTION", &self.fastest_node_execution),
            ("SLOWEST_NODE_EXECUTION", &self.slowest_node_execution),
            ("FASTEST_NODE_ROUNDTRIP", &self.fastest_node_roundtrip),
            ("SLOWEST_NODE_ROUNDTRIP", &self.slowest_node_roundtrip),
        ] {
            v[key] = pair(p);
        }
        v
    }

    pub(crate) fn table(&self) -> String {
        let pair = |p: &Option<(String, f64)>| match p {
            Some((n, t)) => format!("{n} = {}", secs8(*t)),
            None => String::new(),
        };
        kv_table(vec![
            ("ID", self.id.clone()),
            ("TOTAL_JOBS", self.total_jobs.to_string()),
            ("ACTUAL_RUNTIME", secs8(self.actual_runtime)),
            (
                "COMBINED_EXECUTION_TIME",
                secs8(self.combined_execution_time),
            ),
            (
                "TOTAL_AVG_EXECUTION_TIME",
                secs8(self.total_avg_execution_time),
            ),
            ("FASTEST_NODE_EXECUTION", pair(&self.fastest_node_execution)),
            ("SLOWEST_NODE_EXECUTION", pair(&self.slowest_node_execution)),
            ("FASTEST_NODE_ROUNDTRIP", pair(&self.fastest_node_roundtrip)),
            ("SLOWEST_NODE_ROUNDTRIP", pair(&self.slowest_node_roundtrip)),
            ("TOTAL_SUCCESSES", self.total_successes.to_string()),
            ("TOTAL_SKIPPED", self.total_skipped.to_string()),
            ("TOTAL_FAILURES", self.total_failures.to_string()),
            ("TOTAL_NODE_COUNT", self.total_node_count.to_string()),
        ])
    }
}
