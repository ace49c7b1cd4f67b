//! Overload is refused cleanly and never grows the server without bound: a client that pipelines
//! without reading its replies is stopped being read from and is dropped; the connection cap
//! refuses with a Goodbye and admits again once a connection closes; too many requests in flight
//! and a full account mailbox answer `busy`, and the retry with the same id moves the money once.
mod common;
use common::{AHONA, AHONA_PIN, JOTY, JOTY_PIN};

use actor_bank::client::reply_balance;
use actor_bank::protocol::{
    Body, ClientMessage, Operation, RequestId, ServerMessage, Status, PROTOCOL_VERSION,
};
use common::{Ending, RawConnection, TestServer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for the server to end a connection before calling it still open.
const PATIENCE: Duration = Duration::from_secs(15);

/// What a client that never reads may write before the test calls the server unbounded: far
/// more than every kernel buffer between the two ends can hold.
const UNBOUNDED_BYTES: usize = 512 * 1024 * 1024;

/// A connection whose own receive and send buffers are small, so the kernel on the client side
/// soaks up few replies and what the server does shows quickly.
async fn connect_with_small_buffers(address: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.connect(address.parse().unwrap()).await.unwrap()
}

/// How the writing of a non-reading client ended.
#[derive(Debug, PartialEq, Eq)]
enum Stall {
    /// A write made no progress for a while: the server stopped reading.
    Blocked,
    /// A write failed: the server dropped the connection.
    Dropped,
    /// Everything up to [`UNBOUNDED_BYTES`] was accepted.
    NeverStopped,
}

/// A client that pipelines utility requests as fast as it can and never reads a reply is no
/// longer read from (its writes block) and is dropped after the write deadline, while another
/// client keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_throttled_and_dropped() {
    let server = TestServer::start_with(|config| {
        config.limits.write_timeout = Duration::from_secs(1);
    });
    let bank = server.running().bank().clone();
    let mut bystander = server.client().await;
    let r = bystander.verify(AHONA, AHONA_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);

    let mut hog = connect_with_small_buffers(&server.address()).await;
    hog.write_all(&common::hello_frame()).await.unwrap();
    let mut hog = RawConnection { stream: hog };
    assert!(matches!(
        hog.receive().await,
        Some(ServerMessage::Welcome(_))
    ));
    // 512 lowercase requests of 100 capitals each, about 60 KiB, written again and again.
    let text = "A".repeat(100);
    let mut batch = Vec::new();
    for sequence in 1..=512 {
        batch.extend(common::request_frame(
            77,
            sequence,
            Operation::Lowercase { text: text.clone() },
        ));
    }
    let mut written = 0usize;
    let stall = loop {
        if written >= UNBOUNDED_BYTES {
            break Stall::NeverStopped;
        }
        match tokio::time::timeout(Duration::from_millis(500), hog.stream.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            Ok(Err(_)) => break Stall::Dropped,
            Err(_) => break Stall::Blocked,
        }
    };
    eprintln!(
        "the non-reading client wrote {written} bytes ({} requests) before: {stall:?}",
        written / (batch.len() / 512)
    );
    assert_ne!(
        stall,
        Stall::NeverStopped,
        "the server kept reading from a client that takes no replies"
    );

    // Meanwhile the bystander is served, with exact balances.
    let r = bystander.withdraw(100).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(4_900))
    );
    let r = bystander.balance().await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(4_900))
    );

    // The hog is dropped: its session ends, and reading shows the connection ended.
    common::eventually("the non-reading client's session ends", || {
        bank.stats().connections.load(Ordering::Relaxed) == 1
    })
    .await;
    let mut sink = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match hog.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the non-reading client's connection stayed open"
    );

    let r = bystander.deposit(50).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(4_950))
    );
    assert_eq!(server.committed_balance(AHONA), Some(4_950));
}

