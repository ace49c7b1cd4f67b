//! The [`Bank`]: what every actor shares. The registry of account actors, admission and
//! settlement of requests ([`Bank::submit`], [`Bank::settle`]), reads of the committed state, the
//! working memory of completed requests and its sweep, and the operator check.

use super::account::{self, AccountActor, ActorShared, Decide};
use super::background::Background;
use super::budget::ReplyBudget;
use super::durable;
use super::joining::{JoinableMap, JoinablePublisher, Joined};
use super::pins::Pins;
use super::settings::{Banking, Limits, ServerConfig};
use super::slots::Slots;
use super::stats::Stats;
use crate::clock::Clock;
use crate::faults::{FaultPlan, Faults};
use crate::ledger::{At, Clients, Event, Fingerprint, Outcome, Policy, Principal};
use crate::model::{Amount, Card, Code, RequestId};
use crate::pin::{self, OperatorToken, PinKey};
use crate::ratelimit::{PeerBuckets, WhenFull};
use crate::storage::Storage;
use actix::prelude::*;
use dashmap::DashMap;
use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// What every actor shares: the storage, the account registry, the memory of completed
/// requests, the limits.
pub struct Bank {
    /// The storage every change goes through: a log behind the `storage::Log` trait (the file
    /// journal, or the in-memory log in tests) and the committed state it applies.
    storage: Storage,
    /// The account actors by card.
    pub(super) accounts: DashMap<Card, AccountHandle>,
    /// The working memory of completed requests, by principal and client: decisions are checked
    /// against it and recorded in it before they are durable (a retry then waits for durability
    /// like the first attempt). A principal's memory is copied from the committed ledger when it
    /// is first needed ([`Bank::clients_of`]), the operator's at start: a copy of every card's
    /// memory at start would double what a million accounts' memories take, and take seconds.
    pub(super) clients: DashMap<Principal, Clients>,
    /// Account changes submitted and not yet answered, which a retry of the same request may
    /// join (see [`Bank::submit`]).
    joinable: Arc<JoinableMap>,
    /// The threads account actors and sessions run on.
    pub(super) arbiters: Vec<ArbiterHandle>,
    /// Which set of arbiters these are ([`ARBITER_HERE`] names a thread's place in one).
    arbiter_set: u64,
    /// The limits in force.
    limits: Limits,
    /// The operator token accounts are opened with.
    operator: OperatorToken,
    /// The operator token itself, which one node shows another when it delivers a transfer's
    /// leg (cluster mode); never logged.
    peer_token: Option<Arc<str>>,
    /// Failed operator-token attempts by peer address.
    operator_failures: PeerBuckets,
    /// Where the server reads the time: failure limits, record stamps, forgetting idle clients.
    clock: Arc<dyn Clock>,
    /// The PIN key, the limits on failed PIN checks, the argon2id pool.
    pub(super) pins: Pins,
    /// Fault injection, when enabled; armed by [`Bank::arm_faults`] once the server's own
    /// requests (the demo accounts) are done, so that it touches only requests from clients.
    faults: OnceLock<Option<Arc<Faults>>>,
    /// Counters.
    stats: Stats,
    /// The reply bytes every connection has reserved or queued, under the global budget.
    reply_budget: Arc<ReplyBudget>,
    /// The connections each peer holds open.
    slots: Arc<Slots>,
    /// How long an idle client's completed requests are remembered.
    client_retention: Duration,
    /// Daily limits, the business day, holds and statements.
    banking: Banking,
    /// Transfers being delivered and holds being watched.
    background: Background,
    /// Cancelled when a graceful shutdown begins: the gateway stops accepting and sessions stop
    /// reading, finish what is in flight and close.
    shutdown: tokio_util::sync::CancellationToken,
}

