//! The bank's vocabulary, shared by every layer: cards, amounts, request ids, and the result
//! codes requests end in.
//!
//! Nothing here knows a wire or a disk. A front door maps [`Code`] to its own answer codes (the
//! bincode protocol's [`crate::protocol::Status`], ISO 8583's response codes); the journal stores
//! [`Code`] by its numeric value, so renumbering or reordering a wire enum never changes what is on
//! disk.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A card number: the account's identity (the lab's cards are nine decimal digits).
pub type Card = u64;

/// An amount of money in minor units (cents). Never a float.
pub type Amount = u64;

/// Names one request for its whole life, across retries, reconnects and server restarts.
///
/// `client` is chosen at random by each client process (or given by the operator); `sequence`
/// grows by one for each new request of that client. A retry reuses the id unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId {
    /// The client that issued the request.
    pub client: u64,
    /// The client's sequence number for it.
    pub sequence: u64,
}

impl fmt::Display for RequestId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.client, self.sequence)
    }
}

impl std::str::FromStr for RequestId {
    type Err = String;

    /// Parses `CLIENT:SEQUENCE`, two decimal u64s.
    fn from_str(text: &str) -> Result<Self, String> {
        let (client, sequence) = text
            .split_once(':')
            .ok_or_else(|| format!("request id {text:?} is not CLIENT:SEQUENCE"))?;
        let parse = |part: &str| {
            part.parse::<u64>()
                .map_err(|_| format!("request id {text:?}: {part:?} is not a decimal u64"))
        };
        Ok(RequestId {
            client: parse(client)?,
            sequence: parse(sequence)?,
        })
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal => $text:literal,)*) => {
        /// How a request ended, in the bank's own terms.
        ///
        /// Each code has an explicit, stable value: the journal and snapshots store a decided
        /// outcome's code as that value (one byte), so values are never reused or changed and new
        /// codes take new values. Which codes an operation can end in, and in which order its
        /// checks run, is listed by the service (`server::service`), not by these values.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Code {
            $($(#[$doc])* $name = $value,)*
        }

        impl Code {
            /// Every code, by value.
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The snake_case name used in logs, metrics and JSON output.
            pub fn name(self) -> &'static str {
                match self {
                    $(Code::$name => $text,)*
                }
            }

            /// The code with this stored value, if there is one.
            pub fn from_value(value: u8) -> Option<Code> {
                match value {
                    $($value => Some(Code::$name),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// Done (or, for a replayed id, it had been done and this is the original outcome).
    Approved = 0 => "approved",
    /// No definite answer now (a full queue, a crashed or restarting account actor); retry with
    /// the same id.
    Busy = 1 => "busy",
    /// The server cannot make changes durable (storage failure); nothing new is acknowledged.
    Unavailable = 2 => "unavailable",
    /// An operator operation without the right operator token.
    NotAuthorised = 3 => "not_authorised",
    /// An account operation without a verified card.
    NotLoggedIn = 4 => "not_logged_in",
    /// A parameter is malformed (PIN not 4–12 digits, empty or over-long holder name).
    InvalidRequest = 5 => "invalid_request",
    /// The request id is older than the window remembered for this client; nothing ran.
    StaleRequest = 6 => "stale_request",
    /// The id was used before with different parameters; nothing changed.
    RequestIdConflict = 7 => "request_id_conflict",
    /// No account with that card number.
    UnknownCard = 8 => "unknown_card",
    /// Opening an account for a card number that exists.
    CardExists = 9 => "card_exists",
    /// The card is locked after too many wrong PINs.
    CardLocked = 10 => "card_locked",
    /// Wrong PIN.
    IncorrectPin = 11 => "incorrect_pin",
    /// Amount zero, or the result would not fit.
    InvalidAmount = 12 => "invalid_amount",
    /// A debit larger than the available balance (the balance less the holds on it).
    InsufficientFunds = 13 => "insufficient_funds",
    /// A withdrawal (or hold) that would take the card past its daily amount.
    WithdrawalLimitExceeded = 14 => "withdrawal_limit_exceeded",
    /// A withdrawal (or hold) beyond the card's daily number of withdrawals.
    WithdrawalCountExceeded = 15 => "withdrawal_count_exceeded",
    /// The account is frozen: it refuses debits, PIN checks and incoming transfers.
    AccountFrozen = 16 => "account_frozen",
    /// The account is closed: it refuses everything but reads by the operator.
    AccountClosed = 17 => "account_closed",
    /// No hold with that id on the verified card's account.
    UnknownHold = 18 => "unknown_hold",
    /// The hold was already completed, voided or expired.
    HoldResolved = 19 => "hold_resolved",
    /// The account already has its maximum of open holds.
    TooManyHolds = 20 => "too_many_holds",
    /// The original of a reversal was completed but is not a debit that can be reversed (not a
    /// withdrawal or completed hold of this card, or too old to be remembered as one).
    NotReversible = 21 => "not_reversible",
    /// Closing an account that still holds money, holds or a transfer on its way.
    BalanceNotZero = 22 => "balance_not_zero",
    /// Cluster mode: another node serves the account's partition; nothing ran and nothing is
    /// remembered, and the client repeats the request, with the same id, at that node.
    Moved = 23 => "moved",
}

impl Code {
    /// The value stored on disk for this code.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// True when the outcome is final: a retry with the same id gets the same answer. `busy`,
    /// `unavailable` and `moved` are not: the client retries them with the same id (`moved` at
    /// the node the answer names).
    pub fn is_definite(self) -> bool {
        !matches!(self, Code::Busy | Code::Unavailable | Code::Moved)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Stored as its value, one byte: the same bytes the first release wrote for the wire status it
/// stored in this place (bincode wrote that enum's index, a one-byte varint below 251).
impl Serialize for Code {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.value())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u8::deserialize(deserializer)?;
        Code::from_value(value)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown result code {value}")))
    }
}

/// Identifies a hold among its account's holds: the account's holds are numbered 1, 2, … in the
/// order they were placed, and a number is never reused.
pub type HoldId = u64;

/// Whether an account takes requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccountState {
    /// Open for everything.
    #[default]
    Open,
    /// Refuses debits (withdrawals, transfers out, holds and their completion), PIN checks and
    /// incoming transfers; deposits, reversals and voids still go through.
    Frozen,
    /// Closed for good (only at zero balance): refuses everything; the card is never reused.
    Closed,
}

impl AccountState {
    /// The snake_case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            AccountState::Open => "open",
            AccountState::Frozen => "frozen",
            AccountState::Closed => "closed",
        }
    }
}

/// What moved an account's balance, as a statement lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MovementKind {
    /// The account was opened with its opening balance.
    Opened,
    /// Cash in.
    Deposit,
    /// Cash out.
    Withdrawal,
    /// Money sent to another account.
    TransferOut,
    /// Money received from another account.
    TransferIn,
    /// Money sent and given back, because the other account refused it.
    TransferReturned,
    /// A hold posted.
    HoldCompleted,
    /// An earlier debit given back.
    Reversal,
}

