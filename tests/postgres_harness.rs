//! The private PostgreSQL server and the cutting proxy the cluster tests stand on: a server
//! starts, answers `psql`, keeps its rows across a stop, a crash and a restart; the proxy
//! forwards a session, holds it while paused, and cuts it right after a COMMIT.
#[path = "common/postgres.rs"]
mod postgres;

use postgres::{split_frontend_stream, CuttingProxy, PrivatePostgres};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a condition it expects.
const CONDITION_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a test looks at a condition it waits for.
const CONDITION_POLL: Duration = Duration::from_millis(20);
/// The SSLRequest code psql sends first.
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// Protocol version 3.0, the code of a startup message.
const PROTOCOL_3_CODE: u32 = 196_608;

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + CONDITION_TIMEOUT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(CONDITION_POLL);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn wait_output(child: Child) -> Output {
    child.wait_with_output().expect("psql finishes")
}

fn simple_query(text: &str) -> Vec<u8> {
    let mut message = vec![b'Q'];
    message.extend_from_slice(&((4 + text.len() + 1) as u32).to_be_bytes());
    message.extend_from_slice(text.as_bytes());
    message.push(0);
    message
}

fn untyped(code: u32, body: &[u8]) -> Vec<u8> {
    let mut message = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    message.extend_from_slice(&code.to_be_bytes());
    message.extend_from_slice(body);
    message
}

#[test]
fn the_proxy_finds_commits_in_messages_split_anywhere() {
    let mut stream = untyped(SSL_REQUEST_CODE, &[]);
    stream.extend(untyped(PROTOCOL_3_CODE, b"user\0bank\0\0"));
    // A COMMIT inside another statement's text is no COMMIT.
    stream.extend(simple_query("SELECT 'COMMIT'"));
    stream.extend(simple_query(" commit; "));
    stream.extend(simple_query("BEGIN; COMMIT"));
    for split in 1..stream.len() {
        let messages = split_frontend_stream(&[&stream[..split], &stream[split..]]);
        let commits: Vec<bool> = messages.iter().map(|(_, commit)| *commit).collect();
        assert_eq!(
            commits,
            [false, false, false, true, false],
            "split at {split}"
        );
        let forwarded: Vec<u8> = messages.into_iter().flat_map(|(bytes, _)| bytes).collect();
        assert_eq!(forwarded, stream, "split at {split}");
    }
}

#[test]
fn the_proxy_forwards_a_tls_stream_untouched() {
    let mut stream = untyped(SSL_REQUEST_CODE, &[]);
    // A TLS record header where a startup message's length would be.
    stream.extend([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, b'Q']);
    let messages = split_frontend_stream(&[&stream]);
    assert!(messages.iter().all(|(_, commit)| !commit));
    let forwarded: Vec<u8> = messages.into_iter().flat_map(|(bytes, _)| bytes).collect();
    assert_eq!(forwarded, stream);
}

#[test]
fn a_private_server_answers_psql() {
    let postgres = PrivatePostgres::new();
    assert_eq!(
        postgres.url(),
        format!("postgres://bank@127.0.0.1:{}/bank", postgres.port())
    );
    postgres.psql("CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL)");
    postgres.psql("INSERT INTO notes VALUES (1, 'one'), (2, 'two')");
    assert_eq!(
        postgres.psql("SELECT id, body FROM notes ORDER BY id"),
        "1|one\n2|two\n"
    );
    assert_eq!(postgres.psql("SELECT current_user").trim(), "bank");
    assert_eq!(postgres.psql("SHOW fsync").trim(), "on");
    assert_eq!(postgres.psql("SHOW max_connections").trim(), "200");
}

#[test]
fn a_stopped_server_starts_again_with_its_rows_on_its_port() {
    let mut postgres = PrivatePostgres::new();
    let port = postgres.port();
    postgres.psql("CREATE TABLE notes (id integer PRIMARY KEY)");
    postgres.psql("INSERT INTO notes VALUES (7)");
    postgres.stop();
    assert!(!postgres.is_running());
    assert!(!postgres.try_psql("SELECT 1").status.success());
    postgres.start();
    assert_eq!(postgres.port(), port);
    assert_eq!(postgres.psql("SELECT id FROM notes").trim(), "7");
}

