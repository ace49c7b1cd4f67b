//! An ISO 8583 acquirer for Rust callers: the other end of the bank's ISO 8583 door.
//!
//! A [`Terminal`] builds the messages one ATM (or point of sale) sends: its acquirer id (field
//! 32), its terminal id (field 41), a system trace audit number (field 11) that grows by one per
//! new message, and the transmission time (field 7) read from a [`Clock`] the caller passes in,
//! so a test builds the same bytes on every run. Each builder sets exactly the fields the door
//! requires for that message, plus field 49 when the terminal was given a currency; a repeat
//! ([`repeat_of`]) is the same message with the repeat digit of its type set, so the door's
//! memory answers it with the original's reply.
//!
//! An [`Acquirer`] is one connection (plain TCP, or TLS with the client's [`TlsSettings`]): each
//! message framed by a 2-byte big-endian length, a length-0 frame a keep-alive. Several requests
//! may be in flight on it at once; a reply is matched to its request by (field 41, field 11),
//! which a terminal never reuses except for repeats, whose answers are the same.
//!
//! A [`Response`] is the typed view of a reply: its response code, authorisation id, balances
//! (field 54) and mini statement (field 48).

use super::tls::{open_stream, TlsSettings, Transport};
use crate::clock::Clock;
use crate::codec::{CodecError, FrameReader, SHORT_FRAME_HEADER_BYTES};
use crate::iso8583::{
    self, field, mti, network, parse_additional_amounts, parse_mini_statement, Message,
    OriginalData, StatementEntry, Transaction,
};
use crate::pin_block::{clear_field_52_for, field_52_for, PinBlockError, ZonePinKey};
use futures::{FutureExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::{oneshot, Mutex, Notify};
use tokio_util::codec::FramedRead;

/// The longest message body an acquirer reads: the door's own limit on what it accepts and
/// sends.
pub const ISO8583_REPLY_BYTES_MAX: usize = crate::iso8583::ISO8583_MESSAGE_BYTES_MAX;

/// The highest system trace audit number (six digits); the next one after it is 1.
pub const STAN_MAX: u32 = 999_999;

/// Digits field 32 (acquiring institution) may hold.
pub const ACQUIRER_DIGITS_MAX: usize = 11;

/// Characters of field 41 (card acceptor terminal id).
pub const TERMINAL_ID_BYTES: usize = 8;

/// Processing code of an authorisation (0100): goods and services, default accounts.
pub const AUTHORISATION_PROCESSING_CODE: &str = "000000";

/// Digits of the forwarding institution in field 90 when no forwarding institution is named.
const FORWARDING_NONE: &str = "00000000000";

/// Digits after the dispensed amount in field 95 (the settlement and cardholder-billing
/// replacement amounts, unused).
const REPLACEMENT_AMOUNTS_PADDING: usize = 30;

/// Why a terminal could not build a message or an acquirer could not exchange one.
#[derive(Debug, thiserror::Error)]
pub enum AcquirerError {
    /// The PIN or the card cannot make a PIN block.
    #[error("cannot make the PIN block: {0}")]
    PinBlock(#[from] PinBlockError),
    /// The message does not fit the ISO 8583 layout (an amount over 12 digits, say).
    #[error("cannot encode the message: {0}")]
    Encode(#[from] iso8583::Iso8583Error),
    /// An acquirer or terminal id that is not of the form the fields need.
    #[error("{0}")]
    Identity(String),
    /// The connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection broke (or the reader stopped): nothing more will be answered on it.
    #[error("the connection is closed: {0}")]
    Closed(String),
    /// No reply within the time given: the request may or may not have reached the bank.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A request with the same (field 41, field 11) is already waiting on this connection.
    #[error("a request of {0} is already in flight")]
    InFlight(MatchKey),
}

/// How a terminal's PIN blocks are made.
#[derive(Clone, Debug)]
pub enum PinBlocks {
    /// Encrypted under the zone PIN key shared with the bank (`field_52_for`).
    Key(Box<ZonePinKey>),
    /// In clear, for a door started with clear PIN blocks (tests only).
    Clear,
}

impl PinBlocks {
    /// Field 52 for `pin` on the card `pan`.
    pub fn field_52(&self, pin: &str, pan: &str) -> Result<String, PinBlockError> {
        match self {
            PinBlocks::Key(key) => field_52_for(key, pin, pan),
            PinBlocks::Clear => clear_field_52_for(pin, pan),
        }
    }
}

/// One terminal of an acquirer: who it is, its trace numbers and its clock.
#[derive(Clone)]
pub struct Terminal {
    acquirer: String,
    terminal: String,
    /// The STAN the next new message gets.
    next_stan: u32,
    clock: Arc<dyn Clock>,
    /// Field 7 of the last second a message was made in (unix seconds, text), made once a second.
    transmitted: Option<(u64, String)>,
    pins: PinBlocks,
    currency: Option<String>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Terminal")
            .field("acquirer", &self.acquirer)
            .field("terminal", &self.terminal)
            .field("next_stan", &self.next_stan)
            .finish_non_exhaustive()
    }
}

/// A card and its PIN, as the customer gives them at the terminal.
#[derive(Clone, Copy, Debug)]
pub struct CardHolder<'a> {
    /// The card number (field 2, as is).
    pub pan: &'a str,
    /// The PIN, put in field 52's block.
    pub pin: &'a str,
    /// Field 52 made already for this card and PIN under the terminal's [`PinBlocks`] (an ISO-0
    /// block depends on nothing else, so a load generator makes each card's once); None makes
    /// it from `pin`.
    pub pin_block: Option<&'a str>,
}

impl<'a> CardHolder<'a> {
    /// The card `pan` with `pin`, its block made when a message needs it.
    pub fn new(pan: &'a str, pin: &'a str) -> CardHolder<'a> {
        CardHolder {
            pan,
            pin,
            pin_block: None,
        }
    }
}

