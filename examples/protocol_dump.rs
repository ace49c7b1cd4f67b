//! Prints the wire frames that docs/PROTOCOL.md shows as worked examples, encoded by the real codec.
//!
//! Run it with `cargo run --example protocol_dump`. The frames are one conversation with the demo
//! account (card 123456789, PIN 1234, balance 10000): handshake, verification, a withdrawal of 300,
//! a withdrawal the balance cannot cover, a transfer to the second demo account, a hold, a balance
//! inquiry, a change of PIN, the completion of the hold, a reversal, a statement, and the Goodbye a
//! server sends for a protocol version it does not speak; besides, two frames of cluster mode: a
//! `moved` reply, and a node delivering a transfer's second leg with `ReceiveTransfer`.
//! tests/protocol_doc.rs includes this file, so the document, this program and the server are
//! checked against the same list.
//!
//! It also prints the worked examples of docs/JOURNAL.md: a segment header, the journal record of
//! that withdrawal, and a small snapshot, written by the real journal format functions.

use actor_bank::codec::encode_frame;
use actor_bank::journal::format;
use actor_bank::ledger::{Event, Ledger, Outcome, Record, REQUEST_WINDOW};
use actor_bank::protocol::{
    Body, CardOperation, ClientMessage, Goodbye, Hello, Movement, MovementKind, Operation, Reply,
    Request, RequestId, ServerMessage, Status, Welcome, PROTOCOL_VERSION,
};
use actor_bank::server::Limits;

/// The demo account's card: the sender of the worked node-to-node delivery.
const CARD: u64 = 123_456_789;

/// The owner's address a worked `moved` reply names.
const MOVED_ADDRESS: &str = "10.0.0.2:7001";

/// The transfer number of the worked node-to-node delivery of a transfer's second leg.
const TRANSFER_LEG: u64 = 4;

/// Which side sends a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

/// One worked example: the name docs/PROTOCOL.md marks it with, the value, and its frame.
pub struct Example {
    /// The name after `<!-- frame:` in the document.
    pub name: &'static str,
    /// Who sends it.
    pub direction: Direction,
    /// The value, as Rust prints it.
    pub value: String,
    /// The complete frame: length prefix and body.
    pub frame: Vec<u8>,
}

/// The request id of the examples' client: client 7, with sequence numbers from 1.
pub fn id(sequence: u64) -> RequestId {
    RequestId {
        client: 7,
        sequence,
    }
}

/// The second demo account, which the example transfer pays.
pub const OTHER_CARD: u64 = 987_654_321;

/// The time the example statement's movement was decided (see [`EXAMPLE_UNIX_MS`]).
pub const STATEMENT_UNIX_MS: u64 = EXAMPLE_UNIX_MS;

/// The protocol version the rejected Hello claims (one the server does not speak).
pub const UNSUPPORTED_VERSION: u32 = PROTOCOL_VERSION + 1;

/// The Welcome a server with default limits sends.
pub fn default_welcome() -> Welcome {
    let limits = Limits::default();
    Welcome {
        protocol_version: PROTOCOL_VERSION,
        requests_in_flight_max: limits.requests_in_flight_max as u32,
        request_window: REQUEST_WINDOW as u32,
        frame_bytes_max: limits.frame_bytes_max as u32,
        client_retention_secs: actor_bank::server::ServerConfig::new(".")
            .client_retention
            .as_secs(),
    }
}

fn request(sequence: u64, operation: Operation) -> ClientMessage {
    ClientMessage::Request(Request {
        id: id(sequence),
        operation,
    })
}

fn reply(sequence: u64, status: Status, body: Body) -> ServerMessage {
    ServerMessage::Reply(Reply {
        id: id(sequence),
        status,
        body,
    })
}

fn balances(ledger: u64, available: u64) -> Body {
    Body::Balances { ledger, available }
}

fn to_server(name: &'static str, message: ClientMessage) -> Example {
    Example {
        name,
        direction: Direction::ToServer,
        value: format!("{message:?}"),
        frame: encode_frame(&message).expect("every example encodes"),
    }
}

fn to_client(name: &'static str, message: ServerMessage) -> Example {
    Example {
        name,
        direction: Direction::ToClient,
        value: format!("{message:?}"),
        frame: encode_frame(&message).expect("every example encodes"),
    }
}

