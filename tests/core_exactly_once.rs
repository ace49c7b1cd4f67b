//! Exactly-once: a retried request id gets the byte-identical original reply and moves money
//! once — across connections, lost replies, lost requests, account-actor crashes and server
//! restarts; a reused id with other parameters is a conflict; ids that fell out of the window
//! are refused as stale and never executed; concurrent withdrawals never overdraw.
mod common;
use common::{deposit, reply, verify, withdraw, AHONA, JOTY, JOTY_PIN};

use actor_bank::client::{reply_balance, Client, ClientConfig};
use actor_bank::faults::{self, FaultKind};
use actor_bank::protocol::{Body, Operation, Reply, RequestId, Status};
use common::{RawConnection, TestServer};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn replays(server: &TestServer) -> u64 {
    server
        .running()
        .bank()
        .stats()
        .replays
        .load(Ordering::Relaxed)
}

fn conserved(server: &TestServer) -> bool {
    server
        .running()
        .bank()
        .storage()
        .with_committed(|ledger| ledger.is_conserved())
}

/// A connection logged in to `card` with a verify under `login_client` (so the ids under test
/// belong to another client).
async fn logged_in(server: &TestServer, login_client: u64, card: u64, pin: &str) -> RawConnection {
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(login_client, 1, verify(card, pin)).await;
    assert_eq!(r.status, Status::Approved, "login failed: {r:?}");
    atm
}

/// A retried withdrawal id gets the byte-identical reply, on the same connection and on a new
/// one, and the money moves once.
#[tokio::test]
async fn a_replayed_withdrawal_gets_the_identical_reply_and_moves_money_once() {
    let server = TestServer::start();
    let c = 41;
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, Body::Empty));
    let (r, original) = atm.exchange(c, 2, withdraw(300)).await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(9_700)));
    let (_, again) = atm.exchange(c, 2, withdraw(300)).await;
    assert_eq!(again, original);
    drop(atm);

    let mut other = server.raw().await;
    let (r, _) = other.exchange(c, 3, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
    let (_, from_elsewhere) = other.exchange(c, 2, withdraw(300)).await;
    assert_eq!(from_elsewhere, original);
    let (r, _) = other.exchange(c, 4, Operation::Balance).await;
    assert_eq!(r, reply(c, 4, Status::Approved, common::balances(9_700)));
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    assert_eq!(replays(&server), 2);
    // A new id does move money again.
    let (r, _) = other.exchange(c, 5, withdraw(300)).await;
    assert_eq!(r, reply(c, 5, Status::Approved, common::balances(9_400)));
    assert!(conserved(&server));
}

/// Refusals are remembered too: a retried refused withdrawal gets the original refusal (with the
/// balance of that time), even after the balance changed; a retried wrong PIN is not: it is
/// checked and counted again.
#[tokio::test]
async fn a_replayed_refusal_gets_the_original_refusal() {
    let server = TestServer::start();
    let c = 42;
    let mut atm = logged_in(&server, 142, JOTY, JOTY_PIN).await;
    let (r, overdraft) = atm.exchange(c, 1, withdraw(20_000)).await;
    assert_eq!(
        r,
        reply(c, 1, Status::InsufficientFunds, common::balances(10_000))
    );
    let (r, zero) = atm.exchange(c, 2, deposit(0)).await;
    assert_eq!(
        r,
        reply(c, 2, Status::InvalidAmount, common::balances(10_000))
    );
    let (r, _) = atm.exchange(c, 3, deposit(15_000)).await;
    assert_eq!(r, reply(c, 3, Status::Approved, common::balances(25_000)));
    // Now the withdrawal would fit, but the id was already answered.
    let (_, again) = atm.exchange(c, 1, withdraw(20_000)).await;
    assert_eq!(again, overdraft);
    let (_, again) = atm.exchange(c, 2, deposit(0)).await;
    assert_eq!(again, zero);
    assert_eq!(server.committed_balance(JOTY), Some(25_000));

    // A PIN attempt is never answered from memory: the same wrong PIN under the same id is
    // checked, and counts, again.
    let mut other = server.raw().await;
    for _ in 0..2 {
        let (r, _) = other.exchange(c, 4, verify(AHONA, "0000")).await;
        assert_eq!(r, reply(c, 4, Status::IncorrectPin, Body::Empty));
    }
    let account = server
        .running()
        .bank()
        .storage()
        .committed_account(AHONA)
        .unwrap();
    assert_eq!(account.pin_failures, 2);
    let (r, _) = other.exchange(c, 4, verify(AHONA, "5678")).await;
    assert_eq!(r, reply(c, 4, Status::Approved, Body::Empty));
    assert_eq!(replays(&server), 2);
}

