//! ISO 8583:1987 messages in ASCII: a message type, a hex-ASCII bitmap (the secondary one when
//! any field above 64 is present) and the fields it marks, each laid out by its field number
//! ([`FIELDS`]). The layout is that of the `default_ascii` specification of the Python library
//! pyiso8583 (4.x), which ATM switches and their test tools commonly use: every message this module
//! encodes, that library decodes to the same fields, and the other way round.
//!
//! Only bytes are handled here: which messages a bank answers, and how, belongs to the door that
//! uses this codec. Decoding checks everything a hostile peer could get wrong (a message type that
//! is not four digits, a bitmap that is not hexadecimal, a length that is not decimal or is over
//! the field's maximum, a field cut short, bytes that are not ASCII, bytes after the last field)
//! and names the field and the position, so a refusal can say what was wrong.

use crate::model::Code;
use std::collections::BTreeMap;
use std::fmt;

/// How one field's length is given on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// Always exactly this many bytes.
    Fixed(usize),
    /// A 2-digit decimal length, then at most this many bytes (LLVAR).
    Two(usize),
    /// A 3-digit decimal length, then at most this many bytes (LLLVAR).
    Three(usize),
}

impl Length {
    /// The longest the field's data may be.
    pub fn max(self) -> usize {
        match self {
            Length::Fixed(bytes) | Length::Two(bytes) | Length::Three(bytes) => bytes,
        }
    }

    /// Digits of the length prefix (0 for a fixed field).
    fn prefix_digits(self) -> usize {
        match self {
            Length::Fixed(_) => 0,
            Length::Two(_) => 2,
            Length::Three(_) => 3,
        }
    }
}

use Length::{Fixed as F, Three as LLL, Two as LL};

/// The layout of fields 1 to 128 (index 0 is field 1, the secondary bitmap, which is written as
/// part of the bitmap, never as data).
#[rustfmt::skip]
pub const FIELDS: [Length; 128] = [
    F(16), LL(19), F(6), F(12), F(12), F(12), F(10), F(8), // 1-8
    F(8), F(8), F(6), F(6), F(4), F(4), F(4), F(4), // 9-16
    F(4), F(4), F(3), F(3), F(3), F(3), F(3), F(3), // 17-24
    F(2), F(2), F(1), F(9), F(9), F(9), F(9), LL(11), // 25-32
    LL(11), LL(28), LL(37), LLL(104), F(12), F(6), F(2), F(3), // 33-40
    F(8), F(15), F(40), LL(25), LL(76), LLL(999), LLL(999), LLL(999), // 41-48
    F(3), F(3), F(3), F(16), F(16), LLL(240), LLL(510), LLL(999), // 49-56
    LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), F(16), // 57-64
    F(16), F(1), F(2), F(3), F(3), F(3), F(4), F(4), // 65-72
    F(6), F(10), F(10), F(10), F(10), F(10), F(10), F(10), // 73-80
    F(10), F(12), F(12), F(12), F(12), F(16), F(16), F(16), // 81-88
    F(16), F(42), F(1), F(2), F(5), F(7), F(42), F(16), // 89-96
    F(17), F(25), LL(11), LL(11), LL(17), LL(28), LL(28), LLL(100), // 97-104
    LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), // 105-112
    LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), // 113-120
    LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), LLL(999), F(16), // 121-128
];

/// Bytes of the message type indicator.
pub const MTI_BYTES: usize = 4;

/// Hex digits of one bitmap (64 fields).
pub const BITMAP_HEX_BYTES: usize = 16;

/// The highest field number.
pub const FIELD_MAX: u8 = 128;

/// The field that holds the secondary bitmap: present exactly when a field above 64 is.
pub const SECONDARY_BITMAP: u8 = 1;

/// The layout of field `number` (2 to 128), if it is one.
pub fn layout(number: u8) -> Option<Length> {
    (SECONDARY_BITMAP < number && number <= FIELD_MAX).then(|| FIELDS[usize::from(number) - 1])
}

/// One message: its type and its fields by number (2 to 128; the bitmaps are made from the
/// numbers present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// The message type indicator, four decimal digits (`0200`, `0810`, …).
    pub mti: String,
    /// The fields' data (ASCII), by field number.
    pub fields: BTreeMap<u8, String>,
}

impl Message {
    /// A message of type `mti` with no fields yet.
    pub fn new(mti: &str) -> Message {
        Message {
            mti: mti.to_string(),
            fields: BTreeMap::new(),
        }
    }

    /// Field `number`, if present.
    pub fn get(&self, number: u8) -> Option<&str> {
        self.fields.get(&number).map(String::as_str)
    }