/// Every worked example, in the order of the conversation.
pub fn examples() -> Vec<Example> {
    vec![
        to_server(
            "hello",
            ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
            }),
        ),
        to_client("welcome", ServerMessage::Welcome(default_welcome())),
        to_server(
            "verify-request",
            request(
                1,
                Operation::Verify {
                    card: 123_456_789,
                    pin: "1234".into(),
                },
            ),
        ),
        to_client("verify-reply", reply(1, Status::Approved, Body::Empty)),
        to_server(
            "withdraw-request",
            request(2, Operation::Withdraw { amount: 300 }),
        ),
        to_client(
            "withdraw-reply",
            reply(2, Status::Approved, balances(9_700, 9_700)),
        ),
        to_server(
            "overdraw-request",
            request(3, Operation::Withdraw { amount: 20_000 }),
        ),
        to_client(
            "overdraw-reply",
            reply(3, Status::InsufficientFunds, balances(9_700, 9_700)),
        ),
        to_server(
            "transfer-request",
            request(
                4,
                Operation::Transfer {
                    to: OTHER_CARD,
                    amount: 1_000,
                },
            ),
        ),
        to_client(
            "transfer-reply",
            reply(4, Status::Approved, balances(8_700, 8_700)),
        ),
        to_server(
            "hold-request",
            request(5, Operation::PlaceHold { amount: 2_000 }),
        ),
        to_client(
            "hold-reply",
            reply(
                5,
                Status::Approved,
                Body::Hold {
                    hold_id: 1,
                    ledger: 8_700,
                    available: 6_700,
                },
            ),
        ),
        to_server("balance-request", request(7, Operation::Balance)),
        to_client(
            "balance-reply",
            reply(7, Status::Approved, balances(8_700, 6_700)),
        ),
        to_server(
            "change-pin-request",
            request(
                6,
                Operation::ChangePin {
                    old_pin: "1234".into(),
                    new_pin: "2468".into(),
                },
            ),
        ),
        to_server(
            "complete-hold-request",
            request(
                8,
                Operation::CompleteHold {
                    hold_id: 1,
                    amount: Some(1_500),
                },
            ),
        ),
        to_server(
            "reverse-request",
            request(
                9,
                Operation::Reverse {
                    original: id(2),
                    dispensed: Some(200),
                },
            ),
        ),
        to_server(
            "statement-request",
            request(10, Operation::Statement { count: 5 }),
        ),
        to_client(
            "statement-reply",
            reply(
                10,
                Status::Approved,
                Body::Statement(vec![Movement {
                    at_unix_ms: STATEMENT_UNIX_MS,
                    kind: MovementKind::Withdrawal,
                    amount: 300,
                    request: id(2),
                    balance_after: 9_700,
                }]),
            ),
        ),
        to_client(
            "moved-reply",
            reply(
                11,
                Status::Moved,
                Body::Moved {
                    address: MOVED_ADDRESS.into(),
                },
            ),
        ),
        to_server(
            "for-card-request",
            request(
                13,
                Operation::ForCard {
                    card: OTHER_CARD,
                    pin: "5678".into(),
                    operation: CardOperation::Withdraw { amount: 500 },
                },
            ),
        ),
        to_client(
            "for-card-reply",
            reply(13, Status::Approved, balances(5_500, 5_500)),
        ),
        to_server(
            "receive-transfer-request",
            ClientMessage::Request(Request {
                id: RequestId {
                    client: CARD,
                    sequence: TRANSFER_LEG,
                },
                operation: Operation::ReceiveTransfer {
                    operator_token: "tok".into(),
                    from: CARD,
                    leg: TRANSFER_LEG,
                    to: OTHER_CARD,
                    amount: 1_000,
                },
            }),
        ),
        to_server(
            "unsupported-hello",
            ClientMessage::Hello(Hello {
                protocol_version: UNSUPPORTED_VERSION,
            }),
        ),
        to_client(
            "unsupported-goodbye",
            ServerMessage::Goodbye(Goodbye {
                reason: format!(
                    "protocol version {UNSUPPORTED_VERSION} is not supported; \
                     this server speaks {PROTOCOL_VERSION}"
                ),
            }),
        ),
    ]
}

/// One worked example of docs/JOURNAL.md: the name after `<!-- bytes:` and the bytes.
pub struct StoredExample {
    /// The name after `<!-- bytes:` in the document.
    pub name: &'static str,
    /// What the bytes are.
    pub what: &'static str,
    /// The bytes, as the journal writes them.
    pub bytes: Vec<u8>,
}

