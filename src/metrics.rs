//! Metrics, in Prometheus text format when `--metrics-listen` is given.
//!
//! Every metric the server reports is named here, once. Recording does nothing until [`install`]
//! has put an exporter in place: the metrics of every request (and of every journal batch and
//! queued reply) are skipped on one flag until then, so a server without `--metrics-listen`, and
//! every test and tool, pays nothing for them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Set once [`install`] has put the exporter in place.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// True once metrics are exported: before that, the per-request recorders return at once (the
/// `metrics` macros would still build each metric's key, labels included, for a recorder that
/// drops them).
fn installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Requests answered, by `operation` and `status`.
pub const REQUESTS: &str = "bank_requests_total";
/// Time from a request's arrival to its reply being queued, by `operation`.
pub const REQUEST_SECONDS: &str = "bank_request_duration_seconds";
/// Time of each journal write plus fdatasync.
pub const JOURNAL_FSYNC_SECONDS: &str = "bank_journal_fsync_duration_seconds";
/// Records per journal batch (group commit).
pub const JOURNAL_BATCH_RECORDS: &str = "bank_journal_batch_records";
/// Open connections.
pub const CONNECTIONS_OPEN: &str = "bank_connections_open";
/// Connections refused at the connection limit.
pub const CONNECTIONS_REFUSED: &str = "bank_connections_refused_total";
/// Connections refused because their peer holds all its slots (also counted in
/// [`CONNECTIONS_REFUSED`]).
pub const CONNECTIONS_REFUSED_PER_PEER: &str = "bank_connections_refused_per_peer_total";
/// Connections closed by the deadline to verify a card or by the idle time of a verified one, by
/// `reason`: `unverified`, `idle`.
pub const CONNECTIONS_TIMED_OUT: &str = "bank_connections_timed_out_total";
/// Reply bytes reserved or queued over all connections.
pub const REPLY_BYTES_QUEUED: &str = "bank_reply_bytes_queued";
/// Account actors alive.
pub const ACCOUNT_ACTORS_LIVE: &str = "bank_account_actors_live";
/// Supervised restarts of account actors after crashes.
pub const ACTOR_RESTARTS: &str = "bank_actor_restarts_total";
/// Requests answered from the memory of completed requests (replayed ids).
pub const DEDUP_HITS: &str = "bank_dedup_hits_total";
/// Retries that joined their original while it was still being worked on.
pub const JOINS: &str = "bank_joins_total";
/// Faults injected, by `kind`.
pub const FAULTS_INJECTED: &str = "bank_faults_injected_total";
/// Failed PIN checks (Verify and ChangePin), by `reason`: `incorrect_pin`, `unknown_card`,
/// `card_locked`.
pub const PIN_FAILURES: &str = "bank_pin_failures_total";
/// PIN checks refused unchecked because a connection or peer used up its failure allowance.
pub const PIN_RATE_LIMITED: &str = "bank_pin_rate_limited_total";
/// Argon2id PINs of the first release re-keyed to the PIN key at a correct PIN.
pub const PINS_REKEYED: &str = "bank_pins_rekeyed_total";
/// Log lines dropped because standard error refused them or their queue was full.
pub const LOG_WRITE_FAILURES: &str = "bank_log_write_failures_total";
/// 1 once the journal has failed closed (nothing is acknowledged until a restart), else 0.
pub const JOURNAL_FAILED: &str = "bank_journal_failed";

/// TLS handshakes, by `result`: `secured` or `failed` (terminals are named in the log, not here,
/// so the label stays bounded).
pub const TLS_HANDSHAKES: &str = "bank_tls_handshakes_total";
/// Failed TLS handshakes, by `reason`: `timeout`, `not_tls`, `no_certificate`, `expired`,
/// `bad_certificate`, `denied`, `protocol`, `io`.
pub const TLS_HANDSHAKE_FAILURES: &str = "bank_tls_handshake_failures_total";

/// Transfers settled by the sending account, by `result`: `received` (the receiving account took
/// the money) or `returned` (it refused, and the money went back).
pub const TRANSFERS_SETTLED: &str = "bank_transfers_settled_total";
/// Holds released because they expired.
pub const HOLDS_EXPIRED: &str = "bank_holds_expired_total";
/// ISO 8583 messages the door answered itself, by `mti` (of the request) and `code` (field 39):
/// network management, and messages refused before they reach the service (not signed on,
/// format error, a transaction not offered, another currency).
pub const ISO8583_DOOR_ANSWERS: &str = "bank_iso8583_door_answers_total";

/// Buckets for latencies, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Buckets for batch sizes.
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// How long the metrics endpoint waits for a scraper's request before it drops the connection.
pub const METRICS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes of a scraper's request the metrics endpoint reads (the request is not parsed:
/// any request is answered with the metrics).
pub const METRICS_REQUEST_BYTES_MAX: usize = 8 * 1024;

/// How often the recorder's histograms are compacted, scraped or not.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Serves metrics over HTTP on `address` (any path answers with the text format) and returns the
/// address it bound: with port 0 the operating system picks one, and the caller reports it.
pub fn install(address: SocketAddr) -> Result<SocketAddr, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let listener = std::net::TcpListener::bind(address)
        .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
    let bound = listener.local_addr().map_err(|error| error.to_string())?;
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|builder| {
            builder
                .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_RECORDS.into()), &BATCH_BUCKETS)
        })
        .and_then(|builder| builder.install_recorder())
        .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            upkeep.run_upkeep();
        })
        .map_err(|error| error.to_string())?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            // One scraper at a time: a slow one is cut off by the read timeout.
            for stream in listener.incoming().flatten() {
                let _ = answer_scrape(stream, &handle);
            }
        })
        .map_err(|error| error.to_string())?;
    describe();
    INSTALLED.store(true, Ordering::Relaxed);
    Ok(bound)
}

