//! Recovery of the journal after the process was killed mid-write (torn and zero-filled tails
//! are cut, nothing acknowledged is lost) and refusal to start on real corruption.
mod common;

use actor_bank::journal::files::SEGMENT_GROWTH_BYTES;
use actor_bank::journal::format::{self, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES};
use actor_bank::journal::{Journal, JournalError};
use actor_bank::ledger::Event;
use common::durability::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Opens the journal in `directory` and expects it to refuse with corruption.
fn expect_corrupt(directory: &Path) -> (PathBuf, u64, String) {
    match Journal::open(journal_config(directory, 1_000_000)) {
        Ok(journal) => {
            journal.close();
            panic!("the journal opened a corrupt directory");
        }
        Err(JournalError::Corrupt {
            path,
            offset,
            reason,
        }) => (path, offset, reason),
        Err(other) => panic!("expected corruption, got {other}"),
    }
}

/// Opens `directory`, checks the committed state equals the model's first `count` records, then
/// appends the model's remaining records, reopens and checks everything is there.
fn check_recovers_to(directory: &Path, model: &Model, count: usize, interval: u64) {
    let journal = Journal::open(journal_config(directory, interval)).unwrap();
    assert_eq!(journal.head(), count as u64);
    assert_eq!(committed(&journal), model.ledger_after(count));
    append_all(&journal, &model.records[count..], 2);
    journal.close();
    let journal = Journal::open(journal_config(directory, interval)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    assert!(journal.with_committed(|ledger| ledger.is_conserved()));
    journal.close();
    let newest = segments(directory).pop().unwrap();
    let spans = record_spans(&newest);
    let length = std::fs::metadata(&newest).unwrap().len() as usize;
    assert_eq!(
        spans.last().map_or(SEGMENT_HEADER_BYTES, |span| span.end),
        length,
        "the newest segment ends exactly after its last whole record"
    );
}

// Purpose: a write cut short anywhere inside the last record (header or body) loses only that
// record, and the journal appends correctly after the cut.
#[test]
fn a_torn_last_record_is_cut_and_appending_resumes() {
    let model = standard_model(24);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records, 1_000_000);
    let segment = segments(pristine.path()).pop().unwrap();
    let spans = record_spans(&segment);
    assert_eq!(spans.len(), 24);
    let last = spans.last().unwrap();
    let body = last.end - last.start - RECORD_HEADER_BYTES;
    let header_cuts = [1, 4, 11, 12, 16, RECORD_HEADER_BYTES - 1];
    let body_cuts = [0, 1, body / 2, body - 1];
    let cuts = header_cuts.iter().map(|cut| last.start + cut).chain(
        body_cuts
            .iter()
            .map(|cut| last.start + RECORD_HEADER_BYTES + cut),
    );
    for cut in cuts {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        let torn = directory.path().join(segment.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        check_recovers_to(directory.path(), &model, 23, 1_000_000);
    }
}

// Purpose: a cut inside an earlier record of the newest segment (one big batch write torn) drops
// that record and everything after it, and keeps everything before.
#[test]
fn a_tear_inside_an_earlier_record_keeps_the_prefix() {
    let (model, directory) = written_journal(20, 1_000_000);
    let segment = segments(directory.path()).pop().unwrap();
    let spans = record_spans(&segment);
    let cut = spans[14].start + RECORD_HEADER_BYTES + 3;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    check_recovers_to(directory.path(), &model, 14, 1_000_000);
}

// Purpose: after snapshots, a torn tail in the newest segment (the one after the snapshot) is cut
// the same way, and the snapshot plus the surviving records give the state.
#[test]
fn a_torn_tail_after_a_snapshot_is_cut() {
    let model = standard_model(30);
    let directory = tempfile::tempdir().unwrap();
    write_journal(directory.path(), &model.records[..20], 10);
    assert!(!snapshots(directory.path()).is_empty());
    // The rest without snapshots, so the newest segment surely holds several records.
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    append_all(&journal, &model.records[20..27], 1);
    journal.close();
    let segment = segments(directory.path()).pop().unwrap();
    let spans = record_spans(&segment);
    assert!(spans.len() >= 2, "the newest segment holds records");
    let last = spans.last().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(last.start as u64 + 5)
        .unwrap();
    check_recovers_to(directory.path(), &model, 26, 10);
}

// Purpose: zeros after the last whole record (room the segment grew by, or a file extended but
// never written) end the records: nothing is lost and appends go where the zeros were.
#[test]
fn a_zero_filled_tail_is_cut_and_nothing_is_lost() {
    let model = standard_model(16);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records[..12], 1_000_000);
    let segment_name = segments(pristine.path()).pop().unwrap();
    for zeros in [1, RECORD_HEADER_BYTES - 1, RECORD_HEADER_BYTES, 100, 4096] {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        let segment = directory.path().join(segment_name.file_name().unwrap());
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes.resize(bytes.len() + zeros, 0);
        std::fs::write(&segment, bytes).unwrap();
        check_recovers_to(directory.path(), &model, 12, 1_000_000);
    }
}

