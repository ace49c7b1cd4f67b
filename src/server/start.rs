//! Starting and stopping: [`RunningServer`] recovers the data directory, starts the actors on a
//! thread of its own, opens the demo accounts when asked, and only then accepts connections.

use super::door::iso8583::{Iso8583Door, PinBlocks};
use super::error::ServerError;
use super::settings::{journal_config, Iso8583Pins, Iso8583Settings, ServerConfig, StorageKind};
use super::tls::Tls;
use super::{demo, gateway, pins, Bank};
use crate::journal::JournalConfig;
use crate::pin::PinKey;
use crate::pin_block::ZonePinKey;
use crate::storage::Storage;
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// File descriptors the server needs besides its connections (journal, listener, runtime).
const FILES_RESERVED: u64 = 64;

/// Refuses an operator token too weak to guard operator operations.
fn check_operator_token(config: &ServerConfig) -> Result<(), ServerError> {
    match &config.operator_token {
        Some(token) => crate::operator::check_strength(token).map_err(ServerError::Start),
        None => Ok(()),
    }
}

/// Raises the soft limit on open files towards what `connections_max` needs (up to the hard
/// limit). Without it a default soft limit of 1024 would cap connections far below the setting.
fn raise_open_file_limit(connections_max: usize) {
    let wanted = connections_max as u64 + FILES_RESERVED;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below what the connection limit needs; connections may be refused early"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

/// The bound listeners (the ATM protocol's, and the ISO 8583 door's when configured) and the TLS
/// every connection they accept goes through, if any.
struct Listener {
    /// The ATM protocol's listener.
    atm: std::net::TcpListener,
    /// The ISO 8583 listener, with its door.
    iso8583: Option<(std::net::TcpListener, Iso8583Door)>,
    /// TLS on both.
    tls: Option<Arc<Tls>>,
}

/// What the server thread reports once it is serving (or why it is not).
type Started = Result<(Arc<Bank>, System), String>;

/// A running server: its address, and the means to stop it.
pub struct RunningServer {
    /// The address it listens on (the real port when 0 was asked for).
    pub local_addr: SocketAddr,
    /// The ISO 8583 listener's address, when there is one.
    iso8583_addr: Option<SocketAddr>,
    /// The shared context.
    bank: Arc<Bank>,
    /// The actix system the actors run in.
    system: System,
    /// The thread running `system`; taken by the shutdown.
    thread: Option<std::thread::JoinHandle<()>>,
    /// How long a graceful shutdown waits for connections to finish.
    shutdown_timeout: Duration,
    /// TLS on the listener, when configured; reloaded by [`RunningServer::reload_tls`].
    tls: Option<Arc<Tls>>,
}

impl RunningServer {
    /// Recovers the data directory and starts serving on a thread of its own.
    pub fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
        if let StorageKind::Postgres(postgres) = &config.storage {
            // Refused before the cluster's partitions are taken.
            check_operator_token(&config)?;
            config.check_transport().map_err(ServerError::Start)?;
            // Bound first, so a node listening on port 0 advertises the port it got.
            let (listener, local_addr) = bind(config.listen)?;
            let mut postgres = postgres.clone();
            if postgres.advertise == config.listen.to_string() {
                postgres.advertise = local_addr.to_string();
            }
            let storage = Storage::open_postgres(postgres).map_err(ServerError::Start)?;
            return Self::start_bound(config, storage, Some((listener, local_addr)));
        }
        let journal_config = journal_config(&config);
        Self::start_with_journal(config, journal_config)
    }

    /// Like [`RunningServer::start`], with the journal's settings given in full (tests use this to
    /// put a failing file layer under the journal).
    pub fn start_with_journal(
        config: ServerConfig,
        journal_config: JournalConfig,
    ) -> Result<RunningServer, ServerError> {
        // Refused before the data directory is recovered and locked.
        check_operator_token(&config)?;
        config.check_transport().map_err(ServerError::Start)?;
        let journal = Storage::open_files(journal_config)?;
        Self::start_with_storage(config, journal)
    }

    /// Like [`RunningServer::start`], on storage opened by the caller: any [`crate::storage::Log`]
    /// (the file journal, or [`Storage::in_memory`] for tests that need no disk). The server
    /// closes it when it stops, and on a failed start.
    pub fn start_with_storage(
        config: ServerConfig,
        journal: Storage,
    ) -> Result<RunningServer, ServerError> {
        Self::start_bound(config, journal, None)
    }

    /// Like [`RunningServer::start_with_storage`], with the ATM listener bound already when
    /// `bound` is given.
    fn start_bound(
        config: ServerConfig,
        journal: Storage,
        bound: Option<(std::net::TcpListener, SocketAddr)>,
    ) -> Result<RunningServer, ServerError> {
        let tls = match check_operator_token(&config).and_then(|()| load_tls(&config)) {
            Ok(tls) => tls,
            Err(error) => {
                journal.close();
                return Err(error);
            }
        };
        raise_open_file_limit(config.limits.connections_max);
        let pin_key = match pins::open_pin_key(&config.pin_key, &config.data_dir, &journal) {
            Ok(key) => key,
            Err(reason) => {
                // Let go of the data directory: the operator fixes the key and starts again.
                journal.close();
                return Err(ServerError::PinKey(reason));
            }
        };
        let (listener, local_addr) = match bound.map_or_else(|| bind(config.listen), Ok) {
            Ok(bound) => bound,
            Err(error) => {
                journal.close();
                return Err(error);
            }
        };
        let iso8583 = match config.iso8583.as_ref().map(iso8583_door).transpose() {
            Ok(iso8583) => iso8583,
            Err(error) => {
                journal.close();
                return Err(error);
            }
        };
        let iso8583_addr = iso8583.as_ref().map(|(_, address, _)| *address);
        let listener = Listener {
            atm: listener,
            iso8583: iso8583.map(|(listener, _, door)| (listener, door)),
            tls: tls.clone(),
        };
        let shutdown_timeout = config.shutdown_timeout;
        let (started, on_started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("bank-server".into())
            .spawn(move || serve(config, journal, pin_key, listener, started))
            .map_err(|error| ServerError::Start(error.to_string()))?;
        let (bank, system) = on_started
            .recv()
            .map_err(|_| ServerError::Start("the server thread died".into()))?
            .map_err(ServerError::Start)?;
        tracing::info!(address = %local_addr, tls = tls.is_some(), "bank server listening");
        if let Some(address) = iso8583_addr {
            tracing::info!(%address, tls = tls.is_some(), "iso8583 listener");
        }
        Ok(RunningServer {
            local_addr,
            iso8583_addr,
            bank,
            system,
            thread: Some(thread),
            shutdown_timeout,
            tls,
        })
    }

    /// Reads the TLS files again (on SIGHUP): the certificate, the key, the client CA bundle and
    /// the deny file. New connections use them; connections that are open keep theirs. A failed
    /// reload keeps the configuration in use and says why. Without TLS there is nothing to do.
    pub fn reload_tls(&self) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.reload().inspect_err(|reason| {
                tracing::error!(target: "security", %reason, "TLS reload failed; the previous configuration stays in use");
            }),
            None => Ok(()),
        }
    }

    /// TLS on the listener, when configured (for tests and audits).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// The address the ISO 8583 door listens on (the real port when 0 was asked for), when the
    /// configuration has one.
    pub fn iso8583_addr(&self) -> Option<SocketAddr> {
        self.iso8583_addr
    }

    /// The shared context (for tests and audits).
    pub fn bank(&self) -> &Arc<Bank> {
        &self.bank
    }

    /// Shuts down gracefully, in this order: stop accepting connections; stop reading requests;
    /// let the requests in flight finish and their replies go out (for at most
    /// [`ServerConfig::shutdown_timeout`]); close the connections; stop the actors; write and
    /// sync everything the journal holds. Returns when all of that is done.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.bank.begin_shutdown();
        let deadline = std::time::Instant::now() + self.shutdown_timeout;
        while self.bank.stats().connections.load(Ordering::Relaxed) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = self.bank.stats().connections.load(Ordering::Relaxed);
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown deadline passed with connections still open"
            );
        }
        self.system.stop();
        let _ = thread.join();
        self.bank.storage().close();
        tracing::info!(
            lsn = self.bank.storage().stats().durable_lsn,
            "journal closed; shutdown complete"
        );
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The plaintext rule, then TLS loaded from its files when configured.
fn load_tls(config: &ServerConfig) -> Result<Option<Arc<Tls>>, ServerError> {
    config.check_transport().map_err(ServerError::Start)?;
    match &config.tls {
        Some(files) => Tls::load(files.clone())
            .map(|tls| Some(Arc::new(tls)))
            .map_err(ServerError::Tls),
        None => Ok(None),
    }
}

