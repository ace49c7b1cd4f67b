//! The pure account rules: no I/O, no actors, no clocks.
//!
//! Every state change is a [`Record`]: what was asked ([`Event`]), by which request, on which card,
//! and how it ended ([`Outcome`], refusals included). [`decide`] turns a request into a record
//! against the current state of one account; [`apply`] moves an account from one state to the next
//! by a record, and [`apply_to`] every account a record names ([`Record::accounts`]). The account
//! actors call both on their working copy; the journal calls [`apply_to`] (through
//! [`Ledger::apply`]) on the committed copy after the record is durable, and recovery calls it
//! again when it replays the journal. One rule, three callers: they cannot disagree.
//!
//! [`ClientWindow`] is the memory of completed requests, the heart of exactly-once: see its docs
//! for the retention rule. Windows are kept per [`Principal`], the party a request was
//! authenticated as ([`Clients`]), so a client id is never a capability: only someone who has
//! verified a card can touch that card's ids. A request carrying a secret (a PIN attempt) is never
//! remembered and never answered from memory ([`Principal::of`]).
//!
//! Layout: the records and the whole state here; the rules in `rules`; the memory of completed
//! requests in `memory`; the first release's snapshot layout in `v1`; the copy-on-write map that
//! keeps a snapshot image cheap in `shards`.

#[cfg(test)]
mod banking_tests;
mod memory;
mod rules;
mod shards;
#[cfg(test)]
mod testing;
mod v1;

use crate::model::{
    AccountState, Amount, Card, Code, DailyLimits, HoldId, Movement, MovementKind, RequestId,
};
pub use memory::{
    completed_entries, completed_entry, ClientWindow, Clients, Completed, Completions, Fingerprint,
    Memory, Principal, Seen, CLIENTS_PER_PRINCIPAL_MAX, CLIENT_EVICTION_IDLE_MS, RECEIPT_WINDOW,
    REQUEST_WINDOW,
};
pub use rules::{apply, apply_to, decide, deposit, money_moved, withdraw, At, Moved, Policy};
pub use shards::{Shards, SHARD_COUNT};
pub use v1::{
    accounts_v2, AccountV2, ClientWindowV1, ClientsV1, CompletedV1, LedgerV1, LedgerV2, OutcomeV1,
    RecordV1,
};

use crate::pin::{PinHash, Verifier};
use serde::{Deserialize, Serialize};

/// Wrong PINs in a row after which a card is locked.
pub const PIN_ATTEMPTS_MAX: u8 = 3;

/// The longest holder name, in bytes, an account may be opened with (it is never empty).
pub const HOLDER_BYTES_MAX: usize = 64;

/// The most accounts one record names ([`Record::accounts`]): a transfer's two.
pub const RECORD_ACCOUNTS_MAX: usize = 2;

/// How many entries a full list of an account's state grows by (its statement, its reversible
/// debits, a card's client windows): a quarter of its length, at least [`GROWTH_MIN`], not twice
/// its size. A snapshot reads every list back at its exact length, so the first record after a
/// restart grows each list it touches, and doubling replayed a million accounts' lists into
/// nearly twice the memory they need.
fn growth(len: usize) -> usize {
    (len / 4).max(GROWTH_MIN)
}

/// The fewest entries a full list grows by ([`growth`]).
const GROWTH_MIN: usize = 2;

/// The most open holds one account may have; one more is refused `too_many_holds`.
pub const HOLDS_PER_ACCOUNT_MAX: usize = 32;

/// The most movements an account keeps for its statement (the oldest is forgotten first).
pub const STATEMENT_MOVEMENTS_MAX: usize = 50;

/// The most recent debits (withdrawals and completed holds) an account keeps so they can be
/// reversed; an older one is `not_reversible`.
pub const REVERSIBLE_DEBITS_MAX: usize = 32;

/// How far apart the oldest transfer an account has on its way and its next one may be: the
/// receiving side remembers each sender's transfers in a window of this size
/// ([`RECEIPT_WINDOW`]), so every transfer still on its way is inside it. A transfer beyond it
/// waits (`busy`) until the oldest is received.
pub const TRANSFERS_IN_TRANSIT_SPAN: u64 = RECEIPT_WINDOW;

/// The reference an approved reversal's outcome carries when its original was never seen: the
/// reversal is remembered in the original's place ([`completed_entries`]). A reversal that gave
/// money back carries none.
pub const REVERSAL_IN_PLACE: u64 = 0;

/// Bytes on the stack for encoding an event to read its tag ([`Event::tag`]).
const EVENT_ENCODED_BYTES_INLINE: usize = 128;

/// The position of a record in the journal: 1 for the first record ever, then one more each.
pub type Lsn = u64;

/// One account's state.
///
/// Its serde form is the one every release since statements wrote (the holder, the PIN's
/// verifier, the balance, the wrong PINs, the state, then the activity if any): an account whose
/// statement is only its opening line is written as an activity holding nothing but that line,
/// and such an activity is kept compactly again when read ([`Account::activity`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The holder's name, as given when the account was opened.
    pub holder: Box<str>,
    /// The PIN's verifier (keyed, or an argon2id hash of the first release until re-keyed), in
    /// its compact form ([`Account::pin_hash`] gives the stored one); the PIN itself is never
    /// stored.
    pin: Verifier,
    /// The balance in minor units; a `u64`, so it cannot go negative. The rules change it only
    /// after the account has an activity (the statement line they add needs one), so while it
    /// has none it is still the opening balance.
    pub balance: Amount,
    /// Wrong PINs since the last correct one; the card is locked at [`PIN_ATTEMPTS_MAX`].
    pub pin_failures: u8,
    /// Open, frozen or closed.
    pub state: AccountState,
    /// Holds, transfers on their way, limits, today's withdrawals, recent debits and the
    /// statement: none until the account first needs one. An account that was only opened has
    /// none: its one statement line is built from the opening's time and request and the
    /// balance, and moves into the activity's movements when the activity is made. An activity
    /// holding nothing but that line (or nothing at all) is never kept: it is dropped for the
    /// compact form.
    pub activity: Option<Box<Activity>>,
    /// The opening line's time and request while the account has no activity; zeros otherwise.
    opening: Opening,
    /// True when the statement is the opening line built from `opening` (only while the account
    /// has no activity); false for an account with no line at all (one converted from the first
    /// release's layout, or made with [`Account::new`]).
    opening_line: bool,
}

/// What an account keeps of its opening line while it has no activity: the line's amount and
/// balance after are the balance, which has not changed since.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Opening {
    /// When the account was opened, in milliseconds since the Unix epoch.
    at_unix_ms: u64,
    /// The request that opened it.
    request: RequestId,
}

impl Opening {
    /// No opening kept (an account with an activity, or with no statement line).
    const NONE: Opening = Opening {
        at_unix_ms: 0,
        request: RequestId {
            client: 0,
            sequence: 0,
        },
    };
}