impl Bank {
    /// The bank over a recovered `storage`, with account actors on `arbiters`. Its working
    /// memory of completed requests starts as the committed one.
    pub(super) fn new(
        config: &ServerConfig,
        storage: Storage,
        pin_key: PinKey,
        arbiters: Vec<ArbiterHandle>,
    ) -> Arc<Bank> {
        let clients = DashMap::new();
        let operator =
            storage.with_committed(|ledger| ledger.clients.get(&Principal::Operator).cloned());
        if let Some(operator) = operator {
            clients.insert(Principal::Operator, operator);
        }
        let limits = &config.limits;
        let arbiter_set = tag_arbiters(&arbiters);
        Arc::new(Bank {
            storage,
            accounts: DashMap::new(),
            clients,
            joinable: JoinableMap::new(limits.requests_joinable_max),
            arbiters,
            arbiter_set,
            limits: limits.clone(),
            operator: OperatorToken::new(config.operator_token.as_deref()),
            peer_token: config
                .operator_token
                .as_deref()
                .filter(|token| !token.is_empty())
                .map(Arc::from),
            operator_failures: PeerBuckets::new(
                crate::operator::OPERATOR_FAILURE_PEERS_MAX,
                WhenFull::Refuse,
            ),
            clock: config.clock.clone(),
            pins: Pins::new(
                pin_key,
                limits.pin_failures_per_connection,
                limits.pin_failures_per_peer,
                limits.pin_check_queue_max,
                config.clock.clone(),
            ),
            faults: OnceLock::new(),
            stats: Stats::default(),
            reply_budget: ReplyBudget::new(
                limits.reply_bytes_max,
                limits.connection_reply_bytes_max,
            ),
            slots: Slots::new(limits.connections_per_peer_max),
            shutdown: tokio_util::sync::CancellationToken::new(),
            client_retention: config.client_retention,
            banking: config.banking,
            background: Background::default(),
        })
    }

