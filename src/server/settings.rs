//! What the server is told: its limits and its configuration, and the journal settings they give.

use super::pins::{self, PinKeySource};
use super::tls::TlsFiles;
use super::{budget, slots};
use crate::clock::Clock;
use crate::faults::FaultPlan;
use crate::journal::{JournalConfig, RecoveryMode};
use crate::pin::PinHashCost;
use crate::ratelimit::RateLimit;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The limits the server enforces. Every queue and count has one.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Open connections at most; more are refused with a `Goodbye`.
    pub connections_max: usize,
    /// Requests one connection may have unanswered; more are answered `busy`.
    pub requests_in_flight_max: usize,
    /// Largest frame body accepted, in bytes.
    pub frame_bytes_max: usize,
    /// Messages an account actor's mailbox holds; when full, requests are answered `busy`.
    pub mailbox_capacity: usize,
    /// An account actor with no request for this long stops (its state stays in the ledger).
    pub account_idle: Duration,
    /// A frame whose first byte has arrived must be complete within this time, or the connection
    /// is closed (a slow sender cannot hold a connection and its buffer forever).
    pub frame_read_timeout: Duration,
    /// A connection with no verified card that sends nothing for this long is closed (any frame
    /// restarts it; [`Limits::unverified_deadline`] is the bound no frame extends).
    pub login_idle_timeout: Duration,
    /// Replies (frames) a connection may have queued for writing. The session stops reading
    /// requests while the queue lacks room for a full window of replies.
    pub write_queue_frames: usize,
    /// A client that does not take its replies for this long (writes stall, or the queue stays
    /// full) is disconnected.
    pub write_timeout: Duration,
    /// Failed operator-token attempts each peer address may make (a burst, then a rate); beyond
    /// them its operator requests are answered `busy` unchecked.
    pub operator_failures: RateLimit,
    /// Failed PIN checks one connection may make; beyond them PIN checks are answered `busy`.
    pub pin_failures_per_connection: RateLimit,
    /// Failed PIN checks one peer address may make over all its connections.
    pub pin_failures_per_peer: RateLimit,
    /// Argon2id checks (of the first release's hashes) waiting for the PIN pool; more are
    /// answered `busy`.
    pub pin_check_queue_max: usize,
    /// Account changes being worked on that a retry may join (see [`super::Bank::submit`]). When this
    /// many are open, a new change is still accepted but cannot be joined: a retry of it takes
    /// the ordinary path through the account actor.
    pub requests_joinable_max: usize,
    /// A TLS handshake must finish within this time, or the connection is closed (it holds a
    /// connection slot meanwhile).
    pub tls_handshake_timeout: Duration,
    /// Reply bytes one connection may have reserved or queued; while its next request's largest
    /// reply does not fit, its reader reads nothing (see `server::budget`).
    pub connection_reply_bytes_max: usize,
    /// Reply bytes all connections together may have reserved or queued; when used up, only
    /// connections under their fair share are read from.
    pub reply_bytes_max: usize,
    /// Open connections one peer (an IPv4 address, an IPv6 /64) may hold; more are refused with
    /// a `Goodbye`, like the global cap.
    pub connections_per_peer_max: usize,
    /// A connection must verify a card within this time of being accepted, whatever it sends in
    /// between; it is closed otherwise. A successful `Verify` lifts the deadline.
    pub unverified_deadline: Duration,
    /// A connection with a verified card that sends no frame for this long is closed.
    pub verified_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections_max: 10_000,
            requests_in_flight_max: 64,
            frame_bytes_max: crate::codec::FRAME_BYTES_MAX_DEFAULT,
            mailbox_capacity: 1024,
            account_idle: Duration::from_secs(60),
            frame_read_timeout: Duration::from_secs(5),
            login_idle_timeout: Duration::from_secs(60),
            write_queue_frames: 256,
            write_timeout: Duration::from_secs(10),
            operator_failures: crate::operator::OPERATOR_FAILURES_DEFAULT,
            pin_failures_per_connection: pins::PIN_FAILURES_PER_CONNECTION_DEFAULT,
            pin_failures_per_peer: pins::PIN_FAILURES_PER_PEER_DEFAULT,
            pin_check_queue_max: pins::PIN_CHECK_QUEUE_MAX_DEFAULT,
            requests_joinable_max: REQUESTS_JOINABLE_MAX_DEFAULT,
            tls_handshake_timeout: super::tls::TLS_HANDSHAKE_TIMEOUT,
            connection_reply_bytes_max: budget::CONNECTION_REPLY_BYTES_MAX_DEFAULT,
            reply_bytes_max: budget::REPLY_BYTES_MAX_DEFAULT,
            connections_per_peer_max: slots::CONNECTIONS_PER_PEER_MAX_DEFAULT,
            unverified_deadline: Duration::from_secs(60),
            verified_idle: Duration::from_secs(300),
        }
    }
}

