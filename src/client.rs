//! The client library: what the `atm` binary, the swarm and the tests use to talk to the server.
//!
//! A [`Client`] keeps one connection, reconnecting with exponential backoff when it breaks. Every
//! call carries a [`RequestId`] (this client's id and the next sequence number, or one given by the
//! caller) and is retried *with the same id* after a timeout, a dropped connection or a `busy` /
//! `unavailable` answer, until a definite reply arrives. The server's memory of completed requests
//! turns those retries into exactly-once execution.
//!
//! Retries stop at [`ClientConfig::outcome_deadline`], and never later than half the client
//! retention the server announces in its `Welcome`; the call then fails with
//! [`ClientError::OutcomeUnknown`]. The deadline is far shorter than the time the server remembers
//! an idle client (24 hours by default), and the client has only one request in flight, well inside
//! the server's window of [`crate::ledger::REQUEST_WINDOW`] sequence numbers, so every retry the
//! library sends is one the server still recognises.
//!
//! After a reconnect the connection is no longer logged in; the client verifies the card again
//! (with a fresh request id) before re-sending an account operation. The same happens when the
//! server answers `not_logged_in` on a connection this client had verified (another Verify on the
//! connection, a duplicated one say, logged it out in between): the client verifies again and
//! re-sends the request with the same id, as docs/PROTOCOL.md section 7 advises.
//!
//! In cluster mode a node answers `moved` for an account whose partition another node serves,
//! naming that node's address. The client then connects there (preferring it to the seeds until
//! a connection to it fails, when it falls back to the next seed), verifies the card again if the
//! request needs it, and repeats the request with the same id, at once and without a backoff.
//! After [`REDIRECTS_MAX`] redirects in a row the call fails with
//! [`ClientError::TooManyRedirects`], which carries the last `moved` reply; the request did not
//! run, as with `unavailable`.
//!
//! Client-side faults ([`ClientConfig::faults`]) are decided by [`crate::faults::hits`] from the
//! seed, the request id and how many times this client has sent that id before, so a client with
//! a fixed id and a fixed seed loses the same messages on every run.
//!
//! How long an attempt waits and how long the client pauses between attempts adapt to the
//! server, as TCP's retransmission timer does: see [`rto`].
//!
//! With [`ClientConfig::tls`] set the connection is a TLS session (see [`tls`]: the CA bundle the
//! server's certificate must chain to, the name it must carry, an optional client certificate);
//! nothing else changes, and a failed TLS handshake is retried like a refused connection.
//!
//! Each operation's request, the reply body it expects and its `Client` method are in [`ops`];
//! this module only sends requests and retries them, whatever they are. Its one random choice,
//! a client's ids when none are given, is drawn from a seed by [`client_ids`].

pub mod iso8583;
pub mod ops;
pub mod rto;
pub mod tls;

pub use ops::reply_balance;

use crate::codec::{CodecError, FrameCodec, FRAME_BYTES_LIMIT};
use crate::faults::{FaultKind, FaultPlan};
use crate::protocol::{
    Body, Card, ClientMessage, Hello, Operation, Reply, Request, RequestId, ServerMessage, Status,
    Welcome, ADDRESS_BYTES_MAX, PROTOCOL_VERSION,
};
use futures::{SinkExt, StreamExt};
use rand::Rng;
use rto::{RetryLimits, RetryTimer};
use std::time::Duration;
use tls::{TlsSettings, Transport};
use tokio::time::Instant;
use tokio_util::codec::Framed;

/// The shortest wait for a reply, even when the deadline is nearer than that.
const ATTEMPT_TIMEOUT_MIN: Duration = Duration::from_millis(100);

/// Mixed into a client's id to make the id its automatic re-logins use.
const RELOGIN_CLIENT_TAG: u64 = 0x5245_4c4f_4749_4e21;

/// Mixed into a client's id to seed the random spread of its backoff.
const JITTER_SEED_TAG: u64 = 0x4a49_5454_4552_2121;

