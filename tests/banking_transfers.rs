//! Transfers against the real server over TCP: the approved path with both balances after the
//! background delivery, every refusal (remembered with the request), a transfer given back when
//! its receiver froze before the delivery, lost replies, actor crashes, and crossing transfers
//! under load that never deadlock and conserve money.
#[path = "common/banking.rs"]
mod banking;
mod common;

use actor_bank::client::ops::Management;
use actor_bank::client::{Client, ClientError};
use actor_bank::ledger::Event;
use actor_bank::model::MovementKind;
use actor_bank::protocol::{Body, Operation, Status};
use banking::*;
use common::TestServer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

const SENDER: u64 = 31_001;
const RECEIVER: u64 = 31_002;

/// An approved transfer takes the money off the sender at once; the receiver gets it once the
/// background delivery is done, and nothing is left in transit.
#[tokio::test]
async fn an_approved_transfer_reaches_the_receiver() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, RECEIVER, PIN, 200).await;
    let mut sender = opened_teller(&server, SENDER, 1_000).await;
    let reply = sender.transfer(RECEIVER, 300).await.unwrap();
    assert_reply(&reply, Status::Approved, (700, 700));
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, SENDER), 700);
    assert_eq!(ledger_balance(&server, RECEIVER), 500);
    assert_eq!(details(&mut operator, SENDER).await.in_transit, 0);
    assert_eq!(transfers_settled(&server), (1, 0));
    // Both statements show their side of it.
    let received = committed(&server, RECEIVER).movements(1);
    assert_eq!(received[0].kind, MovementKind::TransferIn);
    assert_eq!((received[0].amount, received[0].balance_after), (300, 500));
    let Body::Statement(sent) = sender.statement(1).await.unwrap().body else {
        panic!("no statement");
    };
    assert_eq!(sent[0].kind, MovementKind::TransferOut);
    assert_eq!((sent[0].amount, sent[0].balance_after), (300, 700));
    assert!(conserved(&server));
}

/// A transfer to an unknown, frozen or closed card is refused with the receiver's state, and the
/// refusal is remembered: retrying the same id after the receiver was fixed gets the same
/// refusal, and no money moves.
#[tokio::test]
async fn transfers_to_unknown_frozen_or_closed_cards_are_refused_and_remembered() {
    const UNKNOWN: u64 = 31_010;
    const FROZEN: u64 = 31_011;
    const CLOSED: u64 = 31_012;
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, FROZEN, PIN, 0).await;
    open(&mut operator, CLOSED, PIN, 0).await;
    manage_ok(&mut operator, FROZEN, Management::Freeze).await;
    manage_ok(&mut operator, CLOSED, Management::Close).await;
    let mut sender = opened_teller(&server, SENDER, 1_000).await;
    for (to, status) in [
        (UNKNOWN, Status::UnknownCard),
        (FROZEN, Status::AccountFrozen),
        (CLOSED, Status::AccountClosed),
    ] {
        let id = sender.next_id();
        let operation = Operation::Transfer { to, amount: 100 };
        let refused = sender.call_with_id(id, operation.clone()).await.unwrap();
        assert_reply(&refused, status, (1_000, 1_000));
        // Fix what can be fixed, then retry the same id: the refusal stands.
        match to {
            UNKNOWN => open(&mut operator, UNKNOWN, PIN, 0).await,
            FROZEN => manage_ok(&mut operator, FROZEN, Management::Unfreeze).await,
            _ => {}
        }
        let again = sender.call_with_id(id, operation).await.unwrap();
        assert_eq!(again, refused, "retry of the transfer to {to}");
    }
    all_delivered(&server).await;
    for card in [UNKNOWN, FROZEN, CLOSED] {
        assert_eq!(ledger_balance(&server, card), 0);
    }
    assert_eq!(ledger_balance(&server, SENDER), 1_000);
    // A new transfer to the fixed receivers goes through.
    let reply = sender.transfer(FROZEN, 100).await.unwrap();
    assert_reply(&reply, Status::Approved, (900, 900));
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, FROZEN), 100);
    assert!(conserved(&server));
}