/// What an account keeps beyond its balance and PIN, once it has any of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Open holds, oldest first; at most [`HOLDS_PER_ACCOUNT_MAX`].
    pub holds: Vec<Hold>,
    /// The id of the last hold placed (0 before any): ids above it were never given.
    pub last_hold: HoldId,
    /// Transfers sent and not yet received (or given back), oldest first.
    pub outbox: Vec<Leg>,
    /// The number of the last transfer sent (0 before any).
    pub last_leg: u64,
    /// The account's own daily limits, when the operator set them (the server's defaults
    /// otherwise).
    pub limits: Option<DailyLimits>,
    /// What today's withdrawals and holds used of the limits.
    pub today: DailyUsage,
    /// The most recent debits, which a reversal may give back; at most
    /// [`REVERSIBLE_DEBITS_MAX`].
    pub debits: std::collections::VecDeque<Debit>,
    /// The most recent movements, oldest first; at most [`STATEMENT_MOVEMENTS_MAX`].
    pub movements: std::collections::VecDeque<Movement>,
}

/// An open hold: money reserved, not yet taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Its id.
    pub id: HoldId,
    /// How much it reserves.
    pub amount: Amount,
    /// When it expires, in milliseconds since the Unix epoch (by the bank's clock).
    pub expires_at_unix_ms: u64,
    /// The business day it was counted against the daily limits.
    pub day: u32,
}

/// A transfer on its way: debited here, not yet credited to the other account (or given back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    /// The transfer's number in this account (the receiving side's memory knows it by it).
    pub leg: u64,
    /// The receiving card.
    pub to: Card,
    /// How much.
    pub amount: Amount,
    /// The request that sent it.
    pub request: RequestId,
}

/// What one business day's withdrawals used of the daily limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DailyUsage {
    /// The business day (days since 1970-01-01 in the bank's time zone).
    pub day: u32,
    /// The amount withdrawn or held that day.
    pub amount: Amount,
    /// How many withdrawals or holds that day.
    pub count: u32,
}

/// A recent debit that a reversal may give back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    /// The request that made it (a withdrawal, or a hold's completion).
    pub request: RequestId,
    /// How much it took.
    pub amount: Amount,
    /// True once a reversal gave (some of) it back: a debit is reversed at most once.
    pub reversed: bool,
    /// The business day it counted against the daily limits.
    pub day: u32,
}

impl Account {
    /// A new open account.
    pub fn new(holder: &str, pin_hash: PinHash, balance: Amount) -> Account {
        Account {
            holder: holder.into(),
            pin: pin_hash.into(),
            balance,
            pin_failures: 0,
            state: AccountState::Open,
            activity: None,
            opening: Opening::NONE,
            opening_line: false,
        }
    }

    /// A new open account whose statement is its opening line, made by `request` at
    /// `at_unix_ms` with `balance`: what an approved opening makes.
    pub(crate) fn opened(
        holder: &str,
        pin_hash: PinHash,
        balance: Amount,
        at_unix_ms: u64,
        request: RequestId,
    ) -> Account {
        Account {
            opening: Opening {
                at_unix_ms,
                request,
            },
            opening_line: true,
            ..Account::new(holder, pin_hash, balance)
        }
    }

    /// The PIN's verifier, as stored.
    pub fn pin_hash(&self) -> PinHash {
        self.pin.get()
    }

    /// Replaces the PIN's verifier.
    pub fn set_pin_hash(&mut self, pin_hash: PinHash) {
        self.pin = pin_hash.into();
    }

    /// True when too many wrong PINs were entered.
    pub fn is_locked(&self) -> bool {
        self.pin_failures >= PIN_ATTEMPTS_MAX
    }

    /// The money reserved by open holds.
    pub fn held(&self) -> Amount {
        self.activity.as_ref().map_or(0, |activity| {
            activity.holds.iter().map(|hold| hold.amount).sum()
        })
    }

    /// The money sent by transfers not yet received or given back.
    pub fn in_transit(&self) -> Amount {
        self.activity.as_ref().map_or(0, |activity| {
            activity.outbox.iter().map(|leg| leg.amount).sum()
        })
    }

    /// What may still be taken: the balance less the open holds (never negative: a hold is
    /// placed only on available money, and every debit takes only available money).
    pub fn available(&self) -> Amount {
        self.balance.saturating_sub(self.held())
    }

    /// The daily limits that apply: the account's own, or `defaults`.
    pub fn limits(&self, defaults: DailyLimits) -> DailyLimits {
        self.activity
            .as_ref()
            .and_then(|activity| activity.limits)
            .unwrap_or(defaults)
    }

    /// What `day`'s withdrawals used of the limits.
    pub fn usage_on(&self, day: u32) -> DailyUsage {
        match &self.activity {
            Some(activity) if activity.today.day == day => activity.today,
            _ => DailyUsage {
                day,
                ..DailyUsage::default()
            },
        }
    }

    /// The open hold `id`, if there is one.
    pub fn hold(&self, id: HoldId) -> Option<&Hold> {
        self.activity
            .as_ref()?
            .holds
            .iter()
            .find(|hold| hold.id == id)
    }

    /// The id of the last hold placed (0 before any).
    pub fn last_hold(&self) -> HoldId {
        self.activity
            .as_ref()
            .map_or(0, |activity| activity.last_hold)
    }

    /// Transfers on their way, oldest first.
    pub fn outbox(&self) -> &[Leg] {
        self.activity
            .as_ref()
            .map_or(&[], |activity| activity.outbox.as_slice())
    }

    /// The number the next transfer sent gets.
    pub fn next_leg(&self) -> u64 {
        self.activity
            .as_ref()
            .map_or(0, |activity| activity.last_leg)
            + 1
    }

    /// The last `count` movements, oldest first.
    pub fn movements(&self, count: usize) -> Vec<Movement> {
        match &self.activity {
            Some(activity) => {
                let skip = activity.movements.len().saturating_sub(count);
                activity.movements.iter().skip(skip).copied().collect()
            }
            None => self.opening_movement().into_iter().take(count).collect(),
        }
    }

    /// The opening line, while the account keeps it compactly (it has no activity).
    fn opening_movement(&self) -> Option<Movement> {
        (self.activity.is_none() && self.opening_line).then_some(Movement {
            at_unix_ms: self.opening.at_unix_ms,
            kind: MovementKind::Opened,
            amount: self.balance,
            request: self.opening.request,
            balance_after: self.balance,
        })
    }

    /// The recent debit made by `request`, if it is still remembered.
    pub fn debit(&self, request: RequestId) -> Option<&Debit> {
        self.activity
            .as_ref()?
            .debits
            .iter()
            .find(|debit| debit.request == request)
    }

