//! Shared helpers for the integration tests: start a real server on 127.0.0.1:0 with a temporary
//! data directory, and speak the protocol with raw frames.
#![allow(dead_code)]

use actor_bank::client::{Client, ClientConfig};
use actor_bank::codec::encode_frame;
use actor_bank::pin::PinHashCost;
use actor_bank::protocol::{
    ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, PROTOCOL_VERSION,
};
use actor_bank::server::{RunningServer, ServerConfig};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod tls;

/// The operator token every test server is started with.
pub const OPERATOR_TOKEN: &str = "test-operator-token-4f1c9a2e7b3d8605";

/// The lab's sample accounts, opened by every test server (`demo`).
pub const JOTY: u64 = 123_456_789;
/// Joty's PIN.
pub const JOTY_PIN: &str = "1234";
/// The second sample account.
pub const AHONA: u64 = 987_654_321;
/// Ahona's PIN.
pub const AHONA_PIN: &str = "5678";

/// The reply the server must send for `client:sequence`.
pub fn reply(
    client: u64,
    sequence: u64,
    status: actor_bank::protocol::Status,
    body: actor_bank::protocol::Body,
) -> actor_bank::protocol::Reply {
    actor_bank::protocol::Reply {
        id: RequestId { client, sequence },
        status,
        body,
    }
}

/// The body of a reply that carries an account's balances when no hold is open: the ledger
/// balance and the available balance, both `balance`.
pub fn balances(balance: u64) -> actor_bank::protocol::Body {
    actor_bank::protocol::Body::Balances {
        ledger: balance,
        available: balance,
    }
}

/// A Verify of `card` with `pin`.
pub fn verify(card: u64, pin: &str) -> Operation {
    Operation::Verify {
        card,
        pin: pin.to_string(),
    }
}

/// A withdrawal.
pub fn withdraw(amount: u64) -> Operation {
    Operation::Withdraw { amount }
}

/// A deposit.
pub fn deposit(amount: u64) -> Operation {
    Operation::Deposit { amount }
}

/// An account opening.
pub fn create(token: &str, card: u64, holder: &str, pin: &str, initial_balance: u64) -> Operation {
    Operation::CreateAccount {
        operator_token: token.to_string(),
        card,
        holder: holder.to_string(),
        pin: pin.to_string(),
        initial_balance,
    }
}

/// The PIN verification key every test server is started with (given in memory, so tests leave
/// no key files behind; tests of key files set their own).
pub fn test_pin_key() -> actor_bank::pin::PinKey {
    actor_bank::pin::PinKey::from_bytes([0x5a; actor_bank::pin::PIN_KEY_BYTES])
}

/// The text a metrics endpoint at `address` serves (the whole HTTP response), which must be a 200.
pub fn scrape_metrics(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// Runs the real `atm` binary as `atm --server SERVER --json ARGUMENTS…`, with no server, token,
/// TLS or log settings from the environment; returns its standard output and exit code.
pub async fn run_atm(server: &str, arguments: &[&str]) -> (String, Option<i32>) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_atm"));
    command
        .args(["--server", server, "--json"])
        .args(arguments)
        .env_remove("BANK_SERVER")
        .env_remove("BANK_OPERATOR_TOKEN")
        .env_remove("BANK_TLS_CA")
        .env_remove("BANK_TLS_CERT")
        .env_remove("BANK_TLS_KEY")
        .env_remove("BANK_TLS_SERVER_NAME")
        .env("RUST_LOG", "off");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        output.status.code(),
    )
}

/// A server configuration for tests: port 0, the test token, the test PIN key, failure limits
/// and the per-peer connection cap out of the way (every test connects from 127.0.0.1; tests of
/// the limits set their own), the demo accounts.
pub fn test_config(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.operator_token = Some(OPERATOR_TOKEN.into());
    config.pin_hash_cost = PinHashCost::MINIMUM;
    config.pin_key = actor_bank::server::pins::PinKeySource::Given(test_pin_key());
    let unlimited = actor_bank::ratelimit::RateLimit {
        burst: u32::MAX,
        per_minute: 0,
    };
    config.limits.pin_failures_per_connection = unlimited;
    config.limits.pin_failures_per_peer = unlimited;
    config.limits.connections_per_peer_max = config.limits.connections_max;
    config.demo = true;
    config
}

