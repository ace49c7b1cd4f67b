//! One simulated ATM: its client, its generator, the card in use and what it counted.

use super::*;
use crate::protocol::CardOperation;

/// One ATM's own tallies, merged at the end.
pub(super) struct AtmResult {
    pub(super) latency: Histogram<u64>,
    /// The second being counted now; folded into the shared timeline when the clock moves on.
    pub(super) current: Option<(SecondHistogram, Second)>,
    /// The ramp step being counted now (its index in `Second::second`), folded likewise.
    pub(super) current_step: Option<(SecondHistogram, Second)>,
    pub(super) statuses: BTreeMap<&'static str, u64>,
    pub(super) unknown: Vec<String>,
    /// The most recent acknowledged requests: id, card, operation, reply.
    pub(super) recent: VecDeque<(RequestId, Card, Operation, Reply)>,
    pub(super) client_id: u64,
    /// The first sequence number the ATM did not use.
    pub(super) next_sequence: u64,
    pub(super) retries: u64,
    /// `moved` answers followed to another node (cluster mode).
    pub(super) redirects: u64,
    /// Verifies sent on the ATM's own connection.
    pub(super) logins: u64,
    pub(super) requests_dropped: u64,
    pub(super) replies_dropped: u64,
    /// Definite replies by operation kind: their latencies, how many, how many approved.
    pub(super) kinds: BTreeMap<&'static str, KindTally>,
    /// Expected refusals that came as expected, by what was probed.
    pub(super) probes: BTreeMap<&'static str, u64>,
    /// What the ATM found wrong while it ran (a reply that contradicts an earlier one).
    pub(super) violations: Vec<String>,
    /// The holds it placed and left open.
    pub(super) open_holds: Vec<OpenHold>,
    /// What an ISO 8583 ATM counted of its door's mechanics (reversals, repeats, sign-ons).
    pub(super) iso8583: BTreeMap<&'static str, u64>,
}

impl AtmResult {
    /// Nothing counted yet, for the ATM whose requests carry `client_id`.
    pub(super) fn empty(client_id: u64) -> AtmResult {
        AtmResult {
            latency: new_histogram(),
            current: None,
            current_step: None,
            statuses: BTreeMap::new(),
            unknown: Vec::new(),
            recent: VecDeque::new(),
            client_id,
            next_sequence: 0,
            retries: 0,
            redirects: 0,
            logins: 0,
            requests_dropped: 0,
            replies_dropped: 0,
            kinds: BTreeMap::new(),
            probes: BTreeMap::new(),
            violations: Vec::new(),
            open_holds: Vec::new(),
            iso8583: BTreeMap::new(),
        }
    }
}

/// One operation kind's definite replies in one ATM.
pub(super) struct KindTally {
    /// Their latencies (retries included).
    pub(super) latency: SecondHistogram,
    /// How many got a definite reply.
    pub(super) acked: u64,
    /// How many of those were approved.
    pub(super) approved: u64,
}

/// One ATM: its client, its own generator, the card in use and what it counted.
pub(super) struct Atm {
    shared: Arc<Shared>,
    /// Its number, for the report's messages.
    index: u64,
    generator: StdRng,
    client: Link,
    /// The skew over accounts, when there is one.
    zipf: Option<rand_distr::Zipf<f64>>,
    result: AtmResult,
    /// The account whose card is verified on the client's connection.
    logged_in: Option<usize>,
    /// Operations done on the current card.
    operations_on_card: u32,
    /// Operations done in all, to tell how recent the last withdrawal is.
    operations_done: u64,
    /// The latest approved withdrawal not reversed yet, with `operations_done` when it was made.
    last_withdrawal: Option<(Withdrawal, u64)>,
    /// The holds placed and not resolved yet.
    holds: Vec<OpenHold>,
    /// The account a switch terminal's round is on: every operation is on it (its line verified
    /// that card). `None` for an ATM of its own.
    pinned: Option<usize>,
}

/// How an ATM reaches the server: a client (a connection) of its own, or a terminal's share of
/// a switch line.
pub(super) enum Link {
    /// Its own client, one request in flight on its own connection.
    Own(Box<Client>),
    /// A terminal of a switch line ([`super::switch`]).
    Switched(super::switch::Terminal),
}

