//! One simulated ATM on the ISO 8583 door: a terminal of the swarm's acquirer on its own
//! connection.
//!
//! It signs on, then runs withdrawals, deposits and balance inquiries (0200) on the swarm's cards
//! with their PINs, and, for the mix's `reverse` weight, partial reversals of its latest
//! withdrawal or a reversal of a withdrawal never sent followed by that withdrawal (which must be
//! refused `94` and never debit). It behaves as an acquirer must when an answer does not come:
//!
//! - a withdrawal unanswered (lost request, lost reply, timeout) is reversed: a 0420, then 0421
//!   repeats until a 0430 whose 39 is not 91 or 96. Recorded (`00`), the withdrawal counts for
//!   nothing, whatever happened to the original. Refused for good (`12`: the original was
//!   declined, or is no longer reversible), the original's outcome is asked for by 0201 repeats,
//!   which the door answers with the original's reply;
//! - a deposit or an inquiry unanswered, or any request answered 91 or 96, is repeated (0201)
//!   until answered.
//!
//! Client-side faults are drawn as the bincode client draws them ([`crate::faults::hits`]), with
//! the ATM's fault id and the message's STAN as the request id and the number of times that
//! message was sent before as the attempt, so a seed loses the same messages on every run. At the
//! end each ATM repeats its last acknowledged withdrawals and deposits once more, and each reply
//! must be the original's, field for field.

use super::*;
use crate::client::iso8583::{repeat_of, Acquirer, AcquirerError, CardHolder, Response, Terminal};
use crate::faults::FaultKind;
use crate::iso8583::{field, response_mti, Message};

/// The acquiring institution of every terminal of the swarm (field 32).
pub(super) const SWARM_ACQUIRER: &str = "4242";

/// Acknowledged withdrawals and deposits per ATM repeated at the end, well inside the door's
/// window of remembered trace numbers.
const ISO_REPLAYS_PER_ATM: usize = 8;

/// The pause before the next attempt after a 91 or 96, or a connection that failed.
const ISO_RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Tag mixed into an ATM's seed for its terminal id, so runs of other seeds on one server do not
/// share terminals.
const TERMINAL_SEED_TAG: u64 = 0x5445_524d_494e_414c;

/// The ISO 8583 door of a run: where it listens, how the terminals make PIN blocks, and each
/// card's block, made once.
#[derive(Clone, Debug)]
pub(super) struct IsoDoor {
    /// `host:port`.
    pub(super) address: String,
    /// Under the door's zone PIN key, or in clear.
    pub(super) pins: PinBlocks,
    /// The swarm's cards as the terminals present them, in the order of the run's cards.
    pub(super) cards: Arc<Vec<IsoCard>>,
}

/// One card of the swarm as a terminal presents it: the PAN, the PIN and its field 52 (an ISO-0
/// block depends only on them and the key, so the swarm encrypts each card's once, not once per
/// message, and the load measures the door rather than the load generator's DES).
#[derive(Clone, Debug)]
pub(super) struct IsoCard {
    pan: String,
    pin: String,
    pin_block: String,
}

impl IsoCard {
    /// The card as a message's builder takes it.
    fn holder(&self) -> CardHolder<'_> {
        CardHolder {
            pan: &self.pan,
            pin: &self.pin,
            pin_block: Some(&self.pin_block),
        }
    }
}