#[test]
fn a_killed_server_recovers_its_committed_rows() {
    let mut postgres = PrivatePostgres::new();
    postgres.psql("CREATE TABLE notes (id integer PRIMARY KEY)");
    postgres.psql("INSERT INTO notes VALUES (1), (2), (3)");
    postgres.kill();
    postgres.start();
    assert_eq!(postgres.psql("SELECT count(*) FROM notes").trim(), "3");
}

#[test]
fn the_proxy_forwards_a_psql_session() {
    let postgres = PrivatePostgres::new();
    let proxy = CuttingProxy::start(postgres.address());
    let output = postgres
        .psql_command(proxy.address())
        .args(["-c", "CREATE TABLE notes (id integer PRIMARY KEY)"])
        .args([
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO notes VALUES (1)",
            "-c",
            "COMMIT",
        ])
        .args(["-c", "SELECT 40 + 2"])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "42");
    assert_eq!(proxy.commits_forwarded(), 1);
    assert_eq!(proxy.cuts(), 0);
    assert_eq!(postgres.psql("SELECT count(*) FROM notes").trim(), "1");
}

#[test]
fn the_proxy_cuts_a_session_right_after_its_commit() {
    let postgres = PrivatePostgres::new();
    postgres.psql("CREATE TABLE notes (id integer PRIMARY KEY)");
    let proxy = CuttingProxy::start(postgres.address());
    proxy.cut_after_commit(1);
    let output = postgres
        .psql_command(proxy.address())
        .args([
            "-c",
            "BEGIN",
            "-c",
            "INSERT INTO notes VALUES (1)",
            "-c",
            "COMMIT",
        ])
        .args(["-c", "SELECT 'after the commit'"])
        .output()
        .expect("psql runs");
    let stderr = text(&output.stderr);
    assert!(!output.status.success(), "psql did not notice the cut");
    assert!(
        stderr.contains("connection") || stderr.contains("closed"),
        "psql's complaint: {stderr}"
    );
    assert!(!text(&output.stdout).contains("after the commit"));
    assert_eq!(proxy.cuts(), 1);
    // The COMMIT reached the server: the row is there or not, but the server is fine.
    let rows = postgres.psql("SELECT count(*) FROM notes");
    assert!(matches!(rows.trim(), "0" | "1"), "{rows}");
    // The cut was one-shot: the next session goes through.
    let output = postgres
        .psql_command(proxy.address())
        .args(["-c", "BEGIN", "-c", "COMMIT", "-c", "SELECT 1"])
        .output()
        .expect("psql runs");
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(proxy.cuts(), 1);
}

#[test]
fn a_paused_proxy_holds_a_session_until_resumed() {
    let postgres = PrivatePostgres::new();
    let proxy = CuttingProxy::start(postgres.address());
    proxy.pause();
    let mut psql = postgres
        .psql_command(proxy.address())
        .args(["-c", "SELECT 'through'"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql starts");
    wait_until("psql is connected to the proxy", || {
        proxy.open_connections() == 1
    });
    // Nothing of the server reaches psql while paused, so it cannot have finished.
    assert!(psql.try_wait().expect("psql's state").is_none());
    proxy.resume();
    let output = wait_output(psql);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "through");
}

#[test]
fn cutting_every_connection_fails_a_held_session() {
    let postgres = PrivatePostgres::new();
    let proxy = CuttingProxy::start(postgres.address());
    proxy.pause();
    let psql = postgres
        .psql_command(proxy.address())
        // Without encryption to try, libpq gives up on a cut connection instead of trying again.
        .env("PGSSLMODE", "disable")
        .env("PGGSSENCMODE", "disable")
        .args(["-c", "SELECT 1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("psql starts");
    wait_until("psql is connected to the proxy", || {
        proxy.open_connections() == 1
    });
    proxy.cut_all();
    let output = wait_output(psql);
    assert!(!output.status.success());
    assert_eq!(proxy.open_connections(), 0);
    proxy.resume();
    let output = postgres
        .psql_command(proxy.address())
        .args(["-c", "SELECT 2"])
        .output()
        .expect("psql runs");
    assert_eq!(text(&output.stdout).trim(), "2", "{}", text(&output.stderr));
}
