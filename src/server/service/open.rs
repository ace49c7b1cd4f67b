//! `CreateAccount`: the operator opens an account.

use super::{operator, submit, Answer, Check, Login, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, Code, RequestId};
use crate::pin;
use crate::server::Bank;
use std::sync::Arc;

/// Longest holder name, in bytes: the ledger's rule, which a record is validated against.
pub use crate::ledger::HOLDER_BYTES_MAX;

/// The checks of `CreateAccount`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Partition,
    Check::Validation,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// The account to open.
pub(super) struct Opening {
    /// The new card number.
    pub(super) card: Card,
    /// The holder's name as sent.
    pub(super) holder: String,
    /// The PIN as sent.
    pub(super) pin: String,
    /// The opening balance.
    pub(super) initial_balance: Amount,
}

/// Runs [`CHECKS`] after the in-flight limit.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &Login,
    id: RequestId,
    operator_token: &str,
    opening: Opening,
) -> Result<Started, Answer> {
    // Check::OperatorAllowance, Check::OperatorToken.
    operator(bank, operator_token, login)?;
    // Check::Partition.
    super::served_here(bank, opening.card)?;
    // Check::Validation.
    let holder = opening.holder.trim().to_string();
    if !pin::is_well_formed(&opening.pin) || holder.is_empty() || holder.len() > HOLDER_BYTES_MAX {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    let card = opening.card;
    let event = Event::AccountOpened {
        holder,
        pin_hash: bank.pins().key().verifier(card, &opening.pin),
        initial_balance: opening.initial_balance,
    };
    // Check::Actor, Check::Memory, Check::AccountRules, Check::Storage: the account actor and
    // the journal, in that order. The PIN is not among the request's parameters: a retry of the
    // id is answered from what the original did, whatever PIN it carries, so no answer tells
    // whether a PIN was the one the account was opened with.
    Ok(submit(bank, card, id, event))
}
