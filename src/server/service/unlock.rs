//! `UnlockCard`: the operator clears a card's wrong PINs.

use super::{operator, Answer, Check, Effect, Login, Started};
use crate::ledger::Event;
use crate::model::{Card, Code, RequestId};
use crate::server::pins::mask_card;
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `UnlockCard`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// Runs [`CHECKS`] after the in-flight limit.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &Login,
    id: RequestId,
    operator_token: &str,
    card: Card,
) -> Result<Started, Answer> {
    // Check::OperatorAllowance, Check::OperatorToken.
    operator(bank, operator_token, login)?;
    // Check::Joining and Check::Actor now, in the session's turn; Check::Memory and Check::AccountRules in the
    // actor; Check::Storage while the answer is awaited.
    let submitted = bank.submit(card, id, Event::CardUnlocked);
    let bank = bank.clone();
    let answer = async move {
        let answer = Answer::from(bank.settle(submitted).await);
        if answer.code == Code::Approved {
            let card = mask_card(card);
            tracing::info!(target: "security", %card, "card unlocked by the operator");
        }
        answer
    };
    Ok(Started::Later {
        answer: Box::pin(answer),
        effect: Effect::Nothing,
    })
}
