//! Directord's verbs as built-in resource executables.
//!
//! Each verb is a [`Verb`]: a [`Resource`] whose `describe` publishes its option list (a
//! [`VerbSpec`]) in `args` and which has one custom action, `job`. The
//! engine (`super::engine`) calls `resources/KIND job` with
//! `{"job": FIELDS, "args": ARGS, "envs": ENVS, "cache_dir": DIR, "minion": NAME, "source": PATH}`
//! and gets a [`JobOutput`] back; the engine owns the cache, so a verb only reports what it
//! wants stored or waited for (`set_args`, `set_envs`, `evict`, `query`, `job_wait`). A user
//! component in `resources/` that follows the same contract is a verb too.
//!
//! The verb `SERVICE` is the executable `service_verb`: the kind `service` is the mold-style
//! resource (states `running`/`stopped`), which has no verb `args`; the engine maps a verb to
//! `resources/<verb>` when that describes a verb, else to `resources/<verb>_verb`.
//!
//! A verb is declared once, in its family's file, as a `pub const NAME: Verb`: its kind and
//! Directord name, its option list and what it does, whether it may run in-process
//! ([`Verb::in_process`]), its in-binary entry point if it has one ([`Verb::here`]) and what
//! the engine and the master do for it ([`Traits`]). [`VERBS`] lists them all; the built-in
//! resources (`crate::builtin::resources`), the in-process rule and the engine's special cases
//! all read it.
//!
//! | file | verbs |
//! |---|---|
//! | `run.rs` | RUN, ECHO |
//! | `cache.rs` | ARG, ENV, CACHEFILE, CACHEEVICT, QUERY, QUEUESENTINEL |
//! | `files.rs` | WORKDIR, ADD, COPY |
//! | `packages.rs` | DNF, APT |
//! | `system.rs` | SERVICE, REBOOT, SECONTEXT, FACTER |
//! | `waits.rs` | WAIT, QUERY_WAIT, JOB_WAIT |
//! | `containers.rs` | CONTAINER_IMAGE, POD |
//! | `support.rs` | [`Ctx`], [`JobOutput`], running programs |
//!
//! # Adding a verb
//!
//! 1. Write `verbs/NAME.rs` (or add to the family's file): a spec function returning the
//!    option list (`VerbSpec::new(HELP, options)`, `.uncached()` when a success must not be
//!    reused), an exec function `fn(&Ctx) -> JobOutput`, and the declaration
//!    `pub const NAME: Verb = Verb { kind, verb, spec, exec, in_process, here: None, traits }`.
//!    `in_process: true` only when it starts no programs (a thread cannot be killed on
//!    timeout); `traits` is [`Traits::NONE`] unless the engine or master must treat it apart.
//! 2. For a new file, add `mod NAME;` and `pub use NAME::NAME;` below, and the verb's line to
//!    [`VERBS`]. Nothing else names it: `resources/<kind>` (`ingot init minion`), `describe`,
//!    `ingot exec --verb` and the registry test all follow from the list.

use std::time::Duration;

use serde_json::{json, Value};

use super::engine::BoxFuture;
use super::verb::VerbSpec;
use crate::builtin::resource::{Resource, ResourceError};
use crate::DispatchError;

mod cache;
mod containers;
mod files;
mod packages;
mod run;
mod support;
mod system;
mod waits;

pub use cache::{ARG, CACHEEVICT, CACHEFILE, ENV, QUERY, QUEUESENTINEL};
pub use containers::{CONTAINER_IMAGE, POD};
pub use files::{ADD, COPY, WORKDIR};
pub use packages::{APT, DNF};
pub use run::{run_here, ECHO, RUN};
pub use support::{Ctx, JobOutput};
pub use system::{FACTER, REBOOT, SECONTEXT, SERVICE};
pub use waits::{JOB_WAIT, QUERY_WAIT, WAIT};

/// Every built-in verb: the one registry (the order is `describe`'s and `ingot init`'s).
pub static VERBS: &[&Verb] = &[
    &RUN,
    &ARG,
    &ENV,
    &ADD,
    &COPY,
    &WORKDIR,
    &CACHEFILE,
    &CACHEEVICT,
    &QUERY,
    &QUEUESENTINEL,
    &DNF,
    &APT,
    &SERVICE,
    &REBOOT,
    &WAIT,
    &QUERY_WAIT,
    &JOB_WAIT,
    &FACTER,
    &CONTAINER_IMAGE,
    &POD,
    &SECONTEXT,
    &ECHO,
];

