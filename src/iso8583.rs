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

/// The largest message body an ISO 8583 peer accepts, in bytes (the server's door and the
/// client's acquirer alike): an ATM's messages take a few hundred.
pub const ISO8583_MESSAGE_BYTES_MAX: usize = 4096;

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
    pub fields: Fields,
}

/// Fields a new message has room for before its list grows: an ATM's requests and replies
/// carry 8 to 14.
const FIELDS_CAPACITY_GUESS: usize = 16;

/// A message's fields by number, kept in number order: a short sorted list (a message has a
/// dozen or two), which a decoded message fills in order and which costs one allocation where a
/// map would take several.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// (number, data), numbers strictly increasing.
    entries: Vec<(u8, String)>,
}

impl Fields {
    fn position(&self, number: u8) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&number, |(key, _)| *key)
    }

    /// Field `number`'s data, if present.
    pub fn get(&self, number: &u8) -> Option<&String> {
        self.position(*number)
            .ok()
            .map(|index| &self.entries[index].1)
    }

    /// True when field `number` is present.
    pub fn contains_key(&self, number: &u8) -> bool {
        self.position(*number).is_ok()
    }

    /// Sets field `number` to `data`; returns the data it replaced, if any.
    pub fn insert(&mut self, number: u8, data: String) -> Option<String> {
        // Fields decoded or built in order go at the end at once.
        if self.entries.last().is_none_or(|(last, _)| *last < number) {
            self.entries.push((number, data));
            return None;
        }
        match self.position(number) {
            Ok(index) => Some(std::mem::replace(&mut self.entries[index].1, data)),
            Err(index) => {
                self.entries.insert(index, (number, data));
                None
            }
        }
    }

    /// Takes field `number` out, if present.
    pub fn remove(&mut self, number: &u8) -> Option<String> {
        let index = self.position(*number).ok()?;
        Some(self.entries.remove(index).1)
    }

    /// Keeps only the fields `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&u8, &mut String) -> bool) {
        self.entries.retain_mut(|(number, data)| keep(number, data));
    }

    /// The field numbers present, in order.
    pub fn keys(&self) -> impl Iterator<Item = &u8> {
        self.entries.iter().map(|(number, _)| number)
    }

    /// The fields, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (&u8, &String)> {
        self.entries.iter().map(|(number, data)| (number, data))
    }

    /// The fields as text, in number order (what [`encode_into`] takes).
    pub fn iter_str(&self) -> impl Iterator<Item = (u8, &str)> + Clone {
        self.entries
            .iter()
            .map(|(number, data)| (*number, data.as_str()))
    }

    /// How many fields are present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(u8, String)> for Fields {
    fn from_iter<I: IntoIterator<Item = (u8, String)>>(fields: I) -> Fields {
        let mut collected = Fields::default();
        for (number, data) in fields {
            collected.insert(number, data);
        }
        collected
    }
}

impl<'a> IntoIterator for &'a Fields {
    type Item = (&'a u8, &'a String);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u8, String)>,
        fn(&'a (u8, String)) -> (&'a u8, &'a String),
    >;

    fn into_iter(self) -> Self::IntoIter {
        fn pair((number, data): &(u8, String)) -> (&u8, &String) {
            (number, data)
        }
        self.entries.iter().map(pair)
    }
}