/// The most `moved` replies in a row one call follows; the next one ends the call with
/// [`ClientError::TooManyRedirects`]. A cluster's partition has one owner, so one redirect
/// normally suffices; a few more cover an ownership that moves while the client follows it, and
/// the bound ends a loop between nodes that disagree.
pub const REDIRECTS_MAX: u32 = 4;

/// Connections to other nodes a client keeps open after a `moved` took it elsewhere, so that
/// going back to a node (its next account is served there) reuses the connection instead of
/// opening one: an ATM over a cluster moves between nodes with its cards. The oldest is closed
/// past it.
pub const PARKED_CONNECTIONS_MAX: usize = 8;

/// Default of [`ClientConfig::attempt_timeout`]: RFC 6298's initial and least retransmission
/// timeout.
pub const ATTEMPT_TIMEOUT_FLOOR_DEFAULT: Duration = Duration::from_secs(1);

/// Default of [`ClientConfig::attempt_timeout_max`]: a third of the default outcome deadline, so
/// even at the cap a call makes several attempts.
pub const ATTEMPT_TIMEOUT_MAX_DEFAULT: Duration = Duration::from_secs(10);

/// How a client behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's address (`host:port`), or several separated by commas: seeds the client
    /// fails over between (the next one after a connection cannot be opened), as it must when
    /// the node serving it dies and a standby takes over (docs/CLUSTER.md).
    pub server: String,
    /// This client's id, the first half of every request id. Drawn from a seed ([`client_ids`])
    /// unless given.
    pub client_id: u64,
    /// The client id of this client's automatic re-logins (see [`Client`]). Drawn from the same
    /// seed unless given;
    /// tests fix it so that every request id, and so every injected fault, is the same on every
    /// run. Two processes sharing `client_id` (one taking over from the other with
    /// [`Client::resume_after`]) must not share it.
    pub relogin_client_id: u64,
    /// The shortest time one attempt waits for its reply (or for the handshake) before the
    /// connection is dropped and the request re-sent, and the wait before any round trip has
    /// been measured. Above it the wait follows the measured round trip and doubles after each
    /// failed attempt ([`rto`]).
    pub attempt_timeout: Duration,
    /// The longest time one attempt waits, however slow the server or however many attempts
    /// failed.
    pub attempt_timeout_max: Duration,
    /// How long a call keeps retrying before it reports [`ClientError::OutcomeUnknown`].
    pub outcome_deadline: Duration,
    /// First pause between attempts; doubles (with a random spread) each time up to
    /// `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest pause between attempts.
    pub backoff_max: Duration,
    /// Client-side faults (`drop-request`, `drop-reply`, `seed`) for testing the server.
    pub faults: FaultPlan,
    /// Speak TLS to a server that has it ([`TlsSettings::load`] reads the files); `None` for
    /// plain TCP.
    pub tls: Option<TlsSettings>,
}

impl ClientConfig {
    /// Defaults for a server at `server`, with client ids drawn from a fresh seed
    /// ([`entropy_seed`]).
    pub fn new(server: impl Into<String>) -> Self {
        ClientConfig::seeded(server, entropy_seed())
    }

    /// Defaults for a server at `server`, with the client ids drawn from `seed`
    /// ([`client_ids`]): one seed gives one pair of ids on every run.
    pub fn seeded(server: impl Into<String>, seed: u64) -> Self {
        let (client_id, relogin_client_id) = client_ids(seed);
        ClientConfig {
            server: server.into(),
            client_id,
            relogin_client_id,
            attempt_timeout: ATTEMPT_TIMEOUT_FLOOR_DEFAULT,
            attempt_timeout_max: ATTEMPT_TIMEOUT_MAX_DEFAULT,
            outcome_deadline: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(1),
            faults: FaultPlan::default(),
            tls: None,
        }
    }
}

