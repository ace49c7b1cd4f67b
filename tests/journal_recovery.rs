//! Recovery of the journal: a tail is cut only when it has the shape of an interrupted write and
//! the last stop was not clean; everything else that is wrong refuses the start with the file,
//! the offset and what was expected. Also: old (version 1) directories still open, the segment
//! chain, the data-directory lock and the files' permissions.
mod common;

use actor_bank::journal::files::SEGMENT_GROWTH_BYTES;
use actor_bank::journal::format::{
    self, Parsed, SegmentRef, CLOSED_FILE_NAME, RECORD_HEADER_BYTES, SECTOR_BYTES,
    SEGMENT_HEADER_BYTES,
};
use actor_bank::journal::{Journal, JournalError, RecoveryMode};
use actor_bank::ledger::{Event, Ledger};
use common::durability::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Opens the journal in `directory` with `mode` and expects it to refuse with corruption.
fn expect_corrupt_in(directory: &Path, mode: RecoveryMode) -> (PathBuf, u64, String) {
    let mut config = journal_config(directory, 1_000_000);
    config.recovery = mode;
    match Journal::open(config) {
        Ok(journal) => {
            let state = committed(&journal);
            journal.close();
            panic!(
                "the journal opened a damaged directory at {}",
                state.applied_lsn
            );
        }
        Err(JournalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => panic!("expected corruption, got {other}"),
    }
}

fn expect_corrupt(directory: &Path) -> (PathBuf, u64, String) {
    expect_corrupt_in(directory, RecoveryMode::Auto)
}

/// Opens `directory` with `mode`, checks the committed state equals the model's first `count`
/// records, then appends the model's remaining records, reopens and checks everything is there.
fn check_recovers_to_in(directory: &Path, model: &Model, count: usize, mode: RecoveryMode) {
    let mut config = journal_config(directory, 1_000_000);
    config.recovery = mode;
    let journal = Journal::open(config).unwrap();
    assert_eq!(journal.head(), count as u64);
    assert_eq!(committed(&journal), model.ledger_after(count));
    append_all(&journal, &model.records[count..], 2);
    journal.close();
    let journal = Journal::open(journal_config(directory, 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    assert!(journal.with_committed(|ledger| ledger.is_conserved()));
    journal.close();
}

fn check_recovers_to(directory: &Path, model: &Model, count: usize) {
    check_recovers_to_in(directory, model, count, RecoveryMode::Auto)
}

/// Removes the close marker: the directory then looks as a crash (power loss or kill) left it.
fn unclean(directory: &Path) {
    std::fs::remove_file(directory.join(CLOSED_FILE_NAME)).unwrap();
}

/// Where each batch of a version 2 segment starts and ends (its seal included).
fn batch_spans(path: &Path) -> Vec<(usize, usize)> {
    let bytes = std::fs::read(path).unwrap();
    let mut batches = Vec::new();
    let mut start = SEGMENT_HEADER_BYTES;
    let mut offset = start;
    loop {
        match format::parse_record(&bytes, offset) {
            Parsed::Record { end, .. } => offset = end,
            Parsed::Seal { end, .. } => {
                batches.push((start, end));
                start = end;
                offset = end;
            }
            _ => return batches,
        }
    }
}

/// Zeros bytes `from..until` of `path`.
fn zero(path: &Path, from: usize, until: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[from..until].fill(0);
    std::fs::write(path, bytes).unwrap();
}

/// Cuts `path` to `length` bytes.
fn truncate(path: &Path, length: usize) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(length as u64)
        .unwrap();
}

/// A journal of 60 records: twelve batches of one, then one batch of 48 (about 2 KiB, so it
/// spans several sectors), closed cleanly.
fn journal_with_a_big_last_batch() -> (Model, tempfile::TempDir, PathBuf) {
    let model = standard_model(60);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    append_all(&journal, &model.records[..12], 1);
    let last = journal.append_batch(model.records[12..].to_vec()).unwrap();
    futures::executor::block_on(journal.wait_durable(last)).unwrap();
    journal.close();
    let segment = segments(directory.path()).pop().unwrap();
    (model, directory, segment)
}

// Purpose: a power loss during the last batch's write leaves a prefix of its sectors and zeros
// after them (the segment was grown with zeros before the write). After an unclean stop, every
// such tear is cut back to the last whole batch, the cut is reported, and appending resumes.
#[test]
fn a_torn_last_batch_after_an_unclean_stop_is_cut_and_appending_resumes() {
    let (model, pristine, segment) = journal_with_a_big_last_batch();
    let (start, end) = *batch_spans(&segment).last().unwrap();
    let tears: Vec<usize> = (start.next_multiple_of(SECTOR_BYTES)..end)
        .step_by(SECTOR_BYTES)
        .collect();
    assert!(
        tears.len() >= 2,
        "the last batch spans sectors: {start}..{end}"
    );
    for tear in tears {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        unclean(directory.path());
        let torn = directory.path().join(segment.file_name().unwrap());
        zero(&torn, tear, end);
        let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
        let cut = journal.cut().expect("the cut is reported");
        assert!(cut.contains(&format!("byte offset {start}")), "{cut}");
        assert!(cut.contains("records 13.."), "{cut}");
        journal.close();
        check_recovers_to(directory.path(), &model, 12);
    }
}

// Purpose: the same tear after a clean shutdown is damage (the close marker says where the
// journal ends), and so is any tear under --recovery strict; the operator's accept-cut takes it
// and says what was dropped.
#[test]
fn a_tail_is_never_cut_after_a_clean_shutdown_or_in_strict_mode_but_accept_cut_takes_it() {
    let (model, pristine, segment) = journal_with_a_big_last_batch();
    let (start, end) = *batch_spans(&segment).last().unwrap();
    let tear = start.next_multiple_of(SECTOR_BYTES);

    let directory = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), directory.path());
    let torn = directory.path().join(segment.file_name().unwrap());
    zero(&torn, tear, end);
    let (path, offset, reason) = expect_corrupt(directory.path());
    assert_eq!(path, torn);
    assert!(offset >= start as u64, "{offset}: {reason}");
    assert!(reason.contains("the last shutdown was clean"), "{reason}");

    unclean(directory.path());
    let (path, _, reason) = expect_corrupt_in(directory.path(), RecoveryMode::Strict);
    assert_eq!(path, torn);
    assert!(reason.contains("--recovery strict"), "{reason}");

    let mut config = journal_config(directory.path(), 1_000_000);
    config.recovery = RecoveryMode::AcceptCut;
    let journal = Journal::open(config).unwrap();
    let cut = journal.cut().expect("the cut is reported");
    assert!(cut.contains(&torn.display().to_string()), "{cut}");
    assert!(cut.contains(&format!("byte offset {start}")), "{cut}");
    journal.close();
    check_recovers_to_in(directory.path(), &model, 12, RecoveryMode::Strict);
}

