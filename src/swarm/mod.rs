//! The ATM swarm: thousands of concurrent ATMs, injected faults, and an audit of every cent.
//!
//! [`run`] creates accounts, starts `atms` tasks that each behave like one ATM (its own client
//! id, one request in flight, always retrying with the same id until a definite answer), and keeps
//! the money it *expects* each account to hold from the acknowledged replies alone. Optionally it
//! injects faults on the client side, runs its own server with server-side faults, or starts the
//! server with a command and SIGKILLs it on a period (chaos restarts).
//!
//! The mix ([`Mix`]) has cash (withdrawals, deposits), inquiries, the lab's utilities, transfers
//! to another card of the swarm, holds the ATM later completes (sometimes for less) or voids,
//! reversals of the ATM's own latest withdrawal (in full or in part) and statements. Two kinds of
//! request are sent to be refused: a second resolution of a resolved hold (`hold_resolved`), and
//! the withdrawal whose id a reversal named before it was ever sent (`request_id_conflict`).
//!
//! At the end it audits, once the server has delivered every transfer
//! (nothing in transit): every account's ledger balance equals its opening balance plus the
//! acknowledged deposits, reversals and transfers received, minus the acknowledged withdrawals,
//! completed holds and transfers sent; its available balance is that less the holds left open;
//! neither is negative; its statement moves by each movement's amount in the right direction,
//! lists no movement twice and ends at the ledger balance; the balances add up to the money the
//! acknowledged replies moved; each ATM's most recent acknowledged requests, replayed with their
//! ids, return the identical reply; every request got a definite answer; no honest request was
//! refused as stale or as a conflict; every statement read during the load was consistent. Any
//! violation is listed in the report.
//!
//! In switch mode ([`SwarmConfig::connections`]) the ATMs are terminals sharing a few
//! connections, many requests pipelined on each, one verified card per connection at a time
//! (`src/swarm/switch.rs` says how and why); everything else, the audit included, is the same.
//!
//! The `atm_swarm` example is the command-line front end; the tests call [`run`] directly.

use crate::client::iso8583::PinBlocks;
use crate::client::ops::{self, Call};
use crate::client::tls::TlsSettings;
use crate::client::{Client, ClientConfig, ClientError, ClientStats};
use crate::faults::FaultPlan;
use crate::pin::PinHashCost;
use crate::protocol::{
    Amount, Body, Card, HoldId, Movement, MovementKind, Operation, Reply, RequestId, Status,
};
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

mod atm;
mod audit;
mod chaos;
mod config;
mod iso;
mod mix;
mod report;
mod switch;

use atm::*;
use audit::*;
pub use audit::{account_violations, statement_violations, totals_violations, Observation};
use chaos::*;
pub use config::*;
use iso::*;
use mix::*;
pub use report::*;
pub use switch::IN_FLIGHT_DEFAULT;
use switch::*;

