//! Bad input ends only the connection that sent it: garbage, a 4 GiB length prefix, a frame over
//! the limit, a truncated frame, an undecodable body, an unknown enum variant, trailing bytes, a
//! request before the Hello, a wrong protocol version, a second Hello. Each time the server says
//! goodbye (best effort) and closes that connection, and keeps serving every other one.
mod common;
use common::{reply, JOTY, JOTY_PIN};

use actor_bank::codec::{encode_frame, encode_wire};
use actor_bank::protocol::{
    Body, ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, Status,
    PROTOCOL_VERSION,
};
use common::{RawConnection, TestServer};
use std::sync::atomic::Ordering;
use tokio::io::AsyncWriteExt;

fn hello_frame(protocol_version: u32) -> Vec<u8> {
    encode_frame(&ClientMessage::Hello(Hello { protocol_version })).unwrap()
}

/// A frame with the given body bytes.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Reads what the server sends until it closes the connection: at most a Goodbye (it is best
/// effort), nothing else. Returns the Goodbye's reason, if one came.
async fn ends_with_goodbye(connection: &mut RawConnection) -> Option<String> {
    let reason = match connection.receive_body().await {
        None => None,
        Some(body) => match actor_bank::codec::decode_wire::<ServerMessage>(&body) {
            Ok(ServerMessage::Goodbye(goodbye)) => Some(goodbye.reason),
            other => panic!("expected a Goodbye or the end of the connection, got {other:?}"),
        },
    };
    assert!(
        connection.closed_by_server().await,
        "the server kept the connection open"
    );
    reason
}

/// The server still serves: a new connection logs in, withdraws and reads the exact balance.
async fn still_serves(server: &TestServer, client: u64, expected_balance_after: u64) {
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(
            client,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r, reply(client, 1, Status::Approved, Body::Empty));
    let (r, _) = atm
        .exchange(client, 2, Operation::Withdraw { amount: 1 })
        .await;
    assert_eq!(
        r,
        reply(
            client,
            2,
            Status::Approved,
            common::balances(expected_balance_after)
        )
    );
}

/// Every bad-input case: the bytes sent on a fresh connection (after a good Hello when
/// `greet` is true), and a piece of the Goodbye reason expected when one arrives.
fn cases() -> Vec<(&'static str, bool, Vec<u8>, &'static str)> {
    let request_body = |operation_variant: u8| {
        // ClientMessage::Request (1), client 9 (varint), sequence 1 (varint), the operation.
        vec![1, 9, 1, operation_variant]
    };
    let mut trailing = encode_wire(&ClientMessage::Request(Request {
        id: RequestId {
            client: 9,
            sequence: 1,
        },
        operation: Operation::IsPrime { number: 7 },
    }))
    .unwrap();
    trailing.push(0);
    vec![
        (
            "garbage text",
            false,
            b"GET / HTTP/1.1\r\nHost: bank\r\n\r\n".to_vec(),
            "exceeds",
        ),
        (
            "a 4 GiB length prefix",
            false,
            vec![0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3],
            "exceeds",
        ),
        (
            "a 4 GiB length prefix after the hello",
            true,
            vec![0xFF, 0xFF, 0xFF, 0xFF],
            "exceeds",
        ),
        (
            "a length one byte over the limit",
            true,
            {
                let mut bytes = (64 * 1024 + 1u32).to_be_bytes().to_vec();
                bytes.extend([0u8; 64]);
                bytes
            },
            "exceeds",
        ),
        ("an empty body", false, frame(&[]), "malformed"),
        (
            "random bytes as a body",
            false,
            frame(&[0xFF; 9]),
            "malformed",
        ),
        (
            "an unknown ClientMessage variant",
            false,
            frame(&[2, 0]),
            "malformed",
        ),
        (
            "an unknown ClientMessage variant after the hello",
            true,
            frame(&[7]),
            "malformed",
        ),
        (
            "an unknown Operation variant",
            true,
            frame(&request_body(9)),
            "malformed",
        ),
        (
            "an Operation variant far out of range",
            true,
            frame(&request_body(250)),
            "malformed",
        ),
        (
            "a body with trailing bytes",
            true,
            frame(&trailing),
            "unexpected bytes",
        ),
        (
            "a request before the hello",
            false,
            common::request_frame(9, 1, Operation::IsPrime { number: 7 }),
            "before the Hello",
        ),
        (
            "protocol version 1",
            false,
            hello_frame(1),
            "protocol version 1 is not supported",
        ),
        (
            "protocol version 3",
            false,
            hello_frame(3),
            "protocol version 3 is not supported",
        ),
        (
            "protocol version 0",
            false,
            hello_frame(0),
            "protocol version 0 is not supported",
        ),
        (
            "a second hello",
            true,
            hello_frame(PROTOCOL_VERSION),
            "second Hello",
        ),
    ]
}

