//! The operator's account management: `UnlockCard`, `FreezeAccount`, `UnfreezeAccount`,
//! `CloseAccount`, `SetLimits`, `ClearLimits` (changes, remembered like any other, each logged on
//! the `security` target once made) and `AccountInfo` (a read of the committed state, never the
//! PIN).

use super::{operator, Answer, AnswerBody, Check, Effect, Login, Manage, Started};
use crate::ledger::{Account, Event};
use crate::model::{Card, Code, RequestId};
use crate::protocol::AccountDetails;
use crate::server::pins::mask_card;
use crate::server::Bank;
use std::sync::Arc;

/// The checks of the operator's changes to an account, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Partition,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// The checks of `AccountInfo`, in the order [`start`] runs them.
pub(super) const INFO_CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Partition,
    Check::KnownCard,
    Check::Answered,
];

/// Runs the checks of `action` after the in-flight limit.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &Login,
    id: RequestId,
    operator_token: &str,
    card: Card,
    action: Manage,
) -> Result<Started, Answer> {
    // Check::OperatorAllowance, Check::OperatorToken.
    operator(bank, operator_token, login)?;
    // Check::Partition.
    super::served_here(bank, card)?;
    let event = match action {
        Manage::Info => return info(bank, card),
        Manage::Unlock => Event::CardUnlocked,
        Manage::Freeze => Event::AccountFrozen,
        Manage::Unfreeze => Event::AccountUnfrozen,
        Manage::Close => Event::AccountClosed,
        Manage::SetLimits(limits) => Event::LimitsSet { limits },
        Manage::ClearLimits => Event::LimitsCleared,
    };
    // Check::Joining and Check::Actor now, in the session's turn; Check::Memory and
    // Check::AccountRules in the actor; Check::Storage while the answer is awaited. The change is
    // logged once it is made.
    let submitted = bank.submit(card, id, event);
    let bank = bank.clone();
    let answer = async move {
        let answer = Answer::from(bank.settle(submitted).await);
        if answer.code == Code::Approved {
            let card = mask_card(card);
            let action = action.kind().name();
            tracing::info!(target: "security", %card, action, "operator account change");
        }
        answer
    };
    Ok(Started::Later {
        answer: Box::pin(answer),
        effect: Effect::Nothing,
    })
}

/// Check::KnownCard, then Check::Answered: the committed account's details.
fn info(bank: &Bank, card: Card) -> Result<Started, Answer> {
    let defaults = bank.policy().daily_limits;
    let today = bank.at().business_day;
    let details = bank
        .storage()
        .read_committed_account(card, |account| details(card, account, defaults, today))
        .ok_or(Answer::bare(Code::UnknownCard))?;
    Ok(Started::Now(Answer::approved(AnswerBody::Account(
        Box::new(details),
    ))))
}

/// What the operator sees of `account`: everything but its PIN verifier.
fn details(
    card: Card,
    account: &Account,
    defaults: crate::model::DailyLimits,
    today: u32,
) -> AccountDetails {
    let used = account.usage_on(today);
    AccountDetails {
        card,
        holder: account.holder.to_string(),
        state: account.state,
        locked: account.is_locked(),
        pin_failures: account.pin_failures,
        ledger: account.balance,
        available: account.available(),
        holds: account
            .activity
            .as_ref()
            .map_or(0, |activity| activity.holds.len() as u32),
        in_transit: account.in_transit(),
        limits: account.limits(defaults),
        own_limits: account
            .activity
            .as_ref()
            .is_some_and(|activity| activity.limits.is_some()),
        withdrawn_today: used.amount,
        withdrawals_today: used.count,
    }
}
