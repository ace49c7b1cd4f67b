//! The pure account rules: `decide` and `apply` for a withdrawal, the memory of completed
//! requests (`ClientWindow::check` / `remember`), and `Ledger::apply`, which the journal writer
//! runs for every durable record and recovery runs for every replayed one.
//!
//! `cargo bench --bench ledger`

mod common;
use actor_bank::ledger::{
    self, completed_entry, Account, ClientWindow, Decision, Event, Fingerprint, Ledger, Record,
    REQUEST_WINDOW,
};
use actor_bank::model::{Code, RequestId};
use common::opening;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::time::Duration;

const CARD: u64 = 1_234_567_890;
const CLIENT: u64 = 0x3a7f_12c4_9e01_55d2;
const NOW_MS: u64 = 1_700_000_000_000;
const AT: ledger::At = ledger::At {
    unix_ms: NOW_MS,
    business_day: 19_675,
};

/// An account with `balance`, made the way the ledger makes one: by applying its opening.
fn account(balance: u64) -> Account {
    let mut account = None;
    ledger::apply(&mut account, &opened(CARD, 1, balance)).expect("open");
    account.expect("opened")
}

fn id(sequence: u64) -> RequestId {
    RequestId {
        client: CLIENT,
        sequence,
    }
}

fn withdrawal_record(sequence: u64, balance_before: u64, amount: u64) -> Record {
    match ledger::decide(
        Some(&account(balance_before)),
        CARD,
        id(sequence),
        Event::Withdrawal { amount },
        AT,
        &ledger::Policy::default(),
    ) {
        Decision::Record(record) => record,
        Decision::Answer(outcome) => {
            panic!("a withdrawal was answered without a record: {outcome:?}")
        }
    }
}

fn opened(card: u64, sequence: u64, balance: u64) -> Record {
    Record {
        request: id(sequence),
        card,
        at_unix_ms: NOW_MS,
        business_day: AT.business_day,
        event: opening(card, balance),
        outcome: ledger::Outcome {
            status: Code::Approved,
            balance: Some(balance),
            available: Some(balance),
            reference: None,
        },
    }
}

/// An approved withdrawal record built directly (no account clone), as the journal receives it.
fn withdrawal(client: u64, sequence: u64, card: u64, balance_before: u64, amount: u64) -> Record {
    Record {
        request: RequestId { client, sequence },
        card,
        at_unix_ms: NOW_MS,
        business_day: AT.business_day,
        event: Event::Withdrawal { amount },
        outcome: ledger::Outcome {
            status: Code::Approved,
            balance: Some(balance_before - amount),
            available: Some(balance_before - amount),
            reference: None,
        },
    }
}

fn bench_rules(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(1));

    let rich = account(u64::MAX / 2);
    group.bench_function("decide/withdrawal_approved", |b| {
        b.iter(|| {
            ledger::decide(
                Some(black_box(&rich)),
                CARD,
                id(7),
                Event::Withdrawal { amount: 250 },
                AT,
                &ledger::Policy::default(),
            )
        })
    });
    let poor = account(10);
    group.bench_function("decide/withdrawal_insufficient", |b| {
        b.iter(|| {
            ledger::decide(
                Some(black_box(&poor)),
                CARD,
                id(7),
                Event::Withdrawal { amount: 250 },
                AT,
                &ledger::Policy::default(),
            )
        })
    });

    // decide + apply on the working copy, as the account actor does it: the balance drops 1 per
    // iteration and never runs out within any run.
    group.bench_function("decide_then_apply/withdrawal", |b| {
        let mut working = Some(account(u64::MAX / 2));
        let mut sequence = 0;
        b.iter(|| {
            sequence += 1;
            let decision = ledger::decide(
                working.as_ref(),
                CARD,
                id(sequence),
                Event::Withdrawal { amount: 1 },
                AT,
                &ledger::Policy::default(),
            );
            if let Decision::Record(record) = decision {
                ledger::apply(&mut working, &record).expect("apply");
            }
        })
    });

    let record = withdrawal_record(7, 1_000_000, 250);
    group.bench_function("apply/withdrawal", |b| {
        b.iter_batched_ref(
            || Some(account(1_000_000)),
            |working| ledger::apply(working, black_box(&record)).expect("apply"),
            BatchSize::SmallInput,
        )
    });

    // The memory of completed requests, full (REQUEST_WINDOW entries) as it is for a busy client.
    let mut window = ClientWindow::default();
    for sequence in 1..=REQUEST_WINDOW {
        let done = completed_entry(&withdrawal_record(sequence, 1_000_000, 1), sequence);
        window.remember(done, NOW_MS);
    }
    let fingerprint = Fingerprint::of(CARD, &Event::Withdrawal { amount: 1 });
    group.bench_function("client_window/check_new", |b| {
        b.iter(|| window.check(black_box(REQUEST_WINDOW + 1), &fingerprint))
    });
    group.bench_function("client_window/check_replay_oldest", |b| {
        b.iter(|| window.check(black_box(1), &fingerprint))
    });
    group.bench_function("client_window/remember_full", |b| {
        let mut window = window.clone();
        let mut sequence = REQUEST_WINDOW;
        b.iter(|| {
            sequence += 1;
            let done = ledger::Completed {
                sequence,
                fingerprint,
                outcome: record.outcome,
                lsn: sequence,
            };
            window.remember(done, NOW_MS);
        })
    });
    group.finish();
}

fn bench_committed_ledger(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_apply");
    group.throughput(Throughput::Elements(1));

    // One hot account: every record is a withdrawal on it, from one client. The state lives
    // outside the closure criterion calls once per sample, so it is built once.
    let mut hot = Ledger::default();
    hot.apply(1, &opened(CARD, 1, u64::MAX / 2)).expect("open");
    let mut hot_balance = u64::MAX / 2;
    group.bench_function("hot_account/withdrawal", move |b| {
        b.iter(|| {
            let lsn = hot.applied_lsn + 1;
            let record = withdrawal(CLIENT, lsn, CARD, hot_balance, 1);
            hot_balance -= 1;
            hot.apply(lsn, &record).expect("apply")
        })
    });

    // Many accounts (a HashMap of 100k entries) and 64 clients, as in the spread swarm.
    const ACCOUNTS: u64 = 100_000;
    const CLIENTS: u64 = 64;
    let mut spread = Ledger::default();
    for index in 0..ACCOUNTS {
        let lsn = spread.applied_lsn + 1;
        spread
            .apply(lsn, &opened(CARD + index, lsn, 1 << 40))
            .expect("open");
    }
    let mut balances = vec![1u64 << 40; ACCOUNTS as usize];
    let mut sequences = [0u64; CLIENTS as usize];
    let mut step: u64 = 0;
    group.bench_function("100k_accounts/withdrawal", move |b| {
        b.iter(|| {
            step += 1;
            let index = (step.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) % ACCOUNTS;
            let client = step % CLIENTS;
            sequences[client as usize] += 1;
            let lsn = spread.applied_lsn + 1;
            let before = balances[index as usize];
            balances[index as usize] -= 1;
            let record = withdrawal(
                client + 1,
                sequences[client as usize],
                CARD + index,
                before,
                1,
            );
            spread.apply(lsn, &record).expect("apply")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_rules, bench_committed_ledger
}
criterion_main!(benches);