    /// The activity, made on first use; the opening line, if the account kept it compactly,
    /// moves into its movements then (so the balance must not have changed before).
    pub(crate) fn activity_mut(&mut self) -> &mut Activity {
        if self.activity.is_none() {
            let mut activity = Box::<Activity>::default();
            activity.movements.extend(self.opening_movement());
            self.opening = Opening::NONE;
            self.opening_line = false;
            self.activity = Some(activity);
        }
        self.activity.get_or_insert_with(Box::default)
    }

    /// Sets the balance, having moved a compactly kept opening line into the activity first
    /// (its amount is the balance before the change). Every rule that changes a balance calls
    /// this.
    pub(crate) fn set_balance(&mut self, balance: Amount) {
        self.activity_mut();
        self.balance = balance;
    }

    /// Drops an activity that holds nothing but the opening line (or nothing at all) for the
    /// compact form, which gives the same statement and answers: after decoding, and after a
    /// record that may have emptied the activity (limits cleared).
    pub(crate) fn compact_activity(&mut self) {
        let Some(activity) = &self.activity else {
            return;
        };
        let Activity {
            holds,
            last_hold,
            outbox,
            last_leg,
            limits,
            today,
            debits,
            movements,
        } = &**activity;
        let bare = holds.is_empty()
            && *last_hold == 0
            && outbox.is_empty()
            && *last_leg == 0
            && limits.is_none()
            && *today == DailyUsage::default()
            && debits.is_empty();
        if !bare {
            return;
        }
        let opening = match movements.len() {
            0 => None,
            1 => {
                let line = movements[0];
                let compact = line.kind == MovementKind::Opened
                    && line.amount == self.balance
                    && line.balance_after == self.balance;
                if !compact {
                    return;
                }
                Some(Opening {
                    at_unix_ms: line.at_unix_ms,
                    request: line.request,
                })
            }
            _ => return,
        };
        self.activity = None;
        self.opening = opening.unwrap_or(Opening::NONE);
        self.opening_line = opening.is_some();
    }
}

/// [`Account`]'s serde form as every release since statements wrote it (derived), to read it.
#[derive(Deserialize)]
#[serde(rename = "Account")]
struct AccountStored {
    holder: Box<str>,
    pin_hash: PinHash,
    balance: Amount,
    pin_failures: u8,
    state: AccountState,
    activity: Option<Box<Activity>>,
}

/// The same form, borrowed from an account, to write it; `A` is its activity's form.
#[derive(Serialize)]
#[serde(rename = "Account")]
struct AccountWritten<'a, A> {
    holder: &'a str,
    pin_hash: PinHash,
    balance: Amount,
    pin_failures: u8,
    state: AccountState,
    activity: Option<A>,
}

/// [`Activity`]'s serde form for an account that keeps its opening line compactly: no holds,
/// transfers, limits, use or debits, and that one movement.
#[derive(Serialize)]
#[serde(rename = "Activity")]
struct OpeningActivity<'a> {
    holds: &'a [Hold],
    last_hold: HoldId,
    outbox: &'a [Leg],
    last_leg: u64,
    limits: Option<DailyLimits>,
    today: DailyUsage,
    debits: &'a [Debit],
    movements: &'a [Movement],
}

