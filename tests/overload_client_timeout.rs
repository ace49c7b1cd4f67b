//! The client library's attempt timeout follows the server: against a server slower than the
//! configured least timeout, calls still complete (the timeout grows after each failed attempt,
//! and then follows the measured round trip) instead of timing out on every attempt forever.
mod common;
use common::{TestServer, JOTY, JOTY_PIN};

use actor_bank::client::{reply_balance, Client};
use actor_bank::protocol::Status;
use std::time::Duration;

/// How long the server holds every account reply (the fault plan's delay).
const SERVER_DELAY: Duration = Duration::from_millis(300);

/// Every reply takes at least 300 ms, three times the client's least attempt timeout of 100 ms.
/// A fixed 100 ms timeout would never hear a reply; the adaptive one completes every call, and
/// the round trip it measured is at least the server's delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_complete_against_a_server_slower_than_the_least_timeout() {
    let server = TestServer::start_with(|config| {
        config.faults = Some(
            format!("delay-ms={}", SERVER_DELAY.as_millis())
                .parse()
                .unwrap(),
        );
    });
    let mut config = server.client_config();
    config.attempt_timeout = Duration::from_millis(100);
    let mut client = Client::connect(config).await.unwrap();
    let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    for step in 1..=3u64 {
        let r = client.withdraw(100).await.unwrap();
        assert_eq!(r.status, Status::Approved, "withdrawal {step}");
        assert_eq!(reply_balance(&r), Some(10_000 - 100 * step));
    }
    let measured = client
        .smoothed_round_trip()
        .expect("a reply to a request sent once was measured");
    assert!(measured >= SERVER_DELAY, "measured {measured:?}");
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
}