impl MovementKind {
    /// The snake_case name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            MovementKind::Opened => "opened",
            MovementKind::Deposit => "deposit",
            MovementKind::Withdrawal => "withdrawal",
            MovementKind::TransferOut => "transfer_out",
            MovementKind::TransferIn => "transfer_in",
            MovementKind::TransferReturned => "transfer_returned",
            MovementKind::HoldCompleted => "hold_completed",
            MovementKind::Reversal => "reversal",
        }
    }

    /// True for the kinds that take money out of the account.
    pub fn is_debit(self) -> bool {
        matches!(
            self,
            MovementKind::Withdrawal | MovementKind::TransferOut | MovementKind::HoldCompleted
        )
    }
}

/// One line of a statement: a change of the account's balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// When it was decided, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What it was.
    pub kind: MovementKind,
    /// How much moved, in minor units.
    pub amount: Amount,
    /// The request that caused it (for a transfer received, the sender's card as the client and
    /// the sender's transfer number as the sequence).
    pub request: RequestId,
    /// The balance just after it.
    pub balance_after: Amount,
}

/// A card's daily limits on withdrawals (and holds), per business day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DailyLimits {
    /// The most money, in minor units.
    pub amount: Amount,
    /// The most withdrawals.
    pub count: u32,
}

impl DailyLimits {
    /// No limit at all.
    pub const NONE: DailyLimits = DailyLimits {
        amount: Amount::MAX,
        count: u32::MAX,
    };
}

