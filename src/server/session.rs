//! The session actor: one per connection.
//!
//! Three parts serve one connection:
//! - a *reader* task reads frames with deadlines: a connection with no verified card must send
//!   within [`Limits::login_idle_timeout`], and a frame that has started must be complete within
//!   [`Limits::frame_read_timeout`]. It checks each declared length before allocating, decodes
//!   with a size limit, and hands messages to the actor. It reads the next frame only while the
//!   write queue has room for a full window of replies, so a client that stops reading its
//!   replies stops being read from, and is dropped after [`Limits::write_timeout`].
//! - the *actor* does the handshake, holds the connection's verified card, caps the requests in
//!   flight, answers the lab's utilities itself and hands account operations to [`Bank::decide`].
//!   Several requests can be in flight (pipelining); each reply carries its request's id.
//!   The in-flight rule: every request, of any kind, counts from the moment it is read until its
//!   reply is handed to the writer; one that arrives at the limit is answered `busy` at once,
//!   before any other work, and that refusal does not count.
//! - a *writer* task drains the bounded queue of reply frames to the socket, under a deadline.
//!
//! A frame that cannot be decoded ends this connection, with a logged reason, and nothing else.
//!
//! [`Limits::login_idle_timeout`]: super::Limits::login_idle_timeout
//! [`Limits::frame_read_timeout`]: super::Limits::frame_read_timeout
//! [`Limits::write_timeout`]: super::Limits::write_timeout

use super::Bank;
use crate::codec::{self, FRAME_HEADER_BYTES};
use crate::ledger::{Event, Outcome};
use crate::model::Code;
use crate::pin;
use crate::protocol::{
    Body, Card, ClientMessage, Goodbye, Operation, Reply, Request, RequestId, ServerMessage,
    Status, Welcome, PROTOCOL_VERSION,
};
use crate::utility;
use actix::prelude::*;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Longest holder name, in bytes.
pub const HOLDER_BYTES_MAX: usize = 64;

/// Room a reply needs around its text: message and status tags, the request id, the length.
const REPLY_OVERHEAD_BYTES: usize = 32;

/// Bytes the reader and the writer buffer between the socket and the frames. A page holds dozens
/// of the small frames ATMs exchange; with 16 KiB each way, 4 096 connections held 128 MiB of
/// buffers (the login-storm ramp peaked at 926 MiB resident, against 420 MiB with 4 KiB).
const SOCKET_BUFFER_BYTES: usize = 4 * 1024;

/// A request being answered: what its reply needs, and what its metrics record.
#[derive(Clone, Copy, Debug)]
struct Pending {
    id: RequestId,
    operation: &'static str,
    arrived: Instant,
}

/// Why a session is winding down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// The peer closed its sending side; its replies still go out.
    PeerFinished,
    /// The server is shutting down; the peer is told why.
    ShuttingDown,
}

/// What the reader hands to the session.
#[derive(Message)]
#[rtype(result = "()")]
enum Incoming {
    /// A decoded message.
    Message(ClientMessage),
    /// The connection must close, for this reason (bad frame, deadline passed).
    Close(String),
    /// The peer closed the connection.
    Ended,
    /// The server is shutting down: answer what is in flight, then close.
    Drain,
}

/// One connection's actor.
pub struct Session {
    bank: Arc<Bank>,
    /// Reply frames on their way to the writer task.
    outbox: Option<mpsc::Sender<Bytes>>,
    reader: Option<JoinHandle<()>>,
    /// Whether the handshake is done.
    greeted: bool,
    /// The card this connection verified, if any.
    card: Option<Card>,
    /// Shared with the reader: with a verified card, the login idle deadline does not apply.
    logged_in: Arc<AtomicBool>,
    /// Counts Verify and Logout requests in arrival order. A Verify logs the connection in only if
    /// no later Verify or Logout arrived while it was being checked, so pipelined requests take
    /// effect in the order they were sent.
    login_epoch: u64,
    /// Requests admitted whose reply has not yet been handed to the writer, of every kind (the
    /// utilities, `Balance` and `Logout` are answered in the turn that admits them). A request
    /// that arrives while this is at [`Limits::requests_in_flight_max`] is answered `busy`.
    ///
    /// [`Limits::requests_in_flight_max`]: super::Limits::requests_in_flight_max
    in_flight: usize,
    /// This connection's allowance of failed PIN checks (and its peer's address).
    pin_gate: Arc<super::pins::PinGate>,
    /// Set when no more requests will be read (the peer finished sending, or a graceful shutdown
    /// began): the session ends once every reply in flight has gone out.
    closing: Option<Closing>,
    /// The peer's address, which failed operator attempts are counted by.
    peer: Option<std::net::IpAddr>,
    span: tracing::Span,
}

