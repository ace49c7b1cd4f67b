//! Operating the real `bank-server` binary: configuration precedence, metrics, JSON logs, and a
//! graceful shutdown on SIGTERM under load.
mod common;
use common::scrape_metrics as scrape;

use actor_bank::client::{reply_balance, Client, ClientConfig};
use actor_bank::protocol::Status;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = env!("CARGO_BIN_EXE_bank-server");
const TOKEN: &str = "ops-operator-token-3a7f9c1e5b2d8046";

/// A started binary: the process, the address it listens on and, with `--metrics-listen`, the
/// address it serves metrics on (both as it reported them on standard output).
struct Started {
    child: Child,
    address: String,
    metrics: Option<String>,
}

/// Starts the binary on port 0 with cheap PIN hashes and the demo accounts, and waits until it
/// reports the address it listens on.
fn start(data_dir: &std::path::Path, extra: &[&str]) -> Started {
    let mut child = Command::new(BINARY)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--operator-token",
            TOKEN,
            "--demo",
        ])
        .args(["--pin-hash-memory-kib", "8", "--pin-hash-iterations", "1"])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut metrics = None;
    let address = loop {
        let line = lines
            .next()
            .expect("bank-server ended before it listened")
            .unwrap();
        if let Some(address) = common::reported_address(&line, "metrics on") {
            metrics = Some(address);
        } else if let Some(address) = common::reported_address(&line, "listening on") {
            break address;
        } else {
            panic!("unexpected output before the ready line: {line}");
        }
    };
    // Keep reading standard output so that the server never writes into a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Started {
        child,
        address,
        metrics,
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn client_config(address: &str) -> ClientConfig {
    let mut config = ClientConfig::new(address);
    config.attempt_timeout = Duration::from_secs(2);
    config.outcome_deadline = Duration::from_secs(20);
    config
}

fn print_config(arguments: &[&str], environment: &[(&str, &str)]) -> String {
    let output = Command::new(BINARY)
        .arg("--print-config")
        .args(arguments)
        .envs(environment.iter().copied())
        .env_remove("BANK_OPERATOR_TOKEN")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A flag beats the environment, the environment beats the file, the file beats the default,
/// and the printed configuration masks the token.
#[test]
fn settings_come_from_flag_then_environment_then_file_then_default() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("bank.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:7001\"\ndata_dir = \"/from/file\"\nconnections_max = 11\nmetrics_listen = \"127.0.0.1:9001\"\noperator_token = \"file-secret-token\"\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let printed = print_config(
        &["--config", file, "--listen", "127.0.0.1:7003"],
        &[
            ("BANK_LISTEN", "127.0.0.1:7002"),
            ("BANK_DATA_DIR", "/from/env"),
        ],
    );
    assert!(printed.contains("listen = \"127.0.0.1:7003\""), "{printed}");
    assert!(printed.contains("data_dir = \"/from/env\""), "{printed}");
    assert!(printed.contains("connections_max = 11"), "{printed}");
    assert!(
        printed.contains("metrics_listen = \"127.0.0.1:9001\""),
        "{printed}"
    );
    assert!(printed.contains("requests_in_flight_max = 64"), "{printed}");
    assert!(
        printed.contains("operator_token = \"********\""),
        "{printed}"
    );
    assert!(!printed.contains("file-secret-token"), "{printed}");
    let from_environment = print_config(&["--config", file], &[("BANK_LISTEN", "127.0.0.1:7002")]);
    assert!(
        from_environment.contains("listen = \"127.0.0.1:7002\""),
        "{from_environment}"
    );
    let from_file = print_config(&["--config", file], &[]);
    assert!(
        from_file.contains("listen = \"127.0.0.1:7001\""),
        "{from_file}"
    );
    let defaults = print_config(&[], &[]);
    assert!(
        defaults.contains("listen = \"127.0.0.1:7878\""),
        "{defaults}"
    );
    assert!(defaults.contains("operator_token = \"\""), "{defaults}");
}

/// A file with an unknown key is refused with a message naming the file.
#[test]
fn an_unknown_key_in_the_file_is_refused() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("bad.toml");
    std::fs::write(&file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(BINARY)
        .arg("--config")
        .arg(&file)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad.toml"));
}

