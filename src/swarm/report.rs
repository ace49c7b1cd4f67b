//! What a run reports: latency percentiles, the timeline, the ramp's steps, the summary.

use super::*;

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `histogram`; all zero when it is empty.
    pub(super) fn of<T: hdrhistogram::Counter>(histogram: &Histogram<T>) -> Self {
        if histogram.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// What one account should hold, so anyone can check the server independently.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AccountExpectation {
    /// Card number.
    pub card: Card,
    /// PIN.
    pub pin: String,
    /// The ledger balance: the opening balance plus the acknowledged deposits, reversals and
    /// transfers received, minus the acknowledged withdrawals, completed holds and transfers sent.
    pub expected_balance: i64,
    /// The available balance: the ledger balance less the holds the swarm left open.
    pub expected_available: i64,
}

/// Which way money moved, for the run's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Acknowledged deposits.
    Deposits,
    /// Acknowledged withdrawals.
    Withdrawals,
    /// Money given back by acknowledged reversals.
    Reversals,
    /// Money posted by acknowledged hold completions.
    HoldsCompleted,
    /// Money sent by acknowledged transfers (it stays inside the swarm's accounts).
    Transfers,
}

/// The money the acknowledged replies moved, in all: what the server's balances must add up to.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Flows {
    /// The accounts' opening balances together (wider than one balance: 100 000 accounts of a
    /// large opening balance do not fit in 64 bits).
    pub opening: i128,
    /// Deposited.
    pub deposits: i64,
    /// Withdrawn.
    pub withdrawals: i64,
    /// Given back by reversals.
    pub reversals: i64,
    /// Posted by hold completions.
    pub holds_completed: i64,
    /// Moved between accounts by transfers.
    pub transfers: i64,
}

impl Flows {
    /// What the balances must add up to once nothing is in transit.
    pub fn balances_total(&self) -> i128 {
        self.opening + i128::from(self.deposits) + i128::from(self.reversals)
            - i128::from(self.withdrawals)
            - i128::from(self.holds_completed)
    }
}

/// The run's flows, counted by every ATM at once.
#[derive(Debug, Default)]
pub(super) struct FlowCounters {
    /// Indexed by [`Flow`].
    counts: [AtomicI64; 5],
}

impl FlowCounters {
    /// Counts `amount` more of `flow`.
    pub(super) fn add(&self, flow: Flow, amount: i64) {
        self.counts[flow as usize].fetch_add(amount, Ordering::Relaxed);
    }

    /// The totals so far, with the accounts' `opening` balances together.
    pub(super) fn snapshot(&self, opening: i128) -> Flows {
        let get = |flow: Flow| self.counts[flow as usize].load(Ordering::Relaxed);
        Flows {
            opening,
            deposits: get(Flow::Deposits),
            withdrawals: get(Flow::Withdrawals),
            reversals: get(Flow::Reversals),
            holds_completed: get(Flow::HoldsCompleted),
            transfers: get(Flow::Transfers),
        }
    }
}

/// One operation kind's definite replies in the whole run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct OperationCounts {
    /// Definite replies.
    pub acked: u64,
    /// Approved ones.
    pub approved: u64,
    /// Latency from first send to definite reply, retries included (two significant figures).
    pub latency_us: Percentiles,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Second {
    /// Seconds since the start.
    pub second: u64,
    /// Operations acknowledged in it.
    pub ops_acked: u64,
    /// Retries in it.
    pub retries: u64,
    /// Client-side faults injected in it.
    pub client_faults: u64,
    /// Server-side faults injected in it (in-process server only).
    pub server_faults: u64,
    /// Latency percentiles of the operations acknowledged in it.
    pub latency_us: Percentiles,
    /// True when the server was restarted in it.
    pub restarted: bool,
}

/// One step of a load ramp.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RampStep {
    /// ATMs running in this step.
    pub atms: usize,
    /// How long the step lasted.
    pub duration_secs: f64,
    /// Operations that got a definite reply during the step.
    pub ops_acked: u64,
    /// `ops_acked` per second of the step.
    pub goodput_per_sec: f64,
    /// Requests sent again with the same id during the step.
    pub retries: u64,
    /// Latency percentiles of the operations acknowledged in the step (retries included).
    pub latency_us: Percentiles,
}

