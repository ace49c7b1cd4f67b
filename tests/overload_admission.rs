//! Admission under overload: a retry of a change that is still being worked on joins the
//! original (one execution, one answer to both), a retry with other parameters or one carrying a
//! secret is never joined, and the in-flight limit counts every request until its reply is
//! written. The journal's syncs are held back by a gate, so "still being worked on" is a state
//! the test sets up, not a race it hopes to win.
mod common;
use common::{AHONA, JOTY, JOTY_PIN};

use actor_bank::journal::files::{FileLayer, OsFiles, SegmentFile};
use actor_bank::journal::JournalConfig;
use actor_bank::protocol::{Body, Operation, Status};
use actor_bank::server::{RunningServer, ServerConfig};
use common::RawConnection;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};

/// Not Ahona's PIN.
const WRONG_PIN: &str = "0000";

/// Holds every journal sync while closed: records are queued and decided, none becomes durable.
#[derive(Default)]
struct Gate {
    closed: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }

    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.changed.notify_all();
    }

    fn pass(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.changed.wait(closed).unwrap();
        }
    }
}

/// Opens the gate when dropped, so a failing test still lets its server shut down.
struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// The real files, with segment syncs waiting at the gate.
struct GatedFiles(Arc<Gate>);

struct GatedSegment {
    inner: Box<dyn SegmentFile>,
    gate: Arc<Gate>,
}

impl SegmentFile for GatedSegment {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.gate.pass();
        self.inner.sync_data()
    }
}

impl GatedFiles {
    fn gated(&self, inner: Box<dyn SegmentFile>) -> Box<dyn SegmentFile> {
        Box::new(GatedSegment {
            inner,
            gate: self.0.clone(),
        })
    }
}

impl FileLayer for GatedFiles {
    fn create_new(&self, path: &Path, growth: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OsFiles.create_new(path, growth)?;
        // Segments grow ahead; snapshots and other whole files do not, and are not held.
        Ok(if growth > 0 { self.gated(file) } else { file })
    }

    fn open_append(
        &self,
        path: &Path,
        end: u64,
        zero_until: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.gated(OsFiles.open_append(path, end, zero_until)?))
    }
}

/// A test server whose journal syncs pass through a gate (open at first).
struct GatedServer {
    /// Dropped first: opens the gate so the server can shut down.
    _open: OpenOnDrop,
    gate: Arc<Gate>,
    server: RunningServer,
    _data_dir: tempfile::TempDir,
}

impl GatedServer {
    fn start(adjust: impl FnOnce(&mut ServerConfig)) -> GatedServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = common::test_config(data_dir.path());
        adjust(&mut config);
        let gate = Arc::new(Gate::default());
        let mut journal = JournalConfig::new(data_dir.path());
        journal.files = Arc::new(GatedFiles(gate.clone()));
        let server = RunningServer::start_with_journal(config, journal).unwrap();
        GatedServer {
            _open: OpenOnDrop(gate.clone()),
            gate,
            server,
            _data_dir: data_dir,
        }
    }

    fn bank(&self) -> &Arc<actor_bank::server::Bank> {
        self.server.bank()
    }

    fn head(&self) -> u64 {
        self.bank().storage().stats().head_lsn
    }

    fn joins(&self) -> u64 {
        self.bank().stats().joins.load(Ordering::Relaxed)
    }

    fn replays(&self) -> u64 {
        self.bank().stats().replays.load(Ordering::Relaxed)
    }

    /// A connection with `card` verified under the request id `client:1`.
    async fn verified(&self, client: u64, card: u64, pin: &str) -> RawConnection {
        let mut connection = self.raw_greeted().await;
        let (reply, _) = connection
            .exchange(client, 1, common::verify(card, pin))
            .await;
        assert_eq!(reply.status, Status::Approved);
        connection
    }

    /// Two connections with Joty verified; with the gate closed, `original` is sent as 7:1 on
    /// the first and decided (queued, not durable), then `retry` as 7:1 on the second. Returns
    /// both connections and the journal's head before the original.
    async fn original_held_then_retried(
        &self,
        original: Operation,
        retry: Operation,
    ) -> (RawConnection, RawConnection, u64) {
        let mut first = self.verified(70, JOTY, JOTY_PIN).await;
        let mut second = self.verified(71, JOTY, JOTY_PIN).await;
        self.gate.close();
        let before = self.head();
        first.request(7, 1, original).await;
        self.decided(before + 1).await;
        second.request(7, 1, retry).await;
        (first, second, before)
    }

    /// Waits until the journal has handed out position `lsn` (the request was decided).
    async fn decided(&self, lsn: u64) {
        common::eventually("the request is decided and queued in the journal", || {
            self.head() >= lsn
        })
        .await;
    }
}

