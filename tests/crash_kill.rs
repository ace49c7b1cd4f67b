//! The crash test: the real `bank-server` binary is SIGKILLed at random moments under concurrent
//! withdrawals and deposits and restarted on the same data directory and port, many times. Every
//! operation a client saw acknowledged survives exactly once, and nothing else moves money. A
//! third scenario runs transfers, holds (placed, completed, voided) and reversals through the
//! kills: afterwards every transfer is delivered once, nothing is in transit, and no reversal
//! gives money back twice.
mod common;

use actor_bank::client::{Client, ClientConfig, ClientError};
use actor_bank::journal::Journal;
use actor_bank::ledger::{Event, Ledger, Principal, Record, REQUEST_WINDOW};
use actor_bank::model::Code;
use actor_bank::protocol::{Body, Operation, Reply, RequestId, Status};
use common::durability::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "crash-kill-operator-token-8b2e6d1f4a9c";
/// Card, PIN, opening balance.
const ACCOUNTS: [(u64, &str, u64); 4] = [
    (71_001, "1111", 3_000),
    (71_002, "2222", 3_000),
    (71_003, "3333", 500),
    (71_004, "4444", 10_000),
];
const TASKS_PER_ACCOUNT: usize = 2;
const KILLS: usize = 9;
/// Operations acknowledged in all before the load stops (at least).
const OPERATIONS_ACKNOWLEDGED_MIN: u64 = 21;
/// The schedule's seed unless CRASH_KILL_SEED names another: every run kills at the same points
/// of the same workload (as far as the machine's timing lets it).
const CRASH_KILL_SEED_DEFAULT: u64 = 0x0c4a_5b11;

fn client_config(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new(address);
    config.attempt_timeout = Duration::from_millis(500);
    // Long enough to span a kill and a restart.
    config.outcome_deadline = Duration::from_secs(20);
    config.backoff_initial = Duration::from_millis(5);
    config.backoff_max = Duration::from_millis(100);
    config
}

/// One operation an ATM asked for and what it learnt.
#[derive(Clone, Debug)]
struct Asked {
    id: RequestId,
    card: u64,
    operation: Operation,
    /// The definite reply, or None when the outcome never became known.
    reply: Option<Reply>,
}

/// A signed money movement of an operation (deposits positive).
fn delta(operation: &Operation) -> i128 {
    match operation {
        Operation::Withdraw { amount } => -(*amount as i128),
        Operation::Deposit { amount } => *amount as i128,
        other => panic!("not a money operation: {other:?}"),
    }
}

/// What the ATMs ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Withdrawals and deposits.
    Cash,
    /// Also transfers to the other accounts, holds (placed, then completed for part or voided)
    /// and reversals of the ATM's own withdrawals.
    Banking,
}

/// What one ATM remembers between its calls, to complete its holds and reverse its
/// withdrawals.
#[derive(Default)]
struct Till {
    /// Its open hold and the hold's amount.
    hold: Option<(u64, u64)>,
    /// Its last approved withdrawal not yet reversed, and its amount.
    withdrawal: Option<(RequestId, u64)>,
}

impl Till {
    /// The next operation of an ATM of `card` under `workload`.
    fn next(&mut self, rng: &mut StdRng, card: u64, workload: Workload) -> Operation {
        let amount = rng.gen_range(1..=400);
        let pick = match workload {
            Workload::Cash => rng.gen_range(0..2),
            Workload::Banking => rng.gen_range(0..5),
        };
        match pick {
            0 => Operation::Withdraw { amount },
            1 => Operation::Deposit { amount },
            2 => {
                let others: Vec<u64> = ACCOUNTS
                    .iter()
                    .map(|(other, _, _)| *other)
                    .filter(|other| *other != card)
                    .collect();
                Operation::Transfer {
                    to: others[rng.gen_range(0..others.len())],
                    amount: amount.min(300),
                }
            }
            3 => match self.hold.take() {
                Some((hold_id, held)) if rng.gen_bool(0.7) => Operation::CompleteHold {
                    hold_id,
                    amount: Some(rng.gen_range(1..=held)),
                },
                Some((hold_id, _)) => Operation::VoidHold { hold_id },
                None => Operation::PlaceHold { amount },
            },
            _ => match self.withdrawal.take() {
                Some((original, taken)) => Operation::Reverse {
                    original,
                    dispensed: rng.gen_bool(0.5).then(|| rng.gen_range(0..=taken / 2)),
                },
                None => Operation::Withdraw { amount },
            },
        }
    }

