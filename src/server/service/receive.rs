//! `ReceiveTransfer`, node to node in cluster mode: the second leg of a transfer, delivered to the
//! node that serves the receiving account.
//!
//! A placeholder so that the wire's new operation compiles: it refuses every delivery with
//! `invalid_request` until the cluster's server side replaces it. [`CHECKS`] is the order
//! docs/PROTOCOL.md documents for it (an operator's account change, the receiving account's rules
//! deciding the credit).

use super::{Answer, Check, Command};
use crate::model::{Amount, Card, Code};

/// The checks of `ReceiveTransfer`, in the order the server is to run them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// What a delivered leg asks of the service; for now always refused with `invalid_request`.
pub fn receive_transfer(
    operator_token: String,
    from: Card,
    leg: u64,
    to: Card,
    amount: Amount,
) -> Result<Command, Answer> {
    let _ = (operator_token, from, leg, to, amount);
    Err(Answer::bare(Code::InvalidRequest))
}
