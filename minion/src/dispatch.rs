//! The one way into a minion: facts and resource actions, run through the runner.
//!
//! The shell (`ingot facts`, `ingot resource`), the master's in-process minion and the network
//! all call [`Minion::facts`] and [`Minion::resource`].

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use channel3::{Body, Event, Message};

use crate::builtin;
use jsonschema::Validator;
use runner::{EventSink, Outcome, Program, RunError, Runner};
use serde_json::{json, Map, Value};

/// Why a resource action did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The kind is not a plain file name.
    #[error(
        "invalid resource kind {0:?}: expected a plain name such as \"file\" (no '/', not hidden)"
    )]
    BadKind(String),
    /// There is no executable for the kind.
    #[error("no resource {kind:?}: {path} does not exist (run `ingot init minion DIR` for the built-ins, or drop an executable there)")]
    NotFound {
        /// The kind.
        kind: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The state was refused before anything ran (or by the resource itself, exit 2).
    #[error("invalid input for {kind} at {pointer}: {message}")]
    Invalid {
        /// The kind.
        kind: String,
        /// JSON pointer to the field (empty: the whole document).
        pointer: String,
        /// What is wrong and what is expected.
        message: String,
    },
    /// The resource's `describe` does not list the action.
    #[error("unknown action {action:?} for {kind}; known actions: {known}")]
    UnknownAction {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// The actions `describe` lists.
        known: String,
    },
    /// `describe` was asked for but the resource has none that works.
    #[error("{kind} has no usable describe: {reason}")]
    NoDescribe {
        /// The kind.
        kind: String,
        /// Why.
        reason: String,
    },
    /// The resource exited non-zero.
    #[error("{kind} {action} failed with exit code {code}{}", tail_suffix(.stderr))]
    Failed {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// Its exit code (2: it refused the input; 128+N: killed by signal N).
        code: i32,
        /// The end of its stderr.
        stderr: String,
    },
    /// The resource ran past the timeout and was killed.
    #[error("{kind} {action} timed out after {after:?} and was killed (raise the timeout or make it faster)")]
    Timeout {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// The timeout.
        after: Duration,
    },
    /// The resource succeeded but printed something that is not a valid result.
    #[error("{kind} {action} printed an invalid result: {reason}")]
    BadOutput {
        /// The kind.
        kind: String,
        /// The action.
        action: String,
        /// What is wrong, with the start of the output.
        reason: String,
    },
    /// The runner could not run it at all.
    #[error(transparent)]
    Run(#[from] RunError),
}

fn tail_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        let lines: Vec<&str> = t.lines().collect();
        let start = lines.len().saturating_sub(5);
        format!(": {}", lines[start..].join("\n"))
    }
}

impl DispatchError {
    /// The exit code `ingot resource` uses for this error: the resource's own code when it
    /// ran, 2 for input refused before running, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Failed { code, .. } => *code,
            Self::Invalid { .. } | Self::UnknownAction { .. } | Self::BadKind(_) => 2,
            Self::NotFound { .. } => 127,
            _ => 1,
        }
    }

    /// This error as a batch element, `{"error": ...}`.
    pub fn to_element(&self) -> Value {
        json!({"error": self.to_string()})
    }
}

/// Why facts could not be gathered at all (single failing facts are in [`FactReport`]).
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// facts/ cannot be listed.
    #[error(
        "cannot list {path}: {source} (run `ingot init minion DIR` first, or pass --minion DIR)"
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

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
    /// Facts that failed (exit != 0, bad JSON, timeout): left out of the document.
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
}

impl FactSource {
    fn describe(&self) -> String {
        match self {
            FactSource::Exec(p) | FactSource::Static(p) => p.display().to_string(),
            FactSource::Builtin(_) => "the built-in".into(),
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

/// What ingot knows about a resource kind from its `describe`.
pub struct Description {
    /// The kind.
    pub kind: String,
    /// The `describe` document, or `None` when it is missing or failed.
    pub doc: Option<Value>,
    /// Why there is no document.
    pub problem: Option<String>,
    validator: Option<Arc<Validator>>,
    /// The built-in serving this kind when `resources/KIND` is the running executable itself
    /// (see `crate::inproc`); decided with the describe and forgotten with it.
    builtin: Option<&'static dyn builtin::Resource>,
}

impl Description {
    /// The built-in this process serves the kind with instead of an exec, if any.
    pub fn builtin(&self) -> Option<&'static dyn builtin::Resource> {
        self.builtin
    }
}

impl std::fmt::Debug for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Description")
            .field("kind", &self.kind)
            .field("doc", &self.doc)
            .field("problem", &self.problem)
            .finish_non_exhaustive()
    }
}

