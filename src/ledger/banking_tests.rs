//! The banking rules, tested against the pure ledger: the precedence of every code each event can
//! end in, holds from placement to resolution, reversals, transfers and their legs, daily limits
//! across business days, statements, and a property over random sequences of every event.

use super::*;
use crate::model::{AccountState, MovementKind};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The first card of every test bank.
const A: Card = 7;
/// The second.
const B: Card = 8;
/// The third.
const C: Card = 9;
/// A business day, and the milliseconds at its start (UTC).
const DAY: u32 = 20_000;
const DAY_MS: u64 = 86_400_000;

fn at(day: u32, offset_ms: u64) -> At {
    At {
        unix_ms: u64::from(day) * DAY_MS + offset_ms,
        business_day: day,
    }
}

fn pin_hash(card: Card) -> crate::pin::PinHash {
    crate::pin::PinKey::from_bytes([3; crate::pin::PIN_KEY_BYTES]).verifier(card, "1234")
}

fn opening(balance: Amount) -> Event {
    Event::AccountOpened {
        holder: "Joty".into(),
        pin_hash: pin_hash(A),
        initial_balance: balance,
    }
}

/// The bank as the account actors and the delivery run it: the memory of completed requests is
/// consulted first (a replay gets its outcome, another request under a used id a conflict), a
/// reversal is told whether the memory knows its original, then the rules decide and the record
/// is applied.
struct Bank {
    ledger: Ledger,
    records: Vec<Record>,
    at: At,
    policy: Policy,
    sequence: u64,
}

impl Bank {
    /// A bank with an account of each `(card, balance)`, on business day [`DAY`].
    fn with(accounts: &[(Card, Amount)]) -> Bank {
        let mut bank = Bank {
            ledger: Ledger::default(),
            records: Vec::new(),
            at: at(DAY, 1_000),
            policy: Policy::default(),
            sequence: 0,
        };
        for &(card, balance) in accounts {
            let outcome = bank.on(card, opening(balance));
            assert_eq!(outcome.status, Code::Approved);
        }
        bank
    }

    fn account(&self, card: Card) -> &Account {
        &self.ledger.accounts[&card]
    }

    /// The next request id of client 1.
    fn next_id(&mut self) -> RequestId {
        self.sequence += 1;
        RequestId {
            client: 1,
            sequence: self.sequence,
        }
    }

    /// `event` on `card` under the next request id.
    fn on(&mut self, card: Card, event: Event) -> Outcome {
        let request = self.next_id();
        self.request(card, request, event)
    }

    /// `event` on `card` under `request`.
    fn request(&mut self, card: Card, request: RequestId, mut event: Event) -> Outcome {
        let principal = Principal::of(card, &event);
        if let Some((principal, clients)) =
            principal.and_then(|p| Some((p, self.ledger.clients.get(&p)?)))
        {
            match clients.check(
                principal,
                request.client,
                request.sequence,
                &Fingerprint::of(card, &event),
            ) {
                Seen::Replay(done) => return done.outcome,
                Seen::Conflict(_) => return Outcome::bare(Code::RequestIdConflict),
                Seen::Stale => return Outcome::bare(Code::StaleRequest),
                Seen::New => {}
            }
            if let Event::Reversal {
                original,
                original_known,
                ..
            } = &mut event
            {
                *original_known = clients.knows(principal, original.client, original.sequence);
            }
        }
        let account = self.ledger.accounts.get(&card);
        match decide(account, card, request, event, self.at, &self.policy) {
            Decision::Record(record) => {
                assert_eq!(record.validate(), Ok(()), "{record:?}");
                self.ledger
                    .apply(self.ledger.applied_lsn + 1, &record)
                    .unwrap();
                self.records.push(record.clone());
                record.outcome
            }
            Decision::Answer(outcome) => outcome,
        }
    }

    /// What the receiving account's committed state says of a transfer to `to`.
    fn receiver(&self, to: Card) -> Code {
        match self.ledger.accounts.get(&to).map(|account| account.state) {
            None => Code::UnknownCard,
            Some(AccountState::Open) => Code::Approved,
            Some(AccountState::Frozen) => Code::AccountFrozen,
            Some(AccountState::Closed) => Code::AccountClosed,
        }
    }

    /// Sends `amount` from `from` to `to`, the receiver's code taken from its state now.
    fn transfer(&mut self, from: Card, to: Card, amount: Amount) -> Outcome {
        let receiver = self.receiver(to);
        self.on(
            from,
            Event::TransferSent {
                to,
                amount,
                receiver,
            },
        )
    }

    /// Delivers leg `leg` of `from` (the second leg, then the settlement), as the bank's delivery
    /// does; returns the receiver's code.
    fn deliver(&mut self, from: Card, leg: u64) -> Code {
        let sent = *self
            .account(from)
            .outbox()
            .iter()
            .find(|sent| sent.leg == leg)
            .expect("the leg is on its way");
        let receipt = RequestId {
            client: from,
            sequence: leg,
        };
        let received = Event::TransferReceived {
            from,
            leg,
            amount: sent.amount,
        };
        let receiver = self.request(sent.to, receipt, received).status;
        let settled = Event::TransferSettled { leg, receiver };
        assert_eq!(
            self.request(from, sent.request, settled).status,
            Code::Approved
        );
        receiver
    }

    /// The ledger the records give when replayed from the start.
    fn replayed(&self) -> Ledger {
        let mut ledger = Ledger::default();
        for (index, record) in self.records.iter().enumerate() {
            ledger.apply(index as Lsn + 1, record).unwrap();
        }
        ledger
    }
}

// ---- Precedence: every code each event can end in, in the documented order. ----

/// An account with every reason to refuse at once: closed, with its own limits used up today
/// (count and amount), 32 holds of 1 (so little is available), one hold open (id 1) and one
/// resolved (id 2), a remembered debit, a transfer on its way.
fn troubled() -> Account {
    let mut account = Account::new("Joty", pin_hash(A), 60);
    account.state = AccountState::Closed;
    let activity = account.activity_mut();
    activity.limits = Some(DailyLimits {
        amount: 100,
        count: 2,
    });
    activity.today = DailyUsage {
        day: DAY,
        amount: 90,
        count: 2,
    };
    activity.holds = (1..=HOLDS_PER_ACCOUNT_MAX as u64)
        .filter(|id| *id != 2)
        .chain([HOLDS_PER_ACCOUNT_MAX as u64 + 1])
        .map(|id| Hold {
            id,
            amount: 1,
            expires_at_unix_ms: u64::MAX,
            day: DAY,
        })
        .collect();
    activity.last_hold = HOLDS_PER_ACCOUNT_MAX as u64 + 1;
    activity.debits.push_back(Debit {
        request: RequestId {
            client: 1,
            sequence: 1,
        },
        amount: 10,
        reversed: false,
        day: DAY,
    });
    activity.outbox.push(Leg {
        leg: 1,
        to: B,
        amount: 5,
        request: RequestId {
            client: 1,
            sequence: 2,
        },
    });
    activity.last_leg = 1;
    account
}

