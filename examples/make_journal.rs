//! `make_journal`: fills a data directory, through the crate's own journal, with many accounts and
//! many records, as a server that had run for a long time would have left it; then closes it, so
//! that `bank-server --data-dir DIR` recovers it. benches/compare/recovery.sh times that recovery.
//!
//! ```sh
//! cargo run --release --example make_journal -- --data-dir /tmp/bank-1m \
//!     --accounts 1000000 --records 10000000
//! bank-server --data-dir /tmp/bank-1m   # reads /tmp/bank-1m.pin-key, made here too
//! ```
//!
//! The journal keeps its default settings (a snapshot every million records, segments of
//! 256 MiB), so the directory holds what a server at its defaults would have written. Every
//! account gets a keyed PIN verifier under a new PIN key, written beside the directory where the
//! server looks for it by default (`DIR.pin-key`). The records are withdrawals of one minor unit
//! on accounts drawn at random, from a few dozen clients, appended in large batches.

use actor_bank::journal::{AppendError, Journal, JournalConfig};
use actor_bank::ledger::{Event, Lsn, Outcome, Record};
use actor_bank::model::{Code, RequestId};
use actor_bank::pin::PinKey;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The first card number; the accounts have consecutive cards from it.
const FIRST_CARD: u64 = 3_000_000_000;

/// The PIN of every account.
const PIN: &str = "4321";

/// Clients the records are spread over (each its own request sequence), like connected ATMs.
const CLIENTS: u64 = 64;

/// Records the journal may hold queued: well above one batch, so the writer always has a full
/// one waiting.
const QUEUE_RECORDS_MAX: usize = 1 << 20;

/// Milliseconds in a day, for the business day of the records (days since 1970-01-01, UTC).
const DAY_MS: u64 = 86_400_000;

/// Fills a data directory with accounts and records through the journal, then closes it.
#[derive(Parser, Debug)]
#[command(about)]
struct Arguments {
    /// The data directory to fill; it must not hold a journal yet.
    #[arg(long)]
    data_dir: PathBuf,
    /// Accounts to open.
    #[arg(long, default_value_t = 1_000_000)]
    accounts: u64,
    /// Withdrawals to record after the openings.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Records appended together.
    #[arg(long, default_value_t = 8192)]
    batch: usize,
    /// Opening balance of each account (minor units).
    #[arg(long, default_value_t = 1 << 40)]
    initial_balance: u64,
    /// Seed of the choice of accounts.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let arguments = Arguments::parse();
    match run(&arguments) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("make_journal: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The records of one client, with its next request sequence.
struct Clients {
    sequences: Vec<u64>,
}

impl Clients {
    /// The next request of the client that makes record number `index`.
    fn request(&mut self, index: u64) -> RequestId {
        let client = index % CLIENTS;
        let sequence = &mut self.sequences[client as usize];
        *sequence += 1;
        RequestId {
            client: client + 1,
            sequence: *sequence,
        }
    }
}

/// Appends batches, waiting for the writer whenever its queue is full.
struct Appender {
    journal: Journal,
    runtime: tokio::runtime::Runtime,
    pending: Vec<Record>,
    batch: usize,
    last: Lsn,
    appended: u64,
}

impl Appender {
    fn push(&mut self, record: Record) -> Result<(), String> {
        self.pending.push(record);
        if self.pending.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let count = records.len() as u64;
        loop {
            match self.journal.append_batch(records.clone()) {
                Ok(lsn) => {
                    self.last = lsn;
                    self.appended += count;
                    return Ok(());
                }
                // The writer is behind: wait until what was appended is durable, then retry.
                Err(AppendError::Busy) => self.wait()?,
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    fn wait(&self) -> Result<(), String> {
        self.runtime
            .block_on(self.journal.wait_durable(self.last))
            .map_err(|error| error.to_string())
    }
}

fn run(arguments: &Arguments) -> Result<(), String> {
    if arguments.accounts == 0 || arguments.batch == 0 {
        return Err("--accounts and --batch must be at least 1".into());
    }
    let started = Instant::now();
    std::fs::create_dir_all(&arguments.data_dir)
        .map_err(|error| format!("{}: {error}", arguments.data_dir.display()))?;
    let key_path = actor_bank::server::pins::default_pin_key_file(&arguments.data_dir);
    let key = PinKey::create(&key_path)?;
    let mut config = JournalConfig::new(&arguments.data_dir);
    config.queue_records_max = QUEUE_RECORDS_MAX;
    let journal = Journal::open_files(config).map_err(|error| error.to_string())?;
    if journal.with_committed(|ledger| !ledger.accounts.is_empty()) {
        return Err(format!(
            "{} already holds accounts",
            arguments.data_dir.display()
        ));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| error.to_string())?;
    let mut appender = Appender {
        journal,
        runtime,
        pending: Vec::with_capacity(arguments.batch),
        batch: arguments.batch,
        last: 0,
        appended: 0,
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|error| error.to_string())?
        .as_millis() as u64;
    let business_day = (now_ms / DAY_MS) as u32;
    let mut clients = Clients {
        sequences: vec![0; CLIENTS as usize],
    };
    let mut index = 0u64;
    let mut balances = vec![arguments.initial_balance; arguments.accounts as usize];
    for account in 0..arguments.accounts {
        let card = FIRST_CARD + account;
        appender.push(Record {
            request: clients.request(index),
            card,
            at_unix_ms: now_ms,
            business_day,
            event: Event::AccountOpened {
                holder: format!("ATM {card}"),
                pin_hash: key.verifier(card, PIN),
                initial_balance: arguments.initial_balance,
            },
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(arguments.initial_balance),
                available: Some(arguments.initial_balance),
                reference: None,
            },
        })?;
        index += 1;
    }
    // xorshift64: a spread of accounts that depends on the seed only.
    let mut state = arguments.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for _ in 0..arguments.records {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let account = (state % arguments.accounts) as usize;
        let balance = balances[account].saturating_sub(1);
        balances[account] = balance;
        appender.push(Record {
            request: clients.request(index),
            card: FIRST_CARD + account as u64,
            at_unix_ms: now_ms,
            business_day,
            event: Event::Withdrawal { amount: 1 },
            outcome: Outcome {
                status: Code::Approved,
                balance: Some(balance),
                available: Some(balance),
                reference: None,
            },
        })?;
        index += 1;
    }
    appender.flush()?;
    appender.wait()?;
    let appended = appender.appended;
    appender.journal.close();
    if let Some(failure) = appender.journal.failure() {
        return Err(format!("the journal failed: {failure}"));
    }
    println!(
        "make_journal: {} accounts and {} records ({appended} in all) in {:.1} s into {}",
        arguments.accounts,
        arguments.records,
        started.elapsed().as_secs_f64(),
        arguments.data_dir.display()
    );
    Ok(())
}
