//! What the `atm` binary does: one-shot commands for scripts, and the lab's interactive menu.
//!
//! Output for scripts: with `--json`, exactly one JSON object per command (see [`reply_json`]).
//! Exit codes: [`EXIT_APPROVED`], [`EXIT_REFUSED`], [`EXIT_UNKNOWN`] (clap uses 2 for bad usage).

use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::{Amount, Body, Card, Operation, Reply, RequestId, Status};
use std::io::Write;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Exit code: the server approved the request.
pub const EXIT_APPROVED: u8 = 0;
/// Exit code: the server gave a definite refusal (wrong PIN, insufficient funds, …).
pub const EXIT_REFUSED: u8 = 1;
/// Exit code: bad usage (as clap's own), for example no PIN given and no terminal to ask on.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no definite answer (server unreachable, outcome unknown after retries).
pub const EXIT_UNKNOWN: u8 = 3;

/// One scripted command.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Open an account (operator only).
    CreateAccount {
        /// The operator token. Prefer BANK_OPERATOR_TOKEN, or the no-echo prompt on a terminal:
        /// the flag is visible to every local user in ps.
        #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: Option<String>,
        /// New card number.
        #[arg(long)]
        card: Card,
        /// Holder's name.
        #[arg(long)]
        name: String,
        /// Where the PIN comes from.
        #[command(flatten)]
        pin: PinSource,
        /// Opening balance.
        #[arg(long)]
        initial_balance: Amount,
        /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
        #[arg(long)]
        request_id: Option<RequestId>,
    },
    /// Check card and PIN.
    Verify {
        /// Card.
        #[arg(long)]
        card: Card,
        /// Where the PIN comes from.
        #[command(flatten)]
        pin: PinSource,
    },
    /// Balance of a card.
    Balance {
        /// Card.
        #[arg(long)]
        card: Card,
        /// Where the PIN comes from.
        #[command(flatten)]
        pin: PinSource,
    },
    /// Withdraw from a card.
    Withdraw {
        /// Card.
        #[arg(long)]
        card: Card,
        /// Where the PIN comes from.
        #[command(flatten)]
        pin: PinSource,
        /// Amount.
        #[arg(long)]
        amount: Amount,
        /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
        #[arg(long)]
        request_id: Option<RequestId>,
    },
    /// Deposit to a card.
    Deposit {
        /// Card.
        #[arg(long)]
        card: Card,
        /// Where the PIN comes from.
        #[command(flatten)]
        pin: PinSource,
        /// Amount.
        #[arg(long)]
        amount: Amount,
        /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
        #[arg(long)]
        request_id: Option<RequestId>,
    },
    /// Unlock a card locked by wrong PINs (operator only).
    UnlockCard {
        /// The operator token. Prefer BANK_OPERATOR_TOKEN, or the no-echo prompt on a terminal:
        /// the flag is visible to every local user in ps.
        #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: Option<String>,
        /// Card.
        #[arg(long)]
        card: Card,
        /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
        #[arg(long)]
        request_id: Option<RequestId>,
    },
    /// Change a card's PIN.
    ChangePin {
        /// Card.
        #[arg(long)]
        card: Card,
        /// Where the current PIN comes from.
        #[command(flatten)]
        pin: PinSource,
        /// The new PIN. Visible to every local user in ps: prefer BANK_NEW_PIN or the prompt.
        #[arg(long, env = "BANK_NEW_PIN", hide_env_values = true)]
        new_pin: Option<String>,
    },
    /// Lowercase a line.
    Lowercase {
        /// The text.
        text: String,
    },
    /// Is it prime?
    Prime {
        /// The number.
        number: u64,
    },
    /// Is it a palindrome?
    Palindrome {
        /// The number.
        number: u64,
    },
}

/// Where a command's PIN comes from, safest first: a no-echo prompt when standard input is a
/// terminal and nothing else is given; `--pin-stdin` (the first line of standard input) or
/// `BANK_PIN` for scripts; `--pin`, which every local user can read in `ps`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PinSource {
    /// The PIN. Visible to every local user in ps: prefer --pin-stdin, BANK_PIN or the prompt.
    #[arg(long, env = "BANK_PIN", hide_env_values = true)]
    pub pin: Option<String>,
    /// Read the PIN from the first line of standard input (wins over --pin and BANK_PIN).
    #[arg(long)]
    pub pin_stdin: bool,
}

impl PinSource {
    /// The PIN, from wherever it was given.
    pub fn read(&self) -> Result<String, String> {
        if self.pin_stdin {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|error| format!("cannot read the PIN from standard input: {error}"))?;
            return Ok(line.trim().to_string());
        }
        match &self.pin {
            Some(pin) => Ok(pin.clone()),
            None => read_secret_from_terminal("PIN", "--pin-stdin or BANK_PIN"),
        }
    }
}

/// The operator token from `--operator-token` / BANK_OPERATOR_TOKEN, else from a no-echo prompt.
fn given_or_prompted_token(given: Option<String>) -> Result<String, String> {
    match given {
        Some(token) => Ok(token),
        None => read_secret_from_terminal("operator token", "BANK_OPERATOR_TOKEN"),
    }
}