/// The memory of completed requests survives a restart (with and without a snapshot in
/// between): after it, retries get the identical replies, approved or refused, and move nothing.
#[tokio::test]
async fn replays_survive_a_server_restart() {
    for snapshot_records_interval in [1_000_000, 1] {
        let mut server = TestServer::start_with(|config| {
            config.snapshot_records_interval = snapshot_records_interval
        });
        let c = 43;
        let mut atm = logged_in(&server, 143, JOTY, JOTY_PIN).await;
        let (r, approved) = atm.exchange(c, 1, withdraw(300)).await;
        assert_eq!(r, reply(c, 1, Status::Approved, common::balances(9_700)));
        let (r, refused) = atm.exchange(c, 2, withdraw(50_000)).await;
        assert_eq!(
            r,
            reply(c, 2, Status::InsufficientFunds, common::balances(9_700))
        );
        let (r, deposited) = atm.exchange(c, 3, deposit(5)).await;
        assert_eq!(r, reply(c, 3, Status::Approved, common::balances(9_705)));
        drop(atm);

        server.restart(|config| config.snapshot_records_interval = snapshot_records_interval);
        assert_eq!(server.committed_balance(JOTY), Some(9_705));
        let mut atm = logged_in(&server, 144, JOTY, JOTY_PIN).await;
        let (_, again) = atm.exchange(c, 1, withdraw(300)).await;
        assert_eq!(again, approved, "interval {snapshot_records_interval}");
        let (_, again) = atm.exchange(c, 2, withdraw(50_000)).await;
        assert_eq!(again, refused, "interval {snapshot_records_interval}");
        let (_, again) = atm.exchange(c, 3, deposit(5)).await;
        assert_eq!(again, deposited, "interval {snapshot_records_interval}");
        let (r, _) = atm.exchange(c, 1, withdraw(301)).await;
        assert_eq!(r, reply(c, 1, Status::RequestIdConflict, Body::Empty));
        assert_eq!(replays(&server), 3);
        assert_eq!(server.committed_balance(JOTY), Some(9_705));
        let (r, _) = atm.exchange(c, 4, withdraw(5)).await;
        assert_eq!(r, reply(c, 4, Status::Approved, common::balances(9_700)));
        assert!(conserved(&server));
    }
}

/// The same id with other parameters (another amount, another operation) is a conflict that
/// changes nothing; the conflict is not remembered, so a genuine retry still gets the original
/// reply. A Verify is never looked up, and the same id on another card is another request.
#[tokio::test]
async fn the_same_id_with_other_parameters_is_a_conflict() {
    let server = TestServer::start();
    let c = 44;
    let mut atm = logged_in(&server, 144, JOTY, JOTY_PIN).await;
    let (r, original) = atm.exchange(c, 1, withdraw(100)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, common::balances(9_900)));
    let conflict = reply(c, 1, Status::RequestIdConflict, Body::Empty);
    let (r, _) = atm.exchange(c, 1, withdraw(200)).await;
    assert_eq!(r, conflict);
    let (r, _) = atm.exchange(c, 1, deposit(100)).await;
    assert_eq!(r, conflict);
    let (r, _) = atm.exchange(c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, Body::Empty));
    let mut ahona = logged_in(&server, 145, AHONA, "5678").await;
    let (r, _) = ahona.exchange(c, 1, withdraw(100)).await;
    assert_eq!(
        r,
        reply(c, 1, Status::Approved, common::balances(4_900)),
        "the same id on another card"
    );
    // The original is still what a retry gets.
    let mut atm = logged_in(&server, 146, JOTY, JOTY_PIN).await;
    let (_, again) = atm.exchange(c, 1, withdraw(100)).await;
    assert_eq!(again, original);
    assert_eq!(server.committed_balance(JOTY), Some(9_900));
    assert_eq!(server.committed_balance(AHONA), Some(4_900));
}

