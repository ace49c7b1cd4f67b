//! The ISO 8583 door (docs/ISO8583.md): what ATM networks speak, mapped onto the same service.
//!
//! Frames are a 2-byte big-endian length and an ISO 8583:1987 ASCII message ([`crate::iso8583`]).
//! A link signs on (`0800`, field 70 `001`) before its financial messages are answered, for the
//! whole connection or for the terminal field 41 names. Each financial message names its card and
//! carries its PIN block; its duplicate key (acquirer, terminal, STAN, transmission time) becomes
//! the request id ([`request_id`]), so a repeat meets the memory of completed requests and gets
//! its original's reply byte for byte: a reply is made only from the fields it echoes and the
//! outcome the memory keeps. A reversal names its original by field 90, which maps to the
//! original's request id the same way. The door also keeps its latest replies by request id, and
//! answers a repeat from them before its PIN is looked at again (`RecentReplies`).
//!
//! What a message is refused for before it reaches the service (a missing field, a link not
//! signed on, a transaction the bank does not offer) is answered here, at once, and changes
//! nothing. A message that cannot be decoded, or that is not a request, ends the connection.

use super::{FrontDoor, Inbound};
use crate::codec::{CodecError, FrameReader};
use crate::iso8583::{
    self, field, mti, network, Message, MessageView, OriginalData, Transaction,
    AUTHORISATION_ID_MAX,
};
use crate::model::{Amount, Card, Code, RequestId};
use crate::pin_block::{self, ZonePinKey};
use crate::server::service::{Answer, AnswerBody, Command};
use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The largest message body the door accepts, in bytes: an ATM's messages take a few hundred.
pub use crate::iso8583::ISO8583_MESSAGE_BYTES_MAX;

/// Terminals one connection may sign on one by one (field 41 in the `0800`); a sign-on beyond
/// it is refused with `96`, so a connection's state stays bounded.
pub const SIGNED_ON_TERMINALS_MAX: usize = 4096;

/// Replies the door remembers by duplicate key (docs/ISO8583.md, section 6): at most about 20 MiB of
/// them (a reply takes a few hundred bytes), several seconds of a busy link's traffic, which is
/// when acquirers repeat.
pub const REPLIES_REMEMBERED_MAX: usize = 65_536;

/// Movements in a mini statement (processing code 38).
pub const MINI_STATEMENT_MOVEMENTS: u32 = 10;

/// The longest node address field 44 (additional response data, `LL` up to 25) carries with a
/// `91` in cluster mode; a longer one is left out.
pub const ADDITIONAL_RESPONSE_DATA_BYTES_MAX: usize = 25;

/// The response code of a financial message on a link (or terminal) that has not signed on:
/// "transaction not permitted to terminal".
pub const NOT_SIGNED_ON: &str = "58";

/// The response code of a message missing a field it needs, or with one ill-formed.
pub const FORMAT_ERROR: &str = "30";

/// The response code of a transaction the bank does not offer (a processing code, a network
/// management code, a message type).
pub const INVALID_TRANSACTION: &str = "12";

/// The response code of a request in another currency than the bank's.
pub const WRONG_CURRENCY: &str = "13";

/// The response code of the door's own failure (more terminals than a connection may sign on, a
/// reply that cannot be encoded).
pub const SYSTEM_MALFUNCTION: &str = "96";

/// The response code of an unknown card (or a PAN the bank cannot hold as a card number).
const UNKNOWN_CARD: &str = "14";

/// The response code of a duplicate key with other content.
const DUPLICATE: &str = "94";

/// The fields a reply copies from its request, when the request has them.
pub const ECHOED_FIELDS: [u8; 16] = [
    field::PAN,
    field::PROCESSING_CODE,
    field::AMOUNT,
    field::TRANSMITTED,
    field::STAN,
    field::LOCAL_TIME,
    field::LOCAL_DATE,
    field::ACQUIRER,
    field::FORWARDING,
    field::RETRIEVAL_REFERENCE,
    field::TERMINAL,
    field::CURRENCY,
    field::NETWORK_CODE,
    field::ORIGINAL_DATA,
    field::REPLACEMENT_AMOUNTS,
    field::TO_ACCOUNT,
];

/// Digits the acquirer id is zero-padded to in the duplicate key (as field 90 carries it).
const ACQUIRER_DIGITS: usize = 11;

/// Terminals (acquirer, terminal id and transmission date) a connection keeps the request id
/// client and the terminal's name of ([`Link`]), so that a terminal's next message does not
/// hash its identity again: a switch line carries a few hundred terminals; past this many the
/// connection forgets them all and starts over.
pub const TERMINAL_IDS_REMEMBERED_MAX: usize = 4096;

/// Characters of field 41 (fixed length).
const TERMINAL_ID_BYTES: usize = 8;

/// Characters of the transmission date (MMDD) at the start of field 7.
const TRANSMISSION_DATE_BYTES: usize = 4;

/// What a connection knows a terminal by: its acquirer zero-padded, its terminal id and the
/// transmission date (the parts of a request id's client).
type TerminalKey = [u8; ACQUIRER_DIGITS + TERMINAL_ID_BYTES + TRANSMISSION_DATE_BYTES];

/// How the door reads field 52.
#[derive(Clone, Debug)]
pub enum PinBlocks {
    /// Encrypted under this zone PIN key.
    Encrypted(Box<ZonePinKey>),
    /// In clear: a test mode, only behind an explicit flag.
    Clear,
}

/// The ISO 8583 door.
pub struct Iso8583Door {
    /// How PIN blocks are read.
    pins: PinBlocks,
    /// The bank's currency, three digits.
    currency: String,
    /// The last replies given, by duplicate key.
    recent: RecentReplies,
}

