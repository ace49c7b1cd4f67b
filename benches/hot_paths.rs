//! The hot paths that came with the keyed PINs, the transfers and the ISO 8583 door: the keyed
//! PIN check (right and wrong PIN) and the ISO-0 PIN block a switch sends in field 52, the
//! ledger's decision on the three steps of a transfer, and the ISO 8583 codec on a financial
//! request (0200) and its answer (0210).
//!
//! `cargo bench --bench hot_paths`

mod common;
use actor_bank::iso8583::{self, field, mti, Message};
use actor_bank::ledger::{self, Account, Decision, Event, Record};
use actor_bank::model::{Code, RequestId};
use actor_bank::pin::{PinKey, PIN_KEY_BYTES};
use actor_bank::pin_block::{self, ZonePinKey};
use common::{opening, PIN};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

/// The card every account here has (a demo card of 9 digits, as the ISO 8583 door sees it).
const CARD: u64 = 123_456_789;
/// The card transfers go to and come from.
const OTHER_CARD: u64 = 987_654_321;
const CLIENT: u64 = 0x3a7f_12c4_9e01_55d2;
const NOW_MS: u64 = 1_700_000_000_000;
const AT: ledger::At = ledger::At {
    unix_ms: NOW_MS,
    business_day: 19_675,
};
/// Withdrawals and transfers made on an account before it is measured, so that it has the
/// activity (movements, daily use, transfers on their way) a busy account has.
const HISTORY_OPERATIONS: u64 = 8;
/// A 2-key triple DES zone PIN key, as a key ceremony's form writes it.
const ZONE_KEY_TEXT: &str = "0123 4567 89AB CDEF FEDC BA98 7654 3210";

fn id(sequence: u64) -> RequestId {
    RequestId {
        client: CLIENT,
        sequence,
    }
}

/// Decides `event` on `account` and applies its record, as the account actor does; panics when
/// the event is answered without a record (every event here is one the bank records).
fn record_on(account: &mut Option<Account>, sequence: u64, event: Event) -> Record {
    match ledger::decide(
        account.as_ref(),
        CARD,
        id(sequence),
        event,
        AT,
        &ledger::Policy::default(),
    ) {
        Decision::Record(record) => {
            ledger::apply(account, &record).expect("apply");
            record
        }
        Decision::Answer(outcome) => panic!("answered without a record: {outcome:?}"),
    }
}

/// An account with activity: opened, then [`HISTORY_OPERATIONS`] withdrawals and as many
/// transfers sent (and still on their way), so its movements and outbox are not empty.
fn busy_account() -> Account {
    let mut account = None;
    let mut sequence = 0;
    let mut next = || {
        sequence += 1;
        sequence
    };
    record_on(&mut account, next(), opening(CARD, 1 << 40));
    for _ in 0..HISTORY_OPERATIONS {
        record_on(&mut account, next(), Event::Withdrawal { amount: 20 });
        let sent = Event::TransferSent {
            to: OTHER_CARD,
            amount: 50,
            receiver: Code::Approved,
        };
        record_on(&mut account, next(), sent);
    }
    account.expect("opened")
}

fn bench_pin(c: &mut Criterion) {
    let mut group = c.benchmark_group("pin");
    group.throughput(Throughput::Elements(1));

    let key = PinKey::from_bytes([7; PIN_KEY_BYTES]);
    let stored = key.verifier(CARD, PIN);
    group.bench_function("keyed_check/right_pin", |b| {
        b.iter(|| key.matches(black_box(CARD), black_box(PIN), &stored))
    });
    group.bench_function("keyed_check/wrong_pin", |b| {
        b.iter(|| key.matches(black_box(CARD), black_box("9999"), &stored))
    });

    // Field 52 as a switch sends it: the ISO-0 block of the PIN on the card, under the zone key.
    let zone = ZonePinKey::parse(ZONE_KEY_TEXT).expect("zone key");
    let pan = CARD.to_string();
    let field_52 = pin_block::field_52_for(&zone, PIN, &pan).expect("field 52");
    group.bench_function("iso0_block/decode_under_zone_key", |b| {
        b.iter(|| pin_block::pin_from_field_52(&zone, black_box(&field_52), &pan).expect("PIN"))
    });
    // What the door does with field 52 of a login: read the PIN, then check it.
    group.bench_function("iso0_block/decode_then_keyed_check", |b| {
        b.iter(|| {
            let pin = pin_block::pin_from_field_52(&zone, black_box(&field_52), &pan).expect("PIN");
            key.matches(CARD, &pin, &stored)
        })
    });
    group.finish();
}

