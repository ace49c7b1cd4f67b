//! Several `bank-server` nodes serving different partitions of one cluster on a private
//! PostgreSQL: they balance the partitions among themselves, redirect a client to the node that
//! serves its account, and move partitions when a node is killed, paused, added or stopped,
//! with the swarm's audit: every acknowledged operation applied exactly once, money conserved,
//! every replay identical.
#[path = "common/banking.rs"]
mod banking;
#[path = "common/cluster.rs"]
mod cluster;
mod common;
#[path = "common/iso8583.rs"]
mod iso8583;
#[path = "common/postgres.rs"]
mod postgres;

use actor_bank::protocol::{Body, Operation, Status};
use actor_bank::storage::postgres::init_cluster;
use actor_bank::swarm::{self, Mix, ProgressCallback, Stop, SwarmConfig};
use cluster::{Node, WAIT_MAX};
use common::{verify, withdraw, JOTY, JOTY_PIN};
use postgres::PrivatePostgres;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn cluster() -> (PrivatePostgres, tempfile::TempDir) {
    let pg = PrivatePostgres::new();
    init_cluster(&pg.url(), cluster::PARTITIONS).await.unwrap();
    (pg, tempfile::tempdir().unwrap())
}

/// Nodes 1 to `count`, started one after the other (the first alone opens the demo accounts),
/// once they share the partitions fairly.
fn started_nodes(pg: &PrivatePostgres, keys: &tempfile::TempDir, count: i32) -> Vec<Node> {
    let pin_key = keys.path().join("pin-key");
    let first = Node::spawn(&pg.url(), 1, &pin_key);
    cluster::wait_balanced(pg, &[1]);
    let mut nodes = vec![first];
    nodes.extend((2..=count).map(|id| Node::spawn(&pg.url(), id, &pin_key)));
    let ids: Vec<i32> = (1..=count).collect();
    cluster::wait_balanced(pg, &ids);
    nodes
}

/// Held by each test that runs a swarm over its nodes, so those run one at a time. Each such test
/// runs three debug-built nodes, PostgreSQL and a swarm; several at once on a small machine starve
/// the nodes past the 2 s test lease, and then every node takes partitions from the others in
/// turn while the swarm is sent from node to node, which is not the takeover a test means to
/// exercise.
static SWARM_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Nodes 1, 2 and 3 ([`started_nodes`]).
fn three_nodes(pg: &PrivatePostgres, keys: &tempfile::TempDir) -> Vec<Node> {
    started_nodes(pg, keys, 3)
}

/// Every node's address, as a seed list.
fn seeds(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(Node::address)
        .collect::<Vec<_>>()
        .join(",")
}

/// The operator opens `cards` through `address` (following redirects to their nodes).
async fn open_accounts(address: &str, cards: impl IntoIterator<Item = u64>, balance: u64) {
    // A client id of its own for each call: an operator's ids are used once.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let client = 5_100 + CALLS.fetch_add(1, Ordering::SeqCst);
    let mut operator =
        actor_bank::client::Client::connect(common::client_config_with_id(address, client))
            .await
            .unwrap();
    for card in cards {
        let reply = operator
            .create_account(
                cluster::OPERATOR_TOKEN,
                card,
                "Cluster Tester",
                "4321",
                balance,
            )
            .await
            .unwrap();
        assert_eq!(reply.status, Status::Approved, "opening {card}");
    }
}

/// A swarm over `seeds` (withdrawals, deposits, balances and transfers between accounts of
/// different nodes), running in a task of its own; the counter follows its operations.
fn swarm_over(
    seeds: String,
    seed: u64,
    operations: u64,
) -> (
    tokio::task::JoinHandle<swarm::SwarmReport>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut config = SwarmConfig::new(Some(seeds));
    config.operator_token = cluster::OPERATOR_TOKEN.to_string();
    config.atms = 12;
    config.accounts = 48;
    config.seed = seed;
    config.mix = Mix {
        withdraw: 4,
        deposit: 2,
        balance: 1,
        transfer: 3,
        ..Mix::NOTHING
    };
    config.stop = Stop::Operations(operations);
    config.attempt_timeout = Duration::from_millis(500);
    config.outcome_deadline = WAIT_MAX;
    let counter = done.clone();
    config.progress = Some(ProgressCallback(Arc::new(move |operations| {
        counter.fetch_max(operations, Ordering::SeqCst);
    })));
    let run = tokio::spawn(async move { swarm::run(config).await.unwrap() });
    (run, done)
}

