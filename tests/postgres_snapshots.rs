//! One partition's ledger in a private PostgreSQL of the test's own: rows written by hand for two
//! partitions load into the ledgers those rows make alone, which together are the bank's whole
//! ledger; a compaction writes a snapshot, deletes the rows and older snapshots it covers, and
//! changes nothing the next time; loading after it gives the same ledger; a missing position and
//! a corrupt row or snapshot are refused with an error naming the partition and position; two
//! compactions of one partition at once both succeed and leave it consistent.
#[path = "common/postgres.rs"]
mod postgres;

use actor_bank::journal::format::{encode_record_body, encode_snapshot_body};
use actor_bank::ledger::{decide, At, Decision, Event, Ledger, Lsn, Policy, Record};
use actor_bank::model::{Amount, Card, Code, RequestId};
use actor_bank::storage::pg_partition::{compact_partition, load_partition, SNAPSHOT_SCHEMA};
use actor_bank::storage::postgres::{init_cluster, partition_of};
use postgres::PrivatePostgres;
use std::collections::BTreeMap;

/// The cluster's partitions.
const PARTITIONS: u32 = 8;
/// The bank's cards: three in partition 0 and three in partition 1.
const CARDS: [Card; 6] = [16, 17, 24, 25, 32, 33];
/// The epoch every hand-written row carries.
const EPOCH: i64 = 1;
/// The partitions of the refusal cases: a missing position, a corrupt row, a corrupt snapshot,
/// a snapshot of another position.
const GAP_PARTITION: u32 = 5;
const CORRUPT_ROW_PARTITION: u32 = 6;
const CORRUPT_SNAPSHOT_PARTITION: u32 = 7;
const MISPLACED_SNAPSHOT_PARTITION: u32 = 4;

/// The bank run on one whole ledger, each record also kept with its partition.
struct Bank {
    whole: Ledger,
    parts: BTreeMap<u32, Vec<Record>>,
    sequence: u64,
}

impl Bank {
    fn new() -> Bank {
        Bank {
            whole: Ledger::default(),
            parts: BTreeMap::new(),
            sequence: 0,
        }
    }

    /// Decides `event` on `card` under `request` and applies it to the whole ledger.
    fn run(&mut self, card: Card, request: RequestId, event: Event) -> Record {
        self.sequence += 1;
        let at = At {
            unix_ms: 1_000_000 + self.sequence,
            business_day: 1,
        };
        let record = match decide(
            self.whole.accounts.get(&card),
            card,
            request,
            event,
            at,
            &Policy::default(),
        ) {
            Decision::Record(record) => record,
            Decision::Answer(outcome) => panic!("{card}: answered {outcome:?}"),
        };
        self.whole
            .apply(self.whole.applied_lsn + 1, &record)
            .expect("the record applies");
        self.parts
            .entry(partition_of(card, PARTITIONS))
            .or_default()
            .push(record.clone());
        record
    }

    fn next(&self, client: u64) -> RequestId {
        RequestId {
            client,
            sequence: self.sequence + 1,
        }
    }

    fn open(&mut self, card: Card, balance: Amount) {
        let key = actor_bank::pin::PinKey::from_bytes([9; actor_bank::pin::PIN_KEY_BYTES]);
        let event = Event::AccountOpened {
            holder: "Joty".into(),
            pin_hash: key.verifier(card, "1234"),
            initial_balance: balance,
        };
        let request = self.next(1);
        self.run(card, request, event);
    }

    fn on(&mut self, card: Card, event: Event) {
        let request = self.next(card);
        self.run(card, request, event);
    }

    /// Sends `amount` from `from` to `to` and delivers it: three records, on two accounts.
    fn transfer(&mut self, from: Card, to: Card, amount: Amount) {
        let request = self.next(from);
        let sent = self.run(
            from,
            request,
            Event::TransferSent {
                to,
                amount,
                receiver: Code::Approved,
            },
        );
        let leg = sent.outcome.reference.expect("a transfer has a number");
        let receipt = RequestId {
            client: from,
            sequence: leg,
        };
        let received = self.run(to, receipt, Event::TransferReceived { from, leg, amount });
        self.run(
            from,
            request,
            Event::TransferSettled {
                leg,
                receiver: received.outcome.status,
            },
        );
    }

