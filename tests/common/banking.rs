//! Shared helpers for the banking suites (transfers, holds, reversals, limits, account
//! management): accounts opened by the operator, logged-in clients, the balances a reply carries,
//! the operator's view of an account, and waits for the bank's background work.
//!
//! Included by each banking suite next to `common` (`#[path = "common/banking.rs"] mod banking;`).
#![allow(dead_code)]

use crate::common::{RawConnection, TestServer, OPERATOR_TOKEN};
use actor_bank::client::ops::Management;
use actor_bank::client::Client;
use actor_bank::clock::ManualClock;
use actor_bank::ledger::Account;
use actor_bank::model::DailyLimits;
use actor_bank::protocol::{AccountDetails, Body, Operation, Reply, Status};
use actor_bank::server::ServerConfig;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The longest the waits below wait for the bank's background work: generous, because it only
/// keeps a broken server from hanging a test and never decides a verdict.
pub const BACKGROUND_WAIT_MAX: Duration = Duration::from_secs(30);

/// Waits (polling) until `condition` holds, at most [`BACKGROUND_WAIT_MAX`]; panics naming
/// `what` otherwise.
pub async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + BACKGROUND_WAIT_MAX;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A connected client for the operator.
pub async fn operator(server: &TestServer) -> Client {
    server.client().await
}

/// Opens `card` with `pin` and `balance` as the operator; the opening must be approved.
pub async fn open(operator: &mut Client, card: u64, pin: &str, balance: u64) {
    let reply = operator
        .create_account(OPERATOR_TOKEN, card, "Banking Tester", pin, balance)
        .await
        .unwrap();
    assert_eq!(reply.status, Status::Approved, "opening {card}: {reply:?}");
}

/// A client logged in to `card`.
pub async fn teller(server: &TestServer, card: u64, pin: &str) -> Client {
    let mut client = server.client().await;
    let reply = client.verify(card, pin).await.unwrap();
    assert_eq!(reply.status, Status::Approved, "login to {card}: {reply:?}");
    client
}

/// Opens `card` with `balance` (PIN [`PIN`]) and returns a client logged in to it.
pub async fn opened_teller(server: &TestServer, card: u64, balance: u64) -> Client {
    let mut operator = operator(server).await;
    open(&mut operator, card, PIN, balance).await;
    teller(server, card, PIN).await
}

/// The PIN of every account the banking suites open.
pub const PIN: &str = "4821";

/// The (ledger, available) balances a reply carries; panics when it carries none.
pub fn balances(reply: &Reply) -> (u64, u64) {
    match reply.body {
        Body::Balances { ledger, available } => (ledger, available),
        Body::Hold {
            ledger, available, ..
        } => (ledger, available),
        _ => panic!("no balances in {reply:?}"),
    }
}

/// Asserts `reply` ended with `status` and carries the balances `expected` (ledger, available).
pub fn assert_reply(reply: &Reply, status: Status, expected: (u64, u64)) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_eq!(balances(reply), expected, "{reply:?}");
}

/// The id of the hold a placement's reply names.
pub fn hold_id(reply: &Reply) -> u64 {
    match reply.body {
        Body::Hold { hold_id, .. } if reply.status == Status::Approved => hold_id,
        _ => panic!("no hold placed: {reply:?}"),
    }
}

/// The operator's `action` on `card`, with the right token.
pub async fn manage(operator: &mut Client, card: u64, action: Management) -> Reply {
    operator.manage(OPERATOR_TOKEN, card, action).await.unwrap()
}

/// The operator's `action` on `card`, which must be approved.
pub async fn manage_ok(operator: &mut Client, card: u64, action: Management) {
    let reply = manage(operator, card, action).await;
    assert_eq!(reply.status, Status::Approved, "{reply:?}");
}

/// The details the operator reads of `card`.
pub async fn details(operator: &mut Client, card: u64) -> AccountDetails {
    let reply = manage(operator, card, Management::Info).await;
    match reply.body {
        Body::Account(details) if reply.status == Status::Approved => details,
        _ => panic!("no account details: {reply:?}"),
    }
}

/// Daily limits of `amount` in at most `count` withdrawals.
pub fn limits(amount: u64, count: u32) -> DailyLimits {
    DailyLimits { amount, count }
}

/// The committed account of `card`.
pub fn committed(server: &TestServer, card: u64) -> Account {
    server.committed_account(card)
}