// Purpose: a flipped bit in the last batch (every field of its last record, and its seal) is rot,
// not a tear, even after an unclean stop: the batch's seal reached the disk, so the batch arrived
// whole. The start is refused naming the file and the offset of the damaged frame.
#[test]
fn rot_in_the_last_batch_is_refused_even_after_an_unclean_stop() {
    let (_model, pristine, segment) = journal_with_a_big_last_batch();
    let last = record_spans(&segment).pop().unwrap();
    let (_, seal_end) = *batch_spans(&segment).last().unwrap();
    let body = last.end - last.start - RECORD_HEADER_BYTES;
    let mut places: Vec<usize> = record_field_offsets(body)
        .iter()
        .map(|place| last.start + place)
        .collect();
    places.extend([last.end, last.end + 10, last.end + 30, seal_end - 1]);
    for place in places {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        unclean(directory.path());
        let damaged = directory.path().join(segment.file_name().unwrap());
        flip_bit(&damaged, place, 0);
        let (path, offset, reason) = expect_corrupt(directory.path());
        assert_eq!(path, damaged, "byte {place}: {reason}");
        assert!(
            offset <= place as u64,
            "byte {place}: offset {offset}: {reason}"
        );
    }
}

// Purpose: sectors missing out of order (a zeroed sector inside the last batch while its seal is
// there) are not the shape of a tear this recovery cuts by itself: refused; truncation (the file
// shorter than its grown size) is refused at every record boundary and inside records.
#[test]
fn holes_and_truncations_are_refused_after_an_unclean_stop() {
    let (_model, pristine, segment) = journal_with_a_big_last_batch();
    let (start, end) = *batch_spans(&segment).last().unwrap();
    let hole = start.next_multiple_of(SECTOR_BYTES);
    assert!(hole + SECTOR_BYTES < end);
    let directory = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), directory.path());
    unclean(directory.path());
    let damaged = directory.path().join(segment.file_name().unwrap());
    zero(&damaged, hole, hole + SECTOR_BYTES);
    expect_corrupt(directory.path());

    let spans = record_spans(&segment);
    let mut cuts: Vec<usize> = vec![0, 10, SEGMENT_HEADER_BYTES];
    for span in &spans {
        cuts.extend([span.start, span.start + 7, span.end - 1, span.end]);
    }
    for cut in cuts {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        unclean(directory.path());
        let damaged = directory.path().join(segment.file_name().unwrap());
        truncate(&damaged, cut);
        let (path, _, reason) = expect_corrupt(directory.path());
        assert_eq!(path, damaged, "cut at {cut}: {reason}");
    }
}