/// The door's memory of the replies it gave lately, by request id (the duplicate key), with a
/// digest of what their request said: a repeat that arrives while its original's reply is here
/// gets that reply's bytes without a second look at its PIN, so a repeat of a message declined
/// for its PIN does not count a second wrong PIN, and one approved before the card was locked is
/// still answered as it was. The same key with other content (another card included) is
/// answered `94`. Only final answers are kept (not `91` or `96`, which ask for a retry, nor a
/// `94`, which belongs to another request), and only after they are durable, since a reply is
/// written only then. Past it the memory of completed
/// requests, which is durable, answers repeats, after the PIN check.
#[derive(Default)]
struct RecentReplies {
    /// Replies by request id with their request's content digest, and the ids oldest first.
    replies: Mutex<Remembered>,
}

/// What [`RecentReplies`] holds under its lock.
#[derive(Default)]
struct Remembered {
    /// Each reply's request content digest, card and frame, by request id.
    by_id: HashMap<RequestId, (u64, Card, Bytes)>,
    /// The ids, oldest first.
    order: VecDeque<RequestId>,
}

impl RecentReplies {
    /// The reply remembered for `id`: `Ok` with its frame when `content` matches, `Err(())` when
    /// the id was used for other content, `None` when nothing is remembered.
    fn recall(&self, id: RequestId, content: u64) -> Option<Result<Bytes, ()>> {
        let replies = self.replies.lock();
        let (remembered, _, frame) = replies.by_id.get(&id)?;
        Some(if *remembered == content {
            Ok(frame.clone())
        } else {
            Err(())
        })
    }

    /// The card of the request `id`, if its reply is remembered.
    fn card_of(&self, id: RequestId) -> Option<Card> {
        self.replies.lock().by_id.get(&id).map(|(_, card, _)| *card)
    }

    /// Remembers `frame` as the reply to `id`, forgetting the oldest beyond
    /// [`REPLIES_REMEMBERED_MAX`].
    fn remember(&self, id: RequestId, content: u64, card: Card, frame: Bytes) {
        let mut replies = self.replies.lock();
        let Remembered { by_id, order } = &mut *replies;
        if by_id.insert(id, (content, card, frame)).is_none() {
            order.push_back(id);
        }
        while order.len() > REPLIES_REMEMBERED_MAX {
            if let Some(oldest) = order.pop_front() {
                by_id.remove(&oldest);
            }
        }
    }
}

/// What one connection remembers: who signed on, and the request id clients of its terminals.
#[derive(Debug, Default)]
pub struct Link {
    /// The whole connection signed on (an `0800` without field 41).
    signed_on: bool,
    /// Terminals that signed on one by one (an `0800` with field 41), at most
    /// [`SIGNED_ON_TERMINALS_MAX`].
    terminals: HashSet<String>,
    /// The request id client and the name (`acquirer:terminal`) of the terminals seen lately,
    /// at most [`TERMINAL_IDS_REMEMBERED_MAX`]: both depend on the terminal alone.
    identities: HashMap<TerminalKey, (u64, Arc<str>)>,
    /// The terminal of the latest request, which an ATM's own connection always repeats.
    latest: Option<(TerminalKey, u64, Arc<str>)>,
}

impl Link {
    /// True when a message from `terminal` (its field 41) may be answered.
    fn admits(&self, terminal: Option<&str>) -> bool {
        self.signed_on || terminal.is_some_and(|terminal| self.terminals.contains(terminal))
    }
}

/// What a reply needs of its request: its type and the request's echoed fields, and what kind
/// of answer fills it.
pub struct Reply {
    /// The reply so far: its type and the request's echoed fields.
    message: Echo,
    /// The digest of the request's content (everything but its type), which a repeat shares.
    content: u64,
    /// The card the request names.
    card: Card,
    /// True for an authorisation (`0110`), whose field 38 is the hold's id.
    hold: bool,
    /// True when the request proved its card's PIN, so that its reply may carry the balances:
    /// an advice, which carries no PIN, never learns a card's balances.
    balances: bool,
}

impl Iso8583Door {
    /// The door reading PIN blocks as `pins`, for a bank in `currency` (three digits).
    pub fn new(pins: PinBlocks, currency: &str) -> Iso8583Door {
        Iso8583Door {
            pins,
            currency: currency.to_string(),
            recent: RecentReplies::default(),
        }
    }

    /// Answers a network management message.
    fn network(&self, link: &mut Link, request: &MessageView<'_>, reply: Echo) -> Inbound<Reply> {
        let terminal = request.get(field::TERMINAL);
        let code = match request.get(field::NETWORK_CODE) {
            None => FORMAT_ERROR,
            Some(network::SIGN_ON) => match terminal {
                None => {
                    link.signed_on = true;
                    "00"
                }
                Some(terminal) if link.terminals.contains(terminal) => "00",
                Some(_) if link.terminals.len() >= SIGNED_ON_TERMINALS_MAX => SYSTEM_MALFUNCTION,
                Some(terminal) => {
                    link.terminals.insert(terminal.to_string());
                    "00"
                }
            },
            Some(network::SIGN_OFF) if !link.admits(terminal) => NOT_SIGNED_ON,
            Some(network::SIGN_OFF) => {
                match terminal {
                    // The link signs off, and every terminal with it.
                    None => *link = Link::default(),
                    Some(terminal) => {
                        link.terminals.remove(terminal);
                    }
                }
                "00"
            }
            Some(network::ECHO) if link.admits(terminal) => "00",
            Some(network::ECHO) => NOT_SIGNED_ON,
            Some(_) => INVALID_TRANSACTION,
        };
        answered(request.mti(), reply, code)
    }

