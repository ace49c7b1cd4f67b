//! The one place where bytes are encoded and decoded.
//!
//! Everything that crosses a process boundary, frames on the wire and records on disk, is bincode 2
//! with the *standard* configuration (little-endian, variable-length integers). Keeping it all here
//! means the format can be swapped in one module.
//!
//! Wire frames are a 4-byte big-endian length followed by that many body bytes. The declared length
//! is checked against a maximum before any buffer is reserved ([`FrameReader`], which the server's
//! connections and the client's [`FrameCodec`] share), and the body is
//! decoded with a hard size limit, so a hostile peer cannot make the server allocate more than the
//! frame limit.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bytes::{Buf, BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;
use tokio_util::codec::{Decoder, Encoder};

/// The hard ceiling for any frame body, whatever the configuration says. Decoding never reserves
/// more than this for a single value.
pub const FRAME_BYTES_LIMIT: usize = 1024 * 1024;

/// The default maximum frame body the server accepts (configurable up to [`FRAME_BYTES_LIMIT`]).
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024;

/// Bytes of the length prefix in front of every wire frame.
pub const FRAME_HEADER_BYTES: usize = 4;

/// What bincode may count beyond the body's own bytes while decoding one wire message. bincode's
/// limit counts memory, not wire bytes: every integer counts its in-memory size (8 for a `u64`
/// that took one byte on the wire), every string its length plus 8 for its length prefix. The
/// messages of [`crate::protocol`] have a few dozen integers at most, so this margin is far more
/// than any of them can add, and a body of up to [`FRAME_BYTES_LIMIT`] bytes always decodes
/// (`tests/frame_limit.rs` checks every message with strings at the exact limit).
pub const WIRE_DECODE_MARGIN_BYTES: usize = 4 * 1024;

/// bincode's limit for decoding a wire body: the largest body plus [`WIRE_DECODE_MARGIN_BYTES`].
/// It bounds what a hostile body can make the decoder allocate (a string that claims to be longer
/// than the body is refused before anything is reserved for more than this).
const WIRE_DECODE_BYTES_LIMIT: usize = FRAME_BYTES_LIMIT + WIRE_DECODE_MARGIN_BYTES;

/// The upper bound on what a record or snapshot decoded from the data directory may claim. Those
/// bytes have already passed a CRC check, so the bound only guards against our own bugs.
const STORED_BYTES_LIMIT: usize = 1 << 32;

type WireConfig = Configuration<LittleEndian, Varint, Limit<WIRE_DECODE_BYTES_LIMIT>>;
type StoredConfig = Configuration<LittleEndian, Varint, Limit<STORED_BYTES_LIMIT>>;

const WIRE: WireConfig = bincode::config::standard().with_limit::<WIRE_DECODE_BYTES_LIMIT>();
const STORED: StoredConfig = bincode::config::standard().with_limit::<STORED_BYTES_LIMIT>();

/// Why bytes could not become a value, or a value could not become bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The peer declared a frame longer than the limit; nothing was allocated for it.
    #[error("frame of {declared_bytes} bytes exceeds the limit of {limit_bytes} bytes")]
    FrameTooLarge {
        /// What the length prefix claimed.
        declared_bytes: usize,
        /// The limit in force.
        limit_bytes: usize,
    },
    /// The body is not a valid encoding of the expected type.
    #[error("malformed body: {0}")]
    Malformed(String),
    /// The body decoded, but bytes were left over: the sender and receiver disagree on the type.
    #[error("{trailing_bytes} unexpected bytes after the body")]
    TrailingBytes {
        /// How many bytes were left.
        trailing_bytes: usize,
    },
    /// A value could not be encoded (for example it is larger than the limit).
    #[error("cannot encode: {0}")]
    Encode(String),
    /// The underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The stream ended, or failed, in the middle of a frame: `part` (the header or the body) is
    /// incomplete.
    #[error("frame {part} cut short: {reason}")]
    CutShort {
        /// Which part of the frame was incomplete.
        part: &'static str,
        /// What ended it (the end of the stream, or a read error).
        reason: String,
    },
}

/// Encodes a value as a wire body (no length prefix).
pub fn encode_wire<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, WIRE)
        .map_err(|error| CodecError::Encode(error.to_string()))
}

/// Decodes a complete wire body; the whole slice must be consumed.
pub fn decode_wire<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(body, WIRE)
        .map_err(|error| CodecError::Malformed(error.to_string()))?;
    check_consumed(body.len(), used)?;
    Ok(value)
}

/// Encodes a value for the data directory (journal records and snapshots).
pub fn encode_stored<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, STORED)
        .map_err(|error| CodecError::Encode(error.to_string()))
}

