//! The session actor: one per connection.
//!
//! It decodes frames, does the handshake, holds the connection's verified card, caps the requests
//! in flight, answers the lab's utilities itself, and hands account operations to
//! [`Bank::decide`]. Replies are written as they complete, so several requests can be in flight
//! (pipelining); each reply carries its request's id. A frame that cannot be decoded ends this
//! connection, with a logged reason, and nothing else.

use super::Bank;
use crate::codec::{CodecError, FrameCodec};
use crate::ledger::{Event, Outcome};
use crate::pin;
use crate::protocol::{
    Body, Card, ClientMessage, Goodbye, Operation, Reply, Request, RequestId, ServerMessage,
    Status, Welcome, PROTOCOL_VERSION,
};
use crate::utility;
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

/// Longest holder name, in bytes.
pub const HOLDER_BYTES_MAX: usize = 64;

type ServerCodec = FrameCodec<ClientMessage, ServerMessage>;

/// One connection's actor.
pub struct Session {
    bank: Arc<Bank>,
    peer: Option<SocketAddr>,
    writer: FramedWrite<ServerMessage, OwnedWriteHalf, ServerCodec>,
    /// Whether the handshake is done.
    greeted: bool,
    /// The card this connection verified, if any.
    card: Option<Card>,
    /// Requests accepted and not yet answered.
    in_flight: usize,
}

impl Session {
    /// Starts a session for `stream` on the current arbiter.
    pub fn start_with(bank: Arc<Bank>, stream: TcpStream) -> Addr<Session> {
        Session::create(move |ctx| {
            let peer = stream.peer_addr().ok();
            let frame_bytes_max = bank.limits.frame_bytes_max;
            let (read, write) = stream.into_split();
            ctx.add_stream(FramedRead::new(read, ServerCodec::new(frame_bytes_max)));
            let writer = FramedWrite::new(write, ServerCodec::new(frame_bytes_max), ctx);
            Session {
                bank,
                peer,
                writer,
                greeted: false,
                card: None,
                in_flight: 0,
            }
        })
    }

    fn send(&mut self, message: ServerMessage) {
        self.writer.write(message);
    }

    fn reply(&mut self, id: RequestId, status: Status, body: Body) {
        self.send(ServerMessage::Reply(Reply { id, status, body }));
    }

    fn close(&mut self, reason: String, ctx: &mut Context<Self>) {
        tracing::warn!(peer = ?self.peer, %reason, "closing connection");
        self.send(ServerMessage::Goodbye(Goodbye { reason }));
        self.writer.close();
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
        let limits = &self.bank.limits;
        self.send(ServerMessage::Welcome(Welcome {
            protocol_version: PROTOCOL_VERSION,
            requests_in_flight_max: limits.requests_in_flight_max as u32,
            request_window: crate::ledger::REQUEST_WINDOW as u32,
            frame_bytes_max: limits.frame_bytes_max as u32,
        }));
    }

