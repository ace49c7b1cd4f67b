//! What happens when durability is lost, and that a dead log reader cannot cause it:
//! - with the server binary's standard error a closed pipe, a malformed frame still gets its
//!   Goodbye, a journal write failure answers the pending withdrawal `unavailable` and says why
//!   on standard output, and SIGTERM still ends the process with status 0;
//! - a journal writer that panics fails the journal closed instead of leaving waiters hanging;
//! - after the journal failed closed, every Verify is answered `unavailable` whatever the PIN, a
//!   connection verified before keeps its balance inquiries, and the data directory stays locked
//!   until the server stops.
mod common;

use actor_bank::journal::files::{FileLayer, FullDisk, OsFiles, SegmentFile};
use actor_bank::journal::{Journal, JournalError};
use actor_bank::protocol::{Body, ServerMessage, Status};
use actor_bank::server::RunningServer;
use common::durability::*;
use common::{decode_server_frames, hello_frame, request_frame, verify, withdraw, JOTY, JOTY_PIN};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bound on every wait: far above what any step needs; it only keeps a broken server from
/// hanging the test.
const PATIENCE: Duration = Duration::from_secs(30);

/// `bank-server` on `data_dir` with `extra` flags, its standard error a pipe whose reading end
/// is already closed (a log reader that died). Returns the child, its address and its stdout;
/// the caller ends it with [`terminate`].
#[allow(clippy::zombie_processes)]
fn start_with_closed_stderr(
    data_dir: &Path,
    extra: &[&str],
) -> (Child, String, BufReader<ChildStdout>) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(server_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--demo"])
        .args(["--pin-hash-memory-kib", "8", "--pin-hash-iterations", "1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(writer)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bank-server exited before listening");
        }
        if let Some(address) = line.trim().strip_prefix("bank-server listening on ") {
            return (child, address.to_string(), stdout);
        }
    }
}

