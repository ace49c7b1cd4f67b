//! The account actors in process: one round trip, and concurrent withdrawals on one hot account
//! and spread over many accounts.
//!
//! `cargo bench --bench actors`
//!
//! A server is started in this process (`RunningServer::start` on a temporary data directory, the
//! cheapest PIN hash cost) and driven through `Bank::decide` from a tokio runtime, which is what
//! a session does for every account operation: send `Decide` to the card's actor, get its answer,
//! wait until its record is durable. No sockets are involved (see `loopback/*` and the
//! end-to-end swarm in benches/compare for those).
//!
//! - `round_trip/replay`: one request id sent again and again; the actor answers from the memory
//!   of completed requests and nothing is written. The actor hop without the disk.
//! - `round_trip/withdrawal`: one task, one withdrawal at a time: the hop plus one `fdatasync`.
//! - `concurrent/hot/N`: N tasks (N clients) withdrawing from one account, one request in flight
//!   each.
//! - `concurrent/spread/N`: the same over `BENCH_ACTORS_ACCOUNTS` accounts (default 10000; the
//!   targets speak of 100000: `BENCH_ACTORS_ACCOUNTS=100000 cargo bench --bench actors`).
//! - `loopback/withdraw/one_client`: the client library over 127.0.0.1, one request at a time.
//!
//! Under `cargo test --benches` everything runs once on tiny sizes.

mod common;
use actor_bank::client::{Client, ClientConfig};
use actor_bank::ledger::{Event, Outcome};
use actor_bank::pin::PinHashCost;
use actor_bank::protocol::{RequestId, Status};
use actor_bank::server::{Bank, RunningServer, ServerConfig};
use common::{bench_mode, env_usize, opening, PIN};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OPERATOR_TOKEN: &str = "bench-operator-token-7d3a9e1c5f2b8064";
const OPENING_BALANCE: u64 = 1 << 40;
const HOT_CARD: u64 = 1_111_111_111;
const FIRST_SPREAD_CARD: u64 = 3_000_000_000;

/// One simulated ATM: a client id and its next sequence number.
#[derive(Clone, Copy, Debug)]
struct Atm {
    client: u64,
    sequence: u64,
    /// Picks cards in the spread runs.
    state: u64,
}

impl Atm {
    fn new(client: u64) -> Atm {
        Atm {
            client,
            sequence: 0,
            state: client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
        }
    }

    fn next_id(&mut self) -> RequestId {
        self.sequence += 1;
        RequestId {
            client: self.client,
            sequence: self.sequence,
        }
    }

    fn next_card(&mut self, accounts: u64) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        FIRST_SPREAD_CARD + self.state % accounts
    }
}

/// This process's resident set size in MiB (Linux), for the memory targets.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn expect_approved(outcome: Outcome, what: &str) {
    assert_eq!(
        Status::from(outcome.status),
        Status::Approved,
        "{what}: {outcome:?}"
    );
}

/// Opens `cards` with `openers` concurrent tasks (client ids from `first_client` on).
async fn open_accounts(bank: &Arc<Bank>, cards: Vec<u64>, openers: u64, first_client: u64) {
    let chunk = cards.len().div_ceil(openers as usize).max(1);
    let mut tasks = Vec::new();
    for (index, slice) in cards.chunks(chunk).enumerate() {
        let bank = bank.clone();
        let slice = slice.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut opener = Atm::new(first_client + index as u64);
            for card in slice {
                let event = opening(card, OPENING_BALANCE);
                let outcome = bank.decide(card, opener.next_id(), event).await;
                expect_approved(outcome, "open account");
            }
        }));
    }
    for task in tasks {
        task.await.expect("opener");
    }
}

/// Runs `atms` concurrently, each doing `per_atm` withdrawals of 1 on the card `pick` chooses.
async fn withdraw_concurrently(
    bank: &Arc<Bank>,
    atms: Vec<Atm>,
    per_atm: u64,
    accounts: Option<u64>,
) -> Vec<Atm> {
    let handles: Vec<_> = atms
        .into_iter()
        .map(|mut atm| {
            let bank = bank.clone();
            tokio::spawn(async move {
                for _ in 0..per_atm {
                    let card = match accounts {
                        None => HOT_CARD,
                        Some(accounts) => atm.next_card(accounts),
                    };
                    let outcome = bank
                        .decide(card, atm.next_id(), Event::Withdrawal { amount: 1 })
                        .await;
                    expect_approved(outcome, "withdrawal");
                }
                atm
            })
        })
        .collect();
    let mut returned = Vec::with_capacity(handles.len());
    for handle in handles {
        returned.push(handle.await.expect("ATM task"));
    }
    returned
}

