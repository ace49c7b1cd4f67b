//! `Reverse`: give back an earlier withdrawal or completed hold of the verified card, as an ATM
//! does when it could not dispense (all of it) or never got the reply.

use super::{submit, Answer, Check, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, Code, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `Reverse`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
    Check::Validation,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// Runs [`CHECKS`] after the verified card. The original is looked up on the verified card
/// only: another card's request ids are out of reach, as for every request.
pub(super) fn start(
    bank: &Arc<Bank>,
    card: Card,
    id: RequestId,
    original: RequestId,
    dispensed: Option<Amount>,
) -> Result<Started, Answer> {
    // Check::Validation.
    if original == id {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    let event = Event::Reversal {
        original,
        dispensed,
        // Filled in by the account actor from the card's memory of completed requests.
        original_known: false,
    };
    Ok(submit(bank, card, id, event))
}
