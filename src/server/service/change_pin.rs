//! `ChangePin`: change the verified card's PIN.

use super::{later, Answer, Check, Effect, Login, Started};
use crate::model::{Card, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `ChangePin`, in the order they run (the verified card is checked by
/// [`super::Service::start`], the rest by [`Bank::change_pin`] in this order).
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::VerifiedCard,
    Check::Partition,
    Check::Validation,
    Check::PinAllowance,
    Check::KnownCard,
    Check::AccountState,
    Check::LockedCard,
    Check::PinQueue,
    Check::Actor,
    Check::AccountRules,
    Check::Storage,
];

/// Runs [`CHECKS`] after the verified card. A wrong old PIN that locks the card ends the login
/// too, unless the login changed meanwhile.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &Login,
    card: Card,
    id: RequestId,
    old_pin: String,
    new_pin: String,
) -> Result<Started, Answer> {
    let epoch = login.epoch;
    // Check::Validation of the new PIN, then the PIN checks, the account and the journal: the
    // PIN is checked before the account is reached, so a ChangePin is not submitted in the
    // session's turn.
    let changed = bank
        .clone()
        .change_pin(login.pin_gate.clone(), card, id, old_pin, new_pin);
    Ok(later(changed, Effect::LogOutIfLocked { epoch }))
}
