//! What the bank does by itself, after a request is answered: deliver the second leg of every
//! transfer on its way and settle the first, and expire holds nobody resolved.
//!
//! Both are driven from the committed state, so they survive a crash or a restart unchanged:
//! at start the bank delivers every transfer a sending account still has on its way
//! (`Bank::resume_background`) and watches every open hold. Each step is an ordinary record
//! of one account, decided by its actor and journaled like any request, and each is idempotent:
//! the receiving account remembers every leg it took ([`crate::ledger::Principal::Incoming`]), a
//! sending account settles a leg only while it is on its way, and a hold expires only while it
//! is open and due.

use super::Bank;
use crate::client::{Client, ClientConfig};
use crate::ledger::{Event, Leg, Principal};
use crate::model::{AccountState, Card, Code, HoldId, RequestId};
use crate::protocol::{Operation, Status};
use crate::storage::{Placement, PlacementHook};
use dashmap::DashSet;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How long one delivery of a transfer leg to another node keeps trying before the delivery
/// loop backs off and tries again.
pub const PEER_DELIVERY_DEADLINE: Duration = Duration::from_secs(10);

/// The first wait before a step answered `busy` (or `unavailable`) is tried again; it doubles
/// up to [`RETRY_BACKOFF_MAX`].
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(5);