/// Waits until the swarm `run` has done `operations`. If it stalls (or ends short), waits for it
/// to end (its clients give up at their outcome deadline) and fails with what it reported, so
/// that a stall says which requests got no answer and why.
async fn wait_for_operations(
    done: &std::sync::atomic::AtomicU64,
    operations: u64,
    run: &mut tokio::task::JoinHandle<swarm::SwarmReport>,
) {
    let deadline = Instant::now() + WAIT_MAX;
    while done.load(Ordering::SeqCst) < operations {
        if Instant::now() >= deadline || run.is_finished() {
            let ended = tokio::time::timeout(WAIT_MAX, &mut *run).await;
            let outcome = match ended {
                Ok(Ok(report)) => format!(
                    "it ended after {} acknowledged: statuses {:?}, {:?}",
                    report.ops_acked,
                    report.statuses,
                    report.violation_details.iter().take(10).collect::<Vec<_>>()
                ),
                Ok(Err(failed)) => format!("it failed: {failed}"),
                Err(_) => "it did not end either".to_string(),
            };
            panic!("the swarm stalled at {done:?} of {operations}; {outcome}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The swarm's audit found every acknowledged operation applied exactly once, every cent.
fn assert_audited(report: &swarm::SwarmReport, operations: u64) {
    assert_eq!(report.violations, 0, "{:#?}", report.violation_details);
    assert!(
        report.ops_acked >= operations * 3 / 4,
        "acked {}",
        report.ops_acked
    );
    assert!(report.flows.transfers > 0, "{:?}", report.flows);
}

/// Three nodes share the partitions; a node asked about an account another serves answers
/// `moved` with that node's advertised address and does nothing else; the client library
/// follows it to the right node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_partitions_and_redirect_to_the_owner() {
    let (pg, keys) = cluster().await;
    let nodes = three_nodes(&pg, &keys);
    let owners = cluster::owners(&pg);
    let card = 70_000
        + (0..64)
            .find(|card| owners[cluster::partition_of(70_000 + card) as usize] == Some(2))
            .unwrap();
    open_accounts(&nodes[0].address(), [card], 5_000).await;
    // Asked on node 1: `moved` to node 2, and nothing remembered or counted there.
    let mut raw = common::RawConnection::connect(&nodes[0].address())
        .await
        .greeted()
        .await;
    let (reply, _) = raw.exchange(81, 1, verify(card, "4321")).await;
    assert_eq!(reply.status, Status::Moved);
    assert_eq!(
        reply.body,
        Body::Moved {
            address: nodes[1].address()
        }
    );
    // The client library follows it: verified and served on node 2.
    let mut atm =
        actor_bank::client::Client::connect(common::client_config_with_id(&nodes[0].address(), 82))
            .await
            .unwrap();
    assert_eq!(
        atm.call(verify(card, "4321")).await.unwrap().status,
        Status::Approved
    );
    let reply = atm.call(withdraw(1_000)).await.unwrap();
    assert_eq!(reply.status, Status::Approved);
    assert_eq!(reply.body, common::balances(4_000));
    assert!(atm.stats().redirects >= 1, "{:?}", atm.stats());
    // Back to an account of node 1: the connection the client was moved away from is reused.
    let home = cluster::card_owned_by(&pg, 1, 70_100..70_164);
    open_accounts(&nodes[0].address(), [home], 700).await;
    let opened = atm.stats().connections;
    assert_eq!(
        atm.call(verify(home, "4321")).await.unwrap().status,
        Status::Approved
    );
    assert_eq!(
        atm.call(Operation::Balance).await.unwrap().body,
        common::balances(700)
    );
    assert_eq!(atm.stats().connections, opened, "{:?}", atm.stats());
    assert_eq!(
        atm.call(verify(card, "4321")).await.unwrap().status,
        Status::Approved
    );
    // A transfer's leg delivered node to node: only with the operator token, only under its
    // receipt id, credited once however often it comes.
    let leg = |token: &str| Operation::ReceiveTransfer {
        operator_token: token.to_string(),
        from: 99_001,
        leg: 1,
        to: card,
        amount: 250,
    };
    let mut peer = common::RawConnection::connect(&nodes[1].address())
        .await
        .greeted()
        .await;
    let (refused, _) = peer.exchange(99_001, 1, leg("not-the-token")).await;
    assert_eq!(refused.status, Status::NotAuthorised);
    let (refused, _) = peer.exchange(99_001, 2, leg(cluster::OPERATOR_TOKEN)).await;
    assert_eq!(refused.status, Status::InvalidRequest);
    let (credited, _) = peer.exchange(99_001, 1, leg(cluster::OPERATOR_TOKEN)).await;
    assert_eq!(credited.status, Status::Approved);
    assert_eq!(credited.body, common::balances(4_250));
    let (again, _) = peer.exchange(99_001, 1, leg(cluster::OPERATOR_TOKEN)).await;
    assert_eq!(again, credited);
    let (elsewhere, _) = raw.exchange(99_001, 1, leg(cluster::OPERATOR_TOKEN)).await;
    assert_eq!(elsewhere.status, Status::Moved);
    let reply = atm.call(Operation::Balance).await.unwrap();
    assert_eq!(reply.body, common::balances(4_250));
    // Every node answers for the demo card, wherever it is served.
    for node in &nodes {
        let mut atm = actor_bank::client::Client::connect(common::client_config_with_id(
            &node.address(),
            52 + u64::from(node.id as u32),
        ))
        .await
        .unwrap();
        assert_eq!(
            atm.call(verify(JOTY, JOTY_PIN)).await.unwrap().status,
            Status::Approved
        );
        assert_eq!(
            atm.call(Operation::Balance).await.unwrap().status,
            Status::Approved
        );
    }
}

/// A swarm over three nodes, with transfers between accounts of different nodes; node 2 is
/// killed with SIGKILL in the middle of it. Nodes 1 and 3 take its partitions, and the audit
/// finds every acknowledged operation applied exactly once and every cent accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_over_three_nodes_survives_kill_9_of_one() {
    let _turn = SWARM_TESTS.lock().await;
    let (pg, keys) = cluster().await;
    let mut nodes = three_nodes(&pg, &keys);
    let (mut run, done) = swarm_over(seeds(&nodes), 18, 1_200);
    wait_for_operations(&done, 300, &mut run).await;
    let victim = nodes.remove(1);
    victim.signal(rustix::process::Signal::KILL);
    drop(victim);
    let report = run.await.unwrap();
    assert_audited(&report, 1_200);
    assert!(report.redirects > 0, "the ATMs were never redirected");
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[1, 3]));
}