pub(super) struct Shared {
    config: SwarmConfig,
    address: String,
    /// The ISO 8583 door the load goes through, when the run's front door is ISO 8583.
    iso8583: Option<IsoDoor>,
    cards: Vec<(Card, String)>,
    expected: Vec<AtomicI64>,
    /// The money the acknowledged replies moved, in all.
    flows: FlowCounters,
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
    /// What the switch lines counted (switch mode only).
    switch: SwitchTally,
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

pub(super) fn client_config(shared: &Shared, client_id: u64, seed: u64) -> ClientConfig {
    swarm_client_config(&shared.config, &shared.address, client_id, seed)
}

/// The servers a run started itself, stopped when the run ends.
#[derive(Default)]
pub(super) struct Servers {
    /// The in-process server and its temporary data directory.
    in_process: Option<(RunningServer, tempfile::TempDir)>,
    /// The server run from `server_command`, killed and restarted for chaos.
    chaos: Option<ChaosServer>,
}

/// Runs the swarm and audits the result.
pub async fn run(config: SwarmConfig) -> Result<SwarmReport, String> {
    check_switch(&config)?;
    let (address, mut servers) = start_server(&config).await?;
    let cards = draw_cards(&config);
    let iso8583 = iso_door(&config, &servers, &cards)?;
    create_accounts(&config, &address, &cards).await?;
    let shared = Arc::new(Shared::new(config, address, cards, iso8583));
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
    // And once at the end of the load, so that a load shorter than a second is seen too.
    if let Some(progress) = &shared.config.progress {
        (progress.0)(shared.acked.load(Ordering::Relaxed));
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
    let bank = servers
        .in_process
        .as_ref()
        .map(|(server, _)| server.bank().clone());
    audit(&shared, bank, &results, &mut report).await;
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
            if config.front_door == FrontDoor::Iso8583 {
                let key = crate::pin_block::ZonePinKey::parse(SWARM_ZONE_PIN_KEY)
                    .map_err(|error| format!("the swarm's zone PIN key: {error}"))?;
                let listen = "127.0.0.1:0".parse().map_err(|_| "bad address")?;
                server_config.iso8583 = Some(crate::server::Iso8583Settings::new(
                    listen,
                    crate::server::Iso8583Pins::Key(Box::new(key)),
                ));
            }
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

/// Where the ISO 8583 load goes and how its PIN blocks are made: the in-process server's door
/// under the swarm's key, or the door given. None for the bincode front door.
fn iso_door(
    config: &SwarmConfig,
    servers: &Servers,
    cards: &[(Card, String)],
) -> Result<Option<IsoDoor>, String> {
    if config.front_door != FrontDoor::Iso8583 {
        return Ok(None);
    }
    let mix = &config.mix;
    if mix.withdraw + mix.deposit + mix.balance + mix.reverse == 0 {
        return Err(
            "through the ISO 8583 door the mix runs withdraw, deposit, balance and reverse; they weigh nothing here".into(),
        );
    }
    if let Some((server, _)) = &servers.in_process {
        let address = server
            .iso8583_addr()
            .ok_or("the in-process server did not open its ISO 8583 listener")?;
        let key = crate::pin_block::ZonePinKey::parse(SWARM_ZONE_PIN_KEY)
            .map_err(|error| format!("the swarm's zone PIN key: {error}"))?;
        let pins = PinBlocks::Key(Box::new(key));
        return IsoDoor::new(address.to_string(), pins, cards).map(Some);
    }
    let address = config
        .iso8583_address
        .clone()
        .ok_or("--front-door iso8583 with --server needs --iso8583-address")?;
    let pins = config.iso8583_pins.clone().ok_or(
        "--front-door iso8583 with --server needs --iso8583-pin-key-file or --iso8583-clear-pin-blocks",
    )?;
    IsoDoor::new(address, pins, cards).map(Some)
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
    /// The index of the swarm's account with `card` (the cards are consecutive numbers).
    fn account_of(&self, card: Card) -> Option<usize> {
        let first = self.cards.first()?.0;
        let index = usize::try_from(card.checked_sub(first)?).ok()?;
        (index < self.cards.len()).then_some(index)
    }

    /// The state every ATM shares, at the start of the load.
    fn new(
        config: SwarmConfig,
        address: String,
        cards: Vec<(Card, String)>,
        iso8583: Option<IsoDoor>,
    ) -> Shared {
        Shared {
            iso8583,
            expected: cards
                .iter()
                .map(|_| AtomicI64::new(config.initial_balance as i64))
                .collect(),
            cards,
            address,
            flows: FlowCounters::default(),
            operations_started: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            started: Instant::now(),
            timeline: parking_lot::Mutex::new(Vec::new()),
            steps: parking_lot::Mutex::new(Vec::new()),
            step: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            switch: SwitchTally::default(),
            deadline: match (config.stop, config.ramp.is_empty()) {
                (Stop::After(duration), true) => Some(Instant::now() + duration),
                _ => None,
            },
            config,
        }
    }
}

/// Calls the progress callback, if any, once a second (and [`run`] once more when the load ends).
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
    if let Some(connections) = shared.config.connections {
        return Ok((run_switch(shared, connections).await?, Vec::new()));
    }
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
            match shared.iso8583.is_some() {
                true => tokio::spawn(async move { run_iso_atm(shared, index as u64).await }),
                false => tokio::spawn(async move { run_atm(shared, index as u64).await }),
            }
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
    let (mut redirects, mut logins) = (0, 0);
    for result in results {
        let _ = latency.add(&result.latency);
        for (status, count) in &result.statuses {
            *statuses.entry(status.to_string()).or_insert(0) += count;
        }
        retries += result.retries;
        redirects += result.redirects;
        logins += result.logins;
        requests_dropped += result.requests_dropped;
        replies_dropped += result.replies_dropped;
    }
    let probes = probes(results);
    let mut iso8583 = BTreeMap::new();
    for (counter, count) in results.iter().flat_map(|result| &result.iso8583) {
        *iso8583.entry(counter.to_string()).or_insert(0) += count;
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
        redirects,
        logins,
        faults,
        restarts: restart_seconds.len() as u64,
        statuses,
        violations: 0,
        violation_details: Vec::new(),
        accounts: expectations(shared, results),
        operations: operations(results),
        probes,
        flows: shared
            .flows
            .snapshot(i128::from(shared.config.initial_balance) * shared.cards.len() as i128),
        timeline,
        ramp: Vec::new(),
        duration_secs: duration.as_secs_f64(),
        front_door: shared.config.front_door.to_string(),
        iso8583,
        switch: shared
            .config
            .connections
            .map(|connections| shared.switch.snapshot(connections, shared.config.in_flight)),
    }
}

/// What every account must hold, from the acknowledged replies and the holds left open.
fn expectations(shared: &Shared, results: &[AtmResult]) -> Vec<AccountExpectation> {
    let held = held_by_account(shared, results);
    shared
        .cards
        .iter()
        .zip(&shared.expected)
        .zip(&held)
        .map(|(((card, pin), expected), held)| {
            let expected = expected.load(Ordering::Relaxed);
            AccountExpectation {
                card: *card,
                pin: pin.clone(),
                expected_balance: expected,
                expected_available: expected - held,
            }
        })
        .collect()
}

/// The amounts of the holds the ATMs left open, by account.
fn held_by_account(shared: &Shared, results: &[AtmResult]) -> Vec<i64> {
    let mut held = vec![0i64; shared.cards.len()];
    for hold in results.iter().flat_map(|result| &result.open_holds) {
        held[hold.account] += hold.amount as i64;
    }
    held
}

/// Every ATM's probes, added up.
fn probes(results: &[AtmResult]) -> BTreeMap<String, u64> {
    let mut probes = BTreeMap::new();
    for (probe, count) in results.iter().flat_map(|result| &result.probes) {
        *probes.entry(probe.to_string()).or_insert(0) += count;
    }
    probes
}

/// Every ATM's replies by operation kind, merged.
fn operations(results: &[AtmResult]) -> BTreeMap<String, OperationCounts> {
    let mut merged: BTreeMap<&str, (SecondHistogram, u64, u64)> = BTreeMap::new();
    for (kind, tally) in results.iter().flat_map(|result| &result.kinds) {
        let entry = merged
            .entry(kind)
            .or_insert_with(|| (new_second_histogram(), 0, 0));
        let _ = entry.0.add(&tally.latency);
        entry.1 += tally.acked;
        entry.2 += tally.approved;
    }
    merged
        .into_iter()
        .map(|(kind, (histogram, acked, approved))| {
            let counts = OperationCounts {
                acked,
                approved,
                latency_us: Percentiles::of(&histogram),
            };
            (kind.to_string(), counts)
        })
        .collect()
}
