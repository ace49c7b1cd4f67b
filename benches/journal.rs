//! The durable journal: group-commit throughput and recovery time.
//!
//! `cargo bench --bench journal`
//!
//! Throughput: records per second through `Journal::append` + `Journal::wait_durable`, on a real
//! data directory (a temporary directory on the same disk as the build), with every batch
//! `fdatasync`ed:
//! - `group_commit/closed_loop/T`: T tasks, each with one record in flight (append, wait until
//!   durable, next), as T connected ATMs would load it. Bounded by T per `fdatasync`.
//! - `group_commit/burst`: two threads append as fast as they can and wait for the last record;
//!   the batches are as large as the writer can take, so this is the writer's ceiling (encode,
//!   one write, one sync, apply to the committed ledger).
//!
//! Recovery: time of `Journal::open` (recovery + writer start) on a data directory built once
//! before timing, with `BENCH_RECOVERY_ACCOUNTS` accounts and `BENCH_RECOVERY_RECORDS` withdrawals
//! on them (defaults 100000 and 1000000):
//! - `recovery/replay`: snapshots disabled, every record is replayed from the segments (worst
//!   case);
//! - `recovery/default_config`: built with the default snapshot settings (a snapshot every
//!   million records), so start-up loads the newest snapshot and replays the tail.
//!
//! The full-size measurement from the performance targets (1M accounts, 10M records):
//!
//! ```sh
//! BENCH_RECOVERY_ACCOUNTS=1000000 BENCH_RECOVERY_RECORDS=10000000 \
//!     cargo bench --bench journal -- recovery
//! ```
//!
//! `BENCH_RECOVERY_KEEP=DIR` builds the default-config directory in DIR and leaves it there (to
//! start `bank-server --data-dir DIR` on it and read its memory use, as benches/compare does);
//! with `BENCH_BUILD_ONLY=1` as well, nothing is measured: the directory is built and that is all.
//!
//! Under `cargo test --benches` (no `--bench` argument) everything runs once on tiny sizes.

mod common;
use actor_bank::journal::{AppendError, Journal, JournalConfig};
use actor_bank::ledger::{Event, Lsn, Outcome, Record};
use actor_bank::model::{Code, RequestId};
use common::{bench_mode, env_usize, opening};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::path::Path;
use std::time::{Duration, Instant};

const OPENING_BALANCE: u64 = 1 << 50;
const NOW_MS: u64 = 1_700_000_000_000;

/// One writer of records: its own account and client id, so its records stay valid whatever the
/// interleaving with other lanes (the journal orders them; each lane's own order is kept).
#[derive(Clone, Debug)]
struct Lane {
    card: u64,
    client: u64,
    sequence: u64,
    balance: u64,
}

impl Lane {
    fn new(index: u64) -> Lane {
        Lane {
            card: 1_000_000_000 + index,
            client: 0x5000_0000_0000 + index,
            sequence: 0,
            balance: OPENING_BALANCE,
        }
    }

    fn open(&mut self) -> Record {
        self.sequence += 1;
        Record {
            request: RequestId {
                client: self.client,
                sequence: self.sequence,
            },
            card: self.card,
            at_unix_ms: NOW_MS,
            business_day: 0,
            event: opening(self.card, self.balance),
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(self.balance),
                available: Some(self.balance),
                reference: None,
            },
        }
    }

    fn withdrawal(&mut self) -> Record {
        self.sequence += 1;
        self.balance -= 1;
        Record {
            request: RequestId {
                client: self.client,
                sequence: self.sequence,
            },
            card: self.card,
            at_unix_ms: NOW_MS,
            business_day: 0,
            event: Event::Withdrawal { amount: 1 },
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(self.balance),
                available: Some(self.balance),
                reference: None,
            },
        }
    }
}