/// A node paused (SIGSTOP) past its lease loses its partitions to the others; continued
/// (SIGCONT), it writes no row at the epochs it held and redirects its clients to the new owners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_paused_past_its_lease_is_fenced_and_redirects() {
    let (pg, keys) = cluster().await;
    let nodes = three_nodes(&pg, &keys);
    let owners = cluster::owners(&pg);
    let cards: Vec<u64> = (80_000..80_064)
        .filter(|card| owners[cluster::partition_of(*card) as usize] == Some(1))
        .take(4)
        .collect();
    open_accounts(&nodes[1].address(), cards.clone(), 1_000).await;
    // ATMs verified on node 1, for after the pause.
    let mut pending = Vec::new();
    for (index, card) in cards.iter().enumerate() {
        let mut raw = common::RawConnection::connect(&nodes[0].address())
            .await
            .greeted()
            .await;
        let client = 90 + index as u64;
        assert_eq!(
            raw.exchange(client, 1, verify(*card, "4321"))
                .await
                .0
                .status,
            Status::Approved
        );
        pending.push((raw, client));
    }
    let held = cluster::held_by(&pg, 1);
    let written = cluster::rows_written_at(&pg, &held);
    nodes[0].signal(rustix::process::Signal::STOP);
    cluster::wait_balanced(&pg, &[2, 3]);
    nodes[0].signal(rustix::process::Signal::CONT);
    // Whatever node 1 is asked now, it acknowledges nothing of the partitions it lost, and
    // once it has noticed, it names their new owners.
    let deadline = Instant::now() + WAIT_MAX;
    for (raw, client) in &mut pending {
        let mut sequence = 2;
        loop {
            let (reply, _) = raw.exchange(*client, sequence, withdraw(10)).await;
            assert_ne!(
                reply.status,
                Status::Approved,
                "a fenced node acknowledged a change"
            );
            if reply.status == Status::Moved {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node 1 never redirected: {}",
                reply.status
            );
            sequence += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        cluster::rows_written_at(&pg, &held),
        written,
        "the fenced node wrote a row"
    );
    // The accounts are served by their new owners, every balance whole.
    let mut atm =
        actor_bank::client::Client::connect(common::client_config_with_id(&nodes[0].address(), 59))
            .await
            .unwrap();
    for card in &cards {
        assert_eq!(
            atm.call(verify(*card, "4321")).await.unwrap().status,
            Status::Approved
        );
        let reply = atm.call(Operation::Balance).await.unwrap();
        assert_eq!(reply.body, common::balances(1_000));
    }
}