/// A running test server and the directory it keeps its data in (deleted on drop).
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub data_dir: TempDir,
    /// The client id [`TestServer::client_config`] gives next: FIRST_CLIENT_ID, then one more
    /// each time, in the order a test asks, so every request id (and every injected fault) is
    /// the same on every run.
    next_client_id: std::sync::atomic::AtomicU64,
}

/// The first id [`TestServer::client_config`] gives (far from the small ids the raw-frame tests
/// use).
pub const FIRST_CLIENT_ID: u64 = 1_000_000;

/// Mixed into a test client's id to make the id of its automatic re-logins.
pub const RELOGIN_TAG: u64 = 0x7e10_0000_0000_0000;

/// A client configuration for `address` with short pauses and the fixed id `client_id` (its
/// re-logins use `client_id ^ RELOGIN_TAG`).
pub fn client_config_with_id(address: &str, client_id: u64) -> ClientConfig {
    let mut config = ClientConfig::new(address);
    config.client_id = client_id;
    config.relogin_client_id = client_id ^ RELOGIN_TAG;
    config.attempt_timeout = Duration::from_secs(2);
    config.outcome_deadline = Duration::from_secs(20);
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(100);
    config
}

impl TestServer {
    /// Starts a server with [`test_config`], adjusted by `adjust`.
    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        Self::on(data_dir, config)
    }

    /// Starts a server with `config` on `data_dir`, which the test prepared.
    pub fn on(data_dir: TempDir, config: ServerConfig) -> TestServer {
        let server = RunningServer::start(config).unwrap();
        TestServer {
            server: Some(server),
            data_dir,
            next_client_id: std::sync::atomic::AtomicU64::new(FIRST_CLIENT_ID),
        }
    }

    /// A test server around `server`, started by the test on `data_dir`.
    pub fn around(data_dir: TempDir, server: RunningServer) -> TestServer {
        TestServer {
            server: Some(server),
            data_dir,
            next_client_id: std::sync::atomic::AtomicU64::new(FIRST_CLIENT_ID),
        }
    }

    /// Starts a server with [`test_config`].
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// The server's address as `host:port`.
    pub fn address(&self) -> String {
        self.server.as_ref().unwrap().local_addr.to_string()
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// Stops the server (journal flushed) and starts a new one on the same data directory.
    pub fn restart(&mut self, adjust: impl FnOnce(&mut ServerConfig)) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        let mut config = test_config(self.data_dir.path());
        adjust(&mut config);
        self.server = Some(RunningServer::start(config).unwrap());
    }

    /// A client configuration for this server with short pauses and the next fixed client id.
    pub fn client_config(&self) -> ClientConfig {
        let id = self
            .next_client_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        client_config_with_id(&self.address(), id)
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(self.client_config()).await.unwrap()
    }

    /// A raw connection that has completed the handshake.
    pub async fn raw(&self) -> RawConnection {
        RawConnection::connect(&self.address())
            .await
            .greeted()
            .await
    }
}

