//! The one service that decides every request, whatever front door it arrived through.
//!
//! A front door turns its frames into a [`Command`] and maps the [`Answer`] back to its own
//! codes; the session caps what is in flight and calls [`Service::start`] in its own turn. Every
//! operation has one module here that runs its checks in the order [`checks`] lists for its
//! [`Kind`] (each module declares that list as its `CHECKS`, next to the function that performs
//! them), and docs/PROTOCOL.md's precedence table is generated from the same lists
//! ([`precedence_markdown`]; `tests/precedence.rs` keeps them equal).
//!
//! Changes are handed to the account in the session's turn ([`Bank::submit`]); only the wait for
//! the answer ([`Bank::settle`]) runs later, so changes pipelined on one connection are decided in
//! the order they arrived. A PIN check (`Verify`, `ChangePin`) reaches the account only after the
//! PIN is checked, so its login effect is applied only if no later `Verify` or `Logout` arrived.

mod acquirer;
mod balance;
mod change;
mod change_pin;
mod holds;
mod logout;
mod manage;
mod open;
mod receive;
mod reverse;
mod statement;
mod transfer;
mod utility;
mod verify;

use super::pins::PinGate;
use super::tls::Terminal;
use super::Bank;
use crate::ledger::Outcome;
use crate::model::{Amount, Card, Code, DailyLimits, HoldId, Kind, Movement, RequestId};
use crate::protocol::AccountDetails;
use crate::storage::Placement;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use acquirer::{acquirer_checks, acquirer_precedence_markdown};
pub use open::HOLDER_BYTES_MAX;

/// What a request asks for, in the bank's terms: the parameters each operation's rules need and
/// nothing of any wire.
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// Open an account (operator only).
    CreateAccount {
        /// The operator token offered with the request.
        operator_token: String,
        /// The new card number.
        card: Card,
        /// The account holder's name, as sent (trimmed by the validation).
        holder: String,
        /// The PIN, 4 to 12 decimal digits.
        pin: String,
        /// Opening balance in minor units.
        initial_balance: Amount,
    },
    /// Check a card and PIN; on success the connection acts for that card.
    Verify {
        /// The card.
        card: Card,
        /// Its PIN as offered.
        pin: String,
    },
    /// Read the verified card's balance.
    Balance,
    /// Take money from the verified card's account.
    Withdraw {
        /// How much, in minor units.
        amount: Amount,
    },
    /// Put money into the verified card's account.
    Deposit {
        /// How much, in minor units.
        amount: Amount,
    },
    /// Forget the verified card.
    Logout,
    /// The lab's utility: lowercase a text.
    Lowercase {
        /// The text.
        text: String,
    },
    /// The lab's utility: is `number` prime?
    IsPrime {
        /// The number to test.
        number: u64,
    },
    /// The lab's utility: is `number` a palindrome?
    IsPalindrome {
        /// The number to test.
        number: u64,
    },
    /// Change the verified card's PIN.
    ChangePin {
        /// The current PIN.
        old_pin: String,
        /// The new PIN, 4 to 12 decimal digits.
        new_pin: String,
    },
    /// Move money from the verified card's account to `to`'s.
    Transfer {
        /// The receiving card.
        to: Card,
        /// How much.
        amount: Amount,
    },
    /// Reserve an amount on the verified card's account.
    PlaceHold {
        /// How much.
        amount: Amount,
    },
    /// Post a hold of the verified card.
    CompleteHold {
        /// The hold.
        hold_id: HoldId,
        /// How much to post; none for all of it.
        amount: Option<Amount>,
    },
    /// Release a hold of the verified card.
    VoidHold {
        /// The hold.
        hold_id: HoldId,
    },
    /// Give back an earlier debit of the verified card.
    Reverse {
        /// The debit's request id.
        original: RequestId,
        /// What the ATM actually dispensed; none for nothing.
        dispensed: Option<Amount>,
    },
    /// Read the verified card's last movements.
    Statement {
        /// How many at most.
        count: u32,
    },
    /// A request for the card it names, not the connection's verified card: an acquirer's
    /// message (the ISO 8583 door), or a bincode `ForCard`. A request that moves money out of
    /// the account or reads it carries the card's PIN, which is checked first; an acquirer's
    /// advice (completing or voiding a hold, a reversal) carries none, on the acquirer's
    /// authority.
    ForCard {
        /// The card the request names.
        card: Card,
        /// The PIN it carries (an ISO 8583 message's from its PIN block); none for an advice.
        pin: Option<String>,
        /// The acquirer's terminal the message comes from, which failed PIN checks count
        /// against; none for a bincode `ForCard`, whose failures count against the connection
        /// as a `Verify`'s do.
        terminal: Option<Arc<str>>,
        /// The operation, one of those an acquirer may ask for (docs/ISO8583.md, section 5).
        then: Box<Command>,
    },
    /// The operator's account management: unlock, freeze, unfreeze, close, read, set or clear
    /// limits.
    Manage {
        /// The operator token offered with the request.
        operator_token: String,
        /// The account's card.
        card: Card,
        /// What to do with it.
        action: Manage,
    },
    /// Node to node (cluster mode): the second leg of a transfer, for the receiving account this
    /// node serves.
    ReceiveTransfer {
        /// The operator token offered with the request (every node shares it).
        operator_token: String,
        /// The sending card.
        from: Card,
        /// The sender's number for the transfer.
        leg: u64,
        /// The receiving card.
        to: Card,
        /// How much.
        amount: Amount,
    },
}

