//! The account rules: how a request is decided against an account ([`decide`]), how a record moves
//! the accounts it names to their next state ([`apply_to`]), and which records could ever have
//! been decided ([`Record::validate`]).
//!
//! The order of the checks in [`decide`] is the precedence of the account rules' codes, as
//! docs/PROTOCOL.md lists it: the account's state (closed, then frozen), the parameters (the
//! amount, the hold), the room (holds, transfers on their way), the daily limits (count, then
//! amount), then the money (insufficient funds).

use super::{
    Account, Debit, Decision, Event, Hold, LedgerError, Leg, Outcome, Record, HOLDER_BYTES_MAX,
    HOLDS_PER_ACCOUNT_MAX, REVERSAL_IN_PLACE, REVERSIBLE_DEBITS_MAX, STATEMENT_MOVEMENTS_MAX,
    TRANSFERS_IN_TRANSIT_SPAN,
};
use super::{Amount, Card, Code, RequestId, PIN_ATTEMPTS_MAX};
use crate::model::{AccountState, DailyLimits, HoldId, Movement, MovementKind};
use std::collections::VecDeque;

/// When a request is decided: the bank's clock, and the business day it falls in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct At {
    /// Milliseconds since the Unix epoch, by the bank's clock.
    pub unix_ms: u64,
    /// Days since 1970-01-01 in the bank's time zone.
    pub business_day: u32,
}

/// The bank's settings the rules read: what applies to an account that has no value of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The daily limits of a card without limits of its own.
    pub daily_limits: DailyLimits,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            daily_limits: DailyLimits::NONE,
        }
    }
}

/// Decides `event` for `request` against `account` (None when the card has no account), at
/// `at`, under `policy`.
///
/// Pure: it reads the account and returns what should happen; the caller applies it. Every record
/// it returns passes [`Record::validate`].
pub fn decide(
    account: Option<&Account>,
    card: Card,
    request: RequestId,
    event: Event,
    at: At,
    policy: &Policy,
) -> Decision {
    let outcome = match outcome_of(account, &event, at, policy) {
        Ok(outcome) => outcome,
        Err(answer) => return Decision::Answer(answer),
    };
    let record = Record {
        request,
        card,
        at_unix_ms: at.unix_ms,
        business_day: at.business_day,
        event,
        outcome,
    };
    debug_assert_eq!(record.validate(), Ok(()), "decide made an invalid record");
    Decision::Record(record)
}

/// The outcome to journal (`Ok`), or an answer that changes nothing and is not journaled (`Err`).
fn outcome_of(
    account: Option<&Account>,
    event: &Event,
    at: At,
    policy: &Policy,
) -> Result<Outcome, Outcome> {
    let Some(account) = account else {
        return match event {
            Event::AccountOpened {
                initial_balance, ..
            } => Ok(approved_with(*initial_balance, *initial_balance)),
            _ => Err(Outcome::bare(Code::UnknownCard)),
        };
    };
    if let Event::AccountOpened { .. } = event {
        // A closed account keeps its card: it is never opened again.
        return Ok(Outcome::bare(Code::CardExists));
    }
    if event.presents_pin() {
        return pin_gate(account, event);
    }
    if let Some(refused) = state_gate(account, event) {
        return refused;
    }
    match event {
        Event::AccountOpened { .. }
        | Event::PinAttempt { .. }
        | Event::PinChanged { .. }
        | Event::PinRekeyed { .. } => unreachable!("decided above"),
        Event::Withdrawal { amount } => Ok(cash_withdrawal(account, *amount, at, policy)),
        Event::Deposit { amount } => Ok(credit(account, *amount)),
        Event::TransferSent {
            amount, receiver, ..
        } => transfer_sent(account, *amount, *receiver),
        Event::TransferReceived { amount, .. } => Ok(credit(account, *amount)),
        Event::TransferSettled { leg, receiver } => transfer_settled(account, *leg, *receiver),
        Event::HoldPlaced { amount, .. } => Ok(hold_placed(account, *amount, at, policy)),
        Event::HoldCompleted { hold, amount } => Ok(hold_completed(account, *hold, *amount, at)),
        // The released amount comes back to the available balance: the record carries the
        // balances after the release, which is what applying it checks.
        Event::HoldVoided { hold } => Ok(match open_hold(account, *hold, at) {
            Ok(open) => released(account, open),
            Err(code) => balances_now(account, code),
        }),
        // Nothing journaled unless the hold is open and due: `hold_resolved` when it is not
        // open, `busy` when it is not due yet.
        Event::HoldExpired { hold } => match account.hold(*hold) {
            Some(open) if open.expires_at_unix_ms <= at.unix_ms => Ok(released(account, open)),
            Some(_) => Err(Outcome::bare(Code::Busy)),
            None => Err(Outcome::bare(Code::HoldResolved)),
        },
        Event::Reversal {
            original,
            dispensed,
            original_known,
        } => Ok(reversal(account, *original, *dispensed, *original_known)),
        Event::AccountClosed => Ok(close(account)),
        Event::CardUnlocked
        | Event::AccountFrozen
        | Event::AccountUnfrozen
        | Event::LimitsSet { .. }
        | Event::LimitsCleared => Ok(Outcome::bare(Code::Approved)),
    }
}