/// The retention edge: after 33 completed requests of one client, sequence 1 is stale (refused,
/// never executed) while sequence 2 is still replayed; one more request moves the edge by one;
/// a sequence never seen but below the window is stale too.
#[tokio::test]
async fn ids_that_fell_out_of_the_window_are_stale_and_never_executed() {
    let server = TestServer::start();
    let c = 45;
    let mut atm = logged_in(&server, 145, JOTY, JOTY_PIN).await;
    let mut originals = vec![Vec::new()];
    for sequence in 1..=33 {
        let (r, bytes) = atm.exchange(c, sequence, withdraw(1)).await;
        assert_eq!(
            r,
            reply(
                c,
                sequence,
                Status::Approved,
                common::balances(10_000 - sequence)
            )
        );
        originals.push(bytes);
    }
    assert_eq!(server.committed_balance(JOTY), Some(9_967));
    let stale = |sequence| reply(c, sequence, Status::StaleRequest, Body::Empty);
    let (r, _) = atm.exchange(c, 1, withdraw(1)).await;
    assert_eq!(r, stale(1));
    let (r, _) = atm.exchange(c, 1, withdraw(7)).await;
    assert_eq!(
        r,
        stale(1),
        "a forgotten id is stale whatever its parameters"
    );
    let (_, again) = atm.exchange(c, 2, withdraw(1)).await;
    assert_eq!(again, originals[2]);
    let (r, _) = atm.exchange(c, 2, withdraw(2)).await;
    assert_eq!(r, reply(c, 2, Status::RequestIdConflict, Body::Empty));
    let (_, again) = atm.exchange(c, 33, withdraw(1)).await;
    assert_eq!(again, originals[33]);
    assert_eq!(server.committed_balance(JOTY), Some(9_967));

    // One more completed request: now sequence 2 is out, 3 is the oldest remembered.
    let (r, _) = atm.exchange(c, 34, withdraw(1)).await;
    assert_eq!(r, reply(c, 34, Status::Approved, common::balances(9_966)));
    let (r, _) = atm.exchange(c, 2, withdraw(1)).await;
    assert_eq!(r, stale(2));
    let (_, again) = atm.exchange(c, 3, withdraw(1)).await;
    assert_eq!(again, originals[3]);
    assert_eq!(server.committed_balance(JOTY), Some(9_966));

    // A gap: after sequence 100, a never-seen 68 (= 100 - 32) is stale, 69 is new.
    let g = 46;
    let (r, _) = atm.exchange(g, 100, withdraw(1)).await;
    assert_eq!(r, reply(g, 100, Status::Approved, common::balances(9_965)));
    let (r, _) = atm.exchange(g, 68, withdraw(1)).await;
    assert_eq!(r, reply(g, 68, Status::StaleRequest, Body::Empty));
    let (r, _) = atm.exchange(g, 69, withdraw(1)).await;
    assert_eq!(r, reply(g, 69, Status::Approved, common::balances(9_964)));
    assert_eq!(server.committed_balance(JOTY), Some(9_964));
    assert!(conserved(&server));
}

