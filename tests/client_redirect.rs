//! A client follows `moved`: told by a node that another one serves the account, it connects to
//! the named node, verifies its card there again when the request needs it, and repeats the
//! request with the same id; a loop of redirects between nodes ends after `REDIRECTS_MAX` with an
//! error that says so.
//!
//! The nodes that redirect are fakes in the test: a listener on port 0 speaking the real frames
//! through the crate's codec, answering `moved` (and, for one test, approving a Verify itself).
mod common;

use actor_bank::client::{Client, ClientError, REDIRECTS_MAX};
use actor_bank::codec::{FrameCodec, FRAME_BYTES_LIMIT};
use actor_bank::protocol::{
    Body, ClientMessage, Operation, Reply, RequestId, ServerMessage, Status, Welcome,
    PROTOCOL_VERSION,
};
use common::{verify, withdraw, TestServer, JOTY, JOTY_PIN};
use futures::{SinkExt, StreamExt};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// What a fake node was asked: every request's id and operation name, in arrival order.
type Seen = Arc<Mutex<Vec<(RequestId, &'static str)>>>;

/// A node that answers every request `moved` to `target` (a Verify `approved`, when
/// `approves_verify`), and records what it was asked. An empty `target` makes its `moved`
/// replies name no node.
struct FakeNode {
    address: String,
    seen: Seen,
}

impl FakeNode {
    /// Binds port 0; the node answers once [`FakeNode::serve`] is called.
    async fn bind() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        (listener, address)
    }

    /// Serves `listener`, redirecting to `target`.
    fn serve(listener: TcpListener, target: String, approves_verify: bool) -> FakeNode {
        let address = listener.local_addr().unwrap().to_string();
        let seen = Seen::default();
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = recorder.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let mut framed = Framed::new(
                        stream,
                        FrameCodec::<ClientMessage, ServerMessage>::new(FRAME_BYTES_LIMIT),
                    );
                    while let Some(Ok(message)) = framed.next().await {
                        let answer = match message {
                            ClientMessage::Hello(_) => ServerMessage::Welcome(Welcome {
                                protocol_version: PROTOCOL_VERSION,
                                requests_in_flight_max: 32,
                                request_window: 32,
                                frame_bytes_max: 64 * 1024,
                                client_retention_secs: 86_400,
                            }),
                            ClientMessage::Request(request) => {
                                seen.lock()
                                    .unwrap()
                                    .push((request.id, request.operation.name()));
                                let approved = approves_verify
                                    && matches!(request.operation, Operation::Verify { .. });
                                ServerMessage::Reply(if approved {
                                    Reply {
                                        id: request.id,
                                        status: Status::Approved,
                                        body: Body::Empty,
                                    }
                                } else {
                                    Reply {
                                        id: request.id,
                                        status: Status::Moved,
                                        body: Body::Moved {
                                            address: target.clone(),
                                        },
                                    }
                                })
                            }
                        };
                        if framed.send(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeNode { address, seen }
    }

    /// A node on a fresh port redirecting to `target`.
    async fn start(target: String, approves_verify: bool) -> FakeNode {
        let (listener, _) = FakeNode::bind().await;
        FakeNode::serve(listener, target, approves_verify)
    }

    fn seen(&self) -> Vec<(RequestId, &'static str)> {
        self.seen.lock().unwrap().clone()
    }
}

fn joty_balance(server: &TestServer) -> Option<u64> {
    server
        .running()
        .bank()
        .storage()
        .read_committed_account(JOTY, |account| account.balance)
}

#[tokio::test]
async fn a_moved_verify_is_repeated_at_the_named_node() {
    let server = TestServer::start();
    let node = FakeNode::start(server.address(), false).await;
    let mut client = Client::new(common::client_config_with_id(&node.address, 61));
    let id = RequestId {
        client: 61,
        sequence: 1,
    };
    let verified = client
        .call_with_id(id, verify(JOTY, JOTY_PIN))
        .await
        .unwrap();
    assert_eq!(verified.status, Status::Approved, "{verified:?}");
    assert_eq!(verified.id, id);
    assert_eq!(node.seen(), vec![(id, "verify")]);
    assert_eq!(client.stats().redirects, 1);
    // The client stays at the node it was sent to.
    let balance = client.call(Operation::Balance).await.unwrap();
    assert_eq!(balance.status, Status::Approved, "{balance:?}");
    assert_eq!(node.seen().len(), 1);
}

#[tokio::test]
async fn a_moved_withdrawal_is_verified_again_and_repeated_with_its_id_at_the_real_server() {
    let server = TestServer::start();
    // The fake node takes the login itself, then sends the withdrawal to the real server, where
    // the connection has no verified card yet.
    let node = FakeNode::start(server.address(), true).await;
    let mut client = Client::connect(common::client_config_with_id(&node.address, 62))
        .await
        .unwrap();
    let verified = client.call(verify(JOTY, JOTY_PIN)).await.unwrap();
    assert_eq!(verified.status, Status::Approved);
    let id = RequestId {
        client: 62,
        sequence: 9,
    };
    let first = client.call_with_id(id, withdraw(100)).await.unwrap();
    assert_eq!(first.status, Status::Approved, "{first:?}");
    assert_eq!(first.id, id);
    assert_eq!(joty_balance(&server), Some(9_900));
    assert_eq!(client.stats().redirects, 1);
    let seen: Vec<&str> = node.seen().iter().map(|(_, name)| *name).collect();
    assert_eq!(seen, vec!["verify", "withdraw"]);
    assert_eq!(node.seen()[1].0, id);
    // The same id again: the real server's remembered reply, nothing taken twice.
    assert_eq!(client.call_with_id(id, withdraw(100)).await.unwrap(), first);
    assert_eq!(joty_balance(&server), Some(9_900));
}

#[tokio::test]
async fn a_redirect_loop_ends_after_the_most_redirects_with_an_error_that_says_so() {
    let (first_listener, first_address) = FakeNode::bind().await;
    let (second_listener, second_address) = FakeNode::bind().await;
    let first = FakeNode::serve(first_listener, second_address.clone(), false);
    let second = FakeNode::serve(second_listener, first_address.clone(), false);
    let mut client = Client::new(common::client_config_with_id(&first_address, 63));
    let id = RequestId {
        client: 63,
        sequence: 1,
    };
    let error = client
        .call_with_id(id, Operation::IsPrime { number: 7 })
        .await
        .unwrap_err();
    let ClientError::TooManyRedirects {
        id: failed,
        reply,
        redirects,
    } = &error
    else {
        panic!("expected too many redirects, got {error}");
    };
    assert_eq!(*failed, id);
    assert_eq!(*redirects, REDIRECTS_MAX);
    assert_eq!(reply.status, Status::Moved);
    assert_eq!(reply.id, id);
    assert_eq!(client.stats().redirects, u64::from(REDIRECTS_MAX));
    let text = error.to_string();
    assert!(
        text.contains(&format!("redirected {REDIRECTS_MAX} times in a row")),
        "{text}"
    );
    // Every attempt carried the one id, alternating between the nodes.
    let sent = first.seen().len() + second.seen().len();
    assert_eq!(sent, REDIRECTS_MAX as usize + 1);
    assert!(first
        .seen()
        .iter()
        .chain(second.seen().iter())
        .all(|(seen, _)| *seen == id));
    assert_eq!(first.seen().len(), (REDIRECTS_MAX as usize) / 2 + 1);
}

/// An address nothing listens on: a port the system gave and that was let go at once.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn a_named_node_that_cannot_be_reached_is_given_up_for_the_next_seed() {
    let server = TestServer::start();
    let node = FakeNode::start(dead_address(), false).await;
    let seeds = format!("{},{}", node.address, server.address());
    let mut client = Client::new(common::client_config_with_id(&seeds, 64));
    let id = RequestId {
        client: 64,
        sequence: 1,
    };
    let verified = client
        .call_with_id(id, verify(JOTY, JOTY_PIN))
        .await
        .unwrap();
    assert_eq!(verified.status, Status::Approved, "{verified:?}");
    assert_eq!(node.seen(), vec![(id, "verify")]);
    assert_eq!(client.stats().redirects, 1);
}

#[tokio::test]
async fn a_moved_reply_naming_no_node_is_retried_like_busy_until_the_deadline() {
    let node = FakeNode::start(String::new(), false).await;
    let mut config = common::client_config_with_id(&node.address, 65);
    config.outcome_deadline = Duration::from_secs(2);
    let mut client = Client::new(config);
    let error = client
        .call(Operation::IsPrime { number: 7 })
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::OutcomeUnknown { .. }),
        "{error}"
    );
    assert_eq!(client.stats().redirects, 0);
    assert!(!node.seen().is_empty());
}