impl Message {
    /// A message of type `mti` with no fields yet.
    pub fn new(mti: &str) -> Message {
        Message {
            mti: mti.to_string(),
            fields: Fields {
                entries: Vec::with_capacity(FIELDS_CAPACITY_GUESS),
            },
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
    decode_in_place(bytes).map(|view| view.to_message())
}

/// A message read in place: its type and its fields borrowed from the bytes it was decoded
/// from, so that a reader which needs only a few of them (the door, for every request) pays no
/// allocation per field. It holds exactly what [`decode`] would give, which is made from it.
#[derive(Clone, Copy)]
pub struct MessageView<'a> {
    /// The message type indicator, four decimal digits.
    mti: &'a str,
    /// Bit `128 - number` set for each field present (2 to 128; never field 1).
    present: u128,
    /// Each field's data by number (index `number - 1`), empty when absent.
    data: [&'a str; FIELD_MAX as usize],
}

impl<'a> MessageView<'a> {
    /// The message type indicator.
    pub fn mti(&self) -> &'a str {
        self.mti
    }

    /// Field `number`'s data, if present.
    pub fn get(&self, number: u8) -> Option<&'a str> {
        let index = usize::from(number).checked_sub(1)?;
        (number > SECONDARY_BITMAP && number <= FIELD_MAX && self.present & field_bit(number) != 0)
            .then(|| self.data[index])
    }

    /// The fields present, in number order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a str)> + Clone + '_ {
        present_numbers(self.present).map(|number| (number, self.data[usize::from(number) - 1]))
    }

    /// How many fields are present.
    pub fn len(&self) -> usize {
        self.present.count_ones() as usize
    }

    /// True when no field is present.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The message with its own copies of the fields.
    pub fn to_message(&self) -> Message {
        let mut entries = Vec::with_capacity(self.len());
        entries.extend(self.iter().map(|(number, data)| (number, data.to_string())));
        Message {
            mti: self.mti.to_string(),
            fields: Fields { entries },
        }
    }
}

impl fmt::Debug for MessageView<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("MessageView")
            .field("mti", &self.mti)
            .field("fields", &DebugFields(self))
            .finish()
    }
}

/// The fields of a view, as a map for `Debug`.
struct DebugFields<'v, 'a>(&'v MessageView<'a>);

impl fmt::Debug for DebugFields<'_, '_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_map().entries(self.0.iter()).finish()
    }
}

/// The bit of field `number` (1 to 128) in a bitmap held as one `u128`, field 1 the highest.
fn field_bit(number: u8) -> u128 {
    1 << (128 - u32::from(number))
}

/// The field numbers a bitmap marks, in order, found by their set bits (no walk over the
/// numbers that are absent).
fn present_numbers(mut bitmap: u128) -> impl Iterator<Item = u8> + Clone {
    std::iter::from_fn(move || {
        if bitmap == 0 {
            return None;
        }
        let zeros = bitmap.leading_zeros();
        bitmap &= !(1u128 << (127 - zeros));
        // Field 1 is the highest bit: a count of leading zeros of 0 is field 1.
        Some(zeros as u8 + 1)
    })
}

/// Reads one message from `bytes`, which must hold exactly one, without copying its fields:
/// every check of [`decode`], with the same errors.
pub fn decode_in_place(bytes: &[u8]) -> Result<MessageView<'_>, Iso8583Error> {
    let mut reader = Reader { bytes, position: 0 };
    let mti = reader.take(0, MTI_BYTES)?;
    if !mti.iter().all(u8::is_ascii_digit) {
        return Err(error(0, 0, Reason::BadMessageType));
    }
    let mti = std::str::from_utf8(mti).map_err(|_| error(0, 0, Reason::BadMessageType))?;
    let mut bitmap = u128::from(reader.bitmap()?) << 64;
    let secondary = bitmap & field_bit(SECONDARY_BITMAP) != 0;
    if secondary {
        bitmap |= u128::from(reader.bitmap()?);
    }
    let present = bitmap & !field_bit(SECONDARY_BITMAP);
    let mut data = [""; FIELD_MAX as usize];
    for number in present_numbers(present) {
        data[usize::from(number) - 1] = reader.field(number)?;
    }
    if reader.position != bytes.len() {
        return Err(error(0, reader.position, Reason::TrailingBytes));
    }
    Ok(MessageView { mti, present, data })
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
        hex.iter().try_fold(0u64, |bitmap, byte| {
            let digit = char::from(*byte)
                .to_digit(16)
                .ok_or_else(|| error(SECONDARY_BITMAP, start, Reason::BadBitmap))?;
            Ok(bitmap << 4 | u64::from(digit))
        })
    }

    /// Field `number`'s data: its length prefix, if any, then its bytes.
    fn field(&mut self, number: u8) -> Result<&'a str, Iso8583Error> {
        let start = self.position;
        let format = layout(number).ok_or_else(|| error(number, start, Reason::NoSuchField))?;
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
        std::str::from_utf8(data).map_err(|_| error(number, start, Reason::NotAscii))
    }
}