/// The account state's refusal of `event`, if any: a closed account refuses everything but the
/// bank's own steps; a frozen one refuses debits and incoming transfers (a PIN check is refused
/// before it reaches the rules, see [`pin_gate`]).
fn state_gate(account: &Account, event: &Event) -> Option<Result<Outcome, Outcome>> {
    let internal = matches!(
        event,
        Event::TransferSettled { .. } | Event::HoldExpired { .. }
    );
    // Closing a closed account is answered by the close rule itself (approved, nothing changes).
    let closing_again = matches!(event, Event::AccountClosed);
    let code = match account.state {
        AccountState::Open => return None,
        _ if internal || closing_again => return None,
        AccountState::Closed => Code::AccountClosed,
        AccountState::Frozen => {
            let refused_when_frozen = matches!(
                event,
                Event::Withdrawal { .. }
                    | Event::TransferSent { .. }
                    | Event::TransferReceived { .. }
                    | Event::HoldPlaced { .. }
                    | Event::HoldCompleted { .. }
            );
            if !refused_when_frozen {
                return None;
            }
            Code::AccountFrozen
        }
    };
    Some(Ok(balances_now(account, code)))
}

/// A PIN check's answer before the rules: a closed or frozen account refuses it without a record
/// (nothing about the PIN is learnt, nothing is counted), a locked card too.
fn pin_gate(account: &Account, event: &Event) -> Result<Outcome, Outcome> {
    match account.state {
        AccountState::Closed => return Err(Outcome::bare(Code::AccountClosed)),
        AccountState::Frozen => return Err(Outcome::bare(Code::AccountFrozen)),
        AccountState::Open => {}
    }
    if account.is_locked() {
        return Err(Outcome::bare(Code::CardLocked));
    }
    match event {
        Event::PinAttempt { correct } => pin_attempt_outcome(account, *correct),
        _ => Ok(Outcome::bare(Code::Approved)),
    }
}

fn pin_attempt_outcome(account: &Account, correct: bool) -> Result<Outcome, Outcome> {
    if !correct {
        let locks = account.pin_failures + 1 >= PIN_ATTEMPTS_MAX;
        return Ok(Outcome::bare(if locks {
            Code::CardLocked
        } else {
            Code::IncorrectPin
        }));
    }
    // A right PIN with no wrong ones to clear changes nothing: answered, not journaled (a retry
    // simply checks the PIN again).
    if account.pin_failures == 0 {
        Err(Outcome::bare(Code::Approved))
    } else {
        Ok(Outcome::bare(Code::Approved))
    }
}

/// A withdrawal of `amount` from the available balance, within the daily limits.
fn cash_withdrawal(account: &Account, amount: Amount, at: At, policy: &Policy) -> Outcome {
    if amount == 0 {
        return balances_now(account, Code::InvalidAmount);
    }
    if let Err(code) = within_limits(account, amount, at, policy) {
        return balances_now(account, code);
    }
    match account.available().checked_sub(amount) {
        Some(available) => approved_with(account.balance - amount, available),
        None => balances_now(account, Code::InsufficientFunds),
    }
}

/// Whether one more withdrawal of `amount` on `at`'s business day keeps within the limits.
fn within_limits(account: &Account, amount: Amount, at: At, policy: &Policy) -> Result<(), Code> {
    let limits = account.limits(policy.daily_limits);
    let used = account.usage_on(at.business_day);
    if used.count >= limits.count {
        return Err(Code::WithdrawalCountExceeded);
    }
    // Saturating: a sum beyond the largest amount is beyond every limit but "no limit", which
    // it must not exceed (a card may withdraw more in a day than an amount can count).
    if used.amount.saturating_add(amount) <= limits.amount {
        Ok(())
    } else {
        Err(Code::WithdrawalLimitExceeded)
    }
}

/// A credit of `amount`: a deposit, or a transfer received.
fn credit(account: &Account, amount: Amount) -> Outcome {
    match deposit(account.balance, amount) {
        Ok(balance) => approved_with(balance, account.available() + amount),
        Err(code) => balances_now(account, code),
    }
}

fn transfer_sent(account: &Account, amount: Amount, receiver: Code) -> Result<Outcome, Outcome> {
    if amount == 0 {
        return Ok(balances_now(account, Code::InvalidAmount));
    }
    if receiver != Code::Approved {
        return Ok(balances_now(account, receiver));
    }
    if let Some(oldest) = account.outbox().first() {
        if account.next_leg() - oldest.leg >= TRANSFERS_IN_TRANSIT_SPAN {
            // Too far ahead of the oldest transfer on its way: wait for it (not journaled).
            return Err(Outcome::bare(Code::Busy));
        }
    }
    let Some(available) = account.available().checked_sub(amount) else {
        return Ok(balances_now(account, Code::InsufficientFunds));
    };
    Ok(Outcome {
        reference: Some(account.next_leg()),
        ..approved_with(account.balance - amount, available)
    })
}

fn transfer_settled(account: &Account, leg: u64, receiver: Code) -> Result<Outcome, Outcome> {
    let Some(sent) = account.outbox().iter().find(|sent| sent.leg == leg) else {
        // Settled before: nothing to do.
        return Err(balances_now(account, Code::Approved));
    };
    if receiver == Code::Approved {
        return Ok(balances_now(account, Code::Approved));
    }
    match account.balance.checked_add(sent.amount) {
        Some(balance) => Ok(approved_with(balance, account.available() + sent.amount)),
        // Cannot happen (the money left this balance), but never wrap: leave it on its way.
        None => Err(balances_now(account, Code::InvalidAmount)),
    }
}

