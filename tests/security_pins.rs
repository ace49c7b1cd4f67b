//! Security of PINs: keyed verification under a PIN key kept apart from the data directory
//! (a stolen directory verifies nothing, a missing or wrong key stops the server), the first
//! release's argon2id accounts still verify and are re-keyed, operator unlock, PIN change with
//! exactly-once replays, failure limits per connection and per peer, and unknown cards costing
//! what wrong PINs cost.
mod common;
use common::{reply, verify, withdraw, TestServer, JOTY, JOTY_PIN, OPERATOR_TOKEN};

use actor_bank::pin::{self, PinHashCost, PinKey};
use actor_bank::protocol::{Body, Operation, Status};
use actor_bank::ratelimit::{ManualClock, RateLimit};
use actor_bank::server::pins::PinKeySource;
use actor_bank::server::{RunningServer, ServerError};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn pin_failures(server: &TestServer, card: u64) -> u8 {
    server.committed_account(card).pin_failures
}

fn stored_pin(server: &TestServer, card: u64) -> pin::PinHash {
    server.committed_account(card).pin_hash()
}

fn unlock(card: u64, token: &str) -> Operation {
    Operation::UnlockCard {
        operator_token: token.into(),
        card,
    }
}

fn change(old_pin: &str, new_pin: &str) -> Operation {
    Operation::ChangePin {
        old_pin: old_pin.into(),
        new_pin: new_pin.into(),
    }
}

/// The start error of `config`, which must not start.
fn start_error(config: actor_bank::server::ServerConfig) -> String {
    match RunningServer::start(config) {
        Ok(_) => panic!("the server started"),
        Err(ServerError::PinKey(reason)) => reason,
        Err(other) => panic!("failed for another reason: {other}"),
    }
}

/// The first start creates the key file (0600, beside the data directory); the journal then
/// holds keyed verifiers that no PIN matches under any other key, so a thief of the directory
/// learns nothing by trying all 10 000 PINs. Started again without the key file, with another
/// key, or with the key inside the data directory, the server refuses, saying why.
#[test]
fn a_stolen_data_directory_without_its_key_verifies_no_pin_and_the_server_refuses_it() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let key_file = root.path().join("bank.pin-key");
    let config = |key: PinKeySource| {
        let mut config = common::test_config(&data_dir);
        config.pin_key = key;
        config
    };
    let server = RunningServer::start(config(PinKeySource::File(key_file.clone()))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is its owner's only");
    }
    let stored = server
        .bank()
        .storage()
        .committed_account(JOTY)
        .unwrap()
        .pin_hash();
    let key = PinKey::read(&key_file).unwrap().unwrap();
    assert!(stored.is_keyed() && key.matches(JOTY, JOTY_PIN, &stored));
    server.stop();
    // The thief's offline search, with every key but the right one: nothing matches.
    let guessed = PinKey::from_bytes([0; pin::PIN_KEY_BYTES]);
    let found = (0..10_000)
        .map(|guess| format!("{guess:04}"))
        .filter(|guess| guessed.matches(JOTY, guess, &stored) || pin::verify(guess, &stored))
        .count();
    assert_eq!(found, 0);

    let moved = root.path().join("elsewhere.pin-key");
    std::fs::rename(&key_file, &moved).unwrap();
    let reason = start_error(config(PinKeySource::File(key_file.clone())));
    assert!(reason.contains("missing"), "{reason}");
    assert!(!key_file.exists(), "no new key replaces the lost one");
    let reason = start_error(config(PinKeySource::Given(guessed)));
    assert!(reason.contains("not the key"), "{reason}");
    let inside = data_dir.join("pin-key");
    std::fs::copy(&moved, &inside).unwrap();
    let reason = start_error(config(PinKeySource::File(inside)));
    assert!(reason.contains("inside the data directory"), "{reason}");
    // With the right key it opens, and the PIN verifies.
    let server = RunningServer::start(config(PinKeySource::File(moved))).unwrap();
    assert!(server.bank().pins().key().matches(JOTY, JOTY_PIN, &stored));
}

