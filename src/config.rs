//! The server's settings: every one is a flag, an environment variable `BANK_<FLAG>` and a key
//! of the TOML file given with `--config` (the flag's name with underscores, e.g. `data_dir`).
//! Precedence: flag, then environment, then file, then the built-in default.
//!
//! [`Settings`] is at once the command line (clap fills it from flags and the environment) and
//! the file (serde fills it from TOML); [`Settings::merge`] lays one over the other and
//! [`Settings::resolve`] turns the result into a [`ServerConfig`].

use crate::faults::FaultPlan;
use crate::pin::PinHashCost;
use crate::ratelimit::RateLimit;
use crate::server::pins::{default_pin_key_file, PinKeySource};
use crate::server::tls::TlsFiles;
use crate::server::{Banking, Iso8583Pins, Iso8583Settings, Limits, ServerConfig, StorageKind};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Every setting, each optional so the sources can be layered.
#[derive(clap::Parser, Clone, Debug, Default, Deserialize)]
#[command(
    name = "bank-server",
    version,
    about = "An exactly-once bank server for ATMs."
)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Read settings from this TOML file (keys are the flag names with underscores).
    #[arg(long, env = "BANK_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (secrets masked) and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Instead of serving, run a tool and exit.
    #[command(subcommand)]
    #[serde(skip)]
    pub command: Option<Tool>,
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long, env = "BANK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory for the journal and snapshots, created if missing [default: ./data].
    #[arg(long, env = "BANK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Token that authorises creating accounts; without one, creating accounts is disabled. At
    /// least 32 characters (make one with `bank-server generate-operator-token`). Prefer
    /// BANK_OPERATOR_TOKEN or --operator-token-file: a flag is visible to every local user in ps.
    #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
    /// Read the operator token from this file (its first line); the file must not be readable
    /// by group or others.
    #[arg(long, env = "BANK_OPERATOR_TOKEN_FILE")]
    pub operator_token_file: Option<PathBuf>,
    /// Failed operator-token attempts a peer address may make in a row [default: 5].
    #[arg(long, env = "BANK_OPERATOR_FAILURES_BURST")]
    pub operator_failures_burst: Option<u32>,
    /// Failed operator-token attempts a peer address regains per minute [default: 10].
    #[arg(long, env = "BANK_OPERATOR_FAILURES_PER_MINUTE")]
    pub operator_failures_per_minute: Option<u32>,
    /// Open the lab's sample accounts (123456789/1234, 987654321/5678) if they do not exist.
    #[arg(long, env = "BANK_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// Inject faults, for testing: drop-request=P,drop-reply=P,crash-actor=P,delay-ms=N,seed=S.
    #[arg(long, env = "BANK_FAULTS")]
    pub faults: Option<String>,
    /// Serve Prometheus metrics on this address (off by default).
    #[arg(long, env = "BANK_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log format: text or json (one JSON object per line) [default: text].
    #[arg(long, env = "BANK_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Maximum open connections [default: 10000].
    #[arg(long, env = "BANK_CONNECTIONS_MAX")]
    pub connections_max: Option<usize>,
    /// Maximum requests in flight per connection [default: 64].
    #[arg(long, env = "BANK_REQUESTS_IN_FLIGHT_MAX")]
    pub requests_in_flight_max: Option<usize>,
    /// Maximum frame body in bytes [default: 65536].
    #[arg(long, env = "BANK_FRAME_BYTES_MAX")]
    pub frame_bytes_max: Option<usize>,
    /// Messages an account actor's mailbox holds before requests are answered busy [default: 1024].
    #[arg(long, env = "BANK_MAILBOX_CAPACITY")]
    pub mailbox_capacity: Option<usize>,
    /// Records the journal queues before requests are answered busy [default: 65536].
    #[arg(long, env = "BANK_JOURNAL_QUEUE_RECORDS_MAX")]
    pub journal_queue_records_max: Option<usize>,
    /// Seconds a frame may take to arrive once it has started [default: 5].
    #[arg(long, env = "BANK_FRAME_READ_TIMEOUT_SECS")]
    pub frame_read_timeout_secs: Option<u64>,
    /// Seconds a connection without a verified card may stay silent [default: 60].
    #[arg(long, env = "BANK_LOGIN_IDLE_TIMEOUT_SECS")]
    pub login_idle_timeout_secs: Option<u64>,
    /// Reply frames queued per connection [default: 256].
    #[arg(long, env = "BANK_WRITE_QUEUE_FRAMES")]
    pub write_queue_frames: Option<usize>,
    /// Seconds a client may leave its replies unread before it is disconnected [default: 10].
    #[arg(long, env = "BANK_WRITE_TIMEOUT_SECS")]
    pub write_timeout_secs: Option<u64>,
    /// Reply bytes one connection may have queued or reserved; beyond them its requests are not
    /// read until the client takes its replies [default: 262144].
    #[arg(long, env = "BANK_CONNECTION_REPLY_BYTES_MAX")]
    pub connection_reply_bytes_max: Option<usize>,
    /// Reply bytes all connections together may have queued or reserved; beyond them only
    /// connections under their fair share are read from [default: 268435456].
    #[arg(long, env = "BANK_REPLY_BYTES_MAX")]
    pub reply_bytes_max: Option<usize>,
    /// Open connections one peer address (an IPv6 peer by its /64) may hold [default: 64].
    #[arg(long, env = "BANK_CONNECTIONS_PER_PEER_MAX")]
    pub connections_per_peer_max: Option<usize>,
    /// Seconds a connection has from being accepted to verify a card, whatever it sends in
    /// between [default: 60].
    #[arg(long, env = "BANK_UNVERIFIED_DEADLINE_SECS")]
    pub unverified_deadline_secs: Option<u64>,
    /// Seconds a connection with a verified card may stay silent [default: 300].
    #[arg(long, env = "BANK_VERIFIED_IDLE_SECS")]
    pub verified_idle_secs: Option<u64>,
    /// Seconds an account actor stays alive without requests [default: 60].
    #[arg(long, env = "BANK_ACCOUNT_IDLE_SECS")]
    pub account_idle_secs: Option<u64>,
    /// The PIN verification key file, kept apart from the data directory; created (mode 0600) on
    /// first start [default: the data directory's path with `.pin-key` added, e.g. ./data.pin-key].
    #[arg(long, env = "BANK_PIN_KEY_FILE")]
    pub pin_key_file: Option<PathBuf>,
    /// Failed PIN checks one connection may make at once [default: 10].
    #[arg(long, env = "BANK_PIN_FAILURES_PER_CONNECTION_BURST")]
    pub pin_failures_per_connection_burst: Option<u32>,
    /// Failed PIN checks one connection may make per minute after its burst [default: 10].
    #[arg(long, env = "BANK_PIN_FAILURES_PER_CONNECTION_PER_MINUTE")]
    pub pin_failures_per_connection_per_minute: Option<u32>,
    /// Failed PIN checks one peer address may make at once [default: 100].
    #[arg(long, env = "BANK_PIN_FAILURES_PER_PEER_BURST")]
    pub pin_failures_per_peer_burst: Option<u32>,
    /// Failed PIN checks one peer address may make per minute after its burst [default: 60].
    #[arg(long, env = "BANK_PIN_FAILURES_PER_PEER_PER_MINUTE")]
    pub pin_failures_per_peer_per_minute: Option<u32>,
    /// Argon2id PIN checks (of data from the first release) waiting at most [default: 64].
    #[arg(long, env = "BANK_PIN_CHECK_QUEUE_MAX")]
    pub pin_check_queue_max: Option<usize>,
    /// No longer used: new PINs get keyed verifiers. Accepted so old configurations still load.
    #[arg(long, env = "BANK_PIN_HASH_MEMORY_KIB", hide = true)]
    pub pin_hash_memory_kib: Option<u32>,
    /// No longer used: new PINs get keyed verifiers. Accepted so old configurations still load.
    #[arg(long, env = "BANK_PIN_HASH_ITERATIONS", hide = true)]
    pub pin_hash_iterations: Option<u32>,
    /// Journal records between snapshots [default: 1000000].
    #[arg(long, env = "BANK_SNAPSHOT_RECORDS_INTERVAL")]
    pub snapshot_records_interval: Option<u64>,
    /// Seconds an idle client's completed requests are remembered [default: 86400].
    #[arg(long, env = "BANK_CLIENT_RETENTION_SECS")]
    pub client_retention_secs: Option<u64>,
    /// Account-actor threads; 0 means one per core [default: 0].
    #[arg(long, env = "BANK_ARBITERS")]
    pub arbiters: Option<usize>,
    /// Seconds a graceful shutdown waits for requests in flight [default: 10].
    #[arg(long, env = "BANK_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// How recovery treats the journal's tail: auto (strict after a clean shutdown, else cut only
    /// what has the shape of an interrupted write) or strict (never cut) [default: auto].
    #[arg(long, env = "BANK_RECOVERY")]
    pub recovery: Option<crate::journal::RecoveryMode>,
    /// Serve TLS with this certificate chain (PEM, the server's certificate first); needs
    /// --tls-key. Without TLS the server listens on loopback addresses only (see
    /// --allow-plaintext).
    #[arg(long, env = "BANK_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM); must not be readable by group or others.
    #[arg(long, env = "BANK_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: every client must present a certificate chaining to a CA in this PEM bundle;
    /// the certificate names the terminal.
    #[arg(long, env = "BANK_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Terminals refused even with a good certificate: one name or SHA-256 fingerprint a line
    /// (reread with the certificates on SIGHUP).
    #[arg(long, env = "BANK_TLS_DENY_FILE")]
    pub tls_deny_file: Option<PathBuf>,
    /// Seconds a TLS handshake may take [default: 10].
    #[arg(long, env = "BANK_TLS_HANDSHAKE_TIMEOUT_SECS")]
    pub tls_handshake_timeout_secs: Option<u64>,
    /// Serve plaintext on an address that is not loopback (only on a network secured otherwise).
    #[arg(long, env = "BANK_ALLOW_PLAINTEXT", num_args = 0..=1, default_missing_value = "true")]
    pub allow_plaintext: Option<bool>,
    /// The most money a card may withdraw (and hold) per business day, in minor units, unless
    /// the operator set its own limits [default: no limit].
    #[arg(long, env = "BANK_DAILY_WITHDRAWAL_AMOUNT_MAX")]
    pub daily_withdrawal_amount_max: Option<u64>,
    /// The most withdrawals (and holds) a card may make per business day, unless the operator
    /// set its own limits [default: no limit].
    #[arg(long, env = "BANK_DAILY_WITHDRAWAL_COUNT_MAX")]
    pub daily_withdrawal_count_max: Option<u32>,
    /// The time zone whose midnight starts a business day, an IANA name such as Europe/Paris
    /// [default: UTC].
    #[arg(long, env = "BANK_BUSINESS_TIME_ZONE")]
    pub business_time_zone: Option<String>,
    /// Seconds a hold lasts before it expires [default: 604800, seven days].
    #[arg(long, env = "BANK_HOLD_TTL_SECS")]
    pub hold_ttl_secs: Option<u64>,
    /// The most movements a statement returns, 1 to 50 [default: 50].
    #[arg(long, env = "BANK_STATEMENT_MOVEMENTS_MAX")]
    pub statement_movements_max: Option<u32>,
    /// Where the journal lives: the embedded file journal in --data-dir (the default), or a
    /// cluster's PostgreSQL, `postgres://USER@HOST:PORT/DB` (docs/CLUSTER.md).
    #[arg(long, env = "BANK_STORAGE", hide_env_values = true)]
    pub storage: Option<String>,
    /// This node's id in the cluster, unique among its nodes (PostgreSQL storage only).
    #[arg(long, env = "BANK_NODE_ID")]
    pub node_id: Option<i32>,
    /// The address clients use to reach this node [default: the --listen address].
    #[arg(long, env = "BANK_ADVERTISE")]
    pub advertise: Option<String>,
    /// Seconds a node's lease on its partitions lasts [default: 3].
    #[arg(long, env = "BANK_LEASE_TTL_SECS")]
    pub lease_ttl_secs: Option<u64>,
    /// Also listen for ISO 8583 messages (docs/ISO8583.md) on this address; needs
    /// --iso8583-pin-key-file [default: off].
    #[arg(long, env = "BANK_ISO8583_LISTEN")]
    pub iso8583_listen: Option<SocketAddr>,
    /// The zone PIN key the ISO 8583 PIN blocks are encrypted under: a file (readable by its
    /// owner only) holding a triple-DES key as 32 or 48 hexadecimal digits.
    #[arg(long, env = "BANK_ISO8583_PIN_KEY_FILE")]
    pub iso8583_pin_key_file: Option<PathBuf>,
    /// Testing only: ISO 8583 PIN blocks arrive in clear (not encrypted); never in production.
    #[arg(long, env = "BANK_ISO8583_CLEAR_PIN_BLOCKS", num_args = 0..=1, default_missing_value = "true")]
    pub iso8583_clear_pin_blocks: Option<bool>,
    /// The bank's currency on the ISO 8583 door, ISO 4217 numeric [default: 978].
    #[arg(long, env = "BANK_ISO8583_CURRENCY")]
    pub iso8583_currency: Option<String>,
    /// Operator command: recover cutting the newest segment's damaged tail, log exactly what was
    /// dropped, close the journal cleanly and exit (then start the server normally).
    #[arg(long)]
    #[serde(skip)]
    pub accept_cut: bool,
    /// Testing only: journal writes fail like a full disk after this many more bytes.
    #[arg(long, env = "BANK_JOURNAL_FAIL_AFTER_BYTES", hide = true)]
    #[serde(skip)]
    pub journal_fail_after_bytes: Option<i64>,
}

