//! The shared test helpers start a server and a client can use it.
mod common;

#[tokio::test]
async fn a_client_reads_a_demo_balance() {
    let server = common::TestServer::start();
    let mut client = server.client().await;
    let reply = client.verify(123_456_789, "1234").await.unwrap();
    assert_eq!(reply.status, actor_bank::protocol::Status::Approved);
    let reply = client.balance().await.unwrap();
    assert_eq!(actor_bank::client::reply_balance(&reply), Some(10_000));
}