impl RawConnection {
    /// This connection after the handshake (Hello answered by Welcome).
    pub async fn greeted(mut self) -> RawConnection {
        self.send(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .await;
        match self.receive().await {
            Some(ServerMessage::Welcome(_)) => self,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

/// Appends everything written to a shared buffer: a log sink a test can read back.
#[derive(Clone, Default)]
pub struct Capture(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;

    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

/// A connection that sends and receives whole frames, or any bytes at all.
pub struct RawConnection {
    pub stream: TcpStream,
}

impl RawConnection {
    pub async fn connect(address: &str) -> RawConnection {
        RawConnection {
            stream: TcpStream::connect(address).await.unwrap(),
        }
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one message as a frame.
    pub async fn send(&mut self, message: &ClientMessage) {
        let frame = encode_frame(message).unwrap();
        self.send_bytes(&frame).await;
    }

    /// Sends one request.
    pub async fn request(&mut self, client: u64, sequence: u64, operation: Operation) {
        self.send(&ClientMessage::Request(Request {
            id: RequestId { client, sequence },
            operation,
        }))
        .await;
    }

    /// Reads one frame's body; None when the connection closed (or nothing came within 10 s).
    pub async fn receive_body(&mut self) -> Option<Vec<u8>> {
        let read = async {
            let mut length = [0u8; 4];
            self.stream.read_exact(&mut length).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(body)
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .ok()
            .flatten()
    }

    /// Reads one message.
    pub async fn receive(&mut self) -> Option<ServerMessage> {
        let body = self.receive_body().await?;
        Some(actor_bank::codec::decode_wire(&body).unwrap())
    }

    /// True when the server closes the connection (after any Goodbye) within 10 s.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut buffer = [0u8; 1024];
        let wait = async {
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or(false)
    }
}

// ---- Helpers added for the core_* suites (raw request/reply exchanges, journal restarts). ----

/// One request as a complete frame, to send several in one write (pipelining).
pub fn request_frame(client: u64, sequence: u64, operation: Operation) -> Vec<u8> {
    encode_frame(&ClientMessage::Request(Request {
        id: RequestId { client, sequence },
        operation,
    }))
    .unwrap()
}

impl RawConnection {
    /// Reads one frame that must be a `Reply`; returns it with its exact body bytes.
    pub async fn receive_reply(&mut self) -> (actor_bank::protocol::Reply, Vec<u8>) {
        let body = self
            .receive_body()
            .await
            .expect("the server closed the connection (or sent nothing) instead of replying");
        match actor_bank::codec::decode_wire::<ServerMessage>(&body).unwrap() {
            ServerMessage::Reply(reply) => (reply, body),
            other => panic!("expected a Reply, got {other:?}"),
        }
    }

    /// Sends one request and reads the next frame, which must be the reply with the same id.
    pub async fn exchange(
        &mut self,
        client: u64,
        sequence: u64,
        operation: Operation,
    ) -> (actor_bank::protocol::Reply, Vec<u8>) {
        self.request(client, sequence, operation).await;
        let (reply, body) = self.receive_reply().await;
        assert_eq!(
            reply.id,
            RequestId { client, sequence },
            "reply to another request: {reply:?}"
        );
        (reply, body)
    }
}

impl TestServer {
    /// Like [`TestServer::restart`], with the journal's settings adjusted too (for example a file
    /// layer that fails like a full disk).
    pub fn restart_with_journal(
        &mut self,
        adjust: impl FnOnce(&mut ServerConfig),
        adjust_journal: impl FnOnce(&mut actor_bank::journal::JournalConfig),
    ) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        let mut config = test_config(self.data_dir.path());
        adjust(&mut config);
        let mut journal = actor_bank::journal::JournalConfig::new(&config.data_dir);
        journal.snapshot_records_interval = config.snapshot_records_interval;
        journal.client_retention = config.client_retention;
        adjust_journal(&mut journal);
        self.server = Some(RunningServer::start_with_journal(config, journal).unwrap());
    }

    /// The committed account of `card`, which must exist.
    pub fn committed_account(&self, card: u64) -> actor_bank::ledger::Account {
        self.running()
            .bank()
            .storage()
            .committed_account(card)
            .expect("no committed account")
    }

    /// The committed balance of `card` (None when it has no account).
    pub fn committed_balance(&self, card: u64) -> Option<u64> {
        self.running().bank().balance(card)
    }
}

/// Waits (polling, at most 10 s) until `condition` holds; panics naming `what` otherwise. Not a
/// timing assertion: the limit only keeps a broken server from hanging the test.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The address in a line `bank-server` prints on standard output, `bank-server WHAT ADDRESS`
/// (`what` is `listening on` or `metrics on`); None for any other line.
pub fn reported_address(line: &str, what: &str) -> Option<String> {
    let address = line
        .strip_prefix("bank-server ")?
        .strip_prefix(what)?
        .trim();
    address
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|address| address.to_string())
}

/// Helpers for the durability tests: valid record streams, the journal's files on disk, and the
/// real `bank-server` binary run as a child process.
pub mod durability {
    use actor_bank::journal::format::{self, Parsed};
    use actor_bank::journal::{Journal, JournalConfig};
    use actor_bank::ledger::{self, Decision, Event, Ledger, Lsn, Record};
    use actor_bank::protocol::{Card, RequestId};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{SystemTime, UNIX_EPOCH};

    /// Milliseconds since the Unix epoch (records carry it; snapshots forget clients idle for a
    /// day, so records must carry a recent time for snapshot and replay to agree).
    pub fn now_unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    /// The pure bank: decides events with the ledger rules and keeps every record it produced.
    #[derive(Clone, Default)]
    pub struct Model {
        pub ledger: Ledger,
        pub records: Vec<Record>,
        sequences: HashMap<u64, u64>,
    }

    impl Model {
        /// Decides `event` on `card` for `client`'s next request; returns the record if the
        /// decision changes the state (refusals of unknown cards are answers, not records).
        pub fn step(&mut self, client: u64, card: Card, event: Event) -> Option<Record> {
            let sequence = self.sequences.entry(client).or_insert(0);
            *sequence += 1;
            let request = RequestId {
                client,
                sequence: *sequence,
            };
            let account = self.ledger.accounts.get(&card);
            let at = ledger::At {
                unix_ms: now_unix_ms(),
                business_day: 0,
            };
            match ledger::decide(
                account,
                card,
                request,
                event,
                at,
                &ledger::Policy::default(),
            ) {
                Decision::Record(record) => {
                    let lsn = self.ledger.applied_lsn + 1;
                    self.ledger.apply(lsn, &record).unwrap();
                    self.records.push(record.clone());
                    Some(record)
                }
                Decision::Answer(_) => None,
            }
        }

        /// This model as the releases before business days wrote and read it back: every record
        /// converted from its old layout ([`record_v1`]), the ledger replayed from them.
        pub fn in_old_layout(&self) -> Model {
            let records: Vec<Record> = self
                .records
                .iter()
                .map(|record| Record::from(record_v1(record)))
                .collect();
            Model {
                ledger: replay(&records),
                records,
                sequences: self.sequences.clone(),
            }
        }

        /// The state after the first `count` records.
        pub fn ledger_after(&self, count: usize) -> Ledger {
            replay(&self.records[..count])
        }
    }

    /// `ledger` as the first release kept it: one window per client id, whatever the principal
    /// (a client's windows under several principals are merged, in sequence order).
    pub fn first_release_ledger(ledger: &Ledger) -> ledger::LedgerV1 {
        let mut old = ledger::LedgerV1 {
            applied_lsn: ledger.applied_lsn,
            accounts: ledger::accounts_v2(&ledger.accounts),
            money_in: ledger.money_in,
            money_out: ledger.money_out,
            ..ledger::LedgerV1::default()
        };
        for clients in ledger.clients.values() {
            for (client, window) in &clients.windows {
                let merged = old.clients.entry(*client).or_default();
                merged.highest = merged.highest.max(window.highest);
                merged.last_used_unix_ms = merged.last_used_unix_ms.max(window.last_used_unix_ms);
                merged
                    .completed
                    .extend(window.completed.iter().map(ledger::CompletedV1::from));
                merged
                    .completed
                    .make_contiguous()
                    .sort_by_key(|done| done.sequence);
            }
        }
        old
    }

    /// Offsets, from a record's start, of a byte in each of its fields (both ends of the position,
    /// body length, body CRC and header CRC; the body's first, middle and last byte), for a record
    /// whose body is `body_bytes` long: where bit flips test every field.
    pub fn record_field_offsets(body_bytes: usize) -> [usize; 11] {
        [
            0,
            3,
            4,
            11,
            12,
            15,
            16,
            19,
            20,
            20 + body_bytes / 2,
            20 + body_bytes - 1,
        ]
    }

    /// The ledger the pure rules give for `records` applied from position 1.
    pub fn replay(records: &[Record]) -> Ledger {
        let mut ledger = Ledger::default();
        for (index, record) in records.iter().enumerate() {
            ledger.apply(index as Lsn + 1, record).unwrap();
        }
        ledger
    }

    /// An opening event.
    pub fn opened(holder: &str, initial_balance: u64) -> Event {
        Event::AccountOpened {
            holder: holder.into(),
            // A stand-in: these tests never check a PIN, so no real hashing is needed.
            pin_hash: actor_bank::pin::PinHash {
                memory_kib: 8,
                iterations: 1,
                salt: [holder.len() as u8; actor_bank::pin::SALT_BYTES],
                hash: [holder.bytes().next().unwrap_or(0); actor_bank::pin::HASH_BYTES],
            },
            initial_balance,
        }
    }

    /// A model with `count` records: three accounts opened, then a deterministic mix of
    /// withdrawals, deposits and PIN attempts from three clients.
    pub fn standard_model(count: usize) -> Model {
        let mut model = Model::default();
        let cards: [Card; 3] = [11, 22, 33];
        for (index, card) in cards.iter().enumerate() {
            if model.records.len() < count {
                model.step(1, *card, opened(&format!("holder{index}"), 1_000));
            }
        }
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        while model.records.len() < count {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let pick = state >> 33;
            let card = cards[(pick % 3) as usize];
            let client = 1 + (pick >> 2) % 3;
            let amount = 1 + (pick >> 4) % 400;
            let event = match (pick >> 12) % 5 {
                0 | 1 => Event::Withdrawal { amount },
                2 | 3 => Event::Deposit { amount },
                _ => Event::PinAttempt {
                    correct: !(pick >> 20).is_multiple_of(3),
                },
            };
            model.step(client, card, event);
        }
        model
    }

    /// A journal configuration on `directory` with a snapshot every `interval` records.
    pub fn journal_config(directory: &Path, interval: u64) -> JournalConfig {
        let mut config = JournalConfig::new(directory);
        config.snapshot_records_interval = interval;
        config
    }

    /// Appends `records` one batch at a time (a batch per `batch` records), waiting for each.
    pub fn append_all(journal: &Journal, records: &[Record], batch: usize) {
        for chunk in records.chunks(batch.max(1)) {
            let mut last = 0;
            for record in chunk {
                last = journal.append(record.clone()).unwrap();
            }
            futures::executor::block_on(journal.wait_durable(last)).unwrap();
        }
    }

    /// A standard model of `count` records written to a new directory (snapshots every
    /// `interval` records), with the directory.
    pub fn written_journal(count: usize, interval: u64) -> (Model, tempfile::TempDir) {
        let model = standard_model(count);
        let directory = tempfile::tempdir().unwrap();
        write_journal(directory.path(), &model.records, interval);
        (model, directory)
    }

    /// Writes `records` into a fresh journal in `directory` (a snapshot every `interval`) and
    /// closes it.
    pub fn write_journal(directory: &Path, records: &[Record], interval: u64) {
        let journal = Journal::open(journal_config(directory, interval)).unwrap();
        append_all(&journal, records, 1);
        journal.close();
    }

    /// The record the first release wrote when it opened `card` with an argon2id hash of
    /// `pin_text` at `cost` (the release before PIN keys), to build its data directories.
    pub fn legacy_opening(
        card: Card,
        pin_text: &str,
        cost: actor_bank::pin::PinHashCost,
    ) -> Record {
        let event = Event::AccountOpened {
            holder: "Mitra".into(),
            pin_hash: actor_bank::pin::hash(pin_text, cost).unwrap(),
            initial_balance: 700,
        };
        let request = RequestId {
            client: 0,
            sequence: card,
        };
        let at = ledger::At {
            unix_ms: 1,
            business_day: 0,
        };
        match ledger::decide(None, card, request, event, at, &ledger::Policy::default()) {
            Decision::Record(record) => record,
            Decision::Answer(outcome) => panic!("not opened: {outcome:?}"),
        }
    }

    /// `record` as the releases before business days and references wrote it: a code and a
    /// balance as its outcome.
    pub fn record_v1(record: &Record) -> ledger::RecordV1 {
        ledger::RecordV1 {
            request: record.request,
            card: record.card,
            at_unix_ms: record.at_unix_ms,
            event: record.event.clone(),
            outcome: ledger::OutcomeV1 {
                status: record.outcome.status,
                balance: record.outcome.balance,
            },
        }
    }

    /// Appends the journal's frame around `body` at position `lsn`: body length, position,
    /// header CRC, body CRC, then the body.
    pub fn frame_body(lsn: Lsn, body: &[u8], buffer: &mut Vec<u8>) {
        let mut header = Vec::with_capacity(format::RECORD_HEADER_BYTES);
        header.extend_from_slice(&(body.len() as u32).to_be_bytes());
        header.extend_from_slice(&lsn.to_be_bytes());
        header.extend_from_slice(&format::checksum(&header).to_be_bytes());
        header.extend_from_slice(&format::checksum(body).to_be_bytes());
        buffer.extend_from_slice(&header);
        buffer.extend_from_slice(body);
    }

    /// Writes `records` from position `first` as one segment with the record bodies of the
    /// releases before business days (unmarked [`ledger::RecordV1`] bodies): in the first
    /// release's segment format (`legacy`, no seals) or in today's (one sealed batch, no
    /// predecessor, grown by whole steps). Returns the segment's path.
    pub fn write_segment_of_old_records(
        directory: &Path,
        first: Lsn,
        records: &[Record],
        legacy: bool,
    ) -> PathBuf {
        let mut bytes = if legacy {
            format::segment_header_legacy(first)
        } else {
            format::segment_header(format::SegmentRef::new(first), None)
        };
        let start = bytes.len();
        for (index, record) in records.iter().enumerate() {
            let body = actor_bank::codec::encode_stored(&record_v1(record)).unwrap();
            frame_body(first + index as Lsn, &body, &mut bytes);
        }
        if !legacy && !records.is_empty() {
            let frames = format::checksum(&bytes[start..]);
            let last = first + records.len() as Lsn - 1;
            format::encode_seal(frames, first, last, &mut bytes);
            // Today's segments grow by whole steps, zeros ahead of the records.
            let step = actor_bank::journal::files::SEGMENT_GROWTH_BYTES as usize;
            bytes.resize(bytes.len().next_multiple_of(step), 0);
        }
        let path = directory.join(format::segment_name(first));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// A copy of the committed ledger of `journal`.
    pub fn committed(journal: &Journal) -> Ledger {
        journal.with_committed(|ledger| ledger.clone())
    }

    /// The segment files of `directory`, oldest first.
    pub fn segments(directory: &Path) -> Vec<PathBuf> {
        files_named(directory, "journal-", ".log")
    }

    /// The snapshot files of `directory`, oldest first.
    pub fn snapshots(directory: &Path) -> Vec<PathBuf> {
        files_named(directory, "snapshot-", ".snap")
    }

    fn files_named(directory: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.file_name().unwrap().to_string_lossy();
                name.starts_with(prefix) && name.ends_with(suffix)
            })
            .collect();
        found.sort();
        found
    }

    /// Where each record of a segment's bytes starts and ends, with its position and record.
    pub struct Span {
        pub lsn: Lsn,
        pub start: usize,
        pub end: usize,
        pub record: Record,
    }

    /// The whole records of a segment file, in order (batch seals skipped), up to the first thing
    /// that is neither.
    pub fn record_spans(path: &Path) -> Vec<Span> {
        let bytes = std::fs::read(path).unwrap();
        let mut spans = Vec::new();
        let mut offset = format::SEGMENT_HEADER_BYTES;
        loop {
            match format::parse_record(&bytes, offset) {
                Parsed::Record { lsn, record, end } => {
                    spans.push(Span {
                        lsn,
                        start: offset,
                        end,
                        record,
                    });
                    offset = end;
                }
                // A batch's seal follows its records.
                Parsed::Seal { end, .. } => offset = end,
                _ => return spans,
            }
        }
    }

    /// Copies the files of `from` into `to`.
    pub fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// Flips one bit of the byte at `offset` of `path`.
    pub fn flip_bit(path: &Path, offset: usize, bit: u8) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[offset] ^= 1 << bit;
        std::fs::write(path, bytes).unwrap();
    }

    /// The path of the `bank-server` binary Cargo built for the integration tests.
    pub fn server_binary() -> &'static str {
        env!("CARGO_BIN_EXE_bank-server")
    }

    /// The `bank-server` binary running as a child process.
    pub struct BankProcess {
        pub child: Child,
        pub address: String,
        /// The address it serves metrics on, as it reported it (with `--metrics-listen`).
        pub metrics: Option<String>,
    }

    impl BankProcess {
        /// Starts `bank-server` on `data_dir` and `127.0.0.1:port` with operator token `token`
        /// and cheap PIN hashes, and waits until it says it listens. Port 0 lets the server bind
        /// any free port; the address it reports is read back from its ready line. Its output is
        /// appended to `log`. Panics if the process exits before it listens.
        pub fn start(data_dir: &Path, port: u16, token: &str, log: &Path) -> BankProcess {
            Self::start_with_args(data_dir, port, token, log, &[])
        }

        /// The command line of [`BankProcess::start`], with `extra` flags appended.
        pub fn command(data_dir: &Path, port: u16, token: &str, extra: &[&str]) -> Command {
            let mut command = Command::new(server_binary());
            command
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(data_dir)
                .arg("--operator-token")
                .arg(token)
                .args(["--pin-hash-memory-kib", "8", "--pin-hash-iterations", "1"])
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null());
            command
        }

        /// Like [`BankProcess::start`], with `extra` flags.
        pub fn start_with_args(
            data_dir: &Path,
            port: u16,
            token: &str,
            log: &Path,
            extra: &[&str],
        ) -> BankProcess {
            let log_file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap();
            let mut child = Self::command(data_dir, port, token, extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::from(log_file.try_clone().unwrap()))
                .spawn()
                .unwrap();
            // The binary prints its ready line on stdout (and, depending on the build, its logs
            // too): keep draining stdout into the log so the child never blocks on a full pipe.
            let stdout = child.stdout.take().unwrap();
            let (ready, on_ready) = std::sync::mpsc::channel::<(String, Option<String>)>();
            std::thread::spawn(move || {
                let mut log_file = log_file;
                let mut ready = Some(ready);
                // The metrics line, when there is one, comes before the listening line.
                let mut metrics = None;
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(log_file, "{line}");
                    if let Some(address) = super::reported_address(&line, "metrics on") {
                        metrics = Some(address);
                    } else if let Some(address) = super::reported_address(&line, "listening on") {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send((address, metrics.take()));
                        }
                    }
                }
            });
            let Ok((address, metrics)) = on_ready.recv() else {
                let status = child.wait().unwrap();
                let output = std::fs::read_to_string(log).unwrap_or_default();
                panic!("bank-server exited ({status}) before listening:\n{output}");
            };
            BankProcess {
                child,
                address,
                metrics,
            }
        }

