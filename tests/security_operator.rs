//! Security of the operator token and of secrets on the way in: a token under 128 bits is refused
//! at start (and `bank-server generate-operator-token` makes good ones), failed attempts are
//! limited per peer address and logged, the token file must be private, and `atm` takes PINs
//! from standard input or `BANK_PIN` instead of the command line.
mod common;
use common::{create, reply, Capture, RawConnection, TestServer, JOTY, OPERATOR_TOKEN};

use actor_bank::config::Settings;
use actor_bank::operator::check_strength;
use actor_bank::protocol::{Body, Status};
use actor_bank::ratelimit::RateLimit;
use actor_bank::server::RunningServer;
use std::io::Write;
use std::process::{Command, Stdio};

/// Tokens shorter than 32 characters, or with too few different characters, stop the server
/// before it opens anything, with a message that says how to make a good one.
#[test]
fn a_weak_operator_token_is_refused_at_start() {
    for weak in [
        "abcd",
        "test-operator-token",
        &"0123456789abcde".repeat(2),
        &"ab".repeat(20),
    ] {
        let directory = tempfile::tempdir().unwrap();
        let mut config = common::test_config(&directory.path().join("data"));
        config.operator_token = Some(weak.to_string());
        let error = match RunningServer::start(config) {
            Ok(_) => panic!("{weak:?} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("generate-operator-token"), "{error}");
        assert!(!directory.path().join("data").exists(), "{weak:?}");
    }
}

/// `bank-server generate-operator-token` prints one fresh 256-bit token, which the server accepts.
#[test]
fn generated_operator_tokens_are_strong_and_fresh() {
    let generate = || {
        let output = Command::new(env!("CARGO_BIN_EXE_bank-server"))
            .arg("generate-operator-token")
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap()
    };
    let first = generate();
    let token = first.trim_end();
    assert_eq!(first, format!("{token}\n"));
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|byte| byte.is_ascii_hexdigit()));
    assert!(check_strength(token).is_ok());
    assert_ne!(generate(), first);
}

/// A connection from `source` (a loopback address of its own) that has completed the handshake.
async fn raw_from(source: &str, server: &TestServer) -> RawConnection {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket
        .connect(server.address().parse().unwrap())
        .await
        .unwrap();
    RawConnection { stream }.greeted().await
}

/// The guessing attack on the operator token: after its burst of failed attempts, a peer's
/// operator requests are answered `busy` without the token being checked (so even the right
/// token tells it nothing), while another peer is still served. Each failure is logged, without
/// the token that was tried.
#[tokio::test]
async fn failed_operator_attempts_are_limited_per_peer_and_logged() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    // No refill, so nothing depends on how fast the test runs.
    let server = TestServer::start_with(|config| {
        config.limits.operator_failures = RateLimit {
            burst: 3,
            per_minute: 0,
        }
    });
    let guess = "guess-0123456789abcdef0123456789abcdef";
    let mut guesser = raw_from("127.0.0.1", &server).await;
    let mut statuses = Vec::new();
    for sequence in 1..=8 {
        let operation = create(guess, 555_000_111, "Mallory", "1111", 1);
        let (r, _) = guesser.exchange(80, sequence, operation).await;
        statuses.push(r.status);
    }
    assert_eq!(statuses[..3], [Status::NotAuthorised; 3]);
    assert!(statuses[3..].iter().all(|status| *status == Status::Busy));
    let right = create(OPERATOR_TOKEN, 555_000_111, "Mallory", "1111", 1);
    let (r, _) = guesser.exchange(80, 9, right.clone()).await;
    assert_eq!(r, reply(80, 9, Status::Busy, Body::Empty));
    // The limit is the peer's, not the connection's.
    let mut again = raw_from("127.0.0.1", &server).await;
    let (r, _) = again.exchange(81, 1, right.clone()).await;
    assert_eq!(r, reply(81, 1, Status::Busy, Body::Empty));

    let mut operator = raw_from("127.0.0.2", &server).await;
    let (r, _) = operator.exchange(82, 1, right).await;
    assert_eq!(r, reply(82, 1, Status::Approved, common::balances(1)));
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert_eq!(logs.matches("operator token refused").count(), 3, "{logs}");
    assert!(logs.contains("peer=127.0.0.1"), "{logs}");
    assert!(!logs.contains(guess) && !logs.contains(OPERATOR_TOKEN));
}

