//! The routine (moldspec): facts → prescribe → inspect all → choreograph → perform → inspect
//! again → choreograph again, until no steps remain or the round cap is hit.

pub mod actors;
pub mod choreograph;
pub mod documents;
pub mod link;
pub mod local;
pub mod report;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use runner::redact::redact_state;
use runner::EventSink;
use serde::Serialize;
use serde_json::Value;

use crate::routine::actors::Actors;
use crate::routine::documents::{label, Step};
use crate::routine::link::{Described, LinkError, MinionLink};

/// How to run the routine.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Plan only: facts, prescribe, inspect and choreograph; change nothing.
    pub check: bool,
    /// Rounds of perform before giving up as "did not converge".
    pub max_rounds: u32,
    /// Stop at the first failed step.
    pub fail_fast: bool,
    /// Timeout for each actor run.
    pub actor_timeout: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            check: false,
            max_rounds: 5,
            fail_fast: false,
            actor_timeout: Duration::from_secs(300),
        }
    }
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Inspected and found as desired (only used for inspect records).
    Unchanged,
    /// Performed successfully.
    Changed,
    /// Failed.
    Failed,
    /// Check mode: would be performed.
    WouldChange,
    /// Not run because an earlier step failed under `--fail-fast`.
    Skipped,
}

/// One performed (or planned) step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The round it belongs to (1-based).
    pub round: u32,
    /// The resource kind.
    pub kind: String,
    /// `conform`, a custom action, or `inspect` for a failed inspection.
    pub action: String,
    /// `kind identity...`.
    pub resource: String,
    /// The state given (redacted).
    pub state: Value,
    /// The observation before (redacted), when there was one.
    pub before: Option<Value>,
    /// The state the action printed afterwards (redacted).
    pub after: Option<Value>,
    /// What happened.
    pub outcome: StepStatus,
    /// How long it took.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
    /// The error, when it failed.
    pub error: Option<String>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// The end state of one minion's run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MinionStatus {
    /// Already as prescribed.
    Ok,
    /// Changes were made and it converged.
    Changed,
    /// Check mode: changes are pending.
    Pending,
    /// Something failed (or it did not converge).
    Failed,
    /// A signal stopped the apply before this minion finished (the steps it ran are reported).
    Interrupted,
}

/// Everything about one minion's run.
#[derive(Debug, Clone, Serialize)]
pub struct MinionReport {
    /// The minion.
    pub minion: String,
    /// How it ended.
    pub status: MinionStatus,
    /// Rounds of choreography run.
    pub rounds: u32,
    /// Resources prescribed.
    pub resources: usize,
    /// Steps performed or planned, in order.
    pub steps: Vec<StepReport>,
    /// A failure that stopped the routine (facts, prescribe, choreograph, non-convergence).
    pub error: Option<String>,
    /// Facts that failed and were left out.
    pub fact_failures: Vec<(String, String)>,
    /// Wall time.
    #[serde(serialize_with = "millis")]
    pub duration: Duration,
}

impl MinionReport {
    /// Per-outcome counts for the recap: ok (resources never touched), changed, failed, skipped,
    /// pending (check mode).
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut touched = std::collections::BTreeSet::new();
        let mut c = BTreeMap::from([
            ("ok", 0),
            ("changed", 0),
            ("failed", 0),
            ("skipped", 0),
            ("pending", 0),
        ]);
        for s in &self.steps {
            touched.insert(s.resource.clone());
            let key = match s.outcome {
                StepStatus::Changed => "changed",
                StepStatus::Failed => "failed",
                StepStatus::Skipped => "skipped",
                StepStatus::WouldChange => "pending",
                StepStatus::Unchanged => "ok",
            };
            *c.get_mut(key).expect("key exists") += 1;
        }
        *c.get_mut("ok").expect("key exists") += self.resources.saturating_sub(touched.len());
        c
    }
}

/// Watches a run: live progress, history. Implementations must be cheap; they run inline.
pub trait Observer: Sync {
    /// Where the events of a minion's processes outside steps go (facts, actors, inspects).
    fn sink(&self, minion: &str) -> Box<dyn EventSink + '_>;
    /// A step is about to be performed.
    fn begin(&self, minion: &str, step: &Step) -> Box<dyn StepWatch + '_>;
    /// A step that was not performed (planned in check mode, skipped, a failed inspection).
    fn record(&self, minion: &str, step: &StepReport);
    /// A progress line: `what` happened to `resource` (inspect, conform, ...).
    fn progress(&self, minion: &str, what: &str, resource: &str, outcome: &str);
}