/// Appends the stored encoding of a value to `buffer`.
pub fn encode_stored_into<T: Serialize>(value: &T, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, buffer, STORED)
        .map(|_| ())
        .map_err(|error| CodecError::Encode(error.to_string()))
}

/// Writes the stored encoding of a value at the start of `buffer`; returns how many bytes it took,
/// or an error when it does not fit. For small values encoded often (an event's variant tag), a
/// buffer on the stack saves the allocation of [`encode_stored`].
pub fn encode_stored_into_slice<T: Serialize>(
    value: &T,
    buffer: &mut [u8],
) -> Result<usize, CodecError> {
    bincode::serde::encode_into_slice(value, buffer, STORED)
        .map_err(|error| CodecError::Encode(error.to_string()))
}

/// Decodes a value read back from the data directory; the whole slice must be consumed.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, STORED)
        .map_err(|error| CodecError::Malformed(error.to_string()))?;
    check_consumed(bytes.len(), used)?;
    Ok(value)
}

/// Decodes a value read back from the data directory from a buffered reader, leaving the reader
/// just after the value: a snapshot is decoded as its bytes arrive, so it never has to be held
/// whole in memory. The caller checks what follows (nothing, for a snapshot body) and the
/// checksum of the bytes read.
pub fn decode_stored_from<T: DeserializeOwned, R: std::io::Read>(
    reader: &mut std::io::BufReader<R>,
) -> Result<T, CodecError> {
    bincode::serde::decode_from_reader(reader, STORED)
        .map_err(|error| CodecError::Malformed(error.to_string()))
}

fn check_consumed(total: usize, used: usize) -> Result<(), CodecError> {
    if used == total {
        Ok(())
    } else {
        Err(CodecError::TrailingBytes {
            trailing_bytes: total - used,
        })
    }
}

/// Splits a byte stream into frame bodies: the part of the frame reading that every reader of a
/// stream shares (the server's connections and the client's [`FrameCodec`]).
pub trait SplitFrames: Decoder<Item = BytesMut, Error = CodecError> {
    /// Why a stream that ended or failed (`reason`) with `buffered` bytes of an unfinished frame
    /// is refused.
    fn cut_short(&self, buffered: usize, reason: &str) -> CodecError;
}

/// Bytes of the length prefix of an ISO 8583 frame: a 2-byte big-endian length (no TPDU), the
/// framing ATM switches commonly use.
pub const SHORT_FRAME_HEADER_BYTES: usize = 2;

/// Splits a byte stream into the bodies of big-endian length-prefixed frames (a 4-byte length for
/// the bank's protocol, a 2-byte one for ISO 8583), refusing a declared length over the maximum
/// before anything is reserved for the body. A frame stays in the buffer, its header included,
/// until it is whole. A length of 0 is an empty body (ISO 8583's keep-alive), passed on as such.
pub struct FrameReader {
    frame_bytes_max: usize,
    /// Bytes of the length prefix: [`FRAME_HEADER_BYTES`] or [`SHORT_FRAME_HEADER_BYTES`].
    header_bytes: usize,
}

impl FrameReader {
    /// A reader of 4-byte length-prefixed frames that refuses bodies longer than
    /// `frame_bytes_max` (clamped to [`FRAME_BYTES_LIMIT`]).
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            frame_bytes_max: frame_bytes_max.min(FRAME_BYTES_LIMIT),
            header_bytes: FRAME_HEADER_BYTES,
        }
    }

    /// A reader of 2-byte length-prefixed frames (ISO 8583) that refuses bodies longer than
    /// `frame_bytes_max` (clamped to what 2 bytes can declare).
    pub fn short(frame_bytes_max: usize) -> Self {
        Self {
            frame_bytes_max: frame_bytes_max.min(usize::from(u16::MAX)),
            header_bytes: SHORT_FRAME_HEADER_BYTES,
        }
    }

    /// The length a header declares, checked against the maximum.
    fn declared(&self, source: &[u8]) -> Result<Option<usize>, CodecError> {
        if source.len() < self.header_bytes {
            return Ok(None);
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        header[FRAME_HEADER_BYTES - self.header_bytes..]
            .copy_from_slice(&source[..self.header_bytes]);
        declared_body_bytes(header, self.frame_bytes_max).map(Some)
    }

    /// The largest body this reader accepts.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }
}

impl Decoder for FrameReader {
    type Item = BytesMut;
    type Error = CodecError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        let Some(body_bytes) = self.declared(source)? else {
            return Ok(None);
        };
        let frame_bytes = self.header_bytes + body_bytes;
        if source.len() < frame_bytes {
            // The length is checked, so reserving for the rest of the frame is bounded.
            source.reserve(frame_bytes - source.len());
            return Ok(None);
        }
        source.advance(self.header_bytes);
        Ok(Some(source.split_to(body_bytes)))
    }

    fn decode_eof(&mut self, source: &mut BytesMut) -> Result<Option<BytesMut>, CodecError> {
        match self.decode(source)? {
            Some(body) => Ok(Some(body)),
            None if source.is_empty() => Ok(None),
            None => Err(self.cut_short(source.len(), "early eof")),
        }
    }
}

