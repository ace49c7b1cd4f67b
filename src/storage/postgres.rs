//! A [`Log`] in PostgreSQL: the journal as rows of a table keyed by (partition, position), written
//! one transaction per batch (group commit), fenced by the owner's epoch of every partition it
//! writes (docs/CLUSTER.md).
//!
//! Accounts are spread over a fixed number of partitions ([`partition_of`]). A node owns a
//! partition by a lease with an epoch in `bank_partitions`; taking a partition over raises its
//! epoch. Every batch's transaction first moves each of its partitions' `next_position` from the
//! value the node expects to the one after the batch, *only where the partition's owner is this
//! node, its epoch the one the node holds and its lease unexpired by the database's clock*; a
//! partition that does not match fails the fence, the transaction is rolled back and the log
//! fails closed. The (partition, position) primary key makes a second writer's record impossible
//! even so. The lease is renewed in the background; a node that has not renewed within the lease,
//! by its own clock measured from the moment it asked, fails closed before the lease can have
//! expired in the database.
//!
//! A connection lost during COMMIT leaves the outcome unknown: it is resolved by reading back
//! whether the batch's first record is there (with this node's epoch), never by applying again;
//! a batch that is not there is written again with the same positions, which the compare-and-set
//! on `next_position` makes safe. Serialization failures (SQLSTATE 40001) are retried.
//!
//! The SQL avoids what CockroachDB and YugabyteDB lack or order differently: no advisory locks,
//! no SERIAL, no reliance on commit order; every time comes from the database's `now()`.

use super::{AppendError, CommittedState, Log, Progress, SHUTTING_DOWN};
use crate::ledger::{Ledger, Lsn, Record};
use crate::model::Card;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_postgres::error::SqlState;

/// The schema version `init-cluster` writes and a node checks.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a lease lasts by default: a dead node's partitions are free again after it, so a
/// standby serves about this long (and a quarter more) after the node died. Renewed every
/// second; a node that cannot renew for two seconds stops taking changes until it can.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(3);

/// The most partitions a cluster may have.
pub const PARTITIONS_MAX: u32 = 4096;

/// The most records one transaction writes.
pub const BATCH_RECORDS_MAX: usize = 4096;

/// Times a batch is tried after a serialization failure or a lost connection before the node
/// refuses new changes (`unavailable`) until PostgreSQL answers again; the batch itself is tried
/// until it is written, or the node is fenced.
pub const BATCH_ATTEMPTS_MAX: u32 = 8;

/// The schema, created by `bank-server init-cluster`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS bank_cluster (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS bank_partitions (
    partition INTEGER PRIMARY KEY,
    owner INTEGER,
    owner_address TEXT,
    epoch BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ,
    next_position BIGINT NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS bank_journal (
    partition INTEGER NOT NULL,
    position BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (partition, position)
);
";

/// The partition of `card` among `partitions`.
pub fn partition_of(card: Card, partitions: u32) -> u32 {
    (card % u64::from(partitions.max(1))) as u32
}

/// How a node reaches PostgreSQL and names itself.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// The connection URL, `postgres://USER@HOST:PORT/DB` (a password, if any, from the URL or
    /// `PGPASSWORD`, never logged).
    pub url: String,
    /// This node's id, unique in the cluster.
    pub node_id: i32,
    /// The address clients use to reach this node.
    pub advertise: String,
    /// How long a lease lasts.
    pub lease_ttl: Duration,
    /// Records waiting for PostgreSQL before appends answer `busy`.
    pub queue_records_max: usize,
    /// How long a node waits, at start, for partitions another node holds; `None`: as long as
    /// it takes (a standby).
    pub takeover_wait_max: Option<Duration>,
}

/// What went wrong talking to PostgreSQL, in words (never with the URL's password).
fn database_error(what: &str, error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{what}: {} ({})", db.message(), db.code().code()),
        None => format!("{what}: {error}"),
    }
}