/// The bytes of `message`: its type, its bitmaps (upper-case hex, the secondary one exactly when a
/// field above 64 is present), then its fields in order, each checked against its layout.
pub fn encode(message: &Message) -> Result<Vec<u8>, Iso8583Error> {
    let mut bytes = Vec::with_capacity(ENCODED_BYTES_GUESS);
    encode_into(&message.mti, message.fields.iter_str(), &mut bytes)?;
    Ok(bytes)
}

/// What an encoded message's buffer starts with room for: an ATM's messages take 100 to 200.
const ENCODED_BYTES_GUESS: usize = 256;

/// Appends to `bytes` the message of type `mti` with `fields` (in strictly increasing number
/// order), laid out as [`encode`] lays out a [`Message`], with the same checks: so a caller that
/// has its fields at hand (borrowed from a request, say) encodes them without building a
/// message, into a buffer it chose (one that starts with a frame's length, say). A field
/// number out of order, repeated, or not 2 to 128 is refused as [`Reason::NoSuchField`]. On an
/// error, `bytes` holds what it held before.
pub fn encode_into<'f>(
    mti: &str,
    fields: impl Iterator<Item = (u8, &'f str)> + Clone,
    bytes: &mut Vec<u8>,
) -> Result<(), Iso8583Error> {
    if mti.len() != MTI_BYTES || !mti.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(error(0, 0, Reason::BadMessageType));
    }
    let mut bitmap = 0u128;
    let mut previous = SECONDARY_BITMAP;
    for (number, _) in fields.clone() {
        if layout(number).is_none() || number <= previous {
            return Err(error(number, 0, Reason::NoSuchField));
        }
        previous = number;
        bitmap |= field_bit(number);
    }
    let secondary = bitmap & u128::from(u64::MAX) != 0;
    if secondary {
        bitmap |= field_bit(SECONDARY_BITMAP);
    }
    let before = bytes.len();
    bytes.extend_from_slice(mti.as_bytes());
    push_hex(bytes, (bitmap >> 64) as u64);
    if secondary {
        push_hex(bytes, bitmap as u64);
    }
    for (number, data) in fields {
        if let Err(error) = encode_field(number, data, bytes) {
            bytes.truncate(before);
            return Err(error);
        }
    }
    Ok(())
}

/// Appends `bitmap` as 16 upper-case hexadecimal digits.
fn push_hex(bytes: &mut Vec<u8>, bitmap: u64) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for shift in (0..BITMAP_HEX_BYTES as u32).rev() {
        bytes.push(DIGITS[(bitmap >> (4 * shift)) as usize & 0xF]);
    }
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
    // The length fits its prefix: at most 99 or 999, checked just above.
    let length = data.len();
    match format {
        Length::Fixed(_) => {}
        Length::Two(_) => bytes.extend_from_slice(&[digit(length / 10), digit(length)]),
        Length::Three(_) => {
            bytes.extend_from_slice(&[digit(length / 100), digit(length / 10), digit(length)])
        }
    }
    bytes.extend_from_slice(data.as_bytes());
    Ok(())
}

/// The last decimal digit of `value`, as ASCII.
fn digit(value: usize) -> u8 {
    b'0' + (value % 10) as u8
}