fn hold_placed(account: &Account, amount: Amount, at: At, policy: &Policy) -> Outcome {
    if amount == 0 {
        return balances_now(account, Code::InvalidAmount);
    }
    let holds = account
        .activity
        .as_ref()
        .map_or(0, |activity| activity.holds.len());
    if holds >= HOLDS_PER_ACCOUNT_MAX {
        return balances_now(account, Code::TooManyHolds);
    }
    if let Err(code) = within_limits(account, amount, at, policy) {
        return balances_now(account, code);
    }
    match account.available().checked_sub(amount) {
        Some(available) => Outcome {
            reference: Some(account.last_hold() + 1),
            ..approved_with(account.balance, available)
        },
        None => balances_now(account, Code::InsufficientFunds),
    }
}

/// The open hold `id` on `at`, or why not: `unknown_hold` for an id never given,
/// `hold_resolved` for one completed, voided or expired (by `at`, even if its expiry is not yet
/// journaled).
fn open_hold(account: &Account, id: HoldId, at: At) -> Result<&Hold, Code> {
    if id == 0 || id > account.last_hold() {
        return Err(Code::UnknownHold);
    }
    match account.hold(id) {
        Some(hold) if hold.expires_at_unix_ms > at.unix_ms => Ok(hold),
        _ => Err(Code::HoldResolved),
    }
}

fn hold_completed(account: &Account, id: HoldId, amount: Option<Amount>, at: At) -> Outcome {
    let hold = match open_hold(account, id, at) {
        Ok(hold) => hold,
        Err(code) => return balances_now(account, code),
    };
    let posted = amount.unwrap_or(hold.amount);
    if posted == 0 || posted > hold.amount {
        return balances_now(account, Code::InvalidAmount);
    }
    // The hold's amount was reserved out of the available balance; posting takes `posted` from
    // the balance and releases the rest.
    approved_with(
        account.balance - posted,
        account.available() + (hold.amount - posted),
    )
}

fn reversal(
    account: &Account,
    original: RequestId,
    dispensed: Option<Amount>,
    original_known: bool,
) -> Outcome {
    let Some(debit) = account.debit(original) else {
        if original_known {
            return balances_now(account, Code::NotReversible);
        }
        // Never seen: acknowledged, and remembered in the original's place.
        return Outcome {
            reference: Some(REVERSAL_IN_PLACE),
            ..balances_now(account, Code::Approved)
        };
    };
    let kept = dispensed.unwrap_or(0);
    if kept > debit.amount {
        return balances_now(account, Code::InvalidAmount);
    }
    if debit.reversed {
        // Reversed before (by another request): acknowledged, nothing moves again.
        return balances_now(account, Code::Approved);
    }
    let back = debit.amount - kept;
    match account.balance.checked_add(back) {
        Some(balance) => approved_with(balance, account.available() + back),
        None => balances_now(account, Code::InvalidAmount),
    }
}

fn close(account: &Account) -> Outcome {
    if account.state == AccountState::Closed {
        return balances_now(account, Code::Approved);
    }
    let empty = account.balance == 0 && account.held() == 0 && account.outbox().is_empty();
    balances_now(
        account,
        if empty {
            Code::Approved
        } else {
            Code::BalanceNotZero
        },
    )
}

/// The approval of a release of hold `open`: its amount is available again (the outcome carries
/// the balances after it, like every approval).
fn released(account: &Account, open: &Hold) -> Outcome {
    approved_with(account.balance, account.available() + open.amount)
}

/// An outcome carrying the account's balances as they are.
fn balances_now(account: &Account, status: Code) -> Outcome {
    Outcome {
        status,
        balance: Some(account.balance),
        available: Some(account.available()),
        reference: None,
    }
}

fn approved_with(balance: Amount, available: Amount) -> Outcome {
    Outcome {
        status: Code::Approved,
        balance: Some(balance),
        available: Some(available),
        reference: None,
    }
}

#[cfg(test)]
pub(super) fn approved(balance: Amount) -> Outcome {
    approved_with(balance, balance)
}

#[cfg(test)]
pub(super) fn refused(status: Code, balance: Amount) -> Outcome {
    Outcome {
        status,
        ..approved_with(balance, balance)
    }
}

/// The balance after withdrawing `amount`, or why not.
pub fn withdraw(balance: Amount, amount: Amount) -> Result<Amount, Code> {
    if amount == 0 {
        return Err(Code::InvalidAmount);
    }
    balance.checked_sub(amount).ok_or(Code::InsufficientFunds)
}

/// The balance after depositing `amount`, or why not.
pub fn deposit(balance: Amount, amount: Amount) -> Result<Amount, Code> {
    if amount == 0 {
        return Err(Code::InvalidAmount);
    }
    balance.checked_add(amount).ok_or(Code::InvalidAmount)
}

/// Moves `account` to its next state by `record`, a record that names this one account (the
/// account actors' working copy). See [`apply_to`].
pub fn apply(account: &mut Option<Account>, record: &Record) -> Result<(), LedgerError> {
    apply_to(std::slice::from_mut(account), record)
}

