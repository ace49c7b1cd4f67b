//! `Withdraw` and `Deposit`: change the verified card's balance.

use super::{later, Check, Effect, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `Withdraw` and `Deposit`, in the order they run (the verified card is checked by
/// [`super::Service::start`], the rest by the bank from [`Bank::submit`] on).
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// A withdrawal of `amount` from `card`.
pub(super) fn withdraw(bank: &Arc<Bank>, card: Card, id: RequestId, amount: Amount) -> Started {
    submit(bank, card, id, Event::Withdrawal { amount })
}

/// A deposit of `amount` into `card`.
pub(super) fn deposit(bank: &Arc<Bank>, card: Card, id: RequestId, amount: Amount) -> Started {
    submit(bank, card, id, Event::Deposit { amount })
}

/// Check::Joining and Check::Actor run now, in the session's turn (two changes pipelined on one
/// connection reach the account in the order they arrived); Check::Memory and
/// Check::AccountRules in the actor; Check::Storage while the answer is awaited.
fn submit(bank: &Arc<Bank>, card: Card, id: RequestId, event: Event) -> Started {
    let submitted = bank.submit(card, id, event);
    let bank = bank.clone();
    later(async move { bank.settle(submitted).await }, Effect::Nothing)
}
