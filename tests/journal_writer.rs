//! The writer under concurrency: group commit with snapshots taken while appenders keep going,
//! and a close that drains the queue. What was acknowledged is what recovery finds.
mod common;

use actor_bank::journal::Journal;
use actor_bank::ledger::{self, Account, Decision, Event, Ledger};
use actor_bank::protocol::RequestId;
use common::durability::*;
use futures::executor::block_on;

// Purpose: eight threads append and wait concurrently (one card and one client each, like the
// account actors) while snapshots are taken every few records; every acknowledged record is in
// the committed state, and recovery from snapshot + segments gives the same state.
#[test]
fn concurrent_appenders_with_frequent_snapshots_lose_nothing() {
    let directory = tempfile::tempdir().unwrap();
    let mut config = journal_config(directory.path(), 7);
    config.segment_bytes_max = 1_500;
    let journal = Journal::open(config.clone()).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|thread| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                let card = 500 + thread;
                let client = 900 + thread;
                let mut account: Option<Account> = None;
                let mut appended = 0u64;
                let mut state = thread.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
                for sequence in 1..=60u64 {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let amount = state % 300;
                    let event = match (sequence, state % 3) {
                        (1, _) => opened(&format!("thread {thread}"), 1_000),
                        (_, 0) => Event::Withdrawal { amount },
                        (_, 1) => Event::Deposit { amount },
                        _ => Event::PinAttempt {
                            correct: amount % 2 == 0,
                        },
                    };
                    let request = RequestId { client, sequence };
                    let decision = ledger::decide(
                        account.as_ref(),
                        card,
                        request,
                        event,
                        ledger::At {
                            unix_ms: now_unix_ms(),
                            business_day: 0,
                        },
                        &ledger::Policy::default(),
                    );
                    let Decision::Record(record) = decision else {
                        // A PIN attempt on a locked card is answered, not recorded.
                        continue;
                    };
                    appended += 1;
                    let lsn = journal.append(record.clone()).unwrap();
                    ledger::apply(&mut account, &record).unwrap();
                    // Wait for every other record, so batches of different sizes form.
                    if sequence % 2 == 0 || thread % 3 == 0 {
                        block_on(journal.wait_durable(lsn)).unwrap();
                        let committed = journal.committed_account(card).unwrap();
                        assert_eq!(Some(&committed), account.as_ref());
                    }
                }
                block_on(journal.wait_all_durable()).unwrap();
                (card, account.unwrap(), appended)
            })
        })
        .collect();
    let finals: Vec<_> = threads
        .into_iter()
        .map(|thread| thread.join().unwrap())
        .collect();
    let live = committed(&journal);
    journal.close();
    let appended: u64 = finals.iter().map(|(_, _, appended)| appended).sum();
    assert_eq!(live.applied_lsn, appended);
    for (card, account, _) in &finals {
        assert_eq!(&live.accounts[card], account);
    }
    assert!(live.is_conserved());
    assert!(!snapshots(directory.path()).is_empty());

    let journal = Journal::open(config).unwrap();
    let recovered: Ledger = committed(&journal);
    journal.close();
    assert_eq!(recovered, live);
}

// Purpose: close() writes and syncs everything queued before it returns, so records appended
// without waiting are all found by the next open; appends after close are refused.
#[test]
fn close_drains_the_queue() {
    let model = standard_model(300);
    let directory = tempfile::tempdir().unwrap();
    let journal = Journal::open(journal_config(directory.path(), 50)).unwrap();
    for record in &model.records {
        journal.append(record.clone()).unwrap();
    }
    journal.close();
    assert!(journal.append(model.records[0].clone()).is_err());
    let journal = Journal::open(journal_config(directory.path(), 50)).unwrap();
    assert_eq!(committed(&journal), model.ledger);
    journal.close();
}
