//! What the `atm` binary does: one-shot commands for scripts, and the lab's interactive menu.
//!
//! Output for scripts: with `--json`, exactly one JSON object per command (see [`reply_json`]).
//! Exit codes: [`EXIT_APPROVED`], [`EXIT_REFUSED`], [`EXIT_UNKNOWN`] (clap uses 2 for bad usage).
//!
//! Commands and menu choices build their requests through [`crate::client::ops`], the same
//! calls the client library's methods use; whether a command verifies its card first is
//! decided by the operation's [`crate::model::Kind`].

use crate::client::ops::{self, Call, Expected, Management, Prepared};
use crate::client::tls::{IdentityFiles, TlsError, TlsFiles, TlsSettings};
use crate::client::{Client, ClientConfig, ClientError};
use crate::protocol::{Amount, Body, Card, DailyLimits, HoldId, Reply, RequestId, Status};
use std::io::Write;
use std::path::PathBuf;
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
        /// Where the operator token comes from.
        #[command(flatten)]
        operator: OperatorToken,
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
        /// Where the operator token comes from.
        #[command(flatten)]
        operator: OperatorToken,
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
    /// Send money from a card to another card.
    ///
    /// Refused (and remembered under its request id) when the other card has no account or is
    /// frozen or closed. Approved once the money has left the card; it reaches the other card
    /// moments later, or comes back if that account was frozen or closed in the meantime.
    Transfer(TransferArgs),
    /// Reserve an amount on a card (an authorisation); prints its hold_id.
    ///
    /// The amount stays in the balance but leaves the available balance until the hold is
    /// completed, voided or expires.
    Hold(HoldArgs),
    /// Post a hold: its whole amount, or less with --amount (the rest is released).
    CompleteHold(CompleteHoldArgs),
    /// Release a hold without posting it.
    VoidHold(VoidHoldArgs),
    /// Give back an earlier withdrawal (or completed hold), named by its request id.
    ///
    /// For an ATM that could not dispense all of it: --amount is what it did dispense, and the
    /// reversal gives back the original's amount less that; without --amount, all of it. A
    /// reversal that arrives before its original is approved and the original is refused
    /// (request_id_conflict) when it arrives.
    Reverse(ReverseArgs),
    /// A card's last movements, newest last, each with the balance after it.
    Statement(StatementArgs),
    /// Freeze an account (operator only).
    ///
    /// A frozen account refuses withdrawals, holds and their completion, transfers out and in,
    /// and PIN checks until unfrozen; deposits, reversals and voids still go through.
    Freeze(ManageArgs),
    /// Unfreeze a frozen account (operator only).
    Unfreeze(ManageArgs),
    /// Close an account for good (operator only).
    ///
    /// Refused (balance_not_zero) unless its balance is zero, with no holds or transfers open.
    CloseAccount(ManageArgs),
    /// An account's state, balances, limits and today's withdrawals (operator only).
    AccountInfo(OperatorCard),
    /// Set an account's own daily withdrawal limits (operator only).
    SetLimits(SetLimitsArgs),
    /// Drop an account's own daily limits, so the server's defaults apply again (operator only).
    ClearLimits(ManageArgs),
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

/// Where an operator command's token comes from: `--operator-token`, `BANK_OPERATOR_TOKEN`, or
/// a no-echo prompt when standard input is a terminal.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct OperatorToken {
    /// The operator token. Prefer BANK_OPERATOR_TOKEN, or the no-echo prompt on a terminal:
    /// the flag is visible to every local user in ps.
    #[arg(long, env = "BANK_OPERATOR_TOKEN", hide_env_values = true)]
    pub operator_token: Option<String>,
}

impl OperatorToken {
    /// The token, from wherever it was given.
    pub fn read(self) -> Result<String, String> {
        match self.operator_token {
            Some(token) => Ok(token),
            None => read_secret_from_terminal("operator token", "BANK_OPERATOR_TOKEN"),
        }
    }
}