impl Serialize for Account {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        fn written<A>(account: &Account, activity: Option<A>) -> AccountWritten<'_, A> {
            AccountWritten {
                holder: &account.holder,
                pin_hash: account.pin_hash(),
                balance: account.balance,
                pin_failures: account.pin_failures,
                state: account.state,
                activity,
            }
        }
        match (&self.activity, self.opening_movement()) {
            (None, Some(line)) => written(
                self,
                Some(OpeningActivity {
                    holds: &[],
                    last_hold: 0,
                    outbox: &[],
                    last_leg: 0,
                    limits: None,
                    today: DailyUsage::default(),
                    debits: &[],
                    movements: std::slice::from_ref(&line),
                }),
            )
            .serialize(serializer),
            (activity, _) => written(self, activity.as_deref()).serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Account {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = AccountStored::deserialize(deserializer)?;
        let mut account = Account {
            holder: stored.holder,
            pin: stored.pin_hash.into(),
            balance: stored.balance,
            pin_failures: stored.pin_failures,
            state: stored.state,
            activity: stored.activity,
            opening: Opening::NONE,
            opening_line: false,
        };
        account.compact_activity();
        Ok(account)
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
    /// The first leg of a transfer, on the sending account: the money leaves it and is on its
    /// way (in transit) until the receiving account takes it or refuses it
    /// ([`Event::TransferSettled`]).
    TransferSent {
        /// The receiving card.
        to: Card,
        /// How much.
        amount: Amount,
        /// What the receiving account's committed state said when the transfer was asked:
        /// approved when it was open, or the code to refuse with (`unknown_card`,
        /// `account_frozen`, `account_closed`). The refusal is remembered like any other.
        receiver: Code,
    },
    /// The second leg, on the receiving account: the money arrives (approved), or is refused
    /// (frozen or closed), and is then given back to the sender. The record's request id is the
    /// sender's card (as client) and transfer number (as sequence), remembered by the receiver
    /// ([`Principal::Incoming`]) so a leg delivered twice is credited once.
    TransferReceived {
        /// The sending card.
        from: Card,
        /// The sender's number for this transfer.
        leg: u64,
        /// How much.
        amount: Amount,
    },
    /// The last step, on the sending account: the receiver's answer to leg `leg` is known; the
    /// transfer is off its way, and if the receiver refused, the money is given back.
    TransferSettled {
        /// The transfer's number in the sending account.
        leg: u64,
        /// The receiver's code: approved, or why it refused.
        receiver: Code,
    },
    /// Reserve `amount` for `ttl_ms` milliseconds.
    HoldPlaced {
        /// How much.
        amount: Amount,
        /// How long the hold lasts before it expires.
        ttl_ms: u64,
    },
    /// Post a hold: take its amount, or `amount` if given (not more), and release the rest.
    HoldCompleted {
        /// The hold.
        hold: HoldId,
        /// How much to take; none for all of it.
        amount: Option<Amount>,
    },
    /// Release a hold.
    HoldVoided {
        /// The hold.
        hold: HoldId,
    },
    /// A hold reached its expiry time (by the bank's clock) and is released.
    HoldExpired {
        /// The hold.
        hold: HoldId,
    },
    /// Give back an earlier debit of this card.
    Reversal {
        /// The debit's request id.
        original: RequestId,
        /// What the ATM actually dispensed, kept; none for nothing (a full reversal).
        dispensed: Option<Amount>,
        /// True when the card's memory of completed requests knew the original id when the
        /// reversal was decided. An original neither known nor among the recent debits was never
        /// seen: the reversal is approved and remembered in its place, so the original, if it
        /// arrives later, is refused and never debits.
        original_known: bool,
    },
    /// The operator froze the account.
    AccountFrozen,
    /// The operator unfroze the account.
    AccountUnfrozen,
    /// The operator closed the account.
    AccountClosed,
    /// The operator set the account's daily limits.
    LimitsSet {
        /// The new limits.
        limits: DailyLimits,
    },
    /// The operator dropped the account's own daily limits: the server's defaults apply again.
    LimitsCleared,
}

impl Event {
    /// True for the events that present the card's PIN, which a locked card refuses.
    pub fn presents_pin(&self) -> bool {
        matches!(
            self,
            Event::PinAttempt { .. } | Event::PinChanged { .. } | Event::PinRekeyed { .. }
        )
    }

    /// True for the changes a client's request makes and the memory of its card (or of the
    /// operator) keeps: a retry of one still being worked on may join it. An opening carries a
    /// PIN and is always checked afresh; the bank's own steps and PIN checks are not remembered
    /// for a client at all.
    pub fn is_joinable(&self) -> bool {
        let remembered = matches!(
            Principal::of(0, self),
            Some(Principal::Card(_) | Principal::Operator)
        );
        remembered && !matches!(self, Event::AccountOpened { .. })
    }

    /// The event's variant tag in the stored encoding (its first byte, the variant's index):
    /// the kind a [`Fingerprint`] records, the same number the journal holds for it.
    pub fn tag(&self) -> u8 {
        // Large enough for every event but an open with a long holder name, which takes the
        // allocating path.
        let mut buffer = [0u8; EVENT_ENCODED_BYTES_INLINE];
        match crate::codec::encode_stored_into_slice(self, &mut buffer) {
            Ok(_) => buffer[0],
            Err(_) => crate::codec::encode_stored(self).expect("an event always encodes")[0],
        }
    }

    /// The event's parameters as a [`Fingerprint`] keeps them, `(amount, detail)`: the amount
    /// (the opening balance for an open; 1 or 0 for a correct or wrong PIN), and the CRC-32C of
    /// the holder's name for an open or of the new keyed verifier for a PIN change or re-key
    /// (useless without the PIN key), 0 otherwise. The PIN is left out on purpose: nothing kept
    /// may let a PIN be recovered, and no answer may depend on it.
    pub fn parameters(&self) -> (u64, u32) {
        match self {
            Event::AccountOpened {
                initial_balance,
                holder,
                ..
            } => (*initial_balance, crc32c::crc32c(holder.as_bytes())),
            Event::Withdrawal { amount } | Event::Deposit { amount } => (*amount, 0),
            Event::PinAttempt { correct } => (u64::from(*correct), 0),
            Event::CardUnlocked
            | Event::AccountFrozen
            | Event::AccountUnfrozen
            | Event::AccountClosed
            | Event::LimitsCleared => (0, 0),
            Event::PinChanged { pin_hash } | Event::PinRekeyed { pin_hash } => {
                (0, crc32c::crc32c(&pin_hash.hash))
            }
            Event::TransferSent { to, amount, .. } => (*amount, crc32c::crc32c(&to.to_be_bytes())),
            Event::TransferReceived { from, amount, .. } => {
                (*amount, crc32c::crc32c(&from.to_be_bytes()))
            }
            Event::TransferSettled { leg, .. } => (*leg, 0),
            // The time a hold lasts is the server's setting, not the request's: a retry after a
            // restart with another setting is still the same request.
            Event::HoldPlaced { amount, .. } => (*amount, 0),
            Event::HoldCompleted { hold, amount } => (
                *hold,
                crc32c::crc32c(&amount.map_or([0xFF; 8], u64::to_be_bytes)),
            ),
            Event::HoldVoided { hold } | Event::HoldExpired { hold } => (*hold, 0),
            // Whether the original was known is the server's finding, not the request's.
            Event::Reversal {
                original,
                dispensed,
                ..
            } => {
                let mut bytes = [0u8; 24];
                bytes[..8].copy_from_slice(&original.client.to_be_bytes());
                bytes[8..16].copy_from_slice(&original.sequence.to_be_bytes());
                bytes[16..].copy_from_slice(&dispensed.map_or([0xFF; 8], u64::to_be_bytes));
                (0, crc32c::crc32c(&bytes))
            }
            Event::LimitsSet { limits } => (limits.amount, limits.count),
        }
    }

    /// The account the event changes besides the record's card, if any. None does: each leg of
    /// a transfer is a record of its own account, so a transfer works the same when the two
    /// accounts are kept apart (by different actors, logs or nodes).
    pub fn other_account(&self) -> Option<Card> {
        None
    }
}

/// How a request ended, as its reply said; stored so a retry gets the same reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The reply's status.
    pub status: Code,
    /// The (ledger) balance the reply carried, if any.
    pub balance: Option<Amount>,
    /// The available balance the reply carried, if any (none in replies of releases before
    /// holds existed).
    pub available: Option<Amount>,
    /// What the request made, when it made something to refer to later: the id of a hold
    /// placed, the number of a transfer sent.
    pub reference: Option<u64>,
}

impl Outcome {
    /// An outcome with nothing but its code.
    pub fn bare(status: Code) -> Outcome {
        Outcome {
            status,
            balance: None,
            available: None,
            reference: None,
        }
    }
}

/// One state change, as it is journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The request that caused it.
    pub request: RequestId,
    /// The account it concerns.
    pub card: Card,
    /// Time of the decision by the bank's clock, in milliseconds since the Unix epoch: what
    /// forgets idle clients, stamps statement lines and tells whether a hold had expired.
    pub at_unix_ms: u64,
    /// The business day of the decision (days since 1970-01-01 in the bank's time zone), which
    /// daily limits count by; 0 in records of releases before limits existed.
    pub business_day: u32,
    /// What was asked.
    pub event: Event,
    /// How it ended.
    pub outcome: Outcome,
}

impl Record {
    /// Every account the record names: its card, then any other account its event names. The
    /// ledger takes exactly these out for the rule to see ([`Ledger::apply`]).
    pub fn accounts(&self) -> impl Iterator<Item = Card> {
        std::iter::once(self.card).chain(self.event.other_account())
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
    /// A partition's ledger does not fit the ledger it is to join or leave
    /// ([`Ledger::absorb`], [`Ledger::give_up`]): an account on both sides, one missing, or
    /// money totals that would fall below zero. Nothing was changed.
    #[error("partition ledger: {0}")]
    Partition(String),
    /// Records must be applied in journal order with no gaps.
    #[error("record {got} applied after {applied}")]
    OutOfOrder {
        /// The last applied position.
        applied: Lsn,
        /// The position offered.
        got: Lsn,
    },
}

impl LedgerError {
    /// The error for `record`, which does not add up for `reason`.
    pub fn inconsistent(record: &Record, reason: &str) -> Self {
        LedgerError::Inconsistent {
            request: record.request,
            card: record.card,
            reason: reason.to_string(),
        }
    }
}

/// The result of deciding a request against one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// A state change (possibly a refusal, which is still remembered) to journal and apply.
    Record(Record),
    /// An answer that changes nothing and is not journaled.
    Answer(Outcome),
}

