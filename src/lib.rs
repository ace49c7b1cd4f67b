//! actor-bank: an exactly-once bank server built on actors.
//!
//! ATMs connect over TCP, verify a card and PIN, and withdraw, deposit and ask for balances. Every
//! non-idempotent request carries a client-chosen id; a retry with the same id gets the original
//! reply and never moves money twice, across lost requests, lost replies, actor crashes and server
//! restarts. docs/ARCHITECTURE.md explains the design, docs/PROTOCOL.md the wire format and
//! docs/JOURNAL.md the files on disk.
//!
//! Module map, in layer order (each layer uses only the ones before it; `tests/layers.rs` checks
//! it, and docs/ARCHITECTURE.md section 3 gives the table):
//! - [`model`]: the bank's vocabulary: cards, amounts, request ids, the result codes
//!   ([`model::Code`]) that the journal stores and each front door maps to its own codes, and
//!   the operation kinds ([`model::Kind`]) with what each needs.
//! - [`clock`]: where time and chance come from: a [`clock::Clock`] every time-dependent rule
//!   reads (a manual one in tests), and seeded random generators.
//! - [`utility`]: the lab's idempotent operations (lowercase, prime, palindrome).
//! - [`metrics`]: the metrics the server reports, named in one place.
//! - [`pin`]: the PIN verification key, keyed PIN verifiers (and the first release's argon2id
//!   hashes), and the operator-token check.
//! - [`pin_block`]: ISO 9564 format 0 PIN blocks as ISO 8583 field 52 carries them, under a
//!   triple-DES zone PIN key ([`pin_block::ZonePinKey`]).
//! - [`codec`]: bytes ↔ values. Frames on the wire and values on disk; the only module that
//!   knows bincode.
//! - [`iso8583`]: ISO 8583:1987 messages in ASCII (the layout ATM switches speak), bytes ↔
//!   fields.
//! - [`protocol`]: the typed messages and statuses ATMs and the server exchange.
//! - [`ledger`]: the pure account rules, records, and the memory of completed requests. No I/O.
//! - [`storage`]: the storage seam: a durable, ordered [`storage::Log`] and the committed state
//!   it applies to, joined in the [`storage::Storage`] the server holds; an in-memory log for tests.
//! - [`journal`]: the file journal, the log every change goes through on disk: group commit,
//!   snapshots and recovery.
//! - [`ratelimit`]: token buckets that limit failed PIN checks per connection and per peer.
//! - [`operator`]: the operator token's strength rule, generation, and the limit on failed
//!   attempts.
//! - [`faults`]: deterministic fault injection for tests and the swarm.
//! - [`logging`]: log lines that are dropped and counted, never a panic or a wait, when
//!   standard error fails.
//! - [`server`]: the actors (gateway, sessions, account actors under a supervisor), the one
//!   service that decides every request, the front doors, start-up and shutdown.
//! - [`config`]: the server's settings from flags, `BANK_…` variables and a TOML file.
//! - [`client`]: the client library the `atm` binary, the swarm and the tests use: retries with the
//!   same id, reconnects with backoff, and a deadline after which an outcome is reported unknown.
//! - [`atm`]: the `atm` binary's commands, JSON output and interactive menu.
//! - [`swarm`]: the ATM swarm load generator and its audit of every cent.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod atm;
pub mod client;
pub mod clock;
pub mod codec;
pub mod config;
pub mod faults;
pub mod iso8583;
pub mod journal;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod operator;
pub mod pin;
pub mod pin_block;
pub mod protocol;
pub mod ratelimit;
pub mod server;
pub mod storage;
pub mod swarm;
pub mod utility;