// Purpose: an unclean stop with nothing torn (a kill: the page cache keeps every write) starts
// with everything, whatever the mode, and cuts nothing.
#[test]
fn an_unclean_stop_with_a_clean_tail_loses_nothing() {
    let (model, pristine, _segment) = journal_with_a_big_last_batch();
    for mode in [RecoveryMode::Auto, RecoveryMode::Strict] {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        unclean(directory.path());
        let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
        assert_eq!(journal.cut(), None);
        journal.close();
        check_recovers_to_in(directory.path(), &model, 60, mode);
    }
}

/// Writes records `first..=last` of `model` as a version 1 segment file, as the first release
/// wrote them (no seals, the record bodies of the old layout), followed by `room` zeros.
fn write_legacy_segment(
    directory: &Path,
    model: &Model,
    first: usize,
    last: usize,
    room: usize,
) -> PathBuf {
    let path = write_segment_of_old_records(
        directory,
        first as u64,
        &model.records[first - 1..last],
        true,
    );
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.resize(bytes.len() + room, 0);
    std::fs::write(&path, bytes).unwrap();
    path
}

// Purpose: data directories written by the first release (version 1 segments and snapshots, a
// `LOCK` file, mode 644 files) still open with every record; new records go to a version 2
// segment chained after the old one, and the directory reopens again.
#[test]
fn version_1_data_directories_still_open() {
    // What the first release wrote is what it read back: records of the old layout.
    let model = standard_model(30).in_old_layout();
    let directory = tempfile::tempdir().unwrap();
    write_legacy_segment(directory.path(), &model, 1, 10, 0);
    let image =
        format::encode_snapshot_legacy(&first_release_ledger(&model.ledger_after(10))).unwrap();
    std::fs::write(directory.path().join(format::snapshot_name(10)), image).unwrap();
    write_legacy_segment(directory.path(), &model, 11, 20, 4096);
    std::fs::write(directory.path().join("LOCK"), b"").unwrap();
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(directory.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The first release's memory is converted on load, keeping each client's highest sequence
    // in every part (so what was stale stays stale): the expected state is that conversion with
    // the records after the snapshot applied.
    let mut expected = Ledger::from(first_release_ledger(&model.ledger_after(10)));
    for lsn in 11..=20 {
        expected.apply(lsn as u64, &model.records[lsn - 1]).unwrap();
    }
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(journal.head(), 20);
    assert_eq!(committed(&journal), expected);
    assert!(journal.with_committed(|ledger| ledger.is_conserved()));
    journal.close();
    let newest = segments(directory.path()).pop().unwrap();
    let header = format::parse_segment_header(&std::fs::read(&newest).unwrap()).unwrap();
    assert_eq!(header.version, format::FORMAT_VERSION);
    assert_eq!(
        header.previous,
        Some(SegmentRef {
            first_lsn: 11,
            id: 0
        })
    );
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(directory.path()), 0o700);
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        assert_eq!(mode(&entry.unwrap().path()), 0o600);
    }

    // A torn tail the first release left (a record cut short) is still cut after a crash.
    let torn = tempfile::tempdir().unwrap();
    let segment = write_legacy_segment(torn.path(), &model, 1, 8, 0);
    let last = record_spans_legacy(&segment);
    truncate(&segment, last - 3);
    check_recovers_to(torn.path(), &model, 7);
}

