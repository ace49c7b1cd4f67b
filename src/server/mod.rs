//! The server: configuration, the shared [`Bank`] context, and start-up and shutdown.
//!
//! Actors, in the order a request meets them:
//! - [`gateway::Gateway`] owns the listeners, each with its front door ([`door`]), and starts one
//!   [`session::Session`] per connection, spreading them over the arbiters, up to
//!   [`Limits::connections_max`].
//! - [`session::Session`] is generic over its door: its `connection` tasks split and decode
//!   frames under deadlines; the session caps the requests in flight and hands each one, in its
//!   own turn, to the [`service`], which decides it in one documented order.
//! - [`account::AccountActor`], one per card, decides every change, under actix's supervisor.
//!
//! The files, one concern each:
//! - [`service`]: the one service that decides every request, one module per operation, and the
//!   order of its checks as data ([`service::checks`]).
//! - [`door`]: front doors, each a codec and a mapping of result codes to its own codes.
//! - `connection`: the reader and writer tasks of a connection, generic over the door.
//! - `settings`: [`Limits`], [`ServerConfig`] and the [`journal_config`] they give.
//! - `stats`: [`Stats`], the counters exported as metrics.
//! - `bank`: [`Bank`], the registry of account actors, admission ([`Bank::submit`]) and
//!   settlement ([`Bank::settle`]) of requests, committed reads, the memory of completed requests
//!   and its sweep, the operator check.
//! - [`budget`]: the byte budgets of queued replies, per connection and for the server.
//! - [`slots`]: the connections each peer may hold open.
//! - `joining`: the changes in flight that a retry joins instead of reaching the actor again.
//! - [`account`]: the account actor, the only place an account's state changes.
//! - `durable`: waiting for durability with one cross-thread wake-up per batch.
//! - [`pins`]: the PIN key, PIN checks and their limits.
//! - `demo`: the sample accounts of `--demo`, opened like any `CreateAccount`.
//! - `start`: [`RunningServer`], start-up and graceful shutdown.
//! - `error`: [`ServerError`].
//! - [`tls`]: TLS on the listeners: the reloadable acceptor, the deny list, terminal identities.

pub mod account;
pub mod background;
mod bank;
pub mod budget;
mod connection;
mod demo;
pub mod door;
mod durable;
mod error;
pub mod gateway;
mod joining;
pub mod pins;
pub mod service;
pub mod session;
mod settings;
pub mod slots;
mod start;
mod stats;
pub mod tls;

pub use bank::{Bank, Submitted};
pub use demo::{DEMO_ACCOUNTS, SERVER_CLIENT_ID};
pub use error::ServerError;
pub use settings::{
    journal_config, Banking, Iso8583Pins, Iso8583Settings, Limits, ServerConfig, StorageKind,
    HOLD_TTL_DEFAULT, ISO8583_CURRENCY_DEFAULT, REQUESTS_JOINABLE_MAX_DEFAULT,
    STATEMENT_MOVEMENTS_DEFAULT,
};
pub use start::RunningServer;
pub use stats::Stats;
