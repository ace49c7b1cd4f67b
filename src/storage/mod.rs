//! Storage: where the bank's changes become durable, apart from how.
//!
//! Two small jobs meet here. A [`Log`] makes records durable in order: it hands out consecutive
//! positions, reports its progress, and fails closed. The [`CommittedState`] is the ledger as of
//! the last durable position: the state account actors load from and snapshots are taken from.
//! A log calls [`CommittedState::apply_batch`] for each batch once it is durable and *before* it
//! publishes the batch's progress, so whoever has waited for a position reads its effects.
//!
//! [`Storage`] joins the two; it is what the server holds. The file journal
//! ([`crate::journal::FileJournal`], opened by [`Storage::open_files`]) is one log;
//! [`memory::MemoryLog`] ([`Storage::in_memory`]) keeps records in memory for fast tests. A new
//! backend implements [`Log`], applies each durable batch to the committed state before publishing
//! its progress, and passes the contract test in `contract.rs`.

pub mod memory;
pub mod pg_partition;
pub mod postgres;

#[cfg(test)]
mod contract;

use crate::journal::{JournalConfig, JournalError};
use crate::ledger::{Account, Ledger, LedgerError, Lsn, Memory, Record};
use crate::protocol::Card;
use parking_lot::RwLock;
use std::sync::Arc;
use tokio::sync::watch;

/// Why a record could not be appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The queue is full; nothing was queued. Answer `busy`.
    #[error("the journal queue is full")]
    Busy,
    /// The log has failed closed (or is closing); nothing will be acknowledged again.
    #[error("the journal is unavailable: {0}")]
    Unavailable(Arc<str>),
}

/// How far a log has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Everything up to and including this position is durable and applied.
    Durable(Lsn),
    /// Everything up to and including `durable` is durable and applied, except the positions in
    /// `dropped` (sorted): records of partitions this node lost to another before they were
    /// written, which never will be (a waiter for one is told [`PARTITION_MOVED`]).
    DurableExcept {
        /// The last durable position.
        durable: Lsn,
        /// Positions that will never be durable, ascending.
        dropped: Arc<[Lsn]>,
    },
    /// The log failed closed for this reason.
    Failed(Arc<str>),
}

impl Progress {
    /// Whether a wait for `lsn` is over: `Ok` once it is durable, `Err` once the log has failed,
    /// `None` while it is neither.
    pub fn reached(&self, lsn: Lsn) -> Option<Result<(), Arc<str>>> {
        match self {
            Progress::Durable(durable) if *durable >= lsn => Some(Ok(())),
            Progress::Durable(_) => None,
            Progress::DurableExcept { dropped, .. } if dropped.binary_search(&lsn).is_ok() => {
                Some(Err(PARTITION_MOVED.into()))
            }
            Progress::DurableExcept { durable, .. } if *durable >= lsn => Some(Ok(())),
            Progress::DurableExcept { .. } => None,
            Progress::Failed(reason) => Some(Err(reason.clone())),
        }
    }

    /// The last durable position, or 0 after a failure.
    pub fn durable(&self) -> Lsn {
        match self {
            Progress::Durable(durable) | Progress::DurableExcept { durable, .. } => *durable,
            Progress::Failed(_) => 0,
        }
    }
}

/// What a wait for a record is told when the record's partition went to another node before
/// the record was written: it never will be, and the request may be repeated there.
pub const PARTITION_MOVED: &str = "the account's partition moved to another node";

/// Where the partition of an account is served, as this node knows it (cluster mode; a single
/// node serves every account [`Placement::Here`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// By this node.
    Here,
    /// By the node reachable at this advertised address.
    Elsewhere(Arc<str>),
    /// By no node right now (its owner died and nobody has taken it over yet, or it is being
    /// handed over): try again shortly.
    Nowhere,
}

/// What a log that serves only some partitions tells the server when that set changes. Called
/// on the log's own thread, never concurrently with itself.
pub trait PlacementHook: Send + Sync {
    /// The accounts `is_member` names are served here from now on: the committed state has them
    /// already; requests are routed here only after this returns (so the server's working state
    /// can take them first).
    fn adopted(&self, is_member: &(dyn Fn(Card) -> bool + Sync));

    /// The accounts `is_member` names are no longer served here: appends for them are refused
    /// already and every one appended before is settled; the committed state forgets them right
    /// after this returns.
    fn released(&self, is_member: &(dyn Fn(Card) -> bool + Sync));
}

/// What a wait reports when the log's progress is gone without having failed (it was dropped).
pub const WRITER_STOPPED: &str = "the journal writer has stopped";