/// What the operator does to an account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manage {
    /// Clear its card's wrong PINs, unlocking it.
    Unlock,
    /// Freeze it.
    Freeze,
    /// Unfreeze it.
    Unfreeze,
    /// Close it (at zero balance).
    Close,
    /// Read its details.
    Info,
    /// Set its daily limits.
    SetLimits(DailyLimits),
    /// Drop its own daily limits (the server's defaults apply again).
    ClearLimits,
}

impl Manage {
    /// The kind of operation it is.
    pub fn kind(self) -> Kind {
        match self {
            Manage::Unlock => Kind::UnlockCard,
            Manage::Freeze => Kind::FreezeAccount,
            Manage::Unfreeze => Kind::UnfreezeAccount,
            Manage::Close => Kind::CloseAccount,
            Manage::Info => Kind::AccountInfo,
            Manage::SetLimits(_) => Kind::SetLimits,
            Manage::ClearLimits => Kind::ClearLimits,
        }
    }
}

impl Command {
    /// The account the command names itself (not the verified card): the one a Verify, an
    /// opening, the operator's management, an acquirer's message or a delivered leg is for.
    pub fn account(&self) -> Option<Card> {
        match self {
            Command::CreateAccount { card, .. }
            | Command::Verify { card, .. }
            | Command::Manage { card, .. }
            | Command::ForCard { card, .. } => Some(*card),
            Command::ReceiveTransfer { to, .. } => Some(*to),
            _ => None,
        }
    }

    /// Which kind of operation this is.
    pub fn kind(&self) -> Kind {
        match self {
            Command::CreateAccount { .. } => Kind::CreateAccount,
            Command::Verify { .. } => Kind::Verify,
            Command::Balance => Kind::Balance,
            Command::Withdraw { .. } => Kind::Withdraw,
            Command::Deposit { .. } => Kind::Deposit,
            Command::Logout => Kind::Logout,
            Command::Lowercase { .. } => Kind::Lowercase,
            Command::IsPrime { .. } => Kind::IsPrime,
            Command::IsPalindrome { .. } => Kind::IsPalindrome,
            Command::ChangePin { .. } => Kind::ChangePin,
            Command::Transfer { .. } => Kind::Transfer,
            Command::PlaceHold { .. } => Kind::PlaceHold,
            Command::CompleteHold { .. } => Kind::CompleteHold,
            Command::VoidHold { .. } => Kind::VoidHold,
            Command::Reverse { .. } => Kind::Reverse,
            Command::Statement { .. } => Kind::Statement,
            Command::Manage { action, .. } => action.kind(),
            Command::ForCard { then, .. } => then.kind(),
            Command::ReceiveTransfer { .. } => Kind::ReceiveTransfer,
        }
    }
}

