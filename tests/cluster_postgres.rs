//! Nodes on PostgreSQL storage against a private PostgreSQL of the test's own: a node serves and
//! recovers after a restart; a standby takes over a node killed with SIGKILL with nothing
//! acknowledged lost or applied twice; a node paused past its lease is fenced and commits
//! nothing after the takeover; PostgreSQL restarted under load makes the node refuse changes
//! (`unavailable`) and then resume; a connection cut right after COMMIT is resolved by reading
//! the batch back, never by applying it twice.
#[path = "common/banking.rs"]
mod banking;
mod common;
#[path = "common/postgres.rs"]
mod postgres;

use actor_bank::protocol::{Operation, RequestId, Status};
use actor_bank::server::{RunningServer, ServerConfig, StorageKind};
use actor_bank::storage::postgres::{init_cluster, PostgresConfig};
use common::{verify, withdraw, TestServer, JOTY, JOTY_PIN, OPERATOR_TOKEN};
use postgres::{CuttingProxy, PrivatePostgres};
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a test waits for what it expects (a takeover, a restart): far above what it takes.
const WAIT_MAX: Duration = Duration::from_secs(90);

/// The lease of these tests' nodes: short, so a takeover comes soon.
const LEASE_TTL: Duration = Duration::from_secs(2);

const PARTITIONS: u32 = 8;

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
        takeover_wait_max: Some(WAIT_MAX),
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

/// A node on PostgreSQL serves, and after a restart has every change and replays a request id
/// with its original reply.
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
    server.server.take().unwrap().stop();
    server.server = Some(RunningServer::start(config).unwrap());
    assert_eq!(balance(&server, JOTY), 9_700);
    // The same id again: the original's answer, no second withdrawal.
    assert_eq!(
        withdrawal(&server.address(), 7, 2, 300).await,
        Status::Approved
    );
    assert_eq!(balance(&server, JOTY), 9_700);
    let rows = pg.psql("SELECT count(*) FROM bank_journal");
    assert!(rows.trim().parse::<u64>().unwrap() >= 3, "{rows}");
}

/// A `bank-server` process on PostgreSQL storage, and the address it printed once serving.
struct Node {
    child: Child,
    ready: mpsc::Receiver<String>,
}

impl Node {
    fn spawn(url: &str, node_id: i32, pin_key: &std::path::Path) -> Node {
        Node::spawn_with_lease(url, node_id, pin_key, LEASE_TTL)
    }

    fn spawn_with_lease(
        url: &str,
        node_id: i32,
        pin_key: &std::path::Path,
        lease: Duration,
    ) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank-server"))
            .args([
                "--storage",
                url,
                "--node-id",
                &node_id.to_string(),
                "--listen",
                "127.0.0.1:0",
                "--lease-ttl-secs",
                &lease.as_secs().to_string(),
                "--demo",
                "--pin-key-file",
            ])
            .arg(pin_key)
            .env("BANK_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(address) = line.strip_prefix("bank-server listening on ") {
                    let _ = sender.send(address.to_string());
                }
            }
        });
        Node { child, ready }
    }

    /// The address, once the node serves (it waits for its partitions first).
    fn address(&self) -> String {
        self.ready
            .recv_timeout(WAIT_MAX)
            .expect("the node serves in time")
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The journal's rows written at `epoch` or later, as PostgreSQL counts them.
fn rows_at_epoch(pg: &PrivatePostgres, epoch: i64) -> u64 {
    pg.psql(&format!(
        "SELECT count(*) FROM bank_journal WHERE epoch >= {epoch}"
    ))
    .trim()
    .parse()
    .unwrap()
}

fn epoch(pg: &PrivatePostgres) -> i64 {
    pg.psql("SELECT max(epoch) FROM bank_partitions")
        .trim()
        .parse()
        .unwrap()
}

/// Node 1 serves; node 2 waits as a standby; node 1 is killed with SIGKILL; node 2 takes the
/// partitions once the lease runs out and has every acknowledged withdrawal, and the retry of
/// the last one gets its original answer, applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_a_killed_node_and_nothing_acknowledged_is_lost() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let keys = tempfile::tempdir().unwrap();
    let pin_key = keys.path().join("pin-key");
    let mut first = Node::spawn(&pg.url(), 1, &pin_key);
    let address = first.address();
    for sequence in 2..12 {
        assert_eq!(
            withdrawal(&address, 9, sequence, 100).await,
            Status::Approved
        );
    }
    let second = Node::spawn(&pg.url(), 2, &pin_key);
    first.signal(rustix::process::Signal::KILL);
    let _ = first.child.wait();
    let address = second.address();
    // The retry of the last acknowledged withdrawal, on the new owner: the same answer.
    assert_eq!(withdrawal(&address, 9, 11, 100).await, Status::Approved);
    assert_eq!(withdrawal(&address, 9, 12, 100).await, Status::Approved);
    let mut atm = actor_bank::client::Client::connect(common::client_config_with_id(&address, 10))
        .await
        .unwrap();
    atm.call(verify(JOTY, JOTY_PIN)).await.unwrap();
    let reply = atm.call(Operation::Balance).await.unwrap();
    assert_eq!(reply.body, common::balances(10_000 - 11 * 100));
}

