//! A live server fed hostile byte streams.
//!
//! Used by the `session_requests` fuzz target and by the fuzz smoke test of the main package,
//! which includes this file by path. One real server runs in the process (port 0, a temporary
//! data directory, cheap PIN hashes, the demo accounts); each input becomes the bytes of one fresh
//! TCP connection. The client reads while it writes, then closes its sending side and reads until
//! the server closes, so every input ends without waiting for a server deadline.
//!
//! Input format (so that seeds are readable and mutations stay meaningful):
//! - byte 0, flags: bit 0 sends a well-formed Hello first; bit 1 then verifies a demo card with
//!   its right PIN, so account operations reach the account actors; bit 2 selects *framed* mode;
//!   bits 3 to 7 give the size of each write (0: everything in one write).
//! - the rest, in raw mode: bytes sent as they are (length prefixes included, or not).
//! - the rest, in framed mode: pieces `[n][n bytes]`, each sent as a frame with a correct length
//!   prefix; a last piece shorter than `n` is sent with the declared length `n` (a truncated
//!   frame).
//!
//! After each input the checks are:
//! - everything the server sent is whole frames that decode as `ServerMessage` (a cut-off tail is
//!   allowed only when the connection was reset, which loses bytes in flight);
//! - at most one Welcome, before any Reply; nothing after a Goodbye;
//! - every Reply answers a request that was sent on that connection, no more often than it was sent;
//! - the server closes the connection once the client has finished sending;
//! - a connection opened before (and kept for the whole run) is still answered.

use crate::frames;
use actor_bank::codec::{self, FRAME_BYTES_LIMIT, FRAME_BYTES_MAX_DEFAULT, FRAME_HEADER_BYTES};
use actor_bank::pin::PinHashCost;
use actor_bank::protocol::{
    Body, ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, Status,
    PROTOCOL_VERSION,
};
use actor_bank::server::{RunningServer, ServerConfig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The demo card the harness verifies, and its PIN.
pub const CARD: u64 = 123_456_789;
/// The demo card's PIN.
pub const PIN: &str = "1234";
/// The client id of the Verify the harness prepends (bit 1).
pub const HARNESS_CLIENT: u64 = 0xF022_0001;
/// The client id of the health checks.
pub const HEALTH_CLIENT: u64 = 0xF022_0002;
/// The operator token of the harness's server.
pub const OPERATOR_TOKEN: &str = "fuzz-operator-token-6e2a9c4f1b7d3058";

/// How long one input may keep its connection before the server is declared stuck. Far above
/// anything a healthy server needs; only a hang reaches it.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(30);

static HARNESS_SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// What one input sends.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// The bytes, in order.
    pub bytes: Vec<u8>,
    /// Bytes per write; 0 means one write.
    pub write_bytes: usize,
}

fn frame(message: &ClientMessage) -> Vec<u8> {
    codec::encode_frame(message).expect("a harness message encodes")
}

/// Turns a fuzz input into the bytes one connection sends (see the module documentation).
pub fn script(data: &[u8]) -> Script {
    let Some((&flags, rest)) = data.split_first() else {
        return Script::default();
    };
    let mut bytes = Vec::new();
    if flags & 1 != 0 {
        bytes.extend(frame(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        })));
    }
    if flags & 2 != 0 {
        bytes.extend(frame(&ClientMessage::Request(Request {
            id: RequestId {
                client: HARNESS_CLIENT,
                sequence: HARNESS_SEQUENCE.fetch_add(1, Ordering::Relaxed),
            },
            operation: Operation::Verify {
                card: CARD,
                pin: PIN.into(),
            },
        })));
    }
    if flags & 4 != 0 {
        let mut pieces = rest;
        while let Some((&declared, after)) = pieces.split_first() {
            let body = &after[..after.len().min(declared as usize)];
            bytes.extend_from_slice(&u32::from(declared).to_be_bytes());
            bytes.extend_from_slice(body);
            pieces = &after[body.len()..];
        }
    } else {
        bytes.extend_from_slice(rest);
    }
    Script {
        bytes,
        write_bytes: (flags >> 3) as usize,
    }
}

