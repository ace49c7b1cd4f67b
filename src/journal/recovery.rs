//! Rebuilding the committed state from the data directory when the server starts.
//!
//! The rules (docs/JOURNAL.md, section 9, gives the reasoning):
//! 1. Leftover temporaries (`*.tmp`) are deleted: they were never renamed, so never relied on.
//! 2. The close marker (`CLOSED`), if there is one, says how far the journal reached at the last
//!    clean shutdown; the journal must end exactly there, or the server refuses to start.
//! 3. The newest `snapshot-*.snap` is loaded. It must be valid, and the segment it names as its
//!    successor must exist: a snapshot is renamed into place only after it is synced, and its
//!    successor is created before it, so anything else is damage.
//! 4. Segments are replayed in order; each names its predecessor, and positions follow each
//!    other with no gap. Records the snapshot already covers are checked and skipped. In a
//!    version 2 segment a batch counts only once its seal (a redundant summary written after the
//!    batch's records, in the same sync) is there and matches.
//! 5. Damage after the newest segment's last whole batch is cut only when it has the shape of a
//!    write interrupted by a power loss (`torn_shape`), no clean shutdown followed it, and the
//!    recovery mode allows it; the operator's `--accept-cut` cuts whatever follows the last whole
//!    batch and says exactly what was dropped. Anything else refuses the start, naming the file,
//!    the offset and what was expected there.

use super::files::{FileLayer, SegmentFile, SEGMENT_GROWTH_BYTES};
use super::format::{self, ClosedMarker, Parsed, SegmentHeader, SegmentRef};
use super::{JournalConfig, JournalError, RecoveryMode};
use crate::ledger::{Ledger, Lsn, Record};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

/// What recovery hands to the writer.
pub struct Recovered {
    /// The committed state.
    pub ledger: Ledger,
    /// The segment new records are appended to.
    pub segment: Box<dyn SegmentFile>,
    /// Which segment that is.
    pub segment_ref: SegmentRef,
    /// Where its records end: new batches go there.
    pub segment_bytes: u64,
    /// Records replayed after the snapshot (they count towards the next one).
    pub records_after_snapshot: u64,
    /// What was cut from the newest segment's tail, if anything, in words.
    pub cut: Option<String>,
}

/// The data directory's files, by kind and position.
struct Listing {
    snapshots: Vec<(Lsn, PathBuf)>,
    segments: Vec<(Lsn, PathBuf)>,
    temporaries: Vec<PathBuf>,
}