/// The tools `bank-server` runs instead of serving.
#[derive(clap::Subcommand, Clone, Debug, PartialEq, Eq)]
pub enum Tool {
    /// Print a new random operator token (256 bits, 64 hexadecimal digits) and exit. Keep it in a
    /// file only its owner can read, for example
    /// `(umask 077; bank-server generate-operator-token > operator-token)`.
    GenerateOperatorToken,
    /// Create the cluster's schema and partitions in PostgreSQL (docs/CLUSTER.md) and exit; run
    /// once per cluster. Running it again with the same number of partitions changes nothing.
    InitCluster {
        /// The cluster's PostgreSQL, `postgres://USER@HOST:PORT/DB`.
        #[arg(long, env = "BANK_STORAGE", hide_env_values = true)]
        storage: String,
        /// How many partitions the accounts are spread over, fixed for the cluster's life.
        #[arg(long)]
        partitions: u32,
    },
}

pub use crate::logging::LogFormat;

/// Settings that are not part of [`ServerConfig`]: how the process around the server behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessSettings {
    /// Where to serve metrics, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Log format.
    pub log_format: LogFormat,
}

macro_rules! layer {
    ($top:expr, $bottom:expr; $($field:ident),* $(,)?) => {
        Settings {
            config: $top.config.or($bottom.config),
            print_config: $top.print_config || $bottom.print_config,
            command: $top.command.or($bottom.command),
            accept_cut: $top.accept_cut || $bottom.accept_cut,
            journal_fail_after_bytes: $top.journal_fail_after_bytes.or($bottom.journal_fail_after_bytes),
            $($field: $top.$field.or($bottom.$field),)*
        }
    };
}

