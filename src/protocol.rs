//! The typed messages ATMs and the server exchange, and the statuses a request can end in.
//!
//! A connection starts with [`ClientMessage::Hello`] answered by [`ServerMessage::Welcome`]; after
//! that the client sends [`ClientMessage::Request`]s and the server answers each with a
//! [`ServerMessage::Reply`] carrying the same [`RequestId`]. Replies may arrive in any order.
//! docs/PROTOCOL.md gives the byte layout of every type below; the *order* of enum variants is part
//! of the wire format (bincode encodes a variant by its index), so new variants go at the end.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest address, in bytes, a [`Body::Moved`] may name: a DNS name (at most 253 bytes) or
/// an IPv6 literal in brackets, a colon and a port fit. A node never advertises a longer one, and
/// a client treats a longer one as a broken reply (docs/PROTOCOL.md section 4). The codec itself
/// bounds strings only by the frame size, so this limit is the protocol's own.
pub const ADDRESS_BYTES_MAX: usize = 255;

pub use crate::model::{
    AccountState, Amount, Card, DailyLimits, HoldId, Kind, Movement, MovementKind, RequestId,
};

/// Everything a client may send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// First message on every connection.
    Hello(Hello),
    /// Any request after the handshake.
    Request(Request),
}

/// Everything the server may send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// Answer to [`Hello`]: the handshake succeeded and these limits apply.
    Welcome(Welcome),
    /// Answer to one [`Request`].
    Reply(Reply),
    /// The server is closing this connection and says why (unsupported version, protocol
    /// violation). No more messages follow.
    Goodbye(Goodbye),
}

/// Opens a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks; must equal [`PROTOCOL_VERSION`].
    pub protocol_version: u32,
}

/// The server's half of the handshake: the limits a well-behaved client keeps to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks.
    pub protocol_version: u32,
    /// Requests one connection may have in flight; more are answered `busy`.
    pub requests_in_flight_max: u32,
    /// How many of a client's most recent sequence numbers the server remembers (see
    /// [`Status::StaleRequest`]).
    pub request_window: u32,
    /// The largest frame body the server accepts, in bytes.
    pub frame_bytes_max: u32,
    /// How long, in seconds, the server remembers a client's completed requests after its last
    /// one. A client must stop retrying a request well before this (the client library stops at
    /// half of it at most): after it, the id would be treated as new.
    pub client_retention_secs: u64,
}

/// Why the server closed a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Goodbye {
    /// A human-readable reason.
    pub reason: String,
}

/// One request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Identifies the request across retries.
    pub id: RequestId,
    /// What to do.
    pub operation: Operation,
}

