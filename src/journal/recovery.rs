//! Rebuilding the committed state from the data directory when the server starts.
//!
//! The rules (docs/JOURNAL.md gives the reasoning):
//! 1. Leftover `*.tmp` snapshots are deleted: they were never renamed, so never relied on.
//! 2. The newest `snapshot-*.snap` is loaded. It must be valid: a snapshot is renamed into place
//!    only after it is synced, so a bad one is corruption and the server refuses to start.
//! 3. Segments are replayed in order; records the snapshot already covers are checked and
//!    skipped. Positions must follow each other with no gap.
//! 4. A *torn tail* ([`Parsed::Torn`]) at the end of the newest segment is the trace of a write
//!    cut short by a crash. Its record was never acknowledged (acknowledgement waits for the sync),
//!    so the file is cut back to the last whole record and the server starts.
//! 5. Anything else ([`Parsed::Corrupt`], or a torn record in an older segment) means data the
//!    server may have acknowledged is damaged: it refuses to start, naming the file and offset.

use super::files::{FileLayer, SegmentFile};
use super::format::{self, Parsed};
use super::{JournalConfig, JournalError};
use crate::ledger::{Ledger, Lsn};
use std::path::{Path, PathBuf};

/// What recovery hands to the writer.
pub struct Recovered {
    /// The committed state.
    pub ledger: Ledger,
    /// The segment new records are appended to.
    pub segment: Box<dyn SegmentFile>,
    /// Its length in bytes.
    pub segment_bytes: u64,
    /// Records replayed after the snapshot (they count towards the next one).
    pub records_after_snapshot: u64,
}

/// The data directory's files, by kind and position.
struct Listing {
    snapshots: Vec<(Lsn, PathBuf)>,
    segments: Vec<(Lsn, PathBuf)>,
    temporaries: Vec<PathBuf>,
}