/// A node added to a running cluster takes its share of the partitions; a node stopped
/// gracefully (SIGTERM) hands its partitions over to the others long before its lease (far
/// longer than the test waits) could run out; the accounts stay whole throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_takes_partitions_and_one_stopped_hands_them_over() {
    let (pg, keys) = cluster().await;
    let pin_key = keys.path().join("pin-key");
    let nodes = started_nodes(&pg, &keys, 2);
    let (first, second) = (&nodes[0], &nodes[1]);
    let cards: Vec<u64> = (60_000..60_016).collect();
    open_accounts(&first.address(), cards.clone(), 1_000).await;
    let long_lease = WAIT_MAX * 4;
    let mut third = Node::spawn_with_lease(&pg.url(), 3, &pin_key, long_lease);
    cluster::wait_balanced(&pg, &[1, 2, 3]);
    let seeds = [first.address(), second.address()].join(",");
    let mut atm = actor_bank::client::Client::connect(common::client_config_with_id(&seeds, 61))
        .await
        .unwrap();
    for card in &cards {
        assert_eq!(
            atm.call(verify(*card, "4321")).await.unwrap().status,
            Status::Approved
        );
        assert_eq!(
            atm.call(withdraw(100)).await.unwrap().status,
            Status::Approved
        );
    }
    third.signal(rustix::process::Signal::TERM);
    assert!(third.child.wait().unwrap().success());
    cluster::wait_balanced(&pg, &[1, 2]);
    let mut last = None;
    for card in &cards {
        assert_eq!(
            atm.call(verify(*card, "4321")).await.unwrap().status,
            Status::Approved
        );
        let reply = atm.call(withdraw(100)).await.unwrap();
        assert_eq!(reply.status, Status::Approved);
        assert_eq!(reply.body, common::balances(800));
        last = Some(reply);
    }
    // A retried id after the handover: the original answer, applied once.
    let last = last.unwrap();
    let replay = atm.call_with_id(last.id, withdraw(100)).await.unwrap();
    assert_eq!(replay, last);
}

/// Under a swarm over three nodes, node 1 is paused (SIGSTOP) past its lease: the others take its
/// partitions and serve its accounts; continued (SIGCONT), it writes no row at the epochs it held.
/// The swarm's audit finds every acknowledged operation applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_over_three_nodes_survives_a_pause_past_the_lease() {
    let _turn = SWARM_TESTS.lock().await;
    let (pg, keys) = cluster().await;
    let nodes = three_nodes(&pg, &keys);
    let (mut run, done) = swarm_over(seeds(&nodes), 19, 1_200);
    wait_for_operations(&done, 300, &mut run).await;
    let held = cluster::held_by(&pg, 1);
    nodes[0].signal(rustix::process::Signal::STOP);
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[2, 3]));
    let written = cluster::rows_written_at(&pg, &held);
    wait_for_operations(&done, 600, &mut run).await;
    nodes[0].signal(rustix::process::Signal::CONT);
    let report = run.await.unwrap();
    assert_audited(&report, 1_200);
    assert_eq!(
        cluster::rows_written_at(&pg, &held),
        written,
        "the paused node wrote a row after the takeover"
    );
}

