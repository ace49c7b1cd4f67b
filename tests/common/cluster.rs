//! `bank-server` node processes on a private PostgreSQL, and what the cluster tests ask of the
//! database about them (who owns which partition, at which epoch).
#![allow(dead_code)]

use super::postgres::PrivatePostgres;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a test waits for what it expects (a takeover, a balancing): far above what it takes.
pub const WAIT_MAX: Duration = Duration::from_secs(90);

/// The lease of these tests' nodes: short, so a takeover comes soon.
pub const LEASE_TTL: Duration = Duration::from_secs(2);

/// The partitions of these tests' clusters.
pub const PARTITIONS: u32 = 8;

/// The operator token every node of a test cluster shares.
pub use super::common::OPERATOR_TOKEN;

/// A `bank-server` process on PostgreSQL storage, and the address it printed once listening.
pub struct Node {
    pub child: Child,
    pub id: i32,
    address: String,
    /// The ISO 8583 door's address, when the node was started with one.
    pub iso8583: Option<String>,
}

impl Node {
    /// Node `id` on `url` with the test lease, the demo accounts and the shared PIN key file.
    pub fn spawn(url: &str, id: i32, pin_key: &Path) -> Node {
        Node::spawn_with_lease(url, id, pin_key, LEASE_TTL)
    }

    /// Node `id` with a lease of `lease`; returns once it listens.
    pub fn spawn_with_lease(url: &str, id: i32, pin_key: &Path, lease: Duration) -> Node {
        Node::spawn_with_args(url, id, pin_key, lease, &[])
    }

    /// Node `id` with an ISO 8583 door taking clear PIN blocks, besides the ATM protocol.
    pub fn spawn_with_iso8583(url: &str, id: i32, pin_key: &Path) -> Node {
        let door = [
            "--iso8583-listen",
            "127.0.0.1:0",
            "--iso8583-clear-pin-blocks",
        ];
        Node::spawn_with_args(url, id, pin_key, LEASE_TTL, &door)
    }

    /// Node `id` with a lease of `lease` and `extra` arguments; returns once it listens (and,
    /// with an ISO 8583 door, once the door listens too).
    pub fn spawn_with_args(
        url: &str,
        id: i32,
        pin_key: &Path,
        lease: Duration,
        extra: &[&str],
    ) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bank-server"))
            .args([
                "--storage",
                url,
                "--node-id",
                &id.to_string(),
                "--listen",
                "127.0.0.1:0",
                "--lease-ttl-secs",
                &lease.as_secs().to_string(),
                "--demo",
                "--pin-key-file",
            ])
            .arg(pin_key)
            .args(extra)
            .env("BANK_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env(
                "RUST_LOG",
                std::env::var("CLUSTER_TEST_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(node_log(id))
            .spawn()
            .expect("bank-server starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(address) = line.strip_prefix("bank-server listening on ") {
                    let _ = sender.send((false, address.to_string()));
                }
                if let Some(address) = line.strip_prefix("bank-server iso8583 on ") {
                    let _ = sender.send((true, address.to_string()));
                }
            }
        });
        let with_door = extra.contains(&"--iso8583-listen");
        let (mut address, mut iso8583) = (None, None);
        while address.is_none() || (with_door && iso8583.is_none()) {
            match ready
                .recv_timeout(WAIT_MAX)
                .expect("the node listens in time")
            {
                (false, line) => address = Some(line),
                (true, line) => iso8583 = Some(line),
            }
        }
        let address = address.expect("the ready line");
        Node {
            child,
            id,
            address,
            iso8583,
        }
    }

    /// The address it listens on (and advertises).
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, signal).expect("the node takes the signal");
    }
}

/// Where a node's log goes: nowhere, or, when `CLUSTER_TEST_LOG_DIR` names a directory (to look
/// into a failure), a file `node-ID.log` there.
fn node_log(id: i32) -> Stdio {
    let Some(directory) = std::env::var_os("CLUSTER_TEST_LOG_DIR") else {
        return Stdio::null();
    };
    let path = Path::new(&directory).join(format!("node-{id}.log"));
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The live owner of every partition (`None` where nobody holds an unexpired lease).
pub fn owners(pg: &PrivatePostgres) -> Vec<Option<i32>> {
    pg.psql(
        "SELECT CASE WHEN lease_until > now() THEN owner END FROM bank_partitions ORDER BY partition",
    )
    .lines()
    .map(|line| line.trim().parse().ok())
    .collect()
}

/// Waits until `nodes` alone hold every partition, each its fair share (rounded down or up).
pub fn wait_balanced(pg: &PrivatePostgres, nodes: &[i32]) {
    let low = PARTITIONS as usize / nodes.len();
    let high = (PARTITIONS as usize).div_ceil(nodes.len());
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let owners = owners(pg);
        let counts: Vec<usize> = nodes
            .iter()
            .map(|node| owners.iter().filter(|owner| **owner == Some(*node)).count())
            .collect();
        let all = counts.iter().sum::<usize>() == PARTITIONS as usize;
        if all && counts.iter().all(|count| (low..=high).contains(count)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never balanced over {nodes:?}: owners {owners:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The partition of `card`, as the cluster spreads accounts.
pub fn partition_of(card: u64) -> u32 {
    actor_bank::storage::postgres::partition_of(card, PARTITIONS)
}

/// A card of the partitions `node` owns now, among `cards`.
pub fn card_owned_by(pg: &PrivatePostgres, node: i32, cards: impl IntoIterator<Item = u64>) -> u64 {
    let owners = owners(pg);
    cards
        .into_iter()
        .find(|card| owners[partition_of(*card) as usize] == Some(node))
        .expect("a card of that node")
}

/// The journal rows written at `epoch` or later, as PostgreSQL counts them.
pub fn rows_at_epoch(pg: &PrivatePostgres, epoch: i64) -> u64 {
    pg.psql(&format!(
        "SELECT count(*) FROM bank_journal WHERE epoch >= {epoch}"
    ))
    .trim()
    .parse()
    .expect("a count")
}

/// The partitions `node` holds, with the epoch it holds each at.
pub fn held_by(pg: &PrivatePostgres, node: i32) -> Vec<(u32, i64)> {
    pg.psql(&format!(
        "SELECT partition, epoch FROM bank_partitions WHERE owner = {node} ORDER BY partition"
    ))
    .lines()
    .filter_map(|line| {
        let (partition, epoch) = line.trim().split_once('|')?;
        Some((partition.trim().parse().ok()?, epoch.trim().parse().ok()?))
    })
    .collect()
}

/// The journal rows written at exactly these (partition, epoch) pairs: what one holder wrote.
pub fn rows_written_at(pg: &PrivatePostgres, held: &[(u32, i64)]) -> u64 {
    if held.is_empty() {
        return 0;
    }
    let pairs: Vec<String> = held
        .iter()
        .map(|(partition, epoch)| format!("({partition},{epoch})"))
        .collect();
    pg.psql(&format!(
        "SELECT count(*) FROM bank_journal WHERE (partition, epoch) IN ({})",
        pairs.join(",")
    ))
    .trim()
    .parse()
    .expect("a count")
}

/// The highest epoch of any partition.
pub fn epoch(pg: &PrivatePostgres) -> i64 {
    pg.psql("SELECT max(epoch) FROM bank_partitions")
        .trim()
        .parse()
        .expect("an epoch")
}
