//! The account rules: how a request is decided against an account ([`decide`]), how a record moves
//! the accounts it names to their next state ([`apply_to`]), and which records could ever have
//! been decided ([`Record::validate`]).

use super::{Account, Decision, Event, LedgerError, Outcome, Record, HOLDER_BYTES_MAX};
use super::{Amount, Card, Code, RequestId, PIN_ATTEMPTS_MAX};

/// Decides `event` for `request` against `account` (None when the card has no account).
///
/// Pure: it reads the account and returns what should happen; the caller applies it. Every record
/// it returns passes [`Record::validate`].
pub fn decide(
    account: Option<&Account>,
    card: Card,
    request: RequestId,
    event: Event,
    at_unix_ms: u64,
) -> Decision {
    let outcome = match outcome_of(account, &event) {
        Ok(outcome) => outcome,
        Err(answer) => return Decision::Answer(answer),
    };
    let record = Record {
        request,
        card,
        at_unix_ms,
        event,
        outcome,
    };
    debug_assert_eq!(record.validate(), Ok(()), "decide made an invalid record");
    Decision::Record(record)
}

/// The outcome to journal (`Ok`), or an answer that changes nothing and is not journaled (`Err`).
fn outcome_of(account: Option<&Account>, event: &Event) -> Result<Outcome, Outcome> {
    let Some(account) = account else {
        return match event {
            Event::AccountOpened {
                initial_balance, ..
            } => Ok(approved(*initial_balance)),
            _ => Err(status_only(Code::UnknownCard)),
        };
    };
    if event.presents_pin() && account.is_locked() {
        return Err(status_only(Code::CardLocked));
    }
    match event {
        Event::AccountOpened { .. } => Ok(status_only(Code::CardExists)),
        Event::Withdrawal { amount } => Ok(balance_change(
            account.balance,
            withdraw(account.balance, *amount),
        )),
        Event::Deposit { amount } => Ok(balance_change(
            account.balance,
            deposit(account.balance, *amount),
        )),
        Event::PinAttempt { correct } => pin_attempt_outcome(account, *correct),
        Event::CardUnlocked | Event::PinChanged { .. } | Event::PinRekeyed { .. } => {
            Ok(status_only(Code::Approved))
        }
    }
}

fn pin_attempt_outcome(account: &Account, correct: bool) -> Result<Outcome, Outcome> {
    if !correct {
        let locks = account.pin_failures + 1 >= PIN_ATTEMPTS_MAX;
        return Ok(status_only(if locks {
            Code::CardLocked
        } else {
            Code::IncorrectPin
        }));
    }
    // A right PIN with no wrong ones to clear changes nothing: answered, not journaled (a retry
    // simply checks the PIN again).
    if account.pin_failures == 0 {
        Err(status_only(Code::Approved))
    } else {
        Ok(status_only(Code::Approved))
    }
}

/// The outcome of a balance change: approved with the new balance, or refused with the old one.
fn balance_change(balance: Amount, changed: Result<Amount, Code>) -> Outcome {
    match changed {
        Ok(balance) => approved(balance),
        Err(status) => refused(status, balance),
    }
}

fn status_only(status: Code) -> Outcome {
    Outcome {
        status,
        balance: None,
    }
}

pub(super) fn approved(balance: Amount) -> Outcome {
    Outcome {
        status: Code::Approved,
        balance: Some(balance),
    }
}

