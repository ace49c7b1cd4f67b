//! The ISO 8583 door against the real server over TCP: sign-on rules and keep-alives; every
//! financial message with every field of its reply; every response code the door gives; repeats
//! answered byte for byte (after a lost reply and after a restart too); the same key with other
//! content refused; reversals in full, in part, repeated and before their original; holds
//! authorised and completed; hostile frames that end only their own connection; PANs and PINs
//! kept out of the logs.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::faults::FaultPlan;
use actor_bank::iso8583::{self, field, mti, network, Message, Transaction};
use actor_bank::pin_block::{field_52_for, ZonePinKey};
use actor_bank::server::door::iso8583::ECHOED_FIELDS;
use actor_bank::server::{Iso8583Pins, Iso8583Settings, ServerConfig};
use banking::{committed, manage_ok, open, operator, wait_for};
use common::{TestServer, AHONA, JOTY, JOTY_PIN};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The zone PIN key of these tests (2-key triple DES).
const ZONE_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";

/// The acquirer and the terminal of these tests.
const ACQUIRER: &str = "123456";
const TERMINAL: &str = "ATM00001";

/// How long a reply may take before the test fails: far above any honest reply.
const REPLY_WAIT_MAX: Duration = Duration::from_secs(30);

fn zone_key() -> ZonePinKey {
    ZonePinKey::parse(ZONE_KEY).unwrap()
}

fn with_door(config: &mut ServerConfig) {
    config.iso8583 = Some(Iso8583Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        Iso8583Pins::Key(Box::new(zone_key())),
    ));
}

fn iso_server() -> TestServer {
    TestServer::start_with(with_door)
}

/// A raw ISO 8583 connection: 2-byte big-endian lengths, no TPDU.
struct Link {
    stream: TcpStream,
}

impl Link {
    async fn connect(server: &TestServer) -> Link {
        let address = server.running().iso8583_addr().expect("the ISO 8583 door");
        Link {
            stream: TcpStream::connect(address).await.unwrap(),
        }
    }

    /// A connection whose link signed on.
    async fn signed_on(server: &TestServer) -> Link {
        let mut link = Link::connect(server).await;
        let (_, reply) = link.call(&network_message(network::SIGN_ON, None)).await;
        assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
        link
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn send(&mut self, message: &Message) {
        let body = iso8583::encode(message).unwrap();
        let mut frame = (body.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame).await;
    }

    /// The next frame's body; None when the server closed the connection.
    async fn receive(&mut self) -> Option<Vec<u8>> {
        tokio::time::timeout(REPLY_WAIT_MAX, async {
            let mut length = [0u8; 2];
            self.stream.read_exact(&mut length).await.ok()?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(length))];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(body)
        })
        .await
        .expect("a reply in time")
    }

    /// Sends `message` and returns its reply, as bytes and decoded.
    async fn call(&mut self, message: &Message) -> (Vec<u8>, Message) {
        self.send(message).await;
        let body = self.receive().await.expect("a reply");
        let reply = iso8583::decode(&body).unwrap();
        (body, reply)
    }

    /// Sends `message` and returns its reply's response code, after checking the reply's type
    /// and echoed fields.
    async fn code(&mut self, message: &Message) -> String {
        let (_, reply) = self.call(message).await;
        assert_echoes(message, &reply);
        reply.get(field::RESPONSE_CODE).unwrap().to_string()
    }

    /// True once the server closed the connection (reading what may still come).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        tokio::time::timeout(REPLY_WAIT_MAX, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes in time")
            .is_ok()
            && rest.is_empty()
    }
}

/// The reply is of the request's response type and carries every field it echoes unchanged.
fn assert_echoes(request: &Message, reply: &Message) {
    let expected = match request.mti.as_str() {
        mti::FINANCIAL | mti::FINANCIAL_REPEAT => mti::FINANCIAL_RESPONSE,
        mti::AUTHORISATION | mti::AUTHORISATION_REPEAT => mti::AUTHORISATION_RESPONSE,
        mti::COMPLETION | mti::COMPLETION_REPEAT => mti::COMPLETION_RESPONSE,
        mti::REVERSAL | mti::REVERSAL_REPEAT => mti::REVERSAL_RESPONSE,
        mti::NETWORK => mti::NETWORK_RESPONSE,
        other => panic!("no reply type for {other}"),
    };
    assert_eq!(reply.mti, expected);
    for number in ECHOED_FIELDS {
        assert_eq!(
            reply.get(number),
            request.get(number),
            "field {number} echoed"
        );
    }
    // The PIN block is never sent back.
    assert_eq!(reply.get(field::PIN_BLOCK), None);
}

