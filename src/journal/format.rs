//! The byte layout of journal segments and snapshots (docs/JOURNAL.md is the reference).
//!
//! All fixed-width fields are big-endian. Bodies are bincode (see [`crate::codec`]). Checksums
//! are CRC-32C (Castagnoli).

use crate::codec::{self, CodecError};
use crate::ledger::{Ledger, LedgerV1, LedgerV2, Lsn, Record, RecordV1};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ABNKJRNL";
/// First bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"ABNKSNAP";
/// First bytes of the close marker.
pub const CLOSED_MAGIC: [u8; 8] = *b"ABNKCLSD";
/// The format version of segments and snapshots written by this build.
pub const FORMAT_VERSION: u32 = 2;
/// The format version of the first release, still read: no chain, no batch seals.
pub const FORMAT_VERSION_LEGACY: u32 = 1;
/// The format version of the close marker.
pub const CLOSED_VERSION: u32 = 1;
/// Bytes of a segment header: magic, version, first position, segment id, predecessor's first
/// position and id, header CRC.
pub const SEGMENT_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4;
/// Bytes of a version 1 segment header: magic, version, first position, header CRC.
pub const SEGMENT_HEADER_BYTES_LEGACY: usize = 8 + 4 + 8 + 4;
/// Bytes of a record header: body length, position, header CRC, body CRC.
pub const RECORD_HEADER_BYTES: usize = 4 + 8 + 4 + 4;
/// Bytes of a batch seal's body: CRC of the batch's record frames, first and last position, tag.
pub const SEAL_BODY_BYTES: usize = 4 + 8 + 8 + 4;
/// Bytes of a whole batch seal (a frame with position 0).
pub const SEAL_BYTES: usize = RECORD_HEADER_BYTES + SEAL_BODY_BYTES;
/// The last four bytes of every seal. Never zero, so a complete batch always ends in a non-zero
/// byte and can never be mistaken for one whose end did not reach the disk.
pub const SEAL_TAG: [u8; 4] = *b"SEAL";
/// Bytes of a snapshot header: magic, version, position, next segment's first position and id,
/// body length, body CRC, header CRC.
pub const SNAPSHOT_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4 + 4;
/// Bytes of a version 1 snapshot header: magic, version, position, body length, body CRC,
/// header CRC.
pub const SNAPSHOT_HEADER_BYTES_LEGACY: usize = 8 + 4 + 8 + 8 + 4 + 4;
/// Bytes of the close marker: magic, version, segment's first position and id, end offset, last
/// position, CRC.
pub const CLOSED_BYTES: usize = 8 + 4 + 8 + 8 + 8 + 8 + 4;
/// The largest record body; a larger one is refused when writing and is corruption when read.
pub const RECORD_BYTES_MAX: usize = 64 * 1024;
/// The unit a device writes atomically, as recovery assumes it: a write cut by a power loss
/// leaves whole sectors either written or not. 512 bytes is the smallest sector in use, so the
/// assumption also holds on 4 KiB-sector devices.
pub const SECTOR_BYTES: usize = 512;
/// The name of the close marker a clean shutdown leaves in the data directory.
pub const CLOSED_FILE_NAME: &str = "CLOSED";
/// The name the close marker has while it is written.
pub const CLOSED_TEMPORARY_NAME: &str = "CLOSED.tmp";

/// Names one segment: where it starts and its random id, so a segment from another history
/// under the same name is told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentRef {
    /// The position of its first record.
    pub first_lsn: Lsn,
    /// Its id, chosen at random when it was created (0 for a version 1 segment, which has none).
    pub id: u64,
}

impl SegmentRef {
    /// A new segment starting at `first_lsn`, with a fresh non-zero id.
    pub fn new(first_lsn: Lsn) -> Self {
        SegmentRef {
            first_lsn,
            id: rand::random::<u64>().max(1),
        }
    }
}

impl std::fmt::Display for SegmentRef {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} (id {:016x})",
            segment_name(self.first_lsn),
            self.id
        )
    }
}

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The format version: [`FORMAT_VERSION`] or [`FORMAT_VERSION_LEGACY`].
    pub version: u32,
    /// The segment itself.
    pub segment: SegmentRef,
    /// The segment before it, if any (always `None` in version 1).
    pub previous: Option<SegmentRef>,
}

impl SegmentHeader {
    /// Where its first record starts.
    pub fn bytes(&self) -> usize {
        if self.version == FORMAT_VERSION_LEGACY {
            SEGMENT_HEADER_BYTES_LEGACY
        } else {
            SEGMENT_HEADER_BYTES
        }
    }
}

/// What the close marker says: the journal was closed cleanly with `last_lsn` its last record,
/// the records of `segment` ending at byte `end_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClosedMarker {
    /// The newest segment at the close.
    pub segment: SegmentRef,
    /// The offset just after its last batch.
    pub end_offset: u64,
    /// The last durable position.
    pub last_lsn: Lsn,
}

