//! Switch mode: many terminals multiplexed over a few pipelined connections, as an ATM switch
//! concentrates its terminals onto a few links to the bank.
//!
//! With [`SwarmConfig::connections`] set, the swarm opens that many connections (*lines*) and
//! puts [`SwarmConfig::in_flight`] terminals on each. A terminal is a swarm ATM in all but its
//! transport: its own client id, generator, mix, open holds and tallies, one request of its own
//! unanswered at a time, so the audit (every acknowledged operation applied exactly once, the
//! totals, the replays) applies unchanged. The terminals of a line send their requests on the
//! line's one connection without waiting for each other's replies: up to `in_flight` requests
//! are in flight on it at once, and the replies are matched to their requests by id, in
//! whatever order they come (docs/PROTOCOL.md, "Connection lifecycle").
//!
//! The bank's own protocol has one verified card per connection: an approved `Verify` sets it,
//! and every `Verify` clears it first. So a line serves one card at a time, in *rounds*: it
//! draws the round's card (as an ATM draws its next customer), verifies it with nothing else in
//! flight, then every terminal of the line does [`SwarmConfig::operations_per_card`] operations
//! of the mix on that card, all of them pipelined; when every terminal is done (each request
//! definite, or given up as unknown at the deadline), the line draws the next card and verifies
//! again. This is how a switch drives a host that authenticates a link rather than a message:
//! it keeps the link full with the traffic that link is authorised for, and re-authenticates
//! only when the traffic changes hands. A request is therefore only ever sent, and re-sent, on
//! a connection verified for its own card, so no retry can run under another card. (A switch
//! that carries the PIN in every message is the ISO 8583 door's design; the bincode door has no
//! such message.)
//!
//! Retries: a request with no definite reply within the attempt timeout (which doubles after
//! each attempt that timed out, up to the client library's cap) is sent again with the same id;
//! after a disconnect the first terminal to notice opens a new connection and verifies the
//! round's card before anything is re-sent. `not_logged_in` (the line's login lost) makes the
//! line verify again, and the request is re-sent with its id. `busy`, `unavailable` and `moved`
//! are retried after a pause (cluster redirects are not followed in switch mode). At the outcome
//! deadline the request counts as unknown, as on the ATM path. The injected client faults are
//! drawn as the client library draws them (seed, request id, attempt); a dropped request or
//! reply is noticed, as a real loss would be, only when the attempt times out.
//!
//! On the ISO 8583 door ([`SwarmConfig::front_door`]) there are no rounds: every 0200 carries
//! its card and PIN block, so a connection needs no verified card. A line is one acquirer
//! connection ([`IsoLine`]), signed on for every terminal on it (an 0800 without field 41), and
//! each of its `in_flight` terminals is an ISO 8583 ATM of the swarm (`src/swarm/iso.rs`) with
//! its own terminal id and trace numbers, one message of its own unanswered at a time, so up to
//! `in_flight` messages are in flight on the line at once; the door answers them in whatever
//! order they are done and the acquirer matches each reply to its request by (field 41,
//! field 11), which the door echoes (docs/ISO8583.md). A terminal that finds the connection
//! broken has the line open and sign on a new one (the others wait for it); its message is then
//! repeated, reversed or given up exactly as on a connection of its own. The terminals' sign-on
//! probes do not run in switch mode (a line is signed on as a whole).