/// Who may ask for an operation: what must be established on the connection before it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Authority {
    /// Anyone (the utilities, `Logout`, and `Verify`, which establishes a card).
    Anyone,
    /// Whoever verified a card on this connection; the operation acts on that card.
    Card,
    /// Whoever presents the operator token with the request.
    Operator,
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $name:ident => $text:literal, $authority:ident, $remembered:literal,)*) => {
        /// The kinds of operation, whatever front door they arrive through: the one list of
        /// what each needs (a verified card, the operator token) and whether its outcome is
        /// remembered under its request id.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$doc])* $name,)*
        }

        impl Kind {
            /// Every kind.
            pub const ALL: &'static [Kind] = &[$(Kind::$name,)*];

            /// A short, stable name for logs and metrics.
            pub fn name(self) -> &'static str {
                match self {
                    $(Kind::$name => $text,)*
                }
            }

            /// What the connection must have established for this kind to run.
            pub fn authority(self) -> Authority {
                match self {
                    $(Kind::$name => Authority::$authority,)*
                }
            }

            /// True when a decided outcome is remembered under the request id, so a retry gets
            /// it back instead of running again (the operations that change an account and carry
            /// no secret).
            pub fn is_remembered(self) -> bool {
                match self {
                    $(Kind::$name => $remembered,)*
                }
            }
        }
    };
}

kinds! {
    /// Open an account.
    CreateAccount => "create_account", Operator, true,
    /// Check a card and PIN, and act for that card from then on.
    Verify => "verify", Anyone, false,
    /// Read the verified card's balance.
    Balance => "balance", Card, false,
    /// Take money from the verified card's account.
    Withdraw => "withdraw", Card, true,
    /// Put money into the verified card's account.
    Deposit => "deposit", Card, true,
    /// Forget the verified card.
    Logout => "logout", Anyone, false,
    /// The lab's utility: lowercase a text.
    Lowercase => "lowercase", Anyone, false,
    /// The lab's utility: is a number prime?
    IsPrime => "prime", Anyone, false,
    /// The lab's utility: is a number a palindrome?
    IsPalindrome => "palindrome", Anyone, false,
    /// Clear a card's wrong PINs.
    UnlockCard => "unlock_card", Operator, true,
    /// Change the verified card's PIN.
    ChangePin => "change_pin", Card, false,
    /// Move money from the verified card's account to another card's.
    Transfer => "transfer", Card, true,
    /// Reserve an amount on the verified card's account.
    PlaceHold => "hold", Card, true,
    /// Post a hold (its amount or less) and release the rest.
    CompleteHold => "complete_hold", Card, true,
    /// Release a hold without posting it.
    VoidHold => "void_hold", Card, true,
    /// Give back an earlier withdrawal or completed hold, in full or in part.
    Reverse => "reverse", Card, true,
    /// Read the verified card's last movements.
    Statement => "statement", Card, false,
    /// Freeze an account: it refuses debits, PIN checks and incoming transfers.
    FreezeAccount => "freeze", Operator, true,
    /// Unfreeze an account.
    UnfreezeAccount => "unfreeze", Operator, true,
    /// Close an account at zero balance, for good.
    CloseAccount => "close_account", Operator, true,
    /// Read an account's details (never its PIN).
    AccountInfo => "account_info", Operator, false,
    /// Set an account's daily withdrawal limits.
    SetLimits => "set_limits", Operator, true,
    /// Drop an account's own daily limits: the server's defaults apply again.
    ClearLimits => "clear_limits", Operator, true,
    /// Node to node: credit a transfer's second leg to the receiving account (remembered under
    /// the receipt id, the sender's card and transfer number).
    ReceiveTransfer => "receive_transfer", Operator, true,
}

impl Kind {
    /// True for the kinds that act on the card verified on the connection.
    pub fn needs_card(self) -> bool {
        self.authority() == Authority::Card
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_parse_from_client_colon_sequence() {
        let id: RequestId = "7:42".parse().unwrap();
        assert_eq!(
            id,
            RequestId {
                client: 7,
                sequence: 42
            }
        );
        assert_eq!(id.to_string(), "7:42");
        assert!("7".parse::<RequestId>().is_err());
        assert!("x:1".parse::<RequestId>().is_err());
    }

    #[test]
    fn codes_are_stored_as_their_value_and_unknown_values_are_refused() {
        for code in Code::ALL {
            let bytes = crate::codec::encode_stored(code).unwrap();
            assert_eq!(bytes, vec![code.value()], "{code}");
            assert_eq!(crate::codec::decode_stored::<Code>(&bytes).unwrap(), *code);
            assert_eq!(Code::from_value(code.value()), Some(*code));
        }
        assert!(crate::codec::decode_stored::<Code>(&[200]).is_err());
    }
}
