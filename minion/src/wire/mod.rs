//! The master ↔ minion protocol: netstrings of JSON over TLS, with a size cap.
//!
//! Minion → master: `hello`, then `event`s and `result`s of requests (numbered per request so
//! a replay after a reconnect is de-duplicated), `pong`, and `ask` (a question only the master
//! can answer: JOB_WAIT on other minions). Master → minion: `welcome` or `refused`, `request`,
//! `ack` (the result is stored; the minion may forget it), `ping`, `answer` (to an `ask`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

mod answers;
mod framing;
mod job;
pub mod tls;

pub use answers::{
    DescribeAnswer, EndedState, FactsAnswer, InstallAnswer, InstallState, JobStateAnswer,
    JobWaitAnswer, TransferAnswer,
};
pub use framing::{encode, write, FrameError, FrameReader, MAX_FRAME};
pub use job::Job;

/// The protocol version in `hello`.
pub const PROTOCOL: u32 = 3;

/// What a request asks the minion to do (the minion's dispatch, exactly).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Gather the fact document.
    Facts,
    /// `resources/KIND describe`.
    Describe {
        /// The resource kind.
        kind: String,
    },
    /// `resources/KIND ACTION` with `input`.
    Resource {
        /// The resource kind.
        kind: String,
        /// inspect, conform, or a custom action.
        action: String,
        /// The state(s) on stdin.
        input: Value,
    },
    /// A Directord job for the minion's long-lived job engine (per-parent queues, cache). An
    /// ADD/COPY source's content is sent beforehand with [`Op::Transfer`]; the job names it by
    /// its `file_sha3_224`.
    Job {
        /// The job.
        job: Box<Job>,
    },
    /// The minion's Directord cache (`ingot manage --dump-cache`).
    DumpCache,
    /// Waits up to `limit_secs` for the job with fingerprint `sha3_224` to be recorded as
    /// succeeded or failed in the minion's Directord cache (another minion's JOB_WAIT, see
    /// [`Ask::JobWait`]). Answers `{"state": "success" | "failed" | null}` (null: not in time).
    JobState {
        /// The job's SHA3-224.
        sha3_224: String,
        /// Seconds to wait.
        limit_secs: u64,
    },
    /// One step of sending content to the minion's `CACHE/transfer/<sha3-224>` (ADD/COPY
    /// sources, user components).
    Transfer(TransferOp),
    /// Installs `CACHE/transfer/<sha3_224>` as `MINION/resources/<kind>` (mode 0755, by
    /// rename) unless it already is; refused for the minion's built-ins. Answers
    /// `{"state": "unchanged" | "installed" | "missing"}` (`missing`: send the content first).
    Install {
        /// The resource kind.
        kind: String,
        /// SHA3-224 of the executable's content.
        sha3_224: String,
    },
}

/// What a minion asks the master (frame `ask`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ask {
    /// JOB_WAIT: has the job `sha3_224` ended on each of `identities`? The master asks each
    /// one's agent ([`Op::JobState`]) and answers `{"acked": [NAME...], "failed": {NAME: WHY}}`.
    JobWait {
        /// The job's SHA3-224.
        sha3_224: String,
        /// The minions to ask.
        identities: Vec<String>,
        /// Seconds each may take to show the job ended.
        limit_secs: u64,
    },
}

/// The steps of a content transfer to a minion.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum TransferOp {
    /// Whether the minion holds the content; if not, it starts an empty
    /// `CACHE/transfer/.<sha3_224>.part` of `size` bytes. Answers `{"have": bool}`.
    Begin {
        /// SHA3-224 of the whole content.
        sha3_224: String,
        /// Its size in bytes.
        size: u64,
    },
    /// One chunk, written at `offset` once its own SHA3-224 checks out. Answers `{}`.
    Chunk {
        /// SHA3-224 of the whole content.
        sha3_224: String,
        /// Where the chunk goes.
        offset: u64,
        /// SHA3-224 of this chunk.
        chunk_sha3_224: String,
        /// The chunk, base64.
        data: String,
    },
    /// Every chunk was sent: the minion checks the size and the whole content's SHA3-224 and
    /// renames the part to `CACHE/transfer/<sha3_224>`. Answers `{"stored": true}`.
    End {
        /// SHA3-224 of the whole content.
        sha3_224: String,
        /// Its size in bytes.
        size: u64,
    },
}

impl Op {
    /// A short label for logs and errors.
    pub fn label(&self) -> String {
        match self {
            Op::Facts => "facts".into(),
            Op::Describe { kind } => format!("resources/{kind} describe"),
            Op::Resource { kind, action, .. } => format!("resources/{kind} {action}"),
            Op::Job { job, .. } => format!("job {} {}", job.verb, job.job_id),
            Op::DumpCache => "cache dump".into(),
            Op::JobState { sha3_224, .. } => format!("job state {sha3_224}"),
            Op::Transfer(TransferOp::Begin { sha3_224, .. }) => format!("transfer {sha3_224}"),
            Op::Transfer(TransferOp::Chunk {
                sha3_224, offset, ..
            }) => format!("transfer {sha3_224} at {offset}"),
            Op::Transfer(TransferOp::End { sha3_224, .. }) => format!("transfer {sha3_224} end"),
            Op::Install { kind, .. } => format!("install resources/{kind}"),
        }
    }
}

/// Why a request failed on the minion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WireError {
    /// The program ran and exited non-zero.
    #[error("{program} exited with {code}{}", stderr_suffix(.stderr))]
    Failed {
        /// What ran.
        program: String,
        /// Its exit code.
        code: i32,
        /// Its stderr tail.
        stderr: String,
    },
    /// It printed invalid output.
    #[error("{program} printed invalid output: {message}")]
    BadOutput {
        /// What ran.
        program: String,
        /// What was wrong.
        message: String,
    },
    /// It could not be run at all (or the minion restarted while it ran).
    #[error("{message}")]
    Unreachable {
        /// Why.
        message: String,
    },
}