/// Creates the schema and `partitions` partitions, unless the cluster exists with the same
/// number (then nothing changes); another number is refused: partitions are fixed for life.
pub async fn init_cluster(url: &str, partitions: u32) -> Result<(), String> {
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(format!(
            "--partitions: {partitions} is not between 1 and {PARTITIONS_MAX}"
        ));
    }
    let client = connect(url).await?;
    client
        .batch_execute(SCHEMA)
        .await
        .map_err(|error| database_error("creating the schema", &error))?;
    let existing = cluster_partitions(&client).await?;
    match existing {
        Some(existing) if existing != partitions => {
            return Err(format!(
                "the cluster has {existing} partitions already; partitions are fixed once made"
            ))
        }
        Some(_) => {}
        None => {
            client
                .execute(
                    "INSERT INTO bank_cluster (name, value) VALUES ('schema_version', $1), ('partitions', $2)
                     ON CONFLICT (name) DO NOTHING",
                    &[&SCHEMA_VERSION, &i64::from(partitions)],
                )
                .await
                .map_err(|error| database_error("recording the cluster", &error))?;
        }
    }
    client
        .execute(
            "INSERT INTO bank_partitions (partition) SELECT generate_series(0, $1 - 1)
             ON CONFLICT (partition) DO NOTHING",
            &[&(partitions as i32)],
        )
        .await
        .map_err(|error| database_error("creating the partitions", &error))?;
    Ok(())
}

/// One connection, its driver task spawned on the current runtime.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|error| database_error("cannot connect to PostgreSQL", &error))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(error = %database_error("PostgreSQL connection", &error), "connection ended");
        }
    });
    Ok(client)
}

/// The cluster's number of partitions, if it was made.
async fn cluster_partitions(client: &tokio_postgres::Client) -> Result<Option<u32>, String> {
    let row = client
        .query_opt(
            "SELECT value FROM bank_cluster WHERE name = 'partitions'",
            &[],
        )
        .await
        .map_err(|error| database_error("reading the cluster", &error))?;
    Ok(row.map(|row| row.get::<_, i64>(0) as u32))
}

/// A partition this node holds: its epoch and the next position it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    epoch: i64,
    next_position: i64,
}

/// What the log's callers and its writer share.
struct Shared {
    /// Records appended and not yet taken by the writer, in position order.
    queue: Mutex<Queue>,
    /// Wakes the writer.
    wake: Notify,
    /// Published after each durable batch, and on failure.
    progress: watch::Sender<Progress>,
    /// The state each durable batch is applied to.
    committed: Arc<CommittedState>,
    /// Records that may wait.
    queue_records_max: usize,
}

/// The queue and the log's own state, under one lock.
struct Queue {
    /// The position the next record gets.
    next_lsn: Lsn,
    /// Records waiting for the writer.
    records: Vec<(Lsn, Record)>,
    /// Set once the log failed.
    failed: Option<Arc<str>>,
    /// Set by [`Log::close`].
    closed: bool,
    /// Set while PostgreSQL cannot be reached or the lease could not be renewed in time: new
    /// appends are refused (`unavailable`) until the writer gets through again. Unlike
    /// `failed`, this passes.
    suspended: Option<Arc<str>>,
}