/// The built-in verb whose executable is `kind` (e.g. `service_verb`).
pub fn by_kind(kind: &str) -> Option<&'static Verb> {
    VERBS.iter().copied().find(|v| v.kind == kind)
}

/// The built-in verb named `verb` in Directord (upper case, as jobs carry it: `JOB_WAIT`).
pub fn by_name(verb: &str) -> Option<&'static Verb> {
    VERBS.iter().copied().find(|v| v.verb == verb)
}

/// Whether the built-in verb named `verb` (upper case) has `traits`; false for any other name.
pub fn has(verb: &str, traits: Traits) -> bool {
    by_name(verb).is_some_and(|v| v.traits.has(traits))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The registry is the only list: every verb is a built-in resource under its kind, kinds
    /// and names are unique and map back, the in-process verbs are exactly those flagged (the
    /// set the old `IN_PROCESS` list named), and the traits sit on the verbs the engine and
    /// master used to name.
    #[test]
    fn the_registry_is_consistent() {
        let mut kinds = HashSet::new();
        let mut names = HashSet::new();
        for v in VERBS {
            assert!(kinds.insert(v.kind), "kind {} declared twice", v.kind);
            assert!(names.insert(v.verb), "verb {} declared twice", v.verb);
            let r = crate::builtin::resource(v.kind)
                .unwrap_or_else(|| panic!("{} is not a built-in resource", v.kind));
            assert_eq!(r.kind(), v.kind);
            assert!(
                std::ptr::addr_eq(r as *const dyn Resource, *v as *const Verb),
                "builtin::resource({}) is not the registry's verb",
                v.kind
            );
            assert_eq!(r.in_process(), v.in_process, "{}", v.kind);
            assert!(std::ptr::eq(by_kind(v.kind).unwrap(), *v));
            assert!(std::ptr::eq(by_name(v.verb).unwrap(), *v));
            // The engine resolves VERB to resources/<verb> or resources/<verb>_verb.
            let lower = v.verb.to_lowercase();
            assert!(
                v.kind == lower || v.kind == format!("{lower}_verb"),
                "{} does not resolve to {}",
                v.verb,
                v.kind
            );
            // What describe publishes parses back as a verb, with the declared transfer.
            let spec = VerbSpec::from_describe(v.verb, &r.args())
                .unwrap()
                .unwrap_or_else(|| panic!("{} publishes no option list", v.kind));
            assert_eq!(spec.transfer, v.traits.has(Traits::TRANSFER), "{}", v.kind);
            assert!(!spec.help.is_empty(), "{}", v.kind);
        }
        let flagged: HashSet<&str> = VERBS
            .iter()
            .filter(|v| v.in_process)
            .map(|v| v.kind)
            .collect();
        let in_process: HashSet<&str> = crate::builtin::resources()
            .iter()
            .filter(|r| r.in_process() && kinds.contains(r.kind()))
            .map(|r| r.kind())
            .collect();
        assert_eq!(in_process, flagged);
        let expected: HashSet<&str> = [
            "arg",
            "env",
            "echo",
            "query",
            "queuesentinel",
            "cacheevict",
            "cachefile",
            "workdir",
            "add",
            "copy",
            "job_wait",
        ]
        .into();
        assert_eq!(flagged, expected);
        let with = |t: Traits| -> Vec<&str> {
            VERBS
                .iter()
                .filter(|v| v.traits.has(t) && t != Traits::NONE)
                .map(|v| v.verb)
                .collect()
        };
        assert_eq!(with(Traits::TRANSFER), ["ADD", "COPY"]);
        assert_eq!(with(Traits::DRAINS_QUEUES), ["QUEUESENTINEL"]);
        assert_eq!(with(Traits::BARRIER), ["QUERY"]);
        assert_eq!(with(Traits::REBOOTS), ["REBOOT"]);
        let here: Vec<&str> = VERBS
            .iter()
            .filter(|v| v.here.is_some())
            .map(|v| v.verb)
            .collect();
        assert_eq!(here, ["RUN"]);
        assert!(has("QUEUESENTINEL", Traits::DRAINS_QUEUES));
        assert!(!has("queuesentinel", Traits::DRAINS_QUEUES));
        assert!(!has("HELLO", Traits::NONE));
        assert!(Traits::BARRIER.with(Traits::REBOOTS).has(Traits::REBOOTS));
        // Every built-in resource is a state resource or a registry verb, never both.
        let states = crate::builtin::resources()
            .iter()
            .filter(|r| !kinds.contains(r.kind()))
            .count();
        assert_eq!(states + VERBS.len(), crate::builtin::resources().len());
    }
}