/// The longest wait between two tries of one step.
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How often the bank looks for holds that are due, by real time (their expiry itself is read
/// from the bank's clock).
pub const HOLD_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The bank's own work in progress.
#[derive(Default)]
pub struct Background {
    /// The transfers being delivered now, by sending card and transfer number: one delivery per
    /// transfer at a time.
    delivering: DashSet<(Card, u64)>,
    /// Open holds by when they are due, by the bank's clock (a hold's own expiry, in the
    /// committed state, is what decides).
    holds: Mutex<BTreeSet<(u64, Card, HoldId)>>,
}

impl Background {
    /// How many transfers are being delivered now.
    pub fn deliveries(&self) -> usize {
        self.delivering.len()
    }
}

impl Bank {
    /// What the committed state of `to` says of a transfer to it: approved when it is open, or
    /// the code the transfer is refused with.
    ///
    /// In cluster mode an account another node serves (or one this node may no longer serve: its
    /// lease not surely fresh) is taken to be open: the node that serves it decides when the leg
    /// arrives, and a refusal there gives the money back to the sender.
    pub fn receiver_code(&self, to: Card) -> Code {
        if self.storage().placement(to) != Placement::Here || !self.storage().still_serves(to) {
            return Code::Approved;
        }
        match self
            .storage()
            .read_committed_account(to, |account| account.state)
        {
            None => Code::UnknownCard,
            Some(AccountState::Open) => Code::Approved,
            Some(AccountState::Frozen) => Code::AccountFrozen,
            Some(AccountState::Closed) => Code::AccountClosed,
        }
    }

    /// Delivers transfer `leg` of `from` (unless it is being delivered already): the receiving
    /// account takes it (or refuses it), then the sending account settles it (giving the money
    /// back after a refusal). Retries `busy` and `unavailable` until done or shutdown.
    pub fn deliver(self: &Arc<Self>, from: Card, leg: u64) {
        if !self.background().delivering.insert((from, leg)) {
            return;
        }
        let bank = self.clone();
        actix::spawn(async move {
            bank.deliver_until_settled(from, leg).await;
            bank.background().delivering.remove(&(from, leg));
        });
    }

    async fn deliver_until_settled(self: &Arc<Self>, from: Card, leg: u64) {
        let mut backoff = RETRY_BACKOFF_MIN;
        // The receiver's answer of a settlement tried and not answered (an actor that crashed
        // after journaling it): if the leg is gone next time, that settlement is the one that
        // took it, and it is counted then.
        let mut settling = None;
        loop {
            if self.is_shutting_down() {
                return;
            }
            let Some(sent) = self.on_its_way(from, leg) else {
                if let Some(receiver) = settling {
                    self.stats().transfer_settled(receiver == Code::Approved);
                }
                return;
            };
            match self.deliver_once(from, &sent, &mut settling).await {
                Some(()) => return,
                None => {
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.shutting_down() => return,
                    }
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
            }
        }
    }

    /// Transfer `leg` of `from`, if the committed state still has it on its way.
    fn on_its_way(&self, from: Card, leg: u64) -> Option<Leg> {
        self.storage()
            .read_committed_account(from, |account| {
                account
                    .outbox()
                    .iter()
                    .find(|sent| sent.leg == leg)
                    .copied()
            })
            .flatten()
    }

    /// One try at both steps; None when one must be tried again (`settling` then names the
    /// receiver's answer when the settlement was tried).
    async fn deliver_once(
        self: &Arc<Self>,
        from: Card,
        sent: &Leg,
        settling: &mut Option<Code>,
    ) -> Option<()> {
        let receipt = RequestId {
            client: from,
            sequence: sent.leg,
        };
        let event = Event::TransferReceived {
            from,
            leg: sent.leg,
            amount: sent.amount,
        };
        // The settlement below is appended to the same log after the receipt, so it cannot become
        // durable without it: no need to wait for the receipt's durability first (which would
        // keep the transfer on the sender's way for one more flush).
        let received = match self.storage().placement(sent.to) {
            Placement::Here => {
                let status = self
                    .decide_before_durable(sent.to, receipt, event)
                    .await
                    .status;
                // Decided on a state another node may have changed (the partition lost meanwhile):
                // not an answer to settle on.
                if !self.storage().still_serves(sent.to) {
                    return None;
                }
                status
            }
            // Cluster mode: the receiving account is another node's; it answers once the
            // receipt is durable there, so the settlement below never outlives it.
            Placement::Elsewhere(address) => self.deliver_to_node(&address, from, sent).await,
            Placement::Nowhere => return None,
        };
        let receiver = match received {
            Code::Approved
            | Code::UnknownCard
            | Code::AccountFrozen
            | Code::AccountClosed
            | Code::InvalidAmount => received,
            Code::Busy | Code::Unavailable => return None,
            other => {
                // Nothing else can answer a leg; never settle on a guess.
                tracing::error!(from, leg = sent.leg, code = %other, "a transfer leg got an unexpected answer; retrying");
                return None;
            }
        };
        *settling = Some(receiver);
        let settle = Event::TransferSettled {
            leg: sent.leg,
            receiver,
        };
        match self.decide(from, sent.request, settle).await.status {
            Code::Approved => {
                self.stats().transfer_settled(receiver == Code::Approved);
                Some(())
            }
            _ => None,
        }
    }

    /// Delivers the second leg of `from`'s transfer `sent` to the node at `address`, which serves
    /// the receiving account ([`crate::protocol::Operation::ReceiveTransfer`], under the receipt
    /// id, so a leg delivered twice is credited once); the receiver's code, or `busy` when it
    /// cannot be known now.
    async fn deliver_to_node(&self, address: &str, from: Card, sent: &Leg) -> Code {
        let Some(token) = self.peer_token() else {
            tracing::error!(
                from,
                leg = sent.leg,
                "a transfer to another node needs the operator token every node shares"
            );
            return Code::Unavailable;
        };
        let mut config = ClientConfig::seeded(address, from ^ sent.leg.rotate_left(32));
        config.client_id = from;
        config.outcome_deadline = PEER_DELIVERY_DEADLINE;
        let receipt = RequestId {
            client: from,
            sequence: sent.leg,
        };
        let operation = Operation::ReceiveTransfer {
            operator_token: token.to_string(),
            from,
            leg: sent.leg,
            to: sent.to,
            amount: sent.amount,
        };
        let reply = match Client::connect(config).await {
            Ok(mut client) => client.call_with_id(receipt, operation).await,
            Err(error) => Err(error),
        };
        match reply {
            Ok(reply) => Code::ALL
                .iter()
                .copied()
                .find(|code| Status::from(*code) == reply.status)
                .unwrap_or(Code::Busy),
            Err(error) => {
                tracing::warn!(from, leg = sent.leg, %address, %error, "transfer leg not delivered to its node yet");
                Code::Busy
            }
        }
    }

    /// Watches hold `hold` of `card`, which expires by the committed state's expiry.
    pub fn watch_hold(&self, card: Card, hold: HoldId) {
        let due = self
            .storage()
            .read_committed_account(card, |account| {
                account.hold(hold).map(|open| open.expires_at_unix_ms)
            })
            .flatten();
        if let Some(due) = due {
            self.background().holds.lock().insert((due, card, hold));
        }
    }

    /// Every hold due by the bank's clock, taken off the watch list.
    fn holds_due(&self) -> Vec<(Card, HoldId)> {
        let now = self.clock().unix_ms();
        let mut holds = self.background().holds.lock();
        let mut due = Vec::new();
        while let Some(&(at, card, hold)) = holds.first() {
            if at > now {
                break;
            }
            holds.pop_first();
            due.push((card, hold));
        }
        due
    }

    /// Expires the holds that are due, every [`HOLD_SWEEP_INTERVAL`], until shutdown. A hold
    /// whose expiry could not be journaled now is watched again.
    pub(super) async fn expire_holds(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(HOLD_SWEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = self.shutting_down() => return,
            }
            for (card, hold) in self.holds_due() {
                let expiry = RequestId {
                    client: super::SERVER_CLIENT_ID,
                    sequence: hold,
                };
                let code = self
                    .decide(card, expiry, Event::HoldExpired { hold })
                    .await
                    .status;
                match code {
                    Code::Approved => self.stats().hold_expired(),
                    // Resolved meanwhile: nothing to do.
                    Code::HoldResolved => {}
                    _ => self.watch_hold(card, hold),
                }
            }
        }
    }

    /// Picks up the work the committed state holds: delivers every transfer on its way and
    /// watches every open hold. Called once at start.
    pub(super) fn resume_background(self: &Arc<Self>) {
        self.resume_accounts(&|_| true);
        let bank = self.clone();
        actix::spawn(bank.expire_holds());
    }

    /// Picks up the work the committed state holds for the accounts `is_member` names: at start
    /// every account, and in cluster mode those of a partition taken over.
    fn resume_accounts(self: &Arc<Self>, is_member: &dyn Fn(Card) -> bool) {
        let (legs, holds) = self.storage().committed().with_committed(|ledger| {
            let mut legs = Vec::new();
            let mut holds = Vec::new();
            for (card, account) in ledger.accounts.iter() {
                let Some(activity) = &account.activity else {
                    continue;
                };
                if !is_member(*card) {
                    continue;
                }
                legs.extend(activity.outbox.iter().map(|sent| (*card, sent.leg)));
                holds.extend(
                    activity
                        .holds
                        .iter()
                        .map(|hold| (hold.expires_at_unix_ms, *card, hold.id)),
                );
            }
            (legs, holds)
        });
        if !legs.is_empty() {
            tracing::info!(
                transfers = legs.len(),
                "delivering transfers still on their way"
            );
        }
        self.background().holds.lock().extend(holds);
        if legs.is_empty() {
            return;
        }
        // `deliver` spawns on the current arbiter; a partition is taken over on the storage's
        // own thread, so the deliveries start on an arbiter of the bank's.
        let bank = self.clone();
        let start = move || {
            for (card, leg) in legs {
                bank.deliver(card, leg);
            }
        };
        if actix_rt::Arbiter::try_current().is_some() {
            start();
        } else if let Some(arbiter) = self.arbiters.first() {
            arbiter.spawn_fn(start);
        }
    }
}