/// The start of the last record of a version 1 segment.
fn record_spans_legacy(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    let mut offset = format::SEGMENT_HEADER_BYTES_LEGACY;
    let mut last = offset;
    while let Parsed::Record { end, .. } = format::parse_record(&bytes, offset) {
        last = end;
        offset = end;
    }
    last
}

// Purpose: the chain of files: a snapshot names the segment that follows it, a segment names its
// predecessor. A missing, replaced or renamed segment is refused, naming what was expected.
#[test]
fn the_segment_chain_detects_missing_and_swapped_files() {
    let model = standard_model(40);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records[..30], 10);
    let journal = Journal::open(journal_config(pristine.path(), 1_000_000)).unwrap();
    append_all(&journal, &model.records[30..36], 2);
    journal.close();
    let snapshot = snapshots(pristine.path()).pop().unwrap();
    let segment = segments(pristine.path()).pop().unwrap();

    // The newest segment deleted, with or without the close marker.
    for keep_marker in [true, false] {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        if !keep_marker {
            unclean(directory.path());
        }
        std::fs::remove_file(directory.path().join(segment.file_name().unwrap())).unwrap();
        let (path, _, reason) = expect_corrupt(directory.path());
        assert!(reason.contains("missing"), "{}: {reason}", path.display());
    }

    // A segment from another history under the right name: its id is not the one named.
    let directory = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), directory.path());
    unclean(directory.path());
    let first = format::parse_segment_header(&std::fs::read(&segment).unwrap())
        .unwrap()
        .segment
        .first_lsn;
    let replaced = directory.path().join(segment.file_name().unwrap());
    let mut bytes = std::fs::read(&replaced).unwrap();
    bytes[..SEGMENT_HEADER_BYTES]
        .copy_from_slice(&format::segment_header(SegmentRef::new(first), None));
    std::fs::write(&replaced, bytes).unwrap();
    let (path, _, reason) = expect_corrupt(directory.path());
    assert_eq!(path, replaced, "{reason}");

    // The snapshot deleted: the segment's predecessor is missing.
    let directory = tempfile::tempdir().unwrap();
    copy_dir(pristine.path(), directory.path());
    std::fs::remove_file(directory.path().join(snapshot.file_name().unwrap())).unwrap();
    expect_corrupt(directory.path());
}