/// What a log refuses appends with once [`Log::close`] was called.
pub const SHUTTING_DOWN: &str = "the journal is shutting down";

/// A durable, ordered log of records: the one job a storage backend must do.
pub trait Log: Send + Sync {
    /// Appends `records` together and returns the last one's position: all of them or none
    /// (`Busy` when they do not all fit in the queue). Positions are consecutive, following
    /// [`Log::head`]; the records become durable together. Never blocks on I/O.
    fn append_batch(&self, records: Vec<Record>) -> Result<Lsn, AppendError>;

    /// The last position handed out: once it is durable, so is everything appended before.
    fn head(&self) -> Lsn;

    /// The log's progress as it changes: each durable batch (or the failure) is one change. A
    /// batch's progress is published only after it was applied to the committed state.
    fn progress(&self) -> watch::Receiver<Progress>;

    /// The reason the log failed closed, if it did.
    fn failure(&self) -> Option<Arc<str>>;

    /// Makes everything appended durable and stops; later appends are refused.
    fn close(&self);

    /// What recovery cut when the log was opened, in words, if anything.
    fn cut(&self) -> Option<String> {
        None
    }

    /// Where `card`'s account is served: here, unless the log serves only some partitions.
    fn placement(&self, _card: Card) -> Placement {
        Placement::Here
    }

    /// Whether accounts are spread over nodes (cluster mode), so some may be served elsewhere.
    fn is_partitioned(&self) -> bool {
        false
    }

    /// Whether this node serves `card`'s account right now, surely: its partition held and not
    /// being handed over, its lease unexpired by this node's own clock. An answer decided before
    /// this holds was decided on a state no other node could have changed.
    fn still_serves(&self, _card: Card) -> bool {
        true
    }

    /// Tells the log whom to tell when the partitions it serves change; a log that serves every
    /// account ignores it. A log that does change them does so only once this was called.
    fn set_placement_hook(&self, _hook: Arc<dyn PlacementHook>) {}
}

/// The money a ledger (or a part of it) counts: what came in, went out, was sent and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MoneyTotals {
    /// Opening balances and deposits.
    pub money_in: u128,
    /// Withdrawals and completed holds.
    pub money_out: u128,
    /// Transfers sent.
    pub money_sent: u128,
    /// Transfers received (or given back).
    pub money_received: u128,
}

impl MoneyTotals {
    /// The totals `ledger` counts.
    pub fn of(ledger: &Ledger) -> MoneyTotals {
        MoneyTotals {
            money_in: ledger.money_in,
            money_out: ledger.money_out,
            money_sent: ledger.money_sent,
            money_received: ledger.money_received,
        }
    }

    /// What was added since `before` (totals only grow).
    pub fn since(&self, before: &MoneyTotals) -> MoneyTotals {
        MoneyTotals {
            money_in: self.money_in - before.money_in,
            money_out: self.money_out - before.money_out,
            money_sent: self.money_sent - before.money_sent,
            money_received: self.money_received - before.money_received,
        }
    }

    /// Adds `more`.
    pub fn add(&mut self, more: MoneyTotals) {
        self.money_in += more.money_in;
        self.money_out += more.money_out;
        self.money_sent += more.money_sent;
        self.money_received += more.money_received;
    }
}

/// The committed state: the ledger as of the last durable position. A [`Log`] is its only
/// writer; everyone else reads.
#[derive(Default)]
pub struct CommittedState {
    /// The ledger, behind a lock that readers share.
    ledger: RwLock<Ledger>,
}

impl CommittedState {
    /// The committed state starting from `ledger` (what recovery rebuilt).
    pub fn new(ledger: Ledger) -> Self {
        CommittedState {
            ledger: RwLock::new(ledger),
        }
    }

    /// Applies one durable batch, in order. Called by the log only, before it publishes the
    /// batch's progress; an error means a durable record does not apply (a bug or corruption),
    /// and the log must fail closed.
    pub fn apply_batch(&self, batch: &[(Lsn, Record)]) -> Result<(), LedgerError> {
        let mut ledger = self.ledger.write();
        for (lsn, record) in batch {
            ledger.apply(*lsn, record)?;
        }
        Ok(())
    }

    /// Applies one durable batch of a log that may have dropped positions in between (records
    /// of a partition lost before they were written: the log publishes them as dropped), and
    /// tells `observe` the money each record moved. Called by the log only, as `apply_batch`.
    pub fn apply_batch_observed(
        &self,
        batch: &[(Lsn, Record)],
        observe: &mut dyn FnMut(&Record, MoneyTotals),
    ) -> Result<(), LedgerError> {
        let mut ledger = self.ledger.write();
        for (lsn, record) in batch {
            if *lsn > ledger.applied_lsn + 1 {
                ledger.applied_lsn = lsn - 1;
            }
            let before = MoneyTotals::of(&ledger);
            ledger.apply(*lsn, record)?;
            observe(record, MoneyTotals::of(&ledger).since(&before));
        }
        Ok(())
    }