/// The name of the segment whose first record is at `first_lsn`; names sort in position order.
pub fn segment_name(first_lsn: Lsn) -> String {
    format!("journal-{first_lsn:020}.log")
}

/// The name a segment has while it is being created.
pub fn segment_temporary_name(first_lsn: Lsn) -> String {
    format!("journal-{first_lsn:020}.tmp")
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

fn put_ref(bytes: &mut Vec<u8>, segment: Option<SegmentRef>) {
    let segment = segment.unwrap_or(SegmentRef {
        first_lsn: 0,
        id: 0,
    });
    bytes.extend_from_slice(&segment.first_lsn.to_be_bytes());
    bytes.extend_from_slice(&segment.id.to_be_bytes());
}

fn get_ref(bytes: &[u8], at: usize) -> Option<SegmentRef> {
    let segment = SegmentRef {
        first_lsn: be_u64(bytes, at),
        id: be_u64(bytes, at + 8),
    };
    (segment.first_lsn != 0).then_some(segment)
}

/// The header of `segment`, which follows `previous` (if any).
pub fn segment_header(segment: SegmentRef, previous: Option<SegmentRef>) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES);
    header.extend_from_slice(&SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    put_ref(&mut header, Some(segment));
    put_ref(&mut header, previous);
    header.extend_from_slice(&crc(&header).to_be_bytes());
    header
}

/// The header of a version 1 segment (written by the first release; kept to test that such
/// segments still open).
pub fn segment_header_legacy(first_lsn: Lsn) -> Vec<u8> {
    let mut header = Vec::with_capacity(SEGMENT_HEADER_BYTES_LEGACY);
    header.extend_from_slice(&SEGMENT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION_LEGACY.to_be_bytes());
    header.extend_from_slice(&first_lsn.to_be_bytes());
    header.extend_from_slice(&crc(&header).to_be_bytes());
    header
}

/// Checks a segment header (either version); the error names the offset of the bad field.
pub fn parse_segment_header(bytes: &[u8]) -> Result<SegmentHeader, (u64, String)> {
    if bytes.len() < SEGMENT_HEADER_BYTES_LEGACY {
        return Err((0, "shorter than a segment header".into()));
    }
    if bytes[..8] != SEGMENT_MAGIC {
        return Err((0, "not a journal segment (bad magic)".into()));
    }
    match be_u32(bytes, 8) {
        FORMAT_VERSION_LEGACY => {
            if be_u32(bytes, 20) != crc(&bytes[..20]) {
                return Err((20, "segment header checksum mismatch".into()));
            }
            Ok(SegmentHeader {
                version: FORMAT_VERSION_LEGACY,
                segment: SegmentRef {
                    first_lsn: be_u64(bytes, 12),
                    id: 0,
                },
                previous: None,
            })
        }
        FORMAT_VERSION => {
            if bytes.len() < SEGMENT_HEADER_BYTES {
                return Err((0, "shorter than a segment header".into()));
            }
            let crc_at = SEGMENT_HEADER_BYTES - 4;
            if be_u32(bytes, crc_at) != crc(&bytes[..crc_at]) {
                return Err((crc_at as u64, "segment header checksum mismatch".into()));
            }
            let segment = get_ref(bytes, 12)
                .ok_or_else(|| (12, "segment header names position 0".to_string()))?;
            Ok(SegmentHeader {
                version: FORMAT_VERSION,
                segment,
                previous: get_ref(bytes, 28),
            })
        }
        version => Err((8, format!("unsupported segment format version {version}"))),
    }
}

/// Appends the framed record at position `lsn` to `buffer`.
///
/// A record that could never have been decided ([`Record::validate`]) is refused before any byte
/// of it is written: it is a bug, and the journal fails closed rather than store it.
pub fn encode_record(lsn: Lsn, record: &Record, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    record
        .validate()
        .map_err(|error| CodecError::Encode(format!("invalid record: {error}")))?;
    frame_record(lsn, record, buffer)
}

/// Appends the body of `record` alone (the mark, the version, the record), validated like
/// [`encode_record`]: what a store that frames records itself keeps (the PostgreSQL journal's
/// rows). [`decode_record_body`] reads it back.
pub fn encode_record_body(record: &Record, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    record
        .validate()
        .map_err(|error| CodecError::Encode(format!("invalid record: {error}")))?;
    buffer.extend_from_slice(&[BODY_MARK, RECORD_BODY_VERSION]);
    codec::encode_stored_into(record, buffer)
}