impl Terminal {
    /// Terminal `terminal` (8 characters) of acquirer `acquirer` (1 to 11 digits), its STAN
    /// starting at 1, field 7 read from `clock`, PIN blocks made by `pins`.
    pub fn new(
        acquirer: &str,
        terminal: &str,
        clock: Arc<dyn Clock>,
        pins: PinBlocks,
    ) -> Result<Terminal, AcquirerError> {
        let digits = !acquirer.is_empty()
            && acquirer.len() <= ACQUIRER_DIGITS_MAX
            && acquirer.bytes().all(|byte| byte.is_ascii_digit());
        if !digits {
            return Err(AcquirerError::Identity(format!(
                "acquirer {acquirer:?} is not 1 to {ACQUIRER_DIGITS_MAX} digits"
            )));
        }
        let printable = terminal.bytes().all(|byte| (b' '..=b'~').contains(&byte));
        if terminal.len() != TERMINAL_ID_BYTES || !printable {
            return Err(AcquirerError::Identity(format!(
                "terminal {terminal:?} is not {TERMINAL_ID_BYTES} printable characters"
            )));
        }
        Ok(Terminal {
            acquirer: acquirer.to_string(),
            terminal: terminal.to_string(),
            next_stan: 1,
            clock,
            transmitted: None,
            pins,
            currency: None,
        })
    }

    /// Sends field 49 = `currency` (three digits) on every message that moves money from now on.
    pub fn with_currency(mut self, currency: &str) -> Terminal {
        self.currency = Some(currency.to_string());
        self
    }

    /// Continues numbering at `stan` (1 to [`STAN_MAX`]): a terminal taking over from an
    /// earlier process must never reuse a number of the same day.
    pub fn resume_at(&mut self, stan: u32) {
        self.next_stan = stan.clamp(1, STAN_MAX);
    }

    /// Field 41.
    pub fn terminal_id(&self) -> &str {
        &self.terminal
    }

    /// Field 32, as sent.
    pub fn acquirer_id(&self) -> &str {
        &self.acquirer
    }

    /// The STAN the next new message will carry.
    pub fn next_stan(&self) -> u32 {
        self.next_stan
    }

    /// A new message of type `mti` with this terminal's identity, the next STAN and the time of
    /// now: fields 7, 11, 32 and 41.
    fn start(&mut self, mti: &str) -> Message {
        let stan = self.next_stan;
        self.next_stan = if stan >= STAN_MAX { 1 } else { stan + 1 };
        let unix_ms = self.clock.unix_ms();
        let second = unix_ms / 1_000;
        let transmitted = match &self.transmitted {
            Some((made, text)) if *made == second => text.clone(),
            _ => {
                let text = transmission_time(unix_ms);
                self.transmitted = Some((second, text.clone()));
                text
            }
        };
        let mut message = Message::new(mti);
        message
            .set(field::TRANSMITTED, transmitted)
            .set(field::STAN, format!("{stan:06}"))
            .set(field::ACQUIRER, self.acquirer.clone())
            .set(field::TERMINAL, self.terminal.clone());
        message
    }

    /// A network management request (0800) with field 70 = `code`, for this terminal only
    /// (fields 32 and 41 set) or, with `per_connection`, for the whole connection (without them).
    pub fn network(&mut self, code: &str, per_connection: bool) -> Message {
        let mut message = self.start(mti::NETWORK);
        message.set(field::NETWORK_CODE, code);
        if per_connection {
            message.fields.remove(&field::ACQUIRER);
            message.fields.remove(&field::TERMINAL);
        }
        message
    }

    /// Sign-on of this terminal (0800, 70 = 001).
    pub fn sign_on(&mut self) -> Message {
        self.network(network::SIGN_ON, false)
    }

    /// Sign-off of this terminal (0800, 70 = 002).
    pub fn sign_off(&mut self) -> Message {
        self.network(network::SIGN_OFF, false)
    }

    /// Echo test of this terminal (0800, 70 = 301).
    pub fn echo(&mut self) -> Message {
        self.network(network::ECHO, false)
    }

    /// A financial request (0200) for `transaction` on `holder`'s card: fields 2, 3, 7, 11, 32,
    /// 41, 52, and 4 when `amount` is given.
    fn financial(
        &mut self,
        transaction: Transaction,
        holder: CardHolder<'_>,
        amount: Option<u64>,
    ) -> Result<Message, AcquirerError> {
        let pin_block = self.pin_block(holder)?;
        let mut message = self.start(mti::FINANCIAL);
        message
            .set(field::PAN, holder.pan)
            .set(field::PROCESSING_CODE, transaction.processing_code())
            .set(field::PIN_BLOCK, pin_block);
        if let Some(amount) = amount {
            self.set_amount(&mut message, amount);
        }
        Ok(message)
    }

    /// Field 52 for `holder`: the block given, or one made from the PIN.
    fn pin_block(&self, holder: CardHolder<'_>) -> Result<String, PinBlockError> {
        match holder.pin_block {
            Some(block) => Ok(block.to_string()),
            None => self.pins.field_52(holder.pin, holder.pan),
        }
    }

    /// Field 4 (and field 49, when the terminal has a currency).
    fn set_amount(&self, message: &mut Message, amount: u64) {
        message.set(field::AMOUNT, format!("{amount:012}"));
        if let Some(currency) = &self.currency {
            message.set(field::CURRENCY, currency.clone());
        }
    }