fn list(directory: &Path) -> Result<Listing, JournalError> {
    let entries =
        std::fs::read_dir(directory).map_err(|error| JournalError::io(directory, error))?;
    let mut listing = Listing {
        snapshots: Vec::new(),
        segments: Vec::new(),
        temporaries: Vec::new(),
    };
    for entry in entries {
        let entry = entry.map_err(|error| JournalError::io(directory, error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if let Some(lsn) = format::position_in_name(&name, "snapshot-", ".snap") {
            listing.snapshots.push((lsn, path));
        } else if let Some(lsn) = format::position_in_name(&name, "journal-", ".log") {
            listing.segments.push((lsn, path));
        } else if format::position_in_name(&name, "snapshot-", ".tmp").is_some() {
            listing.temporaries.push(path);
        }
    }
    listing.snapshots.sort();
    listing.segments.sort();
    Ok(listing)
}

/// Creates a segment whose first record will be `first_lsn`, with its header synced.
pub fn create_segment(
    files: &dyn FileLayer,
    path: &Path,
    first_lsn: Lsn,
) -> std::io::Result<Box<dyn SegmentFile>> {
    let mut segment = files.create_segment(path)?;
    segment.write_all(&format::segment_header(first_lsn))?;
    segment.sync_data()?;
    if let Some(directory) = path.parent() {
        files.sync_dir(directory)?;
    }
    Ok(segment)
}

/// Removes snapshots older than the one at `lsn`, and segments whose records are all at or below
/// `lsn` (a segment is covered when a later segment starts at or before `lsn + 1`).
pub fn remove_covered_files(directory: &Path, lsn: Lsn) -> Result<(), JournalError> {
    let listing = list(directory)?;
    let remove =
        |path: &Path| std::fs::remove_file(path).map_err(|error| JournalError::io(path, error));
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

/// True when a segment's bytes are what a crash between creating it and syncing its header
/// leaves: shorter than a header, or the start of the header it should have followed only by
/// zeros (the file was extended but the data never written). Such a segment holds no record.
fn has_torn_header(bytes: &[u8], named_first: Lsn) -> bool {
    if bytes.len() < format::SEGMENT_HEADER_BYTES {
        return true;
    }
    let written = format::zeros_from(bytes);
    written < format::SEGMENT_HEADER_BYTES
        && bytes[..written] == format::segment_header(named_first)[..written]
}

/// Recovers the committed state from `config.data_dir`, creating the directory if needed.
pub fn recover(config: &JournalConfig) -> Result<Recovered, JournalError> {
    let directory = &config.data_dir;
    std::fs::create_dir_all(directory).map_err(|error| JournalError::io(directory, error))?;
    let listing = list(directory)?;
    for path in &listing.temporaries {
        std::fs::remove_file(path).map_err(|error| JournalError::io(path, error))?;
    }
    let mut ledger = match listing.snapshots.last() {
        Some((_, path)) => {
            let bytes = std::fs::read(path).map_err(|error| JournalError::io(path, error))?;
            format::decode_snapshot(&bytes).map_err(|(offset, reason)| JournalError::Corrupt {
                path: path.clone(),
                offset,
                reason,
            })?
        }
        None => Ledger::default(),
    };
    let snapshot_lsn = ledger.applied_lsn;
    let mut previous: Option<Lsn> = None;
    let mut replayed = 0;
    // The newest segment: its path, the length of its valid prefix, its first position and
    // whether it holds any record.
    let mut tail: Option<(PathBuf, u64, Lsn, bool)> = None;
    let count = listing.segments.len();
    for (index, (named_first, path)) in listing.segments.iter().enumerate() {
        let newest = index + 1 == count;
        let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            reason,
        };
        let bytes = std::fs::read(path).map_err(|error| JournalError::io(path, error))?;
        if newest && has_torn_header(&bytes, *named_first) {
            // Created but its header never fully reached the disk: it holds no record. Remove it
            // so it cannot linger as an older segment; a new one is created below.
            tracing::warn!(path = %path.display(), "dropping a segment with a torn header");
            std::fs::remove_file(path).map_err(|error| JournalError::io(path, error))?;
            break;
        }
        let first = format::parse_segment_header(&bytes).map_err(|reason| corrupt(0, reason))?;
        if first != *named_first {
            return Err(corrupt(12, format!("header says first record {first}")));
        }
        if let Some(previous) = previous {
            if first != previous + 1 {
                return Err(corrupt(
                    12,
                    format!(
                        "segment starts at record {first}, the previous one ends at {previous}"
                    ),
                ));
            }
        }
        let mut offset = format::SEGMENT_HEADER_BYTES;
        let mut holds_records = false;
        loop {
            match format::parse_record(&bytes, offset) {
                Parsed::Record { lsn, record, end } => {
                    let expected = previous.map_or(first, |previous| previous + 1);
                    if lsn != expected {
                        return Err(corrupt(
                            offset,
                            format!("record {lsn} where {expected} belongs"),
                        ));
                    }
                    if lsn > ledger.applied_lsn {
                        if lsn != ledger.applied_lsn + 1 {
                            return Err(corrupt(
                                offset,
                                format!("gap after snapshot at {snapshot_lsn}"),
                            ));
                        }
                        ledger
                            .apply(lsn, &record)
                            .map_err(|error| corrupt(offset, error.to_string()))?;
                        replayed += 1;
                    }
                    previous = Some(lsn);
                    holds_records = true;
                    offset = end;
                }
                Parsed::End => break,
                Parsed::Torn(reason) if newest => {
                    tracing::warn!(
                        path = %path.display(), offset, %reason,
                        "cutting a torn tail left by an interrupted write"
                    );
                    break;
                }
                Parsed::Torn(reason) | Parsed::Corrupt(reason) => {
                    return Err(corrupt(offset, reason))
                }
            }
        }
        if newest {
            tail = Some((path.clone(), offset as u64, first, holds_records));
        }
    }
    if ledger.applied_lsn < snapshot_lsn || !ledger.is_conserved() {
        return Err(JournalError::Corrupt {
            path: directory.clone(),
            offset: 0,
            reason: "recovered state does not add up".into(),
        });
    }
    let files = config.files.as_ref();
    // Append to the newest segment if its records end exactly where the state does; otherwise
    // (no segment yet, or the snapshot is ahead of every segment) start a new one.
    let (segment, segment_bytes) = match tail {
        Some((path, length, first, holds_records))
            if (holds_records && previous == Some(ledger.applied_lsn))
                || (!holds_records && first == ledger.applied_lsn + 1) =>
        {
            let segment = files
                .open_append(&path, length)
                .map_err(|error| JournalError::io(&path, error))?;
            (segment, length)
        }
        _ => {
            let path = directory.join(format::segment_name(ledger.applied_lsn + 1));
            let segment = create_segment(files, &path, ledger.applied_lsn + 1)
                .map_err(|error| JournalError::io(&path, error))?;
            (segment, format::SEGMENT_HEADER_BYTES as u64)
        }
    };
    remove_covered_files(directory, snapshot_lsn)?;
    tracing::info!(
        lsn = ledger.applied_lsn,
        snapshot_lsn,
        replayed,
        accounts = ledger.accounts.len(),
        "journal recovered"
    );
    Ok(Recovered {
        ledger,
        segment,
        segment_bytes,
        records_after_snapshot: replayed,
    })
}
