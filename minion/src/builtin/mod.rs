//! Built-in resources and facts, run in-process when the `ingot` binary is invoked under their
//! name (a symlink in `minion/resources/` or `minion/facts/`).

pub mod facts;
pub mod file;
pub mod protocol;
pub mod resource;

pub mod cron;
pub mod group;
pub mod package;
pub mod service;
pub mod user;

pub use resource::{known_actions, Resource, ResourceError};

/// The mold-style built-in resources (states, not verbs), by kind.
const STATE_RESOURCES: &[&dyn Resource] = &[
    &file::File,
    &user::User,
    &group::Group,
    &cron::Cron,
    &service::Service,
    &package::Package,
];

/// Every built-in resource, by kind: the mold-style ones, then every Directord verb of
/// [`crate::directord::verbs::VERBS`] (a verb is declared only there).
pub fn resources() -> &'static [&'static dyn Resource] {
    static ALL: std::sync::OnceLock<Vec<&'static dyn Resource>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        STATE_RESOURCES
            .iter()
            .copied()
            .chain(
                crate::directord::verbs::VERBS
                    .iter()
                    .map(|v| *v as &'static dyn Resource),
            )
            .collect()
    })
}

/// The built-in resource of this kind.
pub fn resource(kind: &str) -> Option<&'static dyn Resource> {
    resources().iter().copied().find(|r| r.kind() == kind)
}
