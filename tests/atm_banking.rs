//! The real `atm` binary's banking commands with --json against a test server: transfers, holds,
//! reversals, statements and the operator's account management, each checked field by field and
//! against the committed state; fixed request ids replayed from a second process move money
//! once; bad usage exits with the usage code and says what is wrong; the interactive menu offers
//! the new operations.
mod common;

use common::{eventually, TestServer, AHONA, JOTY, OPERATOR_TOKEN};
use serde_json::{json, Value};

const JOTY_CARD: &str = "123456789";
const AHONA_CARD: &str = "987654321";

/// What one run of the `atm` binary printed and its exit code.
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

    /// The exit code is `code` and the object printed is `expected`.
    fn expect(&self, code: i32, expected: Value) {
        assert_eq!(self.code, Some(code), "{self:?}");
        assert_eq!(self.json(), expected, "{self:?}");
    }
}

async fn atm(server: &str, arguments: &[&str]) -> Run {
    let (stdout, code) = common::run_atm(server, arguments).await;
    Run { stdout, code }
}

/// `atm --json COMMAND --card CARD --pin PIN REST…`.
async fn on_card(server: &str, command: &str, card: &str, pin: &str, rest: &[&str]) -> Run {
    let mut arguments = vec![command, "--card", card, "--pin", pin];
    arguments.extend_from_slice(rest);
    atm(server, &arguments).await
}

/// `atm --json COMMAND --operator-token TOKEN --card CARD REST…`.
async fn operator(server: &str, command: &str, card: &str, rest: &[&str]) -> Run {
    let mut arguments = vec![command, "--operator-token", OPERATOR_TOKEN, "--card", card];
    arguments.extend_from_slice(rest);
    atm(server, &arguments).await
}

/// An approved reply carrying both balances.
fn approved(balance: u64, available: u64) -> Value {
    json!({"status": "approved", "balance": balance, "available_balance": available})
}

/// A transfer leaves the sender at once and reaches the receiver; both balances show it, through
/// `atm balance` and in the committed state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_moves_money_from_one_card_to_the_other() {
    let server = TestServer::start();
    let address = server.address();
    let sent = on_card(
        &address,
        "transfer",
        JOTY_CARD,
        "1234",
        &["--to", AHONA_CARD, "--amount", "300"],
    )
    .await;
    sent.expect(0, approved(9_700, 9_700));
    eventually("the transfer reaches Ahona", || {
        server.committed_balance(AHONA) == Some(5_300)
    })
    .await;
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
    on_card(&address, "balance", AHONA_CARD, "5678", &[])
        .await
        .expect(0, approved(5_300, 5_300));
    on_card(&address, "balance", JOTY_CARD, "1234", &[])
        .await
        .expect(0, approved(9_700, 9_700));

    // More than the available balance: refused, nothing moves.
    let too_much = on_card(
        &address,
        "transfer",
        JOTY_CARD,
        "1234",
        &["--to", AHONA_CARD, "--amount", "20000"],
    )
    .await;
    too_much.expect(
        1,
        json!({"status": "insufficient_funds", "balance": 9_700, "available_balance": 9_700}),
    );
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
}

/// A hold leaves the available balance only; completing it for less posts that much and
/// releases the rest; a voided hold gives its amount back to the available balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_then_complete_for_less_and_hold_then_void() {
    let server = TestServer::start();
    let address = server.address();
    let held = on_card(&address, "hold", JOTY_CARD, "1234", &["--amount", "400"]).await;
    assert_eq!(held.code, Some(0), "{held:?}");
    let printed = held.json();
    let hold_id = printed["hold_id"].as_u64().expect("a hold_id");
    assert_eq!(
        printed,
        json!({"status": "approved", "hold_id": hold_id, "balance": 10_000,
               "available_balance": 9_600})
    );
    let hold = hold_id.to_string();
    on_card(
        &address,
        "complete-hold",
        JOTY_CARD,
        "1234",
        &["--hold-id", &hold, "--amount", "250"],
    )
    .await
    .expect(0, approved(9_750, 9_750));
    assert_eq!(server.committed_balance(JOTY), Some(9_750));
    // Completed already: a second completion is refused.
    let again = on_card(
        &address,
        "complete-hold",
        JOTY_CARD,
        "1234",
        &["--hold-id", &hold],
    )
    .await;
    assert_eq!(again.code, Some(1), "{again:?}");
    assert_eq!(again.json()["status"], "hold_resolved", "{again:?}");

    let held = on_card(&address, "hold", JOTY_CARD, "1234", &["--amount", "100"]).await;
    let printed = held.json();
    assert_eq!(printed["available_balance"], 9_650, "{printed}");
    assert_eq!(printed["balance"], 9_750, "{printed}");
    let second = printed["hold_id"].as_u64().expect("a hold_id");
    assert_ne!(second, hold_id);
    let second = second.to_string();
    on_card(
        &address,
        "void-hold",
        JOTY_CARD,
        "1234",
        &["--hold-id", &second],
    )
    .await
    .expect(0, approved(9_750, 9_750));
    let unknown = on_card(
        &address,
        "void-hold",
        JOTY_CARD,
        "1234",
        &["--hold-id", "999999"],
    )
    .await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert_eq!(unknown.json()["status"], "unknown_hold", "{unknown:?}");
    assert_eq!(server.committed_account(JOTY).held(), 0);
    // The journal took the void: changes are still acknowledged.
    on_card(&address, "deposit", JOTY_CARD, "1234", &["--amount", "5"])
        .await
        .expect(0, approved(9_755, 9_755));
    assert_eq!(server.committed_balance(JOTY), Some(9_755));
}

