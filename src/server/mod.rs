//! The server: configuration, the shared [`Bank`] context, and start-up and shutdown.
//!
//! Actors, in the order a request meets them:
//! - [`gateway::Gateway`] owns the listener and starts one [`session::Session`] per connection,
//!   spreading them over the arbiters, up to [`Limits::connections_max`].
//! - [`session::Session`] decodes frames, holds the connection's verified card, answers the
//!   utilities itself and sends account operations to the account actors.
//! - [`account::AccountActor`], one per card, decides every change, under actix's supervisor.

pub mod account;
mod connection;
pub mod door;
mod durable;
pub mod gateway;
pub mod pins;
pub mod service;
pub mod session;

use crate::faults::{FaultPlan, Faults};
use crate::journal::{Journal, JournalConfig, JournalError, RecoveryMode};
use crate::ledger::{self, Clients, Event, Fingerprint, Outcome, Principal};
use crate::model::{Amount, Card, Code, RequestId};
use crate::pin::{self, OperatorToken, PinHashCost, PinKey};
use crate::ratelimit::{Clock, PeerBuckets, RateLimit, WhenFull};
use account::{AccountActor, Decide};
use actix::prelude::*;
use dashmap::DashMap;
use pins::{PinKeySource, Pins};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{oneshot, watch};

/// The limits the server enforces. Every queue and count has one.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; more are refused with a `Goodbye`.
    pub connections_max: usize,
    /// Requests one connection may have unanswered; more are answered `busy`.
    pub requests_in_flight_max: usize,
    /// Largest frame body accepted, in bytes.
    pub frame_bytes_max: usize,
    /// Messages an account actor's mailbox holds; when full, requests are answered `busy`.
    pub mailbox_capacity: usize,
    /// An account actor with no request for this long stops (its state stays in the ledger).
    pub account_idle: Duration,
    /// A frame whose first byte has arrived must be complete within this time, or the connection
    /// is closed (a slow sender cannot hold a connection and its buffer forever).
    pub frame_read_timeout: Duration,
    /// A connection with no verified card that sends nothing for this long is closed.
    pub login_idle_timeout: Duration,
    /// Replies (frames) a connection may have queued for writing. The session stops reading
    /// requests while the queue lacks room for a full window of replies.
    pub write_queue_frames: usize,
    /// A client that does not take its replies for this long (writes stall, or the queue stays
    /// full) is disconnected.
    pub write_timeout: Duration,
    /// Failed operator-token attempts each peer address may make (a burst, then a rate); beyond
    /// them its operator requests are answered `busy` unchecked.
    pub operator_failures: RateLimit,
    /// Failed PIN checks one connection may make; beyond them PIN checks are answered `busy`.
    pub pin_failures_per_connection: RateLimit,
    /// Failed PIN checks one peer address may make over all its connections.
    pub pin_failures_per_peer: RateLimit,
    /// Argon2id checks (of the first release's hashes) waiting for the PIN pool; more are
    /// answered `busy`.
    pub pin_check_queue_max: usize,
    /// Account changes being worked on that a retry may join (see [`Bank::submit`]). When this
    /// many are open, a new change is still accepted but cannot be joined: a retry of it takes
    /// the ordinary path through the account actor.
    pub requests_joinable_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 10_000,
            requests_in_flight_max: 64,
            frame_bytes_max: crate::codec::FRAME_BYTES_MAX_DEFAULT,
            mailbox_capacity: 1024,
            account_idle: Duration::from_secs(60),
            frame_read_timeout: Duration::from_secs(5),
            login_idle_timeout: Duration::from_secs(60),
            write_queue_frames: 256,
            write_timeout: Duration::from_secs(10),
            operator_failures: crate::operator::OPERATOR_FAILURES_DEFAULT,
            pin_failures_per_connection: pins::PIN_FAILURES_PER_CONNECTION_DEFAULT,
            pin_failures_per_peer: pins::PIN_FAILURES_PER_PEER_DEFAULT,
            pin_check_queue_max: pins::PIN_CHECK_QUEUE_MAX_DEFAULT,
            requests_joinable_max: REQUESTS_JOINABLE_MAX_DEFAULT,
        }
    }
}

