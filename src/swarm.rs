//! The ATM swarm: thousands of concurrent ATMs, injected faults, and an audit of every cent.
//!
//! [`run`] creates accounts, starts `atms` tasks that each behave like one ATM (its own client
//! id, one request in flight, always retrying with the same id until a definite answer), and keeps
//! the money it *expects* each account to hold from the acknowledged replies alone. Optionally it
//! injects faults on the client side, runs its own server with server-side faults, or starts the
//! server with a command and SIGKILLs it on a period (chaos restarts).
//!
//! At the end it audits: every account's balance on the server equals its initial balance plus the
//! acknowledged deposits minus the acknowledged withdrawals; each ATM's most recent acknowledged
//! requests, replayed with their ids, return the identical reply; no expected balance went
//! negative; every request got a definite answer; no honest request was refused as stale or as a
//! conflict. Any violation is listed in the report.
//!
//! The `atm_swarm` example is the command-line front end; the tests call [`run`] directly.

use crate::client::{reply_balance, Client, ClientConfig, ClientError};
use crate::faults::FaultPlan;
use crate::pin::PinHashCost;
use crate::protocol::{Amount, Card, Operation, Reply, RequestId, Status};
use crate::server::{RunningServer, ServerConfig};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Acknowledged requests per ATM replayed in the audit. Each replay is preceded by a verify (a new
/// sequence number), so this stays well inside the server's window of remembered ids.
const AUDIT_REPLAYS_PER_ATM: usize = 8;

/// Largest amount one withdrawal or deposit moves.
const AMOUNT_MAX: Amount = 500;

/// Relative weights of the operations an ATM picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mix {
    /// Withdrawals.
    pub withdraw: u32,
    /// Deposits.
    pub deposit: u32,
    /// Balance inquiries.
    pub balance: u32,
    /// Utilities (lowercase, prime, palindrome).
    pub utility: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Mix {
            withdraw: 45,
            deposit: 35,
            balance: 15,
            utility: 5,
        }
    }
}

impl FromStr for Mix {
    type Err = String;

    /// Parses `withdraw=W,deposit=W,balance=W,utility=W` (missing kinds weigh 0).
    fn from_str(text: &str) -> Result<Self, String> {
        let mut mix = Mix {
            withdraw: 0,
            deposit: 0,
            balance: 0,
            utility: 0,
        };
        for (key, value) in crate::faults::key_values(text, "mix")? {
            let weight: u32 = value
                .parse()
                .map_err(|_| format!("mix {key}: {value:?} is not a whole number"))?;
            match key {
                "withdraw" => mix.withdraw = weight,
                "deposit" => mix.deposit = weight,
                "balance" => mix.balance = weight,
                "utility" => mix.utility = weight,
                other => {
                    return Err(format!(
                        "unknown mix kind {other:?} (withdraw, deposit, balance, utility)"
                    ))
                }
            }
        }
        if mix.withdraw + mix.deposit + mix.balance + mix.utility == 0 {
            return Err("the mix weighs nothing".into());
        }
        Ok(mix)
    }
}

/// When the swarm stops sending new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations (acknowledged or not) in all.
    Operations(u64),
}

/// Everything a swarm run needs.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// The server; `None` starts one in this process on a temporary data directory.
    pub server: Option<String>,
    /// Operator token used to create the accounts.
    pub operator_token: String,
    /// Concurrent ATMs.
    pub atms: usize,
    /// Accounts to create and use.
    pub accounts: usize,
    /// Opening balance of each account.
    pub initial_balance: Amount,
    /// Operation weights.
    pub mix: Mix,
    /// Zipf exponent over accounts; 0 is uniform.
    pub skew: f64,
    /// Operations an ATM does on one card (after one verification) before it picks the next.
    pub operations_per_card: u32,
    /// When to stop.
    pub stop: Stop,
    /// Seed for every random choice (and the client-side faults).
    pub seed: u64,
    /// Client-side faults: `drop-request`, `drop-reply`.
    pub client_faults: FaultPlan,
    /// Server-side faults for the in-process server.
    pub server_faults: Option<FaultPlan>,
    /// A shell command that runs the server (used with `chaos_restart`).
    pub server_command: Option<String>,
    /// SIGKILL and restart the server command on this period.
    pub chaos_restart: Option<Duration>,
    /// The shortest time one attempt waits for a reply before the client retries (the client
    /// library's [`ClientConfig::attempt_timeout`]; above it the wait adapts to the server).
    pub attempt_timeout: Duration,
    /// How long a request may keep being retried before its outcome counts as unknown.
    pub outcome_deadline: Duration,
    /// Called about once a second with the operations acknowledged so far (for progress display).
    pub progress: Option<ProgressCallback>,
    /// A load ramp: numbers of ATMs, rising, one step each; empty for a run at `atms` ATMs.
    /// Each step adds ATMs to the ones already running and lasts `ramp_step`; `atms` and
    /// `stop` are then ignored, and the report gives each step's goodput and latency.
    pub ramp: Vec<usize>,
    /// How long one ramp step lasts (a time, or operations started in the step).
    pub ramp_step: Stop,
}

