//! `Statement`: the verified card's last movements, from the committed state.

use super::{Answer, AnswerBody, Check, Started};
use crate::model::{Card, Code};
use crate::server::Bank;

/// The checks of `Statement`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
    Check::Validation,
    Check::KnownCard,
    Check::Answered,
];

/// Runs [`CHECKS`] after the verified card, in the session's turn.
pub(super) fn start(bank: &Bank, card: Card, count: u32) -> Result<Started, Answer> {
    // Check::Validation.
    if count == 0 {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    let count = count.min(bank.banking().statement_movements_max) as usize;
    // Check::KnownCard: every acknowledged movement is in the committed state.
    let movements = bank
        .storage()
        .read_committed_account(card, |account| account.movements(count))
        .ok_or(Answer::bare(Code::UnknownCard))?;
    // Check::Answered.
    Ok(Started::Now(Answer::approved(AnswerBody::Statement(
        movements,
    ))))
}
