//! `Balance`: read the verified card's committed balance.

use super::{Answer, AnswerBody, Check, Started};
use crate::model::{Card, Code};
use crate::server::Bank;

/// The checks of `Balance`, in the order [`start`] runs them (the verified card is checked by
/// [`super::Service::start`] for every kind that needs one).
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
    Check::KnownCard,
    Check::Answered,
];

/// Runs [`CHECKS`] after the verified card, in the session's turn.
pub(super) fn start(bank: &Bank, card: Card) -> Result<Started, Answer> {
    // Check::KnownCard: every acknowledged change is in the committed balance.
    let (ledger, available) = bank
        .storage()
        .read_committed_account(card, |account| (account.balance, account.available()))
        .ok_or(Answer::bare(Code::UnknownCard))?;
    // Check::Answered.
    Ok(Started::Now(Answer::approved(AnswerBody::Balances {
        ledger,
        available,
    })))
}