/// Secrets (PINs, the operator token) never reach a log line through `Debug`.
impl std::fmt::Debug for Command {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.kind().name())
    }
}

/// How a request ended, and what comes back with it; a front door maps it to its own reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The result code.
    pub code: Code,
    /// What the answer carries beyond the code.
    pub body: AnswerBody,
}

/// Data carried by an answer, depending on the operation and its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerBody {
    /// Nothing beyond the code.
    None,
    /// An account's balance, from a reply remembered before available balances existed.
    Balance(Amount),
    /// An account's ledger and available balances.
    Balances {
        /// The ledger balance.
        ledger: Amount,
        /// The ledger balance less the open holds.
        available: Amount,
    },
    /// A hold placed, and the balances with it.
    Hold {
        /// The hold's id.
        hold_id: HoldId,
        /// The ledger balance.
        ledger: Amount,
        /// The available balance.
        available: Amount,
    },
    /// The last movements, oldest first.
    Statement(Vec<Movement>),
    /// An account's details.
    Account(Box<AccountDetails>),
    /// A text (the lowercased line).
    Text(String),
    /// A yes/no answer (prime, palindrome).
    Yes(bool),
    /// The advertised address of the node that serves the account (a `moved` answer).
    Moved(Arc<str>),
}

impl Answer {
    /// An answer with nothing but its code.
    pub fn bare(code: Code) -> Answer {
        Answer {
            code,
            body: AnswerBody::None,
        }
    }

    /// An approved answer carrying `body`.
    pub fn approved(body: AnswerBody) -> Answer {
        Answer {
            code: Code::Approved,
            body,
        }
    }
}

impl From<Outcome> for Answer {
    fn from(outcome: Outcome) -> Answer {
        Answer {
            code: outcome.status,
            body: AnswerBody::balances(&outcome),
        }
    }
}

impl AnswerBody {
    /// The balances an outcome carries: both, or the ledger balance alone in an outcome
    /// remembered before available balances existed, or none.
    pub fn balances(outcome: &Outcome) -> AnswerBody {
        match (outcome.balance, outcome.available) {
            (Some(ledger), Some(available)) => AnswerBody::Balances { ledger, available },
            (Some(ledger), None) => AnswerBody::Balance(ledger),
            (None, _) => AnswerBody::None,
        }
    }
}

/// One connection's login: the verified card, the order of logins, the PIN gate, the peer.
pub struct Login {
    /// The card this connection verified, if any.
    card: Option<Card>,
    /// Shared with the connection's reader: with a verified card, the login idle deadline does
    /// not apply.
    verified: Arc<AtomicBool>,
    /// Counts Verify and Logout requests in arrival order. A Verify logs the connection in only
    /// if no later Verify or Logout arrived while it was being checked, so pipelined requests
    /// take effect in the order they were sent.
    epoch: u64,
    /// This connection's allowance of failed PIN checks (and its peer's address).
    pin_gate: Arc<PinGate>,
    /// The peer's address, which failed operator attempts are counted by.
    peer: Option<IpAddr>,
    /// The terminal at the other end, named by its TLS client certificate (mutual TLS only):
    /// what limits per terminal count by.
    terminal: Option<Terminal>,
}

impl Login {
    /// The login state of a new connection from `peer`, with no card verified.
    pub fn new(bank: &Bank, peer: Option<IpAddr>) -> Login {
        Login::with_terminal(bank, peer, None)
    }

    /// The login state of a new connection from `peer`, by `terminal` when its certificate
    /// named one; failed PIN checks are then counted by the terminal instead of the address.
    pub fn with_terminal(bank: &Bank, peer: Option<IpAddr>, terminal: Option<Terminal>) -> Login {
        Login {
            card: None,
            verified: Arc::new(AtomicBool::new(false)),
            epoch: 0,
            pin_gate: bank.pins().gate_for(peer, terminal.as_ref()),
            peer,
            terminal,
        }
    }