/// Takes away the first reason to refuse `event` that `account` still has: closed, then frozen,
/// then the limits' count, then their amount, then the holds (room, then money).
fn lift(account: &mut Account, step: usize) {
    let activity = account.activity_mut();
    match step {
        0 => account.state = AccountState::Frozen,
        1 => account.state = AccountState::Open,
        2 => activity.today.count = 1,
        3 => activity.today.amount = 0,
        4 => activity.holds.truncate(HOLDS_PER_ACCOUNT_MAX - 1),
        _ => activity.holds.truncate(1),
    }
}

/// Decides `event` on `account` at [`DAY`]: the record's outcome (checked valid, and checked to
/// apply) or the answer.
fn decided(account: &Account, event: Event) -> Outcome {
    let request = RequestId {
        client: 1,
        sequence: 99,
    };
    match decide(
        Some(account),
        A,
        request,
        event,
        at(DAY, 5),
        &Policy::default(),
    ) {
        Decision::Record(record) => {
            assert_eq!(record.validate(), Ok(()), "{record:?}");
            let mut copy = Some(account.clone());
            assert_eq!(apply(&mut copy, &record), Ok(()), "{record:?}");
            record.outcome
        }
        Decision::Answer(outcome) => outcome,
    }
}

/// The codes `event(amount)` gets as the reasons to refuse are taken away one by one, first with
/// an invalid amount (`invalid`), then with `valid`.
fn peeled(event: impl Fn(Amount) -> Event, invalid: Amount, valid: Amount) -> Vec<Code> {
    let mut account = troubled();
    let mut codes = Vec::new();
    for step in 0..2 {
        codes.push(decided(&account, event(invalid)).status);
        lift(&mut account, step);
    }
    codes.push(decided(&account, event(invalid)).status);
    for step in 2..6 {
        codes.push(decided(&account, event(valid)).status);
        lift(&mut account, step);
    }
    codes.push(decided(&account, event(valid)).status);
    codes
}

#[test]
fn a_withdrawal_is_refused_closed_frozen_invalid_count_limit_funds_in_that_order() {
    // 30 is within the limit once today's amount is lifted, and more than the 28 available
    // under 32 holds of 1, and less than the 59 available under one.
    let codes = peeled(|amount| Event::Withdrawal { amount }, 0, 30);
    assert_eq!(
        codes,
        [
            Code::AccountClosed,
            Code::AccountFrozen,
            Code::InvalidAmount,
            Code::WithdrawalCountExceeded,
            Code::WithdrawalLimitExceeded,
            Code::InsufficientFunds,
            Code::InsufficientFunds,
            Code::Approved,
        ]
    );
}

#[test]
fn a_hold_is_refused_closed_frozen_invalid_room_count_limit_funds_in_that_order() {
    let codes = peeled(
        |amount| Event::HoldPlaced {
            amount,
            ttl_ms: 1_000,
        },
        0,
        30,
    );
    assert_eq!(
        codes,
        [
            Code::AccountClosed,
            Code::AccountFrozen,
            Code::InvalidAmount,
            // The 32 holds are lifted last: room is checked before the limits.
            Code::TooManyHolds,
            Code::TooManyHolds,
            Code::TooManyHolds,
            Code::InsufficientFunds,
            Code::Approved,
        ]
    );
    // With room, the limits come before the money.
    let mut account = troubled();
    account.state = AccountState::Open;
    account.activity_mut().holds.truncate(1);
    let hold = |amount| Event::HoldPlaced {
        amount,
        ttl_ms: 1_000,
    };
    assert_eq!(
        decided(&account, hold(100)).status,
        Code::WithdrawalCountExceeded
    );
    account.activity_mut().today.count = 1;
    assert_eq!(
        decided(&account, hold(100)).status,
        Code::WithdrawalLimitExceeded
    );
    account.activity_mut().today.amount = 0;
    assert_eq!(decided(&account, hold(100)).status, Code::InsufficientFunds);
    let placed = decided(&account, hold(59));
    assert_eq!(
        (placed.status, placed.reference, placed.available),
        (
            Code::Approved,
            Some(HOLDS_PER_ACCOUNT_MAX as u64 + 2),
            Some(0)
        )
    );
}

/// `account` in `state`.
fn in_state(mut account: Account, state: AccountState) -> Account {
    account.state = state;
    account
}

/// [`troubled`], open.
fn open() -> Account {
    in_state(troubled(), AccountState::Open)
}

/// [`troubled`], frozen.
fn frozen() -> Account {
    in_state(troubled(), AccountState::Frozen)
}

/// [`troubled`]: closed.
fn closed() -> Account {
    troubled()
}

/// Every `(event, account)` the tables below decide, with the code it must end in.
fn cases() -> Vec<(Event, Account, Code)> {
    let mut cases = money_cases();
    cases.extend(hold_cases());
    cases.extend(account_cases());
    cases
}

/// Deposits and the legs of transfers.
fn money_cases() -> Vec<(Event, Account, Code)> {
    let sent = |receiver| Event::TransferSent {
        to: B,
        amount: 5,
        receiver,
    };
    let received = |amount| Event::TransferReceived {
        from: B,
        leg: 1,
        amount,
    };
    let full = Account::new("Joty", pin_hash(A), u64::MAX);
    vec![
        (Event::Deposit { amount: 1 }, closed(), Code::AccountClosed),
        (Event::Deposit { amount: 0 }, frozen(), Code::InvalidAmount),
        (
            Event::Deposit { amount: 1 },
            full.clone(),
            Code::InvalidAmount,
        ),
        (Event::Deposit { amount: 1 }, frozen(), Code::Approved),
        (sent(Code::Approved), closed(), Code::AccountClosed),
        (sent(Code::Approved), frozen(), Code::AccountFrozen),
        (
            Event::TransferSent {
                to: B,
                amount: 0,
                receiver: Code::UnknownCard,
            },
            open(),
            Code::InvalidAmount,
        ),
        (sent(Code::UnknownCard), open(), Code::UnknownCard),
        (sent(Code::AccountFrozen), open(), Code::AccountFrozen),
        (sent(Code::AccountClosed), open(), Code::AccountClosed),
        (
            Event::TransferSent {
                to: B,
                amount: 29,
                receiver: Code::Approved,
            },
            open(),
            Code::InsufficientFunds,
        ),
        (sent(Code::Approved), open(), Code::Approved),
        (received(1), closed(), Code::AccountClosed),
        (received(1), frozen(), Code::AccountFrozen),
        (received(1), full.clone(), Code::InvalidAmount),
        (received(1), open(), Code::Approved),
        (
            Event::TransferSettled {
                leg: 1,
                receiver: Code::AccountFrozen,
            },
            closed(),
            Code::Approved,
        ),
    ]
}

