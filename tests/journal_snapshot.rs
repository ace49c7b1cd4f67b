//! Snapshots change nothing but speed: recovering from snapshot + later records gives the same
//! committed state as replaying every record, and the same as the pure in-memory ledger.
mod common;

use actor_bank::journal::Journal;
use actor_bank::ledger::Event;
use common::durability::*;
use proptest::prelude::*;

/// One step of a scenario.
#[derive(Clone, Debug)]
enum Step {
    Open {
        card: u64,
        balance: u64,
    },
    Withdraw {
        client: u64,
        card: u64,
        amount: u64,
    },
    Deposit {
        client: u64,
        card: u64,
        amount: u64,
    },
    Pin {
        client: u64,
        card: u64,
        correct: bool,
    },
    /// Wait until everything appended is durable (ends a group-commit batch).
    Sync,
    /// Close both journals and open them again (recovery in the middle of the scenario).
    Reopen,
}

fn step() -> impl Strategy<Value = Step> {
    let card = 1u64..=4;
    let client = 1u64..=4;
    prop_oneof![
        1 => (card.clone(), 0u64..3_000).prop_map(|(card, balance)| Step::Open { card, balance }),
        4 => (client.clone(), card.clone(), 0u64..800)
            .prop_map(|(client, card, amount)| Step::Withdraw { client, card, amount }),
        3 => (client.clone(), card.clone(), 0u64..800)
            .prop_map(|(client, card, amount)| Step::Deposit { client, card, amount }),
        2 => (client, card, any::<bool>())
            .prop_map(|(client, card, correct)| Step::Pin { client, card, correct }),
        2 => Just(Step::Sync),
        1 => Just(Step::Reopen),
    ]
}

struct Pair {
    with_snapshots: Journal,
    replay_only: Journal,
}

impl Pair {
    fn open(
        snapshots_dir: &std::path::Path,
        plain_dir: &std::path::Path,
        interval: u64,
        segment_max: u64,
    ) -> Pair {
        let mut config = journal_config(snapshots_dir, interval);
        config.segment_bytes_max = segment_max;
        Pair {
            with_snapshots: Journal::open(config).unwrap(),
            replay_only: Journal::open(journal_config(plain_dir, u64::MAX)).unwrap(),
        }
    }

    fn sync(&self) {
        futures::executor::block_on(self.with_snapshots.wait_all_durable()).unwrap();
        futures::executor::block_on(self.replay_only.wait_all_durable()).unwrap();
    }

    fn close(self) {
        self.with_snapshots.close();
        self.replay_only.close();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    // Purpose: for random operation sequences from several clients on a few cards, snapshot +
    // replay, replay alone and the pure ledger agree after every recovery.
    #[test]
    fn snapshot_and_replay_agree_with_replay_alone_and_the_pure_ledger(
        steps in prop::collection::vec(step(), 1..80),
        interval in 1u64..8,
        segment_max in prop_oneof![Just(u64::MAX), 200u64..2_000],
    ) {
        let snapshots_dir = tempfile::tempdir().unwrap();
        let plain_dir = tempfile::tempdir().unwrap();
        let mut pair = Pair::open(snapshots_dir.path(), plain_dir.path(), interval, segment_max);
        let mut model = Model::default();
        for step in steps {
            let record = match step {
                Step::Open { card, balance } => {
                    model.step(0, card, opened(&format!("holder of {card}"), balance))
                }
                Step::Withdraw { client, card, amount } => {
                    model.step(client, card, Event::Withdrawal { amount })
                }
                Step::Deposit { client, card, amount } => {
                    model.step(client, card, Event::Deposit { amount })
                }
                Step::Pin { client, card, correct } => {
                    model.step(client, card, Event::PinAttempt { correct })
                }
                Step::Sync => {
                    pair.sync();
                    None
                }
                Step::Reopen => {
                    pair.sync();
                    pair.close();
                    pair = Pair::open(snapshots_dir.path(), plain_dir.path(), interval, segment_max);
                    prop_assert_eq!(committed(&pair.with_snapshots), model.ledger.clone());
                    prop_assert_eq!(committed(&pair.replay_only), model.ledger.clone());
                    None
                }
            };
            if let Some(record) = record {
                let first = pair.with_snapshots.append(record.clone()).unwrap();
                let second = pair.replay_only.append(record).unwrap();
                prop_assert_eq!(first, second);
                prop_assert_eq!(first, model.ledger.applied_lsn);
            }
        }
        pair.sync();
        pair.close();
        let pair = Pair::open(snapshots_dir.path(), plain_dir.path(), interval, segment_max);
        let from_snapshot = committed(&pair.with_snapshots);
        let from_replay = committed(&pair.replay_only);
        pair.close();
        prop_assert!(from_snapshot.is_conserved());
        prop_assert_eq!(&from_snapshot, &from_replay);
        prop_assert_eq!(&from_replay, &model.ledger);
        prop_assert_eq!(from_replay, replay(&model.records));
        // The scenario really exercised snapshots, and covered segments were removed.
        if model.records.len() as u64 > interval {
            prop_assert!(!snapshots(snapshots_dir.path()).is_empty());
        }
        prop_assert!(snapshots(plain_dir.path()).is_empty());
        prop_assert!(snapshots(snapshots_dir.path()).len() <= 1);
        prop_assert_eq!(segments(snapshots_dir.path()).len(), 1);
    }
}
