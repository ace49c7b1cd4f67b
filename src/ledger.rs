//! The pure account rules: no I/O, no actors, no clocks.
//!
//! Every state change is a [`Record`]: what was asked ([`Event`]), by which request, on which card,
//! and how it ended ([`Outcome`], refusals included). [`decide`] turns a request into a record
//! against the current state of one account; [`apply`] moves an account from one state to the next
//! by a record. The account actors call both on their working copy; the journal calls [`apply`]
//! (through [`Ledger::apply`]) on the committed copy after the record is durable, and recovery
//! calls it again when it replays the journal. One function, three callers: they cannot disagree.
//!
//! [`ClientWindow`] is the memory of completed requests, the heart of exactly-once: see its docs
//! for the retention rule.

use crate::pin::PinHash;
use crate::protocol::{Amount, Card, RequestId, Status};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// Wrong PINs in a row after which a card is locked.
pub const PIN_ATTEMPTS_MAX: u8 = 3;

/// How many of each client's most recent sequence numbers the server remembers. A client keeps at
/// most this many requests unanswered, so every id it can still retry is remembered.
pub const REQUEST_WINDOW: u64 = 32;

/// The position of a record in the journal: 1 for the first record ever, then one more each.
pub type Lsn = u64;

/// One account's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The holder's name, as given when the account was opened.
    pub holder: Box<str>,
    /// The PIN's argon2id hash; the PIN itself is never stored.
    pub pin_hash: PinHash,
    /// The balance in minor units; a `u64`, so it cannot go negative.
    pub balance: Amount,
    /// Wrong PINs since the last correct one; the card is locked at [`PIN_ATTEMPTS_MAX`].
    pub pin_failures: u8,
}

impl Account {
    /// True when too many wrong PINs were entered.
    pub fn is_locked(&self) -> bool {
        self.pin_failures >= PIN_ATTEMPTS_MAX
    }
}

/// What a record asks of one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Open the account.
    AccountOpened {
        /// The holder's name.
        holder: String,
        /// The PIN's argon2id hash.
        pin_hash: PinHash,
        /// The opening balance.
        initial_balance: Amount,
    },
    /// Take money out.
    Withdrawal {
        /// How much.
        amount: Amount,
    },
    /// Put money in.
    Deposit {
        /// How much.
        amount: Amount,
    },
    /// A PIN was checked against the card's hash (the check itself happens outside the ledger,
    /// because argon2 is slow on purpose).
    PinAttempt {
        /// Whether the PIN matched.
        correct: bool,
    },
}

/// How a request ended, as its reply said; stored so a retry gets the same reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The reply's status.
    pub status: Status,
    /// The balance the reply carried, if any.
    pub balance: Option<Amount>,
}

/// One state change, as it is journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The request that caused it.
    pub request: RequestId,
    /// The account it concerns.
    pub card: Card,
    /// Wall-clock time of the decision in milliseconds since the Unix epoch; used only to forget
    /// idle clients, never to decide an outcome.
    pub at_unix_ms: u64,
    /// What was asked.
    pub event: Event,
    /// How it ended.
    pub outcome: Outcome,
}

/// What identifies a request's parameters, to tell a genuine retry from a reused id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Which kind of event (0 open, 1 withdrawal, 2 deposit, 3 PIN attempt).
    pub kind: u8,
    /// The card.
    pub card: Card,
    /// The amount (opening balance for an open; 1 or 0 for a correct or wrong PIN).
    pub amount: u64,
    /// For an open, the CRC-32C of the holder's name; 0 otherwise. (The PIN is left out on
    /// purpose: nothing kept may let a PIN be recovered; the session checks it separately.)
    pub detail: u32,
}

impl Fingerprint {
    /// The fingerprint of `event` on `card`.
    pub fn of(card: Card, event: &Event) -> Self {
        let (kind, amount, detail) = match event {
            Event::AccountOpened {
                initial_balance,
                holder,
                ..
            } => (0, *initial_balance, crc32c::crc32c(holder.as_bytes())),
            Event::Withdrawal { amount } => (1, *amount, 0),
            Event::Deposit { amount } => (2, *amount, 0),
            Event::PinAttempt { correct } => (3, u64::from(*correct), 0),
        };
        Fingerprint {
            kind,
            card,
            amount,
            detail,
        }
    }
}

