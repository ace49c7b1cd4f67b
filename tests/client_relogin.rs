//! The client library treats `not_logged_in` on a connection it had verified as a lost login: it
//! verifies again and re-sends the same request id, so the withdrawal completes exactly once.
//!
//! A proxy between the client and the server forces the case deterministically: in front of the
//! first `Withdraw` it slips a `Verify` of the same card with a wrong PIN onto the connection (as a
//! duplicated or stray Verify would), which logs the connection out before the withdrawal arrives,
//! and it hides that Verify's reply from the client.

mod common;

use actor_bank::client::{reply_balance, Client};
use actor_bank::codec::{decode_wire, encode_frame};
use actor_bank::protocol::{ClientMessage, Operation, Request, RequestId, ServerMessage, Status};
use common::{TestServer, JOTY, JOTY_PIN};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The id of the Verify the proxy slips in.
const STRAY: RequestId = RequestId {
    client: 4_242,
    sequence: 1,
};

/// Reads one frame (length prefix and body); None at the end of the stream.
async fn read_frame(from: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut length = [0u8; 4];
    from.read_exact(&mut length).await.ok()?;
    let mut frame = length.to_vec();
    frame.resize(4 + u32::from_be_bytes(length) as usize, 0);
    from.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// Copies frames from `from` to `to`, passing each through `edit` (which returns what to send).
async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut edit: impl FnMut(Vec<u8>) -> Vec<u8>,
) {
    while let Some(frame) = read_frame(&mut from).await {
        if to.write_all(&edit(frame)).await.is_err() {
            return;
        }
    }
}

/// Proxies connections to `server`; counts the withdrawals it saw (it slips the stray Verify in front of the first).
async fn start_proxy(server: String, withdrawals_seen: Arc<AtomicU64>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = TcpStream::connect(&server).await.unwrap();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = upstream.into_split();
            let withdrawals_seen = withdrawals_seen.clone();
            tokio::spawn(pump(client_read, server_write, move |frame| {
                let is_withdraw = matches!(
                    decode_wire::<ClientMessage>(&frame[4..]),
                    Ok(ClientMessage::Request(Request {
                        operation: Operation::Withdraw { .. },
                        ..
                    }))
                );
                if !is_withdraw || withdrawals_seen.fetch_add(1, Ordering::Relaxed) > 0 {
                    return frame;
                }
                let mut both = encode_frame(&ClientMessage::Request(Request {
                    id: STRAY,
                    operation: Operation::Verify {
                        card: JOTY,
                        pin: "0000".into(),
                    },
                }))
                .unwrap();
                both.extend_from_slice(&frame);
                both
            }));
            tokio::spawn(pump(server_read, client_write, |frame| {
                match decode_wire::<ServerMessage>(&frame[4..]) {
                    Ok(ServerMessage::Reply(reply)) if reply.id == STRAY => Vec::new(),
                    _ => frame,
                }
            }));
        }
    });
    address
}

#[tokio::test]
async fn not_logged_in_on_a_verified_connection_verifies_again_and_retries_the_same_id() {
    let server = TestServer::start();
    let withdrawals_seen = Arc::new(AtomicU64::new(0));
    let proxy = start_proxy(server.address(), withdrawals_seen.clone()).await;
    let mut config = common::client_config_with_id(&proxy, 77);
    config.relogin_client_id = 78;
    let mut client = Client::connect(config).await.unwrap();
    let r = client.verify(JOTY, JOTY_PIN).await.unwrap();
    assert_eq!(r.status, Status::Approved);
    let id = client.next_id();
    let r = client
        .call_with_id(id, Operation::Withdraw { amount: 300 })
        .await
        .unwrap();
    assert_eq!((r.id, r.status), (id, Status::Approved), "{r:?}");
    assert_eq!(reply_balance(&r), Some(9_700));
    assert_eq!(
        withdrawals_seen.load(Ordering::Relaxed),
        2,
        "the withdrawal and its one retry"
    );
    // One retry of the same id on the same connection, after one re-verification.
    assert_eq!(client.stats().retries, 1);
    assert_eq!(client.stats().connections, 1);
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    // The right PIN of the re-login cleared the stray wrong attempt.
    let account = server
        .running()
        .bank()
        .storage()
        .committed_account(JOTY)
        .unwrap();
    assert_eq!(account.pin_failures, 0);
}
