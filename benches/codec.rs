//! Wire codec: encoding and decoding one Withdraw request and its Reply, the two frames of the
//! hot path.
//!
//! `cargo bench --bench codec`

use actor_bank::codec::{
    decode_wire, encode_frame, encode_wire, FrameCodec, FRAME_BYTES_MAX_DEFAULT,
};
use actor_bank::protocol::{
    Body, ClientMessage, Operation, Reply, Request, RequestId, ServerMessage, Status,
};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// A request id like the swarm's: a large random client id (nine varint bytes) and a sequence
/// number in the thousands.
fn request_id() -> RequestId {
    RequestId {
        client: 0x3a7f_12c4_9e01_55d2,
        sequence: 48_213,
    }
}

fn withdraw() -> ClientMessage {
    ClientMessage::Request(Request {
        id: request_id(),
        operation: Operation::Withdraw { amount: 250 },
    })
}

fn reply() -> ServerMessage {
    ServerMessage::Reply(Reply {
        id: request_id(),
        status: Status::Approved,
        body: Body::Balance(987_654),
    })
}

fn bench_codec(c: &mut Criterion) {
    let request = withdraw();
    let answer = reply();
    let request_frame = encode_frame(&request).expect("encode request");
    let reply_frame = encode_frame(&answer).expect("encode reply");
    let request_body = encode_wire(&request).expect("encode request body");
    let reply_body = encode_wire(&answer).expect("encode reply body");
    eprintln!(
        "frame sizes: withdraw request {} bytes, reply {} bytes (4-byte length prefix included)",
        request_frame.len(),
        reply_frame.len()
    );

    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));

    group.bench_function("encode_frame/withdraw", |b| {
        b.iter(|| encode_frame(black_box(&request)).expect("encode"))
    });
    group.bench_function("encode_frame/reply", |b| {
        b.iter(|| encode_frame(black_box(&answer)).expect("encode"))
    });
    group.bench_function("decode_wire/withdraw", |b| {
        b.iter(|| decode_wire::<ClientMessage>(black_box(&request_body)).expect("decode"))
    });
    group.bench_function("decode_wire/reply", |b| {
        b.iter(|| decode_wire::<ServerMessage>(black_box(&reply_body)).expect("decode"))
    });

    // The stream codecs the server and client actually use: FrameCodec over a BytesMut.
    group.bench_function("frame_codec_decode/withdraw", |b| {
        let mut codec: FrameCodec<ClientMessage, ServerMessage> =
            FrameCodec::new(FRAME_BYTES_MAX_DEFAULT);
        let mut buffer = BytesMut::with_capacity(1024);
        b.iter(|| {
            buffer.extend_from_slice(&request_frame);
            codec
                .decode(&mut buffer)
                .expect("decode")
                .expect("a whole frame")
        })
    });
    group.bench_function("frame_codec_decode/reply", |b| {
        let mut codec: FrameCodec<ServerMessage, ClientMessage> =
            FrameCodec::new(FRAME_BYTES_MAX_DEFAULT);
        let mut buffer = BytesMut::with_capacity(1024);
        b.iter(|| {
            buffer.extend_from_slice(&reply_frame);
            codec
                .decode(&mut buffer)
                .expect("decode")
                .expect("a whole frame")
        })
    });
    group.bench_function("frame_codec_encode/reply", |b| {
        let mut codec: FrameCodec<ClientMessage, ServerMessage> =
            FrameCodec::new(FRAME_BYTES_MAX_DEFAULT);
        let mut buffer = BytesMut::with_capacity(1024);
        b.iter(|| {
            buffer.clear();
            codec.encode(answer.clone(), &mut buffer).expect("encode");
            black_box(buffer.len())
        })
    });
    group.bench_function("round_trip/withdraw_and_reply", |b| {
        // What one request costs the two ends together: the client encodes the request, the
        // server decodes it and encodes the reply, the client decodes the reply.
        let mut server: FrameCodec<ClientMessage, ServerMessage> =
            FrameCodec::new(FRAME_BYTES_MAX_DEFAULT);
        let mut client: FrameCodec<ServerMessage, ClientMessage> =
            FrameCodec::new(FRAME_BYTES_MAX_DEFAULT);
        let mut upstream = BytesMut::with_capacity(1024);
        let mut downstream = BytesMut::with_capacity(1024);
        b.iter(|| {
            client
                .encode(request.clone(), &mut upstream)
                .expect("encode");
            let decoded = server
                .decode(&mut upstream)
                .expect("decode")
                .expect("frame");
            black_box(decoded);
            server
                .encode(answer.clone(), &mut downstream)
                .expect("encode");
            client
                .decode(&mut downstream)
                .expect("decode")
                .expect("frame")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_codec
}
criterion_main!(benches);