    /// The terminal at the other end, when mutual TLS named one.
    pub fn terminal(&self) -> Option<&Terminal> {
        self.terminal.as_ref()
    }

    /// The flag the reader watches: true while a card is verified.
    pub fn verified_flag(&self) -> Arc<AtomicBool> {
        self.verified.clone()
    }

    /// The verified card, if any.
    pub fn card(&self) -> Option<Card> {
        self.card
    }

    fn set_card(&mut self, card: Option<Card>) {
        self.card = card;
        self.verified.store(card.is_some(), Ordering::Relaxed);
    }

    /// A Verify or Logout arrived: it logs out now and counts in the order of logins.
    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.set_card(None);
        self.epoch
    }

    /// Applies what a finished request does to the login, given its answer.
    pub fn apply(&mut self, effect: Effect, answer: &Answer) {
        match effect {
            Effect::Nothing => {}
            Effect::LogIn { card, epoch } => {
                if answer.code == Code::Approved && self.epoch == epoch {
                    self.set_card(Some(card));
                }
            }
            Effect::LogOutIfLocked { epoch } => {
                if answer.code == Code::CardLocked && self.epoch == epoch {
                    self.set_card(None);
                }
            }
        }
    }
}

/// What a finished request does to its connection's login.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing.
    Nothing,
    /// An approved Verify logs in as `card`, unless a later Verify or Logout arrived (the login
    /// epoch moved past `epoch`).
    LogIn {
        /// The card verified.
        card: Card,
        /// The login epoch the Verify started.
        epoch: u64,
    },
    /// A ChangePin whose wrong old PIN locked the card ends the login, unless the login changed
    /// meanwhile.
    LogOutIfLocked {
        /// The login epoch when the ChangePin arrived.
        epoch: u64,
    },
}

/// The answer still being worked out, off the session's turn.
pub type Pending = Pin<Box<dyn Future<Output = Answer>>>;

/// What [`Service::start`] made of a request.
pub enum Started {
    /// Answered in the session's turn.
    Now(Answer),
    /// To be awaited off the turn; then `effect` is applied to the login.
    Later {
        /// The answer, once it may be given.
        answer: Pending,
        /// What the answer does to the login.
        effect: Effect,
    },
}

/// The service every session calls: one entry point for every operation.
#[derive(Clone)]
pub struct Service {
    bank: Arc<Bank>,
}

impl Service {
    /// The service deciding requests for `bank`.
    pub fn new(bank: Arc<Bank>) -> Service {
        Service { bank }
    }

    /// The bank behind it.
    pub fn bank(&self) -> &Arc<Bank> {
        &self.bank
    }

    /// Starts `command` for request `id` on the connection whose login is `login`, running the
    /// checks of [`checks`] for its kind in that order after the in-flight limit, which the
    /// session applies before calling this. Called in the session's turn: a change is handed to
    /// its account before this returns.
    pub fn start(&self, login: &mut Login, id: RequestId, command: Command) -> Started {
        let account = command
            .account()
            .or(login.card.filter(|_| command.kind().needs_card()));
        let started = self.start_checked(login, id, command);
        match account {
            Some(card) if self.bank.storage().is_partitioned() => {
                still_served(&self.bank, card, started)
            }
            _ => started,
        }
    }

    /// [`Service::start`] before the cluster's last check.
    fn start_checked(&self, login: &mut Login, id: RequestId, command: Command) -> Started {
        if let Command::ForCard {
            card,
            pin,
            terminal,
            then,
        } = command
        {
            let request = acquirer::Request {
                id,
                card,
                pin,
                terminal,
                then: *then,
            };
            return acquirer::start(&self.bank, login, request).unwrap_or_else(Started::Now);
        }
        // Check::VerifiedCard, the first check after the in-flight limit for every kind that
        // acts on the verified card.
        let card = match (command.kind().needs_card(), login.card) {
            (false, _) => None,
            (true, Some(card)) => Some(card),
            (true, None) => return Started::Now(Answer::bare(Code::NotLoggedIn)),
        };
        // Check::Partition, for the verified card.
        if let Err(answer) = card.map_or(Ok(()), |card| served_here(&self.bank, card)) {
            return Started::Now(answer);
        }
        self.dispatch(login, id, card, command)
            .unwrap_or_else(Started::Now)
    }