/// With `connections_max = 3`, extra connections get a Goodbye that says why and are closed,
/// while the three keep being served; once one closes, a new connection is admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_refuses_cleanly_and_admits_again() {
    let server = TestServer::start_with(|config| {
        config.limits.connections_max = 3;
    });
    let bank = server.running().bank().clone();
    let open = || bank.stats().connections.load(Ordering::Relaxed);
    let mut first = server.raw().await;
    let mut second = server.raw().await;
    let mut third = server.raw().await;
    let (r, _) = third
        .exchange(
            80,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(open(), 3);

    // The fourth, and twenty more at once: each is told why and closed.
    let address = server.address();
    let mut refused = vec![RawConnection::connect(&address).await];
    refused
        .extend(futures::future::join_all((0..20).map(|_| RawConnection::connect(&address))).await);
    for connection in &mut refused {
        let (messages, ending) = connection.ending(PATIENCE).await;
        assert_eq!(messages.len(), 1, "{messages:?}");
        match ending {
            Ending::Goodbye(reason) => assert!(reason.contains("connection limit"), "{reason}"),
            other => panic!("expected a Goodbye and a close, got {other:?}"),
        }
    }
    assert_eq!(bank.stats().connections_refused.load(Ordering::Relaxed), 21);
    assert_eq!(open(), 3);

    // The three admitted connections are served as before.
    let (r, _) = first
        .exchange(81, 1, Operation::IsPrime { number: 97 })
        .await;
    assert_eq!((r.status, r.body), (Status::Approved, Body::Answer(true)));
    let (r, _) = second
        .exchange(82, 1, Operation::IsPalindrome { number: 12_321 })
        .await;
    assert_eq!((r.status, r.body), (Status::Approved, Body::Answer(true)));
    let (r, _) = third
        .exchange(80, 2, Operation::Withdraw { amount: 10 })
        .await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(9_990))
    );

    // One closes; a new connection is admitted (and the cap holds again after it).
    drop(first);
    common::eventually("the closed connection is counted out", || open() == 2).await;
    let mut newcomer = server.raw().await;
    let (r, _) = newcomer
        .exchange(83, 1, Operation::IsPrime { number: 4 })
        .await;
    assert_eq!((r.status, r.body), (Status::Approved, Body::Answer(false)));
    assert_eq!(open(), 3);
    let mut one_too_many = RawConnection::connect(&server.address()).await;
    assert!(matches!(
        one_too_many.ending(PATIENCE).await.1,
        Ending::Goodbye(_)
    ));
    let (r, _) = third.exchange(80, 3, Operation::Balance).await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(9_990))
    );
}

/// With two requests allowed in flight and every account reply held back, a third pipelined
/// request is answered `busy` before the other two; retried with the same id once they are done
/// it is approved, and a second retry replays the same reply: the money moved once.
#[tokio::test]
async fn too_many_in_flight_is_busy_and_the_retry_moves_money_once() {
    let server = TestServer::start_with(|config| {
        config.limits.requests_in_flight_max = 2;
        config.faults = Some("delay-ms=500".parse().unwrap());
    });
    let mut atm = RawConnection::connect(&server.address()).await;
    atm.send(&ClientMessage::Hello(actor_bank::protocol::Hello {
        protocol_version: PROTOCOL_VERSION,
    }))
    .await;
    match atm.receive().await {
        Some(ServerMessage::Welcome(welcome)) => assert_eq!(welcome.requests_in_flight_max, 2),
        other => panic!("expected a Welcome, got {other:?}"),
    }
    let (r, _) = atm
        .exchange(
            90,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);

    let mut pipelined = Vec::new();
    for sequence in 2..=4 {
        pipelined.extend(common::request_frame(
            90,
            sequence,
            Operation::Withdraw { amount: 100 },
        ));
    }
    atm.send_bytes(&pipelined).await;
    let (first, _) = atm.receive_reply().await;
    assert_eq!(
        (first.id.sequence, first.status, first.body),
        (4, Status::Busy, Body::Empty),
        "the third request must be refused at once, before the two in flight are answered"
    );
    let mut approved = HashMap::new();
    for _ in 0..2 {
        let (r, _) = atm.receive_reply().await;
        assert_eq!(r.status, Status::Approved, "{r:?}");
        approved.insert(r.id.sequence, reply_balance(&r).unwrap());
    }
    let mut balances: Vec<u64> = approved.values().copied().collect();
    balances.sort_unstable();
    assert_eq!(balances, vec![9_800, 9_900]);
    assert_eq!(server.committed_balance(JOTY), Some(9_800));

    // The refused request was not executed; its retry is, once.
    let (retry, _) = atm
        .exchange(90, 4, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(
        (retry.status, retry.body.clone()),
        (Status::Approved, common::balances(9_700))
    );
    let (again, _) = atm
        .exchange(90, 4, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(again, retry);
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    assert_eq!(
        again.id,
        RequestId {
            client: 90,
            sequence: 4
        }
    );
}

/// With an account mailbox of one message, sixteen clients hammering one card may be answered
/// `busy`; the client library retries with the same ids, and the final balance is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_is_busy_and_retries_keep_the_balance_exact() {
    let server = TestServer::start_with(|config| {
        config.limits.mailbox_capacity = 1;
    });
    let clients = 16u64;
    let rounds = 10u64;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut config = server.client_config();
        config.outcome_deadline = Duration::from_secs(60);
        tasks.push(tokio::spawn(async move {
            let mut atm = actor_bank::client::Client::connect(config).await.unwrap();
            let r = atm.verify(JOTY, JOTY_PIN).await.unwrap();
            assert_eq!(r.status, Status::Approved);
            for _ in 0..rounds {
                let r = atm.deposit(3).await.unwrap();
                assert_eq!(r.status, Status::Approved);
                let r = atm.withdraw(1).await.unwrap();
                assert_eq!(r.status, Status::Approved);
            }
            atm.stats().retries
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await.unwrap();
    }
    eprintln!("{retries} retries (busy answers and others) across {clients} clients");
    let expected = 10_000 + clients * rounds * 2;
    assert_eq!(server.committed_balance(JOTY), Some(expected));
    let mut atm = server.client().await;
    atm.verify(JOTY, JOTY_PIN).await.unwrap();
    let r = atm.balance().await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(expected))
    );
}

/// With an account mailbox of one message, two hundred decisions sent at once to an account
/// actor that is still loading cannot all be queued: most are answered `busy` (nothing decided),
/// the others are approved, and the balance moved by exactly the approved ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_account_mailbox_answers_busy() {
    let server = TestServer::start_with(|config| {
        config.limits.mailbox_capacity = 1;
    });
    let bank = server.running().bank().clone();
    // Two hundred clients, one deposit each, all sent before the actor (started by the first of
    // them) has finished loading the account.
    let decisions = (0..200u64).map(|index| {
        bank.decide(
            JOTY,
            RequestId {
                client: 7_000 + index,
                sequence: 1,
            },
            actor_bank::ledger::Event::Deposit { amount: 1 },
        )
    });
    let outcomes = futures::future::join_all(decisions).await;
    let approved = outcomes
        .iter()
        .filter(|outcome| Status::from(outcome.status) == Status::Approved)
        .count() as u64;
    let busy = outcomes
        .iter()
        .filter(|outcome| Status::from(outcome.status) == Status::Busy)
        .count() as u64;
    eprintln!("{approved} approved, {busy} busy");
    assert_eq!(approved + busy, 200, "{outcomes:?}");
    assert_eq!(server.committed_balance(JOTY), Some(10_000 + approved));
    assert!(
        busy > 0,
        "two hundred messages were queued in a mailbox of one: the capacity is not enforced"
    );
}