/// A withdrawal reversed in part (`--amount` = what was dispensed) gives back the rest; the
/// statement then lists every movement in order, its request id, and balances that add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_in_part_and_the_statement_of_the_movements() {
    let server = TestServer::start();
    let address = server.address();
    on_card(
        &address,
        "withdraw",
        JOTY_CARD,
        "1234",
        &["--amount", "500", "--request-id", "41:1"],
    )
    .await
    .expect(0, approved(9_500, 9_500));
    on_card(
        &address,
        "reverse",
        JOTY_CARD,
        "1234",
        &[
            "--original",
            "41:1",
            "--amount",
            "200",
            "--request-id",
            "41:2",
        ],
    )
    .await
    .expect(0, approved(9_800, 9_800));
    assert_eq!(server.committed_balance(JOTY), Some(9_800));
    on_card(
        &address,
        "deposit",
        JOTY_CARD,
        "1234",
        &["--amount", "70", "--request-id", "41:3"],
    )
    .await
    .expect(0, approved(9_870, 9_870));

    let statement = on_card(&address, "statement", JOTY_CARD, "1234", &[]).await;
    assert_eq!(statement.code, Some(0), "{statement:?}");
    let printed = statement.json();
    assert_eq!(printed["status"], "approved", "{printed}");
    let movements = printed["movements"].as_array().expect("movements");
    let seen: Vec<(&str, u64, u64)> = movements
        .iter()
        .map(|movement| {
            (
                movement["kind"].as_str().expect("a kind"),
                movement["amount"].as_u64().expect("an amount"),
                movement["balance_after"].as_u64().expect("a balance"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("opened", 10_000, 10_000),
            ("withdrawal", 500, 9_500),
            ("reversal", 300, 9_800),
            ("deposit", 70, 9_870),
        ],
        "{printed}"
    );
    let ids: Vec<&str> = movements[1..]
        .iter()
        .map(|movement| movement["request_id"].as_str().expect("a request id"))
        .collect();
    assert_eq!(ids, ["41:1", "41:2", "41:3"], "{printed}");
    for movement in movements {
        let fields: Vec<&String> = movement.as_object().expect("an object").keys().collect();
        assert_eq!(
            fields,
            ["amount", "balance_after", "kind", "request_id", "time"],
            "{movement}"
        );
        assert!(movement["time"].as_u64().is_some(), "{movement}");
    }
    let times: Vec<u64> = movements
        .iter()
        .map(|movement| movement["time"].as_u64().expect("a time"))
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");

    // --count keeps the newest.
    let last_two = on_card(&address, "statement", JOTY_CARD, "1234", &["--count", "2"])
        .await
        .json();
    assert_eq!(last_two["movements"].as_array().map(Vec::len), Some(2));
    assert_eq!(last_two["movements"][1]["kind"], "deposit", "{last_two}");
}

/// A fixed --request-id replayed from a second process prints the same line and moves money
/// once, for a transfer and for a reversal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_request_ids_replayed_move_money_once() {
    let server = TestServer::start();
    let address = server.address();
    let transfer = [
        "--to",
        AHONA_CARD,
        "--amount",
        "250",
        "--request-id",
        "42:1",
    ];
    let first = on_card(&address, "transfer", JOTY_CARD, "1234", &transfer).await;
    first.expect(0, approved(9_750, 9_750));
    eventually("the transfer reaches Ahona", || {
        server.committed_balance(AHONA) == Some(5_250)
    })
    .await;
    let second = on_card(&address, "transfer", JOTY_CARD, "1234", &transfer).await;
    assert_eq!(second, first);
    assert_eq!(server.committed_balance(JOTY), Some(9_750));
    assert!(server.committed_account(JOTY).outbox().is_empty());
    assert_eq!(server.committed_balance(AHONA), Some(5_250));
    let incoming = on_card(&address, "statement", AHONA_CARD, "5678", &[]).await;
    let kinds: Vec<Value> = incoming.json()["movements"]
        .as_array()
        .expect("movements")
        .iter()
        .map(|movement| movement["kind"].clone())
        .collect();
    assert_eq!(kinds, [json!("opened"), json!("transfer_in")]);

    on_card(
        &address,
        "withdraw",
        JOTY_CARD,
        "1234",
        &["--amount", "1000", "--request-id", "42:2"],
    )
    .await
    .expect(0, approved(8_750, 8_750));
    let reverse = [
        "--original",
        "42:2",
        "--amount",
        "400",
        "--request-id",
        "42:3",
    ];
    let first = on_card(&address, "reverse", JOTY_CARD, "1234", &reverse).await;
    first.expect(0, approved(9_350, 9_350));
    let second = on_card(&address, "reverse", JOTY_CARD, "1234", &reverse).await;
    assert_eq!(second, first);
    assert_eq!(server.committed_balance(JOTY), Some(9_350));
    // Another reversal of the same original (a new id) is approved and moves nothing.
    on_card(
        &address,
        "reverse",
        JOTY_CARD,
        "1234",
        &["--original", "42:2", "--request-id", "42:4"],
    )
    .await
    .expect(0, approved(9_350, 9_350));
    assert_eq!(server.committed_balance(JOTY), Some(9_350));
}

