//! Slow and silent clients cannot starve anyone: a thousand idle connections and a hundred
//! slowloris senders leave an honest ATM fully served; a frame that starts must finish within the
//! frame deadline; a connection without a verified card that stays silent is closed after the
//! login idle deadline, and a verified one is not.
mod common;
use common::{JOTY, JOTY_PIN};

use actor_bank::client::reply_balance;
use actor_bank::protocol::{Operation, ServerMessage, Status};
use common::{Ending, RawConnection, TestServer};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a test waits for the server to end a connection before calling it still open. Far
/// above every deadline configured here; it only keeps a broken server from hanging the test.
const PATIENCE: Duration = Duration::from_secs(15);

/// One slowloris round: connect, (maybe) say Hello, send a length prefix declaring a body far
/// longer than what follows, then one body byte every `pause`, until the server ends the
/// connection. Returns how it ended, and whether the server answered the Hello.
async fn slowloris_round(address: &str, greet: bool, pause: Duration) -> (Ending, bool) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 1024];
    if greet {
        stream.write_all(&common::hello_frame()).await.unwrap();
    }
    // 4 KiB declared; one byte per pause would take over half an hour.
    stream.write_all(&4096u32.to_be_bytes()).await.unwrap();
    let outcome = tokio::time::timeout(PATIENCE, async {
        let mut writing = true;
        loop {
            tokio::select! {
                read = stream.read(&mut buffer) => match read {
                    Ok(0) => return false,
                    Ok(count) => {
                        received.extend_from_slice(&buffer[..count]);
                        // Once the server speaks (a Goodbye), stop writing: the connection is
                        // closing, and more bytes would only turn its close into a reset.
                        let mut pending = received.clone();
                        let messages = common::decode_server_frames(&mut pending);
                        if messages.iter().any(|message| matches!(message, ServerMessage::Goodbye(_))) {
                            writing = false;
                        }
                    }
                    Err(_) => return true,
                },
                _ = tokio::time::sleep(pause), if writing => {
                    if stream.write_all(&[0x41]).await.is_err() {
                        writing = false;
                    }
                }
            }
        }
    })
    .await;
    let messages = common::decode_server_frames(&mut received);
    let welcomed = matches!(messages.first(), Some(ServerMessage::Welcome(_)));
    let goodbye = messages.iter().find_map(|message| match message {
        ServerMessage::Goodbye(goodbye) => Some(goodbye.reason.clone()),
        _ => None,
    });
    for message in &messages {
        assert!(
            matches!(
                message,
                ServerMessage::Welcome(_) | ServerMessage::Goodbye(_)
            ),
            "a slowloris connection got {message:?}"
        );
    }
    let ending = match (outcome, goodbye) {
        (Err(_), _) => Ending::StillOpen,
        (Ok(_), Some(reason)) => Ending::Goodbye(reason),
        (Ok(false), None) => Ending::Closed,
        (Ok(true), None) => Ending::Reset,
    };
    (ending, welcomed)
}