/// Moves the accounts `record` names to their next state: `accounts` holds them in the order of
/// [`Record::accounts`] (None for one that does not exist). Refusals leave the balances alone;
/// wrong PINs count towards the lock; a correct PIN clears the count. Every approved balance
/// change is checked against the balances the record says it produced.
pub fn apply_to(accounts: &mut [Option<Account>], record: &Record) -> Result<(), LedgerError> {
    assert_eq!(
        accounts.len(),
        record.accounts().count(),
        "one slot per account the record names"
    );
    let first = &mut accounts[0];
    if let Some(account) = first {
        return apply_existing(account, record);
    }
    let Event::AccountOpened {
        holder,
        pin_hash,
        initial_balance,
    } = &record.event
    else {
        return Err(LedgerError::inconsistent(record, "no such account"));
    };
    if record.outcome.status != Code::Approved {
        return Err(LedgerError::inconsistent(
            record,
            "refused open of a card that does not exist",
        ));
    }
    // The statement's opening line is kept in the account itself until it has an activity.
    *first = Some(Account::opened(
        holder,
        *pin_hash,
        *initial_balance,
        record.at_unix_ms,
        record.request,
    ));
    Ok(())
}

/// Moves `account`, which exists, to its next state by `record` (see [`apply_to`]), in place.
pub fn apply_existing(account: &mut Account, record: &Record) -> Result<(), LedgerError> {
    let approved = record.outcome.status == Code::Approved;
    match &record.event {
        Event::AccountOpened { .. } if approved => {
            return Err(LedgerError::inconsistent(
                record,
                "opens an account that exists",
            ))
        }
        // A refused opening of a card that exists changes nothing.
        Event::AccountOpened { .. } => return Ok(()),
        Event::PinAttempt { correct } => {
            pin_attempt(account, *correct, approved);
            return Ok(());
        }
        _ => {}
    }
    if !approved {
        // Refusals change nothing (a wrong PIN, counted above, is the one refusal that does).
        return Ok(());
    }
    apply_approved(account, record)?;
    check_balances(account, record)
}

/// Applies an approved record (other than an opening or a PIN attempt) to its account.
fn apply_approved(account: &mut Account, record: &Record) -> Result<(), LedgerError> {
    let inconsistent = |reason| Err(LedgerError::inconsistent(record, reason));
    let day = record.business_day;
    match &record.event {
        Event::AccountOpened { .. } | Event::PinAttempt { .. } => unreachable!("applied above"),
        Event::CardUnlocked => account.pin_failures = 0,
        Event::PinChanged { pin_hash } | Event::PinRekeyed { pin_hash } => {
            account.set_pin_hash(*pin_hash);
            account.pin_failures = 0;
        }
        Event::Withdrawal { amount } => {
            let Ok(balance) = withdraw(account.balance, *amount) else {
                return inconsistent("approved withdrawal does not fit the balance");
            };
            account.set_balance(balance);
            count_use(account, day, *amount);
            remember_debit(account, record.request, *amount, day);
            note(account, record, MovementKind::Withdrawal, *amount);
        }
        Event::Deposit { amount } | Event::TransferReceived { amount, .. } => {
            let Ok(balance) = deposit(account.balance, *amount) else {
                return inconsistent("approved credit overflows the balance");
            };
            account.set_balance(balance);
            let kind = if matches!(record.event, Event::Deposit { .. }) {
                MovementKind::Deposit
            } else {
                MovementKind::TransferIn
            };
            note(account, record, kind, *amount);
        }
        Event::TransferSent { to, amount, .. } => {
            let Ok(balance) = withdraw(account.balance, *amount) else {
                return inconsistent("approved transfer does not fit the balance");
            };
            let leg = account.next_leg();
            if record.outcome.reference != Some(leg) {
                return inconsistent("transfer number mismatch");
            }
            account.set_balance(balance);
            let activity = account.activity_mut();
            activity.last_leg = leg;
            activity.outbox.push(Leg {
                leg,
                to: *to,
                amount: *amount,
                request: record.request,
            });
            note(account, record, MovementKind::TransferOut, *amount);
        }
        Event::TransferSettled { leg, receiver } => {
            let outbox = &mut account.activity_mut().outbox;
            let Some(position) = outbox.iter().position(|sent| sent.leg == *leg) else {
                return inconsistent("settles a transfer that is not on its way");
            };
            let sent = outbox.remove(position);
            if *receiver != Code::Approved {
                let balance = deposit(account.balance, sent.amount).map_err(|_| {
                    LedgerError::inconsistent(record, "a returned transfer overflows the balance")
                })?;
                account.set_balance(balance);
                let returned = Record {
                    request: sent.request,
                    ..record.clone()
                };
                note(
                    account,
                    &returned,
                    MovementKind::TransferReturned,
                    sent.amount,
                );
            }
        }
        Event::HoldPlaced { amount, ttl_ms } => {
            let id = account.last_hold() + 1;
            if record.outcome.reference != Some(id) {
                return inconsistent("hold id mismatch");
            }
            count_use(account, day, *amount);
            let activity = account.activity_mut();
            activity.last_hold = id;
            activity.holds.push(Hold {
                id,
                amount: *amount,
                expires_at_unix_ms: record.at_unix_ms.saturating_add(*ttl_ms),
                day,
            });
        }
        Event::HoldCompleted { hold, amount } => {
            let Some(released) = take_hold(account, *hold) else {
                return inconsistent("completes a hold that is not open");
            };
            let posted = amount.unwrap_or(released.amount);
            let Ok(balance) = withdraw(account.balance, posted) else {
                return inconsistent("a completed hold does not fit the balance");
            };
            account.set_balance(balance);
            give_back(account, released.day, released.amount - posted, false);
            remember_debit(account, record.request, posted, released.day);
            note(account, record, MovementKind::HoldCompleted, posted);
        }
        Event::HoldVoided { hold } | Event::HoldExpired { hold } => {
            let Some(released) = take_hold(account, *hold) else {
                return inconsistent("releases a hold that is not open");
            };
            give_back(account, released.day, released.amount, true);
        }
        Event::Reversal {
            original,
            dispensed,
            ..
        } => reverse(account, record, *original, *dispensed)?,
        Event::AccountFrozen => account.state = AccountState::Frozen,
        Event::AccountUnfrozen => account.state = AccountState::Open,
        Event::AccountClosed => account.state = AccountState::Closed,
        Event::LimitsSet { limits } => account.activity_mut().limits = Some(*limits),
        Event::LimitsCleared => {
            if let Some(activity) = account.activity.as_mut() {
                activity.limits = None;
            }
            // An activity that held only the limits (and the opening line) is not kept.
            account.compact_activity();
        }
    }
    Ok(())
}