/// A receiver frozen after the transfer was approved refuses the second leg, and the money goes
/// back to the sender. Timing a freeze between the approval and the delivery is not possible
/// over the wire, so the data directory is prepared with the rules themselves: the approved
/// first leg (receiver open when it was decided), then the receiver's freeze. The server started
/// on it resumes the delivery from the committed outbox and gives the money back.
#[tokio::test]
async fn a_transfer_to_a_receiver_frozen_before_delivery_goes_back_to_the_sender() {
    use common::durability::{write_journal, Model};
    let mut model = Model::default();
    model.step(1, SENDER, common::durability::opened("Sender", 1_000));
    model.step(1, RECEIVER, common::durability::opened("Receiver", 50));
    let sent = model
        .step(
            2,
            SENDER,
            Event::TransferSent {
                to: RECEIVER,
                amount: 300,
                receiver: actor_bank::model::Code::Approved,
            },
        )
        .unwrap();
    assert_eq!(sent.outcome.status, actor_bank::model::Code::Approved);
    model.step(3, RECEIVER, Event::AccountFrozen).unwrap();
    metrics_address();
    let data_dir = tempfile::tempdir().unwrap();
    write_journal(data_dir.path(), &model.records, u64::MAX);
    let config = common::test_config(data_dir.path());
    let server = TestServer::on(data_dir, config);
    all_delivered(&server).await;
    assert_eq!(transfers_settled(&server), (0, 1));
    // No other test of this binary returns a transfer.
    let returned = "bank_transfers_settled_total{result=\"returned\"}";
    assert_eq!(metric(returned).await, 1.0);
    assert_eq!(ledger_balance(&server, SENDER), 1_000);
    assert_eq!(ledger_balance(&server, RECEIVER), 50);
    let movements = committed(&server, SENDER).movements(2);
    let kinds: Vec<MovementKind> = movements.iter().map(|movement| movement.kind).collect();
    assert_eq!(
        kinds,
        [MovementKind::TransferOut, MovementKind::TransferReturned]
    );
    assert_eq!(movements[1].request, sent.request);
    assert_eq!(movements[1].balance_after, 1_000);
    assert!(conserved(&server));
}

/// Refusals on the sender's side: more than the available balance (a hold counts), to itself,
/// nothing at all.
#[tokio::test]
async fn insufficient_available_funds_self_and_zero_transfers_are_refused() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, RECEIVER, PIN, 0).await;
    let mut sender = opened_teller(&server, SENDER, 500).await;
    let hold = sender.place_hold(300).await.unwrap();
    assert_eq!(hold_id(&hold), 1);
    let reply = sender.transfer(RECEIVER, 250).await.unwrap();
    assert_reply(&reply, Status::InsufficientFunds, (500, 200));
    let reply = sender.transfer(SENDER, 10).await.unwrap();
    assert_eq!(
        (reply.status, reply.body),
        (Status::InvalidRequest, Body::Empty)
    );
    let reply = sender.transfer(RECEIVER, 0).await.unwrap();
    assert_reply(&reply, Status::InvalidAmount, (500, 200));
    let reply = sender.transfer(RECEIVER, 200).await.unwrap();
    assert_reply(&reply, Status::Approved, (300, 0));
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, RECEIVER), 200);
    assert!(conserved(&server));
}

/// A transfer whose reply is lost and is retried with the same id (on a new connection) gets
/// the byte-identical reply, and the money moves once.
#[tokio::test]
async fn a_retried_transfer_replays_its_reply_and_moves_money_once() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, RECEIVER, PIN, 0).await;
    open(&mut operator, SENDER, PIN, 1_000).await;
    let (reply, _) = lost_reply_then_retries(
        &server,
        SENDER,
        71,
        1,
        Operation::Transfer {
            to: RECEIVER,
            amount: 400,
        },
    )
    .await;
    assert_reply(&reply, Status::Approved, (600, 600));
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, SENDER), 600);
    assert_eq!(ledger_balance(&server, RECEIVER), 400);
    assert_eq!(transfers_settled(&server), (1, 0));
    assert!(conserved(&server));
}