impl Session {
    /// Starts a session for `stream` on the current arbiter.
    pub fn start_with(bank: Arc<Bank>, stream: TcpStream) -> Addr<Session> {
        Session::create(move |ctx| {
            let peer = stream.peer_addr().ok();
            let (read, write) = stream.into_split();
            let limits = &bank.limits();
            let queue_frames = limits
                .write_queue_frames
                .max(2 * limits.requests_in_flight_max)
                .max(1);
            let (outbox, queue) = mpsc::channel(queue_frames);
            let logged_in = Arc::new(AtomicBool::new(false));
            let span = tracing::info_span!("connection", peer = %peer.map_or_else(|| "unknown".to_string(), |peer| peer.to_string()));
            let reader = Reader {
                bank: bank.clone(),
                session: ctx.address(),
                logged_in: logged_in.clone(),
                room: outbox.clone(),
                frame_bytes_max: limits.frame_bytes_max,
                frame_read_timeout: limits.frame_read_timeout,
                login_idle_timeout: limits.login_idle_timeout,
                write_timeout: limits.write_timeout,
                replies_window: limits.requests_in_flight_max.min(queue_frames),
            };
            let reader = actix::spawn(reader.run(read));
            actix::spawn(write_frames(
                write,
                queue,
                limits.write_timeout,
                ctx.address(),
            ));
            let pin_gate = bank.pins().gate(peer.map(|peer| peer.ip()));
            Session {
                pin_gate,
                bank,
                outbox: Some(outbox),
                reader: Some(reader),
                greeted: false,
                card: None,
                logged_in,
                login_epoch: 0,
                in_flight: 0,
                closing: None,
                peer: peer.map(|peer| peer.ip()),
                span,
            }
        })
    }

    /// Queues a message for the writer. A full queue means the client is not reading its replies
    /// (the reader keeps room for every request in flight), so the connection is closed.
    fn send(&mut self, message: &ServerMessage, ctx: &mut Context<Self>) {
        let frame = match codec::encode_frame(message) {
            Ok(frame) => Bytes::from(frame),
            Err(error) => {
                tracing::error!(%error, "cannot encode a reply");
                return;
            }
        };
        let Some(outbox) = &self.outbox else { return };
        if let Err(error) = outbox.try_send(frame) {
            let reason = match error {
                mpsc::error::TrySendError::Full(_) => "the client is not reading its replies",
                mpsc::error::TrySendError::Closed(_) => "the connection is closed",
            };
            tracing::warn!(%reason, "closing connection");
            self.outbox = None;
            ctx.stop();
        }
    }

    /// Writes the reply to an admitted request, which thereby leaves the in-flight count.
    fn reply(&mut self, pending: Pending, status: Code, body: Body, ctx: &mut Context<Self>) {
        debug_assert!(
            self.in_flight > 0,
            "a reply to a request that was not admitted"
        );
        self.in_flight = self.in_flight.saturating_sub(1);
        self.write_reply(pending, status, body, ctx);
    }

    /// Writes a reply; [`Session::reply`] for admitted requests, directly for a `busy` refusal.
    fn write_reply(&mut self, pending: Pending, status: Code, body: Body, ctx: &mut Context<Self>) {
        crate::metrics::request(pending.operation, status.name(), pending.arrived.elapsed());
        let id = pending.id;
        let status = Status::from(status);
        self.send(&ServerMessage::Reply(Reply { id, status, body }), ctx);
    }

    /// Says goodbye with a reason and closes the connection once the writer has sent it.
    fn close(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(%reason, "closing connection");
        self.send(&ServerMessage::Goodbye(Goodbye { reason }), ctx);
        ctx.stop();
    }

