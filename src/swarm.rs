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

use crate::client::ops::{self, Call};
use crate::client::tls::TlsSettings;
use crate::client::{reply_balance, Client, ClientConfig, ClientError, ClientStats};
use crate::faults::FaultPlan;
use crate::pin::PinHashCost;
use crate::protocol::{Amount, Card, Operation, Reply, RequestId, Status};
use crate::server::{RunningServer, ServerConfig};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::Rng;
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
    /// Speak TLS to the server (every client of the run, the audit's included); `None` for plain
    /// TCP. The in-process server speaks plain TCP, so this is for a `server` given.
    pub tls: Option<TlsSettings>,
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
            tls: None,
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

/// A client of the swarm's: `client_id` and the swarm's timeouts, with the id of its automatic
/// re-logins drawn from `seed` (so a run's every request id follows from the swarm's seed).
fn swarm_client_config(
    config: &SwarmConfig,
    address: &str,
    client_id: u64,
    seed: u64,
) -> ClientConfig {
    let mut client_config = ClientConfig::seeded(address.to_string(), seed);
    client_config.client_id = client_id;
    client_config.attempt_timeout = config.attempt_timeout;
    client_config.outcome_deadline = config.outcome_deadline;
    client_config.tls = config.tls.clone();
    client_config
}

fn client_config(shared: &Shared, client_id: u64, seed: u64) -> ClientConfig {
    swarm_client_config(&shared.config, &shared.address, client_id, seed)
}

/// The servers a run started itself, stopped when the run ends.
#[derive(Default)]
struct Servers {
    /// The in-process server and its temporary data directory.
    in_process: Option<(RunningServer, tempfile::TempDir)>,
    /// The server run from `server_command`, killed and restarted for chaos.
    chaos: Option<ChaosServer>,
}

/// Runs the swarm and audits the result.
pub async fn run(config: SwarmConfig) -> Result<SwarmReport, String> {
    let (address, mut servers) = start_server(&config).await?;
    let cards = draw_cards(&config);
    create_accounts(&config, &address, &cards).await?;
    let shared = Arc::new(Shared::new(config, address, cards));
    let chaos_task = match (&mut servers.chaos, shared.config.chaos_restart) {
        (Some(server), Some(period)) => Some(server.start_killing(period, shared.started)),
        _ => None,
    };
    let progress_task = spawn_progress(&shared);
    // Server-side faults per second (in-process server only), sampled until the load stops.
    let load_done = tokio_util::sync::CancellationToken::new();
    let sampler = servers
        .in_process
        .as_ref()
        .map(|(server, _)| spawn_fault_sampler(server.bank().clone(), load_done.clone()));
    let (results, step_durations) = run_load(&shared).await?;
    let duration = shared.started.elapsed();
    if let Some(task) = progress_task {
        task.abort();
    }
    load_done.cancel();
    let server_fault_seconds = match sampler {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    let restart_seconds = stop_chaos(chaos_task, &mut servers.chaos).await?;
    let mut report = merge(
        &shared,
        &results,
        duration,
        &restart_seconds,
        &server_fault_seconds,
    );
    report.ramp = ramp_steps(&shared, &step_durations);
    if let Some((server, _)) = &servers.in_process {
        add_server_faults(&mut report, server.bank());
    }
    audit(&shared, &results, &mut report).await;
    if let Some(server) = servers.chaos.as_mut() {
        server.stop();
    }
    drop(servers);
    Ok(report)
}

/// The server to run against: the one given, one started from `server_command`, or one in
/// this process on a temporary data directory. Returns its address.
async fn start_server(config: &SwarmConfig) -> Result<(String, Servers), String> {
    let mut servers = Servers::default();
    let address = match (&config.server, &config.server_command) {
        (Some(address), Some(command)) => {
            let server = ChaosServer::start(command.clone(), address.clone()).await?;
            let address = server.address.clone();
            servers.chaos = Some(server);
            address
        }
        (Some(address), None) => address.clone(),
        (None, Some(_)) => {
            return Err("--server-cmd needs --server ADDR (where the command listens)".into())
        }
        (None, None) if config.tls.is_some() => {
            return Err("TLS needs --server ADDR: the in-process server speaks plain TCP".into())
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
            // Every simulated ATM connects from this host: one peer, not held to a branch's cap.
            server_config.limits.connections_per_peer_max = server_config.limits.connections_max;
            let server = RunningServer::start(server_config).map_err(|error| error.to_string())?;
            let address = server.local_addr.to_string();
            servers.in_process = Some((server, directory));
            address
        }
    };
    Ok((address, servers))
}

/// The accounts' cards and PINs, from the seed. Cards have ten digits, so runs with different
/// seeds do not collide on a server.
fn draw_cards(config: &SwarmConfig) -> Vec<(Card, String)> {
    let mut generator = crate::clock::seeded(config.seed);
    let first_card = 1_000_000_000 + generator.gen_range(0..8_000_000_000u64);
    (0..config.accounts as u64)
        .map(|index| {
            (
                first_card + index,
                format!("{:04}", generator.gen_range(0..10_000)),
            )
        })
        .collect()
}

impl Shared {
    /// The state every ATM shares, at the start of the load.
    fn new(config: SwarmConfig, address: String, cards: Vec<(Card, String)>) -> Shared {
        Shared {
            expected: cards
                .iter()
                .map(|_| AtomicI64::new(config.initial_balance as i64))
                .collect(),
            cards,
            address,
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
        }
    }
}

/// Calls the progress callback, if any, once a second.
fn spawn_progress(shared: &Arc<Shared>) -> Option<tokio::task::JoinHandle<()>> {
    shared.config.progress.clone().map(|progress| {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                (progress.0)(shared.acked.load(Ordering::Relaxed));
            }
        })
    })
}