/// A lost reply: the withdrawal is executed, the connection drops before the reply is read, and
/// the retry of the same id on a new connection gets the original outcome; money moved once.
#[tokio::test]
async fn a_lost_reply_is_settled_by_a_retry_on_a_new_connection() {
    let server = TestServer::start();
    let c = 47;
    let mut atm = logged_in(&server, 147, JOTY, JOTY_PIN).await;
    atm.request(c, 1, withdraw(700)).await;
    // Wait until the change is committed, then lose the connection without reading the reply.
    common::eventually("the withdrawal is committed", || {
        server.committed_balance(JOTY) == Some(9_300)
    })
    .await;
    drop(atm);

    let mut atm = logged_in(&server, 148, JOTY, JOTY_PIN).await;
    let (r, _) = atm.exchange(c, 1, withdraw(700)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, common::balances(9_300)));
    assert_eq!(server.committed_balance(JOTY), Some(9_300));
    assert_eq!(replays(&server), 1);

    // The connection dropped right after sending: executed or not, the retry settles it once.
    let mut atm = logged_in(&server, 149, JOTY, JOTY_PIN).await;
    atm.request(c, 2, withdraw(300)).await;
    drop(atm);
    let mut atm = logged_in(&server, 150, JOTY, JOTY_PIN).await;
    let (r, _) = atm.exchange(c, 2, withdraw(300)).await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(9_000)));
    let (r, _) = atm.exchange(c, 2, withdraw(300)).await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(9_000)));
    assert_eq!(server.committed_balance(JOTY), Some(9_000));
    assert!(conserved(&server));
}

/// Sequential calls through the client library, the expected balance after each.
async fn withdraw_and_deposit_in_turn(client: &mut Client) -> u64 {
    let mut balance = 10_000;
    for step in 0..12u64 {
        let (reply, expected) = if step % 3 == 2 {
            balance += 40;
            (client.deposit(40).await.unwrap(), balance)
        } else {
            balance -= 100;
            (client.withdraw(100).await.unwrap(), balance)
        };
        assert_eq!(reply.status, Status::Approved, "step {step}: {reply:?}");
        assert_eq!(reply_balance(&reply), Some(expected), "step {step}");
    }
    balance
}

/// How many times in a row, from its first attempt, `kind` hits request `id` under `seed`: those
/// attempts are lost whatever the timing, so at least that many faults must be counted for it.
fn leading_hits(seed: u64, kind: FaultKind, id: RequestId, probability: f64) -> u64 {
    (0..)
        .take_while(|&attempt| faults::hits(seed, kind, id, attempt, probability))
        .count() as u64
}

/// The ids [`withdraw_and_deposit_in_turn`] uses after the Verify of a new client: its
/// sequences 2 to 13.
fn change_ids(client: u64) -> impl Iterator<Item = RequestId> {
    (2..=13).map(move |sequence| RequestId { client, sequence })
}

/// Connects with `config`, verifies Joty's card and runs [`withdraw_and_deposit_in_turn`]; checks
/// the balance each reply and the committed state show. Returns the client id and the client.
async fn verify_and_run_the_calls(server: &TestServer, config: ClientConfig) -> (u64, Client) {
    let client_id = config.client_id;
    let mut client = Client::connect(config).await.unwrap();
    let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    let balance = withdraw_and_deposit_in_turn(&mut client).await;
    assert_eq!(balance, 10_000 - 8 * 100 + 4 * 40);
    assert_eq!(server.committed_balance(JOTY), Some(balance));
    (client_id, client)
}

/// What the server's faults injected so far.
fn server_faults(server: &TestServer) -> &actor_bank::faults::FaultCounts {
    &server.running().bank().faults().as_ref().unwrap().counts
}

