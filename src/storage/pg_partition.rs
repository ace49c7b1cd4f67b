//! One partition's ledger in PostgreSQL: loaded from its latest snapshot and the journal rows
//! after it, and compacted into a snapshot so a node adopting the partition replays little.
//!
//! Every record names exactly one account ([`Record::card`]), and a partition holds every record
//! of its accounts ([`super::postgres::partition_of`]), so the rows of one partition alone make a
//! ledger of their own, with positions of their own: 1 for the partition's first row, then one
//! more each. A node that adopts a partition loads it ([`load_partition`]) and joins it to its
//! ledger ([`Ledger::absorb`]).
//!
//! A snapshot is a row of `bank_snapshots` ([`SNAPSHOT_SCHEMA`]) keyed by (partition, position):
//! the partition's ledger after its record at `position`. Its body is exactly the body of a file
//! journal's snapshot ([`format::encode_snapshot_body`]: the byte 0xFF, the snapshot body
//! version, then the [`Ledger`] in the stored bincode encoding of [`crate::codec`]), and the
//! ledger's `applied_lsn` is the row's position; PostgreSQL keeps the bytes intact, so the file
//! header and its checksums are left out. [`compact_partition`] writes one, and deletes the
//! older snapshots and the journal rows it covers, in one transaction.
//!
//! The SQL is portable to CockroachDB and YugabyteDB: no advisory locks, no SERIAL, serializable
//! transactions retried on SQLSTATE 40001.

use crate::journal::format;
use crate::ledger::{Ledger, Lsn, Record};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

/// The table of partition snapshots; `bank-server init-cluster` creates it with the rest of the
/// schema (`IF NOT EXISTS`, so running it again changes nothing).
pub const SNAPSHOT_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS bank_snapshots (
    partition INTEGER NOT NULL,
    position BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (partition, position)
)";

/// Times a compaction is tried when PostgreSQL reports a serialization failure (another
/// transaction on the same rows, such as another node's compaction) before it gives up.
pub const COMPACT_ATTEMPTS_MAX: u32 = 8;

/// The pause before the next attempt of a compaction, per attempt made so far.
const COMPACT_BACKOFF_STEP: Duration = Duration::from_millis(20);

/// The partition's latest snapshot (if it has one) and its journal rows after it up to position
/// `$2`, the snapshot first and the rows in position order: one statement, so it reads one
/// consistent state even while another node compacts the partition.
const PARTITION_ROWS: &str = "
WITH latest AS (
    SELECT max(position) AS position FROM bank_snapshots WHERE partition = $1
)
SELECT TRUE AS from_snapshot, s.position, s.body
FROM bank_snapshots s, latest
WHERE s.partition = $1 AND s.position = latest.position
UNION ALL
SELECT FALSE AS from_snapshot, j.position, j.body
FROM bank_journal j, latest
WHERE j.partition = $1 AND j.position > COALESCE(latest.position, 0) AND j.position <= $2
ORDER BY from_snapshot DESC, position";

/// What a partition's rows give: its ledger, and the position of the snapshot it started from.
struct Loaded {
    ledger: Ledger,
    snapshot: Option<Lsn>,
}

/// What went wrong talking to PostgreSQL, in words (never with a password).
fn database_error(what: &str, error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {error}"),
    }
}

/// The partition's number as its column holds it.
fn partition_column(partition: u32) -> Result<i32, String> {
    i32::try_from(partition).map_err(|_| format!("partition {partition} is out of range"))
}

/// Reads the latest snapshot of the partition numbered `column` and its rows after it, up to
/// position `upto`.
async fn read_partition(
    client: &tokio_postgres::Client,
    column: i32,
    upto: i64,
) -> Result<Vec<Row>, tokio_postgres::Error> {
    client.query(PARTITION_ROWS, &[&column, &upto]).await
}

