//! `ReceiveTransfer`, node to node in cluster mode: the second leg of a transfer, delivered by
//! the node that serves the sending account to the node that serves the receiving one.
//!
//! The receiving account decides it exactly as it decides a leg delivered on its own node
//! (`Event::TransferReceived`), remembered under the receipt id (the sending card as client,
//! the transfer's number as sequence), so a leg delivered twice is credited once; the answer
//! waits until the receipt is durable, because the sender settles the transfer on it.

use super::{operator, served_here, submit, Answer, Check, Login, Started};
use crate::ledger::Event;
use crate::model::{Amount, Card, Code, RequestId};
use crate::server::Bank;
use std::sync::Arc;

/// The checks of `ReceiveTransfer`, in the order [`start`] runs them.
pub(super) const CHECKS: &[Check] = &[
    Check::InFlight,
    Check::OperatorAllowance,
    Check::OperatorToken,
    Check::Partition,
    Check::Validation,
    Check::Joining,
    Check::Actor,
    Check::Memory,
    Check::AccountRules,
    Check::Storage,
];

/// The leg a node delivers.
pub(super) struct Leg {
    /// The sending card.
    pub(super) from: Card,
    /// The sender's number for the transfer.
    pub(super) leg: u64,
    /// The receiving card.
    pub(super) to: Card,
    /// How much.
    pub(super) amount: Amount,
}

/// Runs [`CHECKS`] after the in-flight limit.
pub(super) fn start(
    bank: &Arc<Bank>,
    login: &Login,
    id: RequestId,
    operator_token: &str,
    leg: Leg,
) -> Result<Started, Answer> {
    // Check::OperatorAllowance, Check::OperatorToken: only a node of the cluster delivers.
    operator(bank, operator_token, login)?;
    // Check::Partition: the receiving account is this node's.
    served_here(bank, leg.to)?;
    // Check::Validation: only in cluster mode (a single node delivers its own legs), the id is
    // the receipt's, and a leg never goes back to its sender.
    let receipt = RequestId {
        client: leg.from,
        sequence: leg.leg,
    };
    if !bank.storage().is_partitioned() || id != receipt || leg.from == leg.to {
        return Err(Answer::bare(Code::InvalidRequest));
    }
    let event = Event::TransferReceived {
        from: leg.from,
        leg: leg.leg,
        amount: leg.amount,
    };
    // Check::Joining and Check::Actor now; Check::Memory (of the receiver's incoming legs) and
    // Check::AccountRules in the actor; Check::Storage while the answer is awaited.
    Ok(submit(bank, leg.to, id, event))
}