/// The whole bank's state as of one journal position: every account and every client's window.
///
/// This is what snapshots hold and what recovery rebuilds. A clone costs one reference count per
/// shard of `accounts` and `clients` ([`Shards`]), so the journal takes its snapshot image with
/// `clone()` under the ledger's lock.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ledger {
    /// The position of the last record applied (0 before any).
    pub applied_lsn: Lsn,
    /// Every account by card.
    pub accounts: Shards<Card, Account>,
    /// Every remembered client's window, by the principal its requests were made as.
    pub clients: Memory,
    /// Money that came in: opening balances plus deposits. With `money_out` this proves
    /// conservation: the balances always add up to `money_in - money_out`.
    pub money_in: u128,
    /// Money that went out: withdrawals and completed holds.
    pub money_out: u128,
    /// Money sent by transfers: taken from the senders' balances, in transit until received.
    pub money_sent: u128,
    /// Money of transfers that arrived: credited to the receivers, or given back to the senders.
    /// `money_sent - money_received` is the money in transit, and the balances add up to
    /// `money_in - money_out - (money_sent - money_received)`.
    pub money_received: u128,
    /// The sum of every balance, kept as records are applied so conservation is asserted after
    /// each one without adding up every account. Not stored: None after decoding (or building a
    /// ledger by hand), and then added up once, by the next [`Ledger::apply`].
    #[serde(skip)]
    pub(crate) balances_total: Option<u128>,
}

/// Equal when the state is: the running total is only a cache of the balances.
impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        self.applied_lsn == other.applied_lsn
            && self.accounts == other.accounts
            && self.clients == other.clients
            && self.money_in == other.money_in
            && self.money_out == other.money_out
            && self.money_sent == other.money_sent
            && self.money_received == other.money_received
    }
}

impl Eq for Ledger {}

impl Ledger {
    /// Applies the record at position `lsn`, which must be the next one: takes out every
    /// account the record names ([`Record::accounts`]), lets the rule move them ([`apply_to`]),
    /// puts them back, then counts the money and remembers the request.
    ///
    /// Asserts that the balances moved by exactly the money the record brings in and takes out
    /// ([`money_moved`]), and that the balances still add up to `money_in - money_out`.
    pub fn apply(&mut self, lsn: Lsn, record: &Record) -> Result<(), LedgerError> {
        if lsn != self.applied_lsn + 1 {
            return Err(LedgerError::OutOfOrder {
                applied: self.applied_lsn,
                got: lsn,
            });
        }
        let total_before = self.balances_total();
        // Only the record's own account changes (another it names, a transfer's receiver, is
        // changed by a record of its own), so its balance before and after is what moved; it is
        // changed where it lies, found once.
        let card = record.card;
        let (moved, before, after, result) = match self.accounts.get_mut(&card) {
            Some(account) => {
                let before = u128::from(account.balance);
                let moved = money_moved(record, Some(account));
                let result = rules::apply_existing(account, record);
                (moved, before, u128::from(account.balance), result)
            }
            None => {
                // One slot per account the record names (at most two: its own and another).
                let mut slots: [Option<Account>; RECORD_ACCOUNTS_MAX] = Default::default();
                let moved = money_moved(record, None);
                let result = apply_to(&mut slots[..record.accounts().count()], record);
                let [opened, ..] = slots;
                let after = balances([opened.as_ref()]);
                if let Some(account) = opened {
                    self.accounts.insert(card, account);
                }
                (moved, 0, after, result)
            }
        };
        result?;
        self.count_money(record, moved, total_before, before, after);
        if let Some(principal) = Principal::of(record.card, &record.event) {
            let clients = self.clients.entry_or_default(principal);
            for (client, done) in completed_entries(record, lsn) {
                clients.remember(principal, client, done, record.at_unix_ms);
            }
        }
        self.applied_lsn = lsn;
        Ok(())
    }

    /// The four money totals (in, out, sent, received) of this ledger combined with `part`'s by
    /// `combine`, or `error` when one does not fit.
    fn money_with(
        &self,
        part: &Ledger,
        combine: fn(u128, u128) -> Option<u128>,
        error: impl Fn() -> LedgerError,
    ) -> Result<[u128; 4], LedgerError> {
        let mine = [
            self.money_in,
            self.money_out,
            self.money_sent,
            self.money_received,
        ];
        let theirs = [
            part.money_in,
            part.money_out,
            part.money_sent,
            part.money_received,
        ];
        let mut combined = [0; 4];
        for (slot, (mine, theirs)) in combined.iter_mut().zip(mine.into_iter().zip(theirs)) {
            *slot = combine(mine, theirs).ok_or_else(&error)?;
        }
        Ok(combined)
    }

    /// Adds `part`, the ledger of one partition built on its own from that partition's records
    /// (with positions of its own), to this ledger: a node adopting a partition.
    ///
    /// Its accounts join (none may exist here yet), and so does its memory of completed
    /// requests: the windows of `Card(c)` and `Incoming(c)` are the partition's own (none may
    /// exist here yet either); the operator's windows span partitions and are merged
    /// ([`Clients::merge`]). Its money totals are added. `applied_lsn` is unchanged, and every
    /// position `part` carries (the journal position of each completed request,
    /// [`Completed::lsn`], the only position an account or a memory holds) is rewritten to 0:
    /// they are all durable, so a retry of one of them waits for nothing (0 comes before every
    /// position, and never names a record this ledger's log may have dropped). The running
    /// total of the balances stays right.
    ///
    /// Nothing is changed when an error is returned.
    pub fn absorb(&mut self, part: Ledger) -> Result<(), LedgerError> {
        if let Some(card) = part
            .accounts
            .keys()
            .find(|card| self.accounts.contains_key(card))
        {
            return Err(LedgerError::Partition(format!(
                "account {card} exists on both sides"
            )));
        }
        if let Some(principal) = part.clients.keys().find(|principal| {
            **principal != Principal::Operator && self.clients.contains_key(principal)
        }) {
            return Err(LedgerError::Partition(format!(
                "the memory of {principal:?} exists on both sides"
            )));
        }
        let overflow = || LedgerError::Partition("the money totals overflow".into());
        let [money_in, money_out, money_sent, money_received] =
            self.money_with(&part, u128::checked_add, overflow)?;
        let added = balances(part.accounts.values().map(Some));
        let balances_total = match self.balances_total {
            Some(total) => Some(total.checked_add(added).ok_or_else(overflow)?),
            None => None,
        };
        // Durable before anything this ledger's log hands out (which starts at 1).
        let lsn = 0;
        self.accounts.extend(part.accounts);
        for (principal, mut clients) in part.clients {
            clients.positions_rewritten(lsn);
            if principal == Principal::Operator {
                self.clients
                    .entry_or_default(principal)
                    .merge(principal, clients);
            } else {
                self.clients.insert(principal, clients);
            }
        }
        self.money_in = money_in;
        self.money_out = money_out;
        self.money_sent = money_sent;
        self.money_received = money_received;
        self.balances_total = balances_total;
        Ok(())
    }

