//! Malformed input, as regression tests and as a bounded fuzz smoke on the stable toolchain.
//!
//! - Every file of `tests/corpus/malformed/` (hand-written hostile frames, and inputs the fuzzers
//!   found worth keeping) is sent on a fresh connection: the server ends that connection by itself
//!   (a Goodbye or a close), never sends anything but valid messages, and keeps serving everyone.
//! - The same files, and thousands of inputs a seeded generator derives from valid frames, go
//!   through the checks of the `frame_decode` fuzz target and, over TCP, the checks of the
//!   `session_requests` fuzz target (the very same code, included from `fuzz/src/`).
//!
//! docs/FUZZING.md explains the fuzz targets and how to run them for longer.
mod common;
use common::{JOTY, JOTY_PIN};

#[allow(dead_code)]
#[path = "../fuzz/src/frames.rs"]
mod frames;
#[allow(dead_code)]
#[path = "../fuzz/src/session.rs"]
mod session;

use actor_bank::codec::encode_frame;
use actor_bank::protocol::{
    Body, ClientMessage, Goodbye, Hello, Operation, Reply, Request, RequestId, ServerMessage,
    Status, Welcome, PROTOCOL_VERSION,
};
use common::{Ending, RawConnection, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test waits for the server to end a connection before calling it still open. Far
/// above the deadlines configured here; it only keeps a broken server from hanging the test.
const PATIENCE: Duration = Duration::from_secs(15);

/// The regression corpus, in name order: (file name, bytes).
fn corpus() -> Vec<(String, Vec<u8>)> {
    let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/malformed");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "bin"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "the corpus lost files: {}", files.len());
    files
}

/// Each corpus file on a fresh connection: the server ends the connection by itself, with at
/// most a Goodbye after what the file legitimately asked for, and a logged-in bystander and new
/// connections are served after every one.
#[tokio::test]
async fn every_corpus_file_ends_only_its_own_connection() {
    let server = TestServer::start_with(|config| {
        // Truncated frames end by the frame deadline; nothing here waits for the login deadline.
        config.limits.frame_read_timeout = Duration::from_millis(500);
        config.limits.login_idle_timeout = Duration::from_secs(600);
    });
    let bank = server.running().bank().clone();
    let mut bystander = server.raw().await;
    let (r, _) = bystander
        .exchange(
            300,
            1,
            Operation::Verify {
                card: JOTY,
                pin: JOTY_PIN.into(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Approved);
    let mut balance = 10_000;
    for (index, (name, bytes)) in corpus().into_iter().enumerate() {
        let mut connection = RawConnection::connect(&server.address()).await;
        // The server may close before it has read everything; a failed write is expected then.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut connection.stream, &bytes).await;
        let (messages, ending) = connection.ending(PATIENCE).await;
        assert!(ending.ended(), "{name}: the connection was left open");
        if let Ending::Goodbye(reason) = &ending {
            assert!(!reason.is_empty(), "{name}: an empty Goodbye");
        }
        for (position, message) in messages.iter().enumerate() {
            let last = position + 1 == messages.len();
            match message {
                ServerMessage::Welcome(_) => assert_eq!(position, 0, "{name}: {messages:?}"),
                ServerMessage::Reply(reply) => assert_eq!(
                    (reply.status, reply.id.client),
                    (Status::Approved, 9),
                    "{name}: only the corpus's own utility requests are answered"
                ),
                ServerMessage::Goodbye(_) => assert!(last, "{name}: {messages:?}"),
            }
        }
        eprintln!("{name}: {ending:?} after {} message(s)", messages.len());

        let sequence = index as u64 + 2;
        balance -= 1;
        let (r, _) = bystander
            .exchange(300, sequence, Operation::Withdraw { amount: 1 })
            .await;
        assert_eq!(
            (r.status, r.body),
            (Status::Approved, common::balances(balance)),
            "{name}"
        );
        let mut newcomer = server.raw().await;
        let (r, _) = newcomer
            .exchange(301, sequence, Operation::IsPrime { number: 7_919 })
            .await;
        assert_eq!((r.status, r.body), (Status::Approved, Body::Answer(true)));
    }
    assert_eq!(server.committed_balance(JOTY), Some(balance));
    common::eventually("only the bystander is left", || {
        bank.stats().connections.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(bank.storage().failure().is_none());
}

/// The corpus through the checks of the `frame_decode` fuzz target.
#[test]
fn the_corpus_passes_the_frame_decoder_checks() {
    for (name, bytes) in corpus() {
        let outcome = std::panic::catch_unwind(|| frames::check(&bytes));
        assert!(outcome.is_ok(), "{name} broke a decoder property");
    }
}

/// Valid messages of every kind, as complete frames: the material the generator mutates.
fn seed_frames() -> Vec<Vec<u8>> {
    let id = RequestId {
        client: 9,
        sequence: 300,
    };
    let request = |operation| ClientMessage::Request(Request { id, operation });
    let mut seeds: Vec<Vec<u8>> = [
        ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }),
        request(Operation::CreateAccount {
            operator_token: session::OPERATOR_TOKEN.into(),
            card: 555_000_111,
            holder: "Mallory".into(),
            pin: "80417".into(),
            initial_balance: 70_000,
        }),
        request(Operation::Verify {
            card: JOTY,
            pin: JOTY_PIN.into(),
        }),
        request(Operation::Balance),
        request(Operation::Withdraw { amount: 700 }),
        request(Operation::Deposit { amount: 1 << 40 }),
        request(Operation::Logout),
        request(Operation::Lowercase {
            text: "ÀB\u{130}Ç".into(),
        }),
        request(Operation::IsPrime { number: u64::MAX }),
        request(Operation::IsPalindrome { number: 12_321 }),
    ]
    .iter()
    .map(|message| encode_frame(message).unwrap())
    .collect();
    seeds.extend(
        [
            ServerMessage::Welcome(Welcome {
                protocol_version: PROTOCOL_VERSION,
                requests_in_flight_max: 64,
                request_window: 1024,
                frame_bytes_max: 65_536,
                client_retention_secs: 86_400,
            }),
            ServerMessage::Reply(Reply {
                id,
                status: Status::InsufficientFunds,
                body: common::balances(12),
            }),
            ServerMessage::Reply(Reply {
                id,
                status: Status::Approved,
                body: Body::Text("ok".into()),
            }),
            ServerMessage::Goodbye(Goodbye {
                reason: "bye".into(),
            }),
        ]
        .iter()
        .map(|message| encode_frame(message).unwrap()),
    );
    seeds
}

/// Byte values that sit on boundaries of the encoding: varint markers, sign bits, extremes.
const INTERESTING: [u8; 12] = [0, 1, 2, 9, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];

/// A new input: random bytes, or a seed (or two spliced) after a few random mutations.
fn mutate(generator: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    if generator.gen_ratio(1, 10) {
        let length = generator.gen_range(0..64);
        return (0..length).map(|_| generator.gen()).collect();
    }
    let mut data = seeds[generator.gen_range(0..seeds.len())].clone();
    if generator.gen_ratio(1, 3) {
        data.extend_from_slice(&seeds[generator.gen_range(0..seeds.len())]);
    }
    for _ in 0..generator.gen_range(1..=4) {
        let length = data.len();
        match generator.gen_range(0..8) {
            0 if length > 0 => {
                let at = generator.gen_range(0..length);
                data[at] ^= 1 << generator.gen_range(0..8);
            }
            1 if length > 0 => {
                let at = generator.gen_range(0..length);
                data[at] = INTERESTING[generator.gen_range(0..INTERESTING.len())];
            }
            2 => {
                let at = generator.gen_range(0..=length);
                let count = generator.gen_range(1..=8);
                let bytes: Vec<u8> = (0..count).map(|_| generator.gen()).collect();
                data.splice(at..at, bytes);
            }
            3 if length > 0 => {
                let start = generator.gen_range(0..length);
                let end = generator.gen_range(start..=length.min(start + 8));
                data.drain(start..end);
            }
            4 if length > 0 => data.truncate(generator.gen_range(0..length)),
            5 if length > 0 => {
                let start = generator.gen_range(0..length);
                let end = generator.gen_range(start..=length);
                let copy = data[start..end].to_vec();
                let at = generator.gen_range(0..=data.len());
                data.splice(at..at, copy);
            }
            6 if length >= 4 => {
                let declared = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let declared = match generator.gen_range(0..5) {
                    0 => declared.wrapping_add(1),
                    1 => declared.wrapping_sub(1),
                    2 => 0,
                    3 => u32::MAX,
                    _ => generator.gen_range(0..70_000),
                };
                data[..4].copy_from_slice(&declared.to_be_bytes());
            }
            _ => {
                let at = generator.gen_range(0..=length);
                let extra = &seeds[generator.gen_range(0..seeds.len())];
                data.splice(at..at, extra.iter().copied());
            }
        }
    }
    data
}

/// Twenty thousand seeded inputs (and the corpus) through the decoder's properties: whole,
/// byte by byte and in irregular reads the client's codec agrees with the server's reader, and
/// every decoded message round-trips.
#[test]
fn fuzz_smoke_seeded_mutations_through_the_frame_decoder() {
    let mut seeds = seed_frames();
    seeds.extend(corpus().into_iter().map(|(_, bytes)| bytes));
    let mut generator = StdRng::seed_from_u64(0x0BAD_F00D);
    let mut decoded = 0usize;
    for round in 0..20_000 {
        let data = mutate(&mut generator, &seeds);
        let outcome = std::panic::catch_unwind(|| frames::check(&data));
        assert!(
            outcome.is_ok(),
            "input {round} broke a decoder property: {data:02x?}"
        );
        decoded += frames::reference::<ClientMessage>(&data, 65_536).0.len();
    }
    // The generator reaches past the length prefix: many inputs decode to real messages.
    assert!(decoded > 1_000, "only {decoded} messages decoded");
}

/// Panics seen on threads other than the test's own (the server's threads).
fn record_foreign_panics() -> Arc<Mutex<Vec<String>>> {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let test_thread = std::thread::current().id();
    let previous = std::panic::take_hook();
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed").to_string();
        let is_test = thread.id() == test_thread
            || name.starts_with("every_corpus")
            || name.starts_with("the_corpus")
            || name.starts_with("fuzz_smoke");
        if !is_test {
            record.lock().unwrap().push(format!("{name}: {info}"));
        }
        previous(info);
    }));
    seen
}