    /// Notes what an approved reply of `operation` (sent as `id`) made.
    fn note(&mut self, id: RequestId, operation: &Operation, reply: &Reply) {
        if reply.status != Status::Approved {
            return;
        }
        match (operation, &reply.body) {
            (Operation::PlaceHold { amount }, Body::Hold { hold_id, .. }) => {
                self.hold = Some((*hold_id, *amount))
            }
            (Operation::Withdraw { amount }, _) => self.withdrawal = Some((id, *amount)),
            _ => {}
        }
    }
}

/// An ATM: logs in to `card`, then asks for random operations of `workload` until told to
/// stop. A call whose outcome is unknown is retried with the same id before the next one starts.
async fn atm(
    address: String,
    card: u64,
    pin: &'static str,
    (seed, workload): (u64, Workload),
    stop: Arc<AtomicBool>,
    acknowledged: Arc<AtomicU64>,
) -> (Client, Vec<Asked>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::connect(client_config(&address)).await.unwrap();
    loop {
        match client.verify(card, pin).await {
            Ok(reply) => {
                assert_eq!(reply.status, Status::Approved);
                break;
            }
            Err(ClientError::OutcomeUnknown { .. }) => continue,
            Err(other) => panic!("cannot log in: {other}"),
        }
    }
    let mut asked = Vec::new();
    let mut till = Till::default();
    while !stop.load(Ordering::SeqCst) {
        let operation = till.next(&mut rng, card, workload);
        let id = client.next_id();
        let mut reply = None;
        for _ in 0..3 {
            match client.call_with_id(id, operation.clone()).await {
                Ok(definite) => {
                    reply = Some(definite);
                    break;
                }
                Err(ClientError::OutcomeUnknown { .. }) => continue,
                Err(other) => panic!("{id}: {other}"),
            }
        }
        if let Some(reply) = &reply {
            till.note(id, &operation, reply);
            acknowledged.fetch_add(1, Ordering::SeqCst);
        }
        asked.push(Asked {
            id,
            card,
            operation,
            reply,
        });
    }
    (client, asked)
}