fn bench_actors(c: &mut Criterion) {
    let full = bench_mode();
    let accounts =
        env_usize("BENCH_ACTORS_ACCOUNTS", if full { 10_000 } else { 100 }).max(1) as u64;
    let concurrency: &[u64] = if full { &[1, 64, 256] } else { &[4] };

    let directory = tempfile::tempdir().expect("temporary directory");
    let mut config = ServerConfig::new(directory.path());
    config.listen = "127.0.0.1:0".parse().expect("address");
    config.operator_token = Some(OPERATOR_TOKEN.into());
    config.pin_hash_cost = PinHashCost::MINIMUM;
    config.pin_key =
        actor_bank::server::pins::PinKeySource::Given(actor_bank::pin::PinKey::generate());
    let server = RunningServer::start(config).expect("start the server");
    let bank = server.bank().clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    opening(0, 0); // hash the PIN now, not while opening accounts
    let rss_before = rss_mib();
    let opening = Instant::now();
    runtime.block_on(async {
        open_accounts(&bank, vec![HOT_CARD], 1, 0x0600_0000_0000).await;
        let cards = (0..accounts)
            .map(|index| FIRST_SPREAD_CARD + index)
            .collect();
        open_accounts(&bank, cards, 256, 0x0700_0000_0000).await;
    });
    let opening = opening.elapsed();
    eprintln!(
        "opened {} accounts through Bank::decide in {:.2} s ({:.0} accounts/s)",
        accounts + 1,
        opening.as_secs_f64(),
        (accounts + 1) as f64 / opening.as_secs_f64()
    );
    eprintln!(
        "resident memory: {rss_before:.1} MiB before, {:.1} MiB after opening them \
         ({} account actors alive)",
        rss_mib(),
        bank.stats()
            .live_accounts
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    let mut group = c.benchmark_group("round_trip");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));

    let mut replayer = Atm::new(0x0100_0000_0000);
    let replayed = replayer.next_id();
    runtime.block_on(async {
        let outcome = bank
            .decide(HOT_CARD, replayed, Event::Withdrawal { amount: 1 })
            .await;
        expect_approved(outcome, "first withdrawal");
    });
    group.bench_function("replay", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let outcome = bank
                        .decide(HOT_CARD, replayed, Event::Withdrawal { amount: 1 })
                        .await;
                    expect_approved(outcome, "replay");
                }
                started.elapsed()
            })
        })
    });

    let mut single = Atm::new(0x0200_0000_0000);
    group.bench_function("withdrawal", |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            let returned =
                runtime.block_on(withdraw_concurrently(&bank, vec![single], iters, None));
            single = returned[0];
            started.elapsed()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("concurrent");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    let mut next_client = 0x0300_0000_0000;
    for (name, spread) in [("hot", None), ("spread", Some(accounts))] {
        for &tasks in concurrency {
            let mut atms: Vec<Atm> = (next_client..next_client + tasks).map(Atm::new).collect();
            next_client += tasks;
            let id = match spread {
                None => BenchmarkId::new(name, tasks),
                Some(accounts) => BenchmarkId::new(format!("{name}_{accounts}_accounts"), tasks),
            };
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let per_atm = iters.div_ceil(tasks);
                    let taken = std::mem::take(&mut atms);
                    let started = Instant::now();
                    atms = runtime.block_on(withdraw_concurrently(&bank, taken, per_atm, spread));
                    started
                        .elapsed()
                        .mul_f64(iters as f64 / (per_atm * tasks) as f64)
                })
            });
        }
    }
    group.finish();
    eprintln!(
        "resident memory after the concurrent runs: {:.1} MiB ({} account actors alive)",
        rss_mib(),
        bank.stats()
            .live_accounts
            .load(std::sync::atomic::Ordering::Relaxed)
    );

    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    let mut client = runtime.block_on(async {
        let mut config = ClientConfig::new(server.local_addr.to_string());
        config.client_id = 0x0400_0000_0000;
        let mut client = Client::connect(config).await.expect("connect");
        let reply = client.verify(HOT_CARD, PIN).await.expect("verify");
        assert_eq!(reply.status, Status::Approved, "verify");
        client
    });
    group.bench_function("withdraw/one_client", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let reply = client.withdraw(1).await.expect("withdraw");
                    assert_eq!(reply.status, Status::Approved, "withdraw");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
    drop(client);
    server.stop();
}

criterion_group!(benches, bench_actors);
criterion_main!(benches);