fn metric_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// The metrics endpoint serves Prometheus text, and its counters move with traffic.
#[tokio::test]
async fn the_metrics_endpoint_counts_requests() {
    let data_dir = tempfile::tempdir().unwrap();
    let Started {
        mut child,
        address,
        metrics,
    } = start(data_dir.path(), &["--metrics-listen", "127.0.0.1:0"]);
    let metrics_address = metrics.expect("the server reported no metrics address");
    let mut client = Client::connect(client_config(&address)).await.unwrap();
    assert_eq!(
        client.verify(123_456_789, "1234").await.unwrap().status,
        Status::Approved
    );
    assert_eq!(client.withdraw(100).await.unwrap().status, Status::Approved);
    let approved = "bank_requests_total{operation=\"withdraw\",status=\"approved\"}";
    let first = tokio::task::spawn_blocking({
        let metrics_address = metrics_address.clone();
        move || scrape(&metrics_address)
    })
    .await
    .unwrap();
    assert_eq!(metric_value(&first, approved), Some(1.0), "{first}");
    assert!(
        first.contains("bank_journal_fsync_duration_seconds"),
        "{first}"
    );
    assert!(first.contains("bank_journal_batch_records"), "{first}");
    assert!(first.contains("bank_connections_open"), "{first}");
    assert!(
        first.contains("bank_request_duration_seconds_bucket"),
        "{first}"
    );
    assert_eq!(client.withdraw(100).await.unwrap().status, Status::Approved);
    let second = tokio::task::spawn_blocking(move || scrape(&metrics_address))
        .await
        .unwrap();
    assert_eq!(metric_value(&second, approved), Some(2.0), "{second}");
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

/// With --log-format json every log line is one JSON object with a level and a message.
#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let data_dir = tempfile::tempdir().unwrap();
    let Started {
        mut child, address, ..
    } = start(data_dir.path(), &["--log-format", "json"]);
    let mut client = Client::connect(client_config(&address)).await.unwrap();
    // Twelve digits, the longest PIN: a shorter one could turn up by chance inside a timestamp's
    // microseconds, a port or a hex check value, and fail the test for nothing.
    assert_eq!(
        client.verify(123_456_789, WRONG_PIN).await.unwrap().status,
        Status::IncorrectPin
    );
    drop(client);
    terminate(&child);
    assert!(child.wait().unwrap().success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let object: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["fields"].is_object(), "{line}");
    }
    assert!(log.contains("shutdown complete"), "{log}");
    assert!(!log.contains(WRONG_PIN), "a PIN reached the log: {log}");
}

/// The wrong PIN the JSON log test offers, which must never be logged.
const WRONG_PIN: &str = "918273645546";

/// Withdrawals the SIGTERM test lets the server acknowledge before it sends the signal.
const ACKNOWLEDGED_BEFORE_SIGTERM: u64 = 200;

/// Workers in the SIGTERM test, each with one request in flight.
const SIGTERM_WORKERS: u64 = 8;

/// SIGTERM under load: the server exits 0, and after a restart every acknowledged withdrawal is
/// there, exactly once. The load is bounded by work, not time: the signal goes once
/// [`ACKNOWLEDGED_BEFORE_SIGTERM`] withdrawals were acknowledged, and no worker starts another
/// after the total reaches what the balance covers, so no withdrawal is ever refused, whatever
/// the speed of the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_change() {
    let opening = 10_000;
    let data_dir = tempfile::tempdir().unwrap();
    let Started {
        mut child, address, ..
    } = start(data_dir.path(), &[]);
    let acknowledged = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..SIGTERM_WORKERS {
        let mut config = common::client_config_with_id(&address, 100 + worker);
        config.outcome_deadline = Duration::from_secs(2);
        let (acknowledged, started) = (acknowledged.clone(), started.clone());
        workers.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            let mut client = Client::new(config);
            let mut mine = 0u64;
            let reply = client.verify(123_456_789, "1234").await.unwrap();
            assert_eq!(reply.status, Status::Approved);
            // Every withdrawal is reserved first, so at most `opening` are ever sent.
            while started.fetch_add(1, Ordering::SeqCst) < opening {
                match client.withdraw(1).await {
                    Ok(reply) if reply.status == Status::Approved => {
                        mine += 1;
                        acknowledged.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(reply) => panic!("unexpected {reply:?}"),
                    Err(_) => break,
                }
            }
            mine
        }));
    }
    common::eventually("enough withdrawals acknowledged before SIGTERM", || {
        acknowledged.load(std::sync::atomic::Ordering::SeqCst) >= ACKNOWLEDGED_BEFORE_SIGTERM
    })
    .await;
    terminate(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut acknowledged = 0;
    for worker in workers {
        acknowledged += worker.await.unwrap();
    }
    assert!(acknowledged >= ACKNOWLEDGED_BEFORE_SIGTERM);
    let Started {
        mut child, address, ..
    } = start(data_dir.path(), &[]);
    let mut client = Client::connect(client_config(&address)).await.unwrap();
    client.verify(123_456_789, "1234").await.unwrap();
    let balance = reply_balance(&client.balance().await.unwrap()).unwrap();
    // Requests whose outcome stayed unknown at shutdown may or may not have run; none may be
    // missing that was acknowledged, so the balance is at most the opening minus them ...
    assert!(
        balance <= opening - acknowledged,
        "balance {balance}, acknowledged {acknowledged}"
    );
    // ... and at most one unknown request per worker may have run on top of them.
    assert!(
        balance + SIGTERM_WORKERS >= opening - acknowledged,
        "balance {balance}, acknowledged {acknowledged}"
    );
    terminate(&child);
    assert!(child.wait().unwrap().success());
}