    /// Takes `part`, the current ledger of one partition this ledger holds, out of it: a node
    /// handing the partition to another. The reverse of [`Ledger::absorb`].
    ///
    /// Every account of `part` must be here and equal to `part`'s (otherwise `part` is not the
    /// partition as this ledger has it, and its totals would not be the ones to subtract); they
    /// are removed, with the windows of `Card(c)` and `Incoming(c)` of every card `c` of the
    /// partition. Its money totals are subtracted (an underflow is an error). The operator's
    /// windows are left alone: they span partitions. `applied_lsn` is unchanged and the running
    /// total of the balances stays right.
    ///
    /// After `absorb(part)` and then `give_up(&part)`, the ledger equals what it was, except
    /// that the operator's windows keep what `part` added to them. Nothing is changed when an
    /// error is returned.
    pub fn give_up(&mut self, part: &Ledger) -> Result<(), LedgerError> {
        for (card, theirs) in part.accounts.iter() {
            match self.accounts.get(card) {
                None => {
                    return Err(LedgerError::Partition(format!(
                        "account {card} is not held here"
                    )))
                }
                Some(mine) if mine != theirs => {
                    return Err(LedgerError::Partition(format!(
                        "account {card} differs from the partition's"
                    )))
                }
                Some(_) => {}
            }
        }
        let underflow =
            |what: &str| LedgerError::Partition(format!("{what} would fall below zero"));
        let [money_in, money_out, money_sent, money_received] =
            self.money_with(part, u128::checked_sub, || underflow("a money total"))?;
        let removed = balances(part.accounts.values().map(Some));
        let balances_total = match self.balances_total {
            Some(total) => Some(
                total
                    .checked_sub(removed)
                    .ok_or_else(|| underflow("the sum of the balances"))?,
            ),
            None => None,
        };
        for card in part.accounts.keys() {
            self.accounts.remove(card);
            self.clients.remove(&Principal::Card(*card));
            self.clients.remove(&Principal::Incoming(*card));
        }
        for principal in part.clients.keys() {
            if *principal != Principal::Operator {
                self.clients.remove(principal);
            }
        }
        self.money_in = money_in;
        self.money_out = money_out;
        self.money_sent = money_sent;
        self.money_received = money_received;
        self.balances_total = balances_total;
        Ok(())
    }

    /// The sum of every balance: the running total, added up first if it is not known yet.
    fn balances_total(&mut self) -> u128 {
        let accounts = &self.accounts;
        *self
            .balances_total
            .get_or_insert_with(|| balances(accounts.values().map(Some)))
    }

    /// Counts the money `record` moved, given the balances of its accounts `before` and `after`
    /// it and the total of every balance before it, and asserts that none appeared or vanished.
    fn count_money(
        &mut self,
        record: &Record,
        moved: Moved,
        total_before: u128,
        before: u128,
        after: u128,
    ) {
        assert_eq!(
            before + moved.money_in + moved.received,
            after + moved.money_out + moved.sent,
            "record {} on card {}: the balances moved by other than its amount",
            record.request,
            record.card
        );
        self.money_in += moved.money_in;
        self.money_out += moved.money_out;
        self.money_sent += moved.sent;
        self.money_received += moved.received;
        let total = total_before + after - before;
        self.balances_total = Some(total);
        assert_eq!(
            self.expected_balances(),
            Some(total),
            "after record {} on card {}: money is not conserved",
            record.request,
            record.card
        );
    }

    /// The money in transit: sent by transfers and not yet received or given back.
    pub fn in_transit(&self) -> Option<u128> {
        self.money_sent.checked_sub(self.money_received)
    }

    /// What the balances must add up to: the money that came in, less what went out and what
    /// is in transit. Written as in + received − out − sent so that it holds whatever order the
    /// accounts' records are applied in: a ledger rebuilt partition by partition may see a
    /// transfer received before it sees it sent.
    fn expected_balances(&self) -> Option<u128> {
        (self.money_in + self.money_received).checked_sub(self.money_out + self.money_sent)
    }

    /// The window of `client` under `principal`, if it is remembered.
    pub fn window(&self, principal: Principal, client: u64) -> Option<&ClientWindow> {
        self.clients.get(&principal)?.windows.get(&client)
    }

    /// Forgets clients with no completed request since `cutoff_unix_ms`; returns how many.
    pub fn forget_clients_idle_since(&mut self, cutoff_unix_ms: u64) -> usize {
        let mut forgotten = 0;
        let accounts = &self.accounts;
        self.clients.retain(|principal, clients| {
            clients.keep_after_forgetting(cutoff_unix_ms, &mut forgotten, |client| {
                principal.pins(accounts.get(&client))
            })
        });
        forgotten
    }

    /// True when the balances add up to in + received − out − sent: the part of
    /// [`Ledger::is_conserved`] that holds for any set of partitions too. A ledger of some
    /// partitions only may have received more than it sent (its senders are elsewhere), so its
    /// money in transit is not known and `is_conserved` is false for it.
    pub fn balances_add_up(&self) -> bool {
        self.expected_balances() == Some(balances(self.accounts.values().map(Some)))
    }

    /// True when the balances add up to the money that came in, less the money that went out
    /// and the money in transit, and no more money is in transit than the senders' transfers on
    /// their way add up to (a transfer stays on its sender's way from the moment it is received
    /// until the sender settles it).
    pub fn is_conserved(&self) -> bool {
        let balances = balances(self.accounts.values().map(Some));
        let on_their_way: u128 = self
            .accounts
            .values()
            .map(|account| u128::from(account.in_transit()))
            .sum();
        self.expected_balances() == Some(balances)
            && self
                .in_transit()
                .is_some_and(|transit| transit <= on_their_way)
    }
}

