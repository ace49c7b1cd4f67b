//! Data directories written before business days, available balances and reply references
//! existed: their record bodies (unmarked `RecordV1`) and snapshots (body version 2, `LedgerV2`)
//! open, convert, keep every balance, replay the same, and a retry made before the upgrade gets
//! the reply it got then.
mod common;

use actor_bank::journal::{format, Journal};
use actor_bank::ledger::{self, Decision, Event, Ledger, Lsn, Principal, Record};
use actor_bank::protocol::{Body, Status};
use common::durability::{
    append_all, committed, frame_body, journal_config, legacy_opening, record_spans, record_v1,
    replay, segments, snapshots, standard_model, write_journal, write_segment_of_old_records,
};
use common::{reply, verify, withdraw, TestServer};
use std::path::Path;

/// `records` as they come back from bodies of the old layout.
fn converted(records: &[Record]) -> Vec<Record> {
    records
        .iter()
        .map(|record| Record::from(record_v1(record)))
        .collect()
}

/// The balance of every account of `ledger`.
fn balances(ledger: &Ledger) -> Vec<(u64, u64)> {
    let mut balances: Vec<(u64, u64)> = ledger
        .accounts
        .iter()
        .map(|(card, account)| (*card, account.balance))
        .collect();
    balances.sort_unstable();
    balances
}

/// True when no remembered reply carries an available balance (the old layouts kept none).
fn no_available_remembered(ledger: &Ledger) -> bool {
    ledger.clients.values().all(|clients| {
        clients.windows.values().all(|window| {
            window
                .completed
                .iter()
                .all(|done| done.outcome.available.is_none())
        })
    })
}

#[test]
fn old_record_bodies_open_in_either_segment_format_and_replay_after_new_ones() {
    let model = standard_model(40);
    for legacy in [true, false] {
        let directory = tempfile::tempdir().unwrap();
        write_segment_of_old_records(directory.path(), 1, &model.records[..25], legacy);
        let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
        assert_eq!(journal.head(), 25);
        let old = committed(&journal);
        assert_eq!(old, replay(&converted(&model.records[..25])), "{legacy}");
        assert_eq!(balances(&old), balances(&model.ledger_after(25)));
        assert!(no_available_remembered(&old));
        assert!(old.is_conserved());
        // Records of this release follow in a new segment; both layouts replay together.
        append_all(&journal, &model.records[25..], 3);
        journal.close();
        let mut expected = converted(&model.records[..25]);
        expected.extend_from_slice(&model.records[25..]);
        let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
        assert_eq!(journal.head(), 40);
        assert_eq!(committed(&journal), replay(&expected), "{legacy}");
        assert_eq!(balances(&committed(&journal)), balances(&model.ledger));
        journal.close();
        let newest = segments(directory.path()).pop().unwrap();
        let written: Vec<Record> = record_spans(&newest)
            .into_iter()
            .map(|span| span.record)
            .collect();
        // The old bodies first when the segment goes on, then this release's.
        assert_eq!(written[written.len() - 15..], model.records[25..]);
    }
}

/// Rewrites the segment at `path` with the old record bodies, one sealed batch per record.
fn downgrade_segment(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let header = format::parse_segment_header(&bytes).unwrap();
    let mut rewritten = bytes[..header.bytes()].to_vec();
    for span in record_spans(path) {
        let start = rewritten.len();
        let body = actor_bank::codec::encode_stored(&record_v1(&span.record)).unwrap();
        frame_body(span.lsn, &body, &mut rewritten);
        let frames = format::checksum(&rewritten[start..]);
        format::encode_seal(frames, span.lsn, span.lsn, &mut rewritten);
    }
    // The same growth steps: zeros ahead of the records, to the file's length.
    assert!(rewritten.len() <= bytes.len());
    rewritten.resize(bytes.len(), 0);
    std::fs::write(path, rewritten).unwrap();
}

/// `ledger` as the snapshot layout before holds kept it (body version 2).
fn ledger_v2(ledger: &Ledger) -> ledger::LedgerV2 {
    let mut clients = ledger::Shards::default();
    for (principal, kept) in ledger.clients.iter() {
        let windows = kept
            .windows
            .iter()
            .map(|(client, window)| (*client, ledger::ClientWindowV1::from(window.clone())))
            .collect();
        clients.insert(*principal, ledger::ClientsV1 { windows });
    }
    ledger::LedgerV2 {
        applied_lsn: ledger.applied_lsn,
        accounts: ledger::accounts_v2(&ledger.accounts),
        clients,
        money_in: ledger.money_in,
        money_out: ledger.money_out,
    }
}