impl Description {
    /// Whether the resource accepts a JSON array of states in one process.
    pub fn batch(&self) -> bool {
        self.doc
            .as_ref()
            .and_then(|d| d.get("batch"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The actions `describe` lists (`None` when unknown).
    pub fn actions(&self) -> Option<Vec<String>> {
        let doc = self.doc.as_ref()?;
        let mut names: Vec<String> = match doc.get("actions") {
            Some(Value::Object(m)) => m.keys().cloned().collect(),
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(Into::into).collect(),
            _ => return None,
        };
        for implicit in ["inspect", "conform", "describe"] {
            if !names.iter().any(|n| n == implicit) {
                names.push(implicit.into());
            }
        }
        Some(names)
    }

    /// The identity fields (empty when unknown).
    pub fn identity(&self) -> Vec<String> {
        self.doc
            .as_ref()
            .and_then(|d| d.get("identity"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(Into::into).collect())
            .unwrap_or_default()
    }

    /// Checks one state (an object that already carries `kind`) against the schema, or only
    /// its shape when there is no schema.
    pub fn check(&self, state: &Value) -> Result<(), DispatchError> {
        let invalid = |pointer: &str, message: String| DispatchError::Invalid {
            kind: self.kind.clone(),
            pointer: pointer.into(),
            message,
        };
        let Some(obj) = state.as_object() else {
            return Err(invalid(
                "",
                "expected a JSON object (a resource state)".into(),
            ));
        };
        match obj.get("kind") {
            Some(Value::String(k)) if *k == self.kind => {}
            Some(other) => {
                return Err(invalid(
                    "/kind",
                    format!("is {other}, but this is the {:?} resource", self.kind),
                ))
            }
            None => return Err(invalid("/kind", "missing required field \"kind\"".into())),
        }
        if let (Some(v), Some(doc)) = (&self.validator, &self.doc) {
            if let Some(e) = v.iter_errors(state).next() {
                let schema = doc.get("schema").cloned().unwrap_or(Value::Null);
                return Err(
                    match crate::builtin::protocol::explain(&e, &schema, &self.kind) {
                        crate::builtin::ResourceError::Input { pointer, message } => {
                            invalid(&pointer, message)
                        }
                        other => invalid(e.instance_path().as_str(), other.to_string()),
                    },
                );
            }
        }
        Ok(())
    }
}

/// A minion rooted at a directory laid out by `ingot init minion`.
pub struct Minion {
    dir: PathBuf,
    runner: Runner,
    fact_timeout: Duration,
    resource_timeout: Duration,
    describes: Mutex<HashMap<String, Arc<Description>>>,
}

impl Minion {
    /// Default time a single fact may take.
    pub const FACT_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default time a resource action may take (Directord's job default).
    pub const RESOURCE_TIMEOUT: Duration = Duration::from_secs(600);

    /// A minion at `dir`, running at most 16 processes at once.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            runner: Runner::new(16),
            fact_timeout: Self::FACT_TIMEOUT,
            resource_timeout: Self::RESOURCE_TIMEOUT,
            describes: Mutex::new(HashMap::new()),
        }
    }

    /// Uses this runner (and its concurrency bound).
    pub fn with_runner(mut self, runner: Runner) -> Self {
        self.runner = runner;
        self
    }

    /// Sets the per-fact timeout.
    pub fn with_fact_timeout(mut self, t: Duration) -> Self {
        self.fact_timeout = t;
        self
    }

    /// Sets the per-action timeout.
    pub fn with_resource_timeout(mut self, t: Duration) -> Self {
        self.resource_timeout = t;
        self
    }

    /// The minion directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs every executable in `facts/` in parallel and combines their output (SPEC §4);
    /// a non-executable `NAME.json` is the static fact `NAME`, and a built-in fact linked to the
    /// running executable is gathered in this process. A fact that fails is left out and listed
    /// in [`FactReport::failures`] (also sent to the sink as a `fact_failed` event); hidden
    /// files, directories and other non-executables are skipped with a warning.
    pub async fn facts(&self, sink: &dyn EventSink) -> Result<FactReport, FactsError> {
        let dir = self.dir.join("facts");
        let entries = std::fs::read_dir(&dir).map_err(|source| FactsError::Dir {
            path: dir.clone(),
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
                    Err(_) => Err("broken symlink"),
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
                        _ => Err("not executable (chmod +x to run it, or name a JSON document NAME.json)"),
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
        sources
            .sort_by_key(|(name, source)| (name.clone(), matches!(source, FactSource::Static(_))));
        let runs = sources.iter().map(|(name, source)| async move {
            match source {
                FactSource::Static(path) => read_static_fact(path),
                FactSource::Builtin(gather) => {
                    crate::inproc::gather_fact(name, *gather, self.fact_timeout, sink).await
                }
                FactSource::Exec(path) => {
                    let program = Program::new(path).name(name).timeout(self.fact_timeout);
                    fact_output(self.runner.run(&program, sink).await, self.fact_timeout)
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

    /// The description of a resource kind, from `resources/KIND describe`, cached per kind.
    /// Where `describe` is missing or fails, the description has no document and states are
    /// only checked to be JSON objects with `kind` (logged once per kind).
    pub async fn describe(
        &self,
        kind: &str,
        sink: &dyn EventSink,
    ) -> Result<Arc<Description>, DispatchError> {
        let path = self.resource_path(kind)?;
        if let Some(d) = self.lock_describes().get(kind) {
            return Ok(d.clone());
        }
        let here = crate::inproc::builtin_here(kind, &path);
        let run = match here {
            Some(r) => Ok(builtin::protocol::describe(r)),
            None => {
                let program = Program::new(&path)
                    .name(kind)
                    .arg("describe")
                    .timeout(Duration::from_secs(30));
                Err(self.runner.run(&program, sink).await)
            }
        };
        let doc = match run {
            Ok(doc) => Ok(doc),
            Err(Err(e)) => Err(e.to_string()),
            Err(Ok(o)) if !o.success() => Err(format!(
                "describe exited with code {}{}",
                o.code(),
                tail_suffix(&last_line(&o.stderr_text()))
            )),
            Err(Ok(o)) => serde_json::from_slice::<Value>(&o.stdout)
                .map_err(|e| format!("describe printed invalid JSON ({e})")),
        };
        let desc = match doc.and_then(|d| compile(&d).map(|v| (d, v))) {
            Ok((doc, validator)) => Description {
                kind: kind.into(),
                doc: Some(doc),
                problem: None,
                validator,
                builtin: here,
            },
            Err(reason) => {
                tracing::warn!(
                    kind,
                    "resource {kind} has no usable describe ({reason}); only checking that its states are JSON objects with kind"
                );
                Description {
                    kind: kind.into(),
                    doc: None,
                    problem: Some(reason),
                    validator: None,
                    builtin: here,
                }
            }
        };
        let desc = Arc::new(desc);
        self.lock_describes()
            .entry(kind.into())
            .or_insert_with(|| desc.clone());
        Ok(desc)
    }

    fn lock_describes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Description>>> {
        self.describes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the cached `describe` of `kind` (its executable was replaced).
    pub fn forget(&self, kind: &str) {
        self.lock_describes().remove(kind);
    }

    /// The runner every program of this minion goes through.
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// `resources/KIND`, when the kind is a plain name and the entry exists.
    pub fn resource_path(&self, kind: &str) -> Result<PathBuf, DispatchError> {
        if kind.is_empty() || kind.contains('/') || kind.starts_with('.') || kind.contains('\0') {
            return Err(DispatchError::BadKind(kind.into()));
        }
        let path = self.dir.join("resources").join(kind);
        if std::fs::metadata(&path).is_err() {
            return Err(DispatchError::NotFound {
                kind: kind.into(),
                path,
            });
        }
        Ok(path)
    }

    /// Runs `resources/KIND ACTION` with `input` on stdin and returns its parsed output.
    ///
    /// `input` is one state or an array of states. States without `kind` get it; a state with
    /// another `kind` is refused. Each state is checked against the resource's schema (from
    /// `describe`) before anything runs. An array goes to one process when the resource
    /// supports batches, else to one process per state (in parallel); either way the result is
    /// an array in the same order where a failed element is `{"error": ...}`.
    /// `describe` returns the (cached) describe document.
    pub async fn resource(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        sink: &dyn EventSink,
    ) -> Result<Value, DispatchError> {
        self.resource_with_timeout(kind, action, input, self.resource_timeout, sink)
            .await
    }

    /// [`Minion::resource`] with a timeout for this call only (a Directord job's `--timeout`):
    /// past it the resource's whole process group is killed.
    pub async fn resource_with_timeout(
        &self,
        kind: &str,
        action: &str,
        input: &Value,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Value, DispatchError> {
        let path = self.resource_path(kind)?;
        let desc = self.describe(kind, sink).await?;
        if action == "describe" {
            return desc.doc.clone().ok_or_else(|| DispatchError::NoDescribe {
                kind: kind.into(),
                reason: desc.problem.clone().unwrap_or_default(),
            });
        }
        if let Some(actions) = desc.actions() {
            if !actions.iter().any(|a| a == action) {
                return Err(DispatchError::UnknownAction {
                    kind: kind.into(),
                    action: action.into(),
                    known: actions.join(", "),
                });
            }
        }
        // The running binary itself under a built-in's name: no exec (see `inproc`).
        let here = desc.builtin().filter(|r| r.in_process());
        let with_kind = |v: &Value| -> Value {
            let mut v = v.clone();
            if let Some(obj) = v.as_object_mut() {
                obj.entry("kind")
                    .or_insert_with(|| Value::String(kind.into()));
            }
            v
        };
        match input {
            Value::Array(items) => {
                let states: Vec<Result<Value, DispatchError>> = items
                    .iter()
                    .map(|s| {
                        let s = with_kind(s);
                        desc.check(&s).map(|_| s)
                    })
                    .collect();
                let valid: Vec<Value> = states
                    .iter()
                    .filter_map(|s| s.as_ref().ok().cloned())
                    .collect();
                let mut results: Vec<Value> = if valid.is_empty() {
                    Vec::new()
                } else if let Some(r) = here {
                    match crate::inproc::perform(r, action, Value::Array(valid), timeout, sink)
                        .await?
                    {
                        Value::Array(items) => items,
                        other => vec![other],
                    }
                } else if desc.batch() {
                    self.run_batch(&path, kind, action, valid, timeout, sink)
                        .await?
                } else {
                    let runs = valid
                        .iter()
                        .map(|s| self.run_one(&path, kind, action, s, timeout, sink))
                        .collect();
                    join_all(runs)
                        .await
                        .into_iter()
                        .map(|r| r.unwrap_or_else(|e| e.to_element()))
                        .collect()
                };
                results.reverse();
                Ok(Value::Array(
                    states
                        .into_iter()
                        .map(|s| match s {
                            Ok(_) => results.pop().unwrap_or(Value::Null),
                            Err(e) => e.to_element(),
                        })
                        .collect(),
                ))
            }
            other => {
                let state = with_kind(other);
                desc.check(&state)?;
                if let Some(r) = here {
                    return crate::inproc::perform(r, action, state, timeout, sink).await;
                }
                self.run_one(&path, kind, action, &state, timeout, sink)
                    .await
            }
        }
    }

    fn program(
        &self,
        path: &Path,
        kind: &str,
        action: &str,
        input: &Value,
        timeout: Duration,
    ) -> Program {
        Program::new(path)
            .name(kind)
            .arg(action)
            .json_stdin(input)
            .timeout(timeout)
    }

    async fn run_one(
        &self,
        path: &Path,
        kind: &str,
        action: &str,
        state: &Value,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Value, DispatchError> {
        let o = self
            .runner
            .run(&self.program(path, kind, action, state, timeout), sink)
            .await?;
        check_exit(&o, kind, action, timeout)?;
        let v = parse_output(&o, kind, action)?;
        if matches!(action, "inspect" | "conform") && !v.is_object() {
            return Err(DispatchError::BadOutput {
                kind: kind.into(),
                action: action.into(),
                reason: format!(
                    "expected a JSON object (the observed state), got {}",
                    snippet(&o.stdout)
                ),
            });
        }
        Ok(v)
    }

    async fn run_batch(
        &self,
        path: &Path,
        kind: &str,
        action: &str,
        states: Vec<Value>,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Vec<Value>, DispatchError> {
        let n = states.len();
        let o = self
            .runner
            .run(
                &self.program(path, kind, action, &Value::Array(states), timeout),
                sink,
            )
            .await?;
        // A batch with failed elements exits 1 but still prints every result.
        let parsed = serde_json::from_slice::<Value>(&o.stdout).ok();
        match parsed {
            Some(Value::Array(items)) if items.len() == n && !o.timed_out => Ok(items),
            _ => {
                check_exit(&o, kind, action, timeout)?;
                Err(DispatchError::BadOutput {
                    kind: kind.into(),
                    action: action.into(),
                    reason: format!(
                        "expected a JSON array of {n} results for a batch of {n} states, got {}",
                        snippet(&o.stdout)
                    ),
                })
            }
        }
    }
}

fn check_exit(
    o: &Outcome,
    kind: &str,
    action: &str,
    timeout: Duration,
) -> Result<(), DispatchError> {
    if o.timed_out {
        return Err(DispatchError::Timeout {
            kind: kind.into(),
            action: action.into(),
            after: timeout,
        });
    }
    if !o.success() {
        return Err(DispatchError::Failed {
            kind: kind.into(),
            action: action.into(),
            code: o.code(),
            stderr: o.stderr_text(),
        });
    }
    Ok(())
}

fn parse_output(o: &Outcome, kind: &str, action: &str) -> Result<Value, DispatchError> {
    if o.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&o.stdout).map_err(|e| DispatchError::BadOutput {
        kind: kind.into(),
        action: action.into(),
        reason: format!("not JSON ({e}): {}", snippet(&o.stdout)),
    })
}

/// Checks a describe document's shape and compiles its schema.
fn compile(doc: &Value) -> Result<Option<Arc<Validator>>, String> {
    if !doc.is_object() {
        return Err("describe did not print a JSON object".into());
    }
    match doc.get("schema") {
        None | Some(Value::Null) => Ok(None),
        Some(schema) => compiled_schema(schema)
            .map(Some)
            .map_err(|e| format!("describe's schema is not a valid JSON Schema: {e}")),
    }
}

/// The compiled validator of `schema`, shared by every use of the same schema in this process.
/// Compiling one costs more than a trivial step (regexes, keyword tables), and an agent serving
/// a thousand identities, or a master checking a thousand prescriptions, meets the same few
/// schemas again and again.
pub fn compiled_schema(schema: &Value) -> Result<Arc<Validator>, String> {
    static SEEN: Mutex<Option<HashMap<String, Arc<Validator>>>> = Mutex::new(None);
    let key = schema.to_string();
    if let Some(v) = SEEN
        .lock()
        .expect("schema memo")
        .get_or_insert_default()
        .get(&key)
    {
        return Ok(v.clone());
    }
    let v = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
    let mut seen = SEEN.lock().expect("schema memo");
    let seen = seen.get_or_insert_default();
    // Schemas come from describe documents: a handful per kind and version. The bound only
    // matters for a resource that prints a new schema every time.
    if seen.len() >= 512 {
        seen.clear();
    }
    seen.insert(key, v.clone());
    Ok(v)
}

fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap_or_default().to_owned()
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let t = text.trim();
    if t.is_empty() {
        return "(empty output)".into();
    }
    let mut s: String = t.chars().take(120).collect();
    if t.chars().count() > 120 {
        s.push('…');
    }
    format!("{s:?}")
}

/// Polls every future until all are done; results in input order.
pub(crate) async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(results.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future completed"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use channel3::Event;

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