/// Freeze refuses a withdrawal until unfrozen; close-account is refused while money is left and
/// approved at zero; account-info prints every field; set-limits makes a withdrawal over the
/// limit refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_manages_accounts() {
    let server = TestServer::start();
    let address = server.address();
    let withdraw = |amount: &'static str| ["--amount", amount];
    operator(&address, "freeze", AHONA_CARD, &[])
        .await
        .expect(0, json!({"status": "approved"}));
    let frozen = on_card(&address, "withdraw", AHONA_CARD, "5678", &withdraw("10")).await;
    assert_eq!(frozen.code, Some(1), "{frozen:?}");
    assert_eq!(frozen.json()["status"], "account_frozen", "{frozen:?}");
    operator(&address, "unfreeze", AHONA_CARD, &[])
        .await
        .expect(0, json!({"status": "approved"}));
    on_card(&address, "withdraw", AHONA_CARD, "5678", &withdraw("10"))
        .await
        .expect(0, approved(4_990, 4_990));

    let not_empty = operator(&address, "close-account", AHONA_CARD, &[]).await;
    not_empty.expect(
        1,
        json!({"status": "balance_not_zero", "balance": 4_990, "available_balance": 4_990}),
    );
    on_card(&address, "withdraw", AHONA_CARD, "5678", &withdraw("4990"))
        .await
        .expect(0, approved(0, 0));
    operator(&address, "close-account", AHONA_CARD, &[])
        .await
        .expect(0, approved(0, 0));
    let closed = on_card(&address, "deposit", AHONA_CARD, "5678", &withdraw("10")).await;
    assert_eq!(closed.code, Some(1), "{closed:?}");
    assert_eq!(closed.json()["status"], "account_closed", "{closed:?}");

    operator(
        &address,
        "set-limits",
        JOTY_CARD,
        &["--daily-amount", "100", "--daily-count", "5"],
    )
    .await
    .expect(0, json!({"status": "approved"}));
    on_card(&address, "withdraw", JOTY_CARD, "1234", &withdraw("60"))
        .await
        .expect(0, approved(9_940, 9_940));
    let over = on_card(&address, "withdraw", JOTY_CARD, "1234", &withdraw("50")).await;
    over.expect(
        1,
        json!({"status": "withdrawal_limit_exceeded", "balance": 9_940,
               "available_balance": 9_940}),
    );
    assert_eq!(server.committed_balance(JOTY), Some(9_940));

    operator(&address, "account-info", JOTY_CARD, &[])
        .await
        .expect(
            0,
            json!({
                "status": "approved",
                "card": JOTY,
                "holder": "Joty",
                "state": "open",
                "locked": false,
                "pin_failures": 0,
                "balance": 9_940,
                "available_balance": 9_940,
                "holds": 0,
                "in_transit": 0,
                "daily_amount_limit": 100,
                "daily_count_limit": 5,
                "own_limits": true,
                "withdrawn_today": 60,
                "withdrawals_today": 1,
            }),
        );
    let info = operator(&address, "account-info", AHONA_CARD, &[])
        .await
        .json();
    assert_eq!(info["state"], "closed", "{info}");
    assert_eq!(info["own_limits"], false, "{info}");
    assert_eq!(info["daily_amount_limit"], u64::MAX, "{info}");
    assert_eq!(info["daily_count_limit"], u32::MAX, "{info}");

    let wrong = atm(
        &address,
        &["freeze", "--operator-token", "wrong", "--card", JOTY_CARD],
    )
    .await;
    wrong.expect(1, json!({"status": "not_authorised"}));
}

