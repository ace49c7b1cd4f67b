//! Nodes on PostgreSQL storage against a private PostgreSQL of the test's own: a node serves and
//! recovers after a restart; a node takes over a node killed with SIGKILL with nothing
//! acknowledged lost or applied twice; a node stopped gracefully hands its partitions over;
//! PostgreSQL restarted under load makes the node refuse changes
//! (`unavailable`) and then resume; a connection cut right after COMMIT is resolved by reading
//! the batch back, never by applying it twice.
#[path = "common/banking.rs"]
mod banking;
#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/postgres.rs"]
mod postgres;

use actor_bank::protocol::{Operation, RequestId, Status};
use actor_bank::server::{RunningServer, ServerConfig, StorageKind};
use actor_bank::storage::postgres::{init_cluster, PostgresConfig};
use cluster::{Node, LEASE_TTL, PARTITIONS, WAIT_MAX};
use common::{verify, withdraw, TestServer, JOTY, JOTY_PIN};
use postgres::{CuttingProxy, PrivatePostgres};
use std::time::Duration;

async fn init(url: &str) {
    init_cluster(url, PARTITIONS).await.unwrap();
}

/// A node's configuration on `url` as node `node_id`, with the test's PIN key and token.
fn node_config(data_dir: &std::path::Path, url: &str, node_id: i32) -> ServerConfig {
    let mut config = common::test_config(data_dir);
    config.storage = StorageKind::Postgres(PostgresConfig {
        url: url.to_string(),
        node_id,
        advertise: format!("node-{node_id}"),
        lease_ttl: LEASE_TTL,
        queue_records_max: 65_536,
        // Small, so the restart below recovers from a snapshot and the rows after it.
        snapshot_every_records: 4,
    });
    config
}

/// A withdrawal of `amount` by a client of its own with request id `client:sequence`, retried
/// until its answer is definite; its status.
async fn withdrawal(address: &str, client: u64, sequence: u64, amount: u64) -> Status {
    let mut atm =
        actor_bank::client::Client::connect(common::client_config_with_id(address, client))
            .await
            .unwrap();
    let verified = atm
        .call_with_id(
            RequestId {
                client,
                sequence: 1,
            },
            verify(JOTY, JOTY_PIN),
        )
        .await
        .unwrap();
    assert_eq!(verified.status, Status::Approved);
    atm.call_with_id(RequestId { client, sequence }, withdraw(amount))
        .await
        .unwrap()
        .status
}

/// The committed balance of `card` as PostgreSQL's journal rows make it (a fresh node's view).
fn balance(server: &TestServer, card: u64) -> u64 {
    banking::committed(server, card).balance
}

/// A node on PostgreSQL serves, snapshots a partition, and after a restart (from the snapshot and
/// the rows after it) has every change and replays a request id with its original reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_serves_and_recovers_after_a_restart() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let directory = tempfile::tempdir().unwrap();
    let url = pg.url();
    let config = node_config(directory.path(), &url, 1);
    let mut server = TestServer::around(
        tempfile::tempdir().unwrap(),
        RunningServer::start(config.clone()).unwrap(),
    );
    assert_eq!(
        withdrawal(&server.address(), 7, 2, 300).await,
        Status::Approved
    );
    assert_eq!(balance(&server, JOTY), 9_700);
    // Enough records on JOTY's partition for a snapshot (every 4 here), and one after it.
    for sequence in 3..8 {
        assert_eq!(
            withdrawal(&server.address(), 8, sequence, 0).await,
            Status::InvalidAmount
        );
    }
    let snapshotted = || {
        pg.psql("SELECT count(*) FROM bank_snapshots")
            .trim()
            .parse::<u64>()
            .unwrap()
            > 0
    };
    banking::wait_for("a partition snapshot", snapshotted).await;
    server.server.take().unwrap().stop();
    server.server = Some(RunningServer::start(config).unwrap());
    assert_eq!(balance(&server, JOTY), 9_700);
    // The same id again: the original's answer, no second withdrawal.
    assert_eq!(
        withdrawal(&server.address(), 7, 2, 300).await,
        Status::Approved
    );
    assert_eq!(balance(&server, JOTY), 9_700);
    // The snapshot took the place of the rows it covers.
    let covered = pg.psql(
        "SELECT count(*) FROM bank_journal j JOIN bank_snapshots s
         ON j.partition = s.partition AND j.position <= s.position",
    );
    assert_eq!(covered.trim(), "0");
}

