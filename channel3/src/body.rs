//! Typed views of the data of the keys mold and ingot define.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Lines longer than this are split into several `stdout`/`stderr` messages.
pub const MAX_LINE: usize = 64 * 1024;

/// How a [`Line`]'s text is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Standard base64: the bytes were not UTF-8.
    B64,
}

/// A line of output (`stdin`, `stdout`, `stderr`, `garbage`): it keeps its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// The text, or base64 of the bytes when `encoding` is `b64`.
    pub line: String,
    /// Present when the bytes were not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

impl Line {
    /// Text as is when it is UTF-8, base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self {
                line: s.to_owned(),
                encoding: None,
            },
            Err(_) => Self::base64(bytes),
        }
    }

    /// Always base64 (used for garbage, whose bytes are untrusted whatever they look like).
    pub fn base64(bytes: &[u8]) -> Self {
        Self {
            line: base64::engine::general_purpose::STANDARD.encode(bytes),
            encoding: Some(Encoding::B64),
        }
    }

    /// The original bytes (base64 decoded when needed; undecodable base64 yields the text).
    pub fn bytes(&self) -> Vec<u8> {
        match self.encoding {
            Some(Encoding::B64) => base64::engine::general_purpose::STANDARD
                .decode(&self.line)
                .unwrap_or_else(|_| self.line.as_bytes().to_vec()),
            None => self.line.as_bytes().to_vec(),
        }
    }
}

/// `spawn`: a process was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Spawn {
    /// The program's path as executed.
    pub path: String,
    /// The environment (sensitive values already redacted by the writer).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Arguments after the program.
    #[serde(default)]
    pub args: Vec<String>,
    /// The user it runs as, when switched.
    #[serde(default)]
    pub user: Option<String>,
    /// The group it runs as, when switched.
    #[serde(default)]
    pub group: Option<String>,
}

/// `signal`: the runner signalled the process (group).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalInfo {
    /// Signal name, e.g. `SIGKILL`.
    pub signal: String,
    /// Why, e.g. `timeout`.
    pub reason: String,
}

/// `file`: a script uploads a log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileUpload {
    /// The file's path on the writer's machine.
    pub path: String,
    /// Its content (base64 when `encoding` says so).
    pub data: String,
    /// `b64` or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// The data of a message, typed by its key. Unknown keys are kept as raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// `stdin`: a line the process was given.
    Stdin(Line),
    /// `stdout`: a line the process printed.
    Stdout(Line),
    /// `stderr`: a line the process printed on stderr.
    Stderr(Line),
    /// `spawn`: the process started.
    Spawn(Spawn),
    /// `exitcode`: the process ended (128+signo when killed by a signal).
    Exitcode(i64),
    /// `signal`: the runner signalled the process.
    Signal(SignalInfo),
    /// `step`: a script marks progress.
    Step {
        /// What the script is doing now.
        label: String,
    },
    /// `file`: a log file upload.
    File(FileUpload),
    /// `garbage`: bytes on fd 3 that were not a valid channel3 message.
    Garbage(Line),
    /// Any other key, or a known key whose data did not have the expected shape.
    Other {
        /// The key.
        key: String,
        /// The data, as written.
        data: Value,
    },
}

impl Body {
    /// The key this body is sent under.
    pub fn key(&self) -> &str {
        match self {
            Body::Stdin(_) => "stdin",
            Body::Stdout(_) => "stdout",
            Body::Stderr(_) => "stderr",
            Body::Spawn(_) => "spawn",
            Body::Exitcode(_) => "exitcode",
            Body::Signal(_) => "signal",
            Body::Step { .. } => "step",
            Body::File(_) => "file",
            Body::Garbage(_) => "garbage",
            Body::Other { key, .. } => key,
        }
    }

    /// The data as JSON.
    pub fn data(&self) -> Value {
        let v = match self {
            Body::Stdin(l) | Body::Stdout(l) | Body::Stderr(l) | Body::Garbage(l) => {
                serde_json::to_value(l)
            }
            Body::Spawn(s) => serde_json::to_value(s),
            Body::Exitcode(c) => Ok(Value::from(*c)),
            Body::Signal(s) => serde_json::to_value(s),
            Body::Step { label } => Ok(serde_json::json!({ "label": label })),
            Body::File(f) => serde_json::to_value(f),
            Body::Other { data, .. } => Ok(data.clone()),
        };
        // These types serialize to JSON infallibly (string keys, no non-finite floats).
        v.unwrap_or(Value::Null)
    }

    /// Types `data` by `key`; data that does not fit its key's shape becomes [`Body::Other`].
    pub fn parse(key: &str, data: &serde_json::value::RawValue) -> Body {
        fn typed<T: for<'a> Deserialize<'a>>(data: &serde_json::value::RawValue) -> Option<T> {
            serde_json::from_str(data.get()).ok()
        }
        #[derive(Deserialize)]
        struct Label {
            label: String,
        }
        let parsed = match key {
            "stdin" => typed(data).map(Body::Stdin),
            "stdout" => typed(data).map(Body::Stdout),
            "stderr" => typed(data).map(Body::Stderr),
            "garbage" => typed(data).map(Body::Garbage),
            "spawn" => typed(data).map(Body::Spawn),
            "exitcode" => typed(data).map(Body::Exitcode),
            "signal" => typed(data).map(Body::Signal),
            "step" => typed::<Label>(data).map(|l| Body::Step { label: l.label }),
            "file" => typed(data).map(Body::File),
            _ => None,
        };
        parsed.unwrap_or_else(|| Body::Other {
            key: key.to_owned(),
            data: serde_json::from_str(data.get()).unwrap_or(Value::Null),
        })
    }
}