/// Watches one performed step.
pub trait StepWatch: Send + Sync {
    /// Where the step's process events go.
    fn sink(&self) -> &dyn EventSink;
    /// The step's number in the run's history, when it is recorded (the network journals it
    /// with the request that performs the step).
    fn step_no(&self) -> Option<i64> {
        None
    }
    /// The step ended.
    fn finish(self: Box<Self>, report: &StepReport);
}

/// Runs the routine for one minion.
pub async fn converge<L: MinionLink>(
    actors: &Actors,
    link: &L,
    opts: &ApplyOptions,
    observer: &dyn Observer,
) -> MinionReport {
    let start = Instant::now();
    let mut report = MinionReport {
        minion: link.name().to_owned(),
        status: MinionStatus::Ok,
        rounds: 0,
        resources: 0,
        steps: Vec::new(),
        error: None,
        fact_failures: Vec::new(),
        duration: Duration::ZERO,
    };
    if let Err(e) = routine(actors, link, opts, observer, &mut report).await {
        report.error = Some(e);
        report.status = MinionStatus::Failed;
    }
    if report.steps.iter().any(|s| s.outcome == StepStatus::Failed) {
        report.status = MinionStatus::Failed;
    }
    report.duration = start.elapsed();
    report
}

async fn routine<L: MinionLink>(
    actors: &Actors,
    link: &L,
    opts: &ApplyOptions,
    observer: &dyn Observer,
    report: &mut MinionReport,
) -> Result<(), String> {
    let minion = link.name().to_owned();
    let sink = observer.sink(&minion);
    let facts = link
        .facts(&*sink)
        .await
        .map_err(|e| format!("gathering facts: {e}"))?;
    for (fact, why) in &facts.failures {
        observer.progress(&minion, "fact", fact, &format!("left out: {why}"));
    }
    report.fact_failures = facts.failures.clone();
    // A built-in fact whose link leads to a moved binary: prescribing without it could remove
    // what depends on it. Other failing facts are left out as before.
    if let Some((fact, why)) = facts
        .failures
        .iter()
        .find(|(_, why)| minion::layout::is_broken_link(why))
    {
        return Err(format!("fact {fact} cannot be gathered: {why}"));
    }
    let facts = facts.document;
    let prescription = actors
        .prescribe(&facts, opts.actor_timeout, &*sink)
        .await
        .map_err(|e| e.to_string())?;
    report.resources = prescription.len();
    let described = describe_all(link, &prescription).await?;
    check_states(&prescription, &described)?;

    for round in 1..=opts.max_rounds + 1 {
        report.rounds = round;
        let observations = inspect_all(link, &prescription, &described, observer, &*sink).await;
        let (observations, failed) = split_failures(&prescription, observations, &described, round);
        for f in failed {
            observer.progress(&minion, "inspect", &f.resource, "failed");
            push_step(report, observer, f);
        }
        let steps = actors
            .choreograph(
                &facts,
                &prescription,
                &observations,
                opts.actor_timeout,
                &*sink,
            )
            .await
            .map_err(|e| e.to_string())?;
        let failed_before = report.steps.iter().any(|s| s.outcome == StepStatus::Failed);
        if steps.is_empty() || (failed_before && opts.fail_fast) {
            if report
                .steps
                .iter()
                .any(|s| s.outcome == StepStatus::Changed)
            {
                report.status = MinionStatus::Changed;
            }
            return Ok(());
        }
        // A step reported without being performed (planned only, or skipped).
        let not_run = |step: &Step, before, outcome| {
            step_report(
                round,
                step,
                &described,
                before,
                None,
                outcome,
                Duration::ZERO,
                None,
            )
        };
        if opts.check {
            for step in &steps {
                let before = observation_for(step, &prescription, &observations, &described);
                let r = not_run(step, before, StepStatus::WouldChange);
                observer.progress(&minion, &step.action, &r.resource, "would change");
                push_step(report, observer, r);
            }
            report.status = MinionStatus::Pending;
            return Ok(());
        }
        if round > opts.max_rounds {
            let names: Vec<String> = steps
                .iter()
                .map(|s| label(&with_kind(s), identity_of(&described, &s.kind)))
                .collect();
            return Err(format!(
                "did not converge after {} rounds; still changing: {} (a resource whose conform never reaches its desired state; inspect it by hand, or raise --max-rounds)",
                opts.max_rounds,
                names.join(", ")
            ));
        }
        let ctx = Perform {
            minion: &minion,
            round,
            prescription: &prescription,
            observations: &observations,
            described: &described,
        };
        let mut stop = false;
        for group in batches(&steps, &described, opts.fail_fast) {
            if stop {
                for step in group {
                    let r = not_run(step, ctx.before(step), StepStatus::Skipped);
                    push_step(report, observer, r);
                }
                continue;
            }
            for r in ctx.perform(link, observer, group).await {
                stop |= r.outcome == StepStatus::Failed && opts.fail_fast;
                report.steps.push(r);
            }
        }
        if report.steps.iter().any(|s| s.outcome == StepStatus::Failed) {
            return Ok(());
        }
    }
    Ok(())
}

