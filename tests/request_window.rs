//! The request window's exact edge (docs/PROTOCOL.md section 8): with `highest` the highest
//! sequence completed, `highest − sequence = 31` is still remembered and `= 32` is stale, whatever
//! order the requests completed in.

mod common;

use actor_bank::protocol::{Body, Status};
use common::{reply, verify, withdraw, RawConnection, TestServer, JOTY, JOTY_PIN};

/// The client id of the connection's verification (kept apart from the ids under test).
const LOGIN: u64 = 900;

/// A verified raw connection.
async fn verified(server: &TestServer) -> RawConnection {
    let mut atm = server.raw().await;
    let (r, _) = atm.exchange(LOGIN, 1, verify(JOTY, JOTY_PIN)).await;
    assert_eq!(r, reply(LOGIN, 1, Status::Approved, Body::Empty));
    atm
}

/// Withdraws 1 under `client:sequence` for each sequence in turn; returns each reply's bytes.
async fn withdraw_each(atm: &mut RawConnection, client: u64, sequences: &[u64]) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    for &sequence in sequences {
        let (r, body) = atm.exchange(client, sequence, withdraw(1)).await;
        assert_eq!(r.status, Status::Approved, "{client}:{sequence}: {r:?}");
        bodies.push(body);
    }
    bodies
}

/// The order: 1, 2, 34, 3, 35. Then 3 is 32 below the highest: stale, not a replay, even
/// though it completed after 34.
#[tokio::test]
async fn an_id_exactly_a_window_below_the_highest_is_stale_whatever_the_order() {
    let server = TestServer::start();
    let mut atm = verified(&server).await;
    let c = 31;
    withdraw_each(&mut atm, c, &[1, 2, 34, 3, 35]).await;
    let (r, _) = atm.exchange(c, 3, withdraw(1)).await;
    assert_eq!(r, reply(c, 3, Status::StaleRequest, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000 - 5));
}

/// One below the edge both ways: with 1, 2, 34, 3, 4, 35 completed, 4 (31 below) is replayed with
/// the original bytes, 3 (32 below) is stale, 5 (30 below, never sent) is new and runs once.
#[tokio::test]
async fn thirty_one_below_the_highest_is_replayed_and_thirty_two_is_stale() {
    let server = TestServer::start();
    let mut atm = verified(&server).await;
    let c = 32;
    let bodies = withdraw_each(&mut atm, c, &[1, 2, 34, 3, 4, 35]).await;
    let (r, replayed) = atm.exchange(c, 4, withdraw(1)).await;
    assert_eq!(r.status, Status::Approved);
    assert_eq!(replayed, bodies[4], "the replay of 4 is the original reply");
    let (r, _) = atm.exchange(c, 3, withdraw(1)).await;
    assert_eq!(r, reply(c, 3, Status::StaleRequest, Body::Empty));
    // Stale even with other parameters: nothing about it is remembered.
    let (r, _) = atm.exchange(c, 3, withdraw(2)).await;
    assert_eq!(r, reply(c, 3, Status::StaleRequest, Body::Empty));
    let (r, _) = atm.exchange(c, 5, withdraw(1)).await;
    assert_eq!(
        r,
        reply(c, 5, Status::Approved, common::balances(10_000 - 7))
    );
    assert_eq!(server.committed_balance(JOTY), Some(10_000 - 7));
}

/// The rule survives a restart: the windows rebuilt from the journal give the same answers.
#[tokio::test]
async fn the_edge_is_the_same_after_a_restart() {
    let mut server = TestServer::start();
    let c = 33;
    let bodies = {
        let mut atm = verified(&server).await;
        withdraw_each(&mut atm, c, &[1, 2, 34, 3, 4, 35]).await
    };
    server.restart(|_| {});
    let mut atm = verified(&server).await;
    let (_, replayed) = atm.exchange(c, 4, withdraw(1)).await;
    assert_eq!(replayed, bodies[4]);
    let (r, _) = atm.exchange(c, 3, withdraw(1)).await;
    assert_eq!(r, reply(c, 3, Status::StaleRequest, Body::Empty));
    assert_eq!(server.committed_balance(JOTY), Some(10_000 - 6));
}