/// Under a swarm over two nodes, a third joins and takes its share, then is stopped gracefully
/// (SIGTERM) and hands it back, its lease far longer than the test; the audit finds every
/// acknowledged operation applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_survives_a_node_added_and_one_stopped_gracefully() {
    let _turn = SWARM_TESTS.lock().await;
    let (pg, keys) = cluster().await;
    let pin_key = keys.path().join("pin-key");
    let nodes = started_nodes(&pg, &keys, 2);
    let (mut run, done) = swarm_over(seeds(&nodes), 20, 1_200);
    wait_for_operations(&done, 300, &mut run).await;
    let url = pg.url();
    let key = pin_key.clone();
    let mut third =
        tokio::task::spawn_blocking(move || Node::spawn_with_lease(&url, 3, &key, WAIT_MAX * 4))
            .await
            .unwrap();
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[1, 2, 3]));
    wait_for_operations(&done, 600, &mut run).await;
    third.signal(rustix::process::Signal::TERM);
    assert!(third.child.wait().unwrap().success());
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[1, 2]));
    let report = run.await.unwrap();
    assert_audited(&report, 1_200);
}

/// The ISO 8583 door of a node asked for a card another node serves answers `91` with that
/// node's address in field 44, and keeps no reply; the same message at the owner's door is
/// approved, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iso8583_door_names_the_node_that_serves_the_card() {
    use actor_bank::iso8583::{field, network};
    let (pg, keys) = cluster().await;
    let pin_key = keys.path().join("pin-key");
    let first = Node::spawn_with_iso8583(&pg.url(), 1, &pin_key);
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[1]));
    let second = Node::spawn_with_iso8583(&pg.url(), 2, &pin_key);
    tokio::task::block_in_place(|| cluster::wait_balanced(&pg, &[1, 2]));
    let card = cluster::card_owned_by(&pg, 2, 75_000..75_064);
    open_accounts(&first.address(), [card], 1_000).await;
    let mut message = iso8583::withdrawal(card, "4321", 100, 7);
    let block = actor_bank::pin_block::clear_field_52_for("4321", &card.to_string()).unwrap();
    message.set(field::PIN_BLOCK, block);
    let mut here = iso8583::Link::connect_to(first.iso8583.as_deref().unwrap()).await;
    let (_, signed_on) = here
        .call(&iso8583::network_message(network::SIGN_ON, None))
        .await;
    assert_eq!(signed_on.get(field::RESPONSE_CODE), Some("00"));
    for _ in 0..2 {
        let (_, reply) = here.call(&message).await;
        assert_eq!(reply.get(field::RESPONSE_CODE), Some("91"));
        assert_eq!(
            reply.get(field::ADDITIONAL_RESPONSE_DATA),
            Some(second.address().as_str())
        );
    }
    let mut there = iso8583::Link::connect_to(second.iso8583.as_deref().unwrap()).await;
    let (_, signed_on) = there
        .call(&iso8583::network_message(network::SIGN_ON, None))
        .await;
    assert_eq!(signed_on.get(field::RESPONSE_CODE), Some("00"));
    let (_, approved) = there.call(&message).await;
    assert_eq!(approved.get(field::RESPONSE_CODE), Some("00"));
    let (_, repeated) = there.call(&iso8583::repeat_of(&message, "0201")).await;
    assert_eq!(repeated.get(field::RESPONSE_CODE), Some("00"));
    let mut atm =
        actor_bank::client::Client::connect(common::client_config_with_id(&first.address(), 76))
            .await
            .unwrap();
    assert_eq!(
        atm.call(verify(card, "4321")).await.unwrap().status,
        Status::Approved
    );
    let reply = atm.call(Operation::Balance).await.unwrap();
    assert_eq!(reply.body, common::balances(900));
}