        /// The port the server listens on (to restart a successor on the same address).
        pub fn port(&self) -> u16 {
            self.address.rsplit(':').next().unwrap().parse().unwrap()
        }

        /// SIGKILL: no shutdown, no flush, nothing.
        pub fn kill(mut self) {
            self.child.kill().unwrap();
            self.child.wait().unwrap();
        }
    }

    impl Drop for BankProcess {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- Helpers added for the hardening suites (hostile input, overload, slow clients). ----

/// How the server ended a connection, as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// A Goodbye with this reason, then the connection closed.
    Goodbye(String),
    /// Closed without a Goodbye.
    Closed,
    /// Reset without a Goodbye (the server closed with bytes from the client still unread, so
    /// the operating system resets the connection and what was in flight may be lost).
    Reset,
    /// Still open when the wait ended.
    StillOpen,
}

impl Ending {
    /// True when the server ended the connection, whichever way.
    pub fn ended(&self) -> bool {
        *self != Ending::StillOpen
    }
}

/// The complete frames at the front of `bytes`, decoded (panics on one that does not decode:
/// the server must only ever send valid messages); the bytes of a partial frame are left.
pub fn decode_server_frames(bytes: &mut Vec<u8>) -> Vec<ServerMessage> {
    let mut messages = Vec::new();
    loop {
        if bytes.len() < 4 {
            return messages;
        }
        let length = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if bytes.len() < 4 + length {
            return messages;
        }
        let message = actor_bank::codec::decode_wire(&bytes[4..4 + length])
            .unwrap_or_else(|error| panic!("the server sent an undecodable frame: {error}"));
        messages.push(message);
        bytes.drain(..4 + length);
    }
}