fn network_message(code: &str, terminal: Option<&str>) -> Message {
    let mut message = Message::new(mti::NETWORK);
    message
        .set(field::TRANSMITTED, "1201120000")
        .set(field::STAN, "000001")
        .set(field::NETWORK_CODE, code);
    if let Some(terminal) = terminal {
        message.set(field::TERMINAL, terminal);
    }
    message
}

/// The fields every message of the test terminal has: card, transmission time, trace number,
/// local time and date, acquirer, retrieval reference, terminal, currency.
fn base(message_type: &str, card: u64, stan: u32) -> Message {
    let mut message = Message::new(message_type);
    message
        .set(field::PAN, card.to_string())
        .set(field::TRANSMITTED, "1201120000")
        .set(field::STAN, format!("{stan:06}"))
        .set(field::LOCAL_TIME, "120000")
        .set(field::LOCAL_DATE, "1201")
        .set(field::ACQUIRER, ACQUIRER)
        .set(field::RETRIEVAL_REFERENCE, format!("RRN{stan:09}"))
        .set(field::TERMINAL, TERMINAL)
        .set(field::CURRENCY, "978");
    message
}

fn amount(value: u64) -> String {
    format!("{value:012}")
}

fn with_pin(mut message: Message, card: u64, pin: &str) -> Message {
    let block = field_52_for(&zone_key(), pin, &card.to_string()).unwrap();
    message.set(field::PIN_BLOCK, block);
    message
}

fn financial(
    transaction: Transaction,
    card: u64,
    pin: &str,
    value: Option<u64>,
    stan: u32,
) -> Message {
    let mut message = base(mti::FINANCIAL, card, stan);
    message.set(field::PROCESSING_CODE, transaction.processing_code());
    if let Some(value) = value {
        message.set(field::AMOUNT, amount(value));
    }
    with_pin(message, card, pin)
}

fn withdrawal(card: u64, pin: &str, value: u64, stan: u32) -> Message {
    financial(Transaction::Withdrawal, card, pin, Some(value), stan)
}

fn authorisation(card: u64, pin: &str, value: u64, stan: u32) -> Message {
    let mut message = base(mti::AUTHORISATION, card, stan);
    message
        .set(field::PROCESSING_CODE, "000000")
        .set(field::AMOUNT, amount(value));
    with_pin(message, card, pin)
}

fn completion(card: u64, authorisation_id: &str, value: u64, stan: u32) -> Message {
    let mut message = base(mti::COMPLETION, card, stan);
    message
        .set(field::PROCESSING_CODE, "000000")
        .set(field::AMOUNT, amount(value))
        .set(field::AUTHORISATION_ID, authorisation_id);
    message
}

/// A reversal of `original`, dispensing `dispensed` of it (none: nothing was dispensed).
fn reversal(original: &Message, dispensed: Option<u64>, stan: u32) -> Message {
    let card: u64 = original.get(field::PAN).unwrap().parse().unwrap();
    let mut message = base(mti::REVERSAL, card, stan);
    message
        .set(
            field::PROCESSING_CODE,
            original.get(field::PROCESSING_CODE).unwrap(),
        )
        .set(field::AMOUNT, original.get(field::AMOUNT).unwrap())
        .set(
            field::ORIGINAL_DATA,
            format!(
                "{}{}{}{:0>11}{:0>11}",
                original.mti,
                original.get(field::STAN).unwrap(),
                original.get(field::TRANSMITTED).unwrap(),
                original.get(field::ACQUIRER).unwrap(),
                "0"
            ),
        );
    if let Some(dispensed) = dispensed {
        message.set(
            field::REPLACEMENT_AMOUNTS,
            format!("{}{:030}", amount(dispensed), 0),
        );
    }
    message
}

fn repeat_of(message: &Message, repeat_type: &str) -> Message {
    let mut repeat = message.clone();
    repeat.mti = repeat_type.to_string();
    repeat
}