/// Many clients pipelining against a tiny in-flight limit and a tiny mailbox at once: whatever is
/// answered `busy` is retried until approved, no request is lost or doubled, and the server stays
/// responsive for a newcomer throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_overload_from_many_connections_settles_exactly() {
    let server = TestServer::start_with(|config| {
        config.limits.requests_in_flight_max = 4;
        config.limits.mailbox_capacity = 2;
    });
    let done = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for connection in 0..8u64 {
        let address = server.address();
        tasks.push(tokio::spawn(async move {
            let client = 1_000 + connection;
            let mut atm = RawConnection::connect(&address).await;
            atm.send_bytes(&common::hello_frame()).await;
            assert!(matches!(
                atm.receive().await,
                Some(ServerMessage::Welcome(_))
            ));
            // The verify itself may meet the full mailbox: retried with its id while busy.
            let r = loop {
                let (r, _) = atm
                    .exchange(
                        client,
                        1,
                        Operation::Verify {
                            card: AHONA,
                            pin: AHONA_PIN.into(),
                        },
                    )
                    .await;
                if r.status != Status::Busy {
                    break r;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            assert_eq!(r.status, Status::Approved);
            // Twenty deposits of 1, all sent at once; busy ones are sent again (same id) until
            // every one is approved.
            let mut pending: Vec<u64> = (2..22).collect();
            let mut attempts = 0;
            while !pending.is_empty() {
                attempts += 1;
                assert!(attempts < 1_000, "deposits never got through: {pending:?}");
                let mut bytes = Vec::new();
                for sequence in &pending {
                    bytes.extend(common::request_frame(
                        client,
                        *sequence,
                        Operation::Deposit { amount: 1 },
                    ));
                }
                atm.send_bytes(&bytes).await;
                let mut still = Vec::new();
                for _ in 0..pending.len() {
                    let (r, _) = atm.receive_reply().await;
                    assert!(pending.contains(&r.id.sequence), "{r:?}");
                    match r.status {
                        Status::Approved => {}
                        Status::Busy => still.push(r.id.sequence),
                        other => panic!("unexpected {other}"),
                    }
                }
                pending = still;
                if !pending.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            attempts
        }));
    }
    let probe = {
        let address = server.address();
        let done = done.clone();
        tokio::spawn(async move {
            // At least one probe, however fast the others finish: the verdict must not depend
            // on who gets the processor first.
            let mut probes = 0u64;
            while probes == 0 || !done.load(Ordering::Relaxed) {
                let mut newcomer = RawConnection::connect(&address).await;
                newcomer.send_bytes(&common::hello_frame()).await;
                assert!(matches!(
                    newcomer.receive().await,
                    Some(ServerMessage::Welcome(_))
                ));
                probes += 1;
                let (r, _) = newcomer
                    .exchange(2_000, probes, Operation::IsPrime { number: 13 })
                    .await;
                assert_eq!(r.status, Status::Approved);
            }
            probes
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(probe.await.unwrap() >= 1);
    assert_eq!(server.committed_balance(AHONA), Some(5_000 + 8 * 20));
}