/// Binds the ISO 8583 listener and makes its door, reading the zone PIN key from its file.
fn iso8583_door(
    settings: &Iso8583Settings,
) -> Result<(std::net::TcpListener, SocketAddr, Iso8583Door), ServerError> {
    let pins = match &settings.pins {
        Iso8583Pins::KeyFile(path) => {
            PinBlocks::Encrypted(Box::new(ZonePinKey::from_file(path).map_err(|error| {
                ServerError::Start(format!("--iso8583-pin-key-file: {error}"))
            })?))
        }
        Iso8583Pins::Key(key) => PinBlocks::Encrypted(key.clone()),
        Iso8583Pins::ClearBlocks => {
            tracing::warn!(
                target: "security",
                "ISO 8583 PIN blocks are read in clear (--iso8583-clear-pin-blocks): for tests only"
            );
            PinBlocks::Clear
        }
    };
    let (listener, address) = bind(settings.listen)?;
    Ok((
        listener,
        address,
        Iso8583Door::new(pins, &settings.currency),
    ))
}

/// Binds the listener (non-blocking, for tokio) and reads the address it got.
fn bind(listen: SocketAddr) -> Result<(std::net::TcpListener, SocketAddr), ServerError> {
    let listener = std::net::TcpListener::bind(listen).map_err(|source| ServerError::Listen {
        address: listen,
        source,
    })?;
    let start_error = |error: std::io::Error| ServerError::Start(error.to_string());
    listener.set_nonblocking(true).map_err(start_error)?;
    let local_addr = listener.local_addr().map_err(start_error)?;
    Ok((listener, local_addr))
}