fn balances(reply: &Message) -> (u64, u64) {
    reply
        .get(field::ADDITIONAL_AMOUNTS)
        .and_then(iso8583::parse_additional_amounts)
        .expect("balances in field 54")
}

/// A card opened over the ATM protocol for a test of its own.
async fn opened(server: &TestServer, card: u64, pin: &str, balance: u64) {
    let mut operator = operator(server).await;
    open(&mut operator, card, pin, balance).await;
}

/// Keep-alives are answered in kind at any time; nothing but network management is answered
/// before a sign-on; a sign-on is for the link or for one terminal; a sign-off ends it.
#[tokio::test]
async fn a_link_signs_on_before_anything_financial_and_keep_alives_are_answered_in_kind() {
    let server = iso_server();
    let mut link = Link::connect(&server).await;
    link.send_raw(&[0, 0]).await;
    assert_eq!(link.receive().await, Some(Vec::new()));
    assert_eq!(link.code(&network_message(network::ECHO, None)).await, "58");
    let early = withdrawal(JOTY, JOTY_PIN, 100, 2);
    assert_eq!(link.code(&early).await, "58");
    assert_eq!(
        link.code(&network_message(network::SIGN_OFF, None)).await,
        "58"
    );
    assert_eq!(link.code(&network_message("999", None)).await, "12");
    assert_eq!(
        link.code(&network_message(network::SIGN_ON, None)).await,
        "00"
    );
    assert_eq!(link.code(&network_message(network::ECHO, None)).await, "00");
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 3)).await, "00");
    assert_eq!(
        link.code(&network_message(network::SIGN_OFF, None)).await,
        "00"
    );
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 4)).await, "58");
    // Nothing the refused messages asked happened.
    assert_eq!(committed(&server, JOTY).balance, 9_900);

    // One terminal signs on: its messages are answered, another terminal's are not.
    let mut terminals = Link::connect(&server).await;
    assert_eq!(
        terminals
            .code(&network_message(network::SIGN_ON, Some(TERMINAL)))
            .await,
        "00"
    );
    assert_eq!(
        terminals.code(&withdrawal(JOTY, JOTY_PIN, 100, 5)).await,
        "00"
    );
    let mut other = withdrawal(JOTY, JOTY_PIN, 100, 6);
    other.set(field::TERMINAL, "ATM00002");
    assert_eq!(terminals.code(&other).await, "58");
    link.send_raw(&[0, 0]).await;
    assert_eq!(link.receive().await, Some(Vec::new()));
}