    /// Turns a financial message, an authorisation, a completion or a reversal into a request
    /// for the service, or the response code that refuses it.
    fn request(
        &self,
        link: &mut Link,
        request: &MessageView<'_>,
    ) -> Result<(RequestId, Command), &'static str> {
        const ANSWERED: [&str; 8] = [
            mti::FINANCIAL,
            mti::FINANCIAL_REPEAT,
            mti::AUTHORISATION,
            mti::AUTHORISATION_REPEAT,
            mti::COMPLETION,
            mti::COMPLETION_REPEAT,
            mti::REVERSAL,
            mti::REVERSAL_REPEAT,
        ];
        if !ANSWERED.contains(&request.mti()) {
            return Err(INVALID_TRANSACTION);
        }
        let pan = request
            .get(field::PAN)
            .filter(|pan| is_digits(pan, 2..=19))
            .ok_or(FORMAT_ERROR)?;
        let card = card_number(pan).ok_or(UNKNOWN_CARD)?;
        let key = KeyParts::of(request)?;
        if request
            .get(field::CURRENCY)
            .is_some_and(|currency| currency != self.currency)
        {
            return Err(WRONG_CURRENCY);
        }
        let (then, with_pin) = match request.mti() {
            mti::FINANCIAL | mti::FINANCIAL_REPEAT => (financial(request)?, true),
            mti::AUTHORISATION | mti::AUTHORISATION_REPEAT => (
                Command::PlaceHold {
                    amount: amount(request)?,
                },
                true,
            ),
            mti::COMPLETION | mti::COMPLETION_REPEAT => (completion(request)?, false),
            mti::REVERSAL | mti::REVERSAL_REPEAT => (reversal(request, key.terminal)?, false),
            _ => return Err(INVALID_TRANSACTION),
        };
        let pin = if with_pin {
            let block = request.get(field::PIN_BLOCK).ok_or(FORMAT_ERROR)?;
            // A block that does not hold a PIN (the wrong key, the wrong card, noise) is checked
            // and counted as a wrong PIN: a malformed block is no cheaper to try than a PIN.
            Some(self.pin(block, pan).unwrap_or_default())
        } else {
            None
        };
        let (client, terminal) = link.identity(&key);
        Ok((
            RequestId {
                client,
                sequence: u64::from(key.stan),
            },
            Command::ForCard {
                card,
                pin,
                terminal: Some(terminal),
                then: Box::new(then),
            },
        ))
    }

    /// The PIN in field 52, as the door reads PIN blocks.
    fn pin(&self, block: &str, pan: &str) -> Result<String, pin_block::PinBlockError> {
        match &self.pins {
            PinBlocks::Encrypted(key) => pin_block::pin_from_field_52(key, block, pan),
            PinBlocks::Clear => pin_block::pin_from_clear_field_52(block, pan),
        }
    }
}

impl FrontDoor for Iso8583Door {
    type Frames = FrameReader;
    type State = Link;
    type Context = Reply;

    fn frames(&self) -> FrameReader {
        FrameReader::short(ISO8583_MESSAGE_BYTES_MAX)
    }

    fn frame_bytes_max(&self) -> usize {
        ISO8583_MESSAGE_BYTES_MAX
    }

    fn reply_bytes_max(&self) -> usize {
        // A reply echoes its request's fields and adds a few: it may be as large as a message.
        ISO8583_MESSAGE_BYTES_MAX + 2
    }

    fn is_signed_on(&self, link: &Link) -> bool {
        link.signed_on || !link.terminals.is_empty()
    }

    fn decode(&self, link: &mut Link, body: BytesMut) -> Inbound<Reply> {
        if body.is_empty() {
            // A keep-alive, answered in kind.
            return Inbound::Answered(Bytes::from_static(&[0, 0]));
        }
        // The request's fields are read in place; its reply keeps a copy of the echoed ones.
        let request = match iso8583::decode_in_place(&body) {
            Ok(request) => request,
            Err(error) => return Inbound::Close(format!("bad ISO 8583 message: {error}")),
        };
        let request_mti = request.mti();
        let Some(response_mti) = iso8583::response_mti(request_mti) else {
            return Inbound::Close(format!(
                "message type {request_mti} is not a request the bank answers"
            ));
        };
        let reply = Echo::of(&request, &response_mti);
        if request_mti == mti::NETWORK {
            return self.network(link, &request, reply);
        }
        if !link.admits(request.get(field::TERMINAL)) {
            return answered(request_mti, reply, NOT_SIGNED_ON);
        }
        let (id, command) = match self.request(link, &request) {
            Ok(decided) => decided,
            Err(code) => return answered(request_mti, reply, code),
        };
        let content = content_digest(&body);
        match self.recent.recall(id, content) {
            Some(Ok(frame)) => return Inbound::Answered(frame),
            Some(Err(())) => return answered(request_mti, reply, DUPLICATE),
            None => {}
        }
        let Command::ForCard {
            card, pin, then, ..
        } = &command
        else {
            return answered(request_mti, reply, SYSTEM_MALFUNCTION);
        };
        // A reversal must name its original's card: the bank keeps each card's requests apart,
        // so on another card it would find nothing to give back.
        if let Command::Reverse { original, .. } = then.as_ref() {
            if self
                .recent
                .card_of(*original)
                .is_some_and(|original_card| original_card != *card)
            {
                return answered(request_mti, reply, INVALID_TRANSACTION);
            }
        }
        let (card, balances) = (*card, pin.is_some());
        Inbound::Request {
            id,
            name: command.kind().name(),
            command,
            context: Reply {
                hold: response_mti == mti::AUTHORISATION_RESPONSE,
                content,
                card,
                balances,
                message: reply,
            },
        }
    }