/// What a request asks for.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Open an account (operator only).
    CreateAccount {
        /// The operator token the server was started with.
        operator_token: String,
        /// The new card number.
        card: Card,
        /// The account holder's name.
        holder: String,
        /// The PIN, 4 to 12 decimal digits; stored only as a keyed verifier.
        pin: String,
        /// Opening balance in minor units.
        initial_balance: Amount,
    },
    /// Check card and PIN; on success this connection acts for that card.
    Verify {
        /// The card.
        card: Card,
        /// Its PIN.
        pin: String,
    },
    /// Read the verified card's balance.
    Balance,
    /// Take money from the verified card's account.
    Withdraw {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// Put money into the verified card's account.
    Deposit {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// Forget the verified card on this connection.
    Logout,
    /// The lab's utility: the text in lowercase.
    Lowercase {
        /// The line to lowercase.
        text: String,
    },
    /// The lab's utility: is `number` prime?
    IsPrime {
        /// The number to test.
        number: u64,
    },
    /// The lab's utility: do `number`'s decimal digits read the same both ways?
    IsPalindrome {
        /// The number to test.
        number: u64,
    },
    /// Clear a card's wrong PINs, unlocking it (operator only).
    UnlockCard {
        /// The operator token the server was started with.
        operator_token: String,
        /// The card to unlock.
        card: Card,
    },
    /// Change the verified card's PIN.
    ChangePin {
        /// The current PIN (a wrong one counts towards the lockout like a wrong Verify).
        old_pin: String,
        /// The new PIN, 4 to 12 decimal digits.
        new_pin: String,
    },
    /// Move money from the verified card's account to another card's account.
    Transfer {
        /// The card whose account receives it.
        to: Card,
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// Reserve an amount on the verified card's account (an authorisation): the available
    /// balance drops by it until the hold is completed, voided or expires.
    PlaceHold {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// Post a hold of the verified card: take its amount, or less, and release the rest.
    CompleteHold {
        /// The hold, as its placement's reply named it.
        hold_id: HoldId,
        /// How much to post; none for the hold's whole amount.
        amount: Option<Amount>,
    },
    /// Release a hold of the verified card without taking anything.
    VoidHold {
        /// The hold.
        hold_id: HoldId,
    },
    /// Give back an earlier withdrawal (or completed hold) of the verified card, named by its
    /// request id: all of it, or what the ATM did not dispense.
    Reverse {
        /// The request id of the withdrawal or hold completion.
        original: RequestId,
        /// The amount the ATM actually dispensed (given back: the original's amount less this);
        /// none gives back the whole amount.
        dispensed: Option<Amount>,
    },
    /// Read the verified card's last movements, newest last.
    Statement {
        /// How many at most (the server caps it at its configured maximum).
        count: u32,
    },
    /// Freeze an account (operator only).
    FreezeAccount {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
    },
    /// Unfreeze a frozen account (operator only).
    UnfreezeAccount {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
    },
    /// Close an account whose balance is zero, with no hold and no transfer on its way
    /// (operator only). Its card can never be opened again.
    CloseAccount {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
    },
    /// Read an account's details (operator only); never its PIN.
    AccountInfo {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
    },
    /// Set an account's daily withdrawal limits (operator only).
    SetLimits {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
        /// The limits.
        limits: DailyLimits,
    },
    /// Drop an account's own daily limits, so the server's defaults apply again (operator only).
    ClearLimits {
        /// The operator token the server was started with.
        operator_token: String,
        /// The account's card.
        card: Card,
    },
    /// Node to node, in cluster mode: credit the second leg of a transfer to the receiving
    /// account, on the node that serves it. Its request id is `{client: from, sequence: leg}`,
    /// the receipt the receiver remembers, so a leg delivered twice is credited once.
    ReceiveTransfer {
        /// The operator token every node of the cluster shares.
        operator_token: String,
        /// The sending card.
        from: Card,
        /// The sender's transfer number: the sequence of the receipt id.
        leg: u64,
        /// The receiving card.
        to: Card,
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// Act for `card` in this one request: its PIN is checked as a `Verify` checks it, then
    /// `operation` runs on its account, in one round trip. The connection's verified card, if
    /// any, is neither used nor changed. What an ATM sends when the PIN travels with every
    /// transaction, as it does in ISO 8583.
    ForCard {
        /// The card.
        card: Card,
        /// Its PIN.
        pin: String,
        /// What to do on its account.
        operation: CardOperation,
    },
}

/// What a [`Operation::ForCard`] request asks of its card: the operations on one card's account
/// that a customer at an ATM starts with the card's PIN. Each is the operation of the same name
/// on a verified card (fields and replies alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CardOperation {
    /// As [`Operation::Balance`].
    Balance,
    /// As [`Operation::Withdraw`].
    Withdraw {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// As [`Operation::Deposit`].
    Deposit {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// As [`Operation::Transfer`].
    Transfer {
        /// The card whose account receives it.
        to: Card,
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// As [`Operation::PlaceHold`].
    PlaceHold {
        /// How much, in minor units; more than zero.
        amount: Amount,
    },
    /// As [`Operation::Statement`].
    Statement {
        /// How many at most.
        count: u32,
    },
}

impl CardOperation {
    /// Which kind of operation this is: that of the same operation on a verified card.
    pub fn kind(&self) -> Kind {
        self.on_verified_card().kind()
    }

    /// `operation` as one for a named card, when it is one of these.
    pub fn of(operation: &Operation) -> Option<CardOperation> {
        Some(match *operation {
            Operation::Balance => CardOperation::Balance,
            Operation::Withdraw { amount } => CardOperation::Withdraw { amount },
            Operation::Deposit { amount } => CardOperation::Deposit { amount },
            Operation::Transfer { to, amount } => CardOperation::Transfer { to, amount },
            Operation::PlaceHold { amount } => CardOperation::PlaceHold { amount },
            Operation::Statement { count } => CardOperation::Statement { count },
            _ => return None,
        })
    }

    /// The same operation on the connection's verified card.
    pub fn on_verified_card(self) -> Operation {
        match self {
            CardOperation::Balance => Operation::Balance,
            CardOperation::Withdraw { amount } => Operation::Withdraw { amount },
            CardOperation::Deposit { amount } => Operation::Deposit { amount },
            CardOperation::Transfer { to, amount } => Operation::Transfer { to, amount },
            CardOperation::PlaceHold { amount } => Operation::PlaceHold { amount },
            CardOperation::Statement { count } => Operation::Statement { count },
        }
    }
}

impl Operation {
    /// True when the operation acts on the connection's verified card, so that a client must
    /// have verified one first: [`Kind::needs_card`], but for a [`Operation::ForCard`], which
    /// names its card and carries its PIN.
    pub fn needs_verified_card(&self) -> bool {
        !matches!(self, Operation::ForCard { .. }) && self.kind().needs_card()
    }

    /// Which kind of operation this is.
    pub fn kind(&self) -> Kind {
        match self {
            Operation::CreateAccount { .. } => Kind::CreateAccount,
            Operation::Verify { .. } => Kind::Verify,
            Operation::Balance => Kind::Balance,
            Operation::Withdraw { .. } => Kind::Withdraw,
            Operation::Deposit { .. } => Kind::Deposit,
            Operation::Logout => Kind::Logout,
            Operation::Lowercase { .. } => Kind::Lowercase,
            Operation::IsPrime { .. } => Kind::IsPrime,
            Operation::IsPalindrome { .. } => Kind::IsPalindrome,
            Operation::UnlockCard { .. } => Kind::UnlockCard,
            Operation::ChangePin { .. } => Kind::ChangePin,
            Operation::Transfer { .. } => Kind::Transfer,
            Operation::PlaceHold { .. } => Kind::PlaceHold,
            Operation::CompleteHold { .. } => Kind::CompleteHold,
            Operation::VoidHold { .. } => Kind::VoidHold,
            Operation::Reverse { .. } => Kind::Reverse,
            Operation::Statement { .. } => Kind::Statement,
            Operation::FreezeAccount { .. } => Kind::FreezeAccount,
            Operation::UnfreezeAccount { .. } => Kind::UnfreezeAccount,
            Operation::CloseAccount { .. } => Kind::CloseAccount,
            Operation::AccountInfo { .. } => Kind::AccountInfo,
            Operation::SetLimits { .. } => Kind::SetLimits,
            Operation::ClearLimits { .. } => Kind::ClearLimits,
            Operation::ReceiveTransfer { .. } => Kind::ReceiveTransfer,
            Operation::ForCard { operation, .. } => operation.kind(),
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// Secrets (PINs, the operator token) never reach a log line through `Debug`.
impl fmt::Debug for Operation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::CreateAccount {
                card,
                holder,
                initial_balance,
                ..
            } => formatter
                .debug_struct("CreateAccount")
                .field("card", card)
                .field("holder", holder)
                .field("initial_balance", initial_balance)
                .finish_non_exhaustive(),
            Operation::Verify { card, .. } => formatter
                .debug_struct("Verify")
                .field("card", card)
                .finish_non_exhaustive(),
            Operation::Balance => formatter.write_str("Balance"),
            Operation::Withdraw { amount } => write!(formatter, "Withdraw {{ amount: {amount} }}"),
            Operation::Deposit { amount } => write!(formatter, "Deposit {{ amount: {amount} }}"),
            Operation::Logout => formatter.write_str("Logout"),
            Operation::Lowercase { text } => {
                write!(formatter, "Lowercase {{ bytes: {} }}", text.len())
            }
            Operation::IsPrime { number } => write!(formatter, "IsPrime {{ number: {number} }}"),
            Operation::IsPalindrome { number } => {
                write!(formatter, "IsPalindrome {{ number: {number} }}")
            }
            Operation::UnlockCard { card, .. } => formatter
                .debug_struct("UnlockCard")
                .field("card", card)
                .finish_non_exhaustive(),
            Operation::ChangePin { .. } => formatter.write_str("ChangePin { .. }"),
            Operation::Transfer { to, amount } => {
                write!(formatter, "Transfer {{ to: {to}, amount: {amount} }}")
            }
            Operation::PlaceHold { amount } => {
                write!(formatter, "PlaceHold {{ amount: {amount} }}")
            }
            Operation::CompleteHold { hold_id, amount } => write!(
                formatter,
                "CompleteHold {{ hold_id: {hold_id}, amount: {amount:?} }}"
            ),
            Operation::VoidHold { hold_id } => {
                write!(formatter, "VoidHold {{ hold_id: {hold_id} }}")
            }
            Operation::Reverse {
                original,
                dispensed,
            } => write!(
                formatter,
                "Reverse {{ original: {original}, dispensed: {dispensed:?} }}"
            ),
            Operation::Statement { count } => write!(formatter, "Statement {{ count: {count} }}"),
            Operation::FreezeAccount { card, .. }
            | Operation::UnfreezeAccount { card, .. }
            | Operation::CloseAccount { card, .. }
            | Operation::AccountInfo { card, .. }
            | Operation::ClearLimits { card, .. } => {
                write!(formatter, "{} {{ card: {card}, .. }}", self.name())
            }
            Operation::SetLimits { card, limits, .. } => write!(
                formatter,
                "SetLimits {{ card: {card}, limits: {limits:?}, .. }}"
            ),
            Operation::ReceiveTransfer {
                from,
                leg,
                to,
                amount,
                ..
            } => write!(
                formatter,
                "ReceiveTransfer {{ from: {from}, leg: {leg}, to: {to}, amount: {amount}, .. }}"
            ),
            Operation::ForCard {
                card, operation, ..
            } => formatter
                .debug_struct("ForCard")
                .field("card", card)
                .field("operation", operation)
                .finish_non_exhaustive(),
        }
    }
}

/// The answer to one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The request this answers.
    pub id: RequestId,
    /// How it ended.
    pub status: Status,
    /// What came back with it.
    pub body: Body,
}

/// Data carried by a reply, depending on the operation and status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Nothing beyond the status.
    Empty,
    /// The account's balance after the operation (or now, for a balance inquiry or a refusal).
    Balance(Amount),
    /// The lowercase text.
    Text(String),
    /// The answer to a yes/no utility (prime, palindrome).
    Answer(bool),
    /// The account's ledger balance and its available balance (the ledger balance less the
    /// open holds), after the operation (or now, for an inquiry or a refusal).
    Balances {
        /// The ledger balance.
        ledger: Amount,
        /// What may still be taken: the ledger balance less the open holds.
        available: Amount,
    },
    /// A hold placed: its id, and the balances with it.
    Hold {
        /// The hold's id, which completes or voids it.
        hold_id: HoldId,
        /// The ledger balance.
        ledger: Amount,
        /// The available balance, the new hold taken off.
        available: Amount,
    },
    /// The verified card's last movements, oldest first.
    Statement(Vec<Movement>),
    /// An account's details, for the operator.
    Account(AccountDetails),
    /// The body of a [`Status::Moved`] reply: where the account's partition is served now.
    Moved {
        /// The owning node's advertised address, `host:port`, at most [`ADDRESS_BYTES_MAX`]
        /// bytes.
        address: String,
    },
}

/// An account as the operator sees it; never its PIN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountDetails {
    /// The account's card.
    pub card: Card,
    /// The holder's name.
    pub holder: String,
    /// Open, frozen or closed.
    pub state: AccountState,
    /// True when too many wrong PINs locked the card.
    pub locked: bool,
    /// Wrong PINs since the last right one.
    pub pin_failures: u8,
    /// The ledger balance.
    pub ledger: Amount,
    /// The available balance.
    pub available: Amount,
    /// How many holds are open.
    pub holds: u32,
    /// Money sent by transfers not yet received (or given back).
    pub in_transit: Amount,
    /// The daily limits that apply (the account's own, or the server's defaults).
    pub limits: DailyLimits,
    /// True when the account has limits of its own (set by the operator).
    pub own_limits: bool,
    /// Withdrawn (and held) today, in minor units.
    pub withdrawn_today: Amount,
    /// Withdrawals (and holds) today.
    pub withdrawals_today: u32,
}

/// How a request ended. The order of the variants is the wire order (bincode encodes the index);
/// it follows the order in which the server checks, but docs/PROTOCOL.md gives the exact
/// precedence for each operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Done (or, for a replayed id, it had been done and this is the original reply).
    Approved,
    /// No definite answer now (too many in flight, a full queue, an account actor that crashed or
    /// is restarting). The request may not have been decided, or may have been decided and its
    /// answer lost: retry with the same id, and the retry returns the definite outcome.
    Busy,
    /// The server cannot make changes durable (journal failure); nothing new is acknowledged.
    Unavailable,
    /// Operator operation without the right operator token.
    NotAuthorised,
    /// Account operation on a connection with no verified card.
    NotLoggedIn,
    /// A parameter is malformed (PIN not 4–12 digits, empty or over-long holder name).
    InvalidRequest,
    /// The request id is older than the window the server remembers for this client; nothing
    /// was executed.
    StaleRequest,
    /// The id was used before with different parameters; nothing changed.
    RequestIdConflict,
    /// No account with that card number.
    UnknownCard,
    /// Create account for a card number that exists.
    CardExists,
    /// The card is locked after too many wrong PINs.
    CardLocked,
    /// Wrong PIN.
    IncorrectPin,
    /// Amount zero, or the result would not fit.
    InvalidAmount,
    /// A debit larger than the available balance.
    InsufficientFunds,
    /// Past the card's daily withdrawal amount.
    WithdrawalLimitExceeded,
    /// Past the card's daily number of withdrawals.
    WithdrawalCountExceeded,
    /// The account is frozen.
    AccountFrozen,
    /// The account is closed.
    AccountClosed,
    /// No such hold on the verified card's account.
    UnknownHold,
    /// The hold was already completed, voided or expired.
    HoldResolved,
    /// The account has its maximum of open holds.
    TooManyHolds,
    /// The original of a reversal is not a debit that can be reversed.
    NotReversible,
    /// Closing an account that still holds money, holds or a transfer on its way.
    BalanceNotZero,
    /// Cluster mode: another node serves the account's partition; the body
    /// ([`Body::Moved`]) names it. Nothing ran and nothing is remembered: repeat the same
    /// request, with the same id, at that node.
    Moved,
}

impl Status {
    /// All statuses, in wire (and precedence) order.
    pub const ALL: [Status; 24] = [
        Status::Approved,
        Status::Busy,
        Status::Unavailable,
        Status::NotAuthorised,
        Status::NotLoggedIn,
        Status::InvalidRequest,
        Status::StaleRequest,
        Status::RequestIdConflict,
        Status::UnknownCard,
        Status::CardExists,
        Status::CardLocked,
        Status::IncorrectPin,
        Status::InvalidAmount,
        Status::InsufficientFunds,
        Status::WithdrawalLimitExceeded,
        Status::WithdrawalCountExceeded,
        Status::AccountFrozen,
        Status::AccountClosed,
        Status::UnknownHold,
        Status::HoldResolved,
        Status::TooManyHolds,
        Status::NotReversible,
        Status::BalanceNotZero,
        Status::Moved,
    ];

    /// The snake_case name used in JSON output and logs.
    pub fn name(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Busy => "busy",
            Status::Unavailable => "unavailable",
            Status::NotAuthorised => "not_authorised",
            Status::NotLoggedIn => "not_logged_in",
            Status::InvalidRequest => "invalid_request",
            Status::StaleRequest => "stale_request",
            Status::RequestIdConflict => "request_id_conflict",
            Status::UnknownCard => "unknown_card",
            Status::CardExists => "card_exists",
            Status::CardLocked => "card_locked",
            Status::IncorrectPin => "incorrect_pin",
            Status::InvalidAmount => "invalid_amount",
            Status::InsufficientFunds => "insufficient_funds",
            Status::WithdrawalLimitExceeded => "withdrawal_limit_exceeded",
            Status::WithdrawalCountExceeded => "withdrawal_count_exceeded",
            Status::AccountFrozen => "account_frozen",
            Status::AccountClosed => "account_closed",
            Status::UnknownHold => "unknown_hold",
            Status::HoldResolved => "hold_resolved",
            Status::TooManyHolds => "too_many_holds",
            Status::NotReversible => "not_reversible",
            Status::BalanceNotZero => "balance_not_zero",
            Status::Moved => "moved",
        }
    }

    /// True when the answer is final: retrying the same id will give the same reply. `busy`,
    /// `unavailable` and `moved` are not definite: the client retries them with the same id
    /// (`moved` at the node its body names).
    pub fn is_definite(self) -> bool {
        !matches!(self, Status::Busy | Status::Unavailable | Status::Moved)
    }
}

/// The wire status for a result code. Today the two lists name the same outcomes; they are two
/// types so that the wire's numbering (by variant position) and the journal's (by
/// [`crate::model::Code`] value) can never change each other.
impl From<crate::model::Code> for Status {
    fn from(code: crate::model::Code) -> Status {
        use crate::model::Code;
        match code {
            Code::Approved => Status::Approved,
            Code::Busy => Status::Busy,
            Code::Unavailable => Status::Unavailable,
            Code::NotAuthorised => Status::NotAuthorised,
            Code::NotLoggedIn => Status::NotLoggedIn,
            Code::InvalidRequest => Status::InvalidRequest,
            Code::StaleRequest => Status::StaleRequest,
            Code::RequestIdConflict => Status::RequestIdConflict,
            Code::UnknownCard => Status::UnknownCard,
            Code::CardExists => Status::CardExists,
            Code::CardLocked => Status::CardLocked,
            Code::IncorrectPin => Status::IncorrectPin,
            Code::InvalidAmount => Status::InvalidAmount,
            Code::InsufficientFunds => Status::InsufficientFunds,
            Code::WithdrawalLimitExceeded => Status::WithdrawalLimitExceeded,
            Code::WithdrawalCountExceeded => Status::WithdrawalCountExceeded,
            Code::AccountFrozen => Status::AccountFrozen,
            Code::AccountClosed => Status::AccountClosed,
            Code::UnknownHold => Status::UnknownHold,
            Code::HoldResolved => Status::HoldResolved,
            Code::TooManyHolds => Status::TooManyHolds,
            Code::NotReversible => Status::NotReversible,
            Code::BalanceNotZero => Status::BalanceNotZero,
            Code::Moved => Status::Moved,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let operation = Operation::CreateAccount {
            operator_token: "s3cret-token".into(),
            card: 1,
            holder: "Joty".into(),
            pin: "1234".into(),
            initial_balance: 5,
        };
        let shown = format!("{operation:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("1234"),
            "{shown}"
        );
        let shown = format!(
            "{:?}",
            Operation::Verify {
                card: 9,
                pin: "5678".into()
            }
        );
        assert!(!shown.contains("5678"), "{shown}");
        let for_card = Operation::ForCard {
            card: 9,
            pin: "5678".into(),
            operation: CardOperation::Withdraw { amount: 300 },
        };
        let shown = format!("{for_card:?}");
        assert!(!shown.contains("5678") && shown.contains("300"), "{shown}");
        assert!(!for_card.needs_verified_card() && Operation::Balance.needs_verified_card());
        let shown = format!(
            "{:?}{:?}",
            Operation::ChangePin {
                old_pin: "2468".into(),
                new_pin: "1357".into()
            },
            Operation::UnlockCard {
                operator_token: "s3cret-token".into(),
                card: 9
            }
        );
        assert!(
            !shown.contains("2468") && !shown.contains("1357") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn a_card_operation_is_the_operation_of_the_same_name_on_a_verified_card() {
        let all = [
            CardOperation::Balance,
            CardOperation::Withdraw { amount: 1 },
            CardOperation::Deposit { amount: 2 },
            CardOperation::Transfer { to: 3, amount: 4 },
            CardOperation::PlaceHold { amount: 5 },
            CardOperation::Statement { count: 6 },
        ];
        for (index, on_card) in all.iter().enumerate() {
            let operation = on_card.on_verified_card();
            assert_eq!(operation.kind(), on_card.kind());
            assert!(operation.needs_verified_card());
            assert_eq!(CardOperation::of(&operation).as_ref(), Some(on_card));
            // The wire names them as a client writing one from docs/PROTOCOL.md would.
            assert_eq!(
                crate::codec::encode_wire(on_card).unwrap()[0] as usize,
                index
            );
            let for_card = Operation::ForCard {
                card: 9,
                pin: "1234".into(),
                operation: *on_card,
            };
            assert_eq!(for_card.kind(), on_card.kind());
        }
        for operation in [
            Operation::Logout,
            Operation::CompleteHold {
                hold_id: 1,
                amount: None,
            },
            Operation::Verify {
                card: 1,
                pin: "1234".into(),
            },
        ] {
            assert_eq!(CardOperation::of(&operation), None, "{operation:?}");
        }
    }

    #[test]
    fn status_list_is_in_wire_order() {
        for (index, status) in Status::ALL.iter().enumerate() {
            let bytes = crate::codec::encode_wire(status).unwrap();
            assert_eq!(bytes, vec![index as u8], "{status}");
        }
    }

    #[test]
    fn every_result_code_has_a_wire_status_of_the_same_name() {
        for code in crate::model::Code::ALL {
            assert_eq!(Status::from(*code).name(), code.name());
        }
    }
}