    /// Moves the applied position past `lsn` when the records up to it were dropped, so the
    /// next batch applies in order.
    pub fn skip_to(&self, lsn: Lsn) {
        let mut ledger = self.ledger.write();
        ledger.applied_lsn = ledger.applied_lsn.max(lsn);
    }

    /// Takes in a partition's ledger, rebuilt from that partition's records alone (cluster mode):
    /// its accounts, its clients' windows, its money.
    pub fn absorb(&self, part: Ledger) -> Result<(), LedgerError> {
        self.ledger.write().absorb(part)
    }

    /// Forgets the accounts `is_member` names and the windows of their principals, and the money
    /// `money` says they account for (cluster mode: a partition handed to another node).
    pub fn give_up(
        &self,
        is_member: &dyn Fn(Card) -> bool,
        money: MoneyTotals,
    ) -> Result<(), LedgerError> {
        let mut ledger = self.ledger.write();
        let mut part = Ledger {
            money_in: money.money_in,
            money_out: money.money_out,
            money_sent: money.money_sent,
            money_received: money.money_received,
            ..Ledger::default()
        };
        for (card, account) in ledger.accounts.iter() {
            if is_member(*card) {
                part.accounts.insert(*card, account.clone());
            }
        }
        ledger.give_up(&part)
    }

    /// The last position applied.
    pub fn applied_lsn(&self) -> Lsn {
        self.ledger.read().applied_lsn
    }

    /// Forgets clients with no completed request since `cutoff_unix_ms` (before a snapshot);
    /// returns how many. Holds the write lock only for the forgetting, never for a copy.
    pub fn forget_clients_idle_since(&self, cutoff_unix_ms: u64) -> usize {
        self.ledger
            .write()
            .forget_clients_idle_since(cutoff_unix_ms)
    }

    /// A copy of the ledger, for a snapshot; taken under the read lock, so readers go on.
    pub fn image(&self) -> Ledger {
        self.ledger.read().clone()
    }

    /// The committed state of one account (what has reached the disk).
    pub fn committed_account(&self, card: Card) -> Option<Account> {
        self.ledger.read().accounts.get(&card).cloned()
    }

    /// Reads one field of a committed account without copying the rest.
    pub fn read_committed_account<T>(
        &self,
        card: Card,
        read: impl FnOnce(&Account) -> T,
    ) -> Option<T> {
        self.ledger.read().accounts.get(&card).map(read)
    }

    /// True when the committed ledger has this card.
    pub fn committed_account_exists(&self, card: Card) -> bool {
        self.ledger.read().accounts.contains_key(&card)
    }

    /// A copy of every committed client window, to seed the working memory of completed requests.
    pub fn committed_clients(&self) -> Memory {
        self.ledger.read().clients.clone()
    }

    /// Runs `read` on the committed ledger (audits, tests).
    pub fn with_committed<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        read(&self.ledger.read())
    }
}

/// What statistics the storage keeps, for metrics and the benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// The last durable position.
    pub durable_lsn: Lsn,
    /// The last position handed out.
    pub head_lsn: Lsn,
}

/// The name the journal's callers know the statistics by.
pub type JournalStats = StorageStats;

/// A log and the committed state it writes: what the server holds. Cheap to clone; every clone
/// is the same storage.
#[derive(Clone)]
pub struct Storage {
    /// Where records become durable.
    log: Arc<dyn Log>,
    /// The state as of the last durable position, which `log` applies to.
    committed: Arc<CommittedState>,
}

impl Storage {
    /// Joins `log` with the committed state it applies its durable batches to.
    pub fn new(log: Arc<dyn Log>, committed: Arc<CommittedState>) -> Self {
        Storage { log, committed }
    }

    /// Connects to the cluster's PostgreSQL, takes the partitions, rebuilds the committed state
    /// from the journal rows and starts writing there ([`postgres::PostgresLog`]).
    pub fn open_postgres(config: postgres::PostgresConfig) -> Result<Storage, String> {
        let (log, committed) = postgres::PostgresLog::open(config)?;
        Ok(Storage::new(log, committed))
    }

    /// Recovers the data directory and starts the file journal on it.
    pub fn open_files(config: JournalConfig) -> Result<Storage, JournalError> {
        let (log, committed) = crate::journal::FileJournal::open(config)?;
        Ok(Storage::new(log, committed))
    }