/// Splits steps into groups performed by one process each: consecutive `conform` steps of one
/// kind whose resource takes batches go together (order is kept); everything else alone. With
/// `--fail-fast` every step is alone, so the first failure stops the rest.
fn batches<'s>(
    steps: &'s [Step],
    described: &BTreeMap<String, Described>,
    fail_fast: bool,
) -> Vec<&'s [Step]> {
    let batchable = |s: &Step| {
        !fail_fast && s.action == "conform" && described.get(&s.kind).is_some_and(|d| d.batch)
    };
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=steps.len() {
        let joins = i < steps.len()
            && batchable(&steps[i])
            && batchable(&steps[start])
            && steps[i].kind == steps[start].kind;
        if !joins {
            groups.push(&steps[start..i]);
            start = i;
        }
    }
    groups
}

/// What performing a round's steps needs to know.
struct Perform<'a> {
    minion: &'a str,
    round: u32,
    prescription: &'a [Value],
    observations: &'a [Value],
    described: &'a BTreeMap<String, Described>,
}

impl Perform<'_> {
    fn before(&self, step: &Step) -> Option<Value> {
        observation_for(step, self.prescription, self.observations, self.described)
    }

    /// Performs a group of steps in one call (a batch when there is more than one) and reports
    /// each. The process's events go to the first step's record.
    async fn perform<L: MinionLink>(
        &self,
        link: &L,
        observer: &dyn Observer,
        group: &[Step],
    ) -> Vec<StepReport> {
        let watches: Vec<_> = group
            .iter()
            .map(|s| observer.begin(self.minion, s))
            .collect();
        let started = Instant::now();
        let first = &group[0];
        let results: Vec<Result<Value, String>> = if group.len() == 1 {
            vec![link
                .call(&first.kind, &first.action, &first.state, watches[0].sink())
                .await
                .map_err(|e| e.to_string())]
        } else {
            let input = Value::Array(group.iter().map(|s| s.state.clone()).collect());
            match link
                .call(&first.kind, "conform", &input, watches[0].sink())
                .await
            {
                Ok(Value::Array(items)) if items.len() == group.len() => items
                    .into_iter()
                    .map(|v| match element_result(v) {
                        Ok(v) => Ok(v),
                        Err(LinkError::BadOutput { message, .. }) => {
                            Err(format!("resources/{} conform: {message}", first.kind))
                        }
                        Err(e) => Err(e.to_string()),
                    })
                    .collect(),
                Ok(other) => {
                    let msg = format!("resources/{} conform: a batch of {} states must give as many results, got {}", first.kind, group.len(), short(&other));
                    group.iter().map(|_| Err(msg.clone())).collect()
                }
                Err(e) => group.iter().map(|_| Err(e.to_string())).collect(),
            }
        };
        // A batch's time is shared evenly: the steps ran in one process.
        let each = started.elapsed() / group.len() as u32;
        group
            .iter()
            .zip(results)
            .zip(watches)
            .map(|((step, result), watch)| {
                let (outcome, after, error) = match result {
                    Ok(after) => (StepStatus::Changed, Some(after), None),
                    Err(e) => (StepStatus::Failed, None, Some(e)),
                };
                let r = step_report(
                    self.round,
                    step,
                    self.described,
                    self.before(step),
                    after,
                    outcome,
                    each,
                    error,
                );
                let word = if outcome == StepStatus::Failed {
                    "failed"
                } else {
                    "changed"
                };
                observer.progress(self.minion, &step.action, &r.resource, word);
                watch.finish(&r);
                r
            })
            .collect()
    }
}

fn push_step(report: &mut MinionReport, observer: &dyn Observer, step: StepReport) {
    observer.record(&report.minion, &step);
    report.steps.push(step);
}

fn with_kind(step: &Step) -> Value {
    let mut s = step.state.clone();
    if let Some(o) = s.as_object_mut() {
        o.insert("kind".into(), Value::String(step.kind.clone()));
    }
    s
}