/// The card a card command acts on and where its PIN comes from.
#[derive(Clone, Debug, clap::Args)]
pub struct CardLogin {
    /// Card.
    #[arg(long)]
    pub card: Card,
    /// Where the PIN comes from.
    #[command(flatten)]
    pub pin: PinSource,
}

/// A fixed request id, for replaying a request from another process.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct FixedId {
    /// Fixed request id CLIENT:SEQ (two decimal u64s), to replay a request from a new process.
    #[arg(long)]
    pub request_id: Option<RequestId>,
}

/// `atm transfer`.
#[derive(Clone, Debug, clap::Args)]
pub struct TransferArgs {
    /// The sending card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// The receiving card.
    #[arg(long)]
    pub to: Card,
    /// Amount, in minor units.
    #[arg(long)]
    pub amount: Amount,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm hold`.
#[derive(Clone, Debug, clap::Args)]
pub struct HoldArgs {
    /// The card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// Amount to reserve, in minor units.
    #[arg(long)]
    pub amount: Amount,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm complete-hold`.
#[derive(Clone, Debug, clap::Args)]
pub struct CompleteHoldArgs {
    /// The card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// The hold, as `atm hold` printed it.
    #[arg(long)]
    pub hold_id: HoldId,
    /// Post only this much (at most the hold's amount); without it, all of it.
    #[arg(long)]
    pub amount: Option<Amount>,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm void-hold`.
#[derive(Clone, Debug, clap::Args)]
pub struct VoidHoldArgs {
    /// The card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// The hold, as `atm hold` printed it.
    #[arg(long)]
    pub hold_id: HoldId,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm reverse`.
#[derive(Clone, Debug, clap::Args)]
pub struct ReverseArgs {
    /// The card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// The request id CLIENT:SEQ of the withdrawal (or hold completion) to reverse.
    #[arg(long, value_name = "CLIENT:SEQ")]
    pub original: RequestId,
    /// The amount the ATM actually dispensed: the reversal gives back the original's amount less
    /// it. Without it, all of the original's amount is given back.
    #[arg(long)]
    pub amount: Option<Amount>,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm statement`.
#[derive(Clone, Debug, clap::Args)]
pub struct StatementArgs {
    /// The card and its PIN.
    #[command(flatten)]
    pub login: CardLogin,
    /// How many of the last movements, at most (the server caps it).
    #[arg(long, default_value_t = 10)]
    pub count: u32,
}

/// The operator token and the account an operator command acts on.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorCard {
    /// Where the operator token comes from.
    #[command(flatten)]
    pub operator: OperatorToken,
    /// The account's card.
    #[arg(long)]
    pub card: Card,
}

/// `atm freeze`, `atm unfreeze`, `atm close-account`, `atm clear-limits`.
#[derive(Clone, Debug, clap::Args)]
pub struct ManageArgs {
    /// The token and the account.
    #[command(flatten)]
    pub target: OperatorCard,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// `atm set-limits`.
#[derive(Clone, Debug, clap::Args)]
pub struct SetLimitsArgs {
    /// The token and the account.
    #[command(flatten)]
    pub target: OperatorCard,
    /// The most money withdrawn (and held) a business day, in minor units.
    #[arg(long)]
    pub daily_amount: Amount,
    /// The most withdrawals (and holds) a business day.
    #[arg(long)]
    pub daily_count: u32,
    /// Its request id, if fixed.
    #[command(flatten)]
    pub id: FixedId,
}

/// The TLS flags of `atm` and the swarm. Without `--tls-ca` the client speaks plain TCP and the
/// other flags are refused.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsFlags {
    /// Speak TLS, trusting the certificate authorities in this PEM file: the server's certificate
    /// must chain to one of them and carry the host part of --server (or --tls-server-name).
    #[arg(long, env = "BANK_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Present this PEM certificate (chain) to a server that asks for one (mutual TLS). Needs
    /// --tls-key and --tls-ca.
    #[arg(long, env = "BANK_TLS_CERT", value_name = "PATH", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert; keep it readable by its owner only.
    #[arg(long, env = "BANK_TLS_KEY", value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry when it is not the host part of --server
    /// (an IP address the certificate does not list, say).
    #[arg(
        long,
        env = "BANK_TLS_SERVER_NAME",
        value_name = "NAME",
        requires = "tls_ca"
    )]
    pub tls_server_name: Option<String>,
}

impl TlsFlags {
    /// The files the flags name; `None` without `--tls-ca` (plain TCP).
    pub fn files(&self) -> Option<TlsFiles> {
        let ca = self.tls_ca.clone()?;
        let client_identity = match (&self.tls_cert, &self.tls_key) {
            (Some(certificate), Some(key)) => Some(IdentityFiles {
                certificate: certificate.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Some(TlsFiles {
            ca,
            client_identity,
            server_name: self.tls_server_name.clone(),
        })
    }

    /// The TLS settings the flags ask for, read from their files; `None` for plain TCP.
    pub fn settings(&self) -> Result<Option<TlsSettings>, TlsError> {
        self.files().map(TlsSettings::load).transpose()
    }
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

/// The JSON object printed for a reply: `status`, plus what the reply carries: `balance` and
/// `available_balance` (every reply with a balance since protocol version 2; a reply remembered
/// from before has `balance` only), `hold_id` for a placed hold, `movements` for a statement,
/// the account's fields for `account-info`, `text`, or the answer's name (`prime`,
/// `palindrome`).
pub fn reply_json(reply: &Reply, expected: Expected) -> serde_json::Value {
    let mut object = serde_json::Map::new();
    object.insert("status".into(), reply.status.name().into());
    match &reply.body {
        Body::Balance(balance) => {
            object.insert("balance".into(), (*balance).into());
        }
        Body::Text(text) => {
            object.insert("text".into(), text.clone().into());
        }
        Body::Answer(answer) => {
            let name = match expected {
                Expected::Answer(name) => name,
                _ => "answer",
            };
            object.insert(name.into(), (*answer).into());
        }
        Body::Balances { ledger, available } => {
            object.insert("balance".into(), (*ledger).into());
            object.insert("available_balance".into(), (*available).into());
        }
        Body::Hold {
            hold_id,
            ledger,
            available,
        } => {
            object.insert("hold_id".into(), (*hold_id).into());
            object.insert("balance".into(), (*ledger).into());
            object.insert("available_balance".into(), (*available).into());
        }
        Body::Statement(movements) => {
            let lines = movements
                .iter()
                .map(|movement| {
                    serde_json::json!({
                        "time": movement.at_unix_ms,
                        "kind": movement.kind.name(),
                        "amount": movement.amount,
                        "request_id": movement.request.to_string(),
                        "balance_after": movement.balance_after,
                    })
                })
                .collect::<Vec<_>>();
            object.insert("movements".into(), lines.into());
        }
        Body::Account(details) => {
            let value = serde_json::json!({
                "card": details.card,
                "holder": details.holder,
                "state": details.state.name(),
                "locked": details.locked,
                "pin_failures": details.pin_failures,
                "balance": details.ledger,
                "available_balance": details.available,
                "holds": details.holds,
                "in_transit": details.in_transit,
                "daily_amount_limit": details.limits.amount,
                "daily_count_limit": details.limits.count,
                "own_limits": details.own_limits,
                "withdrawn_today": details.withdrawn_today,
                "withdrawals_today": details.withdrawals_today,
            });
            if let serde_json::Value::Object(fields) = value {
                object.extend(fields);
            }
        }
        Body::Moved { address } => {
            object.insert("address".into(), address.clone().into());
        }
        Body::Empty => {}
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
        Body::Balances { ledger, available } => {
            format!("{}: balance {ledger}, available {available}", reply.status)
        }
        Body::Hold {
            hold_id,
            ledger,
            available,
        } => format!(
            "{}: hold {hold_id}, balance {ledger}, available {available}",
            reply.status
        ),
        Body::Statement(movements) => {
            let mut text = format!("{}: {} movements", reply.status, movements.len());
            for movement in movements {
                text += &format!(
                    "\n  {} {:<17} {:>12}  balance {:>12}  {}",
                    movement.at_unix_ms,
                    movement.kind.name(),
                    movement.amount,
                    movement.balance_after,
                    movement.request
                );
            }
            text
        }
        Body::Account(details) => format!(
            "{}: card {} ({}), {}{}, balance {}, available {}, {} holds, {} in transit, limits {}/{} a day, today {}/{}",
            reply.status,
            details.card,
            details.holder,
            details.state.name(),
            if details.locked { ", locked" } else { "" },
            details.ledger,
            details.available,
            details.holds,
            details.in_transit,
            details.limits.amount,
            details.limits.count,
            details.withdrawn_today,
            details.withdrawals_today
        ),
        Body::Moved { address } => format!("{}: served by {address}", reply.status),
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
    let scripted = match Scripted::read(command) {
        Ok(scripted) => scripted,
        Err(error) => {
            eprintln!("atm: {error}");
            return EXIT_USAGE;
        }
    };
    if let Some((card, pin)) = scripted.login {
        let verify = ops::Verify { card, pin }.prepare();
        match client.call(verify.operation.clone()).await {
            Ok(reply) if reply.status == Status::Approved => {}
            Ok(reply) => return print_reply(&reply, verify.expected, json),
            Err(error) => return print_error(&error, json),
        }
    }
    let Prepared {
        operation,
        expected,
    } = scripted.prepared;
    let result = match scripted.request_id {
        Some(id) => client.call_with_id(id, operation).await,
        None => client.call(operation).await,
    };
    match result {
        Ok(reply) => print_reply(&reply, expected, json),
        Err(error) => print_error(&error, json),
    }
}

/// What a command sends: the login it needs first, the operation, and its fixed request id.
struct Scripted {
    /// The card and PIN to verify first, for an operation that acts on a verified card.
    login: Option<(Card, String)>,
    /// The operation itself.
    prepared: Prepared,
    /// The request id given with `--request-id`, if any.
    request_id: Option<RequestId>,
}

impl Scripted {
    /// An operation that needs no login, under a fresh request id.
    fn open(call: impl Call) -> Scripted {
        Scripted {
            login: None,
            prepared: call.prepare(),
            request_id: None,
        }
    }

    /// An operation on `card`: verified with `pin` first when the operation acts on a verified
    /// card ([`crate::model::Kind::needs_card`] says which do).
    fn on_card(card: Card, pin: String, call: impl Call) -> Scripted {
        let prepared = call.prepare();
        let login = prepared
            .operation
            .needs_verified_card()
            .then_some((card, pin));
        Scripted {
            login,
            prepared,
            request_id: None,
        }
    }

    /// The same, under the request id given (if any).
    fn with_id(self, request_id: Option<RequestId>) -> Scripted {
        Scripted { request_id, ..self }
    }

    /// What `command` sends. Secrets are read here, before anything is sent.
    fn read(command: Command) -> Result<Scripted, String> {
        Ok(match command {
            Command::CreateAccount {
                operator,
                card,
                name,
                pin,
                initial_balance,
                request_id,
            } => Scripted::open(ops::CreateAccount {
                operator_token: operator.read()?,
                card,
                holder: name,
                pin: pin.read()?,
                initial_balance,
            })
            .with_id(request_id),
            Command::Verify { card, pin } => Scripted::open(ops::Verify {
                card,
                pin: pin.read()?,
            }),
            Command::Balance { card, pin } => Scripted::on_card(card, pin.read()?, ops::Balance),
            Command::Withdraw {
                card,
                pin,
                amount,
                request_id,
            } => Scripted::on_card(card, pin.read()?, ops::Withdraw { amount }).with_id(request_id),
            Command::Deposit {
                card,
                pin,
                amount,
                request_id,
            } => Scripted::on_card(card, pin.read()?, ops::Deposit { amount }).with_id(request_id),
            Command::UnlockCard {
                operator,
                card,
                request_id,
            } => Scripted::open(ops::UnlockCard {
                operator_token: operator.read()?,
                card,
            })
            .with_id(request_id),
            Command::ChangePin { card, pin, new_pin } => Scripted::change_pin(card, &pin, new_pin)?,
            Command::Transfer(args) => args.scripted()?,
            Command::Hold(args) => args.scripted()?,
            Command::CompleteHold(args) => args.scripted()?,
            Command::VoidHold(args) => args.scripted()?,
            Command::Reverse(args) => args.scripted()?,
            Command::Statement(args) => args.scripted()?,
            Command::Freeze(args) => args.target.manage(Management::Freeze, args.id)?,
            Command::Unfreeze(args) => args.target.manage(Management::Unfreeze, args.id)?,
            Command::ClearLimits(args) => args.target.manage(Management::ClearLimits, args.id)?,
            Command::CloseAccount(args) => args.target.manage(Management::Close, args.id)?,
            Command::AccountInfo(target) => target.manage(Management::Info, FixedId::default())?,
            Command::SetLimits(args) => args.scripted()?,
            Command::Lowercase { text } => Scripted::open(ops::Lowercase { text }),
            Command::Prime { number } => Scripted::open(ops::IsPrime { number }),
            Command::Palindrome { number } => Scripted::open(ops::IsPalindrome { number }),
        })
    }

    /// `change-pin`: the current PIN verifies the card and goes with the request.
    fn change_pin(
        card: Card,
        pin: &PinSource,
        new_pin: Option<String>,
    ) -> Result<Scripted, String> {
        let old_pin = pin.read()?;
        let new_pin = match new_pin {
            Some(new_pin) => new_pin,
            None => read_secret_from_terminal("new PIN", "BANK_NEW_PIN")?,
        };
        let call = ops::ChangePin {
            old_pin: old_pin.clone(),
            new_pin,
        };
        Ok(Scripted::on_card(card, old_pin, call))
    }
}

/// What a banking command's arguments send.
trait Script {
    /// The login, operation and request id; secrets are read here, before anything is sent.
    fn scripted(self) -> Result<Scripted, String>;
}

impl Script for TransferArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let call = ops::Transfer {
            to: self.to,
            amount: self.amount,
        };
        self.login.scripted(call, self.id)
    }
}

impl Script for HoldArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let call = ops::PlaceHold {
            amount: self.amount,
        };
        self.login.scripted(call, self.id)
    }
}

impl Script for CompleteHoldArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let call = ops::CompleteHold {
            hold_id: self.hold_id,
            amount: self.amount,
        };
        self.login.scripted(call, self.id)
    }
}

impl Script for VoidHoldArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let call = ops::VoidHold {
            hold_id: self.hold_id,
        };
        self.login.scripted(call, self.id)
    }
}

impl Script for ReverseArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let call = ops::Reverse {
            original: self.original,
            dispensed: self.amount,
        };
        self.login.scripted(call, self.id)
    }
}

impl Script for StatementArgs {
    fn scripted(self) -> Result<Scripted, String> {
        // A statement changes nothing and is not remembered: no request id to fix.
        let call = ops::Statement { count: self.count };
        self.login.scripted(call, FixedId::default())
    }
}

impl Script for SetLimitsArgs {
    fn scripted(self) -> Result<Scripted, String> {
        let limits = DailyLimits {
            amount: self.daily_amount,
            count: self.daily_count,
        };
        self.target.manage(Management::SetLimits(limits), self.id)
    }
}

impl CardLogin {
    /// `call` on this card, verified with its PIN first, under the request id given (if any).
    fn scripted(self, call: impl Call, id: FixedId) -> Result<Scripted, String> {
        Ok(Scripted::on_card(self.card, self.pin.read()?, call).with_id(id.request_id))
    }
}

impl OperatorCard {
    /// The operator's `action` on this account, under the request id given (if any).
    fn manage(self, action: Management, id: FixedId) -> Result<Scripted, String> {
        let call = ops::Manage {
            operator_token: self.operator.read()?,
            card: self.card,
            action,
        };
        Ok(Scripted::open(call).with_id(id.request_id))
    }
}

fn print_reply(reply: &Reply, expected: Expected, json: bool) -> u8 {
    if json {
        println!("{}", reply_json(reply, expected));
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
 c) change PIN              u) unlock a card (operator)
 t) transfer                f) freeze an account (operator)
 h) place a hold            n) unfreeze an account (operator)
 k) complete a hold         x) close an account (operator)
 v) void a hold             i) account details (operator)
 r) reverse a withdrawal    l) set daily limits (operator)
 s) statement               d) back to the default limits (operator)";

/// The lab's interactive ATM menu over one session, reading from standard input.
pub async fn run_menu(config: ClientConfig) -> u8 {
    let server = config.server.clone();
    let transport = if config.tls.is_some() { "TLS" } else { "TCP" };
    let mut client = Client::new(config);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    println!("actor-bank ATM, server {server} over {transport}");
    loop {
        println!("{MENU}");
        let Some(choice) = prompt(&mut lines, "choice").await else {
            return EXIT_APPROVED;
        };
        let prepared = match choose(&mut lines, &choice).await {
            Choice::Exit => return EXIT_APPROVED,
            Choice::Nothing => continue,
            Choice::Send(prepared) => prepared,
        };
        match client.call(prepared.operation).await {
            Ok(reply) => println!("=> {}", reply_text(&reply)),
            Err(error) => println!("=> no definite answer: {error}"),
        }
    }
}

/// What a menu choice comes to.
enum Choice {
    /// Leave the menu.
    Exit,
    /// Nothing to send (an unknown choice, or input that ended or did not parse).
    Nothing,
    /// Send this.
    Send(Prepared),
}

impl From<Option<Prepared>> for Choice {
    fn from(prepared: Option<Prepared>) -> Choice {
        prepared.map_or(Choice::Nothing, Choice::Send)
    }
}

/// Asks for what the menu's `choice` needs and prepares its operation.
async fn choose<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    choice: &str,
) -> Choice {
    let prepared = match choice {
        "0" | "exit" | "q" => return Choice::Exit,
        "1" => ask_verify(lines).await,
        "2" => Some(ops::Balance.prepare()),
        "3" => prompt_number(lines, "amount")
            .await
            .map(|amount| ops::Withdraw { amount }.prepare()),
        "4" => prompt_number(lines, "amount")
            .await
            .map(|amount| ops::Deposit { amount }.prepare()),
        "5" => ask_create_account(lines).await,
        "6" => prompt(lines, "text")
            .await
            .map(|text| ops::Lowercase { text }.prepare()),
        "7" => prompt_number(lines, "number")
            .await
            .map(|number| ops::IsPrime { number }.prepare()),
        "8" => prompt_number(lines, "number")
            .await
            .map(|number| ops::IsPalindrome { number }.prepare()),
        "9" => Some(ops::Logout.prepare()),
        "c" => ask_change_pin(lines).await,
        "u" => ask_unlock_card(lines).await,
        "t" => ask_transfer(lines).await,
        "h" => prompt_number(lines, "amount")
            .await
            .map(|amount| ops::PlaceHold { amount }.prepare()),
        "k" => ask_complete_hold(lines).await,
        "v" => prompt_number(lines, "hold id")
            .await
            .map(|hold_id| ops::VoidHold { hold_id }.prepare()),
        "r" => ask_reverse(lines).await,
        "s" => prompt_number(lines, "how many movements")
            .await
            .map(|count| {
                ops::Statement {
                    count: clamp_u32(count),
                }
                .prepare()
            }),
        "f" => ask_manage(lines, Management::Freeze).await,
        "n" => ask_manage(lines, Management::Unfreeze).await,
        "x" => ask_manage(lines, Management::Close).await,
        "i" => ask_manage(lines, Management::Info).await,
        "l" => ask_set_limits(lines).await,
        "d" => ask_manage(lines, Management::ClearLimits).await,
        other => {
            println!("no such choice: {other}");
            None
        }
    };
    prepared.into()
}

async fn ask_verify<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let card = prompt_number(lines, "card number").await?;
    let pin = prompt_secret(lines, "PIN").await?;
    Some(ops::Verify { card, pin }.prepare())
}

async fn ask_create_account<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let operator_token = prompt_secret(lines, "operator token").await?;
    let card = prompt_number(lines, "new card number").await?;
    let holder = prompt(lines, "holder name").await?;
    let pin = prompt_secret(lines, "PIN").await?;
    let initial_balance = prompt_number(lines, "initial balance").await?;
    let call = ops::CreateAccount {
        operator_token,
        card,
        holder,
        pin,
        initial_balance,
    };
    Some(call.prepare())
}

async fn ask_change_pin<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let old_pin = prompt_secret(lines, "current PIN").await?;
    let new_pin = prompt_secret(lines, "new PIN").await?;
    Some(ops::ChangePin { old_pin, new_pin }.prepare())
}

async fn ask_unlock_card<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let (operator_token, card) = ask_operator_card(lines).await?;
    Some(
        ops::UnlockCard {
            operator_token,
            card,
        }
        .prepare(),
    )
}

/// The operator token and the card an operator choice acts on.
async fn ask_operator_card<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<(String, Card)> {
    let operator_token = prompt_secret(lines, "operator token").await?;
    let card = prompt_number(lines, "card number").await?;
    Some((operator_token, card))
}

async fn ask_manage<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    action: Management,
) -> Option<Prepared> {
    let (operator_token, card) = ask_operator_card(lines).await?;
    let call = ops::Manage {
        operator_token,
        card,
        action,
    };
    Some(call.prepare())
}

async fn ask_set_limits<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let (operator_token, card) = ask_operator_card(lines).await?;
    let amount = prompt_number(lines, "daily amount").await?;
    let count = clamp_u32(prompt_number(lines, "daily withdrawals").await?);
    let call = ops::Manage {
        operator_token,
        card,
        action: Management::SetLimits(DailyLimits { amount, count }),
    };
    Some(call.prepare())
}

async fn ask_transfer<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let to = prompt_number(lines, "to card number").await?;
    let amount = prompt_number(lines, "amount").await?;
    Some(ops::Transfer { to, amount }.prepare())
}

async fn ask_complete_hold<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let hold_id = prompt_number(lines, "hold id").await?;
    let amount = prompt_optional_number(lines, "amount (empty for all of it)").await?;
    Some(ops::CompleteHold { hold_id, amount }.prepare())
}

async fn ask_reverse<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
) -> Option<Prepared> {
    let text = prompt(
        lines,
        "original request id (CLIENT:SEQ, as the statement shows)",
    )
    .await?;
    let original = match text.parse::<RequestId>() {
        Ok(original) => original,
        Err(error) => {
            println!("{error}");
            return None;
        }
    };
    let dispensed = prompt_optional_number(lines, "amount dispensed (empty for none)").await?;
    Some(
        ops::Reverse {
            original,
            dispensed,
        }
        .prepare(),
    )
}

/// A count typed at the menu, capped at what the request carries.
fn clamp_u32(number: u64) -> u32 {
    u32::try_from(number).unwrap_or(u32::MAX)
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
    parse_number(&prompt(lines, label).await?)
}

/// Like [`prompt_number`], where an empty line means none: `Some(None)`. `None` when the input
/// ended or did not parse.
async fn prompt_optional_number<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    label: &str,
) -> Option<Option<u64>> {
    let text = prompt(lines, label).await?;
    if text.is_empty() {
        return Some(None);
    }
    parse_number(&text).map(Some)
}

/// A whole number typed at the menu; says so when it is not one.
fn parse_number(text: &str) -> Option<u64> {
    match text.parse() {
        Ok(number) => Some(number),
        Err(_) => {
            println!("{text:?} is not a whole number");
            None
        }
    }
}
