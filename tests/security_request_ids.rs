//! Security of the memory of completed requests: a PIN attempt is never answered from it (every
//! attempt is checked and every wrong one counts), no answer depends on whether a secret was
//! right, and request ids belong to the card (or the operator) they were made as, so nobody who
//! has not verified a card can make its requests conflict, go stale, or crowd its clients out.
mod common;
use common::durability::{first_release_ledger, snapshots};
use common::{create, deposit, reply, verify, withdraw, AHONA, AHONA_PIN, JOTY, JOTY_PIN};

use actor_bank::journal::format;
use actor_bank::ledger::{Principal, CLIENTS_PER_PRINCIPAL_MAX};
use actor_bank::protocol::{Body, Operation, Status};
use common::{RawConnection, TestServer, OPERATOR_TOKEN};

fn pin_failures(server: &TestServer, card: u64) -> u8 {
    server
        .running()
        .bank()
        .storage()
        .committed_account(card)
        .unwrap()
        .pin_failures
}

/// A connection logged in to `card` with a Verify under `client`.
async fn logged_in(server: &TestServer, client: u64, card: u64, pin: &str) -> RawConnection {
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(client, 1, verify(card, pin)).await;
    assert_eq!(r.status, Status::Approved, "login failed: {r:?}");
    atm
}