/// Completions, voids and expiries of holds.
fn hold_cases() -> Vec<(Event, Account, Code)> {
    let complete = |hold, amount| Event::HoldCompleted { hold, amount };
    let expiring = || {
        let mut account = open();
        account.activity_mut().holds[0].expires_at_unix_ms = 0;
        account
    };
    vec![
        (complete(1, None), closed(), Code::AccountClosed),
        (complete(1, None), frozen(), Code::AccountFrozen),
        (complete(0, None), open(), Code::UnknownHold),
        (complete(99, None), open(), Code::UnknownHold),
        (complete(2, None), open(), Code::HoldResolved),
        (complete(1, Some(2)), open(), Code::InvalidAmount),
        (complete(1, Some(0)), open(), Code::InvalidAmount),
        (complete(1, Some(1)), open(), Code::Approved),
        (Event::HoldVoided { hold: 1 }, closed(), Code::AccountClosed),
        (Event::HoldVoided { hold: 99 }, frozen(), Code::UnknownHold),
        (Event::HoldVoided { hold: 2 }, frozen(), Code::HoldResolved),
        (Event::HoldVoided { hold: 1 }, frozen(), Code::Approved),
        (Event::HoldExpired { hold: 1 }, closed(), Code::Busy),
        (Event::HoldExpired { hold: 1 }, expiring(), Code::Approved),
    ]
}

/// Reversals and the operator's events.
fn account_cases() -> Vec<(Event, Account, Code)> {
    let debit = RequestId {
        client: 1,
        sequence: 1,
    };
    let reversal = |original, dispensed, original_known| Event::Reversal {
        original,
        dispensed,
        original_known,
    };
    let unseen = RequestId {
        client: 1,
        sequence: 50,
    };
    let empty = || {
        let mut account = Account::new("Joty", pin_hash(A), 0);
        account.activity_mut().last_leg = 4;
        account
    };
    vec![
        (reversal(debit, None, true), closed(), Code::AccountClosed),
        (reversal(unseen, None, true), frozen(), Code::NotReversible),
        (
            reversal(debit, Some(11), true),
            frozen(),
            Code::InvalidAmount,
        ),
        (reversal(debit, Some(4), true), frozen(), Code::Approved),
        (reversal(unseen, None, false), open(), Code::Approved),
        (Event::AccountFrozen, closed(), Code::AccountClosed),
        (Event::AccountFrozen, open(), Code::Approved),
        (Event::AccountUnfrozen, closed(), Code::AccountClosed),
        (Event::AccountUnfrozen, frozen(), Code::Approved),
        (Event::CardUnlocked, closed(), Code::AccountClosed),
        (Event::CardUnlocked, frozen(), Code::Approved),
        (
            Event::LimitsSet {
                limits: DailyLimits::NONE,
            },
            closed(),
            Code::AccountClosed,
        ),
        (
            Event::LimitsSet {
                limits: DailyLimits::NONE,
            },
            frozen(),
            Code::Approved,
        ),
        (Event::AccountClosed, open(), Code::BalanceNotZero),
        (
            Event::AccountClosed,
            in_state(empty(), AccountState::Frozen),
            Code::Approved,
        ),
        (Event::AccountClosed, closed(), Code::Approved),
    ]
}

#[test]
fn every_code_a_new_event_can_be_recorded_with_is_reached_where_the_rules_say() {
    let mut reached: BTreeMap<u8, BTreeSet<Code>> = BTreeMap::new();
    let mut events: BTreeMap<u8, Event> = BTreeMap::new();
    for (event, account, code) in cases() {
        let outcome = decided(&account, event.clone());
        assert_eq!(outcome.status, code, "{event:?} on {account:?}");
        if code != Code::Busy {
            reached.entry(event.tag()).or_default().insert(code);
        }
        events.entry(event.tag()).or_insert(event);
    }
    let withdrawal = peeled(|amount| Event::Withdrawal { amount }, 0, 30);
    reached.insert(
        Event::Withdrawal { amount: 1 }.tag(),
        withdrawal.into_iter().collect(),
    );
    let hold = |amount| Event::HoldPlaced { amount, ttl_ms: 1 };
    let mut placed: BTreeSet<Code> = peeled(hold, 0, 30).into_iter().collect();
    placed.extend([Code::WithdrawalCountExceeded, Code::WithdrawalLimitExceeded]);
    reached.insert(hold(1).tag(), placed);
    events.insert(hold(1).tag(), hold(1));
    events.insert(
        Event::Withdrawal { amount: 1 }.tag(),
        Event::Withdrawal { amount: 1 },
    );
    // Every event of the banking operations (from the transfer on), and the deposit.
    for (tag, event) in &events {
        let recordable: BTreeSet<Code> = event.recorded_codes().iter().copied().collect();
        assert_eq!(reached[tag], recordable, "{event:?}");
    }
    assert!(events.len() >= 15, "{events:?}");
}

#[test]
fn pin_checks_on_a_frozen_or_closed_account_are_answered_and_never_recorded() {
    for (state, code) in [
        (AccountState::Frozen, Code::AccountFrozen),
        (AccountState::Closed, Code::AccountClosed),
    ] {
        let mut account = Account::new("Joty", pin_hash(A), 10);
        account.state = state;
        for event in [
            Event::PinAttempt { correct: false },
            Event::PinChanged {
                pin_hash: pin_hash(B),
            },
        ] {
            let decision = decide(
                Some(&account),
                A,
                RequestId {
                    client: 1,
                    sequence: 1,
                },
                event,
                At::default(),
                &Policy::default(),
            );
            assert_eq!(decision, Decision::Answer(Outcome::bare(code)));
        }
    }
}

// ---- Holds. ----

fn placed_id(outcome: Outcome) -> HoldId {
    assert_eq!(outcome.status, Code::Approved, "{outcome:?}");
    outcome.reference.expect("a placed hold has an id")
}

/// A bank whose card A (1 000) holds 300, 200 and 100 (holds 1, 2 and 3, for a minute), with
/// daily limits of 2 000 in 5.
fn three_holds() -> Bank {
    let mut bank = Bank::with(&[(A, 1_000)]);
    bank.policy.daily_limits = DailyLimits {
        amount: 2_000,
        count: 5,
    };
    let place = |amount| Event::HoldPlaced {
        amount,
        ttl_ms: 60_000,
    };
    let first = bank.on(A, place(300));
    assert_eq!(
        (first.balance, first.available, first.reference),
        (Some(1_000), Some(700), Some(1))
    );
    let second = placed_id(bank.on(A, place(200)));
    let third = placed_id(bank.on(A, place(100)));
    assert_eq!((second, third), (2, 3));
    assert_eq!(bank.account(A).held(), 600);
    assert_eq!(bank.account(A).usage_on(DAY).amount, 600);
    // Available money only: 400 is left.
    assert_eq!(
        bank.on(A, Event::Withdrawal { amount: 401 }).status,
        Code::InsufficientFunds
    );
    bank
}