/// Appends the framed record, valid or not (tests frame invalid ones to see them refused).
fn frame_record(lsn: Lsn, record: &Record, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    buffer.extend_from_slice(&[BODY_MARK, RECORD_BODY_VERSION]);
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

/// Appends the seal of a batch of records `first_lsn..=last_lsn` whose record frames, back to
/// back, have the CRC-32C `records_crc`.
pub fn encode_seal(records_crc: u32, first_lsn: Lsn, last_lsn: Lsn, buffer: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(SEAL_BODY_BYTES);
    body.extend_from_slice(&records_crc.to_be_bytes());
    body.extend_from_slice(&first_lsn.to_be_bytes());
    body.extend_from_slice(&last_lsn.to_be_bytes());
    body.extend_from_slice(&SEAL_TAG);
    let mut header = Vec::with_capacity(RECORD_HEADER_BYTES);
    header.extend_from_slice(&(SEAL_BODY_BYTES as u32).to_be_bytes());
    header.extend_from_slice(&0u64.to_be_bytes());
    header.extend_from_slice(&crc(&header).to_be_bytes());
    header.extend_from_slice(&crc(&body).to_be_bytes());
    buffer.extend_from_slice(&header);
    buffer.extend_from_slice(&body);
}

/// The CRC-32C of `bytes` (the journal's one checksum).
pub fn checksum(bytes: &[u8]) -> u32 {
    crc(bytes)
}

/// Where the frame at `offset` ends, as far as its header can tell: the declared end when the
/// header is whole and its checksum holds, otherwise the end of the header. Recovery uses it to
/// decide whether a bad frame lay entirely in sectors that reached the disk.
pub fn frame_extent(bytes: &[u8], offset: usize) -> usize {
    let header_end = offset + RECORD_HEADER_BYTES;
    if header_end > bytes.len() || be_u32(bytes, offset + 12) != crc(&bytes[offset..offset + 12]) {
        return header_end;
    }
    header_end + be_u32(bytes, offset) as usize
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
    /// A batch seal (a frame at position 0, version 2 only) that ends at `end`.
    Seal {
        /// The CRC-32C of the batch's record frames, back to back.
        records_crc: u32,
        /// The batch's first position.
        first_lsn: Lsn,
        /// The batch's last position.
        last_lsn: Lsn,
        /// The offset just after it.
        end: usize,
    },
}

/// The length of `bytes` without its trailing zeros: everything from there on is zero.
pub fn zeros_from(bytes: &[u8]) -> usize {
    // Block by block from the end, each compared with a block of zeros (a `memcmp`): segments
    // carry up to a megabyte of zeros ahead of their records.
    const BLOCK: usize = 4096;
    static ZERO_BLOCK: [u8; BLOCK] = [0; BLOCK];
    let mut end = bytes.len();
    while end > 0 {
        let start = (end - 1) / BLOCK * BLOCK;
        let block = &bytes[start..end];
        if block != &ZERO_BLOCK[..block.len()] {
            let last = block.iter().rposition(|byte| *byte != 0).unwrap_or(0);
            return start + last + 1;
        }
        end = start;
    }
    0
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
    if lsn == 0 {
        return if body.len() == SEAL_BODY_BYTES && body[SEAL_BODY_BYTES - 4..] == SEAL_TAG {
            Parsed::Seal {
                records_crc: be_u32(body, 0),
                first_lsn: be_u64(body, 4),
                last_lsn: be_u64(body, 12),
                end,
            }
        } else {
            Parsed::Corrupt("a frame at position 0 that is not a batch seal".into())
        };
    }
    match decode_record_body(body) {
        // Read back, a record must again be one that could have been decided: its checksum
        // proves only that the bytes are the ones written.
        Ok(record) => match record.validate() {
            Ok(()) => Parsed::Record { lsn, record, end },
            Err(error) => Parsed::Corrupt(format!("record {lsn} is not valid: {error}")),
        },
        Err(error) => Parsed::Corrupt(format!("record {lsn} does not decode: {error}")),
    }
}

/// First byte of a versioned record or snapshot body. No body of the first layouts can start
/// with it: those begin with a bincode varint (a record with its request's client id, a snapshot
/// with its position), and bincode never starts a varint with 255.
const BODY_MARK: u8 = 0xFF;

/// The layout of the snapshot bodies this build writes (after `BODY_MARK`, 0xFF): 3 is the
/// [`Ledger`] with accounts that have a state, holds, limits and a statement, and replies with an
/// available balance and a reference. 2 ([`LedgerV2`]) is still read; a body without the mark is
/// the first release's [`LedgerV1`].
pub const SNAPSHOT_BODY_VERSION: u8 = 3;

/// The snapshot body layout before holds and statements, still read.
pub const SNAPSHOT_BODY_VERSION_2: u8 = 2;

/// The layout of the record bodies this build writes (after `BODY_MARK`, 0xFF): 2 is the
/// [`Record`] with a business day and an outcome with an available balance and a reference. A
/// body without the mark is a [`RecordV1`], as every earlier release wrote.
pub const RECORD_BODY_VERSION: u8 = 2;

/// Decodes a record body of this release or of an earlier one (converted on the way in).
pub fn decode_record_body(bytes: &[u8]) -> Result<Record, CodecError> {
    match bytes {
        [BODY_MARK, RECORD_BODY_VERSION, record @ ..] => codec::decode_stored(record),
        [BODY_MARK, version, ..] => Err(CodecError::Malformed(format!(
            "unsupported record body version {version}"
        ))),
        _ => codec::decode_stored::<RecordV1>(bytes).map(Record::from),
    }
}

/// Appends the body of a snapshot of `ledger` to `buffer`: the mark, the version, the ledger.
pub fn encode_snapshot_body(ledger: &Ledger, buffer: &mut Vec<u8>) -> Result<(), CodecError> {
    buffer.extend_from_slice(&[BODY_MARK, SNAPSHOT_BODY_VERSION]);
    codec::encode_stored_into(ledger, buffer)
}

/// Decodes a snapshot body of this release or of an earlier one (converted on the way in).
pub fn decode_snapshot_body(bytes: &[u8]) -> Result<Ledger, CodecError> {
    match bytes {
        [BODY_MARK, SNAPSHOT_BODY_VERSION, ledger @ ..] => codec::decode_stored(ledger),
        [BODY_MARK, SNAPSHOT_BODY_VERSION_2, ledger @ ..] => {
            codec::decode_stored::<LedgerV2>(ledger).map(Ledger::from)
        }
        [BODY_MARK, version, ..] => Err(CodecError::Malformed(format!(
            "unsupported snapshot body version {version}"
        ))),
        _ => codec::decode_stored::<LedgerV1>(bytes).map(Ledger::from),
    }
}

/// The complete bytes of a snapshot file for `ledger`, naming `next`, the segment whose first
/// record follows the snapshot's position.
pub fn encode_snapshot(ledger: &Ledger, next: SegmentRef) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![0; SNAPSHOT_HEADER_BYTES];
    encode_snapshot_body(ledger, &mut bytes)?;
    let body_bytes = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    let body_crc = crc(&bytes[SNAPSHOT_HEADER_BYTES..]);
    let mut header = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    header.extend_from_slice(&SNAPSHOT_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    header.extend_from_slice(&ledger.applied_lsn.to_be_bytes());
    put_ref(&mut header, Some(next));
    header.extend_from_slice(&body_bytes.to_be_bytes());
    header.extend_from_slice(&body_crc.to_be_bytes());
    header.extend_from_slice(&crc(&header).to_be_bytes());
    bytes[..SNAPSHOT_HEADER_BYTES].copy_from_slice(&header);
    Ok(bytes)
}

/// The bytes of a version 1 snapshot of `ledger`, as the first release wrote them (kept to test
/// that such snapshots still open).
pub fn encode_snapshot_legacy(ledger: &crate::ledger::LedgerV1) -> Result<Vec<u8>, CodecError> {
    let mut bytes = vec![0; SNAPSHOT_HEADER_BYTES_LEGACY];
    codec::encode_stored_into(ledger, &mut bytes)?;
    let body_bytes = (bytes.len() - SNAPSHOT_HEADER_BYTES_LEGACY) as u64;
    let body_crc = crc(&bytes[SNAPSHOT_HEADER_BYTES_LEGACY..]);
    bytes[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION_LEGACY.to_be_bytes());
    bytes[12..20].copy_from_slice(&ledger.applied_lsn.to_be_bytes());
    bytes[20..28].copy_from_slice(&body_bytes.to_be_bytes());
    bytes[28..32].copy_from_slice(&body_crc.to_be_bytes());
    let header_crc = crc(&bytes[0..32]);
    bytes[32..36].copy_from_slice(&header_crc.to_be_bytes());
    Ok(bytes)
}

/// A snapshot as read back: the state, and the segment it names as its successor (`None` for a
/// version 1 snapshot, which names none).
pub struct Snapshot {
    /// The state after the snapshot's position.
    pub ledger: Ledger,
    /// The segment that follows it.
    pub next: Option<SegmentRef>,
}

/// Bytes the snapshot reader asks the file for at a time (the checksum is computed over each such
/// piece as it passes): large enough that reading costs few system calls, small enough that the
/// snapshot is never held in memory, only this much of it.
pub const SNAPSHOT_READ_BUFFER_BYTES: usize = 256 * 1024;

/// Why a snapshot could not be read: the file could not be read at all, or it is damaged (at
/// which offset, and how).
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading the file failed.
    Io(std::io::Error),
    /// The file is not a valid snapshot: the offset of the damage and what is wrong there.
    Corrupt(u64, String),
}

