//! `ForCard`: the card, its PIN and one operation in one request, over the real protocol. The PIN
//! goes through every check of a `Verify` (the connection's failure allowance, the lock, the
//! account's state) before the operation runs; the operation is remembered under its id like the
//! same operation on a verified card, so a retry on any connection, after a restart too, is
//! answered from memory and moves no money twice; the connection's own verified card is neither
//! used nor changed.
mod common;
use common::{balances, reply, verify, TestServer, AHONA, AHONA_PIN, JOTY, JOTY_PIN};

use actor_bank::protocol::{Body, CardOperation, Operation, Status};
use actor_bank::ratelimit::RateLimit;

fn for_card(card: u64, pin: &str, operation: CardOperation) -> Operation {
    Operation::ForCard {
        card,
        pin: pin.into(),
        operation,
    }
}

fn withdraw(card: u64, pin: &str, amount: u64) -> Operation {
    for_card(card, pin, CardOperation::Withdraw { amount })
}

/// A right PIN and a withdrawal in one round trip; its retry, on another connection and after a
/// restart, gets the same bytes and takes nothing more; the connection that sent it stays
/// unverified, and one verified for another card stays verified for that card.
#[tokio::test]
async fn a_for_card_request_checks_the_pin_then_acts_once_on_its_card() {
    let mut server = TestServer::start();
    let mut atm = server.raw().await;
    let (first, bytes) = atm.exchange(7, 1, withdraw(JOTY, JOTY_PIN, 300)).await;
    assert_eq!(first, reply(7, 1, Status::Approved, balances(9_700)));
    let (r, _) = atm.exchange(7, 2, Operation::Balance).await;
    assert_eq!(
        r.status,
        Status::NotLoggedIn,
        "a ForCard verifies no card on its connection"
    );

    let mut other = server.raw().await;
    let (_, again) = other.exchange(7, 1, withdraw(JOTY, JOTY_PIN, 300)).await;
    assert_eq!(
        again, bytes,
        "the retry is the original's reply, byte for byte"
    );
    let (r, _) = other.exchange(7, 1, withdraw(JOTY, JOTY_PIN, 400)).await;
    assert_eq!(r.status, Status::RequestIdConflict);
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    // The same id for another card is that card's request: Joty's reply is not reachable
    // with Ahona's PIN, and Ahona's withdrawal is her own.
    let (r, _) = other.exchange(7, 1, withdraw(AHONA, AHONA_PIN, 300)).await;
    assert_eq!(r, reply(7, 1, Status::Approved, balances(4_700)));
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    assert_eq!(server.committed_balance(AHONA), Some(4_700));

    // On a connection verified for Ahona, a ForCard acts on Joty and leaves Ahona verified.
    let (r, _) = atm.exchange(7, 3, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (r, _) = atm
        .exchange(
            7,
            4,
            for_card(JOTY, JOTY_PIN, CardOperation::Deposit { amount: 50 }),
        )
        .await;
    assert_eq!(r, reply(7, 4, Status::Approved, balances(9_750)));
    let (r, _) = atm.exchange(7, 5, Operation::Balance).await;
    assert_eq!(r, reply(7, 5, Status::Approved, balances(4_700)));
    let (r, _) = atm
        .exchange(7, 6, for_card(JOTY, JOTY_PIN, CardOperation::Balance))
        .await;
    assert_eq!(r, reply(7, 6, Status::Approved, balances(9_750)));

    server.restart(|_| {});
    let mut after = server.raw().await;
    let (_, replayed) = after.exchange(7, 1, withdraw(JOTY, JOTY_PIN, 300)).await;
    assert_eq!(replayed, bytes, "remembered across the restart");
    assert_eq!(server.committed_balance(JOTY), Some(9_750));
}

/// A wrong PIN is a wrong PIN: counted towards the lock and journaled, no money moved; the
/// third locks the card, after which the right PIN is refused too; a right PIN on a card with
/// wrong attempts clears them. A retry of a refused request is checked again, never replayed.
#[tokio::test]
async fn a_wrong_pin_in_a_for_card_counts_towards_the_lock_and_moves_nothing() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(8, 1, withdraw(JOTY, "0000", 300)).await;
    assert_eq!(r, reply(8, 1, Status::IncorrectPin, Body::Empty));
    assert_eq!(server.committed_account(JOTY).pin_failures, 1);
    // The same id with the right PIN: checked afresh, approved, and the count cleared.
    let (r, _) = atm.exchange(8, 1, withdraw(JOTY, JOTY_PIN, 300)).await;
    assert_eq!(r, reply(8, 1, Status::Approved, balances(9_700)));
    assert_eq!(server.committed_account(JOTY).pin_failures, 0);
    for sequence in 2..=3 {
        let (r, _) = atm.exchange(8, sequence, withdraw(JOTY, "1111", 10)).await;
        assert_eq!(r.status, Status::IncorrectPin);
    }
    let (r, _) = atm.exchange(8, 4, withdraw(JOTY, "2222", 10)).await;
    assert_eq!(r.status, Status::CardLocked);
    let (r, _) = atm.exchange(8, 5, withdraw(JOTY, JOTY_PIN, 10)).await;
    assert_eq!(
        r.status,
        Status::CardLocked,
        "the right PIN on a locked card"
    );
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    let (r, _) = atm.exchange(8, 6, withdraw(123, "0000", 10)).await;
    assert_eq!(r.status, Status::UnknownCard);
}