/// Builds the partition's ledger from its rows ([`PARTITION_ROWS`]): the snapshot's ledger (or
/// an empty one), then each row applied at its position, which must be the next one.
fn replay(partition: u32, rows: &[Row]) -> Result<Loaded, String> {
    let mut loaded = Loaded {
        ledger: Ledger::default(),
        snapshot: None,
    };
    for row in rows {
        let column_error = |error: tokio_postgres::Error| {
            format!("partition {partition}: a row of unexpected shape: {error}")
        };
        let is_snapshot: bool = row.try_get(0).map_err(column_error)?;
        let position: i64 = row.try_get(1).map_err(column_error)?;
        let body: &[u8] = row.try_get(2).map_err(column_error)?;
        let lsn = Lsn::try_from(position)
            .map_err(|_| format!("partition {partition}: position {position} is negative"))?;
        if is_snapshot {
            let ledger = format::decode_snapshot_body(body).map_err(|error| {
                format!("partition {partition}: the snapshot at position {position} does not decode: {error}")
            })?;
            if ledger.applied_lsn != lsn {
                return Err(format!(
                    "partition {partition}: the snapshot at position {position} holds the ledger of position {}",
                    ledger.applied_lsn
                ));
            }
            loaded = Loaded {
                ledger,
                snapshot: Some(lsn),
            };
            continue;
        }
        let expected = loaded.ledger.applied_lsn + 1;
        if lsn != expected {
            return Err(format!(
                "partition {partition}: journal position {expected} is missing (the next row is at position {position})"
            ));
        }
        let record = decode_row(partition, position, body)?;
        loaded
            .ledger
            .apply(lsn, &record)
            .map_err(|error| format!("partition {partition}, position {position}: {error}"))?;
    }
    Ok(loaded)
}

/// The record of the journal row at `position` of `partition`: decoded, and one that could have
/// been decided ([`Record::validate`]), so a corrupt row is refused before it is applied.
fn decode_row(partition: u32, position: i64, body: &[u8]) -> Result<Record, String> {
    let record = format::decode_record_body(body).map_err(|error| {
        format!("partition {partition}: the journal row at position {position} does not decode: {error}")
    })?;
    record.validate().map_err(|error| {
        format!("partition {partition}: the journal row at position {position} is not a valid record: {error}")
    })?;
    Ok(record)
}

/// The ledger of `partition` alone, as its rows make it now: its latest snapshot (if any; its
/// ledger's `applied_lsn` is the snapshot's position), then every journal row after it in
/// position order, each applied at its position with [`Ledger::apply`]. The `applied_lsn` of the
/// result is the partition's last position (0 for a partition with no rows).
///
/// Positions are consecutive from 1 within a partition: a missing one, a row or snapshot that
/// does not decode, and a record the ledger refuses are errors that name the partition and the
/// position. The snapshot and the rows are read by one statement, so a compaction by another
/// node at the same time never makes a gap appear.
pub async fn load_partition(
    client: &tokio_postgres::Client,
    partition: u32,
) -> Result<Ledger, String> {
    let column = partition_column(partition)?;
    let rows = read_partition(client, column, i64::MAX)
        .await
        .map_err(|error| database_error(&format!("reading partition {partition}"), &error))?;
    Ok(replay(partition, &rows)?.ledger)
}

/// How one attempt of a compaction ended, when it did not succeed.
enum Attempt {
    /// A serialization failure: nothing was changed; try again.
    Retry(String),
    /// Anything else: give up.
    Fail(String),
}

/// The attempt's failure for `error`: a serialization failure is tried again.
fn attempt_error(what: &str, error: &tokio_postgres::Error) -> Attempt {
    let reason = database_error(what, error);
    if error.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) {
        Attempt::Retry(reason)
    } else {
        Attempt::Fail(reason)
    }
}

