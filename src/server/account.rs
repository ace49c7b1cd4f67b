//! The account actor: the only place an account's state changes.
//!
//! One actor per card, started on first use on one of the bank's arbiters, stopped when idle, and
//! run under [`actix::Supervisor`]. Each [`Decide`] is handled in one synchronous call: look the
//! request id up in the memory of completed requests of the request's principal (never for a PIN
//! attempt, which is always decided afresh), decide with the pure rules of
//! [`crate::ledger`], queue the record in the journal, apply it to the working copy, remember the
//! request. The reply does not wait for the disk here; the caller waits for the record's position
//! to become durable, so the actor can decide the next request meanwhile (pipelining), and journal
//! order equals decision order. The time stamped on records and the idleness that retires the
//! actor are read from the bank's clock ([`Bank::clock`]), never from the system.
//!
//! A crash (a panic inside the decision, caught, or an injected fault) becomes `ctx.stop()`. The
//! supervisor then calls [`Supervised::restarting`], which throws the working copy away, and
//! [`Actor::started`] rebuilds it from the *committed* state once everything the actor itself
//! queued is durable. The message being handled is lost: its sender answers `busy`, and the client's retry
//! with the same id settles the outcome. Why a panic cannot leave the state half-changed: the
//! decision is pure and runs first; only after it returns are the record queued and the state
//! mutated, by steps that do not panic.

use super::Bank;
use crate::faults::CrashPoint;
use crate::ledger::{
    self, Account, Clients, Decision, Event, Fingerprint, Lsn, Outcome, Principal, Record, Seen,
};
use crate::model::{Card, Code, RequestId};
use actix::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The answer of an account actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The reply to give.
    pub outcome: Outcome,
    /// The journal position that must be durable before the reply may leave.
    pub durable_after: Lsn,
}

/// Why an account actor gave no answer; the request's outcome is settled by the client's retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoAnswer {
    /// The actor crashed while handling the request.
    Crashed,
    /// The actor is retiring (idle) and no longer decides; the next attempt reaches its successor.
    Retired,
}

/// An answer carrying only a status, released once `durable_after` is durable.
fn answer(status: Code, durable_after: Lsn) -> Answer {
    Answer {
        outcome: Outcome::bare(status),
        durable_after,
    }
}

/// A decision that panicked (or was made to, by the fault plan), caught by the panic trap.
struct Trapped;

/// Decide one request on this account.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Decide {
    /// The request.
    pub request: RequestId,
    /// What it asks.
    pub event: Event,
    /// Where the answer goes. Dropped unanswered when the actor crashes.
    pub reply: oneshot::Sender<Result<Answer, NoAnswer>>,
}

/// What an account actor shares with the registry that points at it.
#[derive(Clone, Debug, Default)]
pub struct ActorShared {
    /// Messages sent to the actor and not yet taken. actix gives every sender (every `Addr`
    /// clone) a slot of its own beyond the mailbox capacity, so the bank counts for itself.
    pub queued: Arc<AtomicUsize>,
    /// The wrong PINs the actor's working copy holds, as of its last turn that changed it (0
    /// before it loaded). A right PIN is approved from the committed state without a turn of the
    /// actor only while this is 0 too: a wrong attempt decided and not yet durable is here
    /// before the committed state shows it (see `Bank::verify_pin`).
    pub pin_failures: Arc<AtomicU8>,
}

/// One account's actor.
pub struct AccountActor {
    card: Card,
    bank: Arc<Bank>,
    /// The working copy; `None` while loading or when the card has no account yet.
    account: Option<Account>,
    /// The position of the last record this actor queued.
    last_lsn: Lsn,
    /// When this actor last decided something, by the bank's monotonic clock; it retires after
    /// [`super::Limits::account_idle`] without a request.
    last_active: Duration,
    /// Messages sent to this actor and not yet taken; the bank refuses more beyond the mailbox
    /// capacity.
    queued: Arc<AtomicUsize>,
    /// The wrong PINs of the working copy, published in the turn that changes them (see
    /// [`ActorShared::pin_failures`]).
    pin_failures: Arc<AtomicU8>,
    /// Set when the actor left the registry: from then on it decides nothing. Kept across
    /// restarts, because a restarted retiree must not start deciding again next to its successor.
    retired: bool,
}

impl AccountActor {
    /// An actor for `card`; its state is loaded when it starts.
    pub fn new(card: Card, bank: Arc<Bank>, shared: &ActorShared) -> Self {
        AccountActor {
            card,
            last_active: bank.clock().now(),
            bank,
            queued: shared.queued.clone(),
            pin_failures: shared.pin_failures.clone(),
            account: None,
            last_lsn: 0,
            retired: false,
        }
    }