    /// A cash withdrawal of `amount` (0200, processing code 01).
    pub fn withdrawal(
        &mut self,
        holder: CardHolder<'_>,
        amount: u64,
    ) -> Result<Message, AcquirerError> {
        self.financial(Transaction::Withdrawal, holder, Some(amount))
    }

    /// A deposit of `amount` (0200, processing code 21).
    pub fn deposit(
        &mut self,
        holder: CardHolder<'_>,
        amount: u64,
    ) -> Result<Message, AcquirerError> {
        self.financial(Transaction::Deposit, holder, Some(amount))
    }

    /// A balance inquiry (0200, processing code 31, no amount).
    pub fn balance_inquiry(&mut self, holder: CardHolder<'_>) -> Result<Message, AcquirerError> {
        self.financial(Transaction::BalanceInquiry, holder, None)
    }

    /// A mini statement (0200, processing code 38, no amount).
    pub fn mini_statement(&mut self, holder: CardHolder<'_>) -> Result<Message, AcquirerError> {
        self.financial(Transaction::MiniStatement, holder, None)
    }

    /// A transfer of `amount` to the card `to` (0200, processing code 40, field 103).
    pub fn transfer(
        &mut self,
        holder: CardHolder<'_>,
        to: &str,
        amount: u64,
    ) -> Result<Message, AcquirerError> {
        let mut message = self.financial(Transaction::Transfer, holder, Some(amount))?;
        message.set(field::TO_ACCOUNT, to);
        Ok(message)
    }

    /// An authorisation (0100): a hold of `amount` on `holder`'s card.
    pub fn authorisation(
        &mut self,
        holder: CardHolder<'_>,
        amount: u64,
    ) -> Result<Message, AcquirerError> {
        let pin_block = self.pin_block(holder)?;
        let mut message = self.start(mti::AUTHORISATION);
        message
            .set(field::PAN, holder.pan)
            .set(field::PROCESSING_CODE, AUTHORISATION_PROCESSING_CODE)
            .set(field::PIN_BLOCK, pin_block);
        self.set_amount(&mut message, amount);
        Ok(message)
    }

    /// A completion advice (0220) posting `amount` of the hold whose authorisation id (field 38
    /// of its 0110) is `authorisation_id`, on the card `pan`; 0 voids the hold. No PIN.
    pub fn completion(&mut self, pan: &str, authorisation_id: &str, amount: u64) -> Message {
        let mut message = self.start(mti::COMPLETION);
        message
            .set(field::PAN, pan)
            .set(field::AUTHORISATION_ID, authorisation_id);
        self.set_amount(&mut message, amount);
        message
    }

    /// A reversal advice (0420) of `original` (a 0200 or 0100 this terminal sent), in full, or,
    /// with `dispensed`, of all but the amount actually dispensed (field 95). No PIN.
    pub fn reversal(
        &mut self,
        original: &Message,
        dispensed: Option<u64>,
    ) -> Result<Message, AcquirerError> {
        let data = original_data(original)?;
        let pan = original.get(field::PAN).unwrap_or_default().to_string();
        let mut message = self.start(mti::REVERSAL);
        message.set(field::PAN, pan).set(field::ORIGINAL_DATA, data);
        if let Some(dispensed) = dispensed {
            message.set(
                field::REPLACEMENT_AMOUNTS,
                format!(
                    "{dispensed:012}{:0width$}",
                    0,
                    width = REPLACEMENT_AMOUNTS_PADDING
                ),
            );
        }
        Ok(message)
    }
}

/// Field 7 for the wall-clock time `unix_ms`: MMDDhhmmss, UTC.
pub fn transmission_time(unix_ms: u64) -> String {
    let millis = i64::try_from(unix_ms).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp_millis(millis)
        .unwrap_or_default()
        .format("%m%d%H%M%S")
        .to_string()
}

/// Field 90 naming `original`: its type (the original's, a repeat's digit cleared), STAN,
/// transmission time, acquirer (zero-padded to 11 digits) and no forwarding institution.
pub fn original_data(original: &Message) -> Result<String, AcquirerError> {
    let part = |number: u8| {
        original.get(number).ok_or_else(|| {
            AcquirerError::Identity(format!("the original has no field {number} to reverse by"))
        })
    };
    let original_type = original_type(&original.mti);
    let stan = part(field::STAN)?;
    let transmitted = part(field::TRANSMITTED)?;
    let acquirer = part(field::ACQUIRER)?;
    let data = format!("{original_type}{stan}{transmitted}{acquirer:0>11}{FORWARDING_NONE}");
    OriginalData::parse(&data)
        .map(|_| data)
        .ok_or_else(|| AcquirerError::Identity("the original's fields do not make field 90".into()))
}

/// `message_type` with its repeat digit cleared (`0201` → `0200`).
fn original_type(message_type: &str) -> String {
    match message_type.as_bytes() {
        [a, b, c, b'1'] => format!("{}{}{}0", *a as char, *b as char, *c as char),
        _ => message_type.to_string(),
    }
}

/// The repeat of `message` (0200 → 0201, 0100 → 0101, 0220 → 0221, 0420 → 0421): the same
/// fields, so the bank answers it with the original's reply. A repeat of a repeat is itself.
pub fn repeat_of(message: &Message) -> Message {
    let mut repeat = message.clone();
    if let [a, b, c, b'0'] = message.mti.as_bytes() {
        repeat.mti = format!("{}{}{}1", *a as char, *b as char, *c as char);
    }
    repeat
}