    /// Sets field `number` to `data`.
    pub fn set(&mut self, number: u8, data: impl Into<String>) -> &mut Message {
        self.fields.insert(number, data.into());
        self
    }
}

/// What is wrong with a message, where: the field (0 for the message type, 1 for the bitmaps)
/// and the byte offset at which it starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("field {field} at byte {position}: {reason}")]
pub struct Iso8583Error {
    /// The field (0: the message type; 1: a bitmap).
    pub field: u8,
    /// Where it starts in the message (0 when encoding).
    pub position: usize,
    /// What is wrong.
    pub reason: Reason,
}

/// What can be wrong with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The message ends inside this part.
    CutShort,
    /// The message type is not four decimal digits.
    BadMessageType,
    /// A bitmap is not 16 hexadecimal digits.
    BadBitmap,
    /// A length prefix is not decimal digits.
    BadLength,
    /// The data is longer than the field allows (or not the fixed length).
    WrongLength {
        /// Bytes given.
        given: usize,
        /// Bytes allowed (exactly, for a fixed field; at most, otherwise).
        allowed: usize,
    },
    /// The data holds a byte that is not printable ASCII.
    NotAscii,
    /// Bytes follow the last field.
    TrailingBytes,
    /// The field number is not 2 to 128.
    NoSuchField,
}

impl fmt::Display for Reason {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::CutShort => formatter.write_str("the message ends inside it"),
            Reason::BadMessageType => formatter.write_str("not four decimal digits"),
            Reason::BadBitmap => formatter.write_str("not 16 hexadecimal digits"),
            Reason::BadLength => formatter.write_str("its length is not decimal digits"),
            Reason::WrongLength { given, allowed } => {
                write!(formatter, "{given} bytes where {allowed} are allowed")
            }
            Reason::NotAscii => formatter.write_str("a byte that is not printable ASCII"),
            Reason::TrailingBytes => formatter.write_str("bytes after the last field"),
            Reason::NoSuchField => formatter.write_str("no such field"),
        }
    }
}

fn error(field: u8, position: usize, reason: Reason) -> Iso8583Error {
    Iso8583Error {
        field,
        position,
        reason,
    }
}

/// True for the bytes a field may hold: printable ASCII (space to tilde).
fn is_printable(byte: u8) -> bool {
    (b' '..=b'~').contains(&byte)
}

/// Reads one message from `bytes`, which must hold exactly one.
pub fn decode(bytes: &[u8]) -> Result<Message, Iso8583Error> {
    let mut reader = Reader { bytes, position: 0 };
    let mti = reader.take(0, MTI_BYTES)?;
    if !mti.iter().all(u8::is_ascii_digit) {
        return Err(error(0, 0, Reason::BadMessageType));
    }
    let mut bitmap = u128::from(reader.bitmap()?) << 64;
    let secondary = bitmap & (1 << 127) != 0;
    if secondary {
        bitmap |= u128::from(reader.bitmap()?);
    }
    let mut message = Message::new(std::str::from_utf8(mti).expect("digits are ASCII"));
    for number in 2..=FIELD_MAX {
        if bitmap & (1 << (128 - u32::from(number))) != 0 {
            let data = reader.field(number)?;
            message.fields.insert(number, data);
        }
    }
    if reader.position != bytes.len() {
        return Err(error(0, reader.position, Reason::TrailingBytes));
    }
    Ok(message)
}

/// A cursor over a message being decoded.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    /// The next `count` bytes, as part of `field`.
    fn take(&mut self, field: u8, count: usize) -> Result<&'a [u8], Iso8583Error> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| error(field, self.position, Reason::CutShort))?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    /// The next 16 hex digits, as a bitmap.
    fn bitmap(&mut self) -> Result<u64, Iso8583Error> {
        let start = self.position;
        let hex = self.take(SECONDARY_BITMAP, BITMAP_HEX_BYTES)?;
        let text = std::str::from_utf8(hex).map_err(|_| error(1, start, Reason::BadBitmap))?;
        if !text.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(error(SECONDARY_BITMAP, start, Reason::BadBitmap));
        }
        u64::from_str_radix(text, 16).map_err(|_| error(1, start, Reason::BadBitmap))
    }

    /// Field `number`'s data: its length prefix, if any, then its bytes.
    fn field(&mut self, number: u8) -> Result<String, Iso8583Error> {
        let start = self.position;
        let format = layout(number).expect("decode asks only for fields 2 to 128");
        let length = match format {
            Length::Fixed(bytes) => bytes,
            Length::Two(_) | Length::Three(_) => {
                let digits = self.take(number, format.prefix_digits())?;
                if !digits.iter().all(u8::is_ascii_digit) {
                    return Err(error(number, start, Reason::BadLength));
                }
                let length = digits.iter().fold(0usize, |total, digit| {
                    total * 10 + usize::from(digit - b'0')
                });
                if length > format.max() {
                    let allowed = format.max();
                    let reason = Reason::WrongLength {
                        given: length,
                        allowed,
                    };
                    return Err(error(number, start, reason));
                }
                length
            }
        };
        let data = self.take(number, length)?;
        if !data.iter().copied().all(is_printable) {
            return Err(error(number, start, Reason::NotAscii));
        }
        Ok(String::from_utf8(data.to_vec()).expect("printable ASCII is UTF-8"))
    }
}

