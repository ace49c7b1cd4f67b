//! Core operations over the real protocol: the handshake, every operation, and every status a
//! request can end in (approved, busy, unavailable, not_authorised, not_logged_in,
//! invalid_request, unknown_card, card_exists, invalid_amount, insufficient_funds), pipelining
//! and the lab's utilities. Exactly-once, bad input and security have suites of their own.
mod common;
use common::{create, reply, verify, AHONA, JOTY, JOTY_PIN};

use actor_bank::codec::{encode_frame, encode_wire};
use actor_bank::journal::files::FullDisk;
use actor_bank::protocol::{
    Body, ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, Status, Welcome,
    PROTOCOL_VERSION,
};
use common::{request_frame, TestServer, OPERATOR_TOKEN};
use std::collections::HashMap;
use std::sync::Arc;

/// The Welcome announces the protocol version and the limits actually configured.
#[tokio::test]
async fn the_handshake_announces_the_version_and_the_limits() {
    let server = TestServer::start();
    let mut connection = common::RawConnection::connect(&server.address()).await;
    connection
        .send(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .await;
    assert_eq!(
        connection.receive().await,
        Some(ServerMessage::Welcome(Welcome {
            protocol_version: 2,
            requests_in_flight_max: 64,
            request_window: 32,
            frame_bytes_max: 64 * 1024,
            client_retention_secs: 86_400,
        }))
    );

    let tuned = TestServer::start_with(|config| {
        config.limits.requests_in_flight_max = 5;
        config.limits.frame_bytes_max = 4000;
        config.client_retention = std::time::Duration::from_secs(600);
    });
    let mut connection = common::RawConnection::connect(&tuned.address()).await;
    connection
        .send(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .await;
    assert_eq!(
        connection.receive().await,
        Some(ServerMessage::Welcome(Welcome {
            protocol_version: 2,
            requests_in_flight_max: 5,
            request_window: 32,
            frame_bytes_max: 4000,
            client_retention_secs: 600,
        }))
    );
}

/// A session verifies a card, reads its balance, withdraws, deposits and logs out, with exact
/// replies; after the logout account operations answer not_logged_in and move nothing.
#[tokio::test]
async fn a_session_verifies_reads_withdraws_deposits_and_logs_out() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 11;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, Body::Empty));
    let (r, _) = atm.exchange(c, 2, Operation::Balance).await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(10_000)));
    let (r, _) = atm
        .exchange(c, 3, Operation::Withdraw { amount: 2_500 })
        .await;
    assert_eq!(r, reply(c, 3, Status::Approved, common::balances(7_500)));
    let (r, _) = atm
        .exchange(c, 4, Operation::Deposit { amount: 1_000 })
        .await;
    assert_eq!(r, reply(c, 4, Status::Approved, common::balances(8_500)));
    let (r, _) = atm.exchange(c, 5, Operation::Balance).await;
    assert_eq!(r, reply(c, 5, Status::Approved, common::balances(8_500)));
    let (r, _) = atm.exchange(c, 6, Operation::Logout).await;
    assert_eq!(r, reply(c, 6, Status::Approved, Body::Empty));
    let (r, _) = atm.exchange(c, 7, Operation::Balance).await;
    assert_eq!(r, reply(c, 7, Status::NotLoggedIn, Body::Empty));
    let (r, _) = atm.exchange(c, 8, Operation::Withdraw { amount: 1 }).await;
    assert_eq!(r, reply(c, 8, Status::NotLoggedIn, Body::Empty));
    let (r, _) = atm.exchange(c, 9, Operation::Deposit { amount: 1 }).await;
    assert_eq!(r, reply(c, 9, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(8_500));
    assert_eq!(server.committed_balance(AHONA), Some(5_000));
}

/// A fresh connection is not logged in: account operations answer not_logged_in, whatever the
/// amount (not_logged_in takes precedence over invalid_amount).
#[tokio::test]
async fn account_operations_without_a_verified_card_are_not_logged_in() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 12;
    for (sequence, operation) in [
        Operation::Balance,
        Operation::Withdraw { amount: 100 },
        Operation::Withdraw { amount: 0 },
        Operation::Deposit { amount: 100 },
        Operation::Deposit { amount: 0 },
    ]
    .into_iter()
    .enumerate()
    {
        let sequence = sequence as u64 + 1;
        let (r, _) = atm.exchange(c, sequence, operation).await;
        assert_eq!(r, reply(c, sequence, Status::NotLoggedIn, Body::Empty));
    }
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
    assert_eq!(server.committed_balance(AHONA), Some(5_000));
}