/// Digits of field 11.
const STAN_DIGITS: usize = 6;

/// What a request's frame buffer starts with room for: an ATM's messages take 100 to 200
/// bytes.
const FRAME_BYTES_GUESS: usize = 256;

/// What a request and its reply are matched by: field 41 (absent for a message for the whole
/// connection) and field 11, as their bytes, so matching allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatchKey {
    /// Field 41, when present and of its fixed length.
    pub terminal: Option<[u8; TERMINAL_ID_BYTES]>,
    /// Field 11 (zeros when absent).
    pub stan: [u8; STAN_DIGITS],
}

impl std::fmt::Display for MatchKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let terminal = self.terminal.unwrap_or([b' '; TERMINAL_ID_BYTES]);
        write!(
            formatter,
            "terminal {:?}, STAN {}",
            String::from_utf8_lossy(&terminal),
            String::from_utf8_lossy(&self.stan)
        )
    }
}

/// The key `message` is matched by.
pub fn match_key(message: &Message) -> MatchKey {
    let terminal = message
        .get(field::TERMINAL)
        .and_then(|terminal| terminal.as_bytes().try_into().ok());
    let stan = message
        .get(field::STAN)
        .and_then(|stan| stan.as_bytes().try_into().ok())
        .unwrap_or([b'0'; STAN_DIGITS]);
    MatchKey { terminal, stan }
}

/// A reply, read: what the bank answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The message as received.
    pub message: Message,
}

impl Response {
    /// Field 39 (`""` when absent, which the bank never does).
    pub fn code(&self) -> &str {
        self.message.get(field::RESPONSE_CODE).unwrap_or_default()
    }

    /// True for `00`.
    pub fn approved(&self) -> bool {
        self.code() == "00"
    }

    /// True for the codes that say the request was not recorded and should be repeated: 91
    /// (busy) and 96 (unavailable).
    pub fn retry_later(&self) -> bool {
        matches!(self.code(), "91" | "96")
    }

    /// Field 38: the authorisation id of an approval.
    pub fn authorisation_id(&self) -> Option<&str> {
        self.message.get(field::AUTHORISATION_ID)
    }

    /// The ledger and the available balance of field 54, when it carries them.
    pub fn balances(&self) -> Option<(u64, u64)> {
        parse_additional_amounts(self.message.get(field::ADDITIONAL_AMOUNTS)?)
    }

    /// The movements of field 48, on an approved mini statement.
    pub fn statement(&self) -> Option<Vec<StatementEntry>> {
        parse_mini_statement(self.message.get(field::ADDITIONAL_DATA)?)
    }
}

/// What an acquirer connection counted.
#[derive(Debug, Default)]
pub struct AcquirerCounts {
    /// Replies no request was waiting for (late replies to requests given up on).
    pub unmatched: AtomicU64,
    /// Keep-alive frames received.
    pub keep_alives: AtomicU64,
}

type Pending = Arc<parking_lot::Mutex<HashMap<MatchKey, oneshot::Sender<Message>>>>;

/// Frames waiting to be written on a connection, and whether a caller is writing now.
#[derive(Default)]
struct Outbox {
    /// Whole frames, one after another, queued while another caller writes.
    queued: Vec<u8>,
    /// True while a caller writes: it writes whatever is queued before it is done.
    writing: bool,
}

/// Gives the outbox back to the next caller when the writer stops, even cancelled mid-way.
struct Writing<'a>(&'a parking_lot::Mutex<Outbox>);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing = false;
    }
}

/// One connection to the bank's ISO 8583 door, shared by any number of terminals and requests.
///
/// Requests sent while another one is being written are queued and go out with it, in one
/// write: a switch's terminals sharing the connection share the system calls too, as they
/// would on a real switch's link.
pub struct Acquirer {
    writer: Mutex<WriteHalf<Box<dyn Transport>>>,
    outbox: parking_lot::Mutex<Outbox>,
    pending: Pending,
    counts: Arc<AcquirerCounts>,
    keep_alive: Arc<Notify>,
    /// Why the reader stopped, once it has.
    closed: Arc<parking_lot::Mutex<Option<String>>>,
    /// The replies as they come, read by one of the callers waiting for one at a time (see
    /// [`Acquirer::until`]): no task of its own, so a reply wakes its caller directly.
    frames: Mutex<Frames>,
}

/// The read half of a connection, cut into frames.
type Frames = FramedRead<tokio::io::ReadHalf<Box<dyn Transport>>, FrameReader>;

impl Acquirer {
    /// Connects to the door at `address`, over TLS when `tls` is given.
    pub async fn connect(
        address: &str,
        tls: Option<&TlsSettings>,
    ) -> Result<Acquirer, AcquirerError> {
        let stream = open_stream(address, tls)
            .await
            .map_err(AcquirerError::Connect)?;
        let (read, write) = tokio::io::split(stream);
        let pending: Pending = Arc::default();
        let counts = Arc::new(AcquirerCounts::default());
        let keep_alive = Arc::new(Notify::new());
        let closed = Arc::new(parking_lot::Mutex::new(None));
        let frames = FramedRead::new(read, FrameReader::short(ISO8583_REPLY_BYTES_MAX));
        Ok(Acquirer {
            writer: Mutex::new(write),
            outbox: parking_lot::Mutex::new(Outbox::default()),
            pending,
            counts,
            keep_alive,
            closed,
            frames: Mutex::new(frames),
        })
    }

    /// What this connection counted.
    pub fn counts(&self) -> &AcquirerCounts {
        &self.counts
    }