/// Asks for a secret on the terminal without echoing it; refuses when there is no terminal to ask
/// on (`script_forms` says what a script should use instead).
fn read_secret_from_terminal(label: &str, script_forms: &str) -> Result<String, String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "no {label} given and no terminal to ask on: use {script_forms}"
        ));
    }
    rpassword::prompt_password(format!("{label}: "))
        .map(|secret| secret.trim().to_string())
        .map_err(|error| format!("cannot read the {label}: {error}"))
}

/// The JSON object printed for a reply: `status`, plus `balance`, `text`, `prime` or
/// `palindrome` when the reply carries one.
pub fn reply_json(reply: &Reply, operation: &Operation) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("status".into(), reply.status.name().into());
    match (&reply.body, operation) {
        (Body::Balance(balance), _) => {
            object.insert("balance".into(), (*balance).into());
        }
        (Body::Text(text), _) => {
            object.insert("text".into(), text.clone().into());
        }
        (Body::Answer(answer), Operation::IsPrime { .. }) => {
            object.insert("prime".into(), (*answer).into());
        }
        (Body::Answer(answer), _) => {
            object.insert("palindrome".into(), (*answer).into());
        }
        (Body::Empty, _) => {}
    }
    serde_json::Value::Object(object)
}

/// A reply in words, for people.
pub fn reply_text(reply: &Reply) -> String {
    match &reply.body {
        Body::Empty => reply.status.to_string(),
        Body::Balance(balance) => format!("{}: balance {balance}", reply.status),
        Body::Text(text) => format!("{}: {text}", reply.status),
        Body::Answer(answer) => format!("{}: {}", reply.status, if *answer { "yes" } else { "no" }),
    }
}

fn exit_code(reply: &Reply) -> u8 {
    if reply.status == Status::Approved {
        EXIT_APPROVED
    } else {
        EXIT_REFUSED
    }
}

/// Runs one command against `config.server`, prints the result and returns the exit code.
pub async fn run_command(config: ClientConfig, command: Command, json: bool) -> u8 {
    // The login uses the process's own random client id; only the scripted request uses the
    // given one, so a replay from a new process sends exactly the same request.
    let mut client = Client::new(config);
    let (login, operation, request_id) = match secret_operation(command) {
        Ok(parts) => parts,
        Err(error) => {
            eprintln!("atm: {error}");
            return EXIT_USAGE;
        }
    };
    if let Some((card, pin)) = login {
        let operation = Operation::Verify { card, pin };
        match client.call(operation.clone()).await {
            Ok(reply) if reply.status == Status::Approved => {}
            Ok(reply) => return print_reply(&reply, &operation, json),
            Err(error) => return print_error(&error, json),
        }
    }
    let result = match request_id {
        Some(id) => client.call_with_id(id, operation.clone()).await,
        None => client.call(operation.clone()).await,
    };
    match result {
        Ok(reply) => print_reply(&reply, &operation, json),
        Err(error) => print_error(&error, json),
    }
}

/// What a command sends: the login it needs first (card and PIN), the operation, and its fixed
/// request id if any.
type Scripted = (Option<(Card, String)>, Operation, Option<RequestId>);

/// What `command` sends. Secrets are read here, before anything is sent.
fn secret_operation(command: Command) -> Result<Scripted, String> {
    Ok(match command {
        Command::CreateAccount {
            operator_token,
            card,
            name,
            pin,
            initial_balance,
            request_id,
        } => {
            let operator_token = given_or_prompted_token(operator_token)?;
            let operation = Operation::CreateAccount {
                operator_token,
                card,
                holder: name,
                pin: pin.read()?,
                initial_balance,
            };
            (None, operation, request_id)
        }
        Command::Verify { card, pin } => (
            None,
            Operation::Verify {
                card,
                pin: pin.read()?,
            },
            None,
        ),
        Command::Balance { card, pin } => (Some((card, pin.read()?)), Operation::Balance, None),
        Command::Withdraw {
            card,
            pin,
            amount,
            request_id,
        } => (
            Some((card, pin.read()?)),
            Operation::Withdraw { amount },
            request_id,
        ),
        Command::Deposit {
            card,
            pin,
            amount,
            request_id,
        } => (
            Some((card, pin.read()?)),
            Operation::Deposit { amount },
            request_id,
        ),
        Command::UnlockCard {
            operator_token,
            card,
            request_id,
        } => {
            let operator_token = given_or_prompted_token(operator_token)?;
            let operation = Operation::UnlockCard {
                operator_token,
                card,
            };
            (None, operation, request_id)
        }
        Command::ChangePin { card, pin, new_pin } => {
            let old_pin = pin.read()?;
            let new_pin = match new_pin {
                Some(new_pin) => new_pin,
                None => read_secret_from_terminal("new PIN", "BANK_NEW_PIN")?,
            };
            (
                Some((card, old_pin.clone())),
                Operation::ChangePin { old_pin, new_pin },
                None,
            )
        }
        Command::Lowercase { text } => (None, Operation::Lowercase { text }, None),
        Command::Prime { number } => (None, Operation::IsPrime { number }, None),
        Command::Palindrome { number } => (None, Operation::IsPalindrome { number }, None),
    })
}