/// Zero amounts, overdrafts, an overflowing deposit and an unknown card are refused with their
/// status; refusals carry the current balance and never change it.
#[tokio::test]
async fn refusals_carry_their_status_and_move_no_money() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 13;
    let (r, _) = atm.exchange(c, 1, verify(555_000_111, "1234")).await;
    assert_eq!(r, reply(c, 1, Status::UnknownCard, Body::Empty));
    let (r, _) = atm.exchange(c, 2, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 2, Status::Approved, Body::Empty));
    let steps = [
        (
            Operation::Withdraw { amount: 0 },
            Status::InvalidAmount,
            10_000,
        ),
        (
            Operation::Deposit { amount: 0 },
            Status::InvalidAmount,
            10_000,
        ),
        (
            Operation::Withdraw { amount: 10_001 },
            Status::InsufficientFunds,
            10_000,
        ),
        (
            Operation::Withdraw { amount: u64::MAX },
            Status::InsufficientFunds,
            10_000,
        ),
        (Operation::Withdraw { amount: 10_000 }, Status::Approved, 0),
        (
            Operation::Withdraw { amount: 1 },
            Status::InsufficientFunds,
            0,
        ),
        (
            Operation::Deposit { amount: u64::MAX },
            Status::Approved,
            u64::MAX,
        ),
        (
            Operation::Deposit { amount: 1 },
            Status::InvalidAmount,
            u64::MAX,
        ),
        (
            Operation::Withdraw {
                amount: u64::MAX - 7,
            },
            Status::Approved,
            7,
        ),
    ];
    for (index, (operation, status, balance)) in steps.into_iter().enumerate() {
        let sequence = index as u64 + 3;
        let (r, _) = atm.exchange(c, sequence, operation).await;
        assert_eq!(r, reply(c, sequence, status, common::balances(balance)));
    }
    let (r, _) = atm.exchange(c, 20, Operation::Balance).await;
    assert_eq!(r, reply(c, 20, Status::Approved, common::balances(7)));
    assert_eq!(server.committed_balance(JOTY), Some(7));
    assert_eq!(server.committed_balance(AHONA), Some(5_000));
    let bank = server.running().bank();
    assert!(bank
        .storage()
        .with_committed(|ledger| ledger.is_conserved()));
}

