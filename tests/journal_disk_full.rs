//! A full disk makes the journal fail closed: nothing that is not durable is acknowledged, later
//! requests are refused with `unavailable`, and a restart on a healthy disk finds every
//! acknowledged change exactly once.
mod common;

use actor_bank::client::{Client, ClientConfig, ClientError};
use actor_bank::journal::files::FullDisk;
use actor_bank::journal::{AppendError, Journal, JournalConfig};
use actor_bank::ledger::{Ledger, Principal};
use actor_bank::protocol::{Operation, RequestId, ServerMessage, Status};
use actor_bank::server::{RunningServer, DEMO_ACCOUNTS};
use common::durability::*;
use futures::executor::block_on;
use std::sync::Arc;
use std::time::Duration;

fn full_disk_config(directory: &std::path::Path, budget: i64, interval: u64) -> JournalConfig {
    let mut config = journal_config(directory, interval);
    config.files = Arc::new(FullDisk::new(budget));
    config
}

/// Appends `records` one at a time over a full disk until the journal fails; returns how many
/// were acknowledged. Checks the failure is closed: waiters get errors, appends are refused.
fn append_until_failure(journal: &Journal, records: &[actor_bank::ledger::Record]) -> usize {
    let mut acknowledged = 0;
    for record in records {
        let lsn = match journal.append(record.clone()) {
            Ok(lsn) => lsn,
            Err(AppendError::Unavailable(_)) => break,
            Err(AppendError::Busy) => panic!("a queue of one record is never full"),
        };
        match block_on(journal.wait_durable(lsn)) {
            Ok(()) => acknowledged += 1,
            Err(_) => break,
        }
    }
    assert!(journal.failure().is_some(), "the disk never filled up");
    let next = records[acknowledged.min(records.len() - 1)].clone();
    assert!(matches!(
        journal.append(next),
        Err(AppendError::Unavailable(_))
    ));
    assert!(block_on(journal.wait_durable(journal.head() + 1)).is_err());
    assert!(block_on(journal.wait_all_durable()).is_err());
    acknowledged
}