/// Gives back the unreversed debit `original` (less what was `dispensed`), if it is still
/// remembered; a reversal of anything else moves nothing.
fn reverse(
    account: &mut Account,
    record: &Record,
    original: RequestId,
    dispensed: Option<Amount>,
) -> Result<(), LedgerError> {
    let Some(debit) = account.debit(original).copied() else {
        return Ok(());
    };
    if debit.reversed {
        return Ok(());
    }
    let back = debit.amount - dispensed.unwrap_or(0);
    let balance = account
        .balance
        .checked_add(back)
        .ok_or_else(|| LedgerError::inconsistent(record, "a reversal overflows the balance"))?;
    account.set_balance(balance);
    if let Some(kept) = account
        .activity_mut()
        .debits
        .iter_mut()
        .find(|kept| kept.request == original)
    {
        kept.reversed = true;
    }
    give_back(account, debit.day, back, dispensed.is_none());
    if back > 0 {
        note(account, record, MovementKind::Reversal, back);
    }
    Ok(())
}

/// Removes the open hold `id` and returns it.
fn take_hold(account: &mut Account, id: HoldId) -> Option<Hold> {
    let holds = &mut account.activity.as_mut()?.holds;
    let position = holds.iter().position(|hold| hold.id == id)?;
    Some(holds.remove(position))
}

/// Counts a withdrawal (or hold) of `amount` against business day `day`'s limits.
fn count_use(account: &mut Account, day: u32, amount: Amount) {
    let mut used = account.usage_on(day);
    used.amount = used.amount.saturating_add(amount);
    used.count = used.count.saturating_add(1);
    account.activity_mut().today = used;
}

/// Gives `amount` (and one withdrawal, when `one_less`) back to business day `day`'s limits, if
/// that day is still the one counted.
fn give_back(account: &mut Account, day: u32, amount: Amount, one_less: bool) {
    let Some(activity) = account.activity.as_mut() else {
        return;
    };
    if activity.today.day != day {
        return;
    }
    activity.today.amount = activity.today.amount.saturating_sub(amount);
    if one_less {
        activity.today.count = activity.today.count.saturating_sub(1);
    }
}

fn remember_debit(account: &mut Account, request: RequestId, amount: Amount, day: u32) {
    let debit = Debit {
        request,
        amount,
        reversed: false,
        day,
    };
    push_bounded(
        &mut account.activity_mut().debits,
        debit,
        REVERSIBLE_DEBITS_MAX,
    );
}

/// Adds `item` at the back of `list`, dropping the front one when `list` already holds `max`;
/// a full list grows by [`super::growth`], never past `max`.
fn push_bounded<T>(list: &mut VecDeque<T>, item: T, max: usize) {
    if list.len() >= max {
        list.pop_front();
    } else if list.len() == list.capacity() {
        list.reserve_exact(super::growth(list.len()).min(max - list.len()));
    }
    list.push_back(item);
}

/// Adds a line to the account's statement.
fn note(account: &mut Account, record: &Record, kind: MovementKind, amount: Amount) {
    let movement = Movement {
        at_unix_ms: record.at_unix_ms,
        kind,
        amount,
        request: record.request,
        balance_after: account.balance,
    };
    push_bounded(
        &mut account.activity_mut().movements,
        movement,
        STATEMENT_MOVEMENTS_MAX,
    );
}

/// Checks the balances an approved record says it produced against the account's.
fn check_balances(account: &Account, record: &Record) -> Result<(), LedgerError> {
    let outcome = &record.outcome;
    let balance_ok = outcome
        .balance
        .is_none_or(|balance| balance == account.balance);
    let available_ok = outcome
        .available
        .is_none_or(|available| available == account.available());
    if balance_ok && available_ok {
        Ok(())
    } else {
        Err(LedgerError::inconsistent(record, "balance mismatch"))
    }
}

fn pin_attempt(account: &mut Account, correct: bool, approved: bool) {
    if correct && approved {
        account.pin_failures = 0;
    } else if !correct {
        account.pin_failures = account.pin_failures.saturating_add(1);
    }
}

/// The money an applied record moves, as its event says: what the balances it names must move
/// by, in total (`money_in + received - money_out - sent`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Money brought into the bank: an opening balance, a deposit, a reversal.
    pub money_in: u128,
    /// Money taken out of the bank: a withdrawal, a completed hold.
    pub money_out: u128,
    /// Money that left a sender's balance on a transfer's way.
    pub sent: u128,
    /// Money of a transfer that reached a balance: the receiver's, or the sender's back.
    pub received: u128,
}