/// The operator opens an account that can then be used; a second open of the card answers
/// card_exists; a wrong or empty token answers not_authorised; malformed PINs and holder names
/// answer invalid_request and open nothing; the boundaries (12-digit PIN, 64-byte name) are valid.
#[tokio::test]
async fn the_operator_creates_accounts_and_bad_ones_are_refused() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 14;
    let card = 111_222_333;
    let (r, _) = atm
        .exchange(c, 1, create(OPERATOR_TOKEN, card, "Rahim", "4321", 700))
        .await;
    assert_eq!(r, reply(c, 1, Status::Approved, common::balances(700)));
    let (r, _) = atm
        .exchange(c, 2, create(OPERATOR_TOKEN, card, "Someone", "9999", 5))
        .await;
    assert_eq!(r, reply(c, 2, Status::CardExists, Body::Empty));
    let (r, _) = atm
        .exchange(c, 3, create(OPERATOR_TOKEN, JOTY, "Joty", "1234", 1))
        .await;
    assert_eq!(r, reply(c, 3, Status::CardExists, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));

    // The new account works, with the PIN it was opened with.
    let (r, _) = atm.exchange(c, 4, verify(card, "9999")).await;
    assert_eq!(r, reply(c, 4, Status::IncorrectPin, Body::Empty));
    let (r, _) = atm.exchange(c, 5, verify(card, "4321")).await;
    assert_eq!(r, reply(c, 5, Status::Approved, Body::Empty));
    let (r, _) = atm
        .exchange(c, 6, Operation::Withdraw { amount: 200 })
        .await;
    assert_eq!(r, reply(c, 6, Status::Approved, common::balances(500)));

    // Not the operator: refused before anything else is checked.
    let other = 444_555_666;
    let refusals = [
        (
            create("wrong-token", other, "Mina", "1234", 1),
            Status::NotAuthorised,
        ),
        (create("", other, "Mina", "1234", 1), Status::NotAuthorised),
        (
            create(&format!("{OPERATOR_TOKEN} "), other, "Mina", "1234", 1),
            Status::NotAuthorised,
        ),
        (
            create("wrong-token", other, "", "12", 1),
            Status::NotAuthorised,
        ),
        // Malformed parameters.
        (
            create(OPERATOR_TOKEN, other, "Mina", "123", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "Mina", "1234567890123", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "Mina", "12a4", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "Mina", "", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "Mina", "١٢٣٤", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "", "1234", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, "   ", "1234", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, &"x".repeat(65), "1234", 1),
            Status::InvalidRequest,
        ),
        (
            create(OPERATOR_TOKEN, other, &"é".repeat(33), "1234", 1),
            Status::InvalidRequest,
        ),
        // Invalid parameters win over an existing card.
        (
            create(OPERATOR_TOKEN, JOTY, "Joty", "12", 1),
            Status::InvalidRequest,
        ),
    ];
    for (index, (operation, status)) in refusals.into_iter().enumerate() {
        let sequence = index as u64 + 10;
        let (r, _) = atm.exchange(c, sequence, operation).await;
        assert_eq!(
            r,
            reply(c, sequence, status, Body::Empty),
            "refusal #{index}"
        );
    }
    assert_eq!(server.committed_balance(other), None);

    // The boundaries are accepted.
    let (r, _) = atm
        .exchange(
            c,
            30,
            create(OPERATOR_TOKEN, other, &"é".repeat(32), "123456789012", 0),
        )
        .await;
    assert_eq!(r, reply(c, 30, Status::Approved, common::balances(0)));
    let (r, _) = atm
        .exchange(
            c,
            31,
            create(OPERATOR_TOKEN, 1, &"x".repeat(64), "0000", 42),
        )
        .await;
    assert_eq!(r, reply(c, 31, Status::Approved, common::balances(42)));
    let (r, _) = atm.exchange(c, 32, verify(other, "123456789012")).await;
    assert_eq!(r, reply(c, 32, Status::Approved, Body::Empty));
    let (r, _) = atm.exchange(c, 33, Operation::Balance).await;
    assert_eq!(r, reply(c, 33, Status::Approved, common::balances(0)));
    assert_eq!(server.committed_balance(other), Some(0));
    assert_eq!(server.committed_balance(1), Some(42));
}

/// A server started without an operator token refuses every account creation.
#[tokio::test]
async fn without_an_operator_token_nobody_creates_accounts() {
    let server = TestServer::start_with(|config| config.operator_token = None);
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(15, 1, create(OPERATOR_TOKEN, 222, "Mina", "1234", 1))
        .await;
    assert_eq!(r, reply(15, 1, Status::NotAuthorised, Body::Empty));
    let (r, _) = atm
        .exchange(15, 2, create("", 222, "Mina", "1234", 1))
        .await;
    assert_eq!(r, reply(15, 2, Status::NotAuthorised, Body::Empty));
    assert_eq!(server.committed_balance(222), None);
}

/// The client library drives the same operations and reports the same statuses.
#[tokio::test]
async fn the_client_library_runs_every_account_operation() {
    let server = TestServer::start();
    let mut client = server.client().await;
    let card = 333_444_555;
    let r = client
        .create_account(OPERATOR_TOKEN, card, "Nadia", "2468", 1_000)
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(1_000))
    );
    let r = client
        .create_account("nope", card, "Nadia", "2468", 1_000)
        .await
        .unwrap();
    assert_eq!((r.status, r.body), (Status::NotAuthorised, Body::Empty));
    let r = client.withdraw(10).await.unwrap();
    assert_eq!((r.status, r.body), (Status::NotLoggedIn, Body::Empty));
    let r = client.verify(card, "2468").await.unwrap();
    assert_eq!((r.status, r.body), (Status::Approved, Body::Empty));
    let r = client.deposit(250).await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(1_250))
    );
    let r = client.withdraw(1_000).await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(250))
    );
    let r = client.withdraw(251).await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::InsufficientFunds, common::balances(250))
    );
    let r = client.balance().await.unwrap();
    assert_eq!(
        (r.status, r.body),
        (Status::Approved, common::balances(250))
    );
    assert_eq!(server.committed_balance(card), Some(250));
    assert_eq!(client.stats().retries, 0);
}

