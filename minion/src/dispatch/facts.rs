//! Gathering facts: every program and static document in `facts/`, combined into one document.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use channel3::{Body, Event, Message};
use runner::{EventSink, Outcome, Program, RunError, Runner};
use serde_json::{json, Map, Value};

use super::error::FactsError;
use super::join::join_all;
use super::output::{last_line, snippet, tail_suffix};
use crate::builtin;

/// A fact left out of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactProblem {
    /// The fact's file name.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// The outcome of gathering facts.
#[derive(Debug, Clone, Default)]
pub struct FactReport {
    /// The fact document: each successful fact's output under its file name.
    pub document: Map<String, Value>,
    /// Facts that failed (exit != 0, bad JSON, timeout, a built-in link to a missing binary):
    /// left out of the document.
    pub failures: Vec<FactProblem>,
    /// Entries of facts/ that were not run (hidden, directories, not executable).
    pub skipped: Vec<FactProblem>,
}

impl FactReport {
    /// Whether every fact succeeded.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Where a fact comes from.
enum FactSource {
    /// An executable in `facts/`.
    Exec(PathBuf),
    /// A built-in fact whose `facts/` entry is the running executable (see `crate::inproc`).
    Builtin(builtin::facts::Gather),
    /// A JSON document `facts/NAME.json` that is not executable: a fact that does not change
    /// (a role, a datacenter), as Salt's static grains.
    Static(PathBuf),
    /// A built-in's link to an ingot binary that is gone: a failure, never a silent skip, so
    /// that nothing acts on a fact document missing it (see `crate::layout::dangling_builtin`).
    BrokenLink(String),
}

impl FactSource {
    fn describe(&self) -> String {
        match self {
            FactSource::Exec(p) | FactSource::Static(p) => p.display().to_string(),
            FactSource::Builtin(_) | FactSource::BrokenLink(_) => "the built-in".into(),
        }
    }
}

/// The document of a static fact, or why it is not one.
fn read_static_fact(path: &Path) -> Result<Value, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{} is not a JSON document ({e}); fix it, or rename it (without .json) to leave it out",
            path.display()
        )
    })
}

/// A fact executable's document, or why it is left out.
fn fact_output(result: Result<Outcome, RunError>, timeout: Duration) -> Result<Value, String> {
    match result {
        Err(e) => Err(e.to_string()),
        Ok(o) if o.timed_out => Err(format!("timed out after {timeout:?} and was killed")),
        Ok(o) if !o.success() => Err(format!(
            "exited with code {}{}",
            o.code(),
            tail_suffix(&last_line(&o.stderr_text()))
        )),
        Ok(o) => serde_json::from_slice::<Value>(&o.stdout)
            .map_err(|e| format!("printed invalid JSON ({e}): {}", snippet(&o.stdout))),
    }
}