/// Withdrawal, balance inquiry, deposit, transfer and mini statement: each approved with its
/// authorisation id and the balances after it, echoing the request's fields.
#[tokio::test]
async fn every_financial_transaction_is_answered_with_its_balances() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;

    let (_, reply) = link.call(&withdrawal(JOTY, JOTY_PIN, 300, 10)).await;
    assert_echoes(&withdrawal(JOTY, JOTY_PIN, 300, 10), &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(reply.get(field::AUTHORISATION_ID).map(str::len), Some(6));
    assert_eq!(balances(&reply), (9_700, 9_700));

    let inquiry = financial(Transaction::BalanceInquiry, JOTY, JOTY_PIN, None, 11);
    let (_, reply) = link.call(&inquiry).await;
    assert_echoes(&inquiry, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_700, 9_700));

    let deposit = financial(Transaction::Deposit, JOTY, JOTY_PIN, Some(1_000), 12);
    let (_, reply) = link.call(&deposit).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_700, 10_700));

    let mut transfer = financial(Transaction::Transfer, JOTY, JOTY_PIN, Some(700), 13);
    transfer.set(field::TO_ACCOUNT, AHONA.to_string());
    let (_, reply) = link.call(&transfer).await;
    assert_echoes(&transfer, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_000, 10_000));
    wait_for("the transfer delivered", || {
        committed(&server, AHONA).balance == 5_700
    })
    .await;

    let statement = financial(Transaction::MiniStatement, JOTY, JOTY_PIN, None, 14);
    let (_, reply) = link.call(&statement).await;
    assert_echoes(&statement, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    let entries = reply
        .get(field::ADDITIONAL_DATA)
        .and_then(iso8583::parse_mini_statement)
        .expect("a mini statement in field 48");
    let moved: Vec<(&str, bool, u64, u64)> = entries
        .iter()
        .map(|entry| {
            (
                entry.kind.as_str(),
                entry.debit,
                entry.amount,
                entry.balance_after,
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            ("OP", false, 10_000, 10_000),
            ("WD", true, 300, 9_700),
            ("DP", false, 1_000, 10_700),
            ("TO", true, 700, 10_000),
        ]
    );
}

/// The declines an issuer gives, each with its code and nothing moved: insufficient funds (51,
/// with the balances), a wrong PIN (55) and the one that locks the card (75), an unknown card
/// (14), a frozen (62) and a closed (57) account, the daily amount (61) and count (65) limits, a
/// transaction the bank does not offer (12), a missing field (30), another currency (13).
#[tokio::test]
async fn every_decline_carries_its_response_code_and_moves_nothing() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let (_, reply) = link.call(&withdrawal(JOTY, JOTY_PIN, 1_000_000, 20)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("51"));
    assert_eq!(reply.get(field::AUTHORISATION_ID), None);
    assert_eq!(balances(&reply), (10_000, 10_000));

    const LOCKING: u64 = 41_001;
    opened(&server, LOCKING, "4821", 500).await;
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 21)).await, "55");
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 22)).await, "55");
    assert_eq!(link.code(&withdrawal(LOCKING, "1111", 10, 23)).await, "75");
    assert_eq!(link.code(&withdrawal(LOCKING, "4821", 10, 24)).await, "75");
    assert_eq!(link.code(&withdrawal(55_555, "4821", 10, 25)).await, "14");

    const FROZEN: u64 = 41_002;
    const CLOSED: u64 = 41_003;
    const LIMITED: u64 = 41_004;
    opened(&server, FROZEN, "4821", 500).await;
    opened(&server, CLOSED, "4821", 0).await;
    opened(&server, LIMITED, "4821", 500).await;
    let mut operator = operator(&server).await;
    use actor_bank::client::ops::Management;
    manage_ok(&mut operator, FROZEN, Management::Freeze).await;
    manage_ok(&mut operator, CLOSED, Management::Close).await;
    manage_ok(
        &mut operator,
        LIMITED,
        Management::SetLimits(banking::limits(150, 2)),
    )
    .await;
    assert_eq!(link.code(&withdrawal(FROZEN, "4821", 10, 26)).await, "62");
    assert_eq!(link.code(&withdrawal(CLOSED, "4821", 10, 27)).await, "57");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 200, 28)).await, "61");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 29)).await, "00");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 30)).await, "00");
    assert_eq!(link.code(&withdrawal(LIMITED, "4821", 10, 31)).await, "65");

    let mut unknown = withdrawal(JOTY, JOTY_PIN, 10, 32);
    unknown.set(field::PROCESSING_CODE, "990000");
    assert_eq!(link.code(&unknown).await, "12");
    let mut missing = withdrawal(JOTY, JOTY_PIN, 10, 33);
    missing.fields.remove(&field::AMOUNT);
    assert_eq!(link.code(&missing).await, "30");
    let mut unsigned = withdrawal(JOTY, JOTY_PIN, 10, 34);
    unsigned.fields.remove(&field::PIN_BLOCK);
    assert_eq!(link.code(&unsigned).await, "30");
    let mut dollars = withdrawal(JOTY, JOTY_PIN, 10, 35);
    dollars.set(field::CURRENCY, "840");
    assert_eq!(link.code(&dollars).await, "13");

    assert_eq!(committed(&server, JOTY).balance, 10_000);
    assert_eq!(committed(&server, LOCKING).balance, 500);
    assert_eq!(committed(&server, FROZEN).balance, 500);
    assert_eq!(committed(&server, LIMITED).balance, 480);
}