fn list(files: &dyn FileLayer, directory: &Path) -> Result<Listing, JournalError> {
    let names = files
        .list_dir(directory)
        .map_err(|error| JournalError::io(directory, error))?;
    let mut listing = Listing {
        snapshots: Vec::new(),
        segments: Vec::new(),
        temporaries: Vec::new(),
    };
    for name in names {
        let path = directory.join(&name);
        if let Some(lsn) = format::position_in_name(&name, "snapshot-", ".snap") {
            listing.snapshots.push((lsn, path));
        } else if let Some(lsn) = format::position_in_name(&name, "journal-", ".log") {
            listing.segments.push((lsn, path));
        } else if format::position_in_name(&name, "snapshot-", ".tmp").is_some()
            || format::position_in_name(&name, "journal-", ".tmp").is_some()
            || name == format::CLOSED_TEMPORARY_NAME
        {
            listing.temporaries.push(path);
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// Removes whatever is at `path` (a file, or a symlink, never what it points to), if anything.
pub fn remove_if_present(files: &dyn FileLayer, path: &Path) -> std::io::Result<()> {
    match files.remove(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Writes `bytes` as the file `path`, atomically: into the temporary `temporary` (created anew,
/// owner-only, never through a symlink), synced, renamed into place, directory synced.
pub fn write_atomically(
    files: &dyn FileLayer,
    temporary: &Path,
    path: &Path,
    bytes: &[u8],
) -> std::io::Result<()> {
    remove_if_present(files, temporary)?;
    let mut file = files.create_new(temporary, 0)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    drop(file);
    files.rename(temporary, path)?;
    if let Some(directory) = path.parent() {
        files.sync_dir(directory)?;
    }
    Ok(())
}

/// Creates `segment` after `previous` in `directory`: under a temporary name, its header
/// written and its first growth step of zeros in place, synced, then renamed to its final name
/// and the directory synced. A segment under its final name is therefore always whole, so a
/// shorter one is truncation, never a segment still being created.
pub fn create_segment(
    files: &dyn FileLayer,
    directory: &Path,
    segment: SegmentRef,
    previous: Option<SegmentRef>,
) -> std::io::Result<Box<dyn SegmentFile>> {
    let path = directory.join(format::segment_name(segment.first_lsn));
    if files.entry_exists(&path) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    let temporary = directory.join(format::segment_temporary_name(segment.first_lsn));
    remove_if_present(files, &temporary)?;
    let mut file = files.create_new(&temporary, SEGMENT_GROWTH_BYTES)?;
    file.write_all(&format::segment_header(segment, previous))?;
    file.sync_data()?;
    files.rename(&temporary, &path)?;
    files.sync_dir(directory)?;
    Ok(file)
}

/// Removes snapshots older than the one at `lsn`, and segments whose records are all at or below
/// `lsn` (a segment is covered when a later segment starts at or before `lsn + 1`).
pub fn remove_covered_files(
    files: &dyn FileLayer,
    directory: &Path,
    lsn: Lsn,
) -> Result<(), JournalError> {
    let listing = list(files, directory)?;
    let remove = |path: &Path| {
        files
            .remove(path)
            .map_err(|error| JournalError::io(path, error))
    };
    for (snapshot_lsn, path) in &listing.snapshots {
        if *snapshot_lsn < lsn {
            remove(path)?;
        }
    }
    for pair in listing.segments.windows(2) {
        if pair[1].0 <= lsn + 1 {
            remove(&pair[0].1)?;
        }
    }
    Ok(())
}

/// True when a version 1 segment's bytes are what a crash between creating it and syncing its
/// header left under the first release: shorter than a header, or the start of the header it
/// should have followed only by zeros. Such a segment holds no record. (Version 2 segments are
/// renamed into place whole, so this never applies to them.)
fn has_torn_legacy_header(bytes: &[u8], named_first: Lsn) -> bool {
    if bytes.len() < format::SEGMENT_HEADER_BYTES_LEGACY {
        return true;
    }
    let written = format::zeros_from(bytes);
    written < format::SEGMENT_HEADER_BYTES_LEGACY
        && bytes[..written] == format::segment_header_legacy(named_first)[..written]
}

/// Damage found after a segment's last whole batch.
struct Damage {
    /// Where the bad frame (or the missing seal) starts.
    offset: usize,
    /// Where that frame would end, as far as can be told.
    extent: usize,
    /// What was expected there and what was found.
    reason: String,
    /// The positions of records of the unfinished batch, if any.
    unsealed: Option<(Lsn, Lsn)>,
}

/// What reading one segment found.
struct Scan {
    /// The offset just after the last whole batch (version 1: the last whole record).
    whole_end: usize,
    /// The last position of a whole batch, if any.
    last_lsn: Option<Lsn>,
    /// Damage after `whole_end`, if any.
    damage: Option<Damage>,
}

/// The reading position across segments: the last position read and the state being rebuilt.
struct Replay {
    ledger: Ledger,
    snapshot_lsn: Lsn,
    previous: Option<Lsn>,
    replayed: u64,
}

impl Replay {
    /// Checks that `lsn` comes next and applies `record` if the snapshot does not cover it.
    fn accept(&mut self, lsn: Lsn, record: &Record, first: Lsn) -> Result<(), String> {
        let expected = self.previous.map_or(first, |previous| previous + 1);
        if lsn != expected {
            return Err(format!("record {lsn} where {expected} belongs"));
        }
        if lsn > self.ledger.applied_lsn {
            if lsn != self.ledger.applied_lsn + 1 {
                return Err(format!("gap after snapshot at {}", self.snapshot_lsn));
            }
            self.ledger
                .apply(lsn, record)
                .map_err(|error| error.to_string())?;
            self.replayed += 1;
        }
        self.previous = Some(lsn);
        Ok(())
    }
}

/// Reading the frames of one segment in order: where the reading is, and the batch whose seal
/// has not been read yet.
struct Reader<'a> {
    /// The whole segment file.
    bytes: &'a [u8],
    /// Whether records count only in sealed batches (version 2) or one by one (version 1).
    sealed: bool,
    /// The segment's first position, as its header names it.
    first: Lsn,
    /// Where the next frame starts.
    offset: usize,
    /// The offset just after the last whole batch (version 1: the last whole record).
    whole_end: usize,
    /// The last position of a whole batch, if any.
    last_lsn: Option<Lsn>,
    /// Records of the batch being read, not yet applied: a batch counts only once its seal holds.
    batch: Vec<(Lsn, Record)>,
    /// The position the next record must have.
    expected: Lsn,
}

impl<'a> Reader<'a> {
    /// Starts reading just after the header, expecting the record after `previous` (the last
    /// position of the segment before), or the segment's first one.
    fn new(bytes: &'a [u8], header: &SegmentHeader, previous: Option<Lsn>) -> Self {
        let first = header.segment.first_lsn;
        let offset = header.bytes();
        Reader {
            bytes,
            sealed: header.version == format::FORMAT_VERSION,
            first,
            offset,
            whole_end: offset,
            last_lsn: None,
            batch: Vec::new(),
            expected: previous.map_or(first, |previous| previous + 1),
        }
    }

    /// The damage of the frame at the current offset, naming the unfinished batch's records.
    fn damage(&self, reason: String) -> Damage {
        Damage {
            offset: self.offset,
            extent: format::frame_extent(self.bytes, self.offset),
            reason,
            unsealed: self
                .batch
                .first()
                .zip(self.batch.last())
                .map(|(a, b)| (a.0, b.0)),
        }
    }

    /// The damage of a batch whose records are followed by zeros where its seal belongs.
    fn missing_seal(&self) -> Damage {
        let reason = "the seal of the batch before it, found zeros".to_string();
        Damage {
            extent: self.offset + format::SEAL_BYTES,
            ..self.damage(reason)
        }
    }

    /// What the reading found, ending in `damage` if any.
    fn finish(self, damage: Option<Damage>) -> Scan {
        Scan {
            whole_end: self.whole_end,
            last_lsn: self.last_lsn,
            damage,
        }
    }

    /// Takes the record at `lsn` that ends at `end`: in version 1 it counts at once, in version 2
    /// it waits for its batch's seal. A position that does not follow stops the reading.
    fn record(
        &mut self,
        lsn: Lsn,
        record: Record,
        end: usize,
        replay: &mut Replay,
    ) -> Result<ControlFlow<Damage>, (usize, String)> {
        if lsn != self.expected {
            let reason = format!("record {lsn} where {} belongs", self.expected);
            return Ok(ControlFlow::Break(self.damage(reason)));
        }
        self.expected += 1;
        if self.sealed {
            self.batch.push((lsn, record));
        } else {
            replay
                .accept(lsn, &record, self.first)
                .map_err(|reason| (self.offset, reason))?;
            self.whole_end = end;
            self.last_lsn = Some(lsn);
        }
        self.offset = end;
        Ok(ControlFlow::Continue(()))
    }

    /// Takes the seal of the batch being read, for records `first_lsn..=sealed_last` with the
    /// checksum `records_crc`, ending at `end`: the batch counts when the seal matches it; a
    /// seal that does not match stops the reading.
    fn seal(
        &mut self,
        records_crc: u32,
        first_lsn: Lsn,
        sealed_last: Lsn,
        end: usize,
        replay: &mut Replay,
    ) -> Result<ControlFlow<Damage>, (usize, String)> {
        let matches = self.batch.first().map(|record| record.0) == Some(first_lsn)
            && self.batch.last().map(|record| record.0) == Some(sealed_last)
            && format::checksum(&self.bytes[self.whole_end..self.offset]) == records_crc;
        if !matches {
            let reason = format!(
                "a batch seal for records {first_lsn}..={sealed_last} that does not match the \
                 records before it"
            );
            return Ok(ControlFlow::Break(Damage {
                extent: end,
                ..self.damage(reason)
            }));
        }
        let start = self.whole_end;
        for (lsn, record) in self.batch.drain(..) {
            replay
                .accept(lsn, &record, self.first)
                .map_err(|reason| (start, reason))?;
        }
        self.whole_end = end;
        self.last_lsn = Some(sealed_last);
        self.offset = end;
        Ok(ControlFlow::Continue(()))
    }
}

/// Reads the records of one segment whose header is `header`, applying every whole batch.
/// Errors are corruption at an offset (a record that does not apply, or, in version 1, damage
/// that is not a torn tail).
fn scan(
    bytes: &[u8],
    header: &SegmentHeader,
    replay: &mut Replay,
) -> Result<Scan, (usize, String)> {
    let mut reader = Reader::new(bytes, header, replay.previous);
    loop {
        let step = match format::parse_record(bytes, reader.offset) {
            Parsed::Record { lsn, record, end } => reader.record(lsn, record, end, replay)?,
            Parsed::Seal {
                records_crc,
                first_lsn,
                last_lsn,
                end,
            } if reader.sealed => reader.seal(records_crc, first_lsn, last_lsn, end, replay)?,
            Parsed::Seal { .. } => {
                return Err((reader.offset, "a batch seal in a version 1 segment".into()));
            }
            Parsed::End if reader.batch.is_empty() => return Ok(reader.finish(None)),
            Parsed::End => ControlFlow::Break(reader.missing_seal()),
            Parsed::Corrupt(reason) if !reader.sealed => return Err((reader.offset, reason)),
            Parsed::Torn(reason) | Parsed::Corrupt(reason) => {
                ControlFlow::Break(reader.damage(reason))
            }
        };
        if let ControlFlow::Break(damage) = step {
            return Ok(reader.finish(Some(damage)));
        }
    }
}

/// Whether the bytes after the last whole batch of a version 2 segment have the shape a write
/// cut short by a power loss leaves, and nothing else can: the segment has its whole grown size
/// (so nothing cut it shorter), and the damaged frame reaches past the last sector holding any
/// non-zero byte (so its bad part is sectors that never arrived, still the zeros the segment was
/// grown with). A bad frame lying entirely in sectors that did arrive is rot, not a tear; so is
/// a batch whose seal arrived.
fn torn_shape(bytes: &[u8], damage: &Damage) -> Result<(), String> {
    if !(bytes.len() as u64).is_multiple_of(SEGMENT_GROWTH_BYTES) {
        return Err(format!(
            "the file is {} bytes, not a whole number of {SEGMENT_GROWTH_BYTES}-byte growth \
             steps: it was truncated or appended to",
            bytes.len()
        ));
    }
    let persisted = format::zeros_from(bytes).next_multiple_of(format::SECTOR_BYTES);
    if damage.extent <= persisted {
        return Err(format!(
            "bytes {}..{} lie in sectors that reached the disk, so this is damage, not an \
             interrupted write",
            damage.offset, damage.extent
        ));
    }
    Ok(())
}

/// One segment as recovery saw it.
struct SegmentSeen {
    /// Its file.
    path: PathBuf,
    /// Its header.
    header: SegmentHeader,
    /// The length of its file.
    bytes_len: usize,
    /// The offset just after the last non-zero byte.
    written_end: usize,
    /// What reading its records found.
    scan: Scan,
}

/// The state recovery starts from: the newest snapshot's, or the empty state when there is none.
struct Base {
    /// The state at the snapshot's position.
    ledger: Ledger,
    /// The segment the snapshot names as its successor, if it names one.
    next: Option<SegmentRef>,
    /// The snapshot's file, if there is a snapshot.
    path: Option<PathBuf>,
}

/// The segments as recovery read them.
struct Segments {
    /// Every segment read, oldest first.
    seen: Vec<SegmentSeen>,
    /// What was said about a newest segment dropped for its torn header, if one was.
    dropped: Option<String>,
}

/// Where new records go.
struct Append {
    /// The segment they are appended to.
    segment: Box<dyn SegmentFile>,
    /// Which segment that is.
    segment_ref: SegmentRef,
    /// Where its records end.
    segment_bytes: u64,
}

/// Recovers the committed state from `config.data_dir` (which must exist and be locked).
pub fn recover(config: &JournalConfig) -> Result<Recovered, JournalError> {
    let directory = &config.data_dir;
    let files = config.files.as_ref();
    let listing = list(files, directory)?;
    remove_temporaries(files, &listing)?;
    let closed_path = directory.join(format::CLOSED_FILE_NAME);
    let closed = read_closed(files, &closed_path)?;
    let Base {
        ledger,
        next: snapshot_next,
        path: snapshot_path,
    } = load_newest_snapshot(files, &listing)?;
    let snapshot_lsn = ledger.applied_lsn;
    let mut replay = Replay {
        ledger,
        snapshot_lsn,
        previous: None,
        replayed: 0,
    };
    let segments = replay_segments(
        config,
        &listing,
        closed.is_some(),
        snapshot_path.is_some(),
        &mut replay,
    )?;
    check_successor(snapshot_next, snapshot_path.as_deref(), &segments.seen)?;
    let cut = match segments.dropped {
        Some(report) => Some(report),
        None => judge_tail(config, closed.as_ref(), segments.seen.last(), &closed_path)?,
    };
    let ledger = replay.ledger;
    check_adds_up(&ledger, snapshot_lsn, directory)?;
    let applied = ledger.applied_lsn;
    let append = prepare_append(
        files,
        directory,
        segments.seen.last(),
        applied,
        cut.is_some(),
    )?;
    remove_covered_files(files, directory, snapshot_lsn)?;
    if closed.is_some() {
        remove_closed_marker(files, directory, &closed_path)?;
    }
    tracing::info!(
        lsn = applied,
        snapshot_lsn,
        replayed = replay.replayed,
        accounts = ledger.accounts.len(),
        clean_shutdown = closed.is_some(),
        "journal recovered"
    );
    Ok(Recovered {
        ledger,
        segment: append.segment,
        segment_ref: append.segment_ref,
        segment_bytes: append.segment_bytes,
        records_after_snapshot: replay.replayed,
        cut,
    })
}

/// The error for damage in the file `path` at byte `offset`.
fn corrupt(path: &Path, offset: usize, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    }
}

/// Deletes the leftover temporaries: they were never renamed, so nothing ever relied on them.
fn remove_temporaries(files: &dyn FileLayer, listing: &Listing) -> Result<(), JournalError> {
    for path in &listing.temporaries {
        files
            .remove(path)
            .map_err(|error| JournalError::io(path, error))?;
    }
    Ok(())
}

/// Reads the close marker at `path`, if there is one; one that is there must be valid.
fn read_closed(files: &dyn FileLayer, path: &Path) -> Result<Option<ClosedMarker>, JournalError> {
    match files.read(path) {
        Ok(bytes) => Ok(Some(
            format::decode_closed(&bytes)
                .map_err(|(offset, reason)| corrupt(path, offset as usize, reason))?,
        )),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(JournalError::io(path, error)),
    }
}

/// Loads the newest snapshot, which must be valid and at the position its name says; an older
/// one is never tried instead. With no snapshot, the state starts empty.
fn load_newest_snapshot(files: &dyn FileLayer, listing: &Listing) -> Result<Base, JournalError> {
    let Some((named, path)) = listing.snapshots.last() else {
        return Ok(Base {
            ledger: Ledger::default(),
            next: None,
            path: None,
        });
    };
    let snapshot = read_snapshot(files, path)?;
    if snapshot.ledger.applied_lsn != *named {
        return Err(corrupt(
            path,
            12,
            format!("the header says position {}", snapshot.ledger.applied_lsn),
        ));
    }
    Ok(Base {
        ledger: snapshot.ledger,
        next: snapshot.next,
        path: Some(path.clone()),
    })
}

/// Reads and decodes the snapshot `path` as it is read, never holding the file whole in memory
/// (a snapshot of a million accounts is hundreds of megabytes, and fresh memory is the largest
/// cost of a start): see [`format::read_snapshot`].
///
/// The file layer has no streaming read, so the file is opened here as the layer's default
/// [`FileLayer::read`] opens it; `files` is kept for when it has one.
fn read_snapshot(_files: &dyn FileLayer, path: &Path) -> Result<format::Snapshot, JournalError> {
    let file = std::fs::File::open(path).map_err(|error| JournalError::io(path, error))?;
    let file_bytes = file
        .metadata()
        .map_err(|error| JournalError::io(path, error))?
        .len();
    format::read_snapshot(file, file_bytes).map_err(|error| match error {
        format::SnapshotError::Io(error) => JournalError::io(path, error),
        format::SnapshotError::Corrupt(offset, reason) => corrupt(path, offset as usize, reason),
    })
}

/// Reads the segments in position order into `replay`, checking each one's header, its place in
/// the chain and its end. A newest segment with a torn header of the first release is dropped
/// (when allowed), and reading stops there.
fn replay_segments(
    config: &JournalConfig,
    listing: &Listing,
    clean_shutdown: bool,
    has_snapshot: bool,
    replay: &mut Replay,
) -> Result<Segments, JournalError> {
    let files = config.files.as_ref();
    let mut segments = Segments {
        seen: Vec::new(),
        dropped: None,
    };
    let count = listing.segments.len();
    for (index, (named_first, path)) in listing.segments.iter().enumerate() {
        let newest = index + 1 == count;
        let bytes = read(files, path)?;
        if newest
            && may_drop_torn_header(config.recovery, clean_shutdown, &bytes)
            && has_torn_legacy_header(&bytes, *named_first)
        {
            segments.dropped = Some(drop_torn_segment(files, path, bytes.len())?);
            break;
        }
        let header = read_header(path, &bytes, *named_first)?;
        check_chain(path, &header, segments.seen.last(), has_snapshot)?;
        let scan = scan(&bytes, &header, replay)
            .map_err(|(offset, reason)| corrupt(path, offset, reason))?;
        refuse_older_damage(path, &scan, newest)?;
        if header.version == format::FORMAT_VERSION
            && !(newest && config.recovery == RecoveryMode::AcceptCut)
        {
            refuse_truncated(path, &bytes, &scan)?;
        }
        segments.seen.push(SegmentSeen {
            path: path.clone(),
            header,
            bytes_len: bytes.len(),
            written_end: format::zeros_from(&bytes),
            scan,
        });
    }
    Ok(segments)
}

/// Whether the recovery mode lets the newest segment `bytes` be dropped if its header is torn.
fn may_drop_torn_header(recovery: RecoveryMode, clean_shutdown: bool, bytes: &[u8]) -> bool {
    // Only the first release left segments being created under their final name; a version 2
    // segment is renamed into place whole, so a short one was truncated and is refused,
    // unless the operator accepts the cut.
    let legacy = bytes.get(8..12) == Some(&format::FORMAT_VERSION_LEGACY.to_be_bytes()[..]);
    match recovery {
        RecoveryMode::AcceptCut => true,
        RecoveryMode::Strict => false,
        RecoveryMode::Auto => !clean_shutdown && legacy,
    }
}

/// Removes the segment `path` of `bytes_len` bytes, whose header is torn, and says so in words.
fn drop_torn_segment(
    files: &dyn FileLayer,
    path: &Path,
    bytes_len: usize,
) -> Result<String, JournalError> {
    let report = format!(
        "{}: dropped a segment of {bytes_len} bytes whose header is incomplete (it held no \
         record)",
        path.display(),
    );
    tracing::warn!(%report, "dropping a segment with a torn header");
    files
        .remove(path)
        .map_err(|error| JournalError::io(path, error))?;
    Ok(report)
}

/// The header of the segment `path`, which must be valid and start at `named_first`, the
/// position in the file's name.
fn read_header(path: &Path, bytes: &[u8], named_first: Lsn) -> Result<SegmentHeader, JournalError> {
    let header = format::parse_segment_header(bytes)
        .map_err(|(offset, reason)| corrupt(path, offset as usize, reason))?;
    if header.segment.first_lsn != named_first {
        return Err(corrupt(
            path,
            12,
            format!("header says first record {}", header.segment.first_lsn),
        ));
    }
    Ok(header)
}

/// Checks that the segment `path` with `header` follows `before`, the segment read before it:
/// it starts right after that one's last record and, in version 2, names it as its predecessor.
/// The first segment may name a predecessor only if a snapshot covers it.
fn check_chain(
    path: &Path,
    header: &SegmentHeader,
    before: Option<&SegmentSeen>,
    has_snapshot: bool,
) -> Result<(), JournalError> {
    let Some(before) = before else {
        if !has_snapshot && header.previous.is_some() {
            return Err(corrupt(
                path,
                28,
                format!(
                    "its predecessor {} is missing and no snapshot covers it",
                    describe(header.previous)
                ),
            ));
        }
        return Ok(());
    };
    let before_last = before
        .scan
        .last_lsn
        .unwrap_or(before.header.segment.first_lsn - 1);
    if header.segment.first_lsn != before_last + 1 {
        return Err(corrupt(
            path,
            12,
            format!(
                "segment starts at record {}, the previous one ends at {before_last}",
                header.segment.first_lsn
            ),
        ));
    }
    if header.version == format::FORMAT_VERSION && header.previous != Some(before.header.segment) {
        return Err(corrupt(
            path,
            28,
            format!(
                "the header names its predecessor as {}, the previous file is {}",
                describe(header.previous),
                before.header.segment
            ),
        ));
    }
    Ok(())
}

/// Refuses damage after the last whole batch of a segment other than the newest.
fn refuse_older_damage(path: &Path, scan: &Scan, newest: bool) -> Result<(), JournalError> {
    match &scan.damage {
        Some(damage) if !newest => Err(corrupt(
            path,
            damage.offset,
            format!(
                "expected {}; an older segment never ends in an interrupted write",
                damage.reason
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses a version 2 segment shorter than the growth steps its whole batches reach into.
fn refuse_truncated(path: &Path, bytes: &[u8], scan: &Scan) -> Result<(), JournalError> {
    // Segments are created with one growth step and grow by whole steps before records go
    // into the room, so a segment is never shorter than the steps its records reach into.
    let step = SEGMENT_GROWTH_BYTES as usize;
    let grown = scan.whole_end.next_multiple_of(step).max(step);
    if bytes.len() < grown {
        return Err(corrupt(
            path,
            bytes.len(),
            format!(
                "the file ends at byte {}, short of the {grown} bytes it had grown to:                          truncated",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// Checks that the segment the snapshot at `snapshot_path` names as its successor, `next`, is
/// among the segments `seen`, with that id.
fn check_successor(
    next: Option<SegmentRef>,
    snapshot_path: Option<&Path>,
    seen: &[SegmentSeen],
) -> Result<(), JournalError> {
    let (Some(next), Some(path)) = (next, snapshot_path) else {
        return Ok(());
    };
    match seen
        .iter()
        .find(|s| s.header.segment.first_lsn == next.first_lsn)
    {
        Some(found) if found.header.segment == next => Ok(()),
        Some(found) => Err(corrupt(
            &found.path,
            12,
            format!(
                "the snapshot names its successor as {next}, this file is {}",
                found.header.segment
            ),
        )),
        None => Err(corrupt(
            path,
            20,
            format!("the segment that follows this snapshot, {next}, is missing"),
        )),
    }
}

/// Checks that the recovered `ledger` reaches the snapshot's position and that its balances add
/// up; if not, the data directory as a whole is reported.
fn check_adds_up(ledger: &Ledger, snapshot_lsn: Lsn, directory: &Path) -> Result<(), JournalError> {
    if ledger.applied_lsn < snapshot_lsn || !ledger.is_conserved() {
        return Err(JournalError::Corrupt {
            path: directory.to_path_buf(),
            offset: 0,
            reason: "recovered state does not add up".into(),
        });
    }
    Ok(())
}

/// Whether the records of `segment` end exactly where the state at `applied` does (or it holds
/// none and starts right after it).
fn continues(segment: &SegmentSeen, applied: Lsn) -> bool {
    match segment.scan.last_lsn {
        Some(last) => last == applied,
        None => segment.header.segment.first_lsn == applied + 1,
    }
}

/// Chooses and opens the segment new records go to, after the state at `applied`.
fn prepare_append(
    files: &dyn FileLayer,
    directory: &Path,
    newest: Option<&SegmentSeen>,
    applied: Lsn,
    cut: bool,
) -> Result<Append, JournalError> {
    // Append to the newest segment if it is version 2 and its records end exactly where the state
    // does; otherwise (no segment yet, a version 1 segment, or a version 1 snapshot ahead of every
    // segment) start a new one after it.
    match newest {
        Some(s) if s.header.version == format::FORMAT_VERSION && continues(s, applied) => {
            reopen(files, s, cut)
        }
        _ => start_segment(files, directory, newest, applied),
    }
}

/// Reopens the segment `s` to append after its last whole batch; when its tail was `cut`, the
/// bytes written after that batch are overwritten with zeros.
fn reopen(files: &dyn FileLayer, s: &SegmentSeen, cut: bool) -> Result<Append, JournalError> {
    let zero_until = if cut { s.written_end } else { s.scan.whole_end };
    let segment = files
        .open_append(&s.path, s.scan.whole_end as u64, zero_until as u64)
        .map_err(|error| JournalError::io(&s.path, error))?;
    Ok(Append {
        segment,
        segment_ref: s.header.segment,
        segment_bytes: s.scan.whole_end as u64,
    })
}

/// Creates a new segment that starts after the state at `applied`, naming `newest` as its
/// predecessor when the state ends where it does (after truncating a version 1 segment's torn
/// tail, as the first release did).
fn start_segment(
    files: &dyn FileLayer,
    directory: &Path,
    newest: Option<&SegmentSeen>,
    applied: Lsn,
) -> Result<Append, JournalError> {
    let previous = match newest {
        Some(s) if continues(s, applied) => {
            if s.bytes_len > s.scan.whole_end {
                files
                    .truncate(&s.path, s.scan.whole_end as u64)
                    .map_err(|error| JournalError::io(&s.path, error))?;
            }
            Some(s.header.segment)
        }
        _ => None,
    };
    let segment_ref = SegmentRef::new(applied + 1);
    let segment = create_segment(files, directory, segment_ref, previous).map_err(|error| {
        JournalError::io(&directory.join(format::segment_name(applied + 1)), error)
    })?;
    Ok(Append {
        segment,
        segment_ref,
        segment_bytes: format::SEGMENT_HEADER_BYTES as u64,
    })
}

/// Removes the close marker at `closed_path` and syncs the directory.
fn remove_closed_marker(
    files: &dyn FileLayer,
    directory: &Path,
    closed_path: &Path,
) -> Result<(), JournalError> {
    // From the first new write on, the journal extends past what the marker says.
    files
        .remove(closed_path)
        .and_then(|()| files.sync_dir(directory))
        .map_err(|error| JournalError::io(closed_path, error))
}

fn describe(segment: Option<SegmentRef>) -> String {
    segment.map_or_else(|| "none".into(), |segment| segment.to_string())
}

/// The whole file `path`, read through `files`.
fn read(files: &dyn FileLayer, path: &Path) -> Result<Vec<u8>, JournalError> {
    files
        .read(path)
        .map_err(|error| JournalError::io(path, error))
}

/// Decides what to do with the newest segment's tail: nothing (it is clean and, after a clean
/// shutdown, ends exactly where the close marker says), cut it (returning what was dropped, in
/// words), or refuse.
fn judge_tail(
    config: &JournalConfig,
    closed: Option<&ClosedMarker>,
    newest: Option<&SegmentSeen>,
    closed_path: &Path,
) -> Result<Option<String>, JournalError> {
    let Some(newest) = newest else {
        return match closed {
            Some(marker) => Err(corrupt(
                closed_path,
                12,
                format!(
                    "the last shutdown was clean at {}, which is missing",
                    marker.segment
                ),
            )),
            None => Ok(None),
        };
    };
    let last = newest
        .scan
        .last_lsn
        .unwrap_or(newest.header.segment.first_lsn - 1);
    if let Some(marker) = closed {
        return judge_against_marker(config, marker, newest, last);
    }
    let Some(damage) = &newest.scan.damage else {
        return Ok(None);
    };
    judge_damage(config, newest, damage, last)
}

/// After a clean shutdown: the newest segment (whose last record is `last`) must end exactly
/// where `marker` says, with a clean tail; only the operator's cut accepts anything else, and
/// only in the segment the marker names.
fn judge_against_marker(
    config: &JournalConfig,
    marker: &ClosedMarker,
    newest: &SegmentSeen,
    last: Lsn,
) -> Result<Option<String>, JournalError> {
    let accept = config.recovery == RecoveryMode::AcceptCut;
    let path = &newest.path;
    let whole = newest.scan.whole_end;
    match marker_mismatch(marker, newest, last) {
        None => Ok(None),
        Some((offset, reason)) if !accept || marker.segment != newest.header.segment => {
            Err(corrupt(path, offset, reason))
        }
        Some((_, reason)) => Ok(operator_cut(format!(
            "{}: accepted a cut at byte offset {whole}, keeping records up to {last}; dropped {} \
             bytes after it ({reason})",
            path.display(),
            newest.written_end.saturating_sub(whole),
        ))),
    }
}

/// Where and how the newest segment (whose last record is `last`) differs from what the close
/// `marker` says, if it does.
fn marker_mismatch(
    marker: &ClosedMarker,
    newest: &SegmentSeen,
    last: Lsn,
) -> Option<(usize, String)> {
    let expected = format!(
        "the last shutdown was clean: the journal ends with record {} at byte offset {} of {}",
        marker.last_lsn, marker.end_offset, marker.segment
    );
    let whole = newest.scan.whole_end;
    if marker.segment != newest.header.segment {
        Some((
            0,
            format!(
                "{expected}, but the newest segment is {}",
                newest.header.segment
            ),
        ))
    } else if let Some(damage) = &newest.scan.damage {
        Some((
            damage.offset,
            format!("{expected}; found {}", damage.reason),
        ))
    } else if marker.end_offset != whole as u64 || marker.last_lsn != last {
        Some((
            whole,
            format!("{expected}; its records end with {last} at byte offset {whole}"),
        ))
    } else if !(newest.bytes_len as u64).is_multiple_of(SEGMENT_GROWTH_BYTES) {
        Some((
            newest.bytes_len,
            format!(
                "{expected}; the file is {} bytes, not its grown size",
                newest.bytes_len
            ),
        ))
    } else {
        None
    }
}

/// With no clean shutdown: cuts `damage` after the newest segment's last whole batch (whose last
/// record is `last`) when the operator accepts the cut, when it is a version 1 torn tail, or
/// when it has the shape of an interrupted write; refuses it otherwise, and always in strict
/// mode.
fn judge_damage(
    config: &JournalConfig,
    newest: &SegmentSeen,
    damage: &Damage,
    last: Lsn,
) -> Result<Option<String>, JournalError> {
    let path = &newest.path;
    let report = cut_report(newest, damage, last);
    if config.recovery == RecoveryMode::AcceptCut {
        return Ok(operator_cut(report));
    }
    let strict = config.recovery == RecoveryMode::Strict;
    if newest.header.version == format::FORMAT_VERSION_LEGACY {
        if strict {
            return Err(corrupt(
                path,
                damage.offset,
                format!(
                    "expected {}; --recovery strict never cuts a tail",
                    damage.reason
                ),
            ));
        }
        tracing::warn!(%report, "cutting a torn tail of a version 1 segment");
        return Ok(Some(report));
    }
    if strict {
        return Err(corrupt(
            path,
            damage.offset,
            format!(
                "expected {}; --recovery strict never cuts a tail (bank-server --accept-cut \
                 accepts the cut)",
                damage.reason
            ),
        ));
    }
    let bytes = read(config.files.as_ref(), path)?;
    if let Err(shape) = torn_shape(&bytes, damage) {
        return Err(corrupt(
            path,
            damage.offset,
            format!(
                "expected {}; {shape} (bank-server --accept-cut accepts the cut)",
                damage.reason
            ),
        ));
    }
    tracing::warn!(%report, "cutting a torn tail left by an interrupted write");
    Ok(Some(report))
}

/// What cutting the newest segment back to its last whole batch (whose last record is `last`)
/// drops because of `damage`, in words.
fn cut_report(newest: &SegmentSeen, damage: &Damage, last: Lsn) -> String {
    let dropped = match damage.unsealed {
        Some((first, last)) => format!(
            "records {first}..={last}, all that is readable of a batch whose seal is not there"
        ),
        None => "no whole record".into(),
    };
    format!(
        "{}: cut at byte offset {} after record {last}: dropped bytes {}..{} ({dropped}; expected \
         {})",
        newest.path.display(),
        newest.scan.whole_end,
        newest.scan.whole_end,
        newest.written_end.max(newest.scan.whole_end),
        damage.reason
    )
}

/// Logs and returns a cut of the journal's tail that the operator accepted.
fn operator_cut(report: String) -> Option<String> {
    tracing::warn!(%report, "operator accepted a cut of the journal's tail");
    Some(report)
}
