//! A tokio codec for channel3 streams (use with `FramedRead` / `FramedWrite`).

use std::io;

use bytes::BytesMut;

use crate::netstring::Decoder;
use crate::reader::chunk_to_message;
use crate::Message;

/// Decodes channel3 messages (garbage included, never an error for bad input) and encodes them.
#[derive(Debug, Clone, Default)]
pub struct Channel3Codec {
    decoder: Decoder,
}

impl Channel3Codec {
    /// A codec with a frame cap of `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            decoder: Decoder::new(max_len),
        }
    }
}

impl tokio_util::codec::Decoder for Channel3Codec {
    type Item = Message;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Message>> {
        Ok(self.decoder.decode(src).map(chunk_to_message))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> io::Result<Option<Message>> {
        Ok(self.decoder.decode_eof(src).map(chunk_to_message))
    }
}

impl tokio_util::codec::Encoder<&Message> for Channel3Codec {
    type Error = io::Error;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> io::Result<()> {
        let payload = item.to_payload();
        dst.reserve(payload.len() + 12);
        dst.extend_from_slice(payload.len().to_string().as_bytes());
        dst.extend_from_slice(b":");
        dst.extend_from_slice(&payload);
        dst.extend_from_slice(b",");
        Ok(())
    }
}