impl SplitFrames for FrameReader {
    fn cut_short(&self, buffered: usize, reason: &str) -> CodecError {
        let part = if buffered < self.header_bytes {
            "header"
        } else {
            "body"
        };
        CodecError::CutShort {
            part,
            reason: reason.to_string(),
        }
    }
}

/// Turns a byte stream into typed values and back: 4-byte big-endian length, then a bincode body.
///
/// `In` is what this side receives, `Out` what it sends, so the server and the client each get a
/// codec typed for their direction. Frames are split by [`FrameReader`], as the server splits them.
pub struct FrameCodec<In, Out> {
    frames: FrameReader,
    _types: PhantomData<fn(Out) -> In>,
}

impl<In, Out> FrameCodec<In, Out> {
    /// A codec that refuses frames whose body is longer than `frame_bytes_max` (clamped to
    /// [`FRAME_BYTES_LIMIT`]).
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            frames: FrameReader::new(frame_bytes_max),
            _types: PhantomData,
        }
    }

    /// The largest body this codec accepts.
    pub fn frame_bytes_max(&self) -> usize {
        self.frames.frame_bytes_max()
    }
}

impl<In: DeserializeOwned, Out> Decoder for FrameCodec<In, Out> {
    type Item = In;
    type Error = CodecError;

    fn decode(&mut self, source: &mut BytesMut) -> Result<Option<In>, CodecError> {
        match self.frames.decode(source)? {
            Some(body) => decode_wire(&body).map(Some),
            None => Ok(None),
        }
    }
}

impl<In, Out: Serialize> Encoder<Out> for FrameCodec<In, Out> {
    type Error = CodecError;

    fn encode(&mut self, item: Out, destination: &mut BytesMut) -> Result<(), CodecError> {
        let body = encode_wire(&item)?;
        if body.len() > self.frame_bytes_max() {
            return Err(CodecError::FrameTooLarge {
                declared_bytes: body.len(),
                limit_bytes: self.frame_bytes_max(),
            });
        }
        destination.reserve(FRAME_HEADER_BYTES + body.len());
        destination.put_u32(body.len() as u32);
        destination.put_slice(&body);
        Ok(())
    }
}

/// Reads a frame's 4-byte length prefix and checks it against `frame_bytes_max` (itself clamped
/// to [`FRAME_BYTES_LIMIT`]), before anything is allocated for the body.
pub fn declared_body_bytes(
    header: [u8; FRAME_HEADER_BYTES],
    frame_bytes_max: usize,
) -> Result<usize, CodecError> {
    let declared_bytes = u32::from_be_bytes(header) as usize;
    let limit_bytes = frame_bytes_max.min(FRAME_BYTES_LIMIT);
    if declared_bytes > limit_bytes {
        Err(CodecError::FrameTooLarge {
            declared_bytes,
            limit_bytes,
        })
    } else {
        Ok(declared_bytes)
    }
}