/// A client id and the id of its automatic re-logins, drawn from `seed`: the one place a client's
/// ids are chosen when none are given.
pub fn client_ids(seed: u64) -> (u64, u64) {
    let mut generator = crate::clock::seeded(seed);
    let client_id = generator.gen_range(1..u64::MAX);
    let relogin_client_id = generator.gen_range(1..u64::MAX) ^ RELOGIN_CLIENT_TAG;
    (client_id, relogin_client_id)
}

/// A seed from the operating system's randomness, for a process given none: the one place the
/// client library draws chance that is not seeded. It is logged (at debug level), so a run can
/// be repeated with [`ClientConfig::seeded`].
pub fn entropy_seed() -> u64 {
    let seed = rand::random();
    tracing::debug!(seed, "client ids drawn from a fresh seed");
    seed
}

/// Why a call gave no definite reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Retries ran out before a definite reply: the request may or may not have been executed.
    /// Retrying it later with the same id is safe while the server still remembers the client.
    #[error("outcome of request {id} unknown after {attempts} attempts: {last_error}")]
    OutcomeUnknown {
        /// The request.
        id: RequestId,
        /// How many times it was sent (or tried).
        attempts: u32,
        /// What went wrong last.
        last_error: String,
    },
    /// The server refused the connection for good (for example an unsupported protocol version).
    #[error("the server refused: {0}")]
    Refused(String),
    /// The card could not be verified again after a reconnect.
    #[error("lost the login after a reconnect: the server answered {0}")]
    LoginLost(Status),
    /// The nodes answered `moved` more than [`REDIRECTS_MAX`] times in a row: they disagree on
    /// who serves the account. Nothing ran (treat it as `unavailable`); the same id may be tried
    /// again later.
    #[error(
        "request {id} redirected {redirects} times in a row, last to {}, and moved again: \
         treated as unavailable",
        moved_address(reply).unwrap_or("an unnamed node")
    )]
    TooManyRedirects {
        /// The request.
        id: RequestId,
        /// The last `moved` reply (to the request, or to the Verify that re-logged in first).
        reply: Reply,
        /// How many redirects were followed before it.
        redirects: u32,
    },
}

/// The address a `moved` reply names, if it is one with a usable address (not empty, not longer
/// than [`ADDRESS_BYTES_MAX`]).
pub fn moved_address(reply: &Reply) -> Option<&str> {
    match &reply.body {
        Body::Moved { address }
            if reply.status == Status::Moved
                && !address.trim().is_empty()
                && address.len() <= ADDRESS_BYTES_MAX =>
        {
            Some(address.trim())
        }
        _ => None,
    }
}

/// What a client counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Requests sent again with the same id.
    pub retries: u64,
    /// Connections opened.
    pub connections: u64,
    /// Faults injected on this side.
    pub requests_dropped: u64,
    /// Replies discarded on this side.
    pub replies_dropped: u64,
    /// `moved` replies followed to the node they named.
    pub redirects: u64,
}

struct Connection {
    framed: Framed<Box<dyn Transport>, FrameCodec<ServerMessage, ClientMessage>>,
    welcome: Welcome,
    /// The address it was opened to.
    address: String,
    /// The card verified on this connection.
    logged_in: Option<Card>,
}

/// What one attempt came to.
enum Attempt {
    /// A reply (maybe `busy`).
    Reply(Reply),
    /// No reply; retry on a new connection.
    Retry(String),
}