impl SwarmConfig {
    /// A small default run against `server` (or an in-process one).
    pub fn new(server: Option<String>) -> Self {
        SwarmConfig {
            server,
            operator_token: "swarm-operator-token-2c8e4a6f1d3b9075".into(),
            atms: 64,
            accounts: 100,
            initial_balance: 1_000_000,
            mix: Mix::default(),
            skew: 0.0,
            operations_per_card: 1,
            stop: Stop::After(Duration::from_secs(10)),
            seed: 1,
            client_faults: FaultPlan::default(),
            server_faults: None,
            server_command: None,
            chaos_restart: None,
            attempt_timeout: crate::client::ATTEMPT_TIMEOUT_FLOOR_DEFAULT,
            outcome_deadline: Duration::from_secs(30),
            progress: None,
            ramp: Vec::new(),
            ramp_step: Stop::After(Duration::from_secs(10)),
        }
    }
}

/// A callback that sees the number of acknowledged operations about once a second.
#[derive(Clone)]
pub struct ProgressCallback(pub Arc<dyn Fn(u64) + Send + Sync>);

impl std::fmt::Debug for ProgressCallback {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ProgressCallback")
    }
}

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
    fn of<T: hdrhistogram::Counter>(histogram: &Histogram<T>) -> Self {
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
    /// Initial balance plus acknowledged deposits minus acknowledged withdrawals.
    pub expected_balance: i64,
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
    /// The run second by second.
    pub timeline: Vec<Second>,
    /// The ramp's steps, in order (empty without a ramp).
    pub ramp: Vec<RampStep>,
    /// Seconds spent sending load.
    pub duration_secs: f64,
}

/// One ATM's own tallies, merged at the end.
struct AtmResult {
    latency: Histogram<u64>,
    /// The second being counted now; folded into the shared timeline when the clock moves on.
    current: Option<(SecondHistogram, Second)>,
    /// The ramp step being counted now (its index in `Second::second`), folded likewise.
    current_step: Option<(SecondHistogram, Second)>,
    statuses: BTreeMap<&'static str, u64>,
    unknown: Vec<String>,
    /// The most recent acknowledged requests: id, card, operation, reply.
    recent: VecDeque<(RequestId, Card, Operation, Reply)>,
    client_id: u64,
    /// The first sequence number the ATM did not use.
    next_sequence: u64,
    retries: u64,
    requests_dropped: u64,
    replies_dropped: u64,
}

struct Shared {
    config: SwarmConfig,
    address: String,
    cards: Vec<(Card, String)>,
    expected: Vec<AtomicI64>,
    operations_started: AtomicU64,
    acked: AtomicU64,
    started: Instant,
    deadline: Option<Instant>,
    /// Every ATM's seconds, merged.
    timeline: parking_lot::Mutex<Vec<(SecondHistogram, Second)>>,
    /// Every ATM's ramp steps, merged (indexed by step).
    steps: parking_lot::Mutex<Vec<(SecondHistogram, Second)>>,
    /// The ramp step running now.
    step: AtomicUsize,
    /// Set when the load must stop (the ramp's last step ended).
    stopping: AtomicBool,
}

/// A histogram for one second of the timeline: two significant figures and 32-bit counts keep it
/// to a few kilobytes, so a long run's timeline stays small.
type SecondHistogram = Histogram<u32>;

/// Longest latency one second's histogram tells apart (longer ones count as this).
const SECOND_LATENCY_US_MAX: u64 = 60_000_000;

fn new_second_histogram() -> SecondHistogram {
    Histogram::new_with_bounds(1, SECOND_LATENCY_US_MAX, 2)
        .unwrap_or_else(|_| Histogram::new(2).expect("histogram"))
}