impl Link {
    /// The id the next request will use (and reserves it).
    fn next_id(&mut self) -> RequestId {
        match self {
            Link::Own(client) => client.next_id(),
            Link::Switched(terminal) => terminal.next_id(),
        }
    }

    /// Sends `operation` with `id` until a definite reply, or until the outcome deadline.
    async fn call_with_id(
        &mut self,
        id: RequestId,
        operation: Operation,
    ) -> Result<Reply, ClientError> {
        match self {
            Link::Own(client) => client.call_with_id(id, operation).await,
            Link::Switched(terminal) => terminal.call_with_id(id, operation).await,
        }
    }

    /// What it counted.
    fn stats(&self) -> ClientStats {
        match self {
            Link::Own(client) => client.stats(),
            Link::Switched(terminal) => terminal.stats(),
        }
    }
}

/// Claims the next operation of the run for any ATM; false when the run is over.
pub(super) fn next_operation_allowed(shared: &Shared) -> bool {
    if shared.stopping.load(Ordering::Relaxed) {
        return false;
    }
    if shared
        .deadline
        .is_some_and(|deadline| Instant::now() >= deadline)
    {
        return false;
    }
    let started = shared.operations_started.fetch_add(1, Ordering::Relaxed);
    match (shared.config.stop, shared.config.ramp.is_empty()) {
        (Stop::Operations(limit), true) => started < limit,
        _ => true,
    }
}

pub(super) async fn run_atm(shared: Arc<Shared>, index: u64) -> AtmResult {
    let mut atm = Atm::new(shared, index);
    while atm.next_operation_allowed() {
        atm.operate().await;
    }
    atm.finish()
}