use super::*;
use crate::client::iso8583::{Acquirer, Terminal as IsoTerminal};
use crate::codec::FrameCodec;
use crate::faults::FaultKind;
use crate::protocol::{ClientMessage, Hello, Request, ServerMessage, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Default of [`SwarmConfig::in_flight`]: the server's default `requests_in_flight_max`, so a
/// line is as full as a connection may be without its requests being answered `busy`.
pub const IN_FLIGHT_DEFAULT: usize = 64;

/// First pause after a `busy` or `unavailable` answer; it doubles up to
/// [`SWITCH_BACKOFF_MAX`].
const SWITCH_BACKOFF_INITIAL: Duration = Duration::from_millis(20);

/// Longest pause between attempts of one request.
const SWITCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Mixed into the swarm's seed to draw a line's generator and the client id of its Verifies.
const LINE_SEED_TAG: u64 = 0x5357_4954_4348_4c4e;

/// What the lines of a run counted, for the report.
#[derive(Default)]
pub(super) struct SwitchTally {
    /// The most requests seen in flight on one connection at once.
    pub(super) in_flight_max: AtomicUsize,
    /// Connections opened (the first of each line included).
    pub(super) connections_opened: AtomicU64,
    /// Approved Verifies of the lines (one per round, and one after each reconnect).
    pub(super) verifies: AtomicU64,
    /// Rounds run (in which a terminal started an operation): cards served one after another,
    /// on all lines.
    pub(super) rounds: AtomicU64,
}

impl SwitchTally {
    /// The tally as the report shows it.
    pub(super) fn snapshot(&self, connections: usize, in_flight: usize) -> SwitchCounts {
        SwitchCounts {
            connections,
            in_flight,
            in_flight_max_seen: self.in_flight_max.load(Ordering::Relaxed) as u64,
            connections_opened: self.connections_opened.load(Ordering::Relaxed),
            verifies: self.verifies.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
        }
    }
}

/// Runs every line until the run is over; returns every terminal's tallies.
pub(super) async fn run_switch(
    shared: &Arc<Shared>,
    connections: usize,
) -> Result<Vec<AtmResult>, String> {
    let lines: Vec<_> = (0..connections)
        .map(|index| {
            let shared = shared.clone();
            tokio::spawn(async move {
                match shared.iso8583.is_some() {
                    true => run_iso_line(shared, index as u64).await,
                    false => run_line(shared, index as u64).await,
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for line in lines {
        results.extend(
            line.await
                .map_err(|error| format!("a switch line failed: {error}"))?,
        );
    }
    Ok(results)
}

/// One line: its terminals, round after round, each round on one card.
async fn run_line(shared: Arc<Shared>, index: u64) -> Vec<AtmResult> {
    let in_flight = shared.config.in_flight.max(1);
    let seed = shared
        .config
        .seed
        .wrapping_mul(0x2545_f491_4f6c_dd1d)
        .wrapping_add(index)
        ^ LINE_SEED_TAG;
    let mut generator = crate::clock::seeded(seed);
    let line = Arc::new(Line::new(shared.clone(), index, generator.gen()));
    let mut terminals: Vec<Atm> = (0..in_flight as u64)
        .map(|terminal| {
            let number = index * in_flight as u64 + terminal;
            Atm::switched(shared.clone(), number, line.clone())
        })
        .collect();
    let zipf = (shared.config.skew > 0.0)
        .then(|| rand_distr::Zipf::new(shared.cards.len() as u64, shared.config.skew).ok())
        .flatten();
    let mut operations_on_card = 0;
    loop {
        let account = next_account(
            None,
            &mut operations_on_card,
            1,
            zipf.as_ref(),
            &mut generator,
            shared.cards.len(),
        );
        line.begin_round(account);
        let rounds = terminals
            .iter_mut()
            .map(|terminal| terminal.run_round(account));
        let worked = futures::future::join_all(rounds).await;
        if !worked.into_iter().any(|worked| worked) {
            break;
        }
        shared.switch.rounds.fetch_add(1, Ordering::Relaxed);
    }
    line.close();
    terminals.into_iter().map(Atm::finish).collect()
}

/// One ISO 8583 line: its terminals, each an ISO 8583 ATM of the swarm on the line's
/// connection, all running at once until the run is over.
async fn run_iso_line(shared: Arc<Shared>, index: u64) -> Vec<AtmResult> {
    let in_flight = shared.config.in_flight.max(1) as u64;
    let line = match IsoLine::new(shared.clone(), index) {
        Ok(line) => Arc::new(line),
        Err(error) => {
            let mut result = AtmResult::empty(0);
            result.unknown.push(format!("switch line {index}: {error}"));
            return vec![result];
        }
    };
    let terminals: Vec<_> = (0..in_flight)
        .map(|terminal| {
            let shared = shared.clone();
            let line = line.clone();
            let number = index * in_flight + terminal;
            tokio::spawn(async move { run_iso_terminal(shared, number, Some(line)).await })
        })
        .collect();
    let mut results = Vec::with_capacity(terminals.len());
    for terminal in terminals {
        match terminal.await {
            Ok(result) => results.push(result),
            Err(error) => {
                let mut result = AtmResult::empty(0);
                result
                    .unknown
                    .push(format!("switch line {index}: a terminal failed: {error}"));
                results.push(result);
            }
        }
    }
    // What the line's connections counted goes to its first terminal's tallies.
    if let Some(first) = results.first_mut() {
        let (sign_ons, unmatched) = line.close().await;
        *first.iso8583.entry("sign_ons").or_default() += sign_ons;
        *first.iso8583.entry("unmatched").or_default() += unmatched;
    }
    results
}

/// One ISO 8583 connection of the switch, shared by its terminals: signed on for all of them at
/// once (field 41 absent), and replaced, signed on again, when it breaks.
pub(super) struct IsoLine {
    shared: Arc<Shared>,
    /// The connection, replaced under this lock when it breaks (held while the new one opens
    /// and signs on, so one terminal reconnects and the others wait for it).
    acquirer: tokio::sync::Mutex<Option<Arc<Acquirer>>>,
    /// Makes the line's own network messages (their STANs, matched without field 41).
    network: parking_lot::Mutex<IsoTerminal>,
    /// Messages sent on the line and not answered (nor given up) yet.
    in_flight: AtomicUsize,
    /// Approved sign-ons of the line's connections.
    sign_ons: AtomicU64,
    /// Replies that came after their request was given up, on connections already replaced.
    unmatched: AtomicU64,
}

impl IsoLine {
    /// Line number `index` of the run's ISO 8583 door.
    fn new(shared: Arc<Shared>, index: u64) -> Result<IsoLine, String> {
        let door = shared
            .iso8583
            .clone()
            .ok_or("switch mode on the ISO 8583 door without a door")?;
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock::default());
        // The terminal id is never sent (network messages for the whole connection carry no
        // field 41); it only has to be valid.
        let network = IsoTerminal::new(
            SWARM_ACQUIRER,
            &format!("LINE{:04}", index % 10_000),
            clock,
            door.pins.clone(),
        )
        .map_err(|error| error.to_string())?;
        Ok(IsoLine {
            shared,
            acquirer: tokio::sync::Mutex::new(None),
            network: parking_lot::Mutex::new(network),
            in_flight: AtomicUsize::new(0),
            sign_ons: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
        })
    }

    /// The line's connection, signed on: the current one, or one opened and signed on now.
    pub(super) async fn acquirer(&self) -> Result<Arc<Acquirer>, String> {
        let mut slot = self.acquirer.lock().await;
        if let Some(acquirer) = slot.as_ref() {
            return Ok(acquirer.clone());
        }
        let address = self
            .shared
            .iso8583
            .as_ref()
            .map(|door| door.address.clone())
            .ok_or("no ISO 8583 door")?;
        let acquirer = Acquirer::connect(&address, self.shared.config.tls.as_ref())
            .await
            .map_err(|error| error.to_string())?;
        self.shared
            .switch
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let sign_on = self
            .network
            .lock()
            .network(crate::iso8583::network::SIGN_ON, true);
        let reply = acquirer
            .request(&sign_on, self.shared.config.attempt_timeout)
            .await
            .map_err(|error| format!("line sign-on: {error}"))?;
        if !reply.approved() {
            return Err(format!("line sign-on answered {}", reply.code()));
        }
        self.sign_ons.fetch_add(1, Ordering::Relaxed);
        let acquirer = Arc::new(acquirer);
        *slot = Some(acquirer.clone());
        Ok(acquirer)
    }

    /// Forgets `broken` (when it is still the line's connection), so the next message opens a
    /// new one; true when this call forgot it.
    pub(super) async fn broken(&self, broken: &Arc<Acquirer>) -> bool {
        let mut slot = self.acquirer.lock().await;
        if !slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, broken))
        {
            return false;
        }
        let unmatched = broken.counts().unmatched.load(Ordering::Relaxed);
        self.unmatched.fetch_add(unmatched, Ordering::Relaxed);
        *slot = None;
        true
    }

    /// Counts a message sent on the line, and the most seen at once.
    pub(super) fn sent(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .switch
            .in_flight_max
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a message answered or given up.
    pub(super) fn settled(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Closes the connection at the end of the run; returns the sign-ons and the unmatched
    /// replies of all the line's connections.
    async fn close(&self) -> (u64, u64) {
        if let Some(acquirer) = self.acquirer.lock().await.take() {
            let unmatched = acquirer.counts().unmatched.load(Ordering::Relaxed);
            self.unmatched.fetch_add(unmatched, Ordering::Relaxed);
        }
        (
            self.sign_ons.load(Ordering::Relaxed),
            self.unmatched.load(Ordering::Relaxed),
        )
    }
}

/// One connection of the switch and the card its current round serves.
pub(super) struct Line {
    shared: Arc<Shared>,
    /// Its number, for the report's messages.
    index: u64,
    /// The account of the round running now.
    card: parking_lot::Mutex<Option<usize>>,
    /// The connection, replaced under this lock when it breaks (held while the new one opens
    /// and verifies, so one terminal reconnects and the others wait for it).
    session: tokio::sync::Mutex<Option<Arc<Session>>>,
    /// The client id of the line's Verifies (never remembered, so any id serves).
    verify_client: u64,
    verify_sequence: AtomicU64,
    /// Requests sent on the line and not answered (nor given up) yet.
    in_flight: AtomicUsize,
}

/// One open connection of a line: the writer's queue, the requests waiting for replies, and the
/// card it verified.
pub(super) struct Session {
    sender: mpsc::UnboundedSender<ClientMessage>,
    inner: Arc<SessionInner>,
    /// The account verified on it.
    verified: parking_lot::Mutex<Option<usize>>,
    /// The client retention the server announced, which bounds how long a request is retried.
    retention: Duration,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

/// What a session's reader shares with its terminals.
struct SessionInner {
    /// The requests waiting for their replies, by id.
    pending: parking_lot::Mutex<HashMap<RequestId, oneshot::Sender<Reply>>>,
    /// Cancelled when the connection broke.
    closed: CancellationToken,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.inner.closed.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Line {
    fn new(shared: Arc<Shared>, index: u64, verify_client: u64) -> Line {
        Line {
            shared,
            index,
            card: parking_lot::Mutex::new(None),
            session: tokio::sync::Mutex::new(None),
            verify_client: verify_client | 1 << 62,
            verify_sequence: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// Starts a round on `account`: the next request verifies it first.
    fn begin_round(&self, account: usize) {
        *self.card.lock() = Some(account);
    }

    /// The account of the round running now.
    pub(super) fn card(&self) -> Option<usize> {
        *self.card.lock()
    }

    /// Closes the connection at the end of the run.
    fn close(&self) {
        if let Ok(mut session) = self.session.try_lock() {
            *session = None;
        }
    }

    /// A connection verified for the round's card: the current one, or (when it broke or is not
    /// verified for the card) one opened and verified now, before `deadline`.
    async fn session(&self, deadline: Instant) -> Result<Arc<Session>, String> {
        let account = self.card().ok_or("the line has no round")?;
        let mut slot = self.session.lock().await;
        let mut pause = SWITCH_BACKOFF_INITIAL;
        loop {
            let usable = slot
                .as_ref()
                .filter(|session| !session.inner.closed.is_cancelled());
            let verified = usable.and_then(|session| *session.verified.lock());
            let outcome = match usable {
                Some(session) if verified == Some(account) => return Ok(session.clone()),
                Some(session) => self.verify(session, account, deadline).await,
                None => match self.open().await {
                    Ok(session) => {
                        *slot = Some(Arc::new(session));
                        continue;
                    }
                    Err(error) => Err(error),
                },
            };
            let error = match outcome {
                Ok(()) => continue,
                Err(error) => error,
            };
            if error.starts_with("refused:") || Instant::now() + pause >= deadline {
                return Err(error);
            }
            if slot
                .as_ref()
                .is_some_and(|session| session.inner.closed.is_cancelled())
            {
                *slot = None;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(SWITCH_BACKOFF_MAX);
        }
    }

    /// Verifies `account` on `session` (nothing else of the line is in flight for another card:
    /// rounds change only when every terminal is done). `Err` to retry, or `refused:` for a
    /// definite refusal.
    async fn verify(
        &self,
        session: &Session,
        account: usize,
        deadline: Instant,
    ) -> Result<(), String> {
        *session.verified.lock() = None;
        let (card, pin) = &self.shared.cards[account];
        let id = RequestId {
            client: self.verify_client,
            sequence: self.verify_sequence.fetch_add(1, Ordering::Relaxed),
        };
        let operation = Operation::Verify {
            card: *card,
            pin: pin.clone(),
        };
        let timeout = self
            .shared
            .config
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        match session.exchange(id, operation, timeout, self).await {
            Ok(reply) if reply.status == Status::Approved => {
                *session.verified.lock() = Some(account);
                self.shared.switch.verifies.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Ok(reply) if reply.status.is_definite() => Err(format!(
                "refused: line {}: verify of card {card} answered {}",
                self.index, reply.status
            )),
            Ok(reply) => Err(format!("verify of card {card} answered {}", reply.status)),
            Err(error) => Err(error),
        }
    }

    /// Opens a connection and does the handshake.
    async fn open(&self) -> Result<Session, String> {
        let config = &self.shared.config;
        let handshake = async {
            let stream =
                crate::client::tls::open_stream(&self.shared.address, config.tls.as_ref()).await?;
            let mut framed = Framed::new(
                stream,
                FrameCodec::<ServerMessage, ClientMessage>::new(crate::codec::FRAME_BYTES_LIMIT),
            );
            framed
                .send(ClientMessage::Hello(Hello {
                    protocol_version: PROTOCOL_VERSION,
                }))
                .await
                .map_err(|error| format!("handshake failed: {error}"))?;
            match framed.next().await {
                Some(Ok(ServerMessage::Welcome(welcome))) => Ok((framed, welcome)),
                Some(Ok(ServerMessage::Goodbye(goodbye))) => {
                    Err(format!("server closed: {}", goodbye.reason))
                }
                Some(Ok(other)) => Err(format!("handshake: unexpected {other:?}")),
                Some(Err(error)) => Err(format!("handshake failed: {error}")),
                None => Err("connection closed during the handshake".into()),
            }
        };
        let (framed, welcome) = tokio::time::timeout(config.attempt_timeout, handshake)
            .await
            .map_err(|_| "handshake timed out".to_string())??;
        self.shared
            .switch
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        let (mut sink, mut stream) = framed.split();
        let inner = Arc::new(SessionInner {
            pending: parking_lot::Mutex::new(HashMap::new()),
            closed: CancellationToken::new(),
        });
        let (sender, mut queue) = mpsc::unbounded_channel::<ClientMessage>();
        let reader_inner = inner.clone();
        let reader = tokio::spawn(async move {
            while let Some(Ok(ServerMessage::Reply(reply))) = stream.next().await {
                if let Some(waiter) = reader_inner.pending.lock().remove(&reply.id) {
                    let _ = waiter.send(reply);
                }
            }
            reader_inner.closed.cancel();
        });
        let writer_inner = inner.clone();
        let writer = tokio::spawn(async move {
            // Whatever is queued goes out in one flush: pipelined requests share the syscalls.
            while let Some(message) = queue.recv().await {
                let mut written = sink.feed(message).await;
                while let (true, Ok(message)) = (written.is_ok(), queue.try_recv()) {
                    written = sink.feed(message).await;
                }
                if written.is_err() || sink.flush().await.is_err() {
                    break;
                }
            }
            writer_inner.closed.cancel();
        });
        Ok(Session {
            sender,
            inner,
            verified: parking_lot::Mutex::new(None),
            retention: Duration::from_secs(welcome.client_retention_secs),
            tasks: [reader, writer],
        })
    }

    /// Counts a request sent on the line, and the most seen at once.
    fn sent(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.shared
            .switch
            .in_flight_max
            .fetch_max(now, Ordering::Relaxed);
    }

    /// Counts a request answered or given up.
    fn settled(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// Sends one request and waits up to `timeout` for its reply (or for the connection to
    /// break).
    async fn exchange(
        &self,
        id: RequestId,
        operation: Operation,
        timeout: Duration,
        line: &Line,
    ) -> Result<Reply, String> {
        let (waiter, reply) = oneshot::channel();
        self.inner.pending.lock().insert(id, waiter);
        if self
            .sender
            .send(ClientMessage::Request(Request { id, operation }))
            .is_err()
        {
            self.inner.pending.lock().remove(&id);
            return Err("connection closed".into());
        }
        line.sent();
        let outcome = tokio::select! {
            reply = reply => reply.map_err(|_| "connection closed".to_string()),
            _ = tokio::time::sleep(timeout) => Err(format!("no reply within {timeout:?}")),
            _ = self.inner.closed.cancelled() => Err("connection closed".to_string()),
        };
        line.settled();
        if outcome.is_err() {
            self.inner.pending.lock().remove(&id);
        }
        outcome
    }

    /// Notes that the server answered `not_logged_in`: the next request verifies again.
    fn login_lost(&self, account: usize) {
        let mut verified = self.verified.lock();
        if *verified == Some(account) {
            *verified = None;
        }
    }
}

/// A terminal's side of its line: its request ids, its retries and what they counted.
pub(super) struct Terminal {
    line: Arc<Line>,
    client_id: u64,
    next_sequence: u64,
    /// The client-side faults, seeded per terminal.
    faults: FaultPlan,
    stats: ClientStats,
}

impl Terminal {
    /// The terminal with `client_id` on `line`, its faults drawn from `faults`.
    pub(super) fn new(line: Arc<Line>, client_id: u64, faults: FaultPlan) -> Terminal {
        Terminal {
            line,
            client_id,
            next_sequence: 1,
            faults,
            stats: ClientStats::default(),
        }
    }

    /// The line it sends on.
    pub(super) fn line(&self) -> &Line {
        &self.line
    }

    /// The id the next request will use (and reserves it).
    pub(super) fn next_id(&mut self) -> RequestId {
        let id = RequestId {
            client: self.client_id,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        id
    }

    /// What it counted.
    pub(super) fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Sends `operation` with `id` on the line until a definite reply, or until the outcome
    /// deadline (then [`ClientError::OutcomeUnknown`]).
    pub(super) async fn call_with_id(
        &mut self,
        id: RequestId,
        operation: Operation,
    ) -> Result<Reply, ClientError> {
        if id.client == self.client_id && id.sequence >= self.next_sequence {
            self.next_sequence = id.sequence + 1;
        }
        let config = &self.line.shared.config;
        let started = Instant::now();
        let mut deadline = started + config.outcome_deadline;
        let mut timeout = config.attempt_timeout;
        let mut pause = SWITCH_BACKOFF_INITIAL;
        let mut attempts = 0u32;
        loop {
            if attempts > 0 {
                self.stats.retries += 1;
            }
            let attempt = attempts;
            attempts += 1;
            let began = Instant::now();
            let last_error = match self
                .attempt(id, &operation, attempt, timeout, deadline)
                .await
            {
                Ok((reply, session)) if reply.status == Status::NotLoggedIn => {
                    if let Some(account) = self.line.card() {
                        session.login_lost(account);
                    }
                    format!("server answered {}", reply.status)
                }
                Ok((reply, _)) if reply.status.is_definite() => return Ok(reply),
                Ok((reply, session)) => {
                    deadline = deadline.min(started + session.retention / 2);
                    let status = reply.status;
                    if Instant::now() + pause < deadline {
                        tokio::time::sleep(pause).await;
                    }
                    pause = (pause * 2).min(SWITCH_BACKOFF_MAX);
                    format!("server answered {status}")
                }
                Err(error) if error.starts_with("refused:") => {
                    return Err(ClientError::Refused(error))
                }
                Err(error) => {
                    timeout = (timeout * 2).min(crate::client::ATTEMPT_TIMEOUT_MAX_DEFAULT);
                    // A failure that came at once (no connection to be had) is not retried at
                    // once.
                    if began.elapsed() < pause {
                        let left = deadline.saturating_duration_since(Instant::now());
                        tokio::time::sleep(pause.min(left)).await;
                        pause = (pause * 2).min(SWITCH_BACKOFF_MAX);
                    }
                    error
                }
            };
            if Instant::now() >= deadline {
                return Err(ClientError::OutcomeUnknown {
                    id,
                    attempts,
                    last_error,
                });
            }
        }
    }

    /// One attempt: a verified connection, the request sent (unless an injected fault drops
    /// it), its reply (unless an injected fault drops that). A dropped message costs the attempt
    /// timeout, as a lost one would.
    async fn attempt(
        &mut self,
        id: RequestId,
        operation: &Operation,
        attempt: u32,
        timeout: Duration,
        deadline: Instant,
    ) -> Result<(Reply, Arc<Session>), String> {
        let session = self.line.session(deadline).await?;
        let timeout = timeout
            .min(deadline.saturating_duration_since(Instant::now()))
            .max(Duration::from_millis(1));
        let faults = self.faults;
        let hits =
            |kind, probability| crate::faults::hits(faults.seed, kind, id, attempt, probability);
        if hits(FaultKind::DropRequest, faults.drop_request) {
            self.stats.requests_dropped += 1;
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {}
                _ = session.inner.closed.cancelled() => {}
            }
            return Err("request dropped (injected fault)".into());
        }
        let sent = Instant::now();
        let reply = session
            .exchange(id, operation.clone(), timeout, &self.line)
            .await?;
        if hits(FaultKind::DropReply, faults.drop_reply) {
            self.stats.replies_dropped += 1;
            tokio::select! {
                _ = tokio::time::sleep(timeout.saturating_sub(sent.elapsed())) => {}
                _ = session.inner.closed.cancelled() => {}
            }
            return Err("reply dropped (injected fault)".into());
        }
        Ok((reply, session))
    }
}

/// Refuses what switch mode cannot run: no connections or terminals, a ramp (the terminals are
/// fixed).
pub(super) fn check_switch(config: &SwarmConfig) -> Result<(), String> {
    let Some(connections) = config.connections else {
        return Ok(());
    };
    if connections == 0 || config.in_flight == 0 {
        return Err("switch mode needs at least one connection and one request in flight".into());
    }
    if !config.ramp.is_empty() {
        return Err("switch mode runs a fixed number of terminals: no ramp".into());
    }
    Ok(())
}
