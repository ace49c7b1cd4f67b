//! `bank-server`: runs the bank. Settings come from flags, `BANK_…` environment variables and an
//! optional TOML file (see `actor_bank::config`); everything else is the library.

use actor_bank::config::{self, LogFormat, Settings, Tool};
use actor_bank::server::RunningServer;
use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    let matches = Settings::command().get_matches();
    let settings = match Settings::from_arg_matches(&matches) {
        Ok(settings) => settings,
        Err(error) => error.exit(),
    };
    if settings.command == Some(Tool::GenerateOperatorToken) {
        println!("{}", actor_bank::operator::generate());
        return ExitCode::SUCCESS;
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
        print!("{}", config::effective_toml(&config, &process));
        return ExitCode::SUCCESS;
    }
    init_logging(process.log_format);
    if token_on_command_line {
        tracing::warn!(
            "the operator token was given with --operator-token, where every local user can read it (ps); use BANK_OPERATOR_TOKEN or --operator-token-file"
        );
    }
    if let Some(address) = process.metrics_listen {
        match actor_bank::metrics::install(address) {
            Ok(bound) => {
                tracing::info!(address = %bound, "serving metrics");
                // Like the listening line below: with port 0 this is how a caller learns it.
                println!("bank-server metrics on {bound}");
            }
            Err(error) => return fail(&error),
        }
    }
    let server = match RunningServer::start(config) {
        Ok(server) => server,
        Err(error) => return fail(&error.to_string()),
    };
    // The address actually bound (with `--listen …:0` the operating system picked the port): a
    // supervisor or test reads it from this line.
    println!("bank-server listening on {}", server.local_addr);
    if let Err(error) = wait_for_signal() {
        tracing::error!(%error, "cannot wait for signals");
    }
    tracing::info!("shutting down");
    server.stop();
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    tracing::error!(%message, "cannot start");
    eprintln!("bank-server: {message}");
    ExitCode::FAILURE
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info`), as text or one JSON object per
/// line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_signal() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        {
            let mut terminate =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
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