/// A connection to the bank that retries with the same request id until it gets a definite reply.
pub struct Client {
    config: ClientConfig,
    connection: Option<Connection>,
    next_sequence: u64,
    /// The card and PIN last verified, to verify again after a reconnect.
    login: Option<(Card, String)>,
    /// The client id and next sequence number of automatic re-logins. They have an id of their
    /// own so that any number of reconnects during one call never moves this client's window
    /// past the request being retried.
    relogin_client: u64,
    relogin_sequence: u64,
    /// The request being called and how many times it was sent before this attempt: what the
    /// client-side faults are drawn for (a re-login's Verify, always a new id, is attempt 0).
    current_attempt: Option<(RequestId, u32)>,
    /// The round-trip estimate and the backoff: how long to wait, how long to pause.
    timer: RetryTimer,
    /// The request being sent again after an attempt went unanswered. By Karn's rule its
    /// replies measure nothing (one may answer an earlier attempt); every other definite reply
    /// is a round-trip measurement.
    resent: Option<RequestId>,
    stats: ClientStats,
    /// The client retention the server announced last (kept across reconnects).
    announced_retention: Option<Duration>,
    /// Which of the server's seed addresses the next connection tries.
    seed: usize,
    /// The node a `moved` reply named: the next connections go there rather than to the seeds,
    /// until one cannot be opened.
    redirected_to: Option<String>,
    /// Connections to the nodes a `moved` took this client away from, oldest first (at most
    /// [`PARKED_CONNECTIONS_MAX`]): reused when a `moved` names their node again.
    parked: Vec<Connection>,
}

impl Client {
    /// A client; it connects on its first call.
    pub fn new(config: ClientConfig) -> Client {
        let relogin_client = config.relogin_client_id;
        let limits = RetryLimits {
            timeout_floor: config.attempt_timeout,
            timeout_cap: config.attempt_timeout_max,
            pause_initial: config.backoff_initial,
            pause_max: config.backoff_max,
        };
        let timer = RetryTimer::new(limits, config.client_id ^ JITTER_SEED_TAG);
        Client {
            config,
            connection: None,
            next_sequence: 1,
            login: None,
            relogin_client,
            relogin_sequence: 1,
            current_attempt: None,
            seed: 0,
            redirected_to: None,
            parked: Vec::new(),
            timer,
            resent: None,
            stats: ClientStats::default(),
            announced_retention: None,
        }
    }