/// The sum of the balances of the accounts that exist among `accounts`.
fn balances<'a>(accounts: impl IntoIterator<Item = Option<&'a Account>>) -> u128 {
    accounts
        .into_iter()
        .flatten()
        .map(|account| u128::from(account.balance))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::testing::{id, opened, step};
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(card.completed.get(0).map(|done| done.sequence), Some(3));
        assert!(ledger.window(Principal::Card(8), 1).is_none());
    }

    /// The hand-numbered fingerprint of the releases before the kind came from the stored tag.
    fn fingerprint_numbered_by_hand(card: Card, event: &Event) -> Fingerprint {
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
            Event::PinRekeyed { .. } => unreachable!("never remembered"),
            _ => unreachable!("not an event of the earlier releases"),
        };
        Fingerprint {
            kind,
            card,
            amount,
            detail,
        }
    }

    #[test]
    fn fingerprints_equal_the_hand_numbered_ones_of_earlier_releases() {
        let key = crate::pin::PinKey::from_bytes([1; crate::pin::PIN_KEY_BYTES]);
        let long_holder = Event::AccountOpened {
            holder: "x".repeat(HOLDER_BYTES_MAX * 4),
            pin_hash: key.verifier(7, "1234"),
            initial_balance: u64::MAX,
        };
        let events = [
            opened(100),
            long_holder,
            Event::Withdrawal { amount: 3 },
            Event::Deposit { amount: u64::MAX },
            Event::PinAttempt { correct: true },
            Event::PinAttempt { correct: false },
            Event::CardUnlocked,
            Event::PinChanged {
                pin_hash: key.verifier(7, "4321"),
            },
        ];
        for event in &events {
            let by_hand = fingerprint_numbered_by_hand(123_456_789, event);
            assert_eq!(Fingerprint::of(123_456_789, event), by_hand, "{event:?}");
            assert_eq!(
                event.tag(),
                crate::codec::encode_stored(event).unwrap()[0],
                "{event:?}"
            );
        }
        let rekeyed = Event::PinRekeyed {
            pin_hash: key.verifier(7, "1234"),
        };
        // A re-key gets its own tag; it is never remembered, so no memory holds the old kind.
        assert_eq!(Fingerprint::of(7, &rekeyed).kind, 6);
        assert_eq!(Principal::of(7, &rekeyed), None);
    }

    #[test]
    fn a_record_names_its_card_and_a_snapshot_image_shares_the_state() {
        let mut ledger = Ledger::default();
        for card in 0..1_000 {
            let record = match decide(
                None,
                card,
                id(card + 1),
                opened(card),
                At::default(),
                &Policy::default(),
            ) {
                Decision::Record(record) => record,
                Decision::Answer(outcome) => panic!("{outcome:?}"),
            };
            assert_eq!(record.accounts().collect::<Vec<_>>(), [card]);
            ledger.apply(card + 1, &record).unwrap();
        }
        let image = ledger.clone();
        step(&mut ledger, 2_000, Event::Withdrawal { amount: 7 });
        assert_eq!(image.accounts[&7].balance, 7);
        assert_eq!(ledger.accounts[&7].balance, 0);
        // A decoded ledger adds its balances up again before the next record is checked.
        let bytes = crate::codec::encode_stored(&ledger).unwrap();
        let mut decoded: Ledger = crate::codec::decode_stored(&bytes).unwrap();
        assert_eq!(decoded, ledger);
        assert_eq!(decoded.balances_total, None);
        step(&mut decoded, 2_001, Event::Deposit { amount: 5 });
        assert_eq!(
            decoded.balances_total,
            Some((0..1_000).sum::<u128>() - 7 + 5)
        );
        assert!(decoded.is_conserved());
    }

    #[test]
    #[should_panic(expected = "money is not conserved")]
    fn a_ledger_whose_money_does_not_add_up_stops_at_the_next_record() {
        let mut ledger = Ledger {
            money_in: 1,
            ..Ledger::default()
        };
        step(&mut ledger, 1, opened(100));
    }

    /// How many partitions the split bank spreads its cards over (by `card % PARTS`).
    const PARTS: u64 = 2;

    /// The first card of the split bank; the others follow.
    const FIRST_CARD: Card = 10;

    /// A bank run on one whole ledger, every record also kept in its card's partition.
    struct Split {
        whole: Ledger,
        parts: Vec<Vec<Record>>,
        cards: Vec<Card>,
        sequence: u64,
    }

    impl Split {
        /// A bank with `count` accounts of 1 000, opened by operator client 1.
        fn with(count: u64) -> Split {
            let mut split = Split {
                whole: Ledger::default(),
                parts: vec![Vec::new(); PARTS as usize],
                cards: Vec::new(),
                sequence: 0,
            };
            for _ in 0..count {
                split.open(1);
            }
            split
        }

        /// Decides `event` on `card` under `request` against the whole ledger and applies it.
        fn run(&mut self, card: Card, request: RequestId, event: Event) -> Option<Record> {
            self.sequence += 1;
            let at = At {
                unix_ms: 1_000 + self.sequence,
                business_day: 1,
            };
            match decide(
                self.whole.accounts.get(&card),
                card,
                request,
                event,
                at,
                &Policy::default(),
            ) {
                Decision::Record(record) => {
                    self.whole
                        .apply(self.whole.applied_lsn + 1, &record)
                        .unwrap();
                    self.parts[(card % PARTS) as usize].push(record.clone());
                    Some(record)
                }
                Decision::Answer(_) => None,
            }
        }

        /// The next request id of `client`.
        fn next(&self, client: u64) -> RequestId {
            RequestId {
                client,
                sequence: self.sequence + 1,
            }
        }

        /// Opens the next card, by operator client `client`.
        fn open(&mut self, client: u64) {
            let card = FIRST_CARD + self.cards.len() as Card;
            let key = crate::pin::PinKey::from_bytes([5; crate::pin::PIN_KEY_BYTES]);
            let event = Event::AccountOpened {
                holder: "Ahona".into(),
                pin_hash: key.verifier(card, "1234"),
                initial_balance: 1_000,
            };
            let request = self.next(client);
            assert!(self.run(card, request, event).is_some());
            self.cards.push(card);
        }

        /// Sends `amount` from `from` to `to`.
        fn send(&mut self, from: Card, to: Card, amount: Amount) {
            let event = Event::TransferSent {
                to,
                amount,
                receiver: Code::Approved,
            };
            let request = self.next(from);
            self.run(from, request, event);
        }

        /// Delivers the oldest transfer `from` has on its way: received, then settled.
        fn deliver(&mut self, from: Card) {
            let Some(leg) = self.whole.accounts[&from].outbox().first().copied() else {
                return;
            };
            let receipt = RequestId {
                client: from,
                sequence: leg.leg,
            };
            let received = Event::TransferReceived {
                from,
                leg: leg.leg,
                amount: leg.amount,
            };
            let receiver = self
                .run(leg.to, receipt, received)
                .expect("a receipt is recorded")
                .outcome
                .status;
            let settled = Event::TransferSettled {
                leg: leg.leg,
                receiver,
            };
            assert!(self.run(from, leg.request, settled).is_some());
        }

        /// The ledger of partition `part` alone, its records at positions of its own.
        fn part(&self, part: usize) -> Ledger {
            let mut ledger = Ledger::default();
            for (index, record) in self.parts[part].iter().enumerate() {
                ledger.apply(index as Lsn + 1, record).unwrap();
            }
            ledger
        }
    }

    /// The state of a ledger without its positions: accounts, totals, and every memory with its
    /// windows' entries in sequence order and their positions left out.
    fn positionless(ledger: &Ledger) -> impl PartialEq + std::fmt::Debug {
        let accounts: std::collections::BTreeMap<Card, Account> = ledger
            .accounts
            .iter()
            .map(|(card, account)| (*card, account.clone()))
            .collect();
        let clients: std::collections::BTreeMap<_, std::collections::BTreeMap<_, _>> = ledger
            .clients
            .iter()
            .map(|(principal, clients)| {
                let windows = clients
                    .windows
                    .iter()
                    .map(|(client, window)| {
                        let mut entries: Vec<Completed> = window
                            .completed
                            .iter()
                            .map(|done| Completed { lsn: 0, ..done })
                            .collect();
                        entries.sort_by_key(|done| done.sequence);
                        let entries: Vec<String> =
                            entries.iter().map(|done| format!("{done:?}")).collect();
                        (*client, (window.highest, window.last_used_unix_ms, entries))
                    })
                    .collect();
                (*principal, windows)
            })
            .collect();
        format!(
            "{accounts:?} {clients:?} {} {} {} {}",
            ledger.money_in, ledger.money_out, ledger.money_sent, ledger.money_received
        )
    }

    /// Every position a ledger's memory holds.
    fn positions(ledger: &Ledger) -> Vec<Lsn> {
        ledger
            .clients
            .values()
            .flat_map(|clients| clients.windows.values())
            .flat_map(|window| window.completed.iter().map(|done| done.lsn))
            .collect()
    }

    /// The ledger without the operator's memory.
    fn without_operator(ledger: &Ledger) -> Ledger {
        let mut ledger = ledger.clone();
        ledger.clients.remove(&Principal::Operator);
        ledger
    }

    #[test]
    fn a_partition_absorbed_twice_or_given_up_unheld_is_refused_and_changes_nothing() {
        let mut split = Split::with(4);
        split.send(FIRST_CARD, FIRST_CARD + 1, 100);
        let zero = split.part(0);
        let one = split.part(1);
        let mut node = Ledger::default();
        node.absorb(zero.clone()).unwrap();
        let before = node.clone();
        assert!(matches!(
            node.absorb(zero.clone()),
            Err(LedgerError::Partition(_))
        ));
        assert_eq!(node, before);
        assert!(matches!(node.give_up(&one), Err(LedgerError::Partition(_))));
        assert_eq!(node, before);
        // A partition that moved on since it was taken is not the one held.
        split.send(FIRST_CARD, FIRST_CARD + 1, 1);
        assert!(matches!(
            node.give_up(&split.part(0)),
            Err(LedgerError::Partition(_))
        ));
        assert_eq!(node, before);
        // Totals that do not fit are refused before anything is removed.
        let bigger = Ledger {
            money_in: zero.money_in + 1,
            ..zero.clone()
        };
        assert!(matches!(
            node.give_up(&bigger),
            Err(LedgerError::Partition(_))
        ));
        assert_eq!(node, before);
        node.give_up(&zero).unwrap();
        assert!(node.accounts.is_empty());
        assert_eq!(
            (
                node.money_in,
                node.money_out,
                node.money_sent,
                node.money_received
            ),
            (0, 0, 0, 0)
        );
    }

    proptest! {
        /// Whatever the deposits, withdrawals, transfers (across partitions or not), deliveries
        /// and openings by two operator clients: the partitions' ledgers absorbed into a node
        /// make the whole ledger (but for positions), with every position rewritten to the
        /// node's; the node takes further records; giving a partition up leaves the other; and
        /// the balances add up after every step.
        #[test]
        fn partitions_absorbed_make_the_whole_ledger_and_given_up_leave_the_rest(
            operations in prop::collection::vec((0u8..5, 0usize..16, 0usize..16, 1u64..400), 1..120),
            node_lsn in 0u64..50,
        ) {
            let mut split = Split::with(4);
            for (kind, from, to, amount) in operations {
                let from = split.cards[from % split.cards.len()];
                let to = split.cards[to % split.cards.len()];
                match kind {
                    0 => {
                        let request = split.next(from);
                        split.run(from, request, Event::Deposit { amount });
                    }
                    1 => {
                        let request = split.next(from);
                        split.run(from, request, Event::Withdrawal { amount });
                    }
                    2 if from != to => split.send(from, to, amount),
                    3 => split.deliver(from),
                    4 if split.cards.len() < 16 => split.open(1 + amount % 2),
                    _ => {}
                }
            }
            let zero = split.part(0);
            let one = split.part(1);
            prop_assert!(zero.balances_add_up());
            prop_assert!(one.balances_add_up());
            let mut node = Ledger {
                applied_lsn: node_lsn,
                balances_total: Some(0),
                ..Ledger::default()
            };
            node.absorb(zero.clone()).unwrap();
            prop_assert!(node.balances_add_up());
            prop_assert_eq!(node.balances_total, Some(balances(node.accounts.values().map(Some))));
            let only_zero = node.clone();
            node.absorb(one.clone()).unwrap();
            prop_assert_eq!(node.applied_lsn, node_lsn);
            prop_assert!(positions(&node).iter().all(|lsn| *lsn == 0));
            prop_assert!(node.is_conserved());
            prop_assert_eq!(positionless(&node), positionless(&split.whole));
            prop_assert_eq!(node.balances_total, Some(balances(node.accounts.values().map(Some))));
            // The node goes on from its own position, its running total checked by each record.
            let mut going_on = node.clone();
            let card = split.cards[0];
            if let Decision::Record(record) = decide(going_on.accounts.get(&card), card, RequestId { client: 9, sequence: 1 }, Event::Deposit { amount: 5 }, At::default(), &Policy::default()) {
                going_on.apply(node_lsn + 1, &record).unwrap();
            }
            prop_assert!(going_on.is_conserved());
            node.give_up(&one).unwrap();
            prop_assert!(node.balances_add_up());
            prop_assert_eq!(without_operator(&node), without_operator(&only_zero));
            prop_assert_eq!(node.balances_total, Some(balances(node.accounts.values().map(Some))));
            node.give_up(&zero).unwrap();
            prop_assert!(node.accounts.is_empty());
            prop_assert!(node.is_conserved());
            prop_assert!(node.clients.keys().all(|principal| *principal == Principal::Operator));
            prop_assert_eq!((node.money_in, node.money_out, node.money_sent, node.money_received), (0, 0, 0, 0));
            prop_assert_eq!(node.balances_total, Some(0));
        }
    }

    proptest! {
        /// Whatever the operations, no balance goes negative (it is a u64, and no approval
        /// underflows), money is conserved, and a replayed ledger equals the live one.
        #[test]
        fn conservation_and_no_overdraft(operations in prop::collection::vec((0u8..3, 0u64..2_000), 1..200)) {
            let mut ledger = Ledger::default();
            let mut records = Vec::new();
            let mut sequence = 1;
            if let Decision::Record(record) = decide(None, 7, id(sequence), opened(1_000), At::default(), &Policy::default()) {
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
                if let Decision::Record(record) = decide(ledger.accounts.get(&7), 7, id(sequence), event.clone(), At::default(), &Policy::default()) {
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