/// Default of [`Limits::requests_joinable_max`]: as many changes as 1 024 connections can have in
/// flight at the default in-flight limit. An entry takes about 200 bytes, so at most ~13 MiB.
pub const REQUESTS_JOINABLE_MAX_DEFAULT: usize = 65_536;

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the journal and snapshots live; created if missing.
    pub data_dir: PathBuf,
    /// The operator token; without one, creating accounts is disabled.
    pub operator_token: Option<String>,
    /// Open the lab's two sample accounts if they do not exist.
    pub demo: bool,
    /// Limits.
    pub limits: Limits,
    /// Where the PIN verification key comes from (by default a file beside the data directory,
    /// [`pins::default_pin_key_file`]).
    pub pin_key: PinKeySource,
    /// Where the failure limits read the time (a [`crate::ratelimit::ManualClock`] in tests).
    pub clock: Arc<dyn crate::ratelimit::Clock>,
    /// The argon2id cost the first release made PIN hashes with. New PINs get keyed verifiers,
    /// so nothing uses it any more; it stays so that existing configurations keep working.
    pub pin_hash_cost: PinHashCost,
    /// Faults to inject (testing only).
    pub faults: Option<FaultPlan>,
    /// Account actor arbiters (threads); 0 means one per core.
    pub arbiters: usize,
    /// Records between snapshots.
    pub snapshot_records_interval: u64,
    /// How long a client's completed requests are remembered after its last one. Must exceed the
    /// client library's retry deadline.
    pub client_retention: Duration,
    /// Records the journal queues before requests are answered `busy`.
    pub journal_queue_records_max: usize,
    /// How long a graceful shutdown waits for requests in flight before it closes connections.
    pub shutdown_timeout: Duration,
    /// How recovery treats the newest segment's tail (docs/JOURNAL.md, section 9).
    pub recovery: RecoveryMode,
    /// Testing only: the journal's writes fail like a full disk once this many more bytes have
    /// been written (see [`crate::journal::files::FullDisk`]).
    pub journal_fail_after_bytes: Option<i64>,
}

impl ServerConfig {
    /// Defaults: 127.0.0.1:7878, ./data, no operator token, no demo accounts.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            pin_key: PinKeySource::File(pins::default_pin_key_file(&data_dir)),
            clock: Arc::new(crate::ratelimit::SystemClock::default()),
            data_dir,
            operator_token: None,
            demo: false,
            limits: Limits::default(),
            pin_hash_cost: PinHashCost::default(),
            faults: None,
            arbiters: 0,
            snapshot_records_interval: JournalConfig::new(".").snapshot_records_interval,
            client_retention: JournalConfig::new(".").client_retention,
            journal_queue_records_max: JournalConfig::new(".").queue_records_max,
            shutdown_timeout: Duration::from_secs(10),
            recovery: RecoveryMode::default(),
            journal_fail_after_bytes: None,
        }
    }
}

/// The journal settings a server configuration asks for.
pub fn journal_config(config: &ServerConfig) -> JournalConfig {
    let mut journal_config = JournalConfig::new(&config.data_dir);
    journal_config.snapshot_records_interval = config.snapshot_records_interval;
    journal_config.client_retention = config.client_retention;
    journal_config.queue_records_max = config.journal_queue_records_max;
    journal_config.recovery = config.recovery;
    if let Some(budget) = config.journal_fail_after_bytes {
        journal_config.files = Arc::new(crate::journal::files::FullDisk::new(budget));
    }
    journal_config
}

/// Counters the server keeps (exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections.
    pub connections: AtomicUsize,
    /// Connections refused at the cap.
    pub connections_refused: AtomicU64,
    /// Account actors alive.
    pub live_accounts: AtomicUsize,
    /// Supervised restarts after crashes.
    pub actor_restarts: AtomicU64,
    /// Requests answered from the memory of completed requests.
    pub replays: AtomicU64,
    /// Retries that joined their original while it was still being worked on.
    pub joins: AtomicU64,
}

