//! Running the master's actors (`actors/prescribe`, `actors/choreograph`) through the runner.
//!
//! A fleet run may prescribe for many minions with one process: an `actors/prescribe` whose
//! `describe` prints `{"batch": true}` reads a JSON array of fact documents and prints an array
//! of prescriptions in the same order (an element may be `{"error": ...}`), as batch resources
//! do (SPEC §4). Requests are grouped as a database groups commits: while one batch runs, the
//! minions whose facts arrive wait, and the next batch takes all of them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channel3::{Body, Event, Line, Message};
use runner::{EventSink, Program};
use serde_json::Value;
use tokio::sync::oneshot;

/// Where the operator finds what an actor was given on stdin.
fn input_hint(actor: &str) -> &'static str {
    if actor.ends_with("prescribe") {
        "`ingot facts --minion DIR` prints the facts it was given"
    } else {
        "the run's history, on the `history:` line below, holds the stdin it was given"
    }
}

/// Why an actor failed.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// It could not be started.
    #[error("cannot run {actor}: {source}")]
    Run {
        /// The actor, e.g. `actors/prescribe`.
        actor: String,
        /// Why.
        #[source]
        source: runner::RunError,
    },
    /// It exited non-zero.
    #[error("{actor} failed with exit code {code}{}\n  fix: run it by hand with the same input to see why ({})", stderr_block(.stderr), input_hint(.actor))]
    Failed {
        /// The actor.
        actor: String,
        /// Its exit code.
        code: i32,
        /// Its stderr tail.
        stderr: String,
    },
    /// It printed something that is not JSON.
    #[error("{actor} printed invalid JSON: {source}\n  fix: print exactly one JSON document on stdout; send diagnostics to stderr")]
    BadJson {
        /// The actor.
        actor: String,
        /// The parse error (with a snippet of the output).
        #[source]
        source: runner::RunError,
    },
    /// It printed the wrong shape of document.
    #[error(transparent)]
    Invalid(#[from] crate::routine::documents::InvalidDocument),
    /// A batch prescribe failed for the minion (the whole batch, or its element).
    #[error("{0}")]
    Batch(String),
}

fn stderr_block(stderr: &str) -> String {
    let t = stderr.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        format!("; its stderr:\n    {}", t.replace('\n', "\n    "))
    }
}

/// The master's tree (SPEC §2).
#[derive(Debug, Clone)]
pub struct MasterDir {
    /// Its root.
    pub root: PathBuf,
}

impl MasterDir {
    /// A master tree rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `actors/NAME`.
    pub fn actor(&self, name: &str) -> PathBuf {
        self.root.join("actors").join(name)
    }