/// Appends `record`, retrying while the queue is full.
fn append_retrying(journal: &Journal, record: &Record) -> Lsn {
    loop {
        match journal.append(record.clone()) {
            Ok(lsn) => return lsn,
            Err(AppendError::Busy) => std::thread::sleep(Duration::from_micros(200)),
            Err(AppendError::Unavailable(reason)) => panic!("journal unavailable: {reason}"),
        }
    }
}

fn wait(journal: &Journal, lsn: Lsn) {
    futures::executor::block_on(journal.wait_durable(lsn)).expect("durable");
}

/// Opens one account per lane for lanes `first..first + count` and waits until they are durable.
fn open_lanes(journal: &Journal, first: u64, count: u64) -> Vec<Lane> {
    let mut lanes: Vec<Lane> = (first..first + count).map(Lane::new).collect();
    let mut last = 0;
    for lane in &mut lanes {
        last = append_retrying(journal, &lane.open());
    }
    wait(journal, last);
    lanes
}

/// True when only a data directory is to be built (see the module docs).
fn build_only() -> bool {
    std::env::var_os("BENCH_BUILD_ONLY").is_some_and(|value| value != "0")
}

fn bench_group_commit(c: &mut Criterion) {
    if build_only() {
        return;
    }
    let directory = tempfile::tempdir().expect("temporary directory");
    let journal = Journal::open(JournalConfig::new(directory.path())).expect("open journal");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let mut group = c.benchmark_group("group_commit");
    group.throughput(Throughput::Elements(1));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));

    let mut next_lane = 0;
    for tasks in [1u64, 16, 64, 256] {
        let mut lanes = open_lanes(&journal, next_lane, tasks);
        next_lane += tasks;
        group.bench_function(BenchmarkId::new("closed_loop", tasks), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(tasks);
                let taken = std::mem::take(&mut lanes);
                let started = Instant::now();
                let returned = runtime.block_on(async {
                    let handles: Vec<_> = taken
                        .into_iter()
                        .map(|mut lane| {
                            let journal = journal.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    let lsn = append_retrying(&journal, &lane.withdrawal());
                                    journal.wait_durable(lsn).await.expect("durable");
                                }
                                lane
                            })
                        })
                        .collect();
                    let mut returned = Vec::with_capacity(handles.len());
                    for handle in handles {
                        returned.push(handle.await.expect("task"));
                    }
                    returned
                });
                let elapsed = started.elapsed();
                lanes = returned;
                // Report per record actually written (per_task * tasks >= iters).
                elapsed.mul_f64(iters as f64 / (per_task * tasks) as f64)
            })
        });
    }

    let threads = 2u64;
    let mut lanes = open_lanes(&journal, next_lane, threads);
    group.bench_function("burst", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(threads);
            let started = Instant::now();
            let last = std::thread::scope(|scope| {
                let handles: Vec<_> = lanes
                    .iter_mut()
                    .map(|lane| {
                        let journal = &journal;
                        scope.spawn(move || {
                            let mut last = 0;
                            for _ in 0..per_thread {
                                last = append_retrying(journal, &lane.withdrawal());
                            }
                            last
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| handle.join().expect("thread"))
                    .max()
                    .unwrap_or(0)
            });
            wait(&journal, last);
            started
                .elapsed()
                .mul_f64(iters as f64 / (per_thread * threads) as f64)
        })
    });
    group.finish();
    journal.close();
}

