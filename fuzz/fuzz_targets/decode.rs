//! Feeds arbitrary bytes to the channel3 decoder, split at an arbitrary point: it must never
//! panic, must account for every byte, and must re-decode its own frames identically.
#![no_main]
use bytes::BytesMut;
use channel3::{Chunk, Decoder, Reader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut d = Decoder::new(4096);
    let mut buf = BytesMut::new();
    let mut seen = 0usize;
    let mut account = |c: Chunk| match c {
        Chunk::Frame(b) => seen += b.len() + b.len().to_string().len() + 2,
        Chunk::Garbage(b) => seen += b.len(),
    };
    for piece in data.chunks(split) {
        buf.extend_from_slice(piece);
        while let Some(c) = d.decode(&mut buf) {
            account(c);
        }
    }
    while let Some(c) = d.decode_eof(&mut buf) {
        account(c);
    }
    assert_eq!(seen, data.len());
    for m in Reader::new(data).map(Result::unwrap) {
        let again: Vec<_> = Reader::new(&m.to_frame()[..]).map(Result::unwrap).collect();
        assert_eq!(again, vec![m]);
    }
});