/// Why a record could not be applied. Each is a bug or corruption, never a business refusal.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The record is for an account that does not exist (or opens one that does).
    #[error("record {request} on card {card}: {reason}")]
    Inconsistent {
        /// The record's request.
        request: RequestId,
        /// The record's card.
        card: Card,
        /// What does not add up.
        reason: String,
    },
    /// Records must be applied in journal order with no gaps.
    #[error("record {got} applied after {applied}")]
    OutOfOrder {
        /// The last applied position.
        applied: Lsn,
        /// The position offered.
        got: Lsn,
    },
}

/// The result of deciding a request against one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A state change (possibly a refusal, which is still remembered) to journal and apply.
    Record(Record),
    /// An answer that changes nothing and is not journaled.
    Answer(Outcome),
}

/// Decides `event` for `request` against `account` (None when the card has no account).
///
/// Pure: it reads the account and returns what should happen; the caller applies it.
pub fn decide(
    account: Option<&Account>,
    card: Card,
    request: RequestId,
    event: Event,
    at_unix_ms: u64,
) -> Decision {
    let refuse = |status| {
        Decision::Answer(Outcome {
            status,
            balance: None,
        })
    };
    let outcome = match (&event, account) {
        (Event::AccountOpened { .. }, Some(_)) => Outcome {
            status: Status::CardExists,
            balance: None,
        },
        (
            Event::AccountOpened {
                initial_balance, ..
            },
            None,
        ) => Outcome {
            status: Status::Approved,
            balance: Some(*initial_balance),
        },
        (_, None) => return refuse(Status::UnknownCard),
        (Event::PinAttempt { .. }, Some(account)) if account.is_locked() => {
            return refuse(Status::CardLocked)
        }
        // A right PIN with no wrong ones to clear changes nothing: answered, not journaled (a
        // retry simply checks the PIN again).
        (Event::PinAttempt { correct: true }, Some(account)) if account.pin_failures == 0 => {
            return refuse(Status::Approved)
        }
        (Event::PinAttempt { correct: true }, Some(_)) => Outcome {
            status: Status::Approved,
            balance: None,
        },
        (Event::PinAttempt { correct: false }, Some(account)) => Outcome {
            status: if account.pin_failures + 1 >= PIN_ATTEMPTS_MAX {
                Status::CardLocked
            } else {
                Status::IncorrectPin
            },
            balance: None,
        },
        (Event::Withdrawal { amount }, Some(account)) => match withdraw(account.balance, *amount) {
            Ok(balance) => approved(balance),
            Err(status) => refused(status, account.balance),
        },
        (Event::Deposit { amount }, Some(account)) => match deposit(account.balance, *amount) {
            Ok(balance) => approved(balance),
            Err(status) => refused(status, account.balance),
        },
    };
    Decision::Record(Record {
        request,
        card,
        at_unix_ms,
        event,
        outcome,
    })
}

fn approved(balance: Amount) -> Outcome {
    Outcome {
        status: Status::Approved,
        balance: Some(balance),
    }
}

fn refused(status: Status, balance: Amount) -> Outcome {
    Outcome {
        status,
        balance: Some(balance),
    }
}

/// The balance after withdrawing `amount`, or why not.
pub fn withdraw(balance: Amount, amount: Amount) -> Result<Amount, Status> {
    if amount == 0 {
        return Err(Status::InvalidAmount);
    }
    balance.checked_sub(amount).ok_or(Status::InsufficientFunds)
}

/// The balance after depositing `amount`, or why not.
pub fn deposit(balance: Amount, amount: Amount) -> Result<Amount, Status> {
    if amount == 0 {
        return Err(Status::InvalidAmount);
    }
    balance.checked_add(amount).ok_or(Status::InvalidAmount)
}

