//! Metrics, in Prometheus text format when `--metrics-listen` is given.
//!
//! Every metric the server reports is named here, once. Recording is cheap and does nothing until
//! [`install`] has put an exporter in place, so tests and tools that never install one pay
//! almost nothing.

use std::net::SocketAddr;
use std::time::Duration;

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

/// Buckets for latencies, in seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// Buckets for batch sizes.
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Serves metrics over HTTP on `address` (any path answers with the text format).
pub fn install(address: SocketAddr) -> Result<(), String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let builder = PrometheusBuilder::new()
        .with_http_listener(address)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
        .and_then(|builder| {
            builder
                .set_buckets_for_metric(Matcher::Full(JOURNAL_BATCH_RECORDS.into()), &BATCH_BUCKETS)
        })
        .map_err(|error| error.to_string())?;
    builder
        .install()
        .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
    describe();
    Ok(())
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
}

/// One request answered.
pub fn request(operation: &'static str, status: &'static str, elapsed: Duration) {
    metrics::counter!(REQUESTS, "operation" => operation, "status" => status).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "operation" => operation).record(elapsed.as_secs_f64());
}

/// One journal batch made durable.
pub fn journal_batch(records: usize, elapsed: Duration) {
    metrics::histogram!(JOURNAL_FSYNC_SECONDS).record(elapsed.as_secs_f64());
    metrics::histogram!(JOURNAL_BATCH_RECORDS).record(records as f64);
}

/// A gauge moved by `delta`.
pub fn gauge(name: &'static str, delta: f64) {
    metrics::gauge!(name).increment(delta);
}

/// A counter moved by one.
pub fn count(name: &'static str) {
    metrics::counter!(name).increment(1);
}

/// A fault injected.
pub fn fault(kind: &'static str) {
    metrics::counter!(FAULTS_INJECTED, "kind" => kind).increment(1);
}
