//! The channel3 protocol: the structured log channel every ingot program may write on fd 3.
//!
//! A channel3 stream is a sequence of [netstrings](netstring) (`LEN:BYTES,`) whose bytes are a
//! JSON array `[NAME, KEY, DATA]` (a [`Message`]). `NAME` is the name of the process that wrote
//! it (`null` for the writer itself); runners [relabel](Message::relabel) what a child writes so
//! names form a path down the process tree (`["bob", ...]` from child `jim` becomes
//! `["jim/bob", ...]`).
//!
//! This crate is the wire contract and nothing else: it knows the framing, the tuple, the typed
//! [`Body`] of the keys ingot defines, a streaming [`Decoder`](netstring::Decoder) that never
//! fails (bad bytes become one `garbage` message and reading resynchronises), a blocking
//! [`Reader`], a tokio [`Channel3Codec`], and a [`Writer`].
//!
//! ```
//! use channel3::{Body, Message, Reader};
//!
//! let stream = br#"57:["jim", "stdout", {"line": "This is a line of stdout\n"}],"#;
//! let messages: Vec<Message> = Reader::new(&stream[..]).collect::<Result<_, _>>().unwrap();
//! assert_eq!(messages[0].name.as_deref(), Some("jim"));
//! assert!(matches!(messages[0].body(), Body::Stdout(l) if l.line == "This is a line of stdout\n"));
//! ```
#![deny(missing_docs)]

mod body;
mod codec;
mod event;
mod message;
pub mod netstring;
mod reader;
mod writer;

pub use body::{Body, Encoding, FileUpload, Line, SignalInfo, Spawn, MAX_LINE};
pub use codec::Channel3Codec;
pub use event::{Event, Timestamp};
pub use message::{Message, MessageError};
pub use netstring::{Chunk, Decoder, DEFAULT_MAX_FRAME};
pub use reader::Reader;
pub use writer::Writer;