// Purpose: a crash can leave the last block of an unsynced batch zero-filled, so zeros may start
// inside the last record (its body or its header) and run to the end of the file: still torn.
#[test]
fn zeros_from_inside_the_last_record_to_the_end_are_a_torn_tail() {
    let model = standard_model(16);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records, 1_000_000);
    let segment_name = segments(pristine.path()).pop().unwrap();
    let spans = record_spans(&segment_name);
    let last = &spans[15];
    let starts = [
        last.start + 13,
        last.start + RECORD_HEADER_BYTES + 2,
        last.end - 1,
    ];
    for zeros_from in starts {
        for extra in [0, 64] {
            let directory = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), directory.path());
            let segment = directory.path().join(segment_name.file_name().unwrap());
            let mut bytes = std::fs::read(&segment).unwrap();
            bytes.truncate(zeros_from);
            bytes.resize(last.end + extra, 0);
            std::fs::write(&segment, bytes).unwrap();
            check_recovers_to(directory.path(), &model, 15, 1_000_000);
        }
    }
}

// Purpose: a segment created but whose header never reached the disk (empty, short or all
// zeros) holds no record: recovery drops it and starts again from the state.
#[test]
fn a_newest_segment_with_a_torn_header_is_dropped() {
    let model = standard_model(12);
    let mut half_header = format::segment_header(9)[..10].to_vec();
    half_header.resize(700, 0);
    for contents in [
        vec![],
        vec![b'A'; 7],
        vec![0u8; SEGMENT_HEADER_BYTES],
        vec![0u8; 512],
        half_header,
    ] {
        let directory = tempfile::tempdir().unwrap();
        write_journal(directory.path(), &model.records[..8], 1_000_000);
        let next = directory.path().join(format::segment_name(9));
        std::fs::write(&next, &contents).unwrap();
        check_recovers_to(directory.path(), &model, 8, 1_000_000);
    }
}

// Purpose: one flipped bit in an earlier record (header or body) is corruption, not a torn tail:
// the journal refuses to open, naming the segment and the byte offset where that record starts.
#[test]
fn a_flipped_bit_in_an_earlier_record_is_refused_with_file_and_offset() {
    let model = standard_model(12);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records, 1_000_000);
    let segment_name = segments(pristine.path()).pop().unwrap();
    let spans = record_spans(&segment_name);
    let victim = &spans[5];
    let body = victim.end - victim.start - RECORD_HEADER_BYTES;
    // Length, position, header CRC, body CRC fields, then the body's first, middle, last byte.
    let places = [
        0,
        3,
        6,
        11,
        12,
        15,
        16,
        19,
        RECORD_HEADER_BYTES,
        RECORD_HEADER_BYTES + body / 2,
        RECORD_HEADER_BYTES + body - 1,
    ];
    for place in places {
        for bit in [0, 7] {
            let directory = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), directory.path());
            let segment = directory.path().join(segment_name.file_name().unwrap());
            flip_bit(&segment, victim.start + place, bit);
            let (path, offset, reason) = expect_corrupt(directory.path());
            assert_eq!(path, segment, "byte {place} bit {bit}: {reason}");
            assert_eq!(
                offset, victim.start as u64,
                "byte {place} bit {bit}: {reason}"
            );
        }
    }
}