/// A withdrawal whose record is decided but not yet durable is retried on a second connection
/// with the same id and amount: the retry joins it. Both get the same reply, byte for byte, once
/// the record is durable; the journal holds one record; the money moved once; the actor never
/// saw the retry (no replay from memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_on_another_connection_joins_the_original_and_gets_the_same_reply() {
    let server = GatedServer::start(|_| {});
    let (mut original, mut retry, before) = server
        .original_held_then_retried(common::withdraw(300), common::withdraw(300))
        .await;
    common::eventually("the retry joins the original", || server.joins() == 1).await;
    assert!(server.bank().storage().stats().durable_lsn < before + 1);
    server.gate.open();

    let (first, first_bytes) = original.receive_reply().await;
    let (second, second_bytes) = retry.receive_reply().await;
    assert_eq!(
        (first.status, &first.body),
        (Status::Approved, &common::balances(9_700))
    );
    assert_eq!(first_bytes, second_bytes, "{first:?} / {second:?}");
    assert_eq!(server.head(), before + 1, "one record for the withdrawal");
    assert_eq!(server.replays(), 0, "the retry never reached the actor");
    assert_eq!(server.bank().balance(JOTY), Some(9_700));

    // Once answered, the id is no longer in flight: a later retry is a replay from memory.
    let (late, late_bytes) = retry.exchange(7, 1, common::withdraw(300)).await;
    assert_eq!(late_bytes, first_bytes, "{late:?}");
    assert_eq!((server.joins(), server.replays()), (1, 1));
    assert_eq!(server.head(), before + 1);
}

/// The same id with another amount is not joined: it gets the conflict, after the original's
/// record is durable, and the original its approval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_other_parameters_is_not_joined_and_conflicts() {
    let server = GatedServer::start(|_| {});
    let (mut original, mut other, _) = server
        .original_held_then_retried(common::withdraw(100), common::withdraw(200))
        .await;
    server.gate.open();

    let (first, _) = original.receive_reply().await;
    let (second, _) = other.receive_reply().await;
    assert_eq!(
        (first.status, first.body),
        (Status::Approved, common::balances(9_900))
    );
    assert_eq!(second.status, Status::RequestIdConflict);
    assert_eq!(server.joins(), 0);
    assert_eq!(server.bank().balance(JOTY), Some(9_900));
}

/// A PIN attempt is never joined, even when the same Verify (same id, same PIN) is still being
/// worked on: a request that carries a secret is always checked afresh. (A wrong PIN, because
/// only a wrong one leaves a record to hold back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verify_is_never_joined() {
    let server = GatedServer::start(|_| {});
    let mut first = server.raw_greeted().await;
    let mut second = server.raw_greeted().await;

    server.gate.close();
    let before = server.head();
    let replays = server.replays();
    first.request(80, 1, common::verify(AHONA, WRONG_PIN)).await;
    server.decided(before + 1).await;
    second
        .request(80, 1, common::verify(AHONA, WRONG_PIN))
        .await;
    // The second attempt reached the account actor: answered from memory or decided again.
    common::eventually("the second verify reaches the account actor", || {
        server.replays() > replays || server.head() > before + 1
    })
    .await;
    server.gate.open();
    let (one, _) = first.receive_reply().await;
    let (two, _) = second.receive_reply().await;
    assert_eq!(
        (one.status, two.status),
        (Status::IncorrectPin, Status::IncorrectPin)
    );
    assert_eq!(server.joins(), 0);
}

