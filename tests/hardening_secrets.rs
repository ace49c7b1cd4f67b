//! PINs and the operator token never reach the logs, at any level.
//!
//! This binary holds a single test because it installs the process-wide tracing subscriber: every
//! event and span of the in-process server (and the client library) is captured, at TRACE level,
//! with span creation and closing written out so that span fields show up too.
mod common;

use actor_bank::protocol::Status;
use common::TestServer;

/// Distinctive secrets, so that finding one in the log cannot be a coincidence.
const TOKEN: &str = "tok-SECRET-9c1f-2b7e4a6d8f0c1e3a5b";
const WRONG_TOKEN: &str = "tok-WRONG-77ad-6c1f3e5a7b9d0f2e4c";
// Twelve digits, the longest PINs: a shorter one could turn up by chance among the digits the log
// holds anyway (span timings, ports), and fail the test for nothing.
const PIN: &str = "804172659301";
const WRONG_PIN: &str = "313370482615";
const CARD: u64 = 555_000_111;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear_in_the_logs() {
    let capture = common::capture_all_logs();

    let server = TestServer::start_with(|config| {
        config.operator_token = Some(TOKEN.into());
    });
    let mut operator = server.client().await;
    let r = operator
        .create_account(WRONG_TOKEN, CARD, "Mallory", PIN, 100)
        .await
        .unwrap();
    assert_eq!(r.status, Status::NotAuthorised);
    let r = operator
        .create_account(TOKEN, CARD, "Mallory", PIN, 100)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Approved);
    // A malformed PIN with the right token (refused before hashing).
    let r = operator
        .create_account(TOKEN, CARD + 1, "Trent", "804172659301x", 100)
        .await
        .unwrap();
    assert_eq!(r.status, Status::InvalidRequest);

    let mut atm = server.client().await;
    let r = atm.verify(CARD, WRONG_PIN).await.unwrap();
    assert_eq!(r.status, Status::IncorrectPin);
    let r = atm.verify(CARD, PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    let r = atm.withdraw(30).await.unwrap();
    assert_eq!(r.status, Status::Approved);

    // A hostile connection that sends the secrets inside a frame the server cannot decode.
    let mut hostile = common::RawConnection::connect(&server.address()).await;
    let mut garbage = vec![0, 0, 0, 40, 1, 9, 1, 0xEE];
    garbage.extend_from_slice(TOKEN.as_bytes());
    garbage.extend_from_slice(PIN.as_bytes());
    garbage.resize(44, b'!');
    hostile.send_bytes(&garbage).await;
    assert!(hostile.closed_by_server().await);
    // A well-formed account creation carrying both secrets, with one byte too many.
    let mut hostile = server.raw().await;
    let mut body = actor_bank::codec::encode_wire(&actor_bank::protocol::ClientMessage::Request(
        actor_bank::protocol::Request {
            id: actor_bank::protocol::RequestId {
                client: 9,
                sequence: 1,
            },
            operation: actor_bank::protocol::Operation::CreateAccount {
                operator_token: TOKEN.into(),
                card: CARD + 2,
                holder: "Eve".into(),
                pin: PIN.into(),
                initial_balance: 1,
            },
        },
    ))
    .unwrap();
    body.push(0);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    hostile.send_bytes(&frame).await;
    assert!(hostile.closed_by_server().await);

    drop(atm);
    drop(operator);
    let mut server = server;
    server.server.take().unwrap().stop();

    let log = String::from_utf8_lossy(&capture.0.lock().unwrap()).into_owned();
    // The capture worked and saw the operations, so the absence below means something.
    assert!(!log.is_empty(), "nothing was logged");
    assert!(
        log.contains("create_account"),
        "the log does not mention account creation:\n{log}"
    );
    assert!(
        log.contains("verify"),
        "the log does not mention verification:\n{log}"
    );
    assert!(
        log.contains("closing connection"),
        "the hostile connection's close was not logged:\n{log}"
    );
    for secret in [TOKEN, WRONG_TOKEN, PIN, WRONG_PIN, "804172659301x"] {
        assert!(
            !log.contains(secret),
            "the secret {secret:?} appears in the log:\n{log}"
        );
    }
    eprintln!("{} bytes of log, no secret in them", log.len());
}
