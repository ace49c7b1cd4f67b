//! Holds against the real server over TCP: placing one lowers the available balance only;
//! completing it (for less) posts it and releases the rest; voiding releases it; a resolved or
//! unknown hold is refused; a hold nobody resolves expires by the bank's clock; at most 32 are
//! open; lost replies of a placement and a completion replay and move money once.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::model::MovementKind;
use actor_bank::protocol::{Body, Operation, Status};
use banking::*;
use common::TestServer;
use std::time::Duration;

const CARD: u64 = 32_001;

/// Place → the available balance drops and the ledger balance does not; complete for less →
/// the less is posted and the rest released; void → all released; completing or voiding again
/// → `hold_resolved`; a hold never given → `unknown_hold`; posting more than held →
/// `invalid_amount`.
#[tokio::test]
async fn holds_are_placed_completed_for_less_and_voided() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let placed = atm.place_hold(400).await.unwrap();
    assert_eq!(hold_id(&placed), 1);
    assert_reply(&placed, Status::Approved, (1_000, 600));
    let account = committed(&server, CARD);
    assert_eq!((account.balance, account.available()), (1_000, 600));
    assert!(account
        .movements(50)
        .iter()
        .all(|movement| movement.kind == MovementKind::Opened));

    let completed = atm.complete_hold(1, Some(250)).await.unwrap();
    assert_reply(&completed, Status::Approved, (750, 750));
    let second = atm.place_hold(100).await.unwrap();
    assert_eq!(hold_id(&second), 2);
    assert_reply(&second, Status::Approved, (750, 650));
    let voided = atm.void_hold(2).await.unwrap();
    assert_reply(&voided, Status::Approved, (750, 750));

    for resolved in [1, 2] {
        let reply = atm.complete_hold(resolved, None).await.unwrap();
        assert_reply(&reply, Status::HoldResolved, (750, 750));
        let reply = atm.void_hold(resolved).await.unwrap();
        assert_reply(&reply, Status::HoldResolved, (750, 750));
    }
    for unknown in [0, 3, 99] {
        let reply = atm.complete_hold(unknown, None).await.unwrap();
        assert_reply(&reply, Status::UnknownHold, (750, 750));
        let reply = atm.void_hold(unknown).await.unwrap();
        assert_reply(&reply, Status::UnknownHold, (750, 750));
    }
    let third = hold_id(&atm.place_hold(100).await.unwrap());
    let reply = atm.complete_hold(third, Some(101)).await.unwrap();
    assert_reply(&reply, Status::InvalidAmount, (750, 650));
    let reply = atm.complete_hold(third, Some(0)).await.unwrap();
    assert_reply(&reply, Status::InvalidAmount, (750, 650));
    let reply = atm.place_hold(0).await.unwrap();
    assert_reply(&reply, Status::InvalidAmount, (750, 650));
    let reply = atm.place_hold(651).await.unwrap();
    assert_reply(&reply, Status::InsufficientFunds, (750, 650));
    // The whole hold, posted.
    let reply = atm.complete_hold(third, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (650, 650));

    let Body::Statement(movements) = atm.statement(2).await.unwrap().body else {
        panic!("no statement");
    };
    let posted: Vec<(MovementKind, u64, u64)> = movements
        .iter()
        .map(|movement| (movement.kind, movement.amount, movement.balance_after))
        .collect();
    assert_eq!(
        posted,
        [
            (MovementKind::HoldCompleted, 250, 750),
            (MovementKind::HoldCompleted, 100, 650)
        ]
    );
    assert!(conserved(&server));
}

/// A hold nobody resolves expires once the bank's (manual) clock passes its time to live: the
/// available balance comes back, the expiry is counted, and completing it afterwards is
/// `hold_resolved`. A hold not yet due stays.
#[tokio::test]
async fn a_hold_expires_when_the_clock_passes_its_time_to_live() {
    metrics_address();
    let (server, clock) = with_manual_clock(|config| {
        config.banking.hold_ttl = Duration::from_secs(60);
    });
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let first = hold_id(&atm.place_hold(300).await.unwrap());
    clock.advance(Duration::from_secs(30));
    let second = hold_id(&atm.place_hold(200).await.unwrap());
    assert_eq!(committed(&server, CARD).available(), 500);
    // Past the first hold's expiry, not the second's.
    clock.advance(Duration::from_secs(31));
    wait_for("the first hold expired", || holds_expired(&server) == 1).await;
    // The metric moves with the counter (other tests of this binary may add theirs).
    assert!(metric("bank_holds_expired_total").await >= 1.0);
    wait_for("its amount is available again", || {
        committed(&server, CARD).available() == 800
    })
    .await;
    let reply = atm.complete_hold(first, None).await.unwrap();
    assert_reply(&reply, Status::HoldResolved, (1_000, 800));
    assert!(committed(&server, CARD).hold(second).is_some());
    // The second, completed in time, is posted.
    let reply = atm.complete_hold(second, Some(150)).await.unwrap();
    assert_reply(&reply, Status::Approved, (850, 850));
    clock.advance(Duration::from_secs(3_600));
    let reply = atm.balance().await.unwrap();
    assert_reply(&reply, Status::Approved, (850, 850));
    assert_eq!(holds_expired(&server), 1);
    assert!(conserved(&server));
}