/// Field 54's account type for the default account ("00": unspecified).
const ACCOUNT_TYPE_DEFAULT: &str = "00";
/// Field 54's amount type of the ledger balance.
const AMOUNT_TYPE_LEDGER: &str = "01";
/// Characters of one entry of field 54.
const ADDITIONAL_AMOUNT_BYTES: usize = 20;
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
    // One buffer for both entries: a reply carries this field on every approval.
    let mut text = String::with_capacity(2 * ADDITIONAL_AMOUNT_BYTES);
    for (kind, amount) in [
        (AMOUNT_TYPE_LEDGER, ledger),
        (AMOUNT_TYPE_AVAILABLE, available),
    ] {
        use std::fmt::Write;
        let _ = write!(text, "{ACCOUNT_TYPE_DEFAULT}{kind}{currency}C{amount:012}");
    }
    Some(text)
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
/// 96, system malfunction. `moved` (cluster mode: another node serves the account) is 91 too:
/// ISO 8583 has no redirect, and an acquirer retries a 91 with the same message.
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
        Code::Busy | Code::Moved => "91",
        Code::StaleRequest | Code::RequestIdConflict => "94",
        Code::Unavailable => "96",
    }
}

/// The fields the bank reads and writes, by name (ISO 8583:1987 numbering).
pub mod field {
    /// Primary account number: the card.
    pub const PAN: u8 = 2;
    /// Processing code: what a financial request does (its first two digits) and from and to
    /// which account types (the other four, echoed and otherwise ignored).
    pub const PROCESSING_CODE: u8 = 3;
    /// Transaction amount, minor units on 12 digits.
    pub const AMOUNT: u8 = 4;
    /// Transmission date and time, MMDDhhmmss: part of the duplicate key.
    pub const TRANSMITTED: u8 = 7;
    /// System trace audit number, 6 digits: part of the duplicate key.
    pub const STAN: u8 = 11;
    /// Local transaction time, hhmmss (echoed).
    pub const LOCAL_TIME: u8 = 12;
    /// Local transaction date, MMDD (echoed).
    pub const LOCAL_DATE: u8 = 13;
    /// Acquiring institution identification code: part of the duplicate key.
    pub const ACQUIRER: u8 = 32;
    /// Forwarding institution identification code (echoed; part of field 90).
    pub const FORWARDING: u8 = 33;
    /// Retrieval reference number (echoed).
    pub const RETRIEVAL_REFERENCE: u8 = 37;
    /// Authorisation identification response: set on approvals; a completion names its
    /// authorisation's hold by it.
    pub const AUTHORISATION_ID: u8 = 38;
    /// Response code.
    pub const RESPONSE_CODE: u8 = 39;
    /// Card acceptor terminal identification: part of the duplicate key.
    pub const TERMINAL: u8 = 41;
    /// Additional response data: with response code 91 in cluster mode, the address of the node
    /// that serves the card (when it fits the field's 25 characters).
    pub const ADDITIONAL_RESPONSE_DATA: u8 = 44;
    /// Additional data, private: the movements of a mini statement.
    pub const ADDITIONAL_DATA: u8 = 48;
    /// Transaction currency code, ISO 4217 numeric.
    pub const CURRENCY: u8 = 49;
    /// PIN data: the PIN block, 16 hexadecimal digits.
    pub const PIN_BLOCK: u8 = 52;
    /// Additional amounts: the balances.
    pub const ADDITIONAL_AMOUNTS: u8 = 54;
    /// Network management information code.
    pub const NETWORK_CODE: u8 = 70;
    /// Original data elements: which message a reversal reverses.
    pub const ORIGINAL_DATA: u8 = 90;
    /// Replacement amounts: what a partial reversal actually dispensed.
    pub const REPLACEMENT_AMOUNTS: u8 = 95;
    /// Account identification 2: the receiving card of a transfer.
    pub const TO_ACCOUNT: u8 = 103;
}

