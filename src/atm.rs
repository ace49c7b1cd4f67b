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
/// Exit code: no definite answer (server unreachable, outcome unknown after retries).
pub const EXIT_UNKNOWN: u8 = 3;

/// One scripted command.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Command {
    /// Open an account (operator only).
    CreateAccount {
        /// The operator token.
        #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: String,
        /// New card number.
        #[arg(long)]
        card: Card,
        /// Holder's name.
        #[arg(long)]
        name: String,
        /// PIN.
        #[arg(long)]
        pin: String,
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
        /// PIN.
        #[arg(long)]
        pin: String,
    },
    /// Balance of a card.
    Balance {
        /// Card.
        #[arg(long)]
        card: Card,
        /// PIN.
        #[arg(long)]
        pin: String,
    },
    /// Withdraw from a card.
    Withdraw {
        /// Card.
        #[arg(long)]
        card: Card,
        /// PIN.
        #[arg(long)]
        pin: String,
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
        /// PIN.
        #[arg(long)]
        pin: String,
        /// Amount.
        #[arg(long)]
        amount: Amount,
        /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
        #[arg(long)]
        request_id: Option<RequestId>,
    },
    /// Unlock a card locked by wrong PINs (operator only).
    UnlockCard {
        /// The operator token.
        #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
        operator_token: String,
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
        /// The current PIN.
        #[arg(long)]
        pin: String,
        /// The new PIN.
        #[arg(long)]
        new_pin: String,
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
    let (login, operation, request_id) = match command {
        Command::CreateAccount {
            operator_token,
            card,
            name,
            pin,
            initial_balance,
            request_id,
        } => (
            None,
            Operation::CreateAccount {
                operator_token,
                card,
                holder: name,
                pin,
                initial_balance,
            },
            request_id,
        ),
        Command::Verify { card, pin } => (None, Operation::Verify { card, pin }, None),
        Command::Balance { card, pin } => (Some((card, pin)), Operation::Balance, None),
        Command::Withdraw {
            card,
            pin,
            amount,
            request_id,
        } => (
            Some((card, pin)),
            Operation::Withdraw { amount },
            request_id,
        ),
        Command::Deposit {
            card,
            pin,
            amount,
            request_id,
        } => (Some((card, pin)), Operation::Deposit { amount }, request_id),
        Command::UnlockCard {
            operator_token,
            card,
            request_id,
        } => (
            None,
            Operation::UnlockCard {
                operator_token,
                card,
            },
            request_id,
        ),
        Command::ChangePin { card, pin, new_pin } => (
            Some((card, pin.clone())),
            Operation::ChangePin {
                old_pin: pin,
                new_pin,
            },
            None,
        ),
        Command::Lowercase { text } => (None, Operation::Lowercase { text }, None),
        Command::Prime { number } => (None, Operation::IsPrime { number }, None),
        Command::Palindrome { number } => (None, Operation::IsPalindrome { number }, None),
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
                let Some(operator_token) = prompt(&mut lines, "operator token").await else {
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