/// The money an applied record moves ([`Moved`]). A reversal's amount is known only from the
/// account it gives back to, so `before` is that account as it was before the record.
pub fn money_moved(record: &Record, before: Option<&Account>) -> Moved {
    let mut moved = Moved::default();
    if record.outcome.status != Code::Approved {
        return moved;
    }
    match &record.event {
        Event::AccountOpened {
            initial_balance, ..
        } => moved.money_in = u128::from(*initial_balance),
        Event::Deposit { amount } => moved.money_in = u128::from(*amount),
        Event::Withdrawal { amount } => moved.money_out = u128::from(*amount),
        Event::TransferSent { amount, .. } => moved.sent = u128::from(*amount),
        Event::TransferReceived { amount, .. } => moved.received = u128::from(*amount),
        Event::TransferSettled { leg, receiver } if *receiver != Code::Approved => {
            let returned = before
                .and_then(|account| account.outbox().iter().find(|sent| sent.leg == *leg))
                .map_or(0, |sent| sent.amount);
            moved.received = u128::from(returned);
        }
        Event::HoldCompleted { hold, amount } => {
            let held = before
                .and_then(|account| account.hold(*hold))
                .map_or(0, |hold| hold.amount);
            moved.money_out = u128::from(amount.unwrap_or(held));
        }
        Event::Reversal {
            original,
            dispensed,
            ..
        } => {
            let back = before
                .and_then(|account| account.debit(*original))
                .filter(|debit| !debit.reversed)
                .map_or(0, |debit| debit.amount - dispensed.unwrap_or(0));
            moved.money_in = u128::from(back);
        }
        _ => {}
    }
    moved
}

impl Event {
    /// The codes a record of this event can end in (a request refused without a change, such as
    /// `unknown_card`, is answered and never journaled).
    pub fn recorded_codes(&self) -> &'static [Code] {
        const STATE: [Code; 2] = [Code::AccountClosed, Code::AccountFrozen];
        match self {
            Event::AccountOpened { .. } => &[Code::Approved, Code::CardExists],
            Event::Withdrawal { .. } => &[
                Code::Approved,
                STATE[0],
                STATE[1],
                Code::InvalidAmount,
                Code::WithdrawalCountExceeded,
                Code::WithdrawalLimitExceeded,
                Code::InsufficientFunds,
            ],
            Event::Deposit { .. } => &[Code::Approved, Code::AccountClosed, Code::InvalidAmount],
            Event::PinAttempt { .. } => &[Code::Approved, Code::IncorrectPin, Code::CardLocked],
            Event::CardUnlocked | Event::AccountFrozen | Event::AccountUnfrozen => {
                &[Code::Approved, Code::AccountClosed]
            }
            Event::LimitsSet { .. } | Event::LimitsCleared => {
                &[Code::Approved, Code::AccountClosed]
            }
            Event::AccountClosed => &[Code::Approved, Code::BalanceNotZero],
            Event::PinChanged { .. } | Event::PinRekeyed { .. } => &[Code::Approved],
            Event::TransferSent { .. } => &[
                Code::Approved,
                STATE[0],
                STATE[1],
                Code::InvalidAmount,
                Code::UnknownCard,
                Code::InsufficientFunds,
            ],
            Event::TransferReceived { .. } => {
                &[Code::Approved, STATE[0], STATE[1], Code::InvalidAmount]
            }
            Event::TransferSettled { .. } | Event::HoldExpired { .. } => &[Code::Approved],
            Event::HoldPlaced { .. } => &[
                Code::Approved,
                STATE[0],
                STATE[1],
                Code::InvalidAmount,
                Code::TooManyHolds,
                Code::WithdrawalCountExceeded,
                Code::WithdrawalLimitExceeded,
                Code::InsufficientFunds,
            ],
            Event::HoldCompleted { .. } => &[
                Code::Approved,
                STATE[0],
                STATE[1],
                Code::UnknownHold,
                Code::HoldResolved,
                Code::InvalidAmount,
            ],
            Event::HoldVoided { .. } => &[
                Code::Approved,
                Code::AccountClosed,
                Code::UnknownHold,
                Code::HoldResolved,
            ],
            Event::Reversal { .. } => &[
                Code::Approved,
                Code::AccountClosed,
                Code::NotReversible,
                Code::InvalidAmount,
            ],
        }
    }
}

