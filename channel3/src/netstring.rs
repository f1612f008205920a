//! Netstring framing (`LEN:BYTES,`) with a streaming decoder that never fails.
//!
//! The decoder separates a byte stream into [`Chunk::Frame`]s and [`Chunk::Garbage`]. Anything
//! that is not a well-formed netstring within the size cap (a bad length prefix, a length over the
//! cap, a missing trailing comma, stray text) is garbage. Resynchronisation retries from the
//! *next byte* after a failed frame start, never from past the claimed length, so a valid frame
//! that follows garbage is always recovered, even when stray digits run into its length prefix.
//! The claimed length is checked against the cap before any buffer is reserved for it.

use bytes::{Buf, Bytes, BytesMut};

/// The default cap on one frame's payload: 16 MiB.
pub const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Garbage is handed out in pieces of at most this many bytes, so memory stays bounded while a
/// long run of junk streams past.
pub const MAX_GARBAGE_CHUNK: usize = 64 * 1024;

/// One unit cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// The payload of a well-formed netstring.
    Frame(Bytes),
    /// Bytes that are not part of any well-formed netstring, in stream order.
    Garbage(Bytes),
}

/// Appends `payload` as a netstring to `out`.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 12);
    // itoa by hand would save a few ns; `write!` on a Vec cannot fail.
    use std::io::Write as _;
    let _ = write!(out, "{}:", payload.len());
    out.extend_from_slice(payload);
    out.push(b',');
}

/// Returns `payload` as a netstring.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 12);
    encode_into(payload, &mut out);
    out
}

/// A streaming netstring decoder with a frame size cap.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_len: usize,
    max_digits: usize,
    /// Bytes at the front of the buffer already known to be garbage.
    garbage: usize,
}

enum Attempt {
    /// A frame: total length on the wire and payload length.
    Frame { total: usize, len: usize },
    /// Could become a frame once more bytes arrive (`need` = total bytes the frame needs).
    Incomplete { need: Option<usize> },
    /// Cannot be a frame start.
    Invalid,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder {
    /// A decoder that treats frames whose payload exceeds `max_len` bytes as garbage.
    pub fn new(max_len: usize) -> Self {
        let max_digits = max_len.max(1).to_string().len();
        Self {
            max_len,
            max_digits,
            garbage: 0,
        }
    }

    /// The frame size cap.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Cuts the next chunk from the front of `buf`, or returns `None` when more bytes are needed.
    /// At end of stream call [`Decoder::decode_eof`] instead, until it returns `None`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Option<Chunk> {
        self.next_chunk(buf, false)
    }

    /// Like [`Decoder::decode`], but no more bytes will come: incomplete frames are garbage.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Option<Chunk> {
        self.next_chunk(buf, true)
    }

    fn next_chunk(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Chunk> {
        loop {
            if self.garbage >= MAX_GARBAGE_CHUNK {
                return Some(self.take_garbage(buf, MAX_GARBAGE_CHUNK));
            }
            let rest = &buf[self.garbage..];
            if rest.is_empty() {
                return (self.garbage > 0).then(|| self.take_garbage(buf, self.garbage));
            }
            match self.attempt(rest) {
                Attempt::Frame { total, len } => {
                    if self.garbage > 0 {
                        // Hand out the garbage first; the frame is cut on the next call.
                        return Some(self.take_garbage(buf, self.garbage));
                    }
                    let prefix = total - len - 1;
                    buf.advance(prefix);
                    let payload = buf.split_to(len).freeze();
                    buf.advance(1);
                    return Some(Chunk::Frame(payload));
                }
                Attempt::Incomplete { need } if !eof => {
                    if self.garbage > 0 {
                        return Some(self.take_garbage(buf, self.garbage));
                    }
                    if let Some(need) = need {
                        buf.reserve(need.saturating_sub(buf.len()));
                    }
                    return None;
                }
                Attempt::Incomplete { .. } | Attempt::Invalid => {
                    self.garbage += skip_len(rest);
                }
            }
        }
    }

    fn take_garbage(&mut self, buf: &mut BytesMut, n: usize) -> Chunk {
        let n = n.min(self.garbage);
        self.garbage -= n;
        Chunk::Garbage(buf.split_to(n).freeze())
    }

    fn attempt(&self, s: &[u8]) -> Attempt {
        let digits = s
            .iter()
            .take(self.max_digits + 1)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > self.max_digits || (digits > 1 && s[0] == b'0') {
            return Attempt::Invalid;
        }
        if digits == s.len() {
            return Attempt::Incomplete { need: None };
        }
        if s[digits] != b':' {
            return Attempt::Invalid;
        }
        // At most `max_digits` digits, so this cannot overflow a usize.
        let len = s[..digits]
            .iter()
            .fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
        if len > self.max_len {
            return Attempt::Invalid;
        }
        let total = digits + 1 + len + 1;
        if s.len() < total {
            return Attempt::Incomplete { need: Some(total) };
        }
        if s[total - 1] != b',' {
            return Attempt::Invalid;
        }
        Attempt::Frame { total, len }
    }
}

