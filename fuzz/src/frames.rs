//! Properties of the frame decoder, checked on arbitrary bytes.
//!
//! Used by the `frame_decode` fuzz target and by the fuzz smoke test of the main package, which
//! includes this file by path. Any violation panics.
//!
//! For each input, and for the two message types (what the server decodes, what the client
//! decodes), with the default frame limit and with a tiny one:
//! - [`FrameCodec`] (the client's decoder) agrees with [`reference`], the server reader's way of
//!   decoding (declared length checked first, then the body decoded whole), on the messages
//!   decoded and on how the stream ends;
//! - it agrees with itself however the bytes are split into reads (whole, one byte at a time, an
//!   irregular pattern);
//! - a refused frame reports the length its prefix declared, and that length is over the limit;
//! - every decoded message encodes again and decodes to the same value, and the canonical
//!   encoding is never longer than the bytes it came from;
//! - nothing panics.

use actor_bank::codec::{
    self, CodecError, FrameCodec, FRAME_BYTES_LIMIT, FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER_BYTES,
};
use actor_bank::protocol::{ClientMessage, ServerMessage};
use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use tokio_util::codec::Decoder;

/// How a stream of frames ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Every byte was used: the next frame has not started, or is not complete yet.
    NeedMore,
    /// A frame declared this body length, over the limit.
    TooLarge(usize),
    /// A complete body did not decode (malformed, or bytes left over).
    Malformed,
}

/// The messages decoded before the stream ended, and how it ended.
pub type Decoded<T> = (Vec<T>, End);

/// Decodes like the server's reader: the 4-byte length is checked against the limit before the
/// body is looked at, then the body is decoded whole.
pub fn reference<T: DeserializeOwned>(data: &[u8], frame_bytes_max: usize) -> Decoded<T> {
    let mut messages = Vec::new();
    let mut rest = data;
    loop {
        if rest.len() < FRAME_HEADER_BYTES {
            return (messages, End::NeedMore);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header.copy_from_slice(&rest[..FRAME_HEADER_BYTES]);
        let length = match codec::declared_body_bytes(header, frame_bytes_max) {
            Ok(length) => length,
            Err(CodecError::FrameTooLarge {
                declared_bytes,
                limit_bytes,
            }) => {
                assert!(
                    declared_bytes > limit_bytes,
                    "refused {declared_bytes} bytes under the limit {limit_bytes}"
                );
                assert_eq!(declared_bytes, u32::from_be_bytes(header) as usize);
                return (messages, End::TooLarge(declared_bytes));
            }
            Err(other) => panic!("declared_body_bytes failed oddly: {other}"),
        };
        let body = &rest[FRAME_HEADER_BYTES..];
        if body.len() < length {
            return (messages, End::NeedMore);
        }
        match codec::decode_wire::<T>(&body[..length]) {
            Ok(message) => messages.push(message),
            Err(CodecError::Malformed(_) | CodecError::TrailingBytes { .. }) => {
                return (messages, End::Malformed)
            }
            Err(other) => panic!("decode_wire failed oddly: {other}"),
        }
        rest = &body[length..];
    }
}

/// Feeds `data` to a [`FrameCodec`] in reads of the given sizes (cycled), calling `decode` after
/// each read until it asks for more bytes, as a framed stream does.
pub fn chunked<T: DeserializeOwned>(
    data: &[u8],
    frame_bytes_max: usize,
    read_sizes: &[usize],
) -> Decoded<T> {
    let mut codec: FrameCodec<T, ()> = FrameCodec::new(frame_bytes_max);
    let mut buffer = BytesMut::new();
    let mut messages = Vec::new();
    let mut offset = 0;
    let mut turn = 0;
    while offset < data.len() {
        let size = read_sizes[turn % read_sizes.len()]
            .max(1)
            .min(data.len() - offset);
        turn += 1;
        buffer.extend_from_slice(&data[offset..offset + size]);
        offset += size;
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(CodecError::FrameTooLarge {
                    declared_bytes,
                    limit_bytes,
                }) => {
                    assert!(
                        declared_bytes > limit_bytes,
                        "refused {declared_bytes} bytes under the limit {limit_bytes}"
                    );
                    return (messages, End::TooLarge(declared_bytes));
                }
                Err(CodecError::Malformed(_) | CodecError::TrailingBytes { .. }) => {
                    return (messages, End::Malformed)
                }
                Err(other) => panic!("the frame decoder failed oddly: {other}"),
            }
        }
    }
    (messages, End::NeedMore)
}

/// A decoded message survives encoding and decoding again unchanged.
fn round_trips<T>(message: &T)
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    let body = codec::encode_wire(message).expect("a decoded message encodes");
    let again: T = codec::decode_wire(&body).expect("an encoded message decodes");
    assert_eq!(&again, message, "round trip changed the message");
    let frame = codec::encode_frame(message).expect("a decoded message frames");
    let (messages, end) = reference::<T>(&frame, FRAME_BYTES_LIMIT);
    assert_eq!(end, End::NeedMore);
    assert_eq!(messages.len(), 1);
}

fn check_type<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    // The whole input as one body.
    if let Ok(message) = codec::decode_wire::<T>(data) {
        round_trips(&message);
        let canonical = codec::encode_wire(&message).unwrap();
        assert!(
            canonical.len() <= data.len(),
            "{} canonical bytes from {} input bytes",
            canonical.len(),
            data.len()
        );
    }
    // The input as a stream of frames, under the default limit and a tiny one.
    let tiny = 1 + data.first().map_or(0, |byte| *byte as usize % 64);
    for limit in [FRAME_BYTES_MAX_DEFAULT, tiny] {
        let expected = reference::<T>(data, limit);
        for message in &expected.0 {
            round_trips(message);
        }
        assert_eq!(chunked::<T>(data, limit, &[usize::MAX]), expected, "whole");
        assert_eq!(
            chunked::<T>(data, limit, &[3, 1, 7, 2, 64, 5]),
            expected,
            "irregular reads"
        );
        if data.len() <= 2048 {
            assert_eq!(chunked::<T>(data, limit, &[1]), expected, "byte by byte");
        }
    }
}

/// Runs every check on `data`; panics on the first violation.
pub fn check(data: &[u8]) {
    check_type::<ClientMessage>(data);
    check_type::<ServerMessage>(data);
}