    /// Hands `command` to its operation's module; `card` is the verified card when its kind
    /// needs one.
    fn dispatch(
        &self,
        login: &mut Login,
        id: RequestId,
        card: Option<Card>,
        command: Command,
    ) -> Result<Started, Answer> {
        let bank = &self.bank;
        let verified = || card.expect("the verified card is checked for every kind that needs it");
        match command {
            Command::CreateAccount {
                operator_token,
                card,
                holder,
                pin,
                initial_balance,
            } => {
                let opening = open::Opening {
                    card,
                    holder,
                    pin,
                    initial_balance,
                };
                open::start(bank, login, id, &operator_token, opening)
            }
            Command::Verify { card, pin } => Ok(verify::start(bank, login, id, card, pin)),
            Command::Logout => Ok(logout::start(login)),
            Command::Lowercase { text } => utility::lowercase(bank, &text),
            Command::IsPrime { number } => Ok(utility::is_prime(number)),
            Command::IsPalindrome { number } => Ok(utility::is_palindrome(number)),
            Command::ChangePin { old_pin, new_pin } => {
                change_pin::start(bank, login, verified(), id, old_pin, new_pin)
            }
            Command::Manage {
                operator_token,
                card,
                action,
            } => manage::start(bank, login, id, &operator_token, card, action),
            Command::ReceiveTransfer {
                operator_token,
                from,
                leg,
                to,
                amount,
            } => {
                let leg = receive::Leg {
                    from,
                    leg,
                    to,
                    amount,
                };
                receive::start(bank, login, id, &operator_token, leg)
            }
            Command::ForCard { .. } => Err(Answer::bare(Code::InvalidRequest)),
            on_card => on_account(bank, verified(), id, on_card),
        }
    }
}

/// Hands a request that acts on `card`'s account alone (no login, no secret) to its operation's
/// module: the card verified on the connection, or the card an acquirer's message names.
fn on_account(
    bank: &Arc<Bank>,
    card: Card,
    id: RequestId,
    command: Command,
) -> Result<Started, Answer> {
    match command {
        Command::Balance => balance::start(bank, card),
        Command::Withdraw { amount } => Ok(change::withdraw(bank, card, id, amount)),
        Command::Deposit { amount } => Ok(change::deposit(bank, card, id, amount)),
        Command::Transfer { to, amount } => transfer::start(bank, card, id, to, amount),
        Command::PlaceHold { amount } => Ok(holds::place(bank, card, id, amount)),
        Command::CompleteHold { hold_id, amount } => {
            Ok(holds::complete(bank, card, id, hold_id, amount))
        }
        Command::VoidHold { hold_id } => Ok(holds::void(bank, card, id, hold_id)),
        Command::Reverse {
            original,
            dispensed,
        } => reverse::start(bank, card, id, original, dispensed),
        Command::Statement { count } => statement::start(bank, card, count),
        // Every other kind needs a login or a secret of its own; the callers never pass one.
        _ => Err(Answer::bare(Code::InvalidRequest)),
    }
}

/// Cluster mode: an answer about `card` is given only if this node still serves its partition
/// once the answer is known (its lease unexpired, by its own clock, and the partition not lost
/// or being handed over); otherwise `unavailable`, which the client retries. An answer decided on
/// a state that another node may have changed meanwhile (a refusal from a paused node's stale
/// state needs no record, so no fence stops it) is never given; `unavailable` is never wrong.
fn still_served(bank: &Arc<Bank>, card: Card, started: Started) -> Started {
    let check = move |bank: &Bank, answer: Answer| {
        if bank.storage().still_serves(card) {
            answer
        } else {
            Answer::bare(Code::Unavailable)
        }
    };
    match started {
        Started::Now(answer) if answer.code == Code::Moved => Started::Now(answer),
        Started::Now(answer) => Started::Now(check(bank, answer)),
        Started::Later { answer, effect } => {
            let bank = bank.clone();
            Started::Later {
                answer: Box::pin(async move {
                    let answer = answer.await;
                    if answer.code == Code::Moved {
                        return answer;
                    }
                    check(&bank, answer)
                }),
                effect,
            }
        }
    }
}