/// Encodes one value as a complete wire frame (length prefix included). Used by tests and tools
/// that speak the protocol without a stream.
pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = encode_wire(value)?;
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_frame_reader_splits_two_byte_length_prefixed_bodies_and_keep_alives() {
        let mut reader = FrameReader::short(8);
        let mut source = BytesMut::from(&b"\x00\x03020"[..]);
        assert_eq!(reader.decode(&mut source).unwrap().unwrap(), &b"020"[..]);
        assert!(source.is_empty());
        // A keep-alive (length 0) is an empty body.
        let mut source = BytesMut::from(&b"\x00\x00\x00\x02ab"[..]);
        assert_eq!(reader.decode(&mut source).unwrap().unwrap(), &b""[..]);
        assert_eq!(reader.decode(&mut source).unwrap().unwrap(), &b"ab"[..]);
        assert_eq!(reader.decode(&mut source).unwrap(), None);
        let mut source = BytesMut::from(&b"\x00"[..]);
        assert_eq!(reader.decode(&mut source).unwrap(), None);
        assert!(matches!(
            reader.decode_eof(&mut source),
            Err(CodecError::CutShort { part: "header", .. })
        ));
        // Over the maximum: refused from the header alone.
        let mut source = BytesMut::from(&b"\x00\x09"[..]);
        assert!(matches!(
            reader.decode(&mut source),
            Err(CodecError::FrameTooLarge {
                declared_bytes: 9,
                limit_bytes: 8
            })
        ));
        assert_eq!(FrameReader::short(usize::MAX).frame_bytes_max(), 65_535);
    }

    #[test]
    fn refuses_a_declared_length_over_the_limit_before_reading_the_body() {
        let mut codec: FrameCodec<u64, u64> = FrameCodec::new(16);
        let mut source = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let error = codec.decode(&mut source).unwrap_err();
        assert!(matches!(
            error,
            CodecError::FrameTooLarge {
                declared_bytes: 4294967295,
                ..
            }
        ));
    }

    #[test]
    fn a_frame_round_trips_and_trailing_bytes_are_refused() {
        let mut codec: FrameCodec<(u64, String), (u64, String)> = FrameCodec::new(1024);
        let mut buffer = BytesMut::new();
        codec.encode((300, "hi".to_string()), &mut buffer).unwrap();
        assert_eq!(&buffer[..], &[0, 0, 0, 6, 251, 0x2c, 0x01, 2, b'h', b'i']);
        assert_eq!(
            codec.decode(&mut buffer).unwrap(),
            Some((300, "hi".to_string()))
        );
        let error = decode_wire::<u8>(&[1, 2]).unwrap_err();
        assert!(matches!(
            error,
            CodecError::TrailingBytes { trailing_bytes: 1 }
        ));
    }

    #[test]
    fn a_frame_split_across_reads_decodes_once_whole() {
        let mut codec: FrameCodec<String, String> = FrameCodec::new(1024);
        let frame = encode_frame(&"x".repeat(300)).unwrap();
        let mut source = BytesMut::from(&frame[..10]);
        assert_eq!(codec.decode(&mut source).unwrap(), None);
        source.extend_from_slice(&frame[10..]);
        assert_eq!(codec.decode(&mut source).unwrap(), Some("x".repeat(300)));
    }

    #[test]
    fn a_body_of_exactly_the_ceiling_decodes_and_one_byte_more_is_refused() {
        // (u64, String) with a one-byte integer and a 5-byte length prefix: the string fills the
        // rest. bincode counts 8 + 8 + the string's bytes, more than the body's length.
        let text_bytes = FRAME_BYTES_LIMIT - 1 - 5;
        let value = (7u64, "x".repeat(text_bytes));
        let frame = encode_frame(&value).unwrap();
        assert_eq!(frame.len(), FRAME_HEADER_BYTES + FRAME_BYTES_LIMIT);
        let mut codec: FrameCodec<(u64, String), (u64, String)> =
            FrameCodec::new(FRAME_BYTES_LIMIT);
        let mut source = BytesMut::from(&frame[..]);
        assert_eq!(codec.decode(&mut source).unwrap(), Some(value));
        let longer = encode_frame(&(7u64, "x".repeat(text_bytes + 1))).unwrap();
        let mut source = BytesMut::from(&longer[..]);
        assert!(matches!(
            codec.decode(&mut source).unwrap_err(),
            CodecError::FrameTooLarge {
                declared_bytes,
                limit_bytes: FRAME_BYTES_LIMIT,
            } if declared_bytes == FRAME_BYTES_LIMIT + 1
        ));
    }

    #[test]
    fn a_string_claiming_more_than_the_decode_limit_is_refused_without_reserving_it() {
        // A 9-byte body whose string claims u64::MAX / 2 bytes.
        let mut body = vec![0xfd];
        body.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        let error = decode_wire::<String>(&body).unwrap_err();
        assert!(error.to_string().contains("LimitExceeded"), "{error}");
    }

    #[test]
    fn a_stream_ending_inside_a_frame_is_cut_short_in_its_header_or_its_body() {
        let mut frames = FrameReader::new(1024);
        let mut source = BytesMut::from(&[0u8, 0][..]);
        let error = frames.decode_eof(&mut source).unwrap_err();
        assert_eq!(error.to_string(), "frame header cut short: early eof");
        let mut source = BytesMut::from(&[0u8, 0, 0, 40, 1][..]);
        let error = frames.decode_eof(&mut source).unwrap_err();
        assert_eq!(error.to_string(), "frame body cut short: early eof");
        let mut source = BytesMut::from(&[0u8, 0, 0, 1, 7][..]);
        assert_eq!(
            frames.decode_eof(&mut source).unwrap().as_deref(),
            Some(&[7u8][..])
        );
        assert_eq!(frames.decode_eof(&mut source).unwrap(), None);
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let mut codec: FrameCodec<u64, u64> = FrameCodec::new(1024);
        let mut source = BytesMut::from(&[0, 0, 0, 2, 7][..]);
        assert_eq!(codec.decode(&mut source).unwrap(), None);
    }
}