/// Starts a server that loses messages of `kind` (drop-request or drop-reply) with `probability`
/// under `seed`, and runs [`verify_and_run_the_calls`] through a client that waits 300 ms for each
/// reply. Returns the server, the client, and how many of those losses the seed makes certain:
/// the first attempts of the calls' ids, up to the first that gets through.
async fn run_the_calls_losing(
    kind: FaultKind,
    seed: u64,
    probability: f64,
) -> (TestServer, Client, u64) {
    let name = match kind {
        FaultKind::DropRequest => "drop-request",
        FaultKind::DropReply => "drop-reply",
        FaultKind::CrashActor => "crash-actor",
    };
    let server = TestServer::start_with(|config| {
        config.faults = Some(format!("{name}={probability},seed={seed}").parse().unwrap());
    });
    let mut config = server.client_config();
    config.attempt_timeout = Duration::from_millis(300);
    let (client_id, client) = verify_and_run_the_calls(&server, config).await;
    let certain = change_ids(client_id)
        .map(|id| leading_hits(seed, kind, id, probability))
        .sum();
    (server, client, certain)
}

/// Requests lost by the server (injected drop-request) are re-sent by the client library after
/// its attempt timeout: every call completes, each exactly once. The seed loses the first
/// attempts of several of the calls' ids, so those drops happen on every run.
#[tokio::test]
async fn lost_requests_are_retried_and_execute_exactly_once() {
    let (server, client, certain) = run_the_calls_losing(FaultKind::DropRequest, 11, 0.3).await;
    assert!(certain >= 2, "the seed must lose some requests: {certain}");
    let dropped = server_faults(&server)
        .requests_dropped
        .load(Ordering::Relaxed);
    assert!(dropped >= certain, "{dropped} dropped, {certain} certain");
    assert!(client.stats().retries >= dropped);
    assert!(conserved(&server));
}

/// Replies the server loses after the change is durable (drop-reply) make the client retry the
/// same id after its attempt timeout: the retries are replays and money moves once. The seed
/// loses the first replies to several ids, and those are lost on every run, however long the
/// server takes to answer.
#[tokio::test]
async fn lost_replies_are_retried_and_answered_from_memory() {
    let (server, _client, certain) = run_the_calls_losing(FaultKind::DropReply, 1, 0.3).await;
    assert!(certain >= 3, "the seed must lose replies: {certain}");
    let dropped = server_faults(&server)
        .replies_dropped
        .load(Ordering::Relaxed);
    assert!(dropped >= certain, "{dropped} dropped, {certain} certain");
    // Every lost reply of a change is followed by an attempt that finds the change remembered.
    assert!(replays(&server) >= certain);
    assert!(conserved(&server));
}

/// Replies the client library itself discards (client-side drop-reply) are retried on a new
/// connection with the same id and answered from memory. No attempt timeout is involved: the
/// first attempt of each call goes out on a verified connection (the previous call ended on one),
/// so every id whose attempt 0 the seed hits loses that reply on every run.
#[tokio::test]
async fn replies_the_client_discards_are_retried_and_answered_from_memory() {
    let (seed, probability) = (2, 0.3);
    let server = TestServer::start();
    let mut config = server.client_config();
    config.attempt_timeout = Duration::from_secs(10);
    config.faults = format!("drop-reply={probability},seed={seed}")
        .parse()
        .unwrap();
    let (client_id, client) = verify_and_run_the_calls(&server, config).await;
    let certain = change_ids(client_id)
        .filter(|&id| faults::hits(seed, FaultKind::DropReply, id, 0, probability))
        .count() as u64;
    assert!(certain >= 3, "the seed must lose replies: {certain}");
    let dropped = client.stats().replies_dropped;
    assert!(dropped >= certain, "{dropped} dropped, {certain} certain");
    assert!(replays(&server) >= certain);
    assert!(conserved(&server));
}

/// 64 clients withdraw 200 each from one account holding 10000 at the same time: exactly 50 are
/// approved, 14 refused, no two approvals report the same balance, and the account ends at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_withdrawals_never_overdraw() {
    let server = TestServer::start();
    let start = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let config = server.client_config();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(config).await.unwrap();
            let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
            assert_eq!(r.status, Status::Approved);
            start.wait().await;
            client.withdraw(200).await.unwrap()
        }));
    }
    let mut approved_balances = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            Status::Approved => approved_balances.push(reply_balance(&r).unwrap()),
            Status::InsufficientFunds => {
                assert_eq!(r.body, common::balances(0), "refused while money was left");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    approved_balances.sort_unstable();
    let expected: Vec<u64> = (0..50).map(|step| step * 200).collect();
    assert_eq!(approved_balances, expected);
    assert_eq!(refused, 14);
    assert_eq!(server.committed_balance(JOTY), Some(0));
    assert_eq!(server.committed_balance(AHONA), Some(5_000));
    assert!(conserved(&server));
}

