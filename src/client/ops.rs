//! One entry per operation on the client side: the wire request it sends, the reply body it
//! expects, and the [`Client`] method that calls it.
//!
//! The `Client` methods and the `atm` commands both build their requests here, so an operation's
//! request is spelt once. Adding one (a transfer, say) is one more type here with its [`Call`]
//! impl and its `Client` method, and one command in `atm`. Which operations need a verified card
//! is not listed here: [`crate::model::Kind::needs_card`] says so for every operation.
//!
//! Types that carry a secret (a PIN, the operator token) have no `Debug`, so none reaches a log
//! line; a [`Prepared`] prints through [`Operation`]'s own `Debug`, which hides them.

use super::{Client, ClientError};
use crate::protocol::{Amount, Body, Card, DailyLimits, HoldId, Operation, Reply, RequestId};

/// The body an approved reply to an operation carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Nothing beyond the status.
    Nothing,
    /// The account's balance (after the operation, for a withdrawal or a deposit).
    Balance,
    /// A text (the lowercased line).
    Text,
    /// A yes or no, named by this (the name `atm --json` prints it under).
    Answer(&'static str),
    /// A hold's id and the balances.
    Hold,
    /// The last movements.
    Statement,
    /// An account's details.
    Account,
}

/// An operation ready to send, with the body its reply is expected to carry: what `atm`'s
/// commands and menu hold between reading their input and printing the reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The request as it goes on the wire.
    pub operation: Operation,
    /// What an approved reply carries, so the reply can be read and printed.
    pub expected: Expected,
}

/// One operation the client can ask for: how its request is built and what its reply carries.
pub trait Call: Sized {
    /// The body an approved reply carries.
    const EXPECTED: Expected;

    /// The request as it goes on the wire.
    fn into_operation(self) -> Operation;

    /// The request together with what its reply carries.
    fn prepare(self) -> Prepared {
        Prepared {
            operation: self.into_operation(),
            expected: Self::EXPECTED,
        }
    }
}

/// Check a card and its PIN; later account operations on the connection act on that card.
pub struct Verify {
    /// The card.
    pub card: Card,
    /// Its PIN.
    pub pin: String,
}

impl Call for Verify {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        Operation::Verify {
            card: self.card,
            pin: self.pin,
        }
    }
}

/// Read the verified card's balance.
#[derive(Clone, Copy, Debug)]
pub struct Balance;

impl Call for Balance {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::Balance
    }
}

/// Take money from the verified card's account.
#[derive(Clone, Copy, Debug)]
pub struct Withdraw {
    /// How much, in minor units.
    pub amount: Amount,
}

impl Call for Withdraw {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::Withdraw {
            amount: self.amount,
        }
    }
}

/// Put money into the verified card's account.
#[derive(Clone, Copy, Debug)]
pub struct Deposit {
    /// How much, in minor units.
    pub amount: Amount,
}

impl Call for Deposit {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::Deposit {
            amount: self.amount,
        }
    }
}

/// Forget the verified card on this connection.
#[derive(Clone, Copy, Debug)]
pub struct Logout;

impl Call for Logout {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        Operation::Logout
    }
}

/// Change the verified card's PIN.
pub struct ChangePin {
    /// The current PIN.
    pub old_pin: String,
    /// The PIN from now on.
    pub new_pin: String,
}

impl Call for ChangePin {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        Operation::ChangePin {
            old_pin: self.old_pin,
            new_pin: self.new_pin,
        }
    }
}

/// Open an account (operator only).
pub struct CreateAccount {
    /// The operator token the server was started with.
    pub operator_token: String,
    /// The new card number.
    pub card: Card,
    /// The holder's name.
    pub holder: String,
    /// The new card's PIN.
    pub pin: String,
    /// The opening balance.
    pub initial_balance: Amount,
}

impl Call for CreateAccount {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        Operation::CreateAccount {
            operator_token: self.operator_token,
            card: self.card,
            holder: self.holder,
            pin: self.pin,
            initial_balance: self.initial_balance,
        }
    }
}

/// Clear a card's wrong PINs, unlocking it (operator only).
pub struct UnlockCard {
    /// The operator token the server was started with.
    pub operator_token: String,
    /// The card to unlock.
    pub card: Card,
}

impl Call for UnlockCard {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        Operation::UnlockCard {
            operator_token: self.operator_token,
            card: self.card,
        }
    }
}

/// The lab's utility: a line in lowercase.
#[derive(Clone, Debug)]
pub struct Lowercase {
    /// The line.
    pub text: String,
}

impl Call for Lowercase {
    const EXPECTED: Expected = Expected::Text;

    fn into_operation(self) -> Operation {
        Operation::Lowercase { text: self.text }
    }
}

/// The lab's utility: is a number prime?
#[derive(Clone, Copy, Debug)]
pub struct IsPrime {
    /// The number.
    pub number: u64,
}

