//! The network: the master's private CA ([`pki`]), TLS 1.3 with mutual certificates ([`tls`]),
//! the frame protocol ([`wire`]), the master server with [`server::RemoteMinion`] (the network
//! [`crate::link::MinionLink`]), the minion agent with its disk spool ([`agent`]), the local
//! control socket ([`control`]), and the commands ([`cli`]).

pub mod agent;
pub mod cli;
pub mod control;
pub mod directord;
pub mod enroll;
pub mod pki;
pub mod server;
pub mod tls;
pub mod wire;