/// A thousand connections that never send a byte, and a hundred that keep starting frames they
/// never finish (reconnecting each time they are cut off), while an honest ATM verifies,
/// withdraws, deposits and reads its balance with exact results. Every slowloris connection is
/// ended by the frame deadline; the idle ones (with a long login idle deadline) stay open and are
/// sent nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slowloris_connections_do_not_starve_an_honest_atm() {
    let server = TestServer::start_with(|config| {
        config.limits.frame_read_timeout = Duration::from_secs(1);
        config.limits.login_idle_timeout = Duration::from_secs(600);
    });
    let address = server.address();
    let bank = server.running().bank().clone();

    // A thousand idle connections, opened a hundred at a time.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..10 {
        let batch = futures::future::join_all((0..100).map(|_| TcpStream::connect(&address))).await;
        idle.extend(batch.into_iter().map(Result::unwrap));
    }
    common::eventually("the server holds the thousand idle connections", || {
        bank.stats().connections.load(Ordering::Relaxed) >= 1000
    })
    .await;

    // A hundred slowloris senders, half of them after a proper Hello.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicUsize::new(0));
    let endings: Arc<Mutex<Vec<(Ending, bool, bool)>>> = Arc::default();
    let mut attackers = Vec::new();
    for index in 0..100 {
        let (address, stop, started, endings) = (
            address.clone(),
            stop.clone(),
            started.clone(),
            endings.clone(),
        );
        attackers.push(tokio::spawn(async move {
            let greet = index % 2 == 0;
            let mut first = true;
            while first || !stop.load(Ordering::Relaxed) {
                if first {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                let (ending, welcomed) =
                    slowloris_round(&address, greet, Duration::from_millis(200)).await;
                endings.lock().unwrap().push((ending, greet, welcomed));
                first = false;
            }
        }));
    }
    common::eventually("every slowloris sender has started", || {
        started.load(Ordering::Relaxed) == 100
    })
    .await;

    // The honest ATM, through the client library.
    let mut atm = server.client().await;
    let r = atm.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    let r = atm.withdraw(2_500).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(7_500))
    );
    let r = atm.deposit(120).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(7_620))
    );
    let r = atm.balance().await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(7_620))
    );

    // Let every attacker be cut off at least once, then stop them.
    common::eventually("every slowloris connection was cut off once", || {
        endings.lock().unwrap().len() >= 100
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        attacker.await.unwrap();
    }
    let endings = endings.lock().unwrap().clone();
    let mut goodbyes = 0;
    for (ending, greet, welcomed) in &endings {
        assert!(ending.ended(), "a slowloris connection was never cut off");
        if let Ending::Goodbye(reason) = ending {
            goodbyes += 1;
            assert!(reason.contains("took longer than"), "goodbye {reason:?}");
        }
        assert_eq!(greet, welcomed, "a Hello is answered, and only a Hello");
    }
    eprintln!(
        "slowloris: {} connections cut off, {goodbyes} with a Goodbye",
        endings.len()
    );

    // The idle connections are all still open, and the server sent them nothing.
    let mut buffer = [0u8; 16];
    for stream in &idle {
        match stream.try_read(&mut buffer) {
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("an idle connection was not left alone: {other:?}"),
        }
    }
    assert!(bank.stats().connections.load(Ordering::Relaxed) > 1000);
    assert_eq!(server.committed_balance(JOTY), Some(7_620));

    // The ATM is still served after the siege.
    let r = atm.withdraw(20).await.unwrap();
    assert_eq!(
        (r.status, reply_balance(&r)),
        (Status::Approved, Some(7_600))
    );
}

/// A frame that has started must be complete within the frame deadline: a sender that trickles
/// its frame gets a Goodbye naming the deadline and the connection closes, and the partial
/// request is never executed. A frame sent in pieces that arrive within the deadline is served.
#[tokio::test]
async fn slow_senders_are_cut_off_by_the_frame_deadline() {
    let server = TestServer::start_with(|config| {
        config.limits.frame_read_timeout = Duration::from_millis(1500);
    });
    // A logged-in connection that trickles a withdrawal.
    let mut slow = server.raw().await;
    let (r, _) = slow
        .exchange(
            41,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let withdrawal = common::request_frame(41, 2, Operation::Withdraw { amount: 700 });
    let (head, tail) = withdrawal.split_at(withdrawal.len() - 1);
    let trickle = async {
        for byte in head {
            slow.stream.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(400)).await;
            let mut probe = [0u8; 1];
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(1), slow.stream.peek(&mut probe)).await
            {
                return true;
            }
        }
        false
    };
    assert!(
        trickle.await,
        "the server waited for a frame trickled over {} ms without a word",
        head.len() * 400
    );
    let (messages, ending) = slow.ending(PATIENCE).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    match ending {
        Ending::Goodbye(reason) => assert!(
            reason.contains("took longer than 1.5s"),
            "goodbye {reason:?}"
        ),
        other => panic!("expected a Goodbye and a close, got {other:?}"),
    }
    // The rest of the frame now has nowhere to go; the withdrawal never ran.
    let _ = slow.stream.write_all(tail).await;
    assert_eq!(server.committed_balance(JOTY), Some(10_000));

    // A header cut after its first byte is a frame that has started, too.
    let mut header_only = RawConnection::connect(&server.address()).await;
    header_only.send_bytes(&[0]).await;
    match header_only.ending(PATIENCE).await {
        (_, Ending::Goodbye(reason)) => assert!(reason.contains("took longer than"), "{reason}"),
        other => panic!("expected a Goodbye and a close, got {other:?}"),
    }

    // A frame sent in pieces that all arrive in time is served.
    let mut prompt = server.raw().await;
    let verify = common::request_frame(
        42,
        1,
        Operation::Verify {
            card: JOTY,
            pin: JOTY_PIN.into(),
        },
    );
    for piece in verify.chunks(verify.len() / 3 + 1) {
        prompt.send_bytes(piece).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (r, _) = prompt.receive_reply().await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = prompt
        .exchange(42, 2, Operation::Withdraw { amount: 700 })
        .await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(9_300))
    );
}

