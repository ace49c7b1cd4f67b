//! Resource budgets and fair slots: clients that send requests with large replies and never read
//! are held to their connection's byte budget and, together, to the server's; one peer cannot
//! take every connection slot; a connection that never verifies a card is closed at an absolute
//! deadline whatever it sends; a verified connection that stays silent is closed after its idle
//! time; every budget is given back when the connections close.
//!
//! Every limit here is small so the tests are quick; every assertion is about counters and
//! events, never about how long something took.
mod common;
use common::{Ending, RawConnection, TestServer, JOTY, JOTY_PIN};

use actor_bank::client::reply_balance;
use actor_bank::protocol::{Operation, ServerMessage, Status};
use actor_bank::server::budget::SMALL_REPLY_BYTES_MAX;
use actor_bank::server::slots::PeerKey;
use actor_bank::server::Bank;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for the server to end a connection before calling it still open. Far
/// above every deadline configured here; it only keeps a broken server from hanging the test.
const PATIENCE: Duration = Duration::from_secs(15);

/// The frame limit of the flood tests: each `Lowercase` reply takes nearly a whole frame.
const FRAME_BYTES_MAX: usize = 8 * 1024;

/// Capitals in each flood request: the reply (with its header) nearly fills a frame.
const FLOOD_TEXT_BYTES: usize = 8_000;

/// A connection from `local` (any port) with tiny socket buffers, so that replies back up in the
/// server instead of in the operating system.
async fn connect_from(local: &str, server: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket
        .bind(format!("{local}:0").parse::<SocketAddr>().unwrap())
        .unwrap();
    socket.connect(server.parse().unwrap()).await.unwrap()
}

/// A greeted raw connection from `local`.
async fn raw_from(local: &str, server: &str) -> RawConnection {
    RawConnection {
        stream: connect_from(local, server).await,
    }
    .greeted()
    .await
}

/// A client that says Hello, then writes `Lowercase` requests of a nearly full frame and never
/// reads, until a write makes no progress for a while (the server stopped reading). Returns the
/// connection, still open.
async fn flood(server: String, client: u64) -> TcpStream {
    let mut stream = connect_from("127.0.0.1", &server).await;
    stream.write_all(&common::hello_frame()).await.unwrap();
    let text = "A".repeat(FLOOD_TEXT_BYTES);
    for sequence in 1.. {
        let frame = common::request_frame(
            client,
            sequence,
            Operation::Lowercase { text: text.clone() },
        );
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => panic!("the server dropped a flooding client early: {error}"),
            Err(_) => break,
        }
    }
    stream
}

/// Starts `count` flooding clients and returns their connections once every one has stalled.
async fn flooders(server: &TestServer, count: u64) -> Vec<TcpStream> {
    let tasks: Vec<_> = (0..count)
        .map(|index| tokio::spawn(flood(server.address(), 500 + index)))
        .collect();
    let mut streams = Vec::new();
    for task in tasks {
        streams.push(task.await.unwrap());
    }
    streams
}

/// An honest ATM verifies, withdraws and reads its balance, with exact results.
async fn honest_atm_is_served(server: &TestServer, amount: u64) {
    let mut atm = server.client().await;
    let r = atm.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    let r = atm.withdraw(amount).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(10_000 - amount))
    );
    let r = atm.balance().await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(10_000 - amount))
    );
}

/// Closes `streams` and waits until the server has counted every connection out and given
/// every reserved and queued reply byte back.
async fn budgets_come_back(bank: &Arc<Bank>, streams: Vec<TcpStream>) {
    drop(streams);
    common::eventually("every connection is closed", || {
        bank.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
    common::eventually("every reply byte is given back", || {
        bank.reply_budget().held() == 0
    })
    .await;
}

/// Clients that flood `Lowercase` requests and never read are stopped by their own byte budget
/// (no connection ever holds more than its budget, far below the frame-count window), an honest
/// ATM is served meanwhile, and every byte comes back once they are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lowercase_flood_stays_within_the_connection_budget() {
    let connection_max = 32 * 1024;
    let server = TestServer::start_with(|config| {
        config.limits.frame_bytes_max = FRAME_BYTES_MAX;
        config.limits.connection_reply_bytes_max = connection_max;
        config.limits.write_timeout = Duration::from_secs(60);
    });
    let bank = server.running().bank().clone();
    let streams = flooders(&server, 4).await;
    let budget = bank.reply_budget().clone();
    common::eventually("every flooder stopped on its own budget", || {
        budget.connection_waits() >= 4
    })
    .await;
    honest_atm_is_served(&server, 300).await;
    eprintln!(
        "flood: peak {} bytes on one connection, {} in all; {} bytes held now",
        budget.connection_peak(),
        budget.held_peak(),
        budget.held()
    );
    assert!(
        budget.connection_peak() <= connection_max + SMALL_REPLY_BYTES_MAX,
        "a connection held {} bytes over its budget of {connection_max}",
        budget.connection_peak()
    );
    assert!(budget.held() <= 5 * (connection_max + SMALL_REPLY_BYTES_MAX));
    assert_eq!(
        budget.global_waits(),
        0,
        "the global budget was never short"
    );
    budgets_come_back(&bank, streams).await;
}

/// When the flooders together use up the server's budget, the heaviest stop being read from
/// (they hold more than their fair share), while an honest ATM, holding nothing, is served; the
/// queued bytes stay below twice the global budget; everything comes back at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_budget_stops_reading_from_the_heaviest() {
    let global_max = 48 * 1024;
    let server = TestServer::start_with(|config| {
        config.limits.frame_bytes_max = FRAME_BYTES_MAX;
        config.limits.connection_reply_bytes_max = 64 * 1024;
        config.limits.reply_bytes_max = global_max;
        config.limits.write_timeout = Duration::from_secs(60);
    });
    let bank = server.running().bank().clone();
    let streams = flooders(&server, 4).await;
    let budget = bank.reply_budget().clone();
    common::eventually("a flooder stopped on the global budget", || {
        budget.global_waits() >= 1
    })
    .await;
    honest_atm_is_served(&server, 400).await;
    eprintln!(
        "global: peak {} bytes in all (budget {global_max}), {} on one connection",
        budget.held_peak(),
        budget.connection_peak()
    );
    assert!(
        budget.held_peak() <= 2 * global_max,
        "{} bytes queued against a global budget of {global_max}",
        budget.held_peak()
    );
    assert_eq!(
        budget.connection_waits(),
        0,
        "no flooder reached its own budget"
    );
    budgets_come_back(&bank, streams).await;
}