/// Check::Partition: the account is served by this node (cluster mode); otherwise `moved` with
/// the address of the node that serves it, or `busy` while none does (its partition is being
/// taken over or handed over).
pub(super) fn served_here(bank: &Bank, card: Card) -> Result<(), Answer> {
    match bank.storage().placement(card) {
        Placement::Here => Ok(()),
        Placement::Elsewhere(address) => Err(Answer {
            code: Code::Moved,
            body: AnswerBody::Moved(address),
        }),
        Placement::Nowhere => Err(Answer::bare(Code::Busy)),
    }
}

/// Awaits `outcome` off the session's turn, then applies `effect`.
/// Hands `event` to the card's account now, in the session's turn (so changes pipelined on one
/// connection reach the account in the order they arrived: Check::Joining and Check::Actor), and
/// waits for its answer later (Check::Memory and Check::AccountRules in the actor, Check::Storage
/// while the answer is awaited).
fn submit(bank: &Arc<Bank>, card: Card, id: RequestId, event: crate::ledger::Event) -> Started {
    let submitted = bank.submit(card, id, event);
    let bank = bank.clone();
    later(async move { bank.settle(submitted).await }, Effect::Nothing)
}

pub(super) fn later(outcome: impl Future<Output = Outcome> + 'static, effect: Effect) -> Started {
    Started::Later {
        answer: Box::pin(async move { Answer::from(outcome.await) }),
        effect,
    }
}

/// [`Check::OperatorAllowance`], then [`Check::OperatorToken`] (both in
/// [`Bank::check_operator`], in that order).
fn operator(bank: &Bank, offered: &str, login: &Login) -> Result<(), Answer> {
    match bank.check_operator(offered, login.peer) {
        Code::Approved => Ok(()),
        refused => Err(Answer::bare(refused)),
    }
}

/// One step of deciding a request. Each operation runs a subset, always in the order of
/// [`checks`]; the first step that refuses decides the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// The connection's requests in flight (applied by the session, for every request).
    InFlight,
    /// The peer's allowance of failed operator-token attempts.
    OperatorAllowance,
    /// The operator token.
    OperatorToken,
    /// The card verified on the connection (for the kinds whose `needs_card()` is true).
    VerifiedCard,
    /// The parameters' form (PIN, holder name; a reply that would not fit in a frame).
    Validation,
    /// The receiving account of a transfer, by its committed state (the refusal is decided and
    /// remembered by the sending account's rules).
    Receiver,
    /// The node that serves the account (cluster mode): another node's account is answered
    /// `moved` with that node's address, one nobody serves right now `busy`.
    Partition,
    /// The connection's and the peer's allowance of failed PIN checks.
    PinAllowance,
    /// A durable account for the card.
    KnownCard,
    /// The account's durable state: a frozen or closed account's PIN is not checked at all.
    AccountState,
    /// The card's durable lock (a locked card is checked no further).
    LockedCard,
    /// Room in the argon2id pool's queue (only for a PIN still hashed by the first release).
    PinQueue,
    /// A retry of a change still being worked on joins it and gets its reply.
    Joining,
    /// The account actor: room in its mailbox, a crash or retirement; it refuses a PIN attempt on
    /// a locked card.
    Actor,
    /// The memory of completed requests of the request's principal.
    Memory,
    /// The account rules.
    AccountRules,
    /// The journal: room in its queue, durability of the state the answer depends on.
    Storage,
    /// The operation's own answer (the utilities, `Balance`, `Logout`).
    Answered,
}