    /// Decides one request, in steps: the gate (a retired actor, a locked card), the memory of
    /// completed requests, the pure decision under the panic trap, then journaling, applying and
    /// remembering, and the injected crash after journaling.
    fn decide(
        &mut self,
        request: RequestId,
        mut event: Event,
        ctx: &mut Context<Self>,
    ) -> Result<Answer, NoAnswer> {
        if let Some(early) = self.gate(&event) {
            return early;
        }
        let bank = self.bank.clone();
        let at = bank.at();
        let now = at.unix_ms;
        // The memory of completed requests of the principal this request was authenticated as:
        // none for a PIN attempt, which is always decided afresh. The memory's lock is held until
        // the request is remembered, so two attempts of one id are decided one after the other.
        let mut memory = Principal::of(self.card, &event).map(|principal| {
            (
                principal,
                bank.clients_of(principal),
                Fingerprint::of(self.card, &event),
            )
        });
        if let Some((principal, clients, fingerprint)) = &memory {
            if let Some(answer) = self.recall(*principal, clients, request, fingerprint, now) {
                return Ok(answer);
            }
            // A reversal is told whether the card's memory knows its original (the rules then
            // tell a debit too old to reverse from one never seen).
            if let Event::Reversal {
                original,
                original_known,
                ..
            } = &mut event
            {
                *original_known = clients.knows(*principal, original.client, original.sequence);
            }
        }
        let crash = bank
            .faults()
            .as_ref()
            .and_then(|faults| faults.crash(request));
        let record = match self.decide_trapped(request, event, at, crash) {
            Ok(Decision::Record(record)) => record,
            Ok(Decision::Answer(outcome)) => {
                // Nothing to remember, so the request takes no room in the memory.
                return Ok(Answer {
                    outcome,
                    durable_after: self.last_lsn,
                });
            }
            Err(Trapped) => {
                if let (Some(faults), Some(CrashPoint::BeforeJournal)) = (&bank.faults(), crash) {
                    faults.crashed();
                }
                tracing::error!(card = self.card, %request, "account actor crashed in a decision; restarting it");
                ctx.stop();
                return Err(NoAnswer::Crashed);
            }
        };
        let clients = memory
            .as_mut()
            .map(|(principal, clients, _)| (*principal, &mut **clients));
        let answer = self.journal_and_apply(record, clients, now, ctx)?;
        if let (Some(faults), Some(CrashPoint::AfterJournal)) = (&bank.faults(), crash) {
            faults.crashed();
            tracing::warn!(card = self.card, %request, "injected crash of the account actor after journaling");
            ctx.stop();
            return Err(NoAnswer::Crashed);
        }
        Ok(answer)
    }

    /// The answer given before anything is looked up: none from a retired actor, and
    /// `card_locked` for any PIN attempt on a locked card (not even the replay of one approved
    /// before the lock). Also marks the actor active.
    fn gate(&mut self, event: &Event) -> Option<Result<Answer, NoAnswer>> {
        if self.retired {
            return Some(Err(NoAnswer::Retired));
        }
        self.last_active = self.bank.clock().now();
        if event.presents_pin() && self.account.as_ref().is_some_and(Account::is_locked) {
            return Some(Ok(answer(Code::CardLocked, self.last_lsn)));
        }
        None
    }

    /// The answer the memory of completed requests gives, if any: the original's for a replay
    /// (after its record), `request_id_conflict` (after the original's record and this actor's
    /// latest), `stale_request`, or `busy` when the memory has no room for the client.
    fn recall(
        &self,
        principal: Principal,
        clients: &Clients,
        request: RequestId,
        fingerprint: &Fingerprint,
        now: u64,
    ) -> Option<Answer> {
        match clients.check(principal, request.client, request.sequence, fingerprint) {
            Seen::Replay(done) => {
                self.bank.stats().replay_served();
                return Some(Answer {
                    outcome: done.outcome,
                    durable_after: done.lsn,
                });
            }
            Seen::Conflict(lsn) => {
                return Some(answer(Code::RequestIdConflict, lsn.max(self.last_lsn)))
            }
            Seen::Stale => return Some(answer(Code::StaleRequest, self.last_lsn)),
            Seen::New => {}
        }
        (!clients.admits(principal, request.client, now)).then(|| answer(Code::Busy, 0))
    }

    /// The pure decision, inside the panic trap (see the module's documentation): a panic, or
    /// the injected crash before journaling, becomes `Err(Trapped)` and changes nothing.
    fn decide_trapped(
        &self,
        request: RequestId,
        event: Event,
        at: ledger::At,
        crash: Option<CrashPoint>,
    ) -> Result<Decision, Trapped> {
        let account = self.account.as_ref();
        let card = self.card;
        let policy = self.bank.policy();
        catch_unwind(AssertUnwindSafe(|| {
            if crash == Some(CrashPoint::BeforeJournal) {
                // Unwinds exactly like a panic, without the panic hook's report on stderr.
                std::panic::resume_unwind(Box::new(format!(
                    "injected crash of the account actor for card {card}"
                )));
            }
            ledger::decide(account, card, request, event, at, &policy)
        }))
        .map_err(|_| Trapped)
    }

