//! No PAN, PIN or PIN block of an ISO 8583 message reaches the logs, at the most verbose level:
//! cards appear masked (first 6, last 4 digits), PINs and PIN blocks not at all, whether the
//! message is approved, declined for its PIN, reversed or refused undecoded.
#[path = "common/banking.rs"]
mod banking;
mod common;
#[path = "common/iso8583.rs"]
mod iso;

use actor_bank::iso8583::field;
use iso::*;

// Sixteen digits, masked as 411111******1111. Twelve-digit PINs: a shorter one could turn up by
// chance among the digits a log holds anyway (timings, ports).
const CARD: u64 = 4_111_111_111_111_111;
const PIN: &str = "804172659301";
const WRONG_PIN: &str = "313370482615";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pans_pins_and_pin_blocks_never_appear_in_the_logs() {
    let capture = common::capture_all_logs();

    let mut server = iso_server();
    opened(&server, CARD, PIN, 10_000).await;
    let mut link = Link::signed_on(&server).await;
    let wrong = withdrawal(CARD, WRONG_PIN, 100, 1);
    assert_eq!(link.code(&wrong).await, "55");
    let right = withdrawal(CARD, PIN, 100, 2);
    assert_eq!(link.code(&right).await, "00");
    assert_eq!(link.code(&reversal(&right, None, 3)).await, "00");
    // A message cut off after its PIN block's first bytes, which the door cannot decode.
    let mut hostile = Link::signed_on(&server).await;
    let mut body = actor_bank::iso8583::encode(&right).unwrap();
    body.push(b'!');
    let mut frame = (body.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    hostile.send_raw(&frame).await;
    assert!(hostile.closed().await);
    drop(link);
    server.server.take().unwrap().stop();

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    // The capture saw the messages, so the absences below mean something.
    assert!(log.contains("iso8583 listener"), "{log}");
    assert!(log.contains("withdraw"), "{log}");
    assert!(
        log.contains("411111******1111"),
        "the failed PIN is logged masked:\n{log}"
    );
    for secret in [
        CARD.to_string(),
        PIN.to_string(),
        WRONG_PIN.to_string(),
        wrong.get(field::PIN_BLOCK).unwrap().to_string(),
        right.get(field::PIN_BLOCK).unwrap().to_string(),
    ] {
        assert!(
            !log.contains(&secret),
            "{secret} appears in the log:\n{log}"
        );
    }
}