impl Stats {
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::CONNECTIONS_OPEN, 1.0);
    }

    /// A connection ended (or never got its session).
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::CONNECTIONS_OPEN, -1.0);
    }

    /// A connection was refused at the limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::CONNECTIONS_REFUSED);
    }

    /// An account actor started (or restarted).
    pub fn account_started(&self) {
        self.live_accounts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::ACCOUNT_ACTORS_LIVE, 1.0);
    }

    /// An account actor stopped.
    pub fn account_stopped(&self) {
        self.live_accounts.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::ACCOUNT_ACTORS_LIVE, -1.0);
    }

    /// An account actor is being restarted after a crash.
    pub fn actor_restarted(&self) {
        self.actor_restarts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::ACTOR_RESTARTS);
    }

    /// A request was answered from the memory of completed requests.
    pub fn replay_served(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::DEDUP_HITS);
    }

    /// A retry joined its original, still in flight.
    pub fn join_served(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::JOINS);
    }
}

/// What every actor shares: the journal, the account registry, the memory of completed
/// requests, the limits.
pub struct Bank {
    /// The journal every change goes through.
    journal: Journal,
    /// The account actors by card.
    accounts: DashMap<Card, AccountHandle>,
    /// The working memory of completed requests, by principal and client: decisions are checked
    /// against it and recorded in it before they are durable (a retry then waits for durability
    /// like the first attempt). Seeded from the committed ledger at start.
    clients: DashMap<Principal, Clients>,
    /// Account changes submitted and not yet answered, which a retry of the same request may
    /// join; at most [`Limits::requests_joinable_max`] (counted in `joinable_open`).
    joinable: DashMap<(Card, RequestId), Joinable>,
    joinable_open: AtomicUsize,
    /// Numbers the entries of `joinable`, so an original removes its own entry and no other.
    joinable_serial: AtomicU64,
    arbiters: Vec<ArbiterHandle>,
    /// The limits in force.
    limits: Limits,
    operator: OperatorToken,
    /// Failed operator-token attempts by peer address.
    operator_failures: PeerBuckets,
    /// Where failure limits read the time.
    clock: Arc<dyn Clock>,
    /// The PIN key, the limits on failed PIN checks, the argon2id pool.
    pins: Pins,
    /// Fault injection, when enabled.
    faults: Option<Arc<Faults>>,
    /// Counters.
    stats: Stats,
    /// How long an idle client's completed requests are remembered.
    client_retention: Duration,
    /// Cancelled when a graceful shutdown begins: the gateway stops accepting and sessions stop
    /// reading, finish what is in flight and close.
    shutdown: tokio_util::sync::CancellationToken,
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl Bank {
    /// The storage every change goes through (today the file journal).
    pub fn storage(&self) -> &Journal {
        &self.journal
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Fault injection, when enabled.
    pub fn faults(&self) -> &Option<Arc<Faults>> {
        &self.faults
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The actor for `card`, started (on the card's arbiter) if it is not running.
    fn account(self: &Arc<Self>, card: Card) -> AccountHandle {
        if let Some(handle) = self.accounts.get(&card) {
            if handle.address.connected() {
                return handle.clone();
            }
        }
        let mut entry = self
            .accounts
            .entry(card)
            .or_insert_with(|| self.start_account(card));
        if !entry.address.connected() {
            *entry = self.start_account(card);
        }
        entry.clone()
    }

    fn start_account(self: &Arc<Self>, card: Card) -> AccountHandle {
        let arbiter = &self.arbiters[(card % self.arbiters.len() as u64) as usize];
        let bank = self.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = queued.clone();
        let address =
            Supervisor::start_in_arbiter(arbiter, move |_| AccountActor::new(card, bank, counter));
        AccountHandle { address, queued }
    }

    /// Decides `event` for `request` on `card` and waits until the answer may be given (its record
    /// is durable). Never fails: trouble becomes `busy` or `unavailable`, which clients retry.
    pub async fn decide(self: &Arc<Self>, card: Card, request: RequestId, event: Event) -> Outcome {
        let submitted = self.submit(card, request, event);
        self.settle(submitted).await
    }

    /// Hands `event` to the card's actor now, without waiting: requests submitted one after the
    /// other reach the actor, and are decided, in that order. [`Bank::settle`] waits for the answer.
    ///
    /// Admission is decided first, and cheaply: a retry of a change that is still being worked
    /// on (same card, same request id, same parameters) *joins* it and will get the original's
    /// answer, without reaching the actor again; a full mailbox answers `busy` at once. Only
    /// withdrawals and deposits are joined: a request that carries a secret (a PIN attempt, an
    /// account opening) is always checked afresh.
    pub fn submit(self: &Arc<Self>, card: Card, request: RequestId, event: Event) -> Submitted {
        let joinable = matches!(event, Event::Withdrawal { .. } | Event::Deposit { .. });
        let fingerprint = Fingerprint::of(card, &event);
        if joinable {
            if let Some(original) = self.joinable.get(&(card, request)) {
                if original.fingerprint == fingerprint {
                    self.stats.join_served();
                    return Submitted(Admission::Joined(original.outcome.clone()));
                }
                // Other parameters under the same id: the actor answers the conflict.
            }
        }
        let handle = self.account(card);
        // A full mailbox answers `busy` at once instead of queueing without bound.
        if handle.queued.fetch_add(1, Ordering::AcqRel) >= self.limits.mailbox_capacity {
            handle.queued.fetch_sub(1, Ordering::AcqRel);
            return Submitted(Admission::Refused);
        }
        let (reply, answer) = oneshot::channel();
        let message = Decide {
            request,
            event,
            reply,
        };
        if handle.address.try_send(message).is_err() {
            handle.queued.fetch_sub(1, Ordering::AcqRel);
            return Submitted(Admission::Refused);
        }
        let publish = joinable
            .then(|| self.open_joinable(card, request, fingerprint))
            .flatten();
        Submitted(Admission::Sent { answer, publish })
    }

    /// Registers a submitted change for retries to join, unless [`Limits::requests_joinable_max`]
    /// are open or the request is already registered (then the retry takes the ordinary path).
    fn open_joinable(
        self: &Arc<Self>,
        card: Card,
        request: RequestId,
        fingerprint: Fingerprint,
    ) -> Option<JoinablePublisher> {
        if self.joinable_open.fetch_add(1, Ordering::AcqRel) >= self.limits.requests_joinable_max {
            self.joinable_open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let serial = self.joinable_serial.fetch_add(1, Ordering::Relaxed);
        let (sender, outcome) = watch::channel(None);
        match self.joinable.entry((card, request)) {
            dashmap::Entry::Occupied(_) => {
                self.joinable_open.fetch_sub(1, Ordering::AcqRel);
                None
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Joinable {
                    fingerprint,
                    serial,
                    outcome,
                });
                Some(JoinablePublisher {
                    bank: self.clone(),
                    key: (card, request),
                    serial,
                    sender,
                })
            }
        }
    }

    /// Waits for a submitted request's answer and for its record to be durable.
    pub async fn settle(&self, submitted: Submitted) -> Outcome {
        let (answer, publish) = match submitted.0 {
            Admission::Refused => return self.no_answer(),
            Admission::Joined(mut outcome) => {
                return match outcome.wait_for(Option::is_some).await {
                    Ok(outcome) => (*outcome).unwrap_or_else(|| self.no_answer()),
                    // The original ended without an answer (its connection closed): retry.
                    Err(_) => self.no_answer(),
                };
            }
            Admission::Sent { answer, publish } => (answer, publish),
        };
        let outcome = self.settle_answer(answer).await;
        if let Some(publish) = publish {
            publish.sender.send_replace(Some(outcome));
        }
        outcome
    }

    /// The answer to give when a request was not decided now (a full mailbox, a crash, a retiring
    /// actor): `busy`, retry. If the journal has failed, say so instead: retrying cannot help.
    fn no_answer(&self) -> Outcome {
        Outcome {
            status: if self.journal.failure().is_some() {
                Code::Unavailable
            } else {
                Code::Busy
            },
            balance: None,
        }
    }

    async fn settle_answer(
        &self,
        answer: oneshot::Receiver<Result<account::Answer, account::NoAnswer>>,
    ) -> Outcome {
        let answer = match answer.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => return self.no_answer(),
        };
        match durable::wait_durable(&self.journal, answer.durable_after).await {
            Ok(()) => answer.outcome,
            Err(_) => Outcome {
                status: Code::Unavailable,
                balance: None,
            },
        }
    }

    /// The committed balance of `card`. Every acknowledged change is in it (acknowledgement waits
    /// for the committed state), and nothing that is not durable is.
    pub fn balance(&self, card: Card) -> Option<Amount> {
        self.journal
            .read_committed_account(card, |account| account.balance)
    }

    /// The PIN verifier of `card`, from the committed state.
    pub fn pin_hash(&self, card: Card) -> Option<pin::PinHash> {
        self.journal
            .read_committed_account(card, |account| account.pin_hash)
    }

    /// Forgets, from the working memory of completed requests, every client with no completed
    /// request for [`ServerConfig::client_retention`]; returns how many. The committed ledger
    /// forgets them at its next snapshot. Either memory may keep a client longer than the other;
    /// both rules are sound because no honest client retries that late.
    pub fn forget_idle_clients(&self) -> usize {
        let cutoff = now_unix_ms().saturating_sub(self.client_retention.as_millis() as u64);
        let mut forgotten = 0;
        self.clients
            .retain(|_, clients| clients.keep_after_forgetting(cutoff, &mut forgotten));
        forgotten
    }

    /// How many clients the working memory of completed requests holds for `principal` (at most
    /// [`ledger::CLIENTS_PER_PRINCIPAL_MAX`]).
    pub fn clients_remembered(&self, principal: Principal) -> usize {
        self.clients
            .get(&principal)
            .map_or(0, |clients| clients.windows.len())
    }

    async fn forget_idle_clients_forever(&self) {
        // Often enough that a full table frees up soon after clients go idle, rarely enough that
        // the scan costs nothing noticeable.
        let period =
            (self.client_retention / 8).clamp(Duration::from_millis(100), Duration::from_secs(60));
        let mut ticks = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.shutting_down() => return,
            }
            let forgotten = self.forget_idle_clients();
            if forgotten > 0 {
                tracing::info!(forgotten, "forgot idle clients");
            }
        }
    }

    /// How long an idle client's completed requests are remembered.
    pub fn client_retention(&self) -> Duration {
        self.client_retention
    }

    /// Resolves when a graceful shutdown has begun.
    pub fn shutting_down(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    /// True once a graceful shutdown has begun.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Checks `offered` against the operator token for a request from `peer`: `Approved` when it
    /// is the token, `NotAuthorised` when it is not (counted and logged), `Busy` without a check
    /// when the peer has used up its failed attempts ([`Limits::operator_failures`]).
    pub fn check_operator(&self, offered: &str, peer: Option<IpAddr>) -> Code {
        // A connection without a known peer address shares one bucket with its kind.
        let peer = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let (limit, now) = (self.limits.operator_failures, self.clock.now());
        if !self.operator_failures.allows(peer, limit, now) {
            return Code::Busy;
        }
        if self.operator.matches(offered) {
            return Code::Approved;
        }
        let attempts_left = self.operator_failures.take(peer, limit, now);
        tracing::warn!(
            security = true,
            %peer,
            attempts_left,
            "operator token refused"
        );
        Code::NotAuthorised
    }
}

/// How the bank reaches one account actor.
#[derive(Clone)]
struct AccountHandle {
    address: Addr<AccountActor>,
    /// Messages sent and not yet taken by the actor. actix gives every sender (every `Addr`
    /// clone) a slot of its own beyond the mailbox capacity, so the bank counts for itself.
    queued: Arc<AtomicUsize>,
}

/// A request after admission: handed to an account actor, joined to its original, or refused.
pub struct Submitted(Admission);

enum Admission {
    /// Not admitted (a full mailbox): the answer is `busy`.
    Refused,
    /// Handed to the account actor; `publish` shares the answer with retries that join it.
    Sent {
        answer: oneshot::Receiver<Result<account::Answer, account::NoAnswer>>,
        publish: Option<JoinablePublisher>,
    },
    /// A retry of a change still in flight: it waits for the original's answer.
    Joined(watch::Receiver<Option<Outcome>>),
}

/// A change in flight that retries may join.
struct Joinable {
    /// The parameters: only a retry with the same ones joins.
    fingerprint: Fingerprint,
    serial: u64,
    /// The original's answer, once it may be given.
    outcome: watch::Receiver<Option<Outcome>>,
}

/// Held by the original of a joinable change; shares its answer, and on drop (answered or
/// abandoned with its connection) removes the entry, so joiners left waiting are told `busy`.
struct JoinablePublisher {
    bank: Arc<Bank>,
    key: (Card, RequestId),
    serial: u64,
    sender: watch::Sender<Option<Outcome>>,
}

impl Drop for JoinablePublisher {
    fn drop(&mut self) {
        let serial = self.serial;
        if self
            .bank
            .joinable
            .remove_if(&self.key, |_, entry| entry.serial == serial)
            .is_some()
        {
            self.bank.joinable_open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Errors of starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be recovered.
    #[error("cannot open the journal: {0}")]
    Journal(#[from] JournalError),
    /// The listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The PIN verification key is missing, unreadable, or not the key the accounts' PINs were
    /// made with.
    #[error("{0}")]
    PinKey(String),
    /// Something else went wrong during start-up.
    #[error("cannot start: {0}")]
    Start(String),
}

/// The lab's sample accounts: card, holder, PIN, balance.
pub const DEMO_ACCOUNTS: [(Card, &str, &str, Amount); 2] = [
    (123_456_789, "Joty", "1234", 10_000),
    (987_654_321, "Ahona", "5678", 5_000),
];

/// The reserved client id of requests the server makes itself (opening the demo accounts).
pub const SERVER_CLIENT_ID: u64 = 0;

/// Opens the demo accounts that do not exist yet, through the journal like any other change.
fn open_demo_accounts(journal: &Journal, key: &PinKey) -> Result<(), ServerError> {
    for (sequence, (card, holder, pin_text, balance)) in DEMO_ACCOUNTS.iter().enumerate() {
        if journal.committed_account_exists(*card) {
            continue;
        }
        let pin_hash = key.verifier(*card, pin_text);
        let request = RequestId {
            client: SERVER_CLIENT_ID,
            sequence: sequence as u64 + 1,
        };
        let event = Event::AccountOpened {
            holder: holder.to_string(),
            pin_hash,
            initial_balance: *balance,
        };
        if let ledger::Decision::Record(record) =
            ledger::decide(None, *card, request, event, now_unix_ms())
        {
            let lsn = journal
                .append(record)
                .map_err(|error| ServerError::Start(error.to_string()))?;
            futures::executor::block_on(journal.wait_durable(lsn))
                .map_err(|reason| ServerError::Start(reason.to_string()))?;
        }
    }
    Ok(())
}

/// File descriptors the server needs besides its connections (journal, listener, runtime).
const FILES_RESERVED: u64 = 64;

/// Raises the soft limit on open files towards what `connections_max` needs (up to the hard
/// limit). Without it a default soft limit of 1024 would cap connections far below the setting.
fn raise_open_file_limit(connections_max: usize) {
    let wanted = connections_max as u64 + FILES_RESERVED;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below what the connection limit needs; connections may be refused early"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// A running server: its address, and the means to stop it.
pub struct RunningServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    bank: Arc<Bank>,
    system: System,
    thread: Option<std::thread::JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl RunningServer {
    /// Recovers the data directory and starts serving on a thread of its own.
    pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        let journal_config = journal_config(&config);
        Self::start_with_journal(config, journal_config)
    }

    /// Like [`RunningServer::start`], with the journal's settings given in full (tests use this to
    /// put a failing file layer under the journal).
    pub fn start_with_journal(
        config: ServerConfig,
        journal_config: JournalConfig,
    ) -> Result<RunningServer, ServerError> {
        if let Some(token) = &config.operator_token {
            crate::operator::check_strength(token).map_err(ServerError::Start)?;
        }
        raise_open_file_limit(config.limits.connections_max);
        let journal = Journal::open(journal_config)?;
        let pin_key = match pins::open_pin_key(&config.pin_key, &config.data_dir, &journal) {
            Ok(key) => key,
            Err(reason) => {
                // Let go of the data directory: the operator fixes the key and starts again.
                journal.close();
                return Err(ServerError::PinKey(reason));
            }
        };
        if config.demo {
            open_demo_accounts(&journal, &pin_key)?;
        }
        let listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServerError::Listen {
                address: config.listen,
                source,
            })?;
        listener
            .set_nonblocking(true)
            .map_err(|error| ServerError::Start(error.to_string()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| ServerError::Start(error.to_string()))?;
        let shutdown_timeout = config.shutdown_timeout;
        let (started, on_started) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bank-server".into())
            .spawn(move || {
                let system = System::new();
                let bank = system.block_on(async move {
                    let arbiter_count = if config.arbiters == 0 {
                        std::thread::available_parallelism().map_or(2, |cores| cores.get())
                    } else {
                        config.arbiters
                    };
                    let arbiters = (0..arbiter_count)
                        .map(|_| Arbiter::new().handle())
                        .collect();
                    let clients = journal.committed_clients().into_iter().collect();
                    let bank = Arc::new(Bank {
                        journal,
                        accounts: DashMap::new(),
                        clients,
                        joinable: DashMap::new(),
                        joinable_open: AtomicUsize::new(0),
                        joinable_serial: AtomicU64::new(0),
                        arbiters,
                        limits: config.limits.clone(),
                        operator: OperatorToken::new(config.operator_token.as_deref()),
                        operator_failures: PeerBuckets::new(
                            crate::operator::OPERATOR_FAILURE_PEERS_MAX,
                            WhenFull::Refuse,
                        ),
                        clock: config.clock.clone(),
                        pins: Pins::new(
                            pin_key,
                            config.limits.pin_failures_per_connection,
                            config.limits.pin_failures_per_peer,
                            config.limits.pin_check_queue_max,
                            config.clock.clone(),
                        ),
                        faults: config
                            .faults
                            .filter(|plan| !plan.is_quiet())
                            .map(|plan| Arc::new(Faults::new(plan))),
                        stats: Stats::default(),
                        shutdown: tokio_util::sync::CancellationToken::new(),
                        client_retention: config.client_retention,
                    });
                    let sweeper = bank.clone();
                    actix::spawn(async move { sweeper.forget_idle_clients_forever().await });
                    if !bank.operator.is_set() {
                        tracing::warn!("no operator token set: creating accounts is disabled");
                    }
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            gateway::Gateway::start_listening(bank.clone(), listener);
                            Ok(bank)
                        }
                        Err(error) => Err(error.to_string()),
                    }
                });
                let ok = bank.is_ok();
                let _ = started.send(bank.map(|bank| (bank, System::current())));
                if ok {
                    let _ = system.run();
                }
            })
            .map_err(|error| ServerError::Start(error.to_string()))?;
        let (bank, system) = on_started
            .recv()
            .map_err(|_| ServerError::Start("the server thread died".into()))?
            .map_err(ServerError::Start)?;
        tracing::info!(address = %local_addr, "bank server listening");
        Ok(RunningServer {
            local_addr,
            bank,
            system,
            thread: Some(thread),
            shutdown_timeout,
        })
    }

    /// The shared context (for tests and audits).
    pub fn bank(&self) -> &Arc<Bank> {
        &self.bank
    }

    /// Shuts down gracefully, in this order: stop accepting connections; stop reading requests;
    /// let the requests in flight finish and their replies go out (for at most
    /// [`ServerConfig::shutdown_timeout`]); close the connections; stop the actors; write and
    /// sync everything the journal holds. Returns when all of that is done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.bank.shutdown.cancel();
        let deadline = std::time::Instant::now() + self.shutdown_timeout;
        while self.bank.stats().connections.load(Ordering::Relaxed) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.bank.stats().connections.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown deadline passed with connections still open"
            );
        }
        self.system.stop();
        let _ = thread.join();
        self.bank.storage().close();
        tracing::info!(
            lsn = self.bank.storage().stats().durable_lsn,
            "journal closed; shutdown complete"
        );
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