impl RawConnection {
    /// Reads until the server closes the connection, waiting at most `within`. Returns the
    /// messages that came and how the connection ended.
    pub async fn ending(&mut self, within: Duration) -> (Vec<ServerMessage>, Ending) {
        let mut bytes = Vec::new();
        let mut messages = Vec::new();
        let mut buffer = [0u8; 4096];
        let end = tokio::time::timeout(within, async {
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) => return false,
                    Ok(count) => {
                        bytes.extend_from_slice(&buffer[..count]);
                        messages.extend(decode_server_frames(&mut bytes));
                    }
                    Err(_) => return true,
                }
            }
        })
        .await;
        let goodbye = messages.iter().find_map(|message| match message {
            ServerMessage::Goodbye(goodbye) => Some(goodbye.reason.clone()),
            _ => None,
        });
        let ending = match (end, goodbye) {
            (Err(_), _) => Ending::StillOpen,
            (Ok(_), Some(reason)) => Ending::Goodbye(reason),
            (Ok(false), None) => Ending::Closed,
            (Ok(true), None) => Ending::Reset,
        };
        (messages, ending)
    }
}

/// A `Hello` for this build's protocol version, as a frame.
pub fn hello_frame() -> Vec<u8> {
    encode_frame(&ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
    }))
    .unwrap()
}