/// Account actors crash on a third of their decisions (the client's and the bank's own
/// deliveries alike): the client's same-id retries and the delivery's retries settle every
/// transfer exactly once.
#[tokio::test]
async fn transfers_ride_out_account_actor_crashes() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("crash-actor=0.3,seed=5".parse().unwrap());
    });
    let mut operator = operator(&server).await;
    open(&mut operator, RECEIVER, PIN, 0).await;
    let mut sender = opened_teller(&server, SENDER, 1_000).await;
    let mut sent = 0;
    for amount in [10, 20, 30, 40, 50, 60, 70, 80] {
        let reply = sender.transfer(RECEIVER, amount).await.unwrap();
        assert_eq!(reply.status, Status::Approved, "{reply:?}");
        sent += amount;
        assert_eq!(balances(&reply).0, 1_000 - sent);
    }
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, SENDER), 1_000 - sent);
    assert_eq!(ledger_balance(&server, RECEIVER), sent);
    assert_eq!(transfers_settled(&server), (8, 0));
    let restarts = &server.running().bank().stats().actor_restarts;
    assert!(restarts.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert!(conserved(&server));
}

/// One client's share of the crossing load: `transfers` transfers of seeded amounts from `from`
/// to `to`; returns what was approved.
async fn cross(mut client: Client, to: u64, transfers: usize, seed: u64) -> u64 {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut approved = 0;
    for _ in 0..transfers {
        let amount = rng.gen_range(1..=300);
        match client.transfer(to, amount).await {
            Ok(reply) if reply.status == Status::Approved => approved += amount,
            Ok(reply) => assert_eq!(reply.status, Status::InsufficientFunds, "{reply:?}"),
            Err(ClientError::OutcomeUnknown { .. }) => panic!("a transfer never settled"),
            Err(other) => panic!("{other}"),
        }
    }
    approved
}

/// Many clients transfer A→B and B→A at the same time: nothing deadlocks (the whole load ends
/// within a generous bound), every delivery settles, and each balance is its opening one less
/// what it sent plus what it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crossing_transfers_under_load_never_deadlock_and_conserve_money() {
    const A: u64 = 31_101;
    const B: u64 = 31_102;
    const CLIENTS_PER_SIDE: usize = 8;
    const TRANSFERS_EACH: usize = 25;
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, A, PIN, 5_000).await;
    open(&mut operator, B, PIN, 5_000).await;
    let mut tasks = Vec::new();
    for index in 0..2 * CLIENTS_PER_SIDE {
        let (from, to) = if index % 2 == 0 { (A, B) } else { (B, A) };
        let client = teller(&server, from, PIN).await;
        let task = tokio::spawn(cross(client, to, TRANSFERS_EACH, index as u64 + 1));
        tasks.push((from, task));
    }
    let (mut from_a, mut from_b) = (0, 0);
    let load = async {
        for (from, task) in tasks {
            let approved = task.await.unwrap();
            if from == A {
                from_a += approved;
            } else {
                from_b += approved;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("the crossing transfers deadlocked");
    assert!(from_a > 0 && from_b > 0);
    all_delivered(&server).await;
    assert_eq!(ledger_balance(&server, A), 5_000 + from_b - from_a);
    assert_eq!(ledger_balance(&server, B), 5_000 + from_a - from_b);
    assert!(conserved(&server));
}

/// A transfer's leg delivered as if by another node is refused by a server that is not in cluster
/// mode, even with the operator token: it delivers its own legs, and nothing is credited.
#[tokio::test]
async fn a_single_server_refuses_a_leg_delivered_by_another_node() {
    let server = TestServer::start();
    let mut operator = operator(&server).await;
    open(&mut operator, RECEIVER, PIN, 200).await;
    let mut raw = common::RawConnection::connect(&server.address())
        .await
        .greeted()
        .await;
    let leg = Operation::ReceiveTransfer {
        operator_token: common::OPERATOR_TOKEN.to_string(),
        from: SENDER,
        leg: 1,
        to: RECEIVER,
        amount: 300,
    };
    let (reply, _) = raw.exchange(SENDER, 1, leg).await;
    assert_eq!(reply.status, Status::InvalidRequest);
    assert_eq!(ledger_balance(&server, RECEIVER), 200);
}