    /// The storage every change goes through (the file journal by default).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The operator token, for a node's requests to another (cluster mode).
    pub(super) fn peer_token(&self) -> Option<&Arc<str>> {
        self.peer_token.as_ref()
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Fault injection, when enabled (and armed).
    pub fn faults(&self) -> &Option<Arc<Faults>> {
        /// What an unarmed bank injects: nothing.
        static NO_FAULTS: Option<Arc<Faults>> = None;
        self.faults.get().unwrap_or(&NO_FAULTS)
    }

    /// Starts injecting the faults of `plan` (none when it is `None` or quiet). Only the first
    /// call counts.
    pub(super) fn arm_faults(&self, plan: Option<FaultPlan>) {
        let faults = plan
            .filter(|plan| !plan.is_quiet())
            .map(|plan| Arc::new(Faults::new(plan)));
        let _ = self.faults.set(faults);
    }

    /// The server's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The reply bytes reserved or queued, over all connections and per connection.
    pub fn reply_budget(&self) -> &Arc<ReplyBudget> {
        &self.reply_budget
    }

    /// The connections each peer holds open.
    pub fn slots(&self) -> &Arc<Slots> {
        &self.slots
    }

    /// Where the server reads the time ([`ServerConfig::clock`]).
    pub fn clock(&self) -> &dyn Clock {
        self.clock.as_ref()
    }

    /// Transfers being delivered and holds being watched.
    pub fn background(&self) -> &Background {
        &self.background
    }

    /// Daily limits, the business day, holds and statements.
    pub fn banking(&self) -> &Banking {
        &self.banking
    }

    /// Now, by the bank's clock, and the business day it falls in.
    pub fn at(&self) -> At {
        let unix_ms = self.clock.unix_ms();
        At {
            unix_ms,
            business_day: self.banking.business_day(unix_ms),
        }
    }

    /// What the account rules read from the bank's settings.
    pub fn policy(&self) -> Policy {
        Policy {
            daily_limits: self.banking.daily_limits,
        }
    }

    /// True when an operator token is configured (without one, accounts cannot be opened).
    pub fn operator_is_set(&self) -> bool {
        self.operator.is_set()
    }

    /// The actor for `card`, started ([`Bank::arbiter_for`]) if it is not running.
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

    /// Where a new actor for `card` runs: on the arbiter asking for it, when that is one of the
    /// bank's (the session that first needs the card, usually), so its requests and the actor's
    /// answers pass on one thread without a cross-thread wake-up; else (the main arbiter, a
    /// background task) on arbiter `card % N`.
    fn arbiter_for(&self, card: Card) -> &ArbiterHandle {
        let here = ARBITER_HERE.with(Cell::get);
        match here {
            Some((set, index)) if set == self.arbiter_set && index < self.arbiters.len() => {
                &self.arbiters[index]
            }
            _ => &self.arbiters[(card % self.arbiters.len() as u64) as usize],
        }
    }

    fn start_account(self: &Arc<Self>, card: Card) -> AccountHandle {
        let arbiter = self.arbiter_for(card);
        let bank = self.clone();
        let shared = ActorShared::default();
        let theirs = shared.clone();
        let address =
            Supervisor::start_in_arbiter(arbiter, move |_| AccountActor::new(card, bank, &theirs));
        AccountHandle { address, shared }
    }

    /// The wrong PINs the working copy of `card`'s live actor holds, as of its last decision: 0
    /// without an actor (the committed state is then all there is), or before it loaded. Never
    /// starts an actor.
    pub(super) fn pin_failures_deciding(&self, card: Card) -> u8 {
        self.accounts
            .get(&card)
            .map_or(0, |entry| entry.shared.pin_failures.load(Ordering::Acquire))
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
    /// answer, without reaching the actor again; a full mailbox answers `busy` at once. Only the
    /// changes a client's request makes and a memory keeps are joined ([`Event::is_joinable`]): a
    /// request that carries a secret (a PIN attempt, an account opening) is always checked afresh.
    pub fn submit(self: &Arc<Self>, card: Card, request: RequestId, event: Event) -> Submitted {
        let joinable = event.is_joinable();
        let fingerprint = Fingerprint::of(card, &event);
        if joinable {
            if let Some(outcome) = self.joinable.join((card, request), &fingerprint) {
                self.stats.join_served();
                return Submitted(Admission::Joined(outcome));
            }
        }
        let handle = self.account(card);
        // A full mailbox answers `busy` at once instead of queueing without bound.
        if handle.shared.queued.fetch_add(1, Ordering::AcqRel) >= self.limits.mailbox_capacity {
            handle.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Submitted(Admission::Refused);
        }
        let (reply, answer) = oneshot::channel();
        let message = Decide {
            request,
            event,
            reply,
        };
        if handle.address.try_send(message).is_err() {
            handle.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Submitted(Admission::Refused);
        }
        let publish = joinable
            .then(|| self.joinable.open((card, request), fingerprint))
            .flatten();
        Submitted(Admission::Sent { answer, publish })
    }

    /// Waits for a submitted request's answer and for its record to be durable.
    pub async fn settle(&self, submitted: Submitted) -> Outcome {
        self.settle_with(submitted, true).await
    }

    /// Decides `event` for `request` on `card` and returns the answer as soon as the account has
    /// decided it and queued its record, *without* waiting for durability. Only for the bank's own
    /// next step: whatever the caller appends afterwards to the same log becomes durable only
    /// with or after this record ([`crate::storage::Log::head`]), so a later record that depends
    /// on this answer can never outlive it in a crash. Never for a reply to a client.
    pub async fn decide_before_durable(
        self: &Arc<Self>,
        card: Card,
        request: RequestId,
        event: Event,
    ) -> Outcome {
        let submitted = self.submit(card, request, event);
        self.settle_with(submitted, false).await
    }

    async fn settle_with(&self, submitted: Submitted, durable: bool) -> Outcome {
        let (answer, publish) = match submitted.0 {
            Admission::Refused => return self.no_answer(),
            Admission::Joined(outcome) => {
                // A closed channel: the original ended without an answer (its connection
                // closed), so this retry is told to retry.
                return outcome.await.unwrap_or_else(|_| self.no_answer());
            }
            Admission::Sent { answer, publish } => (answer, publish),
        };
        let outcome = self.settle_answer(answer, durable).await;
        if let Some(publish) = publish {
            publish.publish(outcome);
        }
        outcome
    }

    /// The answer to give when a request was not decided now (a full mailbox, a crash, a retiring
    /// actor): `busy`, retry. If the journal has failed, say so instead: retrying cannot help.
    fn no_answer(&self) -> Outcome {
        Outcome::bare(if self.storage.failure().is_some() {
            Code::Unavailable
        } else {
            Code::Busy
        })
    }

    async fn settle_answer(
        &self,
        answer: oneshot::Receiver<AccountReply>,
        durable: bool,
    ) -> Outcome {
        let answer = match answer.await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) | Err(_) => return self.no_answer(),
        };
        if !durable {
            return answer.outcome;
        }
        match durable::wait_durable(&self.storage, answer.durable_after).await {
            Ok(()) => answer.outcome,
            Err(_) => Outcome::bare(Code::Unavailable),
        }
    }

    /// The committed balance of `card`. Every acknowledged change is in it (acknowledgement waits
    /// for the committed state), and nothing that is not durable is.
    pub fn balance(&self, card: Card) -> Option<Amount> {
        self.storage
            .read_committed_account(card, |account| account.balance)
    }

    /// The PIN verifier of `card`, from the committed state.
    pub fn pin_hash(&self, card: Card) -> Option<pin::PinHash> {
        self.storage
            .read_committed_account(card, |account| account.pin_hash())
    }

