//! `Transfer`: move money from the verified card's account to another card's account.
//!
//! The sending account decides the first leg (the money leaves it and is on its way); once that
//! record is durable the transfer is approved, and the bank delivers the second leg to the
//! receiving account and settles the first ([`Bank::deliver`]), after any crash or restart too.

use super::{later, Answer, Check, Effect, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, Code, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `Transfer`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
    Check::Validation,
    Check::Receiver,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// Runs [`CHECKS`] after the verified card.
pub(super) fn start(
    bank: &Arc<Bank>,
    card: Card,
    id: RequestId,
    to: Card,
    amount: Amount,
) -> Result<Started, Answer> {
    // Check::Validation.
    if to == card {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    // Check::Receiver: what the receiving account's committed state says, decided on by the
    // sending account's rules (and remembered with the request).
    let receiver = bank.receiver_code(to);
    let submitted = bank.submit(
        card,
        id,
        Event::TransferSent {
            to,
            amount,
            receiver,
        },
    );
    let bank = bank.clone();
    Ok(later(
        async move {
            let outcome = bank.settle(submitted).await;
            if let (Code::Approved, Some(leg)) = (outcome.status, outcome.reference) {
                // A replay finds the leg delivered already, or delivers it (once: one delivery
                // per leg runs at a time).
                bank.deliver(card, leg);
            }
            outcome
        },
        Effect::Nothing,
    ))
}
