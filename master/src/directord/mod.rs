//! Directord through the running master: `ingot exec|orchestrate --master` ([`command`], the
//! operator's side; [`relay`], the master's), their jobs recorded in the history
//! ([`recording`]) and read back ([`records`]) by `ingot manage` ([`manage`]), the content
//! they need sent to the minions ([`transfer`]), and JOB_WAIT across minions ([`job_wait`]).
//!
//! [`Directord`] is what the running master holds for it: the jobs in flight (for `manage`),
//! the QUEUESENTINEL count, and the answerer of the minions' questions.

pub mod command;
pub mod job_wait;
pub mod manage;
pub mod recording;
pub mod records;
pub mod relay;
mod service;
pub mod tables;
pub mod transfer;

pub use service::Directord;