/// Starts the binary on `data` and SIGKILLs it after `delay`, ready or not.
fn kill_during_start_up(
    data: &std::path::Path,
    port: u16,
    log: &std::path::Path,
    extra: &[&str],
    delay: Duration,
) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = BankProcess::command(data, port, TOKEN, extra)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits (without a time limit on correctness, only a liveness guard) until `counter` passes
/// `target`.
async fn wait_for_progress(counter: &AtomicU64, target: u64) {
    for _ in 0..6_000 {
        if counter.load(Ordering::SeqCst) >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no progress: the server acknowledged nothing for a minute");
}

/// Waits (a liveness guard only) until no account has money in transit, by the operator's
/// account details: every transfer approved before the last kill is delivered and settled.
async fn delivered(operator: &mut Client) {
    for _ in 0..6_000 {
        let mut in_transit = 0;
        for (card, _, _) in ACCOUNTS {
            let reply = operator
                .manage(TOKEN, card, actor_bank::client::ops::Management::Info)
                .await
                .unwrap();
            let Body::Account(details) = reply.body else {
                panic!("no account details: {reply:?}");
            };
            in_transit += details.in_transit;
        }
        if in_transit == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("transfers stayed in transit for a minute after the last restart");
}

/// The body of the reply `record` gave: a placed hold's id and balances, both balances, the
/// ledger balance alone (replies from before holds), or nothing.
fn expected_body(record: &Record) -> Body {
    let outcome = &record.outcome;
    match (
        &record.event,
        outcome.status,
        outcome.reference,
        outcome.balance,
    ) {
        (Event::HoldPlaced { .. }, Code::Approved, Some(hold_id), Some(ledger)) => Body::Hold {
            hold_id,
            ledger,
            available: outcome.available.unwrap_or(ledger),
        },
        (_, _, _, Some(ledger)) => match outcome.available {
            Some(available) => Body::Balances { ledger, available },
            None => Body::Balance(ledger),
        },
        _ => Body::Empty,
    }
}

/// What a crash scenario leaves for the checks.
struct Aftermath {
    /// Every operation every ATM asked for.
    asked: Vec<Asked>,
    /// The balances the server reported after the last restart.
    reported: HashMap<u64, u64>,
    /// The state recovered in this process after the last kill.
    ledger: Ledger,
    /// The whole records left in the segments (all of them when no snapshot was taken).
    records: Vec<Span>,
    /// Kept so the directory outlives the checks.
    _directory: tempfile::TempDir,
}

/// Runs the binary (with `extra` flags) under concurrent ATMs, SIGKILLs and restarts it
/// [`KILLS`] times at random moments, replays a sample of acknowledged ids after the last restart,
/// reads the balances, kills it a last time and recovers the directory in this process.
async fn crash_scenario(name: &str, extra: &[&str], workload: Workload) -> Aftermath {
    let seed: u64 = std::env::var("CRASH_KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(CRASH_KILL_SEED_DEFAULT);
    eprintln!("{name}: seed {seed} (set CRASH_KILL_SEED to repeat the schedule)");
    let mut rng = StdRng::seed_from_u64(seed);
    let directory = tempfile::tempdir().unwrap();
    let data: PathBuf = directory.path().join("data");
    let log = directory.path().join("server.log");
    let start = |data: &PathBuf, log: &PathBuf, port: u16| {
        tokio::task::block_in_place(|| BankProcess::start_with_args(data, port, TOKEN, log, extra))
    };
    // The first process binds a port of its choosing; every restart takes the same address.
    let mut server = start(&data, &log, 0);
    let address = server.address.clone();
    let port = server.port();

    let mut operator = Client::connect(client_config(&address)).await.unwrap();
    for (card, pin, balance) in ACCOUNTS {
        let reply = operator
            .create_account(TOKEN, card, "Crash Tester", pin, balance)
            .await
            .unwrap();
        assert_eq!(reply.status, Status::Approved);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (index, (card, pin, _)) in ACCOUNTS.iter().enumerate() {
        for copy in 0..TASKS_PER_ACCOUNT {
            tasks.push(tokio::spawn(atm(
                address.clone(),
                *card,
                pin,
                (
                    seed ^ ((index * TASKS_PER_ACCOUNT + copy) as u64 + 1).wrapping_mul(0x9E37),
                    workload,
                ),
                stop.clone(),
                acknowledged.clone(),
            )));
        }
    }

    for kill in 0..KILLS {
        // Let the ATMs get going after the (re)start (or not at all: a kill right after the
        // restart hits the retries and re-logins), then kill at a random moment.
        let target = acknowledged.load(Ordering::SeqCst) + rng.gen_range(0..12);
        wait_for_progress(&acknowledged, target).await;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..400))).await;
        tokio::task::block_in_place(|| server.kill());
        eprintln!(
            "{name}: kill {}: {} operations acknowledged so far",
            kill + 1,
            acknowledged.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
        if rng.gen_bool(0.3) {
            // Sometimes also kill a process while it is still recovering the directory.
            let delay = Duration::from_millis(rng.gen_range(0..40));
            tokio::task::block_in_place(|| kill_during_start_up(&data, port, &log, extra, delay));
        }
        server = start(&data, &log, port);
    }
    // Enough work for the checks below, counted rather than waited for.
    wait_for_progress(&acknowledged, OPERATIONS_ACKNOWLEDGED_MIN).await;
    // Stop the load right after the last restart: the calls in flight settle on the new process.
    stop.store(true, Ordering::SeqCst);
    let mut atms = Vec::new();
    for task in tasks {
        atms.push(task.await.unwrap());
    }
    let asked: Vec<Asked> = atms
        .iter()
        .flat_map(|(_, asked)| asked.iter().cloned())
        .collect();
    let unknown = asked.iter().filter(|asked| asked.reply.is_none()).count();
    let retries: u64 = atms.iter().map(|(client, _)| client.stats().retries).sum();
    eprintln!(
        "{name}: {} operations asked, {} acknowledged, {unknown} unknown, {retries} retries",
        asked.len(),
        asked.len() - unknown,
    );
    assert!(
        asked.len() as u64 >= OPERATIONS_ACKNOWLEDGED_MIN,
        "the ATMs did work between the kills"
    );

    // A sample of acknowledged ids, replayed after the last restart, gets the original replies.
    let mut replayed = 0;
    for (client, asked) in &mut atms {
        let newest = asked
            .iter()
            .map(|asked| asked.id.sequence)
            .max()
            .unwrap_or(0);
        let sample: Vec<Asked> = asked
            .iter()
            .rev()
            .filter(|asked| asked.reply.is_some() && asked.id.sequence + 16 > newest)
            .take(4)
            .cloned()
            .collect();
        for original in sample {
            let reply = client
                .call_with_id(original.id, original.operation.clone())
                .await
                .unwrap();
            assert_eq!(Some(reply), original.reply, "replay of {}", original.id);
            replayed += 1;
        }
    }
    assert!(replayed > 0);

    // The transfers still on their way are delivered by the last process.
    delivered(&mut operator).await;
    // The balances the server reports after the last restart.
    let mut reported = HashMap::new();
    let mut reader = Client::connect(client_config(&address)).await.unwrap();
    for (card, pin, _) in ACCOUNTS {
        assert_eq!(
            reader.verify(card, pin).await.unwrap().status,
            Status::Approved
        );
        let reply = reader.balance().await.unwrap();
        let Body::Balances { ledger, .. } = reply.body else {
            panic!("no balance in {reply:?}");
        };
        reported.insert(card, ledger);
    }
    tokio::task::block_in_place(|| server.kill());

    // Recover the directory in this process and read the records the segments hold.
    let journal = Journal::open(journal_config(&data, u64::MAX)).unwrap();
    let ledger: Ledger = committed(&journal);
    journal.close();
    let records: Vec<Span> = segments(&data)
        .iter()
        .flat_map(|segment| record_spans(segment))
        .collect();
    Aftermath {
        asked,
        reported,
        ledger,
        records,
        _directory: directory,
    }
}

/// The checks every scenario passes: money is conserved; no request id is recorded twice;
/// each balance is the opening one plus exactly the acknowledged movements (plus those whose
/// outcome never became known but which `unknown_moved` says happened), never negative; the
/// balances reported before the last kill are the recovered ones.
fn check_balances(aftermath: &Aftermath, unknown_moved: &HashMap<u64, i128>) {
    let ledger = &aftermath.ledger;
    assert!(ledger.is_conserved(), "money is conserved");
    let mut seen = HashSet::new();
    for span in &aftermath.records {
        assert!(
            seen.insert(span.record.request),
            "request {} recorded twice",
            span.record.request
        );
    }
    for (card, _, initial) in ACCOUNTS {
        let acked: i128 = aftermath
            .asked
            .iter()
            .filter(|asked| asked.card == card)
            .filter(|asked| {
                asked
                    .reply
                    .as_ref()
                    .is_some_and(|reply| reply.status == Status::Approved)
            })
            .map(|asked| delta(&asked.operation))
            .sum();
        let expected = initial as i128 + acked + unknown_moved.get(&card).copied().unwrap_or(0);
        assert!(expected >= 0, "card {card} would be negative");
        let balance = ledger.accounts[&card].balance;
        assert_eq!(balance as i128, expected, "card {card}");
        assert_eq!(
            aftermath.reported[&card], balance,
            "card {card}: reported balance"
        );
    }
}

// Purpose: SIGKILL at random moments under concurrent load, restart on the same directory and
// port, clients retry with the same ids: every acknowledged operation is in the journal exactly
// once with the outcome its reply carried, nothing else moved money, replays give the original
// replies, nothing is negative, money is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_loses_no_acknowledged_operation_and_repeats_none() {
    let aftermath = crash_scenario("journal only", &[], Workload::Cash).await;
    let ledger = &aftermath.ledger;
    assert!(snapshots(&aftermath._directory.path().join("data")).is_empty());
    // Without snapshots the segments hold every record ever decided.
    assert_eq!(aftermath.records.len() as u64, ledger.applied_lsn);
    let decided: HashMap<RequestId, &Span> = aftermath
        .records
        .iter()
        .map(|span| (span.record.request, span))
        .collect();
    // Every acknowledged operation is recorded, with the outcome its reply carried.
    let mut acked_ids = HashSet::new();
    let mut unknown_ids = HashSet::new();
    for asked in &aftermath.asked {
        let Some(reply) = &asked.reply else {
            unknown_ids.insert(asked.id);
            continue;
        };
        acked_ids.insert(asked.id);
        let span = decided
            .get(&asked.id)
            .unwrap_or_else(|| panic!("acknowledged {} is not in the journal", asked.id));
        assert_eq!(span.record.card, asked.card);
        assert_eq!(
            Status::from(span.record.outcome.status),
            reply.status,
            "{}",
            asked.id
        );
        assert_eq!(expected_body(&span.record), reply.body, "{}", asked.id);
    }
    // Every money movement in the journal was asked for: acknowledged, or never settled.
    let mut unknown_moved: HashMap<u64, i128> = HashMap::new();
    for span in &aftermath.records {
        let record = &span.record;
        let moved = match record.event {
            Event::Withdrawal { amount } => -(amount as i128),
            Event::Deposit { amount } => amount as i128,
            _ => continue,
        };
        if Status::from(record.outcome.status) != Status::Approved {
            continue;
        }
        if unknown_ids.contains(&record.request) {
            *unknown_moved.entry(record.card).or_default() += moved;
        } else {
            assert!(
                acked_ids.contains(&record.request),
                "{} moved money nobody was told about",
                record.request
            );
        }
    }
    check_balances(&aftermath, &unknown_moved);
}

// Purpose: the same with a snapshot every few dozen records, so kills also land while a snapshot
// is written, renamed, or its covered segments removed: the balances are the opening ones plus
// exactly the acknowledged movements.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_snapshots_loses_no_acknowledged_operation() {
    let aftermath = crash_scenario(
        "with snapshots",
        &["--snapshot-records-interval", "25"],
        Workload::Cash,
    )
    .await;
    assert!(!snapshots(&aftermath._directory.path().join("data")).is_empty());
    // An operation whose outcome stayed unknown can only be accounted for while the recovered
    // memory of completed requests still holds it.
    let mut unknown_moved: HashMap<u64, i128> = HashMap::new();
    for asked in aftermath.asked.iter().filter(|asked| asked.reply.is_none()) {
        let window = aftermath
            .ledger
            .window(Principal::Card(asked.card), asked.id.client);
        let done = window.and_then(|window| {
            window
                .completed
                .iter()
                .find(|done| done.sequence == asked.id.sequence)
        });
        match done {
            Some(done) if Status::from(done.outcome.status) == Status::Approved => {
                *unknown_moved.entry(asked.card).or_default() += delta(&asked.operation);
            }
            Some(_) => {}
            None => assert!(
                window.is_none_or(|window| window.highest < REQUEST_WINDOW
                    || asked.id.sequence > window.highest - REQUEST_WINDOW),
                "{}: outcome unknown and no longer remembered",
                asked.id
            ),
        }
    }
    check_balances(&aftermath, &unknown_moved);
}

