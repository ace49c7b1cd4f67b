//! Reversals against the real server over TCP: full and partial, twice (money moves once), of
//! an original never seen (acknowledged; the original, arriving later, is refused and never
//! debits), of something that is not a debit, of another card's request, and a lost reply.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::protocol::{Operation, RequestId, Status};
use banking::*;
use common::TestServer;

const CARD: u64 = 33_001;
const OTHER: u64 = 33_002;

/// A full reversal gives the whole withdrawal back; a second reversal of it (another id) is
/// approved and moves nothing; a retry of the first replays it.
#[tokio::test]
async fn a_full_reversal_gives_everything_back_once() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let withdrawal = atm.next_id();
    let reply = atm
        .call_with_id(withdrawal, Operation::Withdraw { amount: 300 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (700, 700));
    let reversal = atm.next_id();
    let operation = Operation::Reverse {
        original: withdrawal,
        dispensed: None,
    };
    let reversed = atm.call_with_id(reversal, operation.clone()).await.unwrap();
    assert_reply(&reversed, Status::Approved, (1_000, 1_000));
    let again = atm.reverse(withdrawal, None).await.unwrap();
    assert_reply(&again, Status::Approved, (1_000, 1_000));
    let replayed = atm.call_with_id(reversal, operation).await.unwrap();
    assert_eq!(replayed, reversed);
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    assert!(conserved(&server));
}

/// A partial reversal gives back what was not dispensed; one that claims more was dispensed
/// than taken is `invalid_amount`; a reversal naming itself is `invalid_request`.
#[tokio::test]
async fn a_partial_reversal_gives_back_what_was_not_dispensed() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let withdrawal = atm.next_id();
    let reply = atm
        .call_with_id(withdrawal, Operation::Withdraw { amount: 500 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (500, 500));
    let reply = atm.reverse(withdrawal, Some(501)).await.unwrap();
    assert_reply(&reply, Status::InvalidAmount, (500, 500));
    let reply = atm.reverse(withdrawal, Some(200)).await.unwrap();
    assert_reply(&reply, Status::Approved, (800, 800));
    // Reversed already: a full reversal now moves nothing more.
    let reply = atm.reverse(withdrawal, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (800, 800));
    let own = atm.next_id();
    let reply = atm
        .call_with_id(
            own,
            Operation::Reverse {
                original: own,
                dispensed: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(reply.status, Status::InvalidRequest, "{reply:?}");
    let statement = committed(&server, CARD).movements(1);
    assert_eq!(
        (
            statement[0].kind,
            statement[0].amount,
            statement[0].balance_after
        ),
        (actor_bank::model::MovementKind::Reversal, 300, 800)
    );
    assert!(conserved(&server));
}

/// A reversal of a withdrawal the server never saw (its request lost) is acknowledged and
/// remembered in its place: the withdrawal, arriving later, is `request_id_conflict` and never
/// debits.
#[tokio::test]
async fn a_reversal_of_a_never_seen_withdrawal_blocks_it_for_good() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let reversal = atm.next_id();
    let original = RequestId {
        client: reversal.client,
        sequence: reversal.sequence + 5,
    };
    let reply = atm
        .call_with_id(
            reversal,
            Operation::Reverse {
                original,
                dispensed: None,
            },
        )
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 1_000));
    for _ in 0..2 {
        let late = atm
            .call_with_id(original, Operation::Withdraw { amount: 100 })
            .await
            .unwrap();
        assert_eq!(late.status, Status::RequestIdConflict, "{late:?}");
    }
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    // The client goes on with new ids as usual.
    let reply = atm.withdraw(100).await.unwrap();
    assert_reply(&reply, Status::Approved, (900, 900));
    assert!(conserved(&server));
}