fn identity_of<'a>(described: &'a BTreeMap<String, Described>, kind: &str) -> &'a [String] {
    described
        .get(kind)
        .map(|d| d.identity.as_slice())
        .unwrap_or(&[])
}

#[allow(clippy::too_many_arguments)]
fn step_report(
    round: u32,
    step: &Step,
    described: &BTreeMap<String, Described>,
    before: Option<Value>,
    after: Option<Value>,
    outcome: StepStatus,
    duration: Duration,
    error: Option<String>,
) -> StepReport {
    let state = with_kind(step);
    StepReport {
        round,
        kind: step.kind.clone(),
        action: step.action.clone(),
        resource: label(&state, identity_of(described, &step.kind)),
        before: before.map(|b| redact_with(&b, &state)),
        after: after.map(|a| redact_with(&a, &state)),
        state: redact_state(&state),
        outcome,
        duration,
        error,
    }
}

/// Redacts an observation with the desired state's `sensitive` list (observations need not
/// repeat it).
pub fn redact_with(observed: &Value, desired: &Value) -> Value {
    let mut o = observed.clone();
    if let (Some(map), Some(list)) = (o.as_object_mut(), desired.get("sensitive")) {
        map.insert("sensitive".into(), list.clone());
        let mut r = redact_state(&Value::Object(map.clone()));
        if observed.get("sensitive").is_none() {
            if let Some(m) = r.as_object_mut() {
                m.remove("sensitive");
            }
        }
        if let Some(changes) = r.get_mut("changes").and_then(Value::as_object_mut) {
            for f in runner::redact::sensitive_fields(desired) {
                if let Some(c) = changes.get_mut(&f) {
                    *c = Value::String(runner::redact::MASK.into());
                }
            }
        }
        return r;
    }
    o
}

fn same_resource(a: &Value, b: &Value, identity: &[String]) -> bool {
    a.get("kind") == b.get("kind")
        && if identity.is_empty() {
            a == b
        } else {
            identity.iter().all(|f| a.get(f) == b.get(f))
        }
}

fn observation_for(
    step: &Step,
    prescription: &[Value],
    observations: &[Value],
    described: &BTreeMap<String, Described>,
) -> Option<Value> {
    let state = with_kind(step);
    let identity = identity_of(described, &step.kind);
    prescription
        .iter()
        .position(|p| same_resource(p, &state, identity))
        .and_then(|i| observations.get(i).cloned())
}

async fn describe_all<L: MinionLink>(
    link: &L,
    prescription: &[Value],
) -> Result<BTreeMap<String, Described>, String> {
    let mut kinds: Vec<String> = prescription
        .iter()
        .filter_map(|s| s["kind"].as_str().map(str::to_owned))
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut out = BTreeMap::new();
    for kind in kinds {
        match link.describe(&kind).await {
            Ok(Some(d)) => {
                out.insert(kind, d);
            }
            Ok(None) => {
                out.insert(kind, Described::default());
            }
            Err(e) => {
                return Err(format!(
                    "resource {kind:?} prescribed by actors/prescribe is not usable: {e}"
                ))
            }
        }
    }
    Ok(out)
}

