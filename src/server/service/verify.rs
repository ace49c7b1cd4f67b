//! `Verify`: check a card and PIN, and act for that card from then on.

use super::{later, Check, Effect, Login, Started};
use crate::model::{Card, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `Verify`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::Partition,
    Check::PinAllowance,
    Check::KnownCard,
    Check::AccountState,
    Check::LockedCard,
    Check::PinQueue,
    Check::Actor,
    Check::AccountRules,
    Check::Storage,
];

/// Runs [`CHECKS`] after the in-flight limit. A Verify logs out first, so a failed one does not
/// leave the old card; it logs in as `card` only if no later Verify or Logout arrived meanwhile.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &mut Login,
    id: RequestId,
    card: Card,
    pin: String,
) -> Started {
    let epoch = login.next_epoch();
    // Check::Partition: another node's account is verified there (and the login here ends, as
    // after any Verify that fails).
    if let Err(answer) = super::served_here(bank, card) {
        return Started::Later {
            answer: Box::pin(async move { answer }),
            effect: Effect::LogIn { card, epoch },
        };
    }
    // Check::PinAllowance, Check::KnownCard, Check::AccountState, Check::LockedCard, Check::PinQueue, then the
    // account (Check::Actor, Check::AccountRules) and Check::Storage: Bank::verify_pin runs
    // them in that order. The PIN is checked before the account is reached, so a Verify is not
    // submitted in the session's turn; the login epoch keeps pipelined logins in order instead.
    let checked = bank
        .clone()
        .verify_pin(login.pin_gate.clone(), card, id, pin);
    later(checked, Effect::LogIn { card, epoch })
}