fn print_reply(reply: &Reply, operation: &Operation, json: bool) -> u8 {
    if json {
        println!("{}", reply_json(reply, operation));
    } else {
        println!("{}", reply_text(reply));
    }
    exit_code(reply)
}

fn print_error(error: &ClientError, json: bool) -> u8 {
    if json {
        println!(
            "{}",
            serde_json::json!({ "status": "outcome_unknown", "error": error.to_string() })
        );
    } else {
        eprintln!("atm: {error}");
    }
    EXIT_UNKNOWN
}

const MENU: &str = "
 1) verify card and PIN     5) create account (operator)
 2) balance                 6) lowercase a line of text
 3) withdraw                7) is a number prime?
 4) deposit                 8) is a number a palindrome?
 9) log out                 0) exit
 c) change PIN              u) unlock a card (operator)";

/// The lab's interactive ATM menu over one session, reading from standard input.
pub async fn run_menu(config: ClientConfig) -> u8 {
    let server = config.server.clone();
    let mut client = Client::new(config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("actor-bank ATM, server {server}");
    loop {
        println!("{MENU}");
        let Some(choice) = prompt(&mut lines, "choice").await else {
            return EXIT_APPROVED;
        };
        let operation = match choice.as_str() {
            "0" | "exit" | "q" => return EXIT_APPROVED,
            "1" => {
                let Some(card) = prompt_number(&mut lines, "card number").await else {
                    continue;
                };
                let Some(pin) = prompt_secret(&mut lines, "PIN").await else {
                    continue;
                };
                Operation::Verify { card, pin }
            }
            "2" => Operation::Balance,
            "3" => match prompt_number(&mut lines, "amount").await {
                Some(amount) => Operation::Withdraw { amount },
                None => continue,
            },
            "4" => match prompt_number(&mut lines, "amount").await {
                Some(amount) => Operation::Deposit { amount },
                None => continue,
            },
            "5" => {
                let Some(operator_token) = prompt_secret(&mut lines, "operator token").await else {
                    continue;
                };
                let Some(card) = prompt_number(&mut lines, "new card number").await else {
                    continue;
                };
                let Some(holder) = prompt(&mut lines, "holder name").await else {
                    continue;
                };
                let Some(pin) = prompt_secret(&mut lines, "PIN").await else {
                    continue;
                };
                let Some(initial_balance) = prompt_number(&mut lines, "initial balance").await
                else {
                    continue;
                };
                Operation::CreateAccount {
                    operator_token,
                    card,
                    holder,
                    pin,
                    initial_balance,
                }
            }
            "6" => match prompt(&mut lines, "text").await {
                Some(text) => Operation::Lowercase { text },
                None => continue,
            },
            "7" => match prompt_number(&mut lines, "number").await {
                Some(number) => Operation::IsPrime { number },
                None => continue,
            },
            "8" => match prompt_number(&mut lines, "number").await {
                Some(number) => Operation::IsPalindrome { number },
                None => continue,
            },
            "9" => Operation::Logout,
            "c" => {
                let Some(old_pin) = prompt_secret(&mut lines, "current PIN").await else {
                    continue;
                };
                let Some(new_pin) = prompt_secret(&mut lines, "new PIN").await else {
                    continue;
                };
                Operation::ChangePin { old_pin, new_pin }
            }
            "u" => {
                let Some(operator_token) = prompt_secret(&mut lines, "operator token").await else {
                    continue;
                };
                let Some(card) = prompt_number(&mut lines, "card number").await else {
                    continue;
                };
                Operation::UnlockCard {
                    operator_token,
                    card,
                }
            }
            other => {
                println!("no such choice: {other}");
                continue;
            }
        };
        match client.call(operation).await {
            Ok(reply) => println!("=> {}", reply_text(&reply)),
            Err(error) => println!("=> no definite answer: {error}"),
        }
    }
}

async fn prompt<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    label: &str,
) -> Option<String> {
    print!("{label}> ");
    let _ = std::io::stdout().flush();
    match lines.next_line().await {
        Ok(Some(line)) => Some(line.trim().to_string()),
        _ => None,
    }
}

/// Like [`prompt`], without echoing what is typed when standard input is a terminal (a PIN must
/// not stay on the screen). Piped input is read as a plain line.
async fn prompt_secret<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    label: &str,
) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return prompt(lines, label).await;
    }
    let label = format!("{label}> ");
    match tokio::task::spawn_blocking(move || rpassword::prompt_password(label)).await {
        Ok(Ok(secret)) => Some(secret.trim().to_string()),
        _ => None,
    }
}

async fn prompt_number<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    label: &str,
) -> Option<u64> {
    let text = prompt(lines, label).await?;
    match text.parse() {
        Ok(number) => Some(number),
        Err(_) => {
            println!("{text:?} is not a whole number");
            None
        }
    }
}