/// Validates every prescribed state against its resource's schema, so a bad prescription is
/// reported against `actors/prescribe` before anything runs.
fn check_states(
    prescription: &[Value],
    described: &BTreeMap<String, Described>,
) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut validators = BTreeMap::new();
    for (i, state) in prescription.iter().enumerate() {
        let kind = state["kind"].as_str().unwrap_or_default();
        let Some(schema) = described.get(kind).and_then(|d| d.schema.as_ref()) else {
            continue;
        };
        let v = validators
            .entry(kind.to_owned())
            .or_insert_with(|| minion::dispatch::compiled_schema(schema).ok());
        let Some(v) = v else { continue };
        let mut bare = state.clone();
        if let Some(o) = bare.as_object_mut() {
            for meta in ["kind", "sensitive", "notify"] {
                o.remove(meta);
            }
        }
        for e in v.iter_errors(&bare).take(3) {
            problems.push(format!(
                "entry {i} ({}): {} at /{i}{} (schema path {})",
                kind,
                e,
                e.instance_path(),
                e.schema_path()
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(format!(
        "actors/prescribe printed states its resources reject: {}\n  fix: see `ingot resource KIND describe` for each resource's schema",
        problems.join("; ")
    ))
}

async fn inspect_all<L: MinionLink>(
    link: &L,
    prescription: &[Value],
    described: &BTreeMap<String, Described>,
    observer: &dyn Observer,
    sink: &dyn EventSink,
) -> Vec<Result<Value, LinkError>> {
    let mut by_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in prescription.iter().enumerate() {
        by_kind
            .entry(s["kind"].as_str().unwrap_or_default())
            .or_default()
            .push(i);
    }
    let minion = link.name();
    let calls = by_kind.into_iter().flat_map(|(kind, indices)| {
        let batch = described.get(kind).is_some_and(|d| d.batch);
        let groups: Vec<Vec<usize>> = if batch { vec![indices] } else { indices.into_iter().map(|i| vec![i]).collect() };
        groups.into_iter().map(move |group| async move {
            let results: Vec<Result<Value, LinkError>> = if batch {
                let input = Value::Array(group.iter().map(|&i| prescription[i].clone()).collect());
                match link.call(kind, "inspect", &input, sink).await {
                    Ok(Value::Array(items)) if items.len() == group.len() => items.into_iter().map(element_result).collect(),
                    Ok(other) => group
                        .iter()
                        .map(|_| Err(LinkError::BadOutput {
                            program: format!("resources/{kind} inspect"),
                            message: format!("a batch of {} states must give an array of as many results, got {}", group.len(), short(&other)),
                        }))
                        .collect(),
                    Err(e) => group.iter().map(|_| Err(e.clone())).collect(),
                }
            } else {
                vec![link.call(kind, "inspect", &prescription[group[0]], sink).await]
            };
            for (&i, r) in group.iter().zip(&results) {
                let res = label(&prescription[i], identity_of(described, kind));
                let what = match r {
                    Ok(o) if crate::routine::choreograph::differs(&prescription[i], o) => "differs",
                    Ok(_) => "ok",
                    Err(_) => "failed",
                };
                observer.progress(minion, "inspect", &res, what);
            }
            group.into_iter().zip(results).collect::<Vec<_>>()
        })
    });
    let mut all: Vec<(usize, Result<Value, LinkError>)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

fn element_result(v: Value) -> Result<Value, LinkError> {
    match v.get("error") {
        Some(e) if v.as_object().is_some_and(|o| o.len() == 1) => Err(LinkError::BadOutput {
            program: "inspect".into(),
            message: e
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string()),
        }),
        _ => Ok(v),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(80).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

/// Observations for choreograph (a failed inspection becomes `{"error": ...}`) and the failed
/// inspections as step reports.
fn split_failures(
    prescription: &[Value],
    results: Vec<Result<Value, LinkError>>,
    described: &BTreeMap<String, Described>,
    round: u32,
) -> (Vec<Value>, Vec<StepReport>) {
    let mut failed = Vec::new();
    let observations = results
        .into_iter()
        .zip(prescription)
        .map(|(r, desired)| match r {
            Ok(v) => v,
            Err(e) => {
                let kind = desired["kind"].as_str().unwrap_or_default().to_owned();
                let step = Step {
                    kind,
                    action: "inspect".into(),
                    state: desired.clone(),
                };
                failed.push(step_report(
                    round,
                    &step,
                    described,
                    None,
                    None,
                    StepStatus::Failed,
                    Duration::ZERO,
                    Some(e.to_string()),
                ));
                serde_json::json!({"error": e.to_string()})
            }
        })
        .collect();
    (observations, failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(kind: &str, action: &str) -> Step {
        Step {
            kind: kind.into(),
            action: action.into(),
            state: json!({}),
        }
    }

    #[test]
    fn consecutive_conforms_of_a_batch_kind_go_together_in_order() {
        let described = BTreeMap::from([
            (
                "file".to_string(),
                Described {
                    batch: true,
                    ..Default::default()
                },
            ),
            ("line".to_string(), Described::default()),
        ]);
        let steps = [
            step("file", "conform"),
            step("file", "conform"),
            step("line", "conform"),
            step("line", "conform"),
            step("file", "conform"),
            step("file", "touch"),
            step("file", "conform"),
        ];
        let sizes: Vec<usize> = batches(&steps, &described, false)
            .iter()
            .map(|g| g.len())
            .collect();
        assert_eq!(sizes, [2, 1, 1, 1, 1, 1]);
        let sizes: Vec<usize> = batches(&steps, &described, true)
            .iter()
            .map(|g| g.len())
            .collect();
        assert_eq!(sizes, [1; 7]);
        assert!(batches(&[], &described, false).is_empty());
    }
}