    /// The frame of `message`: the 2-byte length, then its bytes.
    fn framed(message: &Message) -> Result<Vec<u8>, AcquirerError> {
        // The message is encoded after room for its length, so the frame is one buffer.
        let mut frame = Vec::with_capacity(FRAME_BYTES_GUESS);
        frame.extend_from_slice(&[0; SHORT_FRAME_HEADER_BYTES]);
        iso8583::encode_into(&message.mti, message.fields.iter_str(), &mut frame)?;
        let body_bytes = frame.len() - SHORT_FRAME_HEADER_BYTES;
        let length = u16::try_from(body_bytes)
            .ok()
            .filter(|_| body_bytes <= ISO8583_REPLY_BYTES_MAX)
            .ok_or_else(|| AcquirerError::Closed(format!("{body_bytes} bytes is too long")))?;
        frame[..SHORT_FRAME_HEADER_BYTES].copy_from_slice(&length.to_be_bytes());
        Ok(frame)
    }

    /// Writes `frame` (its header included) whole: at once, with whatever other callers
    /// queue meanwhile, or, when another caller is writing, queued for that one to write. A
    /// write that fails closes the connection for every request waiting on it (their frames
    /// may have been in that write).
    async fn write_all(&self, frame: &[u8]) -> Result<(), AcquirerError> {
        {
            let mut outbox = self.outbox.lock();
            outbox.queued.extend_from_slice(frame);
            if outbox.writing {
                return Ok(());
            }
            outbox.writing = true;
        }
        let _writing = Writing(&self.outbox);
        if self.pending.lock().len() > 1 {
            // Other requests are in flight: let the tasks ready to send theirs queue them, so
            // they go out in this write.
            tokio::task::yield_now().await;
        }
        let mut writer = self.writer.lock().await;
        let mut batch = Vec::new();
        loop {
            {
                let mut outbox = self.outbox.lock();
                if outbox.queued.is_empty() {
                    return Ok(());
                }
                std::mem::swap(&mut outbox.queued, &mut batch);
            }
            if let Err(error) = writer.write_all(&batch).await {
                let reason = format!("send failed: {error}");
                *self.closed.lock() = Some(reason.clone());
                // Dropping the senders wakes every waiting request with the connection closed.
                self.pending.lock().clear();
                self.outbox.lock().queued.clear();
                return Err(AcquirerError::Closed(reason));
            }
            batch.clear();
            // The buffer goes back for the next callers to queue into, if they have none.
            let mut outbox = self.outbox.lock();
            if outbox.queued.is_empty() && outbox.queued.capacity() < batch.capacity() {
                std::mem::swap(&mut outbox.queued, &mut batch);
            }
        }
    }

    /// Sends `message` without waiting for anything (an advice whose answer nobody waits for).
    pub async fn send(&self, message: &Message) -> Result<(), AcquirerError> {
        let frame = Acquirer::framed(message)?;
        self.write_all(&frame).await
    }

    /// Sends `request` and waits up to `timeout` for the reply with its (field 41, field 11).
    /// On a timeout the request is forgotten: a reply arriving later is counted as unmatched.
    pub async fn request(
        &self,
        request: &Message,
        timeout: Duration,
    ) -> Result<Response, AcquirerError> {
        let frame = Acquirer::framed(request)?;
        let key = match_key(request);
        let receiver = self.awaiting(key)?;
        if let Err(error) = self.write_all(&frame).await {
            self.pending.lock().remove(&key);
            return Err(error);
        }
        self.await_reply(key, receiver, timeout).await
    }

    /// Waits up to `timeout` for the reply a request registered with [`Acquirer::awaiting`] gets.
    async fn await_reply(
        &self,
        key: MatchKey,
        receiver: oneshot::Receiver<Message>,
        timeout: Duration,
    ) -> Result<Response, AcquirerError> {
        let mut receiver = receiver;
        match tokio::time::timeout(timeout, self.until(&mut receiver)).await {
            Ok(Some(Ok(message))) => Ok(Response { message }),
            Ok(Some(Err(_)) | None) => Err(AcquirerError::Closed(self.closed_reason())),
            Err(_) => {
                self.pending.lock().remove(&key);
                Err(AcquirerError::Timeout(timeout))
            }
        }
    }

    /// Registers a wait for the reply with `key`.
    fn awaiting(&self, key: MatchKey) -> Result<oneshot::Receiver<Message>, AcquirerError> {
        if let Some(reason) = self.closed.lock().clone() {
            return Err(AcquirerError::Closed(reason));
        }
        let (sender, receiver) = oneshot::channel();
        let mut pending = self.pending.lock();
        if pending.contains_key(&key) {
            return Err(AcquirerError::InFlight(key));
        }
        pending.insert(key, sender);
        Ok(receiver)
    }

    /// Why the connection closed, as the reader saw it.
    fn closed_reason(&self) -> String {
        self.closed
            .lock()
            .clone()
            .unwrap_or_else(|| "the reader stopped".into())
    }

    /// Sends a keep-alive (a length-0 frame) and waits up to `timeout` for the bank's.
    pub async fn keep_alive(&self, timeout: Duration) -> Result<(), AcquirerError> {
        if let Some(reason) = self.closed.lock().clone() {
            return Err(AcquirerError::Closed(reason));
        }
        let answered = self.keep_alive.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        self.write_all(&[0; SHORT_FRAME_HEADER_BYTES]).await?;
        match tokio::time::timeout(timeout, self.until(&mut answered)).await {
            Ok(Some(())) => Ok(()),
            Ok(None) => Err(AcquirerError::Closed(self.closed_reason())),
            Err(_) => Err(AcquirerError::Timeout(timeout)),
        }
    }

