//! Security: PIN lockout, a session acts only for the card it verified (and a failed or new
//! verification logs it out), request ids cannot be borrowed to act on or read another card,
//! operator-only operations need the token.
mod common;
use common::{reply, verify, AHONA, AHONA_PIN, JOTY, JOTY_PIN};

use actor_bank::protocol::{Body, Operation, Status};
use common::{request_frame, TestServer, OPERATOR_TOKEN};
use std::collections::HashMap;

fn pin_failures(server: &TestServer, card: u64) -> u8 {
    server.committed_account(card).pin_failures
}

/// Three wrong PINs lock the card: the third answers card_locked, and so does every later
/// attempt, the right PIN included, on any connection and after a restart. Other cards are not
/// affected and the locked account's money is untouched.
#[tokio::test]
async fn three_wrong_pins_lock_the_card_for_good() {
    let mut server = TestServer::start();
    let c = 51;
    // The attempts come from three different connections: the count is the card's, not the
    // connection's.
    let mut first = server.raw().await;
    let (r, _) = first.exchange(c, 1, verify(JOTY, "0000")).await;
    assert_eq!(r, reply(c, 1, Status::IncorrectPin, Body::Empty));
    let mut second = server.raw().await;
    let (r, _) = second.exchange(c, 2, verify(JOTY, "4321")).await;
    assert_eq!(r, reply(c, 2, Status::IncorrectPin, Body::Empty));
    let mut third = server.raw().await;
    let (r, _) = third.exchange(c, 3, verify(JOTY, "1235")).await;
    assert_eq!(r, reply(c, 3, Status::CardLocked, Body::Empty));
    let (r, _) = third.exchange(c, 4, verify(JOTY, "9999")).await;
    assert_eq!(r, reply(c, 4, Status::CardLocked, Body::Empty));
    let (r, _) = third.exchange(c, 5, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 5, Status::CardLocked, Body::Empty));
    let (r, _) = third
        .exchange(c, 6, Operation::Withdraw { amount: 1 })
        .await;
    assert_eq!(r, reply(c, 6, Status::NotLoggedIn, Body::Empty));
    assert_eq!(pin_failures(&server, JOTY), 3);

    // Another card still works.
    let (r, _) = first.exchange(c, 7, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(r, reply(c, 7, Status::Approved, Body::Empty));

    server.restart(|_| {});
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(c, 8, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 8, Status::CardLocked, Body::Empty));
    let (r, _) = atm.exchange(c, 9, Operation::Balance).await;
    assert_eq!(r, reply(c, 9, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
    // The client library sees the same.
    let mut client = server.client().await;
    let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::CardLocked);
    let r = client.withdraw(100).await.unwrap();
    assert_eq!(r.status, Status::NotLoggedIn);
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// A correct PIN clears the count of wrong ones; a malformed PIN counts as a wrong one.
#[tokio::test]
async fn a_correct_pin_resets_the_count_and_malformed_pins_count_as_wrong() {
    let server = TestServer::start();
    let c = 52;
    let mut atm = server.raw().await;
    let steps = [
        ("0000", Status::IncorrectPin),
        ("abcd", Status::IncorrectPin),
        (JOTY_PIN, Status::Approved),
        ("12", Status::IncorrectPin),
        ("1234567890123", Status::IncorrectPin),
        (JOTY_PIN, Status::Approved),
        ("", Status::IncorrectPin),
        ("01234", Status::IncorrectPin),
        ("1234 ", Status::CardLocked),
        (JOTY_PIN, Status::CardLocked),
    ];
    for (index, (pin, status)) in steps.into_iter().enumerate() {
        let sequence = index as u64 + 1;
        let (r, _) = atm.exchange(c, sequence, verify(JOTY, pin)).await;
        assert_eq!(r, reply(c, sequence, status, Body::Empty), "PIN {pin:?}");
    }
    assert_eq!(pin_failures(&server, JOTY), 3);
}

/// A session acts only for the card it verified; a failed verification of another card (wrong
/// PIN, unknown card, locked card) logs it out, so nothing more happens to either card.
#[tokio::test]
async fn a_session_acts_only_for_its_verified_card() {
    let server = TestServer::start();
    let c = 53;
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm
        .exchange(c, 2, Operation::Withdraw { amount: 1_000 })
        .await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(9_000)));
    assert_eq!(server.committed_balance(AHONA), Some(5_000));

    // A wrong PIN for Ahona: logged out of Joty too.
    let (r, _) = atm.exchange(c, 3, verify(AHONA, "0000")).await;
    assert_eq!(r, reply(c, 3, Status::IncorrectPin, Body::Empty));
    for (sequence, operation) in [
        (4, Operation::Withdraw { amount: 1 }),
        (5, Operation::Deposit { amount: 1 }),
        (6, Operation::Balance),
    ] {
        let (r, _) = atm.exchange(c, sequence, operation).await;
        assert_eq!(r, reply(c, sequence, Status::NotLoggedIn, Body::Empty));
    }

    // An unknown card: logged out as well.
    let (r, _) = atm.exchange(c, 7, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm.exchange(c, 8, verify(404_404_404, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 8, Status::UnknownCard, Body::Empty));
    let (r, _) = atm.exchange(c, 9, Operation::Balance).await;
    assert_eq!(r, reply(c, 9, Status::NotLoggedIn, Body::Empty));

    // Switching cards with a good verification acts for the new card only.
    let (r, _) = atm.exchange(c, 10, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm
        .exchange(c, 11, Operation::Withdraw { amount: 500 })
        .await;
    assert_eq!(r, reply(c, 11, Status::Approved, common::balances(4_500)));
    let (r, _) = atm.exchange(c, 12, Operation::Balance).await;
    assert_eq!(r, reply(c, 12, Status::Approved, common::balances(4_500)));
    assert_eq!(server.committed_balance(JOTY), Some(9_000));
    assert_eq!(server.committed_balance(AHONA), Some(4_500));
}

/// Two sessions logged in to different cards at once each act only on their own card.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sessions_on_different_cards_do_not_mix() {
    let server = TestServer::start();
    let mut joty = server.raw().await;
    let mut ahona = server.raw().await;
    let (r, _) = joty.exchange(54, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = ahona.exchange(55, 1, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let mut joty_bytes = Vec::new();
    let mut ahona_bytes = Vec::new();
    for sequence in 2..12 {
        joty_bytes.extend(request_frame(
            54,
            sequence,
            Operation::Withdraw { amount: 10 },
        ));
        ahona_bytes.extend(request_frame(
            55,
            sequence,
            Operation::Deposit { amount: 7 },
        ));
    }
    joty.send_bytes(&joty_bytes).await;
    ahona.send_bytes(&ahona_bytes).await;
    for _ in 2..12 {
        let (r, _) = joty.receive_reply().await;
        assert_eq!((r.id.client, r.status), (54, Status::Approved));
        let (r, _) = ahona.receive_reply().await;
        assert_eq!((r.id.client, r.status), (55, Status::Approved));
    }
    let (r, _) = joty.exchange(54, 20, Operation::Balance).await;
    assert_eq!(r, reply(54, 20, Status::Approved, common::balances(9_900)));
    let (r, _) = ahona.exchange(55, 20, Operation::Balance).await;
    assert_eq!(r, reply(55, 20, Status::Approved, common::balances(5_070)));
}

/// Someone who learns another client's request id cannot use it: the same id and amount on
/// their own card is simply their own request on their own account (ids belong to the card they
/// were made on), so nothing of the other card moves or is revealed.
/// A right PIN on a card with no wrong attempts changes nothing and is not remembered, so its id
/// reused with a wrong PIN is simply a wrong PIN: it counts towards the lock and logs nobody in.
#[tokio::test]
async fn a_borrowed_request_id_neither_acts_nor_reveals() {
    let server = TestServer::start();
    let victim = 56;
    let mut joty = server.raw().await;
    let (r, _) = joty.exchange(victim, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(victim, 1, Status::Approved, Body::Empty));
    let (r, _) = joty
        .exchange(victim, 2, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(
        r,
        reply(victim, 2, Status::Approved, common::balances(9_900))
    );

    let mut thief = server.raw().await;
    let (r, _) = thief.exchange(57, 1, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = thief
        .exchange(victim, 2, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(
        r,
        reply(victim, 2, Status::Approved, common::balances(4_900))
    );

    let mut thief = server.raw().await;
    let (r, _) = thief.exchange(victim, 1, verify(JOTY, "0000")).await;
    assert_eq!(r, reply(victim, 1, Status::IncorrectPin, Body::Empty));
    let (r, _) = thief.exchange(58, 1, Operation::Balance).await;
    assert_eq!(r, reply(58, 1, Status::NotLoggedIn, Body::Empty));
    let (r, _) = thief
        .exchange(victim, 2, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(r, reply(victim, 2, Status::NotLoggedIn, Body::Empty));

    assert_eq!(server.committed_balance(JOTY), Some(9_900));
    assert_eq!(server.committed_balance(AHONA), Some(4_900));
    assert_eq!(pin_failures(&server, JOTY), 1);
}

/// Opening accounts needs the exact operator token; a refused attempt opens nothing, and a
/// logged-in card holder is no operator.
#[tokio::test]
async fn only_the_operator_token_opens_accounts() {
    // More failed attempts than this test makes, so the right token is still checked after them.
    let server = TestServer::start_with(|config| config.limits.operator_failures.burst = 10);
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(59, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let attempts = [
        String::new(),
        OPERATOR_TOKEN[..OPERATOR_TOKEN.len() - 1].to_string(),
        format!("{OPERATOR_TOKEN}X"),
        OPERATOR_TOKEN.to_uppercase(),
        JOTY_PIN.to_string(),
    ];
    for (index, token) in attempts.into_iter().enumerate() {
        let sequence = index as u64 + 2;
        let operation = Operation::CreateAccount {
            operator_token: token.clone(),
            card: 246_810_121,
            holder: "Mallory".into(),
            pin: "1111".into(),
            initial_balance: 1_000_000,
        };
        let (r, _) = atm.exchange(59, sequence, operation).await;
        assert_eq!(
            r,
            reply(59, sequence, Status::NotAuthorised, Body::Empty),
            "{token:?}"
        );
    }
    assert_eq!(server.committed_balance(246_810_121), None);
    let operation = Operation::CreateAccount {
        operator_token: OPERATOR_TOKEN.to_string(),
        card: 246_810_121,
        holder: "Mallory".into(),
        pin: "1111".into(),
        initial_balance: 3,
    };
    let (r, _) = atm.exchange(59, 10, operation).await;
    assert_eq!(r, reply(59, 10, Status::Approved, common::balances(3)));
}

/// A retried account creation is answered from what the original did, whatever PIN it carries
/// (an answer that depended on the PIN would let the operator test PINs); the account keeps the
/// first PIN. Another holder is another request: a conflict.
#[tokio::test]
async fn a_retried_account_creation_is_answered_whatever_its_pin() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let create = |holder: &str, pin: &str| Operation::CreateAccount {
        operator_token: OPERATOR_TOKEN.to_string(),
        card: 135_792_468,
        holder: holder.into(),
        pin: pin.into(),
        initial_balance: 50,
    };
    let (r, _) = atm.exchange(60, 1, create("Rina", "1357")).await;
    assert_eq!(r, reply(60, 1, Status::Approved, common::balances(50)));
    let (r, _) = atm.exchange(60, 1, create("Rina", "2468")).await;
    assert_eq!(r, reply(60, 1, Status::Approved, common::balances(50)));
    let (r, _) = atm.exchange(60, 1, create("Someone else", "1357")).await;
    assert_eq!(r, reply(60, 1, Status::RequestIdConflict, Body::Empty));
    let (r, _) = atm.exchange(60, 2, verify(135_792_468, "2468")).await;
    assert_eq!(r, reply(60, 2, Status::IncorrectPin, Body::Empty));
    let (r, _) = atm.exchange(60, 3, verify(135_792_468, "1357")).await;
    assert_eq!(r, reply(60, 3, Status::Approved, Body::Empty));
}

/// Pipelined login changes take effect in request order: a Logout (or a failed verification of
/// another card) sent after a Verify leaves the connection logged out, even when the Verify's
/// answer comes later (here replies are slowed down to make that certain).
#[tokio::test]
async fn a_logout_pipelined_after_a_verify_wins() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("delay-ms=300".parse().unwrap());
    });
    let mut atm = server.raw().await;
    let mut bytes = request_frame(61, 1, verify(JOTY, JOTY_PIN));
    bytes.extend(request_frame(61, 2, Operation::Logout));
    atm.send_bytes(&bytes).await;
    let mut replies = HashMap::new();
    for _ in 0..2 {
        let (r, _) = atm.receive_reply().await;
        replies.insert(r.id.sequence, r);
    }
    assert_eq!(replies[&1], reply(61, 1, Status::Approved, Body::Empty));
    assert_eq!(replies[&2], reply(61, 2, Status::Approved, Body::Empty));
    let (r, _) = atm
        .exchange(61, 3, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(r, reply(61, 3, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// The same race with a failed verification of an unknown card instead of the Logout: after
/// it, the connection must be logged out.
#[tokio::test]
async fn a_failed_verify_pipelined_after_a_good_one_wins() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("delay-ms=300".parse().unwrap());
    });
    let mut atm = server.raw().await;
    let mut bytes = request_frame(62, 1, verify(JOTY, JOTY_PIN));
    bytes.extend(request_frame(62, 2, verify(404_404_404, "1111")));
    atm.send_bytes(&bytes).await;
    for _ in 0..2 {
        atm.receive_reply().await;
    }
    let (r, _) = atm
        .exchange(62, 3, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(r, reply(62, 3, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// A locked card stays locked for a replayed Verify too: replaying an earlier approved Verify
/// id answers card_locked (the lock wins over the memory of completed requests) and does not
/// log the connection in, so the old id cannot be used to get past the lock.
#[tokio::test]
async fn a_replayed_verify_does_not_open_a_locked_card() {
    let server = TestServer::start();
    let mut owner = server.raw().await;
    let (r, original) = owner.exchange(63, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(63, 1, Status::Approved, Body::Empty));
    drop(owner);
    // Someone locks the card.
    let mut guesser = server.raw().await;
    for sequence in 1..=3 {
        guesser.exchange(64, sequence, verify(JOTY, "0000")).await;
    }
    let (r, _) = guesser.exchange(64, 4, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(64, 4, Status::CardLocked, Body::Empty));
    // The old approved Verify, replayed on a new connection.
    let mut replayer = server.raw().await;
    let (r, again) = replayer.exchange(63, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(63, 1, Status::CardLocked, Body::Empty));
    assert_ne!(again, original);
    let (r, _) = replayer
        .exchange(63, 2, Operation::Withdraw { amount: 100 })
        .await;
    assert_eq!(r, reply(63, 2, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}