impl Call for IsPrime {
    const EXPECTED: Expected = Expected::Answer("prime");

    fn into_operation(self) -> Operation {
        Operation::IsPrime {
            number: self.number,
        }
    }
}

/// The lab's utility: do a number's decimal digits read the same both ways?
#[derive(Clone, Copy, Debug)]
pub struct IsPalindrome {
    /// The number.
    pub number: u64,
}

impl Call for IsPalindrome {
    const EXPECTED: Expected = Expected::Answer("palindrome");

    fn into_operation(self) -> Operation {
        Operation::IsPalindrome {
            number: self.number,
        }
    }
}

/// The (ledger) balance a reply carries, if any: what [`Expected::Balance`] and
/// [`Expected::Hold`] replies hold, whether remembered from before version 2 (`Balance`) or not.
pub fn reply_balance(reply: &Reply) -> Option<Amount> {
    match reply.body {
        Body::Balance(balance)
        | Body::Balances {
            ledger: balance, ..
        } => Some(balance),
        Body::Hold { ledger, .. } => Some(ledger),
        _ => None,
    }
}

/// Move money from the verified card's account to another card's.
#[derive(Clone, Copy, Debug)]
pub struct Transfer {
    /// The receiving card.
    pub to: Card,
    /// How much, in minor units.
    pub amount: Amount,
}

impl Call for Transfer {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::Transfer {
            to: self.to,
            amount: self.amount,
        }
    }
}

/// Reserve an amount on the verified card's account.
#[derive(Clone, Copy, Debug)]
pub struct PlaceHold {
    /// How much, in minor units.
    pub amount: Amount,
}

impl Call for PlaceHold {
    const EXPECTED: Expected = Expected::Hold;

    fn into_operation(self) -> Operation {
        Operation::PlaceHold {
            amount: self.amount,
        }
    }
}

/// Post a hold of the verified card: its amount, or less.
#[derive(Clone, Copy, Debug)]
pub struct CompleteHold {
    /// The hold.
    pub hold_id: HoldId,
    /// How much to post; none for all of it.
    pub amount: Option<Amount>,
}

impl Call for CompleteHold {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::CompleteHold {
            hold_id: self.hold_id,
            amount: self.amount,
        }
    }
}

/// Release a hold of the verified card.
#[derive(Clone, Copy, Debug)]
pub struct VoidHold {
    /// The hold.
    pub hold_id: HoldId,
}

impl Call for VoidHold {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::VoidHold {
            hold_id: self.hold_id,
        }
    }
}

/// Give back an earlier withdrawal or completed hold of the verified card.
#[derive(Clone, Copy, Debug)]
pub struct Reverse {
    /// The original's request id.
    pub original: RequestId,
    /// What the ATM actually dispensed; none for nothing (a full reversal).
    pub dispensed: Option<Amount>,
}

impl Call for Reverse {
    const EXPECTED: Expected = Expected::Balance;

    fn into_operation(self) -> Operation {
        Operation::Reverse {
            original: self.original,
            dispensed: self.dispensed,
        }
    }
}

/// Read the verified card's last movements.
#[derive(Clone, Copy, Debug)]
pub struct Statement {
    /// How many at most.
    pub count: u32,
}

impl Call for Statement {
    const EXPECTED: Expected = Expected::Statement;

    fn into_operation(self) -> Operation {
        Operation::Statement { count: self.count }
    }
}

/// What the operator does to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Management {
    /// Freeze it.
    Freeze,
    /// Unfreeze it.
    Unfreeze,
    /// Close it (at zero balance).
    Close,
    /// Read its details.
    Info,
    /// Set its daily limits.
    SetLimits(DailyLimits),
    /// Drop its own daily limits (the server's defaults apply again).
    ClearLimits,
}

/// The operator's account management (no `Debug`: it carries the operator token).
pub struct Manage {
    /// The operator token.
    pub operator_token: String,
    /// The account's card.
    pub card: Card,
    /// What to do.
    pub action: Management,
}

impl Call for Manage {
    const EXPECTED: Expected = Expected::Nothing;

    fn into_operation(self) -> Operation {
        let (operator_token, card) = (self.operator_token, self.card);
        match self.action {
            Management::Freeze => Operation::FreezeAccount {
                operator_token,
                card,
            },
            Management::Unfreeze => Operation::UnfreezeAccount {
                operator_token,
                card,
            },
            Management::Close => Operation::CloseAccount {
                operator_token,
                card,
            },
            Management::Info => Operation::AccountInfo {
                operator_token,
                card,
            },
            Management::SetLimits(limits) => Operation::SetLimits {
                operator_token,
                card,
                limits,
            },
            Management::ClearLimits => Operation::ClearLimits {
                operator_token,
                card,
            },
        }
    }

