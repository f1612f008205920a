//! Frames on a byte stream: netstrings of JSON, cut by channel3's netstring decoder (the one
//! netstring reader of the project), strict where channel3 is forgiving: a peer that sends
//! anything but well-formed netstrings within the cap is not a peer of this protocol, so the
//! first garbage byte is an error and the connection is closed.

use bytes::BytesMut;
use channel3::netstring::{Chunk, Decoder};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// The cap on one frame's payload.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The connection failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// Not a netstring.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// Over the cap.
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte cap")]
    TooLarge(usize),
    /// Not a frame of this protocol.
    #[error("not a protocol frame: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads frames from `R`, keeping what it read past the current frame for the next one. Every
/// read is cancel-safe (bytes read are kept in the buffer), so a read may be raced against a
/// timer.
#[derive(Debug)]
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    decoder: Decoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader with the protocol's cap, [`MAX_FRAME`].
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
            decoder: Decoder::new(MAX_FRAME),
        }
    }

    /// The stream (to write on it, when it is one).
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next netstring's payload; `Ok(None)` at a clean end of stream (between frames).
    pub async fn payload(&mut self) -> Result<Option<bytes::Bytes>, FrameError> {
        loop {
            check_prefix(&self.buf)?;
            match self.decoder.decode(&mut self.buf) {
                Some(Chunk::Frame(p)) => return Ok(Some(p)),
                Some(Chunk::Garbage(g)) => return Err(garbage(&g)),
                None => {}
            }
            if self.inner.read_buf(&mut self.buf).await? == 0 {
                return match self.decoder.decode_eof(&mut self.buf) {
                    None => Ok(None),
                    Some(Chunk::Frame(p)) => Ok(Some(p)),
                    Some(Chunk::Garbage(_)) => {
                        Err(FrameError::Malformed("the connection ended inside a frame"))
                    }
                };
            }
        }
    }

    /// The next payload parsed as `T`; `Ok(None)` at a clean end of stream.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        match self.payload().await? {
            None => Ok(None),
            Some(p) => Ok(Some(serde_json::from_slice(&p)?)),
        }
    }
}

/// What is wrong with a frame's start that the decoder would only call garbage: a length over
/// the cap (named, before anything is buffered for it) or a malformed prefix.
fn check_prefix(buf: &[u8]) -> Result<(), FrameError> {
    let max_digits = MAX_FRAME.to_string().len();
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 1 && buf[0] == b'0' {
        return Err(FrameError::Malformed("leading zero in length"));
    }
    if digits > max_digits {
        return Err(FrameError::Malformed("length prefix too long"));
    }
    if digits > 0 && buf.get(digits) == Some(&b':') {
        let len: usize = std::str::from_utf8(&buf[..digits])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
    }
    Ok(())
}

/// Names what is wrong with bytes the decoder could not frame.
fn garbage(g: &[u8]) -> FrameError {
    if g.first().is_some_and(u8::is_ascii_digit) {
        FrameError::Malformed("missing trailing ','")
    } else {
        FrameError::Malformed("expected a length prefix")
    }
}

/// `value` as a netstring of JSON.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let payload = serde_json::to_vec(value).expect("protocol values serialize");
    channel3::netstring::encode(&payload)
}

/// Writes `value` as one frame and flushes.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize + ?Sized>(
    w: &mut W,
    value: &T,
) -> std::io::Result<()> {
    w.write_all(&encode(value)).await?;
    w.flush().await
}

impl<S: AsyncRead + AsyncWrite> FrameReader<S> {
    /// Splits the stream in two: frames keep coming from the reader (with what it already
    /// read past the last frame), writes go to the write half.
    pub fn split(self) -> (FrameReader<tokio::io::ReadHalf<S>>, tokio::io::WriteHalf<S>) {
        let (r, w) = tokio::io::split(self.inner);
        let reader = FrameReader {
            inner: r,
            buf: self.buf,
            decoder: self.decoder,
        };
        (reader, w)
    }
}
