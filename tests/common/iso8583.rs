//! What the tests of the ISO 8583 door share: a server with the door, a raw connection that
//! speaks 2-byte length-prefixed ISO 8583, and builders of the messages of a test terminal.
#![allow(dead_code)]

use super::banking::{open, operator};
use super::common::TestServer;
use actor_bank::iso8583::{self, field, mti, network, Message, Transaction};
use actor_bank::pin_block::{field_52_for, ZonePinKey};
use actor_bank::server::door::iso8583::ECHOED_FIELDS;
use actor_bank::server::{Iso8583Pins, Iso8583Settings, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The zone PIN key of these tests (2-key triple DES).
pub const ZONE_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";

/// The acquirer and the terminal of these tests.
pub const ACQUIRER: &str = "123456";
pub const TERMINAL: &str = "ATM00001";

/// How long a reply may take before the test fails: far above any honest reply.
pub const REPLY_WAIT_MAX: Duration = Duration::from_secs(30);

pub fn zone_key() -> ZonePinKey {
    ZonePinKey::parse(ZONE_KEY).unwrap()
}

pub fn with_door(config: &mut ServerConfig) {
    config.iso8583 = Some(Iso8583Settings::new(
        "127.0.0.1:0".parse().unwrap(),
        Iso8583Pins::Key(Box::new(zone_key())),
    ));
}

pub fn iso_server() -> TestServer {
    TestServer::start_with(with_door)
}

/// A raw ISO 8583 connection: 2-byte big-endian lengths, no TPDU.
pub struct Link {
    stream: TcpStream,
}

impl Link {
    pub async fn connect(server: &TestServer) -> Link {
        let address = server.running().iso8583_addr().expect("the ISO 8583 door");
        Link::connect_to(&address.to_string()).await
    }

    /// A raw connection to the ISO 8583 door at `address`.
    pub async fn connect_to(address: &str) -> Link {
        Link {
            stream: TcpStream::connect(address).await.unwrap(),
        }
    }

    /// A connection whose link signed on.
    pub async fn signed_on(server: &TestServer) -> Link {
        let mut link = Link::connect(server).await;
        let (_, reply) = link.call(&network_message(network::SIGN_ON, None)).await;
        assert_eq!(reply.get(field::RESPONSE_CODE), Some("00"));
        link
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    pub async fn send(&mut self, message: &Message) {
        let body = iso8583::encode(message).unwrap();
        let mut frame = (body.len() as u16).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame).await;
    }

    /// The next frame's body; None when the server closed the connection.
    pub async fn receive(&mut self) -> Option<Vec<u8>> {
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
    pub async fn call(&mut self, message: &Message) -> (Vec<u8>, Message) {
        self.send(message).await;
        let body = self.receive().await.expect("a reply");
        let reply = iso8583::decode(&body).unwrap();
        (body, reply)
    }

    /// Sends `message` and returns its reply's response code, after checking the reply's type
    /// and echoed fields.
    pub async fn code(&mut self, message: &Message) -> String {
        let (_, reply) = self.call(message).await;
        assert_echoes(message, &reply);
        reply.get(field::RESPONSE_CODE).unwrap().to_string()
    }

    /// True once the server closed the connection (reading what may still come).
    pub async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        tokio::time::timeout(REPLY_WAIT_MAX, self.stream.read_to_end(&mut rest))
            .await
            .expect("the server closes in time")
            .is_ok()
            && rest.is_empty()
    }
}

/// The reply is of the request's response type and carries every field it echoes unchanged.
pub fn assert_echoes(request: &Message, reply: &Message) {
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

pub fn network_message(code: &str, terminal: Option<&str>) -> Message {
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
pub fn base(message_type: &str, card: u64, stan: u32) -> Message {
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

pub fn amount(value: u64) -> String {
    format!("{value:012}")
}

pub fn with_pin(mut message: Message, card: u64, pin: &str) -> Message {
    let block = field_52_for(&zone_key(), pin, &card.to_string()).unwrap();
    message.set(field::PIN_BLOCK, block);
    message
}

pub fn financial(
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

pub fn withdrawal(card: u64, pin: &str, value: u64, stan: u32) -> Message {
    financial(Transaction::Withdrawal, card, pin, Some(value), stan)
}

pub fn authorisation(card: u64, pin: &str, value: u64, stan: u32) -> Message {
    let mut message = base(mti::AUTHORISATION, card, stan);
    message
        .set(field::PROCESSING_CODE, "000000")
        .set(field::AMOUNT, amount(value));
    with_pin(message, card, pin)
}

pub fn completion(card: u64, authorisation_id: &str, value: u64, stan: u32) -> Message {
    let mut message = base(mti::COMPLETION, card, stan);
    message
        .set(field::PROCESSING_CODE, "000000")
        .set(field::AMOUNT, amount(value))
        .set(field::AUTHORISATION_ID, authorisation_id);
    message
}

/// A reversal of `original`, dispensing `dispensed` of it (none: nothing was dispensed).
pub fn reversal(original: &Message, dispensed: Option<u64>, stan: u32) -> Message {
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

pub fn repeat_of(message: &Message, repeat_type: &str) -> Message {
    let mut repeat = message.clone();
    repeat.mti = repeat_type.to_string();
    repeat
}

pub fn balances(reply: &Message) -> (u64, u64) {
    reply
        .get(field::ADDITIONAL_AMOUNTS)
        .and_then(iso8583::parse_additional_amounts)
        .expect("balances in field 54")
}

/// A card opened over the ATM protocol for a test of its own.
pub async fn opened(server: &TestServer, card: u64, pin: &str, balance: u64) {
    let mut operator = operator(server).await;
    open(&mut operator, card, pin, balance).await;
}