/// The bytes of `message`: its type, its bitmaps (upper-case hex, the secondary one exactly when a
/// field above 64 is present), then its fields in order, each checked against its layout.
pub fn encode(message: &Message) -> Result<Vec<u8>, Iso8583Error> {
    if message.mti.len() != MTI_BYTES || !message.mti.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(error(0, 0, Reason::BadMessageType));
    }
    let mut bitmap = 0u128;
    for &number in message.fields.keys() {
        if layout(number).is_none() {
            return Err(error(number, 0, Reason::NoSuchField));
        }
        bitmap |= 1 << (128 - u32::from(number));
    }
    let secondary = bitmap & u128::from(u64::MAX) != 0;
    if secondary {
        bitmap |= 1 << 127;
    }
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(message.mti.as_bytes());
    bytes.extend_from_slice(format!("{:016X}", (bitmap >> 64) as u64).as_bytes());
    if secondary {
        bytes.extend_from_slice(format!("{:016X}", bitmap as u64).as_bytes());
    }
    for (&number, data) in &message.fields {
        encode_field(number, data, &mut bytes)?;
    }
    Ok(bytes)
}

/// Appends field `number` holding `data` to `bytes`.
fn encode_field(number: u8, data: &str, bytes: &mut Vec<u8>) -> Result<(), Iso8583Error> {
    let format = layout(number).ok_or_else(|| error(number, 0, Reason::NoSuchField))?;
    if !data.bytes().all(is_printable) {
        return Err(error(number, 0, Reason::NotAscii));
    }
    let fits = match format {
        Length::Fixed(exactly) => data.len() == exactly,
        Length::Two(most) | Length::Three(most) => data.len() <= most,
    };
    if !fits {
        let reason = Reason::WrongLength {
            given: data.len(),
            allowed: format.max(),
        };
        return Err(error(number, 0, reason));
    }
    match format {
        Length::Fixed(_) => {}
        Length::Two(_) => bytes.extend_from_slice(format!("{:02}", data.len()).as_bytes()),
        Length::Three(_) => bytes.extend_from_slice(format!("{:03}", data.len()).as_bytes()),
    }
    bytes.extend_from_slice(data.as_bytes());
    Ok(())
}

/// Field 54's account type for the default account ("00": unspecified).
const ACCOUNT_TYPE_DEFAULT: &str = "00";
/// Field 54's amount type of the ledger balance.
const AMOUNT_TYPE_LEDGER: &str = "01";
/// Field 54's amount type of the available balance.
const AMOUNT_TYPE_AVAILABLE: &str = "02";

/// Field 54 (additional amounts) carrying `ledger` and `available` in `currency` (three digits,
/// ISO 4217): two 20-character entries, each the account type, the amount type (01 ledger, 02
/// available), the currency, `C` (credit: the bank's balances are never negative) and the amount
/// in minor units on 12 digits. None when an amount does not fit in 12 digits or the currency is
/// not three digits.
pub fn additional_amounts(currency: &str, ledger: u64, available: u64) -> Option<String> {
    let well_formed = currency.len() == 3 && currency.bytes().all(|byte| byte.is_ascii_digit());
    let fits = |amount: u64| amount <= 999_999_999_999;
    if !well_formed || !fits(ledger) || !fits(available) {
        return None;
    }
    let entry =
        |kind: &str, amount: u64| format!("{ACCOUNT_TYPE_DEFAULT}{kind}{currency}C{amount:012}");
    Some(entry(AMOUNT_TYPE_LEDGER, ledger) + &entry(AMOUNT_TYPE_AVAILABLE, available))
}