/// The message types the bank answers, and the types of its answers.
pub mod mti {
    /// Authorisation request: a hold.
    pub const AUTHORISATION: &str = "0100";
    /// Its repeat.
    pub const AUTHORISATION_REPEAT: &str = "0101";
    /// The answer to an authorisation request.
    pub const AUTHORISATION_RESPONSE: &str = "0110";
    /// Financial request.
    pub const FINANCIAL: &str = "0200";
    /// Its repeat.
    pub const FINANCIAL_REPEAT: &str = "0201";
    /// The answer to a financial request.
    pub const FINANCIAL_RESPONSE: &str = "0210";
    /// Completion advice: posts an authorisation's hold.
    pub const COMPLETION: &str = "0220";
    /// Its repeat.
    pub const COMPLETION_REPEAT: &str = "0221";
    /// The answer to a completion advice.
    pub const COMPLETION_RESPONSE: &str = "0230";
    /// Reversal advice.
    pub const REVERSAL: &str = "0420";
    /// Its repeat.
    pub const REVERSAL_REPEAT: &str = "0421";
    /// The answer to a reversal advice.
    pub const REVERSAL_RESPONSE: &str = "0430";
    /// Network management request.
    pub const NETWORK: &str = "0800";
    /// The answer to a network management request.
    pub const NETWORK_RESPONSE: &str = "0810";
}

/// The type of the message answering a request of type `mti`: the same class with the function
/// digit one up and the repeat digit cleared (`0201` is answered by `0210`, as its original).
/// None for a message that is not a request or a repeat (a response, an acknowledgement).
pub fn response_mti(mti: &str) -> Option<String> {
    let bytes = mti.as_bytes();
    if bytes.len() != MTI_BYTES || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let function = bytes[2] - b'0';
    let origin = bytes[3] - b'0';
    if !function.is_multiple_of(2) || origin > 1 {
        return None;
    }
    Some(format!("{}{}0", &mti[..2], function + 1))
}

/// Field 70's codes for network management.
pub mod network {
    /// Sign-on: financial messages are answered from now on.
    pub const SIGN_ON: &str = "001";
    /// Sign-off: financial messages are refused again.
    pub const SIGN_OFF: &str = "002";
    /// Echo test: answered, nothing else.
    pub const ECHO: &str = "301";
}

/// What a financial request (0200) asks, by the first two digits of its processing code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transaction {
    /// `01`: cash withdrawal.
    Withdrawal,
    /// `21`: deposit.
    Deposit,
    /// `31`: balance inquiry.
    BalanceInquiry,
    /// `38`: mini statement.
    MiniStatement,
    /// `40`: transfer to the card in field 103.
    Transfer,
}

impl Transaction {
    /// Every transaction, in processing-code order.
    pub const ALL: [Transaction; 5] = [
        Transaction::Withdrawal,
        Transaction::Deposit,
        Transaction::BalanceInquiry,
        Transaction::MiniStatement,
        Transaction::Transfer,
    ];

    /// The first two digits of its processing code.
    pub fn code(self) -> &'static str {
        match self {
            Transaction::Withdrawal => "01",
            Transaction::Deposit => "21",
            Transaction::BalanceInquiry => "31",
            Transaction::MiniStatement => "38",
            Transaction::Transfer => "40",
        }
    }

    /// Its processing code with the default account types ("0000").
    pub fn processing_code(self) -> String {
        format!("{}0000", self.code())
    }

    /// The transaction a processing code asks for, if the bank offers it; None also when the
    /// code is not six digits.
    pub fn of(processing_code: &str) -> Option<Transaction> {
        let digits =
            processing_code.len() == 6 && processing_code.bytes().all(|byte| byte.is_ascii_digit());
        digits
            .then(|| {
                Transaction::ALL
                    .into_iter()
                    .find(|transaction| processing_code.starts_with(transaction.code()))
            })
            .flatten()
    }

    /// True when the request must carry an amount (field 4).
    pub fn moves_money(self) -> bool {
        matches!(
            self,
            Transaction::Withdrawal | Transaction::Deposit | Transaction::Transfer
        )
    }
}