/// The server thread: starts the actix system and the bank, reports on `started`, then runs the
/// system until it is stopped.
fn serve(
    config: ServerConfig,
    journal: Storage,
    pin_key: PinKey,
    listener: Listener,
    started: mpsc::Sender<Started>,
) {
    let system = System::new();
    let bank = system.block_on(start_bank(config, journal, pin_key, listener));
    let ok = bank.is_ok();
    let _ = started.send(bank.map(|bank| (bank, System::current())));
    if ok {
        let _ = system.run();
    }
}

/// Starts the arbiters and the bank on them, the sweep of idle clients, the demo accounts when
/// asked for (durable before anything is accepted, and untouched by injected faults, which are
/// armed after them), and finally the gateway.
async fn start_bank(
    config: ServerConfig,
    journal: Storage,
    pin_key: PinKey,
    listener: Listener,
) -> Result<Arc<Bank>, String> {
    let arbiter_count = if config.arbiters == 0 {
        std::thread::available_parallelism().map_or(2, |cores| cores.get())
    } else {
        config.arbiters
    };
    let arbiters = (0..arbiter_count)
        .map(|_| Arbiter::new().handle())
        .collect();
    let bank = Bank::new(&config, journal, pin_key, arbiters);
    let sweeper = bank.clone();
    actix::spawn(async move { sweeper.forget_idle_clients_forever().await });
    if !bank.operator_is_set() {
        tracing::warn!("no operator token set: creating accounts is disabled");
    }
    if config.demo {
        if let Err(reason) = demo::open_demo_accounts(&bank).await {
            abandon(&bank);
            return Err(reason);
        }
    }
    bank.arm_faults(config.faults);
    bank.resume_background();
    // In cluster mode the partitions served here change from now on; the bank hears of each.
    bank.storage()
        .set_placement_hook(Arc::new(super::background::PlacementListener {
            bank: Arc::downgrade(&bank),
        }));
    match doors(&bank, listener.atm, listener.iso8583) {
        Ok(doors) => {
            gateway::Gateway::start_secured(bank.clone(), doors, listener.tls);
            Ok(bank)
        }
        Err(error) => {
            abandon(&bank);
            Err(error.to_string())
        }
    }
}

/// The listeners on the runtime, each with its door.
fn doors(
    bank: &Bank,
    atm: std::net::TcpListener,
    iso8583: Option<(std::net::TcpListener, Iso8583Door)>,
) -> std::io::Result<Vec<(tokio::net::TcpListener, Arc<dyn gateway::Entrance>)>> {
    let door: Arc<dyn gateway::Entrance> = Arc::new(super::door::bincode::BincodeDoor::new(bank));
    let mut doors = vec![(tokio::net::TcpListener::from_std(atm)?, door)];
    if let Some((listener, door)) = iso8583 {
        doors.push((tokio::net::TcpListener::from_std(listener)?, Arc::new(door)));
    }
    Ok(doors)
}

/// Gives up a start that failed after the bank was made: stops its arbiters and lets go of the
/// data directory, so that the caller may start again.
fn abandon(bank: &Bank) {
    bank.begin_shutdown();
    for arbiter in &bank.arbiters {
        arbiter.stop();
    }
    bank.storage().close();
}