/// What came back on one connection.
#[derive(Debug)]
pub struct Transcript {
    /// Every byte the server sent.
    pub bytes: Vec<u8>,
    /// True when the connection ended with a reset rather than an orderly close.
    pub reset: bool,
}

/// Sends `script` on a fresh connection to `address` while reading, closes the sending side, and
/// reads until the server closes. `Err` when the server does not close within a generous limit.
pub async fn exchange(address: SocketAddr, script: &Script) -> Result<Transcript, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("cannot connect: {error}"))?;
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let sending = async {
        let size = if script.write_bytes == 0 {
            script.bytes.len().max(1)
        } else {
            script.write_bytes
        };
        for chunk in script.bytes.chunks(size) {
            // The server may close first (a bad frame): then the rest is not needed.
            if write.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    let receiving = async {
        let mut bytes = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match read.read(&mut buffer).await {
                Ok(0) => return (bytes, false),
                Ok(count) => bytes.extend_from_slice(&buffer[..count]),
                Err(_) => return (bytes, true),
            }
        }
    };
    match tokio::time::timeout(EXCHANGE_LIMIT, async { tokio::join!(sending, receiving).1 }).await {
        Ok((bytes, reset)) => Ok(Transcript { bytes, reset }),
        Err(_) => Err(format!(
            "the server kept the connection open {EXCHANGE_LIMIT:?} after the client finished"
        )),
    }
}

/// Checks what the server sent against what the client sent (see the module documentation).
pub fn check_transcript(script: &Script, transcript: &Transcript) -> Result<(), String> {
    // What the server can have read: the requests in the stream, up to its first bad frame.
    let (sent, _) = frames::reference::<ClientMessage>(&script.bytes, FRAME_BYTES_MAX_DEFAULT);
    let mut unanswered: HashMap<RequestId, usize> = HashMap::new();
    for message in &sent {
        if let ClientMessage::Request(request) = message {
            *unanswered.entry(request.id).or_default() += 1;
        }
    }
    let mut rest = &transcript.bytes[..];
    let mut welcomed = false;
    let mut replied = false;
    let mut said_goodbye = false;
    while !rest.is_empty() {
        if rest.len() < FRAME_HEADER_BYTES {
            return cut_off(transcript, "a partial length prefix");
        }
        let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if length > FRAME_BYTES_LIMIT {
            return Err(format!("the server declared a {length}-byte frame"));
        }
        if rest.len() < FRAME_HEADER_BYTES + length {
            return cut_off(transcript, "a partial frame");
        }
        let body = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length];
        rest = &rest[FRAME_HEADER_BYTES + length..];
        let message: ServerMessage = codec::decode_wire(body)
            .map_err(|error| format!("the server sent an undecodable frame: {error}"))?;
        if said_goodbye {
            return Err(format!("{message:?} after the Goodbye"));
        }
        match message {
            ServerMessage::Welcome(_) if welcomed => return Err("a second Welcome".into()),
            ServerMessage::Welcome(_) if replied => return Err("a Welcome after a Reply".into()),
            ServerMessage::Welcome(_) => welcomed = true,
            ServerMessage::Reply(reply) => {
                if !welcomed {
                    return Err(format!("{reply:?} before the Welcome"));
                }
                replied = true;
                match unanswered.get_mut(&reply.id) {
                    Some(count) if *count > 0 => *count -= 1,
                    _ => return Err(format!("{reply:?} answers no request that was sent")),
                }
            }
            ServerMessage::Goodbye(_) => said_goodbye = true,
        }
    }
    Ok(())
}

fn cut_off(transcript: &Transcript, what: &str) -> Result<(), String> {
    if transcript.reset {
        Ok(())
    } else {
        Err(format!(
            "{what} at the end of an orderly close ({} bytes received)",
            transcript.bytes.len()
        ))
    }
}

/// A connection kept open for the whole run, asked a utility after every input.
pub struct Health {
    stream: TcpStream,
    sequence: u64,
}