/// `--operator-token-file` gives the token from a file only its owner can read (first line, no
/// newline); a readable file, or a token given twice, is refused.
#[cfg(unix)]
#[test]
fn the_operator_token_file_must_be_private() {
    use std::os::unix::fs::PermissionsExt;
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("operator-token");
    std::fs::write(&path, format!("{OPERATOR_TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let settings = Settings {
        operator_token_file: Some(path.clone()),
        ..Settings::default()
    };
    let (config, _) = settings.resolve().unwrap();
    assert_eq!(config.operator_token.as_deref(), Some(OPERATOR_TOKEN));

    let twice = Settings {
        operator_token: Some(OPERATOR_TOKEN.into()),
        ..settings.clone()
    };
    assert!(twice.resolve().is_err());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = settings.resolve().unwrap_err();
    assert!(error.contains("chmod 600"), "{error}");
}

/// Runs `atm --server ADDRESS --json ARGS…` with `stdin` as its standard input and only the
/// `BANK_…` variables in `environment`; returns what it printed (out and error) and its exit code.
fn atm(
    server: &TestServer,
    arguments: &[String],
    stdin: &str,
    environment: &[(&str, &str)],
) -> (String, i32) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_atm"));
    command
        .args(["--server", &server.address(), "--json"])
        .args(arguments)
        .env_remove("BANK_SERVER")
        .env_remove("BANK_OPERATOR_TOKEN")
        .env_remove("BANK_PIN")
        .env("RUST_LOG", "off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.envs(environment.iter().copied());
    let mut child = command.spawn().unwrap();
    // A child that stops before reading its input (a usage error) closes the pipe first: a write
    // that finds it closed is not a failure of the test.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    let output = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8(output.stdout).unwrap() + &String::from_utf8(output.stderr).unwrap();
    (printed, output.status.code().unwrap())
}

/// `atm` takes the PIN from standard input (`--pin-stdin`) or `BANK_PIN`, so it never has to be
/// on the command line; with neither and no terminal to ask on, it stops with a usage error.
/// The operator token comes from `BANK_OPERATOR_TOKEN` the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atm_reads_secrets_from_standard_input_or_the_environment() {
    let server = TestServer::start();
    let run = |arguments: &[&str], stdin: &str, environment: &[(&str, &str)]| {
        let arguments: Vec<String> = arguments.iter().map(|text| text.to_string()).collect();
        tokio::task::block_in_place(|| atm(&server, &arguments, stdin, environment))
    };
    let card = JOTY.to_string();
    let balance = ["balance", "--card", card.as_str()];
    let approved = r#"{"available_balance":10000,"balance":10000,"status":"approved"}"#.to_string();
    let (printed, code) = run(&[&balance[..], &["--pin-stdin"]].concat(), "1234\n", &[]);
    assert_eq!((printed.trim().to_string(), code), (approved.clone(), 0));
    let (printed, code) = run(&balance, "", &[("BANK_PIN", "1234")]);
    assert_eq!((printed.trim().to_string(), code), (approved, 0));
    // --pin-stdin wins over BANK_PIN.
    let stdin_wins = [&balance[..], &["--pin-stdin"]].concat();
    let (printed, code) = run(&stdin_wins, "0000\n", &[("BANK_PIN", "1234")]);
    assert_eq!((printed.trim(), code), (r#"{"status":"incorrect_pin"}"#, 1));
    let (printed, code) = run(&balance, "", &[]);
    assert_eq!(code, 2, "{printed}");
    assert!(printed.contains("--pin-stdin"), "{printed}");

    let create = [
        "create-account",
        "--card",
        "555000222",
        "--name",
        "Nadia",
        "--initial-balance",
        "7",
        "--pin-stdin",
    ];
    let (printed, code) = run(&create, "2468\n", &[]);
    assert_eq!(code, 2, "no token and no terminal: {printed}");
    assert!(printed.contains("BANK_OPERATOR_TOKEN"), "{printed}");
    let (printed, code) = run(
        &create,
        "2468\n",
        &[("BANK_OPERATOR_TOKEN", OPERATOR_TOKEN)],
    );
    assert_eq!(
        (printed.trim(), code),
        (
            r#"{"available_balance":7,"balance":7,"status":"approved"}"#,
            0
        )
    );
    let (printed, code) = run(
        &["verify", "--card", "555000222"],
        "",
        &[("BANK_PIN", "2468")],
    );
    assert_eq!((printed.trim(), code), (r#"{"status":"approved"}"#, 0));
}