/// A data directory of the first release (argon2id hashes, no key anywhere) opens: its wrong PIN
/// is refused and counted, its right PIN verifies on the fixed pool and is re-keyed in the
/// journal, after which the card is checked with the key alone, across a restart. The account
/// comes from a snapshot of the first release's format.
#[test]
fn first_release_argon2_accounts_still_verify_and_are_re_keyed_at_the_right_pin() {
    const CARD: u64 = 246_813_579;
    let data_dir = tempfile::tempdir().unwrap();
    common::durability::write_journal(
        data_dir.path(),
        &[common::durability::legacy_opening(
            CARD,
            "8642",
            PinHashCost::MINIMUM,
        )],
        // A snapshot after the opening: the first release's account comes back from a snapshot.
        1,
    );
    assert!(!common::durability::snapshots(data_dir.path()).is_empty());
    let config = common::test_config(data_dir.path());
    let mut server = TestServer::on(data_dir, config);
    assert!(!stored_pin(&server, CARD).is_keyed());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut atm = server.raw().await;
        let (r, _) = atm.exchange(71, 1, verify(CARD, "8641")).await;
        assert_eq!(r, reply(71, 1, Status::IncorrectPin, Body::Empty));
        assert_eq!(pin_failures(&server, CARD), 1);
        let (r, _) = atm.exchange(71, 2, verify(CARD, "8642")).await;
        assert_eq!(r, reply(71, 2, Status::Approved, Body::Empty));
        let (r, _) = atm.exchange(71, 3, withdraw(100)).await;
        assert_eq!(r, reply(71, 3, Status::Approved, common::balances(600)));
    });
    let stored = stored_pin(&server, CARD);
    assert!(stored.is_keyed(), "re-keyed: {stored:?}");
    assert!(common::test_pin_key().matches(CARD, "8642", &stored));
    assert_eq!(pin_failures(&server, CARD), 0);
    let pins = server.running().bank().pins();
    assert_eq!(pins.stats.rekeyed.load(Ordering::Relaxed), 1);
    let pool = pins.pool();
    assert_eq!(
        pool.done.load(Ordering::Relaxed),
        2,
        "both checks ran on the pool"
    );
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    assert!(pool.threads.load(Ordering::Relaxed) <= cores);

    server.restart(|_| {});
    runtime.block_on(async {
        let mut atm = server.raw().await;
        let (r, _) = atm.exchange(72, 1, verify(CARD, "8642")).await;
        assert_eq!(r, reply(72, 1, Status::Approved, Body::Empty));
    });
    assert_eq!(
        server
            .running()
            .bank()
            .pins()
            .pool()
            .done
            .load(Ordering::Relaxed),
        0,
        "after the re-key no argon2id check runs"
    );
}

/// The operator unlocks a locked card (a replay of the unlock gets the same reply and changes
/// nothing more); without the token nothing happens; an unknown card is said to be unknown. The
/// unlock is journaled: it holds after a restart.
#[tokio::test]
async fn the_operator_unlocks_a_locked_card_exactly_once() {
    let mut server = TestServer::start();
    let mut atm = server.raw().await;
    for sequence in 1..=3 {
        atm.exchange(81, sequence, verify(JOTY, "0000")).await;
    }
    let (r, _) = atm.exchange(81, 4, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::CardLocked);
    let mut operator = server.raw().await;
    let (r, _) = operator.exchange(82, 1, unlock(JOTY, "wrong-token")).await;
    assert_eq!(r, reply(82, 1, Status::NotAuthorised, Body::Empty));
    assert_eq!(pin_failures(&server, JOTY), 3);
    let (r, first) = operator.exchange(82, 2, unlock(JOTY, OPERATOR_TOKEN)).await;
    assert_eq!(r, reply(82, 2, Status::Approved, Body::Empty));
    assert_eq!(pin_failures(&server, JOTY), 0);
    let (r, _) = operator.exchange(82, 3, unlock(123, OPERATOR_TOKEN)).await;
    assert_eq!(r, reply(82, 3, Status::UnknownCard, Body::Empty));

    // A wrong PIN after the unlock, then the unlock's replay: the same bytes, and the new wrong
    // PIN still counts (the replay did not unlock again).
    let (r, _) = atm.exchange(81, 5, verify(JOTY, "0000")).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let mut again = server.raw().await;
    let (_, replayed) = again.exchange(82, 2, unlock(JOTY, OPERATOR_TOKEN)).await;
    assert_eq!(replayed, first);
    assert_eq!(pin_failures(&server, JOTY), 1);

    server.restart(|_| {});
    assert_eq!(pin_failures(&server, JOTY), 1);
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(83, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(83, 1, Status::Approved, Body::Empty));
}