#[test]
fn a_hold_is_completed_for_less_or_voided_and_resolved_at_most_once() {
    let mut bank = three_holds();
    let second = 2;

    // Completed for less: 250 taken, 50 released, and 50 given back to today's limit.
    let completed = bank.on(
        A,
        Event::HoldCompleted {
            hold: 1,
            amount: Some(250),
        },
    );
    assert_eq!(
        (completed.status, completed.balance, completed.available),
        (Code::Approved, Some(750), Some(450))
    );
    assert_eq!(bank.account(A).usage_on(DAY).amount, 550);
    assert_eq!(bank.account(A).usage_on(DAY).count, 3);
    assert!(bank
        .account(A)
        .debit(bank.records.last().unwrap().request)
        .is_some());
    // Voided: all of it released, and the limits given back (amount and count).
    let voided = bank.on(A, Event::HoldVoided { hold: second });
    assert_eq!(
        (voided.status, voided.balance, voided.available),
        (Code::Approved, Some(750), Some(650))
    );
    assert_eq!(bank.account(A).usage_on(DAY).amount, 350);
    assert_eq!(bank.account(A).usage_on(DAY).count, 2);

    // Resolved at most once, whatever comes next.
    for hold in [1, second] {
        for event in [
            Event::HoldCompleted { hold, amount: None },
            Event::HoldVoided { hold },
        ] {
            assert_eq!(bank.on(A, event).status, Code::HoldResolved);
        }
        let expired = decide(
            Some(bank.account(A)),
            A,
            RequestId {
                client: 0,
                sequence: hold,
            },
            Event::HoldExpired { hold },
            at(DAY + 9, 0),
            &bank.policy,
        );
        assert_eq!(expired, Decision::Answer(Outcome::bare(Code::HoldResolved)));
    }
    assert_eq!(
        bank.on(A, Event::HoldVoided { hold: 4 }).status,
        Code::UnknownHold
    );
    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn a_hold_expires_by_the_clock_of_the_decision_and_gives_its_limits_back() {
    let mut bank = three_holds();
    let third = 3;
    // Not due a millisecond early, due at the time.
    let due = bank.account(A).hold(third).unwrap().expires_at_unix_ms;
    bank.at.unix_ms = due - 1;
    assert_eq!(
        bank.request(A, id(0, third), Event::HoldExpired { hold: third })
            .status,
        Code::Busy
    );
    assert!(bank.records.last().unwrap().event != Event::HoldExpired { hold: third });
    bank.at.unix_ms = due;
    // Due but not yet expired by the bank: neither completed nor voided any more.
    assert_eq!(
        bank.on(
            A,
            Event::HoldCompleted {
                hold: third,
                amount: None
            }
        )
        .status,
        Code::HoldResolved
    );
    let expired = bank.request(A, id(0, third), Event::HoldExpired { hold: third });
    assert_eq!(
        (expired.status, expired.balance, expired.available),
        (Code::Approved, Some(1_000), Some(500))
    );
    assert_eq!(bank.account(A).held(), 500);
    assert_eq!(bank.account(A).usage_on(DAY).amount, 500);
    assert_eq!(bank.account(A).usage_on(DAY).count, 2);
    // Expired once: the sweep finding it again is told it is resolved, and journals nothing.
    let records = bank.records.len();
    let again = bank.request(A, id(0, third), Event::HoldExpired { hold: third });
    assert_eq!(again, Outcome::bare(Code::HoldResolved));
    assert_eq!(bank.records.len(), records);
    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.replayed(), bank.ledger);
}

fn id(client: u64, sequence: u64) -> RequestId {
    RequestId { client, sequence }
}

#[test]
fn a_hold_counted_on_an_earlier_day_gives_nothing_back_to_today() {
    let mut bank = Bank::with(&[(A, 1_000)]);
    bank.policy.daily_limits = DailyLimits {
        amount: 500,
        count: 2,
    };
    let hold = placed_id(bank.on(
        A,
        Event::HoldPlaced {
            amount: 400,
            ttl_ms: 3 * DAY_MS,
        },
    ));
    bank.at = at(DAY + 1, 0);
    assert_eq!(
        bank.on(A, Event::Withdrawal { amount: 500 }).status,
        Code::Approved
    );
    bank.on(A, Event::HoldVoided { hold });
    // Today's use is the withdrawal's alone: the hold's day is not today.
    assert_eq!(
        bank.account(A).usage_on(DAY + 1),
        DailyUsage {
            day: DAY + 1,
            amount: 500,
            count: 1
        }
    );
}

// ---- Reversals. ----

/// A reversal of `original` by the card, keeping `dispensed` (what the memory knows of the
/// original is filled in by [`Bank::request`]).
fn reversal(original: RequestId, dispensed: Option<Amount>) -> Event {
    Event::Reversal {
        original,
        dispensed,
        original_known: false,
    }
}