    /// Waits for `done` (a reply's or a keep-alive's arrival), reading the connection's frames
    /// meanwhile whenever no other caller is: the caller that reads hands every reply to the
    /// request waiting for it, its own included, and stops reading once `done`, for the next
    /// waiting caller to go on. Cancelling it (a timeout) is safe: the frames already read stay
    /// in the reader's buffer for the next one. None when the connection ended first.
    async fn until<F: std::future::Future + Unpin>(&self, done: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            output = &mut *done => Some(output),
            mut frames = self.frames.lock() => loop {
                tokio::select! {
                    biased;
                    output = &mut *done => break Some(output),
                    next = frames.next() => {
                        if self.dispatch(next) {
                            break (&mut *done).now_or_never();
                        }
                    }
                }
            },
        }
    }

    /// Hands one frame read (or the end of the connection) to whoever waits for it: a reply to
    /// its request, a keep-alive to whoever sent one. At the end, every waiting request is told
    /// the connection closed. True when the connection ended.
    fn dispatch(&self, next: Option<Result<bytes::BytesMut, CodecError>>) -> bool {
        let reason = match next {
            Some(Ok(body)) if body.is_empty() => {
                self.counts.keep_alives.fetch_add(1, Ordering::Relaxed);
                self.keep_alive.notify_waiters();
                return false;
            }
            Some(Ok(body)) => match iso8583::decode(&body) {
                Ok(message) => {
                    let waiting = self.pending.lock().remove(&match_key(&message));
                    match waiting {
                        Some(sender) => {
                            let _ = sender.send(message);
                        }
                        None => {
                            self.counts.unmatched.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(mti = %message.mti, "a reply nobody waits for");
                        }
                    }
                    return false;
                }
                Err(error) => format!("an undecodable reply: {error}"),
            },
            Some(Err(error)) => describe(&error),
            None => "the bank closed the connection".to_string(),
        };
        let mut closed = self.closed.lock();
        if closed.is_none() {
            *closed = Some(reason);
        }
        drop(closed);
        // Dropping the senders wakes every waiting request with the connection closed.
        self.pending.lock().clear();
        true
    }

    /// Signs `terminal` on and returns the reply (39 = 00 when signed on).
    pub async fn sign_on(
        &self,
        terminal: &mut Terminal,
        timeout: Duration,
    ) -> Result<Response, AcquirerError> {
        let message = terminal.sign_on();
        self.request(&message, timeout).await
    }

    /// Signs `terminal` off and returns the reply.
    pub async fn sign_off(
        &self,
        terminal: &mut Terminal,
        timeout: Duration,
    ) -> Result<Response, AcquirerError> {
        let message = terminal.sign_off();
        self.request(&message, timeout).await
    }

    /// An echo test for `terminal`; returns the reply.
    pub async fn echo(
        &self,
        terminal: &mut Terminal,
        timeout: Duration,
    ) -> Result<Response, AcquirerError> {
        let message = terminal.echo();
        self.request(&message, timeout).await
    }
}

