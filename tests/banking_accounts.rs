//! The operator's account management and the mini statement against the real server over TCP:
//! a frozen account refuses debits, holds, transfers both ways and PIN checks but takes deposits
//! and reversals; unfreezing lifts it; an account closes only at zero and then refuses
//! everything for good; account-info never shows the PIN; every operator call needs the token;
//! statements list the last movements in order, capped, across a restart.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::client::ops::Management;
use actor_bank::client::Client;
use actor_bank::model::{AccountState, MovementKind};
use actor_bank::protocol::{Body, Operation, Status};
use banking::*;
use common::TestServer;

const CARD: u64 = 35_001;
const OTHER: u64 = 35_002;

/// Freezing: withdrawals, holds, their completion, transfers out and in, and a Verify are
/// `account_frozen`; deposits, voids and reversals go through. Unfreezing lifts all of it.
#[tokio::test]
async fn a_frozen_account_refuses_debits_and_transfers_but_takes_deposits() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let mut other = opened_teller(&server, OTHER, 1_000).await;
    let withdrawal = atm.next_id();
    let reply = atm
        .call_with_id(withdrawal, Operation::Withdraw { amount: 100 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (900, 900));
    let hold = hold_id(&atm.place_hold(100).await.unwrap());
    let second = hold_id(&atm.place_hold(50).await.unwrap());
    manage_ok(&mut operator, CARD, Management::Freeze).await;
    assert_eq!(
        details(&mut operator, CARD).await.state,
        AccountState::Frozen
    );

    let frozen = (Status::AccountFrozen, (900, 750));
    for reply in [
        atm.withdraw(10).await.unwrap(),
        atm.place_hold(10).await.unwrap(),
        atm.complete_hold(hold, None).await.unwrap(),
        atm.transfer(OTHER, 10).await.unwrap(),
    ] {
        assert_reply(&reply, frozen.0, frozen.1);
    }
    let reply = other.transfer(CARD, 10).await.unwrap();
    assert_reply(&reply, Status::AccountFrozen, (1_000, 1_000));
    let mut login = server.client().await;
    assert_eq!(
        login.verify(CARD, PIN).await.unwrap().status,
        Status::AccountFrozen
    );
    let reply = atm.deposit(100).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 850));
    let reply = atm.void_hold(second).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 900));
    let reply = atm.reverse(withdrawal, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_100, 1_000));

    manage_ok(&mut operator, CARD, Management::Unfreeze).await;
    assert_eq!(details(&mut operator, CARD).await.state, AccountState::Open);
    assert_eq!(
        login.verify(CARD, PIN).await.unwrap().status,
        Status::Approved
    );
    let reply = atm.complete_hold(hold, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 1_000));
    assert_eq!(atm.withdraw(10).await.unwrap().status, Status::Approved);
    assert_eq!(
        other.transfer(CARD, 10).await.unwrap().status,
        Status::Approved
    );
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    assert!(conserved(&server));
}