    fn hello(&mut self, protocol_version: u32, ctx: &mut Context<Self>) {
        if self.greeted {
            return self.close("a second Hello on one connection".into(), ctx);
        }
        if protocol_version != PROTOCOL_VERSION {
            return self.close(
                format!("protocol version {protocol_version} is not supported; this server speaks {PROTOCOL_VERSION}"),
                ctx,
            );
        }
        self.greeted = true;
        let limits = &self.bank.limits();
        let welcome = ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            requests_in_flight_max: limits.requests_in_flight_max as u32,
            request_window: crate::ledger::REQUEST_WINDOW as u32,
            frame_bytes_max: limits.frame_bytes_max.min(codec::FRAME_BYTES_LIMIT) as u32,
            client_retention_secs: self.bank.client_retention().as_secs(),
        });
        self.send(&welcome, ctx);
    }

    /// Once no more requests will be read, ends the session when every reply has gone out.
    fn close_if_drained(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight > 0 {
            return;
        }
        match self.closing {
            Some(Closing::ShuttingDown) => self.close("the server is shutting down".into(), ctx),
            Some(Closing::PeerFinished) => ctx.stop(),
            None => {}
        }
    }

    fn set_card(&mut self, card: Option<Card>) {
        self.card = card;
        self.logged_in.store(card.is_some(), Ordering::Relaxed);
    }

    fn request(&mut self, request: Request, ctx: &mut Context<Self>) {
        let Request { id, operation } = request;
        let pending = Pending {
            id,
            operation: operation.name(),
            arrived: Instant::now(),
        };
        let span =
            tracing::debug_span!(parent: &self.span, "request", %id, operation = operation.name());
        let _entered = span.enter();
        // The in-flight rule: every request counts from here until its reply is handed to the
        // writer, whatever its kind. One that arrives while the limit is reached is refused at
        // once, before any other work; the refusal itself is not counted.
        if self.in_flight >= self.bank.limits().requests_in_flight_max {
            return self.write_reply(pending, Code::Busy, Body::Empty, ctx);
        }
        self.in_flight += 1;
        if let Some(faults) = &self.bank.faults() {
            if faults.drop_request(id) {
                tracing::debug!("injected fault: request dropped");
                self.in_flight -= 1;
                return;
            }
        }
        let bank = self.bank.clone();
        match operation {
            Operation::Lowercase { text } => {
                // Lowercasing can lengthen text (some capitals become two characters); a reply
                // must fit in a frame the client accepts.
                let lowered = utility::lowercase(&text);
                if lowered.len() + REPLY_OVERHEAD_BYTES
                    > self
                        .bank
                        .limits()
                        .frame_bytes_max
                        .min(codec::FRAME_BYTES_LIMIT)
                {
                    self.reply(pending, Code::InvalidRequest, Body::Empty, ctx)
                } else {
                    self.reply(pending, Code::Approved, Body::Text(lowered), ctx)
                }
            }
            Operation::IsPrime { number } => self.reply(
                pending,
                Code::Approved,
                Body::Answer(utility::is_prime(number)),
                ctx,
            ),
            Operation::IsPalindrome { number } => self.reply(
                pending,
                Code::Approved,
                Body::Answer(utility::is_palindrome(number)),
                ctx,
            ),
            Operation::Logout => {
                self.login_epoch += 1;
                self.set_card(None);
                self.reply(pending, Code::Approved, Body::Empty, ctx);
            }
            Operation::Balance => match self.card {
                None => self.reply(pending, Code::NotLoggedIn, Body::Empty, ctx),
                Some(card) => match bank.balance(card) {
                    Some(balance) => {
                        self.reply(pending, Code::Approved, Body::Balance(balance), ctx)
                    }
                    None => self.reply(pending, Code::UnknownCard, Body::Empty, ctx),
                },
            },
            Operation::Withdraw { amount } => {
                self.account_change(pending, Event::Withdrawal { amount }, ctx)
            }
            Operation::Deposit { amount } => {
                self.account_change(pending, Event::Deposit { amount }, ctx)
            }
            Operation::Verify {
                card,
                pin: pin_text,
            } => {
                // A new verification logs out first: a failed one must not leave the old card.
                self.login_epoch += 1;
                let epoch = self.login_epoch;
                self.set_card(None);
                let work = bank.verify_pin(self.pin_gate.clone(), card, id, pin_text);
                self.spawn_reply(pending, work, ctx, move |session, outcome| {
                    if outcome.status == Code::Approved && session.login_epoch == epoch {
                        session.set_card(Some(card));
                    }
                });
            }
            Operation::CreateAccount {
                operator_token,
                card,
                holder,
                pin: pin_text,
                initial_balance,
            } => {
                let authorised = bank.check_operator(&operator_token, self.peer);
                if authorised != Code::Approved {
                    return self.reply(pending, authorised, Body::Empty, ctx);
                }
                let holder = holder.trim().to_string();
                if !pin::is_well_formed(&pin_text)
                    || holder.is_empty()
                    || holder.len() > HOLDER_BYTES_MAX
                {
                    return self.reply(pending, Code::InvalidRequest, Body::Empty, ctx);
                }
                let pin_hash = bank.pins().key().verifier(card, &pin_text);
                let work = async move {
                    let event = Event::AccountOpened {
                        holder,
                        pin_hash,
                        initial_balance,
                    };
                    // The PIN is not among the request's parameters: a retry of the id is
                    // answered from what the original did, whatever PIN it carries, so no
                    // answer tells whether a PIN was the one the account was opened with.
                    bank.decide(card, id, event).await
                };
                self.spawn_reply(pending, work, ctx, |_, _| {});
            }
            Operation::UnlockCard {
                operator_token,
                card,
            } => {
                let authorised = bank.check_operator(&operator_token, self.peer);
                if authorised != Code::Approved {
                    return self.reply(pending, authorised, Body::Empty, ctx);
                }
                let work = async move { bank.decide(card, id, Event::CardUnlocked).await };
                self.spawn_reply(pending, work, ctx, move |_, outcome| {
                    if outcome.status == Code::Approved {
                        let card = super::pins::mask_card(card);
                        tracing::info!(target: "security", %card, "card unlocked by the operator");
                    }
                });
            }
            Operation::ChangePin { old_pin, new_pin } => {
                let Some(card) = self.card else {
                    return self.reply(pending, Code::NotLoggedIn, Body::Empty, ctx);
                };
                let epoch = self.login_epoch;
                let work = bank.change_pin(self.pin_gate.clone(), card, id, old_pin, new_pin);
                // A wrong old PIN that locks the card ends the login too.
                self.spawn_reply(pending, work, ctx, move |session, outcome| {
                    if outcome.status == Code::CardLocked && session.login_epoch == epoch {
                        session.set_card(None);
                    }
                });
            }
        }
    }

    fn account_change(&mut self, pending: Pending, event: Event, ctx: &mut Context<Self>) {
        let Some(card) = self.card else {
            return self.reply(pending, Code::NotLoggedIn, Body::Empty, ctx);
        };
        let bank = self.bank.clone();
        // Submitted now, in arrival order; only the wait for the answer runs concurrently.
        let submitted = bank.submit(card, pending.id, event);
        self.spawn_reply(
            pending,
            async move { bank.settle(submitted).await },
            ctx,
            |_, _| {},
        );
    }

    /// Runs `work` off the session's turn and writes its outcome as the reply to `id`; `after`
    /// sees the outcome first (to log the session in, for example). The request stays in flight
    /// until then.
    fn spawn_reply<F>(
        &mut self,
        pending: Pending,
        work: F,
        ctx: &mut Context<Self>,
        after: impl FnOnce(&mut Session, &Outcome) + 'static,
    ) where
        F: std::future::Future<Output = Outcome> + 'static,
    {
        let faults = self.bank.faults().clone();
        let work = async move {
            let outcome = work.await;
            if let Some(faults) = &faults {
                let delay = faults.delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            outcome
        };
        ctx.spawn(work.into_actor(self).map(move |outcome, session, ctx| {
            after(session, &outcome);
            if let Some(faults) = &session.bank.faults() {
                if faults.drop_reply(pending.id) {
                    tracing::debug!(id = %pending.id, "injected fault: reply dropped");
                    session.in_flight -= 1;
                    session.close_if_drained(ctx);
                    return;
                }
            }
            let body = outcome.balance.map_or(Body::Empty, Body::Balance);
            session.reply(pending, outcome.status, body, ctx);
            session.close_if_drained(ctx);
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        let _entered = self.span.enter();
        tracing::debug!("connection opened");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        // Dropping the outbox lets the writer send what is queued (a Goodbye, say) and close.
        self.outbox = None;
        self.bank.stats().connection_closed();
        let _entered = self.span.enter();
        tracing::debug!("connection closed");
    }
}

impl Handler<Incoming> for Session {
    type Result = ();

    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        let _entered = self.span.clone().entered();
        match incoming {
            Incoming::Message(ClientMessage::Hello(hello)) => {
                self.hello(hello.protocol_version, ctx)
            }
            Incoming::Message(ClientMessage::Request(request)) if self.greeted => {
                self.request(request, ctx)
            }
            Incoming::Message(ClientMessage::Request(_)) => {
                self.close("a request before the Hello".into(), ctx)
            }
            Incoming::Close(reason) => self.close(reason, ctx),
            Incoming::Ended => {
                self.closing = Some(Closing::PeerFinished);
                self.close_if_drained(ctx);
            }
            Incoming::Drain => {
                self.closing = Some(Closing::ShuttingDown);
                self.close_if_drained(ctx);
            }
        }
    }
}

/// The reading side of a connection.
struct Reader {
    bank: Arc<Bank>,
    session: Addr<Session>,
    logged_in: Arc<AtomicBool>,
    /// The writer's queue, watched for room before each frame is read.
    room: mpsc::Sender<Bytes>,
    frame_bytes_max: usize,
    frame_read_timeout: Duration,
    login_idle_timeout: Duration,
    write_timeout: Duration,
    /// Queue slots that must be free before another request is read.
    replies_window: usize,
}

impl Reader {
    async fn run(self, read: OwnedReadHalf) {
        let mut read = BufReader::with_capacity(SOCKET_BUFFER_BYTES, read);
        loop {
            let next = tokio::select! {
                biased;
                _ = self.bank.shutting_down() => Err(None),
                next = self.next(&mut read) => next.map_err(Some),
            };
            let incoming = match next {
                Ok(Some(message)) => Incoming::Message(message),
                Ok(None) => Incoming::Ended,
                Err(Some(reason)) => Incoming::Close(reason),
                Err(None) => Incoming::Drain,
            };
            let last = !matches!(incoming, Incoming::Message(_));
            // Waiting here when the session's mailbox is full is backpressure, not a leak.
            if self.session.send(incoming).await.is_err() || last {
                return;
            }
        }
    }

    /// The next message; `None` when the peer closed cleanly between frames.
    async fn next(
        &self,
        read: &mut BufReader<OwnedReadHalf>,
    ) -> Result<Option<ClientMessage>, String> {
        // Read on only when every reply this request could add has a place in the queue.
        match tokio::time::timeout(
            self.write_timeout,
            self.room.reserve_many(self.replies_window),
        )
        .await
        {
            Ok(Ok(permits)) => drop(permits),
            Ok(Err(_)) => return Ok(None),
            Err(_) => {
                return Err(format!(
                    "the client took none of its replies for {:?}",
                    self.write_timeout
                ))
            }
        }
        let mut header = [0u8; FRAME_HEADER_BYTES];
        // The login deadline applies only while no card is verified; a verification may complete
        // while this read waits, so the flag is checked again when the deadline passes.
        let first = loop {
            if self.logged_in.load(Ordering::Relaxed) {
                break read.read(&mut header[..1]).await;
            }
            match tokio::time::timeout(self.login_idle_timeout, read.read(&mut header[..1])).await {
                Ok(result) => break result,
                Err(_) if self.logged_in.load(Ordering::Relaxed) => continue,
                Err(_) => {
                    return Err(format!(
                        "no request for {:?} without a verified card",
                        self.login_idle_timeout
                    ))
                }
            }
        };
        match first {
            Ok(0) => return Ok(None),
            Ok(_) => {}
            Err(error) => return Err(format!("read failed: {error}")),
        }
        let rest = async {
            read.read_exact(&mut header[1..])
                .await
                .map_err(|error| format!("frame header cut short: {error}"))?;
            let body_bytes = codec::declared_body_bytes(header, self.frame_bytes_max)
                .map_err(|error| format!("bad frame: {error}"))?;
            let mut body = vec![0u8; body_bytes];
            read.read_exact(&mut body)
                .await
                .map_err(|error| format!("frame body cut short: {error}"))?;
            codec::decode_wire::<ClientMessage>(&body)
                .map_err(|error| format!("bad frame: {error}"))
        };
        match tokio::time::timeout(self.frame_read_timeout, rest).await {
            Ok(result) => result.map(Some),
            Err(_) => Err(format!(
                "a frame took longer than {:?} to arrive",
                self.frame_read_timeout
            )),
        }
    }
}

/// The writing side: sends queued frames, several per system call when they pile up, under a
/// deadline. Ends when the session drops its end of the queue (after sending what is left).
async fn write_frames(
    write: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    timeout: Duration,
    session: Addr<Session>,
) {
    let mut write = BufWriter::with_capacity(SOCKET_BUFFER_BYTES, write);
    while let Some(frame) = queue.recv().await {
        let sent = tokio::time::timeout(timeout, async {
            write.write_all(&frame).await?;
            while let Ok(frame) = queue.try_recv() {
                write.write_all(&frame).await?;
            }
            write.flush().await
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                session.do_send(Incoming::Close(format!("write failed: {error}")));
                break;
            }
            Err(_) => {
                session.do_send(Incoming::Close(format!(
                    "the client took no reply for {timeout:?}"
                )));
                break;
            }
        }
    }
    let _ = tokio::time::timeout(timeout, write.shutdown()).await;
}