/// Fills `directory` with `accounts` opened accounts and `records` withdrawals spread over them,
/// from 64 clients, written through the journal in large batches.
fn build_data_dir(config: JournalConfig, accounts: usize, records: usize) {
    let started = Instant::now();
    let directory = config.data_dir.clone();
    let journal = Journal::open(config).expect("open journal");
    const CLIENTS: u64 = 64;
    let mut balances = vec![OPENING_BALANCE; accounts];
    let mut sequences = [0u64; CLIENTS as usize];
    let mut last = 0;
    let card = |index: usize| 2_000_000_000 + index as u64;
    for (index, balance) in balances.iter().enumerate() {
        let client = index as u64 % CLIENTS;
        sequences[client as usize] += 1;
        let record = Record {
            request: RequestId {
                client: client + 1,
                sequence: sequences[client as usize],
            },
            card: card(index),
            at_unix_ms: NOW_MS,
            business_day: 0,
            event: opening(card(index), *balance),
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(*balance),
                available: Some(*balance),
                reference: None,
            },
        };
        last = append_retrying(&journal, &record);
    }
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    for step in 0..records {
        // xorshift: a spread of accounts without a dependency on rand's API.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let index = (state % accounts as u64) as usize;
        let client = step as u64 % CLIENTS;
        sequences[client as usize] += 1;
        balances[index] -= 1;
        let record = Record {
            request: RequestId {
                client: client + 1,
                sequence: sequences[client as usize],
            },
            card: card(index),
            at_unix_ms: NOW_MS,
            business_day: 0,
            event: Event::Withdrawal { amount: 1 },
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(balances[index]),
                available: Some(balances[index]),
                reference: None,
            },
        };
        last = append_retrying(&journal, &record);
    }
    wait(&journal, last);
    journal.close();
    eprintln!(
        "built a data directory of {accounts} accounts + {records} withdrawals in {:.1} s \
         ({:.1} MiB on disk)",
        started.elapsed().as_secs_f64(),
        megabytes_on_disk(&directory)
    );
}

fn megabytes_on_disk(directory: &Path) -> f64 {
    std::fs::read_dir(directory)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.metadata().ok())
                .map(|metadata| metadata.len())
                .sum::<u64>()
        })
        .unwrap_or(0) as f64
        / (1024.0 * 1024.0)
}

fn bench_recovery(c: &mut Criterion) {
    let (default_accounts, default_records) = if bench_mode() {
        (100_000, 1_000_000)
    } else {
        (1_000, 10_000)
    };
    let accounts = env_usize("BENCH_RECOVERY_ACCOUNTS", default_accounts).max(1);
    let records = env_usize("BENCH_RECOVERY_RECORDS", default_records);

    let mut group = c.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(100));
    group.measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements((accounts + records) as u64));
    let label = format!("{accounts}_accounts_{records}_records");

    let kept = std::env::var_os("BENCH_RECOVERY_KEEP").map(std::path::PathBuf::from);
    if build_only() {
        let directory = kept.expect("BENCH_BUILD_ONLY needs BENCH_RECOVERY_KEEP=DIR");
        let mut config = JournalConfig::new(&directory);
        config.queue_records_max = 1 << 20;
        build_data_dir(config, accounts, records);
        eprintln!("built {}", directory.display());
        return;
    }

    let replay_dir = tempfile::tempdir().expect("temporary directory");
    let mut config = JournalConfig::new(replay_dir.path());
    config.snapshot_records_interval = u64::MAX;
    config.segment_bytes_max = u64::MAX;
    config.queue_records_max = 1 << 20;
    build_data_dir(config.clone(), accounts, records);
    group.bench_function(BenchmarkId::new("replay", &label), |b| {
        b.iter(|| {
            let journal = Journal::open(config.clone()).expect("recover");
            journal.close();
        })
    });

    let default_dir = tempfile::tempdir().expect("temporary directory");
    let path = kept
        .clone()
        .unwrap_or_else(|| default_dir.path().to_path_buf());
    let mut config = JournalConfig::new(&path);
    config.queue_records_max = 1 << 20;
    build_data_dir(config.clone(), accounts, records);
    group.bench_function(BenchmarkId::new("default_config", &label), |b| {
        b.iter(|| {
            let journal = Journal::open(config.clone()).expect("recover");
            journal.close();
        })
    });
    group.finish();
    if let Some(kept) = kept {
        eprintln!("left the data directory in {}", kept.display());
    }
}

criterion_group!(benches, bench_group_commit, bench_recovery);
criterion_main!(benches);