/// The committed ledger balance of `card`.
pub fn ledger_balance(server: &TestServer, card: u64) -> u64 {
    server.committed_balance(card).expect("no such account")
}

/// True when the committed state conserves money.
pub fn conserved(server: &TestServer) -> bool {
    server
        .running()
        .bank()
        .storage()
        .with_committed(|ledger| ledger.is_conserved())
}

/// The money the committed state has in transit, bank-wide.
pub fn money_in_transit(server: &TestServer) -> u128 {
    server
        .running()
        .bank()
        .storage()
        .with_committed(|ledger| ledger.in_transit())
        .expect("more received than sent")
}

/// Waits until every transfer is delivered and settled: nothing in transit, no delivery
/// running, no account with a transfer on its way.
pub async fn all_delivered(server: &TestServer) {
    let bank = server.running().bank();
    wait_for("every transfer delivered and settled", || {
        let on_their_way = bank.storage().with_committed(|ledger| {
            ledger
                .accounts
                .values()
                .map(|account| account.outbox().len())
                .sum::<usize>()
        });
        money_in_transit(server) == 0 && on_their_way == 0 && bank.background().deliveries() == 0
    })
    .await;
}

/// How many transfers the bank delivered (`received`) and gave back (`returned`).
pub fn transfers_settled(server: &TestServer) -> (u64, u64) {
    let stats = server.running().bank().stats();
    (
        stats.transfers_received.load(Ordering::Relaxed),
        stats.transfers_returned.load(Ordering::Relaxed),
    )
}

/// How many holds the bank expired.
pub fn holds_expired(server: &TestServer) -> u64 {
    server
        .running()
        .bank()
        .stats()
        .holds_expired
        .load(Ordering::Relaxed)
}

/// A test server driven by a manual clock, with `adjust` applied too; returns the clock.
pub fn with_manual_clock(adjust: impl FnOnce(&mut ServerConfig)) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::default());
    let shared = clock.clone();
    let server = TestServer::start_with(move |config| {
        config.clock = shared;
        adjust(config);
    });
    (server, clock)
}

/// A raw connection logged in to `card` by a Verify under `login_client` (sequence 1).
pub async fn raw_teller(server: &TestServer, login_client: u64, card: u64) -> RawConnection {
    let mut atm = server.raw().await;
    let (reply, _) = atm
        .exchange(login_client, 1, crate::common::verify(card, PIN))
        .await;
    assert_eq!(reply.status, Status::Approved, "login failed: {reply:?}");
    atm
}

/// Sends `operation` as `client:sequence` on a connection logged in to `card` whose reply is
/// lost (read and thrown away unseen, as a dropped connection would lose it), then again on a
/// new connection, and once more there: returns the reply and its bytes, after checking that the
/// two retries are byte-identical to the lost original.
pub async fn lost_reply_then_retries(
    server: &TestServer,
    card: u64,
    client: u64,
    sequence: u64,
    operation: Operation,
) -> (Reply, Vec<u8>) {
    // Each connection logs in under an id of its own, never the one under test.
    let login = client * 1_000 + sequence * 10;
    let mut first = raw_teller(server, login + 1, card).await;
    let (_, lost) = first.exchange(client, sequence, operation.clone()).await;
    drop(first);
    let mut second = raw_teller(server, login + 2, card).await;
    let (reply, again) = second.exchange(client, sequence, operation.clone()).await;
    assert_eq!(again, lost, "the retry's reply differs from the original");
    let (_, once_more) = second.exchange(client, sequence, operation).await;
    assert_eq!(once_more, lost, "a second retry's reply differs");
    (reply, lost)
}

/// The address of this test process's metrics endpoint, installed on first use (the recorder is
/// process-wide, so every test of a binary shares it and its counters).
pub fn metrics_address() -> String {
    static ADDRESS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDRESS
        .get_or_init(|| {
            actor_bank::metrics::install("127.0.0.1:0".parse().unwrap())
                .unwrap()
                .to_string()
        })
        .clone()
}

/// The value of the metric whose line starts with `series` (name and labels), scraped now;
/// 0 when it has no line yet.
pub async fn metric(series: &str) -> f64 {
    let address = metrics_address();
    let text = tokio::task::spawn_blocking(move || crate::common::scrape_metrics(&address))
        .await
        .unwrap();
    text.lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}