/// Each kind of bad input ends its own connection (with at most a Goodbye) while a logged-in
/// connection opened before keeps working, and new connections are served afterwards.
#[tokio::test]
async fn bad_input_ends_only_its_own_connection() {
    let server = TestServer::start();
    let mut bystander = server.raw().await;
    let (r, _) = bystander
        .exchange(
            500,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let mut balance = 10_000;
    for (index, (name, greet, bytes, reason_piece)) in cases().into_iter().enumerate() {
        let mut connection = if greet {
            server.raw().await
        } else {
            RawConnection::connect(&server.address()).await
        };
        connection.send_bytes(&bytes).await;
        if let Some(reason) = ends_with_goodbye(&mut connection).await {
            assert!(reason.contains(reason_piece), "{name}: goodbye {reason:?}");
        }
        // The logged-in bystander is untouched.
        let sequence = index as u64 + 2;
        balance -= 1;
        let (r, _) = bystander
            .exchange(500, sequence, Operation::Withdraw { amount: 1 })
            .await;
        assert_eq!(
            r,
            reply(500, sequence, Status::Approved, common::balances(balance)),
            "{name}"
        );
        balance -= 1;
        still_serves(&server, 600 + index as u64, balance).await;
    }
    assert_eq!(server.committed_balance(JOTY), Some(balance));
    // Every bad connection (and every finished check) was cleaned up: only the bystander is left.
    let bank = server.running().bank().clone();
    common::eventually("closed sessions are counted out", || {
        bank.stats().connections.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(bank.storage().failure().is_none());
}

/// A wrong protocol version and a request before the Hello are answered with a Goodbye that
/// says why (the client library relies on the version wording), then the connection closes.
#[tokio::test]
async fn handshake_violations_get_a_goodbye_with_the_reason() {
    let server = TestServer::start();
    // The first protocol's version (its clients know no available balance) and a later one.
    for version in [1, 3] {
        let mut connection = RawConnection::connect(&server.address()).await;
        connection.send_bytes(&hello_frame(version)).await;
        match connection.receive().await {
            Some(ServerMessage::Goodbye(goodbye)) => assert_eq!(
                goodbye.reason,
                format!("protocol version {version} is not supported; this server speaks 2")
            ),
            other => panic!("expected a Goodbye, got {other:?}"),
        }
        assert!(connection.closed_by_server().await);
    }

    let mut connection = RawConnection::connect(&server.address()).await;
    connection
        .send_bytes(&common::request_frame(9, 1, Operation::Balance))
        .await;
    match connection.receive().await {
        Some(ServerMessage::Goodbye(goodbye)) => {
            assert!(
                goodbye.reason.contains("before the Hello"),
                "{}",
                goodbye.reason
            )
        }
        other => panic!("expected a Goodbye, got {other:?}"),
    }
    assert!(connection.closed_by_server().await);

    still_serves(&server, 700, 9_999).await;
}

/// A frame cut short by the client closing its side is a bad frame: the connection ends, and the
/// truncated request is never executed.
#[tokio::test]
async fn a_truncated_frame_then_close_executes_nothing() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(
            31,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let whole = common::request_frame(31, 2, Operation::Withdraw { amount: 500 });
    atm.send_bytes(&whole[..whole.len() - 2]).await;
    atm.stream.shutdown().await.unwrap();
    if let Some(reason) = ends_with_goodbye(&mut atm).await {
        assert!(!reason.is_empty());
    }
    // Only a length prefix, and only part of one.
    for bytes in [&[0u8, 0, 0, 40][..], &[0u8, 0][..]] {
        let mut connection = server.raw().await;
        connection.send_bytes(bytes).await;
        connection.stream.shutdown().await.unwrap();
        ends_with_goodbye(&mut connection).await;
    }
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
    still_serves(&server, 32, 9_999).await;
    // The withdrawal's id was never used: sent whole now, it executes.
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(
            33,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm
        .exchange(31, 2, Operation::Withdraw { amount: 500 })
        .await;
    assert_eq!(r, reply(31, 2, Status::Approved, common::balances(9_499)));
}

/// A bad frame after good pipelined requests ends the connection; the good requests before it
/// were still handled (the utilities are answered, no money moved twice).
#[tokio::test]
async fn a_bad_frame_after_good_ones_closes_the_connection() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let mut bytes = common::request_frame(34, 1, Operation::IsPrime { number: 31 });
    bytes.extend(common::request_frame(
        34,
        2,
        Operation::Lowercase { text: "OK".into() },
    ));
    bytes.extend([0xFF, 0xFF, 0xFF, 0xFF]);
    atm.send_bytes(&bytes).await;
    let mut replies = Vec::new();
    let mut goodbye = None;
    while let Some(body) = atm.receive_body().await {
        match actor_bank::codec::decode_wire::<ServerMessage>(&body).unwrap() {
            ServerMessage::Reply(r) => replies.push(r),
            ServerMessage::Goodbye(g) => {
                goodbye = Some(g.reason);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        replies,
        vec![
            reply(34, 1, Status::Approved, Body::Answer(true)),
            reply(34, 2, Status::Approved, Body::Text("ok".into())),
        ]
    );
    if let Some(reason) = goodbye {
        assert!(reason.contains("exceeds"), "{reason}");
    }
    assert!(atm.closed_by_server().await);
    still_serves(&server, 35, 9_999).await;
}
