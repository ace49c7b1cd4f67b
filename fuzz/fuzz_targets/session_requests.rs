//! Arbitrary byte streams sent to a live in-process server: see `actor_bank_fuzz::session`.
#![no_main]

use actor_bank_fuzz::session::Harness;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

static HARNESS: OnceLock<Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS.get_or_init(Harness::start).run(data);
});