/// Resends one request id until the answer is not busy; returns the reply, its bytes and how
/// many busy answers came first.
async fn until_not_busy(
    atm: &mut RawConnection,
    client: u64,
    sequence: u64,
    operation: Operation,
) -> (Reply, Vec<u8>, u64) {
    for busy in 0..200 {
        let (r, bytes) = atm.exchange(client, sequence, operation.clone()).await;
        if r.status != Status::Busy {
            return (r, bytes, busy);
        }
        assert_eq!(r.body, Body::Empty);
    }
    panic!("{client}:{sequence} still busy after 200 attempts");
}

/// Every account decision crashes its actor (half before journaling, half after): each crash is
/// answered busy and followed by a supervised restart; retries with the same id settle each
/// request exactly once, and the state is intact.
#[tokio::test]
async fn crashing_account_actors_restart_and_retries_settle_exactly_once() {
    let server = TestServer::start_with(|config| {
        config.faults = Some("crash-actor=1.0,seed=1".parse().unwrap());
    });
    let c = 48;
    let mut atm = server.raw().await;
    let (r, _, busy_verify) = until_not_busy(&mut atm, c, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(c, 1, Status::Approved, Body::Empty));
    let (r, original, busy_withdraw) = until_not_busy(&mut atm, c, 2, withdraw(400)).await;
    assert_eq!(r, reply(c, 2, Status::Approved, common::balances(9_600)));
    let (r, refused, busy_refused) = until_not_busy(&mut atm, c, 3, withdraw(1_000_000)).await;
    assert_eq!(
        r,
        reply(c, 3, Status::InsufficientFunds, common::balances(9_600))
    );
    // Every decision that journals crashed (its final answer is the replay of the record
    // journaled just before a crash), and every crash was a restart. A right PIN journals
    // nothing, so it can only crash before its decision, and sometimes gets through at once.
    let busy = busy_verify + busy_withdraw + busy_refused;
    assert!(busy_withdraw >= 1 && busy_refused >= 1);
    let bank = server.running().bank();
    let crashes = bank
        .faults()
        .as_ref()
        .unwrap()
        .counts
        .actor_crashes
        .load(Ordering::Relaxed);
    assert_eq!(crashes, busy);
    assert_eq!(bank.stats().actor_restarts.load(Ordering::Relaxed), busy);
    assert_eq!(replays(&server), 2);
    // Replays do not go near the crashing decision.
    let (_, again, no_busy) = until_not_busy(&mut atm, c, 2, withdraw(400)).await;
    assert_eq!((again, no_busy), (original, 0));
    let (_, again, no_busy) = until_not_busy(&mut atm, c, 3, withdraw(1_000_000)).await;
    assert_eq!((again, no_busy), (refused, 0));
    // Balance reads do not involve the actor.
    let (r, _) = atm.exchange(c, 4, Operation::Balance).await;
    assert_eq!(r, reply(c, 4, Status::Approved, common::balances(9_600)));
    assert_eq!(server.committed_balance(JOTY), Some(9_600));
    let account = bank.storage().committed_account(JOTY).unwrap();
    assert_eq!(account.pin_failures, 0);
    assert!(conserved(&server));
}