    /// Forgets, from the working memory of completed requests, every client with no completed
    /// request for [`ServerConfig::client_retention`] by [`Bank::clock`]; returns how many. The
    /// committed ledger forgets them at its next snapshot. Either memory may keep a client longer
    /// than the other; both rules are sound because no honest client retries that late.
    pub fn forget_idle_clients(&self) -> usize {
        let cutoff = self
            .clock
            .unix_ms()
            .saturating_sub(self.client_retention.as_millis() as u64);
        let mut forgotten = 0;
        let committed = self.storage.committed();
        self.clients.retain(|principal, clients| {
            let left = clients.keep_after_forgetting(cutoff, &mut forgotten, |client| {
                let pinned =
                    committed.read_committed_account(client, |sender| principal.pins(Some(sender)));
                pinned.unwrap_or(false)
            });
            // A memory left empty stays (empty) while the committed one still holds windows of
            // its principal, so its next use does not copy back the clients just forgotten
            // ([`Bank::clients_of`]); it goes once the committed ledger forgot them too.
            left || committed.with_committed(|ledger| ledger.clients.contains_key(principal))
        });
        forgotten
    }

    /// How many clients the working memory of completed requests holds for `principal` (at most
    /// [`crate::ledger::CLIENTS_PER_PRINCIPAL_MAX`]); for a principal not used since the start,
    /// what the committed memory it will be copied from holds.
    pub fn clients_remembered(&self, principal: Principal) -> usize {
        match self.clients.get(&principal) {
            Some(clients) => clients.windows.len(),
            None => self.storage.with_committed(|ledger| {
                ledger
                    .clients
                    .get(&principal)
                    .map_or(0, |clients| clients.windows.len())
            }),
        }
    }

    /// The working memory of `principal`'s completed requests, locked until the guard is dropped.
    /// The first use of a principal since the start copies its committed memory: until then no
    /// request of it was decided here, so the committed memory is exactly what the working one
    /// would hold. (The copy is read before the map is locked: the cluster's takeover locks them
    /// the other way round.) A memory emptied by the sweep of idle clients stays, empty, until
    /// the committed ledger forgot them too, so they are not copied back.
    pub(super) fn clients_of(
        &self,
        principal: Principal,
    ) -> dashmap::mapref::one::RefMut<'_, Principal, Clients> {
        if let Some(clients) = self.clients.get_mut(&principal) {
            return clients;
        }
        let committed = self
            .storage
            .with_committed(|ledger| ledger.clients.get(&principal).cloned())
            .unwrap_or_default();
        self.clients.entry(principal).or_insert(committed)
    }

    /// Runs [`Bank::forget_idle_clients`] periodically until shutdown begins.
    pub(super) async fn forget_idle_clients_forever(&self) {
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

    /// Begins a graceful shutdown (see [`Bank::shutting_down`]).
    pub(super) fn begin_shutdown(&self) {
        self.shutdown.cancel();
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

/// What an account actor sends back for one request.
type AccountReply = Result<account::Answer, account::NoAnswer>;

/// Numbers the sets of arbiters banks run on (several servers may share a process: tests).
static ARBITER_SETS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a bank's arbiter thread: which set it belongs to, and its index in it.
    static ARBITER_HERE: Cell<Option<(u64, usize)>> = const { Cell::new(None) };
}

/// Numbers a new set of arbiters and tells each thread its place in it (before anything else
/// runs there: an arbiter runs what it is given in order). Returns the set's number.
fn tag_arbiters(arbiters: &[ArbiterHandle]) -> u64 {
    let set = ARBITER_SETS.fetch_add(1, Ordering::Relaxed);
    for (index, arbiter) in arbiters.iter().enumerate() {
        arbiter.spawn_fn(move || ARBITER_HERE.with(|here| here.set(Some((set, index)))));
    }
    set
}

/// How the bank reaches one account actor.
#[derive(Clone)]
pub(super) struct AccountHandle {
    /// The actor's address.
    pub(super) address: Addr<AccountActor>,
    /// What the actor shares with the registry: its queue count, its working count of wrong
    /// PINs.
    shared: ActorShared,
}

/// A request after admission: handed to an account actor, joined to its original, or refused.
pub struct Submitted(Admission);

/// How a request was admitted (see [`Bank::submit`]).
enum Admission {
    /// Not admitted (a full mailbox): the answer is `busy`.
    Refused,
    /// Handed to the account actor; `publish` shares the answer with retries that join it.
    Sent {
        /// Where the actor's answer arrives.
        answer: oneshot::Receiver<AccountReply>,
        /// Set when retries may join this change.
        publish: Option<JoinablePublisher>,
    },
    /// A retry of a change still in flight: it waits for the original's answer.
    Joined(Joined),
}