impl Health {
    /// Opens the connection and does the handshake.
    pub async fn connect(address: SocketAddr) -> Result<Health, String> {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|error| format!("cannot connect: {error}"))?;
        let _ = stream.set_nodelay(true);
        let hello = frame(&ClientMessage::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
        }));
        stream
            .write_all(&hello)
            .await
            .map_err(|error| error.to_string())?;
        match receive(&mut stream).await? {
            ServerMessage::Welcome(_) => Ok(Health {
                stream,
                sequence: 0,
            }),
            other => Err(format!("expected a Welcome, got {other:?}")),
        }
    }

    /// Asks whether 7919 is prime; the answer must be an approved `true`.
    pub async fn check(&mut self) -> Result<(), String> {
        self.sequence += 1;
        let id = RequestId {
            client: HEALTH_CLIENT,
            sequence: self.sequence,
        };
        let request = frame(&ClientMessage::Request(Request {
            id,
            operation: Operation::IsPrime { number: 7919 },
        }));
        self.stream
            .write_all(&request)
            .await
            .map_err(|error| format!("the health connection failed: {error}"))?;
        match receive(&mut self.stream).await? {
            ServerMessage::Reply(reply)
                if reply.id == id
                    && reply.status == Status::Approved
                    && reply.body == Body::Answer(true) =>
            {
                Ok(())
            }
            other => Err(format!("the health check got {other:?}")),
        }
    }
}

async fn receive(stream: &mut TcpStream) -> Result<ServerMessage, String> {
    let read = async {
        let mut header = [0u8; FRAME_HEADER_BYTES];
        stream.read_exact(&mut header).await?;
        let mut body = vec![0u8; (u32::from_be_bytes(header) as usize).min(FRAME_BYTES_LIMIT)];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = tokio::time::timeout(EXCHANGE_LIMIT, read)
        .await
        .map_err(|_| "no answer from the server".to_string())?
        .map_err(|error| format!("the server closed the connection: {error}"))?;
    codec::decode_wire(&body).map_err(|error| format!("undecodable answer: {error}"))
}

/// The server configuration of the harness: generous deadlines (inputs always end by closing),
/// cheap PIN hashes, the demo accounts.
pub fn server_config(data_dir: &std::path::Path) -> ServerConfig {
    let mut config = ServerConfig::new(data_dir);
    config.listen = "127.0.0.1:0".parse().expect("an address");
    config.operator_token = Some(OPERATOR_TOKEN.into());
    config.pin_hash_cost = PinHashCost::MINIMUM;
    config.demo = true;
    config.arbiters = 2;
    config.limits.login_idle_timeout = Duration::from_secs(24 * 3600);
    config
}

/// A server, a runtime to talk to it, and the health connection: what a fuzz run needs.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    server: RunningServer,
    health: Mutex<Health>,
    _data_dir: tempfile::TempDir,
}

impl Harness {
    /// Starts the server and opens the health connection.
    pub fn start() -> Harness {
        let data_dir = tempfile::tempdir().expect("a temporary directory");
        let server =
            RunningServer::start(server_config(data_dir.path())).expect("the server starts");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let health = runtime
            .block_on(Health::connect(server.local_addr))
            .expect("the health connection opens");
        Harness {
            runtime,
            server,
            health: Mutex::new(health),
            _data_dir: data_dir,
        }
    }

    /// The running server.
    pub fn server(&self) -> &RunningServer {
        &self.server
    }

    /// Runs one input and every check; `Err` describes the first violation.
    pub fn try_run(&self, data: &[u8]) -> Result<(), String> {
        let script = script(data);
        let address = self.server.local_addr;
        let mut health = self
            .health
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.runtime.block_on(async {
            let transcript = exchange(address, &script).await?;
            check_transcript(&script, &transcript)?;
            health.check().await
        })
    }

    /// Runs one input; panics on a violation (what a fuzzer reports as a crash).
    pub fn run(&self, data: &[u8]) {
        if let Err(violation) = self.try_run(data) {
            panic!("{violation}");
        }
    }
}