pub(super) fn refused(status: Code, balance: Amount) -> Outcome {
    Outcome {
        status,
        balance: Some(balance),
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
/// change is checked against the balance the record says it produced.
pub fn apply_to(accounts: &mut [Option<Account>], record: &Record) -> Result<(), LedgerError> {
    assert_eq!(
        accounts.len(),
        record.accounts().count(),
        "one slot per account the record names"
    );
    let approved = record.outcome.status == Code::Approved;
    let first = &mut accounts[0];
    if let Event::AccountOpened {
        holder,
        pin_hash,
        initial_balance,
    } = &record.event
    {
        let opened = Account {
            holder: holder.as_str().into(),
            pin_hash: *pin_hash,
            balance: *initial_balance,
            pin_failures: 0,
        };
        return open(first, record, approved, opened);
    }
    let Some(account) = first.as_mut() else {
        return Err(LedgerError::inconsistent(record, "no such account"));
    };
    match &record.event {
        Event::PinAttempt { correct } => pin_attempt(account, *correct, approved),
        Event::CardUnlocked if approved => account.pin_failures = 0,
        Event::PinChanged { pin_hash } | Event::PinRekeyed { pin_hash } if approved => {
            account.pin_hash = *pin_hash;
            account.pin_failures = 0;
        }
        Event::Withdrawal { amount } if approved => {
            let balance = withdraw(account.balance, *amount).map_err(|_| {
                LedgerError::inconsistent(record, "approved withdrawal does not fit the balance")
            })?;
            set_balance(account, record, balance)?;
        }
        Event::Deposit { amount } if approved => {
            let balance = deposit(account.balance, *amount).map_err(|_| {
                LedgerError::inconsistent(record, "approved deposit overflows the balance")
            })?;
            set_balance(account, record, balance)?;
        }
        // Refusals change nothing (a wrong PIN, counted above, is the one refusal that does).
        _ => {}
    }
    Ok(())
}

/// An approved open makes the account; a refused one (`card_exists`) changes nothing.
fn open(
    account: &mut Option<Account>,
    record: &Record,
    approved: bool,
    opened: Account,
) -> Result<(), LedgerError> {
    match (account.is_some(), approved) {
        (false, true) => {
            *account = Some(opened);
            Ok(())
        }
        (true, true) => Err(LedgerError::inconsistent(
            record,
            "opens an account that exists",
        )),
        (false, false) => Err(LedgerError::inconsistent(
            record,
            "refused open of a card that does not exist",
        )),
        (true, false) => Ok(()),
    }
}

fn pin_attempt(account: &mut Account, correct: bool, approved: bool) {
    if correct && approved {
        account.pin_failures = 0;
    } else if !correct {
        account.pin_failures = account.pin_failures.saturating_add(1);
    }
}

fn set_balance(account: &mut Account, record: &Record, balance: Amount) -> Result<(), LedgerError> {
    if record.outcome.balance != Some(balance) {
        return Err(LedgerError::inconsistent(record, "balance mismatch"));
    }
    account.balance = balance;
    Ok(())
}

/// The money an applied record brings in and takes out of the bank, `(in, out)`, as its event
/// says: what the balances it names must move by, in total.
pub fn money_moved(record: &Record) -> (u128, u128) {
    if record.outcome.status != Code::Approved {
        return (0, 0);
    }
    match record.event {
        Event::AccountOpened {
            initial_balance, ..
        } => (u128::from(initial_balance), 0),
        Event::Deposit { amount } => (u128::from(amount), 0),
        Event::Withdrawal { amount } => (0, u128::from(amount)),
        Event::PinAttempt { .. }
        | Event::CardUnlocked
        | Event::PinChanged { .. }
        | Event::PinRekeyed { .. } => (0, 0),
    }
}

impl Event {
    /// The codes a record of this event can end in (a request refused without a change, such as
    /// `unknown_card`, is answered and never journaled).
    pub fn recorded_codes(&self) -> &'static [Code] {
        match self {
            Event::AccountOpened { .. } => &[Code::Approved, Code::CardExists],
            Event::Withdrawal { .. } => {
                &[Code::Approved, Code::InsufficientFunds, Code::InvalidAmount]
            }
            Event::Deposit { .. } => &[Code::Approved, Code::InvalidAmount],
            Event::PinAttempt { .. } => &[Code::Approved, Code::IncorrectPin, Code::CardLocked],
            Event::CardUnlocked | Event::PinChanged { .. } | Event::PinRekeyed { .. } => {
                &[Code::Approved]
            }
        }
    }
}

impl Record {
    /// Checks that the record could have been decided: a definite code this event can end in, and
    /// for an approval what the approval needs (an amount other than 0 and the new balance for a
    /// withdrawal or deposit; a holder of 1 to [`HOLDER_BYTES_MAX`] bytes and the opening balance
    /// for an open). The journal checks it before writing a record and after reading one back.
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
            Event::Withdrawal { amount } | Event::Deposit { amount } => {
                if *amount == 0 {
                    return invalid("an approved change of amount 0");
                }
                if self.outcome.balance.is_none() {
                    return invalid("an approved change without a balance");
                }
            }
            Event::PinAttempt { .. }
            | Event::CardUnlocked
            | Event::PinChanged { .. }
            | Event::PinRekeyed { .. } => {}
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
        assert_eq!(ledger.accounts[&7].pin_hash, key.verifier(7, "1234"));
        assert_eq!(ledger.accounts[&7].pin_failures, 0);
        assert_eq!(step(&mut ledger, 10, changed).status, Code::Approved);
        assert_eq!(ledger.accounts[&7].pin_hash, key.verifier(7, "4321"));
        assert_eq!(
            decide(None, 8, id(11), Event::CardUnlocked, 0),
            Decision::Answer(Outcome {
                status: Code::UnknownCard,
                balance: None
            })
        );
        assert!(ledger.is_conserved());
    }

    fn record(event: Event, status: Code, balance: Option<Amount>) -> Record {
        Record {
            request: id(1),
            card: 7,
            at_unix_ms: 0,
            event,
            outcome: Outcome { status, balance },
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
                holder: "Joty".into(),
                pin_hash: crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES])
                    .verifier(7, "1234"),
                balance,
                pin_failures,
            });
            if let Decision::Record(record) = decide(account.as_ref(), 7, id(1), event, 0) {
                prop_assert_eq!(record.validate(), Ok(()));
                prop_assert_eq!(apply(&mut account, &record), Ok(()));
            }
        }
    }
}