/// Fifteen hundred seeded byte streams (and the corpus, raw and after a Hello) on fresh
/// connections to a live server, each checked like the `session_requests` fuzz target does: valid
/// frames only, one Welcome first, no reply to a request that was not sent, nothing after a
/// Goodbye, the connection closed, a long-lived connection still answered. Afterwards no server
/// thread has panicked and every session has ended.
#[test]
fn fuzz_smoke_seeded_byte_streams_against_a_live_server() {
    let panics = record_foreign_panics();
    let harness = session::Harness::start();
    let mut seeds = seed_frames();
    let corpus: Vec<Vec<u8>> = corpus().into_iter().map(|(_, bytes)| bytes).collect();
    seeds.extend(corpus.iter().cloned());
    let mut inputs = Vec::new();
    for file in &corpus {
        for flags in [0u8, 1] {
            let mut input = vec![flags];
            input.extend_from_slice(file);
            inputs.push(input);
        }
    }
    let mut generator = StdRng::seed_from_u64(0x5E55_1075);
    for _ in 0..1_500 {
        let mut stream = Vec::new();
        for _ in 0..generator.gen_range(1..=4) {
            if generator.gen_ratio(2, 3) {
                stream.extend(seeds[generator.gen_range(0..seeds.len())].iter().copied());
            } else {
                stream.extend(mutate(&mut generator, &seeds));
            }
        }
        if generator.gen_ratio(1, 4) {
            stream = mutate(&mut generator, &[stream]);
        }
        // Mostly one write; now and then one to three bytes per write; now and then framed mode
        // (the stream reinterpreted as pieces, each given a correct length prefix).
        let flags: u8 = match generator.gen_range(0..10) {
            0 => generator.gen_range(1..4) << 3 | generator.gen_range(0..8),
            1 => 4 | generator.gen_range(0..4),
            _ => generator.gen_range(0..4),
        };
        let mut input = vec![flags];
        input.extend(stream);
        inputs.push(input);
    }
    for (index, input) in inputs.iter().enumerate() {
        if let Err(violation) = harness.try_run(input) {
            panic!("input {index} ({input:02x?}): {violation}");
        }
    }
    let bank = harness.server().bank().clone();
    let give_up = std::time::Instant::now() + PATIENCE;
    while bank.stats().connections.load(Ordering::Relaxed) != 1 {
        assert!(
            std::time::Instant::now() < give_up,
            "sessions left behind: {}",
            bank.stats().connections.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(bank.storage().failure().is_none());
    let panics = panics.lock().unwrap();
    assert!(panics.is_empty(), "server threads panicked: {panics:#?}");
    eprintln!("{} byte streams, no violation", inputs.len());
}
