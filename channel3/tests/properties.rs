//! Property tests: round trips, and a decoder that never panics and always recovers valid frames.
use bytes::BytesMut;
use channel3::{netstring, Body, Chunk, Decoder, Line, Message, Reader};
use proptest::prelude::*;

fn chunks_of(input: &[u8], split_every: usize, max: usize) -> Vec<Chunk> {
    let mut d = Decoder::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(split_every.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(c) = d.decode(&mut buf) {
            out.push(c);
        }
    }
    while let Some(c) = d.decode_eof(&mut buf) {
        out.push(c);
    }
    out
}

fn bytes_of(chunks: &[Chunk]) -> usize {
    chunks
        .iter()
        .map(|c| match c {
            Chunk::Frame(b) => b.len(),
            Chunk::Garbage(b) => b.len(),
        })
        .sum()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_account_for_every_byte(input in proptest::collection::vec(any::<u8>(), 0..2048), split in 1usize..64) {
        let chunks = chunks_of(&input, split, 256);
        // Garbage keeps every byte; frames lose exactly their prefix and comma.
        let frames: Vec<_> = chunks.iter().filter_map(|c| match c { Chunk::Frame(b) => Some(b.len()), _ => None }).collect();
        let overhead: usize = frames.iter().map(|l| l.to_string().len() + 2).sum();
        prop_assert_eq!(bytes_of(&chunks) + overhead, input.len());
    }

    #[test]
    fn valid_frames_between_garbage_are_recovered(
        before in proptest::collection::vec(any::<u8>().prop_filter("no colon", |b| *b != b':'), 0..64),
        after in proptest::collection::vec(any::<u8>().prop_filter("no colon", |b| *b != b':'), 0..64),
        line in ".{0,80}",
        split in 1usize..32,
    ) {
        let msg = Message::new(Some("jim".into()), &Body::Stdout(Line { line, encoding: None }));
        let mut input = before.clone();
        msg.encode_into(&mut input);
        input.extend_from_slice(&after);
        let recovered: Vec<Message> = Reader::new(&input[..]).map(Result::unwrap).filter(|m| m.key != "garbage").collect();
        prop_assert_eq!(recovered, vec![msg.clone()]);
        let payload = msg.to_payload();
        let frames: Vec<_> = chunks_of(&input, split, 4096).into_iter().filter_map(|c| match c { Chunk::Frame(b) => Some(b), _ => None }).collect();
        prop_assert!(frames.iter().any(|f| f[..] == payload[..]));
    }

    #[test]
    fn message_round_trip(name in proptest::option::of("[a-z/]{1,12}"), key in "[a-z]{1,10}", text in any::<String>()) {
        let msg = Message::new(name, &Body::Other { key: key.clone(), data: serde_json::json!({"text": text}) });
        let framed = msg.to_frame();
        let back: Vec<Message> = Reader::new(&framed[..]).map(Result::unwrap).collect();
        prop_assert_eq!(back, vec![msg]);
    }

    #[test]
    fn netstring_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), split in 1usize..50) {
        let mut input = Vec::new();
        for p in &payloads { netstring::encode_into(p, &mut input); }
        let frames: Vec<Vec<u8>> = chunks_of(&input, split, 1024).into_iter().map(|c| match c {
            Chunk::Frame(b) => b.to_vec(),
            Chunk::Garbage(g) => panic!("garbage from valid input: {g:?}"),
        }).collect();
        prop_assert_eq!(frames, payloads);
    }
}

#[test]
fn binary_lines_round_trip_as_base64() {
    let bytes = b"\xff\xfebinary\n";
    let l = Line::from_bytes(bytes);
    assert!(l.encoding.is_some());
    assert_eq!(l.bytes(), bytes.to_vec());
}

#[test]
fn garbage_then_frames_from_a_reader() {
    let mut input = b"hello there\n".to_vec();
    Message::new(
        None,
        &Body::Step {
            label: "one".into(),
        },
    )
    .encode_into(&mut input);
    input.extend_from_slice(b"3:abc,");
    let msgs: Vec<Message> = Reader::new(&input[..]).map(Result::unwrap).collect();
    let keys: Vec<&str> = msgs.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["garbage", "step", "garbage"]);
    match msgs[0].body() {
        Body::Garbage(l) => assert_eq!(l.bytes(), b"hello there\n".to_vec()),
        other => panic!("{other:?}"),
    }
    // A non-JSON payload's garbage keeps the frame as received.
    match msgs[2].body() {
        Body::Garbage(l) => assert_eq!(l.bytes(), b"3:abc,".to_vec()),
        other => panic!("{other:?}"),
    }
}