/// With no room left for joinable requests, a change is still accepted and a retry takes the
/// ordinary path: the actor answers it from memory, with the same reply, and nothing runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_joinable_limit_is_reached_a_retry_takes_the_ordinary_path() {
    let server = GatedServer::start(|config| config.limits.requests_joinable_max = 0);
    let (mut original, mut retry, before) = server
        .original_held_then_retried(common::deposit(50), common::deposit(50))
        .await;
    common::eventually("the retry is answered from memory", || {
        server.replays() == 1
    })
    .await;
    server.gate.open();
    let (_, first_bytes) = original.receive_reply().await;
    let (second, second_bytes) = retry.receive_reply().await;
    assert_eq!(first_bytes, second_bytes, "{second:?}");
    assert_eq!(server.joins(), 0);
    assert_eq!(server.head(), before + 1);
    assert_eq!(server.bank().balance(JOTY), Some(10_050));
}

/// An original whose connection is torn down while a retry waits on it tells the retry `busy`;
/// the retry's next attempt settles the request from memory, and the money moved once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_original_answers_its_joiners_busy() {
    let server = GatedServer::start(|_| {});
    let (mut original, mut retry, before) = server
        .original_held_then_retried(common::withdraw(300), common::withdraw(300))
        .await;
    common::eventually("the retry joins the original", || server.joins() == 1).await;
    // A malformed frame ends the original's session at once, with its work in flight.
    original.send_bytes(&[0, 0, 0, 1, 0xff]).await;
    let (busy, _) = retry.receive_reply().await;
    assert_eq!(busy.status, Status::Busy);
    server.gate.open();
    let (settled, _) = retry.exchange(7, 1, common::withdraw(300)).await;
    assert_eq!(
        (settled.status, settled.body),
        (Status::Approved, common::balances(9_700))
    );
    assert_eq!(server.head(), before + 1);
}

/// The in-flight rule at its edge, with a limit of 3: every request counts until its reply is
/// written. With two changes held, a utility is admitted (2 < 3); with three held, a utility, a
/// `Balance` and a `Logout` are all refused `busy` at once, and the refusals take no room: once
/// the changes are answered, the next request is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_counts_against_the_in_flight_limit_until_its_reply() {
    let server = GatedServer::start(|config| config.limits.requests_in_flight_max = 3);
    let mut connection = server.verified(90, JOTY, JOTY_PIN).await;

    server.gate.close();
    connection.request(9, 1, common::withdraw(1)).await;
    connection.request(9, 2, common::withdraw(2)).await;
    let (prime, _) = connection
        .exchange(9, 100, Operation::IsPrime { number: 7 })
        .await;
    assert_eq!(
        (prime.status, prime.body),
        (Status::Approved, Body::Answer(true))
    );
    connection.request(9, 3, common::withdraw(3)).await;
    for (sequence, operation) in [
        (101, Operation::IsPalindrome { number: 121 }),
        (102, Operation::Balance),
        (103, Operation::Logout),
        (104, common::withdraw(4)),
    ] {
        let (refused, _) = connection.exchange(9, sequence, operation).await;
        assert_eq!(refused.status, Status::Busy, "request 9:{sequence}");
    }
    server.gate.open();
    let mut approved = Vec::new();
    for _ in 0..3 {
        let (reply, _) = connection.receive_reply().await;
        assert_eq!(reply.status, Status::Approved, "{reply:?}");
        approved.push(reply.id.sequence);
    }
    approved.sort_unstable();
    assert_eq!(approved, [1, 2, 3]);
    let (balance, _) = connection.exchange(9, 105, Operation::Balance).await;
    assert_eq!(
        (balance.status, balance.body),
        (Status::Approved, common::balances(10_000 - 6))
    );
}

impl GatedServer {
    /// A connection that has completed the handshake, with no card verified.
    async fn raw_greeted(&self) -> RawConnection {
        let mut connection = RawConnection::connect(&self.server.local_addr.to_string()).await;
        connection.send_bytes(&common::hello_frame()).await;
        assert!(matches!(
            connection.receive().await,
            Some(actor_bank::protocol::ServerMessage::Welcome(_))
        ));
        connection
    }
}