/// Node 1 serves alone; node 2 joins and takes half the partitions; node 1 is killed with
/// SIGKILL; node 2 takes the other half once node 1's lease runs out and has every acknowledged
/// withdrawal, and the retry of the last one gets its original answer, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_over_a_killed_node_and_nothing_acknowledged_is_lost() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let keys = tempfile::tempdir().unwrap();
    let pin_key = keys.path().join("pin-key");
    let mut first = Node::spawn(&pg.url(), 1, &pin_key);
    cluster::wait_balanced(&pg, &[1]);
    let address = first.address();
    for sequence in 2..12 {
        assert_eq!(
            withdrawal(&address, 9, sequence, 100).await,
            Status::Approved
        );
    }
    let second = Node::spawn(&pg.url(), 2, &pin_key);
    cluster::wait_balanced(&pg, &[1, 2]);
    first.signal(rustix::process::Signal::KILL);
    let _ = first.child.wait();
    cluster::wait_balanced(&pg, &[2]);
    let address = second.address();
    // The retry of the last acknowledged withdrawal, on the new owner: the same answer.
    assert_eq!(withdrawal(&address, 9, 11, 100).await, Status::Approved);
    assert_eq!(withdrawal(&address, 9, 12, 100).await, Status::Approved);
    assert_eq!(balance_through(&address, 10).await, 10_000 - 11 * 100);
}

/// PostgreSQL stops under a node: a change that reached the journal's queue waits for it, and
/// every change after is refused `unavailable`, none acknowledged; PostgreSQL starts again: the
/// waiting change is written (once) and answered, the node takes changes again, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_a_node_is_unavailable_then_resumes() {
    let mut pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::around(
        tempfile::tempdir().unwrap(),
        RunningServer::start(node_config(directory.path(), &pg.url(), 1)).unwrap(),
    );
    let address = server.address();
    assert_eq!(withdrawal(&address, 21, 2, 100).await, Status::Approved);
    let mut waiting = common::RawConnection::connect(&address)
        .await
        .greeted()
        .await;
    let verified = waiting.exchange(22, 1, verify(JOTY, JOTY_PIN)).await.0;
    assert_eq!(verified.status, Status::Approved);
    // Cards for the probes, one each: a card's answers wait behind its queued change.
    const PROBES: u64 = 20;
    let mut operator = banking::operator(&server).await;
    for card in 0..PROBES {
        banking::open(&mut operator, 60_000 + card, banking::PIN, 1_000).await;
    }
    pg.stop();
    // This one reaches the queue and waits for PostgreSQL.
    waiting.request(22, 2, withdraw(7)).await;
    // Later ones are refused once the node has given up on PostgreSQL for now; one that was
    // queued before that waits too (its connection is left, its withdrawal counted).
    let mut queued = 0;
    let mut probe_cards = 60_000..60_000 + PROBES;
    loop {
        let card = probe_cards
            .next()
            .expect("the node said it was unavailable");
        let client = card;
        let mut probe = common::RawConnection::connect(&address)
            .await
            .greeted()
            .await;
        let verified = probe
            .exchange(client, 1, verify(card, banking::PIN))
            .await
            .0;
        // Once its lease is not surely fresh, the node answers nothing about its accounts, a
        // Verify included.
        if verified.status == Status::Unavailable {
            break;
        }
        assert_eq!(verified.status, Status::Approved);
        probe.request(client, 2, withdraw(1)).await;
        match tokio::time::timeout(Duration::from_secs(5), probe.receive_reply()).await {
            Ok((reply, _)) if reply.status == Status::Unavailable => break,
            Ok((reply, _)) => panic!("{} without PostgreSQL", reply.status),
            Err(_) => queued += 1,
        }
    }
    pg.start();
    let (reply, _) = waiting.receive_reply().await;
    assert_eq!(reply.status, Status::Approved);
    // The node takes changes again: a client retrying gets through.
    assert_eq!(withdrawal(&address, 23, 2, 100).await, Status::Approved);
    banking::wait_for("every acknowledged or queued withdrawal applied", || {
        let probed: u64 = (60_000..60_000 + PROBES)
            .map(|card| balance(&server, card))
            .sum();
        balance(&server, JOTY) == 10_000 - 100 - 7 - 100 && probed == PROBES * 1_000 - queued
    })
    .await;
}