    fn encode_answer(
        &self,
        id: RequestId,
        reply: Reply,
        answer: Answer,
    ) -> Result<Bytes, CodecError> {
        let mut code = iso8583::response_code(answer.code);
        // Fields the reply adds to the echoed ones: authorisation id, response code, additional
        // response data, mini statement, balances.
        let mut amounts = None;
        let mut statement = None;
        let mut address = None;
        let mut authorisation_id = None;
        let balances = match &answer.body {
            AnswerBody::Balances { ledger, available }
            | AnswerBody::Hold {
                ledger, available, ..
            } => Some((*ledger, *available)),
            AnswerBody::Balance(ledger) => Some((*ledger, *ledger)),
            _ => None,
        };
        if let Some((ledger, available)) = balances.filter(|_| reply.balances) {
            amounts = iso8583::additional_amounts(&self.currency, ledger, available);
        }
        if let AnswerBody::Statement(movements) = &answer.body {
            statement = Some(iso8583::mini_statement(movements));
        }
        if let AnswerBody::Moved(moved_to) = &answer.body {
            // Cluster mode: the node that serves the card, for an acquirer that can use it.
            if moved_to.len() <= ADDITIONAL_RESPONSE_DATA_BYTES_MAX {
                address = Some(moved_to.to_string());
            }
        }
        if answer.code == Code::Approved {
            let authorisation = match (&answer.body, reply.hold) {
                (AnswerBody::Hold { hold_id, .. }, true) => *hold_id,
                _ => authorisation_seed(id),
            };
            if authorisation > AUTHORISATION_ID_MAX {
                // Unreachable in practice (over two billion holds on one account), but a
                // completion naming a wrapped id would post another hold.
                tracing::error!(
                    hold = authorisation,
                    "a hold id does not fit an authorisation id"
                );
                code = SYSTEM_MALFUNCTION;
            } else {
                authorisation_id = Some(iso8583::authorisation_id(authorisation));
            }
        }
        let added = [
            (field::AUTHORISATION_ID, authorisation_id.as_deref()),
            (field::RESPONSE_CODE, Some(code)),
            (field::ADDITIONAL_RESPONSE_DATA, address.as_deref()),
            (field::ADDITIONAL_DATA, statement.as_deref()),
            (field::ADDITIONAL_AMOUNTS, amounts.as_deref()),
        ];
        let frame = reply.message.frame(&added)?;
        // A retry may still succeed after `busy`, `unavailable` or `moved`; a conflict or a stale
        // id says nothing of the request that owns the id, whose repeat must still get its own
        // reply.
        let final_answer = answer.code.is_definite()
            && !matches!(answer.code, Code::RequestIdConflict | Code::StaleRequest);
        if final_answer {
            self.recent
                .remember(id, reply.content, reply.card, frame.clone());
        }
        Ok(frame)
    }

    fn encode_goodbye(&self, _reason: &str) -> Result<Bytes, CodecError> {
        // ISO 8583 has no goodbye: the connection simply closes.
        Ok(Bytes::new())
    }
}

/// The start of a request's reply: its type, and the request's fields that a reply echoes,
/// copied one after another into one buffer (the PIN block, which is not echoed, is left with
/// the rest of the request, whose bytes go back to the connection at once).
struct Echo {
    /// The echoed fields' data, one after another.
    echoed: Box<[u8]>,
    /// The reply's message type.
    mti: [u8; iso8583::MTI_BYTES],
    /// The echoed fields present: number, then where the data starts and ends in `echoed`.
    fields: [(u8, u32, u32); ECHOED_FIELDS.len()],
    /// How many of `fields` are present.
    count: usize,
}

impl Echo {
    /// The echo of `request` under `response_mti`.
    fn of(request: &MessageView<'_>, response_mti: &str) -> Echo {
        let mut fields = [(0, 0, 0); ECHOED_FIELDS.len()];
        let mut count = 0;
        let mut bytes = 0usize;
        // ECHOED_FIELDS is in number order, so the echoed fields stay in order.
        for number in ECHOED_FIELDS {
            if let Some(data) = request.get(number) {
                let end = bytes + data.len();
                fields[count] = (number, bytes as u32, end as u32);
                count += 1;
                bytes = end;
            }
        }
        let mut echoed = Vec::with_capacity(bytes);
        for &(number, _, _) in &fields[..count] {
            echoed.extend_from_slice(request.get(number).unwrap_or_default().as_bytes());
        }
        let mut mti = [b'0'; iso8583::MTI_BYTES];
        if let Ok(response) = <[u8; iso8583::MTI_BYTES]>::try_from(response_mti.as_bytes()) {
            mti = response;
        }
        Echo {
            echoed: echoed.into_boxed_slice(),
            mti,
            fields,
            count,
        }
    }

    /// The reply's frame: the 2-byte big-endian length, then the message of the echoed fields
    /// and those of `added` that are given (none of them echoed), in number order.
    fn frame(&self, added: &[(u8, Option<&str>)]) -> Result<Bytes, CodecError> {
        let mut parts: [(u8, &str); ECHOED_FIELDS.len() + REPLY_FIELDS_ADDED_MAX] =
            [(0, ""); ECHOED_FIELDS.len() + REPLY_FIELDS_ADDED_MAX];
        let mut count = 0;
        for &(number, start, end) in &self.fields[..self.count] {
            let data = self
                .echoed
                .get(start as usize..end as usize)
                .unwrap_or_default();
            let data =
                std::str::from_utf8(data).map_err(|error| CodecError::Encode(error.to_string()))?;
            parts[count] = (number, data);
            count += 1;
        }
        for &(number, data) in added {
            if let Some(data) = data {
                let slot = parts
                    .get_mut(count)
                    .ok_or_else(|| CodecError::Encode("too many reply fields".into()))?;
                *slot = (number, data);
                count += 1;
            }
        }
        let parts = &mut parts[..count];
        parts.sort_unstable_by_key(|(number, _)| *number);
        let mti = std::str::from_utf8(&self.mti)
            .map_err(|error| CodecError::Encode(error.to_string()))?;
        let mut frame = Vec::with_capacity(REPLY_BYTES_GUESS);
        frame.extend_from_slice(&[0, 0]);
        iso8583::encode_into(mti, parts.iter().copied(), &mut frame)
            .map_err(|error| CodecError::Encode(error.to_string()))?;
        let body_bytes = frame.len() - 2;
        let length = u16::try_from(body_bytes).map_err(|_| CodecError::FrameTooLarge {
            declared_bytes: body_bytes,
            limit_bytes: usize::from(u16::MAX),
        })?;
        frame[..2].copy_from_slice(&length.to_be_bytes());
        Ok(Bytes::from(frame))
    }
}

/// Fields a reply adds to the echoed ones, at most: 38, 39, 44, 48 and 54.
const REPLY_FIELDS_ADDED_MAX: usize = 5;

/// What a reply's buffer starts with room for: an ATM's replies take 100 to 200 bytes.
const REPLY_BYTES_GUESS: usize = 256;