    /// A client that has connected and completed the handshake.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut client = Client::new(config);
        let deadline = Instant::now() + client.config.outcome_deadline;
        loop {
            match client.connection().await {
                Ok(_) => return Ok(client),
                Err(Attempt::Reply(reply)) => return Err(ClientError::LoginLost(reply.status)),
                Err(Attempt::Retry(error)) if error.starts_with("refused:") => {
                    return Err(ClientError::Refused(error))
                }
                Err(Attempt::Retry(error)) => {
                    client.timer.failed();
                    let pause = client.timer.pause();
                    if Instant::now() + pause >= deadline {
                        return Err(ClientError::Refused(error));
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// This client's id.
    pub fn client_id(&self) -> u64 {
        self.config.client_id
    }

    /// What this client counted.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The smoothed round trip measured so far (see [`rto`]), once a reply was measured.
    pub fn smoothed_round_trip(&self) -> Option<Duration> {
        self.timer.smoothed_round_trip()
    }

    /// The limits the server announced on the current connection.
    pub fn welcome(&self) -> Option<&Welcome> {
        self.connection
            .as_ref()
            .map(|connection| &connection.welcome)
    }

    /// Continues numbering after `sequence`: a new process that takes over a client id uses this
    /// so its new requests never reuse a sequence number the id already used.
    pub fn resume_after(&mut self, sequence: u64) {
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
    }

    /// The id the next call will use (and reserves it).
    pub fn next_id(&mut self) -> RequestId {
        let id = RequestId {
            client: self.config.client_id,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        id
    }

    /// Sends `operation` with a new id until a definite reply arrives.
    pub async fn call(&mut self, operation: Operation) -> Result<Reply, ClientError> {
        let id = self.next_id();
        self.call_with_id(id, operation).await
    }

    /// Sends `operation` with the given id until a definite reply arrives. Calling it again with the
    /// same id and operation (even from another process) returns the same reply.
    pub async fn call_with_id(
        &mut self,
        id: RequestId,
        operation: Operation,
    ) -> Result<Reply, ClientError> {
        if id.client == self.config.client_id && id.sequence >= self.next_sequence {
            self.next_sequence = id.sequence + 1;
        }
        let started = Instant::now();
        let mut deadline = started + self.config.outcome_deadline;
        let mut attempts = 0;
        let mut redirects = 0;
        let mut last_error: String;
        loop {
            if attempts > 0 {
                self.stats.retries += 1;
            }
            self.current_attempt = Some((id, attempts));
            attempts += 1;
            let outcome = self.attempt(id, &operation, deadline).await;
            if !matches!(&outcome, Ok(Attempt::Reply(reply)) if reply.status == Status::Moved) {
                redirects = 0;
            }
            match outcome {
                Ok(Attempt::Reply(reply)) if reply.status == Status::Moved => {
                    if redirects >= REDIRECTS_MAX {
                        self.resent = None;
                        return Err(ClientError::TooManyRedirects {
                            id,
                            reply,
                            redirects,
                        });
                    }
                    if self.follow(&reply) {
                        redirects += 1;
                        // Nothing ran: repeat at once at the named node (its deadline still
                        // holds).
                        if Instant::now() < deadline {
                            continue;
                        }
                    } else {
                        self.timer.failed();
                    }
                    last_error = format!("server answered {}", reply.status);
                }
                Ok(Attempt::Reply(reply)) if self.lost_login(&operation, &reply) => {
                    last_error = format!("server answered {}", reply.status)
                }
                Ok(Attempt::Reply(reply)) if reply.status.is_definite() => {
                    self.resent = None;
                    self.remember_login(&operation, &reply);
                    return Ok(reply);
                }
                Ok(Attempt::Reply(reply)) => {
                    self.timer.failed();
                    last_error = format!("server answered {}", reply.status)
                }
                Ok(Attempt::Retry(error)) => {
                    self.timer.failed();
                    self.resent = Some(id);
                    self.connection = None;
                    last_error = error;
                }
                Err(error) => {
                    self.resent = None;
                    return Err(error);
                }
            }
            // Never retry for longer than half the time the server remembers this client: past
            // its retention the id would count as new and could run twice.
            if let Some(retention) = self.announced_retention {
                deadline = deadline.min(started + retention / 2);
            }
            let pause = self.timer.pause();
            if Instant::now() + pause >= deadline {
                self.resent = None;
                return Err(ClientError::OutcomeUnknown {
                    id,
                    attempts,
                    last_error,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Follows a `moved` reply: the next connection goes to the node it names (the current one is
    /// parked for a return to its node, without its verified card, which the next attempt there
    /// verifies again). False when
    /// the reply names no usable address; it is then retried like `busy`.
    fn follow(&mut self, reply: &Reply) -> bool {
        let Some(address) = moved_address(reply) else {
            return false;
        };
        tracing::debug!(id = %reply.id, address, "moved: following to the named node");
        self.redirected_to = Some(address.to_string());
        if let Some(mut connection) = self.connection.take() {
            // Kept for a return to that node; a Verify answered `moved` logged it out there, so
            // it is taken to have no verified card (the next use verifies again if it must).
            connection.logged_in = None;
            if self.parked.len() >= PARKED_CONNECTIONS_MAX {
                self.parked.remove(0);
            }
            self.parked.push(connection);
        }
        self.stats.redirects += 1;
        true
    }

    /// True when `reply` says the connection is not logged in although this client had verified
    /// it: something else on the connection (a duplicated Verify, say) logged it out. The
    /// connection is marked unverified, so the next attempt verifies again before it re-sends the
    /// request with the same id.
    fn lost_login(&mut self, operation: &Operation, reply: &Reply) -> bool {
        let Some((card, _)) = &self.login else {
            return false;
        };
        let Some(connection) = &mut self.connection else {
            return false;
        };
        if reply.status != Status::NotLoggedIn
            || !needs_login(operation)
            || connection.logged_in != Some(*card)
        {
            return false;
        }
        connection.logged_in = None;
        true
    }

    fn remember_login(&mut self, operation: &Operation, reply: &Reply) {
        match operation {
            Operation::Verify { card, pin } => {
                let approved = reply.status == Status::Approved;
                self.login = approved.then(|| (*card, pin.clone()));
                if let Some(connection) = &mut self.connection {
                    connection.logged_in = approved.then_some(*card);
                }
            }
            Operation::Logout => {
                self.login = None;
                if let Some(connection) = &mut self.connection {
                    connection.logged_in = None;
                }
            }
            // After a change, a re-login must present the new PIN.
            Operation::ChangePin { new_pin, .. } if reply.status == Status::Approved => {
                if let Some((_, pin)) = &mut self.login {
                    *pin = new_pin.clone();
                }
            }
            _ => {}
        }
    }

    /// One try: make sure there is a connection (logged in if the operation needs it), send, wait.
    async fn attempt(
        &mut self,
        id: RequestId,
        operation: &Operation,
        deadline: Instant,
    ) -> Result<Attempt, ClientError> {
        if let Err(failed) = self.connection().await {
            return match failed {
                Attempt::Retry(error) if error.starts_with("refused:") => {
                    Err(ClientError::Refused(error))
                }
                other => Ok(other),
            };
        }
        if needs_login(operation) {
            if let Some(outcome) = self.log_in_again(deadline).await? {
                return Ok(outcome);
            }
        }
        Ok(self.exchange(id, operation.clone(), deadline).await)
    }

    /// After a reconnect, verifies the remembered card again. `Some` is an attempt to report
    /// instead of sending the request.
    async fn log_in_again(&mut self, deadline: Instant) -> Result<Option<Attempt>, ClientError> {
        let Some((card, pin)) = self.login.clone() else {
            return Ok(None);
        };
        if self
            .connection
            .as_ref()
            .and_then(|connection| connection.logged_in)
            == Some(card)
        {
            return Ok(None);
        }
        let id = RequestId {
            client: self.relogin_client,
            sequence: self.relogin_sequence,
        };
        self.relogin_sequence += 1;
        match self
            .exchange(id, Operation::Verify { card, pin }, deadline)
            .await
        {
            Attempt::Reply(reply) if reply.status == Status::Approved => {
                if let Some(connection) = &mut self.connection {
                    connection.logged_in = Some(card);
                }
                Ok(None)
            }
            Attempt::Reply(reply) if reply.status.is_definite() => {
                Err(ClientError::LoginLost(reply.status))
            }
            other => Ok(Some(other)),
        }
    }

    /// Sends one request on the current connection and waits for its reply.
    async fn exchange(
        &mut self,
        id: RequestId,
        operation: Operation,
        deadline: Instant,
    ) -> Attempt {
        let faults = self.config.faults;
        let attempt = match self.current_attempt {
            Some((current, sent_before)) if current == id => sent_before,
            _ => 0,
        };
        let hits =
            |kind, probability| crate::faults::hits(faults.seed, kind, id, attempt, probability);
        if hits(FaultKind::DropRequest, faults.drop_request) {
            self.stats.requests_dropped += 1;
            return Attempt::Retry("request dropped (injected fault)".into());
        }
        let attempt_timeout = self.timer.timeout();
        let Some(connection) = &mut self.connection else {
            return Attempt::Retry("not connected".into());
        };
        let request = ClientMessage::Request(Request { id, operation });
        let sent = Instant::now();
        if let Err(error) = connection.framed.send(request).await {
            return Attempt::Retry(format!("send failed: {error}"));
        }
        // The last attempt before the deadline still gets a fair chance to hear back.
        let timeout = attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(ATTEMPT_TIMEOUT_MIN.min(attempt_timeout));
        let wait = async {
            loop {
                match connection.framed.next().await {
                    Some(Ok(ServerMessage::Reply(reply))) if reply.id == id => return Ok(reply),
                    Some(Ok(ServerMessage::Reply(_))) => continue,
                    Some(Ok(ServerMessage::Goodbye(goodbye))) => {
                        return Err(format!("server closed: {}", goodbye.reason))
                    }
                    Some(Ok(ServerMessage::Welcome(_))) => return Err("unexpected Welcome".into()),
                    Some(Err(error)) => return Err(format!("receive failed: {error}")),
                    None => return Err("connection closed".into()),
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(reply)) => {
                if reply.status.is_definite() && self.resent != Some(id) {
                    self.timer.measured(sent.elapsed());
                }
                if hits(FaultKind::DropReply, faults.drop_reply) {
                    self.stats.replies_dropped += 1;
                    return Attempt::Retry("reply dropped (injected fault)".into());
                }
                Attempt::Reply(reply)
            }
            Ok(Err(error)) => Attempt::Retry(error),
            Err(_) => Attempt::Retry(format!("no reply within {timeout:?}")),
        }
    }

    /// The current connection, opening one (with the handshake) if there is none.
    async fn connection(&mut self) -> Result<&mut Connection, Attempt> {
        if self.connection.is_none() {
            let seeds = seeds(&self.config.server);
            let server = match &self.redirected_to {
                Some(address) => address.as_str(),
                None => seeds[self.seed % seeds.len()],
            };
            if let Some(at) = self
                .parked
                .iter()
                .position(|parked| parked.address == server)
            {
                // A node this client was moved away from: its connection is still open.
                self.connection = Some(self.parked.remove(at));
                return self
                    .connection
                    .as_mut()
                    .ok_or(Attempt::Retry("not connected".into()));
            }
            let opened = open(server, self.config.tls.as_ref(), self.timer.timeout()).await;
            let connection = match opened {
                Ok(connection) => connection,
                Err(failed) => {
                    // The next attempt tries the next seed; a named node that cannot be reached
                    // is given up for the seeds too (the seed that named it would likely name it
                    // again, so the next one is tried).
                    self.redirected_to = None;
                    self.seed = self.seed.wrapping_add(1);
                    return Err(failed);
                }
            };
            self.stats.connections += 1;
            self.announced_retention = Some(Duration::from_secs(
                connection.welcome.client_retention_secs,
            ));
            self.connection = Some(connection);
        }
        self.connection
            .as_mut()
            .ok_or(Attempt::Retry("not connected".into()))
    }
}

/// The addresses a server setting names: one, or several separated by commas (spaces around
/// them ignored); never empty.
fn seeds(server: &str) -> Vec<&str> {
    let seeds: Vec<&str> = server
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .collect();
    if seeds.is_empty() {
        vec![server]
    } else {
        seeds
    }
}

/// Opens a connection (TLS included, when `tls` is given) and does the handshake. A `Goodbye` in
/// answer to the Hello is final (`refused:`), any other failure is worth retrying.
async fn open(
    server: &str,
    tls: Option<&TlsSettings>,
    timeout: Duration,
) -> Result<Connection, Attempt> {
    let handshake = async {
        let stream = tls::open_stream(server, tls).await?;
        let mut framed = Framed::new(stream, FrameCodec::new(FRAME_BYTES_LIMIT));
        framed
            .send(ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
            }))
            .await
            .map_err(|error: CodecError| format!("handshake failed: {error}"))?;
        match framed.next().await {
            Some(Ok(ServerMessage::Welcome(welcome))) => Ok(Connection {
                framed,
                welcome,
                address: server.to_string(),
                logged_in: None,
            }),
            Some(Ok(ServerMessage::Goodbye(goodbye)))
                if goodbye.reason.contains("protocol version") =>
            {
                Err(format!("refused: {}", goodbye.reason))
            }
            Some(Ok(ServerMessage::Goodbye(goodbye))) => {
                Err(format!("server closed: {}", goodbye.reason))
            }
            Some(Ok(other)) => Err(format!("handshake: unexpected {other:?}")),
            Some(Err(error)) => Err(format!("handshake failed: {error}")),
            None => Err("connection closed during the handshake".into()),
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result.map_err(Attempt::Retry),
        Err(_) => Err(Attempt::Retry(format!(
            "handshake took longer than {timeout:?}"
        ))),
    }
}

/// True for the operations that act on the verified card.
fn needs_login(operation: &Operation) -> bool {
    operation.needs_verified_card()
}
