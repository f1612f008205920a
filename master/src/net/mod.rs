//! The network: the master's private CA ([`pki`]), TLS 1.3 with mutual certificates ([`tls`]),
//! the frame protocol ([`wire`]), the master server with [`server::RemoteMinion`] (the network
//! [`crate::link::MinionLink`]), the minion agent with its disk spool ([`agent`]), the
//! master's journal of requests in flight ([`journal`]), the local control socket
//! ([`control`]), Directord jobs in the history ([`jobs`], read back by [`job_records`]),
//! their files and user components on the minions ([`transfer`]), `ingot manage`
//! ([`manage`]), and the commands ([`cli`]).

pub mod agent;
pub mod cli;
pub mod control;
pub mod directord;
pub mod enroll;
pub mod job_records;
pub mod jobs;
pub mod journal;
pub mod manage;
pub mod pki;
pub mod server;
pub mod tls;
pub mod transfer;
pub mod wire;