/// Every server-side fault the in-process server injected so far.
fn server_faults_total(bank: &crate::server::Bank) -> u64 {
    bank.faults().as_ref().map_or(0, |faults| {
        faults.counts.requests_dropped.load(Ordering::Relaxed)
            + faults.counts.replies_dropped.load(Ordering::Relaxed)
            + faults.counts.actor_crashes.load(Ordering::Relaxed)
    })
}

/// Counts the server-side faults of each second until `load_done`.
fn spawn_fault_sampler(
    bank: Arc<crate::server::Bank>,
    load_done: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<u64>> {
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
            let total = server_faults_total(&bank);
            seconds.push(total - last);
            last = total;
            if finished {
                return seconds;
            }
        }
    })
}

/// Runs the ATMs (all at once, or step by step on a ramp) until they stop; returns what each
/// counted and how long each ramp step lasted.
async fn run_load(shared: &Arc<Shared>) -> Result<(Vec<AtmResult>, Vec<Duration>), String> {
    let (atms, step_durations) = if shared.config.ramp.is_empty() {
        (start_atms(shared, 0..shared.config.atms), Vec::new())
    } else {
        run_ramp(shared).await
    };
    let mut results = Vec::with_capacity(atms.len());
    for atm in atms {
        results.push(
            atm.await
                .map_err(|error| format!("an ATM task failed: {error}"))?,
        );
    }
    Ok((results, step_durations))
}

/// Stops the chaos killer and makes sure the server runs again for the audit; returns the
/// seconds in which it was restarted.
async fn stop_chaos(
    killer: Option<tokio::task::JoinHandle<()>>,
    chaos: &mut Option<ChaosServer>,
) -> Result<Vec<u64>, String> {
    let restart_seconds = match killer {
        Some(task) => {
            task.abort();
            let _ = task.await;
            chaos
                .as_ref()
                .map(|server| server.restart_seconds())
                .unwrap_or_default()
        }
        None => Vec::new(),
    };
    if let Some(server) = chaos {
        server.ensure_running().await?;
    }
    Ok(restart_seconds)
}