/// Folds one ATM's finished bucket (a second, or a ramp step) into the merged list.
fn fold_bucket(
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
fn bucket_for<'a>(
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

fn new_histogram() -> Histogram<u64> {
    // Three significant figures from 1 µs to an hour: fixed memory whatever the run length.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

fn client_config(shared: &Shared, client_id: u64) -> ClientConfig {
    let mut config = ClientConfig::new(shared.address.clone());
    config.client_id = client_id;
    config.attempt_timeout = shared.config.attempt_timeout;
    config.outcome_deadline = shared.config.outcome_deadline;
    config
}

/// Runs the swarm and audits the result.
pub async fn run(config: SwarmConfig) -> Result<SwarmReport, String> {
    let mut in_process = None;
    let mut chaos = None;
    let address = match (&config.server, &config.server_command) {
        (Some(address), Some(command)) => {
            let server = ChaosServer::start(command.clone(), address.clone()).await?;
            let address = server.address.clone();
            chaos = Some(server);
            address
        }
        (Some(address), None) => address.clone(),
        (None, Some(_)) => {
            return Err("--server-cmd needs --server ADDR (where the command listens)".into())
        }
        (None, None) => {
            let directory = tempfile::tempdir()
                .map_err(|error| format!("cannot make a data directory: {error}"))?;
            let mut server_config = ServerConfig::new(directory.path());
            server_config.listen = "127.0.0.1:0".parse().map_err(|_| "bad address")?;
            server_config.operator_token = Some(config.operator_token.clone());
            server_config.pin_hash_cost = PinHashCost::MINIMUM;
            server_config.pin_key =
                crate::server::pins::PinKeySource::Given(crate::pin::PinKey::generate());
            server_config.faults = config.server_faults;
            let server = RunningServer::start(server_config).map_err(|error| error.to_string())?;
            let address = server.local_addr.to_string();
            in_process = Some((server, directory));
            address
        }
    };
    let mut generator = StdRng::seed_from_u64(config.seed);
    // Cards from the seed, ten digits, so runs with different seeds do not collide on a server.
    let first_card = 1_000_000_000 + generator.gen_range(0..8_000_000_000u64);
    let cards: Vec<(Card, String)> = (0..config.accounts as u64)
        .map(|index| {
            (
                first_card + index,
                format!("{:04}", generator.gen_range(0..10_000)),
            )
        })
        .collect();
    create_accounts(&config, &address, &cards).await?;
    let shared = Arc::new(Shared {
        expected: cards
            .iter()
            .map(|_| AtomicI64::new(config.initial_balance as i64))
            .collect(),
        cards,
        address: address.clone(),
        operations_started: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        started: Instant::now(),
        timeline: parking_lot::Mutex::new(Vec::new()),
        steps: parking_lot::Mutex::new(Vec::new()),
        step: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
        deadline: match (config.stop, config.ramp.is_empty()) {
            (Stop::After(duration), true) => Some(Instant::now() + duration),
            _ => None,
        },
        config,
    });
    let chaos_task = match (&mut chaos, shared.config.chaos_restart) {
        (Some(server), Some(period)) => Some(server.start_killing(period, shared.started)),
        _ => None,
    };
    let progress_task = shared.config.progress.clone().map(|progress| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                (progress.0)(shared.acked.load(Ordering::Relaxed));
            }
        })
    });
    // Server-side faults per second (in-process server only), sampled until the load stops.
    let load_done = tokio_util::sync::CancellationToken::new();
    let server_faults_sampler = in_process.as_ref().map(|(server, _)| server.bank().clone());
    let sampler = server_faults_sampler.map(|bank| {
        let load_done = load_done.clone();
        tokio::spawn(async move {
            let mut seconds = Vec::new();
            let mut last = 0;
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            ticks.tick().await;
            loop {
                let finished = tokio::select! {
                    _ = ticks.tick() => false,
                    _ = load_done.cancelled() => true,
                };
                let total = bank.faults().as_ref().map_or(0, |faults| {
                    faults.counts.requests_dropped.load(Ordering::Relaxed)
                        + faults.counts.replies_dropped.load(Ordering::Relaxed)
                        + faults.counts.actor_crashes.load(Ordering::Relaxed)
                });
                seconds.push(total - last);
                last = total;
                if finished {
                    return seconds;
                }
            }
        })
    });
    let (atms, step_durations) = if shared.config.ramp.is_empty() {
        (start_atms(&shared, 0..shared.config.atms), Vec::new())
    } else {
        run_ramp(&shared).await
    };
    let mut results = Vec::with_capacity(atms.len());
    for atm in atms {
        results.push(
            atm.await
                .map_err(|error| format!("an ATM task failed: {error}"))?,
        );
    }
    let duration = shared.started.elapsed();
    if let Some(task) = progress_task {
        task.abort();
    }
    load_done.cancel();
    let server_fault_seconds = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let restart_seconds = match chaos_task {
        Some(task) => {
            task.abort();
            let _ = task.await;
            chaos
                .as_mut()
                .map(|server| server.restart_seconds())
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    if let Some(server) = &mut chaos {
        server.ensure_running().await?;
    }
    let mut report = merge(
        &shared,
        &results,
        duration,
        &restart_seconds,
        &server_fault_seconds,
    );
    report.ramp = ramp_steps(&shared, &step_durations);
    if let Some((server, _)) = &in_process {
        if let Some(faults) = &server.bank().faults() {
            let counts = &faults.counts;
            report.faults.insert(
                "server_requests_dropped".into(),
                counts.requests_dropped.load(Ordering::Relaxed),
            );
            report.faults.insert(
                "server_replies_dropped".into(),
                counts.replies_dropped.load(Ordering::Relaxed),
            );
            report.faults.insert(
                "server_actor_crashes".into(),
                counts.actor_crashes.load(Ordering::Relaxed),
            );
        }
        report.faults.insert(
            "server_actor_restarts".into(),
            server.bank().stats().actor_restarts.load(Ordering::Relaxed),
        );
    }
    audit(&shared, &results, &mut report).await;
    if let Some(server) = chaos.as_mut() {
        server.stop();
    }
    drop(in_process);
    Ok(report)
}

type AtmTask = tokio::task::JoinHandle<AtmResult>;

/// Starts the ATMs numbered `indices`.
fn start_atms(shared: &Arc<Shared>, indices: std::ops::Range<usize>) -> Vec<AtmTask> {
    indices
        .map(|index| {
            let shared = shared.clone();
            tokio::spawn(async move { run_atm(shared, index as u64).await })
        })
        .collect()
}

/// Runs the ramp: each step adds ATMs up to its number and lasts `ramp_step`; after the last,
/// every ATM is told to stop. Returns the ATMs and how long each step lasted.
async fn run_ramp(shared: &Arc<Shared>) -> (Vec<AtmTask>, Vec<Duration>) {
    let mut atms = Vec::new();
    let mut durations = Vec::new();
    for (step, &count) in shared.config.ramp.iter().enumerate() {
        let began = Instant::now();
        let operations_before = shared.operations_started.load(Ordering::Relaxed);
        shared.step.store(step, Ordering::Relaxed);
        atms.extend(start_atms(shared, atms.len()..count.max(atms.len())));
        match shared.config.ramp_step {
            Stop::After(duration) => tokio::time::sleep(duration).await,
            Stop::Operations(operations) => {
                // Polled: the step's length is counted in operations, not in time.
                while shared.operations_started.load(Ordering::Relaxed) - operations_before
                    < operations
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        durations.push(began.elapsed());
    }
    shared.stopping.store(true, Ordering::Relaxed);
    (atms, durations)
}

/// Each ramp step's numbers from the merged step buckets.
fn ramp_steps(shared: &Shared, durations: &[Duration]) -> Vec<RampStep> {
    let mut merged = std::mem::take(&mut *shared.steps.lock());
    merged.resize_with(durations.len(), || {
        (new_second_histogram(), Second::default())
    });
    shared
        .config
        .ramp
        .iter()
        .zip(durations)
        .zip(merged)
        .map(|((&atms, duration), (histogram, counts))| RampStep {
            atms,
            duration_secs: duration.as_secs_f64(),
            ops_acked: counts.ops_acked,
            goodput_per_sec: counts.ops_acked as f64 / duration.as_secs_f64().max(1e-9),
            retries: counts.retries,
            latency_us: Percentiles::of(&histogram),
        })
        .collect()
}

/// Creates every account, a few ATMs' worth at a time.
async fn create_accounts(
    config: &SwarmConfig,
    address: &str,
    cards: &[(Card, String)],
) -> Result<(), String> {
    let workers = 16.min(cards.len().max(1));
    let chunk = cards.len().div_ceil(workers).max(1);
    let mut tasks = Vec::new();
    for (worker, slice) in cards.chunks(chunk).enumerate() {
        let slice = slice.to_vec();
        let mut client_config = ClientConfig::new(address.to_string());
        client_config.client_id = config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(worker as u64)
            | 1 << 63;
        client_config.outcome_deadline = config.outcome_deadline;
        client_config.attempt_timeout = config.attempt_timeout;
        let token = config.operator_token.clone();
        let balance = config.initial_balance;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(client_config);
            for (card, pin) in slice {
                let reply = client
                    .create_account(&token, card, &format!("ATM {card}"), &pin, balance)
                    .await
                    .map_err(|error| format!("cannot create account {card}: {error}"))?;
                if reply.status != Status::Approved {
                    return Err(format!("cannot create account {card}: {}", reply.status));
                }
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

/// What an ATM does next.
enum Action {
    Withdraw(Amount),
    Deposit(Amount),
    Balance,
    Utility(Operation),
}

fn pick_action(mix: &Mix, generator: &mut StdRng) -> Action {
    let total = mix.withdraw + mix.deposit + mix.balance + mix.utility;
    let mut roll = generator.gen_range(0..total);
    if roll < mix.withdraw {
        return Action::Withdraw(generator.gen_range(1..=AMOUNT_MAX));
    }
    roll -= mix.withdraw;
    if roll < mix.deposit {
        return Action::Deposit(generator.gen_range(1..=AMOUNT_MAX));
    }
    roll -= mix.deposit;
    if roll < mix.balance {
        return Action::Balance;
    }
    Action::Utility(match generator.gen_range(0..3) {
        0 => Operation::Lowercase {
            text: "Hello From The SWARM".into(),
        },
        1 => Operation::IsPrime {
            number: generator.gen_range(1..1_000_000_000),
        },
        _ => Operation::IsPalindrome {
            number: generator.gen_range(1..1_000_000),
        },
    })
}

async fn run_atm(shared: Arc<Shared>, index: u64) -> AtmResult {
    let config = &shared.config;
    let seed = config
        .seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(index);
    let mut generator = StdRng::seed_from_u64(seed);
    let client_id = generator.gen_range(1..u64::MAX >> 1);
    let mut client_config = client_config(&shared, client_id);
    client_config.faults = config.client_faults;
    client_config.faults.seed = seed;
    let mut client = Client::new(client_config);
    let zipf = (config.skew > 0.0)
        .then(|| rand_distr::Zipf::new(shared.cards.len() as u64, config.skew).ok())
        .flatten();
    let mut result = AtmResult {
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
    };
    let mut logged_in: Option<usize> = None;
    let mut operations_on_card: u32 = 0;
    loop {
        if shared.stopping.load(Ordering::Relaxed) {
            break;
        }
        if let Some(deadline) = shared.deadline {
            if Instant::now() >= deadline {
                break;
            }
        }
        let started = shared.operations_started.fetch_add(1, Ordering::Relaxed);
        if let (Stop::Operations(limit), true) = (config.stop, config.ramp.is_empty()) {
            if started >= limit {
                break;
            }
        }
        // A customer at the ATM does a few operations on one card before the next one comes.
        let account = match (logged_in, operations_on_card < config.operations_per_card) {
            (Some(current), true) => current,
            _ => {
                operations_on_card = 0;
                match &zipf {
                    Some(zipf) => (zipf.sample(&mut generator) as usize)
                        .saturating_sub(1)
                        .min(shared.cards.len() - 1),
                    None => generator.gen_range(0..shared.cards.len()),
                }
            }
        };
        operations_on_card += 1;
        let action = pick_action(&config.mix, &mut generator);
        let before = client.stats();
        let clock = Instant::now();
        let operation = match &action {
            Action::Withdraw(amount) => Operation::Withdraw { amount: *amount },
            Action::Deposit(amount) => Operation::Deposit { amount: *amount },
            Action::Balance => Operation::Balance,
            Action::Utility(operation) => operation.clone(),
        };
        let needs_login = !matches!(action, Action::Utility(_));
        if needs_login && logged_in != Some(account) {
            let (card, pin) = &shared.cards[account];
            match client.verify(*card, pin).await {
                Ok(reply) if reply.status == Status::Approved => logged_in = Some(account),
                Ok(reply) => {
                    result.unknown.push(format!(
                        "ATM {index}: verify of card {card} answered {}",
                        reply.status
                    ));
                    logged_in = None;
                    continue;
                }
                Err(error) => {
                    result
                        .unknown
                        .push(format!("ATM {index}: verify of card {card}: {error}"));
                    logged_in = None;
                    continue;
                }
            }
        }
        let id = client.next_id();
        let outcome = client.call_with_id(id, operation.clone()).await;
        let elapsed_us = clock.elapsed().as_micros().max(1) as u64;
        let after = client.stats();
        // Counted in this second of the timeline and in the ramp step running now.
        let second = shared.started.elapsed().as_secs();
        let step = shared.step.load(Ordering::Relaxed) as u64;
        let mut buckets = [
            bucket_for(&mut result.current, second, &shared.timeline),
            bucket_for(&mut result.current_step, step, &shared.steps),
        ];
        for bucket in buckets.iter_mut() {
            bucket.1.retries += after.retries - before.retries;
            bucket.1.client_faults += (after.requests_dropped - before.requests_dropped)
                + (after.replies_dropped - before.replies_dropped);
        }
        let reply = match outcome {
            Ok(reply) => reply,
            Err(error) => {
                let detail = match &error {
                    ClientError::LoginLost(status) => format!("login lost ({status})"),
                    other => other.to_string(),
                };
                result.unknown.push(format!(
                    "ATM {index}: request {id} ({}): {detail}",
                    operation.name()
                ));
                logged_in = None;
                continue;
            }
        };
        shared.acked.fetch_add(1, Ordering::Relaxed);
        let _ = result.latency.record(elapsed_us);
        for bucket in buckets.iter_mut() {
            let _ = bucket.0.record(elapsed_us.min(SECOND_LATENCY_US_MAX));
            bucket.1.ops_acked += 1;
        }
        *result.statuses.entry(reply.status.name()).or_default() += 1;
        if reply.status == Status::Approved {
            let change = match action {
                Action::Withdraw(amount) => -(amount as i64),
                Action::Deposit(amount) => amount as i64,
                _ => 0,
            };
            if change != 0 {
                shared.expected[account].fetch_add(change, Ordering::Relaxed);
            }
        }
        if needs_login && !matches!(action, Action::Balance) {
            result
                .recent
                .push_back((id, shared.cards[account].0, operation, reply));
            if result.recent.len() > AUDIT_REPLAYS_PER_ATM {
                result.recent.pop_front();
            }
        }
    }
    for (current, merged) in [
        (&mut result.current, &shared.timeline),
        (&mut result.current_step, &shared.steps),
    ] {
        if let Some(finished) = current.take() {
            fold_bucket(merged, finished);
        }
    }
    result.next_sequence = client.next_id().sequence;
    let stats = client.stats();
    result.retries = stats.retries;
    result.requests_dropped = stats.requests_dropped;
    result.replies_dropped = stats.replies_dropped;
    result
}

fn merge(
    shared: &Shared,
    results: &[AtmResult],
    duration: Duration,
    restart_seconds: &[u64],
    server_fault_seconds: &[u64],
) -> SwarmReport {
    let mut latency = new_histogram();
    let mut statuses = BTreeMap::new();
    let (mut retries, mut requests_dropped, mut replies_dropped) = (0, 0, 0);
    for result in results {
        let _ = latency.add(&result.latency);
        for (status, count) in &result.statuses {
            *statuses.entry(status.to_string()).or_insert(0) += count;
        }
        retries += result.retries;
        requests_dropped += result.requests_dropped;
        replies_dropped += result.replies_dropped;
    }
    let timeline = std::mem::take(&mut *shared.timeline.lock());
    let timeline = timeline
        .into_iter()
        .map(|(histogram, mut second)| {
            second.latency_us = Percentiles::of(&histogram);
            second.restarted = restart_seconds.contains(&second.second);
            second.server_faults = server_fault_seconds
                .get(second.second as usize)
                .copied()
                .unwrap_or(0);
            second
        })
        .collect();
    let ops_acked = latency.len();
    let mut faults = BTreeMap::new();
    faults.insert("client_requests_dropped".to_string(), requests_dropped);
    faults.insert("client_replies_dropped".to_string(), replies_dropped);
    SwarmReport {
        ops_acked,
        ops_per_sec: ops_acked as f64 / duration.as_secs_f64().max(1e-9),
        latency_us: Percentiles::of(&latency),
        retries,
        faults,
        restarts: restart_seconds.len() as u64,
        statuses,
        violations: 0,
        violation_details: Vec::new(),
        accounts: shared
            .cards
            .iter()
            .zip(&shared.expected)
            .map(|((card, pin), expected)| AccountExpectation {
                card: *card,
                pin: pin.clone(),
                expected_balance: expected.load(Ordering::Relaxed),
            })
            .collect(),
        timeline,
        ramp: Vec::new(),
        duration_secs: duration.as_secs_f64(),
    }
}

/// Checks every account and replays each ATM's latest acknowledged requests.
async fn audit(shared: &Arc<Shared>, results: &[AtmResult], report: &mut SwarmReport) {
    let mut violations = Vec::new();
    for result in results {
        violations.extend(
            result
                .unknown
                .iter()
                .map(|detail| format!("no definite answer: {detail}")),
        );
    }
    for status in [Status::StaleRequest, Status::RequestIdConflict] {
        if let Some(count) = report.statuses.get(status.name()) {
            violations.push(format!("{count} honest requests were answered {status}"));
        }
    }
    // Balances, a few auditors at a time.
    let auditors = 8.min(shared.cards.len().max(1));
    let chunk = shared.cards.len().div_ceil(auditors).max(1);
    let mut tasks = Vec::new();
    for (worker, accounts) in report.accounts.chunks(chunk).enumerate() {
        let accounts = accounts.to_vec();
        let config = client_config(
            shared,
            shared.config.seed.wrapping_add(worker as u64) | 3 << 62,
        );
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(config);
            let mut found = Vec::new();
            for account in accounts {
                if account.expected_balance < 0 {
                    found.push(format!("card {}: expected balance {} is negative", account.card, account.expected_balance));
                }
                let balance = match client.verify(account.card, &account.pin).await {
                    Ok(reply) if reply.status == Status::Approved => client.balance().await.map(|reply| reply_balance(&reply)),
                    Ok(reply) => {
                        found.push(format!("card {}: audit verify answered {}", account.card, reply.status));
                        continue;
                    }
                    Err(error) => Err(error),
                };
                match balance {
                    Ok(Some(balance)) if balance as i64 == account.expected_balance => {}
                    Ok(balance) => found.push(format!(
                        "card {}: server balance {balance:?}, expected {} from acknowledged replies",
                        account.card, account.expected_balance
                    )),
                    Err(error) => found.push(format!("card {}: audit balance failed: {error}", account.card)),
                }
            }
            found
        }));
    }
    for task in tasks {
        match task.await {
            Ok(found) => violations.extend(found),
            Err(error) => violations.push(format!("an auditor failed: {error}")),
        }
    }
    // Replays: the same client id, the same request id, the identical reply, no money moved.
    let pins: BTreeMap<Card, &str> = shared
        .cards
        .iter()
        .map(|(card, pin)| (*card, pin.as_str()))
        .collect();
    for result in results {
        if result.recent.is_empty() {
            continue;
        }
        let mut client = Client::new(client_config(shared, result.client_id));
        client.resume_after(result.next_sequence);
        // Each replay may cost one verify (a new sequence number); only requests that stay inside
        // the server's window after those are replayed.
        let oldest = (result.next_sequence + AUDIT_REPLAYS_PER_ATM as u64)
            .saturating_sub(crate::ledger::REQUEST_WINDOW);
        let mut recent: Vec<_> = result
            .recent
            .iter()
            .filter(|(id, ..)| id.sequence > oldest)
            .collect();
        recent.sort_by_key(|(id, card, ..)| (*card, id.sequence));
        let mut verified = None;
        for (id, card, operation, reply) in recent {
            if verified != Some(*card) {
                let pin = pins.get(card).copied().unwrap_or_default();
                match client.verify(*card, pin).await {
                    Ok(login) if login.status == Status::Approved => verified = Some(*card),
                    other => {
                        violations.push(format!(
                            "replay of {id}: cannot verify card {card}: {other:?}"
                        ));
                        continue;
                    }
                }
            }
            match client.call_with_id(*id, operation.clone()).await {
                Ok(again) if again == *reply => {}
                Ok(again) => violations.push(format!(
                    "replay of {id} answered {again:?}, originally {reply:?}"
                )),
                Err(error) => violations.push(format!("replay of {id}: {error}")),
            }
        }
    }
    report.violations = violations.len() as u64;
    report.violation_details = violations;
}

/// A server started from a shell command, which can be killed and restarted.
struct ChaosServer {
    command: String,
    address: String,
    child: Option<tokio::process::Child>,
    restarts: Arc<parking_lot::Mutex<Vec<u64>>>,
    killer: Option<tokio::task::JoinHandle<()>>,
    shared_child: Arc<tokio::sync::Mutex<Option<tokio::process::Child>>>,
}

impl ChaosServer {
    /// Starts the server; with `{listen}` in the command, on `listen` (port 0 allowed) and then
    /// always on the address it reported, so clients find every successor where they left.
    async fn start(command: String, listen: String) -> Result<ChaosServer, String> {
        let (child, address) = spawn_server(&command, &listen).await?;
        Ok(ChaosServer {
            command,
            address,
            child: None,
            restarts: Arc::new(parking_lot::Mutex::new(Vec::new())),
            killer: None,
            shared_child: Arc::new(tokio::sync::Mutex::new(Some(child))),
        })
    }

    /// Starts SIGKILLing and restarting the server every `period`.
    fn start_killing(&mut self, period: Duration, started: Instant) -> tokio::task::JoinHandle<()> {
        let command = self.command.clone();
        let address = self.address.clone();
        let restarts = self.restarts.clone();
        let child = self.shared_child.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let mut slot = child.lock().await;
                if let Some(mut running) = slot.take() {
                    let _ = running.kill().await;
                }
                restarts.lock().push(started.elapsed().as_secs());
                match spawn_server(&command, &address).await {
                    Ok((running, _)) => *slot = Some(running),
                    Err(error) => tracing::error!(%error, "chaos: cannot restart the server"),
                }
                drop(slot);
            }
        })
    }

    fn restart_seconds(&self) -> Vec<u64> {
        self.restarts.lock().clone()
    }

    async fn ensure_running(&mut self) -> Result<(), String> {
        let mut slot = self.shared_child.lock().await;
        let alive = match slot.as_mut() {
            Some(child) => child
                .try_wait()
                .map(|status| status.is_none())
                .unwrap_or(false),
            None => false,
        };
        if !alive {
            *slot = Some(spawn_server(&self.command, &self.address).await?.0);
            return Ok(());
        }
        drop(slot);
        wait_until_listening(&self.address).await
    }

    fn stop(&mut self) {
        if let Some(killer) = self.killer.take() {
            killer.abort();
        }
        if let Ok(mut slot) = self.shared_child.try_lock() {
            if let Some(child) = slot.as_mut() {
                let _ = child.start_kill();
            }
        }
        let _ = self.child.take();
    }
}