/// A repeat gets its original's reply byte for byte and moves nothing again: on the same
/// connection, after the reply was lost with its connection, and after a restart. The same key
/// with other content is refused with 94 and moves nothing.
#[tokio::test]
async fn a_repeat_gets_the_original_reply_byte_for_byte_and_moves_money_once() {
    let mut server = iso_server();
    let original = withdrawal(JOTY, JOTY_PIN, 300, 40);
    let (first, _) = Link::signed_on(&server).await.call(&original).await;
    let mut link = Link::signed_on(&server).await;
    let (again, _) = link
        .call(&repeat_of(&original, mti::FINANCIAL_REPEAT))
        .await;
    assert_eq!(again, first);
    assert_eq!(committed(&server, JOTY).balance, 9_700);

    // The reply is lost with its connection; the acquirer repeats on a new one.
    let lost = withdrawal(JOTY, JOTY_PIN, 200, 41);
    let mut cut = Link::signed_on(&server).await;
    cut.send(&lost).await;
    drop(cut);
    wait_for("the lost withdrawal applied", || {
        committed(&server, JOTY).balance == 9_500
    })
    .await;
    let (repeated, reply) = link.call(&repeat_of(&lost, mti::FINANCIAL_REPEAT)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_500, 9_500));

    let mut other = withdrawal(JOTY, JOTY_PIN, 999, 40);
    other.mti = mti::FINANCIAL_REPEAT.into();
    assert_eq!(link.code(&other).await, "94");
    let mut deposit = financial(Transaction::Deposit, JOTY, JOTY_PIN, Some(300), 40);
    deposit.mti = mti::FINANCIAL_REPEAT.into();
    assert_eq!(link.code(&deposit).await, "94");
    assert_eq!(committed(&server, JOTY).balance, 9_500);

    server.restart(with_door);
    let mut link = Link::signed_on(&server).await;
    let (after_restart, _) = link
        .call(&repeat_of(&original, mti::FINANCIAL_REPEAT))
        .await;
    assert_eq!(after_restart, first);
    let (after_restart, _) = link.call(&repeat_of(&lost, mti::FINANCIAL_REPEAT)).await;
    assert_eq!(after_restart, repeated);
    assert_eq!(committed(&server, JOTY).balance, 9_500);
}

/// Reversals: in full, in part (field 95), repeated (the same 0430, nothing moves twice), of a
/// declined original (12), dispensing more than the original (13), and before their original,
/// which is then declined with 94 and never debits.
#[tokio::test]
async fn reversals_give_back_once_whenever_they_arrive() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let original = withdrawal(JOTY, JOTY_PIN, 300, 50);
    assert_eq!(link.code(&original).await, "00");
    let full = reversal(&original, None, 51);
    let (acknowledged, reply) = link.call(&full).await;
    assert_echoes(&full, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_000, 10_000));
    let (again, _) = link.call(&repeat_of(&full, mti::REVERSAL_REPEAT)).await;
    assert_eq!(again, acknowledged);
    assert_eq!(committed(&server, JOTY).balance, 10_000);

    let partly = withdrawal(JOTY, JOTY_PIN, 300, 52);
    assert_eq!(link.code(&partly).await, "00");
    let (_, reply) = link.call(&reversal(&partly, Some(100), 53)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_900, 9_900));

    let declined = withdrawal(JOTY, JOTY_PIN, 1_000_000, 54);
    assert_eq!(link.code(&declined).await, "51");
    assert_eq!(link.code(&reversal(&declined, None, 55)).await, "12");
    let small = withdrawal(JOTY, JOTY_PIN, 100, 56);
    assert_eq!(link.code(&small).await, "00");
    assert_eq!(link.code(&reversal(&small, Some(500), 57)).await, "13");
    assert_eq!(committed(&server, JOTY).balance, 9_800);

    // The reversal arrives first: acknowledged, and the original, arriving late, never debits.
    let late = withdrawal(JOTY, JOTY_PIN, 400, 58);
    assert_eq!(link.code(&reversal(&late, None, 59)).await, "00");
    assert_eq!(link.code(&late).await, "94");
    assert_eq!(committed(&server, JOTY).balance, 9_800);
}