impl From<(u64, String)> for SnapshotError {
    fn from((offset, reason): (u64, String)) -> Self {
        SnapshotError::Corrupt(offset, reason)
    }
}

/// What a snapshot header says, checked.
struct SnapshotHeader {
    /// Its length: where the body starts.
    header_bytes: usize,
    /// The segment it names as its successor (version 2), if any.
    next: Option<SegmentRef>,
    /// The snapshot's position.
    lsn: Lsn,
    /// The body's length, as the header declares it.
    body_bytes: u64,
    /// The body's checksum, as the header declares it.
    body_crc: u32,
    /// Where the body length is in the header (the offset named when the length is wrong).
    body_bytes_at: usize,
}

/// Checks the header at the start of `bytes` (the first bytes of a snapshot file, up to
/// [`SNAPSHOT_HEADER_BYTES`] of them) of a file of `file_bytes` bytes: its magic, version,
/// checksum, and that the body it declares is as long as the rest of the file.
fn parse_snapshot_header(bytes: &[u8], file_bytes: u64) -> Result<SnapshotHeader, (u64, String)> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES_LEGACY {
        return Err((0, "shorter than a snapshot header".into()));
    }
    if bytes[..8] != SNAPSHOT_MAGIC {
        return Err((0, "not a snapshot (bad magic)".into()));
    }
    // Field offsets after the position: version 2 puts the next segment (16 bytes) there.
    let (header_bytes, next, rest) = match be_u32(bytes, 8) {
        FORMAT_VERSION_LEGACY => (SNAPSHOT_HEADER_BYTES_LEGACY, None, 20),
        FORMAT_VERSION if bytes.len() >= SNAPSHOT_HEADER_BYTES => (
            SNAPSHOT_HEADER_BYTES,
            Some(get_ref(bytes, 20).ok_or((20, "names no next segment".to_string()))?),
            36,
        ),
        FORMAT_VERSION => return Err((0, "shorter than a snapshot header".into())),
        version => return Err((8, format!("unsupported snapshot format version {version}"))),
    };
    let crc_at = header_bytes - 4;
    if be_u32(bytes, crc_at) != crc(&bytes[..crc_at]) {
        return Err((crc_at as u64, "snapshot header checksum mismatch".into()));
    }
    let body_bytes = be_u64(bytes, rest);
    let found = file_bytes.saturating_sub(header_bytes as u64);
    if found != body_bytes {
        return Err((
            rest as u64,
            format!("body is {found} bytes, header says {body_bytes}"),
        ));
    }
    Ok(SnapshotHeader {
        header_bytes,
        next,
        lsn: be_u64(bytes, 12),
        body_bytes,
        body_crc: be_u32(bytes, rest + 8),
        body_bytes_at: rest,
    })
}

