//! The session actor: one per connection, whatever its front door.
//!
//! Three parts serve one connection: the reader and the writer tasks of
//! `server::connection`, and this actor between them. The actor holds the connection's login
//! ([`Login`]), caps the requests in flight, hands each request to the [`Service`] in its own
//! turn, and writes each answer through its [`FrontDoor`]. Several requests can be in flight
//! (pipelining); each reply carries its request's id.
//!
//! The in-flight rule: every request, of any kind, counts from the moment it is read until its
//! reply is handed to the writer; one that arrives at the limit is answered `busy` at once,
//! before any other work, and that refusal does not count ([`Check::InFlight`], the first check
//! of every operation).
//!
//! Every frame the session queues is charged to the connection's reply budget
//! ([`super::budget`]) in place of the reservation the reader made for its request; a request that
//! gets no reply (an injected fault) gives its reservation back.
//!
//! A frame that cannot be decoded ends this connection, with a logged reason, and nothing else.
//!
//! [`Check::InFlight`]: super::service::Check::InFlight

use super::budget::ConnectionBudget;
use super::connection::{self, Connection, Incoming, Transport};
use super::door::{FrontDoor, Inbound};
use super::service::{Answer, Command, Effect, Login, Pending, Service, Started};
use super::slots::Slot;
use super::tls::Terminal;
use super::Bank;
use crate::model::{Code, RequestId};
use actix::prelude::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use super::service::HOLDER_BYTES_MAX;

/// A request being answered: what its reply needs, and what its metrics record.
#[derive(Clone, Copy, Debug)]
struct Request {
    id: RequestId,
    operation: &'static str,
    arrived: Instant,
    /// Reply bytes the reader reserved for this request's reply.
    reserved: usize,
}

/// Why a session is winding down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    /// The peer closed its sending side; its replies still go out.
    PeerFinished,
    /// The server is shutting down; the peer is told why.
    ShuttingDown,
}

/// One connection's actor, speaking through door `D`.
pub struct Session<D: FrontDoor> {
    service: Service,
    door: Arc<D>,
    /// Reply frames on their way to the writer task.
    outbox: Option<mpsc::Sender<Bytes>>,
    reader: Option<JoinHandle<()>>,
    /// The connection's reply budget: each reply settles its request's reservation here.
    budget: Arc<ConnectionBudget>,
    /// Frames the reader handed over and this session has not handled yet.
    unhandled: Arc<AtomicUsize>,
    /// The connection's slot among its peer's; given back when the session ends.
    _slot: Option<Slot>,
    /// The verified card and what keeps logins in order.
    login: Login,
    /// Requests admitted whose reply has not yet been handed to the writer, of every kind (the
    /// utilities, `Balance` and `Logout` are answered in the turn that admits them). A request
    /// that arrives while this is at [`Limits::requests_in_flight_max`] is answered `busy`.
    ///
    /// [`Limits::requests_in_flight_max`]: super::Limits::requests_in_flight_max
    in_flight: usize,
    /// Set when no more requests will be read (the peer finished sending, or a graceful shutdown
    /// began): the session ends once every reply in flight has gone out.
    closing: Option<Closing>,
    span: tracing::Span,
}

impl<D: FrontDoor> Session<D> {
    /// Starts a session for `stream`, speaking through `door`, on the current arbiter; it holds
    /// `slot` (its peer's, if the gateway took one) until it ends.
    pub fn start_with(
        bank: Arc<Bank>,
        door: Arc<D>,
        stream: TcpStream,
        slot: Option<Slot>,
    ) -> Addr<Session<D>> {
        let peer = stream.peer_addr().ok();
        Session::start_over(bank, door, stream, peer, None, slot)
    }

    /// Starts a session over any byte stream (TLS over TCP, say), from `peer` (the TCP socket's
    /// address) and, under mutual TLS, `terminal`, on the current arbiter; it holds `slot` until
    /// it ends.
    pub fn start_over<S: Transport>(
        bank: Arc<Bank>,
        door: Arc<D>,
        stream: S,
        peer: Option<SocketAddr>,
        terminal: Option<Terminal>,
        slot: Option<Slot>,
    ) -> Addr<Session<D>> {
        Session::create(move |ctx| {
            let span = tracing::info_span!(
                "connection",
                peer = %peer.map_or_else(|| "unknown".to_string(), |peer| peer.to_string()),
                terminal = tracing::field::Empty,
            );
            // Only a mutual-TLS connection names a terminal; a plain one's span stays as it was.
            if let Some(terminal) = &terminal {
                span.record("terminal", tracing::field::display(terminal));
            }
            let login = Login::with_terminal(&bank, peer.map(|peer| peer.ip()), terminal);
            let session = ctx.address().recipient();
            let connection = connection::start(
                bank.clone(),
                door.clone(),
                stream,
                session,
                login.verified_flag(),
            );
            Session {
                service: Service::new(bank),
                door,
                outbox: Some(connection.outbox),
                reader: Some(connection.reader),
                budget: connection.budget,
                unhandled: connection.unhandled,
                _slot: slot,
                login,
                in_flight: 0,
                closing: None,
                span,
            }
        })
    }

    fn bank(&self) -> &Arc<Bank> {
        self.service.bank()
    }