impl Settings {
    /// Reads a settings file.
    pub fn from_file(path: &std::path::Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        toml::from_str(&text).map_err(|error| format!("{}: {error}", path.display()))
    }

    /// `self` where set, else `below`.
    pub fn merge(self, below: Settings) -> Settings {
        layer!(self, below;
            listen, data_dir, operator_token, operator_token_file, operator_failures_burst,
            operator_failures_per_minute, demo, faults, metrics_listen, log_format,
            connections_max, requests_in_flight_max, frame_bytes_max, mailbox_capacity,
            journal_queue_records_max, frame_read_timeout_secs, login_idle_timeout_secs,
            write_queue_frames, write_timeout_secs, account_idle_secs, pin_hash_memory_kib,
            pin_hash_iterations, snapshot_records_interval, client_retention_secs, arbiters,
            shutdown_timeout_secs, pin_key_file, pin_failures_per_connection_burst,
            pin_failures_per_connection_per_minute, pin_failures_per_peer_burst,
            pin_failures_per_peer_per_minute, pin_check_queue_max, recovery, tls_cert, tls_key,
            tls_client_ca, tls_deny_file, tls_handshake_timeout_secs, allow_plaintext,
            connection_reply_bytes_max, reply_bytes_max, connections_per_peer_max,
            unverified_deadline_secs, verified_idle_secs, daily_withdrawal_amount_max,
            daily_withdrawal_count_max, business_time_zone, hold_ttl_secs, statement_movements_max,
            iso8583_listen, iso8583_pin_key_file, iso8583_clear_pin_blocks, iso8583_currency,
            storage, node_id, advertise, lease_ttl_secs,
        )
    }

    /// Flags and environment (already in `self`) over the file named by `--config`, if any.
    pub fn with_file(self) -> Result<Settings, String> {
        match &self.config {
            Some(path) => {
                let file = Settings::from_file(path)?;
                Ok(self.merge(file))
            }
            None => Ok(self),
        }
    }

