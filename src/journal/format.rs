//! The byte layout of journal segments and snapshots (docs/JOURNAL.md is the reference).
//!
//! All fixed-width fields are big-endian. Bodies are bincode (see [`crate::codec`]). Checksums
//! are CRC-32C (Castagnoli).

use crate::codec::{self, CodecError};
use crate::ledger::{Ledger, Lsn, Record};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ABNKJRNL";
/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"ABNKSNAP";
/// The format version written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of a segment header: magic, version, first position, header CRC.
pub const SEGMENT_HEADER_BYTES: usize = 8 + 4 + 8 + 4;
/// Bytes of a record header: body length, position, header CRC, body CRC.
pub const RECORD_HEADER_BYTES: usize = 4 + 8 + 4 + 4;
/// Bytes of a snapshot header: magic, version, position, body length, body CRC, header CRC.
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4 + 4;
/// The largest record body; a larger one is refused when writing and is corruption when read.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;

/// The name of the segment whose first record is at `first_lsn`; names sort in position order.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("journal-{first_lsn:020}.log")
}

/// The name of the snapshot of the state after record `lsn`.
pub fn snapshot_name(lsn: Lsn) -> String {
    format!("snapshot-{lsn:020}.snap")
}

/// The name a snapshot has while it is being written.
pub fn snapshot_temporary_name(lsn: Lsn) -> String {
    format!("snapshot-{lsn:020}.tmp")
}

/// Parses the position out of a segment or snapshot file name.
pub fn position_in_name(name: &str, prefix: &str, suffix: &str) -> Option<Lsn> {
    name.strip_prefix(prefix)?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

fn crc(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_be_bytes(word)
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// The header of a segment whose first record is at `first_lsn`.
pub fn segment_header(first_lsn: Lsn) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    header.extend_from_slice(&SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    header.extend_from_slice(&first_lsn.to_be_bytes());
    header.extend_from_slice(&crc(&header).to_be_bytes());
    header
}

/// Checks a segment header and returns its first position.
pub fn parse_segment_header(bytes: &[u8]) -> Result<Lsn, String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err("shorter than a segment header".into());
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err("not a journal segment (bad magic)".into());
    }
    if be_u32(bytes, 20) != crc(&bytes[..20]) {
        return Err("segment header checksum mismatch".into());
    }
    let version = be_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok(be_u64(bytes, 12))
}

/// Appends the framed record at position `lsn` to `buffer`.
pub fn encode_record(lsn: Lsn, record: &Record, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    codec::encode_stored_into(record, buffer)?;
    let body_bytes = buffer.len() - start - RECORD_HEADER_BYTES;
    if body_bytes > RECORD_BYTES_MAX {
        buffer.truncate(start);
        return Err(CodecError::FrameTooLarge {
            declared_bytes: body_bytes,
            limit_bytes: RECORD_BYTES_MAX,
        });
    }
    let body_crc = crc(&buffer[start + RECORD_HEADER_BYTES..]);
    let header = &mut buffer[start..start + RECORD_HEADER_BYTES];
    header[0..4].copy_from_slice(&(body_bytes as u32).to_be_bytes());
    header[4..12].copy_from_slice(&lsn.to_be_bytes());
    let header_crc = crc(&header[0..12]);
    header[12..16].copy_from_slice(&header_crc.to_be_bytes());
    header[16..20].copy_from_slice(&body_crc.to_be_bytes());
    Ok(())
}

/// What is found at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A valid record that ends at `end`.
    Record {
        /// Its position.
        lsn: Lsn,
        /// The record.
        record: Record,
        /// The offset just after it.
        end: usize,
    },
    /// The end of the records, at a record boundary: the end of the file, or only zeros from
    /// there to the end of the file (the room a segment grows by ahead of its records; see
    /// [`super::files::SEGMENT_GROWTH_BYTES`]).
    End,
    /// What an interrupted write leaves: an incomplete record, a zero-filled tail (zeros from
    /// inside a record header to the end of the file), or a last record whose body checksum fails
    /// (possibly followed by zeros). Only acceptable at the end of the newest segment.
    Torn(String),
    /// Damage that no interrupted append can explain.
    Corrupt(String),
}

/// The length of `bytes` without its trailing zeros: everything from there on is zero.
pub fn zeros_from(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(0, |last| last + 1)
}

