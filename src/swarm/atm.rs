//! One simulated ATM: its client, its generator, the card in use and what it counted.

use super::*;

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
    pub(super) requests_dropped: u64,
    pub(super) replies_dropped: u64,
}

/// One ATM: its client, its own generator, the card in use and what it counted.
pub(super) struct Atm {
    shared: Arc<Shared>,
    /// Its number, for the report's messages.
    index: u64,
    generator: StdRng,
    client: Client,
    /// The skew over accounts, when there is one.
    zipf: Option<rand_distr::Zipf<f64>>,
    result: AtmResult,
    /// The account whose card is verified on the client's connection.
    logged_in: Option<usize>,
    /// Operations done on the current card.
    operations_on_card: u32,
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
            client: Client::new(client_config),
            zipf,
            result: AtmResult {
                latency: new_histogram(),
                current: None,
                current_step: None,
                statuses: BTreeMap::new(),
                unknown: Vec::new(),
                recent: VecDeque::new(),
                client_id,
                next_sequence: 0,
                retries: 0,
                requests_dropped: 0,
                replies_dropped: 0,
            },
            generator,
            shared,
            index,
            logged_in: None,
            operations_on_card: 0,
        }
    }

    /// Claims the next operation of the run; false when the run is over.
    pub(super) fn next_operation_allowed(&self) -> bool {
        let shared = &self.shared;
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

    /// The account to act on: a customer at the ATM does a few operations on one card before
    /// the next one comes.
    pub(super) fn pick_account(&mut self) -> usize {
        let accounts = self.shared.cards.len();
        let account = match (
            self.logged_in,
            self.operations_on_card < self.shared.config.operations_per_card,
        ) {
            (Some(current), true) => current,
            _ => {
                self.operations_on_card = 0;
                match &self.zipf {
                    Some(zipf) => (zipf.sample(&mut self.generator) as usize)
                        .saturating_sub(1)
                        .min(accounts - 1),
                    None => self.generator.gen_range(0..accounts),
                }
            }
        };
        self.operations_on_card += 1;
        account
    }

    /// One operation: picked, logged in for if it needs a card, sent until definite, counted.
    pub(super) async fn operate(&mut self) {
        let account = self.pick_account();
        let operation = pick_operation(&self.shared.config.mix, &mut self.generator);
        let before = self.client.stats();
        let clock = Instant::now();
        let needs_card = operation.kind().needs_card();
        if needs_card && self.logged_in != Some(account) && !self.log_in(account).await {
            return;
        }
        let id = self.client.next_id();
        let outcome = self.client.call_with_id(id, operation.clone()).await;
        let elapsed_us = clock.elapsed().as_micros().max(1) as u64;
        let reply = match outcome {
            Ok(reply) => reply,
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
                return;
            }
        };
        self.count(before, Some(elapsed_us));
        self.settle(account, id, operation, reply);
    }

    /// Verifies the card of `account`; false (with the reason noted) when that fails.
    pub(super) async fn log_in(&mut self, account: usize) -> bool {
        let (card, pin) = &self.shared.cards[account];
        let failure = match self.client.verify(*card, pin).await {
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

    /// Takes a definite reply into account: its status, the money it moved, and (for a
    /// remembered operation) the request for the audit to replay.
    pub(super) fn settle(
        &mut self,
        account: usize,
        id: RequestId,
        operation: Operation,
        reply: Reply,
    ) {
        *self.result.statuses.entry(reply.status.name()).or_default() += 1;
        if reply.status == Status::Approved {
            let change = balance_change(&operation);
            if change != 0 {
                self.shared.expected[account].fetch_add(change, Ordering::Relaxed);
            }
        }
        // Only a remembered outcome comes back identical when its id is replayed.
        if operation.kind().is_remembered() {
            let card = self.shared.cards[account].0;
            self.result.recent.push_back((id, card, operation, reply));
            if self.result.recent.len() > AUDIT_REPLAYS_PER_ATM {
                self.result.recent.pop_front();
            }
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
        self.result.requests_dropped = stats.requests_dropped;
        self.result.replies_dropped = stats.replies_dropped;
        self.result
    }
}
