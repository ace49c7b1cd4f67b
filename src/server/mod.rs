//! The server: configuration, the shared [`Bank`] context, and start-up and shutdown.
//!
//! Actors, in the order a request meets them:
//! - [`gateway::Gateway`] owns the listener and starts one [`session::Session`] per connection,
//!   spreading them over the arbiters, up to [`Limits::connections_max`].
//! - [`session::Session`] decodes frames, holds the connection's verified card, answers the
//!   utilities itself and sends account operations to the account actors.
//! - [`account::AccountActor`], one per card, decides every change, under actix's supervisor.
//!
//! The files, one concern each:
//! - `settings`: [`Limits`], [`ServerConfig`] and the [`journal_config`] they give.
//! - `stats`: [`Stats`], the counters exported as metrics.
//! - `bank`: [`Bank`], the registry of account actors, admission ([`Bank::submit`]) and
//!   settlement ([`Bank::settle`]) of requests, committed reads, the memory of completed requests
//!   and its sweep, the operator check.
//! - `joining`: the changes in flight that a retry joins instead of reaching the actor again.
//! - [`account`]: the account actor, the only place an account's state changes.
//! - `durable`: waiting for durability with one cross-thread wake-up per batch.
//! - [`pins`]: the PIN key, PIN checks and their limits.
//! - `demo`: the sample accounts of `--demo`, opened like any `CreateAccount`.
//! - `start`: [`RunningServer`], start-up and graceful shutdown.
//! - `error`: [`ServerError`].

pub mod account;
mod bank;
mod demo;
mod durable;
mod error;
pub mod gateway;
mod joining;
pub mod pins;
pub mod session;
mod settings;
mod start;
mod stats;

pub use bank::{Bank, Submitted};
pub use demo::{DEMO_ACCOUNTS, SERVER_CLIENT_ID};
pub use error::ServerError;
pub use settings::{journal_config, Limits, ServerConfig, REQUESTS_JOINABLE_MAX_DEFAULT};
pub use start::RunningServer;
pub use stats::Stats;
