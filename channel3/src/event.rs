//! A message with the time it was received.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Message;

/// Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// As a `SystemTime`.
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(self.0.unsigned_abs())
        }
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(d.as_micros() as i64),
            Err(e) => Self(-(e.duration().as_micros() as i64)),
        }
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            humantime::format_rfc3339_micros(self.to_system_time())
        )
    }
}

/// A channel3 message stamped with the time its reader received it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// When the message was received.
    pub ts: Timestamp,
    /// The message.
    #[serde(flatten, serialize_with = "serialize_message")]
    pub message: Message,
}

fn serialize_message<S: serde::Serializer>(m: &Message, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(3))?;
    map.serialize_entry("name", &m.name)?;
    map.serialize_entry("key", &m.key)?;
    map.serialize_entry("data", &m.data)?;
    map.end()
}

impl Event {
    /// Stamps `message` with the current time.
    pub fn now(message: Message) -> Self {
        Self {
            ts: Timestamp::now(),
            message,
        }
    }
}