impl Drop for ChaosServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts the server command with `{listen}` replaced by `listen`. When the command has that
/// placeholder, the server is waited for by its ready line (`bank-server listening on ADDR`, the
/// address it bound, so `listen` may name port 0) and the address is returned; otherwise the
/// server is expected at `listen` itself.
async fn spawn_server(
    command: &str,
    listen: &str,
) -> Result<(tokio::process::Child, String), String> {
    use tokio::io::AsyncBufReadExt;
    let reports = command.contains(LISTEN_PLACEHOLDER);
    let command = command.replace(LISTEN_PLACEHOLDER, listen);
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdout(if reports {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot run {command:?}: {error}"))?;
    let Some(stdout) = child.stdout.take() else {
        wait_until_listening(listen).await?;
        return Ok((child, listen.to_string()));
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.trim().strip_prefix("bank-server listening on ") {
                return Some(address.to_string());
            }
        }
        None
    };
    let address = tokio::time::timeout(SERVER_START_TIMEOUT, ready)
        .await
        .ok()
        .flatten()
        .ok_or_else(|| format!("{command:?} did not report the address it listens on"))?;
    // Keep reading what else it prints, so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, address))
}

/// In `--server-cmd`, where the address to listen on goes (see [`spawn_server`]).
pub const LISTEN_PLACEHOLDER: &str = "{listen}";

/// How long a started server may take to listen.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

async fn wait_until_listening(address: &str) -> Result<(), String> {
    let deadline = Instant::now() + SERVER_START_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(address).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("the server did not start listening on {address}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Parses durations like `10s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len()),
    );
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Where the swarm writes its outputs, if anywhere.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    /// The JSON summary.
    pub json: Option<PathBuf>,
    /// Charts.
    pub plots: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_and_durations_parse() {
        let mix: Mix = "withdraw=3,deposit=1".parse().unwrap();
        assert_eq!((mix.withdraw, mix.deposit, mix.balance), (3, 1, 0));
        assert!("withdraw=0".parse::<Mix>().is_err());
        assert!("steal=1".parse::<Mix>().is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("ten").is_err());
    }
}