/// Node 1 is paused (SIGSTOP) past its lease; node 2 takes over; node 1, continued, commits
/// nothing: its change is refused, and PostgreSQL holds no row of its epoch after the takeover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_is_fenced_and_commits_nothing() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let keys = tempfile::tempdir().unwrap();
    let pin_key = keys.path().join("pin-key");
    let first = Node::spawn(&pg.url(), 1, &pin_key);
    let first_address = first.address();
    assert_eq!(
        withdrawal(&first_address, 11, 2, 100).await,
        Status::Approved
    );
    let first_epoch = epoch(&pg);
    first.signal(rustix::process::Signal::STOP);
    let second = Node::spawn(&pg.url(), 2, &pin_key);
    let second_address = second.address();
    let taken_over = epoch(&pg);
    assert!(taken_over > first_epoch);
    let rows_before = rows_at_epoch(&pg, first_epoch) - rows_at_epoch(&pg, taken_over);
    first.signal(rustix::process::Signal::CONT);
    // Node 1 finds itself fenced: a change it is asked for is never acknowledged.
    let mut raw = common::RawConnection::connect(&first_address)
        .await
        .greeted()
        .await;
    let status = raw.exchange(12, 1, verify(JOTY, JOTY_PIN)).await.0.status;
    if status == Status::Approved {
        let status = raw.exchange(12, 2, withdraw(100)).await.0.status;
        assert_ne!(status, Status::Approved);
    }
    let rows_after = rows_at_epoch(&pg, first_epoch) - rows_at_epoch(&pg, taken_over);
    assert_eq!(rows_after, rows_before, "the fenced node wrote a row");
    assert_eq!(
        withdrawal(&second_address, 13, 2, 100).await,
        Status::Approved
    );
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

/// A node stopped gracefully (SIGTERM) hands its partitions back: a standby serves long before
/// the stopped node's lease (far longer than this test waits) could have run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_gracefully_hands_its_partitions_over() {
    let pg = PrivatePostgres::new();
    init(&pg.url()).await;
    let keys = tempfile::tempdir().unwrap();
    let pin_key = keys.path().join("pin-key");
    let long_lease = WAIT_MAX * 2;
    let mut first = Node::spawn_with_lease(&pg.url(), 1, &pin_key, long_lease);
    let address = first.address();
    assert_eq!(withdrawal(&address, 41, 2, 100).await, Status::Approved);
    let second = Node::spawn(&pg.url(), 2, &pin_key);
    first.signal(rustix::process::Signal::TERM);
    assert!(first.child.wait().unwrap().success());
    let address = second.address();
    assert_eq!(withdrawal(&address, 41, 2, 100).await, Status::Approved);
    assert_eq!(withdrawal(&address, 41, 3, 100).await, Status::Approved);
    let owners = pg.psql("SELECT DISTINCT owner FROM bank_partitions");
    assert_eq!(owners.trim(), "2");
}