fn bench_transfer(c: &mut Criterion) {
    let mut group = c.benchmark_group("transfer_decide");
    group.throughput(Throughput::Elements(1));

    let account = busy_account();
    let next_sequence = 2 * HISTORY_OPERATIONS + 2;
    let oldest_leg = account.outbox().first().expect("a transfer on its way").leg;
    let decide = |event: Event| {
        ledger::decide(
            Some(black_box(&account)),
            CARD,
            id(next_sequence),
            event,
            AT,
            &ledger::Policy::default(),
        )
    };
    group.bench_function("sent/approved", |b| {
        b.iter(|| {
            decide(Event::TransferSent {
                to: OTHER_CARD,
                amount: 50,
                receiver: Code::Approved,
            })
        })
    });
    group.bench_function("received/approved", |b| {
        b.iter(|| {
            decide(Event::TransferReceived {
                from: OTHER_CARD,
                leg: 17,
                amount: 50,
            })
        })
    });
    group.bench_function("settled/approved", |b| {
        b.iter(|| {
            decide(Event::TransferSettled {
                leg: oldest_leg,
                receiver: Code::Approved,
            })
        })
    });
    // The receiver refused (closed account): the money comes back to the sender.
    group.bench_function("settled/returned", |b| {
        b.iter(|| {
            decide(Event::TransferSettled {
                leg: oldest_leg,
                receiver: Code::AccountClosed,
            })
        })
    });
    group.finish();
}

/// A cash withdrawal as a switch sends it: the fields an acquirer sets on a 0200.
fn financial_request(field_52: &str) -> Message {
    let mut message = Message::new(mti::FINANCIAL);
    message
        .set(field::PAN, CARD.to_string())
        .set(field::PROCESSING_CODE, "010000")
        .set(field::AMOUNT, "000000002500")
        .set(field::TRANSMITTED, "1201153000")
        .set(field::STAN, "000042")
        .set(field::LOCAL_TIME, "153000")
        .set(field::LOCAL_DATE, "1201")
        .set(field::ACQUIRER, "12345")
        .set(field::RETRIEVAL_REFERENCE, "433512000042")
        .set(field::TERMINAL, "ATM00001")
        .set(field::CURRENCY, "978")
        .set(field::PIN_BLOCK, field_52);
    message
}

/// Its approval: the request's fields less the PIN block, and the authorisation id, the
/// response code and the balances.
fn financial_response(request: &Message) -> Message {
    let mut message = request.clone();
    message.mti = mti::FINANCIAL_RESPONSE.to_string();
    message.fields.remove(&field::PIN_BLOCK);
    let balances = iso8583::additional_amounts("978", 987_654, 987_654).expect("balances");
    message
        .set(field::AUTHORISATION_ID, "A1B2C3")
        .set(field::RESPONSE_CODE, "00")
        .set(field::ADDITIONAL_AMOUNTS, balances);
    message
}

fn bench_iso8583(c: &mut Criterion) {
    let zone = ZonePinKey::parse(ZONE_KEY_TEXT).expect("zone key");
    let field_52 = pin_block::field_52_for(&zone, PIN, &CARD.to_string()).expect("field 52");
    let request = financial_request(&field_52);
    let response = financial_response(&request);
    let request_bytes = iso8583::encode(&request).expect("encode 0200");
    let response_bytes = iso8583::encode(&response).expect("encode 0210");
    eprintln!(
        "message sizes: 0200 {} bytes, 0210 {} bytes (no length prefix)",
        request_bytes.len(),
        response_bytes.len()
    );

    let mut group = c.benchmark_group("iso8583");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode/0200", |b| {
        b.iter(|| iso8583::encode(black_box(&request)).expect("encode"))
    });
    group.bench_function("encode/0210", |b| {
        b.iter(|| iso8583::encode(black_box(&response)).expect("encode"))
    });
    group.bench_function("decode/0200", |b| {
        b.iter(|| iso8583::decode(black_box(&request_bytes)).expect("decode"))
    });
    group.bench_function("decode/0210", |b| {
        b.iter(|| iso8583::decode(black_box(&response_bytes)).expect("decode"))
    });
    // What the door does per request: read the fields in place, and write its reply into one
    // buffer behind the frame's length (no message built either way).
    group.bench_function("decode_in_place/0200", |b| {
        b.iter(|| {
            let view = iso8583::decode_in_place(black_box(&request_bytes)).expect("decode");
            black_box(view.get(field::PIN_BLOCK));
        })
    });
    let mut buffer = Vec::with_capacity(512);
    group.bench_function("encode_into/0210", |b| {
        b.iter(|| {
            buffer.clear();
            buffer.extend_from_slice(&[0, 0]);
            let fields = black_box(&response).fields.iter_str();
            iso8583::encode_into(&response.mti, fields, &mut buffer).expect("encode");
            black_box(&buffer);
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
    targets = bench_pin, bench_transfer, bench_iso8583
}
criterion_main!(benches);