    /// `logs/history.db`.
    pub fn history_db(&self) -> PathBuf {
        self.root.join("logs").join("history.db")
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs an actor with `input` on stdin and parses its stdout.
pub async fn run_actor(
    path: &Path,
    label: &str,
    input: &Value,
    timeout: Duration,
    sink: &dyn EventSink,
) -> Result<Value, ActorError> {
    // Absolute, because the actor runs in its own directory.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let path = path.as_path();
    let mut program = Program::new(path).json_stdin(input).timeout(timeout);
    program.stdout_events = false;
    if let Some(dir) = path.parent() {
        program.cwd = Some(dir.to_path_buf());
    }
    let out = runner::run(&program, sink)
        .await
        .map_err(|source| ActorError::Run {
            actor: label.into(),
            source,
        })?;
    if !out.success() {
        return Err(ActorError::Failed {
            actor: label.into(),
            code: out.code(),
            stderr: out.stderr_text(),
        });
    }
    out.json().map_err(|source| ActorError::BadJson {
        actor: label.into(),
        source,
    })
}

/// The master's actors, as one run uses them.
pub struct Actors {
    dir: MasterDir,
    /// Set for runs over many minions: a batch `actors/prescribe` is then run once for many.
    batch: Option<Arc<PrescribeBatch>>,
}

impl Actors {
    /// The actors of `dir`, run once per minion.
    pub fn new(dir: MasterDir) -> Self {
        Self { dir, batch: None }
    }

    /// The actors of `dir` for a run over many minions: an `actors/prescribe` that declares
    /// `"batch": true` in its `describe` prescribes for all of them in as few runs as it can.
    pub fn for_fleet(dir: MasterDir) -> Self {
        Self {
            dir,
            batch: Some(Arc::new(PrescribeBatch::default())),
        }
    }

    /// The master's tree.
    pub fn dir(&self) -> &MasterDir {
        &self.dir
    }

    /// `actors/prescribe`: fact document in, validated prescription out.
    pub async fn prescribe(
        &self,
        facts: &Value,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Vec<Value>, ActorError> {
        let path = self.dir.actor("prescribe");
        if !is_executable(&path) {
            return Err(ActorError::Failed {
                actor: "actors/prescribe".into(),
                code: 127,
                stderr: format!("{} is missing or not executable (chmod +x it, or create it: it reads facts on stdin and prints a JSON array of resource states)", path.display()),
            });
        }
        let doc = match &self.batch {
            Some(b) if b.declared(&path, timeout).await => {
                b.clone().prescribe(&path, facts, timeout, sink).await?
            }
            _ => run_actor(&path, "actors/prescribe", facts, timeout, sink).await?,
        };
        crate::routine::documents::check_prescription(&doc, "actors/prescribe")?;
        Ok(doc.as_array().cloned().unwrap_or_default())
    }

    /// `actors/choreograph` when present, else the built-in default.
    pub async fn choreograph(
        &self,
        facts: &Value,
        prescription: &[Value],
        observations: &[Value],
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Vec<crate::routine::documents::Step>, ActorError> {
        let path = self.dir.actor("choreograph");
        if !is_executable(&path) {
            return Ok(crate::routine::choreograph::default_choreograph(
                prescription,
                observations,
            ));
        }
        let input = serde_json::json!({"facts": facts, "prescription": prescription, "observations": observations});
        let doc = run_actor(&path, "actors/choreograph", &input, timeout, sink).await?;
        crate::routine::documents::check_steps(&doc, "actors/choreograph")?;
        Ok(serde_json::from_value(doc).expect("a schema-checked step list deserializes"))
    }
}

/// What identifies one version of an actor's file: a changed actor is asked again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })
    }
}

/// A batch's result for one minion: its prescription document and the batch process's events.
type BatchAnswer = Result<(Value, Arc<Vec<Event>>), String>;

/// One minion waiting for a batch.
struct Waiter {
    facts: Value,
    done: oneshot::Sender<BatchAnswer>,
}

#[derive(Default)]
struct BatchQueue {
    waiting: Vec<Waiter>,
    running: bool,
}

/// Group-commit batching of a batch `actors/prescribe` (see the module documentation).
#[derive(Default)]
struct PrescribeBatch {
    queue: Mutex<BatchQueue>,
}

/// Whether each actor's `describe` declares `"batch": true`, for the version of the file
/// asked: kept for the life of the process, so a master asks once, not once per run.
type Declared = tokio::sync::Mutex<std::collections::HashMap<PathBuf, (FileStamp, bool)>>;

fn declared_actors() -> &'static Declared {
    static DECLARED: std::sync::OnceLock<Declared> = std::sync::OnceLock::new();
    DECLARED.get_or_init(Default::default)
}

/// The most fact documents one batch run is given, to bound its input.
const MAX_BATCH: usize = 2048;

impl PrescribeBatch {
    /// Whether `path` declares batching; asked once per version of the file. An actor that
    /// knows nothing of `describe` just prints something else (or fails) and runs per minion.
    async fn declared(&self, path: &Path, timeout: Duration) -> bool {
        let Some(stamp) = FileStamp::of(path) else {
            return false;
        };
        // Absolute, because the actor runs in its own directory.
        let path = &std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut known = declared_actors().lock().await;
        if let Some((s, batch)) = known.get(path) {
            if *s == stamp {
                return *batch;
            }
        }
        let mut program = Program::new(path)
            .arg("describe")
            .timeout(timeout.min(Duration::from_secs(10)));
        program.stdout_events = false;
        if let Some(dir) = path.parent() {
            program.cwd = Some(dir.to_path_buf());
        }
        let discard = |_: Event| {};
        let batch = match runner::run(&program, &discard).await {
            Ok(out) if out.success() => out
                .json()
                .ok()
                .and_then(|d: Value| d.get("batch").and_then(Value::as_bool))
                .unwrap_or(false),
            Ok(out) => {
                tracing::debug!(code = out.code(), "actors/prescribe describe failed");
                false
            }
            Err(e) => {
                tracing::debug!("actors/prescribe describe did not run: {e}");
                false
            }
        };
        tracing::debug!(actor = %path.display(), batch, "asked actors/prescribe describe");
        known.insert(path.clone(), (stamp, batch));
        batch
    }