/// Only debits are reversible: a deposit and a refused withdrawal are `not_reversible`; a
/// completed hold is reversible.
#[tokio::test]
async fn only_debits_can_be_reversed() {
    let server = TestServer::start();
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    let deposit = atm.next_id();
    let reply = atm
        .call_with_id(deposit, Operation::Deposit { amount: 50 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (1_050, 1_050));
    let reply = atm.reverse(deposit, None).await.unwrap();
    assert_reply(&reply, Status::NotReversible, (1_050, 1_050));
    let refused = atm.next_id();
    let reply = atm
        .call_with_id(refused, Operation::Withdraw { amount: 5_000 })
        .await
        .unwrap();
    assert_eq!(reply.status, Status::InsufficientFunds);
    let reply = atm.reverse(refused, None).await.unwrap();
    assert_reply(&reply, Status::NotReversible, (1_050, 1_050));
    let hold = hold_id(&atm.place_hold(200).await.unwrap());
    let completion = atm.next_id();
    let reply = atm
        .call_with_id(
            completion,
            Operation::CompleteHold {
                hold_id: hold,
                amount: Some(150),
            },
        )
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (900, 900));
    let reply = atm.reverse(completion, Some(50)).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 1_000));
    assert!(conserved(&server));
}

/// Another card's withdrawal is out of reach: reversing its id on this card is an unknown
/// original here (acknowledged, nothing moves on either account), and its own card can still
/// reverse it.
#[tokio::test]
async fn a_reversal_cannot_reach_another_cards_withdrawal() {
    let server = TestServer::start();
    let mut mine = opened_teller(&server, CARD, 1_000).await;
    let mut theirs = opened_teller(&server, OTHER, 1_000).await;
    let withdrawal = theirs.next_id();
    let reply = theirs
        .call_with_id(withdrawal, Operation::Withdraw { amount: 400 })
        .await
        .unwrap();
    assert_reply(&reply, Status::Approved, (600, 600));
    let reply = mine.reverse(withdrawal, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 1_000));
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    assert_eq!(ledger_balance(&server, OTHER), 600);
    let reply = theirs.reverse(withdrawal, None).await.unwrap();
    assert_reply(&reply, Status::Approved, (1_000, 1_000));
    assert_eq!(ledger_balance(&server, CARD), 1_000);
    assert!(conserved(&server));
}

/// A reversal whose reply is lost, retried with the same id on new connections, replays
/// byte-identically and gives the money back once.
#[tokio::test]
async fn a_retried_reversal_replays_and_gives_back_once() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, CARD, PIN, 1_000).await;
    let (withdrawn, _) =
        lost_reply_then_retries(&server, CARD, 91, 1, Operation::Withdraw { amount: 250 }).await;
    assert_reply(&withdrawn, Status::Approved, (750, 750));
    let reverse = Operation::Reverse {
        original: RequestId {
            client: 91,
            sequence: 1,
        },
        dispensed: Some(50),
    };
    let (reversed, _) = lost_reply_then_retries(&server, CARD, 91, 2, reverse).await;
    assert_reply(&reversed, Status::Approved, (950, 950));
    assert_eq!(ledger_balance(&server, CARD), 950);
    assert!(conserved(&server));
}

/// Account actors crashing on a third of their decisions do not give a withdrawal back twice:
/// the client's same-id retries settle each reversal once.
#[tokio::test]
async fn reversals_ride_out_account_actor_crashes() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("crash-actor=0.3,seed=11".parse().unwrap());
    });
    let mut atm = opened_teller(&server, CARD, 1_000).await;
    for round in 0..6u64 {
        let withdrawal = atm.next_id();
        let reply = atm
            .call_with_id(withdrawal, Operation::Withdraw { amount: 100 })
            .await
            .unwrap();
        assert_reply(
            &reply,
            Status::Approved,
            (900 - 10 * round, 900 - 10 * round),
        );
        let reply = atm.reverse(withdrawal, Some(10)).await.unwrap();
        assert_reply(
            &reply,
            Status::Approved,
            (990 - 10 * round, 990 - 10 * round),
        );
        let reply = atm.reverse(withdrawal, None).await.unwrap();
        assert_reply(
            &reply,
            Status::Approved,
            (990 - 10 * round, 990 - 10 * round),
        );
    }
    assert_eq!(ledger_balance(&server, CARD), 940);
    let restarts = &server.running().bank().stats().actor_restarts;
    assert!(restarts.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(conserved(&server));
}