    /// The operator token, from `operator_token` or the file `operator_token_file` (not both).
    fn operator_token(&self) -> Result<Option<String>, String> {
        let token = match (&self.operator_token, &self.operator_token_file) {
            (Some(_), Some(_)) => {
                return Err("give the operator token or its file, not both".into());
            }
            (Some(token), None) => token.clone(),
            (None, Some(path)) => read_token_file(path)?,
            (None, None) => return Ok(None),
        };
        Ok(Some(token).filter(|token| !token.is_empty()))
    }

    /// The server configuration these settings describe, defaults filled in.
    pub fn resolve(&self) -> Result<(ServerConfig, ProcessSettings), String> {
        let defaults = ServerConfig::new("./data");
        let faults = self.fault_plan()?;
        let data_dir = self.data_dir.clone().unwrap_or(defaults.data_dir);
        let config = ServerConfig {
            listen: self.listen.unwrap_or(defaults.listen),
            pin_key: PinKeySource::File(
                self.pin_key_file
                    .clone()
                    .unwrap_or_else(|| default_pin_key_file(&data_dir)),
            ),
            data_dir,
            clock: defaults.clock.clone(),
            operator_token: self.operator_token()?,
            demo: self.demo.unwrap_or(false),
            limits: self.limits(),
            pin_hash_cost: self.pin_hash_cost(defaults.pin_hash_cost)?,
            faults,
            arbiters: self.arbiters.unwrap_or(defaults.arbiters),
            snapshot_records_interval: self
                .snapshot_records_interval
                .unwrap_or(defaults.snapshot_records_interval)
                .max(1),
            client_retention: seconds(self.client_retention_secs, defaults.client_retention),
            journal_queue_records_max: self
                .journal_queue_records_max
                .unwrap_or(defaults.journal_queue_records_max)
                .max(1),
            shutdown_timeout: seconds(self.shutdown_timeout_secs, defaults.shutdown_timeout),
            recovery: self.recovery.unwrap_or_default(),
            journal_fail_after_bytes: self.journal_fail_after_bytes,
            tls: self.tls_files()?,
            allow_plaintext: self.allow_plaintext.unwrap_or(false),
            banking: self.banking()?,
            iso8583: self.iso8583()?,
            storage: StorageKind::Files,
        };
        let config = ServerConfig {
            storage: self.storage_kind(&config)?,
            ..config
        };
        let process = ProcessSettings {
            metrics_listen: self.metrics_listen,
            log_format: self.log_format.unwrap_or_default(),
        };
        Ok((config, process))
    }

    /// Where the journal lives: the files of the data directory, or PostgreSQL with this node's
    /// id (required there), its advertised address (the listen address by default) and lease.
    fn storage_kind(&self, config: &ServerConfig) -> Result<StorageKind, String> {
        let Some(url) = &self.storage else {
            if self.node_id.is_some() || self.advertise.is_some() || self.lease_ttl_secs.is_some() {
                return Err(
                    "--node-id, --advertise and --lease-ttl-secs need --storage postgres://…"
                        .into(),
                );
            }
            return Ok(StorageKind::Files);
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(
                "--storage: give a PostgreSQL URL, postgres://USER@HOST:PORT/DB (leave it out for the file journal)".into(),
            );
        }
        let node_id = self
            .node_id
            .ok_or("--storage postgres://… needs --node-id (unique in the cluster)")?;
        Ok(StorageKind::Postgres(
            crate::storage::postgres::PostgresConfig {
                url: url.clone(),
                node_id,
                advertise: self
                    .advertise
                    .clone()
                    .unwrap_or_else(|| config.listen.to_string()),
                lease_ttl: seconds(
                    self.lease_ttl_secs,
                    crate::storage::postgres::LEASE_TTL_DEFAULT,
                ),
                queue_records_max: config.journal_queue_records_max,
                // Per partition: its own default, unless set.
                snapshot_every_records: self
                    .snapshot_records_interval
                    .unwrap_or(crate::storage::postgres::SNAPSHOT_EVERY_RECORDS_DEFAULT),
            },
        ))
    }