/// The PostgreSQL log of one node.
pub struct PostgresLog {
    shared: Arc<Shared>,
    /// The writer's thread, joined by [`Log::close`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl PostgresLog {
    /// Connects, takes every partition (waiting up to `takeover_wait_max` for those another
    /// node's unexpired lease holds), rebuilds the committed state from the journal rows, and
    /// starts the writer and the lease renewal on a thread of their own.
    pub fn open(config: PostgresConfig) -> Result<(Arc<PostgresLog>, Arc<CommittedState>), String> {
        // Everything runs on the log's own thread and runtime, so opening works from any caller,
        // one inside a runtime included.
        let (opened, on_opened) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("postgres-writer".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened.send(Err(error.to_string()));
                        return;
                    }
                };
                let (held, partitions, ledger, pool) = match runtime.block_on(start(&config)) {
                    Ok(started) => started,
                    Err(reason) => {
                        let _ = opened.send(Err(reason));
                        return;
                    }
                };
                let committed = Arc::new(CommittedState::new(ledger));
                let head = committed.applied_lsn();
                let (progress, _) = watch::channel(Progress::Durable(head));
                let shared = Arc::new(Shared {
                    queue: Mutex::new(Queue {
                        next_lsn: head + 1,
                        records: Vec::new(),
                        failed: None,
                        closed: false,
                        suspended: None,
                    }),
                    wake: Notify::new(),
                    progress,
                    committed: committed.clone(),
                    queue_records_max: config.queue_records_max.max(1),
                });
                let writer = Writer {
                    shared: shared.clone(),
                    pool,
                    config,
                    held,
                    partitions,
                };
                if opened.send(Ok((shared, committed))).is_ok() {
                    runtime.block_on(writer.run());
                }
            })
            .map_err(|error| error.to_string())?;
        let (shared, committed) = on_opened
            .recv()
            .map_err(|_| "the PostgreSQL writer stopped while starting".to_string())??;
        let log = Arc::new(PostgresLog {
            shared,
            thread: Mutex::new(Some(thread)),
        });
        Ok((log, committed))
    }
}