/// A ForCard's failed PIN checks take from the connection's allowance, as a Verify's do: past
/// it the request is answered `busy` unchecked, the right PIN too, and nothing is counted
/// against the card.
#[tokio::test]
async fn for_card_failures_use_up_the_connections_allowance() {
    let server = TestServer::start_with(|config| {
        config.limits.pin_failures_per_connection = RateLimit {
            burst: 2,
            per_minute: 0,
        };
    });
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(9, 1, withdraw(JOTY, "0000", 10)).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = atm.exchange(9, 2, verify(JOTY, "1111")).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = atm.exchange(9, 3, withdraw(JOTY, JOTY_PIN, 10)).await;
    assert_eq!(r, reply(9, 3, Status::Busy, Body::Empty));
    assert_eq!(server.committed_account(JOTY).pin_failures, 2);
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
    let stats = &server.running().bank().pins().stats;
    assert_eq!(
        stats
            .rate_limited
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// The operations a ForCard carries are those of the same name on a verified card, with the
/// same refusals: an amount of zero, more than the balance, a transfer to an unknown card.
#[tokio::test]
async fn a_for_card_operation_is_refused_as_the_same_operation_on_a_verified_card() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(10, 1, withdraw(JOTY, JOTY_PIN, 0)).await;
    assert_eq!(r.status, Status::InvalidAmount);
    let (r, _) = atm.exchange(10, 2, withdraw(JOTY, JOTY_PIN, 20_000)).await;
    assert_eq!(r.status, Status::InsufficientFunds);
    let transfer = CardOperation::Transfer {
        to: 555,
        amount: 10,
    };
    let (r, _) = atm
        .exchange(10, 3, for_card(JOTY, JOTY_PIN, transfer))
        .await;
    assert_eq!(r.status, Status::UnknownCard);
    let transfer = CardOperation::Transfer {
        to: AHONA,
        amount: 1_000,
    };
    let (r, _) = atm
        .exchange(10, 4, for_card(JOTY, JOTY_PIN, transfer))
        .await;
    assert_eq!(r, reply(10, 4, Status::Approved, balances(9_000)));
    let (r, _) = atm
        .exchange(
            10,
            5,
            for_card(JOTY, JOTY_PIN, CardOperation::PlaceHold { amount: 500 }),
        )
        .await;
    assert!(
        matches!(
            r.body,
            Body::Hold {
                available: 8_500,
                ..
            }
        ) && r.status == Status::Approved,
        "{r:?}"
    );
    let (r, _) = atm
        .exchange(
            10,
            6,
            for_card(JOTY, JOTY_PIN, CardOperation::Statement { count: 2 }),
        )
        .await;
    assert!(
        matches!(&r.body, Body::Statement(lines) if lines.len() == 2)
            && r.status == Status::Approved,
        "{r:?}"
    );
    assert_eq!(server.committed_balance(JOTY), Some(9_000));
}