// Purpose: the header of the last record is never the trace of a torn write (the header is
// written before the body), so a bit flip there is corruption too.
#[test]
fn a_flipped_bit_in_the_last_record_header_is_refused() {
    let (_model, directory) = written_journal(6, 1_000_000);
    let segment = segments(directory.path()).pop().unwrap();
    let last = record_spans(&segment).pop().unwrap();
    flip_bit(&segment, last.start + 5, 2);
    let (path, offset, _) = expect_corrupt(directory.path());
    assert_eq!(path, segment);
    assert_eq!(offset, last.start as u64);
}

// Purpose: damage in the segment header or in a snapshot is refused, naming that file.
#[test]
fn a_damaged_segment_header_or_snapshot_is_refused() {
    let (_model, directory) = written_journal(25, 10);
    let snapshot = snapshots(directory.path()).pop().unwrap();
    let segment = segments(directory.path()).pop().unwrap();

    let damaged = tempfile::tempdir().unwrap();
    copy_dir(directory.path(), damaged.path());
    let copy = damaged.path().join(segment.file_name().unwrap());
    flip_bit(&copy, 14, 0);
    let (path, offset, _) = expect_corrupt(damaged.path());
    assert_eq!((path, offset), (copy, 0));

    let damaged = tempfile::tempdir().unwrap();
    copy_dir(directory.path(), damaged.path());
    let copy = damaged.path().join(snapshot.file_name().unwrap());
    let length = std::fs::metadata(&copy).unwrap().len() as usize;
    flip_bit(&copy, length - 3, 4);
    let (path, _, reason) = expect_corrupt(damaged.path());
    assert_eq!(path, copy, "{reason}");
}

/// Writes records `first..=last` of `model` as a segment file by hand.
fn write_segment(directory: &Path, model: &Model, first: usize, last: usize) -> PathBuf {
    let path = directory.join(format::segment_name(first as u64));
    let mut bytes = format::segment_header(first as u64);
    for lsn in first..=last {
        format::encode_record(lsn as u64, &model.records[lsn - 1], &mut bytes).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

// Purpose: the writer grows a segment ahead of its records, in steps of SEGMENT_GROWTH_BYTES
// written as zeros (so most syncs write no metadata); the room reads as the end of the records,
// and reopening cuts it off and appends right after the last record.
#[test]
fn segments_grow_ahead_with_zeros_and_reopen_where_the_records_end() {
    let model = standard_model(16);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    append_all(&journal, &model.records[..10], 3);
    let segment = segments(directory.path()).pop().unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let records_end = record_spans(&segment).last().unwrap().end;
    assert_eq!(
        bytes.len() as u64 % SEGMENT_GROWTH_BYTES,
        0,
        "grown in whole steps"
    );
    assert!(bytes.len() > records_end);
    assert!(
        bytes[records_end..].iter().all(|byte| *byte == 0),
        "the room ahead is zeros"
    );
    journal.close();
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger_after(10));
    assert_eq!(
        std::fs::metadata(&segment).unwrap().len() as usize,
        records_end,
        "reopening cuts the room off"
    );
    append_all(&journal, &model.records[10..], 3);
    journal.close();
    check_recovers_to(directory.path(), &model, 16, 1_000_000);
}

/// Appends `bytes` zeros to `path`, as a segment that grew ahead of its records has them.
fn add_room(path: &Path, bytes: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let length = file.metadata().unwrap().len();
    file.set_len(length + bytes).unwrap();
}

// Purpose: an older segment keeps the room it grew by when the writer moved on to a new one:
// its zeros end its records. Records missing before the room are still caught, because the next
// segment must start right after the last record read.
#[test]
fn an_older_segment_with_room_ahead_ends_at_its_last_record() {
    let model = standard_model(10);
    let directory = tempfile::tempdir().unwrap();
    let older = write_segment(directory.path(), &model, 1, 5);
    add_room(&older, SEGMENT_GROWTH_BYTES);
    write_segment(directory.path(), &model, 6, 10);
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();

    let gap = tempfile::tempdir().unwrap();
    let older = write_segment(gap.path(), &model, 1, 5);
    let last = record_spans(&older).pop().unwrap();
    // Record 5 zeroed: the older segment now seems to end at 4 and the next starts at 6.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&older)
        .unwrap();
    file.set_len(last.start as u64).unwrap();
    file.set_len(last.end as u64 + SEGMENT_GROWTH_BYTES)
        .unwrap();
    drop(file);
    let newer = write_segment(gap.path(), &model, 6, 10);
    let (path, offset, reason) = expect_corrupt(gap.path());
    assert_eq!((path, offset), (newer, 12), "{reason}");
}

// Purpose: a torn record is only acceptable at the end of the newest segment; in an older
// segment the records after it are missing, so the journal refuses to open.
#[test]
fn a_torn_record_in_an_older_segment_is_refused() {
    let model = standard_model(10);
    let directory = tempfile::tempdir().unwrap();
    let older = write_segment(directory.path(), &model, 1, 5);
    write_segment(directory.path(), &model, 6, 10);
    // Whole, the two segments replay.
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();
    let last = record_spans(&older).pop().unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&older)
        .unwrap()
        .set_len(last.end as u64 - 2)
        .unwrap();
    let (path, offset, _) = expect_corrupt(directory.path());
    assert_eq!((path, offset), (older, last.start as u64));
}

