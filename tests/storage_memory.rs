//! The server runs unchanged on the in-memory log: the storage seam is the only thing between the
//! bank and its disk. Over TCP: an account opened, a withdrawal approved, its retry replayed byte
//! for byte without moving money twice, a refusal remembered, and the committed state conserved.
mod common;
use common::{create, reply, verify, withdraw, OPERATOR_TOKEN};

/// A card of its own (the test configuration opens the demo cards too).
const CARD: u64 = 555_000_111;
const PIN: &str = "2580";

use actor_bank::ledger::Ledger;
use actor_bank::protocol::Status;
use actor_bank::server::RunningServer;
use actor_bank::storage::Storage;

#[tokio::test]
async fn the_server_on_the_in_memory_log_is_exactly_once() {
    let data_dir = tempfile::tempdir().unwrap();
    let config = common::test_config(data_dir.path());
    let server = RunningServer::start_with_storage(config, Storage::in_memory(Ledger::default()))
        .expect("the server starts on the in-memory log");
    let address = server.local_addr.to_string();
    let before = server.bank().storage().stats().durable_lsn;
    let mut connection = common::RawConnection::connect(&address)
        .await
        .greeted()
        .await;
    let open = create(OPERATOR_TOKEN, CARD, "Joty", PIN, 1_000);
    let (opened, _) = connection.exchange(7, 1, open).await;
    assert_eq!(
        opened,
        reply(7, 1, Status::Approved, common::balances(1_000))
    );
    let (verified, _) = connection.exchange(7, 2, verify(CARD, PIN)).await;
    assert_eq!(verified.status, Status::Approved);

    let (first, first_bytes) = connection.exchange(7, 3, withdraw(300)).await;
    assert_eq!(first, reply(7, 3, Status::Approved, common::balances(700)));
    let (again, again_bytes) = connection.exchange(7, 3, withdraw(300)).await;
    assert_eq!(
        again_bytes, first_bytes,
        "the retry gets the original reply"
    );
    assert_eq!(again, first);
    let (refused, _) = connection.exchange(7, 4, withdraw(5_000)).await;
    assert_eq!(
        refused,
        reply(7, 4, Status::InsufficientFunds, common::balances(700))
    );
    let (refused_again, _) = connection.exchange(7, 4, withdraw(5_000)).await;
    assert_eq!(refused_again, refused, "a refusal is remembered too");

    let storage = server.bank().storage();
    assert_eq!(server.bank().balance(CARD), Some(700));
    assert!(storage.with_committed(Ledger::is_conserved));
    // The open, the withdrawal and the refusal after what the server opened itself: a retry
    // journals nothing.
    assert_eq!(storage.stats().durable_lsn, before + 3);
    server.stop();
}