    /// The ISO 8583 listener these settings ask for: none without an address; with one, PIN
    /// blocks under a key file or, for tests only, in clear (exactly one of the two).
    fn iso8583(&self) -> Result<Option<Iso8583Settings>, String> {
        let clear = self.iso8583_clear_pin_blocks.unwrap_or(false);
        let Some(listen) = self.iso8583_listen else {
            if self.iso8583_pin_key_file.is_some() || clear || self.iso8583_currency.is_some() {
                return Err(
                    "--iso8583-pin-key-file, --iso8583-clear-pin-blocks and --iso8583-currency need --iso8583-listen".into(),
                );
            }
            return Ok(None);
        };
        let pins = match (&self.iso8583_pin_key_file, clear) {
            (Some(path), false) => Iso8583Pins::KeyFile(path.clone()),
            (None, true) => Iso8583Pins::ClearBlocks,
            (Some(_), true) => {
                return Err(
                    "give --iso8583-pin-key-file or --iso8583-clear-pin-blocks, not both".into(),
                )
            }
            (None, false) => {
                return Err(
                    "--iso8583-listen needs --iso8583-pin-key-file (the zone PIN key the PIN blocks are encrypted under)".into(),
                )
            }
        };
        let mut settings = Iso8583Settings::new(listen, pins);
        if let Some(currency) = &self.iso8583_currency {
            if currency.len() != 3 || !currency.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(format!(
                    "--iso8583-currency: {currency:?} is not an ISO 4217 numeric code (three digits)"
                ));
            }
            settings.currency = currency.clone();
        }
        Ok(Some(settings))
    }

    /// The business settings these give, defaults filled in; an unknown time zone or a statement
    /// size outside 1 to 50 is refused.
    fn banking(&self) -> Result<Banking, String> {
        let defaults = Banking::default();
        let time_zone = match &self.business_time_zone {
            None => defaults.time_zone,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("--business-time-zone: {name:?} is not an IANA time zone name")
            })?,
        };
        let statement_movements_max = self
            .statement_movements_max
            .unwrap_or(defaults.statement_movements_max);
        if !(1..=crate::ledger::STATEMENT_MOVEMENTS_MAX as u32).contains(&statement_movements_max) {
            return Err(format!(
                "--statement-movements-max: {statement_movements_max} is not between 1 and {}",
                crate::ledger::STATEMENT_MOVEMENTS_MAX
            ));
        }
        Ok(Banking {
            daily_limits: crate::model::DailyLimits {
                amount: self
                    .daily_withdrawal_amount_max
                    .unwrap_or(defaults.daily_limits.amount),
                count: self
                    .daily_withdrawal_count_max
                    .unwrap_or(defaults.daily_limits.count),
            },
            time_zone,
            hold_ttl: seconds(self.hold_ttl_secs, defaults.hold_ttl),
            statement_movements_max,
        })
    }

    /// The limits these settings give, defaults filled in (counts that must be positive are at
    /// least 1).
    fn limits(&self) -> Limits {
        let limits = Limits::default();
        let rate = |burst: Option<u32>, per_minute: Option<u32>, default: RateLimit| RateLimit {
            burst: burst.unwrap_or(default.burst),
            per_minute: per_minute.unwrap_or(default.per_minute),
        };
        Limits {
            connections_max: self.connections_max.unwrap_or(limits.connections_max),
            requests_in_flight_max: self
                .requests_in_flight_max
                .unwrap_or(limits.requests_in_flight_max)
                .max(1),
            frame_bytes_max: self.frame_bytes_max.unwrap_or(limits.frame_bytes_max),
            mailbox_capacity: self
                .mailbox_capacity
                .unwrap_or(limits.mailbox_capacity)
                .max(1),
            account_idle: seconds(self.account_idle_secs, limits.account_idle),
            frame_read_timeout: seconds(self.frame_read_timeout_secs, limits.frame_read_timeout),
            login_idle_timeout: seconds(self.login_idle_timeout_secs, limits.login_idle_timeout),
            write_queue_frames: self.write_queue_frames.unwrap_or(limits.write_queue_frames),
            write_timeout: seconds(self.write_timeout_secs, limits.write_timeout),
            operator_failures: rate(
                self.operator_failures_burst,
                self.operator_failures_per_minute,
                limits.operator_failures,
            ),
            pin_failures_per_connection: rate(
                self.pin_failures_per_connection_burst,
                self.pin_failures_per_connection_per_minute,
                limits.pin_failures_per_connection,
            ),
            pin_failures_per_peer: rate(
                self.pin_failures_per_peer_burst,
                self.pin_failures_per_peer_per_minute,
                limits.pin_failures_per_peer,
            ),
            pin_check_queue_max: self
                .pin_check_queue_max
                .unwrap_or(limits.pin_check_queue_max)
                .max(1),
            requests_joinable_max: limits.requests_joinable_max,
            connection_reply_bytes_max: self
                .connection_reply_bytes_max
                .unwrap_or(limits.connection_reply_bytes_max)
                .max(1),
            reply_bytes_max: self
                .reply_bytes_max
                .unwrap_or(limits.reply_bytes_max)
                .max(1),
            connections_per_peer_max: self
                .connections_per_peer_max
                .unwrap_or(limits.connections_per_peer_max)
                .max(1),
            unverified_deadline: seconds(self.unverified_deadline_secs, limits.unverified_deadline),
            verified_idle: seconds(self.verified_idle_secs, limits.verified_idle),
            tls_handshake_timeout: seconds(
                self.tls_handshake_timeout_secs,
                limits.tls_handshake_timeout,
            ),
        }
    }

    /// The TLS files: a certificate and a key together, or neither (and then no client CA or
    /// deny file either).
    fn tls_files(&self) -> Result<Option<TlsFiles>, String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                deny_file: self.tls_deny_file.clone(),
            })),
            (None, None) if self.tls_client_ca.is_none() && self.tls_deny_file.is_none() => {
                Ok(None)
            }
            (None, None) => {
                Err("--tls-client-ca and --tls-deny-file need --tls-cert and --tls-key".into())
            }
            _ => Err("give --tls-cert and --tls-key together".into()),
        }
    }

    /// The argon2id cost of the first release's PIN hashes, checked to be one argon2 accepts.
    fn pin_hash_cost(&self, defaults: PinHashCost) -> Result<PinHashCost, String> {
        let cost = PinHashCost {
            memory_kib: self.pin_hash_memory_kib.unwrap_or(defaults.memory_kib),
            iterations: self.pin_hash_iterations.unwrap_or(defaults.iterations),
        };
        if !(8..=4 * 1024 * 1024).contains(&cost.memory_kib) || cost.iterations == 0 {
            return Err(
                "--pin-hash-memory-kib must be 8..=4194304 and --pin-hash-iterations at least 1"
                    .into(),
            );
        }
        Ok(cost)
    }

    /// The fault plan of `--faults`, if given.
    fn fault_plan(&self) -> Result<Option<FaultPlan>, String> {
        self.faults
            .as_ref()
            .map(|text| {
                text.parse::<FaultPlan>()
                    .map_err(|error| format!("--faults: {error}"))
            })
            .transpose()
    }
}

/// `value` seconds, or `default` when not given.
fn seconds(value: Option<u64>, default: Duration) -> Duration {
    value.map_or(default, Duration::from_secs)
}