/// The utilities answer without a login: full Unicode lowercasing, exact primality up to the
/// largest 64-bit prime, decimal palindromes.
#[tokio::test]
async fn the_utilities_answer_without_a_login() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 16;
    let lowercase = [
        ("HeLLo ÄTM", "hello ätm"),
        ("ΣΑΣ ΟΔΟΣ", "σας οδος"),
        ("İSTANBUL", "i\u{307}stanbul"),
        ("ÀÉÎÕÜ ЖЁЛТЫЙ", "àéîõü жёлтый"),
        ("already lower 123 !?", "already lower 123 !?"),
        ("", ""),
    ];
    let mut sequence = 0;
    for (text, lower) in lowercase {
        sequence += 1;
        let operation = Operation::Lowercase {
            text: text.to_string(),
        };
        let (r, _) = atm.exchange(c, sequence, operation).await;
        assert_eq!(
            r,
            reply(c, sequence, Status::Approved, Body::Text(lower.to_string()))
        );
    }
    let primes = [
        (0, false),
        (1, false),
        (2, true),
        (3, true),
        (4, false),
        (97, true),
        (561, false),                       // a Carmichael number
        (3_215_031_751, false),             // a strong pseudoprime to bases 2, 3, 5, 7
        (4_294_967_291, true),              // the largest 32-bit prime
        (18_446_744_073_709_551_557, true), // the largest 64-bit prime
        (18_446_744_073_709_551_559, false),
        (u64::MAX, false),
    ];
    for (number, prime) in primes {
        sequence += 1;
        let (r, _) = atm
            .exchange(c, sequence, Operation::IsPrime { number })
            .await;
        assert_eq!(
            r,
            reply(c, sequence, Status::Approved, Body::Answer(prime)),
            "{number}"
        );
    }
    let palindromes = [
        (0, true),
        (7, true),
        (10, false),
        (121, true),
        (12_321, true),
        (123_456, false),
        (1_234_554_321, true),
        (18_446_744_066_044_764_481, true),
        (u64::MAX, false),
    ];
    for (number, palindrome) in palindromes {
        sequence += 1;
        let (r, _) = atm
            .exchange(c, sequence, Operation::IsPalindrome { number })
            .await;
        assert_eq!(
            r,
            reply(c, sequence, Status::Approved, Body::Answer(palindrome)),
            "{number}"
        );
    }
    // The utilities are not journaled and need no memory of completed requests.
    let head = server.running().bank().storage().stats().head_lsn;
    assert_eq!(head, 2, "only the two demo accounts were journaled");
}

