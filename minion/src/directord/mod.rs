//! Directord on ingot, minion side: verb strings, the verbs as resource executables, the job
//! cache, orchestration files and the job engine.
//!
//! - [`syntax`]: the option-list format a verb publishes in `describe`'s `args`, verb-string
//!   parsing (shell words, options only before the payload, `--`) and `--exec-help`.
//! - [`job`]: [`job::Job`] (serialisable), fingerprints (SHA3-224 of the canonical job; ADD/COPY
//!   include the source's content hash) and building jobs from verb strings (ADD/COPY globs
//!   expand on the operator's host into one job per file).
//! - [`verbs`]: the built-in verbs, each a resource with a `job` action, declared once in its
//!   family's file and listed in the one registry, [`verbs::VERBS`] (see there to add one).
//! - [`cache`]: the per-minion cache in `MINION/cache/directord/` (TTL, atomic files, flock).
//! - [`template`]: blueprinting with minijinja (strict undefined).
//! - [`orchestration`]: Directord YAML.
//! - [`engine`]: per-parent queues, the cache rules, QUERY and file hooks — the API the
//!   network layer drives (see its module docs).
//! - [`command`]: `ingot exec` and `ingot orchestrate` against one local minion.

pub mod boxed_future;
pub mod cache;
pub mod command;
pub mod engine;
pub mod job;
pub mod orchestration;
pub mod syntax;
pub mod template;
pub mod verbs;

pub use engine::{Engine, JobResult, Status};

pub use job::Job;