/// Connects, takes the partitions and reads the journal: what [`PostgresLog::open`] does before
/// the writer starts.
async fn start(
    config: &PostgresConfig,
) -> Result<(BTreeMap<u32, Held>, u32, Ledger, deadpool_postgres::Pool), String> {
    let pool_config = config
        .url
        .parse::<tokio_postgres::Config>()
        .map_err(|error| format!("--storage: not a PostgreSQL URL: {error}"))?;
    let manager = deadpool_postgres::Manager::new(pool_config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(|error| error.to_string())?;
    let client = pool
        .get()
        .await
        .map_err(|error| format!("cannot connect to PostgreSQL: {error}"))?;
    let partitions = cluster_partitions(&client).await?.ok_or_else(|| {
        "the database holds no cluster: run `bank-server init-cluster --storage URL --partitions N` first".to_string()
    })?;
    let deadline = config
        .takeover_wait_max
        .and_then(|wait| Instant::now().checked_add(wait));
    let held = loop {
        let held = take_partitions(&client, config).await?;
        if held.len() == partitions as usize {
            break held;
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(format!(
                "{} of {partitions} partitions are held by other nodes' leases; this node serves only when it holds them all",
                partitions as usize - held.len()
            ));
        }
        tracing::info!(
            held = held.len(),
            partitions,
            "waiting for partitions other nodes hold"
        );
        tokio::time::sleep(config.lease_ttl / 4).await;
    };
    let ledger = recover(&client).await?;
    tracing::info!(
        node = config.node_id,
        partitions,
        lsn = ledger.applied_lsn,
        "PostgreSQL journal recovered"
    );
    Ok((held, partitions, ledger, pool))
}

/// Takes every partition that is free, expired or this node's own (a restart of this node
/// raises the epoch, fencing its earlier run), and returns those held.
async fn take_partitions(
    client: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<BTreeMap<u32, Held>, String> {
    let rows = client
        .query(
            "UPDATE bank_partitions
             SET owner = $1, owner_address = $2, epoch = epoch + 1,
                 lease_until = now() + make_interval(secs => $3)
             WHERE owner IS NULL OR owner = $1 OR lease_until < now()
             RETURNING partition, epoch, next_position",
            &[
                &config.node_id,
                &config.advertise,
                &config.lease_ttl.as_secs_f64(),
            ],
        )
        .await
        .map_err(|error| database_error("taking the partitions", &error))?;
    Ok(rows
        .iter()
        .map(|row| {
            (
                row.get::<_, i32>(0) as u32,
                Held {
                    epoch: row.get(1),
                    next_position: row.get(2),
                },
            )
        })
        .collect())
}

/// The ledger the journal rows make, partition by partition in position order (the accounts'
/// records keep their order; the ledger's checks do not depend on the order across accounts).
async fn recover(client: &tokio_postgres::Client) -> Result<Ledger, String> {
    let rows = client
        .query(
            "SELECT partition, position, body FROM bank_journal ORDER BY partition, position",
            &[],
        )
        .await
        .map_err(|error| database_error("reading the journal", &error))?;
    let mut ledger = Ledger::default();
    for (index, row) in rows.iter().enumerate() {
        let body: &[u8] = row.get(2);
        let record = crate::journal::format::decode_record_body(body).map_err(|error| {
            format!(
                "journal row ({}, {}): {error}",
                row.get::<_, i32>(0),
                row.get::<_, i64>(1)
            )
        })?;
        ledger
            .apply(index as Lsn + 1, &record)
            .map_err(|error| error.to_string())?;
    }
    Ok(ledger)
}

/// The writer: batches, fences, commits, applies, publishes; and renews the lease.
struct Writer {
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    config: PostgresConfig,
    /// The partitions held, with their epochs and next positions.
    held: BTreeMap<u32, Held>,
    partitions: u32,
}

/// Why a lease was not renewed.
enum Renewal {
    /// Another node holds some of the partitions now: stop at once.
    Lost(String),
    /// PostgreSQL did not answer: try again while the lease lasts.
    Unreachable(String),
}

/// How a batch's transaction ended.
enum Committed {
    /// Durable.
    Yes,
    /// Not written (rolled back, or never reached the server): try again.
    Retry(String),
    /// Not written: a partition failed the fence (its lease ran out, or it was taken over).
    Fenced(String),
}

impl Writer {
    async fn run(mut self) {
        let mut renewed_at = Instant::now();
        let renew_every = self.config.lease_ttl / 3;
        let mut renewal = tokio::time::interval(renew_every);
        loop {
            let (batch, closed) = {
                let mut queue = self.shared.queue.lock();
                if queue.failed.is_some() {
                    return;
                }
                let take = queue.records.len().min(BATCH_RECORDS_MAX);
                let batch: Vec<(Lsn, Record)> = queue.records.drain(..take).collect();
                (batch, queue.closed)
            };
            if batch.is_empty() && closed {
                return self.release().await;
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = renewal.tick() => {
                        match self.renew().await {
                            Ok(()) => {
                                renewed_at = Instant::now();
                                self.suspend(None);
                            }
                            Err(Renewal::Lost(reason)) => return self.fail(reason),
                            Err(Renewal::Unreachable(reason)) => {
                                tracing::warn!(%reason, "lease renewal failed; trying again")
                            }
                        }
                    }
                }
            } else if let Err(reason) = self.write(&batch).await {
                return self.fail(reason);
            }
            // Serving past the lease is what a fence exists to stop: stop taking changes before
            // it can expire, until it is renewed (or found taken over: then for good).
            if renewed_at.elapsed() + renew_every >= self.config.lease_ttl {
                match self.renew().await {
                    Ok(()) => {
                        renewed_at = Instant::now();
                        self.suspend(None);
                    }
                    Err(Renewal::Lost(reason)) => return self.fail(reason),
                    Err(Renewal::Unreachable(reason)) => {
                        self.suspend(Some(&format!(
                            "the lease could not be renewed in time: {reason}"
                        )));
                        tokio::time::sleep(backoff(1)).await;
                    }
                }
            }
        }
    }

    /// Hands the partitions back on a graceful stop, everything written: a standby takes them
    /// at its next try instead of waiting for the lease to run out. Only where this node still
    /// holds them at its epoch; a failure is logged (the lease then runs out by itself).
    async fn release(&self) {
        let partitions: Vec<i32> = self
            .held
            .keys()
            .map(|partition| *partition as i32)
            .collect();
        let epochs: Vec<i64> = self.held.values().map(|held| held.epoch).collect();
        let released = match self.pool.get().await {
            Ok(client) => client
                .execute(
                    "UPDATE bank_partitions AS p
                     SET owner = NULL, owner_address = NULL, lease_until = NULL
                     FROM unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
                     WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
                    &[&self.config.node_id, &partitions, &epochs],
                )
                .await
                .map_err(|error| database_error("releasing the partitions", &error)),
            Err(error) => Err(error.to_string()),
        };
        match released {
            Ok(count) => tracing::info!(partitions = count, "partitions handed back"),
            Err(reason) => {
                tracing::warn!(%reason, "partitions not handed back; their lease runs out by itself")
            }
        }
    }

    /// Refuses new appends for `reason` (PostgreSQL away, the lease not renewed in time), or,
    /// with `None`, takes them again.
    fn suspend(&self, reason: Option<&str>) {
        let mut queue = self.shared.queue.lock();
        match (reason, &queue.suspended) {
            (Some(reason), None) => {
                tracing::warn!(%reason, "not taking changes until PostgreSQL answers");
                queue.suspended = Some(reason.into());
            }
            (None, Some(_)) => {
                tracing::info!("PostgreSQL answers again; taking changes");
                queue.suspended = None;
            }
            _ => {}
        }
    }

    /// Fails the log closed for `reason`.
    fn fail(&self, reason: String) {
        tracing::error!(%reason, "the PostgreSQL journal failed closed");
        let reason: Arc<str> = reason.into();
        let mut queue = self.shared.queue.lock();
        queue.failed = Some(reason.clone());
        queue.records.clear();
        self.shared.progress.send_replace(Progress::Failed(reason));
    }

    /// Renews the lease of every partition held, or says why not.
    async fn renew(&self) -> Result<(), Renewal> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|error| Renewal::Unreachable(error.to_string()))?;
        let partitions: Vec<i32> = self
            .held
            .keys()
            .map(|partition| *partition as i32)
            .collect();
        let epochs: Vec<i64> = self.held.values().map(|held| held.epoch).collect();
        let renewed = client
            .execute(
                "UPDATE bank_partitions AS p
                 SET lease_until = now() + make_interval(secs => $2)
                 FROM unnest($3::int[], $4::bigint[]) AS h(partition, epoch)
                 WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
                &[
                    &self.config.node_id,
                    &self.config.lease_ttl.as_secs_f64(),
                    &partitions,
                    &epochs,
                ],
            )
            .await
            .map_err(|error| Renewal::Unreachable(database_error("renewing the lease", &error)))?;
        if renewed as usize != self.held.len() {
            return Err(Renewal::Lost(format!(
                "fenced: {} of {} partitions were taken over by another node",
                self.held.len() - renewed as usize,
                self.held.len()
            )));
        }
        Ok(())
    }

    /// Makes `batch` durable (one transaction), then applies it and publishes its progress.
    async fn write(&mut self, batch: &[(Lsn, Record)]) -> Result<(), String> {
        let mut rows: Vec<(i32, i64, Vec<u8>)> = Vec::with_capacity(batch.len());
        let mut next = self.held.clone();
        for (_, record) in batch {
            let partition = partition_of(record.card, self.partitions);
            let held = next
                .get_mut(&partition)
                .ok_or_else(|| format!("partition {partition} is not held by this node"))?;
            let mut body = Vec::with_capacity(96);
            crate::journal::format::encode_record_body(record, &mut body)
                .map_err(|error| error.to_string())?;
            rows.push((partition as i32, held.next_position, body));
            held.next_position += 1;
        }
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            match self.commit(&rows, &next).await? {
                Committed::Yes => break,
                Committed::Retry(reason) => {
                    // PostgreSQL is away (restarting, unreachable): new requests are refused
                    // meanwhile, and this batch waits for it; it is written exactly once.
                    if attempt >= BATCH_ATTEMPTS_MAX {
                        if self.shared.queue.lock().closed {
                            return Err(format!("closing while PostgreSQL is away: {reason}"));
                        }
                        self.suspend(Some(&reason));
                    }
                    tracing::warn!(%reason, attempt, "batch not written; trying again");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Committed::Fenced(reason) => match self.renew().await {
                    // The lease had only run out, and nobody took the partitions meanwhile.
                    Ok(()) => tracing::info!("lease renewed after it ran out; writing on"),
                    Err(Renewal::Lost(lost)) => return Err(format!("{reason}; {lost}")),
                    Err(Renewal::Unreachable(unreachable)) => {
                        self.suspend(Some(&unreachable));
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                },
            }
        }
        self.suspend(None);
        self.held = next;
        let applied = self.shared.committed.apply_batch(batch);
        if let Err(error) = applied {
            return Err(format!("a durable record does not apply: {error}"));
        }
        let last = batch.last().map_or(0, |(lsn, _)| *lsn);
        self.shared.progress.send_replace(Progress::Durable(last));
        Ok(())
    }

    /// One attempt at the batch's transaction: the fence, the rows, the commit; a commit whose
    /// outcome is unknown is resolved by reading the batch's first row back.
    async fn commit(
        &self,
        rows: &[(i32, i64, Vec<u8>)],
        next: &BTreeMap<u32, Held>,
    ) -> Result<Committed, String> {
        let mut client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => return Ok(Committed::Retry(error.to_string())),
        };
        let touched: Vec<u32> = next
            .iter()
            .filter(|(partition, held)| self.held[partition].next_position != held.next_position)
            .map(|(partition, _)| *partition)
            .collect();
        let fence_partitions: Vec<i32> = touched.iter().map(|p| *p as i32).collect();
        let fence_epochs: Vec<i64> = touched.iter().map(|p| self.held[p].epoch).collect();
        let fence_from: Vec<i64> = touched.iter().map(|p| self.held[p].next_position).collect();
        let fence_to: Vec<i64> = touched.iter().map(|p| next[p].next_position).collect();
        let partitions: Vec<i32> = rows.iter().map(|row| row.0).collect();
        let positions: Vec<i64> = rows.iter().map(|row| row.1).collect();
        let epochs: Vec<i64> = rows
            .iter()
            .map(|row| self.held[&(row.0 as u32)].epoch)
            .collect();
        let bodies: Vec<&[u8]> = rows.iter().map(|row| row.2.as_slice()).collect();
        let transaction = match client.transaction().await {
            Ok(transaction) => transaction,
            Err(error) => return retry_or_fail("BEGIN", &error),
        };
        let fenced = transaction
            .execute(
                "UPDATE bank_partitions AS p SET next_position = f.next_to
                 FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::bigint[])
                      AS f(partition, epoch, next_from, next_to)
                 WHERE p.partition = f.partition AND p.owner = $1 AND p.epoch = f.epoch
                   AND p.next_position = f.next_from AND p.lease_until > now()",
                &[
                    &self.config.node_id,
                    &fence_partitions,
                    &fence_epochs,
                    &fence_from,
                    &fence_to,
                ],
            )
            .await;
        match fenced {
            Ok(count) if count as usize == touched.len() => {}
            Ok(count) => {
                let _ = transaction.rollback().await;
                // Written already by an attempt whose COMMIT seemed lost? Then it is durable.
                match self.written(rows).await? {
                    Some(true) => return Ok(Committed::Yes),
                    Some(false) => {}
                    None => return Ok(Committed::Retry("cannot read the batch back".into())),
                }
                return Ok(Committed::Fenced(format!(
                    "fenced: {} of {} partitions of the batch are no longer this node's at the epoch it holds (taken over, or the lease expired)",
                    touched.len() - count as usize,
                    touched.len()
                )));
            }
            Err(error) => return retry_or_fail("the fence", &error),
        }
        let inserted = transaction
            .execute(
                "INSERT INTO bank_journal (partition, position, epoch, body)
                 SELECT * FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bytea[])",
                &[&partitions, &positions, &epochs, &bodies],
            )
            .await;
        if let Err(error) = inserted {
            return retry_or_fail("writing the batch", &error);
        }
        match transaction.commit().await {
            Ok(()) => Ok(Committed::Yes),
            Err(error) if error.as_db_error().is_some() => retry_or_fail("COMMIT", &error),
            Err(error) => {
                // The outcome is unknown: read it back, never apply twice.
                tracing::warn!(error = %database_error("COMMIT", &error), "commit outcome unknown; reading it back");
                match self.written(rows).await? {
                    Some(true) => Ok(Committed::Yes),
                    Some(false) => Ok(Committed::Retry(
                        "COMMIT was lost before it took effect".into(),
                    )),
                    None => Ok(Committed::Retry(
                        "COMMIT's outcome cannot be read back yet".into(),
                    )),
                }
            }
        }
    }

    /// Whether the batch's first row is in the journal with this node's epoch, on a fresh
    /// connection; `None` when PostgreSQL did not answer within the attempts (the caller tries
    /// the batch again, which the fence makes safe).
    async fn written(&self, rows: &[(i32, i64, Vec<u8>)]) -> Result<Option<bool>, String> {
        let Some((partition, position, body)) = rows.first() else {
            return Ok(Some(true));
        };
        let epoch = self.held[&(*partition as u32)].epoch;
        for attempt in 1..=BATCH_ATTEMPTS_MAX {
            let client = match self.pool.get().await {
                Ok(client) => client,
                Err(error) => {
                    tracing::warn!(%error, attempt, "cannot read the batch back yet");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    continue;
                }
            };
            let found = client
                .query_opt(
                    "SELECT epoch, body FROM bank_journal WHERE partition = $1 AND position = $2",
                    &[partition, position],
                )
                .await;
            match found {
                Ok(None) => return Ok(Some(false)),
                Ok(Some(row)) => {
                    let (found_epoch, found_body): (i64, &[u8]) = (row.get(0), row.get(1));
                    if found_epoch == epoch && found_body == body.as_slice() {
                        return Ok(Some(true));
                    }
                    return Err(format!(
                        "position {position} of partition {partition} holds another writer's record"
                    ));
                }
                Err(error) => {
                    tracing::warn!(error = %database_error("reading the batch back", &error), attempt, "trying again");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
            }
        }
        Ok(None)
    }
}

