//! docs/PROTOCOL.md (and the worked examples of docs/JOURNAL.md) cannot drift from the code.
//!
//! docs/PROTOCOL.md marks its worked hex dumps with `<!-- frame: NAME -->` and a few tables with
//! `<!-- table: NAME -->`; docs/JOURNAL.md marks its dumps with `<!-- bytes: NAME -->`. These tests
//! read the documents and check that
//! - every hex dump is byte for byte what the codec or the journal format writes for the example
//!   of that name (examples/protocol_dump.rs, included below, is the one list of examples);
//! - a real server, sent the documented client frames, answers with the documented server frames,
//!   and answers a replayed request with the same bytes after a reconnect and after a restart;
//! - the tables of statuses, operations and varint encodings match the code.
//!
//! In a hex dump block, everything before the first `|` of a line is hex bytes and everything after
//! it is commentary, so the annotations can say anything without confusing the check.

mod common;
#[allow(dead_code)] // The example's `main` and printing helpers are not used here.
#[path = "../examples/protocol_dump.rs"]
mod dump;

use actor_bank::codec::encode_wire;
use actor_bank::pin::PinHashCost;
use actor_bank::protocol::{CardOperation, Operation, Status};
use actor_bank::server::{RunningServer, ServerConfig};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn document() -> String {
    read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md"))
}

fn journal_document() -> String {
    read(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/JOURNAL.md"))
}

/// The names of every `<!-- KIND: NAME -->` marker, in document order.
fn markers(document: &str, kind: &str) -> Vec<String> {
    let prefix = format!("<!-- {kind}: ");
    document
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix)?.strip_suffix(" -->"))
        .map(str::to_string)
        .collect()
}

/// The lines of the fenced block right after `marker`.
fn fenced_block_after(document: &str, marker: &str) -> Vec<String> {
    let mut lines = document.lines().skip_while(|line| line.trim() != marker);
    assert!(lines.next().is_some(), "the document has no {marker}");
    let opening = lines.next().unwrap_or_default();
    assert!(
        opening.starts_with("```"),
        "{marker} must be followed at once by a fenced block, found {opening:?}"
    );
    lines
        .take_while(|line| !line.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// The bytes of a documented hex dump: the hex pairs before each line's `|`.
fn documented_frame(document: &str, name: &str) -> Vec<u8> {
    documented_bytes(document, "frame", name)
}

/// The bytes of the hex dump after `<!-- KIND: NAME -->`.
fn documented_bytes(document: &str, kind: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- {kind}: {name} -->");
    common::hex_dump_bytes(
        &fenced_block_after(document, &marker),
        &format!("{kind} {name}"),
    )
}

/// The rows of the table after `<!-- table: NAME -->`, header and rule left out, cells trimmed and
/// stripped of backticks.
fn documented_table(document: &str, name: &str) -> Vec<Vec<String>> {
    let marker = format!("<!-- table: {name} -->");
    let mut lines = document.lines().skip_while(|line| line.trim() != marker);
    assert!(lines.next().is_some(), "the document has no {marker}");
    lines
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| line.trim_start().starts_with('|'))
        .skip(2)
        .map(|row| {
            row.trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_string())
                .collect()
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    dump::hex_lines(bytes).join("\n")
}

#[test]
fn every_documented_frame_is_what_the_encoder_writes() {
    let document = document();
    let examples = dump::examples();
    let expected: BTreeSet<String> = examples.iter().map(|e| e.name.to_string()).collect();
    let documented = markers(&document, "frame");
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a frame is documented twice"
    );
    assert_eq!(
        unique, expected,
        "the documented frames and the examples differ"
    );
    for example in &examples {
        let written = documented_frame(&document, example.name);
        assert_eq!(
            written,
            example.frame,
            "frame {} ({}):\ndocument:\n{}\nencoder:\n{}",
            example.name,
            example.value,
            hex(&written),
            hex(&example.frame)
        );
    }
}

#[test]
fn every_journal_example_is_what_the_journal_writes() {
    let document = journal_document();
    let examples = dump::stored_examples();
    let expected: BTreeSet<String> = examples.iter().map(|e| e.name.to_string()).collect();
    let documented = markers(&document, "bytes");
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "an example is documented twice"
    );
    assert_eq!(
        unique, expected,
        "the documented examples and the code's differ"
    );
    for example in &examples {
        let written = documented_bytes(&document, "bytes", example.name);
        assert_eq!(
            written,
            example.bytes,
            "{} ({}):\ndocument:\n{}\njournal:\n{}",
            example.name,
            example.what,
            hex(&written),
            hex(&example.bytes)
        );
    }
}

#[test]
fn the_status_table_lists_every_status_in_wire_order() {
    let rows = documented_table(&document(), "statuses");
    assert_eq!(rows.len(), Status::ALL.len(), "one row per status");
    for (row, status) in rows.iter().zip(Status::ALL) {
        let index = encode_wire(&status).unwrap();
        assert_eq!(row[0], index[0].to_string(), "index of {status}");
        assert_eq!(row[1], status.name(), "status at index {}", row[0]);
    }
}

