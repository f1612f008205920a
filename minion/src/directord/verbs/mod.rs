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

mod cache;
mod containers;
mod files;
mod packages;
mod run;
mod support;
mod system;
mod verb;
mod waits;

pub use cache::{ARG, CACHEEVICT, CACHEFILE, ENV, QUERY, QUEUESENTINEL};
pub use containers::{CONTAINER_IMAGE, POD};
pub use files::{ADD, COPY, WORKDIR};
pub use packages::{APT, DNF};
pub use run::{run_here, ECHO, RUN};
pub use support::{Ctx, JobOutput};
pub use system::{FACTER, REBOOT, SECONTEXT, SERVICE};
pub use verb::{Here, Traits, Verb};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builtin::resource::Resource;
    use crate::directord::syntax::VerbSpec;
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