/// The first line of the operator token file at `path`, which only its owner may read.
fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let shown = path.display();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|error| format!("--operator-token-file {shown}: {error}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "--operator-token-file {shown} can be read by other users (mode {:o}); run `chmod 600 {shown}`",
                mode & 0o777
            ));
        }
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--operator-token-file {shown}: {error}"))?;
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// The effective configuration as it is shown: each field is the configuration file's key of
/// the same name, with the value in force.
#[derive(Serialize)]
struct Effective {
    listen: String,
    data_dir: String,
    operator_token: String,
    demo: bool,
    faults: String,
    metrics_listen: String,
    log_format: LogFormat,
    connections_max: usize,
    requests_in_flight_max: usize,
    frame_bytes_max: usize,
    mailbox_capacity: usize,
    journal_queue_records_max: usize,
    operator_failures_burst: u32,
    operator_failures_per_minute: u32,
    frame_read_timeout_secs: u64,
    login_idle_timeout_secs: u64,
    write_queue_frames: usize,
    write_timeout_secs: u64,
    account_idle_secs: u64,
    connection_reply_bytes_max: usize,
    reply_bytes_max: usize,
    connections_per_peer_max: usize,
    unverified_deadline_secs: u64,
    verified_idle_secs: u64,
    pin_key_file: String,
    pin_failures_per_connection_burst: u32,
    pin_failures_per_connection_per_minute: u32,
    pin_failures_per_peer_burst: u32,
    pin_failures_per_peer_per_minute: u32,
    pin_check_queue_max: usize,
    snapshot_records_interval: u64,
    client_retention_secs: u64,
    arbiters: usize,
    shutdown_timeout_secs: u64,
    recovery: crate::journal::RecoveryMode,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_client_ca: Option<String>,
    tls_deny_file: Option<String>,
    tls_handshake_timeout_secs: u64,
    allow_plaintext: bool,
    /// None (left out) for no limit: `u64::MAX` does not fit a TOML integer.
    daily_withdrawal_amount_max: Option<u64>,
    /// None (left out) for no limit, like the amount.
    daily_withdrawal_count_max: Option<u32>,
    business_time_zone: String,
    hold_ttl_secs: u64,
    statement_movements_max: u32,
    /// The PostgreSQL URL with any password masked; left out for the file journal, like the
    /// three fields after it.
    storage: Option<String>,
    node_id: Option<i32>,
    advertise: Option<String>,
    lease_ttl_secs: Option<u64>,
    /// Left out when the ISO 8583 listener is off, like the fields below.
    iso8583_listen: Option<String>,
    iso8583_pin_key_file: Option<String>,
    iso8583_clear_pin_blocks: Option<bool>,
    iso8583_currency: Option<String>,
}

/// `url` with the password of its user information, if any, shown as `********`.
fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let Some((user_information, host)) = rest.split_once('@') else {
        return url.to_string();
    };
    match user_information.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********@{host}"),
        None => url.to_string(),
    }
}

/// One of the TLS files, as shown (absent when TLS or that file is not configured).
fn tls_path(config: &ServerConfig, path: impl Fn(&TlsFiles) -> Option<&PathBuf>) -> Option<String> {
    config
        .tls
        .as_ref()
        .and_then(path)
        .map(|path| path.display().to_string())
}

/// A limit as shown: none when it is `unlimited`, the value that means no limit.
fn limited<T: PartialEq>(limit: T, unlimited: T) -> Option<T> {
    (limit != unlimited).then_some(limit)
}

