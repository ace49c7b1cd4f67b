//! ISO 9564 PIN blocks, as an ATM network carries them in ISO 8583 field 52.
//!
//! An ATM switch never sends a PIN in the clear: the acquirer builds a *PIN block* from the PIN
//! and the card number (PAN), encrypts it with triple DES under a *zone PIN key* it shares with
//! the bank ([`ZonePinKey`]), and sends the 8 encrypted bytes as 16 hexadecimal characters. This
//! module turns such a field back into the PIN ([`pin_from_field_52`]) and builds one for a test
//! acquirer ([`field_52_for`]), so a coming ISO 8583 front door can hand the service a PIN as
//! the bank's own protocol does.
//!
//! # Format 0 (ISO-0)
//!
//! The clear block is two 16-nibble fields XORed together:
//! - the PIN field: `0` (the format), the PIN's length as one hexadecimal digit, the PIN's
//!   digits, then `F` up to 16 nibbles;
//! - the PAN field: `0000`, then the 12 rightmost digits of the PAN excluding its last digit
//!   (the Luhn check digit).
//!
//! PIN 1234 on PAN 5544332211009966 gives `041234FFFFFFFFFF` XOR `0000433221100996` =
//! `041277CDDEEFF669`. Binding the block to the card means a block captured for one card does
//! not yield the PIN (or verify) on another.
//!
//! # Cards shorter than 13 digits
//!
//! ISO 9564 assumes a PAN of at least 13 digits, so that 12 remain once the check digit is
//! dropped; this bank's demo cards have 9. The rule here: drop the last digit, take the 12
//! rightmost of what is left, and when fewer than 12 are left, pad them on the left with `0` to
//! 12. Card 123456789 thus gives the PAN field `0000000012345678`. This is the same as padding
//! the PAN itself on the left with zeros to 13 digits, which is what acquirers that accept short
//! PANs do, so a switch and the bank agree whichever way it is described. A PAN is 2 to 19
//! decimal digits: at most 19 by ISO/IEC 7812, and at least one digit besides the check digit.
//!
//! # The key file
//!
//! [`ZonePinKey::from_file`] refuses a file that group or others may read, with the same check
//! as the PIN key's and the TLS key's (`crate::pin::refuse_shared_secret_file`); a PIN in a block
//! is a PIN by the bank's one rule (`crate::pin::is_well_formed`).
//!
//! # What never leaves this module
//!
//! No error's text ([`PinBlockError`]) holds a PIN, a clear block or a key; [`ZonePinKey`]'s
//! `Debug` shows only its key check value.

use des::cipher::generic_array::GenericArray;
use des::cipher::zeroize::Zeroize;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::{TdesEde2, TdesEde3};

/// The fewest and most digits a PIN in a block may have: the bank's own rule for every PIN
/// (ISO 9564-1 allows 4 to 12; ISO-0 could carry 14).
pub use crate::pin::{PIN_DIGITS_MAX, PIN_DIGITS_MIN};
/// The fewest digits a PAN may have: one besides the check digit.
pub const PAN_DIGITS_MIN: usize = 2;
/// The most digits a PAN may have (ISO/IEC 7812-1).
pub const PAN_DIGITS_MAX: usize = 19;