/// A peer holding all its slots has its next connection refused with a Goodbye, counted; a
/// connection from another address is served meanwhile, and once the peer's connections close it
/// is served again.
#[tokio::test]
async fn a_peer_at_its_cap_is_refused_and_others_are_not() {
    let server = TestServer::start_with(|config| {
        config.limits.connections_per_peer_max = 3;
    });
    let bank = server.running().bank().clone();
    let address = server.address();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_from("127.0.0.1", &address).await);
    }
    let mut refused = RawConnection {
        stream: connect_from("127.0.0.1", &address).await,
    };
    match refused.ending(PATIENCE).await {
        (_, Ending::Goodbye(reason)) => assert!(reason.contains("for your address"), "{reason}"),
        other => panic!("the fourth connection was not refused: {other:?}"),
    }
    let stats = bank.stats();
    assert_eq!(
        stats.connections_refused_per_peer.load(Ordering::Relaxed),
        1
    );
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 1);

    // Another address (the loopback network is all local) is not held to this peer's cap.
    let mut other = raw_from("127.0.0.2", &address).await;
    let (r, _) = other.exchange(61, 1, common::verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);

    drop(held);
    let key = PeerKey::of_address("127.0.0.1".parse().unwrap());
    common::eventually("the peer's slots come back", || {
        bank.slots().open(&key) == 0
    })
    .await;
    let mut again = raw_from("127.0.0.1", &address).await;
    let (r, _) = again.exchange(62, 1, common::verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
}

/// Sends `IsPrime` every 100 ms and reads each reply, until the server says goodbye; returns the
/// replies it got and the goodbye's reason (`None` if the connection was still open at the end of
/// the patience).
async fn ask_until_goodbye(connection: &mut RawConnection, client: u64) -> (usize, Option<String>) {
    let asking = async {
        let mut replies = 0;
        for sequence in 1.. {
            connection
                .request(client, sequence, Operation::IsPrime { number: 97 })
                .await;
            match connection.receive().await {
                Some(ServerMessage::Reply(_)) => replies += 1,
                Some(ServerMessage::Goodbye(goodbye)) => return (replies, Some(goodbye.reason)),
                other => panic!("expected a reply or a goodbye, got {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!("the sequence numbers ran out")
    };
    tokio::time::timeout(PATIENCE, asking)
        .await
        .unwrap_or((0, None))
}

/// Utility requests do not keep a connection without a verified card open: it is closed at the
/// unverified deadline counted from its acceptance, with a Goodbye and a count. A connection that
/// verified keeps being served after that deadline has passed for a later one.
#[tokio::test]
async fn the_unverified_deadline_is_not_reset_by_requests() {
    let server = TestServer::start_with(|config| {
        config.limits.unverified_deadline = Duration::from_secs(2);
        config.limits.login_idle_timeout = Duration::from_secs(600);
    });
    let bank = server.running().bank().clone();
    let mut verified = server.raw().await;
    let (r, _) = verified
        .exchange(71, 1, common::verify(JOTY, JOTY_PIN))
        .await;
    assert_eq!(r.status, Status::Approved);

    let mut chatty = server.raw().await;
    let (replies, reason) = ask_until_goodbye(&mut chatty, 72).await;
    let reason = reason.expect("a connection that never verified was still open");
    assert!(reason.contains("without a verified card"), "{reason}");
    assert!(
        replies >= 1,
        "the utility requests were answered until then"
    );
    assert_eq!(bank.stats().unverified_deadlines.load(Ordering::Relaxed), 1);

    // Opened before the chatty one, the verified connection is past its deadline too.
    let (r, _) = verified.exchange(71, 2, Operation::Balance).await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(10_000))
    );
}

/// A connection with a verified card that sends nothing for the verified idle time is closed
/// with a Goodbye saying why, and counted.
#[tokio::test]
async fn a_silent_verified_connection_is_closed_after_its_idle_time() {
    let server = TestServer::start_with(|config| {
        config.limits.verified_idle = Duration::from_secs(1);
    });
    let bank = server.running().bank().clone();
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(81, 1, common::verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    match atm.ending(PATIENCE).await {
        (_, Ending::Goodbye(reason)) => {
            assert!(reason.contains("with a verified card"), "{reason}")
        }
        other => panic!("the silent verified connection was not closed: {other:?}"),
    }
    assert_eq!(bank.stats().verified_idles.load(Ordering::Relaxed), 1);
    common::eventually("the closed session is counted out", || {
        bank.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
    assert_eq!(bank.reply_budget().held(), 0);
}