    fn request(&mut self, request: Request, ctx: &mut Context<Self>) {
        let Request { id, operation } = request;
        let span = tracing::debug_span!("request", %id, operation = operation.name());
        let _entered = span.enter();
        if self.in_flight >= self.bank.limits.requests_in_flight_max {
            return self.reply(id, Status::Busy, Body::Empty);
        }
        if let Some(faults) = &self.bank.faults {
            if faults.drop_request() {
                tracing::debug!("injected fault: request dropped");
                return;
            }
        }
        let bank = self.bank.clone();
        match operation {
            Operation::Lowercase { text } => {
                self.reply(id, Status::Approved, Body::Text(utility::lowercase(&text)))
            }
            Operation::IsPrime { number } => self.reply(
                id,
                Status::Approved,
                Body::Answer(utility::is_prime(number)),
            ),
            Operation::IsPalindrome { number } => self.reply(
                id,
                Status::Approved,
                Body::Answer(utility::is_palindrome(number)),
            ),
            Operation::Logout => {
                self.card = None;
                self.reply(id, Status::Approved, Body::Empty);
            }
            Operation::Balance => match self.card {
                None => self.reply(id, Status::NotLoggedIn, Body::Empty),
                Some(card) => match bank.balance(card) {
                    Some(balance) => self.reply(id, Status::Approved, Body::Balance(balance)),
                    None => self.reply(id, Status::UnknownCard, Body::Empty),
                },
            },
            Operation::Withdraw { amount } => {
                self.account_change(id, Event::Withdrawal { amount }, ctx)
            }
            Operation::Deposit { amount } => {
                self.account_change(id, Event::Deposit { amount }, ctx)
            }
            Operation::Verify {
                card,
                pin: pin_text,
            } => {
                // A new verification logs out first: a failed one must not leave the old card.
                self.card = None;
                let Some(pin_hash) = bank.pin_hash(card) else {
                    return self.reply(id, Status::UnknownCard, Body::Empty);
                };
                let work = async move {
                    let correct = tokio::task::spawn_blocking(move || {
                        pin::is_well_formed(&pin_text) && pin::verify(&pin_text, &pin_hash)
                    })
                    .await
                    .unwrap_or(false);
                    bank.decide(card, id, Event::PinAttempt { correct }).await
                };
                self.spawn_reply(id, work, ctx, move |session, outcome| {
                    if outcome.status == Status::Approved {
                        session.card = Some(card);
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
                if !bank.is_operator(&operator_token) {
                    return self.reply(id, Status::NotAuthorised, Body::Empty);
                }
                let holder = holder.trim().to_string();
                if !pin::is_well_formed(&pin_text)
                    || holder.is_empty()
                    || holder.len() > HOLDER_BYTES_MAX
                {
                    return self.reply(id, Status::InvalidRequest, Body::Empty);
                }
                let cost = bank.pin_hash_cost();
                let work = async move {
                    let hashed =
                        tokio::task::spawn_blocking(move || pin::hash(&pin_text, cost)).await;
                    match hashed {
                        Ok(Ok(pin_hash)) => {
                            let event = Event::AccountOpened {
                                holder,
                                pin_hash,
                                initial_balance,
                            };
                            bank.decide(card, id, event).await
                        }
                        _ => Outcome {
                            status: Status::Busy,
                            balance: None,
                        },
                    }
                };
                self.spawn_reply(id, work, ctx, |_, _| {});
            }
        }
    }

    fn account_change(&mut self, id: RequestId, event: Event, ctx: &mut Context<Self>) {
        let Some(card) = self.card else {
            return self.reply(id, Status::NotLoggedIn, Body::Empty);
        };
        let bank = self.bank.clone();
        self.spawn_reply(
            id,
            async move { bank.decide(card, id, event).await },
            ctx,
            |_, _| {},
        );
    }

    /// Runs `work` off the session's turn and writes its outcome as the reply to `id`; `after`
    /// sees the outcome first (to log the session in, for example).
    fn spawn_reply<F>(
        &mut self,
        id: RequestId,
        work: F,
        ctx: &mut Context<Self>,
        after: impl FnOnce(&mut Session, &Outcome) + 'static,
    ) where
        F: std::future::Future<Output = Outcome> + 'static,
    {
        self.in_flight += 1;
        let faults = self.bank.faults.clone();
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
        ctx.spawn(work.into_actor(self).map(move |outcome, session, _ctx| {
            session.in_flight -= 1;
            after(session, &outcome);
            if let Some(faults) = &session.bank.faults {
                if faults.drop_reply() {
                    tracing::debug!(%id, "injected fault: reply dropped");
                    return;
                }
            }
            let body = outcome.balance.map_or(Body::Empty, Body::Balance);
            session.reply(id, outcome.status, body);
        }));
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        tracing::debug!(peer = ?self.peer, "connection opened");
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.bank.stats.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(peer = ?self.peer, "connection closed");
    }
}

impl StreamHandler<Result<ClientMessage, CodecError>> for Session {
    fn handle(&mut self, message: Result<ClientMessage, CodecError>, ctx: &mut Context<Self>) {
        match message {
            Ok(ClientMessage::Hello(hello)) => self.hello(hello.protocol_version, ctx),
            Ok(ClientMessage::Request(request)) if self.greeted => self.request(request, ctx),
            Ok(ClientMessage::Request(_)) => self.close("a request before the Hello".into(), ctx),
            Err(error) => self.close(format!("bad frame: {error}"), ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl WriteHandler<CodecError> for Session {
    fn error(&mut self, error: CodecError, _ctx: &mut Context<Self>) -> Running {
        tracing::warn!(peer = ?self.peer, %error, "write failed; closing connection");
        Running::Stop
    }
}