#[test]
fn the_operation_table_lists_every_variant_in_wire_order() {
    let text = || String::from("x");
    let operations = [
        Operation::CreateAccount {
            operator_token: text(),
            card: 1,
            holder: text(),
            pin: text(),
            initial_balance: 1,
        },
        Operation::Verify {
            card: 1,
            pin: text(),
        },
        Operation::Balance,
        Operation::Withdraw { amount: 1 },
        Operation::Deposit { amount: 1 },
        Operation::Logout,
        Operation::Lowercase { text: text() },
        Operation::IsPrime { number: 1 },
        Operation::IsPalindrome { number: 1 },
        Operation::UnlockCard {
            operator_token: text(),
            card: 1,
        },
        Operation::ChangePin {
            old_pin: text(),
            new_pin: text(),
        },
        Operation::Transfer { to: 1, amount: 1 },
        Operation::PlaceHold { amount: 1 },
        Operation::CompleteHold {
            hold_id: 1,
            amount: None,
        },
        Operation::VoidHold { hold_id: 1 },
        Operation::Reverse {
            original: dump::id(1),
            dispensed: None,
        },
        Operation::Statement { count: 1 },
        Operation::FreezeAccount {
            operator_token: text(),
            card: 1,
        },
        Operation::UnfreezeAccount {
            operator_token: text(),
            card: 1,
        },
        Operation::CloseAccount {
            operator_token: text(),
            card: 1,
        },
        Operation::AccountInfo {
            operator_token: text(),
            card: 1,
        },
        Operation::SetLimits {
            operator_token: text(),
            card: 1,
            limits: actor_bank::model::DailyLimits::NONE,
        },
        Operation::ClearLimits {
            operator_token: text(),
            card: 1,
        },
        Operation::ReceiveTransfer {
            operator_token: text(),
            from: 1,
            leg: 1,
            to: 2,
            amount: 1,
        },
        Operation::ForCard {
            card: 1,
            pin: text(),
            operation: CardOperation::Balance,
        },
    ];
    let rows = documented_table(&document(), "operations");
    assert_eq!(rows.len(), operations.len(), "one row per operation");
    for (index, (row, operation)) in rows.iter().zip(&operations).enumerate() {
        // The Debug output starts with the variant's name (secrets are left out of it); the
        // operator's account changes print their kind's name, so the tag's name is used instead.
        let shown = match operation {
            Operation::FreezeAccount { .. } => "FreezeAccount".to_string(),
            Operation::UnfreezeAccount { .. } => "UnfreezeAccount".to_string(),
            Operation::ClearLimits { .. } => "ClearLimits".to_string(),
            Operation::CloseAccount { .. } => "CloseAccount".to_string(),
            Operation::AccountInfo { .. } => "AccountInfo".to_string(),
            _ => format!("{operation:?}"),
        };
        let variant: String = shown
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        assert_eq!(encode_wire(operation).unwrap()[0] as usize, index);
        assert_eq!(row[0], index.to_string(), "index of {variant}");
        assert_eq!(row[1], variant, "operation at index {index}");
    }
}

#[test]
fn the_card_operation_table_lists_every_variant_in_wire_order() {
    let operations = [
        CardOperation::Balance,
        CardOperation::Withdraw { amount: 1 },
        CardOperation::Deposit { amount: 1 },
        CardOperation::Transfer { to: 1, amount: 1 },
        CardOperation::PlaceHold { amount: 1 },
        CardOperation::Statement { count: 1 },
    ];
    let rows = documented_table(&document(), "card-operations");
    assert_eq!(rows.len(), operations.len(), "one row per card operation");
    for (index, (row, operation)) in rows.iter().zip(&operations).enumerate() {
        let variant: String = format!("{operation:?}")
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        assert_eq!(encode_wire(operation).unwrap()[0] as usize, index);
        assert_eq!(row[0], index.to_string(), "index of {variant}");
        assert_eq!(row[1], variant, "card operation at index {index}");
        // Its fields are those of the operation of the same name on a verified card.
        let same = documented_table(&document(), "operations")
            .into_iter()
            .find(|operation_row| operation_row[1] == variant)
            .unwrap_or_else(|| panic!("no operation {variant}"));
        assert_eq!(row[2], same[2], "the fields of {variant}");
    }
}

#[test]
fn the_varint_table_is_what_the_encoder_writes() {
    let rows = documented_table(&document(), "varints");
    assert!(
        rows.len() >= 5,
        "the varint table has examples of every width"
    );
    for row in rows {
        let value: u64 = row[0].replace('_', "").parse().expect("a decimal value");
        let written: Vec<String> = encode_wire(&value)
            .unwrap()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        assert_eq!(row[1], written.join(" "), "encoding of {value}");
    }
}

/// A raw connection that sends documented bytes and reads whole frames back.
struct Raw(TcpStream);

