//! A request an acquirer makes for the card its message names (the ISO 8583 door).
//!
//! No card is verified on an acquirer's connection: every message names its card. A message that
//! takes money out of the account, reserves it or reads the account carries the card's PIN, which
//! goes through exactly the checks of a `Verify` (the failure allowance, here the terminal's; the
//! account's state; the lock; the PIN) before the operation starts on that card. An advice
//! (completing or voiding a hold, a reversal) carries no PIN: the acquirer tells the bank what
//! happened at its terminal, and the link it arrives on is trusted for that (docs/SECURITY.md).

use super::{on_account, Answer, Check, Command, Effect, Login, Started};
use crate::model::{Card, Code, Kind, RequestId};
use crate::server::tls::Terminal;
use crate::server::Bank;
use std::sync::Arc;

/// The checks an acquirer's request of `kind` goes through, in order: the PIN's (when it carries
/// one, ending in the actor's decision on the PIN and its journal record when one is written)
/// and then the operation's own, from after the verified card that the message's card stands in
/// for. For docs/ISO8583.md.
pub fn acquirer_checks(kind: Kind, with_pin: bool) -> Vec<Check> {
    // The in-flight limit and the validation of the kind, then, with a PIN, those of `Verify`.
    let mut list = vec![Check::InFlight, Check::Validation];
    if with_pin {
        list.extend(
            super::verify::CHECKS
                .iter()
                .filter(|check| **check != Check::InFlight),
        );
    }
    // Then the operation's own, as for the card verified on a connection.
    for check in super::checks(kind) {
        if !matches!(check, Check::InFlight | Check::VerifiedCard) && !list.contains(check) {
            list.push(*check);
        }
    }
    list
}

/// The table of docs/ISO8583.md's order of checks: for each operation an acquirer may ask for,
/// its checks in order ([`acquirer_checks`]). `tests/precedence.rs` keeps the document equal to
/// this.
pub fn acquirer_precedence_markdown() -> String {
    let mut text = String::from("| operation | PIN | checks, in order |\n| --- | --- | --- |\n");
    for kind in Kind::ALL {
        if let Some(with_pin) = allowed(*kind) {
            let steps: Vec<&str> = acquirer_checks(*kind, with_pin)
                .iter()
                .map(|check| check.name())
                .collect();
            let pin = if with_pin { "yes" } else { "no" };
            text += &format!("| `{kind:?}` | {pin} | {} |\n", steps.join(" → "));
        }
    }
    text
}

/// The kinds an acquirer may ask for, and whether each must carry the card's PIN.
pub fn allowed(kind: Kind) -> Option<bool> {
    match kind {
        Kind::Balance
        | Kind::Withdraw
        | Kind::Deposit
        | Kind::Transfer
        | Kind::PlaceHold
        | Kind::Statement => Some(true),
        Kind::CompleteHold | Kind::VoidHold | Kind::Reverse => Some(false),
        _ => None,
    }
}

/// One acquirer's request, as [`super::Service::start`] unpacked it.
pub(super) struct Request {
    /// The request id its duplicate key maps to.
    pub(super) id: RequestId,
    /// The card the message names.
    pub(super) card: Card,
    /// The PIN it carries, if any.
    pub(super) pin: Option<String>,
    /// The acquirer's terminal it comes from; none for a bincode `ForCard`.
    pub(super) terminal: Option<Arc<str>>,
    /// The operation.
    pub(super) then: Command,
}

/// Runs the checks of [`acquirer_checks`] after the in-flight limit.
pub(super) fn start(bank: &Arc<Bank>, login: &Login, request: Request) -> Result<Started, Answer> {
    // Check::Validation: an operation an acquirer may ask for, with a PIN exactly when it needs
    // one.
    match allowed(request.then.kind()) {
        Some(needs_pin) if needs_pin == request.pin.is_some() => {}
        _ => return Err(Answer::bare(Code::InvalidRequest)),
    }
    // Check::Partition, before the PIN: another node's account is checked there.
    super::served_here(bank, request.card)?;
    let Some(pin) = request.pin else {
        return on_account(bank, request.card, request.id, request.then);
    };
    // An acquirer's failures count against its terminal, whatever connection its messages
    // arrive on; a bincode ForCard's against the connection, as a Verify's.
    let gate = match &request.terminal {
        Some(terminal) => {
            let terminal = Terminal {
                name: Some(format!("iso8583 terminal {terminal}")),
                fingerprint: String::new(),
            };
            bank.pins().gate_for(login.peer, Some(&terminal))
        }
        None => login.pin_gate.clone(),
    };
    let bank = bank.clone();
    let (card, id, then) = (request.card, request.id, request.then);
    Ok(Started::Later {
        answer: Box::pin(async move {
            // Check::PinAllowance to Check::Storage, as for a Verify.
            let checked = bank.clone().verify_pin(gate, card, id, pin).await;
            if checked.status != Code::Approved {
                return Answer::from(checked);
            }
            // The operation's own checks, from its validation on.
            match on_account(&bank, card, id, then) {
                Ok(Started::Now(answer)) | Err(answer) => answer,
                Ok(Started::Later { answer, .. }) => answer.await,
            }
        }),
        effect: Effect::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_checked_before_every_operation_that_carries_one() {
        let withdraw = acquirer_checks(Kind::Withdraw, true);
        assert_eq!(withdraw.first(), Some(&Check::InFlight));
        let pin = withdraw
            .iter()
            .position(|check| *check == Check::PinAllowance);
        let joining = withdraw.iter().position(|check| *check == Check::Joining);
        assert!(pin < joining, "{withdraw:?}");
        assert!(!withdraw.contains(&Check::VerifiedCard));
        let reverse = acquirer_checks(Kind::Reverse, false);
        assert!(!reverse.contains(&Check::PinAllowance), "{reverse:?}");
        assert_eq!(allowed(Kind::ChangePin), None);
        assert_eq!(allowed(Kind::CompleteHold), Some(false));
    }
}