#[test]
fn a_reversal_gives_back_all_or_what_was_not_dispensed_once() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 1_000)]);
    bank.policy.daily_limits = DailyLimits {
        amount: 1_000,
        count: 3,
    };
    let full = bank.next_id();
    bank.request(A, full, Event::Withdrawal { amount: 300 });
    let partial = bank.next_id();
    bank.request(A, partial, Event::Withdrawal { amount: 200 });
    assert_eq!(bank.account(A).usage_on(DAY).count, 2);

    let back = bank.on(A, reversal(full, None));
    assert_eq!(
        (back.status, back.balance, back.available, back.reference),
        (Code::Approved, Some(800), Some(800), None)
    );
    // A full reversal gives the withdrawal back to the limits, count included.
    assert_eq!(bank.account(A).usage_on(DAY).amount, 200);
    assert_eq!(bank.account(A).usage_on(DAY).count, 1);
    // The ATM paid out 50 of the 200: 150 comes back, the count stays.
    let back = bank.on(A, reversal(partial, Some(50)));
    assert_eq!((back.status, back.balance), (Code::Approved, Some(950)));
    assert_eq!(bank.account(A).usage_on(DAY).amount, 50);
    assert_eq!(bank.account(A).usage_on(DAY).count, 1);
    let statement = bank.account(A).movements(2);
    assert_eq!(
        statement
            .iter()
            .map(|m| (m.kind, m.amount))
            .collect::<Vec<_>>(),
        [(MovementKind::Reversal, 300), (MovementKind::Reversal, 150)]
    );

    // A second reversal (another request) is approved and moves nothing.
    let records = bank.records.len();
    let again = bank.on(A, reversal(full, None));
    assert_eq!((again.status, again.balance), (Code::Approved, Some(950)));
    assert_eq!(bank.records.len(), records + 1);
    assert_eq!(bank.account(A).movements(1)[0].amount, 150);
    // More dispensed than was taken is no reversal.
    let taken = bank.next_id();
    bank.request(A, taken, Event::Withdrawal { amount: 10 });
    let wrong = reversal(taken, Some(11));
    assert_eq!(bank.on(A, wrong).status, Code::InvalidAmount);
    // Another card's debit is out of reach: on card B it was never seen, so it is reversed in
    // its place and nothing moves.
    let other = reversal(taken, None);
    let on_b = bank.on(B, other);
    assert_eq!((on_b.status, on_b.balance), (Code::Approved, Some(1_000)));
    assert_eq!(on_b.reference, Some(REVERSAL_IN_PLACE));
    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn a_reversal_of_a_never_seen_original_takes_its_place_and_the_late_original_conflicts() {
    let mut bank = Bank::with(&[(A, 1_000)]);
    let original = id(5, 3);
    let reversal = reversal(original, None);
    let reversed = bank.request(A, id(5, 4), reversal.clone());
    assert_eq!(
        (reversed.status, reversed.balance, reversed.reference),
        (Code::Approved, Some(1_000), Some(REVERSAL_IN_PLACE))
    );
    // The original arrives late: refused, and it never debits.
    let late = bank.request(A, original, Event::Withdrawal { amount: 300 });
    assert_eq!(late, Outcome::bare(Code::RequestIdConflict));
    assert_eq!(bank.account(A).balance, 1_000);
    // The reversal retried is its own replay.
    assert_eq!(bank.request(A, id(5, 4), reversal), reversed);
    // The memory survives a replay of the journal.
    let replayed = bank.replayed();
    assert_eq!(replayed, bank.ledger);
    assert!(replayed.clients.get(&Principal::Card(A)).unwrap().knows(
        Principal::Card(A),
        original.client,
        original.sequence
    ));
}

#[test]
fn a_known_request_that_is_no_recent_debit_is_not_reversible() {
    let mut bank = Bank::with(&[(A, 1_000)]);
    let deposit = bank.next_id();
    bank.request(A, deposit, Event::Deposit { amount: 5 });
    let not_a_debit = reversal(deposit, None);
    let refused = bank.on(A, not_a_debit);
    assert_eq!(
        (refused.status, refused.balance),
        (Code::NotReversible, Some(1_005))
    );
    // A withdrawal that fell out of the recent debits is known to the memory but gone.
    let oldest = bank.next_id();
    bank.request(A, oldest, Event::Withdrawal { amount: 1 });
    for _ in 0..REVERSIBLE_DEBITS_MAX {
        bank.on(A, Event::Withdrawal { amount: 1 });
    }
    assert!(bank.account(A).debit(oldest).is_none());
    let too_old = reversal(oldest, None);
    assert_eq!(bank.on(A, too_old).status, Code::NotReversible);
    assert_eq!(
        bank.account(A).balance,
        1_005 - 1 - REVERSIBLE_DEBITS_MAX as u64
    );
}

// ---- Transfers. ----

#[test]
fn a_transfer_is_sent_received_and_settled_or_returned_and_money_is_in_transit_between() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 100), (C, 0)]);
    let sent = bank.transfer(A, B, 300);
    assert_eq!(
        (sent.status, sent.balance, sent.available, sent.reference),
        (Code::Approved, Some(700), Some(700), Some(1))
    );
    assert_eq!(bank.ledger.in_transit(), Some(300));
    assert_eq!(bank.account(A).in_transit(), 300);
    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.deliver(A, 1), Code::Approved);
    assert_eq!(bank.account(B).balance, 400);
    assert_eq!(bank.account(A).outbox(), &[]);
    assert_eq!(bank.ledger.in_transit(), Some(0));
    // A leg delivered twice is credited once.
    let again = bank.request(
        B,
        id(A, 1),
        Event::TransferReceived {
            from: A,
            leg: 1,
            amount: 300,
        },
    );
    assert_eq!((again.status, again.balance), (Code::Approved, Some(400)));
    assert_eq!(bank.account(B).balance, 400);
    assert_eq!(
        bank.account(B).movements(1)[0],
        Movement {
            at_unix_ms: bank.at.unix_ms,
            kind: MovementKind::TransferIn,
            amount: 300,
            request: id(A, 1),
            balance_after: 400,
        }
    );

    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn a_transfer_the_receiver_refuses_is_given_back_and_one_it_would_refuse_is_refused_at_once() {
    let mut bank = Bank::with(&[(A, 1_000), (C, 0)]);
    // The receiver frozen after the transfer was asked: refused there, given back here.
    let to_c = bank.transfer(A, C, 200);
    assert_eq!(to_c.reference, Some(1));
    bank.on(C, Event::AccountFrozen);
    assert_eq!(bank.deliver(A, 1), Code::AccountFrozen);
    assert_eq!(bank.account(A).balance, 1_000);
    assert_eq!(bank.account(C).balance, 0);
    assert_eq!(
        bank.account(A)
            .movements(2)
            .iter()
            .map(|m| (m.kind, m.amount, m.balance_after))
            .collect::<Vec<_>>(),
        [
            (MovementKind::TransferOut, 200, 800),
            (MovementKind::TransferReturned, 200, 1_000)
        ]
    );
    // Settling twice does nothing.
    let settle = Event::TransferSettled {
        leg: 1,
        receiver: Code::AccountFrozen,
    };
    let records = bank.records.len();
    assert_eq!(bank.on(A, settle).status, Code::Approved);
    assert_eq!(bank.records.len(), records);
    // A frozen receiver known when asked: refused at once, nothing on its way.
    let refused = bank.transfer(A, C, 10);
    assert_eq!(
        (refused.status, refused.balance),
        (Code::AccountFrozen, Some(1_000))
    );
    assert_eq!(bank.transfer(A, 12_345, 10).status, Code::UnknownCard);
    assert_eq!(bank.ledger.in_transit(), Some(0));
    assert!(bank.ledger.is_conserved());
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn transfers_on_their_way_span_at_most_the_receivers_window() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 0)]);
    for leg in 1..=TRANSFERS_IN_TRANSIT_SPAN {
        assert_eq!(bank.transfer(A, B, 1).reference, Some(leg));
    }
    // The oldest is still on its way: the next would be outside the receiver's window.
    let records = bank.records.len();
    assert_eq!(bank.transfer(A, B, 1), Outcome::bare(Code::Busy));
    assert_eq!(bank.records.len(), records);
    // Delivering a newer one does not help; delivering the oldest does.
    bank.deliver(A, 2);
    assert_eq!(bank.transfer(A, B, 1), Outcome::bare(Code::Busy));
    bank.deliver(A, 1);
    // The oldest is now leg 3: legs up to 3 + 31 may be on their way.
    for leg in TRANSFERS_IN_TRANSIT_SPAN + 1..=TRANSFERS_IN_TRANSIT_SPAN + 2 {
        assert_eq!(bank.transfer(A, B, 1).reference, Some(leg));
    }
    assert_eq!(bank.transfer(A, B, 1), Outcome::bare(Code::Busy));
    assert_eq!(
        bank.ledger.in_transit(),
        Some(u128::from(TRANSFERS_IN_TRANSIT_SPAN))
    );
    assert!(bank.ledger.is_conserved());
}