    /// Queues `record` in the journal, applies it to the working copy and remembers it in
    /// `clients` (the principal's memory, locked by the caller). A full or failed journal
    /// answers `busy` or `unavailable` and changes nothing; a record that does not apply stops
    /// the actor, which reloads.
    fn journal_and_apply(
        &mut self,
        record: Record,
        clients: Option<(Principal, &mut Clients)>,
        now: u64,
        ctx: &mut Context<Self>,
    ) -> Result<Answer, NoAnswer> {
        let lsn = match self.bank.storage().append(record.clone()) {
            Ok(lsn) => lsn,
            Err(crate::journal::AppendError::Busy) => return Ok(answer(Code::Busy, 0)),
            Err(crate::journal::AppendError::Unavailable(_)) => {
                return Ok(answer(Code::Unavailable, 0))
            }
        };
        if let Err(error) = ledger::apply(&mut self.account, &record) {
            // decide and apply disagree: a bug. The journal will refuse the record too and fail
            // closed; this actor reloads.
            tracing::error!(%error, "record does not apply to the state it was decided on");
            ctx.stop();
            return Err(NoAnswer::Crashed);
        }
        self.publish_pin_failures();
        if let Some((principal, clients)) = clients {
            for (client, done) in ledger::completed_entries(&record, lsn) {
                clients.remember(principal, client, done, now);
            }
        }
        self.last_lsn = lsn;
        Ok(Answer {
            outcome: record.outcome,
            durable_after: lsn,
        })
    }

    /// Loads the working copy from the committed state, after everything already queued (by this
    /// actor's previous life or a predecessor) is durable. The mailbox waits meanwhile.
    fn load(&mut self, ctx: &mut Context<Self>) {
        let journal = self.bank.storage().clone();
        let card = self.card;
        // Only this actor's own records can still be on their way to the disk: a predecessor
        // retires only once its records are durable (see the idle check in `started`). A fresh
        // actor waits for nothing; one restarting after a crash waits for what it queued.
        let own_records = self.last_lsn;
        ctx.wait(
            async move {
                let durable = journal.wait_durable(own_records).await;
                (durable, journal.committed_account(card))
            }
            .into_actor(self)
            .map(|(durable, account), actor, ctx| {
                if let Err(reason) = durable {
                    tracing::error!(card = actor.card, %reason, "cannot load account: journal unavailable");
                    actor.retire(ctx);
                }
                actor.account = account;
                actor.publish_pin_failures();
            }),
        );
    }

    /// Publishes the working copy's count of wrong PINs, for [`Bank::pin_failures_deciding`].
    fn publish_pin_failures(&self) {
        let failures = self
            .account
            .as_ref()
            .map_or(0, |account| account.pin_failures);
        self.pin_failures.store(failures, Ordering::Release);
    }

    /// Leaves the registry and stops; a later request starts a successor.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        self.bank
            .accounts
            .remove_if(&self.card, |_, registered| registered.address == me);
        self.retired = true;
        ctx.stop();
    }
}

impl Actor for AccountActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.bank.limits().mailbox_capacity);
        self.bank.stats().account_started();
        self.last_active = self.bank.clock().now();
        self.load(ctx);
        let idle = self.bank.limits().account_idle;
        ctx.run_interval(
            idle.max(Duration::from_millis(10)) / 2,
            move |actor, ctx| {
                // Retire only once everything this actor queued is durable, so that a successor
                // can load the committed state without waiting.
                let durable = actor.bank.storage().stats().durable_lsn;
                let idle_for = actor.bank.clock().now().saturating_sub(actor.last_active);
                if idle_for >= idle && durable >= actor.last_lsn {
                    actor.retire(ctx);
                }
            },
        );
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.bank.stats().account_stopped();
    }
}

impl Supervised for AccountActor {
    fn restarting(&mut self, _ctx: &mut Context<Self>) {
        // Whatever was in memory is not trusted: started() reloads from the committed state.
        self.account = None;
        if !self.retired {
            self.bank.stats().actor_restarted();
            tracing::info!(card = self.card, "account actor restarting");
        }
    }
}

impl Handler<Decide> for AccountActor {
    type Result = ();

    fn handle(&mut self, message: Decide, ctx: &mut Context<Self>) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        let result = self.decide(message.request, message.event, ctx);
        // A crash loses the reply, like a real one would: the sender sees its channel closed.
        if let Ok(answer) = result {
            let _ = message.reply.send(Ok(answer));
        } else if let Err(NoAnswer::Retired) = result {
            let _ = message.reply.send(Err(NoAnswer::Retired));
        }
    }
}