/// Field 90 (original data elements) of a reversal: which message it reverses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalData {
    /// The original's message type.
    pub mti: String,
    /// The original's system trace audit number (its field 11).
    pub stan: String,
    /// The original's transmission date and time, MMDDhhmmss (its field 7).
    pub transmitted: String,
    /// The original's acquiring institution (its field 32), zero-padded to 11 digits.
    pub acquirer: String,
    /// The original's forwarding institution (its field 33), zero-padded to 11 digits.
    pub forwarding: String,
}

impl OriginalData {
    /// Reads field 90: 42 digits, the parts in the order of [`OriginalData`]'s fields.
    pub fn parse(field: &str) -> Option<OriginalData> {
        if field.len() != 42 || !field.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let part = |from: usize, to: usize| field[from..to].to_string();
        Some(OriginalData {
            mti: part(0, 4),
            stan: part(4, 10),
            transmitted: part(10, 20),
            acquirer: part(20, 31),
            forwarding: part(31, 42),
        })
    }
}

/// The amount a partial reversal's field 95 (replacement amounts) says was actually dispensed:
/// its first 12 digits, in minor units. None when they are not 12 digits.
pub fn dispensed_amount(field: &str) -> Option<u64> {
    let digits = field.get(..12)?;
    if !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The response code (field 39) that answers a request ending in `code`: the issuer's answer
/// in the terms ATM networks use. `busy` (retry) is 91, issuer unavailable; a failed journal is
/// 96, system malfunction.
pub fn response_code(code: Code) -> &'static str {
    match code {
        Code::Approved => "00",
        Code::NotAuthorised | Code::NotLoggedIn => "05",
        Code::UnknownHold => "25",
        Code::HoldResolved | Code::NotReversible | Code::TooManyHolds | Code::BalanceNotZero => {
            "12"
        }
        Code::InvalidAmount => "13",
        Code::UnknownCard => "14",
        Code::InvalidRequest | Code::CardExists => "30",
        Code::InsufficientFunds => "51",
        Code::IncorrectPin => "55",
        Code::AccountClosed => "57",
        Code::WithdrawalLimitExceeded => "61",
        Code::AccountFrozen => "62",
        Code::WithdrawalCountExceeded => "65",
        Code::CardLocked => "75",
        Code::Busy => "91",
        Code::StaleRequest | Code::RequestIdConflict => "94",
        Code::Unavailable => "96",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn balances_reversals_and_replacement_amounts_have_their_field_layouts() {
        let amounts = additional_amounts("978", 10_000, 7_500).unwrap();
        assert_eq!(amounts, "0001978C0000000100000002978C000000007500");
        assert_eq!(amounts.len(), 40);
        assert_eq!(additional_amounts("EUR", 1, 1), None);
        assert_eq!(additional_amounts("978", 1_000_000_000_000, 1), None);
        let mut message = Message::new("0210");
        message.set(54, amounts.clone());
        assert_eq!(
            decode(&encode(&message).unwrap()).unwrap().get(54),
            Some(amounts.as_str())
        );

        let original = OriginalData::parse("020000012312011530000000012345600000000000").unwrap();
        assert_eq!(original.mti, "0200");
        assert_eq!(original.stan, "000123");
        assert_eq!(original.transmitted, "1201153000");
        assert_eq!(original.acquirer, "00000123456");
        assert_eq!(original.forwarding, "00000000000");
        assert_eq!(OriginalData::parse("0200"), None);
        assert_eq!(OriginalData::parse(&"x".repeat(42)), None);

        let replacement = format!("{:012}{:030}", 4_000, 0);
        assert_eq!(dispensed_amount(&replacement), Some(4_000));
        assert_eq!(dispensed_amount("12ab"), None);
        assert_eq!(dispensed_amount("00000000001x"), None);
    }

    #[test]
    fn every_result_code_has_a_response_code_and_only_approval_is_00() {
        let mut used = std::collections::BTreeSet::new();
        for code in Code::ALL {
            let answer = response_code(*code);
            assert!(answer.len() == 2 && answer.bytes().all(|byte| byte.is_ascii_digit()));
            assert_eq!(answer == "00", *code == Code::Approved, "{code}");
            used.insert(answer);
        }
        // The codes an ATM network expects of an issuer, all in use.
        for expected in [
            "00", "05", "12", "13", "14", "30", "51", "55", "57", "61", "65", "75", "91", "94",
            "96",
        ] {
            assert!(used.contains(expected), "{expected}");
        }
    }

    fn withdrawal() -> Message {
        let mut message = Message::new("0200");
        message
            .set(2, "5544332211009966")
            .set(3, "010000")
            .set(4, "000000010000")
            .set(11, "000001")
            .set(70, "301");
        message
    }

    #[test]
    fn a_message_is_its_type_its_bitmaps_and_its_fields_in_order() {
        let bytes = encode(&withdrawal()).unwrap();
        // Fields 2, 3, 4 and 11, and field 1 for the secondary bitmap that field 70 needs.
        let expected =
            "0200F0200000000000000400000000000000165544332211009966010000000000010000000001301";
        assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
        assert_eq!(decode(&bytes).unwrap(), withdrawal());
        // Without a field above 64 there is no secondary bitmap.
        let mut short = withdrawal();
        short.fields.remove(&70);
        let bytes = encode(&short).unwrap();
        assert_eq!(&bytes[4..20], b"7020000000000000");
        assert_eq!(decode(&bytes).unwrap(), short);
    }

    #[test]
    fn a_lower_case_bitmap_is_read_like_an_upper_case_one() {
        let bytes = encode(&withdrawal()).unwrap();
        let lower = String::from_utf8(bytes).unwrap().replacen("F02", "f02", 1);
        assert_eq!(decode(lower.as_bytes()).unwrap(), withdrawal());
    }

    #[test]
    fn every_malformed_message_names_its_field_and_what_is_wrong() {
        let good = encode(&withdrawal()).unwrap();
        let reason = |bytes: &[u8]| decode(bytes).unwrap_err();
        assert_eq!(reason(b"02").reason, Reason::CutShort);
        assert_eq!(
            reason(b"02a00000000000000000").reason,
            Reason::BadMessageType
        );
        assert_eq!(reason(b"0200000000000000000G").reason, Reason::BadBitmap);
        // A secondary bitmap that marks nothing is read (some acquirers always send one).
        assert_eq!(
            decode(b"020080000000000000000000000000000000").unwrap(),
            Message::new("0200")
        );
        let cut = reason(&good[..good.len() - 1]);
        assert_eq!((cut.field, cut.reason), (70, Reason::CutShort));
        let mut trailing = good.clone();
        trailing.push(b'X');
        assert_eq!(reason(&trailing).reason, Reason::TrailingBytes);
        // Field 2 declares 20 digits, over its 19.
        let long = reason(b"02004000000000000000205544332211009966000");
        assert_eq!(
            (long.field, long.reason),
            (
                2,
                Reason::WrongLength {
                    given: 20,
                    allowed: 19
                }
            )
        );
        assert_eq!(
            reason(b"020040000000000000001x1234567890").reason,
            Reason::BadLength
        );
        assert_eq!(
            reason(b"0200200000000000000001000\xff").reason,
            Reason::NotAscii
        );
    }

    #[test]
    fn encoding_refuses_what_the_layout_does_not_allow() {
        let mut message = withdrawal();
        message.set(3, "01");
        assert_eq!(
            encode(&message).unwrap_err().reason,
            Reason::WrongLength {
                given: 2,
                allowed: 6
            }
        );
        let mut message = withdrawal();
        message.set(1, "0000000000000000");
        assert_eq!(encode(&message).unwrap_err().reason, Reason::NoSuchField);
        let mut message = withdrawal();
        message.set(43, "caf\u{e9}".to_string() + &" ".repeat(36));
        assert_eq!(encode(&message).unwrap_err().reason, Reason::NotAscii);
        assert_eq!(
            encode(&Message::new("200")).unwrap_err().reason,
            Reason::BadMessageType
        );
    }

    fn any_field() -> impl Strategy<Value = (u8, String)> {
        (2u8..=FIELD_MAX).prop_flat_map(|number| {
            let format = layout(number).unwrap();
            let length = match format {
                Length::Fixed(exactly) => exactly..=exactly,
                Length::Two(most) | Length::Three(most) => 0..=most.min(40),
            };
            (Just(number), proptest::collection::vec(b' '..=b'~', length))
                .prop_map(|(number, data)| (number, String::from_utf8(data).unwrap()))
        })
    }

    proptest! {
        /// Whatever fields a message has, it decodes to itself, and any prefix of it is refused.
        #[test]
        fn messages_round_trip_and_their_prefixes_are_refused(
            mti in "[0-9]{4}",
            fields in proptest::collection::vec(any_field(), 0..12),
        ) {
            let message = Message { mti, fields: fields.into_iter().collect() };
            let bytes = encode(&message).unwrap();
            prop_assert_eq!(decode(&bytes).unwrap(), message);
            for cut in 0..bytes.len() {
                prop_assert!(decode(&bytes[..cut]).is_err());
            }
        }

        /// Decoding any bytes at all returns a message or an error, never a panic.
        #[test]
        fn any_bytes_decode_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