/// The records of `aftermath` by the account and request that caused them (a settlement shares
/// its transfer's id and is left out), each decided once.
fn decided_once(aftermath: &Aftermath) -> HashMap<(u64, RequestId), &Record> {
    let mut decided = HashMap::new();
    for span in &aftermath.records {
        let record = &span.record;
        if matches!(record.event, Event::TransferSettled { .. }) {
            continue;
        }
        let earlier = decided.insert((record.card, record.request), record);
        assert!(
            earlier.is_none(),
            "{} decided twice on card {}",
            record.request,
            record.card
        );
    }
    decided
}

/// Every approved transfer was received once, with its amount, by its receiver, and settled
/// once by its sender; returns how many there were.
fn check_transfers(aftermath: &Aftermath, decided: &HashMap<(u64, RequestId), &Record>) -> usize {
    let mut settled: HashMap<(u64, u64), usize> = HashMap::new();
    for span in &aftermath.records {
        if let Event::TransferSettled { leg, receiver } = span.record.event {
            assert_eq!(receiver, Code::Approved, "every receiver stays open");
            *settled.entry((span.record.card, leg)).or_default() += 1;
        }
    }
    let mut transfers = 0;
    for record in decided.values() {
        let Event::TransferSent { to, amount, .. } = record.event else {
            continue;
        };
        if record.outcome.status != Code::Approved {
            continue;
        }
        transfers += 1;
        let leg = record
            .outcome
            .reference
            .expect("an approved transfer has a number");
        let receipt = RequestId {
            client: record.card,
            sequence: leg,
        };
        let received = decided
            .get(&(to, receipt))
            .unwrap_or_else(|| panic!("transfer {leg} of {} never received", record.card));
        assert_eq!(received.outcome.status, Code::Approved);
        assert!(
            matches!(received.event, Event::TransferReceived { amount: got, .. } if got == amount)
        );
        assert_eq!(settled.get(&(record.card, leg)), Some(&1), "settled once");
    }
    assert_eq!(settled.values().sum::<usize>(), transfers);
    transfers
}