/// Why a key, a field 52, a PIN or a PAN was refused. The texts name what is wrong and never
/// carry the PIN, the clear block or key material, so any of them may be logged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PinBlockError {
    /// The key text holds something other than hexadecimal digits and whitespace.
    #[error("a zone PIN key holds only hexadecimal digits and whitespace; this one has another character")]
    KeyNotHex,
    /// The key text has a number of digits other than 32 (2-key TDES) or 48 (3-key TDES).
    #[error("a zone PIN key is 32 or 48 hexadecimal digits; this one has {digits}")]
    KeyLength {
        /// How many hexadecimal digits it has.
        digits: usize,
    },
    /// The key file could not be read, or users other than its owner may read or write it.
    #[error("the zone PIN key {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Field 52 is not 16 characters long.
    #[error("field 52 is 16 hexadecimal characters; this one has {given}")]
    FieldLength {
        /// How many characters it has.
        given: usize,
    },
    /// Field 52 holds a character that is not a hexadecimal digit.
    #[error("field 52 holds a character that is not a hexadecimal digit")]
    FieldNotHex,
    /// The PAN is not 2 to 19 decimal digits.
    #[error("a PAN is {PAN_DIGITS_MIN} to {PAN_DIGITS_MAX} decimal digits; this one is not")]
    BadPan,
    /// The PIN to put in a block is not 4 to 12 decimal digits.
    #[error("a PIN is {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} decimal digits; this one is not")]
    BadPin,
    /// The block is not of format 0. The format says nothing about the PIN, so it is named:
    /// a switch sending format 1 or 3 is a set-up mistake worth telling apart from a wrong key.
    #[error("the PIN block is of format {format}, not 0 (ISO-0)")]
    FormatNotZero {
        /// The block's format nibble.
        format: u8,
    },
    /// The block's PIN length is outside 4 to 12 (not named: it is a fact about the PIN).
    #[error("the PIN block's PIN length is outside {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX}")]
    PinLength,
    /// A nibble inside the PIN is not a decimal digit.
    #[error("the PIN block holds a PIN nibble that is not a decimal digit")]
    PinNotDigits,
    /// A nibble after the PIN is not `F`.
    #[error("the PIN block's padding after the PIN is not all F")]
    Padding,
}

/// The triple-DES cipher of a key, by its length.
#[derive(Clone)]
enum Tdes {
    /// 2-key TDES (K1, K2, K1): 16 bytes.
    Two(TdesEde2),
    /// 3-key TDES (K1, K2, K3): 24 bytes.
    Three(TdesEde3),
}

/// A zone PIN key: the triple-DES key the bank shares with an ATM network, under which every
/// PIN block in field 52 is encrypted. Only its cipher is kept (its key schedule is wiped when
/// it is dropped) and only its check value is ever shown.
#[derive(Clone)]
pub struct ZonePinKey {
    cipher: Tdes,
    /// The key check value: the first 3 bytes of the encryption of 8 zero bytes.
    check: [u8; 3],
}

/// Banks tell keys apart by their check value, which reveals nothing useful about the key;
/// the key itself never reaches a log line.
impl std::fmt::Debug for ZonePinKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.cipher {
            Tdes::Two(_) => "2-key",
            Tdes::Three(_) => "3-key",
        };
        write!(
            formatter,
            "ZonePinKey({kind}, check {})",
            self.check_value()
        )
    }
}

impl ZonePinKey {
    /// Parses a key written as 32 (2-key) or 48 (3-key) hexadecimal digits, either case, with
    /// any whitespace ignored, so a key typed in groups of four or split over lines from a key
    /// ceremony's form reads as it is. Anything else is refused.
    pub fn parse(text: &str) -> Result<ZonePinKey, PinBlockError> {
        let mut bytes = [0u8; 24];
        let mut digits = 0usize;
        for character in text.chars().filter(|character| !character.is_whitespace()) {
            let Some(value) = character.to_digit(16) else {
                bytes.zeroize();
                return Err(PinBlockError::KeyNotHex);
            };
            if digits < 2 * bytes.len() {
                // `value` is below 16, so it fits a nibble.
                bytes[digits / 2] |= (value as u8) << if digits.is_multiple_of(2) { 4 } else { 0 };
            }
            digits += 1;
        }
        let cipher = match digits {
            32 => TdesEde2::new_from_slice(&bytes[..16]).map(Tdes::Two),
            48 => TdesEde3::new_from_slice(&bytes).map(Tdes::Three),
            _ => {
                bytes.zeroize();
                return Err(PinBlockError::KeyLength { digits });
            }
        };
        bytes.zeroize();
        // Both lengths are exactly the ciphers' key sizes, so this cannot fail.
        let cipher = cipher.map_err(|_| PinBlockError::KeyLength { digits })?;
        let mut key = ZonePinKey {
            cipher,
            check: [0; 3],
        };
        let zeros = key.encrypt_block([0; 8]);
        key.check.copy_from_slice(&zeros[..3]);
        Ok(key)
    }