/// An account with money (or a hold) does not close (`balance_not_zero`); at zero it does, and
/// then every operation is `account_closed`, a Verify too, and its card cannot be opened again
/// (`card_exists`).
#[tokio::test]
async fn an_account_closes_only_at_zero_and_then_refuses_everything() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 100).await;
    let mut other = opened_teller(&server, OTHER, 100).await;
    let reply = manage(&mut operator, CARD, Management::Close).await;
    assert_eq!(reply.status, Status::BalanceNotZero, "{reply:?}");
    let hold = hold_id(&atm.place_hold(100).await.unwrap());
    assert_eq!(
        manage(&mut operator, CARD, Management::Close).await.status,
        Status::BalanceNotZero
    );
    assert_eq!(
        atm.complete_hold(hold, None).await.unwrap().status,
        Status::Approved
    );
    manage_ok(&mut operator, CARD, Management::Close).await;
    // Closing again is approved and changes nothing.
    manage_ok(&mut operator, CARD, Management::Close).await;
    assert_eq!(
        details(&mut operator, CARD).await.state,
        AccountState::Closed
    );

    for reply in [
        atm.withdraw(1).await.unwrap(),
        atm.deposit(1).await.unwrap(),
        atm.place_hold(1).await.unwrap(),
        atm.transfer(OTHER, 1).await.unwrap(),
    ] {
        assert_reply(&reply, Status::AccountClosed, (0, 0));
    }
    assert_reply(
        &other.transfer(CARD, 1).await.unwrap(),
        Status::AccountClosed,
        (100, 100),
    );
    let mut login = server.client().await;
    assert_eq!(
        login.verify(CARD, PIN).await.unwrap().status,
        Status::AccountClosed
    );
    for action in [Management::Unfreeze, Management::Freeze] {
        let reply = manage(&mut operator, CARD, action).await;
        assert_eq!(reply.status, Status::AccountClosed, "{reply:?}");
    }
    let reopened = operator
        .create_account(common::OPERATOR_TOKEN, CARD, "Again", PIN, 10)
        .await
        .unwrap();
    assert_eq!(reopened.status, Status::CardExists);
    assert_eq!(ledger_balance(&server, CARD), 0);
    assert!(conserved(&server));
}

/// Account-info shows the account as it is, and nothing of its PIN: the frame it comes in
/// holds neither the PIN nor any part of its verifier.
#[tokio::test]
async fn account_info_shows_the_account_and_never_the_pin() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let _ = atm.place_hold(250).await.unwrap();
    let mut raw = server.raw().await;
    let info = Operation::AccountInfo {
        operator_token: common::OPERATOR_TOKEN.into(),
        card: CARD,
    };
    let (reply, frame) = raw.exchange(61, 1, info).await;
    let Body::Account(details) = reply.body else {
        panic!("no details: {reply:?}");
    };
    assert_eq!(details.card, CARD);
    assert_eq!(details.holder, "Banking Tester");
    assert_eq!((details.ledger, details.available), (1_000, 750));
    assert_eq!((details.holds, details.in_transit), (1, 0));
    assert_eq!((details.locked, details.pin_failures), (false, 0));
    assert_eq!(details.withdrawals_today, 1);
    let verifier = committed(&server, CARD).pin_hash();
    let contains = |needle: &[u8]| frame.windows(needle.len()).any(|window| window == needle);
    assert!(!contains(PIN.as_bytes()));
    assert!(!contains(&verifier.hash[..8]));
    assert!(!contains(&verifier.salt[..8]));
    let (reply, _) = raw
        .exchange(
            61,
            2,
            Operation::AccountInfo {
                operator_token: common::OPERATOR_TOKEN.into(),
                card: 35_999,
            },
        )
        .await;
    assert_eq!(reply.status, Status::UnknownCard);
}

/// Every operator call needs the token: with a wrong one it is `not_authorised` and nothing
/// changes.
#[tokio::test]
async fn account_management_needs_the_operator_token() {
    // Five wrong tokens from one peer: its allowance of failures must not run out here.
    let server = TestServer::start_with(|config| {
        config.limits.operator_failures = actor_bank::ratelimit::RateLimit {
            burst: u32::MAX,
            per_minute: 0,
        };
    });
    let mut operator = operator(&server).await;
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    for action in [
        Management::Freeze,
        Management::Unfreeze,
        Management::Close,
        Management::Info,
        Management::SetLimits(limits(1, 1)),
    ] {
        let reply = operator
            .manage("not-the-operator-token", CARD, action)
            .await
            .unwrap();
        assert_eq!(
            (reply.status, reply.body),
            (Status::NotAuthorised, Body::Empty)
        );
    }
    let shown = details(&mut operator, CARD).await;
    assert_eq!((shown.state, shown.own_limits), (AccountState::Open, false));
    assert_eq!(atm.withdraw(600).await.unwrap().status, Status::Approved);
    let reply = manage(&mut operator, 35_999, Management::Freeze).await;
    assert_eq!(reply.status, Status::UnknownCard);
}