/// Moves `account` to its next state by `record`. Refusals leave the balance alone; wrong PINs
/// count towards the lock; a correct PIN clears the count. Every approved balance change is checked
/// against the balance the record says it produced.
pub fn apply(account: &mut Option<Account>, record: &Record) -> Result<(), LedgerError> {
    let inconsistent = |reason: &str| LedgerError::Inconsistent {
        request: record.request,
        card: record.card,
        reason: reason.to_string(),
    };
    let approved = record.outcome.status == Status::Approved;
    match (&record.event, account.as_mut()) {
        (
            Event::AccountOpened {
                holder,
                pin_hash,
                initial_balance,
            },
            None,
        ) => {
            if approved {
                *account = Some(Account {
                    holder: holder.as_str().into(),
                    pin_hash: *pin_hash,
                    balance: *initial_balance,
                    pin_failures: 0,
                });
            } else {
                return Err(inconsistent("refused open of a card that does not exist"));
            }
        }
        (Event::AccountOpened { .. }, Some(_)) => {
            if approved {
                return Err(inconsistent("opens an account that exists"));
            }
        }
        (_, None) => return Err(inconsistent("no such account")),
        (Event::PinAttempt { correct }, Some(account)) => {
            if *correct && approved {
                account.pin_failures = 0;
            } else if !*correct {
                account.pin_failures = account.pin_failures.saturating_add(1);
            }
        }
        (Event::Withdrawal { amount }, Some(account)) if approved => {
            let balance = withdraw(account.balance, *amount)
                .map_err(|_| inconsistent("approved withdrawal does not fit the balance"))?;
            check_balance(record, balance).map_err(|()| inconsistent("balance mismatch"))?;
            account.balance = balance;
        }
        (Event::Deposit { amount }, Some(account)) if approved => {
            let balance = deposit(account.balance, *amount)
                .map_err(|_| inconsistent("approved deposit overflows the balance"))?;
            check_balance(record, balance).map_err(|()| inconsistent("balance mismatch"))?;
            account.balance = balance;
        }
        (Event::Withdrawal { .. } | Event::Deposit { .. }, Some(_)) => {}
    }
    Ok(())
}

fn check_balance(record: &Record, balance: Amount) -> Result<(), ()> {
    if record.outcome.balance == Some(balance) {
        Ok(())
    } else {
        Err(())
    }
}

/// A completed request, remembered so a retry gets the original reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// The client's sequence number.
    pub sequence: u64,
    /// The request's parameters.
    pub fingerprint: Fingerprint,
    /// The reply it got.
    pub outcome: Outcome,
    /// Where its record is in the journal; a retry waits for this position to be durable before
    /// it answers, exactly like the first attempt.
    pub lsn: Lsn,
}

/// What the memory of completed requests says about an incoming one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never completed: decide it.
    New,
    /// Completed with the same parameters: answer with the stored outcome.
    Replay(Completed),
    /// Completed with other parameters: refuse with `request_id_conflict` once the original's
    /// record (at this position) is durable, so the refusal never outlives the original.
    Conflict(Lsn),
    /// Too old to tell: refuse with `stale_request`, never execute.
    Stale,
}

/// The memory of one client's completed requests.
///
/// Retention rule: the window keeps every completed request whose sequence number is within
/// [`REQUEST_WINDOW`] of the highest one completed (`highest - sequence < REQUEST_WINDOW`). A
/// request below that is *stale*: it is refused and never executed, because the server can no
/// longer tell whether it ran. A client that keeps at most `REQUEST_WINDOW` requests unanswered
/// (the client library keeps one) can only be retrying a sequence inside the window, so an honest
/// retry is never stale. The window holds at most `REQUEST_WINDOW` entries, so memory per client is
/// bounded whatever the number of requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientWindow {
    /// The highest sequence number completed.
    pub highest: u64,
    /// Completed requests inside the window, in completion order (never more than
    /// [`REQUEST_WINDOW`]; one that falls out of the window is forgotten at once).
    pub completed: VecDeque<Completed>,
    /// Time of the most recent completion, for forgetting idle clients.
    pub last_used_unix_ms: u64,
}

impl ClientWindow {
    /// True when `sequence` is inside the window: `highest - sequence < REQUEST_WINDOW` (every
    /// sequence is, while fewer than `REQUEST_WINDOW` have completed, and so is any above
    /// `highest`).
    fn in_window(highest: u64, sequence: u64) -> bool {
        highest < REQUEST_WINDOW || sequence > highest - REQUEST_WINDOW
    }

    /// Looks up `sequence` with parameters `fingerprint`. The rule, exactly: outside the window
    /// it is stale, whether or not it ran; inside, a completed one is a replay (same parameters)
    /// or a conflict (others); anything else is new.
    pub fn check(&self, sequence: u64, fingerprint: &Fingerprint) -> Seen {
        if !Self::in_window(self.highest, sequence) {
            return Seen::Stale;
        }
        match self.completed.iter().find(|done| done.sequence == sequence) {
            Some(done) if done.fingerprint == *fingerprint => Seen::Replay(*done),
            Some(done) => Seen::Conflict(done.lsn),
            None => Seen::New,
        }
    }