/// A connection without a verified card that sends nothing is closed after the login idle
/// deadline, with a Goodbye saying why: before the Hello, after it, and after a failed PIN.
#[tokio::test]
async fn silent_connections_without_a_verified_card_are_closed() {
    let server = TestServer::start_with(|config| {
        config.limits.login_idle_timeout = Duration::from_secs(1);
    });
    let bank = server.running().bank().clone();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(RawConnection::connect(&server.address()).await);
    }
    for _ in 0..20 {
        silent.push(server.raw().await);
    }
    let mut wrong_pin = server.raw().await;
    let (r, _) = wrong_pin
        .exchange(
            43,
            1,
            Operation::Verify {
                card: JOTY,
                pin: "0000".into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::IncorrectPin);
    silent.push(wrong_pin);
    for connection in &mut silent {
        match connection.ending(PATIENCE).await {
            (_, Ending::Goodbye(reason)) => {
                assert!(reason.contains("without a verified card"), "{reason}")
            }
            other => panic!("expected a Goodbye and a close, got {other:?}"),
        }
    }
    common::eventually("the closed sessions are counted out", || {
        bank.stats().connections.load(Ordering::Relaxed) == 0
    })
    .await;
}

/// Returns once the login idle deadline has passed for every connection opened before the call:
/// a witness connection opened now, which never verifies, has been closed for it. An event, not a
/// pause, decides that the deadline passed.
async fn login_deadline_passed(server: &TestServer) {
    let mut witness = server.raw().await;
    match witness.ending(PATIENCE).await {
        (_, Ending::Goodbye(reason)) => {
            assert!(reason.contains("without a verified card"), "{reason}")
        }
        other => panic!("the witness was not closed by the login deadline: {other:?}"),
    }
}

/// A connection with a verified card may stay silent longer than the login idle deadline (an ATM
/// whose customer is thinking) and is still served.
#[tokio::test]
async fn a_verified_connection_may_stay_silent_past_the_login_deadline() {
    let server = TestServer::start_with(|config| {
        config.limits.login_idle_timeout = Duration::from_secs(1);
    });
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(
            44,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    login_deadline_passed(&server).await;
    atm.request(44, 2, Operation::Balance).await;
    match atm.receive().await {
        Some(ServerMessage::Reply(r)) => {
            assert_eq!(
                (r.status, r.body),
                (Status::Approved, common::balances(10_000))
            )
        }
        other => panic!("the verified connection was not served after a pause: {other:?}"),
    }
}

/// Once the reader has seen a frame after the verification was answered, the login idle deadline
/// no longer applies: a verified connection that sent one more request may stay silent.
#[tokio::test]
async fn a_verified_connection_that_sent_again_may_stay_silent() {
    let server = TestServer::start_with(|config| {
        config.limits.login_idle_timeout = Duration::from_secs(1);
    });
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(
            45,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm.exchange(45, 2, Operation::Balance).await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(10_000))
    );
    login_deadline_passed(&server).await;
    let (r, _) = atm.exchange(45, 3, Operation::Withdraw { amount: 5 }).await;
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(9_995))
    );
}
