mod common;
use actor_bank::protocol::*;
#[tokio::test]
async fn scratch() {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let server = common::TestServer::start_with(|c| c.limits.frame_bytes_max = 1000);
    let mut atm = server.raw().await;
    atm.request(25, 1, Operation::Lowercase { text: "İ".repeat(450) }).await;
    eprintln!("{:?}", atm.receive_body().await.map(|b| b.len()));
}