    /// Reads a key from `path` (its text as [`ZonePinKey::parse`] takes it). A file that users
    /// other than its owner may read or write is refused, as the PIN verification key's and the
    /// TLS key's files are (like ssh does with private keys): a zone PIN key opens every PIN
    /// the network sends.
    pub fn from_file(path: &std::path::Path) -> Result<ZonePinKey, PinBlockError> {
        use std::io::Read;
        let failed = |reason: String| PinBlockError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        // The same rule as for the PIN key and the TLS key: readable by its owner only.
        crate::pin::refuse_shared_secret_file(path, "the zone PIN key file").map_err(failed)?;
        let mut file = std::fs::File::open(path).map_err(|error| failed(error.to_string()))?;
        let mut text = String::new();
        let read = file.read_to_string(&mut text);
        let key = read
            .map_err(|error| failed(error.to_string()))
            .and_then(|_| ZonePinKey::parse(&text));
        text.zeroize();
        key
    }

    /// The key check value as 6 upper-case hexadecimal digits: what a key ceremony's form and
    /// the network's operators quote to confirm both ends hold the same key.
    pub fn check_value(&self) -> String {
        hex_upper(&self.check)
    }

    /// Encrypts one 8-byte block (TDES, ECB on the single block): what an acquirer does to a
    /// clear PIN block.
    pub fn encrypt_block(&self, block: [u8; 8]) -> [u8; 8] {
        let mut block = GenericArray::from(block);
        match &self.cipher {
            Tdes::Two(cipher) => cipher.encrypt_block(&mut block),
            Tdes::Three(cipher) => cipher.encrypt_block(&mut block),
        }
        block.into()
    }

    /// Decrypts one 8-byte block: what the bank does to field 52 before reading the PIN.
    pub fn decrypt_block(&self, block: [u8; 8]) -> [u8; 8] {
        let mut block = GenericArray::from(block);
        match &self.cipher {
            Tdes::Two(cipher) => cipher.decrypt_block(&mut block),
            Tdes::Three(cipher) => cipher.decrypt_block(&mut block),
        }
        block.into()
    }
}

/// Bytes as upper-case hexadecimal, the way field 52 and check values are written.
fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// Packs 16 nibbles (each below 16) into 8 bytes, high nibble first.
fn pack(nibbles: &[u8; 16]) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    for (index, byte) in bytes.iter_mut().enumerate() {
        *byte = nibbles[2 * index] << 4 | nibbles[2 * index + 1];
    }
    bytes
}

/// Splits 8 bytes into 16 nibbles, high nibble first.
fn unpack(bytes: &[u8; 8]) -> [u8; 16] {
    let mut nibbles = [0u8; 16];
    for (index, byte) in bytes.iter().enumerate() {
        nibbles[2 * index] = byte >> 4;
        nibbles[2 * index + 1] = byte & 0x0F;
    }
    nibbles
}

/// The ISO-0 PAN field of `pan`: `0000` and the 12 rightmost digits before the check digit,
/// left-padded with zeros when there are fewer (see the module docs).
fn pan_field(pan: &str) -> Result<[u8; 8], PinBlockError> {
    let well_formed = (PAN_DIGITS_MIN..=PAN_DIGITS_MAX).contains(&pan.len())
        && pan.bytes().all(|byte| byte.is_ascii_digit());
    if !well_formed {
        return Err(PinBlockError::BadPan);
    }
    let account = &pan.as_bytes()[..pan.len() - 1];
    let used = &account[account.len().saturating_sub(12)..];
    let mut nibbles = [0u8; 16];
    for (slot, digit) in nibbles[16 - used.len()..].iter_mut().zip(used) {
        *slot = digit - b'0';
    }
    Ok(pack(&nibbles))
}

/// The ISO-0 PIN field of `pin`: `0`, its length, its digits, `F` padding.
fn pin_field(pin: &str) -> Result<[u8; 8], PinBlockError> {
    if !crate::pin::is_well_formed(pin) {
        return Err(PinBlockError::BadPin);
    }
    let mut nibbles = [0x0Fu8; 16];
    nibbles[0] = 0;
    // At most 12, so it fits the length nibble.
    nibbles[1] = pin.len() as u8;
    for (slot, digit) in nibbles[2..].iter_mut().zip(pin.bytes()) {
        *slot = digit - b'0';
    }
    let field = pack(&nibbles);
    nibbles.zeroize();
    Ok(field)
}

