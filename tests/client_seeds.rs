//! A client given several server addresses fails over between them: with the first seed
//! unreachable it serves from the next, with one request id throughout; `atm --server A,B` does
//! the same.
mod common;

use actor_bank::protocol::{RequestId, Status};
use common::{verify, withdraw, TestServer, JOTY, JOTY_PIN};

/// An address nothing listens on: a port the system gave and that was let go at once.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_client_fails_over_to_the_next_seed() {
    let server = TestServer::start();
    let seeds = format!("{}, {}", dead_address(), server.address());
    let mut client = actor_bank::client::Client::connect(common::client_config_with_id(&seeds, 51))
        .await
        .unwrap();
    let verified = client.call(verify(JOTY, JOTY_PIN)).await.unwrap();
    assert_eq!(verified.status, Status::Approved);
    let id = RequestId {
        client: 51,
        sequence: 7,
    };
    let first = client.call_with_id(id, withdraw(100)).await.unwrap();
    assert_eq!(first.status, Status::Approved);
    assert_eq!(client.call_with_id(id, withdraw(100)).await.unwrap(), first);
    let balance = server
        .running()
        .bank()
        .storage()
        .read_committed_account(JOTY, |account| account.balance);
    assert_eq!(balance, Some(9_900));

    let (output, code) = common::run_atm(
        &format!("{},{}", dead_address(), server.address()),
        &["balance", "--card", "123456789", "--pin", JOTY_PIN],
    )
    .await;
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("\"balance\":9900"), "{output}");
}