impl Check {
    /// Every check, in the order they are described.
    pub const ALL: &'static [Check] = &[
        Check::InFlight,
        Check::OperatorAllowance,
        Check::OperatorToken,
        Check::VerifiedCard,
        Check::Partition,
        Check::Validation,
        Check::Receiver,
        Check::PinAllowance,
        Check::KnownCard,
        Check::AccountState,
        Check::LockedCard,
        Check::PinQueue,
        Check::Joining,
        Check::Actor,
        Check::Memory,
        Check::AccountRules,
        Check::Storage,
        Check::Answered,
    ];

    /// The name the documentation uses.
    pub fn name(self) -> &'static str {
        match self {
            Check::InFlight => "in-flight limit",
            Check::OperatorAllowance => "operator allowance",
            Check::OperatorToken => "operator token",
            Check::Validation => "validation",
            Check::VerifiedCard => "verified card",
            Check::Receiver => "receiving account",
            Check::Partition => "partition",
            Check::PinAllowance => "PIN allowance",
            Check::KnownCard => "known card",
            Check::AccountState => "account state",
            Check::LockedCard => "locked card",
            Check::PinQueue => "PIN queue",
            Check::Joining => "joining",
            Check::Actor => "account actor",
            Check::Memory => "memory of completed requests",
            Check::AccountRules => "account rules",
            Check::Storage => "journal",
            Check::Answered => "answer",
        }
    }

    /// What it refuses, for the documentation.
    pub fn about(self) -> &'static str {
        match self {
            Check::InFlight => "the connection already has its maximum of requests in flight",
            Check::OperatorAllowance => "the peer has used up its failed operator attempts",
            Check::OperatorToken => "the operator token is wrong, or none is set",
            Check::Validation => {
                "a malformed PIN, an empty or over-long holder name, a lowercased text that would not fit in a frame, a transfer to the sending card, a reversal naming itself, a statement of 0 movements, a transfer's leg delivered with another id than its receipt or to a server not in cluster mode"
            }
            Check::VerifiedCard => "no card is verified on the connection",
            Check::Receiver => {
                "nothing by itself: it reads whether the receiving card has an account and whether it is frozen or closed, which the account rules then refuse with (`unknown_card`, `account_frozen`, `account_closed`)"
            }
            Check::PinAllowance => "the connection or its peer has used up its failed PIN checks",
            Check::Partition => {
                "another node serves the account (`moved`), or none does right now (`busy`)"
            }
            Check::KnownCard => "the card has no durable account",
            Check::AccountState => "the account is closed or frozen (its PIN is not checked)",
            Check::LockedCard => "the card's durable state is locked",
            Check::PinQueue => "the argon2id queue is full (a PIN hashed by the first release)",
            Check::Joining => {
                "the same id with the same card and parameters is still being worked on: this request gets that one's reply (`busy` if it is abandoned with its connection), and no later check runs"
            }
            Check::Actor => {
                "the mailbox is full, or the actor crashed or retired (`unavailable` if the journal has failed); a PIN attempt on a locked card"
            }
            Check::Memory => {
                "the id was completed with other parameters (`request_id_conflict`), with the same ones (the stored reply), or is below the window (`stale_request`); a new client when the principal remembers its maximum of recently active clients (`busy`)"
            }
            Check::AccountRules => "the rules of the operation on the account's state",
            Check::Storage => {
                "the queue is full (`busy`); the journal has failed, or fails before the answer's state is durable (`unavailable`)"
            }
            Check::Answered => "nothing: the answer is given",
        }
    }

    /// The codes this check can end a request in.
    pub fn codes(self) -> &'static [Code] {
        match self {
            Check::InFlight | Check::OperatorAllowance | Check::PinAllowance | Check::PinQueue => {
                &[Code::Busy]
            }
            Check::OperatorToken => &[Code::NotAuthorised],
            Check::Validation => &[Code::InvalidRequest],
            Check::VerifiedCard => &[Code::NotLoggedIn],
            Check::Receiver => &[],
            Check::Partition => &[Code::Moved, Code::Busy],
            Check::KnownCard => &[Code::UnknownCard],
            Check::AccountState => &[Code::AccountClosed, Code::AccountFrozen],
            Check::LockedCard => &[Code::CardLocked],
            Check::Joining => &[Code::Busy],
            Check::Actor => &[Code::Busy, Code::Unavailable, Code::CardLocked],
            Check::Memory => &[Code::RequestIdConflict, Code::StaleRequest, Code::Busy],
            Check::AccountRules => &[
                Code::Approved,
                Code::UnknownCard,
                Code::CardExists,
                Code::AccountClosed,
                Code::AccountFrozen,
                Code::CardLocked,
                Code::IncorrectPin,
                Code::InvalidAmount,
                Code::UnknownHold,
                Code::HoldResolved,
                Code::TooManyHolds,
                Code::NotReversible,
                Code::BalanceNotZero,
                Code::WithdrawalCountExceeded,
                Code::WithdrawalLimitExceeded,
                Code::InsufficientFunds,
                Code::Busy,
            ],
            Check::Storage => &[Code::Busy, Code::Unavailable],
            Check::Answered => &[Code::Approved],
        }
    }
}

