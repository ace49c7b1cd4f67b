//! The PIN rules through the real binaries: `bank-server --demo` with no key setting creates its
//! PIN key beside the data directory (0600), counts a wrong PIN in `bank_pin_failures_total` and
//! logs it as a security event with the card masked; `atm change-pin` and `atm unlock-card` do
//! what they say, with the exit codes of every command.
mod common;
use common::durability::BankProcess;
use common::{TestServer, JOTY, JOTY_PIN, OPERATOR_TOKEN};

/// Runs `atm --server ADDRESS --json ARGS…`; returns its output line and exit code.
async fn atm(server: &str, arguments: &[&str]) -> (String, Option<i32>) {
    let (stdout, code) = common::run_atm(server, arguments).await;
    (stdout.trim().to_string(), code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_server_makes_its_key_counts_failures_and_logs_them_masked() {
    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    let log = root.path().join("server.log");
    let server = BankProcess::start_with_args(
        &data_dir,
        0,
        OPERATOR_TOKEN,
        &log,
        &["--demo", "--metrics-listen", "127.0.0.1:0"],
    );
    let metrics = server
        .metrics
        .clone()
        .expect("the metrics address is reported");
    let key_file = root.path().join("data.pin-key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let card = JOTY.to_string();
    let (line, code) = atm(
        &server.address,
        // Twelve digits: a short PIN could turn up by chance in a timestamp, a port or a process
        // id, and fail the check below for nothing.
        &["verify", "--card", &card, "--pin", "918273645546"],
    )
    .await;
    assert_eq!(
        (line.as_str(), code),
        (r#"{"status":"incorrect_pin"}"#, Some(1))
    );
    let text = common::scrape_metrics(&metrics);
    assert!(
        text.lines()
            .any(|line| line.starts_with("bank_pin_failures_total{reason=\"incorrect_pin\"} 1")),
        "{text}"
    );
    server.kill();
    let logged = std::fs::read_to_string(&log).unwrap();
    let event = logged
        .lines()
        .find(|line| line.contains("PIN check failed"))
        .unwrap_or_else(|| panic!("no security event in:\n{logged}"));
    assert!(event.contains("123****89"), "{event}");
    assert!(
        !logged.contains(&card),
        "the full card number is logged:\n{logged}"
    );
    assert!(
        !logged.contains("918273645546"),
        "the PIN is logged:\n{logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atm_changes_a_pin_and_an_operator_unlocks_a_card() {
    const CARD: &str = "123456789";
    let server = TestServer::start();
    let address = server.address();
    assert_eq!(CARD, JOTY.to_string());
    let change = |old: &'static str, new: &'static str| {
        vec!["change-pin", "--card", CARD, "--pin", old, "--new-pin", new]
    };
    let (line, code) = atm(&address, &change(JOTY_PIN, "2468")).await;
    assert_eq!((line.as_str(), code), (r#"{"status":"approved"}"#, Some(0)));
    let (line, code) = atm(&address, &change(JOTY_PIN, "1357")).await;
    assert_eq!(
        (line.as_str(), code),
        (r#"{"status":"incorrect_pin"}"#, Some(1))
    );
    for guess in ["0000", "1111"] {
        atm(&address, &["verify", "--card", CARD, "--pin", guess]).await;
    }
    let (line, _) = atm(&address, &["verify", "--card", CARD, "--pin", "2468"]).await;
    assert_eq!(line, r#"{"status":"card_locked"}"#);
    let unlock = |token: &'static str| {
        vec![
            "unlock-card",
            "--card",
            CARD,
            "--operator-token",
            token,
            "--request-id",
            "77:1",
        ]
    };
    let (line, code) = atm(&address, &unlock("not-the-token")).await;
    assert_eq!(
        (line.as_str(), code),
        (r#"{"status":"not_authorised"}"#, Some(1))
    );
    let (line, code) = atm(&address, &unlock(OPERATOR_TOKEN)).await;
    assert_eq!((line.as_str(), code), (r#"{"status":"approved"}"#, Some(0)));
    let (line, code) = atm(&address, &["balance", "--card", CARD, "--pin", "2468"]).await;
    assert_eq!(
        (line.as_str(), code),
        (
            r#"{"available_balance":10000,"balance":10000,"status":"approved"}"#,
            Some(0)
        )
    );
}
