//! What the benchmarks share.
//!
//! Each bench target compiles this module on its own and uses a part of it.
#![allow(dead_code)]

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

/// True under `cargo bench` (which passes `--bench`), false under `cargo test --benches`.
pub fn bench_mode() -> bool {
    std::env::args().any(|argument| argument == "--bench")
}

/// A size from the environment (underscores allowed: `1_000_000`), or `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.replace('_', "").parse().ok())
        .unwrap_or(default)
}
