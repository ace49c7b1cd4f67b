//! Arbitrary bytes through the ISO 8583 message decoder: see `actor_bank_fuzz::iso8583`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_bank_fuzz::iso8583::check(data);
});