impl Record {
    /// Checks that the record could have been decided: a definite code this event can end in, and
    /// for an approval what the approval needs (an amount other than 0 and the new balance for a
    /// change of balance; a holder of 1 to [`HOLDER_BYTES_MAX`] bytes and the opening balance
    /// for an open; the reference of a hold or transfer). The journal checks it before writing a
    /// record and after reading one back.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let status = self.outcome.status;
        let invalid = |reason| Err(LedgerError::inconsistent(self, reason));
        if !status.is_definite() {
            return invalid("an outcome that is not definite");
        }
        if !self.event.recorded_codes().contains(&status) {
            return invalid("an outcome this event cannot end in");
        }
        if status != Code::Approved {
            return Ok(());
        }
        match &self.event {
            Event::AccountOpened {
                holder,
                initial_balance,
                ..
            } => {
                if holder.is_empty() || holder.len() > HOLDER_BYTES_MAX {
                    return invalid("an approved open with an empty or over-long holder");
                }
                if self.outcome.balance != Some(*initial_balance) {
                    return invalid("an approved open without its opening balance");
                }
            }
            Event::Withdrawal { amount }
            | Event::Deposit { amount }
            | Event::TransferReceived { amount, .. } => {
                if *amount == 0 {
                    return invalid("an approved change of amount 0");
                }
                if self.outcome.balance.is_none() {
                    return invalid("an approved change without a balance");
                }
            }
            Event::TransferSent { amount, .. } | Event::HoldPlaced { amount, .. } => {
                if *amount == 0 {
                    return invalid("an approved change of amount 0");
                }
                if self.outcome.reference.is_none() || self.outcome.balance.is_none() {
                    return invalid("an approved hold or transfer without its reference");
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{id, opened, step};
    use super::super::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn withdrawals_never_overdraw_and_refusals_keep_the_balance() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(100));
        let outcome = step(&mut ledger, 2, Event::Withdrawal { amount: 101 });
        assert_eq!(outcome, refused(Code::InsufficientFunds, 100));
        assert_eq!(
            step(&mut ledger, 3, Event::Withdrawal { amount: 100 }),
            approved(0)
        );
        let outcome = step(&mut ledger, 4, Event::Deposit { amount: u64::MAX });
        assert_eq!(outcome.status, Code::Approved);
        let outcome = step(&mut ledger, 5, Event::Deposit { amount: 1 });
        assert_eq!(outcome, refused(Code::InvalidAmount, u64::MAX));
        assert!(ledger.is_conserved());
    }

    #[test]
    fn three_wrong_pins_lock_the_card_and_a_right_one_resets_the_count() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(0));
        let wrong = || Event::PinAttempt { correct: false };
        assert_eq!(step(&mut ledger, 2, wrong()).status, Code::IncorrectPin);
        assert_eq!(
            step(&mut ledger, 3, Event::PinAttempt { correct: true }).status,
            Code::Approved
        );
        assert_eq!(step(&mut ledger, 4, wrong()).status, Code::IncorrectPin);
        assert_eq!(step(&mut ledger, 5, wrong()).status, Code::IncorrectPin);
        assert_eq!(step(&mut ledger, 6, wrong()).status, Code::CardLocked);
        let locked_then_right = step(&mut ledger, 7, Event::PinAttempt { correct: true });
        assert_eq!(locked_then_right.status, Code::CardLocked);
        assert!(ledger.accounts[&7].is_locked());
    }

    #[test]
    fn an_unlock_clears_the_lock_and_a_pin_change_or_re_key_replaces_the_verifier() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(0));
        for sequence in 2..=4 {
            step(&mut ledger, sequence, Event::PinAttempt { correct: false });
        }
        assert!(ledger.accounts[&7].is_locked());
        let key = crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES]);
        let changed = Event::PinChanged {
            pin_hash: key.verifier(7, "4321"),
        };
        assert_eq!(
            step(&mut ledger, 5, changed.clone()).status,
            Code::CardLocked
        );
        let rekeyed = Event::PinRekeyed {
            pin_hash: key.verifier(7, "1234"),
        };
        assert_eq!(
            step(&mut ledger, 6, rekeyed.clone()).status,
            Code::CardLocked
        );
        assert_eq!(
            step(&mut ledger, 7, Event::CardUnlocked).status,
            Code::Approved
        );
        assert_eq!(ledger.accounts[&7].pin_failures, 0);
        step(&mut ledger, 8, Event::PinAttempt { correct: false });
        assert_eq!(step(&mut ledger, 9, rekeyed).status, Code::Approved);
        assert_eq!(ledger.accounts[&7].pin_hash(), key.verifier(7, "1234"));
        assert_eq!(ledger.accounts[&7].pin_failures, 0);
        assert_eq!(step(&mut ledger, 10, changed).status, Code::Approved);
        assert_eq!(ledger.accounts[&7].pin_hash(), key.verifier(7, "4321"));
        assert_eq!(
            decide(
                None,
                8,
                id(11),
                Event::CardUnlocked,
                At::default(),
                &Policy::default()
            ),
            Decision::Answer(Outcome::bare(Code::UnknownCard))
        );
        assert!(ledger.is_conserved());
    }

    #[test]
    fn closing_a_closed_account_is_approved_and_everything_else_is_refused() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(0));
        assert_eq!(
            step(&mut ledger, 2, Event::AccountClosed).status,
            Code::Approved
        );
        assert_eq!(
            step(&mut ledger, 3, Event::AccountClosed).status,
            Code::Approved
        );
        assert_eq!(
            step(&mut ledger, 4, Event::Deposit { amount: 1 }).status,
            Code::AccountClosed
        );
        assert_eq!(
            step(&mut ledger, 5, Event::AccountFrozen).status,
            Code::AccountClosed
        );
    }

    fn record(event: Event, status: Code, balance: Option<Amount>) -> Record {
        Record {
            request: id(1),
            card: 7,
            at_unix_ms: 0,
            event,
            business_day: 0,
            outcome: Outcome {
                status,
                balance,
                available: balance,
                reference: None,
            },
        }
    }

    #[test]
    fn records_that_could_never_have_been_decided_are_invalid() {
        let valid = [
            record(opened(0), Code::Approved, Some(0)),
            record(opened(5), Code::CardExists, None),
            record(
                Event::Withdrawal { amount: 0 },
                Code::InvalidAmount,
                Some(3),
            ),
            record(Event::PinAttempt { correct: false }, Code::CardLocked, None),
        ];
        for record in &valid {
            assert_eq!(record.validate(), Ok(()), "{record:?}");
        }
        let long = Event::AccountOpened {
            holder: "x".repeat(HOLDER_BYTES_MAX + 1),
            pin_hash: crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES])
                .verifier(7, "1234"),
            initial_balance: 1,
        };
        let invalid = [
            record(Event::Deposit { amount: 1 }, Code::Busy, None),
            record(Event::Deposit { amount: 1 }, Code::Unavailable, Some(1)),
            record(Event::Deposit { amount: 0 }, Code::Approved, Some(1)),
            record(Event::Withdrawal { amount: 1 }, Code::Approved, None),
            record(opened(5), Code::Approved, None),
            record(long, Code::Approved, Some(1)),
            record(Event::CardUnlocked, Code::UnknownCard, None),
            record(
                Event::Deposit { amount: 1 },
                Code::InsufficientFunds,
                Some(1),
            ),
        ];
        for record in &invalid {
            assert!(record.validate().is_err(), "{record:?}");
        }
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0u64..3).prop_map(opened),
            any::<u64>().prop_map(|amount| Event::Withdrawal { amount }),
            (0u64..3).prop_map(|amount| Event::Withdrawal { amount }),
            any::<u64>().prop_map(|amount| Event::Deposit { amount }),
            (0u64..3).prop_map(|amount| Event::Deposit { amount }),
            any::<bool>().prop_map(|correct| Event::PinAttempt { correct }),
            Just(Event::CardUnlocked),
            Just(Event::PinChanged {
                pin_hash: crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES])
                    .verifier(7, "4321"),
            }),
        ]
    }

    proptest! {
        /// Whatever the account's state and the event, a record `decide` makes is valid, and
        /// applying it to the same account succeeds.
        #[test]
        fn decide_makes_only_valid_records_that_apply(
            exists in any::<bool>(),
            balance in prop_oneof![0u64..3, any::<u64>(), Just(u64::MAX)],
            pin_failures in 0u8..=PIN_ATTEMPTS_MAX,
            event in any_event(),
        ) {
            let mut account = exists.then(|| Account {
                pin_failures,
                ..Account::new(
                    "Joty",
                    crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES]).verifier(7, "1234"),
                    balance,
                )
            });
            if let Decision::Record(record) = decide(account.as_ref(), 7, id(1), event, At::default(), &Policy::default()) {
                prop_assert_eq!(record.validate(), Ok(()));
                prop_assert_eq!(apply(&mut account, &record), Ok(()));
            }
        }
    }

    /// Releasing a hold (void or expiry) is approved with the balances after the release, so
    /// its record applies; closing a closed account is approved again and changes nothing.
    #[test]
    fn releases_carry_the_balances_after_them_and_closing_twice_is_approved() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(100));
        let placed = step(
            &mut ledger,
            2,
            Event::HoldPlaced {
                amount: 30,
                ttl_ms: 1_000,
            },
        );
        assert_eq!(placed.available, Some(70));
        let voided = step(&mut ledger, 3, Event::HoldVoided { hold: 1 });
        assert_eq!(voided, approved(100));
        // A hold with no time to live is due at once.
        let placed = step(
            &mut ledger,
            4,
            Event::HoldPlaced {
                amount: 40,
                ttl_ms: 0,
            },
        );
        assert_eq!(placed.available, Some(60));
        let expired = step(&mut ledger, 5, Event::HoldExpired { hold: 2 });
        assert_eq!(expired, approved(100));
        step(&mut ledger, 6, Event::Withdrawal { amount: 100 });
        assert_eq!(step(&mut ledger, 7, Event::AccountClosed), approved(0));
        assert_eq!(step(&mut ledger, 8, Event::AccountClosed), approved(0));
        assert_eq!(ledger.accounts[&7].state, AccountState::Closed);
        assert!(ledger.is_conserved());
    }

    #[test]
    fn a_bounded_list_grows_by_a_quarter_up_to_its_bound_then_drops_its_oldest() {
        let mut list: VecDeque<u32> = (0..40).collect();
        list.shrink_to_fit();
        assert_eq!(list.capacity(), 40);
        push_bounded(&mut list, 40, 48);
        assert_eq!(list.capacity(), 48, "a quarter more, within the bound");
        for item in 41..60 {
            push_bounded(&mut list, item, 48);
        }
        assert_eq!(list.capacity(), 48);
        assert_eq!(list.len(), 48);
        assert_eq!(list.front(), Some(&12));
        assert_eq!(list.back(), Some(&59));
        let mut empty = VecDeque::new();
        push_bounded(&mut empty, 1, 50);
        assert!(empty.capacity() >= 1);
        assert_eq!(empty, [1]);
    }

    #[test]
    fn a_record_for_a_card_with_no_account_is_refused_and_changes_nothing() {
        let mut ledger = Ledger::default();
        let record = Record {
            request: id(1),
            card: 7,
            event: Event::Withdrawal { amount: 1 },
            outcome: approved(0),
            at_unix_ms: 0,
            business_day: 0,
        };
        let error = ledger.apply(1, &record).unwrap_err();
        assert!(error.to_string().contains("no such account"), "{error}");
        assert!(ledger.accounts.is_empty());
        step(&mut ledger, 1, opened(100));
        let again = Record {
            request: id(2),
            event: opened(5),
            outcome: approved(5),
            ..record
        };
        let error = ledger.apply(2, &again).unwrap_err();
        assert!(error.to_string().contains("exists"), "{error}");
        assert_eq!(ledger.accounts[&7].balance, 100);
    }
}
