//! The ISO 8583 codec under seeded mutations of valid messages, through the very checks of the
//! `iso8583_decode` fuzz target (`fuzz/src/iso8583.rs`): a stable smoke of what the fuzzer
//! explores, so the checks cannot rot.

#[path = "../fuzz/src/iso8583.rs"]
mod iso8583_checks;

use actor_bank::iso8583::{decode, encode, Message};
use rand::{Rng, SeedableRng};

/// A withdrawal, a sign-on and a reversal advice, as an acquirer sends them.
fn valid_messages() -> Vec<Vec<u8>> {
    let mut withdrawal = Message::new("0200");
    withdrawal
        .set(2, "5544332211009966")
        .set(3, "010000")
        .set(4, "000000010000")
        .set(7, "1201153000")
        .set(11, "000123")
        .set(32, "123456")
        .set(41, "ATM00017")
        .set(49, "978")
        .set(52, "0412AC89ABCDEF67");
    let mut sign_on = Message::new("0800");
    sign_on
        .set(7, "1201153000")
        .set(11, "000001")
        .set(70, "001");
    let mut reversal = Message::new("0420");
    reversal
        .set(2, "5544332211009966")
        .set(4, "000000010000")
        .set(11, "000124")
        .set(90, format!("0200000123{}{:022}", "1201153000", 123456))
        .set(95, format!("{:012}{:030}", 4_000, 0));
    [withdrawal, sign_on, reversal]
        .iter()
        .map(|message| encode(message).expect("the examples are valid"))
        .collect()
}

#[test]
fn the_examples_decode_to_what_was_encoded() {
    for bytes in valid_messages() {
        let message = decode(&bytes).unwrap();
        assert_eq!(encode(&message).unwrap(), bytes);
        iso8583_checks::check(&bytes);
    }
}

#[test]
fn seeded_mutations_never_panic_and_what_decodes_round_trips() {
    let mut random = rand::rngs::StdRng::seed_from_u64(8583);
    let mut decoded = 0;
    for round in 0..20_000 {
        let examples = valid_messages();
        let mut bytes = examples[round % examples.len()].clone();
        for _ in 0..random.gen_range(1..4) {
            match random.gen_range(0..4) {
                0 if !bytes.is_empty() => {
                    let at = random.gen_range(0..bytes.len());
                    bytes[at] = random.gen();
                }
                1 if !bytes.is_empty() => {
                    let at = random.gen_range(0..bytes.len());
                    bytes.truncate(at);
                }
                2 => {
                    let at = random.gen_range(0..=bytes.len());
                    bytes.insert(at, b"0123456789ABCDEF"[random.gen_range(0..16)]);
                }
                _ if !bytes.is_empty() => {
                    let at = random.gen_range(0..bytes.len());
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        if decode(&bytes).is_ok() {
            decoded += 1;
        }
        iso8583_checks::check(&bytes);
    }
    // Some mutations (a digit changed inside a field) still decode: the round trip was checked.
    assert!(decoded > 100, "only {decoded} mutated messages decoded");
}
