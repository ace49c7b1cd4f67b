//! The gateway actor: owns the listener, enforces the connection cap, and starts one session per
//! connection, round-robin over the arbiters so every core serves connections.

use super::session::Session;
use super::Bank;
use crate::codec::encode_frame;
use crate::protocol::{Goodbye, ServerMessage};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// How long the gateway pauses accepting after the operating system refuses a connection (for
/// example when out of file descriptors), so it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The listener's actor.
pub struct Gateway {
    bank: Arc<Bank>,
    next_arbiter: usize,
}

impl Gateway {
    /// Starts the gateway on the current arbiter, accepting from `listener`.
    pub fn start_listening(bank: Arc<Bank>, listener: TcpListener) -> Addr<Gateway> {
        Gateway::create(move |ctx| {
            let accepted = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await;
                if accepted.is_err() {
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
                Some((accepted.map(|(stream, _)| stream), listener))
            });
            ctx.add_stream(accepted);
            // A graceful shutdown stops the gateway, which drops the listener: no new connections.
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
            }
        })
    }
}

impl Actor for Gateway {
    type Context = Context<Self>;
}

impl StreamHandler<std::io::Result<TcpStream>> for Gateway {
    fn handle(&mut self, accepted: std::io::Result<TcpStream>, _ctx: &mut Context<Self>) {
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
            actix::spawn(refuse(stream));
            return;
        }
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
        let sent = arbiter.spawn(async move {
            match TcpStream::from_std(stream) {
                Ok(stream) => {
                    Session::start_with(bank, stream);
                }
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
async fn refuse(mut stream: TcpStream) {
    let goodbye = ServerMessage::Goodbye(Goodbye {
        reason: "the server is at its connection limit; try again later".into(),
    });
    if let Ok(frame) = encode_frame(&goodbye) {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
    let _ = stream.shutdown().await;
}