/// Rewrites the snapshot at `path` with a body of version 2; returns the ledger it now holds.
fn downgrade_snapshot(path: &Path) -> ledger::LedgerV2 {
    let bytes = std::fs::read(path).unwrap();
    let snapshot = format::decode_snapshot(&bytes).unwrap();
    let old = ledger_v2(&snapshot.ledger);
    let mut body = vec![0xFF, format::SNAPSHOT_BODY_VERSION_2];
    body.extend(actor_bank::codec::encode_stored(&old).unwrap());
    // The header of today's layout: up to the next segment, then body length, body CRC and
    // header CRC.
    let mut rewritten = bytes[..format::SNAPSHOT_HEADER_BYTES - 16].to_vec();
    rewritten.extend_from_slice(&(body.len() as u64).to_be_bytes());
    rewritten.extend_from_slice(&format::checksum(&body).to_be_bytes());
    let header_crc = format::checksum(&rewritten);
    rewritten.extend_from_slice(&header_crc.to_be_bytes());
    rewritten.extend_from_slice(&body);
    std::fs::write(path, rewritten).unwrap();
    old
}

#[test]
fn a_directory_of_the_release_before_opens_from_its_snapshot_and_old_records() {
    let model = standard_model(60);
    let directory = tempfile::tempdir().unwrap();
    write_journal(directory.path(), &model.records, 25);
    for segment in segments(directory.path()) {
        downgrade_segment(&segment);
    }
    // The close marker names where this release's bodies ended; the release before stopped
    // without one (killed), so recovery reads every segment to its end.
    std::fs::remove_file(directory.path().join(format::CLOSED_FILE_NAME)).unwrap();
    let newest = snapshots(directory.path())
        .pop()
        .expect("a snapshot was written");
    let old = downgrade_snapshot(&newest);
    assert!(old.applied_lsn >= 25, "{}", old.applied_lsn);
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(journal.head(), 60);
    // The snapshot's ledger converted (accounts open, no activity, nothing in transit), then the
    // old records after it.
    let mut expected = Ledger::from(old.clone());
    let after = converted(&model.records[old.applied_lsn as usize..]);
    for (index, record) in after.iter().enumerate() {
        expected
            .apply(old.applied_lsn + 1 + index as Lsn, record)
            .unwrap();
    }
    let recovered = committed(&journal);
    assert_eq!(recovered, expected);
    assert_eq!(balances(&recovered), balances(&model.ledger));
    assert_eq!(recovered.in_transit(), Some(0));
    assert!(recovered.is_conserved());
    assert!(no_available_remembered(&recovered));
    journal.close();
    // Opened again (now from the close marker), the same.
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(committed(&journal), expected);
    journal.close();
}

/// The records of the release before: an account opened with an argon2id PIN hash, and an
/// approved withdrawal of 100 by client 71 (its first request).
fn release_before_records(card: u64) -> Vec<Record> {
    let opening = legacy_opening(card, "8642", actor_bank::pin::PinHashCost::MINIMUM);
    let mut account = None;
    ledger::apply(&mut account, &opening).unwrap();
    let request = actor_bank::protocol::RequestId {
        client: 71,
        sequence: 1,
    };
    let at = ledger::At {
        unix_ms: common::durability::now_unix_ms(),
        business_day: 0,
    };
    let withdrawal = match ledger::decide(
        account.as_ref(),
        card,
        request,
        Event::Withdrawal { amount: 100 },
        at,
        &ledger::Policy::default(),
    ) {
        Decision::Record(record) => record,
        Decision::Answer(outcome) => panic!("not withdrawn: {outcome:?}"),
    };
    vec![opening, withdrawal]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_made_before_the_upgrade_gets_the_reply_of_then_and_new_requests_both_balances() {
    const CARD: u64 = 246_813_579;
    let data_dir = tempfile::tempdir().unwrap();
    write_segment_of_old_records(data_dir.path(), 1, &release_before_records(CARD), false);
    let config = common::test_config(data_dir.path());
    let server = TestServer::on(data_dir, config);
    assert_eq!(server.committed_balance(CARD), Some(600));
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(72, 1, verify(CARD, "8642")).await;
    assert_eq!(r.status, Status::Approved);
    // The withdrawal retried: answered from the memory, as the release before answered it.
    let (r, _) = atm.exchange(71, 1, withdraw(100)).await;
    assert_eq!(r, reply(71, 1, Status::Approved, Body::Balance(600)));
    assert_eq!(server.committed_balance(CARD), Some(600));
    let (r, _) = atm.exchange(71, 2, withdraw(100)).await;
    assert_eq!(r, reply(71, 2, Status::Approved, common::balances(500)));
    let bank = server.running().bank();
    let window = bank
        .storage()
        .committed()
        .with_committed(|ledger| ledger.window(Principal::Card(CARD), 71).cloned())
        .expect("client 71 is remembered");
    assert_eq!(window.completed.len(), 2);
    let available: Vec<_> = window
        .completed
        .iter()
        .map(|done| done.outcome.available)
        .collect();
    assert_eq!(available, [None, Some(500)]);
}