/// A reader that computes the CRC-32C of the bytes read through it and counts them: the
/// snapshot body's checksum is known once its last byte has been read, without keeping any.
struct Checksummed<R> {
    /// Where the bytes come from.
    inner: R,
    /// The checksum of the bytes read so far.
    crc: u32,
    /// How many bytes were read so far.
    bytes: u64,
    /// The kind of the first read error, if one happened: the file failed, it is not damage.
    failed: Option<std::io::ErrorKind>,
}

impl<R: std::io::Read> std::io::Read for Checksummed<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buffer) {
            Ok(read) => {
                self.crc = crc32c::crc32c_append(self.crc, &buffer[..read]);
                self.bytes += read as u64;
                Ok(read)
            }
            Err(error) => {
                if error.kind() != std::io::ErrorKind::Interrupted {
                    self.failed.get_or_insert(error.kind());
                }
                Err(error)
            }
        }
    }
}

/// Decodes a snapshot body of this release or of an earlier one from `body` as it is read. The
/// layout is told by the first two bytes, as in [`decode_snapshot_body`].
fn decode_snapshot_body_from<R: std::io::Read>(
    body: &mut std::io::BufReader<R>,
) -> Result<Ledger, CodecError> {
    let mut mark = Vec::with_capacity(2);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut *body, 2), &mut mark)?;
    match mark[..] {
        [BODY_MARK, SNAPSHOT_BODY_VERSION] => codec::decode_stored_from(body),
        [BODY_MARK, SNAPSHOT_BODY_VERSION_2] => {
            codec::decode_stored_from::<LedgerV2, _>(body).map(Ledger::from)
        }
        [BODY_MARK, version] => Err(CodecError::Malformed(format!(
            "unsupported snapshot body version {version}"
        ))),
        // The first release's layout has no mark: the two bytes are its start (only such old,
        // small snapshots go through the second buffer).
        _ => {
            let mut whole = std::io::BufReader::new(std::io::Read::chain(&mark[..], &mut *body));
            codec::decode_stored_from::<LedgerV1, _>(&mut whole).map(Ledger::from)
        }
    }
}