fn describe(error: &CodecError) -> String {
    format!("receive failed: {error}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::iso8583::{decode, encode, OriginalData};

    /// 2026-01-01T00:00:00Z plus 90 s.
    fn terminal(pins: PinBlocks) -> Terminal {
        let clock = Arc::new(ManualClock::default());
        clock.advance(Duration::from_secs(90));
        Terminal::new("123456", "ATM00001", clock, pins).unwrap()
    }

    fn key() -> ZonePinKey {
        ZonePinKey::parse("0123456789ABCDEF FEDCBA9876543210").unwrap()
    }

    const HOLDER: CardHolder<'static> = CardHolder {
        pan: "123456789",
        pin: "1234",
        pin_block: None,
    };

    fn numbers(message: &Message) -> Vec<u8> {
        message.fields.keys().copied().collect()
    }

    #[test]
    fn financial_requests_carry_exactly_the_fields_the_door_requires() {
        let mut terminal = terminal(PinBlocks::Key(Box::new(key())));
        let withdrawal = terminal.withdrawal(HOLDER, 2_500).unwrap();
        assert_eq!(withdrawal.mti, "0200");
        assert_eq!(numbers(&withdrawal), vec![2, 3, 4, 7, 11, 32, 41, 52]);
        assert_eq!(withdrawal.get(2), Some("123456789"));
        assert_eq!(withdrawal.get(3), Some("010000"));
        assert_eq!(withdrawal.get(4), Some("000000002500"));
        assert_eq!(withdrawal.get(7), Some("0101000130"));
        assert_eq!(withdrawal.get(11), Some("000001"));
        assert_eq!(withdrawal.get(32), Some("123456"));
        assert_eq!(withdrawal.get(41), Some("ATM00001"));
        let expected_pin = field_52_for(&key(), "1234", "123456789").unwrap();
        assert_eq!(withdrawal.get(52), Some(expected_pin.as_str()));

        let given = CardHolder {
            pin_block: Some("0123456789ABCDEF"),
            ..HOLDER
        };
        let inquiry = terminal.balance_inquiry(given).unwrap();
        assert_eq!(inquiry.get(52), Some("0123456789ABCDEF"));
        terminal.resume_at(2);
        let deposit = terminal
            .deposit(CardHolder::new("123456789", "1234"), 700)
            .unwrap();
        assert_eq!(numbers(&deposit), vec![2, 3, 4, 7, 11, 32, 41, 52]);
        assert_eq!(deposit.get(3), Some("210000"));
        assert_eq!(deposit.get(11), Some("000002"));

        let inquiry = terminal.balance_inquiry(HOLDER).unwrap();
        assert_eq!(numbers(&inquiry), vec![2, 3, 7, 11, 32, 41, 52]);
        assert_eq!(inquiry.get(3), Some("310000"));

        let statement = terminal.mini_statement(HOLDER).unwrap();
        assert_eq!(numbers(&statement), vec![2, 3, 7, 11, 32, 41, 52]);
        assert_eq!(statement.get(3), Some("380000"));

        let transfer = terminal.transfer(HOLDER, "987654321", 50).unwrap();
        assert_eq!(numbers(&transfer), vec![2, 3, 4, 7, 11, 32, 41, 52, 103]);
        assert_eq!(transfer.get(3), Some("400000"));
        assert_eq!(transfer.get(103), Some("987654321"));
        assert_eq!(transfer.get(11), Some("000005"));
        // Every one encodes and decodes to itself.
        for message in [withdrawal, deposit, inquiry, statement, transfer] {
            assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        }
    }

    #[test]
    fn holds_completions_and_reversals_have_their_fields() {
        let mut terminal = terminal(PinBlocks::Clear).with_currency("978");
        let authorisation = terminal.authorisation(HOLDER, 4_000).unwrap();
        assert_eq!(authorisation.mti, "0100");
        assert_eq!(
            numbers(&authorisation),
            vec![2, 3, 4, 7, 11, 32, 41, 49, 52]
        );
        assert_eq!(authorisation.get(49), Some("978"));
        let clear = crate::pin_block::clear_block("1234", "123456789").unwrap();
        let clear: String = clear.iter().map(|byte| format!("{byte:02X}")).collect();
        assert_eq!(authorisation.get(52), Some(clear.as_str()));

        let completion = terminal.completion("123456789", "00000Z", 3_000);
        assert_eq!(completion.mti, "0220");
        assert_eq!(numbers(&completion), vec![2, 4, 7, 11, 32, 38, 41, 49]);
        assert_eq!(completion.get(38), Some("00000Z"));
        assert_eq!(completion.get(4), Some("000000003000"));

        let withdrawal = terminal.withdrawal(HOLDER, 2_500).unwrap();
        let full = terminal.reversal(&withdrawal, None).unwrap();
        assert_eq!(full.mti, "0420");
        assert_eq!(numbers(&full), vec![2, 7, 11, 32, 41, 90]);
        assert_eq!(full.get(11), Some("000004"));
        let original = OriginalData::parse(full.get(90).unwrap()).unwrap();
        assert_eq!(original.mti, "0200");
        assert_eq!(original.stan, "000003");
        assert_eq!(original.transmitted, "0101000130");
        assert_eq!(original.acquirer, "00000123456");
        assert_eq!(original.forwarding, "00000000000");

        let partial = terminal
            .reversal(&repeat_of(&withdrawal), Some(1_000))
            .unwrap();
        assert_eq!(numbers(&partial), vec![2, 7, 11, 32, 41, 90, 95]);
        assert_eq!(
            crate::iso8583::dispensed_amount(partial.get(95).unwrap()),
            Some(1_000)
        );
        assert_eq!(partial.get(95).map(str::len), Some(42));
        // A reversal of a repeat names the original's type.
        assert_eq!(&partial.get(90).unwrap()[..4], "0200");
        for message in [authorisation, completion, full, partial] {
            assert_eq!(decode(&encode(&message).unwrap()).unwrap(), message);
        }
    }

    #[test]
    fn repeats_keep_the_key_and_network_messages_name_the_terminal_or_not() {
        let mut terminal = terminal(PinBlocks::Clear);
        let sign_on = terminal.sign_on();
        assert_eq!(sign_on.mti, "0800");
        assert_eq!(numbers(&sign_on), vec![7, 11, 32, 41, 70]);
        assert_eq!(sign_on.get(70), Some("001"));
        assert_eq!(terminal.sign_off().get(70), Some("002"));
        assert_eq!(terminal.echo().get(70), Some("301"));
        let whole = terminal.network(network::SIGN_ON, true);
        assert_eq!(numbers(&whole), vec![7, 11, 70]);
        assert_eq!(match_key(&whole).terminal, None);
        assert_eq!(&match_key(&whole).stan, b"000004");
        assert_eq!(match_key(&sign_on).terminal.as_ref(), Some(b"ATM00001"));

        let withdrawal = terminal.withdrawal(HOLDER, 1).unwrap();
        let repeat = repeat_of(&withdrawal);
        assert_eq!(repeat.mti, "0201");
        assert_eq!(repeat.fields, withdrawal.fields);
        assert_eq!(repeat_of(&repeat).mti, "0201");
        assert_eq!(match_key(&repeat), match_key(&withdrawal));
        for (original, repeated) in [("0100", "0101"), ("0220", "0221"), ("0420", "0421")] {
            assert_eq!(repeat_of(&Message::new(original)).mti, repeated);
        }
        // The STAN grows by one per new message, never for a repeat, and wraps after 999999.
        assert_eq!(terminal.next_stan(), 6);
        terminal.resume_at(STAN_MAX);
        assert_eq!(terminal.echo().get(11), Some("999999"));
        assert_eq!(terminal.echo().get(11), Some("000001"));
        assert!(Terminal::new(
            "12a",
            "ATM00001",
            Arc::new(ManualClock::default()),
            PinBlocks::Clear
        )
        .is_err());
        assert!(Terminal::new(
            "12",
            "ATM1",
            Arc::new(ManualClock::default()),
            PinBlocks::Clear
        )
        .is_err());
    }

    /// Reads one frame of a test door's stream: its body (empty for a keep-alive).
    async fn read_frame(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await.unwrap();
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(header))];
        stream.read_exact(&mut body).await.unwrap();
        body
    }

    /// Writes one frame holding `message` (None: a keep-alive).
    async fn write_frame(stream: &mut tokio::net::TcpStream, message: Option<&Message>) {
        let body = message
            .map(|message| encode(message).unwrap())
            .unwrap_or_default();
        let mut frame = (body.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        stream.write_all(&frame).await.unwrap();
    }

    /// The answer of a test door to `request`: its type's response, fields 11 and 41, 39 = 00.
    fn answer(request: &Message) -> Message {
        let mut reply = Message::new(&crate::iso8583::response_mti(&request.mti).unwrap());
        reply
            .set(11, request.get(11).unwrap())
            .set(41, request.get(41).unwrap())
            .set(39, "00");
        reply
    }

    #[tokio::test]
    async fn replies_find_their_requests_in_any_order_and_keep_alives_are_answered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let door = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            assert!(read_frame(&mut stream).await.is_empty());
            write_frame(&mut stream, None).await;
            let first = decode(&read_frame(&mut stream).await).unwrap();
            let second = decode(&read_frame(&mut stream).await).unwrap();
            // A reply nobody asked for, then the two answers, the second request's first.
            let mut stray = answer(&first);
            stray.set(11, "999999");
            write_frame(&mut stream, Some(&stray)).await;
            write_frame(&mut stream, Some(&answer(&second))).await;
            write_frame(&mut stream, Some(&answer(&first))).await;
            // Held open until the client is done.
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut [0u8; 1]).await;
        });
        let acquirer = Acquirer::connect(&address, None).await.unwrap();
        let wait = Duration::from_secs(30);
        acquirer.keep_alive(wait).await.unwrap();
        assert_eq!(acquirer.counts().keep_alives.load(Ordering::Relaxed), 1);
        let mut terminal = terminal(PinBlocks::Clear);
        let first = terminal.withdrawal(HOLDER, 1).unwrap();
        let second = terminal.deposit(HOLDER, 2).unwrap();
        let (one, two) = tokio::join!(
            acquirer.request(&first, wait),
            acquirer.request(&second, wait)
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(one.message.get(11), first.get(11));
        assert_eq!(two.message.get(11), second.get(11));
        assert!(one.approved() && two.approved());
        assert_eq!(acquirer.counts().unmatched.load(Ordering::Relaxed), 1);
        // The same key twice at once is refused: replies could not tell them apart.
        let again = repeat_of(&first);
        let pending = acquirer.awaiting(match_key(&again)).unwrap();
        assert!(matches!(
            acquirer.request(&again, wait).await,
            Err(AcquirerError::InFlight(_))
        ));
        drop(pending);
        drop(acquirer);
        door.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_requests_share_a_connection_and_its_end_wakes_them_all() {
        const REQUESTS: usize = 48;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let door = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            // Every request, however the client's writes cut them, then the answers in reverse.
            let mut requests = Vec::new();
            while requests.len() < REQUESTS {
                requests.push(decode(&read_frame(&mut stream).await).unwrap());
            }
            for request in requests.iter().rev() {
                write_frame(&mut stream, Some(&answer(request))).await;
            }
            // Then the next request, unanswered: the connection closes under it.
            let _ = read_frame(&mut stream).await;
        });
        let acquirer = Arc::new(Acquirer::connect(&address, None).await.unwrap());
        let wait = Duration::from_secs(30);
        let mut terminal = terminal(PinBlocks::Clear);
        let requests: Vec<Message> = (0..REQUESTS)
            .map(|amount| terminal.withdrawal(HOLDER, amount as u64 + 1).unwrap())
            .collect();
        let exchanges = requests.iter().cloned().map(|request| {
            let acquirer = acquirer.clone();
            tokio::spawn(async move { (acquirer.request(&request, wait).await, request) })
        });
        for exchange in exchanges.collect::<Vec<_>>() {
            let (reply, request) = exchange.await.unwrap();
            let reply = reply.unwrap();
            assert_eq!(reply.message.get(11), request.get(11));
        }
        assert_eq!(acquirer.counts().unmatched.load(Ordering::Relaxed), 0);
        let last = terminal.withdrawal(HOLDER, 1).unwrap();
        assert!(matches!(
            acquirer.request(&last, wait).await,
            Err(AcquirerError::Closed(_))
        ));
        door.await.unwrap();
        // Closed: a keep-alive is refused at once rather than waited for.
        assert!(matches!(
            acquirer.keep_alive(wait).await,
            Err(AcquirerError::Closed(_))
        ));
    }

    #[test]
    fn a_reply_is_read_as_its_code_balances_and_statement() {
        let mut message = Message::new("0210");
        message
            .set(39, "00")
            .set(38, "0000AB")
            .set(
                54,
                iso8583::additional_amounts("978", 10_000, 7_500).unwrap(),
            )
            .set(48, "01261201WDD000000002500000000007500");
        let response = Response { message };
        assert!(response.approved() && !response.retry_later());
        assert_eq!(response.authorisation_id(), Some("0000AB"));
        assert_eq!(response.balances(), Some((10_000, 7_500)));
        let statement = response.statement().unwrap();
        assert_eq!(statement.len(), 1);
        assert_eq!((statement[0].amount, statement[0].debit), (2_500, true));
        let mut busy = Message::new("0430");
        busy.set(39, "91");
        assert!(Response { message: busy }.retry_later());
        assert_eq!(
            transmission_time(crate::clock::ManualClock::UNIX_MS_START),
            "0101000000"
        );
    }
}