/// How long to wait before attempt `attempt + 1` of a batch or a renewal: growing, at most 1 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((20 * u64::from(attempt)).min(1_000))
}

/// A failed statement: a serialization failure or a lost connection is tried again, anything
/// else fails the log.
fn retry_or_fail(what: &str, error: &tokio_postgres::Error) -> Result<Committed, String> {
    match error.code() {
        Some(code) if *code == SqlState::T_R_SERIALIZATION_FAILURE => {
            Ok(Committed::Retry(database_error(what, error)))
        }
        Some(_) => Err(database_error(what, error)),
        None => Ok(Committed::Retry(database_error(what, error))),
    }
}

impl Log for PostgresLog {
    fn append_batch(&self, records: Vec<Record>) -> Result<Lsn, AppendError> {
        let mut queue = self.shared.queue.lock();
        if let Some(reason) = &queue.failed {
            return Err(AppendError::Unavailable(reason.clone()));
        }
        if queue.closed {
            return Err(AppendError::Unavailable(SHUTTING_DOWN.into()));
        }
        if let Some(reason) = &queue.suspended {
            return Err(AppendError::Unavailable(reason.clone()));
        }
        if queue.records.len() + records.len() > self.shared.queue_records_max {
            return Err(AppendError::Busy);
        }
        for record in records {
            let lsn = queue.next_lsn;
            queue.next_lsn += 1;
            queue.records.push((lsn, record));
        }
        let head = queue.next_lsn - 1;
        drop(queue);
        self.shared.wake.notify_one();
        Ok(head)
    }

    fn head(&self) -> Lsn {
        self.shared.queue.lock().next_lsn - 1
    }

    fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.shared.queue.lock().failed.clone()
    }

    fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}
