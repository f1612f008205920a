//! A blocking channel3 reader.

use std::io::{self, Read};

use bytes::BytesMut;

use crate::netstring::{Chunk, Decoder};
use crate::Message;

/// Reads messages from a byte stream. It never yields an error for bad input: malformed bytes
/// come out as `garbage` messages. Only I/O errors of the underlying reader are errors.
pub struct Reader<R> {
    inner: R,
    decoder: Decoder,
    buf: BytesMut,
    eof: bool,
}

impl<R: Read> Reader<R> {
    /// A reader with the default 16 MiB frame cap.
    pub fn new(inner: R) -> Self {
        Self::with_decoder(inner, Decoder::default())
    }

    /// A reader with a given decoder (and so frame cap).
    pub fn with_decoder(inner: R, decoder: Decoder) -> Self {
        Self {
            inner,
            decoder,
            buf: BytesMut::with_capacity(64 * 1024),
            eof: false,
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        let start = self.buf.len();
        let want = self.buf.capacity().saturating_sub(start).max(64 * 1024);
        self.buf.resize(start + want, 0);
        loop {
            match self.inner.read(&mut self.buf[start..]) {
                Ok(n) => {
                    self.buf.truncate(start + n);
                    self.eof = n == 0;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(start);
                    return Err(e);
                }
            }
        }
    }
}

/// Turns a decoded chunk into a message: frames that are not tuples are garbage too.
pub(crate) fn chunk_to_message(chunk: Chunk) -> Message {
    match chunk {
        Chunk::Frame(payload) => Message::from_received(payload.clone()).unwrap_or_else(|_| {
            let mut framed = Vec::with_capacity(payload.len() + 12);
            crate::netstring::encode_into(&payload, &mut framed);
            Message::garbage(&framed)
        }),
        Chunk::Garbage(bytes) => Message::garbage(&bytes),
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = io::Result<Message>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let chunk = if self.eof {
                self.decoder.decode_eof(&mut self.buf)
            } else {
                self.decoder.decode(&mut self.buf)
            };
            if let Some(chunk) = chunk {
                return Some(Ok(chunk_to_message(chunk)));
            }
            if self.eof {
                return None;
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
        }
    }
}