/// A verified holder changes the PIN: not without a verified card, not to a malformed PIN, not
/// with a wrong old PIN (which counts like a wrong Verify). The change is exactly-once: its
/// replay on another connection, after the old PIN stopped working, gets the original bytes.
/// The new PIN verifies after a restart; the old one does not.
#[tokio::test]
async fn a_holder_changes_the_pin_exactly_once() {
    let mut server = TestServer::start();
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(91, 1, change(JOTY_PIN, "2468")).await;
    assert_eq!(r, reply(91, 1, Status::NotLoggedIn, Body::Empty));
    atm.exchange(91, 2, verify(JOTY, JOTY_PIN)).await;
    let (r, _) = atm.exchange(91, 3, change(JOTY_PIN, "24a8")).await;
    assert_eq!(r, reply(91, 3, Status::InvalidRequest, Body::Empty));
    let (r, _) = atm.exchange(91, 4, change("9999", "2468")).await;
    assert_eq!(r, reply(91, 4, Status::IncorrectPin, Body::Empty));
    assert_eq!(pin_failures(&server, JOTY), 1);
    let (r, first) = atm.exchange(91, 5, change(JOTY_PIN, "2468")).await;
    assert_eq!(r, reply(91, 5, Status::Approved, Body::Empty));
    assert_eq!(
        pin_failures(&server, JOTY),
        0,
        "a right PIN clears the count"
    );
    assert_eq!(
        stored_pin(&server, JOTY),
        common::test_pin_key().verifier(JOTY, "2468")
    );

    // The reply was lost; the ATM logs in with the new PIN on a new connection and retries.
    let mut retry = server.raw().await;
    let (r, _) = retry.exchange(92, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = retry.exchange(92, 2, verify(JOTY, "2468")).await;
    assert_eq!(r.status, Status::Approved);
    let (_, replayed) = retry.exchange(91, 5, change(JOTY_PIN, "2468")).await;
    assert_eq!(replayed, first);
    assert_eq!(
        stored_pin(&server, JOTY),
        common::test_pin_key().verifier(JOTY, "2468")
    );

    server.restart(|_| {});
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(93, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = atm.exchange(93, 2, verify(JOTY, "2468")).await;
    assert_eq!(r.status, Status::Approved);
}

/// Guessing the old PIN through ChangePin locks the card like wrong Verifys do, and the lock
/// ends the session's login.
#[tokio::test]
async fn wrong_old_pins_in_a_change_lock_the_card_and_end_the_login() {
    let server = TestServer::start();
    let mut atm = server.raw().await;
    atm.exchange(95, 1, verify(JOTY, JOTY_PIN)).await;
    for (sequence, guess) in [(2, "1111"), (3, "2222")] {
        let (r, _) = atm.exchange(95, sequence, change(guess, "2468")).await;
        assert_eq!(r.status, Status::IncorrectPin);
    }
    let (r, _) = atm.exchange(95, 4, change("3333", "2468")).await;
    assert_eq!(r, reply(95, 4, Status::CardLocked, Body::Empty));
    let (r, _) = atm.exchange(95, 5, change(JOTY_PIN, "2468")).await;
    assert_eq!(r, reply(95, 5, Status::NotLoggedIn, Body::Empty));
    let (r, _) = atm.exchange(95, 6, withdraw(1)).await;
    assert_eq!(r, reply(95, 6, Status::NotLoggedIn, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// Failed PIN checks are limited per connection and per peer address: past the allowance a PIN
/// check is answered `busy` unchecked (the right PIN too, and nothing is counted against the
/// card), while right PINs take nothing from it. With no refill the counts are exact.
#[tokio::test]
async fn failed_pin_checks_are_limited_per_connection_and_per_peer() {
    let server = TestServer::start_with(|config| {
        config.limits.pin_failures_per_connection = RateLimit {
            burst: 3,
            per_minute: 0,
        };
        config.limits.pin_failures_per_peer = RateLimit {
            burst: 5,
            per_minute: 0,
        };
    });
    let mut first = server.raw().await;
    for sequence in 1..=20 {
        let (r, _) = first.exchange(101, sequence, verify(JOTY, JOTY_PIN)).await;
        assert_eq!(r.status, Status::Approved, "right PINs are never limited");
    }
    // Unknown cards count: card numbers cannot be listed faster than the limit.
    for sequence in 21..=23 {
        let (r, _) = first
            .exchange(101, sequence, verify(100 + sequence, "0000"))
            .await;
        assert_eq!(r.status, Status::UnknownCard);
    }
    let (r, _) = first.exchange(101, 24, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(101, 24, Status::Busy, Body::Empty));
    // Another connection from the same address has two failures left.
    let mut second = server.raw().await;
    let (r, _) = second.exchange(102, 1, verify(JOTY, "0000")).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = second.exchange(102, 2, verify(JOTY, "1111")).await;
    assert_eq!(r.status, Status::IncorrectPin);
    let (r, _) = second.exchange(102, 3, verify(JOTY, "2222")).await;
    assert_eq!(r, reply(102, 3, Status::Busy, Body::Empty));
    assert_eq!(
        pin_failures(&server, JOTY),
        2,
        "the refused guess was not checked"
    );
    let mut third = server.raw().await;
    let (r, _) = third.exchange(103, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(103, 1, Status::Busy, Body::Empty));
    let stats = &server.running().bank().pins().stats;
    assert_eq!(stats.failures.load(Ordering::Relaxed), 5);
    assert_eq!(stats.rate_limited.load(Ordering::Relaxed), 3);
    assert_eq!(server.running().bank().pins().peers_tracked(), 1);
}

/// A used-up allowance comes back at its rate, by the server's clock: at 6 a minute, one failure
/// every ten seconds, not a millisecond sooner (a hand-driven clock, so nothing waits).
#[tokio::test]
async fn the_failure_allowance_refills_at_its_rate() {
    let clock = Arc::new(ManualClock::default());
    let server = TestServer::start_with(|config| {
        config.clock = clock.clone();
        config.limits.pin_failures_per_connection = RateLimit {
            burst: 2,
            per_minute: 6,
        };
    });
    let mut atm = server.raw().await;
    for sequence in 1..=2 {
        let (r, _) = atm.exchange(121, sequence, verify(555, "0000")).await;
        assert_eq!(r.status, Status::UnknownCard);
    }
    let (r, _) = atm.exchange(121, 3, verify(555, "0000")).await;
    assert_eq!(r.status, Status::Busy);
    clock.advance(Duration::from_millis(9_999));
    let (r, _) = atm.exchange(121, 4, verify(555, "0000")).await;
    assert_eq!(r.status, Status::Busy);
    clock.advance(Duration::from_millis(1));
    let (r, _) = atm.exchange(121, 5, verify(555, "0000")).await;
    assert_eq!(r.status, Status::UnknownCard);
    let (r, _) = atm.exchange(121, 6, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Busy, "no allowance left for any check");
    clock.advance(Duration::from_secs(10));
    let (r, _) = atm.exchange(121, 7, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);
}

/// An unknown card costs exactly the keyed check a wrong PIN costs (one each, against a
/// stand-in verifier), so time cannot tell them apart; and a locked card is not checked at all.
#[tokio::test]
async fn an_unknown_card_costs_what_a_wrong_pin_costs_and_a_locked_card_nothing() {
    let server = TestServer::start();
    let checks = || {
        server
            .running()
            .bank()
            .pins()
            .stats
            .keyed_checks
            .load(Ordering::Relaxed)
    };
    let mut atm = server.raw().await;
    let before = checks();
    let (r, _) = atm.exchange(111, 1, verify(111_111_111, "1234")).await;
    assert_eq!(r.status, Status::UnknownCard);
    assert_eq!(checks(), before + 1);
    let (r, _) = atm.exchange(111, 2, verify(JOTY, "0000")).await;
    assert_eq!(r.status, Status::IncorrectPin);
    assert_eq!(checks(), before + 2);
    for sequence in 3..=4 {
        atm.exchange(111, sequence, verify(JOTY, "0000")).await;
    }
    let locked = checks();
    let (r, _) = atm.exchange(111, 5, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::CardLocked);
    assert_eq!(checks(), locked, "a locked card is never hashed");
}

/// A burst of guesses sent at once cannot have its right one approved past the lock: a right PIN
/// is approved without the account actor only while neither the committed state nor the actor's
/// working copy holds a wrong attempt. Here three wrong PINs are decided (the third locks the
/// card) but held back from durability, so the committed state still shows none; the right PIN
/// that follows is refused `card_locked`, like every attempt on a locked card.
#[tokio::test]
async fn a_right_pin_behind_wrong_ones_not_yet_durable_is_refused_by_the_lock() {
    use actor_bank::ledger::Ledger;
    use actor_bank::storage::{memory::MemoryLog, Storage};
    let data_dir = tempfile::tempdir().unwrap();
    let config = common::test_config(data_dir.path());
    let (log, committed) = MemoryLog::open(Ledger::default(), 1024);
    let storage = Storage::new(log.clone(), committed);
    let server = RunningServer::start_with_storage(config, storage).expect("the server starts");
    let address = server.local_addr.to_string();
    let stats = &server.bank().pins().stats;

    // Verified once, while everything is durable: a right PIN on a clean card.
    let mut holder = common::RawConnection::connect(&address)
        .await
        .greeted()
        .await;
    let (r, _) = holder.exchange(301, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r.status, Status::Approved);

    log.pause();
    let mut guesser = common::RawConnection::connect(&address)
        .await
        .greeted()
        .await;
    for (sequence, guess) in [(1, "0000"), (2, "1111"), (3, "2222")] {
        guesser.request(302, sequence, verify(JOTY, guess)).await;
    }
    let storage = server.bank().storage();
    common::eventually(
        "the three wrong PINs decided and journaled, not durable",
        || {
            let journal = storage.stats();
            journal.head_lsn >= journal.durable_lsn + 3
        },
    )
    .await;
    let checks_before = stats.keyed_checks.load(Ordering::Relaxed);
    assert_eq!(
        storage.with_committed(|ledger| ledger
            .accounts
            .get(&JOTY)
            .map(|account| account.pin_failures)),
        Some(0),
        "the committed state shows no wrong PIN yet"
    );
    holder.request(301, 2, verify(JOTY, JOTY_PIN)).await;
    common::eventually("the right PIN checked", || {
        stats.keyed_checks.load(Ordering::Relaxed) > checks_before
    })
    .await;
    log.resume();
    let (r, _) = holder.receive_reply().await;
    assert_eq!(
        r,
        reply(301, 2, Status::CardLocked, Body::Empty),
        "the lock the wrong PINs made holds"
    );
    // Pipelined replies come in any order; each names its request.
    let mut guesses = Vec::new();
    for _ in 0..3 {
        let (r, _) = guesser.receive_reply().await;
        guesses.push((r.id.sequence, r.status));
    }
    guesses.sort_by_key(|(sequence, _)| *sequence);
    assert_eq!(
        guesses,
        [
            (1, Status::IncorrectPin),
            (2, Status::IncorrectPin),
            (3, Status::CardLocked)
        ]
    );
    server.stop();
}