/// The checks a request of `kind` goes through, in the order they run. Each operation's module
/// declares its list beside the code that runs it.
pub fn checks(kind: Kind) -> &'static [Check] {
    match kind {
        Kind::CreateAccount => open::CHECKS,
        Kind::Verify => verify::CHECKS,
        Kind::Balance => balance::CHECKS,
        Kind::Withdraw | Kind::Deposit => change::CHECKS,
        Kind::Logout => logout::CHECKS,
        Kind::Lowercase => utility::LOWERCASE_CHECKS,
        Kind::IsPrime | Kind::IsPalindrome => utility::CHECKS,
        Kind::ChangePin => change_pin::CHECKS,
        Kind::Transfer => transfer::CHECKS,
        Kind::PlaceHold | Kind::CompleteHold | Kind::VoidHold => holds::CHECKS,
        Kind::Reverse => reverse::CHECKS,
        Kind::Statement => statement::CHECKS,
        Kind::UnlockCard
        | Kind::FreezeAccount
        | Kind::UnfreezeAccount
        | Kind::CloseAccount
        | Kind::SetLimits
        | Kind::ClearLimits => manage::CHECKS,
        Kind::AccountInfo => manage::INFO_CHECKS,
        Kind::ReceiveTransfer => receive::CHECKS,
    }
}

/// The tables of docs/PROTOCOL.md's "Precedence": every check with what it refuses and its codes,
/// then every operation with its checks in order. `tests/precedence.rs` keeps the document equal
/// to this.
pub fn precedence_markdown() -> String {
    let codes = |check: Check| {
        check
            .codes()
            .iter()
            .map(|code| format!("`{code}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = String::from("| check | refuses when | codes |\n| --- | --- | --- |\n");
    for check in Check::ALL {
        text += &format!(
            "| {} | {} | {} |\n",
            check.name(),
            check.about(),
            codes(*check)
        );
    }
    text += "\n| operation | checks, in order |\n| --- | --- |\n";
    for kind in Kind::ALL {
        let steps: Vec<&str> = checks(*kind).iter().map(|check| check.name()).collect();
        text += &format!("| `{kind:?}` | {} |\n", steps.join(" → "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_starts_with_the_in_flight_limit_and_needs_a_card_exactly_when_its_kind_says() {
        for kind in Kind::ALL {
            let list = checks(*kind);
            assert_eq!(list.first(), Some(&Check::InFlight), "{kind:?}");
            assert_eq!(
                list.get(1) == Some(&Check::VerifiedCard),
                kind.needs_card(),
                "{kind:?}"
            );
            assert!(!list[2..].contains(&Check::VerifiedCard), "{kind:?}");
            let order: Vec<usize> = list
                .iter()
                .map(|check| Check::ALL.iter().position(|known| known == check).unwrap())
                .collect();
            assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{kind:?}");
        }
    }
}