/// Reads the record that starts at `offset` of a segment's bytes.
pub fn parse_record(bytes: &[u8], offset: usize) -> Parsed {
    let rest = &bytes[offset..];
    // A record header is never all zeros (its position is at least 1), so only then is the rest
    // of the file looked at.
    let head = &rest[..rest.len().min(RECORD_HEADER_BYTES)];
    if head.iter().all(|byte| *byte == 0) && zeros_from(rest) == 0 {
        return Parsed::End;
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Parsed::Torn(format!(
            "{} bytes, shorter than a record header",
            rest.len()
        ));
    }
    if be_u32(rest, 12) != crc(&rest[..12]) {
        // Zeros from inside this header to the end of the file: the tail of a write that never
        // reached the disk (a crash can leave the last blocks of an unsynced write zero-filled).
        // A damaged header followed by anything else is corruption.
        return if zeros_from(rest) < RECORD_HEADER_BYTES {
            Parsed::Torn("zero-filled tail".into())
        } else {
            Parsed::Corrupt("record header checksum mismatch".into())
        };
    }
    let body_bytes = be_u32(rest, 0) as usize;
    let lsn = be_u64(rest, 4);
    if body_bytes > RECORD_BYTES_MAX {
        return Parsed::Corrupt(format!("record {lsn} claims {body_bytes} bytes"));
    }
    let end = offset + RECORD_HEADER_BYTES + body_bytes;
    if end > bytes.len() {
        return Parsed::Torn(format!("record {lsn} runs past the end of the file"));
    }
    let body = &bytes[offset + RECORD_HEADER_BYTES..end];
    if be_u32(rest, 16) != crc(body) {
        let reason = format!("record {lsn} body checksum mismatch");
        // The last record, possibly followed by a zero-filled tail: its write was cut short.
        return if zeros_from(&bytes[end..]) == 0 {
            Parsed::Torn(reason)
        } else {
            Parsed::Corrupt(reason)
        };
    }
    match codec::decode_stored::<Record>(body) {
        Ok(record) => Parsed::Record { lsn, record, end },
        Err(error) => Parsed::Corrupt(format!("record {lsn} does not decode: {error}")),
    }
}

/// The complete bytes of a snapshot file for `ledger`.
pub fn encode_snapshot(ledger: &Ledger) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![0; SNAPSHOT_HEADER_BYTES];
    codec::encode_snapshot_body(ledger, &mut bytes)?;
    let body_bytes = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    let body_crc = crc(&bytes[SNAPSHOT_HEADER_BYTES..]);
    bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
    bytes[12..20].copy_from_slice(&ledger.applied_lsn.to_be_bytes());
    bytes[20..28].copy_from_slice(&body_bytes.to_be_bytes());
    bytes[28..32].copy_from_slice(&body_crc.to_be_bytes());
    let header_crc = crc(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&header_crc.to_be_bytes());
    Ok(bytes)
}

/// Checks and decodes a snapshot file's bytes; the error says what is wrong and at which offset.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Ledger, (u64, String)> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err((0, "shorter than a snapshot header".into()));
    }
    if bytes[..8] != SNAPSHOT_MAGIC {
        return Err((0, "not a snapshot (bad magic)".into()));
    }
    if be_u32(bytes, 32) != crc(&bytes[..32]) {
        return Err((0, "snapshot header checksum mismatch".into()));
    }
    let version = be_u32(bytes, 8);
    if version != FORMAT_VERSION {
        return Err((8, format!("unsupported snapshot format version {version}")));
    }
    let lsn = be_u64(bytes, 12);
    let body_bytes = be_u64(bytes, 20);
    let body = &bytes[SNAPSHOT_HEADER_BYTES..];
    if body.len() as u64 != body_bytes {
        return Err((
            20,
            format!("body is {} bytes, header says {body_bytes}", body.len()),
        ));
    }
    if be_u32(bytes, 28) != crc(body) {
        return Err((
            SNAPSHOT_HEADER_BYTES as u64,
            "snapshot body checksum mismatch".into(),
        ));
    }
    let ledger: Ledger = codec::decode_snapshot_body(body)
        .map_err(|error| (SNAPSHOT_HEADER_BYTES as u64, error.to_string()))?;
    if ledger.applied_lsn != lsn {
        return Err((12, "header position disagrees with the body".into()));
    }
    Ok(ledger)
}