/// The in-process server's own fault and restart counts, added to the report's faults.
fn add_server_faults(report: &mut SwarmReport, bank: &crate::server::Bank) {
    if let Some(faults) = &bank.faults() {
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
        bank.stats().actor_restarts.load(Ordering::Relaxed),
    );
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
        let client_id = config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(worker as u64)
            | 1 << 63;
        let client_config = swarm_client_config(config, address, client_id, client_id);
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

/// Picks the next operation by the mix's weights.
fn pick_operation(mix: &Mix, generator: &mut StdRng) -> Operation {
    let total = mix.withdraw + mix.deposit + mix.balance + mix.utility;
    let mut roll = generator.gen_range(0..total);
    if roll < mix.withdraw {
        let amount = generator.gen_range(1..=AMOUNT_MAX);
        return ops::Withdraw { amount }.into_operation();
    }
    roll -= mix.withdraw;
    if roll < mix.deposit {
        let amount = generator.gen_range(1..=AMOUNT_MAX);
        return ops::Deposit { amount }.into_operation();
    }
    roll -= mix.deposit;
    if roll < mix.balance {
        return ops::Balance.into_operation();
    }
    match generator.gen_range(0..3) {
        0 => ops::Lowercase {
            text: "Hello From The SWARM".into(),
        }
        .into_operation(),
        1 => ops::IsPrime {
            number: generator.gen_range(1..1_000_000_000),
        }
        .into_operation(),
        _ => ops::IsPalindrome {
            number: generator.gen_range(1..1_000_000),
        }
        .into_operation(),
    }
}

/// How an approved `operation` changes its account's balance.
fn balance_change(operation: &Operation) -> i64 {
    match operation {
        Operation::Withdraw { amount } => -(*amount as i64),
        Operation::Deposit { amount } => *amount as i64,
        _ => 0,
    }
}

/// One ATM: its client, its own generator, the card in use and what it counted.
struct Atm {
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

async fn run_atm(shared: Arc<Shared>, index: u64) -> AtmResult {
    let mut atm = Atm::new(shared, index);
    while atm.next_operation_allowed() {
        atm.operate().await;
    }
    atm.finish()
}

impl Atm {
    /// ATM number `index`, its generator and client ids drawn from the swarm's seed.
    fn new(shared: Arc<Shared>, index: u64) -> Atm {
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
    fn next_operation_allowed(&self) -> bool {
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
    fn pick_account(&mut self) -> usize {
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
    async fn operate(&mut self) {
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
    async fn log_in(&mut self, account: usize) -> bool {
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
    fn count(&mut self, before: ClientStats, acked_latency_us: Option<u64>) {
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
    fn settle(&mut self, account: usize, id: RequestId, operation: Operation, reply: Reply) {
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
    fn finish(mut self) -> AtmResult {
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

/// Mixed into an ATM's client id to seed the re-login id of the client that replays its
/// requests in the audit, so the two never share one.
const AUDIT_REPLAY_SEED_TAG: u64 = 0x5245_504c_4159_2121;

/// Checks every account and replays each ATM's latest acknowledged requests.
async fn audit(shared: &Arc<Shared>, results: &[AtmResult], report: &mut SwarmReport) {
    let mut violations = unanswered_and_refused(results, report);
    violations.extend(audit_balances(shared, &report.accounts).await);
    violations.extend(audit_replays(shared, results).await);
    report.violations = violations.len() as u64;
    report.violation_details = violations;
}

/// Requests without a definite answer, and honest requests refused as stale or as conflicts.
fn unanswered_and_refused(results: &[AtmResult], report: &SwarmReport) -> Vec<String> {
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
    violations
}

/// Every account's balance on the server against the expected one, a few auditors at a time.
async fn audit_balances(shared: &Arc<Shared>, accounts: &[AccountExpectation]) -> Vec<String> {
    let auditors = 8.min(shared.cards.len().max(1));
    let chunk = shared.cards.len().div_ceil(auditors).max(1);
    let mut tasks = Vec::new();
    for (worker, accounts) in accounts.chunks(chunk).enumerate() {
        let accounts = accounts.to_vec();
        let client_id = shared.config.seed.wrapping_add(worker as u64) | 3 << 62;
        let config = client_config(shared, client_id, client_id);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(config);
            let mut found = Vec::new();
            for account in accounts {
                found.extend(audit_account(&mut client, &account).await);
            }
            found
        }));
    }
    let mut violations = Vec::new();
    for task in tasks {
        match task.await {
            Ok(found) => violations.extend(found),
            Err(error) => violations.push(format!("an auditor failed: {error}")),
        }
    }
    violations
}

/// One account's balance on the server against the expected one.
async fn audit_account(client: &mut Client, account: &AccountExpectation) -> Vec<String> {
    let mut found = Vec::new();
    let card = account.card;
    if account.expected_balance < 0 {
        found.push(format!(
            "card {card}: expected balance {} is negative",
            account.expected_balance
        ));
    }
    let balance = match client.verify(card, &account.pin).await {
        Ok(reply) if reply.status == Status::Approved => {
            client.balance().await.map(|reply| reply_balance(&reply))
        }
        Ok(reply) => {
            found.push(format!(
                "card {card}: audit verify answered {}",
                reply.status
            ));
            return found;
        }
        Err(error) => Err(error),
    };
    match balance {
        Ok(Some(balance)) if balance as i64 == account.expected_balance => {}
        Ok(balance) => found.push(format!(
            "card {card}: server balance {balance:?}, expected {} from acknowledged replies",
            account.expected_balance
        )),
        Err(error) => found.push(format!("card {card}: audit balance failed: {error}")),
    }
    found
}

/// Replays: the same client id, the same request id, the identical reply, no money moved.
async fn audit_replays(shared: &Arc<Shared>, results: &[AtmResult]) -> Vec<String> {
    let pins: BTreeMap<Card, &str> = shared
        .cards
        .iter()
        .map(|(card, pin)| (*card, pin.as_str()))
        .collect();
    let mut violations = Vec::new();
    for result in results {
        if !result.recent.is_empty() {
            violations.extend(replay_atm(shared, result, &pins).await);
        }
    }
    violations
}

/// Replays one ATM's latest acknowledged requests under its own client id.
async fn replay_atm(
    shared: &Shared,
    result: &AtmResult,
    pins: &BTreeMap<Card, &str>,
) -> Vec<String> {
    let mut violations = Vec::new();
    let seed = result.client_id ^ AUDIT_REPLAY_SEED_TAG;
    let mut client = Client::new(client_config(shared, result.client_id, seed));
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
    violations
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

/// In `--server-cmd`, where the address to listen on goes (see `spawn_server`).
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
