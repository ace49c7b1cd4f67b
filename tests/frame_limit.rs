//! Frames at the size limit: a body of exactly the limit Welcome announces is accepted, one byte
//! more is refused before it is read, for several settings of `frame_bytes_max`.

mod common;

use actor_bank::codec::{decode_wire, encode_frame, encode_wire, FRAME_BYTES_LIMIT};
use actor_bank::protocol::{
    Body, ClientMessage, Goodbye, Operation, Reply, Request, RequestId, ServerMessage, Status,
};
use common::{Ending, RawConnection, TestServer};
use std::time::Duration;

/// A `Lowercase` request whose body is exactly `body_bytes` long.
fn lowercase_of_body(sequence: u64, body_bytes: usize) -> ClientMessage {
    let message = |text_bytes: usize| {
        ClientMessage::Request(Request {
            id: RequestId {
                client: 1,
                sequence,
            },
            operation: Operation::Lowercase {
                text: "A".repeat(text_bytes),
            },
        })
    };
    // The length prefix of the text grows at some sizes: settle on the text length in a few steps.
    let mut text_bytes = body_bytes.saturating_sub(32);
    for _ in 0..4 {
        let encoded = encode_wire(&message(text_bytes)).unwrap().len();
        if encoded == body_bytes {
            return message(text_bytes);
        }
        text_bytes = (text_bytes + body_bytes).saturating_sub(encoded);
    }
    panic!("no Lowercase request has a body of {body_bytes} bytes");
}

/// Sends a frame with a body of `body_bytes` on a fresh connection to `server` (only its length
/// prefix when `header_only`: a refused frame's body is never read, and sending it would make the
/// server's close a reset); returns the reply, or how the connection ended.
async fn send_body(
    server: &TestServer,
    body_bytes: usize,
    header_only: bool,
) -> Result<Reply, Ending> {
    let mut connection = server.raw().await;
    let frame = encode_frame(&lowercase_of_body(9, body_bytes)).unwrap();
    assert_eq!(frame.len(), 4 + body_bytes);
    let sent = if header_only { &frame[..4] } else { &frame[..] };
    connection.send_bytes(sent).await;
    let body = connection.receive_body().await;
    match body.map(|body| decode_wire::<ServerMessage>(&body).unwrap()) {
        Some(ServerMessage::Reply(reply)) => Ok(reply),
        Some(ServerMessage::Goodbye(Goodbye { reason })) => Err(Ending::Goodbye(reason)),
        other => {
            let (_, ending) = connection.ending(Duration::from_secs(10)).await;
            panic!("expected a Reply or a Goodbye, got {other:?} then {ending:?}")
        }
    }
}

/// The limit the server announces in Welcome.
async fn announced_limit(server: &TestServer) -> usize {
    let mut connection = RawConnection::connect(&server.address()).await;
    connection.send_bytes(&common::hello_frame()).await;
    match connection.receive().await {
        Some(ServerMessage::Welcome(welcome)) => welcome.frame_bytes_max as usize,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// For each setting, the announced limit is the setting (clamped to the ceiling), and bodies of
/// limit − 1 and limit bytes are answered while limit + 1 ends the connection with its reason.
#[tokio::test]
async fn bodies_up_to_the_announced_limit_are_accepted_and_one_byte_more_is_refused() {
    let settings = [
        (1_024, 1_024),
        (65_536, 65_536),
        (FRAME_BYTES_LIMIT, FRAME_BYTES_LIMIT),
        (4 * FRAME_BYTES_LIMIT, FRAME_BYTES_LIMIT),
    ];
    for (setting, expected) in settings {
        let server = TestServer::start_with(|config| config.limits.frame_bytes_max = setting);
        let limit = announced_limit(&server).await;
        assert_eq!(limit, expected, "setting {setting}");
        for body_bytes in [limit - 1, limit] {
            let reply = send_body(&server, body_bytes, false)
                .await
                .unwrap_or_else(|ending| panic!("limit {limit}, body {body_bytes}: {ending:?}"));
            // The lowercase text plus the reply's own bytes would not fit a frame: a refusal,
            // decided after the request was read and decoded.
            assert_eq!(
                (reply.status, reply.body),
                (Status::InvalidRequest, Body::Empty),
                "limit {limit}, body {body_bytes}"
            );
        }
        let ending = send_body(&server, limit + 1, true).await.unwrap_err();
        assert_eq!(
            ending,
            Ending::Goodbye(format!(
                "bad frame: frame of {} bytes exceeds the limit of {limit} bytes",
                limit + 1
            )),
            "setting {setting}"
        );
    }
}

/// Every message that carries text decodes when its body is exactly the ceiling long: the decode
/// limit counts more than the body's bytes, and must leave room for it.
#[test]
fn every_message_with_text_decodes_at_exactly_the_ceiling() {
    fn fill<T: serde::Serialize>(make: impl Fn(String) -> T) -> (T, Vec<u8>) {
        let mut text_bytes = FRAME_BYTES_LIMIT - 64;
        loop {
            let value = make("a".repeat(text_bytes));
            let body = encode_wire(&value).unwrap();
            match body.len().cmp(&FRAME_BYTES_LIMIT) {
                std::cmp::Ordering::Equal => return (value, body),
                std::cmp::Ordering::Less => text_bytes += FRAME_BYTES_LIMIT - body.len(),
                std::cmp::Ordering::Greater => text_bytes -= body.len() - FRAME_BYTES_LIMIT,
            }
        }
    }
    let id = RequestId {
        client: u64::MAX,
        sequence: u64::MAX,
    };
    let request = |operation| ClientMessage::Request(Request { id, operation });
    let client_messages = [
        fill(|text| request(Operation::Lowercase { text })),
        fill(|text| {
            request(Operation::CreateAccount {
                operator_token: text,
                card: u64::MAX,
                holder: "h".into(),
                pin: "1234".into(),
                initial_balance: u64::MAX,
            })
        }),
        fill(|text| {
            request(Operation::Verify {
                card: u64::MAX,
                pin: text,
            })
        }),
    ];
    for (message, body) in client_messages {
        assert_eq!(decode_wire::<ClientMessage>(&body).unwrap(), message);
    }
    let server_messages = [
        fill(|text| {
            ServerMessage::Reply(Reply {
                id,
                status: Status::Approved,
                body: Body::Text(text),
            })
        }),
        fill(|reason| ServerMessage::Goodbye(Goodbye { reason })),
    ];
    for (message, body) in server_messages {
        assert_eq!(decode_wire::<ServerMessage>(&body).unwrap(), message);
    }
}