/// Several requests sent before any reply is read are all answered, each with its own id; the
/// changes on one card are serialised (each approved withdrawal reports a different balance)
/// and add up exactly.
#[tokio::test]
async fn pipelined_requests_are_answered_and_matched_by_id() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let c = 17;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);

    let mut bytes = Vec::new();
    bytes.extend(request_frame(c, 10, Operation::Withdraw { amount: 100 }));
    bytes.extend(request_frame(
        c,
        11,
        Operation::Lowercase {
            text: "PIPE".into(),
        },
    ));
    bytes.extend(request_frame(c, 12, Operation::IsPrime { number: 7 }));
    bytes.extend(request_frame(c, 13, Operation::Withdraw { amount: 0 }));
    bytes.extend(request_frame(c, 14, Operation::IsPalindrome { number: 12 }));
    for sequence in 20..40 {
        bytes.extend(request_frame(
            c,
            sequence,
            Operation::Withdraw { amount: 10 },
        ));
    }
    atm.send_bytes(&bytes).await;

    let mut replies = HashMap::new();
    for _ in 0..25 {
        let (r, _) = atm.receive_reply().await;
        assert_eq!(r.id.client, c);
        assert!(
            replies.insert(r.id.sequence, r.clone()).is_none(),
            "two replies for {:?}",
            r.id
        );
    }
    assert_eq!(
        replies[&11],
        reply(c, 11, Status::Approved, Body::Text("pipe".into()))
    );
    assert_eq!(
        replies[&12],
        reply(c, 12, Status::Approved, Body::Answer(true))
    );
    assert_eq!(
        replies[&14],
        reply(c, 14, Status::Approved, Body::Answer(false))
    );
    assert_eq!(replies[&13].status, Status::InvalidAmount);
    // 21 approved withdrawals, each reporting a different balance, the lowest being the end
    // result 10000 - 100 - 20 * 10 = 9700.
    let mut balances = Vec::new();
    for sequence in [10].into_iter().chain(20..40) {
        let r = &replies[&sequence];
        assert_eq!(r.status, Status::Approved, "{r:?}");
        match r.body {
            // No hold is open: all of the balance is available.
            Body::Balances { ledger, available } if ledger == available => balances.push(ledger),
            ref other => panic!("no balances in {other:?}"),
        }
    }
    balances.sort_unstable();
    balances.dedup();
    assert_eq!(
        balances.len(),
        21,
        "two withdrawals reported the same balance"
    );
    assert_eq!(balances[0], 9_700);
    assert_eq!(server.committed_balance(JOTY), Some(9_700));

    // Deposits pipelined the same way.
    let mut bytes = Vec::new();
    for sequence in 50..55 {
        bytes.extend(request_frame(
            c,
            sequence,
            Operation::Deposit { amount: 60 },
        ));
    }
    atm.send_bytes(&bytes).await;
    let mut balances = Vec::new();
    let mut sequences = Vec::new();
    for _ in 50..55 {
        let (r, _) = atm.receive_reply().await;
        assert_eq!(r.status, Status::Approved, "{r:?}");
        sequences.push(r.id.sequence);
        match r.body {
            Body::Balances { ledger, available } if ledger == available => balances.push(ledger),
            ref other => panic!("no balances in {other:?}"),
        }
    }
    sequences.sort_unstable();
    balances.sort_unstable();
    assert_eq!(sequences, vec![50, 51, 52, 53, 54]);
    assert_eq!(balances, vec![9_760, 9_820, 9_880, 9_940, 10_000]);
    let (r, _) = atm.exchange(c, 60, Operation::Balance).await;
    assert_eq!(r, reply(c, 60, Status::Approved, common::balances(10_000)));
}

/// With one request allowed in flight per connection (and replies slowed down), requests sent
/// while one is pending are answered busy at once and decide nothing; a retry of the busy id
/// later executes it normally.
#[tokio::test]
async fn requests_over_the_in_flight_limit_are_answered_busy() {
    let server = TestServer::start_with(|config| {
        config.limits.requests_in_flight_max = 1;
        config.faults = Some("delay-ms=400".parse().unwrap());
    });
    let mut atm = server.raw().await;
    let c = 18;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, Body::Empty));

    let mut bytes = request_frame(c, 2, Operation::Withdraw { amount: 100 });
    bytes.extend(request_frame(c, 3, Operation::Withdraw { amount: 200 }));
    bytes.extend(request_frame(c, 4, Operation::IsPrime { number: 13 }));
    atm.send_bytes(&bytes).await;
    let mut replies = HashMap::new();
    for _ in 0..3 {
        let (r, _) = atm.receive_reply().await;
        replies.insert(r.id.sequence, r);
    }
    assert_eq!(
        replies[&2],
        reply(c, 2, Status::Approved, common::balances(9_900))
    );
    assert_eq!(replies[&3], reply(c, 3, Status::Busy, Body::Empty));
    assert_eq!(replies[&4], reply(c, 4, Status::Busy, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(9_900));

    // busy is not definite: the same id, retried, executes once.
    let (r, _) = atm
        .exchange(c, 3, Operation::Withdraw { amount: 200 })
        .await;
    assert_eq!(r, reply(c, 3, Status::Approved, common::balances(9_700)));
    let (r, _) = atm
        .exchange(c, 3, Operation::Withdraw { amount: 200 })
        .await;
    assert_eq!(r, reply(c, 3, Status::Approved, common::balances(9_700)));
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
}