    /// Remembers a completed request and forgets every one that fell out of the window.
    pub fn remember(&mut self, done: Completed, at_unix_ms: u64) {
        self.highest = self.highest.max(done.sequence);
        self.last_used_unix_ms = self.last_used_unix_ms.max(at_unix_ms);
        self.completed.push_back(done);
        // At most REQUEST_WINDOW + 1 entries to look at: forgetting on every completion keeps
        // the memory equal to the rule `check` applies.
        let highest = self.highest;
        self.completed
            .retain(|kept| Self::in_window(highest, kept.sequence));
        debug_assert!(self.completed.len() as u64 <= REQUEST_WINDOW);
    }
}

/// The entry a record leaves in its client's window.
pub fn completed_entry(record: &Record, lsn: Lsn) -> Completed {
    Completed {
        sequence: record.request.sequence,
        fingerprint: Fingerprint::of(record.card, &record.event),
        outcome: record.outcome,
        lsn,
    }
}

/// The whole bank's state as of one journal position: every account and every client's window.
///
/// This is what snapshots hold and what recovery rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The position of the last record applied (0 before any).
    pub applied_lsn: Lsn,
    /// Every account by card.
    pub accounts: HashMap<Card, Account>,
    /// Every remembered client's window.
    pub clients: HashMap<u64, ClientWindow>,
    /// Money that came in: opening balances plus deposits. With `money_out` this proves
    /// conservation: the balances always add up to `money_in - money_out`.
    pub money_in: u128,
    /// Money that went out: withdrawals.
    pub money_out: u128,
}

impl Ledger {
    /// Applies the record at position `lsn`, which must be the next one.
    pub fn apply(&mut self, lsn: Lsn, record: &Record) -> Result<(), LedgerError> {
        if lsn != self.applied_lsn + 1 {
            return Err(LedgerError::OutOfOrder {
                applied: self.applied_lsn,
                got: lsn,
            });
        }
        let mut account = self.accounts.remove(&record.card);
        let result = apply(&mut account, record);
        if let Some(account) = account {
            self.accounts.insert(record.card, account);
        }
        result?;
        if record.outcome.status == Status::Approved {
            match record.event {
                Event::AccountOpened {
                    initial_balance, ..
                } => self.money_in += u128::from(initial_balance),
                Event::Deposit { amount } => self.money_in += u128::from(amount),
                Event::Withdrawal { amount } => self.money_out += u128::from(amount),
                Event::PinAttempt { .. } => {}
            }
        }
        self.clients
            .entry(record.request.client)
            .or_default()
            .remember(completed_entry(record, lsn), record.at_unix_ms);
        self.applied_lsn = lsn;
        Ok(())
    }

    /// Forgets clients with no completed request since `cutoff_unix_ms`; returns how many.
    pub fn forget_clients_idle_since(&mut self, cutoff_unix_ms: u64) -> usize {
        let before = self.clients.len();
        self.clients
            .retain(|_, window| window.last_used_unix_ms >= cutoff_unix_ms);
        before - self.clients.len()
    }

    /// True when the balances add up to the money that came in minus the money that went out.
    pub fn is_conserved(&self) -> bool {
        let balances: u128 = self
            .accounts
            .values()
            .map(|account| u128::from(account.balance))
            .sum();
        self.money_in.checked_sub(self.money_out) == Some(balances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(sequence: u64) -> RequestId {
        RequestId {
            client: 1,
            sequence,
        }
    }

    fn opened(balance: Amount) -> Event {
        Event::AccountOpened {
            holder: "Joty".into(),
            pin_hash: crate::pin::hash("1234", crate::pin::PinHashCost::MINIMUM).unwrap(),
            initial_balance: balance,
        }
    }

    /// Decides and applies one event on card 7, the way an account actor does.
    fn step(ledger: &mut Ledger, sequence: u64, event: Event) -> Outcome {
        match decide(ledger.accounts.get(&7), 7, id(sequence), event, 0) {
            Decision::Record(record) => {
                let lsn = ledger.applied_lsn + 1;
                ledger.apply(lsn, &record).unwrap();
                record.outcome
            }
            Decision::Answer(outcome) => outcome,
        }
    }

    #[test]
    fn withdrawals_never_overdraw_and_refusals_keep_the_balance() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(100));
        let outcome = step(&mut ledger, 2, Event::Withdrawal { amount: 101 });
        assert_eq!(outcome, refused(Status::InsufficientFunds, 100));
        assert_eq!(
            step(&mut ledger, 3, Event::Withdrawal { amount: 100 }),
            approved(0)
        );
        let outcome = step(&mut ledger, 4, Event::Deposit { amount: u64::MAX });
        assert_eq!(outcome.status, Status::Approved);
        let outcome = step(&mut ledger, 5, Event::Deposit { amount: 1 });
        assert_eq!(outcome, refused(Status::InvalidAmount, u64::MAX));
        assert!(ledger.is_conserved());
    }

