//! A blocking channel3 writer.

use std::io::{self, Write};

use crate::Message;

/// Writes messages as netstrings; each message goes out in one `write_all`, so frames from
/// several writers sharing a pipe never interleave below `PIPE_BUF` and stay whole above it as
/// long as each writer owns the descriptor.
pub struct Writer<W> {
    inner: W,
    scratch: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Wraps a byte sink.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            scratch: Vec::new(),
        }
    }

    /// Writes one message and flushes it.
    pub fn send(&mut self, message: &Message) -> io::Result<()> {
        self.scratch.clear();
        message.encode_into(&mut self.scratch);
        self.inner.write_all(&self.scratch)?;
        self.inner.flush()
    }

    /// The underlying sink.
    pub fn into_inner(self) -> W {
        self.inner
    }
}