// ---- Daily limits and the business day. ----

#[test]
fn daily_limits_start_again_on_the_next_business_day_and_an_account_may_have_its_own() {
    let mut bank = Bank::with(&[(A, 10_000)]);
    bank.policy.daily_limits = DailyLimits {
        amount: 500,
        count: 2,
    };
    bank.at = at(DAY, DAY_MS - 1);
    let withdraw = |amount| Event::Withdrawal { amount };
    assert_eq!(bank.on(A, withdraw(400)).status, Code::Approved);
    assert_eq!(
        bank.on(A, withdraw(101)).status,
        Code::WithdrawalLimitExceeded
    );
    assert_eq!(bank.on(A, withdraw(100)).status, Code::Approved);
    assert_eq!(
        bank.on(A, withdraw(1)).status,
        Code::WithdrawalCountExceeded
    );
    // A millisecond later it is the next business day.
    bank.at = at(DAY + 1, 0);
    assert_eq!(bank.on(A, withdraw(500)).status, Code::Approved);
    assert_eq!(
        bank.on(A, withdraw(1)).status,
        Code::WithdrawalLimitExceeded
    );
    // Deposits count against nothing.
    assert_eq!(
        bank.on(A, Event::Deposit { amount: 9 }).status,
        Code::Approved
    );
    // The operator's limits for this card win over the bank's.
    let own = DailyLimits {
        amount: 600,
        count: 2,
    };
    bank.on(A, Event::LimitsSet { limits: own });
    assert_eq!(bank.account(A).limits(bank.policy.daily_limits), own);
    assert_eq!(bank.on(A, withdraw(100)).status, Code::Approved);
    assert_eq!(
        bank.on(A, withdraw(1)).status,
        Code::WithdrawalCountExceeded
    );
    // A day's use is forgotten by a record of another day, not carried over.
    bank.at = at(DAY + 3, 0);
    assert_eq!(bank.account(A).usage_on(DAY + 3).count, 0);
    assert_eq!(bank.on(A, withdraw(600)).status, Code::Approved);
    assert_eq!(bank.replayed(), bank.ledger);
}

// ---- Statements. ----

#[test]
fn a_statement_keeps_the_last_fifty_movements_whose_balances_follow_each_other() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 0)]);
    for round in 0..30u64 {
        bank.at.unix_ms += 1;
        bank.on(A, Event::Deposit { amount: round + 1 });
        bank.on(A, Event::Withdrawal { amount: round });
        if round % 10 == 0 {
            let leg = bank.transfer(A, B, 5).reference.unwrap();
            bank.deliver(A, leg);
        }
    }
    let account = bank.account(A);
    let all = account.movements(usize::MAX);
    assert_eq!(all.len(), STATEMENT_MOVEMENTS_MAX);
    assert_eq!(account.movements(3), all[all.len() - 3..]);
    assert_eq!(all.last().unwrap().balance_after, account.balance);
    assert_balances_follow(&all);
    // The opening is long forgotten; the first movement kept is no opening.
    assert!(all
        .iter()
        .all(|movement| movement.kind != MovementKind::Opened));
}

/// Each movement's balance after it is the one before it moved by its amount.
fn assert_balances_follow(movements: &[Movement]) {
    for pair in movements.windows(2) {
        let (before, movement) = (pair[0].balance_after, pair[1]);
        let expected = match movement.kind {
            MovementKind::Opened => movement.amount,
            MovementKind::Deposit
            | MovementKind::TransferIn
            | MovementKind::TransferReturned
            | MovementKind::Reversal => before + movement.amount,
            MovementKind::Withdrawal | MovementKind::TransferOut | MovementKind::HoldCompleted => {
                before - movement.amount
            }
        };
        assert_eq!(movement.balance_after, expected, "{pair:?}");
    }
}

// ---- The property over every event. ----

/// One step of a random run.
#[derive(Clone, Debug)]
enum Step {
    /// A card request (by client `client % 3`) of `kind`, with `amount`, on card `card % 3`.
    Request {
        card: u8,
        kind: u8,
        amount: u64,
        client: u8,
    },
    /// Delivers the `pick`-th transfer still on its way, of any card.
    Deliver { pick: u8 },
    /// The clock moves on by `ms`.
    Later { ms: u64 },
    /// The operator acts on a card: freeze, unfreeze, close, set limits.
    Operator { card: u8, action: u8, amount: u64 },
}

fn any_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0u8..3, 0u8..8, prop_oneof![0u64..3, 1u64..400, Just(u64::MAX)], 0u8..3)
            .prop_map(|(card, kind, amount, client)| Step::Request { card, kind, amount, client }),
        3 => any::<u8>().prop_map(|pick| Step::Deliver { pick }),
        1 => prop_oneof![1u64..5_000, Just(DAY_MS / 2)].prop_map(|ms| Step::Later { ms }),
        1 => (0u8..3, 0u8..4, 1u64..600)
            .prop_map(|(card, action, amount)| Step::Operator { card, action, amount }),
    ]
}

const CARDS: [Card; 3] = [A, B, C];

impl Bank {
    /// Runs one step of a random run.
    fn run(&mut self, step: &Step, sequences: &mut [u64; 3]) {
        match *step {
            Step::Request {
                card,
                kind,
                amount,
                client,
            } => {
                let card = CARDS[usize::from(card % 3)];
                let client = usize::from(client % 3);
                sequences[client] += 1;
                let request = id(10 + client as u64, sequences[client]);
                let event = self.card_event(card, kind, amount, client as u64);
                self.request(card, request, event);
            }
            Step::Deliver { pick } => {
                let legs: Vec<(Card, u64)> = CARDS
                    .iter()
                    .flat_map(|card| {
                        self.account(*card)
                            .outbox()
                            .iter()
                            .map(|leg| (*card, leg.leg))
                    })
                    .collect();
                if !legs.is_empty() {
                    let (from, leg) = legs[usize::from(pick) % legs.len()];
                    self.deliver(from, leg);
                }
            }
            Step::Later { ms } => {
                self.at.unix_ms += ms;
                self.at.business_day = (self.at.unix_ms / DAY_MS) as u32;
            }
            Step::Operator {
                card,
                action,
                amount,
            } => {
                let card = CARDS[usize::from(card % 3)];
                let event = match action {
                    0 => Event::AccountFrozen,
                    1 => Event::AccountUnfrozen,
                    2 => Event::AccountClosed,
                    _ => Event::LimitsSet {
                        limits: DailyLimits {
                            amount,
                            count: (amount % 5) as u32,
                        },
                    },
                };
                self.on(card, event);
            }
        }
    }

