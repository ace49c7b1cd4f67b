//! The real `atm` binary with --json against a test server: one JSON object per command, exit
//! code 0 approved / 1 refused / 3 no definite answer, and a fixed --request-id replayed from a
//! second process prints the same line and moves money once.
mod common;

use common::{TestServer, OPERATOR_TOKEN};
use serde_json::{json, Value};

const JOTY: &str = "123456789";

/// What one run of `atm --server ADDRESS --json ARGS…` printed and its exit code.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    stdout: String,
    code: Option<i32>,
}

impl Run {
    /// The single JSON object printed.
    fn json(&self) -> Value {
        let mut lines = self.stdout.lines();
        let line = lines.next().expect("atm printed nothing");
        assert_eq!(lines.next(), None, "more than one line: {:?}", self.stdout);
        serde_json::from_str(line).unwrap_or_else(|error| panic!("{line:?}: {error}"))
    }
}

async fn atm(server: &str, arguments: &[&str]) -> Run {
    let (stdout, code) = common::run_atm(server, arguments).await;
    Run { stdout, code }
}

/// `withdraw --request-id 9:1` run twice, from two processes (each logging in with its own
/// random client id), prints the same line both times and withdraws once; the same id with
/// another amount is a conflict (exit 1). Two processes racing with one id agree as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_request_id_replayed_from_another_process_moves_money_once() {
    let server = TestServer::start();
    let address = server.address();
    let withdraw = |amount: &'static str, id: &'static str| {
        vec![
            "withdraw",
            "--card",
            JOTY,
            "--pin",
            "1234",
            "--amount",
            amount,
            "--request-id",
            id,
        ]
    };
    let first = atm(&address, &withdraw("250", "9:1")).await;
    let second = atm(&address, &withdraw("250", "9:1")).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(
        first.json(),
        json!({"status": "approved", "balance": 9_750, "available_balance": 9_750})
    );
    assert_eq!(second, first);
    assert_eq!(server.committed_balance(123_456_789), Some(9_750));

    let other_amount = atm(&address, &withdraw("300", "9:1")).await;
    assert_eq!(other_amount.code, Some(1), "{other_amount:?}");
    assert_eq!(
        other_amount.json(),
        json!({"status": "request_id_conflict"})
    );
    assert_eq!(server.committed_balance(123_456_789), Some(9_750));

    // Two processes at once with one id.
    let racing = withdraw("50", "9:2");
    let (a, b) = tokio::join!(atm(&address, &racing), atm(&address, &racing));
    assert_eq!(a.code, Some(0), "{a:?}");
    assert_eq!(
        a.json(),
        json!({"status": "approved", "balance": 9_700, "available_balance": 9_700})
    );
    assert_eq!(b, a);
    assert_eq!(server.committed_balance(123_456_789), Some(9_700));

    // An account creation with a fixed id, replayed.
    let create = [
        "create-account",
        "--operator-token",
        OPERATOR_TOKEN,
        "--card",
        "222333444",
        "--name",
        "Tania",
        "--pin",
        "2222",
        "--initial-balance",
        "50",
        "--request-id",
        "9:3",
    ];
    let first = atm(&address, &create).await;
    let second = atm(&address, &create).await;
    assert_eq!(first.code, Some(0), "{first:?}");
    assert_eq!(
        first.json(),
        json!({"status": "approved", "balance": 50, "available_balance": 50})
    );
    assert_eq!(second, first);
    assert_eq!(server.committed_balance(222_333_444), Some(50));
}

/// Exit code 0 and the JSON for approved commands, 1 for definite refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_json_for_approved_and_refused_commands() {
    let server = TestServer::start();
    let address = server.address();
    let cases: Vec<(Vec<&str>, i32, Value)> = vec![
        (
            vec!["balance", "--card", JOTY, "--pin", "1234"],
            0,
            json!({"status": "approved", "balance": 10_000, "available_balance": 10_000}),
        ),
        (
            vec!["verify", "--card", JOTY, "--pin", "1234"],
            0,
            json!({"status": "approved"}),
        ),
        (
            vec!["deposit", "--card", JOTY, "--pin", "1234", "--amount", "5"],
            0,
            json!({"status": "approved", "balance": 10_005, "available_balance": 10_005}),
        ),
        (
            vec!["withdraw", "--card", JOTY, "--pin", "0000", "--amount", "5"],
            1,
            json!({"status": "incorrect_pin"}),
        ),
        (
            vec!["verify", "--card", "404404404", "--pin", "1234"],
            1,
            json!({"status": "unknown_card"}),
        ),
        (
            vec![
                "withdraw", "--card", JOTY, "--pin", "1234", "--amount", "20000",
            ],
            1,
            json!({"status": "insufficient_funds", "balance": 10_005, "available_balance": 10_005}),
        ),
        (
            vec!["withdraw", "--card", JOTY, "--pin", "1234", "--amount", "0"],
            1,
            json!({"status": "invalid_amount", "balance": 10_005, "available_balance": 10_005}),
        ),
        (
            vec![
                "create-account",
                "--operator-token",
                "wrong",
                "--card",
                "5",
                "--name",
                "X",
                "--pin",
                "1234",
                "--initial-balance",
                "1",
            ],
            1,
            json!({"status": "not_authorised"}),
        ),
        (
            vec!["lowercase", "HeLLo ÄTM"],
            0,
            json!({"status": "approved", "text": "hello ätm"}),
        ),
        (
            vec!["prime", "18446744073709551557"],
            0,
            json!({"status": "approved", "prime": true}),
        ),
        (
            vec!["prime", "18446744073709551615"],
            0,
            json!({"status": "approved", "prime": false}),
        ),
        (
            vec!["palindrome", "12321"],
            0,
            json!({"status": "approved", "palindrome": true}),
        ),
    ];
    for (arguments, code, expected) in cases {
        let run = atm(&address, &arguments).await;
        assert_eq!(run.code, Some(code), "{arguments:?}: {run:?}");
        assert_eq!(run.json(), expected, "{arguments:?}");
    }
    assert_eq!(server.committed_balance(123_456_789), Some(10_005));
    assert_eq!(server.committed_balance(5), None);
}

/// With no server listening, the atm retries until its deadline (`--deadline`, 30 s by default)
/// and then exits 3 with an outcome_unknown object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_3_when_the_server_is_unreachable() {
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let run = atm(
        &address,
        &[
            "--deadline",
            "2s",
            "withdraw",
            "--card",
            JOTY,
            "--pin",
            "1234",
            "--amount",
            "5",
        ],
    )
    .await;
    assert_eq!(run.code, Some(3), "{run:?}");
    let printed = run.json();
    assert_eq!(printed["status"], "outcome_unknown", "{printed}");
    assert!(printed["error"].is_string(), "{printed}");
}