/// The first segment of the journal examples, with an id easy to spot (real ones are random).
pub const EXAMPLE_SEGMENT: format::SegmentRef = format::SegmentRef {
    first_lsn: 1,
    id: 0x1111_2222_3333_4444,
};

/// The segment that follows the example snapshot at position 2.
pub const EXAMPLE_NEXT_SEGMENT: format::SegmentRef = format::SegmentRef {
    first_lsn: 3,
    id: 0x5555_6666_7777_8888,
};

/// The decision time the journal examples use: 2023-11-14 22:13:20 UTC, in ms since the epoch.
pub const EXAMPLE_UNIX_MS: u64 = 1_700_000_000_000;

/// The stand-in PIN hash of the snapshot example: the default cost, with a salt and a hash of
/// repeated bytes so the dump is easy to follow (real ones are random-looking).
pub const EXAMPLE_PIN_HASH: actor_bank::pin::PinHash = actor_bank::pin::PinHash {
    memory_kib: 19_456,
    iterations: 2,
    salt: [0x11; actor_bank::pin::SALT_BYTES],
    hash: [0x22; actor_bank::pin::HASH_BYTES],
};

/// The two records of the journal examples: client 7 opens card 123456789 with 10 000 (7:1) and
/// withdraws 300 (7:2).
pub fn example_records() -> [Record; 2] {
    let card = 123_456_789;
    let approved = |balance| Outcome {
        status: actor_bank::model::Code::Approved,
        balance: Some(balance),
        available: Some(balance),
        reference: None,
    };
    // The business day of EXAMPLE_UNIX_MS in UTC.
    let business_day = (EXAMPLE_UNIX_MS / 86_400_000) as u32;
    [
        Record {
            request: id(1),
            card,
            at_unix_ms: EXAMPLE_UNIX_MS,
            business_day,
            event: Event::AccountOpened {
                holder: "Joty".into(),
                pin_hash: EXAMPLE_PIN_HASH,
                initial_balance: 10_000,
            },
            outcome: approved(10_000),
        },
        Record {
            request: id(2),
            card,
            at_unix_ms: EXAMPLE_UNIX_MS,
            business_day,
            event: Event::Withdrawal { amount: 300 },
            outcome: approved(9_700),
        },
    ]
}

/// Every worked example of docs/JOURNAL.md.
pub fn stored_examples() -> Vec<StoredExample> {
    let [opened, withdrawn] = example_records();
    let mut record = Vec::new();
    format::encode_record(2, &withdrawn, &mut record).expect("the example record encodes");
    let mut ledger = Ledger::default();
    ledger.apply(1, &opened).expect("the opening applies");
    ledger.apply(2, &withdrawn).expect("the withdrawal applies");
    vec![
        StoredExample {
            name: "segment-header",
            what: "the header of journal-00000000000000000001.log",
            bytes: format::segment_header(EXAMPLE_SEGMENT, None),
        },
        StoredExample {
            name: "record",
            what: "the withdrawal 7:2 as record 2",
            bytes: record,
        },
        StoredExample {
            name: "snapshot",
            what: "snapshot-00000000000000000002.snap after both records",
            bytes: format::encode_snapshot(&ledger, EXAMPLE_NEXT_SEGMENT)
                .expect("the example snapshot encodes"),
        },
    ]
}

/// The frame as the document writes it: lowercase hex pairs, sixteen to a line.
pub fn hex_lines(frame: &[u8]) -> Vec<String> {
    frame
        .chunks(16)
        .map(|chunk| {
            chunk
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

#[allow(dead_code)] // The test that includes this file has its own entry point.
fn main() {
    for example in examples() {
        let arrow = match example.direction {
            Direction::ToServer => "client -> server",
            Direction::ToClient => "server -> client",
        };
        println!("{} ({arrow}, {} bytes)", example.name, example.frame.len());
        println!("  {}", example.value);
        for line in hex_lines(&example.frame) {
            println!("  {line}");
        }
        println!();
    }
    println!("journal examples (docs/JOURNAL.md)");
    println!();
    for example in stored_examples() {
        println!(
            "{}: {} ({} bytes)",
            example.name,
            example.what,
            example.bytes.len()
        );
        for line in hex_lines(&example.bytes) {
            println!("  {line}");
        }
        println!();
    }
}
