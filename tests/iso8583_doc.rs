//! docs/ISO8583.md's worked example cannot drift from the door.
//!
//! Between `<!-- worked-example: begin -->` and `<!-- worked-example: end -->` the document holds
//! two fenced blocks, `request` and `reply`: one frame each, in hex (its 2-byte length first;
//! after a `|`, a line's commentary). This test decodes the documented request and checks the
//! fields the document's table gives, starts a real server with the demo accounts and the
//! document's test zone PIN key, signs on, sends the documented request and checks that the
//! reply is the documented one byte for byte; then that a repeat (0201) is answered with the
//! same bytes.

mod common;

use actor_bank::iso8583::{decode, encode, field, parse_additional_amounts, Message};
use actor_bank::pin_block::{field_52_for, ZonePinKey};
use actor_bank::server::{Iso8583Pins, Iso8583Settings};
use common::{TestServer, JOTY, JOTY_PIN};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The test zone PIN key the document gives (2-key TDES; public, tests only).
const TEST_ZONE_PIN_KEY: &str = "0123456789ABCDEFFEDCBA9876543210";

/// The withdrawal of the example, in minor units.
const AMOUNT: u64 = 2_500;

/// Joty's opening balance (the demo accounts).
const OPENING_BALANCE: u64 = 10_000;

/// How long a reply may take (generous: the machine is shared).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

const BEGIN: &str = "<!-- worked-example: begin -->";
const END: &str = "<!-- worked-example: end -->";

fn document() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ISO8583.md");
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The lines of the fenced block labelled `label` between the worked example's markers.
fn block(document: &str, label: &str) -> Vec<String> {
    let start = document
        .find(BEGIN)
        .unwrap_or_else(|| panic!("docs/ISO8583.md has no {BEGIN}"));
    let end = document[start..]
        .find(END)
        .unwrap_or_else(|| panic!("docs/ISO8583.md has no {END} after {BEGIN}"));
    let section = &document[start..start + end];
    let opening = format!("```{label}");
    let mut lines = section.lines().skip_while(|line| line.trim() != opening);
    assert!(
        lines.next().is_some(),
        "the worked example has no block {opening}"
    );
    lines
        .take_while(|line| !line.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// The frame a block shows: the hex pairs before each line's `|`.
fn frame(document: &str, label: &str) -> Vec<u8> {
    let bytes = common::hex_dump_bytes(&block(document, label), &format!("the {label} block"));
    assert!(bytes.len() >= 2, "the {label} block holds no frame");
    let length = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
    assert_eq!(
        length,
        bytes.len() - 2,
        "the {label} frame's length prefix does not match its body"
    );
    bytes
}

/// Writes `body` as one frame.
fn send(stream: &mut TcpStream, body: &[u8]) {
    let length = u16::try_from(body.len()).unwrap();
    stream.write_all(&length.to_be_bytes()).unwrap();
    stream.write_all(body).unwrap();
}

/// Reads one whole frame (its length prefix included).
fn receive(stream: &mut TcpStream) -> Vec<u8> {
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).unwrap();
    let mut frame = prefix.to_vec();
    frame.resize(2 + usize::from(u16::from_be_bytes(prefix)), 0);
    stream.read_exact(&mut frame[2..]).unwrap();
    frame
}

#[test]
fn the_documented_request_is_the_withdrawal_the_document_describes() {
    let document = document();
    let request = frame(&document, "request");
    let message = decode(&request[2..]).unwrap();
    assert_eq!(message.mti, "0200");
    let card = JOTY.to_string();
    let key = ZonePinKey::parse(TEST_ZONE_PIN_KEY).unwrap();
    let amount = format!("{AMOUNT:012}");
    let pin_block = field_52_for(&key, JOTY_PIN, &card).unwrap();
    let expected: [(u8, &str); 12] = [
        (field::PAN, card.as_str()),
        (field::PROCESSING_CODE, "010000"),
        (field::AMOUNT, &amount),
        (field::TRANSMITTED, "1201120000"),
        (field::STAN, "000001"),
        (field::LOCAL_TIME, "120000"),
        (field::LOCAL_DATE, "1201"),
        (field::ACQUIRER, "123456"),
        (field::RETRIEVAL_REFERENCE, "000000000001"),
        (field::TERMINAL, "ATM00001"),
        (field::CURRENCY, "978"),
        (field::PIN_BLOCK, &pin_block),
    ];
    assert_eq!(message.fields.len(), expected.len(), "{message:?}");
    for (number, value) in expected {
        assert_eq!(message.get(number), Some(value), "field {number}");
    }
    // The documented text of field 52 too, so the page and the code agree on the example.
    assert!(document.contains(message.get(field::PIN_BLOCK).unwrap()));
}

#[test]
fn a_real_server_answers_the_documented_request_with_the_documented_reply() {
    let document = document();
    let request = frame(&document, "request");
    let reply = frame(&document, "reply");

    // The documented reply says what the document says it does.
    let answer = decode(&reply[2..]).unwrap();
    assert_eq!(answer.mti, "0210");
    assert_eq!(answer.get(field::RESPONSE_CODE), Some("00"));
    let balance = OPENING_BALANCE - AMOUNT;
    assert_eq!(
        answer
            .get(field::ADDITIONAL_AMOUNTS)
            .and_then(parse_additional_amounts),
        Some((balance, balance))
    );

    let key = ZonePinKey::parse(TEST_ZONE_PIN_KEY).unwrap();
    let server = TestServer::start_with(|config| {
        config.iso8583 = Some(Iso8583Settings::new(
            "127.0.0.1:0".parse().unwrap(),
            Iso8583Pins::Key(Box::new(key)),
        ));
    });
    let address = server
        .running()
        .iso8583_addr()
        .expect("the ISO 8583 door is on");
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();

    let mut sign_on = Message::new("0800");
    sign_on
        .set(field::TRANSMITTED, "1201115959")
        .set(field::STAN, "000900")
        .set(field::NETWORK_CODE, "001");
    send(&mut stream, &encode(&sign_on).unwrap());
    let signed_on = decode(&receive(&mut stream)[2..]).unwrap();
    assert_eq!(signed_on.mti, "0810");
    assert_eq!(signed_on.get(field::RESPONSE_CODE), Some("00"));

    send(&mut stream, &request[2..]);
    let got = receive(&mut stream);
    assert_eq!(
        got,
        reply,
        "the server's reply differs from the document's:\n  got      {}\n  document {}",
        String::from_utf8_lossy(&got[2..]),
        String::from_utf8_lossy(&reply[2..])
    );

    // A repeat (0201) of the same request gets the same bytes, and nothing moves twice.
    let mut repeat = request[2..].to_vec();
    repeat[..4].copy_from_slice(b"0201");
    send(&mut stream, &repeat);
    assert_eq!(receive(&mut stream), reply);
}