/// How many bytes to skip after a failed frame start: one byte when it starts with a digit (the
/// next digit may start the real prefix), otherwise the whole run up to the next digit.
fn skip_len(s: &[u8]) -> usize {
    if s[0].is_ascii_digit() {
        1
    } else {
        s.iter().position(u8::is_ascii_digit).unwrap_or(s.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(input: &[u8], max: usize) -> Vec<Chunk> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(c) = d.decode(&mut buf) {
            out.push(c);
        }
        while let Some(c) = d.decode_eof(&mut buf) {
            out.push(c);
        }
        out
    }

    fn frame(s: &str) -> Chunk {
        Chunk::Frame(Bytes::copy_from_slice(s.as_bytes()))
    }
    fn junk(s: &str) -> Chunk {
        Chunk::Garbage(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn frames_back_to_back() {
        assert_eq!(
            cut(b"5:hello,0:,3:abc,", 100),
            vec![frame("hello"), frame(""), frame("abc")]
        );
    }

    #[test]
    fn encode_prefix_counts_bytes() {
        assert_eq!(encode("héllo".as_bytes()), b"6:h\xc3\xa9llo,".to_vec());
    }

    #[test]
    fn stray_digits_before_a_prefix_do_not_swallow_the_frame() {
        let chunks = cut(b"xx15:hello,", 100);
        assert_eq!(chunks.last(), Some(&frame("hello")));
        let junk_bytes: Vec<u8> = chunks[..chunks.len() - 1]
            .iter()
            .flat_map(|c| match c {
                Chunk::Garbage(b) => b.to_vec(),
                Chunk::Frame(f) => panic!("unexpected frame {f:?}"),
            })
            .collect();
        assert_eq!(junk_bytes, b"xx1");
    }

    #[test]
    fn missing_comma_resyncs_from_next_byte() {
        assert_eq!(
            cut(b"5:helloX3:abc,", 100),
            vec![junk("5:helloX"), frame("abc")]
        );
    }

    #[test]
    fn oversized_claim_is_garbage_without_reserving_it() {
        let mut d = Decoder::new(10);
        let mut buf = BytesMut::from(&b"99999999999:abc"[..]);
        let cap_before = buf.capacity();
        let _ = d.decode(&mut buf);
        assert!(buf.capacity() <= cap_before.max(64));
        assert_eq!(cut(b"11:hello world,2:ok,", 10)[1..], [frame("ok")]);
    }

    #[test]
    fn leading_zero_is_invalid() {
        assert_eq!(cut(b"05:hello,", 100), vec![junk("0"), frame("hello")]);
    }

    #[test]
    fn incomplete_frame_waits_then_completes() {
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::from(&b"5:hel"[..]);
        assert_eq!(d.decode(&mut buf), None);
        buf.extend_from_slice(b"lo,");
        assert_eq!(d.decode(&mut buf), Some(frame("hello")));
    }

    #[test]
    fn truncated_frame_at_eof_is_garbage() {
        assert_eq!(cut(b"5:hel", 100), vec![junk("5:hel")]);
    }

    #[test]
    fn long_garbage_is_chunked() {
        let input = vec![b'x'; MAX_GARBAGE_CHUNK * 2 + 5];
        let chunks = cut(&input, 100);
        assert_eq!(chunks.len(), 3);
        assert!(chunks
            .iter()
            .all(|c| matches!(c, Chunk::Garbage(b) if b.len() <= MAX_GARBAGE_CHUNK)));
    }
}