/// Sends SIGTERM and waits (bounded) for the exit; returns whether it exited with status 0.
fn terminate(mut child: Child) -> bool {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let give_up = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > give_up {
            child.kill().unwrap();
            panic!("bank-server did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking connection that has said Hello and read its Welcome.
struct Connection {
    stream: TcpStream,
    received: Vec<u8>,
}

impl Connection {
    fn open(address: &str) -> Connection {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut connection = Connection {
            stream,
            received: Vec::new(),
        };
        connection.stream.write_all(&hello_frame()).unwrap();
        assert!(matches!(connection.next(), Some(ServerMessage::Welcome(_))));
        connection
    }

    /// The next message, or `None` once the server closed the connection.
    fn next(&mut self) -> Option<ServerMessage> {
        loop {
            let mut messages = decode_server_frames(&mut self.received);
            if !messages.is_empty() {
                // One at a time: put the rest back in front.
                let first = messages.remove(0);
                let mut rest: Vec<u8> = Vec::new();
                for message in messages {
                    rest.extend(actor_bank::codec::encode_frame(&message).unwrap());
                }
                rest.extend(std::mem::take(&mut self.received));
                self.received = rest;
                return Some(first);
            }
            let mut buffer = [0; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => return None,
                Ok(read) => self.received.extend_from_slice(&buffer[..read]),
                Err(error) => panic!("no answer within {PATIENCE:?}: {error}"),
            }
        }
    }

    /// Sends request `client:sequence` and returns the status and body of its reply.
    fn call(
        &mut self,
        client: u64,
        sequence: u64,
        operation: actor_bank::protocol::Operation,
    ) -> (Status, Body) {
        self.stream
            .write_all(&request_frame(client, sequence, operation))
            .unwrap();
        match self.next() {
            Some(ServerMessage::Reply(reply)) => (reply.status, reply.body),
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

// Purpose: a log line that cannot be written never stops the server from ending a bad connection
// properly: the malformed frame is answered with a Goodbye, and the server serves on.
#[test]
fn with_stderr_closed_a_malformed_frame_still_gets_its_goodbye() {
    let directory = tempfile::tempdir().unwrap();
    let (child, address, _stdout) = start_with_closed_stderr(directory.path(), &[]);
    for _ in 0..3 {
        let mut connection = Connection::open(&address);
        connection
            .stream
            .write_all(&[0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff])
            .unwrap();
        let mut goodbye = false;
        while let Some(message) = connection.next() {
            goodbye |= matches!(message, ServerMessage::Goodbye(_));
        }
        assert!(goodbye, "the connection closed without a Goodbye");
    }
    let mut connection = Connection::open(&address);
    assert_eq!(
        connection.call(5, 1, verify(JOTY, JOTY_PIN)).0,
        Status::Approved
    );
    assert!(
        terminate(child),
        "SIGTERM did not end the server with status 0"
    );
}

// Purpose: with standard error closed, a journal write failure still answers the waiting
// withdrawal `unavailable` (the writer never dies silently), the reason appears on standard
// output, and SIGTERM then ends the server with status 0.
#[test]
fn with_stderr_closed_a_journal_failure_answers_unavailable_and_sigterm_exits_zero() {
    let directory = tempfile::tempdir().unwrap();
    // The demo accounts are opened on a healthy disk first.
    let (child, _, _) = start_with_closed_stderr(directory.path(), &[]);
    assert!(terminate(child));
    let (child, address, mut stdout) =
        start_with_closed_stderr(directory.path(), &["--journal-fail-after-bytes", "0"]);
    let mut connection = Connection::open(&address);
    assert_eq!(
        connection.call(5, 1, verify(JOTY, JOTY_PIN)).0,
        Status::Approved
    );
    assert_eq!(connection.call(5, 2, withdraw(100)).0, Status::Unavailable);
    assert_eq!(connection.call(5, 3, withdraw(100)).0, Status::Unavailable);
    let mut line = String::new();
    while !line.contains("journal failed closed") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no failure notice on stdout"
        );
    }
    assert!(line.contains("no space left"), "{line}");
    assert!(
        terminate(child),
        "SIGTERM did not end the server with status 0"
    );
}

/// A file layer whose segment writes panic, as a bug in the writer would.
struct PanickingFiles;

struct PanickingSegment;

impl SegmentFile for PanickingSegment {
    fn write_all(&mut self, _: &[u8]) -> std::io::Result<()> {
        panic!("a bug in the writer");
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FileLayer for PanickingFiles {
    fn create_new(&self, path: &Path, growth: u64) -> std::io::Result<Box<dyn SegmentFile>> {
        OsFiles.create_new(path, growth)
    }
    fn open_append(&self, _: &Path, _: u64, _: u64) -> std::io::Result<Box<dyn SegmentFile>> {
        Ok(Box::new(PanickingSegment))
    }
}

// Purpose: if the writer thread ends by a panic, the journal fails closed with that reason:
// the waiter is released with an error and later appends are refused.
#[test]
fn a_panicking_writer_fails_the_journal_closed() {
    let model = standard_model(4);
    let directory = tempfile::tempdir().unwrap();
    write_journal(directory.path(), &model.records[..2], 1_000_000);
    let mut config = journal_config(directory.path(), 1_000_000);
    config.files = Arc::new(PanickingFiles);
    let journal = Journal::open(config).unwrap();
    let lsn = journal.append(model.records[2].clone()).unwrap();
    let reason = futures::executor::block_on(journal.wait_durable(lsn)).unwrap_err();
    assert!(reason.contains("panicked"), "{reason}");
    assert!(reason.contains("a bug in the writer"), "{reason}");
    assert!(journal.append(model.records[3].clone()).is_err());
    journal.close();
    let journal = Journal::open(journal_config(directory.path(), 1_000_000)).unwrap();
    assert_eq!(committed(&journal), model.ledger_after(2));
    journal.close();
}

// Purpose: after the journal failed closed, a Verify is `unavailable` whatever the PIN (a wrong
// PIN could not be counted, so the answer must not depend on it), a connection verified before
// still gets its balance from the committed ledger, and no second server can open the directory
// until this one stops.
#[test]
fn after_failing_closed_verify_is_unavailable_balances_answer_and_the_directory_stays_locked() {
    let directory = tempfile::tempdir().unwrap();
    RunningServer::start(common::test_config(directory.path()))
        .unwrap()
        .stop();
    let mut journal_config = journal_config(directory.path(), 1_000_000);
    journal_config.files = Arc::new(FullDisk::new(0));
    let server =
        RunningServer::start_with_journal(common::test_config(directory.path()), journal_config)
            .unwrap();
    let address = server.local_addr.to_string();
    let mut verified = Connection::open(&address);
    assert_eq!(
        verified.call(5, 1, verify(JOTY, JOTY_PIN)).0,
        Status::Approved
    );
    assert_eq!(verified.call(5, 2, withdraw(100)).0, Status::Unavailable);
    assert!(server.bank().storage().failure().is_some());

    let mut other = Connection::open(&address);
    assert_eq!(
        other.call(6, 1, verify(JOTY, JOTY_PIN)).0,
        Status::Unavailable
    );
    assert_eq!(
        other.call(6, 2, verify(JOTY, "9999")).0,
        Status::Unavailable
    );
    assert_eq!(
        verified.call(5, 3, actor_bank::protocol::Operation::Balance),
        (Status::Approved, common::balances(10_000))
    );
    match Journal::open(actor_bank::journal::JournalConfig::new(directory.path())) {
        Err(JournalError::Locked { .. }) => {}
        Err(other) => panic!("expected Locked, got {other}"),
        Ok(_) => panic!("a second journal opened while the failed server runs"),
    }
    server.stop();
    let journal = Journal::open(actor_bank::journal::JournalConfig::new(directory.path())).unwrap();
    assert_eq!(journal.committed_account(JOTY).unwrap().balance, 10_000);
    journal.close();
}
