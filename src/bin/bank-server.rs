//! `bank-server`: runs the bank. Flags become a [`ServerConfig`]; everything else is the library.

use actor_bank::faults::FaultPlan;
use actor_bank::pin::PinHashCost;
use actor_bank::server::{RunningServer, ServerConfig};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// An exactly-once bank server for ATMs.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Arguments {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Directory for the journal and snapshots (created if missing).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Token that authorises creating accounts. Without one, creating accounts is disabled.
    #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
    operator_token: Option<String>,
    /// Open the lab's sample accounts (123456789/1234, 987654321/5678) if they do not exist.
    #[arg(long)]
    demo: bool,
    /// Inject faults, for testing: drop-request=P,drop-reply=P,crash-actor=P,delay-ms=N,seed=S.
    #[arg(long)]
    faults: Option<FaultPlan>,
    /// Maximum open connections.
    #[arg(long, default_value_t = 10_000)]
    connections_max: usize,
    /// Maximum requests in flight per connection.
    #[arg(long, default_value_t = 64)]
    requests_in_flight_max: usize,
    /// Maximum frame body in bytes.
    #[arg(long, default_value_t = actor_bank::codec::FRAME_BYTES_MAX_DEFAULT)]
    frame_bytes_max: usize,
    /// Memory cost of new PIN hashes in KiB (argon2id; default 19456, the OWASP recommendation).
    #[arg(long, default_value_t = PinHashCost::default().memory_kib)]
    pin_hash_memory_kib: u32,
    /// Passes of new PIN hashes (argon2id).
    #[arg(long, default_value_t = PinHashCost::default().iterations)]
    pin_hash_iterations: u32,
    /// Seconds an account actor stays alive without requests.
    #[arg(long, default_value_t = 60)]
    account_idle_secs: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let arguments = Arguments::parse();
    let mut config = ServerConfig::new(arguments.data_dir);
    config.listen = arguments.listen;
    config.operator_token = arguments.operator_token;
    config.demo = arguments.demo;
    config.faults = arguments.faults;
    config.limits.connections_max = arguments.connections_max;
    config.limits.requests_in_flight_max = arguments.requests_in_flight_max;
    config.limits.frame_bytes_max = arguments.frame_bytes_max;
    config.limits.account_idle = Duration::from_secs(arguments.account_idle_secs);
    config.pin_hash_cost = PinHashCost {
        memory_kib: arguments.pin_hash_memory_kib,
        iterations: arguments.pin_hash_iterations,
    };
    let server = match RunningServer::start(config) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!(%error, "cannot start");
            eprintln!("bank-server: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("bank-server listening on {}", server.local_addr);
    if let Err(error) = wait_for_signal() {
        tracing::error!(%error, "cannot wait for signals");
    }
    tracing::info!("shutting down");
    server.stop();
    ExitCode::SUCCESS
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                result = tokio::signal::ctrl_c() => result,
                _ = terminate.recv() => Ok(()),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await
        }
    })
}
