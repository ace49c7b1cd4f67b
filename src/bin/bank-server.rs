//! `bank-server`: runs the bank. Settings come from flags, `BANK_…` environment variables and an
//! optional TOML file (see `actor_bank::config`); everything else is the library.
//!
//! Nothing here writes with `println!`/`eprintln!`: a closed standard output or error must never
//! panic the server (see `actor_bank::logging`).

use actor_bank::config::{Settings, Tool};
use actor_bank::journal::{Journal, Progress};
use actor_bank::logging::{self, say};
use actor_bank::server::RunningServer;
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

/// mimalloc instead of the C library's allocator: with thousands of connections, glibc's malloc
/// and free (arenas shared between the arbiter threads, consolidation of freed chunks) took 11 %
/// of the server's time in the login-storm ramp (docs/BENCHMARKS.md, section 8).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory recovery freed back to the operating system at once. Reading the snapshot
/// and replaying the journal allocate and free far more than the recovered state keeps (the
/// snapshot's bytes alone, as large as the state itself); mimalloc would return those pages only
/// after its purge delay and only from heaps that allocate again, so an idle server would keep
/// them resident (about 120 MiB at a million accounts, docs/BENCHMARKS.md).
fn give_back_recovery_memory() {
    // SAFETY: `mi_collect` takes no pointer and may be called from any thread at any time; it
    // only frees pages that no allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Turns transparent huge pages off for this process, before the ledger is built. mimalloc asks
/// the kernel for huge pages for its large regions, and the kernel then zeroes 2 MiB at the
/// first touch of each, where the ledger's small allocations touch far less: recovering a
/// million accounts with ten million records spent half its CPU time in the kernel zeroing
/// pages, and twice the system time it spends without them (docs/BENCHMARKS.md, section 13).
/// Failing to turn them off (an old kernel) changes nothing else.
fn without_transparent_huge_pages() -> Result<(), String> {
    rustix::thread::disable_transparent_huge_pages(true)
        .map_err(|error| format!("cannot turn transparent huge pages off: {error}"))
}

fn main() -> ExitCode {
    let huge_pages = without_transparent_huge_pages();
    let code = run(huge_pages);
    logging::flush();
    code
}

fn run(huge_pages: Result<(), String>) -> ExitCode {
    let matches = Settings::command().get_matches();
    let settings = match Settings::from_arg_matches(&matches) {
        Ok(settings) => settings,
        Err(error) => error.exit(),
    };
    match &settings.command {
        Some(Tool::GenerateOperatorToken) => {
            say(std::io::stdout(), &actor_bank::operator::generate());
            return ExitCode::SUCCESS;
        }
        Some(Tool::InitCluster {
            storage,
            partitions,
        }) => return init_cluster(storage, *partitions),
        None => {}
    }
    let token_on_command_line =
        matches.value_source("operator_token") == Some(clap::parser::ValueSource::CommandLine);
    let settings = match settings.with_file() {
        Ok(settings) => settings,
        Err(error) => return fail(&format!("cannot read the configuration: {error}")),
    };
    let (config, process) = match settings.resolve() {
        Ok(resolved) => resolved,
        Err(error) => return fail(&error),
    };
    if settings.print_config {
        let _ = std::io::Write::write_all(
            &mut std::io::stdout(),
            actor_bank::config::effective_toml(&config, &process).as_bytes(),
        );
        return ExitCode::SUCCESS;
    }
    logging::init(process.log_format);
    if let Err(reason) = huge_pages {
        tracing::warn!(%reason, "transparent huge pages stay on");
    }
    if token_on_command_line {
        tracing::warn!(
            "the operator token was given with --operator-token, where every local user can read it (ps); use BANK_OPERATOR_TOKEN or --operator-token-file"
        );
    }
    if settings.accept_cut {
        return accept_cut(&config);
    }
    if let Some(address) = process.metrics_listen {
        match actor_bank::metrics::install(address) {
            Ok(bound) => {
                tracing::info!(address = %bound, "serving metrics");
                // Like the listening line below: with port 0 this is how a caller learns it.
                say(
                    std::io::stdout(),
                    &format!("bank-server metrics on {bound}"),
                );
            }
            Err(error) => return fail(&error),
        }
    }
    let server = match RunningServer::start(config) {
        Ok(server) => server,
        Err(error) => return fail(&error.to_string()),
    };
    give_back_recovery_memory();
    // Listened for before the listening line: a SIGTERM sent as soon as a supervisor reads the
    // line must stop the server gracefully, not end it by the signal's default action.
    let stop = StopSignals::listen();
    // The addresses actually bound (with `--listen …:0` the operating system picked the port): a
    // supervisor or test reads them from these lines, the ISO 8583 one first.
    if let Some(address) = server.iso8583_addr() {
        say(
            std::io::stdout(),
            &format!("bank-server iso8583 on {address}"),
        );
    }
    say(
        std::io::stdout(),
        &format!("bank-server listening on {}", server.local_addr),
    );
    // SIGHUP reloads the TLS files; a failed reload keeps the configuration in use (logged).
    let reload = || {
        let _ = server.reload_tls();
    };
    if let Err(error) = stop.and_then(|stop| stop.wait(server.bank().storage(), reload)) {
        tracing::error!(%error, "cannot wait for signals");
    }
    tracing::info!("shutting down");
    let storage = server.bank().storage().clone();
    server.stop();
    if storage.is_partitioned() && storage.failure().is_some() {
        // The journal failed closed: a supervisor starts the node again, and it rejoins.
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// `bank-server init-cluster`: creates the cluster's schema and partitions, and says so.
fn init_cluster(storage: &str, partitions: u32) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.to_string()),
    };
    match runtime.block_on(actor_bank::storage::postgres::init_cluster(
        storage, partitions,
    )) {
        Ok(()) => {
            say(
                std::io::stdout(),
                &format!("cluster ready: {partitions} partitions"),
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

/// The operator's answer to a refused tail: recover cutting the newest segment after its last
/// whole batch, say exactly what was dropped, close the journal cleanly and exit.
fn accept_cut(config: &actor_bank::server::ServerConfig) -> ExitCode {
    let mut journal_config = actor_bank::server::journal_config(config);
    journal_config.recovery = actor_bank::journal::RecoveryMode::AcceptCut;
    let journal = match Journal::open(journal_config) {
        Ok(journal) => journal,
        Err(error) => return fail(&format!("cannot open the journal: {error}")),
    };
    let report = journal
        .cut()
        .unwrap_or_else(|| "nothing to cut: the journal's tail is clean".into());
    say(std::io::stdout(), &format!("bank-server: {report}"));
    journal.close();
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    tracing::error!(%message, "cannot start");
    say(std::io::stderr(), &format!("bank-server: {message}"));
    ExitCode::FAILURE
}

/// The signals that stop the server (SIGINT, SIGTERM) and the one that reloads its TLS files
/// (SIGHUP), registered when made, with the runtime that waits for them.
struct StopSignals {
    /// Runs the wait.
    runtime: tokio::runtime::Runtime,
    /// SIGTERM, registered from the start.
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    /// SIGINT, registered from the start.
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    /// SIGHUP, registered from the start (its default action would end the process).
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Registers the handlers now, so that no stop signal sent from here on is missed.
    fn listen() -> std::io::Result<StopSignals> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let entered = runtime.enter();
            let terminate = signal(SignalKind::terminate())?;
            let interrupt = signal(SignalKind::interrupt())?;
            let hangup = signal(SignalKind::hangup())?;
            drop(entered);
            Ok(StopSignals {
                runtime,
                terminate,
                interrupt,
                hangup,
            })
        }
        #[cfg(not(unix))]
        Ok(StopSignals { runtime })
    }

    /// Blocks until SIGINT or SIGTERM. If the journal fails closed meanwhile, says so on standard
    /// output too (standard error may be what failed) and keeps serving `unavailable` until
    /// stopped, or, for a node of a cluster, returns (the node stops, and exits with a failure).
    /// Each SIGHUP meanwhile calls `reload`.
    fn wait(self, journal: &Journal, reload: impl Fn()) -> std::io::Result<()> {
        #[cfg(unix)]
        let StopSignals {
            runtime,
            mut terminate,
            mut interrupt,
            mut hangup,
        } = self;
        #[cfg(not(unix))]
        let _ = &reload;
        #[cfg(not(unix))]
        let StopSignals { runtime } = self;
        let mut progress = journal.progress();
        runtime.block_on(async {
            let failed = async {
                if let Ok(progress) = progress
                    .wait_for(|progress| matches!(progress, Progress::Failed(_)))
                    .await
                {
                    if let Progress::Failed(reason) = &*progress {
                        say(
                            std::io::stdout(),
                            &format!(
                                "bank-server: the journal failed closed: {reason}; no change is \
                                 acknowledged until a restart"
                            ),
                        );
                    }
                }
                // A node of a cluster stops instead: its clients go on at the other nodes, which
                // take its partitions over, rather than being answered `unavailable` here.
                if !journal.is_partitioned() {
                    std::future::pending::<()>().await
                }
            };
            #[cfg(unix)]
            {
                tokio::pin!(failed);
                loop {
                    tokio::select! {
                        _ = interrupt.recv() => return Ok(()),
                        _ = terminate.recv() => return Ok(()),
                        _ = hangup.recv() => {
                            tracing::info!(target: "security", "SIGHUP: reloading the TLS files");
                            reload();
                        }
                        () = &mut failed => return Ok(()),
                    }
                }
            }
            #[cfg(not(unix))]
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                () = failed => Ok(()),
            }
        })
    }
}