    #[test]
    fn three_wrong_pins_lock_the_card_and_a_right_one_resets_the_count() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(0));
        let wrong = || Event::PinAttempt { correct: false };
        assert_eq!(step(&mut ledger, 2, wrong()).status, Status::IncorrectPin);
        assert_eq!(
            step(&mut ledger, 3, Event::PinAttempt { correct: true }).status,
            Status::Approved
        );
        assert_eq!(step(&mut ledger, 4, wrong()).status, Status::IncorrectPin);
        assert_eq!(step(&mut ledger, 5, wrong()).status, Status::IncorrectPin);
        assert_eq!(step(&mut ledger, 6, wrong()).status, Status::CardLocked);
        let locked_then_right = step(&mut ledger, 7, Event::PinAttempt { correct: true });
        assert_eq!(locked_then_right.status, Status::CardLocked);
        assert!(ledger.accounts[&7].is_locked());
    }

    #[test]
    fn the_window_replays_conflicts_and_refuses_stale_ids_at_the_edge() {
        let mut window = ClientWindow::default();
        let fingerprint = |amount| Fingerprint {
            kind: 1,
            card: 7,
            amount,
            detail: 0,
        };
        for sequence in 1..=REQUEST_WINDOW + 1 {
            let done = Completed {
                sequence,
                fingerprint: fingerprint(sequence),
                outcome: approved(sequence),
                lsn: sequence,
            };
            window.remember(done, 0);
        }
        assert_eq!(window.completed.len() as u64, REQUEST_WINDOW);
        // Sequence 1 fell out of the window: refused, never re-executed.
        assert_eq!(window.check(1, &fingerprint(1)), Seen::Stale);
        // Sequence 2 is the oldest still remembered.
        assert!(matches!(window.check(2, &fingerprint(2)), Seen::Replay(done) if done.lsn == 2));
        assert_eq!(window.check(2, &fingerprint(3)), Seen::Conflict(2));
        assert_eq!(window.check(REQUEST_WINDOW + 2, &fingerprint(0)), Seen::New);
    }

    proptest! {
        /// Whatever the operations, no balance goes negative (it is a u64, and no approval
        /// underflows), money is conserved, and a replayed ledger equals the live one.
        #[test]
        fn conservation_and_no_overdraft(operations in prop::collection::vec((0u8..3, 0u64..2_000), 1..200)) {
            let mut ledger = Ledger::default();
            let mut records = Vec::new();
            let mut sequence = 1;
            if let Decision::Record(record) = decide(None, 7, id(sequence), opened(1_000), 0) {
                ledger.apply(1, &record).unwrap();
                records.push(record);
            }
            for (kind, amount) in operations {
                sequence += 1;
                let event = match kind {
                    0 => Event::Withdrawal { amount },
                    1 => Event::Deposit { amount },
                    _ => Event::PinAttempt { correct: amount % 2 == 0 },
                };
                let before = ledger.accounts[&7].balance;
                if let Decision::Record(record) = decide(ledger.accounts.get(&7), 7, id(sequence), event.clone(), 0) {
                    ledger.apply(ledger.applied_lsn + 1, &record).unwrap();
                    let after = ledger.accounts[&7].balance;
                    match (event, record.outcome.status) {
                        (Event::Withdrawal { amount }, Status::Approved) => prop_assert_eq!(after, before - amount),
                        (Event::Deposit { amount }, Status::Approved) => prop_assert_eq!(after, before + amount),
                        _ => prop_assert_eq!(after, before),
                    }
                    records.push(record);
                }
                prop_assert!(ledger.is_conserved());
            }
            let mut replayed = Ledger::default();
            for (index, record) in records.iter().enumerate() {
                replayed.apply(index as u64 + 1, record).unwrap();
            }
            prop_assert_eq!(replayed, ledger);
        }
    }
}
