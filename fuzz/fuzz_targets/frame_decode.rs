//! Arbitrary bytes through the frame decoder and `decode_wire`: see `actor_bank_fuzz::frames`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    actor_bank_fuzz::frames::check(data);
});