/// The ISO-0 clear PIN block of `pin` on the card `pan`: the PIN field XOR the PAN field.
/// Refused when the PIN is not 4 to 12 digits or the PAN not 2 to 19 digits.
pub fn clear_block(pin: &str, pan: &str) -> Result<[u8; 8], PinBlockError> {
    let pan = pan_field(pan)?;
    let mut block = pin_field(pin)?;
    for (byte, mask) in block.iter_mut().zip(pan) {
        *byte ^= mask;
    }
    Ok(block)
}

/// The PIN in the ISO-0 clear block `block` for the card `pan`. Refused when the block is not
/// of format 0, its PIN length is outside 4 to 12, a PIN nibble is not a decimal digit, or the
/// padding after the PIN is not all `F`: with the wrong key or the wrong card, the block is
/// noise, and these checks are what tells noise from a PIN (almost always: random noise passes
/// them about once in 16 million blocks, so a PIN read here must still be verified).
pub fn pin_from_clear_block(block: [u8; 8], pan: &str) -> Result<String, PinBlockError> {
    let pan = pan_field(pan)?;
    let mut field = block;
    for (byte, mask) in field.iter_mut().zip(pan) {
        *byte ^= mask;
    }
    let mut nibbles = unpack(&field);
    field.zeroize();
    let pin = pin_of_field(&nibbles);
    nibbles.zeroize();
    pin
}

/// The PIN in the 16 nibbles of a PIN field, with every check of [`pin_from_clear_block`].
fn pin_of_field(nibbles: &[u8; 16]) -> Result<String, PinBlockError> {
    if nibbles[0] != 0 {
        return Err(PinBlockError::FormatNotZero { format: nibbles[0] });
    }
    let length = usize::from(nibbles[1]);
    if !(PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&length) {
        return Err(PinBlockError::PinLength);
    }
    let (digits, padding) = nibbles[2..].split_at(length);
    if digits.iter().any(|nibble| *nibble > 9) {
        return Err(PinBlockError::PinNotDigits);
    }
    if padding.iter().any(|nibble| *nibble != 0x0F) {
        return Err(PinBlockError::Padding);
    }
    Ok(digits
        .iter()
        .map(|nibble| char::from(b'0' + nibble))
        .collect())
}

/// The PIN carried by field 52 (`hex16`: 16 hexadecimal characters, either case) of a request
/// for the card `pan`: decrypted under `key`, then read as an ISO-0 block. This is the one call
/// an ISO 8583 front door needs before handing the PIN to the service, which verifies it.
pub fn pin_from_field_52(
    key: &ZonePinKey,
    hex16: &str,
    pan: &str,
) -> Result<String, PinBlockError> {
    let mut block = key.decrypt_block(block_of_field_52(hex16)?);
    let pin = pin_from_clear_block(block, pan);
    block.zeroize();
    pin
}

/// The PIN carried in clear by field 52 (the ISO-0 block itself, not encrypted): what a door in
/// its test mode reads, with every check of [`pin_from_clear_block`].
pub fn pin_from_clear_field_52(hex16: &str, pan: &str) -> Result<String, PinBlockError> {
    let mut block = block_of_field_52(hex16)?;
    let pin = pin_from_clear_block(block, pan);
    block.zeroize();
    pin
}

/// The 8 bytes written as 16 hexadecimal characters in field 52.
fn block_of_field_52(hex16: &str) -> Result<[u8; 8], PinBlockError> {
    let given = hex16.chars().count();
    if given != 16 {
        return Err(PinBlockError::FieldLength { given });
    }
    let mut block = [0u8; 8];
    for (index, byte) in block.iter_mut().enumerate() {
        let pair = hex16.get(2 * index..2 * index + 2);
        let pair = pair.filter(|pair| pair.bytes().all(|byte| byte.is_ascii_hexdigit()));
        *byte = pair
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .ok_or(PinBlockError::FieldNotHex)?;
    }
    Ok(block)
}

/// Field 52 as an acquirer sends it for `pin` on the card `pan`: the ISO-0 block encrypted
/// under `key`, as 16 upper-case hexadecimal characters. For test acquirers and the tests of
/// the front door; refused when the PIN is not 4 to 12 digits or the PAN not 2 to 19, since
/// such a PIN cannot be put in a block the bank would accept.
pub fn field_52_for(key: &ZonePinKey, pin: &str, pan: &str) -> Result<String, PinBlockError> {
    let mut block = clear_block(pin, pan)?;
    let encrypted = key.encrypt_block(block);
    block.zeroize();
    Ok(hex_upper(&encrypted))
}

