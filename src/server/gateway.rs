//! The gateway actor: owns the listeners, each with its front door, enforces the connection cap
//! (shared by every listener), and starts one session per connection, round-robin over the
//! arbiters so every core serves connections.

use super::door::bincode::BincodeDoor;
use super::door::FrontDoor;
use super::session::Session;
use super::slots::{PeerKey, Slot};
use super::tls::{Secured, Tls};
use super::Bank;
use actix::prelude::*;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// How long the gateway pauses accepting after the operating system refuses a connection (for
/// example when out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A front door as the gateway holds it: whatever its protocol, it starts a session for a
/// connection and can say goodbye to one it refuses.
pub trait Entrance: Send + Sync + 'static {
    /// Starts a session for `stream` behind this door, on the current arbiter, holding `slot`
    /// (its peer's) until it ends.
    fn start_session(self: Arc<Self>, bank: Arc<Bank>, stream: TcpStream, slot: Option<Slot>);

    /// Starts a session for a connection that finished its TLS handshake, from `peer`, holding
    /// `slot` until it ends.
    fn start_secured_session(
        self: Arc<Self>,
        bank: Arc<Bank>,
        secured: Secured,
        peer: Option<std::net::SocketAddr>,
        slot: Option<Slot>,
    );

    /// The frame that tells a refused connection why.
    fn goodbye(&self, reason: &str) -> Option<Bytes>;
}

impl<D: FrontDoor> Entrance for D {
    fn start_session(self: Arc<Self>, bank: Arc<Bank>, stream: TcpStream, slot: Option<Slot>) {
        Session::start_with(bank, self, stream, slot);
    }

    fn start_secured_session(
        self: Arc<Self>,
        bank: Arc<Bank>,
        secured: Secured,
        peer: Option<std::net::SocketAddr>,
        slot: Option<Slot>,
    ) {
        Session::start_over(bank, self, secured.stream, peer, secured.terminal, slot);
    }

    fn goodbye(&self, reason: &str) -> Option<Bytes> {
        self.encode_goodbye(reason).ok()
    }
}

/// A connection accepted on one listener, with that listener's door.
type Accepted = (std::io::Result<TcpStream>, Arc<dyn Entrance>);

/// The listeners' actor.
pub struct Gateway {
    bank: Arc<Bank>,
    next_arbiter: usize,
    /// TLS for every listener; `None` serves plaintext.
    tls: Option<Arc<Tls>>,
}

impl Gateway {
    /// Starts the gateway on the current arbiter, accepting from `listener` through the bincode
    /// protocol's door.
    pub fn start_listening(bank: Arc<Bank>, listener: TcpListener) -> Addr<Gateway> {
        let door: Arc<dyn Entrance> = Arc::new(BincodeDoor::new(&bank));
        Gateway::start_doors(bank, vec![(listener, door)])
    }

    /// Starts the gateway on the current arbiter, accepting from every listener through its own
    /// door; `connections_max` counts the connections of all of them together.
    pub fn start_doors(
        bank: Arc<Bank>,
        listeners: Vec<(TcpListener, Arc<dyn Entrance>)>,
    ) -> Addr<Gateway> {
        Gateway::start_secured(bank, listeners, None)
    }

    /// Like [`Gateway::start_doors`], with TLS on every listener when `tls` is given: the
    /// handshake runs on the session's arbiter, before the session starts.
    pub fn start_secured(
        bank: Arc<Bank>,
        listeners: Vec<(TcpListener, Arc<dyn Entrance>)>,
        tls: Option<Arc<Tls>>,
    ) -> Addr<Gateway> {
        Gateway::create(move |ctx| {
            for (listener, door) in listeners {
                let accepted =
                    futures::stream::unfold((listener, door), |(listener, door)| async move {
                        let accepted = listener.accept().await;
                        if accepted.is_err() {
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        }
                        let accepted = accepted.map(|(stream, _)| stream);
                        Some(((accepted, door.clone()), (listener, door)))
                    });
                ctx.add_stream(accepted);
            }
            // A graceful shutdown stops the gateway, which drops the listeners: no new
            // connections.
            let stopping = bank.clone();
            let shutdown =
                actix::fut::wrap_future::<_, Gateway>(
                    async move { stopping.shutting_down().await },
                );
            ctx.spawn(shutdown.map(|_, _, ctx| {
                tracing::info!("no longer accepting connections");
                ctx.stop();
            }));
            Gateway {
                bank,
                next_arbiter: 0,
                tls,
            }
        })
    }
}

impl Gateway {
    /// The slot of `peer` for a new connection: `None` when the peer cannot be named (it is
    /// already gone; it takes no slot), or the goodbye's reason when the peer holds all its slots
    /// (the refusal is counted, like one at the global cap).
    fn peer_slot(&self, peer: Option<SocketAddr>) -> Result<Option<Slot>, &'static str> {
        let Some(peer) = peer else { return Ok(None) };
        let bank = &self.bank;
        match bank.slots().take(PeerKey::of_address(peer.ip())) {
            Some(slot) => Ok(Some(slot)),
            None => {
                bank.stats().connection_refused_per_peer();
                tracing::warn!(
                    %peer,
                    limit = bank.limits().connections_per_peer_max,
                    "refusing connection: its peer holds all its connection slots"
                );
                Err("the server is at its connection limit for your address; try again later")
            }
        }
    }
}

impl Actor for Gateway {
    type Context = Context<Self>;
}

impl StreamHandler<Accepted> for Gateway {
    fn handle(&mut self, (accepted, door): Accepted, _ctx: &mut Context<Self>) {
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                return;
            }
        };
        let peer = stream.peer_addr().ok();
        let bank = &self.bank;
        if bank.stats().connections.load(Ordering::Relaxed) >= bank.limits().connections_max {
            bank.stats().connection_refused();
            tracing::warn!(
                ?peer,
                limit = bank.limits().connections_max,
                "refusing connection: at the connection limit"
            );
            // A TLS client could not read a plaintext goodbye: it is just closed.
            let goodbye = match self.tls {
                Some(_) => None,
                None => door.goodbye("the server is at its connection limit; try again later"),
            };
            actix::spawn(refuse(stream, goodbye));
            return;
        }
        let slot = match self.peer_slot(peer) {
            Ok(slot) => slot,
            Err(reason) => {
                actix::spawn(refuse(stream, door.goodbye(reason)));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "cannot hand the connection to a session");
                return;
            }
        };
        bank.stats().connection_opened();
        let arbiter = &bank.arbiters[self.next_arbiter % bank.arbiters.len()];
        self.next_arbiter = self.next_arbiter.wrapping_add(1);
        let bank = bank.clone();
        let tls = self.tls.clone();
        let sent = arbiter.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => match tls {
                    Some(tls) => super::tls::secure_session(tls, door, bank, stream, slot).await,
                    None => door.start_session(bank, stream, slot),
                },
                Err(error) => {
                    bank.stats().connection_closed();
                    tracing::warn!(%error, "cannot register the connection");
                }
            }
        });
        if !sent {
            self.bank.stats().connection_closed();
        }
    }
}

/// Tells a connection over the limit why it is closed, then closes it.
async fn refuse(mut stream: TcpStream, goodbye: Option<Bytes>) {
    if let Some(frame) = goodbye {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
    let _ = stream.shutdown().await;
}