/// With crashes on 30% of decisions the client library's same-id retries complete every call;
/// the actor was restarted, and the balance is exact. The seed crashes the first decision of
/// several of the calls, so those crashes happen on every run.
#[tokio::test]
async fn the_client_library_rides_out_actor_crashes() {
    let (seed, probability) = (3, 0.3);
    let server = TestServer::start_with(|config| {
        config.faults = Some(
            format!("crash-actor={probability},seed={seed}")
                .parse()
                .unwrap(),
        );
    });
    let config = server.client_config();
    let (client_id, client) = verify_and_run_the_calls(&server, config).await;
    let bank = server.running().bank();
    let restarts = bank.stats().actor_restarts.load(Ordering::Relaxed);
    let crashes = server_faults(&server).actor_crashes.load(Ordering::Relaxed);
    // A change whose first decision is drawn to crash crashes (before or after journaling).
    let certain = change_ids(client_id)
        .filter(|&id| faults::hits(seed, FaultKind::CrashActor, id, 0, probability))
        .count() as u64;
    assert!(
        certain >= 2,
        "the seed must crash some decisions: {certain}"
    );
    assert!(crashes >= certain, "{crashes} crashes, {certain} certain");
    assert_eq!(restarts, crashes);
    assert!(client.stats().retries >= crashes);
    assert!(conserved(&server));
}

/// Account actors that retire as soon as they are idle (and restart on the next request) lose
/// nothing: 8 clients withdraw 50 at once, 10 rounds; after each round the account's actor
/// retires (the live-actor count falls to zero) and the next round starts its successor. All 80
/// are approved, each at a different balance, and the account ends exactly 4000 lower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_retiring_when_idle_lose_nothing() {
    let server = TestServer::start_with(|config| {
        config.limits.account_idle = Duration::from_millis(1);
    });
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut client = Client::connect(server.client_config()).await.unwrap();
        let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
        assert_eq!(r.status, Status::Approved);
        clients.push(client);
    }
    let stats = &server.running().bank().stats();
    let live = || stats.live_accounts.load(Ordering::Relaxed);
    let mut balances = Vec::new();
    for round in 0..10 {
        common::eventually(&format!("the actor retired before round {round}"), || {
            live() == 0
        })
        .await;
        let withdrawals = clients.into_iter().map(|mut client| {
            tokio::spawn(async move {
                let r = client.withdraw(50).await.unwrap();
                assert_eq!(r.status, Status::Approved, "{r:?}");
                (client, reply_balance(&r).unwrap())
            })
        });
        clients = Vec::new();
        for withdrawal in futures::future::join_all(withdrawals).await {
            let (client, balance) = withdrawal.unwrap();
            clients.push(client);
            balances.push(balance);
        }
    }
    common::eventually("the last actor retired", || live() == 0).await;
    balances.sort_unstable();
    let expected: Vec<u64> = (1..=80).rev().map(|k| 10_000 - 50 * k).collect();
    assert_eq!(balances, expected);
    assert_eq!(server.committed_balance(JOTY), Some(6_000));
    assert_eq!(stats.actor_restarts.load(Ordering::Relaxed), 0);
    assert!(server.running().bank().storage().failure().is_none());
    assert!(conserved(&server));
}

/// A client never retries past half the retention the server announces: with a server that
/// remembers clients for 2 s and loses every request, a call configured to retry for an hour
/// ends with an unknown outcome instead of retrying into the time when its id would count as new.
#[tokio::test]
async fn the_client_stops_retrying_within_the_announced_retention() {
    let server = TestServer::start_with(|config| {
        config.client_retention = Duration::from_secs(2);
        config.faults = Some("drop-request=1.0,seed=1".parse().unwrap());
    });
    let mut config = server.client_config();
    config.outcome_deadline = Duration::from_secs(3_600);
    config.attempt_timeout = Duration::from_millis(200);
    let mut client = Client::connect(config).await.unwrap();
    assert_eq!(client.welcome().unwrap().client_retention_secs, 2);
    // The guard only stops a hang; the call itself must end on its own well before it.
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        client.call(Operation::IsPrime { number: 7 }),
    )
    .await
    .expect("the client kept retrying past the server's retention");
    assert!(
        matches!(
            outcome,
            Err(actor_bank::client::ClientError::OutcomeUnknown { .. })
        ),
        "{outcome:?}"
    );
}