/// What a run of `atm` printed on both streams, and its exit code.
fn run_with_stderr(server: &str, arguments: &[&str], stdin: &str) -> (String, String, i32) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_atm"))
        .arg("--server")
        .arg(server)
        .args(arguments)
        .env_remove("BANK_SERVER")
        .env_remove("BANK_OPERATOR_TOKEN")
        .env_remove("BANK_PIN")
        .env_remove("BANK_TLS_CA")
        .env("RUST_LOG", "off")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.code().expect("an exit code"),
    )
}

/// A missing --to or a malformed --original exits with the usage code (2), sends nothing, and
/// names what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_with_the_usage_code_and_say_why() {
    let server = TestServer::start();
    let address = server.address();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "transfer", "--card", JOTY_CARD, "--pin", "1234", "--amount", "5",
            ],
            "--to",
        ),
        (
            &[
                "reverse",
                "--card",
                JOTY_CARD,
                "--pin",
                "1234",
                "--original",
                "12",
            ],
            "not CLIENT:SEQUENCE",
        ),
        (
            &[
                "reverse",
                "--card",
                JOTY_CARD,
                "--pin",
                "1234",
                "--original",
                "x:1",
            ],
            "not a decimal u64",
        ),
        (
            &["set-limits", "--card", JOTY_CARD, "--daily-amount", "5"],
            "--daily-count",
        ),
    ];
    for (arguments, why) in cases {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(arguments);
        let (stdout, stderr, code) = run_with_stderr(&address, &with_json, "");
        assert_eq!(code, 2, "{arguments:?}: {stderr}");
        assert_eq!(stdout, "", "{arguments:?}");
        assert!(stderr.contains(why), "{arguments:?}: {stderr}");
    }
    assert_eq!(server.committed_balance(JOTY), Some(10_000));
}

/// The menu offers the new operations: a transfer, a hold, a statement and the operator's
/// account details, in one session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_menu_transfers_holds_and_prints_a_statement() {
    let server = TestServer::start();
    let address = server.address();
    let input = format!(
        "1\n{JOTY_CARD}\n1234\nt\n{AHONA_CARD}\n300\nh\n200\ns\n10\ni\n{OPERATOR_TOKEN}\n{AHONA_CARD}\n0\n"
    );
    let task_address = address.clone();
    let (stdout, stderr, code) =
        tokio::task::spawn_blocking(move || run_with_stderr(&task_address, &[], &input))
            .await
            .unwrap();
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let answers: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once("=> ").map(|(_, answer)| answer))
        .collect();
    assert_eq!(answers.len(), 5, "{stdout}");
    assert_eq!(answers[0], "approved", "{stdout}");
    assert_eq!(
        answers[1], "approved: balance 9700, available 9700",
        "{stdout}"
    );
    assert!(
        answers[2].starts_with("approved: hold ")
            && answers[2].ends_with(", balance 9700, available 9500"),
        "{stdout}"
    );
    assert!(answers[3].starts_with("approved: 2 movements"), "{stdout}");
    assert!(
        answers[4].starts_with("approved: card 987654321 (Ahona), open"),
        "{stdout}"
    );
    assert!(stdout.contains("t) transfer"), "{stdout}");
    eventually("the transfer reaches Ahona", || {
        server.committed_balance(AHONA) == Some(5_300)
    })
    .await;
    assert_eq!(server.committed_balance(JOTY), Some(9_700));
}

/// A hold nobody resolves expires by the bank's clock: its amount is available again, and the
/// journal goes on acknowledging changes after the expiry's record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_hold_is_available_again() {
    let clock = std::sync::Arc::new(actor_bank::clock::ManualClock::default());
    let server_clock = clock.clone();
    let server = TestServer::start_with(|config| {
        config.clock = server_clock;
        config.banking.hold_ttl = std::time::Duration::from_secs(60);
    });
    let address = server.address();
    let held = on_card(&address, "hold", JOTY_CARD, "1234", &["--amount", "400"]).await;
    assert_eq!(held.json()["available_balance"], 9_600, "{held:?}");
    clock.advance(std::time::Duration::from_secs(61));
    let stats = server.running().bank().stats();
    eventually("the hold expires", || {
        stats
            .holds_expired
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    on_card(&address, "balance", JOTY_CARD, "1234", &[])
        .await
        .expect(0, approved(10_000, 10_000));
    on_card(&address, "deposit", JOTY_CARD, "1234", &["--amount", "5"])
        .await
        .expect(0, approved(10_005, 10_005));
    assert_eq!(server.committed_account(JOTY).held(), 0);
}