// Purpose: over a full disk, `wait_durable` fails once writes fail and `append` answers
// `Unavailable`; reopened on a healthy disk, the journal holds exactly the acknowledged records
// and carries on.
#[test]
fn a_full_disk_fails_the_journal_closed_and_keeps_what_was_acknowledged() {
    let model = standard_model(60);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(full_disk_config(directory.path(), 24 + 1_500, u64::MAX)).unwrap();
    let acknowledged = append_until_failure(&journal, &model.records);
    assert!(acknowledged > 3 && acknowledged < 60, "{acknowledged}");
    journal.close();

    let journal = Journal::open(journal_config(directory.path(), u64::MAX)).unwrap();
    let applied = journal.head() as usize;
    assert!((acknowledged..=acknowledged + 1).contains(&applied));
    assert_eq!(committed(&journal), model.ledger_after(applied));
    append_all(&journal, &model.records[applied..], 4);
    journal.close();
    let journal = Journal::open(journal_config(directory.path(), u64::MAX)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();
}

// Purpose: with many records in flight (group commit), the failing batch and everything queued
// behind it get errors, and every position that was acknowledged is in the recovered state.
#[test]
fn records_in_flight_when_the_disk_fills_are_never_acknowledged() {
    let model = standard_model(200);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(full_disk_config(directory.path(), 24 + 4_000, u64::MAX)).unwrap();
    let mut positions = Vec::new();
    for record in &model.records {
        match journal.append(record.clone()) {
            Ok(lsn) => positions.push(lsn),
            Err(AppendError::Unavailable(_)) => break,
            Err(AppendError::Busy) => panic!("the queue holds 64k records"),
        }
    }
    let outcomes: Vec<bool> = positions
        .iter()
        .map(|lsn| block_on(journal.wait_durable(*lsn)).is_ok())
        .collect();
    assert!(journal.failure().is_some());
    assert!(matches!(
        journal.append(model.records[0].clone()),
        Err(AppendError::Unavailable(_))
    ));
    let acknowledged = outcomes.iter().take_while(|ok| **ok).count();
    assert!(
        outcomes[acknowledged..].iter().all(|ok| !ok),
        "acknowledgements are a prefix"
    );
    journal.close();
    let journal = Journal::open(journal_config(directory.path(), u64::MAX)).unwrap();
    let applied = journal.head() as usize;
    assert!(applied >= acknowledged && applied < 200);
    assert_eq!(committed(&journal), model.ledger_after(applied));
    journal.close();
}

// Purpose: whatever write the disk fills up on (a record, a snapshot, the header of the segment
// after a snapshot), the journal fails closed and recovers to the acknowledged state.
#[test]
fn the_disk_may_fill_during_a_snapshot_or_a_new_segment_and_recovery_still_works() {
    // Enough records to exhaust the largest budget below by segment writes alone, however
    // many snapshots happen to run (they are written in the background).
    let model = standard_model(160);
    for budget in (0..2_600).step_by(53) {
        let directory = tempfile::tempdir().unwrap();
        let journal = match Journal::open(full_disk_config(directory.path(), budget, 3)) {
            Ok(journal) => journal,
            // Not even the first segment's header fits.
            Err(_) => {
                assert!(budget < 24);
                continue;
            }
        };
        let acknowledged = append_until_failure(&journal, &model.records);
        journal.close();
        let journal = Journal::open(journal_config(directory.path(), 3)).unwrap();
        let applied = journal.head() as usize;
        assert!(
            (acknowledged..=acknowledged + 1).contains(&applied),
            "budget {budget}: acknowledged {acknowledged}, recovered {applied}"
        );
        assert_eq!(
            committed(&journal),
            model.ledger_after(applied),
            "budget {budget}"
        );
        append_all(&journal, &model.records[applied..], 2);
        journal.close();
        let journal = Journal::open(journal_config(directory.path(), 3)).unwrap();
        assert_eq!(committed(&journal), model.ledger, "budget {budget}");
        journal.close();
    }
}

/// What one ATM saw for each withdrawal it asked for.
struct Seen {
    client: Client,
    withdrawals: Vec<(RequestId, u64, Result<Status, String>)>,
}

fn short_deadline_client(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new(address);
    config.attempt_timeout = Duration::from_millis(500);
    config.outcome_deadline = Duration::from_secs(2);
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// Withdraws small amounts until the server stops acknowledging (two calls in a row without a
/// definite reply) or 24 calls were made (well inside the server's window of 32 ids).
async fn withdraw_until_unavailable(
    address: String,
    card: u64,
    pin: &'static str,
    base: u64,
) -> Seen {
    let mut client = Client::connect(short_deadline_client(&address))
        .await
        .unwrap();
    let verified = client.verify(card, pin).await.unwrap();
    assert_eq!(verified.status, Status::Approved);
    let mut withdrawals = Vec::new();
    let mut failures_in_a_row = 0;
    for index in 0..24 {
        let amount = base + index;
        let id = client.next_id();
        let result = client
            .call_with_id(id, Operation::Withdraw { amount })
            .await;
        let result = match result {
            Ok(reply) => {
                failures_in_a_row = 0;
                Ok(reply.status)
            }
            Err(ClientError::OutcomeUnknown { last_error, .. }) => {
                failures_in_a_row += 1;
                Err(last_error)
            }
            Err(other) => panic!("unexpected client error: {other}"),
        };
        withdrawals.push((id, amount, result));
        if failures_in_a_row == 2 {
            break;
        }
    }
    Seen {
        client,
        withdrawals,
    }
}

// Purpose: a server whose disk fills up never answers `approved` for a change that is not
// durable: after a restart on a healthy disk every approved withdrawal is there exactly once,
// and after the failure requests are answered `unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_a_full_disk_acknowledges_only_durable_withdrawals() {
    let directory = tempfile::tempdir().unwrap();
    // The demo accounts are opened on a healthy disk first.
    let healthy = RunningServer::start(common::test_config(directory.path())).unwrap();
    let address = healthy.local_addr;
    tokio::task::block_in_place(|| healthy.stop());

    let mut config = common::test_config(directory.path());
    config.listen = address;
    let server = tokio::task::block_in_place(|| {
        RunningServer::start_with_journal(
            config,
            full_disk_config(directory.path(), 2_500, u64::MAX),
        )
    })
    .unwrap();
    let before = server.bank().storage().with_committed(Ledger::clone);

    // A raw connection logged in while the disk still has room.
    let (card, _, pin, _) = DEMO_ACCOUNTS[0];
    let mut raw = common::RawConnection::connect(&address.to_string()).await;
    raw.send(&actor_bank::protocol::ClientMessage::Hello(
        actor_bank::protocol::Hello {
            protocol_version: actor_bank::protocol::PROTOCOL_VERSION,
        },
    ))
    .await;
    assert!(matches!(
        raw.receive().await,
        Some(ServerMessage::Welcome(_))
    ));
    raw.request(
        7_777,
        1,
        Operation::Verify {
            card,
            pin: pin.into(),
        },
    )
    .await;
    match raw.receive().await {
        Some(ServerMessage::Reply(reply)) => assert_eq!(reply.status, Status::Approved),
        other => panic!("expected a reply, got {other:?}"),
    }

    let tasks: Vec<_> = (0..4)
        .map(|index| {
            let (card, _, pin, _) = DEMO_ACCOUNTS[index % 2];
            tokio::spawn(withdraw_until_unavailable(
                address.to_string(),
                card,
                pin,
                10 * (index as u64 + 1),
            ))
        })
        .collect();
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await.unwrap());
    }
    for (index, atm) in seen.iter().enumerate() {
        let statuses: Vec<String> = atm
            .withdrawals
            .iter()
            .map(|(_, _, result)| match result {
                Ok(status) => status.to_string(),
                Err(_) => "unknown".into(),
            })
            .collect();
        eprintln!("atm {index}: {}", statuses.join(" "));
    }
    assert!(
        server.bank().storage().failure().is_some(),
        "the disk filled up"
    );
    assert!(seen
        .iter()
        .flat_map(|atm| &atm.withdrawals)
        .any(|(_, _, result)| result.is_err()));
    // The calls that gave no definite reply were answered `unavailable` meanwhile (the last
    // attempt of a call may also just run out of time).
    assert!(seen
        .iter()
        .flat_map(|atm| &atm.withdrawals)
        .filter_map(|(_, _, result)| result.as_ref().err())
        .any(|last_error| last_error.contains("unavailable")));
    // After the failure, a new change is refused with `unavailable`.
    raw.request(7_777, 2, Operation::Withdraw { amount: 1 })
        .await;
    match raw.receive().await {
        Some(ServerMessage::Reply(reply)) => assert_eq!(reply.status, Status::Unavailable),
        other => panic!("expected a reply, got {other:?}"),
    }
    drop(raw);
    tokio::task::block_in_place(|| server.stop());

    // A healthy restart on the same directory and address.
    let mut config = common::test_config(directory.path());
    config.listen = address;
    let server = tokio::task::block_in_place(|| RunningServer::start(config)).unwrap();
    let recovered = server.bank().storage().with_committed(Ledger::clone);
    assert!(recovered.is_conserved());
    for (index, atm) in seen.iter().enumerate() {
        let card = DEMO_ACCOUNTS[index % 2].0;
        let window = recovered.window(Principal::Card(card), atm.client.client_id());
        for (id, amount, result) in &atm.withdrawals {
            let entry = window.and_then(|window| {
                window
                    .completed
                    .iter()
                    .find(|done| done.sequence == id.sequence)
            });
            // Every definite reply is in the recovered state, with the same outcome; a request
            // without a definite reply may or may not have become durable.
            if let Ok(status) = result {
                let entry = entry.unwrap_or_else(|| panic!("acknowledged {id} lost"));
                assert_eq!(Status::from(entry.outcome.status), *status, "{id}");
                assert_eq!(entry.fingerprint.amount, *amount);
            }
        }
    }
    // Balances moved by exactly the withdrawals the recovered state holds, no other change.
    for (card, _, _, _) in DEMO_ACCOUNTS {
        let durable_withdrawals: u64 = recovered
            .clients
            .values()
            .flat_map(|clients| clients.windows.values())
            .flat_map(|window| &window.completed)
            .filter(|done| {
                done.fingerprint.card == card
                    && done.fingerprint.kind == 1
                    && Status::from(done.outcome.status) == Status::Approved
            })
            .map(|done| done.fingerprint.amount)
            .sum();
        assert_eq!(
            recovered.accounts[&card].balance,
            before.accounts[&card].balance - durable_withdrawals
        );
    }

    // Settle every unknown outcome by retrying its id: each withdrawal then happened exactly once.
    let mut approved_per_card = std::collections::HashMap::<u64, u64>::new();
    for (index, atm) in seen.iter_mut().enumerate() {
        let (card, _, _, _) = DEMO_ACCOUNTS[index % 2];
        let unknown: Vec<(RequestId, u64)> = atm
            .withdrawals
            .iter()
            .filter(|(_, _, result)| result.is_err())
            .map(|(id, amount, _)| (*id, *amount))
            .collect();
        for (id, amount) in unknown {
            let reply = atm
                .client
                .call_with_id(id, Operation::Withdraw { amount })
                .await
                .unwrap();
            assert!(reply.status.is_definite());
            if reply.status == Status::Approved {
                *approved_per_card.entry(card).or_default() += amount;
            }
        }
        for (_, amount, result) in &atm.withdrawals {
            if result.as_ref().ok() == Some(&Status::Approved) {
                *approved_per_card.entry(card).or_default() += amount;
            }
        }
    }
    let settled = server.bank().storage().with_committed(Ledger::clone);
    for (card, _, _, _) in DEMO_ACCOUNTS {
        assert_eq!(
            settled.accounts[&card].balance,
            before.accounts[&card].balance - approved_per_card.get(&card).copied().unwrap_or(0),
            "card {card}: balance is the initial one minus exactly the approved withdrawals"
        );
    }
    assert!(settled.is_conserved());
    tokio::task::block_in_place(|| server.stop());
}
