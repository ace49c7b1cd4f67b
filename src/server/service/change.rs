//! `Withdraw` and `Deposit`: change the verified card's balance.

use super::{submit, Check, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `Withdraw` and `Deposit`, in the order they run (the verified card is checked by
/// [`super::Service::start`], the rest by the bank from [`Bank::submit`] on).
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
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