    /// A card event of `kind` on `card`: withdrawals, deposits, transfers, holds placed,
    /// completed, voided or expired, reversals of this card's recent (or made-up) requests.
    fn card_event(&self, card: Card, kind: u8, amount: u64, client: u64) -> Event {
        let account = self.account(card);
        let hold = account.last_hold().saturating_sub(amount % 3);
        match kind {
            0 => Event::Withdrawal { amount },
            // Capped: a balance near the largest amount could not take a refused transfer back
            // (the overflowing deposit itself is tested on its own).
            1 => Event::Deposit {
                amount: amount.min(1 << 40),
            },
            2 => {
                let to = CARDS[(amount % 3) as usize];
                let to = if to == card { 12_345 } else { to };
                Event::TransferSent {
                    to,
                    amount,
                    receiver: self.receiver(to),
                }
            }
            3 => Event::HoldPlaced {
                amount,
                ttl_ms: 2_000,
            },
            4 => Event::HoldCompleted {
                hold,
                amount: amount.is_multiple_of(2).then_some(amount / 7),
            },
            5 => Event::HoldVoided { hold },
            6 => Event::HoldExpired { hold },
            _ => {
                let debits = account
                    .activity
                    .as_ref()
                    .map(|a| a.debits.len())
                    .unwrap_or(0);
                let original = match account.activity.as_ref() {
                    Some(activity) if debits > 0 => {
                        activity.debits[(amount as usize) % debits].request
                    }
                    _ => id(10 + client, amount % 50 + 1),
                };
                reversal(original, amount.is_multiple_of(3).then_some(amount % 4))
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: prop::test_runner::RngSeed::Fixed(0x0BA7_CEED),
        ..ProptestConfig::default()
    })]

    /// Whatever the events, in whatever order the transfers' legs are delivered: money is
    /// conserved (in transit included), no account has more held than its balance, every record
    /// is valid, and replaying the records gives the same ledger. Delivering what is left at the
    /// end empties the transit.
    #[test]
    fn every_event_in_any_order_conserves_money_and_replays(
        steps in prop::collection::vec(any_step(), 1..160),
    ) {
        let mut bank = Bank::with(&[(A, 1_000), (B, 500), (C, 0)]);
        bank.policy.daily_limits = DailyLimits { amount: 2_000, count: 20 };
        let mut sequences = [0u64; 3];
        for step in &steps {
            bank.run(step, &mut sequences);
            prop_assert!(bank.ledger.is_conserved(), "after {step:?}");
            for card in CARDS {
                let account = bank.account(card);
                prop_assert!(account.held() <= account.balance, "{account:?}");
                prop_assert!(account.available() <= account.balance);
                assert_balances_follow(&account.movements(usize::MAX));
            }
        }
        for card in CARDS {
            let legs: Vec<u64> = bank.account(card).outbox().iter().map(|leg| leg.leg).collect();
            for leg in legs {
                bank.deliver(card, leg);
            }
        }
        prop_assert_eq!(bank.ledger.in_transit(), Some(0));
        prop_assert!(bank.ledger.is_conserved());
        for record in &bank.records {
            prop_assert_eq!(record.validate(), Ok(()));
        }
        prop_assert_eq!(bank.replayed(), bank.ledger.clone());
        // A snapshot gives the same state, each account kept compactly or not as it was.
        prop_assert_eq!(round_trip(&bank.ledger), bank.ledger.clone());
    }
}

// ---- Accounts that were only opened. ----

/// The opening line of an account opened with `balance` by request `sequence` of client 1 at
/// [`Bank::with`]'s time.
fn opening_line(balance: Amount, sequence: u64) -> Movement {
    Movement {
        at_unix_ms: at(DAY, 1_000).unix_ms,
        kind: MovementKind::Opened,
        amount: balance,
        request: id(1, sequence),
        balance_after: balance,
    }
}

/// [`Account`] as it was declared (and its serde form derived) before an opening was kept in
/// the account itself: the form every snapshot since statements holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct AccountBefore {
    holder: Box<str>,
    pin_hash: crate::pin::PinHash,
    balance: Amount,
    pin_failures: u8,
    state: AccountState,
    activity: Option<Box<Activity>>,
}

/// An account of the earlier form whose statement is its opening line, as every opening made it.
fn opened_before(balance: Amount) -> AccountBefore {
    let mut activity = Activity::default();
    activity.movements.push_back(opening_line(balance, 1));
    AccountBefore {
        holder: "Joty".into(),
        pin_hash: pin_hash(A),
        balance,
        pin_failures: 0,
        state: AccountState::Open,
        activity: Some(Box::new(activity)),
    }
}

/// The ledger through a snapshot's encoding and back.
fn round_trip(ledger: &Ledger) -> Ledger {
    let bytes = crate::codec::encode_stored(ledger).unwrap();
    crate::codec::decode_stored(&bytes).unwrap()
}

#[test]
fn an_account_only_opened_keeps_no_activity_and_its_statement_is_the_opening_line() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 0)]);
    for (card, balance, sequence) in [(A, 1_000, 1), (B, 0, 2)] {
        let account = bank.account(card);
        assert!(account.activity.is_none(), "{account:?}");
        assert_eq!(
            account.movements(usize::MAX),
            [opening_line(balance, sequence)]
        );
        assert_eq!(account.movements(1), [opening_line(balance, sequence)]);
        assert_eq!(account.movements(0), []);
    }
    // What moves no money and needs no activity keeps it compact.
    assert_eq!(bank.on(A, Event::AccountFrozen).status, Code::Approved);
    assert_eq!(bank.on(A, Event::AccountUnfrozen).status, Code::Approved);
    assert_eq!(
        bank.on(A, Event::PinAttempt { correct: false }).status,
        Code::IncorrectPin
    );
    assert!(bank.account(A).activity.is_none());
    assert_eq!(
        bank.account(A).movements(usize::MAX),
        [opening_line(1_000, 1)]
    );
    // A refused opening of a card that exists changes nothing.
    assert_eq!(bank.on(A, opening(5)).status, Code::CardExists);
    assert_eq!(
        bank.account(A).movements(usize::MAX),
        [opening_line(1_000, 1)]
    );
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn the_opening_line_moves_into_the_activity_when_money_first_moves() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 0)]);
    bank.at.unix_ms += 5;
    assert_eq!(
        bank.on(A, Event::Withdrawal { amount: 200 }).status,
        Code::Approved
    );
    let leg = bank.transfer(A, B, 300).reference.unwrap();
    bank.deliver(A, leg);
    let account = bank.account(A);
    assert!(account.activity.is_some());
    let statement = account.movements(usize::MAX);
    assert_eq!(statement[0], opening_line(1_000, 1));
    assert_eq!(
        statement
            .iter()
            .map(|m| (m.kind, m.amount, m.balance_after))
            .collect::<Vec<_>>(),
        [
            (MovementKind::Opened, 1_000, 1_000),
            (MovementKind::Withdrawal, 200, 800),
            (MovementKind::TransferOut, 300, 500),
        ]
    );
    // The receiver's first movement is a credit: its opening line comes first, at 0.
    let received = bank.account(B).movements(usize::MAX);
    assert_eq!(received[0], opening_line(0, 2));
    assert_eq!(
        (
            received[1].kind,
            received[1].amount,
            received[1].balance_after
        ),
        (MovementKind::TransferIn, 300, 300)
    );
    assert_balances_follow(&statement);
    assert_balances_follow(&received);
    assert_eq!(bank.replayed(), bank.ledger);
}

