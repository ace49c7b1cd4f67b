//! `atm`: talks to a bank server, one command at a time or through the lab's interactive menu.
//!
//! Exit codes: 0 approved, 1 refused by the server, 2 bad usage (a TLS file that cannot be read included), 3 no definite answer.

use actor_bank::atm::{self, Command};
use actor_bank::client::ClientConfig;
use clap::Parser;
use std::process::ExitCode;

/// An ATM for actor-bank.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Exit codes: 0 approved, 1 refused by the server, 2 bad usage, 3 no definite answer \
                  (replay the same --request-id to settle it).\n\
                  Amounts are in minor units; --json prints exactly one object, with balance and \
                  available_balance whenever the reply carries a balance."
)]
struct Arguments {
    /// The bank server's address, or several separated by commas (`A,B,C`): the nodes of a
    /// cluster, tried in turn when one cannot be reached.
    #[arg(long, env = "BANK_SERVER", default_value = "127.0.0.1:7878")]
    server: String,
    /// Print exactly one JSON object.
    #[arg(long)]
    json: bool,
    /// Keep retrying a request (with the same id) for this long before reporting its outcome as
    /// unknown (exit code 3). Replaying the same --request-id later settles it.
    #[arg(long, value_parser = actor_bank::swarm::parse_duration, default_value = "30s")]
    deadline: std::time::Duration,
    /// TLS to the server: without --tls-ca the ATM speaks plain TCP.
    #[command(flatten)]
    tls: atm::TlsFlags,
    /// Without a command, the interactive menu starts.
    #[command(subcommand)]
    command: Option<Command>,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    let mut config = ClientConfig::new(arguments.server);
    config.outcome_deadline = arguments.deadline;
    config.attempt_timeout = config.attempt_timeout.min(arguments.deadline);
    config.tls = match arguments.tls.settings() {
        Ok(tls) => tls,
        Err(error) => {
            eprintln!("atm: {error}");
            return ExitCode::from(atm::EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("atm: {error}");
            return ExitCode::from(atm::EXIT_UNKNOWN);
        }
    };
    let code = runtime.block_on(async move {
        match arguments.command {
            Some(command) => atm::run_command(config, command, arguments.json).await,
            None => atm::run_menu(config).await,
        }
    });
    ExitCode::from(code)
}