    /// The name the file journal's callers know [`Storage::open_files`] by.
    pub fn open(config: JournalConfig) -> Result<Storage, JournalError> {
        Storage::open_files(config)
    }

    /// Storage in memory, starting from `ledger`, with the file journal's default queue limit.
    pub fn in_memory(ledger: Ledger) -> Storage {
        let queue_records_max = JournalConfig::QUEUE_RECORDS_MAX_DEFAULT;
        let (log, committed) = memory::MemoryLog::open(ledger, queue_records_max);
        Storage::new(log, committed)
    }

    /// Appends `record` and returns its position. Never blocks on I/O.
    pub fn append(&self, record: Record) -> Result<Lsn, AppendError> {
        self.log.append_batch(vec![record])
    }

    /// Appends `records` together and returns the last one's position: all of them or none. They
    /// become durable together (the two legs of a transfer, or a test that needs a batch of a
    /// known shape).
    pub fn append_batch(&self, records: Vec<Record>) -> Result<Lsn, AppendError> {
        self.log.append_batch(records)
    }

    /// The last position handed out: once it is durable, so is everything appended before.
    pub fn head(&self) -> Lsn {
        self.log.head()
    }

    /// Waits until `lsn` is durable and applied to the committed state.
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), Arc<str>> {
        let mut progress = self.log.progress();
        let reached = progress
            .wait_for(|progress| progress.reached(lsn).is_some())
            .await;
        match reached {
            Ok(progress) => progress.reached(lsn).unwrap_or(Ok(())),
            Err(_) => Err(WRITER_STOPPED.into()),
        }
    }

    /// Waits until everything appended so far is durable.
    pub async fn wait_all_durable(&self) -> Result<(), Arc<str>> {
        self.wait_durable(self.head()).await
    }

    /// The log's progress as it changes. [`Storage::wait_durable`] is the simple way to wait;
    /// this lets a caller relay one notification to many waiters of its own.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.log.progress()
    }

    /// Identifies this storage (all clones of a handle share it) while it exists.
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.committed) as usize
    }

    /// The committed state itself, for a caller that wants to hold it apart from the log.
    pub fn committed(&self) -> &Arc<CommittedState> {
        &self.committed
    }

    /// The committed state of one account (what has become durable).
    pub fn committed_account(&self, card: Card) -> Option<Account> {
        self.committed.committed_account(card)
    }

    /// Reads one field of a committed account without copying the rest.
    pub fn read_committed_account<T>(
        &self,
        card: Card,
        read: impl FnOnce(&Account) -> T,
    ) -> Option<T> {
        self.committed.read_committed_account(card, read)
    }

    /// True when the committed ledger has this card.
    pub fn committed_account_exists(&self, card: Card) -> bool {
        self.committed.committed_account_exists(card)
    }

    /// A copy of every committed client window, to seed the working memory of completed requests.
    pub fn committed_clients(&self) -> Memory {
        self.committed.committed_clients()
    }

    /// Runs `read` on the committed ledger (audits, tests).
    pub fn with_committed<T>(&self, read: impl FnOnce(&Ledger) -> T) -> T {
        self.committed.with_committed(read)
    }

    /// Positions for metrics.
    pub fn stats(&self) -> StorageStats {
        let durable_lsn = self.log.progress().borrow().durable();
        StorageStats {
            durable_lsn,
            head_lsn: self.head(),
        }
    }

    /// What recovery cut when the storage was opened, in words (file, offset, what was
    /// dropped), if anything.
    pub fn cut(&self) -> Option<String> {
        self.log.cut()
    }

    /// The reason the storage failed closed, if it did.
    pub fn failure(&self) -> Option<Arc<str>> {
        self.log.failure()
    }

    /// Where `card`'s account is served (always here, but in cluster mode).
    pub fn placement(&self, card: Card) -> Placement {
        self.log.placement(card)
    }

    /// Whether accounts are spread over nodes (cluster mode).
    pub fn is_partitioned(&self) -> bool {
        self.log.is_partitioned()
    }

    /// Whether this node surely serves `card`'s account right now ([`Log::still_serves`]).
    pub fn still_serves(&self, card: Card) -> bool {
        self.log.still_serves(card)
    }

    /// Tells the log whom to tell when the partitions it serves change (cluster mode).
    pub fn set_placement_hook(&self, hook: Arc<dyn PlacementHook>) {
        self.log.set_placement_hook(hook)
    }

    /// Makes everything appended durable and stops the log. Later appends are refused.
    pub fn close(&self) {
        self.log.close()
    }
}