/// Field 52 in clear, as a door in its test mode reads it: the ISO-0 block of `pin` on `pan`,
/// not encrypted, as 16 upper-case hexadecimal characters. Only for tests.
pub fn clear_field_52_for(pin: &str, pan: &str) -> Result<String, PinBlockError> {
    let mut block = clear_block(pin, pan)?;
    let text = hex_upper(&block);
    block.zeroize();
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payment industry's well-known 2-key test key; its published check value is 08D7B4.
    const TWO_KEY: &str = "0123456789ABCDEF FEDCBA9876543210";
    /// The keys of the TDEA example in NIST SP 800-67 (Rev. 1, Appendix B).
    const THREE_KEY: &str = "0123456789ABCDEF\n23456789ABCDEF01\n456789ABCDEF0123\n";

    fn hex(text: &str) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * index..2 * index + 2], 16).unwrap();
        }
        bytes
    }

    #[test]
    fn the_clear_block_of_the_published_example() {
        let block = clear_block("1234", "5544332211009966").unwrap();
        assert_eq!(hex_upper(&block), "041277CDDEEFF669");
        let clear = clear_field_52_for("1234", "5544332211009966").unwrap();
        assert_eq!(clear, "041277CDDEEFF669");
        assert_eq!(
            pin_from_clear_field_52(&clear.to_lowercase(), "5544332211009966").unwrap(),
            "1234"
        );
        assert!(pin_from_clear_field_52("041277CDDEEFF66", "5544332211009966").is_err());
        assert_eq!(
            pin_from_clear_block(block, "5544332211009966").unwrap(),
            "1234"
        );
        let long = clear_block("123456789012", "5544332211009966").unwrap();
        assert_eq!(
            pin_from_clear_block(long, "5544332211009966").unwrap(),
            "123456789012"
        );
    }

    /// A PAN of fewer than 13 digits: its digits before the check digit, left-padded with zeros
    /// to 12; the same as padding the PAN itself to 13 digits.
    #[test]
    fn a_short_pan_is_padded_on_the_left_with_zeros() {
        assert_eq!(
            hex_upper(&pan_field("123456789").unwrap()),
            "0000000012345678"
        );
        assert_eq!(pan_field("123456789"), pan_field("0000123456789"));
        assert_eq!(
            hex_upper(&pan_field("1234567890123").unwrap()),
            "0000123456789012"
        );
        assert_eq!(hex_upper(&pan_field("12").unwrap()), "0000000000000001");
        // 19 digits: only the 12 before the check digit count.
        assert_eq!(
            hex_upper(&pan_field("9999999123456789012").unwrap()),
            "0000912345678901"
        );
        let block = clear_block("1234", "123456789").unwrap();
        assert_eq!(hex_upper(&block), "041234FFEDCBA987");
        assert_eq!(pin_from_clear_block(block, "123456789").unwrap(), "1234");
        for pan in ["", "1", "12345678901234567890", "12345678a", "１２３"] {
            assert_eq!(pan_field(pan), Err(PinBlockError::BadPan), "{pan:?}");
        }
    }

    /// The raw cipher against values computed elsewhere: the SP 800-67 example for 3-key TDES,
    /// the test key's published check value for 2-key, and the classic single-DES example
    /// ("Now is t" under 0123456789ABCDEF, FIPS 81) through a 2-key key whose halves are equal,
    /// which TDES reduces to single DES.
    #[test]
    fn the_cipher_matches_published_vectors() {
        let three = ZonePinKey::parse(THREE_KEY).unwrap();
        // "The qufck brown fox jump", first block, as SP 800-67 spells it.
        let plain = hex("5468652071756663");
        assert_eq!(hex_upper(&three.encrypt_block(plain)), "A826FD8CE53B855F");
        assert_eq!(three.decrypt_block(hex("A826FD8CE53B855F")), plain);
        let two = ZonePinKey::parse(TWO_KEY).unwrap();
        assert_eq!(two.check_value(), "08D7B4");
        assert_eq!(hex_upper(&two.encrypt_block([0; 8])), "08D7B4FB629D0885");
        let single = ZonePinKey::parse("0123456789abcdef0123456789abcdef").unwrap();
        let now_is_t = hex("4E6F772069732074");
        assert_eq!(
            hex_upper(&single.encrypt_block(now_is_t)),
            "3FA40E8A984D4815"
        );
        // 2-key TDES is 3-key TDES with K3 = K1.
        let as_three = ZonePinKey::parse(&format!("{TWO_KEY}0123456789ABCDEF")).unwrap();
        assert_eq!(as_three.encrypt_block(plain), two.encrypt_block(plain));
    }

    /// The expected fields were computed with OpenSSL 3.0 (`openssl enc -des-ede` and
    /// `-des-ede3`, `-nopad`, on the clear block 041277CDDEEFF669), an implementation
    /// independent of the `des` crate.
    #[test]
    fn field_52_round_trips_under_a_2_key_and_a_3_key_key() {
        let pan = "5544332211009966";
        for (text, expected) in [
            (TWO_KEY, "24B5254F5321BBC2"),
            (THREE_KEY, "6EB4F49DB47D5878"),
        ] {
            let key = ZonePinKey::parse(text).unwrap();
            let field = field_52_for(&key, "1234", pan).unwrap();
            assert_eq!(field, expected);
            assert_eq!(pin_from_field_52(&key, &field, pan).unwrap(), "1234");
            let lower = field.to_ascii_lowercase();
            assert_eq!(pin_from_field_52(&key, &lower, pan).unwrap(), "1234");
            for pin in ["0000", "98765", "123456789012"] {
                let field = field_52_for(&key, pin, "123456789").unwrap();
                assert_eq!(pin_from_field_52(&key, &field, "123456789").unwrap(), pin);
            }
        }
        let two = ZonePinKey::parse(TWO_KEY).unwrap();
        assert_eq!(
            field_52_for(&two, "1234", "123456789").unwrap(),
            "31864ADE751DC2CE"
        );
    }

    /// A clear block for `pan` whose PIN field is the 16 nibbles of `field`.
    fn block_of(field: &str, pan: &str) -> [u8; 8] {
        let mut block = hex(field);
        for (byte, mask) in block.iter_mut().zip(pan_field(pan).unwrap()) {
            *byte ^= mask;
        }
        block
    }

    #[test]
    fn malformed_blocks_are_refused() {
        let pan = "5544332211009966";
        let cases = [
            (
                "141234FFFFFFFFFF",
                PinBlockError::FormatNotZero { format: 1 },
            ),
            (
                "341234FFFFFFFFFF",
                PinBlockError::FormatNotZero { format: 3 },
            ),
            ("03123FFFFFFFFFFF", PinBlockError::PinLength),
            ("0D1234567890123F", PinBlockError::PinLength),
            ("001234FFFFFFFFFF", PinBlockError::PinLength),
            ("0412A4FFFFFFFFFF", PinBlockError::PinNotDigits),
            ("041234FFFFFFFFFE", PinBlockError::Padding),
            ("0412340FFFFFFFFF", PinBlockError::Padding),
        ];
        for (field, refusal) in cases {
            let result = pin_from_clear_block(block_of(field, pan), pan);
            assert_eq!(result, Err(refusal.clone()), "{field}");
            let text = refusal.to_string();
            assert!(!text.contains("1234") && !text.contains(field), "{text}");
        }
        // Read with another card, the published example's block is noise and is refused.
        let block = hex("041277CDDEEFF669");
        assert!(pin_from_clear_block(block, "4111111111111111").is_err());
    }

    #[test]
    fn malformed_fields_pins_and_pans_are_refused() {
        let key = ZonePinKey::parse(TWO_KEY).unwrap();
        let pan = "5544332211009966";
        let wrong_length = pin_from_field_52(&key, "24B5254F5321BB", pan);
        assert_eq!(wrong_length, Err(PinBlockError::FieldLength { given: 14 }));
        let long = pin_from_field_52(&key, "24B5254F5321BBC200", pan);
        assert_eq!(long, Err(PinBlockError::FieldLength { given: 18 }));
        for field in ["24B5254F5321BBCG", "+4B5254F5321BBC2", "24B5254F5321BBCé"] {
            let refused = pin_from_field_52(&key, field, pan);
            assert_eq!(refused, Err(PinBlockError::FieldNotHex), "{field}");
        }
        assert_eq!(
            pin_from_field_52(&key, "24B5254F5321BBC2", "55443322110099x6"),
            Err(PinBlockError::BadPan)
        );
        for pin in ["123", "1234567890123", "12a4", ""] {
            assert_eq!(
                field_52_for(&key, pin, pan),
                Err(PinBlockError::BadPin),
                "{pin}"
            );
        }
        assert_eq!(field_52_for(&key, "1234", "1"), Err(PinBlockError::BadPan));
        // Under another key the field decrypts to noise, which is refused.
        let other = ZonePinKey::parse(THREE_KEY).unwrap();
        assert!(pin_from_field_52(&other, "24B5254F5321BBC2", pan).is_err());
    }

    #[test]
    fn keys_are_32_or_48_hex_digits_whitespace_ignored() {
        let spaced = "0123 4567 89AB CDEF\n\tFEDC BA98 7654 3210\n";
        assert_eq!(ZonePinKey::parse(spaced).unwrap().check_value(), "08D7B4");
        let lower = ZonePinKey::parse(&TWO_KEY.to_ascii_lowercase()).unwrap();
        assert_eq!(lower.check_value(), "08D7B4");
        let three = ZonePinKey::parse(THREE_KEY).unwrap();
        assert_eq!(three.check_value(), "4EBA73");
        let refusals = [
            (
                "0123456789ABCDEFFEDCBA987654321",
                PinBlockError::KeyLength { digits: 31 },
            ),
            ("0123456789ABCDEFFEDCBA98765432G0", PinBlockError::KeyNotHex),
            (
                "0123456789ABCDEFFEDCBA987654321001234567",
                PinBlockError::KeyLength { digits: 40 },
            ),
            ("", PinBlockError::KeyLength { digits: 0 }),
            (
                "0x0123456789ABCDEFFEDCBA9876543210",
                PinBlockError::KeyNotHex,
            ),
        ];
        for (text, refusal) in refusals {
            let result = ZonePinKey::parse(text).map(|key| key.check_value());
            assert_eq!(result, Err(refusal.clone()), "{text:?}");
            assert!(!refusal.to_string().contains("0123"));
        }
        let too_long = format!("{}{}", THREE_KEY.repeat(2), "00");
        assert_eq!(
            ZonePinKey::parse(&too_long).map(|key| key.check_value()),
            Err(PinBlockError::KeyLength { digits: 98 })
        );
    }

    #[test]
    fn debug_shows_only_the_check_value() {
        for (text, shown) in [
            (TWO_KEY, "ZonePinKey(2-key, check 08D7B4)"),
            (THREE_KEY, "ZonePinKey(3-key, check 4EBA73)"),
        ] {
            let debug = format!("{:?}", ZonePinKey::parse(text).unwrap());
            assert_eq!(debug, shown);
            let digits: String = text.split_whitespace().collect();
            for part in digits.as_bytes().chunks(4) {
                let part = std::str::from_utf8(part).unwrap();
                assert!(
                    !debug.to_ascii_uppercase().contains(part),
                    "{debug} shows {part}"
                );
            }
        }
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("zpk");
        let missing = ZonePinKey::from_file(&path).unwrap_err();
        assert!(
            matches!(missing, PinBlockError::KeyFile { .. }),
            "{missing}"
        );
        std::fs::write(&path, format!("{THREE_KEY}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for mode in [0o640, 0o604, 0o620, 0o644] {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
                let refused = ZonePinKey::from_file(&path).unwrap_err().to_string();
                assert!(refused.contains("chmod 600"), "{mode:o}: {refused}");
                assert!(!refused.contains("0123"), "{refused}");
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let key = ZonePinKey::from_file(&path).unwrap();
        assert_eq!(key.check_value(), "4EBA73");
        std::fs::write(&path, "0123").unwrap();
        let short = ZonePinKey::from_file(&path).unwrap_err();
        assert_eq!(short, PinBlockError::KeyLength { digits: 4 });
    }
}