/// Default of [`Limits::requests_joinable_max`]: as many changes as 1 024 connections can have in
/// flight at the default in-flight limit. An entry takes about 200 bytes, so at most ~13 MiB.
pub const REQUESTS_JOINABLE_MAX_DEFAULT: usize = 65_536;

/// Default of [`Banking::hold_ttl`]: seven days, the longest an ATM or card authorisation is
/// commonly held before it lapses.
pub const HOLD_TTL_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Default of [`Banking::statement_movements_max`]: every movement an account keeps.
pub const STATEMENT_MOVEMENTS_DEFAULT: u32 = crate::ledger::STATEMENT_MOVEMENTS_MAX as u32;

/// The bank's business settings: daily limits, the business day, holds, statements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Banking {
    /// The daily withdrawal limits of a card with none of its own (none by default: the operator
    /// sets them, per card or here).
    pub daily_limits: crate::model::DailyLimits,
    /// The time zone whose midnight starts a business day (UTC by default).
    pub time_zone: chrono_tz::Tz,
    /// How long a hold lasts before it expires.
    pub hold_ttl: Duration,
    /// The most movements a statement returns (at most
    /// [`crate::ledger::STATEMENT_MOVEMENTS_MAX`], which is what an account keeps).
    pub statement_movements_max: u32,
}

impl Default for Banking {
    fn default() -> Self {
        Banking {
            daily_limits: crate::model::DailyLimits::NONE,
            time_zone: chrono_tz::UTC,
            hold_ttl: HOLD_TTL_DEFAULT,
            statement_movements_max: STATEMENT_MOVEMENTS_DEFAULT,
        }
    }
}

impl Banking {
    /// The business day of `unix_ms`: days since 1970-01-01 by the calendar of the time zone.
    pub fn business_day(&self, unix_ms: u64) -> u32 {
        use chrono::TimeZone;
        let Some(utc) = chrono::DateTime::from_timestamp_millis(unix_ms as i64) else {
            return 0;
        };
        let local = self
            .time_zone
            .from_utc_datetime(&utc.naive_utc())
            .date_naive();
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date");
        u32::try_from((local - epoch).num_days()).unwrap_or(0)
    }
}

/// The bank's currency by default, on the ISO 8583 door (ISO 4217 numeric: 978, the euro).
pub const ISO8583_CURRENCY_DEFAULT: &str = "978";

/// How the ISO 8583 door reads the PIN blocks of field 52.
#[derive(Clone, Debug)]
pub enum Iso8583Pins {
    /// Encrypted under the zone PIN key in this file (32 or 48 hexadecimal digits, owner-only).
    KeyFile(PathBuf),
    /// Encrypted under this zone PIN key (for embedders and tests).
    Key(Box<crate::pin_block::ZonePinKey>),
    /// In clear (ISO 9564 format 0, not encrypted): only for tests, behind an explicit flag.
    ClearBlocks,
}

/// The second listener, speaking ISO 8583 (docs/ISO8583.md); off unless an address is given.
#[derive(Clone, Debug)]
pub struct Iso8583Settings {
    /// Address to listen on; port 0 picks a free one ([`super::RunningServer::iso8583_addr`]).
    pub listen: SocketAddr,
    /// How PIN blocks are read.
    pub pins: Iso8583Pins,
    /// The bank's one currency (ISO 4217 numeric, three digits): a request naming another is
    /// refused, and balances are reported in it.
    pub currency: String,
}

impl Iso8583Settings {
    /// The listener on `listen` reading PIN blocks as `pins`, in the default currency.
    pub fn new(listen: SocketAddr, pins: Iso8583Pins) -> Iso8583Settings {
        Iso8583Settings {
            listen,
            pins,
            currency: ISO8583_CURRENCY_DEFAULT.to_string(),
        }
    }
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the journal and snapshots live; created if missing.
    pub data_dir: PathBuf,
    /// The operator token; without one, creating accounts is disabled.
    pub operator_token: Option<String>,
    /// Open the lab's two sample accounts if they do not exist.
    pub demo: bool,
    /// Limits.
    pub limits: Limits,
    /// Where the PIN verification key comes from (by default a file beside the data directory,
    /// [`pins::default_pin_key_file`]).
    pub pin_key: PinKeySource,
    /// Where the server reads the time: failure limits, the time stamped on records, forgetting
    /// idle clients (a [`crate::clock::ManualClock`] in tests).
    pub clock: Arc<dyn Clock>,
    /// The argon2id cost the first release made PIN hashes with. New PINs get keyed verifiers,
    /// so nothing uses it any more; it stays so that existing configurations keep working.
    pub pin_hash_cost: PinHashCost,
    /// Faults to inject (testing only).
    pub faults: Option<FaultPlan>,
    /// Account actor arbiters (threads); 0 means one per core.
    pub arbiters: usize,
    /// Records between snapshots.
    pub snapshot_records_interval: u64,
    /// How long a client's completed requests are remembered after its last one. Must exceed the
    /// client library's retry deadline.
    pub client_retention: Duration,
    /// Records the journal queues before requests are answered `busy`.
    pub journal_queue_records_max: usize,
    /// How long a graceful shutdown waits for requests in flight before it closes connections.
    pub shutdown_timeout: Duration,
    /// How recovery treats the newest segment's tail (docs/JOURNAL.md, section 9).
    pub recovery: RecoveryMode,
    /// Testing only: the journal's writes fail like a full disk once this many more bytes have
    /// been written (see [`crate::journal::files::FullDisk`]).
    pub journal_fail_after_bytes: Option<i64>,
    /// TLS on every listener, from these files; `None` serves plaintext (see
    /// [`ServerConfig::check_transport`]).
    pub tls: Option<TlsFiles>,
    /// Serve plaintext on an address that is not loopback: only for networks that are secured
    /// otherwise.
    pub allow_plaintext: bool,
    /// Daily limits, the business day, holds and statements.
    pub banking: Banking,
    /// The ISO 8583 listener, if any (off by default).
    pub iso8583: Option<Iso8583Settings>,
}