/// When the journal cannot write (a full disk), changes are answered unavailable and nothing is
/// acknowledged; utilities still work; after a restart on a healthy disk nothing was lost.
#[tokio::test]
async fn a_failing_journal_answers_unavailable_and_acknowledges_nothing() {
    let mut server = TestServer::start();
    server.restart_with_journal(|_| {}, |journal| journal.files = Arc::new(FullDisk::new(0)));
    let mut atm = server.raw().await;
    let c = 23;
    // A wrong PIN is a change (it counts towards the lock), so it needs the journal.
    let (r, _) = atm.exchange(c, 1, verify(JOTY, "0000")).await;
    assert_eq!(r, reply(c, 1, Status::Unavailable, Body::Empty));
    assert!(server.running().bank().storage().failure().is_some());
    // The same id again, and new ones on the same card (even a right PIN, which writes nothing):
    // still nothing acknowledged.
    let (r, _) = atm.exchange(c, 1, verify(JOTY, "0000")).await;
    assert_eq!(r, reply(c, 1, Status::Unavailable, Body::Empty));
    let (r, _) = atm.exchange(c, 2, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 2, Status::Unavailable, Body::Empty));
    let (r, _) = atm
        .exchange(c, 3, create(OPERATOR_TOKEN, JOTY, "Joty", "1234", 5))
        .await;
    assert_eq!(r, reply(c, 3, Status::Unavailable, Body::Empty));
    let (r, _) = atm.exchange(c, 4, Operation::Balance).await;
    assert_eq!(r, reply(c, 4, Status::NotLoggedIn, Body::Empty));
    let (r, _) = atm.exchange(c, 5, Operation::IsPrime { number: 5 }).await;
    assert_eq!(r, reply(c, 5, Status::Approved, Body::Answer(true)));

    server.restart(|_| {});
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(c, 7, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 7, Status::Approved, Body::Empty));
    let (r, _) = atm.exchange(c, 6, Operation::Balance).await;
    assert_eq!(r, reply(c, 6, Status::Approved, common::balances(10_000)));
    let pin_failures = server
        .running()
        .bank()
        .storage()
        .committed_account(JOTY)
        .unwrap()
        .pin_failures;
    assert_eq!(pin_failures, 0);
}

/// Once the journal has failed, a request on a card whose account actor is not running yet must
/// be answered unavailable too (it can never succeed), not busy (which clients retry forever).
#[tokio::test]
async fn after_a_journal_failure_a_fresh_card_is_answered_unavailable() {
    let mut server = TestServer::start();
    server.restart_with_journal(|_| {}, |journal| journal.files = Arc::new(FullDisk::new(0)));
    let mut atm = server.raw().await;
    let c = 26;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, "0000")).await;
    assert_eq!(r, reply(c, 1, Status::Unavailable, Body::Empty));
    // Ahona's actor has not run since the restart.
    let (r, _) = atm.exchange(c, 2, verify(AHONA, "5678")).await;
    assert_eq!(r, reply(c, 2, Status::Unavailable, Body::Empty));
    // Nor has an actor for a card that does not exist yet.
    let (r, _) = atm
        .exchange(c, 3, create(OPERATOR_TOKEN, 777, "Mina", "1234", 5))
        .await;
    assert_eq!(r, reply(c, 3, Status::Unavailable, Body::Empty));
}

/// A request whose frame body is exactly the configured limit is accepted and answered; one
/// byte more ends the connection (the server keeps serving others).
#[tokio::test]
async fn a_frame_of_exactly_the_limit_is_accepted_and_one_byte_more_is_not() {
    let limit = 1_000;
    let server = TestServer::start_with(|config| config.limits.frame_bytes_max = limit);
    let frame = |client: u64, body_bytes: usize| {
        let message = |token_bytes: usize| {
            ClientMessage::Request(Request {
                id: RequestId {
                    client,
                    sequence: 1,
                },
                operation: create(&"t".repeat(token_bytes), 999, "Mina", "1234", 1),
            })
        };
        let overhead = encode_wire(&message(500)).unwrap().len() - 500;
        let frame = encode_frame(&message(body_bytes - overhead)).unwrap();
        assert_eq!(
            frame.len(),
            4 + body_bytes,
            "the test frame has the wrong size"
        );
        frame
    };
    let mut atm = server.raw().await;
    atm.send_bytes(&frame(24, limit)).await;
    let (r, _) = atm.receive_reply().await;
    assert_eq!(r, reply(24, 1, Status::NotAuthorised, Body::Empty));
    let (r, _) = atm.exchange(24, 2, Operation::IsPrime { number: 11 }).await;
    assert_eq!(r, reply(24, 2, Status::Approved, Body::Answer(true)));

    let mut over = server.raw().await;
    over.send_bytes(&frame(27, limit + 1)).await;
    match over.receive().await {
        None => {}
        Some(ServerMessage::Goodbye(goodbye)) => {
            assert!(goodbye.reason.contains("exceeds"), "{}", goodbye.reason)
        }
        Some(other) => panic!("expected the connection to end, got {other:?}"),
    }
    assert!(over.closed_by_server().await);
    let (r, _) = atm.exchange(24, 3, Operation::IsPrime { number: 12 }).await;
    assert_eq!(r, reply(24, 3, Status::Approved, Body::Answer(false)));
}