/// No reversal gives back more than its original took, and only one of an original's
/// reversals moves money; returns how many moved money.
fn check_reversals(aftermath: &Aftermath, decided: &HashMap<(u64, RequestId), &Record>) -> usize {
    let mut ledger = Ledger::default();
    let mut given_back: HashMap<(u64, RequestId), (usize, u64)> = HashMap::new();
    for span in &aftermath.records {
        let record = &span.record;
        let before = ledger
            .accounts
            .get(&record.card)
            .map(|account| account.balance);
        ledger.apply(span.lsn, record).unwrap();
        let Event::Reversal { original, .. } = record.event else {
            continue;
        };
        let after = ledger.accounts[&record.card].balance;
        let back = after - before.expect("a reversal on an account that exists");
        if back > 0 {
            let entry = given_back.entry((record.card, original)).or_default();
            entry.0 += 1;
            entry.1 += back;
        }
    }
    for ((card, original), (reversals, back)) in &given_back {
        assert_eq!(
            *reversals, 1,
            "{original} on {card} reversed more than once"
        );
        let taken = match decided[&(*card, *original)].event {
            Event::Withdrawal { amount } => amount,
            Event::HoldCompleted {
                amount: Some(amount),
                ..
            } => amount,
            ref other => panic!("reversed a {other:?}"),
        };
        assert!(
            *back <= taken,
            "{original} on {card}: {back} back of {taken}"
        );
    }
    given_back.len()
}

