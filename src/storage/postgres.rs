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

use super::pg_partition::{compact_partition, load_partition};
use super::{
    AppendError, CommittedState, Log, MoneyTotals, Placement, PlacementHook, Progress,
    PARTITION_MOVED, SHUTTING_DOWN,
};
use crate::ledger::{Ledger, Lsn, Record};
use crate::model::Card;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio_postgres::error::SqlState;

/// The schema version `init-cluster` writes and a node checks: 2 added the membership of nodes
/// and the partitions' snapshots.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a lease lasts by default: a dead node's partitions are free again after it, so a
/// standby serves about this long (and a quarter more) after the node died. Renewed every
/// second; a node that cannot renew for two seconds stops taking changes until it can.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(3);

/// How many records a partition gets between two snapshots by default: a takeover then reads
/// one snapshot and at most this many rows (plus what was written while it ran).
pub const SNAPSHOT_EVERY_RECORDS_DEFAULT: u64 = 50_000;

/// The longest time between two rounds of a node's background work (heartbeat, renewal,
/// balancing): a third of the lease, but at least this often, so partitions move soon after a
/// node joins or leaves whatever the lease.
pub const TICK_EVERY_MAX: Duration = Duration::from_secs(1);

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
CREATE TABLE IF NOT EXISTS bank_nodes (
    node INTEGER PRIMARY KEY,
    address TEXT NOT NULL,
    seen_until TIMESTAMPTZ NOT NULL
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
    /// Records a partition gets between two of its snapshots ([`SNAPSHOT_EVERY_RECORDS_DEFAULT`]).
    pub snapshot_every_records: u64,
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
    client
        .batch_execute(super::pg_partition::SNAPSHOT_SCHEMA)
        .await
        .map_err(|error| database_error("creating the snapshots' table", &error))?;
    let existing = cluster_partitions(&client).await?;
    match existing {
        Some(existing) if existing != partitions => {
            return Err(format!(
                "the cluster has {existing} partitions already; partitions are fixed once made"
            ))
        }
        Some(_) => {
            client
                .execute(
                    "UPDATE bank_cluster SET value = $1 WHERE name = 'schema_version' AND value < $1",
                    &[&SCHEMA_VERSION],
                )
                .await
                .map_err(|error| database_error("upgrading the schema", &error))?;
        }
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

/// The cluster's schema version, checked by a node before it takes anything.
async fn check_schema_version(client: &tokio_postgres::Client) -> Result<(), String> {
    let row = client
        .query_opt(
            "SELECT value FROM bank_cluster WHERE name = 'schema_version'",
            &[],
        )
        .await
        .map_err(|error| database_error("reading the schema version", &error))?;
    match row.map(|row| row.get::<_, i64>(0)) {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(version) if version < SCHEMA_VERSION => Err(format!(
            "the cluster's schema is version {version}; run `bank-server init-cluster` with this release to upgrade it to {SCHEMA_VERSION}"
        )),
        Some(version) => Err(format!(
            "the cluster's schema is version {version}, newer than this release's {SCHEMA_VERSION}"
        )),
        None => Err("the database holds no cluster: run `bank-server init-cluster --storage URL --partitions N` first".into()),
    }
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
    /// The cluster's number of partitions.
    partitions: u32,
    /// Who serves each partition, as this node last read it.
    owners: RwLock<Vec<Placement>>,
    /// Whom to tell when the partitions served here change; none are adopted or released at
    /// run time before it is set.
    hook: OnceLock<Arc<dyn PlacementHook>>,
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
    /// Set while PostgreSQL cannot be reached: new appends are refused (`unavailable`) until the
    /// writer gets through again. Unlike `failed`, this passes.
    suspended: Option<Arc<str>>,
    /// The partitions appends are taken for (held, and not being handed over).
    serving: Vec<bool>,
    /// Until when, by this node's clock, the leases are surely unexpired in the database (two
    /// thirds of the lease after the last renewal was asked for); appends are refused after it.
    fresh_until: Instant,
}

/// The PostgreSQL log of one node.
pub struct PostgresLog {
    shared: Arc<Shared>,
    /// The writer's thread, joined by [`Log::close`].
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What a node starts with: the partitions it took and the state they make.
struct Started {
    held: BTreeMap<u32, Held>,
    money: BTreeMap<u32, MoneyTotals>,
    partitions: u32,
    ledger: Ledger,
    pool: deadpool_postgres::Pool,
    renewed_at: Instant,
}

impl PostgresLog {
    /// Connects, joins the cluster's membership, takes its fair share of the partitions nobody
    /// holds, rebuilds their state from PostgreSQL, and starts the writer (which also renews the
    /// leases and balances the partitions among the nodes) on a thread of its own.
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
                let started = match runtime.block_on(start(&config)) {
                    Ok(started) => started,
                    Err(reason) => {
                        let _ = opened.send(Err(reason));
                        return;
                    }
                };
                let committed = Arc::new(CommittedState::new(started.ledger));
                let head = committed.applied_lsn();
                let (progress, _) = watch::channel(Progress::Durable(head));
                let partitions = started.partitions;
                let mut serving = vec![false; partitions as usize];
                let mut owners = vec![Placement::Nowhere; partitions as usize];
                for partition in started.held.keys() {
                    serving[*partition as usize] = true;
                    owners[*partition as usize] = Placement::Here;
                }
                let shared = Arc::new(Shared {
                    queue: Mutex::new(Queue {
                        next_lsn: head + 1,
                        records: Vec::new(),
                        failed: None,
                        closed: false,
                        suspended: None,
                        serving,
                        fresh_until: started.renewed_at + config.lease_ttl * 2 / 3,
                    }),
                    wake: Notify::new(),
                    progress,
                    committed: committed.clone(),
                    queue_records_max: config.queue_records_max.max(1),
                    partitions,
                    owners: RwLock::new(owners),
                    hook: OnceLock::new(),
                });
                let writer = Writer {
                    shared: shared.clone(),
                    pool: started.pool,
                    config,
                    held: started.held,
                    money: started.money,
                    releasing: Vec::new(),
                    dropped: Vec::new(),
                    renewed_at: started.renewed_at,
                    durable: head,
                    snapshotted: BTreeMap::new(),
                    compacting: Arc::default(),
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

    /// The partitions this node serves now (tests, metrics).
    pub fn served_partitions(&self) -> Vec<u32> {
        let queue = self.shared.queue.lock();
        (0..self.shared.partitions)
            .filter(|partition| queue.serving[*partition as usize])
            .collect()
    }
}

/// Connects, joins, takes the partitions and reads their state: what [`PostgresLog::open`] does
/// before the writer starts.
async fn start(config: &PostgresConfig) -> Result<Started, String> {
    let mut pool_config = config
        .url
        .parse::<tokio_postgres::Config>()
        .map_err(|error| format!("--storage: not a PostgreSQL URL: {error}"))?;
    // A node paused in the middle of a batch holds its transaction open, and with it the row
    // locks of its partitions: the database ends such a session after a lease, so the locks go
    // and the partitions can be taken over (the paused node's COMMIT then fails, and its fence).
    let idle_ms = config.lease_ttl.as_millis().max(1);
    let options = match pool_config.get_options() {
        Some(given) => format!("{given} -c idle_in_transaction_session_timeout={idle_ms}"),
        None => format!("-c idle_in_transaction_session_timeout={idle_ms}"),
    };
    pool_config.options(options);
    let manager = deadpool_postgres::Manager::new(pool_config, tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(|error| error.to_string())?;
    let client = pool
        .get()
        .await
        .map_err(|error| format!("cannot connect to PostgreSQL: {error}"))?;
    check_schema_version(&client).await?;
    let partitions = cluster_partitions(&client).await?.ok_or_else(|| {
        "the database holds no cluster: run `bank-server init-cluster --storage URL --partitions N` first".to_string()
    })?;
    let renewed_at = Instant::now();
    let live = heartbeat(&client, config).await.map_err(|error| error.0)?;
    let share = fair_share(partitions, live);
    let mut held = BTreeMap::new();
    let mut money = BTreeMap::new();
    let mut ledger = Ledger::default();
    // A restart of this node takes its own partitions back first (raising their epochs).
    let table = read_partitions(&client).await.map_err(|error| error.0)?;
    for partition in takeable(&table, config.node_id) {
        if held.len() >= share {
            break;
        }
        let Some(taken) = take_partition(&client, config, partition)
            .await
            .map_err(|error| error.0)?
        else {
            continue;
        };
        let part = load_partition(&client, partition).await?;
        check_loaded(partition, &part, taken)?;
        money.insert(partition, MoneyTotals::of(&part));
        ledger
            .absorb(part)
            .map_err(|error| format!("partition {partition}: {error}"))?;
        held.insert(partition, taken);
    }
    tracing::info!(
        node = config.node_id,
        partitions,
        held = held.len(),
        nodes = live,
        lsn = ledger.applied_lsn,
        "joined the cluster"
    );
    Ok(Started {
        held,
        money,
        partitions,
        ledger,
        pool,
        renewed_at,
    })
}

/// A statement that did not get through, in words.
struct Unreachable(String);

/// How many partitions a node should serve when `live` nodes share `partitions`: the fair share,
/// rounded up (so every partition finds a node).
fn fair_share(partitions: u32, live: u32) -> usize {
    partitions.div_ceil(live.max(1)) as usize
}

/// Marks this node alive until a lease from now, and returns how many nodes are alive.
async fn heartbeat(
    client: &tokio_postgres::Client,
    config: &PostgresConfig,
) -> Result<u32, Unreachable> {
    client
        .execute(
            "INSERT INTO bank_nodes (node, address, seen_until)
             VALUES ($1, $2, now() + make_interval(secs => $3))
             ON CONFLICT (node) DO UPDATE SET address = $2, seen_until = now() + make_interval(secs => $3)",
            &[
                &config.node_id,
                &config.advertise,
                &config.lease_ttl.as_secs_f64(),
            ],
        )
        .await
        .map_err(|error| Unreachable(database_error("joining the cluster", &error)))?;
    let row = client
        .query_one(
            "SELECT count(*) FROM bank_nodes WHERE seen_until > now()",
            &[],
        )
        .await
        .map_err(|error| Unreachable(database_error("counting the nodes", &error)))?;
    Ok(row.get::<_, i64>(0).max(1) as u32)
}

/// A partition's row as the balancing reads it.
struct PartitionRow {
    partition: u32,
    owner: Option<i32>,
    address: Option<String>,
    live: bool,
}

/// Every partition's owner, its address, and whether its lease is unexpired.
async fn read_partitions(
    client: &tokio_postgres::Client,
) -> Result<Vec<PartitionRow>, Unreachable> {
    let rows = client
        .query(
            "SELECT partition, owner, owner_address, coalesce(lease_until > now(), false)
             FROM bank_partitions ORDER BY partition",
            &[],
        )
        .await
        .map_err(|error| Unreachable(database_error("reading the partitions", &error)))?;
    Ok(rows
        .iter()
        .map(|row| PartitionRow {
            partition: row.get::<_, i32>(0) as u32,
            owner: row.get(1),
            address: row.get(2),
            live: row.get(3),
        })
        .collect())
}

/// The partitions this node may take, in the order to try them: its own (a restart), then those
/// nobody holds or whose lease ran out.
fn takeable(table: &[PartitionRow], node: i32) -> Vec<u32> {
    let own = table.iter().filter(|row| row.owner == Some(node));
    let free = table
        .iter()
        .filter(|row| row.owner != Some(node) && (row.owner.is_none() || !row.live));
    own.chain(free).map(|row| row.partition).collect()
}

/// Takes `partition` if it is free, expired or this node's own (raising its epoch, which fences
/// any earlier owner); `None` when another node holds it, or when its row is locked by a
/// transaction still open (an owner paused in the middle of a batch): never waiting for that
/// lock, which would stop this node's renewals too, it tries again at its next round.
async fn take_partition(
    client: &tokio_postgres::Client,
    config: &PostgresConfig,
    partition: u32,
) -> Result<Option<Held>, Unreachable> {
    let row = client
        .query_opt(
            "UPDATE bank_partitions
             SET owner = $1, owner_address = $2, epoch = epoch + 1,
                 lease_until = now() + make_interval(secs => $3)
             WHERE partition = (
                 SELECT partition FROM bank_partitions
                 WHERE partition = $4 AND (owner IS NULL OR owner = $1 OR lease_until < now())
                 FOR UPDATE SKIP LOCKED)
             RETURNING epoch, next_position",
            &[
                &config.node_id,
                &config.advertise,
                &config.lease_ttl.as_secs_f64(),
                &(partition as i32),
            ],
        )
        .await
        .map_err(|error| Unreachable(database_error("taking a partition", &error)))?;
    Ok(row.map(|row| Held {
        epoch: row.get(0),
        next_position: row.get(1),
    }))
}

/// Refuses a partition whose rows do not reach the position its row says comes next.
fn check_loaded(partition: u32, part: &Ledger, held: Held) -> Result<(), String> {
    if part.applied_lsn as i64 + 1 != held.next_position {
        return Err(format!(
            "partition {partition}: its journal ends at position {} but its next position is {}",
            part.applied_lsn, held.next_position
        ));
    }
    Ok(())
}

/// The writer: batches, fences, commits, applies, publishes; renews the leases and balances the
/// partitions.
struct Writer {
    shared: Arc<Shared>,
    pool: deadpool_postgres::Pool,
    config: PostgresConfig,
    /// The partitions held, with their epochs and next positions.
    held: BTreeMap<u32, Held>,
    /// The money each held partition accounts for in the committed state.
    money: BTreeMap<u32, MoneyTotals>,
    /// Partitions being handed over, with the last position appended before appends for them
    /// stopped: released once that is durable.
    releasing: Vec<(u32, Lsn)>,
    /// Positions of records dropped because their partition was lost, ascending.
    dropped: Vec<Lsn>,
    /// When the last renewal that got through was asked for.
    renewed_at: Instant,
    /// The last durable position published.
    durable: Lsn,
    /// The position of each held partition's last snapshot (or of its first row written since
    /// this node took it), to know when the next is due.
    snapshotted: BTreeMap<u32, i64>,
    /// Partitions whose compaction is running.
    compacting: Arc<Mutex<std::collections::BTreeSet<u32>>>,
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

/// The most dropped positions a node remembers; past it, the log fails closed.
const DROPPED_POSITIONS_MAX: usize = 1 << 20;

impl Writer {
    async fn run(mut self) {
        let tick_every = (self.config.lease_ttl / 3).min(TICK_EVERY_MAX);
        let mut ticks = tokio::time::interval(tick_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                return self.close().await;
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = self.shared.wake.notified() => {}
                    _ = ticks.tick() => {
                        if let Err(reason) = self.tick().await {
                            return self.fail(reason);
                        }
                    }
                }
            } else if let Err(reason) = self.write(batch).await {
                return self.fail(reason);
            }
            if let Err(reason) = self.finish_releases().await {
                return self.fail(reason);
            }
            // Serving past the lease is what a fence exists to stop: appends are refused after
            // `fresh_until`; renew in time even while batches keep coming.
            if self.renewed_at.elapsed() + tick_every >= self.config.lease_ttl * 2 / 3 {
                if let Err(reason) = self.tick().await {
                    return self.fail(reason);
                }
            }
        }
    }

    /// One round of the background work: the heartbeat, the renewal of every lease held
    /// (dropping those found taken over), the owners' table for redirects, and the balancing
    /// (taking a fair share of the partitions nobody serves, handing over those above it).
    async fn tick(&mut self) -> Result<(), String> {
        let asked_at = Instant::now();
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(error) => {
                self.unreachable(&error.to_string()).await;
                return Ok(());
            }
        };
        let live = match heartbeat(&client, &self.config).await {
            Ok(live) => live,
            Err(Unreachable(reason)) => {
                self.unreachable(&reason).await;
                return Ok(());
            }
        };
        let lost = match self.renew(&client).await {
            Ok(lost) => lost,
            Err(Unreachable(reason)) => {
                self.unreachable(&reason).await;
                return Ok(());
            }
        };
        self.renewed_at = asked_at;
        {
            let mut queue = self.shared.queue.lock();
            queue.fresh_until = asked_at + self.config.lease_ttl * 2 / 3;
        }
        self.suspend(None);
        if !lost.is_empty() {
            tracing::warn!(
                ?lost,
                "partitions taken over by another node; no longer serving them"
            );
            self.lose(&lost)?;
        }
        let table = match read_partitions(&client).await {
            Ok(table) => table,
            Err(Unreachable(reason)) => {
                tracing::warn!(%reason, "cannot read the partitions; balancing later");
                return Ok(());
            }
        };
        self.note_owners(&table);
        self.compact_when_due();
        if self.shared.hook.get().is_none() || self.shared.queue.lock().closed {
            return Ok(());
        }
        let share = fair_share(self.shared.partitions, live);
        let releasing: Vec<u32> = self.releasing.iter().map(|(p, _)| *p).collect();
        let keeping = self.held.len() - releasing.len();
        if keeping < share && releasing.is_empty() {
            for partition in takeable(&table, self.config.node_id) {
                if self.held.len() >= share {
                    break;
                }
                if !self.held.contains_key(&partition) {
                    self.adopt(&client, partition).await?;
                }
            }
        } else if keeping > share {
            let extra: Vec<u32> = self
                .held
                .keys()
                .rev()
                .filter(|partition| !releasing.contains(partition))
                .take(keeping - share)
                .copied()
                .collect();
            self.hand_over(&extra);
        }
        Ok(())
    }

    /// Starts a compaction (a snapshot of the rows written, which are then deleted) of a held
    /// partition that got `snapshot_every_records` rows since its last one, one at a time. It
    /// runs on a thread and a connection of its own, so decoding the rows never delays a batch:
    /// the rows it reads are durable and never change.
    fn compact_when_due(&mut self) {
        let every = self.config.snapshot_every_records.max(1) as i64;
        let mut compacting = self.compacting.lock();
        if !compacting.is_empty() {
            return;
        }
        let due = self.held.iter().find_map(|(partition, held)| {
            let durable = held.next_position - 1;
            let since = self.snapshotted.get(partition).copied().unwrap_or(0);
            (durable - since >= every).then_some((*partition, durable))
        });
        let Some((partition, durable)) = due else {
            return;
        };
        compacting.insert(partition);
        drop(compacting);
        self.snapshotted.insert(partition, durable);
        // A connection of its own, made (and its driver run) on the compaction's runtime.
        let (url, compacting) = (self.config.url.clone(), self.compacting.clone());
        let compact = move || {
            let compacted = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(async {
                    let client = connect(&url).await?;
                    compact_partition(&client, partition, durable).await
                }),
                Err(error) => Err(error.to_string()),
            };
            match compacted {
                Ok(Some(position)) => {
                    tracing::info!(partition, position, "partition snapshot written")
                }
                Ok(None) => {}
                Err(reason) => {
                    tracing::warn!(%reason, partition, "partition snapshot not written; trying later")
                }
            }
            compacting.lock().remove(&partition);
        };
        let spawned = std::thread::Builder::new()
            .name("postgres-snapshot".into())
            .spawn(compact);
        if let Err(error) = spawned {
            tracing::warn!(%error, partition, "cannot start a partition snapshot; trying later");
            self.compacting.lock().remove(&partition);
        }
    }

    /// PostgreSQL did not answer a renewal: log it; once the leases may be near their end the
    /// appends are refused already (`fresh_until`), and say so.
    async fn unreachable(&self, reason: &str) {
        tracing::warn!(%reason, "lease renewal failed; trying again");
        if Instant::now() >= self.shared.queue.lock().fresh_until {
            self.suspend(Some(&format!(
                "the lease could not be renewed in time: {reason}"
            )));
        }
        tokio::time::sleep(backoff(1)).await;
    }

    /// Renews the lease of every partition held; returns those found taken over.
    async fn renew(&self, client: &tokio_postgres::Client) -> Result<Vec<u32>, Unreachable> {
        let partitions: Vec<i32> = self
            .held
            .keys()
            .map(|partition| *partition as i32)
            .collect();
        let epochs: Vec<i64> = self.held.values().map(|held| held.epoch).collect();
        let rows = client
            .query(
                "UPDATE bank_partitions AS p
                 SET lease_until = now() + make_interval(secs => $2)
                 FROM unnest($3::int[], $4::bigint[]) AS h(partition, epoch)
                 WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1
                 RETURNING p.partition",
                &[
                    &self.config.node_id,
                    &self.config.lease_ttl.as_secs_f64(),
                    &partitions,
                    &epochs,
                ],
            )
            .await
            .map_err(|error| Unreachable(database_error("renewing the lease", &error)))?;
        let renewed: Vec<u32> = rows.iter().map(|row| row.get::<_, i32>(0) as u32).collect();
        Ok(self
            .held
            .keys()
            .filter(|partition| !renewed.contains(partition))
            .copied()
            .collect())
    }

    /// Notes who serves each partition this node does not, for redirects.
    fn note_owners(&self, table: &[PartitionRow]) {
        let mut owners = self.shared.owners.write();
        for row in table {
            let Some(slot) = owners.get_mut(row.partition as usize) else {
                continue;
            };
            if self.held.contains_key(&row.partition) {
                continue;
            }
            *slot = match (&row.address, row.live, row.owner) {
                (Some(address), true, Some(owner)) if owner != self.config.node_id => {
                    Placement::Elsewhere(address.as_str().into())
                }
                _ => Placement::Nowhere,
            };
        }
    }

    /// Takes `partition` over and serves it: its state from PostgreSQL into the committed state,
    /// the server told, then appends taken.
    async fn adopt(
        &mut self,
        client: &tokio_postgres::Client,
        partition: u32,
    ) -> Result<(), String> {
        let taken = match take_partition(client, &self.config, partition).await {
            Ok(Some(taken)) => taken,
            Ok(None) => return Ok(()),
            Err(Unreachable(reason)) => {
                tracing::warn!(%reason, partition, "cannot take the partition; trying later");
                return Ok(());
            }
        };
        let part = match load_partition(client, partition).await {
            Ok(part) => part,
            Err(reason) => {
                tracing::warn!(%reason, partition, "cannot read the partition; handing it back");
                self.release_rows(client, &[(partition, taken.epoch)]).await;
                return Ok(());
            }
        };
        check_loaded(partition, &part, taken)?;
        let money = MoneyTotals::of(&part);
        let accounts = part.accounts.len();
        self.shared
            .committed
            .absorb(part)
            .map_err(|error| format!("partition {partition}: {error}"))?;
        let partitions = self.shared.partitions;
        if let Some(hook) = self.shared.hook.get() {
            hook.adopted(&move |card| partition_of(card, partitions) == partition);
        }
        self.held.insert(partition, taken);
        self.money.insert(partition, money);
        self.snapshotted.insert(partition, 0);
        self.shared.owners.write()[partition as usize] = Placement::Here;
        self.shared.queue.lock().serving[partition as usize] = true;
        tracing::info!(
            partition,
            accounts,
            epoch = taken.epoch,
            "serving a partition taken over"
        );
        Ok(())
    }

    /// Starts handing `partitions` over: appends for them stop now; once what was appended
    /// before is durable, they are released ([`Writer::finish_releases`]).
    fn hand_over(&mut self, partitions: &[u32]) {
        let mark = {
            let mut queue = self.shared.queue.lock();
            for partition in partitions {
                queue.serving[*partition as usize] = false;
            }
            queue.next_lsn - 1
        };
        let mut owners = self.shared.owners.write();
        for partition in partitions {
            owners[*partition as usize] = Placement::Nowhere;
            self.releasing.push((*partition, mark));
        }
        tracing::info!(
            ?partitions,
            "handing partitions over to balance the cluster"
        );
    }

    /// Releases the partitions being handed over whose records are all durable.
    async fn finish_releases(&mut self) -> Result<(), String> {
        // Records of theirs are durable, or dropped (when the last ones were of a lost partition).
        let durable = self.durable.max(self.dropped.last().copied().unwrap_or(0));
        let ready: Vec<u32> = self
            .releasing
            .iter()
            .filter(|(_, mark)| *mark <= durable)
            .map(|(partition, _)| *partition)
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let rows: Vec<(u32, i64)> = ready
            .iter()
            .filter_map(|partition| {
                self.held
                    .get(partition)
                    .map(|held| (*partition, held.epoch))
            })
            .collect();
        match self.pool.get().await {
            Ok(client) => self.release_rows(&client, &rows).await,
            Err(error) => {
                tracing::warn!(%error, "cannot hand the partitions over yet");
                return Ok(());
            }
        }
        self.releasing
            .retain(|(partition, _)| !ready.contains(partition));
        self.forget(&ready)
    }

    /// Clears this node's ownership of `rows` (partition, epoch), where it still holds them.
    async fn release_rows(&self, client: &tokio_postgres::Client, rows: &[(u32, i64)]) {
        let partitions: Vec<i32> = rows
            .iter()
            .map(|(partition, _)| *partition as i32)
            .collect();
        let epochs: Vec<i64> = rows.iter().map(|(_, epoch)| *epoch).collect();
        let released = client
            .execute(
                "UPDATE bank_partitions AS p
                 SET owner = NULL, owner_address = NULL, lease_until = NULL
                 FROM unnest($2::int[], $3::bigint[]) AS h(partition, epoch)
                 WHERE p.partition = h.partition AND p.epoch = h.epoch AND p.owner = $1",
                &[&self.config.node_id, &partitions, &epochs],
            )
            .await;
        match released {
            Ok(count) => tracing::info!(partitions = count, "partitions handed back"),
            Err(error) => tracing::warn!(
                reason = %database_error("releasing the partitions", &error),
                "partitions not handed back; their lease runs out by itself"
            ),
        }
    }

    /// Stops serving `lost` at once (another node took them): appends for them are refused, the
    /// records of theirs still waiting are dropped (their waiters are told the partition moved),
    /// and their state is forgotten.
    fn lose(&mut self, lost: &[u32]) -> Result<(), String> {
        let partitions = self.shared.partitions;
        let dropped: Vec<Lsn> = {
            let mut queue = self.shared.queue.lock();
            for partition in lost {
                queue.serving[*partition as usize] = false;
            }
            let mut dropped = Vec::new();
            queue.records.retain(|(lsn, record)| {
                let keep = !lost.contains(&partition_of(record.card, partitions));
                if !keep {
                    dropped.push(*lsn);
                }
                keep
            });
            dropped
        };
        self.drop_positions(dropped)?;
        self.releasing
            .retain(|(partition, _)| !lost.contains(partition));
        self.forget(lost)
    }

    /// Remembers `dropped` positions and publishes them, so their waiters are answered.
    fn drop_positions(&mut self, dropped: Vec<Lsn>) -> Result<(), String> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.dropped.extend(dropped);
        self.dropped.sort_unstable();
        if self.dropped.len() > DROPPED_POSITIONS_MAX {
            return Err(format!(
                "more than {DROPPED_POSITIONS_MAX} records of lost partitions"
            ));
        }
        self.publish();
        Ok(())
    }

    /// Publishes the durable position (and the dropped ones).
    fn publish(&self) {
        let progress = if self.dropped.is_empty() {
            Progress::Durable(self.durable)
        } else {
            Progress::DurableExcept {
                durable: self.durable,
                dropped: self.dropped.as_slice().into(),
            }
        };
        self.shared.progress.send_replace(progress);
    }

    /// Forgets partitions no longer served here: the server is told, then the committed state
    /// drops their accounts and their money.
    fn forget(&mut self, partitions: &[u32]) -> Result<(), String> {
        let count = self.shared.partitions;
        for partition in partitions {
            let partition = *partition;
            self.held.remove(&partition);
            self.snapshotted.remove(&partition);
            let money = self.money.remove(&partition).unwrap_or_default();
            let is_member = move |card| partition_of(card, count) == partition;
            if let Some(hook) = self.shared.hook.get() {
                hook.released(&is_member);
            }
            self.shared
                .committed
                .give_up(&is_member, money)
                .map_err(|error| format!("partition {partition}: {error}"))?;
            let mut owners = self.shared.owners.write();
            if owners[partition as usize] == Placement::Here {
                owners[partition as usize] = Placement::Nowhere;
            }
        }
        Ok(())
    }

    /// Hands every partition back on a graceful stop, everything written: another node takes
    /// them at its next round instead of waiting for the leases to run out. Where this node still
    /// holds them at its epoch; a failure is logged (the leases then run out by themselves).
    async fn close(&self) {
        let rows: Vec<(u32, i64)> = self
            .held
            .iter()
            .map(|(partition, held)| (*partition, held.epoch))
            .collect();
        match self.pool.get().await {
            Ok(client) => {
                self.release_rows(&client, &rows).await;
                let _ = client
                    .execute(
                        "DELETE FROM bank_nodes WHERE node = $1",
                        &[&self.config.node_id],
                    )
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, "partitions not handed back; their lease runs out by itself")
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

    /// Makes `batch` durable (one transaction), then applies it and publishes its progress.
    /// Records of a partition found taken over meanwhile are dropped, never written.
    async fn write(&mut self, mut batch: Vec<(Lsn, Record)>) -> Result<(), String> {
        let partitions = self.shared.partitions;
        let Some(last) = batch.last().map(|(lsn, _)| *lsn) else {
            return Ok(());
        };
        let mut attempt: u32 = 0;
        let next = loop {
            attempt = attempt.saturating_add(1);
            let mut rows: Vec<(i32, i64, Vec<u8>)> = Vec::with_capacity(batch.len());
            let mut next = self.held.clone();
            for (_, record) in &batch {
                let partition = partition_of(record.card, partitions);
                let held = next
                    .get_mut(&partition)
                    .ok_or_else(|| format!("partition {partition} is not held by this node"))?;
                let mut body = Vec::with_capacity(96);
                crate::journal::format::encode_record_body(record, &mut body)
                    .map_err(|error| error.to_string())?;
                rows.push((partition as i32, held.next_position, body));
                held.next_position += 1;
            }
            match self.commit(&rows, &next).await? {
                Committed::Yes => break next,
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
                Committed::Fenced(reason) => {
                    let lost = match self.pool.get().await {
                        Ok(client) => self.renew(&client).await,
                        Err(error) => Err(Unreachable(error.to_string())),
                    };
                    match lost {
                        // The lease had only run out, and nobody took the partitions meanwhile.
                        Ok(lost) if lost.is_empty() => {
                            tracing::info!(%reason, "lease renewed after it ran out; writing on")
                        }
                        Ok(lost) => {
                            tracing::warn!(%reason, ?lost, "partitions taken over; dropping their records");
                            let mut dropped = Vec::new();
                            batch.retain(|(lsn, record)| {
                                let keep = !lost.contains(&partition_of(record.card, partitions));
                                if !keep {
                                    dropped.push(*lsn);
                                }
                                keep
                            });
                            self.lose(&lost)?;
                            self.drop_positions(dropped)?;
                        }
                        Err(Unreachable(unreachable)) => {
                            self.suspend(Some(&unreachable));
                            tokio::time::sleep(backoff(attempt)).await;
                        }
                    }
                    if batch.is_empty() {
                        break self.held.clone();
                    }
                }
            }
        };
        self.suspend(None);
        self.held = next;
        // Written after the lease stopped being surely fresh (PostgreSQL was away): renew it
        // before the batch's answers are given, which are given only while it is fresh. A
        // partition found lost meanwhile is let go after its records are applied (they were
        // written under the fence, so they are its new owner's too).
        let lost = if Instant::now() >= self.shared.queue.lock().fresh_until {
            self.renew_now().await
        } else {
            Vec::new()
        };
        let money = &mut self.money;
        let applied = self
            .shared
            .committed
            .apply_batch_observed(&batch, &mut |record, moved| {
                if let Some(totals) = money.get_mut(&partition_of(record.card, partitions)) {
                    totals.add(moved);
                }
            });
        if let Err(error) = applied {
            return Err(format!("a durable record does not apply: {error}"));
        }
        self.shared.committed.skip_to(last);
        self.durable = last;
        self.publish();
        if !lost.is_empty() {
            self.lose(&lost)?;
        }
        Ok(())
    }

    /// Renews the leases now, outside a round: on success the appends and answers are taken
    /// again; returns the partitions found taken over (none when PostgreSQL did not answer).
    async fn renew_now(&mut self) -> Vec<u32> {
        let asked_at = Instant::now();
        let renewed = match self.pool.get().await {
            Ok(client) => self.renew(&client).await,
            Err(error) => Err(Unreachable(error.to_string())),
        };
        match renewed {
            Ok(lost) => {
                self.renewed_at = asked_at;
                self.shared.queue.lock().fresh_until = asked_at + self.config.lease_ttl * 2 / 3;
                lost
            }
            Err(Unreachable(reason)) => {
                tracing::warn!(%reason, "lease renewal failed; trying again");
                Vec::new()
            }
        }
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
                    // Another writer's record at that position: this batch was not written
                    // there, and the fence will say the partition is lost.
                    return Ok(Some(false));
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

/// A failed statement: a transient failure ([`is_transient`]) or a lost connection is tried
/// again, anything else fails the log.
fn retry_or_fail(what: &str, error: &tokio_postgres::Error) -> Result<Committed, String> {
    match error.code() {
        Some(code) if is_transient(code) => Ok(Committed::Retry(database_error(what, error))),
        Some(_) => Err(database_error(what, error)),
        None => Ok(Committed::Retry(database_error(what, error))),
    }
}

/// Errors after which the same batch is simply tried again: a serialization failure, and the
/// database ending the session (its idle-in-transaction timeout after this node was paused, an
/// administrator, a shutdown, a lost connection). The fence decides whether it still may write.
fn is_transient(code: &SqlState) -> bool {
    *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT
        || *code == SqlState::ADMIN_SHUTDOWN
        || *code == SqlState::CRASH_SHUTDOWN
        || *code == SqlState::CANNOT_CONNECT_NOW
        || code.code().starts_with("08")
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
        if Instant::now() >= queue.fresh_until {
            return Err(AppendError::Unavailable(
                "the lease could not be renewed in time".into(),
            ));
        }
        let partitions = self.shared.partitions;
        if records
            .iter()
            .any(|record| !queue.serving[partition_of(record.card, partitions) as usize])
        {
            return Err(AppendError::Unavailable(PARTITION_MOVED.into()));
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

    fn placement(&self, card: Card) -> Placement {
        let partition = partition_of(card, self.shared.partitions) as usize;
        self.shared.owners.read()[partition].clone()
    }

    fn is_partitioned(&self) -> bool {
        true
    }

    fn still_serves(&self, card: Card) -> bool {
        let queue = self.shared.queue.lock();
        queue.failed.is_none()
            && Instant::now() < queue.fresh_until
            && queue.serving[partition_of(card, self.shared.partitions) as usize]
    }

    fn set_placement_hook(&self, hook: Arc<dyn PlacementHook>) {
        let _ = self.shared.hook.set(hook);
        self.shared.wake.notify_one();
    }
}