    async fn prescribe(
        self: Arc<Self>,
        path: &Path,
        facts: &Value,
        timeout: Duration,
        sink: &dyn EventSink,
    ) -> Result<Value, ActorError> {
        let (done, answer) = oneshot::channel();
        let lead = {
            let mut q = self.queue.lock().expect("batch queue lock");
            q.waiting.push(Waiter {
                facts: facts.clone(),
                done,
            });
            !std::mem::replace(&mut q.running, true)
        };
        if lead {
            // A task of its own, so a cancelled run cannot strand the minions waiting on it.
            let me = self.clone();
            let path = path.to_path_buf();
            tokio::spawn(async move { me.drain(&path, timeout).await });
        }
        let (doc, events) = answer
            .await
            .map_err(|_| ActorError::Batch("actors/prescribe: the batch was abandoned".into()))?
            .map_err(ActorError::Batch)?;
        // The batch's events, as if this minion's prescribe had run alone.
        for e in events.iter() {
            match &e.message.key[..] {
                "stdin" => sink.emit(Event {
                    ts: e.ts,
                    message: Message::new(
                        e.message.name.clone(),
                        &Body::Stdin(Line::from_bytes(facts.to_string().as_bytes())),
                    ),
                }),
                _ => sink.emit(e.clone()),
            }
        }
        Ok(doc)
    }

    /// Runs batches until nobody waits.
    async fn drain(&self, path: &Path, timeout: Duration) {
        loop {
            let batch: Vec<Waiter> = {
                let mut q = self.queue.lock().expect("batch queue lock");
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            let (facts, senders): (Vec<Value>, Vec<_>) =
                batch.into_iter().map(|w| (w.facts, w.done)).unzip();
            let n = facts.len();
            tracing::debug!(minions = n, "one actors/prescribe run for a batch");
            let events = Mutex::new(Vec::new());
            let collect = |e: Event| events.lock().expect("events lock").push(e);
            let label = "actors/prescribe";
            let answers: Vec<BatchAnswer> = match run_actor(
                path,
                label,
                &Value::Array(facts),
                timeout,
                &collect,
            )
            .await
            {
                Err(e) => vec![Err(e.to_string()); n],
                Ok(Value::Array(docs)) if docs.len() == n => {
                    let events = Arc::new(events.into_inner().expect("events lock"));
                    docs.into_iter()
                        .map(|d| match d.get("error") {
                            Some(why) if d.is_object() => Err(format!(
                                "{label} (batch) gave an error for this minion: {}",
                                why.as_str().map(str::to_owned).unwrap_or(why.to_string())
                            )),
                            _ => Ok((d, events.clone())),
                        })
                        .collect()
                }
                Ok(other) => {
                    let got = match &other {
                        Value::Array(a) => format!("{} results", a.len()),
                        _ => "something that is not an array".into(),
                    };
                    let why = format!("{label} declares \"batch\": true but printed {got} for {n} fact documents\n  fix: print one prescription (or {{\"error\": ...}}) per fact document, in order");
                    vec![Err(why); n]
                }
            };
            for (tx, a) in senders.into_iter().zip(answers) {
                let _ = tx.send(a);
            }
        }
    }
}