/// Runs every executable in `dir` (a minion's `facts/`) in parallel through `runner` and
/// combines their output: see [`Minion::facts`](super::Minion::facts).
pub(super) async fn gather(
    dir: &Path,
    runner: &Runner,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<FactReport, FactsError> {
    let entries = std::fs::read_dir(dir).map_err(|source| FactsError::Dir {
        path: dir.to_owned(),
        source,
    })?;
    let mut report = FactReport::default();
    let mut sources: Vec<(String, FactSource)> = Vec::new();
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let meta = std::fs::metadata(&path);
        let executable = meta
            .as_ref()
            .is_ok_and(|m| !m.is_dir() && m.permissions().mode() & 0o111 != 0);
        let source = if file.starts_with('.') {
            Err("hidden file")
        } else {
            match &meta {
                Err(_) => match crate::layout::dangling_builtin(&path) {
                    Some(target) => Ok((
                        file.clone(),
                        FactSource::BrokenLink(crate::layout::broken_link_reason(&path, &target)),
                    )),
                    None => Err("broken symlink"),
                },
                Ok(m) if m.is_dir() => Err("directory"),
                Ok(_) if executable => Ok((
                    file.clone(),
                    match crate::inproc::fact_here(&file, &path) {
                        Some(gather) => FactSource::Builtin(gather),
                        None => FactSource::Exec(path.clone()),
                    },
                )),
                Ok(_) => match file.strip_suffix(".json") {
                    Some(stem) if !stem.is_empty() => {
                        Ok((stem.to_owned(), FactSource::Static(path.clone())))
                    }
                    _ => Err(
                        "not executable (chmod +x to run it, or name a JSON document NAME.json)",
                    ),
                },
            }
        };
        match source {
            Ok(s) => sources.push(s),
            Err(reason) => {
                tracing::warn!(fact = %file, "skipping {}: {reason}", path.display());
                report.skipped.push(FactProblem {
                    name: file,
                    reason: reason.into(),
                });
            }
        }
    }
    // A program before a static document of the same name, whatever the directory order.
    sources.sort_by_key(|(name, source)| (name.clone(), matches!(source, FactSource::Static(_))));
    let runs = sources.iter().map(|(name, source)| async move {
        match source {
            FactSource::Static(path) => read_static_fact(path),
            FactSource::BrokenLink(reason) => Err(reason.clone()),
            FactSource::Builtin(gather) => crate::inproc::gather_fact(name, *gather, timeout, sink)
                .await
                .map_err(|e| e.to_string()),
            FactSource::Exec(path) => {
                let program = Program::new(path).name(name).timeout(timeout);
                fact_output(runner.run(&program, sink).await, timeout)
            }
        }
    });
    let outcomes = join_all(runs.collect()).await;
    let mut previous: Option<&str> = None;
    for ((name, source), result) in sources.iter().zip(outcomes) {
        let reason = match result {
            // A static `NAME.json` next to an executable `NAME`: neither may silently win.
            _ if previous == Some(name.as_str()) => format!(
                "{} defines fact {name:?} a second time; remove one of facts/{name} and facts/{name}.json",
                source.describe()
            ),
            Ok(v) => {
                report.document.insert(name.clone(), v);
                previous = Some(name);
                continue;
            }
            Err(reason) => reason,
        };
        previous = Some(name);
        sink.emit(Event::now(Message::new(
            Some(name.clone()),
            &Body::Other {
                key: "fact_failed".into(),
                data: json!({"reason": reason}),
            },
        )));
        report.failures.push(FactProblem {
            name: name.clone(),
            reason,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::Minion;
    use std::sync::Mutex;

    fn gather(dir: &Path) -> (FactReport, Vec<Event>) {
        let events = Mutex::new(Vec::new());
        let sink = |e: Event| events.lock().unwrap().push(e);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let report = rt.block_on(Minion::new(dir).facts(&sink)).unwrap();
        (report, events.into_inner().unwrap())
    }

    #[test]
    fn static_and_in_process_facts_join_the_document() {
        let tmp = tempfile::tempdir().unwrap();
        let facts = tmp.path().join("facts");
        std::fs::create_dir_all(&facts).unwrap();
        // A built-in linked to the running executable is gathered here, not exec'd.
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), facts.join("os")).unwrap();
        std::fs::write(facts.join("role.json"), r#"{"role": "web"}"#).unwrap();
        std::fs::write(facts.join("bad.json"), "{not json").unwrap();
        std::fs::write(facts.join("notes.txt"), "not a fact").unwrap();
        let me = facts.join("me");
        std::fs::write(&me, "#!/bin/sh\necho '\"exec\"'\n").unwrap();
        std::fs::set_permissions(&me, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(facts.join("me.json"), r#""static""#).unwrap();

        let (report, events) = gather(tmp.path());
        let doc = &report.document;
        assert_eq!(doc["role"], json!({"role": "web"}));
        assert!(doc["os"]["kernel"]["release"].is_string(), "{doc:?}");
        assert!(!doc.contains_key("bad") && !doc.contains_key("notes.txt"));
        let why = |name: &str| {
            report
                .failures
                .iter()
                .find(|f| f.name == name)
                .map(|f| f.reason.clone())
                .unwrap_or_default()
        };
        assert!(
            why("bad").contains("bad.json is not a JSON document"),
            "{report:?}"
        );
        // `me` twice: the first (the executable) stands, the second is reported.
        assert_eq!(doc["me"], json!("exec"));
        assert!(
            why("me").contains("defines fact \"me\" a second time"),
            "{report:?}"
        );
        assert!(report
            .skipped
            .iter()
            .any(|s| s.name == "notes.txt" && s.reason.contains("NAME.json")));

        let spawned: Vec<String> = events
            .iter()
            .filter(|e| e.message.key == "spawn")
            .map(|e| e.message.data.to_string())
            .collect();
        assert!(
            spawned
                .iter()
                .any(|s| s.contains("os (built-in, in_process)")),
            "{spawned:?}"
        );
        assert_eq!(spawned.len(), 2, "os in process, me exec'd: {spawned:?}");
    }
}