/// An authorisation holds the amount (0110 with the hold's id in field 38); its completion
/// posts less and releases the rest; a repeat of the completion gets the same 0230; a
/// completion for zero voids a hold; an unknown hold is 25, a resolved one 12.
#[tokio::test]
async fn an_authorisation_holds_and_its_completion_posts_it() {
    let server = iso_server();
    let mut link = Link::signed_on(&server).await;
    let hold = authorisation(JOTY, JOTY_PIN, 500, 60);
    let (_, reply) = link.call(&hold).await;
    assert_echoes(&hold, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (10_000, 9_500));
    let hold_id = reply.get(field::AUTHORISATION_ID).unwrap().to_string();
    assert_eq!(iso8583::parse_authorisation_id(&hold_id), Some(1));

    let complete = completion(JOTY, &hold_id, 300, 61);
    let (completed, reply) = link.call(&complete).await;
    assert_echoes(&complete, &reply);
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_700, 9_700));
    let (again, _) = link
        .call(&repeat_of(&complete, mti::COMPLETION_REPEAT))
        .await;
    assert_eq!(again, completed);
    assert_eq!(link.code(&completion(JOTY, &hold_id, 300, 62)).await, "12");

    let second = authorisation(JOTY, JOTY_PIN, 200, 63);
    let (_, reply) = link.call(&second).await;
    let second_id = reply.get(field::AUTHORISATION_ID).unwrap().to_string();
    let (_, reply) = link.call(&completion(JOTY, &second_id, 0, 64)).await;
    assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
    assert_eq!(balances(&reply), (9_700, 9_700));
    assert_eq!(link.code(&completion(JOTY, "00ZZZZ", 10, 65)).await, "25");
    let account = committed(&server, JOTY);
    assert_eq!((account.balance, account.available()), (9_700, 9_700));
}

/// A request arriving while the connection's in-flight limit is reached is answered 91 at once
/// (every reply is held back 5 s, so the first is surely still in flight), and the journal's
/// failure is 96.
#[tokio::test]
async fn busy_is_91_and_a_failed_journal_is_96() {
    let server = TestServer::start_with(|config| {
        with_door(config);
        config.limits.requests_in_flight_max = 1;
        config.faults = Some(FaultPlan {
            drop_request: 0.0,
            drop_reply: 0.0,
            crash_actor: 0.0,
            delay: Duration::from_secs(5),
            seed: 1,
        });
    });
    let mut link = Link::signed_on(&server).await;
    let first = withdrawal(JOTY, JOTY_PIN, 100, 70);
    let second = withdrawal(JOTY, JOTY_PIN, 100, 71);
    link.send(&first).await;
    link.send(&second).await;
    let busy = iso8583::decode(&link.receive().await.unwrap()).unwrap();
    assert_eq!(busy.get(field::STAN), Some("000071"));
    assert_eq!(busy.get(field::RESPONSE_CODE), Some("91"));
    let done = iso8583::decode(&link.receive().await.unwrap()).unwrap();
    assert_eq!(done.get(field::STAN), Some("000070"));
    assert_eq!(done.get(field::RESPONSE_CODE), Some("00"));
    drop(server);

    let directory = tempfile::tempdir().unwrap();
    let mut config = common::test_config(directory.path());
    with_door(&mut config);
    actor_bank::server::RunningServer::start(config.clone())
        .unwrap()
        .stop();
    let mut journal = actor_bank::server::journal_config(&config);
    journal.files = std::sync::Arc::new(actor_bank::journal::files::FullDisk::new(0));
    let failing = TestServer::around(
        directory,
        actor_bank::server::RunningServer::start_with_journal(config, journal).unwrap(),
    );
    let mut link = Link::signed_on(&failing).await;
    assert_eq!(link.code(&withdrawal(JOTY, JOTY_PIN, 100, 72)).await, "96");
}

/// An oversize frame, a message that does not decode, and a response sent as a request each end
/// their own connection without a reply; the door goes on serving the others.
#[tokio::test]
async fn hostile_frames_end_only_their_own_connection() {
    let server = iso_server();
    let mut oversize = Link::signed_on(&server).await;
    oversize.send_raw(&[0x10, 0x01]).await;
    oversize.send_raw(&[b'0'; 64]).await;
    assert!(oversize.closed().await);

    let mut garbage = Link::signed_on(&server).await;
    garbage.send_raw(&[0, 6]).await;
    garbage.send_raw(b"02x0zz").await;
    assert!(garbage.closed().await);

    let mut response = Link::signed_on(&server).await;
    let mut reply = withdrawal(JOTY, JOTY_PIN, 100, 80);
    reply.mti = mti::FINANCIAL_RESPONSE.into();
    response.send(&reply).await;
    assert!(response.closed().await);

    let mut honest = Link::signed_on(&server).await;
    assert_eq!(
        honest.code(&withdrawal(JOTY, JOTY_PIN, 100, 81)).await,
        "00"
    );
    assert_eq!(committed(&server, JOTY).balance, 9_900);
}
