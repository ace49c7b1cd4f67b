//! `PlaceHold`, `CompleteHold`, `VoidHold`: reserve money on the verified card's account, then
//! post it or release it. A hold nobody resolves expires after the configured time, by the bank's
//! clock ([`Bank::expire_holds`]).

use super::{later, Answer, AnswerBody, Check, Effect, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, Code, HoldId, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of the hold operations, in the order they run: those of every change of the
/// verified card's account.
pub(super) const CHECKS: &[Check] = super::change::CHECKS;

/// A hold of `amount` on `card`, lasting the configured time.
pub(super) fn place(bank: &Arc<Bank>, card: Card, id: RequestId, amount: Amount) -> Started {
    let ttl = bank.banking().hold_ttl;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let submitted = bank.submit(card, id, Event::HoldPlaced { amount, ttl_ms });
    let bank = bank.clone();
    Started::Later {
        answer: Box::pin(async move {
            let outcome = bank.settle(submitted).await;
            match (outcome.status, outcome.reference, outcome.balance) {
                (Code::Approved, Some(hold_id), Some(ledger)) => {
                    bank.watch_hold(card, hold_id);
                    Answer::approved(AnswerBody::Hold {
                        hold_id,
                        ledger,
                        available: outcome.available.unwrap_or(ledger),
                    })
                }
                _ => Answer::from(outcome),
            }
        }),
        effect: Effect::Nothing,
    }
}

/// The completion of hold `hold` of `card`, for `amount` or all of it.
pub(super) fn complete(
    bank: &Arc<Bank>,
    card: Card,
    id: RequestId,
    hold: HoldId,
    amount: Option<Amount>,
) -> Started {
    settle_change(bank, card, id, Event::HoldCompleted { hold, amount })
}

/// The release of hold `hold` of `card`.
pub(super) fn void(bank: &Arc<Bank>, card: Card, id: RequestId, hold: HoldId) -> Started {
    settle_change(bank, card, id, Event::HoldVoided { hold })
}

fn settle_change(bank: &Arc<Bank>, card: Card, id: RequestId, event: Event) -> Started {
    let submitted = bank.submit(card, id, event);
    let bank = bank.clone();
    later(async move { bank.settle(submitted).await }, Effect::Nothing)
}