// Purpose: the real binary refuses to start on a corrupt journal: it exits non-zero and its
// message names the damaged file and the byte offset.
#[test]
fn the_server_binary_refuses_a_corrupt_journal_naming_file_and_offset() {
    let (_model, directory) = written_journal(8, 1_000_000);
    let segment = segments(directory.path()).pop().unwrap();
    let victim = &record_spans(&segment)[3];
    flip_bit(&segment, victim.start + RECORD_HEADER_BYTES + 1, 3);
    let output = Command::new(server_binary())
        .arg("--data-dir")
        .arg(directory.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let file_name = segment.file_name().unwrap().to_string_lossy().into_owned();
    let offset = format!("offset {}", victim.start);
    let message = stderr
        .lines()
        .find(|line| line.starts_with("bank-server:"))
        .unwrap_or_else(|| panic!("no error message on stderr: {stderr}"));
    assert!(message.contains(&file_name), "{message}");
    assert!(message.contains(&offset), "{message}");
}

// Purpose: the operator command: `bank-server --accept-cut` cuts a torn tail that strict mode
// refused, prints exactly what was dropped, exits 0, and the next strict start opens.
#[test]
fn the_server_binary_accepts_a_cut_only_when_asked() {
    let (_model, directory, segment) = journal_with_a_big_last_batch();
    let (start, end) = *batch_spans(&segment).last().unwrap();
    unclean(directory.path());
    zero(&segment, start.next_multiple_of(SECTOR_BYTES), end);
    let run = |extra: &[&str]| {
        Command::new(server_binary())
            .arg("--data-dir")
            .arg(directory.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let refused = run(&["--recovery", "strict"]);
    assert!(!refused.status.success());
    let accepted = run(&["--accept-cut"]);
    assert!(accepted.status.success(), "{accepted:?}");
    let stdout = String::from_utf8_lossy(&accepted.stdout);
    assert!(stdout.contains(&format!("byte offset {start}")), "{stdout}");
    assert!(stdout.contains("records 13.."), "{stdout}");
    let journal = Journal::open({
        let mut config = journal_config(directory.path(), 1_000_000);
        config.recovery = RecoveryMode::Strict;
        config
    })
    .unwrap();
    assert_eq!(journal.head(), 12);
    journal.close();
}

// Purpose: the model's records are what the journal test helpers claim (sanity of the helpers):
// a mix of kinds, all applying from position 1.
#[test]
fn the_standard_model_mixes_every_kind_of_record() {
    let model = standard_model(60);
    let kinds =
        |matches: fn(&Event) -> bool| model.records.iter().filter(|r| matches(&r.event)).count();
    assert!(kinds(|event| matches!(event, Event::Withdrawal { .. })) > 5);
    assert!(kinds(|event| matches!(event, Event::Deposit { .. })) > 5);
    assert!(kinds(|event| matches!(event, Event::PinAttempt { .. })) > 2);
    assert_eq!(replay(&model.records), model.ledger);
}

// Purpose: leftovers of an interrupted snapshot or segment creation (temporaries, whole or half
// written) are deleted and never relied on; nothing is lost and appends resume.
#[test]
fn temporaries_left_by_an_interrupted_snapshot_are_ignored() {
    let model = standard_model(20);
    let image = format::encode_snapshot(&model.ledger_after(12), SegmentRef::new(13)).unwrap();
    let half_segment = format::segment_header(SegmentRef::new(13), None)[..10].to_vec();
    let leftovers: [(String, &[u8]); 4] = [
        (
            format::snapshot_temporary_name(12),
            &image[..image.len() / 2],
        ),
        (format::snapshot_temporary_name(12), &image),
        (format::segment_temporary_name(13), &half_segment),
        (format::CLOSED_TEMPORARY_NAME.to_string(), b"ABNK"),
    ];
    for (name, bytes) in leftovers {
        let directory = tempfile::tempdir().unwrap();
        write_journal(directory.path(), &model.records[..12], 1_000_000);
        unclean(directory.path());
        std::fs::write(directory.path().join(&name), bytes).unwrap();
        check_recovers_to(directory.path(), &model, 12);
        assert!(!directory.path().join(&name).exists(), "{name}");
    }
}

// Purpose: segments grow ahead in whole steps of zeros; a reopened segment keeps its size and
// appends right after its last batch.
#[test]
fn segments_grow_in_whole_steps_and_reopen_where_the_batches_end() {
    let model = standard_model(16);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    append_all(&journal, &model.records[..10], 3);
    journal.close();
    let segment = segments(directory.path()).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let (_, end) = *batch_spans(&segment).last().unwrap();
    assert_eq!(bytes.len() as u64, SEGMENT_GROWTH_BYTES);
    assert!(bytes[end..].iter().all(|byte| *byte == 0));
    check_recovers_to(directory.path(), &model, 10);
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len(),
        SEGMENT_GROWTH_BYTES
    );
}

// Purpose: the data directory lock is a lock on the directory itself: a second journal is
// refused while the first is open even after `LOCK`-style files are deleted, and opens after the
// first closes.
#[test]
fn a_data_directory_serves_one_server_at_a_time_whatever_files_are_deleted() {
    let directory = tempfile::tempdir().unwrap();
    let first = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".log") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let _ = std::fs::remove_file(directory.path().join("LOCK"));
    match Journal::open(journal_config(directory.path(), 1_000_000)) {
        Err(JournalError::Locked { path }) => assert_eq!(path, directory.path()),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two journals opened one data directory"),
    }
    first.close();
    drop(first);
    Journal::open(journal_config(directory.path(), 1_000_000))
        .unwrap()
        .close();
}

// Purpose: the data directory is created 700 and every file 600; a directory writable by its
// group or by everyone, or owned by another user, is refused with a clear message.
#[test]
fn unsafe_data_directories_are_refused_and_new_files_are_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let directory = parent.path().join("data");
    let model = standard_model(12);
    write_journal(&directory, &model.records, 5);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&directory), 0o700);
    for entry in std::fs::read_dir(&directory).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
    for writable in [0o720, 0o702, 0o777] {
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(writable)).unwrap();
        match Journal::open(journal_config(&directory, 5)) {
            Err(error @ JournalError::Unsafe { .. }) => {
                assert!(error.to_string().contains("writable"), "{error}")
            }
            Err(other) => panic!("expected Unsafe, got {other}"),
            Ok(_) => panic!("opened a directory of mode {writable:o}"),
        }
    }
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700)).unwrap();
    let me = rustix::process::geteuid().as_raw();
    if me == 0 {
        // Only the superuser can give a directory away; elsewhere the check is the same code.
        std::os::unix::fs::chown(&directory, Some(4242), None).unwrap();
        match Journal::open(journal_config(&directory, 5)) {
            Err(error @ JournalError::Unsafe { .. }) => {
                assert!(
                    error.to_string().contains("belongs to user 4242"),
                    "{error}"
                )
            }
            Err(other) => panic!("expected Unsafe, got {other}"),
            Ok(_) => panic!("opened a directory owned by another user"),
        }
        std::os::unix::fs::chown(&directory, Some(me), None).unwrap();
    }
    let journal = Journal::open(journal_config(&directory, 5)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();
}