impl IsoDoor {
    /// The door at `address` with PIN blocks made by `pins`, for `cards`.
    pub(super) fn new(
        address: String,
        pins: PinBlocks,
        cards: &[(Card, String)],
    ) -> Result<IsoDoor, String> {
        let cards = cards
            .iter()
            .map(|(card, pin)| {
                let pan = card.to_string();
                let pin_block = pins
                    .field_52(pin, &pan)
                    .map_err(|error| format!("card {card}: {error}"))?;
                Ok(IsoCard {
                    pan,
                    pin: pin.clone(),
                    pin_block,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(IsoDoor {
            address,
            pins,
            cards: Arc::new(cards),
        })
    }
}

/// What one attempt at a message came to.
enum Sent {
    /// An answer.
    Answer(Response),
    /// No answer: lost on the way, lost on the way back, or not in time.
    Lost,
}

/// What an operation is, as the ATM picked it.
enum IsoChoice {
    /// A withdrawal of this amount.
    Withdraw(Amount),
    /// A deposit of this amount.
    Deposit(Amount),
    /// A balance inquiry.
    Balance,
    /// A partial (or full) reversal of the latest approved withdrawal.
    ReverseLatest,
    /// A reversal of a withdrawal of this amount never sent, then that withdrawal.
    ReverseBeforeOriginal(Amount),
}

/// One ATM on the ISO 8583 door: its terminal, its connection, its generator and its tallies.
struct IsoAtm {
    shared: Arc<Shared>,
    /// Its number, for the report's messages.
    index: u64,
    generator: StdRng,
    /// The skew over accounts, when there is one.
    zipf: Option<rand_distr::Zipf<f64>>,
    /// The run's mix, reduced to what the door offers the swarm.
    mix: Mix,
    terminal: Terminal,
    door: IsoDoor,
    /// The connection, signed on; None until the next attempt opens one. Unused in switch
    /// mode, where the connection is the line's.
    acquirer: Option<Arc<Acquirer>>,
    /// The switch line whose connection it shares (switch mode only).
    line: Option<Arc<super::switch::IsoLine>>,
    /// The client half of the request ids faults are drawn for.
    fault_client: u64,
    faults: FaultPlan,
    result: AtmResult,
    /// The card in use and the operations done on it.
    current: Option<usize>,
    operations_on_card: u32,
    operations_done: u64,
    /// The latest approved withdrawal not reversed: its account, request, amount, and
    /// `operations_done` when it was made.
    last_withdrawal: Option<(usize, Arc<Message>, Amount, u64)>,
    /// The latest acknowledged withdrawals and deposits, with their replies, to repeat at the end.
    recent: VecDeque<(Arc<Message>, Message)>,
    /// Retries and faults of the operation running now, for the timeline.
    operation_retries: u64,
    operation_faults: u64,
}

/// Runs ATM number `index` on the ISO 8583 door until the run is over.
pub(super) async fn run_iso_atm(shared: Arc<Shared>, index: u64) -> AtmResult {
    run_iso_terminal(shared, index, None).await
}

/// Runs ATM number `index` on the ISO 8583 door, on a connection of its own or (switch mode)
/// on `line`'s, shared with the line's other terminals, until the run is over. The sign-on
/// probes run on ATM 0's own connection only: a switch line is signed on for all its terminals.
pub(super) async fn run_iso_terminal(
    shared: Arc<Shared>,
    index: u64,
    line: Option<Arc<super::switch::IsoLine>>,
) -> AtmResult {
    let probes = index == 0 && line.is_none();
    let Some(door) = shared.iso8583.clone() else {
        let mut result = AtmResult::empty(0);
        result
            .unknown
            .push(format!("ATM {index}: no ISO 8583 door"));
        return result;
    };
    let mut atm = match IsoAtm::new(shared, index, door) {
        Ok(mut atm) => {
            atm.line = line;
            atm
        }
        Err(error) => {
            let mut result = AtmResult::empty(0);
            result.unknown.push(format!("ATM {index}: {error}"));
            return result;
        }
    };
    if probes {
        atm.probe_before_sign_on().await;
    }
    while next_operation_allowed(&atm.shared) {
        atm.operate().await;
    }
    atm.replay_recent().await;
    if probes {
        atm.probe_after_sign_off().await;
    }
    atm.finish()
}

/// Terminal id of ATM `index` of a run seeded `seed`: two characters of the seed, then the
/// index in base 36 on six.
fn terminal_id(seed: u64, index: u64) -> String {
    let tag = crate::iso8583::authorisation_id(seed ^ TERMINAL_SEED_TAG);
    format!("{}{}", &tag[4..], crate::iso8583::authorisation_id(index))
}

/// The response code's name in the report's statuses.
fn code_status(code: &str) -> &'static str {
    match code {
        "00" => "iso8583_00_approved",
        "05" => "iso8583_05_not_authorised",
        "12" => "iso8583_12_invalid_transaction",
        "13" => "iso8583_13_invalid_amount",
        "14" => "iso8583_14_unknown_card",
        "25" => "iso8583_25_unknown_hold",
        "30" => "iso8583_30_format_error",
        "51" => "iso8583_51_insufficient_funds",
        "55" => "iso8583_55_incorrect_pin",
        "57" => "iso8583_57_closed",
        "58" => "iso8583_58_not_signed_on",
        "61" => "iso8583_61_amount_limit",
        "62" => "iso8583_62_frozen",
        "65" => "iso8583_65_count_limit",
        "75" => "iso8583_75_locked",
        "91" => "iso8583_91_busy",
        "94" => "iso8583_94_duplicate",
        "96" => "iso8583_96_unavailable",
        _ => "iso8583_other",
    }
}

impl IsoAtm {
    fn new(shared: Arc<Shared>, index: u64, door: IsoDoor) -> Result<IsoAtm, AcquirerError> {
        let config = &shared.config;
        let seed = config
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index);
        let mut generator = crate::clock::seeded(seed);
        let fault_client = generator.gen_range(1..u64::MAX >> 1);
        let mut faults = config.client_faults;
        faults.seed = seed;
        let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock::default());
        let terminal = Terminal::new(
            SWARM_ACQUIRER,
            &terminal_id(config.seed, index),
            clock,
            door.pins.clone(),
        )?;
        let zipf = (config.skew > 0.0)
            .then(|| rand_distr::Zipf::new(shared.cards.len() as u64, config.skew).ok())
            .flatten();
        let mix = Mix {
            withdraw: config.mix.withdraw,
            deposit: config.mix.deposit,
            balance: config.mix.balance,
            reverse: config.mix.reverse,
            ..Mix::NOTHING
        };
        Ok(IsoAtm {
            result: AtmResult::empty(fault_client),
            shared,
            index,
            generator,
            zipf,
            mix,
            terminal,
            door,
            acquirer: None,
            line: None,
            fault_client,
            faults,
            current: None,
            operations_on_card: 0,
            operations_done: 0,
            last_withdrawal: None,
            recent: VecDeque::new(),
            operation_retries: 0,
            operation_faults: 0,
        })
    }

    /// Counts one more of the door's mechanics.
    fn bump(&mut self, counter: &'static str) {
        *self.result.iso8583.entry(counter).or_default() += 1;
    }

    /// Notes a violation the ATM saw.
    fn violation(&mut self, detail: String) {
        self.result.violations.push(format!(
            "ATM {} (terminal {}): {detail}",
            self.index,
            self.terminal.terminal_id()
        ));
    }

    /// The account to act on: a few operations on one card, then the next.
    fn pick_account(&mut self) -> usize {
        let account = super::atm::next_account(
            self.current,
            &mut self.operations_on_card,
            self.shared.config.operations_per_card,
            self.zipf.as_ref(),
            &mut self.generator,
            self.shared.cards.len(),
        );
        self.current = Some(account);
        account
    }

    /// What to do next, by the mix's weights for the door's operations.
    fn pick(&mut self) -> IsoChoice {
        match pick(&self.mix, &mut self.generator) {
            Choice::Plain(Operation::Withdraw { amount }) => IsoChoice::Withdraw(amount),
            Choice::Plain(Operation::Deposit { amount }) => IsoChoice::Deposit(amount),
            Choice::ReverseBeforeOriginal { amount } => IsoChoice::ReverseBeforeOriginal(amount),
            Choice::Reverse => IsoChoice::ReverseLatest,
            _ => IsoChoice::Balance,
        }
    }

    /// One operation: picked, sent until its outcome is known, counted.
    async fn operate(&mut self) {
        let account = self.pick_account();
        let choice = self.pick();
        self.operations_done += 1;
        self.operation_retries = 0;
        self.operation_faults = 0;
        let started = Instant::now();
        let (kind, approved) = match choice {
            IsoChoice::Withdraw(amount) => {
                ("withdraw", self.withdraw(account, amount, started).await)
            }
            IsoChoice::Deposit(amount) => ("deposit", self.deposit(account, amount, started).await),
            IsoChoice::Balance => ("balance", self.inquire(account, started).await),
            IsoChoice::ReverseLatest => ("reverse", self.reverse_latest(account, started).await),
            IsoChoice::ReverseBeforeOriginal(amount) => (
                "reverse",
                self.reverse_before_original(account, amount, started).await,
            ),
        };
        let elapsed_us = started.elapsed().as_micros().max(1) as u64;
        self.count(kind, approved, elapsed_us);
    }

    /// Counts an operation: `approved` is None when its outcome stayed unknown.
    fn count(&mut self, kind: &'static str, approved: Option<bool>, elapsed_us: u64) {
        let shared = self.shared.clone();
        let second = shared.started.elapsed().as_secs();
        let step = shared.step.load(Ordering::Relaxed) as u64;
        let buckets = [
            bucket_for(&mut self.result.current, second, &shared.timeline),
            bucket_for(&mut self.result.current_step, step, &shared.steps),
        ];
        for bucket in buckets {
            bucket.1.retries += self.operation_retries;
            bucket.1.client_faults += self.operation_faults;
            if approved.is_some() {
                let _ = bucket.0.record(elapsed_us.min(SECOND_LATENCY_US_MAX));
                bucket.1.ops_acked += 1;
            }
        }
        self.result.retries += self.operation_retries;
        let Some(approved) = approved else {
            return;
        };
        shared.acked.fetch_add(1, Ordering::Relaxed);
        let _ = self.result.latency.record(elapsed_us);
        let tally = self.result.kinds.entry(kind).or_insert_with(|| KindTally {
            latency: new_second_histogram(),
            acked: 0,
            approved: 0,
        });
        let _ = tally.latency.record(elapsed_us.min(SECOND_LATENCY_US_MAX));
        tally.acked += 1;
        tally.approved += u64::from(approved);
    }

    /// The connection, opened and signed on if there is none (in switch mode: the line's);
    /// None (after a pause) when that fails.
    async fn connected(&mut self) -> Option<Arc<Acquirer>> {
        if let Some(line) = &self.line {
            return match line.acquirer().await {
                Ok(acquirer) => Some(acquirer),
                Err(error) => {
                    tracing::debug!(atm = self.index, %error, "cannot open the switch line");
                    tokio::time::sleep(ISO_RETRY_PAUSE).await;
                    None
                }
            };
        }
        if self.acquirer.is_none() {
            match self.open().await {
                Ok(acquirer) => self.acquirer = Some(Arc::new(acquirer)),
                Err(error) => {
                    tracing::debug!(atm = self.index, %error, "cannot open the ISO 8583 connection");
                    tokio::time::sleep(ISO_RETRY_PAUSE).await;
                    return None;
                }
            }
        }
        self.acquirer.clone()
    }

    /// A new connection with this terminal signed on.
    async fn open(&mut self) -> Result<Acquirer, String> {
        let acquirer = Acquirer::connect(&self.door.address, self.shared.config.tls.as_ref())
            .await
            .map_err(|error| error.to_string())?;
        let timeout = self.shared.config.attempt_timeout;
        let reply = acquirer
            .sign_on(&mut self.terminal, timeout)
            .await
            .map_err(|error| format!("sign-on: {error}"))?;
        if !reply.approved() {
            return Err(format!("sign-on answered {}", reply.code()));
        }
        self.bump("sign_ons");
        Ok(acquirer)
    }

    /// Drops the connection `broken` (it broke), keeping what it counted; in switch mode the
    /// line opens the next one.
    async fn disconnect(&mut self, broken: &Arc<Acquirer>) {
        if let Some(line) = &self.line {
            if line.broken(broken).await {
                self.bump("reconnects");
            }
            return;
        }
        if let Some(acquirer) = self.acquirer.take() {
            let unmatched = acquirer.counts().unmatched.load(Ordering::Relaxed);
            *self.result.iso8583.entry("unmatched").or_default() += unmatched;
            self.bump("reconnects");
        }
    }

    /// Attempt number `attempt` at `message` (0 the first time it is sent), with the injected
    /// faults.
    async fn attempt(&mut self, message: &Message, attempt: u32) -> Sent {
        let stan = message
            .get(field::STAN)
            .and_then(|stan| stan.parse().ok())
            .unwrap_or(0);
        let id = RequestId {
            client: self.fault_client,
            sequence: stan,
        };
        let faults = self.faults;
        let hits =
            |kind, probability| crate::faults::hits(faults.seed, kind, id, attempt, probability);
        if attempt > 0 {
            self.operation_retries += 1;
        }
        if hits(FaultKind::DropRequest, faults.drop_request) {
            self.result.requests_dropped += 1;
            self.operation_faults += 1;
            return Sent::Lost;
        }
        let timeout = self.shared.config.attempt_timeout;
        let Some(acquirer) = self.connected().await else {
            return Sent::Lost;
        };
        if let Some(line) = &self.line {
            line.sent();
        }
        let outcome = acquirer.request(message, timeout).await;
        if let Some(line) = &self.line {
            line.settled();
        }
        match outcome {
            Ok(_) if hits(FaultKind::DropReply, faults.drop_reply) => {
                self.result.replies_dropped += 1;
                self.operation_faults += 1;
                Sent::Lost
            }
            Ok(response) => {
                let expected = response_mti(&message.mti);
                if expected.as_deref() != Some(response.message.mti.as_str()) {
                    self.violation(format!(
                        "{} answered by a {} (expected {expected:?})",
                        message.mti, response.message.mti
                    ));
                }
                Sent::Answer(response)
            }
            Err(AcquirerError::Timeout(_)) => Sent::Lost,
            Err(error) => {
                tracing::debug!(atm = self.index, %error, "the ISO 8583 connection failed");
                self.disconnect(&acquirer).await;
                tokio::time::sleep(ISO_RETRY_PAUSE).await;
                Sent::Lost
            }
        }
    }

    /// Sends `request` (from attempt `first_attempt` on: the original at 0, its repeats after)
    /// until an answer that is not 91 or 96, or until the outcome deadline from `started`.
    /// Each repeat counts as `repeat_counter`.
    async fn until_answered(
        &mut self,
        request: &Message,
        first_attempt: u32,
        started: Instant,
        repeat_counter: &'static str,
    ) -> Option<Response> {
        let deadline = started + self.shared.config.outcome_deadline;
        let mut attempt = first_attempt;
        loop {
            let repeat;
            let message = if attempt == 0 {
                request
            } else {
                self.bump(repeat_counter);
                repeat = repeat_of(request);
                &repeat
            };
            match self.attempt(message, attempt).await {
                Sent::Answer(response) if !response.retry_later() => return Some(response),
                Sent::Answer(_) => tokio::time::sleep(ISO_RETRY_PAUSE).await,
                Sent::Lost => {}
            }
            attempt += 1;
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Sends `reversal`, repeating it as 0421 until the bank acknowledges it (any code but
    /// 91 or 96), and counts the answer's code; `None` (with the reversal listed as unanswered)
    /// when no acknowledgement came within the outcome deadline.
    async fn acknowledged(&mut self, reversal: &Message, started: Instant) -> Option<Response> {
        let Some(answer) = self
            .until_answered(reversal, 0, started, "reversal_repeats")
            .await
        else {
            self.unknown("reversal", reversal);
            return None;
        };
        *self
            .result
            .statuses
            .entry(code_status(answer.code()))
            .or_default() += 1;
        Some(answer)
    }

    /// Notes that `what` got no definite answer.
    fn unknown(&mut self, what: &str, request: &Message) {
        let stan = request.get(field::STAN).unwrap_or_default();
        self.result.unknown.push(format!(
            "ATM {} (terminal {}): {what} STAN {stan} unanswered",
            self.index,
            self.terminal.terminal_id()
        ));
    }

    /// Counts a reply's code; a 94 to an honest request is a violation.
    fn note_code(&mut self, request: &Message, response: &Response) {
        *self
            .result
            .statuses
            .entry(code_status(response.code()))
            .or_default() += 1;
        if response.code() == "94" {
            self.violation(format!(
                "an honest {} (STAN {}) answered 94",
                request.mti,
                request.get(field::STAN).unwrap_or_default()
            ));
        }
    }

    /// Money an approved reply moved on `account`.
    fn moved(&self, account: usize, change: i64, flow: Flow) {
        if change != 0 {
            self.shared.expected[account].fetch_add(change, Ordering::Relaxed);
            self.shared.flows.add(flow, change.abs());
        }
    }

    /// Keeps an acknowledged request and its reply for the repeat at the end.
    fn remember(&mut self, request: &Arc<Message>, response: Response) {
        self.recent.push_back((request.clone(), response.message));
        if self.recent.len() > ISO_REPLAYS_PER_ATM {
            self.recent.pop_front();
        }
    }

    /// A withdrawal of `amount`: true when it took the money, false when it did not (declined,
    /// or reversed), None when that stayed unknown.
    async fn withdraw(&mut self, account: usize, amount: Amount, started: Instant) -> Option<bool> {
        let cards = self.door.cards.clone();
        let holder = cards[account].holder();
        let request = match self.terminal.withdrawal(holder, amount) {
            Ok(request) => Arc::new(request),
            Err(error) => {
                self.violation(format!("cannot build a withdrawal: {error}"));
                return None;
            }
        };
        let mut attempt = 0;
        let deadline = started + self.shared.config.outcome_deadline;
        loop {
            let repeat;
            let message = if attempt == 0 {
                &*request
            } else {
                self.bump("repeats");
                repeat = repeat_of(&request);
                &repeat
            };
            match self.attempt(message, attempt).await {
                Sent::Answer(response) if !response.retry_later() => {
                    return Some(self.settle_withdrawal(account, &request, amount, response));
                }
                Sent::Answer(_) => tokio::time::sleep(ISO_RETRY_PAUSE).await,
                Sent::Lost => break,
            }
            attempt += 1;
            if Instant::now() >= deadline {
                self.unknown("withdrawal", &request);
                return None;
            }
        }
        self.reverse_unanswered(account, &request, amount, attempt + 1, started)
            .await
    }

    /// Takes an answer to a withdrawal into account; true when approved.
    fn settle_withdrawal(
        &mut self,
        account: usize,
        request: &Arc<Message>,
        amount: Amount,
        response: Response,
    ) -> bool {
        self.note_code(request, &response);
        let approved = response.approved();
        if response.code() != "94" {
            self.remember(request, response);
        }
        if !approved {
            return false;
        }
        self.moved(account, -(amount as i64), Flow::Withdrawals);
        self.last_withdrawal = Some((account, request.clone(), amount, self.operations_done));
        true
    }

    /// The reversal of a withdrawal that went unanswered: 0420, then 0421 until recorded or
    /// refused for good. Recorded, the withdrawal took nothing; refused, the original's own
    /// outcome (asked by repeats from attempt `next_attempt`) is what counts.
    async fn reverse_unanswered(
        &mut self,
        account: usize,
        request: &Arc<Message>,
        amount: Amount,
        next_attempt: u32,
        started: Instant,
    ) -> Option<bool> {
        self.bump("reversals");
        let reversal = match self.terminal.reversal(request, None) {
            Ok(reversal) => reversal,
            Err(error) => {
                self.violation(format!("cannot build a reversal: {error}"));
                return None;
            }
        };
        let answer = self.acknowledged(&reversal, started).await?;
        if answer.approved() {
            self.bump("reversed");
            return Some(false);
        }
        if answer.code() != "12" {
            self.violation(format!(
                "the reversal of withdrawal STAN {} answered {}",
                request.get(field::STAN).unwrap_or_default(),
                answer.code()
            ));
        }
        // Not reversible: the original was seen and decided; its repeat tells how.
        self.bump("reversals_refused");
        let Some(original) = self
            .until_answered(request, next_attempt.max(1), started, "repeats")
            .await
        else {
            self.unknown("withdrawal", request);
            return None;
        };
        Some(self.settle_withdrawal(account, request, amount, original))
    }

    /// A deposit of `amount`, repeated until answered: true when approved.
    async fn deposit(&mut self, account: usize, amount: Amount, started: Instant) -> Option<bool> {
        let cards = self.door.cards.clone();
        let holder = cards[account].holder();
        let request = match self.terminal.deposit(holder, amount) {
            Ok(request) => Arc::new(request),
            Err(error) => {
                self.violation(format!("cannot build a deposit: {error}"));
                return None;
            }
        };
        let Some(response) = self.until_answered(&request, 0, started, "repeats").await else {
            self.unknown("deposit", &request);
            return None;
        };
        self.note_code(&request, &response);
        let approved = response.approved();
        if response.code() != "94" {
            self.remember(&request, response);
        }
        if approved {
            self.moved(account, amount as i64, Flow::Deposits);
        }
        Some(approved)
    }

    /// A balance inquiry, repeated until answered: true when approved (with its balances).
    async fn inquire(&mut self, account: usize, started: Instant) -> Option<bool> {
        let cards = self.door.cards.clone();
        let holder = cards[account].holder();
        let request = match self.terminal.balance_inquiry(holder) {
            Ok(request) => request,
            Err(error) => {
                self.violation(format!("cannot build an inquiry: {error}"));
                return None;
            }
        };
        let Some(response) = self.until_answered(&request, 0, started, "repeats").await else {
            self.unknown("balance inquiry", &request);
            return None;
        };
        self.note_code(&request, &response);
        if response.approved() && response.balances().is_none() {
            self.violation(format!(
                "an approved balance inquiry (STAN {}) without balances in field 54",
                request.get(field::STAN).unwrap_or_default()
            ));
        }
        Some(response.approved())
    }

    /// Reverses the latest approved withdrawal, in full or in part (field 95: what was
    /// dispensed); with none recent enough, a withdrawal is made for the purpose. True when the
    /// reversal was recorded.
    async fn reverse_latest(&mut self, account: usize, started: Instant) -> Option<bool> {
        let recent = self
            .last_withdrawal
            .take()
            .filter(|(.., made)| self.operations_done - made <= REVERSAL_OPERATIONS_MAX);
        let (account, original, amount) = match recent {
            Some((account, original, amount, _)) => (account, original, amount),
            None => {
                let amount = self.generator.gen_range(1..=AMOUNT_MAX);
                self.withdraw(account, amount, started).await?;
                let (account, original, amount, _) = self.last_withdrawal.take()?;
                (account, original, amount)
            }
        };
        // Its repeat would no longer be answered as before: not replayed at the end.
        let key = crate::client::iso8583::match_key(&original);
        self.recent
            .retain(|(request, _)| crate::client::iso8583::match_key(request) != key);
        let dispensed = dispensed(amount, &mut self.generator);
        let reversal = match self.terminal.reversal(&original, dispensed) {
            Ok(reversal) => reversal,
            Err(error) => {
                self.violation(format!("cannot build a reversal: {error}"));
                return None;
            }
        };
        if dispensed.is_some() {
            self.bump("partial_reversals");
        }
        let answer = self.acknowledged(&reversal, started).await?;
        match answer.code() {
            "00" => {
                let back = amount - dispensed.unwrap_or(0);
                self.moved(account, back as i64, Flow::Reversals);
                Some(true)
            }
            // Not reversible any more (the account's later debits): nothing back.
            "12" => Some(false),
            other => {
                self.violation(format!(
                    "the reversal of approved withdrawal STAN {} (dispensed {dispensed:?} of {amount}) answered {other}",
                    original.get(field::STAN).unwrap_or_default()
                ));
                Some(false)
            }
        }
    }

    /// A reversal of a withdrawal never sent (the acquirer lost it and reversed it), which must
    /// be recorded; then that withdrawal, late, which must be refused 94 and never debit.
    async fn reverse_before_original(
        &mut self,
        account: usize,
        amount: Amount,
        started: Instant,
    ) -> Option<bool> {
        let cards = self.door.cards.clone();
        let holder = cards[account].holder();
        let original = match self.terminal.withdrawal(holder, amount) {
            Ok(request) => request,
            Err(error) => {
                self.violation(format!("cannot build a withdrawal: {error}"));
                return None;
            }
        };
        let reversal = match self.terminal.reversal(&original, None) {
            Ok(reversal) => reversal,
            Err(error) => {
                self.violation(format!("cannot build a reversal: {error}"));
                return None;
            }
        };
        let Some(answer) = self
            .until_answered(&reversal, 0, started, "reversal_repeats")
            .await
        else {
            self.unknown("reversal", &reversal);
            return None;
        };
        if !answer.approved() {
            self.violation(format!(
                "the reversal of withdrawal STAN {}, never sent, answered {}",
                original.get(field::STAN).unwrap_or_default(),
                answer.code()
            ));
            return Some(false);
        }
        let Some(late) = self.until_answered(&original, 0, started, "repeats").await else {
            self.unknown("late withdrawal", &original);
            return None;
        };
        match late.code() {
            "94" => {
                *self
                    .result
                    .probes
                    .entry("original_after_its_reversal_refused")
                    .or_default() += 1
            }
            other => {
                if late.approved() {
                    // It did debit: counted, so the audit's balances still add up.
                    self.moved(account, -(amount as i64), Flow::Withdrawals);
                }
                self.violation(format!(
                    "withdrawal STAN {}, sent after its reversal, answered {other}, expected 94",
                    original.get(field::STAN).unwrap_or_default()
                ));
            }
        }
        Some(true)
    }

    /// Repeats the latest acknowledged withdrawals and deposits (without injected faults): each
    /// must be answered with its original reply, and move nothing.
    async fn replay_recent(&mut self) {
        self.faults = FaultPlan::default();
        let recent = std::mem::take(&mut self.recent);
        for (request, reply) in recent {
            let started = Instant::now();
            let Some(again) = self.until_answered(&request, 1, started, "replays").await else {
                self.unknown("replay of", &request);
                continue;
            };
            if again.message != reply {
                self.violation(format!(
                    "the repeat of {request:?} answered {:?}, originally {reply:?}",
                    again.message
                ));
            }
        }
    }

    /// ATM 0's probes of the door's sign-on rules on a fresh connection: an echo before sign-on
    /// is answered 58, and a keep-alive is answered.
    async fn probe_before_sign_on(&mut self) {
        let timeout = self.shared.config.outcome_deadline;
        let Ok(acquirer) =
            Acquirer::connect(&self.door.address, self.shared.config.tls.as_ref()).await
        else {
            return;
        };
        if acquirer.keep_alive(timeout).await.is_ok() {
            *self.result.probes.entry("keep_alive_answered").or_default() += 1;
        }
        let echo = self.terminal.echo();
        match acquirer.request(&echo, timeout).await {
            Ok(reply) if reply.code() == "58" => {
                *self
                    .result
                    .probes
                    .entry("echo_before_sign_on_refused")
                    .or_default() += 1;
            }
            Ok(reply) => self.violation(format!(
                "an echo before sign-on answered {} (expected 58): {:?}",
                reply.code(),
                reply.message
            )),
            Err(_) => {}
        }
    }

    /// ATM 0's probe after the load: signed off, an inquiry is answered 58 and does nothing.
    async fn probe_after_sign_off(&mut self) {
        let timeout = self.shared.config.outcome_deadline;
        if self.connected().await.is_none() {
            return;
        }
        let Some(acquirer) = self.acquirer.as_ref() else {
            return;
        };
        match acquirer.sign_off(&mut self.terminal, timeout).await {
            Ok(reply) if reply.approved() => {}
            _ => return,
        }
        let cards = self.door.cards.clone();
        let holder = cards[0].holder();
        let Ok(inquiry) = self.terminal.balance_inquiry(holder) else {
            return;
        };
        let Some(acquirer) = self.acquirer.as_ref() else {
            return;
        };
        match acquirer.request(&inquiry, timeout).await {
            Ok(reply) if reply.code() == "58" => {
                *self
                    .result
                    .probes
                    .entry("financial_after_sign_off_refused")
                    .or_default() += 1;
            }
            Ok(reply) => self.violation(format!(
                "an inquiry after sign-off answered {} (expected 58)",
                reply.code()
            )),
            Err(_) => {}
        }
    }

    /// Folds the last buckets into the shared ones and hands over what the ATM counted.
    fn finish(mut self) -> AtmResult {
        for (current, merged) in [
            (&mut self.result.current, &self.shared.timeline),
            (&mut self.result.current_step, &self.shared.steps),
        ] {
            if let Some(finished) = current.take() {
                fold_bucket(merged, finished);
            }
        }
        if let Some(acquirer) = self.acquirer.take() {
            let unmatched = acquirer.counts().unmatched.load(Ordering::Relaxed);
            *self.result.iso8583.entry("unmatched").or_default() += unmatched;
        }
        self.result.next_sequence = u64::from(self.terminal.next_stan());
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_ids_are_eight_characters_and_differ_by_atm_and_seed() {
        let ids: std::collections::BTreeSet<String> =
            (0..5_000).map(|index| terminal_id(7, index)).collect();
        assert_eq!(ids.len(), 5_000);
        assert!(ids.iter().all(|id| id.len() == 8));
        assert_ne!(terminal_id(7, 0), terminal_id(8, 0));
        assert_eq!(code_status("51"), "iso8583_51_insufficient_funds");
        assert_eq!(code_status("xx"), "iso8583_other");
    }
}