/// Reads, checks and decodes a snapshot file of `file_bytes` bytes from `file` (either version),
/// without holding it in memory: the body is decoded as it is read, its checksum computed on the
/// way, and the state is accepted only once the whole body has been read and its length and
/// checksum match the header. A damaged body is refused as [`decode_snapshot`] refuses it: a
/// checksum that does not match is reported as such even when decoding stopped first. (Bytes
/// that do not match their checksum may be decoded before they are refused; decoding is bounded
/// by the body's length, since it stops at the body's end.)
pub fn read_snapshot<R: std::io::Read>(
    mut file: R,
    file_bytes: u64,
) -> Result<Snapshot, SnapshotError> {
    let mut start = Vec::with_capacity(SNAPSHOT_HEADER_BYTES);
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut file, SNAPSHOT_HEADER_BYTES as u64),
        &mut start,
    )
    .map_err(SnapshotError::Io)?;
    let header = parse_snapshot_header(&start, file_bytes.max(start.len() as u64))?;
    // A version 1 header is shorter than what was read: the rest is the body's start.
    let body_start = &start[header.header_bytes.min(start.len())..];
    let remaining = header.body_bytes.saturating_sub(body_start.len() as u64);
    let checksummed = Checksummed {
        inner: std::io::Read::chain(body_start, std::io::Read::take(file, remaining)),
        crc: 0,
        bytes: 0,
        failed: None,
    };
    let mut body = std::io::BufReader::with_capacity(SNAPSHOT_READ_BUFFER_BYTES, checksummed);
    let decoded = decode_snapshot_body_from(&mut body);
    // Whatever decoding left is read too: the checksum covers the whole body.
    let trailing = std::io::copy(&mut body, &mut std::io::sink());
    let checksummed = body.into_inner();
    if let Some(kind) = checksummed.failed {
        return Err(SnapshotError::Io(std::io::Error::new(
            kind,
            "reading the snapshot failed",
        )));
    }
    let trailing = trailing.map_err(SnapshotError::Io)?;
    let at = header.header_bytes as u64;
    if checksummed.bytes != header.body_bytes {
        let reason = format!(
            "body is {} bytes, header says {}",
            checksummed.bytes, header.body_bytes
        );
        return Err(SnapshotError::Corrupt(header.body_bytes_at as u64, reason));
    }
    if checksummed.crc != header.body_crc {
        return Err(SnapshotError::Corrupt(
            at,
            "snapshot body checksum mismatch".into(),
        ));
    }
    let ledger = decoded.map_err(|error| SnapshotError::Corrupt(at, error.to_string()))?;
    if trailing > 0 {
        let error = CodecError::TrailingBytes {
            trailing_bytes: trailing as usize,
        };
        return Err(SnapshotError::Corrupt(at, error.to_string()));
    }
    if ledger.applied_lsn != header.lsn {
        return Err(SnapshotError::Corrupt(
            12,
            "header position disagrees with the body".into(),
        ));
    }
    if header
        .next
        .is_some_and(|next: SegmentRef| next.first_lsn != header.lsn + 1)
    {
        return Err(SnapshotError::Corrupt(
            20,
            "the next segment does not start after the snapshot".into(),
        ));
    }
    Ok(Snapshot {
        ledger,
        next: header.next,
    })
}

/// Checks and decodes a snapshot file's bytes (either version); the error says what is wrong and
/// at which offset. The same checks as [`read_snapshot`], on bytes already in memory.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, (u64, String)> {
    read_snapshot(bytes, bytes.len() as u64).map_err(|error| match error {
        SnapshotError::Corrupt(offset, reason) => (offset, reason),
        // Reading a slice does not fail.
        SnapshotError::Io(error) => (0, error.to_string()),
    })
}

/// The bytes of the close marker.
pub fn encode_closed(marker: &ClosedMarker) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CLOSED_BYTES);
    bytes.extend_from_slice(&CLOSED_MAGIC);
    bytes.extend_from_slice(&CLOSED_VERSION.to_be_bytes());
    put_ref(&mut bytes, Some(marker.segment));
    bytes.extend_from_slice(&marker.end_offset.to_be_bytes());
    bytes.extend_from_slice(&marker.last_lsn.to_be_bytes());
    bytes.extend_from_slice(&crc(&bytes).to_be_bytes());
    bytes
}

