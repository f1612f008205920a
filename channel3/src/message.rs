//! The channel3 tuple `[NAME, KEY, DATA]`.

use bytes::Bytes;
use serde::ser::SerializeTuple;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::body::{Body, Line};
use crate::netstring;

/// One channel3 message. `data` is kept as raw JSON so that forwarding a message (the hot path)
/// never re-parses it; [`Message::body`] types it on demand.
#[derive(Debug, Clone)]
pub struct Message {
    /// The path of the process that wrote it (`None` for the writer itself).
    pub name: Option<String>,
    /// The key, e.g. `stdout`.
    pub key: String,
    /// The data, exactly as written.
    pub data: Box<RawValue>,
    /// The frame payload exactly as it was received, before any relabelling (`None` for
    /// messages built locally). Lets a historian give back the raw bytes a child wrote.
    pub raw: Option<Bytes>,
}

/// Why a frame's payload is not a channel3 message.
#[derive(Debug, thiserror::Error)]
#[error("frame is not a channel3 tuple [NAME, KEY, DATA]: {0}")]
pub struct MessageError(#[from] serde_json::Error);

impl PartialEq for Message {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.key == other.key && self.data.get() == other.data.get()
    }
}

impl Message {
    /// A message with a typed body.
    pub fn new(name: Option<String>, body: &Body) -> Self {
        let data =
            serde_json::value::to_raw_value(&body.data()).expect("JSON values always serialize");
        Self {
            name,
            key: body.key().to_owned(),
            data,
            raw: None,
        }
    }

    /// Parses a frame payload as a tuple.
    pub fn from_payload(payload: &[u8]) -> Result<Self, MessageError> {
        let (name, key, data): (Option<String>, String, Box<RawValue>) =
            serde_json::from_slice(payload)?;
        Ok(Self {
            name,
            key,
            data,
            raw: None,
        })
    }

    /// Parses a received frame payload, keeping its bytes in [`Message::raw`].
    pub fn from_received(payload: Bytes) -> Result<Self, MessageError> {
        let mut m = Self::from_payload(&payload)?;
        m.raw = Some(payload);
        Ok(m)
    }

    /// The `garbage` message for bytes that were not a valid message (its `raw` holds them).
    pub fn garbage(bytes: &[u8]) -> Self {
        let mut m = Self::new(None, &Body::Garbage(Line::base64(bytes)));
        m.raw = Some(Bytes::copy_from_slice(bytes));
        m
    }

    /// The data typed by key.
    pub fn body(&self) -> Body {
        Body::parse(&self.key, &self.data)
    }

    /// Relabels a message read from child `child`'s fd 3: `null` becomes `child` and `bob`
    /// becomes `child/bob`, so names form a path down the process tree.
    pub fn relabel(&mut self, child: &str) {
        self.name = Some(match self.name.take() {
            None => child.to_owned(),
            Some(n) => format!("{child}/{n}"),
        });
    }

    /// The JSON payload `[NAME, KEY, DATA]`.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a message always serializes")
    }

    /// Appends the message as a netstring frame.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        netstring::encode_into(&self.to_payload(), out);
    }

    /// The message as a netstring frame.
    pub fn to_frame(&self) -> Vec<u8> {
        netstring::encode(&self.to_payload())
    }
}

impl Serialize for Message {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&self.name)?;
        t.serialize_element(&self.key)?;
        t.serialize_element(&self.data)?;
        t.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_frame_decodes_and_reencodes_with_right_prefix() {
        let payload = br#"["jim", "stdout", {"line": "This is a line of stdout\n"}]"#;
        let m = Message::from_payload(payload).unwrap();
        assert_eq!(m.name.as_deref(), Some("jim"));
        assert_eq!(
            m.body(),
            Body::Stdout(Line {
                line: "This is a line of stdout\n".into(),
                encoding: None
            })
        );
        let frame = m.to_frame();
        let colon = frame.iter().position(|&b| b == b':').unwrap();
        let len: usize = std::str::from_utf8(&frame[..colon])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, frame.len() - colon - 2);
        assert_eq!(*frame.last().unwrap(), b',');
    }

    #[test]
    fn relabel_builds_a_path() {
        let mut m = Message::new(None, &Body::Exitcode(0));
        m.relabel("bob");
        m.relabel("jim");
        assert_eq!(m.name.as_deref(), Some("jim/bob"));
    }

    #[test]
    fn unknown_keys_are_kept_verbatim() {
        let m = Message::from_payload(br#"[null,"fact",{"kernel":"linux"}]"#).unwrap();
        assert_eq!(m.data.get(), r#"{"kernel":"linux"}"#);
        assert!(matches!(m.body(), Body::Other { key, .. } if key == "fact"));
    }

    #[test]
    fn non_tuple_payloads_are_errors() {
        assert!(Message::from_payload(b"[1,2]").is_err());
        assert!(Message::from_payload(b"not json").is_err());
        assert!(Message::from_payload(br#"["a","b",1,2]"#).is_err());
    }
}