/// The reply the door gives itself to a request of type `request_mti`, with response code
/// `code`.
fn answered(request_mti: &str, reply: Echo, code: &'static str) -> Inbound<Reply> {
    crate::metrics::iso8583_door_answer(request_mti, code);
    match reply.frame(&[(field::RESPONSE_CODE, Some(code))]) {
        Ok(frame) => Inbound::Answered(frame),
        Err(error) => Inbound::Close(format!("cannot encode a reply: {error}")),
    }
}

/// The digest of a request's content: the first 8 bytes of the SHA-256 of its encoding after the
/// message type, which a repeat (`0201` for `0200`) shares with its original.
fn content_digest(body: &[u8]) -> u64 {
    let digest = Sha256::digest(body.get(iso8583::MTI_BYTES..).unwrap_or_default());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// True when `text` is decimal digits, as many as `digits` allows.
fn is_digits(text: &str, digits: std::ops::RangeInclusive<usize>) -> bool {
    digits.contains(&text.len()) && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// The card a PAN names: the bank's card numbers have no leading zero and fit 64 bits.
fn card_number(pan: &str) -> Option<Card> {
    if pan.starts_with('0') {
        return None;
    }
    pan.parse().ok()
}

/// Field 4, the amount in minor units.
fn amount(request: &MessageView<'_>) -> Result<Amount, &'static str> {
    request
        .get(field::AMOUNT)
        .filter(|amount| is_digits(amount, 12..=12))
        .and_then(|amount| amount.parse().ok())
        .ok_or(FORMAT_ERROR)
}

/// The operation of a financial request (`0200`), by its processing code.
fn financial(request: &MessageView<'_>) -> Result<Command, &'static str> {
    let code = request
        .get(field::PROCESSING_CODE)
        .filter(|code| is_digits(code, 6..=6))
        .ok_or(FORMAT_ERROR)?;
    let transaction = Transaction::of(code).ok_or(INVALID_TRANSACTION)?;
    Ok(match transaction {
        Transaction::Withdrawal => Command::Withdraw {
            amount: amount(request)?,
        },
        Transaction::Deposit => Command::Deposit {
            amount: amount(request)?,
        },
        Transaction::BalanceInquiry => Command::Balance,
        Transaction::MiniStatement => Command::Statement {
            count: MINI_STATEMENT_MOVEMENTS,
        },
        Transaction::Transfer => {
            let to = request
                .get(field::TO_ACCOUNT)
                .filter(|to| is_digits(to, 2..=19))
                .ok_or(FORMAT_ERROR)?;
            Command::Transfer {
                to: card_number(to).ok_or(UNKNOWN_CARD)?,
                amount: amount(request)?,
            }
        }
    })
}

/// The operation of a completion advice (`0220`): post the hold field 38 names for field 4, or
/// void it when field 4 is zero.
fn completion(request: &MessageView<'_>) -> Result<Command, &'static str> {
    let hold_id = request
        .get(field::AUTHORISATION_ID)
        .and_then(iso8583::parse_authorisation_id)
        .ok_or(FORMAT_ERROR)?;
    Ok(match amount(request)? {
        0 => Command::VoidHold { hold_id },
        amount => Command::CompleteHold {
            hold_id,
            amount: Some(amount),
        },
    })
}

/// The operation of a reversal advice (`0420`): give back the original field 90 names, less
/// what field 95 says was dispensed.
fn reversal(request: &MessageView<'_>, terminal: &str) -> Result<Command, &'static str> {
    let original = request
        .get(field::ORIGINAL_DATA)
        .and_then(OriginalData::parse)
        .ok_or(FORMAT_ERROR)?;
    // What a reversal gives back is a debit: a withdrawal, or a completion that posted a hold. An
    // authorisation is released by a completion for zero, or expires.
    const REVERSIBLE: [&str; 4] = [
        mti::FINANCIAL,
        mti::FINANCIAL_REPEAT,
        mti::COMPLETION,
        mti::COMPLETION_REPEAT,
    ];
    if !REVERSIBLE.contains(&original.mti.as_str()) {
        return Err(INVALID_TRANSACTION);
    }
    let original = DuplicateKey::new(
        &original.acquirer,
        terminal,
        &original.stan,
        &original.transmitted,
    )?;
    let dispensed = match request.get(field::REPLACEMENT_AMOUNTS) {
        None => None,
        Some(replacement) => Some(iso8583::dispensed_amount(replacement).ok_or(FORMAT_ERROR)?),
    };
    Ok(Command::Reverse {
        original: original.request_id(),
        dispensed,
    })
}

/// What tells one message of an acquirer from another: its institution (field 32), terminal
/// (field 41), trace number (field 11) and transmission time (field 7). A repeat carries the same.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The acquirer, zero-padded to 11 digits (as field 90 carries it).
    pub acquirer: String,
    /// The terminal, as field 41 has it.
    pub terminal: String,
    /// The trace number, 6 digits.
    pub stan: u32,
    /// The transmission time, MMDDhhmmss.
    pub transmitted: String,
}

impl DuplicateKey {
    /// The key of `request`; the response code refusing it when a part is missing or
    /// ill-formed.
    pub fn of(request: &Message) -> Result<DuplicateKey, &'static str> {
        let part = |number| request.get(number).ok_or(FORMAT_ERROR);
        DuplicateKey::new(
            part(field::ACQUIRER)?,
            part(field::TERMINAL)?,
            part(field::STAN)?,
            part(field::TRANSMITTED)?,
        )
    }

    /// The key of these parts, checked: the acquirer 1 to 11 digits, the STAN 6 digits, the
    /// transmission time a valid MMDDhhmmss.
    pub fn new(
        acquirer: &str,
        terminal: &str,
        stan: &str,
        transmitted: &str,
    ) -> Result<DuplicateKey, &'static str> {
        if !is_digits(acquirer, 1..=ACQUIRER_DIGITS)
            || !is_digits(stan, 6..=6)
            || !is_transmission_time(transmitted)
            || terminal.is_empty()
        {
            return Err(FORMAT_ERROR);
        }
        Ok(DuplicateKey {
            acquirer: format!("{acquirer:0>ACQUIRER_DIGITS$}"),
            terminal: terminal.to_string(),
            stan: stan.parse().map_err(|_| FORMAT_ERROR)?,
            transmitted: transmitted.to_string(),
        })
    }

    /// The request id the key stands for ([`request_id`]).
    pub fn request_id(&self) -> RequestId {
        request_id(self)
    }
}

/// A duplicate key read in place from a request, checked as [`DuplicateKey::new`] checks one:
/// the acquirer as given (not yet padded), the terminal, the STAN and the transmission time.
struct KeyParts<'a> {
    acquirer: &'a str,
    terminal: &'a str,
    stan: u32,
    transmitted: &'a str,
}

impl<'a> KeyParts<'a> {
    /// The key of `request`; the response code refusing it as [`DuplicateKey::of`] would.
    fn of(request: &MessageView<'a>) -> Result<KeyParts<'a>, &'static str> {
        let part = |number| request.get(number).ok_or(FORMAT_ERROR);
        let (acquirer, terminal) = (part(field::ACQUIRER)?, part(field::TERMINAL)?);
        let (stan, transmitted) = (part(field::STAN)?, part(field::TRANSMITTED)?);
        if !is_digits(acquirer, 1..=ACQUIRER_DIGITS)
            || !is_digits(stan, 6..=6)
            || !is_transmission_time(transmitted)
            || terminal.is_empty()
        {
            return Err(FORMAT_ERROR);
        }
        Ok(KeyParts {
            acquirer,
            terminal,
            stan: stan.parse().map_err(|_| FORMAT_ERROR)?,
            transmitted,
        })
    }

    /// The acquirer zero-padded to 11 digits.
    fn padded_acquirer(&self) -> [u8; ACQUIRER_DIGITS] {
        let mut padded = [b'0'; ACQUIRER_DIGITS];
        padded[ACQUIRER_DIGITS - self.acquirer.len()..].copy_from_slice(self.acquirer.as_bytes());
        padded
    }

    /// What the connection knows the terminal by; None for a terminal id not of field 41's
    /// fixed length (which a decoded request never has).
    fn terminal_key(&self) -> Option<TerminalKey> {
        let terminal = self.terminal.as_bytes();
        if terminal.len() != TERMINAL_ID_BYTES {
            return None;
        }
        let mut key = [0u8; ACQUIRER_DIGITS + TERMINAL_ID_BYTES + TRANSMISSION_DATE_BYTES];
        key[..ACQUIRER_DIGITS].copy_from_slice(&self.padded_acquirer());
        key[ACQUIRER_DIGITS..ACQUIRER_DIGITS + TERMINAL_ID_BYTES].copy_from_slice(terminal);
        key[ACQUIRER_DIGITS + TERMINAL_ID_BYTES..]
            .copy_from_slice(&self.transmitted.as_bytes()[..TRANSMISSION_DATE_BYTES]);
        Some(key)
    }

    /// The request id client and the terminal's name, as [`request_id`] and the door's
    /// commands make them.
    fn identity(&self) -> (u64, Arc<str>) {
        let acquirer = self.padded_acquirer();
        let client = request_client(&acquirer, self.terminal, self.transmitted);
        let acquirer = std::str::from_utf8(&acquirer).unwrap_or(self.acquirer);
        (client, Arc::from(format!("{acquirer}:{}", self.terminal)))
    }
}

impl Link {
    /// The request id client and the name of the terminal of `key`, remembered for the
    /// terminal's next messages.
    fn identity(&mut self, key: &KeyParts<'_>) -> (u64, Arc<str>) {
        let Some(terminal_key) = key.terminal_key() else {
            return key.identity();
        };
        if let Some((latest, client, name)) = &self.latest {
            if *latest == terminal_key {
                return (*client, name.clone());
            }
        }
        let identity = match self.identities.get(&terminal_key) {
            Some(identity) => identity.clone(),
            None => {
                if self.identities.len() >= TERMINAL_IDS_REMEMBERED_MAX {
                    self.identities.clear();
                }
                let identity = key.identity();
                self.identities.insert(terminal_key, identity.clone());
                identity
            }
        };
        self.latest = Some((terminal_key, identity.0, identity.1.clone()));
        identity
    }
}

/// The request id of a duplicate key: the client is the first 8 bytes (big-endian) of the
/// SHA-256 of `iso8583`, the acquirer, a 0 byte, the terminal, a 0 byte and the transmission
/// date (MMDD) — one client per terminal and day, since a STAN wraps daily — and the sequence is
/// the STAN, which grows by one per message, so the memory's window of recent requests holds a
/// terminal's latest messages.
pub fn request_id(key: &DuplicateKey) -> RequestId {
    RequestId {
        client: request_client(key.acquirer.as_bytes(), &key.terminal, &key.transmitted),
        sequence: u64::from(key.stan),
    }
}

/// The client half of [`request_id`], from the padded acquirer, the terminal and the
/// transmission time (of which only the date, MMDD, counts).
fn request_client(padded_acquirer: &[u8], terminal: &str, transmitted: &str) -> u64 {
    let mut hash = Sha256::new();
    hash.update(b"iso8583");
    hash.update(padded_acquirer);
    hash.update([0]);
    hash.update(terminal.as_bytes());
    hash.update([0]);
    hash.update(&transmitted.as_bytes()[..TRANSMISSION_DATE_BYTES]);
    let digest = hash.finalize();
    let mut client = [0u8; 8];
    client.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(client)
}

/// True for a valid MMDDhhmmss.
fn is_transmission_time(text: &str) -> bool {
    if !is_digits(text, 10..=10) {
        return false;
    }
    let part = |from: usize| text[from..from + 2].parse::<u32>().unwrap_or(99);
    (1..=12).contains(&part(0)) && (1..=31).contains(&part(2)) && part(4) < 24 && part(6) < 60
        // 60: a leap second.
        && part(8) <= 60
}

/// The number an approval's authorisation id is made of, from its request id alone, so that a
/// repeat's reply carries the same one.
fn authorisation_seed(id: RequestId) -> u64 {
    (id.client ^ id.sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15)) % (AUTHORISATION_ID_MAX + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn door() -> Iso8583Door {
        Iso8583Door::new(PinBlocks::Clear, "978")
    }

    fn withdrawal(pin: &str) -> Message {
        let mut message = Message::new(mti::FINANCIAL);
        message
            .set(field::PAN, "123456789")
            .set(field::PROCESSING_CODE, "010000")
            .set(field::AMOUNT, "000000000300")
            .set(field::TRANSMITTED, "1201153000")
            .set(field::STAN, "000042")
            .set(field::ACQUIRER, "12345")
            .set(field::TERMINAL, "ATM00001")
            .set(field::CURRENCY, "978")
            .set(
                field::PIN_BLOCK,
                pin_block::clear_field_52_for(pin, "123456789").unwrap(),
            );
        message
    }

    fn body(message: &Message) -> BytesMut {
        BytesMut::from(&iso8583::encode(message).unwrap()[..])
    }

    fn answered_code(inbound: Inbound<Reply>) -> String {
        match inbound {
            Inbound::Answered(frame) => {
                let reply = iso8583::decode(&frame[2..]).unwrap();
                reply.get(field::RESPONSE_CODE).unwrap().to_string()
            }
            _ => panic!("the door should answer by itself"),
        }
    }

    fn sign_on(link: &mut Link) {
        let mut message = Message::new(mti::NETWORK);
        message
            .set(field::TRANSMITTED, "1201153000")
            .set(field::STAN, "000001")
            .set(field::NETWORK_CODE, network::SIGN_ON);
        assert_eq!(answered_code(door().decode(link, body(&message))), "00");
    }

    #[test]
    fn nothing_financial_is_answered_before_the_link_signs_on() {
        let door = door();
        let mut link = Link::default();
        assert_eq!(
            answered_code(door.decode(&mut link, body(&withdrawal("1234")))),
            NOT_SIGNED_ON
        );
        sign_on(&mut link);
        assert!(door.is_signed_on(&link));
        match door.decode(&mut link, body(&withdrawal("1234"))) {
            Inbound::Request {
                id,
                command:
                    Command::ForCard {
                        card, pin, then, ..
                    },
                ..
            } => {
                assert_eq!(card, 123_456_789);
                assert_eq!(pin.as_deref(), Some("1234"));
                assert_eq!(*then, Command::Withdraw { amount: 300 });
                assert_eq!(id.sequence, 42);
            }
            _ => panic!("a withdrawal for the service"),
        }
    }

    #[test]
    fn a_key_names_one_request_and_its_repeat_names_the_same() {
        let first = DuplicateKey::of(&withdrawal("1234")).unwrap();
        let mut repeat = withdrawal("1234");
        repeat.mti = mti::FINANCIAL_REPEAT.into();
        assert_eq!(DuplicateKey::of(&repeat).unwrap(), first);
        // Field 90 pads the acquirer to 11 digits: the same request id.
        let padded = DuplicateKey::new("00000012345", "ATM00001", "000042", "1201153000").unwrap();
        assert_eq!(padded.request_id(), first.request_id());
        let next_day = DuplicateKey::new("12345", "ATM00001", "000042", "1202153000").unwrap();
        assert_ne!(next_day.request_id().client, first.request_id().client);
        assert_eq!(
            DuplicateKey::new("12345", "ATM00001", "000042", "1301153000"),
            Err(FORMAT_ERROR)
        );
    }

    #[test]
    fn what_the_door_refuses_itself_it_answers_with_the_code_that_says_why() {
        let door = door();
        let mut link = Link::default();
        sign_on(&mut link);
        let code =
            |message: Message, link: &mut Link| answered_code(door.decode(link, body(&message)));
        let mut unknown = withdrawal("1234");
        unknown.set(field::PROCESSING_CODE, "990000");
        assert_eq!(code(unknown, &mut link), INVALID_TRANSACTION);
        let mut missing = withdrawal("1234");
        missing.fields.remove(&field::AMOUNT);
        assert_eq!(code(missing, &mut link), FORMAT_ERROR);
        let mut currency = withdrawal("1234");
        currency.set(field::CURRENCY, "840");
        assert_eq!(code(currency, &mut link), WRONG_CURRENCY);
        let mut zero = withdrawal("1234");
        zero.set(field::PAN, "0123456789");
        assert_eq!(code(zero, &mut link), UNKNOWN_CARD);
        let mut other = Message::new("0300");
        other.set(field::STAN, "000001");
        assert_eq!(code(other, &mut link), INVALID_TRANSACTION);
        assert!(matches!(
            door.decode(&mut link, BytesMut::from(&b"0210"[..])),
            Inbound::Close(_)
        ));
        assert!(matches!(
            door.decode(&mut link, BytesMut::from(&b"02x0"[..])),
            Inbound::Close(_)
        ));
        let mut of_authorisation = withdrawal("1234");
        of_authorisation.mti = mti::REVERSAL.into();
        of_authorisation.set(
            field::ORIGINAL_DATA,
            "010000004112011530000000001234500000000000",
        );
        assert_eq!(code(of_authorisation, &mut link), INVALID_TRANSACTION);
        match door.decode(&mut link, BytesMut::new()) {
            Inbound::Answered(frame) => assert_eq!(&frame[..], &[0, 0]),
            _ => panic!("a keep-alive is answered in kind"),
        }
    }

    #[test]
    fn a_reply_echoes_exactly_the_echoed_fields_of_its_request() {
        let door = door();
        let mut link = Link::default();
        sign_on(&mut link);
        let mut request = withdrawal("1234");
        request
            .set(field::LOCAL_TIME, "153000")
            .set(field::RETRIEVAL_REFERENCE, "000000000042")
            // Field 43, card acceptor name and location: not echoed.
            .set(43, "A".repeat(40))
            .set(field::PROCESSING_CODE, "990000");
        let Inbound::Answered(frame) = door.decode(&mut link, body(&request)) else {
            panic!("an unknown processing code is answered by the door");
        };
        let reply = iso8583::decode(&frame[2..]).unwrap();
        assert_eq!(reply.mti, mti::FINANCIAL_RESPONSE);
        let mut expected = request.clone();
        expected.mti = mti::FINANCIAL_RESPONSE.into();
        expected
            .fields
            .retain(|number, _| ECHOED_FIELDS.contains(number));
        expected.set(field::RESPONSE_CODE, INVALID_TRANSACTION);
        assert_eq!(reply, expected);
        assert_eq!(reply.get(field::PIN_BLOCK), None);
        assert_eq!(
            u16::from_be_bytes([frame[0], frame[1]]) as usize,
            frame.len() - 2
        );
    }

    #[test]
    fn a_link_names_its_terminals_as_their_duplicate_keys_do() {
        let door = door();
        let mut link = Link::default();
        sign_on(&mut link);
        // More terminals than a link remembers, each twice, interleaved with a first one.
        let terminals = (0..TERMINAL_IDS_REMEMBERED_MAX + 10).map(|index| format!("T{index:07}"));
        for (index, terminal) in terminals.enumerate() {
            for name in [terminal.as_str(), "ATM00001", terminal.as_str()] {
                let mut request = withdrawal("1234");
                request
                    .set(field::TERMINAL, name)
                    .set(field::STAN, format!("{:06}", index % 999_999 + 1));
                let expected = DuplicateKey::of(&request).unwrap();
                match door.decode(&mut link, body(&request)) {
                    Inbound::Request {
                        id,
                        command: Command::ForCard { terminal, .. },
                        ..
                    } => {
                        assert_eq!(id, expected.request_id());
                        assert_eq!(terminal.as_deref(), Some(&*format!("00000012345:{name}")));
                    }
                    _ => panic!("a withdrawal for the service"),
                }
            }
        }
        assert!(link.identities.len() <= TERMINAL_IDS_REMEMBERED_MAX);
    }

    #[test]
    fn terminals_sign_on_one_by_one_and_the_link_signs_off_for_all() {
        let door = door();
        let mut link = Link::default();
        let mut network = Message::new(mti::NETWORK);
        network
            .set(field::TRANSMITTED, "1201153000")
            .set(field::STAN, "000001")
            .set(field::TERMINAL, "ATM00001")
            .set(field::NETWORK_CODE, network::ECHO);
        let code =
            |message: &Message, link: &mut Link| answered_code(door.decode(link, body(message)));
        assert_eq!(code(&network, &mut link), NOT_SIGNED_ON);
        network.set(field::NETWORK_CODE, network::SIGN_ON);
        assert_eq!(code(&network, &mut link), "00");
        assert!(link.admits(Some("ATM00001")));
        assert!(!link.admits(Some("ATM00002")));
        network.set(field::NETWORK_CODE, "999");
        assert_eq!(code(&network, &mut link), INVALID_TRANSACTION);
        network.set(field::NETWORK_CODE, network::SIGN_OFF);
        assert_eq!(code(&network, &mut link), "00");
        assert!(!door.is_signed_on(&link));
        assert_eq!(code(&network, &mut link), NOT_SIGNED_ON);
    }

    #[test]
    fn an_answer_fills_the_reply_from_the_outcome_alone() {
        let door = door();
        let id = DuplicateKey::of(&withdrawal("1234")).unwrap().request_id();
        let reply = || {
            let mut message = Message::new(mti::FINANCIAL);
            message.set(field::STAN, "000042");
            let body = iso8583::encode(&message).unwrap();
            let request = iso8583::decode_in_place(&body).unwrap();
            Reply {
                message: Echo::of(&request, mti::FINANCIAL_RESPONSE),
                content: 1,
                card: 123_456_789,
                hold: false,
                balances: true,
            }
        };
        let approved = Answer::approved(AnswerBody::Balances {
            ledger: 9_700,
            available: 9_700,
        });
        let first = door.encode_answer(id, reply(), approved.clone()).unwrap();
        assert_eq!(first, door.encode_answer(id, reply(), approved).unwrap());
        let message = iso8583::decode(&first[2..]).unwrap();
        assert_eq!(message.get(field::RESPONSE_CODE), Some("00"));
        assert_eq!(message.get(field::AUTHORISATION_ID).map(str::len), Some(6));
        assert_eq!(
            message
                .get(field::ADDITIONAL_AMOUNTS)
                .and_then(iso8583::parse_additional_amounts),
            Some((9_700, 9_700))
        );
        let declined = Answer {
            code: Code::InsufficientFunds,
            body: AnswerBody::Balances {
                ledger: 100,
                available: 100,
            },
        };
        let message =
            iso8583::decode(&door.encode_answer(id, reply(), declined).unwrap()[2..]).unwrap();
        assert_eq!(message.get(field::RESPONSE_CODE), Some("51"));
        assert_eq!(message.get(field::AUTHORISATION_ID), None);
        let hold = Answer::approved(AnswerBody::Hold {
            hold_id: 7,
            ledger: 100,
            available: 40,
        });
        let mut authorisation = reply();
        authorisation.hold = true;
        let message =
            iso8583::decode(&door.encode_answer(id, authorisation, hold).unwrap()[2..]).unwrap();
        assert_eq!(message.get(field::AUTHORISATION_ID), Some("000007"));
    }

    proptest::proptest! {
        /// Whatever bytes arrive, and whatever fields a well-formed message has, the door
        /// answers, refuses or closes; it never panics.
        #[test]
        fn any_message_is_answered_refused_or_closed(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            fields in proptest::collection::vec((2u8..=128, "[0-9A-Z ]{0,12}"), 0..10),
            message_type in proptest::sample::select(vec![
                "0100", "0101", "0200", "0201", "0220", "0221", "0420", "0421", "0800", "0300",
            ]),
        ) {
            let door = door();
            let mut link = Link::default();
            sign_on(&mut link);
            let _ = door.decode(&mut link, BytesMut::from(&bytes[..]));
            let mut message = withdrawal("1234");
            message.mti = message_type.to_string();
            for (number, data) in fields {
                message.set(number, data);
            }
            if let Ok(encoded) = iso8583::encode(&message) {
                let _ = door.decode(&mut link, BytesMut::from(&encoded[..]));
            }
        }
    }
}