/// Requests larger than one network read (here 20 KB and 60 KB, under the 64 KiB limit) are
/// valid and must be answered.
#[tokio::test]
async fn a_request_larger_than_one_read_is_answered() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    for (sequence, bytes) in [(1, 20_000), (2, 60_000)] {
        let text = "Ab".repeat(bytes / 2);
        let (r, _) = atm
            .exchange(28, sequence, Operation::Lowercase { text: text.clone() })
            .await;
        assert_eq!(
            r,
            reply(
                28,
                sequence,
                Status::Approved,
                Body::Text(text.to_lowercase())
            )
        );
    }
}

/// A burst of 2000 small pipelined requests (some frames necessarily straddle two reads) is
/// answered in full.
#[tokio::test]
async fn a_burst_of_pipelined_requests_is_answered_in_full() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let mut bytes = Vec::new();
    for sequence in 1..=2_000 {
        bytes.extend(request_frame(
            29,
            sequence,
            Operation::IsPrime { number: sequence },
        ));
    }
    atm.send_bytes(&bytes).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 1..=2_000 {
        let (r, _) = atm.receive_reply().await;
        let expected = actor_bank::utility::is_prime(r.id.sequence);
        assert_eq!(
            r,
            reply(29, r.id.sequence, Status::Approved, Body::Answer(expected))
        );
        assert!(seen.insert(r.id.sequence));
    }
    assert_eq!(seen.len(), 2_000);
}

/// A valid request inside the frame limit whose answer is longer than the limit (lowercasing
/// 'İ' turns 2 bytes into 3) must still get an answer, and the connection must stay usable.
#[tokio::test]
async fn a_lowercase_whose_answer_outgrows_the_frame_limit_is_still_answered() {
    let server = TestServer::start_with(|config| config.limits.frame_bytes_max = 1_000);
    let mut atm = server.raw().await;
    let text = "İ".repeat(450); // 900 bytes in, 1350 bytes out
    atm.request(25, 1, Operation::Lowercase { text: text.clone() })
        .await;
    let body = atm.receive_body().await;
    let body = body.expect("the server dropped the connection instead of answering");
    let r = match actor_bank::codec::decode_wire::<ServerMessage>(&body).unwrap() {
        ServerMessage::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    };
    let lowered = reply(25, 1, Status::Approved, Body::Text(text.to_lowercase()));
    let refused = reply(25, 1, Status::InvalidRequest, Body::Empty);
    assert!(r == lowered || r == refused, "unexpected {:?}", r.status);
    let (r, _) = atm.exchange(25, 2, Operation::IsPrime { number: 11 }).await;
    assert_eq!(r, reply(25, 2, Status::Approved, Body::Answer(true)));
}

/// The client library receives replies larger than one network read (a 20 KB lowercase text).
#[tokio::test]
async fn the_client_library_receives_a_reply_larger_than_one_read() {
    let server = TestServer::start();
    // A generous attempt timeout: a retry would mean the reply was not received, never that the
    // machine was slow.
    let mut config = server.client_config();
    config.attempt_timeout = std::time::Duration::from_secs(15);
    config.outcome_deadline = std::time::Duration::from_secs(30);
    let mut client = actor_bank::client::Client::connect(config).await.unwrap();
    let text = "Ab".repeat(10_000);
    let r = client
        .call(Operation::Lowercase { text: text.clone() })
        .await
        .expect("no reply for a 20 KB lowercase");
    assert_eq!(r.status, Status::Approved);
    assert_eq!(r.body, Body::Text(text.to_lowercase()));
    assert_eq!(client.stats().retries, 0);
}