/// A hold past its time to live can no longer be completed, even before the bank journaled its
/// expiry: the completion is `hold_resolved` by the clock alone.
#[tokio::test]
async fn a_hold_past_its_time_cannot_be_completed() {
    let (server, clock) = with_manual_clock(|config| {
        config.banking.hold_ttl = Duration::from_secs(10);
    });
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let hold = hold_id(&atm.place_hold(300).await.unwrap());
    clock.advance(Duration::from_secs(11));
    let reply = atm.complete_hold(hold, None).await.unwrap();
    assert_eq!(reply.status, Status::HoldResolved, "{reply:?}");
    wait_for("the hold expired", || holds_expired(&server) == 1).await;
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    assert_eq!(committed(&server, CARD).available(), 1_000);
}

/// 32 holds may be open at once; the 33rd is `too_many_holds`, and voiding one makes room.
#[tokio::test]
async fn the_thirty_third_open_hold_is_refused() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    for expected in 1..=32 {
        assert_eq!(hold_id(&atm.place_hold(10).await.unwrap()), expected);
    }
    let reply = atm.place_hold(10).await.unwrap();
    assert_reply(&reply, Status::TooManyHolds, (1_000, 680));
    let mut operator = operator(&server).await;
    assert_eq!(details(&mut operator, CARD).await.holds, 32);
    assert_eq!(atm.void_hold(7).await.unwrap().status, Status::Approved);
    assert_eq!(hold_id(&atm.place_hold(10).await.unwrap()), 33);
}

/// A placement and a completion whose replies are lost, retried with the same ids on new
/// connections, replay byte-identically: one hold is placed, and it is posted once.
#[tokio::test]
async fn retried_placements_and_completions_replay_and_move_money_once() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, CARD, PIN, 1_000).await;
    let (placed, _) =
        lost_reply_then_retries(&server, CARD, 81, 1, Operation::PlaceHold { amount: 400 }).await;
    assert_eq!(hold_id(&placed), 1);
    assert_reply(&placed, Status::Approved, (1_000, 600));
    assert_eq!(details(&mut operator, CARD).await.holds, 1);
    let complete = Operation::CompleteHold {
        hold_id: 1,
        amount: Some(300),
    };
    let (completed, _) = lost_reply_then_retries(&server, CARD, 81, 2, complete).await;
    assert_reply(&completed, Status::Approved, (700, 700));
    let void = Operation::VoidHold { hold_id: 1 };
    let (voided, _) = lost_reply_then_retries(&server, CARD, 81, 3, void).await;
    assert_reply(&voided, Status::HoldResolved, (700, 700));
    let details = details(&mut operator, CARD).await;
    assert_eq!(
        (details.ledger, details.available, details.holds),
        (700, 700, 0)
    );
    assert!(conserved(&server));
}

/// Account actors crashing on a third of their decisions do not place a hold twice nor post
/// one twice: the client's same-id retries settle each once.
#[tokio::test]
async fn holds_ride_out_account_actor_crashes() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("crash-actor=0.3,seed=7".parse().unwrap());
    });
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    for round in 0..6u64 {
        let hold = hold_id(&atm.place_hold(100).await.unwrap());
        assert_eq!(hold, round + 1);
        let reply = atm.complete_hold(hold, Some(40)).await.unwrap();
        assert_reply(
            &reply,
            Status::Approved,
            (960 - 40 * round, 960 - 40 * round),
        );
    }
    assert_eq!(ledger_balance(&server, CARD), 760);
    assert_eq!(committed(&server, CARD).available(), 760);
    assert!(conserved(&server));
}