/// The connection is cut right after the batch's COMMIT is forwarded, before its answer: the
/// node reads the batch back, finds it, acknowledges it; the withdrawal is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_cut_on_the_wire_is_read_back_not_applied_twice() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let proxy = CuttingProxy::start(pg.address());
    let url = format!("postgres://bank@{}/bank", proxy.address());
    let directory = tempfile::tempdir().unwrap();
    let server = TestServer::around(
        tempfile::tempdir().unwrap(),
        RunningServer::start(node_config(directory.path(), &url, 1)).unwrap(),
    );
    let address = server.address();
    let mut raw = common::RawConnection::connect(&address)
        .await
        .greeted()
        .await;
    assert_eq!(
        raw.exchange(31, 1, verify(JOTY, JOTY_PIN)).await.0.status,
        Status::Approved
    );
    proxy.cut_after_commit(1);
    let status = raw.exchange(31, 2, withdraw(250)).await.0.status;
    assert_eq!(status, Status::Approved);
    assert_eq!(proxy.cuts(), 1);
    assert_eq!(balance(&server, JOTY), 9_750);
    let rows = pg.psql("SELECT count(*) FROM bank_journal");
    // The demo accounts' two openings and the one withdrawal: nothing written twice.
    assert_eq!(rows.trim(), "3");
}

/// A node stopped gracefully (SIGTERM) hands its partitions back: the other serves them long
/// before the stopped node's lease (far longer than this test waits) could have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_hands_its_partitions_over() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let keys = tempfile::tempdir().unwrap();
    let pin_key = keys.path().join("pin-key");
    let long_lease = WAIT_MAX * 2;
    let mut first = Node::spawn_with_lease(&pg.url(), 1, &pin_key, long_lease);
    cluster::wait_balanced(&pg, &[1]);
    let address = first.address();
    assert_eq!(withdrawal(&address, 41, 2, 100).await, Status::Approved);
    let second = Node::spawn(&pg.url(), 2, &pin_key);
    cluster::wait_balanced(&pg, &[1, 2]);
    first.signal(rustix::process::Signal::TERM);
    assert!(first.child.wait().unwrap().success());
    cluster::wait_balanced(&pg, &[2]);
    let address = second.address();
    assert_eq!(withdrawal(&address, 41, 2, 100).await, Status::Approved);
    assert_eq!(withdrawal(&address, 41, 3, 100).await, Status::Approved);
    assert_eq!(balance_through(&address, 42).await, 10_000 - 200);
}

/// JOTY's balance as a client of `address` reads it.
async fn balance_through(address: &str, client: u64) -> u64 {
    let mut atm =
        actor_bank::client::Client::connect(common::client_config_with_id(address, client))
            .await
            .unwrap();
    assert_eq!(
        atm.call(verify(JOTY, JOTY_PIN)).await.unwrap().status,
        Status::Approved
    );
    match atm.call(Operation::Balance).await.unwrap().body {
        actor_bank::protocol::Body::Balances { ledger, .. } => ledger,
        other => panic!("{other:?}"),
    }
}
