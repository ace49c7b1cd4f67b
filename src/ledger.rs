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
//! for the retention rule. Windows are kept per [`Principal`], the party a request was
//! authenticated as ([`Clients`]), so a client id is never a capability: only someone who has
//! verified a card can touch that card's ids. A request carrying a secret (a PIN attempt) is never
//! remembered and never answered from memory ([`Principal::of`]).

use crate::model::{Amount, Card, Code, RequestId};
use crate::pin::PinHash;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Wrong PINs in a row after which a card is locked.
pub const PIN_ATTEMPTS_MAX: u8 = 3;

/// How many of each client's most recent sequence numbers the server remembers. A client keeps at
/// most this many requests unanswered, so every id it can still retry is remembered.
pub const REQUEST_WINDOW: u64 = 32;

/// How many clients the memory of completed requests keeps per principal (per card, and for the
/// operator). A new client beyond it takes the place of the least recently used one, provided that
/// one has been idle for [`CLIENT_EVICTION_IDLE_MS`]; otherwise the new client is answered `busy`.
/// Only someone who has verified a card can add clients to its memory, so the bound is what keeps
/// that card's holder (or a thief of the card and PIN) from growing the server's memory (by about
/// 2 MiB at most). It is well above the number of ATMs that honestly touch one card within a
/// minute (a thousand-ATM swarm on a few cards included), so honest clients are not turned away.
pub const CLIENTS_PER_PRINCIPAL_MAX: usize = 1024;

/// How long a client must have completed nothing before a new client of the same principal may
/// take its place in a full memory: twice the client library's 30 s retry deadline, so a client
/// that may still be retrying is never forgotten by eviction (its retry would run again).
pub const CLIENT_EVICTION_IDLE_MS: u64 = 60_000;

/// The position of a record in the journal: 1 for the first record ever, then one more each.
pub type Lsn = u64;

/// One account's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The holder's name, as given when the account was opened.
    pub holder: Box<str>,
    /// The PIN's verifier (keyed, or an argon2id hash of the first release until re-keyed); the
    /// PIN itself is never stored.
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
        /// The PIN's verifier.
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
    // New variants go at the end: bincode stores a variant by its index, and the journal holds
    // the old ones.
    /// The operator cleared the card's wrong PINs (unlocking it if locked).
    CardUnlocked,
    /// The holder changed the PIN, having given the current one (or the new one, when retrying a
    /// change already made). Counts as a correct PIN: the wrong ones are cleared.
    PinChanged {
        /// The new PIN's keyed verifier.
        pin_hash: PinHash,
    },
    /// A correct PIN was checked against an argon2id hash of the first release, and the hash is
    /// replaced by the PIN's keyed verifier. Counts as a correct PIN attempt.
    PinRekeyed {
        /// The PIN's keyed verifier.
        pin_hash: PinHash,
    },
}

impl Event {
    /// True for the events that present the card's PIN, which a locked card refuses.
    pub fn presents_pin(&self) -> bool {
        matches!(
            self,
            Event::PinAttempt { .. } | Event::PinChanged { .. } | Event::PinRekeyed { .. }
        )
    }
}

/// How a request ended, as its reply said; stored so a retry gets the same reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The reply's status.
    pub status: Code,
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
    /// Which kind of event (0 open, 1 withdrawal, 2 deposit, 3 PIN attempt or re-key, 4 unlock,
    /// 5 PIN change). PIN attempts are no longer remembered, but memories written by earlier
    /// releases may hold them.
    pub kind: u8,
    /// The card.
    pub card: Card,
    /// The amount (opening balance for an open; 1 or 0 for a correct or wrong PIN).
    pub amount: u64,
    /// For an open, the CRC-32C of the holder's name; for a PIN change, the CRC-32C of the new
    /// keyed verifier (useless without the PIN key); 0 otherwise. (The PIN is left out on
    /// purpose: nothing kept may let a PIN be recovered, and no answer may depend on it.)
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
            Event::CardUnlocked => (4, 0, 0),
            Event::PinChanged { pin_hash } => (5, 0, crc32c::crc32c(&pin_hash.hash)),
            // A re-key is a correct PIN attempt: a retry of it, checked with the key, is the same.
            Event::PinRekeyed { .. } => (3, 1, 0),
        };
        Fingerprint {
            kind,
            card,
            amount,
            detail,
        }
    }
}

/// Whom a request id belongs to: the party the request was authenticated as. The memory of
/// completed requests is kept per principal, so a client id means something only together with
/// the card (or operator token) that was checked before the request was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    /// The holder of the operator token (opening accounts).
    Operator,
    /// Whoever verified this card on the connection (withdrawals and deposits).
    Card(Card),
}

