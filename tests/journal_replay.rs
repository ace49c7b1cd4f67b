//! A request id replayed after a restart gets the original reply, byte for byte, and moves no
//! money again: the memory of completed requests is rebuilt from the journal.
mod common;
use common::verify;

use actor_bank::codec::decode_wire;
use actor_bank::protocol::{
    ClientMessage, Hello, Operation, ServerMessage, Status, PROTOCOL_VERSION,
};
use common::durability::*;
use common::RawConnection;

const CLIENT: u64 = 4_242;
const OPERATOR: u64 = 9_999;

/// Sends one request and returns the reply frame's body bytes.
async fn exchange(raw: &mut RawConnection, sequence: u64, operation: Operation) -> Vec<u8> {
    exchange_as(raw, CLIENT, sequence, operation).await
}

/// Sends one request as `client` and returns the reply frame's body bytes.
async fn exchange_as(
    raw: &mut RawConnection,
    client: u64,
    sequence: u64,
    operation: Operation,
) -> Vec<u8> {
    raw.request(client, sequence, operation).await;
    let body = raw.receive_body().await.expect("a reply");
    match decode_wire::<ServerMessage>(&body).unwrap() {
        ServerMessage::Reply(reply) => {
            assert_eq!(reply.id.sequence, sequence);
            body
        }
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn reply_of(body: &[u8]) -> actor_bank::protocol::Reply {
    match decode_wire::<ServerMessage>(body).unwrap() {
        ServerMessage::Reply(reply) => reply,
        other => panic!("expected a reply, got {other:?}"),
    }
}

async fn greeted(address: &str) -> RawConnection {
    let mut raw = RawConnection::connect(address).await;
    raw.send(&ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
    }))
    .await;
    assert!(matches!(
        raw.receive().await,
        Some(ServerMessage::Welcome(_))
    ));
    raw
}

/// The changes the scenario makes, by sequence number: a withdrawal, a deposit, a refused
/// withdrawal, and one more withdrawal.
fn changes() -> Vec<(u64, Operation)> {
    vec![
        (2, Operation::Withdraw { amount: 300 }),
        (3, Operation::Deposit { amount: 50 }),
        (4, Operation::Withdraw { amount: 1_000_000 }),
        (5, Operation::Withdraw { amount: 7 }),
    ]
}

/// Runs the changes on a logged-in connection and returns their reply bodies.
async fn first_attempts(raw: &mut RawConnection) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for (sequence, operation) in changes() {
        bodies.push(exchange(raw, sequence, operation).await);
    }
    let statuses: Vec<Status> = bodies.iter().map(|body| reply_of(body).status).collect();
    assert_eq!(
        statuses,
        [
            Status::Approved,
            Status::Approved,
            Status::InsufficientFunds,
            Status::Approved
        ]
    );
    bodies
}

/// Replays the changes (and the first verification) on a new connection after the restart and
/// checks every reply is byte-identical and the balance moved once.
async fn replay_after_restart(
    raw: &mut RawConnection,
    card: u64,
    pin: &str,
    verified: &[u8],
    bodies: &[Vec<u8>],
    expected_balance: u64,
) {
    // The original verification, replayed, is the original reply too.
    assert_eq!(exchange(raw, 1, verify(card, pin)).await, verified);
    // Log in with a new id, then replay every change.
    let login = exchange(raw, 6, verify(card, pin)).await;
    assert_eq!(reply_of(&login).status, Status::Approved);
    for ((sequence, operation), original) in changes().into_iter().zip(bodies) {
        let replayed = exchange(raw, sequence, operation).await;
        assert_eq!(&replayed, original, "request {CLIENT}:{sequence}");
    }
    let balance = reply_of(&exchange(raw, 7, Operation::Balance).await);
    assert_eq!(balance.body, common::balances(expected_balance));
}

// Purpose: after a clean restart of the in-process server, replayed ids get byte-identical
// replies and the balance moved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_id_after_a_restart_gets_the_byte_identical_reply() {
    let mut server = common::TestServer::start();
    let (card, pin) = (123_456_789, "1234");
    let mut raw = server.raw().await;
    let verified = exchange(&mut raw, 1, verify(card, pin)).await;
    assert_eq!(reply_of(&verified).status, Status::Approved);
    let bodies = first_attempts(&mut raw).await;
    // Before the restart, a replay is identical too.
    assert_eq!(
        exchange(&mut raw, 2, Operation::Withdraw { amount: 300 }).await,
        bodies[0]
    );
    drop(raw);
    tokio::task::block_in_place(|| server.restart(|_| {}));
    let mut raw = server.raw().await;
    replay_after_restart(
        &mut raw,
        card,
        pin,
        &verified,
        &bodies,
        10_000 - 300 + 50 - 7,
    )
    .await;
}

// Purpose: the same after SIGKILL of the real binary: every acknowledged reply was durable, so
// the restarted process replays it byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_id_after_sigkill_gets_the_byte_identical_reply() {
    let data_dir = tempfile::tempdir().unwrap();
    let log = data_dir.path().join("server.log");
    let data = data_dir.path().join("data");
    // Port 0: each process binds a free port and reports it; the test reads it back.
    let port = 0;
    let token = "kill-test-operator-token-3f7b1d9e5a2c";
    let server = tokio::task::block_in_place(|| BankProcess::start(&data, port, token, &log));
    let mut raw = greeted(&server.address).await;
    let (card, pin) = (55_501, "2468");
    let created = exchange_as(
        &mut raw,
        OPERATOR,
        1,
        Operation::CreateAccount {
            operator_token: token.into(),
            card,
            holder: "Killed".into(),
            pin: pin.into(),
            initial_balance: 2_000,
        },
    )
    .await;
    assert_eq!(reply_of(&created).status, Status::Approved);
    let verified = exchange(&mut raw, 1, verify(card, pin)).await;
    let bodies = first_attempts(&mut raw).await;
    drop(raw);
    tokio::task::block_in_place(|| server.kill());

    let server = tokio::task::block_in_place(|| BankProcess::start(&data, port, token, &log));
    let mut raw = greeted(&server.address).await;
    replay_after_restart(
        &mut raw,
        card,
        pin,
        &verified,
        &bodies,
        2_000 - 300 + 50 - 7,
    )
    .await;
    // The account opening replays as well.
    let again = exchange_as(
        &mut raw,
        OPERATOR,
        1,
        Operation::CreateAccount {
            operator_token: token.into(),
            card,
            holder: "Killed".into(),
            pin: pin.into(),
            initial_balance: 2_000,
        },
    )
    .await;
    assert_eq!(again, created);
    drop(raw);
    tokio::task::block_in_place(|| server.kill());
}