// Purpose: segments must follow each other: a segment whose header does not start where the
// previous one ended is refused, even if its records happen to line up.
#[test]
fn a_segment_that_does_not_follow_its_predecessor_is_refused() {
    let model = standard_model(10);
    let directory = tempfile::tempdir().unwrap();
    write_segment(directory.path(), &model, 1, 5);
    let second = write_segment(directory.path(), &model, 6, 10);
    // Rename the second segment as if it started at 7, with a matching header.
    let bytes = std::fs::read(&second).unwrap();
    let mut moved = format::segment_header(7);
    moved.extend_from_slice(&bytes[SEGMENT_HEADER_BYTES..]);
    std::fs::remove_file(&second).unwrap();
    let moved_path = directory.path().join(format::segment_name(7));
    std::fs::write(&moved_path, moved).unwrap();
    let (path, _, reason) = expect_corrupt(directory.path());
    assert_eq!(path, moved_path, "{reason}");
}

// Purpose: the real binary refuses to start on a corrupt journal: it exits non-zero and its
// message names the damaged file and the byte offset.
#[test]
fn the_server_binary_refuses_a_corrupt_journal_naming_file_and_offset() {
    let (_model, directory) = written_journal(8, 1_000_000);
    let segment = segments(directory.path()).pop().unwrap();
    let victim = &record_spans(&segment)[3];
    flip_bit(&segment, victim.start + RECORD_HEADER_BYTES + 1, 3);
    let mut child = Command::new(server_binary())
        .arg("--data-dir")
        .arg(directory.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Liveness guard only: a server that wrongly starts would run forever.
    let mut waited = 0;
    while child.try_wait().unwrap().is_none() {
        if waited >= 600 {
            child.kill().unwrap();
            panic!("bank-server started on a corrupt journal");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        waited += 1;
    }
    let output = child.wait_with_output().unwrap();
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

// Purpose: the torn-tail rule holds for every possible cut of the newest segment, record by
// record: recovery keeps exactly the whole records before the cut.
#[test]
fn every_cut_of_the_newest_segment_keeps_exactly_the_whole_records_before_it() {
    let model = standard_model(6);
    let pristine = tempfile::tempdir().unwrap();
    write_journal(pristine.path(), &model.records, 1_000_000);
    let segment_name = segments(pristine.path()).pop().unwrap();
    let spans = record_spans(&segment_name);
    let length = spans.last().unwrap().end;
    for cut in SEGMENT_HEADER_BYTES..=length {
        let directory = tempfile::tempdir().unwrap();
        copy_dir(pristine.path(), directory.path());
        let segment = directory.path().join(segment_name.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();
        let whole = spans.iter().filter(|span| span.end <= cut).count();
        let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
        assert_eq!(
            committed(&journal),
            model.ledger_after(whole),
            "cut at {cut}"
        );
        journal.close();
    }
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

// Purpose: a kill at any step of taking a snapshot (temporary half or fully written, renamed,
// next segment created or torn, covered segment removed) leaves files recovery accepts, with
// nothing lost and appends resuming.
#[test]
fn a_snapshot_interrupted_at_any_step_recovers() {
    let model = standard_model(20);
    let image = format::encode_snapshot(&model.ledger_after(12)).unwrap();
    let steps: [&dyn Fn(&Path); 6] = [
        &|directory| {
            std::fs::write(
                directory.join(format::snapshot_temporary_name(12)),
                &image[..image.len() / 2],
            )
            .unwrap()
        },
        &|directory| {
            std::fs::write(directory.join(format::snapshot_temporary_name(12)), &image).unwrap()
        },
        &|directory| std::fs::write(directory.join(format::snapshot_name(12)), &image).unwrap(),
        &|directory| {
            std::fs::write(directory.join(format::snapshot_name(12)), &image).unwrap();
            std::fs::write(
                directory.join(format::segment_name(13)),
                format::segment_header(13),
            )
            .unwrap();
        },
        &|directory| {
            std::fs::write(directory.join(format::snapshot_name(12)), &image).unwrap();
            std::fs::write(
                directory.join(format::segment_name(13)),
                &format::segment_header(13)[..10],
            )
            .unwrap();
        },
        &|directory| {
            std::fs::write(directory.join(format::snapshot_name(12)), &image).unwrap();
            std::fs::write(
                directory.join(format::segment_name(13)),
                format::segment_header(13),
            )
            .unwrap();
            std::fs::remove_file(directory.join(format::segment_name(1))).unwrap();
        },
    ];
    for (index, step) in steps.iter().enumerate() {
        let directory = tempfile::tempdir().unwrap();
        write_journal(directory.path(), &model.records[..12], 1_000_000);
        step(directory.path());
        check_recovers_to(directory.path(), &model, 12, 1_000_000);
        let names: Vec<String> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|name| !name.ends_with(".tmp")),
            "step {index}: {names:?}"
        );
        if index >= 2 {
            assert_eq!(snapshots(directory.path()).len(), 1, "step {index}");
        }
        if index >= 3 {
            assert_eq!(
                segments(directory.path()),
                [directory.path().join(format::segment_name(13))],
                "step {index}: the covered segment is removed"
            );
        }
    }
}

// Purpose: records a snapshot already covers are still checked: damage there is refused too.
#[test]
fn damage_in_a_segment_the_snapshot_covers_is_refused() {
    let (model, directory) = written_journal(12, 1_000_000);
    let image = format::encode_snapshot(&model.ledger).unwrap();
    std::fs::write(directory.path().join(format::snapshot_name(12)), &image).unwrap();
    let segment = segments(directory.path()).pop().unwrap();
    let victim = &record_spans(&segment)[4];
    flip_bit(&segment, victim.start + RECORD_HEADER_BYTES + 2, 6);
    let (path, offset, _) = expect_corrupt(directory.path());
    assert_eq!((path, offset), (segment, victim.start as u64));
}

/// A second server on the same data directory is refused while the first runs, and starts once
/// the first has stopped.
#[test]
fn a_data_directory_serves_one_server_at_a_time() {
    let directory = tempfile::tempdir().unwrap();
    let first = actor_bank::journal::Journal::open(actor_bank::journal::JournalConfig::new(
        directory.path(),
    ))
    .unwrap();
    match actor_bank::journal::Journal::open(actor_bank::journal::JournalConfig::new(
        directory.path(),
    )) {
        Err(actor_bank::journal::JournalError::Locked { path }) => assert!(path.ends_with("LOCK")),
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("two journals opened one data directory"),
    }
    first.close();
    drop(first);
    actor_bank::journal::Journal::open(actor_bank::journal::JournalConfig::new(directory.path()))
        .unwrap()
        .close();
}