impl Principal {
    /// The principal whose memory keeps `event` on `card`, or `None` for an event that is never
    /// remembered: a PIN attempt carries a secret, so it is checked every time and its answer
    /// depends only on the PIN and the card's state, never on a memory of earlier attempts.
    pub fn of(card: Card, event: &Event) -> Option<Principal> {
        match event {
            Event::AccountOpened { .. } => Some(Principal::Operator),
            Event::Withdrawal { .. } | Event::Deposit { .. } => Some(Principal::Card(card)),
            Event::CardUnlocked => Some(Principal::Operator),
            // A PIN change carries the PIN too; it is decided afresh every time (approved when
            // either the old or the new PIN is the card's), so a retry needs no memory.
            Event::PinAttempt { .. } | Event::PinChanged { .. } | Event::PinRekeyed { .. } => None,
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
            status: Code::CardExists,
            balance: None,
        },
        (
            Event::AccountOpened {
                initial_balance, ..
            },
            None,
        ) => Outcome {
            status: Code::Approved,
            balance: Some(*initial_balance),
        },
        (_, None) => return refuse(Code::UnknownCard),
        (event, Some(account)) if event.presents_pin() && account.is_locked() => {
            return refuse(Code::CardLocked)
        }
        (Event::CardUnlocked | Event::PinChanged { .. } | Event::PinRekeyed { .. }, Some(_)) => {
            Outcome {
                status: Code::Approved,
                balance: None,
            }
        }
        // A right PIN with no wrong ones to clear changes nothing: answered, not journaled (a
        // retry simply checks the PIN again).
        (Event::PinAttempt { correct: true }, Some(account)) if account.pin_failures == 0 => {
            return refuse(Code::Approved)
        }
        (Event::PinAttempt { correct: true }, Some(_)) => Outcome {
            status: Code::Approved,
            balance: None,
        },
        (Event::PinAttempt { correct: false }, Some(account)) => Outcome {
            status: if account.pin_failures + 1 >= PIN_ATTEMPTS_MAX {
                Code::CardLocked
            } else {
                Code::IncorrectPin
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
        status: Code::Approved,
        balance: Some(balance),
    }
}

fn refused(status: Code, balance: Amount) -> Outcome {
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

/// Moves `account` to its next state by `record`. Refusals leave the balance alone; wrong PINs
/// count towards the lock; a correct PIN clears the count. Every approved balance change is checked
/// against the balance the record says it produced.
pub fn apply(account: &mut Option<Account>, record: &Record) -> Result<(), LedgerError> {
    let inconsistent = |reason: &str| LedgerError::Inconsistent {
        request: record.request,
        card: record.card,
        reason: reason.to_string(),
    };
    let approved = record.outcome.status == Code::Approved;
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
        (Event::CardUnlocked, Some(account)) => {
            if approved {
                account.pin_failures = 0;
            }
        }
        (Event::PinChanged { pin_hash } | Event::PinRekeyed { pin_hash }, Some(account)) => {
            if approved {
                account.pin_hash = *pin_hash;
                account.pin_failures = 0;
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

/// The memory of one principal's clients: a window per client id, at most
/// [`CLIENTS_PER_PRINCIPAL_MAX`] of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    /// Each remembered client's window, by client id.
    pub windows: HashMap<u64, ClientWindow>,
}

impl Clients {
    /// Looks up request `sequence` of `client` with parameters `fingerprint`; a client with no
    /// window has completed nothing for this principal.
    pub fn check(&self, client: u64, sequence: u64, fingerprint: &Fingerprint) -> Seen {
        self.windows
            .get(&client)
            .map_or(Seen::New, |window| window.check(sequence, fingerprint))
    }

    /// True when `client`'s completion at `now_unix_ms` may be remembered: the client has a
    /// window, or there is room, or the least recently used client has been idle for
    /// [`CLIENT_EVICTION_IDLE_MS`] and may give up its place.
    pub fn admits(&self, client: u64, now_unix_ms: u64) -> bool {
        self.windows.contains_key(&client)
            || self.windows.len() < CLIENTS_PER_PRINCIPAL_MAX
            || self.least_recent().is_some_and(|(_, last_used)| {
                last_used.saturating_add(CLIENT_EVICTION_IDLE_MS) <= now_unix_ms
            })
    }

    /// The least recently used client and its last completion time (ties go to the smaller id,
    /// so every copy of the memory evicts the same client).
    fn least_recent(&self) -> Option<(u64, u64)> {
        self.windows
            .iter()
            .map(|(client, window)| (*client, window.last_used_unix_ms))
            .min_by_key(|(client, last_used)| (*last_used, *client))
    }

    /// Remembers a completion of `client`; a new client in a full memory takes the place of the
    /// least recently used one.
    pub fn remember(&mut self, client: u64, done: Completed, at_unix_ms: u64) {
        // A loop, not one eviction: a memory converted from an earlier release may start fuller.
        while !self.windows.contains_key(&client) && self.windows.len() >= CLIENTS_PER_PRINCIPAL_MAX
        {
            let Some((evicted, _)) = self.least_recent() else {
                break;
            };
            self.windows.remove(&evicted);
        }
        self.windows
            .entry(client)
            .or_default()
            .remember(done, at_unix_ms);
    }

    /// Forgets clients with no completion since `cutoff_unix_ms`, adds how many to `forgotten`,
    /// and says whether any client is left (a principal with none is dropped from the memory).
    pub fn keep_after_forgetting(&mut self, cutoff_unix_ms: u64, forgotten: &mut usize) -> bool {
        let before = self.windows.len();
        self.windows
            .retain(|_, window| window.last_used_unix_ms >= cutoff_unix_ms);
        *forgotten += before - self.windows.len();
        !self.windows.is_empty()
    }
}

/// The memory of completed requests of every principal. Ordered, so that a snapshot of the same
/// state is always the same bytes.
pub type Memory = BTreeMap<Principal, Clients>;

/// The whole bank's state as of one journal position: every account and every client's window.
///
/// This is what snapshots hold and what recovery rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// The position of the last record applied (0 before any).
    pub applied_lsn: Lsn,
    /// Every account by card.
    pub accounts: HashMap<Card, Account>,
    /// Every remembered client's window, by the principal its requests were made as.
    pub clients: Memory,
    /// Money that came in: opening balances plus deposits. With `money_out` this proves
    /// conservation: the balances always add up to `money_in - money_out`.
    pub money_in: u128,
    /// Money that went out: withdrawals.
    pub money_out: u128,
}

/// The ledger as the snapshots of the first release hold it: one window per client id, whatever
/// card or operator its requests were made as. Only read, to open those snapshots
/// ([`Ledger::from`] converts it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerV1 {
    /// As [`Ledger::applied_lsn`].
    pub applied_lsn: Lsn,
    /// As [`Ledger::accounts`].
    pub accounts: HashMap<Card, Account>,
    /// Every remembered client's window, by client id alone.
    pub clients: HashMap<u64, ClientWindow>,
    /// As [`Ledger::money_in`].
    pub money_in: u128,
    /// As [`Ledger::money_out`].
    pub money_out: u128,
}

/// Splits each client's window by the principal of each remembered request (an open belongs to
/// the operator, a withdrawal or deposit to its card; PIN attempts are dropped, they are no longer
/// remembered). Every part keeps the client's highest sequence, so an id that was stale stays
/// stale: nothing the first release refused can run after the upgrade.
impl From<LedgerV1> for Ledger {
    fn from(old: LedgerV1) -> Self {
        let mut clients = Memory::new();
        for (client, window) in old.clients {
            for done in window.completed {
                let principal = match done.fingerprint.kind {
                    0 => Principal::Operator,
                    3 => continue,
                    _ => Principal::Card(done.fingerprint.card),
                };
                clients
                    .entry(principal)
                    .or_default()
                    .windows
                    .entry(client)
                    .or_insert_with(|| ClientWindow {
                        highest: window.highest,
                        completed: VecDeque::new(),
                        last_used_unix_ms: window.last_used_unix_ms,
                    })
                    .completed
                    .push_back(done);
            }
        }
        Ledger {
            applied_lsn: old.applied_lsn,
            accounts: old.accounts,
            clients,
            money_in: old.money_in,
            money_out: old.money_out,
        }
    }
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
        if record.outcome.status == Code::Approved {
            match record.event {
                Event::AccountOpened {
                    initial_balance, ..
                } => self.money_in += u128::from(initial_balance),
                Event::Deposit { amount } => self.money_in += u128::from(amount),
                Event::Withdrawal { amount } => self.money_out += u128::from(amount),
                Event::PinAttempt { .. }
                | Event::CardUnlocked
                | Event::PinChanged { .. }
                | Event::PinRekeyed { .. } => {}
            }
        }
        if let Some(principal) = Principal::of(record.card, &record.event) {
            self.clients.entry(principal).or_default().remember(
                record.request.client,
                completed_entry(record, lsn),
                record.at_unix_ms,
            );
        }
        self.applied_lsn = lsn;
        Ok(())
    }

    /// The window of `client` under `principal`, if it is remembered.
    pub fn window(&self, principal: Principal, client: u64) -> Option<&ClientWindow> {
        self.clients.get(&principal)?.windows.get(&client)
    }

    /// Forgets clients with no completed request since `cutoff_unix_ms`; returns how many.
    pub fn forget_clients_idle_since(&mut self, cutoff_unix_ms: u64) -> usize {
        let mut forgotten = 0;
        self.clients
            .retain(|_, clients| clients.keep_after_forgetting(cutoff_unix_ms, &mut forgotten));
        forgotten
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

    fn withdrawal_entry(sequence: u64, card: Card) -> Completed {
        Completed {
            sequence,
            fingerprint: Fingerprint::of(card, &Event::Withdrawal { amount: 1 }),
            outcome: approved(1),
            lsn: sequence,
        }
    }

    #[test]
    fn pin_attempts_are_never_remembered_and_ids_are_kept_per_principal() {
        let mut ledger = Ledger::default();
        step(&mut ledger, 1, opened(100));
        step(&mut ledger, 2, Event::PinAttempt { correct: false });
        step(&mut ledger, 3, Event::Withdrawal { amount: 1 });
        assert_eq!(ledger.accounts[&7].pin_failures, 1);
        // The open is the operator's, the withdrawal card 7's; the PIN attempt is nobody's.
        let opens = ledger.window(Principal::Operator, 1).unwrap();
        assert_eq!(opens.completed.len(), 1);
        let card = ledger.window(Principal::Card(7), 1).unwrap();
        assert_eq!(card.completed.len(), 1);
        assert_eq!(card.completed[0].sequence, 3);
        assert!(ledger.window(Principal::Card(8), 1).is_none());
    }

    #[test]
    fn a_principal_remembers_a_bounded_number_of_clients_and_evicts_the_least_recent() {
        let mut clients = Clients::default();
        // 26 000 new client ids, one completion each, as fast as one process can send them.
        for client in 0..26_000u64 {
            let now = 1_000 + client;
            if clients.admits(client, now) {
                clients.remember(client, withdrawal_entry(1, 7), now);
            }
        }
        assert_eq!(clients.windows.len(), CLIENTS_PER_PRINCIPAL_MAX);
        let newest = CLIENTS_PER_PRINCIPAL_MAX as u64;
        // Every client in a full memory was active within the eviction delay: new ones wait.
        assert!(!clients.admits(1_000_000, 1_000 + newest));
        // A client already remembered is always admitted.
        assert!(clients.admits(0, 1_000 + newest));
        // Once the least recent has been idle long enough, a new client takes its place.
        let later = 1_000 + CLIENT_EVICTION_IDLE_MS;
        assert!(clients.admits(1_000_000, later));
        clients.remember(1_000_000, withdrawal_entry(1, 7), later);
        assert_eq!(clients.windows.len(), CLIENTS_PER_PRINCIPAL_MAX);
        assert!(!clients.windows.contains_key(&0));
        assert!(clients.windows.contains_key(&1_000_000));
    }

    #[test]
    fn a_first_release_ledger_splits_its_windows_by_principal() {
        let mut window = ClientWindow::default();
        let open = Completed {
            fingerprint: Fingerprint::of(7, &opened(100)),
            ..withdrawal_entry(10, 7)
        };
        let pin = Completed {
            fingerprint: Fingerprint::of(7, &Event::PinAttempt { correct: false }),
            ..withdrawal_entry(11, 7)
        };
        for done in [open, pin, withdrawal_entry(12, 7), withdrawal_entry(40, 8)] {
            window.remember(done, 5);
        }
        let old = LedgerV1 {
            applied_lsn: 40,
            clients: HashMap::from([(9, window)]),
            ..LedgerV1::default()
        };
        let ledger = Ledger::from(old);
        assert_eq!(ledger.applied_lsn, 40);
        let on = |principal| ledger.window(principal, 9).unwrap();
        assert_eq!(on(Principal::Operator).completed, [open]);
        assert_eq!(on(Principal::Card(7)).completed, [withdrawal_entry(12, 7)]);
        assert_eq!(on(Principal::Card(8)).completed, [withdrawal_entry(40, 8)]);
        // The client's highest sequence is kept everywhere: what was stale stays stale.
        assert_eq!(on(Principal::Card(7)).highest, 40);
        assert_eq!(
            on(Principal::Card(7)).check(5, &withdrawal_entry(5, 7).fingerprint),
            Seen::Stale
        );
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
                        (Event::Withdrawal { amount }, Code::Approved) => prop_assert_eq!(after, before - amount),
                        (Event::Deposit { amount }, Code::Approved) => prop_assert_eq!(after, before + amount),
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
