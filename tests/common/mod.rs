//! Shared helpers for the integration tests: start a real server on 127.0.0.1:0 with a temporary
//! data directory, and speak the protocol with raw frames.
#![allow(dead_code)]

use actor_bank::client::{Client, ClientConfig};
use actor_bank::codec::encode_frame;
use actor_bank::pin::PinHashCost;
use actor_bank::protocol::{ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, PROTOCOL_VERSION};
use actor_bank::server::{RunningServer, ServerConfig};
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The operator token every test server is started with.
pub const OPERATOR_TOKEN: &str = "test-operator-token";

/// A server configuration for tests: port 0, the test token, cheap PIN hashes, the demo accounts.
pub fn test_config(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.operator_token = Some(OPERATOR_TOKEN.into());
    config.pin_hash_cost = PinHashCost::MINIMUM;
    config.demo = true;
    config
}

/// A running test server and the directory it keeps its data in (deleted on drop).
pub struct TestServer {
    pub server: Option<RunningServer>,
    pub data_dir: TempDir,
}

impl TestServer {
    /// Starts a server with [`test_config`], adjusted by `adjust`.
    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(data_dir.path());
        adjust(&mut config);
        let server = RunningServer::start(config).unwrap();
        TestServer {
            server: Some(server),
            data_dir,
        }
    }

    /// Starts a server with [`test_config`].
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// The server's address as `host:port`.
    pub fn address(&self) -> String {
        self.server.as_ref().unwrap().local_addr.to_string()
    }

    /// The running server.
    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    /// Stops the server (journal flushed) and starts a new one on the same data directory.
    pub fn restart(&mut self, adjust: impl FnOnce(&mut ServerConfig)) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
        let mut config = test_config(self.data_dir.path());
        adjust(&mut config);
        self.server = Some(RunningServer::start(config).unwrap());
    }

    /// A client configuration for this server with short timeouts.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.address());
        config.attempt_timeout = Duration::from_secs(2);
        config.outcome_deadline = Duration::from_secs(20);
        config.backoff_initial = Duration::from_millis(5);
        config.backoff_max = Duration::from_millis(100);
        config
    }

    /// A connected client.
    pub async fn client(&self) -> Client {
        Client::connect(self.client_config()).await.unwrap()
    }

    /// A raw connection that has completed the handshake.
    pub async fn raw(&self) -> RawConnection {
        let mut connection = RawConnection::connect(&self.address()).await;
        connection
            .send(&ClientMessage::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
            }))
            .await;
        match connection.receive().await {
            Some(ServerMessage::Welcome(_)) => connection,
            other => panic!("expected Welcome, got {other:?}"),
        }
    }
}

/// A connection that sends and receives whole frames, or any bytes at all.
pub struct RawConnection {
    pub stream: TcpStream,
}

impl RawConnection {
    pub async fn connect(address: &str) -> RawConnection {
        RawConnection {
            stream: TcpStream::connect(address).await.unwrap(),
        }
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one message as a frame.
    pub async fn send(&mut self, message: &ClientMessage) {
        let frame = encode_frame(message).unwrap();
        self.send_bytes(&frame).await;
    }

    /// Sends one request.
    pub async fn request(&mut self, client: u64, sequence: u64, operation: Operation) {
        self.send(&ClientMessage::Request(Request {
            id: RequestId { client, sequence },
            operation,
        }))
        .await;
    }

    /// Reads one frame's body; None when the connection closed (or nothing came within 10 s).
    pub async fn receive_body(&mut self) -> Option<Vec<u8>> {
        let read = async {
            let mut length = [0u8; 4];
            self.stream.read_exact(&mut length).await.ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(length) as usize];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(body)
        };
        tokio::time::timeout(Duration::from_secs(10), read).await.ok().flatten()
    }

    /// Reads one message.
    pub async fn receive(&mut self) -> Option<ServerMessage> {
        let body = self.receive_body().await?;
        Some(actor_bank::codec::decode_wire(&body).unwrap())
    }

    /// True when the server closes the connection (after any Goodbye) within 10 s.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut buffer = [0u8; 1024];
        let wait = async {
            loop {
                match self.stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap_or(false)
    }
}
