//! What a verb is: its declaration ([`Verb`]), the traits the engine and the master read
//! ([`Traits`]), and the resource every verb is (`describe`, the `job` action).

use std::time::Duration;

use serde_json::{json, Value};

use super::support::{Ctx, JobOutput};
use crate::builtin::resource::{Resource, ResourceError};
use crate::directord::boxed_future::BoxFuture;
use crate::directord::syntax::VerbSpec;
use crate::DispatchError;

/// A verb's entry point for a dispatcher that is the `ingot` binary itself (see
/// [`Verb::here`]): `(input, runner, timeout, sink)` gives what the `job` action would print.
pub type Here = for<'a> fn(
    &'a Value,
    &'a runner::Runner,
    Duration,
    &'a dyn runner::EventSink,
) -> BoxFuture<'a, Result<Value, DispatchError>>;

/// What the engine and the master do for a verb beyond running its `job` action (a set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traits(u8);

impl Traits {
    /// Nothing special.
    pub const NONE: Self = Self(0);
    /// ADD/COPY: the job names a source file on the operator's host (`file_from`), whose
    /// content the engine fetches (its `FileSource`) and gives as `source`; building the job
    /// expands the source glob into one job per file. Published as the option list's
    /// `transfer`.
    pub const TRANSFER: Self = Self(1);
    /// QUEUESENTINEL: handled when submitted, not run: every job queued before it (on the
    /// minion, and still held by the master) is reported failed.
    pub const DRAINS_QUEUES: Self = Self(1 << 1);
    /// QUERY: a barrier: the master sends it once every job before it has ended, and sends
    /// none after it until it has ended (its answer gathers every minion's).
    pub const BARRIER: Self = Self(1 << 2);
    /// REBOOT: the minion goes away; the master marks it rebooting from the moment the job
    /// goes out, so later jobs wait for it to come back.
    pub const REBOOTS: Self = Self(1 << 3);

    /// Both sets.
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether every trait of `other` is in this set.
    pub const fn has(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

/// A Directord verb, declared once (see the module docs): a built-in resource with a `job`
/// action.
pub struct Verb {
    /// The executable name (`resources/<kind>`).
    pub kind: &'static str,
    /// The verb (upper case).
    pub verb: &'static str,
    /// Its option list (its help and `transfer` are completed by [`Verb::option_list`]).
    pub spec: fn() -> VerbSpec,
    /// What it does.
    pub exec: fn(&Ctx) -> JobOutput,
    /// Whether a dispatcher that is the `ingot` binary runs it on a thread instead of exec'ing
    /// it (`crate::inproc`): only for verbs that start no programs, since a thread cannot be
    /// killed on `--timeout` the way a process group can.
    pub in_process: bool,
    /// Its entry point when the engine's dispatcher is the `ingot` binary and
    /// `resources/<kind>` is that binary: RUN runs its command through the runner there, with
    /// the job's timeout, instead of in a second process. `None`: the ordinary dispatch.
    pub here: Option<Here>,
    /// What the engine and the master do for it.
    pub traits: Traits,
}

const JOB_ACTIONS: &[(&str, &str)] = &[(
    "job",
    "run a Directord job: {\"job\": FIELDS, \"args\", \"envs\", \"cache_dir\", \"source\"} on stdin; prints {outcome, stdout, stderr, info, ...}",
)];

const DESCRIPTION: &str =
    "a Directord verb: run it with `ingot exec --verb VERB 'STRING'` or in `ingot orchestrate`";

impl Verb {
    /// The option list `describe` publishes: the spec, with the description as its help when
    /// it has none and `transfer` from [`Traits::TRANSFER`].
    pub fn option_list(&self) -> VerbSpec {
        let mut spec = (self.spec)();
        if spec.help.is_empty() {
            spec.help = DESCRIPTION.into();
        }
        spec.transfer = self.traits.has(Traits::TRANSFER);
        spec
    }

    fn not_state(&self) -> ResourceError {
        ResourceError::Failed(format!(
            "{} is a Directord verb, not a state: use `ingot exec --verb {} 'STRING'` (or the `job` action)",
            self.kind, self.verb
        ))
    }
}

impl Resource for Verb {
    fn kind(&self) -> &'static str {
        self.kind
    }
    fn description(&self) -> &'static str {
        DESCRIPTION
    }
    fn identity(&self) -> &'static [&'static str] {
        &["job"]
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {
            "job": {"type": "object", "description": "the parsed verb string (see describe's args)"},
            "args": {"type": "object", "description": "the minion's cached args"},
            "envs": {"type": "object", "description": "the minion's cached envs"},
            "cache_dir": {"type": ["string", "null"]},
            "source": {"type": ["string", "null"], "description": "ADD/COPY: local path of the source content"},
            "minion": {"type": ["string", "null"]}
        }})
    }
    fn actions(&self) -> &'static [(&'static str, &'static str)] {
        JOB_ACTIONS
    }
    fn args(&self) -> Value {
        self.option_list().to_json()
    }
    fn inspect(&self, _: &Value) -> Result<Value, ResourceError> {
        Err(self.not_state())
    }
    fn conform(&self, _: &Value) -> Result<Value, ResourceError> {
        Err(self.not_state())
    }
    fn action(&self, action: &str, state: &Value) -> Result<Value, ResourceError> {
        if action != "job" {
            return Err(ResourceError::UnknownAction {
                kind: self.kind.into(),
                action: action.into(),
                known: "job, describe".into(),
            });
        }
        let out = (self.exec)(&Ctx::from_input(state));
        Ok(serde_json::to_value(out).unwrap_or(Value::Null))
    }
    fn in_process(&self) -> bool {
        self.in_process
    }
}