impl Atm {
    /// ATM number `index`, its generator and client ids drawn from the swarm's seed.
    pub(super) fn new(shared: Arc<Shared>, index: u64) -> Atm {
        let config = &shared.config;
        let seed = config
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index);
        let mut generator = crate::clock::seeded(seed);
        let client_id = generator.gen_range(1..u64::MAX >> 1);
        let mut client_config = client_config(&shared, client_id, seed);
        client_config.faults = config.client_faults;
        client_config.faults.seed = seed;
        let zipf = (config.skew > 0.0)
            .then(|| rand_distr::Zipf::new(shared.cards.len() as u64, config.skew).ok())
            .flatten();
        Atm {
            client: Link::Own(Box::new(Client::new(client_config))),
            zipf,
            result: AtmResult::empty(client_id),
            generator,
            shared,
            index,
            logged_in: None,
            operations_on_card: 0,
            operations_done: 0,
            last_withdrawal: None,
            holds: Vec::new(),
            pinned: None,
        }
    }

    /// Terminal number `index` of a switch, on `line`: drawn from the swarm's seed as ATM
    /// number `index` is, with the line for its transport.
    pub(super) fn switched(shared: Arc<Shared>, index: u64, line: Arc<super::switch::Line>) -> Atm {
        let mut atm = Atm::new(shared, index);
        let mut faults = atm.shared.config.client_faults;
        faults.seed = atm
            .shared
            .config
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(index);
        let terminal = super::switch::Terminal::new(line, atm.result.client_id, faults);
        atm.client = Link::Switched(terminal);
        atm
    }

    /// One round of a switch terminal on `account`, the card its line verified: the operations
    /// it may still start, up to `operations_per_card`. False when it started none (the run is
    /// over).
    pub(super) async fn run_round(&mut self, account: usize) -> bool {
        self.pin_to(account);
        let mut worked = false;
        for _ in 0..self.shared.config.operations_per_card.max(1) {
            if !self.next_operation_allowed() {
                break;
            }
            worked = true;
            self.operate().await;
        }
        worked
    }

    /// Puts a switch terminal on `account` for a round: its operations go there. Its holds on
    /// the previous card stay open (they count as open in the audit), and a withdrawal on
    /// another card is not reversed (the line is not verified for it).
    fn pin_to(&mut self, account: usize) {
        if self.pinned != Some(account) {
            let (here, elsewhere) = std::mem::take(&mut self.holds)
                .into_iter()
                .partition(|hold| hold.account == account);
            self.holds = here;
            self.result.open_holds.extend(elsewhere);
            if self
                .last_withdrawal
                .as_ref()
                .is_some_and(|(withdrawal, _)| withdrawal.account != account)
            {
                self.last_withdrawal = None;
            }
        }
        self.pinned = Some(account);
        self.logged_in = Some(account);
        self.operations_on_card = 0;
    }

    /// Claims the next operation of the run; false when the run is over.
    pub(super) fn next_operation_allowed(&self) -> bool {
        next_operation_allowed(&self.shared)
    }

    /// The account to act on: a customer at the ATM does a few operations on one card before
    /// the next one comes.
    pub(super) fn pick_account(&mut self) -> usize {
        if let Some(account) = self.pinned {
            return account;
        }
        next_account(
            self.logged_in,
            &mut self.operations_on_card,
            self.shared.config.operations_per_card,
            self.zipf.as_ref(),
            &mut self.generator,
            self.shared.cards.len(),
        )
    }

    /// One operation (or a short sequence, for the banking operations that follow up on an
    /// earlier one): picked, sent until definite, counted.
    pub(super) async fn operate(&mut self) {
        let account = self.pick_account();
        let choice = pick(&self.shared.config.mix, &mut self.generator);
        self.operations_done += 1;
        match choice {
            Choice::Plain(operation) => {
                self.perform(account, operation).await;
            }
            Choice::Transfer { amount } => self.transfer(account, amount).await,
            Choice::Hold { .. } | Choice::Complete
                if self.holds.len() >= OPEN_HOLDS_PER_ATM_MAX =>
            {
                self.resolve(true).await
            }
            Choice::Hold { amount } => self.place_hold(account, amount).await,
            Choice::Complete | Choice::Void if self.holds.is_empty() => {
                let amount = self.generator.gen_range(1..=AMOUNT_MAX);
                self.place_hold(account, amount).await
            }
            Choice::Complete => self.resolve(true).await,
            Choice::Void => self.resolve(false).await,
            Choice::Reverse => self.reverse(account).await,
            Choice::ReverseBeforeOriginal { amount } => {
                self.reverse_before_original(account, amount).await
            }
        }
    }

    /// Sends `operation` on `account` with a new id and takes its reply into account.
    async fn perform(&mut self, account: usize, operation: Operation) -> Option<Reply> {
        let id = self.client.next_id();
        let (reply, elapsed_us) = self.exchange(account, id, operation.clone()).await?;
        self.settle(account, id, operation, &reply, elapsed_us);
        Some(reply)
    }

    /// Logs in for `account` if the operation needs its card, then sends the operation with `id`
    /// until definite; counts retries, faults and latency. `None` when there was no definite
    /// answer (noted for the audit).
    async fn exchange(
        &mut self,
        account: usize,
        id: RequestId,
        operation: Operation,
    ) -> Option<(Reply, u64)> {
        let before = self.client.stats();
        let clock = Instant::now();
        let operation = self.with_pin(account, operation);
        let needs_card = operation.needs_verified_card();
        if needs_card && self.logged_in != Some(account) && !self.log_in(account).await {
            return None;
        }
        let outcome = self.client.call_with_id(id, operation.clone()).await;
        let elapsed_us = clock.elapsed().as_micros().max(1) as u64;
        match outcome {
            Ok(reply) => {
                self.count(before, Some(elapsed_us));
                Some((reply, elapsed_us))
            }
            Err(error) => {
                self.count(before, None);
                let detail = match &error {
                    ClientError::LoginLost(status) => format!("login lost ({status})"),
                    other => other.to_string(),
                };
                self.result.unknown.push(format!(
                    "ATM {}: request {id} ({}): {detail}",
                    self.index,
                    operation.name()
                ));
                self.logged_in = None;
                None
            }
        }
    }

    /// `operation` as a `ForCard` on `account`'s card, carrying its PIN, when the run sends the PIN
    /// with each operation and this one can carry it (on the ATM's own connection); else as it is.
    fn with_pin(&self, account: usize, operation: Operation) -> Operation {
        if !self.shared.config.pin_with_each || !matches!(self.client, Link::Own(_)) {
            return operation;
        }
        match CardOperation::of(&operation) {
            Some(on_card) => {
                let (card, pin) = &self.shared.cards[account];
                Operation::ForCard {
                    card: *card,
                    pin: pin.clone(),
                    operation: on_card,
                }
            }
            None => operation,
        }
    }

    /// A transfer of `amount` from `account` to another account of the swarm, drawn at random
    /// (with one account, an inquiry instead).
    async fn transfer(&mut self, account: usize, amount: Amount) {
        let accounts = self.shared.cards.len();
        let operation = if accounts < 2 {
            ops::Balance.into_operation()
        } else {
            let receiver = (account + self.generator.gen_range(1..accounts)) % accounts;
            let to = self.shared.cards[receiver].0;
            ops::Transfer { to, amount }.into_operation()
        };
        self.perform(account, operation).await;
    }

    /// A hold of `amount` on `account`; an approved one joins the ATM's open holds.
    async fn place_hold(&mut self, account: usize, amount: Amount) {
        let operation = ops::PlaceHold { amount }.into_operation();
        if let Some(Reply {
            status: Status::Approved,
            body: Body::Hold { hold_id, .. },
            ..
        }) = self.perform(account, operation).await
        {
            self.holds.push(OpenHold {
                account,
                hold_id,
                amount,
            });
        }
    }

    /// Completes (sometimes for less) or voids one of the ATM's open holds; now and then tries
    /// to resolve it a second time, which must be refused `hold_resolved`.
    async fn resolve(&mut self, complete: bool) {
        if self.holds.is_empty() {
            return;
        }
        let hold = self
            .holds
            .swap_remove(self.generator.gen_range(0..self.holds.len()));
        let (operation, taken) = if complete {
            let amount = posted(hold.amount, &mut self.generator);
            let operation = ops::CompleteHold {
                hold_id: hold.hold_id,
                amount,
            };
            (operation.into_operation(), amount.unwrap_or(hold.amount))
        } else {
            let operation = ops::VoidHold {
                hold_id: hold.hold_id,
            };
            (operation.into_operation(), 0)
        };
        let Some(reply) = self.perform(hold.account, operation).await else {
            return;
        };
        match reply.status {
            Status::Approved => {
                self.moved(hold.account, -(taken as i64), Flow::HoldsCompleted);
                if self.generator.gen_ratio(1, 4) {
                    self.resolve_again(hold, !complete).await;
                }
            }
            Status::HoldResolved | Status::UnknownHold => self.violation(format!(
                "hold {} on card {}, open, was answered {} when {}",
                hold.hold_id,
                self.shared.cards[hold.account].0,
                reply.status,
                if complete { "completed" } else { "voided" }
            )),
            // Refused for another reason: still open.
            _ => self.holds.push(hold),
        }
    }

    /// A second resolution of `hold`, resolved already: it must be refused `hold_resolved`.
    async fn resolve_again(&mut self, hold: OpenHold, complete: bool) {
        let operation = if complete {
            ops::CompleteHold {
                hold_id: hold.hold_id,
                amount: None,
            }
            .into_operation()
        } else {
            ops::VoidHold {
                hold_id: hold.hold_id,
            }
            .into_operation()
        };
        let id = self.client.next_id();
        let Some((reply, _)) = self.exchange(hold.account, id, operation).await else {
            return;
        };
        self.expect_refusal(
            &reply,
            Status::HoldResolved,
            "hold_resolved_again",
            &format!("a second resolution of hold {}", hold.hold_id),
        );
    }

    /// Counts `reply` as the probe `probe` when it is `expected`, as a violation otherwise.
    fn expect_refusal(&mut self, reply: &Reply, expected: Status, probe: &'static str, what: &str) {
        if reply.status == expected {
            *self.result.probes.entry(probe).or_default() += 1;
        } else {
            let status = reply.status;
            self.violation(format!("{what} answered {status}, expected {expected}"));
        }
    }

    /// Reverses the ATM's latest withdrawal, or (when there is no recent one) a withdrawal made
    /// for the purpose: in full or in part, as an ATM that could not dispense it all.
    async fn reverse(&mut self, account: usize) {
        let recent = self
            .last_withdrawal
            .take()
            .filter(|(_, made)| self.operations_done - made <= REVERSAL_OPERATIONS_MAX)
            .map(|(withdrawal, _)| withdrawal);
        let withdrawal = match recent {
            Some(withdrawal) => withdrawal,
            None => {
                let amount = self.generator.gen_range(1..=AMOUNT_MAX);
                self.perform(account, ops::Withdraw { amount }.into_operation())
                    .await;
                match self.last_withdrawal.take() {
                    Some((withdrawal, _)) => withdrawal,
                    None => return,
                }
            }
        };
        let dispensed = dispensed(withdrawal.amount, &mut self.generator);
        let operation = ops::Reverse {
            original: withdrawal.id,
            dispensed,
        };
        let reply = self
            .perform(withdrawal.account, operation.into_operation())
            .await;
        // Refused (`not_reversible`: the account's recent debits moved past it): nothing back.
        if reply.is_some_and(|reply| reply.status == Status::Approved) {
            let back = withdrawal.amount - dispensed.unwrap_or(0);
            self.moved(withdrawal.account, back as i64, Flow::Reversals);
        }
    }

    /// A reversal of an id never sent (the ATM lost the withdrawal's request, then reversed it),
    /// approved and moving nothing; then that very withdrawal, late, which must be refused
    /// `request_id_conflict` and never debit.
    async fn reverse_before_original(&mut self, account: usize, amount: Amount) {
        let original = self.client.next_id();
        let reversal = ops::Reverse {
            original,
            dispensed: None,
        };
        let Some(reply) = self.perform(account, reversal.into_operation()).await else {
            return;
        };
        if reply.status != Status::Approved {
            let card = self.shared.cards[account].0;
            self.violation(format!(
                "card {card}: the reversal of {original}, never sent, answered {}",
                reply.status
            ));
            return;
        }
        let withdrawal = ops::Withdraw { amount }.into_operation();
        let Some((late, _)) = self.exchange(account, original, withdrawal).await else {
            return;
        };
        self.expect_refusal(
            &late,
            Status::RequestIdConflict,
            "original_after_its_reversal_refused",
            &format!("withdrawal {original}, sent after its reversal,"),
        );
    }

    /// Notes money an approved reply moved on `account`.
    fn moved(&self, account: usize, change: i64, flow: Flow) {
        if change != 0 {
            self.shared.expected[account].fetch_add(change, Ordering::Relaxed);
            self.shared.flows.add(flow, change.abs());
        }
    }

    /// Notes a violation the ATM saw.
    fn violation(&mut self, detail: String) {
        self.result
            .violations
            .push(format!("ATM {}: {detail}", self.index));
    }

    /// Verifies the card of `account`; false (with the reason noted) when that fails.
    pub(super) async fn log_in(&mut self, account: usize) -> bool {
        let (card, pin) = &self.shared.cards[account];
        let client = match &mut self.client {
            Link::Own(client) => client,
            // A terminal's line verifies the round's card; no other card can be used.
            Link::Switched(terminal) if terminal.line().card() == Some(account) => {
                self.logged_in = Some(account);
                return true;
            }
            Link::Switched(_) => {
                self.result.unknown.push(format!(
                    "terminal {}: card {card} is not its line's card",
                    self.index
                ));
                return false;
            }
        };
        self.result.logins += 1;
        let failure = match client.verify(*card, pin).await {
            Ok(reply) if reply.status == Status::Approved => {
                self.logged_in = Some(account);
                return true;
            }
            Ok(reply) => format!(
                "ATM {}: verify of card {card} answered {}",
                self.index, reply.status
            ),
            Err(error) => format!("ATM {}: verify of card {card}: {error}", self.index),
        };
        self.result.unknown.push(failure);
        self.logged_in = None;
        false
    }

    /// Counts an operation's retries and faults (since `before`), and its latency if it was
    /// acknowledged, in this second of the timeline and in the ramp step running now.
    pub(super) fn count(&mut self, before: ClientStats, acked_latency_us: Option<u64>) {
        let after = self.client.stats();
        let shared = &self.shared;
        let second = shared.started.elapsed().as_secs();
        let step = shared.step.load(Ordering::Relaxed) as u64;
        let buckets = [
            bucket_for(&mut self.result.current, second, &shared.timeline),
            bucket_for(&mut self.result.current_step, step, &shared.steps),
        ];
        for bucket in buckets {
            bucket.1.retries += after.retries - before.retries;
            bucket.1.client_faults += (after.requests_dropped - before.requests_dropped)
                + (after.replies_dropped - before.replies_dropped);
            if let Some(elapsed_us) = acked_latency_us {
                let _ = bucket.0.record(elapsed_us.min(SECOND_LATENCY_US_MAX));
                bucket.1.ops_acked += 1;
            }
        }
        if let Some(elapsed_us) = acked_latency_us {
            shared.acked.fetch_add(1, Ordering::Relaxed);
            let _ = self.result.latency.record(elapsed_us);
        }
    }

    /// Takes a definite reply into account: its status and kind, the money it moved (for a
    /// withdrawal, deposit or transfer), a statement's consistency, and (for a remembered
    /// operation) the request for the audit to replay.
    fn settle(
        &mut self,
        account: usize,
        id: RequestId,
        operation: Operation,
        reply: &Reply,
        elapsed_us: u64,
    ) {
        *self.result.statuses.entry(reply.status.name()).or_default() += 1;
        let approved = reply.status == Status::Approved;
        let tally = self
            .result
            .kinds
            .entry(operation.name())
            .or_insert_with(|| KindTally {
                latency: new_second_histogram(),
                acked: 0,
                approved: 0,
            });
        let _ = tally.latency.record(elapsed_us.min(SECOND_LATENCY_US_MAX));
        tally.acked += 1;
        tally.approved += u64::from(approved);
        let card = self.shared.cards[account].0;
        if approved {
            self.apply(account, id, &operation, reply);
        }
        // Only a remembered outcome comes back identical when its id is replayed.
        if operation.kind().is_remembered() {
            self.result
                .recent
                .push_back((id, card, operation, reply.clone()));
            if self.result.recent.len() > AUDIT_REPLAYS_PER_ATM {
                self.result.recent.pop_front();
            }
        }
    }

    /// What an approved reply to `operation` (with `id`, on `account`) changes in what the ATM
    /// expects.
    fn apply(&mut self, account: usize, id: RequestId, operation: &Operation, reply: &Reply) {
        match *operation {
            Operation::Withdraw { amount } => {
                self.moved(account, -(amount as i64), Flow::Withdrawals);
                let withdrawal = Withdrawal {
                    account,
                    id,
                    amount,
                };
                self.last_withdrawal = Some((withdrawal, self.operations_done));
            }
            Operation::Deposit { amount } => self.moved(account, amount as i64, Flow::Deposits),
            Operation::Transfer { to, amount } => {
                if let Some(receiver) = self.shared.account_of(to) {
                    self.moved(account, -(amount as i64), Flow::Transfers);
                    self.shared.expected[receiver].fetch_add(amount as i64, Ordering::Relaxed);
                }
            }
            Operation::Statement { .. } => {
                if let Body::Statement(movements) = &reply.body {
                    let card = self.shared.cards[account].0;
                    for detail in statement_violations(card, movements, None) {
                        self.violation(detail);
                    }
                }
            }
            _ => {}
        }
    }

    /// Folds the last buckets into the shared ones and hands over what the ATM counted.
    pub(super) fn finish(mut self) -> AtmResult {
        for (current, merged) in [
            (&mut self.result.current, &self.shared.timeline),
            (&mut self.result.current_step, &self.shared.steps),
        ] {
            if let Some(finished) = current.take() {
                fold_bucket(merged, finished);
            }
        }
        self.result.next_sequence = self.client.next_id().sequence;
        let stats = self.client.stats();
        self.result.retries = stats.retries;
        self.result.redirects = stats.redirects;
        self.result.requests_dropped = stats.requests_dropped;
        self.result.replies_dropped = stats.replies_dropped;
        self.result
            .open_holds
            .extend(std::mem::take(&mut self.holds));
        self.result
    }
}

/// The account an ATM acts on next, of `accounts`: `current` while fewer than `per_card`
/// operations were done on it, else one drawn anew (by `zipf` when the load is skewed, uniformly
/// otherwise); counts the operation in `operations_on_card`. Both doors' ATMs draw this way.
pub(super) fn next_account(
    current: Option<usize>,
    operations_on_card: &mut u32,
    per_card: u32,
    zipf: Option<&rand_distr::Zipf<f64>>,
    generator: &mut StdRng,
    accounts: usize,
) -> usize {
    let account = match (current, *operations_on_card < per_card) {
        (Some(current), true) => current,
        _ => {
            *operations_on_card = 0;
            match zipf {
                Some(zipf) => (zipf.sample(generator) as usize)
                    .saturating_sub(1)
                    .min(accounts - 1),
                None => generator.gen_range(0..accounts),
            }
        }
    };
    *operations_on_card += 1;
    account
}