/// `: STDERR` (trimmed), or nothing for an empty stderr.
pub fn stderr_suffix(stderr: &str) -> String {
    let t = stderr.trim();
    if t.is_empty() {
        String::new()
    } else {
        format!(": {t}")
    }
}

/// The outcome of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Its JSON output.
    Ok(Value),
    /// Why it failed.
    Err(WireError),
}

/// One frame.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frame {
    /// Minion → master, first frame.
    Hello {
        /// `PROTOCOL`.
        protocol: u32,
        /// The agent's version.
        version: String,
        /// `/etc/machine-id` (or what `--machine-id` says).
        machine_id: String,
        /// When the agent started (Unix seconds).
        started: i64,
        /// Hex of its certificate's P-256 public key, so the master can renew the
        /// certificate before it expires.
        #[serde(default)]
        public_key: Option<String>,
        /// The request ids the agent holds (running, or with frames spooled): after a
        /// reconnect, a request the master sent earlier and the agent does not hold was lost.
        #[serde(default)]
        held: Vec<String>,
    },
    /// Master → minion: accepted under this name.
    Welcome {
        /// The name (the certificate's CN).
        name: String,
        /// Seconds between pings.
        heartbeat: u64,
    },
    /// Master → minion: refused, with why; the connection closes.
    Refused {
        /// Why.
        reason: String,
    },
    /// Master → minion: run this.
    Request {
        /// Unique id (de-duplication key).
        id: String,
        /// What.
        op: Op,
    },
    /// Minion → master: a channel3 event of a running request.
    Event {
        /// The request.
        id: String,
        /// Position within the request (1, 2, ...).
        seq: u64,
        /// Microseconds since the epoch, when the minion received it.
        ts: i64,
        /// The channel3 name.
        name: Option<String>,
        /// The channel3 key.
        key: String,
        /// The channel3 data.
        data: Box<RawValue>,
    },
    /// Minion → master: the request's result (after all its events).
    Result {
        /// The request.
        id: String,
        /// Position (one past the last event).
        seq: u64,
        /// The outcome.
        reply: Reply,
    },
    /// Minion → master: a question (not a request: nothing is spooled; a connection lost
    /// before the answer fails it on the minion).
    Ask {
        /// Unique per agent connection; the answer carries it.
        id: u64,
        /// What.
        ask: Ask,
    },
    /// Master → minion: the answer to `ask` `id`.
    Answer {
        /// The ask.
        id: u64,
        /// The outcome.
        reply: Reply,
    },
    /// Master → minion: the result of `id` is stored; forget it.
    Ack {
        /// The request.
        id: String,
    },
    /// Liveness probe.
    Ping {
        /// Echoed back.
        n: u64,
    },
    /// Answer to a ping.
    Pong {
        /// The ping's number.
        n: u64,
    },
    /// Minion → master (enrollment port): sign my key under this name.
    Enroll {
        /// The name asked for.
        name: String,
        /// Hex of the P-256 public key (uncompressed point).
        public_key: String,
        /// A one-time token from `ingot certs token`, for acceptance without the operator.
        token: Option<String>,
    },
    /// Master → minion: the signed certificate.
    Enrolled {
        /// PEM.
        cert: String,
    },
    /// Master → minion: waiting for `ingot certs accept NAME`.
    EnrollPending,
    /// Master → minion: a renewed certificate for the same key; use it from the next
    /// connection on (the master closes this one shortly).
    Renewed {
        /// PEM.
        cert: String,
    },
}

impl Frame {
    /// The frame as a netstring.
    pub fn encode(&self) -> Vec<u8> {
        framing::encode(self)
    }

    /// The frame's JSON payload (no netstring around it).
    pub fn payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("frames serialize")
    }
}

/// Converts a wire event back into a channel3 event.
pub fn to_event(
    ts: i64,
    name: Option<String>,
    key: String,
    data: Box<RawValue>,
) -> channel3::Event {
    channel3::Event {
        ts: channel3::Timestamp(ts),
        message: channel3::Message {
            name,
            key,
            data,
            raw: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_junk_is_refused() {
        let f = Frame::Event {
            id: "a-1".into(),
            seq: 3,
            ts: 17,
            name: Some("file".into()),
            key: "stdout".into(),
            data: serde_json::value::to_raw_value(&serde_json::json!({"line": "hi\n"})).unwrap(),
        };
        let bytes = f.encode();
        let mut two = bytes.clone();
        two.extend_from_slice(&bytes);
        let mut r = FrameReader::new(&two[..]);
        let _: Frame = r.next().await.unwrap().unwrap();
        match r.next::<Frame>().await.unwrap().unwrap() {
            Frame::Event { seq, data, .. } => {
                assert_eq!(seq, 3);
                assert_eq!(data.get(), r#"{"line":"hi\n"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(r.next::<Frame>().await.unwrap().is_none());
        for junk in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"05:hello,",
            b"99999999999:",
            b"3:abc;",
            b"2:{}",
        ] {
            let mut r = FrameReader::new(junk);
            assert!(r.next::<Frame>().await.is_err(), "{junk:?}");
        }
        let mut big = format!("{}:", MAX_FRAME + 1).into_bytes();
        big.extend_from_slice(b"xx");
        assert!(matches!(
            FrameReader::new(&big[..]).payload().await,
            Err(FrameError::TooLarge(_))
        ));
    }
}