impl Raw {
    async fn connect(address: std::net::SocketAddr) -> Raw {
        Raw(TcpStream::connect(address).await.expect("connect"))
    }

    async fn send(&mut self, frame: &[u8]) {
        self.0.write_all(frame).await.expect("send");
    }

    /// The next frame, length prefix included.
    async fn receive(&mut self) -> Vec<u8> {
        let read = async {
            let mut frame = vec![0; 4];
            self.0.read_exact(&mut frame).await.expect("length");
            let length = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            frame.resize(4 + length, 0);
            self.0.read_exact(&mut frame[4..]).await.expect("body");
            frame
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a frame within 10 s")
    }

    /// Sends one documented frame and checks that the answer is the documented one.
    async fn exchange(&mut self, document: &str, sent: &str, answered: &str) {
        self.send(&documented_frame(document, sent)).await;
        let received = self.receive().await;
        let expected = documented_frame(document, answered);
        assert_eq!(
            received,
            expected,
            "after {sent}, the server sent\n{}\nbut the document shows {answered} as\n{}",
            hex(&received),
            hex(&expected)
        );
    }

    /// Handshake and verification of the demo card with a fresh sequence number.
    async fn log_in(&mut self, document: &str, sequence: u64) {
        self.exchange(document, "hello", "welcome").await;
        let verify = actor_bank::protocol::ClientMessage::Request(actor_bank::protocol::Request {
            id: dump::id(sequence),
            operation: Operation::Verify {
                card: 123_456_789,
                pin: "1234".into(),
            },
        });
        self.send(&actor_bank::codec::encode_frame(&verify).unwrap())
            .await;
        let reply = self.receive().await;
        assert_eq!(
            &reply[4..],
            &[1, 7, sequence as u8, 0, 0],
            "verify approved"
        );
    }
}

fn demo_config(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.demo = true;
    config.pin_hash_cost = PinHashCost::MINIMUM;
    config.pin_key =
        actor_bank::server::pins::PinKeySource::Given(actor_bank::pin::PinKey::from_bytes([3; 32]));
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_answers_the_documented_frames_with_the_documented_frames() {
    let document = document();
    let data_dir = tempfile::tempdir().unwrap();
    let server = RunningServer::start(demo_config(data_dir.path())).unwrap();

    let mut atm = Raw::connect(server.local_addr).await;
    atm.exchange(&document, "hello", "welcome").await;
    atm.exchange(&document, "verify-request", "verify-reply")
        .await;
    atm.exchange(&document, "withdraw-request", "withdraw-reply")
        .await;
    atm.exchange(&document, "overdraw-request", "overdraw-reply")
        .await;
    atm.exchange(&document, "transfer-request", "transfer-reply")
        .await;
    atm.exchange(&document, "hold-request", "hold-reply").await;
    atm.exchange(&document, "balance-request", "balance-reply")
        .await;
    // The transfer's credit arrives in the background, once.
    wait_for_balance(&server, dump::OTHER_CARD, 6_000).await;
    // A withdrawal for the other card, its PIN with it, on this connection verified for the
    // first.
    atm.exchange(&document, "for-card-request", "for-card-reply")
        .await;

    // The replay of 7:2 on a new connection: the original bytes, and no second withdrawal.
    let mut again = Raw::connect(server.local_addr).await;
    again.log_in(&document, 11).await;
    again
        .exchange(&document, "withdraw-request", "withdraw-reply")
        .await;

    let mut refused = Raw::connect(server.local_addr).await;
    refused
        .exchange(&document, "unsupported-hello", "unsupported-goodbye")
        .await;

    // The replay after a restart: the memory of completed requests came back from the journal.
    server.stop();
    let server = RunningServer::start(demo_config(data_dir.path())).unwrap();
    let mut after_restart = Raw::connect(server.local_addr).await;
    after_restart.log_in(&document, 12).await;
    for (sent, answered) in [
        ("withdraw-request", "withdraw-reply"),
        ("overdraw-request", "overdraw-reply"),
        ("transfer-request", "transfer-reply"),
        ("hold-request", "hold-reply"),
        ("balance-request", "balance-reply"),
        ("for-card-request", "for-card-reply"),
    ] {
        after_restart.exchange(&document, sent, answered).await;
    }
    let balance = |card| {
        server
            .bank()
            .storage()
            .with_committed(|ledger| ledger.accounts[&card].balance)
    };
    assert_eq!(
        balance(123_456_789),
        8_700,
        "one withdrawal of 300 and one transfer of 1000, however often replayed"
    );
    assert_eq!(
        balance(dump::OTHER_CARD),
        5_500,
        "credited once, and one withdrawal of 500 however often replayed"
    );
    server.stop();
}

/// Waits (at most 10 s) until `card`'s committed balance is `expected`.
async fn wait_for_balance(server: &RunningServer, card: u64, expected: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let balance = server
            .bank()
            .storage()
            .with_committed(|ledger| ledger.accounts.get(&card).map(|account| account.balance));
        if balance == Some(expected) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "card {card}: balance {balance:?}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
