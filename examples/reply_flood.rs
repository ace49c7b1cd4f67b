//! The reply flood: many connections send `Lowercase` requests of a nearly full frame and never
//! read their replies. Reports the server's resident memory before, at its highest during the
//! flood, and after the flooders are gone, from `/proc/PID/status` (Linux only).
//!
//! Start a release `bank-server` at its defaults first, then:
//!
//! ```text
//! cargo run --release --example reply_flood -- --server 127.0.0.1:7878 --pid $(pgrep -n bank-server)
//! ```
//!
//! Flags: `--connections N` (80), `--sources N` (2: the connections come from 127.0.0.1,
//! 127.0.0.2, … so that the per-peer connection cap does not refuse them), `--settle-secs N` (5:
//! how long to wait after closing the flooders before the last reading).

use actor_bank::codec::{decode_wire, encode_frame};
use actor_bank::protocol::{
    ClientMessage, Hello, Operation, Request, RequestId, ServerMessage, PROTOCOL_VERSION,
};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// What the flood is told.
struct Options {
    server: SocketAddr,
    pid: u32,
    connections: usize,
    sources: usize,
    settle: Duration,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        server: "127.0.0.1:7878".parse().map_err(|_| "bad address")?,
        pid: 0,
        connections: 80,
        sources: 2,
        settle: Duration::from_secs(5),
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let value = arguments
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{flag}: {value}"));
        match flag.as_str() {
            "--server" => {
                options.server = value.parse().map_err(|_| format!("--server {value}"))?
            }
            "--pid" => options.pid = number()? as u32,
            "--connections" => options.connections = number()? as usize,
            "--sources" => options.sources = number()?.max(1) as usize,
            "--settle-secs" => options.settle = Duration::from_secs(number()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if options.pid == 0 {
        return Err("--pid PID (the bank-server's process id) is required".into());
    }
    Ok(options)
}

/// The server's resident memory in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Connects from loopback address `source`, says Hello and returns the frame limit announced.
async fn greeted(server: SocketAddr, source: usize) -> std::io::Result<(TcpStream, usize)> {
    let socket = TcpSocket::new_v4()?;
    let local: SocketAddr = format!("127.0.0.{}:0", source + 1)
        .parse()
        .expect("a loopback address");
    socket.bind(local)?;
    let mut stream = socket.connect(server).await?;
    let hello = ClientMessage::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
    });
    stream
        .write_all(&encode_frame(&hello).expect("a Hello encodes"))
        .await?;
    let length = stream.read_u32().await? as usize;
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    match decode_wire::<ServerMessage>(&body) {
        Ok(ServerMessage::Welcome(welcome)) => Ok((stream, welcome.frame_bytes_max as usize)),
        other => Err(std::io::Error::other(format!("no Welcome: {other:?}"))),
    }
}

/// Writes `Lowercase` requests until a write makes no progress for a second; keeps the
/// connection open (never reading) until `stop`.
async fn flood(
    server: SocketAddr,
    index: usize,
    sources: usize,
    stalled: Arc<AtomicUsize>,
    written: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (mut stream, frame_bytes_max) = match greeted(server, index % sources).await {
        Ok(greeted) => greeted,
        Err(error) => {
            eprintln!("connection {index}: {error}");
            stalled.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let text = "A".repeat(frame_bytes_max.saturating_sub(64));
    for sequence in 1.. {
        let request = ClientMessage::Request(Request {
            id: RequestId {
                client: 9_000 + index as u64,
                sequence,
            },
            operation: Operation::Lowercase { text: text.clone() },
        });
        let frame = encode_frame(&request).expect("a request of a frame encodes");
        match tokio::time::timeout(Duration::from_secs(1), stream.write_all(&frame)).await {
            Ok(Ok(())) => written.fetch_add(frame.len() as u64, Ordering::Relaxed),
            Ok(Err(_)) | Err(_) => break,
        };
    }
    stalled.fetch_add(1, Ordering::Relaxed);
    stop.cancelled().await;
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = options()?;
    let before = resident_kib(options.pid);
    let stalled = Arc::new(AtomicUsize::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let flooders: Vec<_> = (0..options.connections)
        .map(|index| {
            tokio::spawn(flood(
                options.server,
                index,
                options.sources,
                stalled.clone(),
                written.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut during = before;
    while stalled.load(Ordering::Relaxed) < options.connections {
        during = during.max(resident_kib(options.pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Hold the stalled connections a moment longer (under the server's write timeout).
    for _ in 0..20 {
        during = during.max(resident_kib(options.pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for flooder in flooders {
        let _ = flooder.await;
    }
    tokio::time::sleep(options.settle).await;
    let after = resident_kib(options.pid);
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{} connections wrote {:.1} MiB of requests; server resident memory: before {:.1} MiB, during (highest) {:.1} MiB, after {:.1} MiB",
        options.connections,
        written.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0),
        mib(before),
        mib(during),
        mib(after)
    );
    Ok(())
}
