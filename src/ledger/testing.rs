//! What the ledger's tests share: request ids, an opening, one decided and applied step.

use super::*;

/// Request `sequence` of client 1.
pub fn id(sequence: u64) -> RequestId {
    RequestId {
        client: 1,
        sequence,
    }
}

/// An opening with `balance` for holder "Joty" and PIN 1234.
pub fn opened(balance: Amount) -> Event {
    Event::AccountOpened {
        holder: "Joty".into(),
        pin_hash: crate::pin::hash("1234", crate::pin::PinHashCost::MINIMUM).unwrap(),
        initial_balance: balance,
    }
}

/// Decides and applies one event on card 7, the way an account actor does.
pub fn step(ledger: &mut Ledger, sequence: u64, event: Event) -> Outcome {
    match decide(
        ledger.accounts.get(&7),
        7,
        id(sequence),
        event,
        At::default(),
        &Policy::default(),
    ) {
        Decision::Record(record) => {
            let lsn = ledger.applied_lsn + 1;
            ledger.apply(lsn, &record).unwrap();
            record.outcome
        }
        Decision::Answer(outcome) => outcome,
    }
}

/// The memory entry of an approved withdrawal of 1 on `card`.
pub fn withdrawal_entry(sequence: u64, card: Card) -> Completed {
    Completed {
        sequence,
        fingerprint: Fingerprint::of(card, &Event::Withdrawal { amount: 1 }),
        outcome: rules::approved(1),
        lsn: sequence,
    }
}