/// Eight operators racing to open the same card: exactly one is approved, the others get
/// card_exists, and the account holds the winner's opening balance and PIN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_of_one_card_open_it_once() {
    let server = TestServer::start();
    let mut tasks = Vec::new();
    for index in 0..8u64 {
        let address = server.address();
        tasks.push(tokio::spawn(async move {
            let mut atm = common::RawConnection::connect(&address).await;
            atm.send(&ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
            }))
            .await;
            assert!(matches!(
                atm.receive().await,
                Some(ServerMessage::Welcome(_))
            ));
            let pin = format!("{:04}", 1000 + index);
            let operation = create(OPERATOR_TOKEN, 808_808_808, "Race", &pin, 100 + index);
            let (r, _) = atm.exchange(80 + index, 1, operation).await;
            (index, r)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (index, r) = task.await.unwrap();
        match r.status {
            Status::Approved => {
                assert_eq!(r.body, common::balances(100 + index));
                winners.push(index);
            }
            Status::CardExists => assert_eq!(r.body, Body::Empty),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners[0];
    assert_eq!(server.committed_balance(808_808_808), Some(100 + winner));
    let mut atm = server.raw().await;
    let (r, _) = atm
        .exchange(90, 1, verify(808_808_808, &format!("{:04}", 1000 + winner)))
        .await;
    assert_eq!(r, reply(90, 1, Status::Approved, Body::Empty));
}

/// Withdrawals and deposits pipelined on one connection are decided in the order they were sent:
/// emptying the account, refilling it by one and taking that one again succeeds every time.
#[tokio::test]
async fn pipelined_account_changes_are_decided_in_the_order_sent() {
    let server = TestServer::start();
    let mut connection = server.raw().await;
    let verify = Operation::Verify {
        card: 123_456_789,
        pin: "1234".into(),
    };
    connection.request(50, 1, verify).await;
    let (reply, _) = connection.receive_reply().await;
    assert_eq!(reply.status, Status::Approved);
    let mut frames = Vec::new();
    let mut sequence = 2;
    for _ in 0..20 {
        for operation in [
            Operation::Withdraw { amount: 10_000 },
            Operation::Deposit { amount: 10_000 },
        ] {
            frames.extend(request_frame(50, sequence, operation));
            sequence += 1;
        }
    }
    connection.send_bytes(&frames).await;
    let mut replies = HashMap::new();
    for _ in 0..40 {
        let (reply, _) = connection.receive_reply().await;
        replies.insert(reply.id.sequence, reply);
    }
    for sequence in 2..42 {
        let reply = &replies[&sequence];
        let expected = if sequence % 2 == 0 { 0 } else { 10_000 };
        assert_eq!(reply.status, Status::Approved, "{reply:?}");
        assert_eq!(reply.body, common::balances(expected), "{reply:?}");
    }
}

/// A client that sends its requests and then closes its sending side still gets every reply.
#[tokio::test]
async fn replies_still_arrive_after_the_client_half_closes() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start();
    let mut connection = server.raw().await;
    let mut frames = request_frame(
        60,
        1,
        Operation::Verify {
            card: 123_456_789,
            pin: "1234".into(),
        },
    );
    connection.send_bytes(&frames).await;
    let (reply, _) = connection.receive_reply().await;
    assert_eq!(reply.status, Status::Approved);
    frames = request_frame(60, 2, Operation::Withdraw { amount: 25 });
    frames.extend(request_frame(60, 3, Operation::Deposit { amount: 5 }));
    connection.send_bytes(&frames).await;
    connection.stream.shutdown().await.unwrap();
    let mut statuses = HashMap::new();
    for _ in 0..2 {
        let (reply, _) = connection.receive_reply().await;
        statuses.insert(reply.id.sequence, reply.body);
    }
    assert_eq!(statuses[&2], common::balances(9_975));
    assert_eq!(statuses[&3], common::balances(9_980));
    assert!(connection.closed_by_server().await);
}