/// Tells the bank when the partitions this node serves change (cluster mode): a partition taken
/// over gets its memory of completed requests and its background work before any request is
/// routed to it; a partition handed over leaves no actor, memory or watched hold behind (a later
/// takeover starts from what PostgreSQL then holds).
pub(super) struct PlacementListener {
    /// The bank told; gone once the server stops.
    pub(super) bank: std::sync::Weak<Bank>,
}

impl PlacementHook for PlacementListener {
    fn adopted(&self, is_member: &(dyn Fn(Card) -> bool + Sync)) {
        let Some(bank) = self.bank.upgrade() else {
            return;
        };
        // An actor of one of these accounts started while another node served it (a late request,
        // a delivery) holds what the committed state said then, that is nothing: it goes, and the
        // next request starts one on the state just taken over.
        bank.accounts.retain(|card, _| !is_member(*card));
        let principals_of = |principal: &Principal| principal.card().is_some_and(is_member);
        bank.storage().with_committed(|ledger| {
            for (principal, clients) in ledger.clients.iter() {
                if principals_of(principal) {
                    bank.clients.insert(*principal, clients.clone());
                } else if principal.card().is_none() {
                    // The operator's windows span partitions: add what the partition's records
                    // remember to what this node does.
                    bank.clients
                        .entry(*principal)
                        .or_default()
                        .merge(*principal, clients.clone());
                }
            }
        });
        bank.resume_accounts(is_member);
    }

    fn released(&self, is_member: &(dyn Fn(Card) -> bool + Sync)) {
        let Some(bank) = self.bank.upgrade() else {
            return;
        };
        bank.accounts.retain(|card, _| !is_member(*card));
        bank.clients
            .retain(|principal, _| !principal.card().is_some_and(is_member));
        bank.background()
            .holds
            .lock()
            .retain(|(_, card, _)| !is_member(*card));
    }
}