#[test]
fn an_activity_left_with_only_the_opening_line_is_not_kept() {
    let mut bank = Bank::with(&[(A, 1_000)]);
    let limits = DailyLimits {
        amount: 500,
        count: 2,
    };
    assert_eq!(
        bank.on(A, Event::LimitsSet { limits }).status,
        Code::Approved
    );
    assert!(bank.account(A).activity.is_some());
    assert_eq!(
        bank.account(A).movements(usize::MAX),
        [opening_line(1_000, 1)]
    );
    assert_eq!(bank.on(A, Event::LimitsCleared).status, Code::Approved);
    assert!(bank.account(A).activity.is_none());
    assert_eq!(
        bank.account(A).movements(usize::MAX),
        [opening_line(1_000, 1)]
    );
    // Live, replayed and through a snapshot: the same state, the same representation.
    assert_eq!(bank.replayed(), bank.ledger);
    assert_eq!(round_trip(&bank.ledger), bank.ledger);
}

#[test]
fn statements_survive_a_snapshot_round_trip_compact_or_not() {
    let mut bank = Bank::with(&[(A, 1_000), (B, 250), (C, 0)]);
    assert_eq!(
        bank.on(B, Event::Deposit { amount: 50 }).status,
        Code::Approved
    );
    let limits = DailyLimits {
        amount: 500,
        count: 2,
    };
    assert_eq!(
        bank.on(C, Event::LimitsSet { limits }).status,
        Code::Approved
    );
    let decoded = round_trip(&bank.ledger);
    assert_eq!(decoded, bank.ledger);
    assert!(decoded.accounts[&A].activity.is_none());
    assert!(decoded.accounts[&B].activity.is_some());
    assert!(decoded.accounts[&C].activity.is_some());
    for card in CARDS {
        assert_eq!(
            decoded.accounts[&card].movements(usize::MAX),
            bank.account(card).movements(usize::MAX)
        );
    }
    // Money moves on the decoded account as it would have on the live one.
    let mut ledger = decoded;
    let mut live = bank.ledger.clone();
    let withdrawal = match decide(
        ledger.accounts.get(&A),
        A,
        id(1, 99),
        Event::Withdrawal { amount: 100 },
        bank.at,
        &bank.policy,
    ) {
        Decision::Record(record) => record,
        Decision::Answer(outcome) => panic!("answered {outcome:?}"),
    };
    let lsn = ledger.applied_lsn + 1;
    ledger.apply(lsn, &withdrawal).unwrap();
    live.apply(lsn, &withdrawal).unwrap();
    assert_eq!(ledger, live);
    assert_eq!(
        ledger.accounts[&A].movements(usize::MAX)[0],
        opening_line(1_000, 1)
    );
}

#[test]
fn an_account_only_opened_is_written_exactly_as_before() {
    let bank = Bank::with(&[(A, 1_000)]);
    let bytes = crate::codec::encode_stored(bank.account(A)).unwrap();
    assert_eq!(
        bytes,
        crate::codec::encode_stored(&opened_before(1_000)).unwrap()
    );
    // The encoding of an opening-only account, from the layout before this change: the holder,
    // the verifier (scheme, salt, MAC), the balance, no wrong PINs, open, then an activity with
    // nothing but the opening line.
    // "Joty", then a keyed verifier's memory cost (0) and scheme (one byte).
    assert_eq!(bytes[..6], [4, b'J', b'o', b't', b'y', 0]);
    let rest = &bytes[7 + crate::pin::SALT_BYTES + crate::pin::HASH_BYTES..];
    assert_eq!(
        rest,
        [
            // Balance 1000 (varint: 251 then two bytes), no wrong PINs, open.
            &[251, 0xe8, 0x03, 0, 0][..],
            // Some activity: no holds, last hold 0, no transfers, last leg 0, no limits, today
            // (day 0, 0, 0), no debits, one movement.
            &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            // The movement: at (varint u64: 253 then eight bytes), opened, 1000, request 1:1,
            // balance after 1000.
            &[253],
            &at(DAY, 1_000).unix_ms.to_le_bytes(),
            &[0, 251, 0xe8, 0x03, 1, 1, 251, 0xe8, 0x03],
        ]
        .concat()
    );
}

#[test]
fn an_earlier_release_account_with_only_its_opening_line_reads_compactly() {
    let before = opened_before(1_000);
    let bytes = crate::codec::encode_stored(&before).unwrap();
    let account: Account = crate::codec::decode_stored(&bytes).unwrap();
    assert!(account.activity.is_none(), "{account:?}");
    assert_eq!(account.movements(usize::MAX), [opening_line(1_000, 1)]);
    assert_eq!(
        (account.balance, account.available(), account.state),
        (1_000, 1_000, AccountState::Open)
    );
    // It is written back byte for byte.
    assert_eq!(crate::codec::encode_stored(&account).unwrap(), bytes);

    // An account of a release that kept no opening line has no statement, and is written back
    // as it was.
    let bare = AccountBefore {
        activity: None,
        ..opened_before(1_000)
    };
    let bytes = crate::codec::encode_stored(&bare).unwrap();
    let account: Account = crate::codec::decode_stored(&bytes).unwrap();
    assert!(account.activity.is_none());
    assert_eq!(account.movements(usize::MAX), []);
    assert_eq!(crate::codec::encode_stored(&account).unwrap(), bytes);

    // A line that is not what an opening makes is kept as it was, in an activity.
    let mut odd = opened_before(1_000);
    if let Some(activity) = odd.activity.as_mut() {
        activity.movements[0].amount = 900;
    }
    let bytes = crate::codec::encode_stored(&odd).unwrap();
    let account: Account = crate::codec::decode_stored(&bytes).unwrap();
    assert!(account.activity.is_some());
    assert_eq!(account.movements(usize::MAX)[0].amount, 900);
    assert_eq!(crate::codec::encode_stored(&account).unwrap(), bytes);
}