/// Reads a scraper's request (up to the blank line that ends its head) and writes the metrics.
fn answer_scrape(
    mut stream: std::net::TcpStream,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> std::io::Result<()> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(METRICS_READ_TIMEOUT))?;
    stream.set_write_timeout(Some(METRICS_READ_TIMEOUT))?;
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|end| end == b"\r\n\r\n")
        && request.len() < METRICS_REQUEST_BYTES_MAX
    {
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        request.extend_from_slice(&buffer[..read]);
    }
    let body = handle.render();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(REQUESTS, "Requests answered, by operation and status.");
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Request latency inside the server."
    );
    describe_histogram!(
        JOURNAL_FSYNC_SECONDS,
        Unit::Seconds,
        "Journal write and fdatasync time per batch."
    );
    describe_histogram!(JOURNAL_BATCH_RECORDS, "Records per journal batch.");
    describe_gauge!(CONNECTIONS_OPEN, "Open connections.");
    describe_counter!(CONNECTIONS_REFUSED, "Connections refused at the limit.");
    describe_counter!(
        CONNECTIONS_REFUSED_PER_PEER,
        "Connections refused because their peer holds all its slots."
    );
    describe_counter!(
        CONNECTIONS_TIMED_OUT,
        "Connections closed unverified at their deadline or idle after verifying, by reason."
    );
    describe_gauge!(
        REPLY_BYTES_QUEUED,
        "Reply bytes reserved or queued over all connections."
    );
    describe_gauge!(ACCOUNT_ACTORS_LIVE, "Account actors alive.");
    describe_counter!(ACTOR_RESTARTS, "Account actor restarts after crashes.");
    describe_counter!(
        DEDUP_HITS,
        "Requests answered from the memory of completed requests."
    );
    describe_counter!(
        JOINS,
        "Retries that joined their original while it was in flight."
    );
    describe_counter!(FAULTS_INJECTED, "Faults injected, by kind.");
    describe_counter!(PIN_FAILURES, "Failed PIN checks, by reason.");
    describe_counter!(
        PIN_RATE_LIMITED,
        "PIN checks refused because a connection or peer failed too often."
    );
    describe_counter!(TLS_HANDSHAKES, "TLS handshakes, by result.");
    describe_counter!(TLS_HANDSHAKE_FAILURES, "Failed TLS handshakes, by reason.");
    describe_counter!(PINS_REKEYED, "Argon2id PINs re-keyed to the PIN key.");
    describe_counter!(
        LOG_WRITE_FAILURES,
        "Log lines dropped because standard error refused them or their queue was full."
    );
    describe_gauge!(
        JOURNAL_FAILED,
        "1 once the journal has failed closed: no change is acknowledged until a restart."
    );
}

/// One request answered.
pub fn request(operation: &'static str, status: &'static str, elapsed: Duration) {
    if !installed() {
        return;
    }
    metrics::counter!(REQUESTS, "operation" => operation, "status" => status).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "operation" => operation).record(elapsed.as_secs_f64());
}

/// One journal batch made durable.
pub fn journal_batch(records: usize, elapsed: Duration) {
    if !installed() {
        return;
    }
    metrics::histogram!(JOURNAL_FSYNC_SECONDS).record(elapsed.as_secs_f64());
    metrics::histogram!(JOURNAL_BATCH_RECORDS).record(records as f64);
}

/// A gauge moved by `delta`.
pub fn gauge(name: &'static str, delta: f64) {
    if !installed() {
        return;
    }
    metrics::gauge!(name).increment(delta);
}

/// A gauge set to `value`.
pub fn set_gauge(name: &'static str, value: f64) {
    if !installed() {
        return;
    }
    metrics::gauge!(name).set(value);
}

/// A counter moved by one.
pub fn count(name: &'static str) {
    if !installed() {
        return;
    }
    metrics::counter!(name).increment(1);
}

/// A TLS handshake, by its result.
pub fn tls_handshake(result: &'static str) {
    metrics::counter!(TLS_HANDSHAKES, "result" => result).increment(1);
}

/// A failed TLS handshake, by its reason.
pub fn tls_handshake_failure(reason: &'static str) {
    metrics::counter!(TLS_HANDSHAKE_FAILURES, "reason" => reason).increment(1);
}

/// A transfer settled by its sending account, `received` or not (returned).
pub fn transfer_settled(received: bool) {
    let result = if received { "received" } else { "returned" };
    metrics::counter!(TRANSFERS_SETTLED, "result" => result).increment(1);
}

/// A failed PIN check.
pub fn pin_failure(reason: &'static str) {
    metrics::counter!(PIN_FAILURES, "reason" => reason).increment(1);
}

/// A connection closed by a deadline of its login, for `reason` (`unverified`, `idle`).
pub fn connection_timed_out(reason: &'static str) {
    metrics::counter!(CONNECTIONS_TIMED_OUT, "reason" => reason).increment(1);
}

/// An ISO 8583 message of type `mti` answered by the door itself with response code `code`.
pub fn iso8583_door_answer(mti: &str, code: &'static str) {
    // Only the types the door answers are named; anything else is counted as `other`, so a
    // hostile peer cannot make new label values.
    let mti = [
        "0100", "0101", "0200", "0201", "0220", "0221", "0420", "0421", "0800",
    ]
    .into_iter()
    .find(|known| *known == mti)
    .unwrap_or("other");
    metrics::counter!(ISO8583_DOOR_ANSWERS, "mti" => mti, "code" => code).increment(1);
}

/// A fault injected.
pub fn fault(kind: &'static str) {
    metrics::counter!(FAULTS_INJECTED, "kind" => kind).increment(1);
}