impl ServerConfig {
    /// Defaults: 127.0.0.1:7878, ./data, no operator token, no demo accounts.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            pin_key: PinKeySource::File(pins::default_pin_key_file(&data_dir)),
            clock: Arc::new(crate::clock::SystemClock::default()),
            data_dir,
            operator_token: None,
            demo: false,
            limits: Limits::default(),
            pin_hash_cost: PinHashCost::default(),
            faults: None,
            arbiters: 0,
            snapshot_records_interval: JournalConfig::new(".").snapshot_records_interval,
            client_retention: JournalConfig::new(".").client_retention,
            journal_queue_records_max: JournalConfig::new(".").queue_records_max,
            shutdown_timeout: Duration::from_secs(10),
            recovery: RecoveryMode::default(),
            journal_fail_after_bytes: None,
            tls: None,
            allow_plaintext: false,
            banking: Banking::default(),
            iso8583: None,
        }
    }

    /// The plaintext rule: without TLS the server listens only on loopback addresses (the ISO
    /// 8583 listener's included), unless plaintext is allowed explicitly.
    pub fn check_transport(&self) -> Result<(), String> {
        let listeners =
            std::iter::once(self.listen).chain(self.iso8583.as_ref().map(|iso8583| iso8583.listen));
        for listen in listeners {
            if self.tls.is_none() && !listen.ip().is_loopback() && !self.allow_plaintext {
                return Err(format!(
                    "refusing to serve plaintext on {listen}, which is not a loopback address: give \
                     --tls-cert and --tls-key, or --allow-plaintext if the network is secured otherwise"
                ));
            }
        }
        Ok(())
    }
}

/// The journal settings a server configuration asks for.
pub fn journal_config(config: &ServerConfig) -> JournalConfig {
    let mut journal_config = JournalConfig::new(&config.data_dir);
    journal_config.snapshot_records_interval = config.snapshot_records_interval;
    journal_config.client_retention = config.client_retention;
    journal_config.queue_records_max = config.journal_queue_records_max;
    journal_config.recovery = config.recovery;
    journal_config.clock = config.clock.clone();
    if let Some(budget) = config.journal_fail_after_bytes {
        journal_config.files = Arc::new(crate::journal::files::FullDisk::new(budget));
    }
    journal_config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_business_day_starts_at_midnight_in_the_configured_time_zone() {
        let utc = Banking::default();
        // 2026-01-01T00:00:00Z is day 20 454.
        let new_year = 1_767_225_600_000;
        assert_eq!(utc.business_day(new_year), 20_454);
        assert_eq!(utc.business_day(new_year - 1), 20_453);
        let tokyo = Banking {
            time_zone: chrono_tz::Asia::Tokyo,
            ..Banking::default()
        };
        // Nine hours ahead: 15:00 UTC on New Year's Eve is already New Year's Day in Tokyo.
        assert_eq!(tokyo.business_day(new_year - 9 * 3_600_000), 20_454);
        assert_eq!(tokyo.business_day(new_year - 9 * 3_600_000 - 1), 20_453);
    }

    #[test]
    fn plaintext_is_refused_off_loopback_unless_allowed() {
        let mut config = ServerConfig::new("./data");
        assert_eq!(config.check_transport(), Ok(()));
        config.listen = SocketAddr::from(([0, 0, 0, 0], 0));
        let refused = config.check_transport().unwrap_err();
        assert!(refused.contains("--allow-plaintext"), "{refused}");
        config.allow_plaintext = true;
        assert_eq!(config.check_transport(), Ok(()));
        config.allow_plaintext = false;
        config.tls = Some(TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: None,
            deny_file: None,
        });
        assert_eq!(config.check_transport(), Ok(()));
        config.tls = None;
        config.listen = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
        assert_eq!(config.check_transport(), Ok(()));
    }
}
