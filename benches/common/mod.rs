//! What the benchmarks share.

use actor_bank::ledger::Event;
use actor_bank::pin::{self, PinHash, PinHashCost};
use std::sync::OnceLock;

/// The PIN of every benchmark account.
pub const PIN: &str = "4321";

/// The event that opens `card`. Every account shares one PIN hash, made once: argon2 is slow on
/// purpose, and hashing per account would only measure argon2. (A hash is 56 bytes inline
/// whatever its cost, so the cheapest cost changes no record or snapshot size measurably.)
pub fn opening(card: u64, initial_balance: u64) -> Event {
    static PIN_HASH: OnceLock<PinHash> = OnceLock::new();
    let pin_hash =
        *PIN_HASH.get_or_init(|| pin::hash(PIN, PinHashCost::MINIMUM).expect("PIN hash"));
    Event::AccountOpened {
        holder: format!("ATM {card}"),
        pin_hash,
        initial_balance,
    }
}