/// Characters of field 38, the authorisation id.
pub const AUTHORISATION_ID_BYTES: usize = 6;

/// The largest number an authorisation id can carry: 36⁶ − 1.
pub const AUTHORISATION_ID_MAX: u64 = 36u64.pow(AUTHORISATION_ID_BYTES as u32) - 1;

const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Field 38 for `value`: six characters, base 36 (digits, then upper-case letters), of `value`
/// modulo 36⁶. A hold's authorisation id is its hold id, which [`parse_authorisation_id`] reads
/// back.
pub fn authorisation_id(value: u64) -> String {
    let mut left = value % (AUTHORISATION_ID_MAX + 1);
    let mut text = [b'0'; AUTHORISATION_ID_BYTES];
    for slot in text.iter_mut().rev() {
        *slot = BASE36[(left % 36) as usize];
        left /= 36;
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The number an authorisation id carries; None unless it is six base-36 characters (either
/// case).
pub fn parse_authorisation_id(text: &str) -> Option<u64> {
    if text.len() != AUTHORISATION_ID_BYTES {
        return None;
    }
    text.bytes().try_fold(0u64, |value, byte| {
        let digit = match byte {
            b'0'..=b'9' => byte - b'0',
            b'A'..=b'Z' => byte - b'A' + 10,
            b'a'..=b'z' => byte - b'a' + 10,
            _ => return None,
        };
        Some(value * 36 + u64::from(digit))
    })
}

/// Reads field 54 as [`additional_amounts`] writes it: the ledger and the available balance.
pub fn parse_additional_amounts(field: &str) -> Option<(u64, u64)> {
    let mut ledger = None;
    let mut available = None;
    if !field.len().is_multiple_of(20) || !field.is_ascii() {
        return None;
    }
    for entry in field.as_bytes().chunks(20) {
        let entry = std::str::from_utf8(entry).ok()?;
        let amount: u64 = entry[8..].parse().ok()?;
        let amount_type = &entry[2..4];
        if entry.as_bytes()[7] != b'C' {
            return None;
        }
        match amount_type {
            AMOUNT_TYPE_LEDGER => ledger = Some(amount),
            AMOUNT_TYPE_AVAILABLE => available = Some(amount),
            _ => {}
        }
    }
    Some((ledger?, available?))
}

/// Movements a mini statement (processing code 38) carries at most: 29 entries of
/// [`STATEMENT_ENTRY_BYTES`] after the 2-digit count fit field 48's 999 characters.
pub const MINI_STATEMENT_MOVEMENTS_MAX: usize = 29;

/// Characters of one mini-statement entry in field 48: the date (YYMMDD, UTC), the kind (two
/// letters), `C` or `D`, the amount and the balance after it (12 digits each).
pub const STATEMENT_ENTRY_BYTES: usize = 33;

/// The two letters a mini statement names a movement's kind by.
pub fn movement_letters(kind: crate::model::MovementKind) -> &'static str {
    use crate::model::MovementKind;
    match kind {
        MovementKind::Opened => "OP",
        MovementKind::Deposit => "DP",
        MovementKind::Withdrawal => "WD",
        MovementKind::TransferOut => "TO",
        MovementKind::TransferIn => "TI",
        MovementKind::TransferReturned => "TR",
        MovementKind::HoldCompleted => "HC",
        MovementKind::Reversal => "RV",
    }
}

/// One parsed mini-statement entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatementEntry {
    /// The date, YYMMDD (UTC).
    pub date: String,
    /// The kind's two letters ([`movement_letters`]).
    pub kind: String,
    /// True for a debit (`D`), false for a credit (`C`).
    pub debit: bool,
    /// The amount, in minor units.
    pub amount: u64,
    /// The balance just after it.
    pub balance_after: u64,
}

/// Field 48 of a mini statement: the number of entries on 2 digits, then each movement (oldest
/// first, the last [`MINI_STATEMENT_MOVEMENTS_MAX`] at most) on [`STATEMENT_ENTRY_BYTES`]. An
/// amount over 12 digits is written as twelve 9s (an account never holds that much).
pub fn mini_statement(movements: &[crate::model::Movement]) -> String {
    let shown = &movements[movements.len().saturating_sub(MINI_STATEMENT_MOVEMENTS_MAX)..];
    let mut text = format!("{:02}", shown.len());
    let twelve = |amount: u64| amount.min(999_999_999_999);
    for movement in shown {
        let date = chrono::DateTime::from_timestamp_millis(movement.at_unix_ms as i64).map_or_else(
            || "000000".to_string(),
            |at| at.format("%y%m%d").to_string(),
        );
        text += &format!(
            "{date}{}{}{:012}{:012}",
            movement_letters(movement.kind),
            if movement.kind.is_debit() { 'D' } else { 'C' },
            twelve(movement.amount),
            twelve(movement.balance_after),
        );
    }
    text
}

/// Reads field 48 as [`mini_statement`] writes it.
pub fn parse_mini_statement(field: &str) -> Option<Vec<StatementEntry>> {
    let count: usize = field.get(..2)?.parse().ok()?;
    let body = field.get(2..)?;
    if body.len() != count * STATEMENT_ENTRY_BYTES || !body.is_ascii() {
        return None;
    }
    (0..count)
        .map(|index| {
            let entry = &body[index * STATEMENT_ENTRY_BYTES..(index + 1) * STATEMENT_ENTRY_BYTES];
            Some(StatementEntry {
                date: entry[..6].to_string(),
                kind: entry[6..8].to_string(),
                debit: match &entry[8..9] {
                    "D" => true,
                    "C" => false,
                    _ => return None,
                },
                amount: entry[9..21].parse().ok()?,
                balance_after: entry[21..33].parse().ok()?,
            })
        })
        .collect()
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
    fn a_message_read_in_place_holds_what_decode_gives() {
        let bytes = encode(&withdrawal()).unwrap();
        let view = decode_in_place(&bytes).unwrap();
        assert_eq!(view.mti(), "0200");
        assert_eq!(view.len(), 5);
        assert_eq!(view.get(2), Some("5544332211009966"));
        assert_eq!(view.get(70), Some("301"));
        // The bitmaps are not fields, and numbers outside 2 to 128 are never present.
        for absent in [0, 1, 5, 64, 129, 255] {
            assert_eq!(view.get(absent), None, "{absent}");
        }
        let numbers: Vec<u8> = view.iter().map(|(number, _)| number).collect();
        assert_eq!(numbers, [2, 3, 4, 11, 70]);
        assert_eq!(view.to_message(), withdrawal());
        assert!(format!("{view:?}").contains("5544332211009966"));
        assert!(decode_in_place(b"02000000000000000000").unwrap().is_empty());
    }

    #[test]
    fn encoding_into_a_buffer_appends_and_refuses_fields_out_of_order() {
        let mut bytes = b"head".to_vec();
        let fields = [(3, "010000"), (11, "000001"), (70, "301")];
        encode_into("0200", fields.iter().copied(), &mut bytes).unwrap();
        let mut message = Message::new("0200");
        for (number, data) in fields {
            message.set(number, data);
        }
        assert_eq!(&bytes[..4], b"head");
        assert_eq!(bytes[4..], encode(&message).unwrap()[..]);
        for wrong in [
            [(11, "000001"), (3, "010000")],
            [(11, "000001"), (11, "000002")],
        ] {
            let mut bytes = b"head".to_vec();
            let refused = encode_into("0200", wrong.iter().copied(), &mut bytes).unwrap_err();
            assert_eq!(refused.reason, Reason::NoSuchField);
            assert_eq!(bytes, b"head");
        }
        // A field that does not fit its layout leaves the buffer as it was.
        let mut bytes = b"head".to_vec();
        let long = [(3, "010000"), (11, "0000001")];
        assert!(encode_into("0200", long.iter().copied(), &mut bytes).is_err());
        assert_eq!(bytes, b"head");
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

    #[test]
    fn the_shared_vocabulary_reads_back_what_it_writes() {
        assert_eq!(response_mti("0200").as_deref(), Some("0210"));
        assert_eq!(response_mti("0201").as_deref(), Some("0210"));
        assert_eq!(response_mti("0421").as_deref(), Some("0430"));
        assert_eq!(response_mti("0800").as_deref(), Some("0810"));
        assert_eq!(response_mti("0210"), None);
        assert_eq!(response_mti("0202"), None);
        assert_eq!(response_mti("02x0"), None);
        for transaction in Transaction::ALL {
            assert_eq!(
                Transaction::of(&transaction.processing_code()),
                Some(transaction)
            );
        }
        assert_eq!(Transaction::of("012000"), Some(Transaction::Withdrawal));
        assert_eq!(Transaction::of("990000"), None);
        assert_eq!(Transaction::of("01"), None);
        for value in [0, 1, 35, 36, 1_234_567, AUTHORISATION_ID_MAX] {
            let id = authorisation_id(value);
            assert_eq!(id.len(), AUTHORISATION_ID_BYTES);
            assert_eq!(parse_authorisation_id(&id), Some(value));
        }
        assert_eq!(authorisation_id(35), "00000Z");
        assert_eq!(parse_authorisation_id("00000z"), Some(35));
        assert_eq!(parse_authorisation_id("00-000"), None);
        let amounts = additional_amounts("978", 10_000, 7_500).unwrap();
        assert_eq!(parse_additional_amounts(&amounts), Some((10_000, 7_500)));
        assert_eq!(parse_additional_amounts("0001978C00000001"), None);
    }

    #[test]
    fn a_mini_statement_lists_the_last_movements_in_fixed_entries() {
        use crate::model::{Movement, MovementKind, RequestId};
        let movement = |kind, amount, balance_after| Movement {
            // 2026-12-01 12:00 UTC.
            at_unix_ms: 1_796_126_400_000,
            kind,
            amount,
            request: RequestId {
                client: 1,
                sequence: 1,
            },
            balance_after,
        };
        let movements: Vec<Movement> = (0..40)
            .map(|index| movement(MovementKind::Deposit, index, 100 + index))
            .chain([movement(MovementKind::Withdrawal, 2_500, 7_500)])
            .collect();
        let field = mini_statement(&movements);
        assert!(field.len() <= 999);
        let entries = parse_mini_statement(&field).unwrap();
        assert_eq!(entries.len(), MINI_STATEMENT_MOVEMENTS_MAX);
        let last = entries.last().unwrap();
        assert_eq!(
            last,
            &StatementEntry {
                date: "261201".into(),
                kind: "WD".into(),
                debit: true,
                amount: 2_500,
                balance_after: 7_500,
            }
        );
        assert_eq!(entries[0].amount, 12);
        assert_eq!(mini_statement(&[]), "00");
        assert_eq!(parse_mini_statement("01short"), None);
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
            prop_assert_eq!(&decode(&bytes).unwrap(), &message);
            let view = decode_in_place(&bytes).unwrap();
            prop_assert_eq!(view.mti(), message.mti.as_str());
            for number in 0..=255u8 {
                prop_assert_eq!(view.get(number), message.get(number));
            }
            let mut again = Vec::new();
            encode_into(view.mti(), view.iter(), &mut again).unwrap();
            prop_assert_eq!(again, bytes.clone());
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