/// Writes a snapshot of `partition` at its last position not above `upto` and deletes what it
/// makes unneeded, in one serializable transaction: builds the ledger from the latest snapshot
/// and the journal rows up to `upto` (as [`load_partition`] does), writes it as a snapshot at
/// its position (`ON CONFLICT DO NOTHING`: a snapshot at a position is always the same ledger),
/// deletes the partition's older snapshots and its journal rows up to that position. Returns the
/// snapshot's position, or `None` when there is nothing after the latest snapshot to compact
/// (then nothing is changed, so compacting twice is harmless).
///
/// A committed row is never rewritten, and a partition's committed rows are always the positions
/// 1 to its last, so rows up to `upto` that the transaction sees are final and any node may
/// compact any partition; rows written after it are left alone. A serialization failure
/// (SQLSTATE 40001, for one when two nodes compact at once) is tried again, up to
/// [`COMPACT_ATTEMPTS_MAX`] times. A node resolving a batch whose COMMIT it lost by reading the
/// batch's first row back must not take a row a compaction deleted for one never written: a
/// position at or below the partition's latest snapshot was written.
///
/// The transaction is opened with `BEGIN` on `client`, so `client` must serve nothing else
/// during the call; a call cancelled part-way leaves its session inside the transaction (drop
/// that connection then).
pub async fn compact_partition(
    client: &tokio_postgres::Client,
    partition: u32,
    upto: i64,
) -> Result<Option<i64>, String> {
    partition_column(partition)?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match compact_once(client, partition, upto).await {
            Ok(position) => return Ok(position),
            Err(Attempt::Retry(reason)) if attempt < COMPACT_ATTEMPTS_MAX => {
                tracing::debug!(partition, attempt, %reason, "compaction tried again");
                tokio::time::sleep(COMPACT_BACKOFF_STEP * attempt).await;
            }
            Err(Attempt::Retry(reason)) => {
                return Err(format!(
                    "compacting partition {partition}: gave up after {attempt} attempts: {reason}"
                ))
            }
            Err(Attempt::Fail(reason)) => return Err(reason),
        }
    }
}

/// One attempt of [`compact_partition`]: its transaction, committed, or rolled back on error.
async fn compact_once(
    client: &tokio_postgres::Client,
    partition: u32,
    upto: i64,
) -> Result<Option<i64>, Attempt> {
    client
        .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE")
        .await
        .map_err(|error| {
            attempt_error(
                &format!("starting the compaction of partition {partition}"),
                &error,
            )
        })?;
    match compact_in_transaction(client, partition, upto).await {
        Ok(position) => {
            client.batch_execute("COMMIT").await.map_err(|error| {
                attempt_error(
                    &format!("committing the compaction of partition {partition}"),
                    &error,
                )
            })?;
            Ok(position)
        }
        Err(failure) => {
            // Best effort: a failed statement has aborted the transaction already, and a lost
            // connection cannot be used again anyway.
            if let Err(error) = client.batch_execute("ROLLBACK").await {
                tracing::debug!(partition, error = %error, "rolling a compaction back failed");
            }
            Err(failure)
        }
    }
}

/// The statements of one compaction, inside its transaction.
async fn compact_in_transaction(
    client: &tokio_postgres::Client,
    partition: u32,
    upto: i64,
) -> Result<Option<i64>, Attempt> {
    let column = partition_column(partition).map_err(Attempt::Fail)?;
    let rows = read_partition(client, column, upto)
        .await
        .map_err(|error| attempt_error(&format!("reading partition {partition}"), &error))?;
    let loaded = replay(partition, &rows).map_err(Attempt::Fail)?;
    let lsn = loaded.ledger.applied_lsn;
    if lsn == loaded.snapshot.unwrap_or(0) {
        return Ok(None);
    }
    let position = i64::try_from(lsn).map_err(|_| {
        Attempt::Fail(format!(
            "partition {partition}: position {lsn} is out of range"
        ))
    })?;
    let mut body = Vec::new();
    format::encode_snapshot_body(&loaded.ledger, &mut body).map_err(|error| {
        Attempt::Fail(format!(
            "partition {partition}: the snapshot at position {position} does not encode: {error}"
        ))
    })?;
    let failed = |what: &str, error: &tokio_postgres::Error| {
        attempt_error(&format!("{what} of partition {partition}"), error)
    };
    client
        .execute(
            "INSERT INTO bank_snapshots (partition, position, body) VALUES ($1, $2, $3)
             ON CONFLICT (partition, position) DO NOTHING",
            &[&column, &position, &body],
        )
        .await
        .map_err(|error| failed("writing the snapshot", &error))?;
    client
        .execute(
            "DELETE FROM bank_snapshots WHERE partition = $1 AND position < $2",
            &[&column, &position],
        )
        .await
        .map_err(|error| failed("deleting the older snapshots", &error))?;
    client
        .execute(
            "DELETE FROM bank_journal WHERE partition = $1 AND position <= $2",
            &[&column, &position],
        )
        .await
        .map_err(|error| failed("deleting the compacted journal rows", &error))?;
    Ok(Some(position))
}