/// The attack of the lockout bypass: ten different wrong PINs under one request id. Every one is
/// checked and counted, so the third locks the card, and the right PIN after them is refused.
#[tokio::test]
async fn ten_different_wrong_pins_under_one_id_lock_the_card_after_three() {
    let server = TestServer::start();
    let mut guesser = server.raw().await;
    let mut statuses = Vec::new();
    for guess in 0..10 {
        let (r, _) = guesser
            .exchange(70, 1, verify(JOTY, &format!("{guess:04}")))
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses[..3],
        [
            Status::IncorrectPin,
            Status::IncorrectPin,
            Status::CardLocked
        ]
    );
    assert!(statuses[3..]
        .iter()
        .all(|status| *status == Status::CardLocked));
    assert!(pin_failures(&server, JOTY) >= 3);
    let (r, _) = guesser.exchange(70, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(70, 1, Status::CardLocked, Body::Empty));
    let (r, _) = guesser.exchange(70, 2, Operation::Balance).await;
    assert_eq!(r.status, Status::NotLoggedIn);
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// The right PIN under an id already used (by a wrong PIN, by a right one, by a withdrawal) gets
/// the very answer it gets under a fresh id, and logs the connection in: the memory of completed
/// requests is never consulted for a PIN attempt, so it cannot be used as an oracle.
#[tokio::test]
async fn the_right_pin_under_a_used_id_is_answered_as_under_a_fresh_one() {
    let server = TestServer::start();
    let mut fresh = server.raw().await;
    let (expected, _) = fresh.exchange(71, 1, verify(AHONA, AHONA_PIN)).await;
    assert_eq!(expected, reply(71, 1, Status::Approved, Body::Empty));

    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(72, 1, verify(AHONA, "0000")).await;
    assert_eq!(r, reply(72, 1, Status::IncorrectPin, Body::Empty));
    let (after_wrong, _) = atm.exchange(72, 1, verify(AHONA, AHONA_PIN)).await;
    let (again, _) = atm.exchange(72, 1, verify(AHONA, AHONA_PIN)).await;
    let (r, _) = atm.exchange(72, 2, withdraw(10)).await;
    assert_eq!(r, reply(72, 2, Status::Approved, common::balances(4_990)));
    let (after_withdrawal, _) = atm.exchange(72, 2, verify(AHONA, AHONA_PIN)).await;
    for answer in [after_wrong, again, after_withdrawal] {
        assert_eq!(
            (answer.status, answer.body),
            (expected.status, expected.body.clone())
        );
    }
    // The withdrawal's id still replays the withdrawal: the Verify left no trace under it.
    let (r, _) = atm.exchange(72, 2, withdraw(10)).await;
    assert_eq!(r, reply(72, 2, Status::Approved, common::balances(4_990)));
    assert_eq!(pin_failures(&server, AHONA), 0);
    assert_eq!(server.committed_balance(AHONA), Some(4_990));
}

/// The operator's probe: the demo accounts were opened under the guessable ids 0:1 and 0:2, and a
/// create retried under such an id is answered from what the original did, the same bytes
/// whatever PIN it carries, so it tells nothing about the account's PIN (which stays as it was).
/// Ids of operator requests are the operator's own: the same id on a card is another request.
#[tokio::test]
async fn a_retried_create_tells_nothing_about_the_pin() {
    let server = TestServer::start();
    let mut operator = server.raw().await;
    let joty = |pin: &str| create(OPERATOR_TOKEN, JOTY, "Joty", pin, 10_000);
    let (r, right) = operator.exchange(0, 1, joty(JOTY_PIN)).await;
    assert_eq!(r, reply(0, 1, Status::Approved, common::balances(10_000)));
    for guess in ["0000", "1111", "4321", "9999"] {
        let (_, wrong) = operator.exchange(0, 1, joty(guess)).await;
        assert_eq!(wrong, right, "{guess}");
    }
    let (r, _) = operator.exchange(0, 9, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(0, 9, Status::Approved, Body::Empty));
    // Under the card, client 0's first sequence is unused: a withdrawal is new there.
    let (r, _) = operator.exchange(0, 1, withdraw(1)).await;
    assert_eq!(r, reply(0, 1, Status::Approved, common::balances(9_999)));
    assert_eq!(pin_failures(&server, JOTY), 0);
}

/// The id-theft attacks: with a victim's client id, an attacker using his own card takes the
/// victim's next sequence numbers and sends one request at sequence 2^62. The victim's next
/// withdrawal is still approved (no `request_id_conflict`), and the retry of one that happened
/// still gets its original reply (not `stale_request`).
#[tokio::test]
async fn a_victims_client_id_used_on_another_card_neither_conflicts_nor_goes_stale() {
    let server = TestServer::start();
    let victim = 73;
    let mut joty = logged_in(&server, victim, JOTY, JOTY_PIN).await;
    let (r, original) = joty.exchange(victim, 2, withdraw(100)).await;
    assert_eq!(
        r,
        reply(victim, 2, Status::Approved, common::balances(9_900))
    );

    let mut attacker = logged_in(&server, 74, AHONA, AHONA_PIN).await;
    for sequence in 3..=5 {
        let (r, _) = attacker.exchange(victim, sequence, deposit(1)).await;
        assert_eq!(r.status, Status::Approved);
    }
    let (r, _) = attacker.exchange(victim, 1 << 62, deposit(1)).await;
    assert_eq!(r.status, Status::Approved);

    let (r, _) = joty.exchange(victim, 3, withdraw(50)).await;
    assert_eq!(
        r,
        reply(victim, 3, Status::Approved, common::balances(9_850))
    );
    let (_, again) = joty.exchange(victim, 2, withdraw(100)).await;
    assert_eq!(again, original);
    // From a new connection too, once it has verified the card.
    let mut later = logged_in(&server, 75, JOTY, JOTY_PIN).await;
    let (_, again) = later.exchange(victim, 2, withdraw(100)).await;
    assert_eq!(again, original);
    assert_eq!(server.committed_balance(JOTY), Some(9_850));
    assert_eq!(server.committed_balance(AHONA), Some(5_004));
}

/// The table-filling attack: one card's holder sends changes under many new client ids. The
/// memory keeps at most `CLIENTS_PER_PRINCIPAL_MAX` clients for that card (the rest are `busy`
/// while the remembered ones are recent, and executed nowhere); clients of other cards are not
/// affected, and a correct Verify never needs a place, not even on the full card.
#[tokio::test]
async fn new_client_ids_on_one_card_cannot_fill_the_memory_or_lock_out_others() {
    let server = TestServer::start();
    let mut attacker = logged_in(&server, 76, AHONA, AHONA_PIN).await;
    let new_clients = CLIENTS_PER_PRINCIPAL_MAX as u64 + 128;
    let batch = 32;
    let mut approved = 0;
    for first in (0..new_clients).step_by(batch) {
        for client in first..first + batch as u64 {
            attacker.request(1_000 + client, 1, deposit(1)).await;
        }
        for _ in 0..batch {
            let (r, _) = attacker.receive_reply().await;
            match r.status {
                Status::Approved => approved += 1,
                Status::Busy => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let bank = server.running().bank();
    assert!(approved >= CLIENTS_PER_PRINCIPAL_MAX as u64);
    assert!(bank.clients_remembered(Principal::Card(AHONA)) <= CLIENTS_PER_PRINCIPAL_MAX);
    let committed = bank.storage().with_committed(|ledger| {
        ledger
            .clients
            .get(&Principal::Card(AHONA))
            .map_or(0, |clients| clients.windows.len())
    });
    assert!(committed <= CLIENTS_PER_PRINCIPAL_MAX);
    assert_eq!(server.committed_balance(AHONA), Some(5_000 + approved));

    // An honest client of another card is served.
    let mut honest = logged_in(&server, 9_001, JOTY, JOTY_PIN).await;
    let (r, _) = honest.exchange(9_001, 2, withdraw(1)).await;
    assert_eq!(
        r,
        reply(9_001, 2, Status::Approved, common::balances(9_999))
    );
    // A new client verifies the full card; only a change from it waits for a place.
    let mut owner = logged_in(&server, 9_002, AHONA, AHONA_PIN).await;
    let (r, _) = owner.exchange(9_002, 2, Operation::Balance).await;
    assert_eq!(r.status, Status::Approved);
}

/// Snapshots written by the first release (one window per client id, whatever the card) still
/// open: the memory is converted on load, and a retry made before the upgrade gets its original
/// reply after it.
#[tokio::test]
async fn a_snapshot_of_the_first_release_still_opens_and_replays() {
    let mut server = TestServer::start_with(|config| config.snapshot_records_interval = 1);
    let mut atm = logged_in(&server, 77, JOTY, JOTY_PIN).await;
    let (r, original) = atm.exchange(77, 2, withdraw(300)).await;
    assert_eq!(r, reply(77, 2, Status::Approved, common::balances(9_700)));
    let (r, _) = atm.exchange(77, 3, deposit(5)).await;
    assert_eq!(r.status, Status::Approved);
    drop(atm);
    let data_dir = server.data_dir.path().to_path_buf();
    // A snapshot is not started while the one before is still being written, so client 77's
    // records may not be in any snapshot yet: add records on another card until one covers them.
    let covered = server.running().bank().storage().stats().durable_lsn;
    let mut other = logged_in(&server, 79, AHONA, AHONA_PIN).await;
    for sequence in 2.. {
        // The first snapshot may still be on its way to the disk.
        let newest = snapshots(&data_dir).pop().map_or(0, |newest| {
            let name = newest.file_name().unwrap().to_string_lossy().into_owned();
            format::position_in_name(&name, "snapshot-", ".snap").unwrap()
        });
        if newest >= covered {
            break;
        }
        assert!(
            sequence < 10_000,
            "no snapshot came to cover position {covered}"
        );
        let (r, _) = other.exchange(79, sequence, deposit(1)).await;
        assert_eq!(r.status, Status::Approved);
    }
    drop(other);
    server.server.take().unwrap().stop();

    // Rewrite the newest snapshot as the first release wrote it: the version 1 frame around the
    // ledger with one window per client id.
    let newest = snapshots(&data_dir).pop().expect("a snapshot was written");
    let snapshot = format::decode_snapshot(&std::fs::read(&newest).unwrap()).unwrap();
    let old = first_release_ledger(&snapshot.ledger);
    assert!(old.clients.contains_key(&77));
    let bytes = format::encode_snapshot_legacy(&old).unwrap();
    std::fs::write(&newest, bytes).unwrap();

    server.restart(|config| config.snapshot_records_interval = 1);
    assert_eq!(server.committed_balance(JOTY), Some(9_705));
    let mut atm = logged_in(&server, 78, JOTY, JOTY_PIN).await;
    // The first release remembered a code and a balance: the retry gets the reply that release
    // sent, the balance alone, byte for byte.
    let (r, again) = atm.exchange(77, 2, withdraw(300)).await;
    let first_release_reply = reply(77, 2, Status::Approved, Body::Balance(9_700));
    assert_eq!(r, first_release_reply);
    assert_eq!(
        again,
        actor_bank::codec::encode_wire(&actor_bank::protocol::ServerMessage::Reply(
            first_release_reply
        ))
        .unwrap()
    );
    assert_ne!(again, original);
    let (r, _) = atm.exchange(77, 4, withdraw(5)).await;
    assert_eq!(r, reply(77, 4, Status::Approved, common::balances(9_700)));
    assert!(server
        .running()
        .bank()
        .storage()
        .with_committed(|ledger| ledger.is_conserved()));
}

/// The lockout bypass through a PIN change: on a verified connection, wrong old PINs sent under
/// one request id are each checked and counted (the third locks the card), and the right old PIN
/// under that id is not told apart by a conflict. A PIN change is never answered from memory.
#[tokio::test]
async fn wrong_old_pins_of_a_pin_change_under_one_id_are_each_counted() {
    let server = TestServer::start();
    let mut atm = logged_in(&server, 75, AHONA, AHONA_PIN).await;
    let change_to = |old_pin: &str, new_pin: &str| Operation::ChangePin {
        old_pin: old_pin.to_string(),
        new_pin: new_pin.to_string(),
    };
    let change = |old_pin: &str| change_to(old_pin, "2468");
    let (first, _) = atm.exchange(75, 2, change("0000")).await;
    assert_eq!(first, reply(75, 2, Status::IncorrectPin, Body::Empty));
    assert_eq!(pin_failures(&server, AHONA), 1);
    // The right old PIN under the id of the wrong one is approved, as under a fresh id.
    let (right, _) = atm.exchange(75, 2, change(AHONA_PIN)).await;
    assert_eq!(right, reply(75, 2, Status::Approved, Body::Empty));
    assert_eq!(pin_failures(&server, AHONA), 0);
    // Three different wrong old PINs (neither the old nor the new one), under the id of the
    // approved change, are each checked and counted: the third locks the card.
    let mut statuses = Vec::new();
    for guess in ["1111", "2222", "3333"] {
        let (r, _) = atm.exchange(75, 2, change_to(guess, "9753")).await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [
            Status::IncorrectPin,
            Status::IncorrectPin,
            Status::CardLocked
        ]
    );
    assert_eq!(server.committed_balance(AHONA), Some(5_000));
}