/// A freeze whose reply is lost is retried with the same id and replays byte-identically.
#[tokio::test]
async fn a_retried_freeze_replays() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, CARD, PIN, 100).await;
    // The raw connections log in to another card (a frozen one refuses a Verify).
    open(&mut operator, OTHER, PIN, 0).await;
    let freeze = Operation::FreezeAccount {
        operator_token: common::OPERATOR_TOKEN.into(),
        card: CARD,
    };
    let (reply, _) = lost_reply_then_retries(&server, OTHER, 62, 1, freeze).await;
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
    assert_eq!(
        details(&mut operator, CARD).await.state,
        AccountState::Frozen
    );
}

/// The movements a statement of `count` shows, as (kind, amount, balance after).
async fn statement(atm: &mut Client, count: u32) -> Vec<(MovementKind, u64, u64)> {
    let reply = atm.statement(count).await.unwrap();
    let Body::Statement(movements) = reply.body else {
        panic!("no statement: {reply:?}");
    };
    movements
        .iter()
        .map(|movement| (movement.kind, movement.amount, movement.balance_after))
        .collect()
}

/// A statement lists the last movements oldest first with their kinds and the balance after
/// each, at most the count asked for and at most 50; a count of zero is `invalid_request`; it
/// is the same after a restart.
#[tokio::test]
async fn statements_list_the_last_movements_in_order_across_a_restart() {
    let mut server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let mut operator = operator(&server).await;
    open(&mut operator, OTHER, PIN, 0).await;
    let withdrawal = atm.next_id();
    atm.call_with_id(withdrawal, Operation::Withdraw { amount: 100 })
        .await
        .unwrap();
    atm.deposit(40).await.unwrap();
    atm.transfer(OTHER, 200).await.unwrap();
    atm.reverse(withdrawal, Some(30)).await.unwrap();
    let hold = hold_id(&atm.place_hold(90).await.unwrap());
    atm.complete_hold(hold, Some(60)).await.unwrap();
    all_delivered(&server).await;
    let expected = vec![
        (MovementKind::Opened, 1_000, 1_000),
        (MovementKind::Withdrawal, 100, 900),
        (MovementKind::Deposit, 40, 940),
        (MovementKind::TransferOut, 200, 740),
        (MovementKind::Reversal, 70, 810),
        (MovementKind::HoldCompleted, 60, 750),
    ];
    assert_eq!(statement(&mut atm, 10).await, expected);
    assert_eq!(statement(&mut atm, 2).await, expected[4..]);
    let reply = atm.statement(0).await.unwrap();
    assert_eq!(reply.status, Status::InvalidRequest);
    for _ in 0..60 {
        atm.deposit(1).await.unwrap();
    }
    let capped = statement(&mut atm, 1_000).await;
    assert_eq!(capped.len(), 50);
    assert_eq!(capped[49], (MovementKind::Deposit, 1, 810));
    assert_eq!(capped[0], (MovementKind::Deposit, 1, 761));
    drop(atm);
    server.restart(|_| {});
    let mut atm = teller(&server, CARD, PIN).await;
    assert_eq!(statement(&mut atm, 1_000).await, capped);
    let mut receiver = teller(&server, OTHER, PIN).await;
    assert_eq!(
        statement(&mut receiver, 5).await,
        [
            (MovementKind::Opened, 0, 0),
            (MovementKind::TransferIn, 200, 200)
        ]
    );
}

/// A configured maximum below 50 caps statements further.
#[tokio::test]
async fn the_configured_maximum_caps_statements() {
    let server = TestServer::start_with(|config| {
        config.banking.statement_movements_max = 3;
    });
    let mut atm = opened_teller(&server, CARD, 10).await;
    for amount in 1..=5 {
        atm.deposit(amount).await.unwrap();
    }
    assert_eq!(
        statement(&mut atm, 50).await,
        [
            (MovementKind::Deposit, 3, 16),
            (MovementKind::Deposit, 4, 20),
            (MovementKind::Deposit, 5, 25)
        ]
    );
}