/// The bytes of a hex dump's lines as the docs write them: hex pairs, then optional commentary
/// after a `|`; `what` names the dump in the panic a stray token causes.
pub fn hex_dump_bytes(lines: &[String], what: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        let hex = line.split('|').next().unwrap_or_default();
        for token in hex.split_whitespace() {
            let byte = (token.len() == 2)
                .then(|| u8::from_str_radix(token, 16).ok())
                .flatten()
                .unwrap_or_else(|| {
                    panic!("{what}: {token:?} is not a hex byte (put commentary after a |)")
                });
            bytes.push(byte);
        }
    }
    bytes
}

/// Sends every log line of this test process, at every level with span events, to the returned
/// capture (once per process: it installs the global subscriber).
pub fn capture_all_logs() -> Capture {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(
            tracing_subscriber::fmt::format::FmtSpan::NEW
                | tracing_subscriber::fmt::format::FmtSpan::CLOSE,
        )
        .with_ansi(false)
        .without_time()
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    capture
}

/// A swarm against the real `bank-server` binary on `data_dir`, SIGKILLed and restarted under
/// load every 1.5 s: the first server binds a port of its own choosing and reports it, its
/// successors are started on that address. The server gets `token` as its operator token, the
/// cheapest PIN hash and `extra_args`; the caller sets the load.
pub fn kill_9_restart_swarm(
    data_dir: &std::path::Path,
    token: &str,
    extra_args: &str,
) -> actor_bank::swarm::SwarmConfig {
    let command = format!(
        "{} --listen {{listen}} --data-dir {} --operator-token {token} --pin-hash-memory-kib 8 --pin-hash-iterations 1 {extra_args}",
        env!("CARGO_BIN_EXE_bank-server"),
        data_dir.display()
    );
    let mut config = actor_bank::swarm::SwarmConfig::new(Some("127.0.0.1:0".into()));
    config.operator_token = token.into();
    config.server_command = Some(command);
    config.chaos_restart = Some(Duration::from_millis(1_500));
    config
}