    fn prepare(self) -> Prepared {
        let expected = if self.action == Management::Info {
            Expected::Account
        } else {
            Expected::Nothing
        };
        Prepared {
            operation: self.into_operation(),
            expected,
        }
    }
}

impl Client {
    /// Sends `call` with a new id until a definite reply arrives.
    pub async fn send<C: Call>(&mut self, call: C) -> Result<Reply, ClientError> {
        self.call(call.into_operation()).await
    }

    /// Verifies `card` and `pin`; later account calls act on that card.
    pub async fn verify(&mut self, card: Card, pin: &str) -> Result<Reply, ClientError> {
        let pin = pin.to_string();
        self.send(Verify { card, pin }).await
    }

    /// The verified card's balance.
    pub async fn balance(&mut self) -> Result<Reply, ClientError> {
        self.send(Balance).await
    }

    /// Withdraws `amount` from the verified card's account.
    pub async fn withdraw(&mut self, amount: Amount) -> Result<Reply, ClientError> {
        self.send(Withdraw { amount }).await
    }

    /// Deposits `amount` into the verified card's account.
    pub async fn deposit(&mut self, amount: Amount) -> Result<Reply, ClientError> {
        self.send(Deposit { amount }).await
    }

    /// Changes the verified card's PIN from `old_pin` to `new_pin`.
    pub async fn change_pin(&mut self, old_pin: &str, new_pin: &str) -> Result<Reply, ClientError> {
        let (old_pin, new_pin) = (old_pin.to_string(), new_pin.to_string());
        self.send(ChangePin { old_pin, new_pin }).await
    }

    /// Clears `card`'s wrong PINs, unlocking it (operator only).
    pub async fn unlock_card(
        &mut self,
        operator_token: &str,
        card: Card,
    ) -> Result<Reply, ClientError> {
        let operator_token = operator_token.to_string();
        self.send(UnlockCard {
            operator_token,
            card,
        })
        .await
    }

    /// Transfers `amount` from the verified card's account to `to`'s.
    pub async fn transfer(&mut self, to: Card, amount: Amount) -> Result<Reply, ClientError> {
        self.send(Transfer { to, amount }).await
    }

    /// Places a hold of `amount` on the verified card's account; the reply names it.
    pub async fn place_hold(&mut self, amount: Amount) -> Result<Reply, ClientError> {
        self.send(PlaceHold { amount }).await
    }

    /// Posts hold `hold_id` of the verified card, for `amount` or all of it.
    pub async fn complete_hold(
        &mut self,
        hold_id: HoldId,
        amount: Option<Amount>,
    ) -> Result<Reply, ClientError> {
        self.send(CompleteHold { hold_id, amount }).await
    }

    /// Releases hold `hold_id` of the verified card.
    pub async fn void_hold(&mut self, hold_id: HoldId) -> Result<Reply, ClientError> {
        self.send(VoidHold { hold_id }).await
    }

    /// Reverses the verified card's earlier debit `original`, keeping what was `dispensed`.
    pub async fn reverse(
        &mut self,
        original: RequestId,
        dispensed: Option<Amount>,
    ) -> Result<Reply, ClientError> {
        self.send(Reverse {
            original,
            dispensed,
        })
        .await
    }

    /// The verified card's last `count` movements.
    pub async fn statement(&mut self, count: u32) -> Result<Reply, ClientError> {
        self.send(Statement { count }).await
    }

    /// Manages `card`'s account (operator only): freeze, unfreeze, close, read, set limits.
    pub async fn manage(
        &mut self,
        operator_token: &str,
        card: Card,
        action: Management,
    ) -> Result<Reply, ClientError> {
        self.send(Manage {
            operator_token: operator_token.to_string(),
            card,
            action,
        })
        .await
    }

    /// Opens an account (operator only).
    pub async fn create_account(
        &mut self,
        operator_token: &str,
        card: Card,
        holder: &str,
        pin: &str,
        initial_balance: Amount,
    ) -> Result<Reply, ClientError> {
        self.send(CreateAccount {
            operator_token: operator_token.to_string(),
            card,
            holder: holder.to_string(),
            pin: pin.to_string(),
            initial_balance,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_builds_its_wire_operation_and_names_its_reply() {
        let withdraw = Withdraw { amount: 300 }.prepare();
        assert_eq!(withdraw.operation, Operation::Withdraw { amount: 300 });
        assert_eq!(withdraw.expected, Expected::Balance);
        let prime = IsPrime { number: 7 }.prepare();
        assert_eq!(prime.expected, Expected::Answer("prime"));
        let verify = Verify {
            card: 1,
            pin: "1234".into(),
        }
        .prepare();
        assert!(!verify.operation.kind().needs_card());
        assert!(Balance.prepare().operation.kind().needs_card());
    }
}