    /// Queues a frame for the writer, charged to the budget in place of the `reserved` bytes the
    /// reader set aside for it. A full queue means the client is not reading its replies (the
    /// reader keeps room for every request in flight), so the connection is closed.
    fn send(&mut self, frame: Bytes, reserved: usize, ctx: &mut Context<Self>) {
        let Some(outbox) = &self.outbox else {
            self.budget.release(reserved);
            return;
        };
        self.budget.settle(reserved, frame.len());
        let bytes = frame.len();
        if let Err(error) = outbox.try_send(frame) {
            self.budget.release(bytes);
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
    fn reply(
        &mut self,
        request: Request,
        context: D::Context,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) {
        debug_assert!(
            self.in_flight > 0,
            "a reply to a request that was not admitted"
        );
        self.in_flight = self.in_flight.saturating_sub(1);
        self.write_reply(request, context, answer, ctx);
    }

    /// Writes a reply; [`Session::reply`] for admitted requests, directly for a `busy` refusal.
    fn write_reply(
        &mut self,
        request: Request,
        context: D::Context,
        answer: Answer,
        ctx: &mut Context<Self>,
    ) {
        let code = answer.code.name();
        crate::metrics::request(request.operation, code, request.arrived.elapsed());
        match self.door.encode_answer(request.id, context, answer) {
            Ok(frame) => self.send(frame, request.reserved, ctx),
            Err(error) => {
                self.budget.release(request.reserved);
                tracing::error!(%error, "cannot encode a reply")
            }
        }
    }

    /// Says goodbye with a reason and closes the connection once the writer has sent it.
    fn close(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(%reason, "closing connection");
        match self.door.encode_goodbye(&reason) {
            Ok(frame) if frame.is_empty() => {}
            Ok(frame) => self.send(frame, 0, ctx),
            Err(error) => tracing::error!(%error, "cannot encode a goodbye"),
        }
        ctx.stop();
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

    /// Admits a request under the in-flight limit and starts it with the service, in this turn.
    fn request(
        &mut self,
        id: RequestId,
        command: Command,
        operation: &'static str,
        reserved: usize,
        context: D::Context,
        ctx: &mut Context<Self>,
    ) {
        let request = Request {
            id,
            operation,
            arrived: Instant::now(),
            reserved,
        };
        // A child of the connection's span, which the turn has entered.
        let span = tracing::debug_span!("request", %id, operation);
        let _entered = span.enter();
        // The in-flight rule: every request counts from here until its reply is handed to the
        // writer, whatever its kind. One that arrives while the limit is reached is refused at
        // once, before any other work; the refusal itself is not counted.
        if self.in_flight >= self.bank().limits().requests_in_flight_max {
            return self.write_reply(request, context, Answer::bare(Code::Busy), ctx);
        }
        self.in_flight += 1;
        if let Some(faults) = self.bank().faults() {
            if faults.drop_request(id) {
                tracing::debug!("injected fault: request dropped");
                self.in_flight -= 1;
                self.budget.release(reserved);
                return;
            }
        }
        match self.service.start(&mut self.login, id, command) {
            Started::Now(answer) => self.reply(request, context, answer, ctx),
            Started::Later { answer, effect } => {
                self.spawn_reply(request, context, answer, effect, ctx)
            }
        }
    }

    /// Awaits `answer` off the session's turn and writes it as the reply to `request`, after
    /// applying `effect` to the login. The request stays in flight until then.
    fn spawn_reply(
        &mut self,
        request: Request,
        context: D::Context,
        answer: Pending,
        effect: Effect,
        ctx: &mut Context<Self>,
    ) {
        let faults = self.bank().faults().clone();
        let work = async move {
            let answer = answer.await;
            if let Some(faults) = &faults {
                let delay = faults.delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }
            answer
        };
        ctx.spawn(work.into_actor(self).map(move |answer, session, ctx| {
            session.login.apply(effect, &answer);
            if let Some(faults) = session.bank().faults() {
                if faults.drop_reply(request.id) {
                    tracing::debug!(id = %request.id, "injected fault: reply dropped");
                    session.in_flight -= 1;
                    session.budget.release(request.reserved);
                    session.close_if_drained(ctx);
                    return;
                }
            }
            session.reply(request, context, answer, ctx);
            session.close_if_drained(ctx);
        }));
    }
}

impl<D: FrontDoor> Actor for Session<D> {
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
        self.bank().stats().connection_closed();
        let _entered = self.span.enter();
        tracing::debug!("connection closed");
    }
}

impl<D: FrontDoor> Handler<Incoming<D::Context>> for Session<D> {
    type Result = ();

    fn handle(&mut self, incoming: Incoming<D::Context>, ctx: &mut Context<Self>) {
        // The connection's span is moved out for the turn rather than cloned (a clone is a
        // reference count in the subscriber's registry, per frame), and put back after it.
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        let entered = span.enter();
        self.dispatch(incoming, ctx);
        drop(entered);
        self.span = span;
    }
}

impl<D: FrontDoor> Session<D> {
    /// Acts on what the reader or the writer handed over, inside the connection's span.
    fn dispatch(&mut self, incoming: Incoming<D::Context>, ctx: &mut Context<Self>) {
        if let Incoming::Door(..) = incoming {
            Connection::took_frame(&self.unhandled);
        }
        match incoming {
            Incoming::Door(Inbound::Answered(frame), reserved) => self.send(frame, reserved, ctx),
            Incoming::Door(
                Inbound::Request {
                    id,
                    command,
                    name,
                    context,
                },
                reserved,
            ) => self.request(id, command, name, reserved, context, ctx),
            Incoming::Door(Inbound::Close(reason), reserved) => {
                self.budget.release(reserved);
                self.close(reason, ctx)
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