// Purpose: the kills land while ATMs transfer between the accounts, place, complete and void
// holds and reverse their withdrawals: after the last restart every transfer approved before any
// kill is delivered and settled exactly once and nothing is in transit; every acknowledged
// operation is in the journal once with the outcome its reply carried, and only asked-for
// requests moved money; no reversal moved money twice; money is conserved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_transfers_holds_and_reversals_settles_everything_once() {
    let aftermath = crash_scenario("banking", &[], Workload::Banking).await;
    let ledger = &aftermath.ledger;
    assert!(ledger.is_conserved(), "money is conserved");
    assert_eq!(ledger.in_transit(), Some(0), "nothing is in transit");
    assert_eq!(aftermath.records.len() as u64, ledger.applied_lsn);
    for (card, _, _) in ACCOUNTS {
        let account = &ledger.accounts[&card];
        assert!(
            account.outbox().is_empty(),
            "card {card} has a transfer on its way"
        );
        assert_eq!(aftermath.reported[&card], account.balance, "card {card}");
    }
    let decided = decided_once(&aftermath);
    let mut asked_ids = HashSet::new();
    for asked in &aftermath.asked {
        asked_ids.insert((asked.card, asked.id));
        let Some(reply) = &asked.reply else { continue };
        let record = decided
            .get(&(asked.card, asked.id))
            .unwrap_or_else(|| panic!("acknowledged {} is not in the journal", asked.id));
        assert_eq!(
            Status::from(record.outcome.status),
            reply.status,
            "{}",
            asked.id
        );
        assert_eq!(expected_body(record), reply.body, "{}", asked.id);
    }
    for record in decided.values() {
        let asked_for = matches!(
            record.event,
            Event::Withdrawal { .. }
                | Event::Deposit { .. }
                | Event::TransferSent { .. }
                | Event::HoldPlaced { .. }
                | Event::HoldCompleted { .. }
                | Event::HoldVoided { .. }
                | Event::Reversal { .. }
        );
        if asked_for {
            assert!(
                asked_ids.contains(&(record.card, record.request)),
                "{} on {} was never asked for",
                record.request,
                record.card
            );
        }
    }
    let transfers = check_transfers(&aftermath, &decided);
    let reversals = check_reversals(&aftermath, &decided);
    let holds = decided
        .values()
        .filter(|record| matches!(record.event, Event::HoldPlaced { .. }))
        .count();
    eprintln!("banking: {transfers} transfers, {holds} holds, {reversals} reversals moved money");
    assert!(
        transfers > 0 && holds > 0,
        "the workload transferred and held"
    );
}