/// Checks and decodes the close marker; the error says what is wrong and at which offset.
pub fn decode_closed(bytes: &[u8]) -> Result<ClosedMarker, (u64, String)> {
    if bytes.len() != CLOSED_BYTES {
        return Err((
            0,
            format!("{} bytes, a close marker has {CLOSED_BYTES}", bytes.len()),
        ));
    }
    if bytes[..8] != CLOSED_MAGIC {
        return Err((0, "not a close marker (bad magic)".into()));
    }
    let crc_at = CLOSED_BYTES - 4;
    if be_u32(bytes, crc_at) != crc(&bytes[..crc_at]) {
        return Err((crc_at as u64, "close marker checksum mismatch".into()));
    }
    let version = be_u32(bytes, 8);
    if version != CLOSED_VERSION {
        return Err((8, format!("unsupported close marker version {version}")));
    }
    Ok(ClosedMarker {
        segment: get_ref(bytes, 12).ok_or((12, "names no segment".to_string()))?,
        end_offset: be_u64(bytes, 28),
        last_lsn: be_u64(bytes, 36),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_record_is_never_written_and_is_damage_when_read() {
        let record = Record {
            request: crate::model::RequestId {
                client: 7,
                sequence: 2,
            },
            card: 9,
            at_unix_ms: 0,
            business_day: 0,
            event: crate::ledger::Event::Withdrawal { amount: 300 },
            outcome: crate::ledger::Outcome::bare(crate::model::Code::Busy),
        };
        let mut buffer = Vec::new();
        assert!(encode_record(1, &record, &mut buffer).is_err());
        assert!(buffer.is_empty(), "nothing of it was written");
        frame_record(1, &record, &mut buffer).unwrap();
        match parse_record(&buffer, 0) {
            Parsed::Corrupt(reason) => assert!(reason.contains("not valid"), "{reason}"),
            _ => panic!("an invalid record read back must be damage"),
        }
    }

    #[test]
    fn snapshot_bodies_of_this_and_the_first_release_decode() {
        let mut ledger = Ledger {
            applied_lsn: 250,
            ..Ledger::default()
        };
        ledger.money_in = 7;
        let mut body = Vec::new();
        encode_snapshot_body(&ledger, &mut body).unwrap();
        assert_eq!(body[..2], [BODY_MARK, SNAPSHOT_BODY_VERSION]);
        assert_eq!(decode_snapshot_body(&body).unwrap(), ledger);
        // The first release wrote the ledger alone; its first field is a varint, never 255.
        let old = LedgerV1 {
            applied_lsn: u64::MAX,
            money_in: 7,
            ..LedgerV1::default()
        };
        let old_body = codec::encode_stored(&old).unwrap();
        assert_ne!(old_body[0], BODY_MARK);
        assert_eq!(decode_snapshot_body(&old_body).unwrap(), Ledger::from(old));
        // The second layout: marked, version 2, accounts without holds or statements.
        let second = LedgerV2 {
            applied_lsn: 250,
            money_in: 7,
            ..LedgerV2::default()
        };
        let mut second_body = vec![BODY_MARK, SNAPSHOT_BODY_VERSION_2];
        codec::encode_stored_into(&second, &mut second_body).unwrap();
        assert_eq!(decode_snapshot_body(&second_body).unwrap(), ledger);
        body[1] = 9;
        assert!(decode_snapshot_body(&body).is_err());
    }

    #[test]
    fn record_bodies_of_this_and_earlier_releases_decode() {
        let record = Record {
            request: crate::model::RequestId {
                client: 7,
                sequence: 2,
            },
            card: 9,
            at_unix_ms: 5,
            business_day: 20_454,
            event: crate::ledger::Event::Withdrawal { amount: 300 },
            outcome: crate::ledger::Outcome {
                status: crate::model::Code::Approved,
                balance: Some(700),
                available: Some(600),
                reference: None,
            },
        };
        let mut framed = Vec::new();
        encode_record(1, &record, &mut framed).unwrap();
        let body = &framed[RECORD_HEADER_BYTES..];
        assert_eq!(body[..2], [BODY_MARK, RECORD_BODY_VERSION]);
        assert_eq!(decode_record_body(body).unwrap(), record);
        // Earlier releases wrote the record alone, with a code and a balance as its outcome.
        let old = RecordV1 {
            request: record.request,
            card: 9,
            at_unix_ms: 5,
            event: record.event.clone(),
            outcome: crate::ledger::OutcomeV1 {
                status: crate::model::Code::Approved,
                balance: Some(700),
            },
        };
        let old_body = codec::encode_stored(&old).unwrap();
        assert_ne!(old_body[0], BODY_MARK);
        let converted = decode_record_body(&old_body).unwrap();
        assert_eq!(converted.business_day, 0);
        assert_eq!(converted.outcome.available, None);
        assert_eq!(converted.outcome.balance, Some(700));
        let mut unknown = body.to_vec();
        unknown[1] = 9;
        assert!(decode_record_body(&unknown).is_err());
    }

    /// A reader that gives at most one byte per read, so every piece of the snapshot reader
    /// meets a boundary somewhere.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let count = self.0.len().min(buffer.len()).min(1);
            buffer[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    /// A reader that fails after `good` bytes, as a failing disk does.
    struct Failing<'a> {
        bytes: &'a [u8],
        good: usize,
    }

    impl std::io::Read for Failing<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            if self.good == 0 {
                return Err(std::io::Error::other("the disk failed"));
            }
            let count = self.bytes.len().min(buffer.len()).min(self.good);
            buffer[..count].copy_from_slice(&self.bytes[..count]);
            self.bytes = &self.bytes[count..];
            self.good -= count;
            Ok(count)
        }
    }

    fn some_ledger(applied_lsn: Lsn, money_in: u128) -> Ledger {
        let mut ledger = Ledger {
            applied_lsn,
            ..Ledger::default()
        };
        ledger.money_in = money_in;
        ledger
    }

    fn corrupt_reason(result: Result<Snapshot, SnapshotError>) -> (u64, String) {
        match result {
            Err(SnapshotError::Corrupt(offset, reason)) => (offset, reason),
            Err(SnapshotError::Io(error)) => {
                panic!("an i/o error where damage was expected: {error}")
            }
            Ok(_) => panic!("a damaged snapshot was accepted"),
        }
    }

    #[test]
    fn a_snapshot_read_as_it_streams_is_the_one_written_whatever_the_pieces() {
        let ledger = some_ledger(41, 7);
        let bytes = encode_snapshot(&ledger, SegmentRef::new(42)).unwrap();
        let read = read_snapshot(Trickle(&bytes), bytes.len() as u64).unwrap();
        assert_eq!(read.ledger, ledger);
        assert_eq!(read.next.map(|next| next.first_lsn), Some(42));
        // The first release's snapshot: its shorter header is followed by the body at once.
        let old = LedgerV1 {
            applied_lsn: 41,
            money_in: 7,
            ..LedgerV1::default()
        };
        let old_bytes = encode_snapshot_legacy(&old).unwrap();
        let read = read_snapshot(Trickle(&old_bytes), old_bytes.len() as u64).unwrap();
        assert_eq!(read.ledger, Ledger::from(old));
        assert!(read.next.is_none());
        assert_eq!(decode_snapshot(&old_bytes).unwrap().ledger, read.ledger);
    }

    #[test]
    fn a_body_that_decodes_but_does_not_match_its_checksum_is_refused_after_decoding() {
        // Two snapshots alike but for one byte of the body: the second's body under the first's
        // header decodes to a valid state, and only the checksum, known once the body has been
        // read, tells it is not the one written.
        let first = encode_snapshot(&some_ledger(9, 7), SegmentRef::new(10)).unwrap();
        let second = encode_snapshot(&some_ledger(9, 8), SegmentRef::new(10)).unwrap();
        assert_eq!(first.len(), second.len());
        let mut forged = first[..SNAPSHOT_HEADER_BYTES].to_vec();
        forged.extend_from_slice(&second[SNAPSHOT_HEADER_BYTES..]);
        assert_eq!(
            decode_snapshot_body(&forged[SNAPSHOT_HEADER_BYTES..])
                .unwrap()
                .money_in,
            8
        );
        let (offset, reason) = corrupt_reason(read_snapshot(&forged[..], forged.len() as u64));
        assert_eq!(offset, SNAPSHOT_HEADER_BYTES as u64);
        assert_eq!(reason, "snapshot body checksum mismatch");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_as_it_streams_with_what_is_wrong_and_where() {
        let bytes = encode_snapshot(&some_ledger(9, 7), SegmentRef::new(10)).unwrap();
        let body_bytes_at = 36;
        // Truncated: the body is shorter than the header says.
        let short = &bytes[..bytes.len() - 1];
        let (offset, reason) = corrupt_reason(read_snapshot(short, short.len() as u64));
        assert_eq!(offset, body_bytes_at);
        assert!(reason.starts_with("body is"), "{reason}");
        // Longer than the header says.
        let mut long = bytes.clone();
        long.push(0);
        let (offset, _) = corrupt_reason(read_snapshot(&long[..], long.len() as u64));
        assert_eq!(offset, body_bytes_at);
        // A file that ends before the length its directory entry gave (it shrank under the
        // reader): the bytes read are counted, not only the length first seen.
        let (offset, reason) = corrupt_reason(read_snapshot(short, bytes.len() as u64));
        assert_eq!(offset, body_bytes_at);
        assert!(reason.starts_with("body is"), "{reason}");
        // Shorter than a header.
        let (offset, reason) = corrupt_reason(read_snapshot(&bytes[..20], 20));
        assert_eq!(
            (offset, reason.as_str()),
            (0, "shorter than a snapshot header")
        );
        // Every byte flipped, one at a time: refused, never a different state.
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            let (offset, reason) =
                corrupt_reason(read_snapshot(Trickle(&flipped), flipped.len() as u64));
            match decode_snapshot(&flipped) {
                Err(refusal) => assert_eq!(refusal, (offset, reason), "at {at}"),
                Ok(_) => panic!("a snapshot with byte {at} flipped was accepted"),
            }
        }
        // An unknown format version.
        let mut version = bytes.clone();
        version[11] = 9;
        let (offset, _) = corrupt_reason(read_snapshot(&version[..], version.len() as u64));
        assert_eq!(offset, 8);
    }

    #[test]
    fn a_snapshot_that_cannot_be_read_is_an_io_error_not_damage() {
        let bytes = encode_snapshot(&some_ledger(9, 7), SegmentRef::new(10)).unwrap();
        for good in [0, 10, SNAPSHOT_HEADER_BYTES + 1] {
            let failing = Failing {
                bytes: &bytes,
                good,
            };
            assert!(
                matches!(
                    read_snapshot(failing, bytes.len() as u64),
                    Err(SnapshotError::Io(_))
                ),
                "failing after {good} bytes"
            );
        }
    }

    #[test]
    fn zeros_from_finds_the_end_of_the_last_non_zero_byte() {
        for length in [0, 1, 7, 4095, 4096, 4097, 10_000] {
            let mut bytes = vec![0u8; length];
            assert_eq!(zeros_from(&bytes), 0);
            for at in [0, length / 2, length.saturating_sub(1)] {
                if at < length {
                    bytes.fill(0);
                    bytes[at] = 1;
                    assert_eq!(zeros_from(&bytes), at + 1, "length {length}, at {at}");
                }
            }
        }
    }
}
