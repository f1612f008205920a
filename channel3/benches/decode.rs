//! Decoder throughput: large frames (bytes/s) and small events (events/s).
use bytes::BytesMut;
use channel3::{Body, Channel3Codec, Line, Message};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder as _;

fn stream_of(msg: &Message, count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..count {
        msg.encode_into(&mut out);
    }
    out
}

fn decode_all(mut buf: BytesMut) -> usize {
    let mut codec = Channel3Codec::default();
    let mut n = 0;
    while let Ok(Some(m)) = codec.decode(&mut buf) {
        std::hint::black_box(&m);
        n += 1;
    }
    n
}

fn large(c: &mut Criterion) {
    let line = "x".repeat(1024 * 1024 - 1) + "\n";
    let msg = Message::new(
        None,
        &Body::Stdout(Line {
            line,
            encoding: None,
        }),
    );
    let stream = stream_of(&msg, 64);
    let mut g = c.benchmark_group("decode_large_1MiB_frames");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    // The input buffer is made in the (untimed) setup: only decoding is measured.
    g.bench_function("64MiB", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            decode_all,
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn small(c: &mut Criterion) {
    let msg = Message::new(
        None,
        &Body::Stdout(Line {
            line: "hello world\n".into(),
            encoding: None,
        }),
    );
    let count = 100_000;
    let stream = stream_of(&msg, count);
    let mut g = c.benchmark_group("decode_small_events");
    g.throughput(Throughput::Elements(count as u64));
    g.bench_function("100k", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            decode_all,
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, large, small);
criterion_main!(benches);
