//! The loopback ceiling: a bare tokio server that answers every length-prefixed frame with a
//! frame of the size of a withdraw reply, and 64 connections that each keep one request of the
//! size of a withdraw request in flight (or, with a depth, that many requests pipelined on each
//! connection: a new one sent as each reply comes, the replies in the order of the requests). It
//! does no work, touches no disk and keeps no state, so its requests per second are the most any
//! server can answer over 127.0.0.1 on this machine with this client: the yardstick the
//! end-to-end numbers are compared with (depth 1 for the ATM workloads, where each ATM has one
//! request in flight; depth 64 for switch mode, where a few connections carry many).
//!
//! `cargo bench --bench echo_ceiling` (a plain program, not criterion: it prints one result).
//!
//! Settings from the environment: `ECHO_CONNECTIONS` (64), `ECHO_DEPTH` (requests in flight per
//! connection, [`DEPTH_DEFAULT`]), `ECHO_SECONDS` (10),
//! `ECHO_SERVER_THREADS` and `ECHO_CLIENT_THREADS` (worker threads of the two runtimes, default 2
//! each, like the in-process swarm), `ECHO_JSON_OUT` (write the result as JSON there). Under
//! `cargo test --benches` it runs for a fraction of a second.

use actor_bank::codec::encode_frame;
use actor_bank::protocol::{
    Body, ClientMessage, Operation, Reply, Request, RequestId, ServerMessage, Status,
};
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Requests in flight per connection unless `ECHO_DEPTH` says otherwise: one, as an ATM.
const DEPTH_DEFAULT: usize = 1;

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// The two frames of a withdrawal, as the real client and server encode them.
fn frames() -> (Vec<u8>, Vec<u8>) {
    let id = RequestId {
        client: 0x3a7f_12c4_9e01_55d2,
        sequence: 48_213,
    };
    let request = ClientMessage::Request(Request {
        id,
        operation: Operation::Withdraw { amount: 250 },
    });
    let reply = ServerMessage::Reply(Reply {
        id,
        status: Status::Approved,
        body: Body::Balance(987_654),
    });
    (
        encode_frame(&request).expect("request frame"),
        encode_frame(&reply).expect("reply frame"),
    )
}

/// Reads one frame (4-byte big-endian length, then the body) into `body`.
async fn read_frame<R: AsyncReadExt + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> std::io::Result<()> {
    let length = reader.read_u32().await? as usize;
    body.resize(length, 0);
    reader.read_exact(body).await?;
    Ok(())
}

async fn serve(listener: TcpListener, reply: Arc<Vec<u8>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let reply = reply.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut body = Vec::with_capacity(64);
            while read_frame(&mut read, &mut body).await.is_ok() {
                if write.write_all(&reply).await.is_err() {
                    break;
                }
            }
        });
    }
}

struct ConnectionResult {
    latency_us: Histogram<u64>,
}

/// One connection: `depth` requests sent at once, then one more each time a reply comes, until
/// `stop`; then the requests still in flight are waited for. Each reply is the answer to the
/// oldest request unanswered (the server answers in order), which gives its latency.
async fn drive(
    address: std::net::SocketAddr,
    request: Arc<Vec<u8>>,
    depth: usize,
    stop: Arc<AtomicBool>,
) -> ConnectionResult {
    let stream = TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut body = Vec::with_capacity(64);
    let mut latency_us =
        Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds are valid");
    let mut sent_at = VecDeque::with_capacity(depth);
    let burst: Vec<u8> = request.repeat(depth);
    let now = Instant::now();
    write.write_all(&burst).await.expect("send");
    sent_at.extend(std::iter::repeat_n(now, depth));
    while let Some(sent) = sent_at.pop_front() {
        read_frame(&mut read, &mut body).await.expect("receive");
        let _ = latency_us.record(sent.elapsed().as_micros().max(1) as u64);
        if !stop.load(Ordering::Relaxed) {
            sent_at.push_back(Instant::now());
            write.write_all(&request).await.expect("send");
        }
    }
    ConnectionResult { latency_us }
}

fn main() {
    let bench = std::env::args().any(|argument| argument == "--bench");
    let connections = env_number("ECHO_CONNECTIONS", 64.0).max(1.0) as usize;
    let depth = env_number("ECHO_DEPTH", DEPTH_DEFAULT as f64).max(1.0) as usize;
    let seconds = if bench {
        env_number("ECHO_SECONDS", 10.0)
    } else {
        0.2
    };
    let server_threads = env_number("ECHO_SERVER_THREADS", 2.0).max(1.0) as usize;
    let client_threads = env_number("ECHO_CLIENT_THREADS", 2.0).max(1.0) as usize;
    let (request, reply) = frames();

    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(server_threads)
        .thread_name("echo-server")
        .enable_all()
        .build()
        .expect("server runtime");
    let listener = server_runtime
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let address = listener.local_addr().expect("address");
    server_runtime.spawn(serve(listener, Arc::new(reply.clone())));

    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("echo-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(request.clone());
    let (elapsed, merged) = client_runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..connections)
            .map(|_| tokio::spawn(drive(address, request.clone(), depth, stop.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut merged =
            Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
        for task in tasks {
            let result = task.await.expect("connection task");
            merged.add(&result.latency_us).expect("same bounds");
        }
        (started.elapsed(), merged)
    });
    drop(server_runtime);

    let requests = merged.len();
    let per_second = requests as f64 / elapsed.as_secs_f64();
    let (p50, p99, p999) = (
        merged.value_at_quantile(0.5),
        merged.value_at_quantile(0.99),
        merged.value_at_quantile(0.999),
    );
    println!(
        "echo ceiling: {connections} connections x {depth} in flight, request {} B, reply {} B, {:.1} s: \
         {requests} requests, {per_second:.0} requests/s; latency µs p50 {p50} p99 {p99} \
         p99.9 {p999} max {}",
        request.len(),
        reply.len(),
        elapsed.as_secs_f64(),
        merged.max()
    );
    if let Ok(path) = std::env::var("ECHO_JSON_OUT") {
        let json = serde_json::json!({
            "connections": connections,
            "depth": depth,
            "request_bytes": request.len(),
            "reply_bytes": reply.len(),
            "duration_secs": elapsed.as_secs_f64(),
            "requests": requests,
            "ops_per_sec": per_second,
            "latency_us": {
                "p50": p50,
                "p99": p99,
                "p999": p999,
                "max": merged.max(),
            },
        });
        std::fs::write(&path, json.to_string()).expect("write ECHO_JSON_OUT");
    }
}