    /// The ledger partition `partition`'s records make alone, at positions of its own.
    fn part(&self, partition: u32) -> Ledger {
        let mut ledger = Ledger::default();
        for (index, record) in self.parts[&partition].iter().enumerate() {
            ledger
                .apply(index as Lsn + 1, record)
                .expect("the partition's records apply");
        }
        ledger
    }
}

fn body(record: &Record) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_record_body(record, &mut bytes).expect("the record encodes");
    bytes
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connected to the private PostgreSQL");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

async fn insert_row(client: &tokio_postgres::Client, partition: u32, position: i64, body: &[u8]) {
    client
        .execute(
            "INSERT INTO bank_journal (partition, position, epoch, body) VALUES ($1, $2, $3, $4)",
            &[&(partition as i32), &position, &EPOCH, &body],
        )
        .await
        .expect("a journal row written");
}

async fn insert_records(
    client: &tokio_postgres::Client,
    partition: u32,
    first: i64,
    records: &[Record],
) {
    for (index, record) in records.iter().enumerate() {
        insert_row(client, partition, first + index as i64, &body(record)).await;
    }
}

/// The positions of `partition`'s rows in `table`.
async fn positions(client: &tokio_postgres::Client, table: &str, partition: u32) -> Vec<i64> {
    client
        .query(
            &format!("SELECT position FROM {table} WHERE partition = $1 ORDER BY position"),
            &[&(partition as i32)],
        )
        .await
        .expect("positions read")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A bank of six accounts over partitions 0 and 1, with deposits, withdrawals and transfers
/// within and across partitions.
fn bank() -> Bank {
    let mut bank = Bank::new();
    for (index, card) in CARDS.into_iter().enumerate() {
        bank.open(card, 1_000 + index as Amount);
    }
    bank.on(16, Event::Deposit { amount: 50 });
    bank.on(17, Event::Withdrawal { amount: 30 });
    bank.transfer(16, 17, 200);
    bank.transfer(25, 24, 70);
    bank.transfer(32, 16, 5);
    bank.on(33, Event::Deposit { amount: 9 });
    bank.transfer(33, 25, 400);
    bank.on(24, Event::Withdrawal { amount: 1 });
    bank
}

#[tokio::test]
async fn partitions_load_compact_into_snapshots_and_refuse_gaps_and_corruption() {
    let server = PrivatePostgres::new();
    let url = server.url();
    init_cluster(&url, PARTITIONS)
        .await
        .expect("the cluster made");
    let client = connect(&url).await;
    client
        .batch_execute(SNAPSHOT_SCHEMA)
        .await
        .expect("the snapshot table made");

    let mut bank = bank();
    for partition in [0, 1] {
        insert_records(&client, partition, 1, &bank.parts[&partition]).await;
    }

    // Each partition loads into the ledger its rows make alone; both make the whole bank.
    let mut node = Ledger::default();
    for partition in [0, 1] {
        let loaded = load_partition(&client, partition)
            .await
            .expect("the partition loads");
        assert_eq!(loaded, bank.part(partition), "partition {partition}");
        assert_eq!(
            loaded.applied_lsn,
            bank.parts[&partition].len() as Lsn,
            "partition {partition}"
        );
        assert!(loaded.balances_add_up());
        node.absorb(loaded).expect("the partition joins the node");
    }
    assert_eq!(node.accounts, bank.whole.accounts);
    assert_eq!(
        (
            node.money_in,
            node.money_out,
            node.money_sent,
            node.money_received
        ),
        (
            bank.whole.money_in,
            bank.whole.money_out,
            bank.whole.money_sent,
            bank.whole.money_received
        )
    );
    assert!(node.is_conserved());
    // A partition with no rows is an empty ledger.
    assert_eq!(
        load_partition(&client, 3)
            .await
            .expect("an empty partition"),
        Ledger::default()
    );

    // A compaction up to position 3: a snapshot there, the rows up to it gone, the same ledger.
    let rows_one = positions(&client, "bank_journal", 1).await;
    let last = bank.parts[&0].len() as i64;
    assert_eq!(compact_partition(&client, 0, 3).await, Ok(Some(3)));
    assert_eq!(positions(&client, "bank_snapshots", 0).await, [3]);
    assert_eq!(
        positions(&client, "bank_journal", 0).await,
        (4..=last).collect::<Vec<_>>()
    );
    assert_eq!(
        load_partition(&client, 0).await.expect("loads"),
        bank.part(0)
    );
    // Again, or to an older position: nothing newer than the snapshot, nothing changes.
    assert_eq!(compact_partition(&client, 0, 3).await, Ok(None));
    assert_eq!(compact_partition(&client, 0, 2).await, Ok(None));
    assert_eq!(positions(&client, "bank_snapshots", 0).await, [3]);
    // Past the last row: the snapshot is at the last row, the older one is gone.
    assert_eq!(
        compact_partition(&client, 0, i64::MAX).await,
        Ok(Some(last))
    );
    assert_eq!(compact_partition(&client, 0, i64::MAX).await, Ok(None));
    assert_eq!(positions(&client, "bank_snapshots", 0).await, [last]);
    assert!(positions(&client, "bank_journal", 0).await.is_empty());
    assert_eq!(
        load_partition(&client, 0).await.expect("loads"),
        bank.part(0)
    );
    // The other partition was left alone.
    assert_eq!(positions(&client, "bank_journal", 1).await, rows_one);
    assert!(positions(&client, "bank_snapshots", 1).await.is_empty());

    // Rows written after the snapshot follow it.
    let before = bank.parts[&0].len();
    bank.on(16, Event::Deposit { amount: 3 });
    bank.transfer(24, 17, 11);
    let added = bank.parts[&0][before..].to_vec();
    insert_records(&client, 0, last + 1, &added).await;
    assert_eq!(
        load_partition(&client, 0).await.expect("loads"),
        bank.part(0)
    );
    assert_eq!(
        compact_partition(&client, 0, last + 1).await,
        Ok(Some(last + 1))
    );
    assert_eq!(positions(&client, "bank_snapshots", 0).await, [last + 1]);
    assert_eq!(
        load_partition(&client, 0).await.expect("loads"),
        bank.part(0)
    );

    // A missing position is refused, by a load and by a compaction, which deletes nothing.
    let records = &bank.parts[&0];
    for position in [1, 2, 4] {
        insert_row(
            &client,
            GAP_PARTITION,
            position,
            &body(&records[position as usize - 1]),
        )
        .await;
    }
    let error = load_partition(&client, GAP_PARTITION)
        .await
        .expect_err("a gap is refused");
    assert!(
        error.contains("partition 5") && error.contains("position 3 is missing"),
        "{error}"
    );
    let error = compact_partition(&client, GAP_PARTITION, i64::MAX)
        .await
        .expect_err("a gap is refused");
    assert!(error.contains("position 3 is missing"), "{error}");
    assert_eq!(
        positions(&client, "bank_journal", GAP_PARTITION).await,
        [1, 2, 4]
    );
    assert!(positions(&client, "bank_snapshots", GAP_PARTITION)
        .await
        .is_empty());
    // Below the gap, the partition compacts.
    assert_eq!(
        compact_partition(&client, GAP_PARTITION, 2).await,
        Ok(Some(2))
    );

    // A corrupt row is refused with its partition and position.
    insert_row(&client, CORRUPT_ROW_PARTITION, 1, &body(&records[0])).await;
    insert_row(&client, CORRUPT_ROW_PARTITION, 2, b"\xFF\x02not a record").await;
    let error = load_partition(&client, CORRUPT_ROW_PARTITION)
        .await
        .expect_err("a corrupt row is refused");
    assert!(
        error.contains("partition 6: the journal row at position 2 does not decode"),
        "{error}"
    );
    let error = compact_partition(&client, CORRUPT_ROW_PARTITION, i64::MAX)
        .await
        .expect_err("a corrupt row is refused");
    assert!(error.contains("does not decode"), "{error}");
    assert_eq!(
        positions(&client, "bank_journal", CORRUPT_ROW_PARTITION).await,
        [1, 2]
    );

    // A corrupt snapshot, and a snapshot holding another position's ledger, are refused.
    client
        .execute(
            "INSERT INTO bank_snapshots (partition, position, body) VALUES ($1, 1, $2)",
            &[
                &(CORRUPT_SNAPSHOT_PARTITION as i32),
                &b"\xFF\x03not a ledger".as_slice(),
            ],
        )
        .await
        .expect("a snapshot row written");
    let error = load_partition(&client, CORRUPT_SNAPSHOT_PARTITION)
        .await
        .expect_err("a corrupt snapshot is refused");
    assert!(
        error.contains("partition 7: the snapshot at position 1 does not decode"),
        "{error}"
    );
    let mut misplaced = Vec::new();
    encode_snapshot_body(&bank.part(1), &mut misplaced).expect("a snapshot body");
    client
        .execute(
            "INSERT INTO bank_snapshots (partition, position, body) VALUES ($1, 2, $2)",
            &[&(MISPLACED_SNAPSHOT_PARTITION as i32), &misplaced],
        )
        .await
        .expect("a snapshot row written");
    let error = load_partition(&client, MISPLACED_SNAPSHOT_PARTITION)
        .await
        .expect_err("a snapshot of another position is refused");
    assert!(
        error.contains("partition 4: the snapshot at position 2 holds the ledger of position"),
        "{error}"
    );
}

/// Two nodes compacting the same partition at once: each call succeeds (a serialization failure
/// is tried again), the snapshot ends at the furthest position asked, and the partition loads the
/// same ledger.
#[tokio::test]
async fn two_compactions_at_once_leave_one_consistent_partition() {
    /// Deposits on card 16 after the bank's records.
    const DEPOSITS: usize = 40;
    let server = PrivatePostgres::new();
    let url = server.url();
    init_cluster(&url, PARTITIONS)
        .await
        .expect("the cluster made");
    let first = connect(&url).await;
    let second = connect(&url).await;
    first
        .batch_execute(SNAPSHOT_SCHEMA)
        .await
        .expect("the snapshot table made");
    let mut bank = bank();
    for amount in 1..=DEPOSITS as Amount {
        bank.on(16, Event::Deposit { amount });
    }
    insert_records(&first, 0, 1, &bank.parts[&0]).await;
    let last = bank.parts[&0].len() as i64;
    let (near, far) = tokio::join!(
        compact_partition(&first, 0, 10),
        compact_partition(&second, 0, last - 5)
    );
    assert!(
        near.is_ok() && far == Ok(Some(last - 5)),
        "{near:?} {far:?}"
    );
    let snapshots = positions(&first, "bank_snapshots", 0).await;
    assert_eq!(snapshots.last(), Some(&(last - 5)), "{snapshots:?}");
    assert_eq!(
        positions(&first, "bank_journal", 0).await,
        (last - 4..=last).collect::<Vec<_>>()
    );
    assert_eq!(
        load_partition(&second, 0).await.expect("loads"),
        bank.part(0)
    );
    // The same position by both: one writes it, the other finds nothing newer.
    let (one, other) = tokio::join!(
        compact_partition(&first, 0, last),
        compact_partition(&second, 0, last)
    );
    let mut results = [one, other];
    results.sort();
    assert_eq!(results, [Ok(None), Ok(Some(last))]);
    assert_eq!(positions(&first, "bank_snapshots", 0).await, [last]);
    assert!(positions(&first, "bank_journal", 0).await.is_empty());
    assert_eq!(
        load_partition(&first, 0).await.expect("loads"),
        bank.part(0)
    );
}