/// The outcome of a run.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmReport {
    /// Operations that got a definite reply.
    pub ops_acked: u64,
    /// `ops_acked` per second of the load phase.
    pub ops_per_sec: f64,
    /// Latency from first send to definite reply, retries included.
    pub latency_us: Percentiles,
    /// Requests sent again with the same id.
    pub retries: u64,
    /// `moved` answers the ATMs followed to another node (cluster mode).
    pub redirects: u64,
    /// Verifies the ATMs sent on their own connections: one per customer's card, and one after
    /// each reconnect; none with `pin_with_each`, where every request carries its card's PIN
    /// (a switch's lines count theirs in `switch.verifies`).
    pub logins: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Server restarts (chaos).
    pub restarts: u64,
    /// Replies by status.
    pub statuses: BTreeMap<String, u64>,
    /// Number of audit violations; zero means every cent is accounted for.
    pub violations: u64,
    /// What each violation was.
    pub violation_details: Vec<String>,
    /// Every account with its PIN and the balance it must have.
    pub accounts: Vec<AccountExpectation>,
    /// Definite replies by operation kind (`withdraw`, `transfer`, `hold`, ...).
    pub operations: BTreeMap<String, OperationCounts>,
    /// Refusals the swarm provoked on purpose and got, by what it probed:
    /// `hold_resolved_again` (a hold resolved a second time), `original_after_its_reversal_refused`
    /// (a withdrawal sent after its reversal).
    pub probes: BTreeMap<String, u64>,
    /// The money the acknowledged replies moved, in all.
    pub flows: Flows,
    /// The run second by second.
    pub timeline: Vec<Second>,
    /// The ramp's steps, in order (empty without a ramp).
    pub ramp: Vec<RampStep>,
    /// Seconds spent sending load.
    pub duration_secs: f64,
    /// The front door the load went through (`bincode` or `iso8583`).
    pub front_door: String,
    /// What the ISO 8583 ATMs counted of the door's mechanics: `sign_ons`, `reversals` (0420
    /// after a withdrawal went unanswered), `reversed` (of those, recorded: the withdrawal took
    /// nothing), `reversals_refused` (refused for good, the original's repeat told its outcome),
    /// `reversal_repeats` (0421), `repeats` (0201), `partial_reversals` (field 95 given),
    /// `replays` (repeats at the end, each answered as its original), `unmatched` (late replies
    /// nobody waited for), `reconnects`. Empty for the bincode door.
    pub iso8583: BTreeMap<String, u64>,
    /// What the switch's lines counted; absent unless the run was in switch mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchCounts>,
}

/// A switch-mode run's connections and how full they were.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct SwitchCounts {
    /// Connections the terminals share.
    pub connections: usize,
    /// Terminals per connection: requests it may have in flight at once.
    pub in_flight: usize,
    /// The most requests seen in flight on one connection at once (retries included).
    pub in_flight_max_seen: u64,
    /// Connections opened, the first of each included (the rest are reconnects).
    pub connections_opened: u64,
    /// Approved Verifies the lines sent: one per round and one after each reconnect. Always 0
    /// on the ISO 8583 door, where every 0200 carries its PIN block and a line signs on instead
    /// (the sign-ons are counted in the report's ISO 8583 counts).
    pub verifies: u64,
    /// Rounds: cards served one after another, on all lines (0 on the ISO 8583 door, where no
    /// line holds a verified card).
    pub rounds: u64,
}

/// A histogram for one second of the timeline: two significant figures and 32-bit counts keep it
/// to a few kilobytes, so a long run's timeline stays small.
pub(super) type SecondHistogram = Histogram<u32>;

/// Longest latency one second's histogram tells apart (longer ones count as this).
pub(super) const SECOND_LATENCY_US_MAX: u64 = 60_000_000;

pub(super) fn new_second_histogram() -> SecondHistogram {
    Histogram::new_with_bounds(1, SECOND_LATENCY_US_MAX, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("histogram"))
}

/// Folds one ATM's finished bucket (a second, or a ramp step) into the merged list.
pub(super) fn fold_bucket(
    merged: &parking_lot::Mutex<Vec<(SecondHistogram, Second)>>,
    finished: (SecondHistogram, Second),
) {
    let (histogram, counts) = finished;
    let mut timeline = merged.lock();
    let index = counts.second as usize;
    while timeline.len() <= index {
        let second = timeline.len() as u64;
        timeline.push((
            new_second_histogram(),
            Second {
                second,
                ..Second::default()
            },
        ));
    }
    let merged = &mut timeline[index];
    let _ = merged.0.add(&histogram);
    merged.1.ops_acked += counts.ops_acked;
    merged.1.retries += counts.retries;
    merged.1.client_faults += counts.client_faults;
}

/// The bucket numbered `key` that an ATM counts in now; the one before it, if it had another
/// number, is folded into `merged` first.
pub(super) fn bucket_for<'a>(
    current: &'a mut Option<(SecondHistogram, Second)>,
    key: u64,
    merged: &parking_lot::Mutex<Vec<(SecondHistogram, Second)>>,
) -> &'a mut (SecondHistogram, Second) {
    if current
        .as_ref()
        .is_some_and(|(_, counts)| counts.second != key)
    {
        if let Some(finished) = current.take() {
            fold_bucket(merged, finished);
        }
    }
    current.get_or_insert_with(|| {
        (
            new_second_histogram(),
            Second {
                second: key,
                ..Second::default()
            },
        )
    })
}

pub(super) fn new_histogram() -> Histogram<u64> {
    // Three significant figures from 1 µs to an hour: fixed memory whatever the run length.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}