// Purpose: a symlink planted at the next snapshot's temporary name is never followed: the file it
// points to is left untouched, and the snapshot is written as a file of its own.
#[test]
fn a_symlink_planted_at_a_temporary_name_is_never_followed() {
    let parent = tempfile::tempdir().unwrap();
    let directory = parent.path().join("data");
    let model = standard_model(12);
    write_journal(&directory, &model.records[..4], 1_000_000);
    let victim = parent.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // Planted after the start (which deletes leftover temporaries), before the snapshots.
    let journal = Journal::open(journal_config(&directory, 2)).unwrap();
    for lsn in 5..=12 {
        std::os::unix::fs::symlink(
            &victim,
            directory.join(format::snapshot_temporary_name(lsn)),
        )
        .unwrap();
        std::os::unix::fs::symlink(&victim, directory.join(format::segment_temporary_name(lsn)))
            .unwrap();
    }
    std::os::unix::fs::symlink(&victim, directory.join(format::CLOSED_TEMPORARY_NAME)).unwrap();
    append_all(&journal, &model.records[4..], 1);
    assert_eq!(journal.failure(), None);
    journal.close();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    let snapshot = snapshots(&directory).pop().expect("a snapshot was written");
    assert!(std::fs::symlink_metadata(&snapshot).unwrap().is_file());
    let journal = Journal::open(journal_config(&directory, 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();
}