/// The effective configuration as TOML, in the file's own format, with secrets masked.
pub fn effective_toml(config: &ServerConfig, process: &ProcessSettings) -> String {
    let limits = &config.limits;
    let iso8583 = config.iso8583.as_ref();
    let postgres = match &config.storage {
        StorageKind::Postgres(postgres) => Some(postgres),
        StorageKind::Files => None,
    };
    let effective = Effective {
        listen: config.listen.to_string(),
        data_dir: config.data_dir.display().to_string(),
        operator_token: if config.operator_token.is_some() {
            "********"
        } else {
            ""
        }
        .into(),
        demo: config.demo,
        faults: config
            .faults
            .map(|plan| plan.to_string())
            .unwrap_or_default(),
        metrics_listen: process
            .metrics_listen
            .map(|address| address.to_string())
            .unwrap_or_default(),
        log_format: process.log_format,
        connections_max: limits.connections_max,
        requests_in_flight_max: limits.requests_in_flight_max,
        frame_bytes_max: limits.frame_bytes_max,
        mailbox_capacity: limits.mailbox_capacity,
        journal_queue_records_max: config.journal_queue_records_max,
        operator_failures_burst: limits.operator_failures.burst,
        operator_failures_per_minute: limits.operator_failures.per_minute,
        frame_read_timeout_secs: limits.frame_read_timeout.as_secs(),
        login_idle_timeout_secs: limits.login_idle_timeout.as_secs(),
        write_queue_frames: limits.write_queue_frames,
        write_timeout_secs: limits.write_timeout.as_secs(),
        account_idle_secs: limits.account_idle.as_secs(),
        connection_reply_bytes_max: limits.connection_reply_bytes_max,
        reply_bytes_max: limits.reply_bytes_max,
        connections_per_peer_max: limits.connections_per_peer_max,
        unverified_deadline_secs: limits.unverified_deadline.as_secs(),
        verified_idle_secs: limits.verified_idle.as_secs(),
        pin_key_file: match &config.pin_key {
            PinKeySource::File(path) => path.display().to_string(),
            PinKeySource::Given(_) => String::new(),
        },
        pin_failures_per_connection_burst: limits.pin_failures_per_connection.burst,
        pin_failures_per_connection_per_minute: limits.pin_failures_per_connection.per_minute,
        pin_failures_per_peer_burst: limits.pin_failures_per_peer.burst,
        pin_failures_per_peer_per_minute: limits.pin_failures_per_peer.per_minute,
        pin_check_queue_max: limits.pin_check_queue_max,
        snapshot_records_interval: config.snapshot_records_interval,
        client_retention_secs: config.client_retention.as_secs(),
        arbiters: config.arbiters,
        shutdown_timeout_secs: config.shutdown_timeout.as_secs(),
        recovery: config.recovery,
        tls_cert: tls_path(config, |files| Some(&files.cert)),
        tls_key: tls_path(config, |files| Some(&files.key)),
        tls_client_ca: tls_path(config, |files| files.client_ca.as_ref()),
        tls_deny_file: tls_path(config, |files| files.deny_file.as_ref()),
        tls_handshake_timeout_secs: limits.tls_handshake_timeout.as_secs(),
        allow_plaintext: config.allow_plaintext,
        daily_withdrawal_amount_max: limited(
            config.banking.daily_limits.amount,
            crate::model::DailyLimits::NONE.amount,
        ),
        daily_withdrawal_count_max: limited(
            config.banking.daily_limits.count,
            crate::model::DailyLimits::NONE.count,
        ),
        business_time_zone: config.banking.time_zone.name().to_string(),
        hold_ttl_secs: config.banking.hold_ttl.as_secs(),
        statement_movements_max: config.banking.statement_movements_max,
        iso8583_listen: iso8583.map(|iso| iso.listen.to_string()),
        iso8583_pin_key_file: iso8583.and_then(|iso| match &iso.pins {
            Iso8583Pins::KeyFile(path) => Some(path.display().to_string()),
            Iso8583Pins::Key(_) | Iso8583Pins::ClearBlocks => None,
        }),
        iso8583_clear_pin_blocks: iso8583.map(|iso| matches!(iso.pins, Iso8583Pins::ClearBlocks)),
        iso8583_currency: iso8583.map(|iso| iso.currency.clone()),
        storage: postgres.map(|postgres| mask_password(&postgres.url)),
        node_id: postgres.map(|postgres| postgres.node_id),
        advertise: postgres.map(|postgres| postgres.advertise.clone()),
        lease_ttl_secs: postgres.map(|postgres| postgres.lease_ttl.as_secs()),
    };
    toml::to_string(&effective)
        .unwrap_or_else(|error| format!("# cannot show the configuration: {error}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_defaults() {
        let file: Settings = toml::from_str(
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/srv/bank\"\nconnections_max = 7",
        )
        .unwrap();
        let flags =
            Settings::try_parse_from(["bank-server", "--listen", "127.0.0.1:9100"]).unwrap();
        let (config, _) = flags.merge(file).resolve().unwrap();
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.data_dir, PathBuf::from("/srv/bank"));
        assert_eq!(config.limits.connections_max, 7);
        assert_eq!(
            config.limits.requests_in_flight_max,
            Limits::default().requests_in_flight_max
        );
    }

    #[test]
    fn the_budgets_and_slots_come_from_flags_the_environment_names_and_the_file() {
        let file: Settings = toml::from_str(
            "connection_reply_bytes_max = 1000\nreply_bytes_max = 9000\nverified_idle_secs = 7",
        )
        .unwrap();
        let flags = Settings::try_parse_from([
            "bank-server",
            "--connections-per-peer-max",
            "3",
            "--unverified-deadline-secs",
            "5",
        ])
        .unwrap();
        let (config, process) = flags.merge(file).resolve().unwrap();
        let limits = &config.limits;
        assert_eq!(limits.connection_reply_bytes_max, 1000);
        assert_eq!(limits.reply_bytes_max, 9000);
        assert_eq!(limits.connections_per_peer_max, 3);
        assert_eq!(limits.unverified_deadline, Duration::from_secs(5));
        assert_eq!(limits.verified_idle, Duration::from_secs(7));
        let text = effective_toml(&config, &process);
        assert!(text.contains("connections_per_peer_max = 3"), "{text}");
        let defaults = Settings::default().resolve().unwrap().0.limits;
        assert_eq!(defaults.connection_reply_bytes_max, 256 * 1024);
        assert_eq!(defaults.connections_per_peer_max, 64);
    }

    #[test]
    fn daily_limits_are_shown_only_when_set_and_read_back() {
        let (config, process) = Settings::default().resolve().unwrap();
        let text = effective_toml(&config, &process);
        // No limit is the key's absence: TOML has no integer as large as the no-limit amount.
        assert!(!text.contains("cannot show"), "{text}");
        assert!(!text.contains("daily_withdrawal"), "{text}");
        let flags = Settings::try_parse_from([
            "bank-server",
            "--daily-withdrawal-amount-max",
            "50000",
            "--daily-withdrawal-count-max",
            "3",
        ])
        .unwrap();
        let (config, process) = flags.resolve().unwrap();
        let text = effective_toml(&config, &process);
        assert!(
            text.contains("daily_withdrawal_amount_max = 50000"),
            "{text}"
        );
        assert!(text.contains("daily_withdrawal_count_max = 3"), "{text}");
        let limits: String = text
            .lines()
            .filter(|line| line.starts_with("daily_withdrawal"))
            .map(|line| format!("{line}\n"))
            .collect();
        let read_back: Settings = toml::from_str(&limits).unwrap();
        let (again, _) = read_back.resolve().unwrap();
        assert_eq!(again.banking.daily_limits, config.banking.daily_limits);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        assert!(toml::from_str::<Settings>("listn = \"127.0.0.1:1\"").is_err());
    }

    #[test]
    fn the_printed_configuration_masks_the_token_and_reads_back() {
        let settings = Settings {
            operator_token: Some("hunter2-token".into()),
            ..Settings::default()
        };
        let (config, process) = settings.resolve().unwrap();
        let text = effective_toml(&config, &process);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("operator_token = \"********\""), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:7878\""), "{text}");
        assert!(text.contains("pin_key_file = \"./data.pin-key\""), "{text}");
    }

    #[test]
    fn the_pin_key_file_and_failure_limits_come_from_flags_and_the_file() {
        let file: Settings = toml::from_str(
            "pin_key_file = \"/run/secrets/bank-pin-key\"\npin_failures_per_peer_burst = 7\npin_hash_memory_kib = 19456",
        )
        .unwrap();
        let flags = Settings::try_parse_from([
            "bank-server",
            "--pin-failures-per-connection-per-minute",
            "3",
        ])
        .unwrap();
        let (config, _) = flags.merge(file).resolve().unwrap();
        assert!(
            matches!(&config.pin_key, PinKeySource::File(path) if path == std::path::Path::new("/run/secrets/bank-pin-key"))
        );
        assert_eq!(config.limits.pin_failures_per_peer.burst, 7);
        assert_eq!(config.limits.pin_failures_per_connection.per_minute, 3);
        assert_eq!(
            config.limits.pin_failures_per_connection.burst,
            Limits::default().pin_failures_per_connection.burst
        );
    }

    #[test]
    fn tls_comes_from_flags_and_needs_a_certificate_and_a_key() {
        let flags = Settings::try_parse_from([
            "bank-server",
            "--tls-cert",
            "/etc/bank/cert.pem",
            "--tls-key",
            "/etc/bank/key.pem",
            "--allow-plaintext",
        ])
        .unwrap();
        let (config, process) = flags.resolve().unwrap();
        let files = config.tls.as_ref().unwrap();
        assert_eq!(files.key, PathBuf::from("/etc/bank/key.pem"));
        assert_eq!(files.client_ca, None);
        assert!(config.allow_plaintext);
        let text = effective_toml(&config, &process);
        assert!(text.contains("tls_cert = \"/etc/bank/cert.pem\""), "{text}");
        let half = Settings::try_parse_from(["bank-server", "--tls-cert", "c.pem"]).unwrap();
        assert!(half.resolve().is_err());
        let ca_only =
            Settings::try_parse_from(["bank-server", "--tls-client-ca", "ca.pem"]).unwrap();
        assert!(ca_only.resolve().is_err());
    }
    #[test]
    fn the_iso8583_listener_needs_a_pin_key_file_or_the_explicit_clear_mode() {
        let parse = |arguments: &[&str]| {
            Settings::try_parse_from(["bank-server"].iter().chain(arguments))
                .unwrap()
                .resolve()
        };
        let (config, process) = parse(&[
            "--iso8583-listen",
            "127.0.0.1:8583",
            "--iso8583-pin-key-file",
            "/run/secrets/zone-pin-key",
            "--iso8583-currency",
            "826",
        ])
        .unwrap();
        let iso8583 = config.iso8583.as_ref().unwrap();
        assert_eq!(iso8583.listen.port(), 8583);
        assert_eq!(iso8583.currency, "826");
        assert!(
            matches!(&iso8583.pins, Iso8583Pins::KeyFile(path) if path.ends_with("zone-pin-key"))
        );
        let text = effective_toml(&config, &process);
        assert!(
            text.contains("iso8583_listen = \"127.0.0.1:8583\""),
            "{text}"
        );
        let read_back: Settings = toml::from_str(
            &text
                .lines()
                .filter(|line| line.starts_with("iso8583"))
                .map(|line| format!("{line}\n"))
                .collect::<String>(),
        )
        .unwrap();
        assert_eq!(
            read_back.resolve().unwrap().0.iso8583.unwrap().currency,
            "826"
        );

        let (clear, _) = parse(&[
            "--iso8583-listen",
            "127.0.0.1:0",
            "--iso8583-clear-pin-blocks",
        ])
        .unwrap();
        assert!(matches!(
            clear.iso8583.unwrap().pins,
            Iso8583Pins::ClearBlocks
        ));
        let (off, process) = parse(&[]).unwrap();
        assert!(off.iso8583.is_none());
        assert!(!effective_toml(&off, &process).contains("iso8583"));
        for refused in [
            &["--iso8583-listen", "127.0.0.1:0"][..],
            &["--iso8583-pin-key-file", "key"],
            &[
                "--iso8583-listen",
                "127.0.0.1:0",
                "--iso8583-clear-pin-blocks",
                "--iso8583-pin-key-file",
                "key",
            ],
            &[
                "--iso8583-listen",
                "127.0.0.1:0",
                "--iso8583-clear-pin-blocks",
                "--iso8583-currency",
                "EUR",
            ],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn postgres_storage_needs_a_node_id_and_never_shows_its_password() {
        let parse = |arguments: &[&str]| {
            Settings::try_parse_from(["bank-server"].iter().chain(arguments))
                .unwrap()
                .resolve()
        };
        let (config, process) = parse(&[
            "--storage",
            "postgres://bank:s3cret-pass@db.internal:5432/bank",
            "--node-id",
            "2",
            "--listen",
            "127.0.0.1:7002",
        ])
        .unwrap();
        match &config.storage {
            StorageKind::Postgres(postgres) => {
                assert_eq!(postgres.node_id, 2);
                assert_eq!(postgres.advertise, "127.0.0.1:7002");
                assert_eq!(
                    postgres.lease_ttl,
                    crate::storage::postgres::LEASE_TTL_DEFAULT
                );
            }
            StorageKind::Files => panic!("PostgreSQL storage was asked for"),
        }
        let text = effective_toml(&config, &process);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("storage = \"postgres://bank:********@db.internal:5432/bank\""),
            "{text}"
        );
        let (files, process) = parse(&[]).unwrap();
        assert!(matches!(files.storage, StorageKind::Files));
        assert!(!effective_toml(&files, &process).contains("storage"));
        for refused in [
            &["--storage", "postgres://bank@db/bank"][..],
            &["--storage", "mysql://bank@db/bank", "--node-id", "1"],
            &["--node-id", "1"],
        ] {
            assert!(parse(refused).is_err(), "{refused:?}");
        }
    }
}
