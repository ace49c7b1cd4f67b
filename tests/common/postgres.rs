//! A PostgreSQL server of a test's own, and a TCP proxy that cuts PostgreSQL connections at chosen
//! moments.
//!
//! `PrivatePostgres` runs `initdb` in a temporary directory and starts `postgres` on a free port of
//! 127.0.0.1, so a test needs no database set up beforehand and never touches another server on
//! the machine. PostgreSQL refuses to run as root: when the tests run as root the server runs as
//! the `postgres` system user, or `nobody` when there is none. `CuttingProxy` sits between a
//! client and that server and can drop a connection right after it forwarded a `COMMIT`, before
//! the reply comes back: the moment at which a client cannot know whether its transaction
//! committed.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a server may take to accept connections after it was started (a crashed server
/// replays its write-ahead log first).
pub const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fast shutdown may take before the server is killed.
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a starting server is asked whether it is ready.
pub const SERVER_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How many free ports a first start tries before it gives up (another process may take the port
/// between the moment it is picked and the moment the server binds it).
pub const PORT_ATTEMPTS: usize = 5;
/// How many lines of the server log a failed start shows.
pub const LOG_TAIL_LINES: usize = 40;
/// The database superuser `initdb` creates; the tests connect as it, without a password.
pub const DATABASE_USER: &str = "bank";
/// The database every private server gets, besides PostgreSQL's own.
pub const DATABASE_NAME: &str = "bank";
/// The server's connection limit: many nodes with connection pools share one server in tests.
pub const MAX_CONNECTIONS: u32 = 200;
/// How long `psql` may take to connect (through a paused proxy, it waits until resumed).
pub const PSQL_CONNECT_TIMEOUT_SECONDS: u32 = 60;
/// The parent of Debian's versioned PostgreSQL installations (`<version>/bin`).
const DEBIAN_INSTALL_ROOT: &str = "/usr/lib/postgresql";
/// The users a root test process runs the server as, in order of preference.
const UNPRIVILEGED_USERS: [&str; 2] = ["postgres", "nobody"];
/// The loopback address every server and proxy listens on.
const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The PostgreSQL programs a private server needs, all from one installation when possible.
#[derive(Debug, Clone)]
struct Tools {
    initdb: PathBuf,
    postgres: PathBuf,
    pg_isready: PathBuf,
    psql: PathBuf,
}

impl Tools {
    /// Finds `initdb` on PATH or in the newest Debian installation, then the other programs
    /// beside it (the same version), on PATH, or in the newest Debian installation.
    fn find() -> Tools {
        install_when_missing();
        let initdb = find_program("initdb", None);
        let installation = fs::canonicalize(&initdb)
            .ok()
            .and_then(|real| real.parent().map(Path::to_path_buf));
        let beside = installation.as_deref();
        Tools {
            postgres: find_program("postgres", beside),
            pg_isready: find_program("pg_isready", beside),
            psql: find_program("psql", beside),
            initdb,
        }
    }
}

/// Installs Debian's PostgreSQL packages once per test process when `initdb` is nowhere to be
/// found, as root or through `sudo -n`, so that `cargo test` passes on a fresh machine. Several
/// test processes may try at once: apt waits for its own lock. Nothing happens when PostgreSQL
/// is there, or when there is no way to install it (the search then says what to install).
fn install_when_missing() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let present = std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(debian_bin_directories())
            .any(|directory| is_executable(&directory.join("initdb")));
        if present {
            return;
        }
        let root = rustix::process::geteuid().is_root();
        let sudo_works = || {
            std::process::Command::new("sudo")
                .args(["-n", "true"])
                .status()
                .is_ok_and(|status| status.success())
        };
        let prefix: &[&str] = if root {
            &[]
        } else if sudo_works() {
            &["sudo", "-n"]
        } else {
            return;
        };
        let run = |arguments: &[&str]| {
            let mut command: Vec<&str> = prefix.to_vec();
            command.extend_from_slice(arguments);
            std::process::Command::new(command[0])
                .args(&command[1..])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        let install = [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-qq",
            "postgresql",
            "postgresql-client",
        ];
        if !run(&install) {
            let _ = run(&["apt-get", "-o", "DPkg::Lock::Timeout=600", "update", "-qq"]);
            let _ = run(&install);
        }
    });
}

/// The path of `name`: in `preferred` when it is there, else on PATH, else in the newest
/// `/usr/lib/postgresql/<version>/bin` that has it. Panics with how to install PostgreSQL.
fn find_program(name: &str, preferred: Option<&Path>) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = preferred
        .into_iter()
        .map(Path::to_path_buf)
        .chain(on_path)
        .chain(debian_bin_directories());
    for directory in candidates {
        let candidate = directory.join(name);
        if is_executable(&candidate) {
            return candidate;
        }
    }
    panic!(
        "PostgreSQL's `{name}` is neither on PATH nor in {DEBIAN_INSTALL_ROOT}/<version>/bin; \
         these tests start a private PostgreSQL server: install it with \
         `apt-get install postgresql postgresql-client` (or put its bin directory on PATH)"
    );
}

/// Debian's `/usr/lib/postgresql/<version>/bin` directories, newest version first.
fn debian_bin_directories() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(DEBIAN_INSTALL_ROOT) else {
        return Vec::new();
    };
    let mut versions: Vec<(Vec<u64>, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u64>().ok())
                .collect::<Option<Vec<u64>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions.into_iter().rev().map(|(_, bin)| bin).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The system user a root test process runs PostgreSQL as.
#[derive(Debug, Clone)]
struct UnprivilegedUser {
    name: String,
    uid: u32,
    gid: u32,
}

/// `None` when the test process is not root (the server then runs as the current user), else
/// the first of `UNPRIVILEGED_USERS` that exists. Panics when root has none of them.
fn server_user() -> Option<UnprivilegedUser> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    for wanted in UNPRIVILEGED_USERS {
        for line in passwd.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() < 4 || fields[0] != wanted {
                continue;
            }
            if let (Ok(uid), Ok(gid)) = (fields[2].parse(), fields[3].parse()) {
                return Some(UnprivilegedUser {
                    name: wanted.to_string(),
                    uid,
                    gid,
                });
            }
        }
    }
    panic!(
        "the tests run as root and PostgreSQL refuses to: none of the users {UNPRIVILEGED_USERS:?} \
         exists to run it as (installing `postgresql` creates the `postgres` user)"
    );
}

/// Why a server did not come up.
#[derive(Debug)]
enum StartFailure {
    /// The server exited on its own (a port taken by someone else, a data directory still locked
    /// by a killed server's last processes, a broken configuration).
    Exited(ExitStatus),
    /// The server did not accept connections within `SERVER_READY_TIMEOUT`.
    TimedOut,
    /// The server could not be spawned at all.
    Spawn(std::io::Error),
}

/// A PostgreSQL server of the test's own: its data directory, socket directory and log live in a
/// temporary directory removed when it is dropped; it listens on 127.0.0.1 on a port picked free.
/// The superuser `bank` connects without a password and the database `bank` exists.
pub struct PrivatePostgres {
    root: TempDir,
    data: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    tools: Tools,
    user: Option<UnprivilegedUser>,
    port: u16,
    server: Option<Child>,
}

impl PrivatePostgres {
    /// Creates a database cluster, starts its server on a free port, waits until it accepts
    /// connections and creates the database `bank`. Panics, with the server log's tail, when
    /// any step fails.
    pub fn new() -> PrivatePostgres {
        let tools = Tools::find();
        let user = server_user();
        let root = tempfile::Builder::new()
            .prefix("private-postgres-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        // The server's user must be able to enter the directory to reach its own subdirectories.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755))
            .expect("the temporary directory opened to PostgreSQL's user");
        let data = root.path().join("data");
        let socket = root.path().join("socket");
        let log = root.path().join("server.log");
        for directory in [&data, &socket] {
            fs::create_dir(directory).expect("a directory for PostgreSQL");
            fs::set_permissions(directory, fs::Permissions::from_mode(0o700))
                .expect("PostgreSQL's directory private");
            if let Some(user) = &user {
                std::os::unix::fs::chown(directory, Some(user.uid), Some(user.gid))
                    .expect("PostgreSQL's directory given to its user");
            }
        }
        let mut postgres = PrivatePostgres {
            root,
            data,
            socket,
            log,
            tools,
            user,
            port: 0,
            server: None,
        };
        postgres.initdb();
        postgres.start_on_free_port();
        postgres.psql_in("postgres", &format!("CREATE DATABASE {DATABASE_NAME}"));
        postgres
    }

    /// The URL a client connects with: `postgres://bank@127.0.0.1:PORT/bank`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{DATABASE_USER}@{LOOPBACK}:{}/{DATABASE_NAME}",
            self.port
        )
    }

    /// The TCP port the server listens on; it stays the same across `stop` and `start`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's TCP address, for a `CuttingProxy` to forward to.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from((LOOPBACK, self.port))
    }

    /// Whether the server process is running (started and neither stopped nor killed).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The user the server runs as: `None` for the test process's own user.
    pub fn server_user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|user| user.name.as_str())
    }

    /// The server's log file (both the first start and every restart append to it).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `LOG_TAIL_LINES` lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Starts the server again on the same data directory and port, after `stop` or `kill`, and
    /// waits until it accepts connections (after a kill it first recovers from its write-ahead
    /// log). Retries while the port or the data directory is still held, up to
    /// `SERVER_READY_TIMEOUT`.
    pub fn start(&mut self) {
        assert!(self.server.is_none(), "the private PostgreSQL already runs");
        let deadline = Instant::now() + SERVER_READY_TIMEOUT;
        loop {
            match self.launch(self.port, deadline) {
                Ok(child) => {
                    self.server = Some(child);
                    return;
                }
                Err(StartFailure::Exited(_)) if Instant::now() < deadline => {
                    thread::sleep(SERVER_POLL_INTERVAL);
                }
                Err(failure) => self.fail_start(&failure),
            }
        }
    }

    /// Stops the server with a fast shutdown (open sessions are ended, committed work is kept)
    /// and waits until its process exited; kills it when it takes longer than
    /// `SERVER_STOP_TIMEOUT`.
    pub fn stop(&mut self) {
        if let Some(child) = self.server.take() {
            let pid = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            if wait_for_exit(child, SERVER_STOP_TIMEOUT).is_none() {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }

    /// Kills the server's main process with SIGKILL, as a crash would, and reaps it. Its other
    /// processes notice and exit by themselves; `start` recovers the data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs `sql` in the database `bank` with `psql` and returns its output: unaligned rows, one
    /// a line, fields separated by `|`, no headers. Panics when `psql` fails.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(DATABASE_NAME, sql)
    }

    /// Runs `sql` in the database `bank` and returns what `psql` did, failure included.
    pub fn try_psql(&self, sql: &str) -> Output {
        self.psql_command(self.address())
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql runs")
    }

    /// A `psql` command connecting to the database `bank` at `address` (the server's own, or a
    /// proxy's), quiet and unaligned, stopping at the first error; add `-c SQL` arguments.
    pub fn psql_command(&self, address: SocketAddr) -> Command {
        self.psql_command_in(address, DATABASE_NAME)
    }

    fn psql_command_in(&self, address: SocketAddr, database: &str) -> Command {
        let mut command = Command::new(&self.tools.psql);
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(address.ip().to_string())
            .arg("-p")
            .arg(address.port().to_string())
            .args(["-U", DATABASE_USER, "-d", database])
            .env(
                "PGCONNECT_TIMEOUT",
                PSQL_CONNECT_TIMEOUT_SECONDS.to_string(),
            )
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::null());
        command
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        let output = self
            .psql_command_in(self.address(), database)
            .arg("-c")
            .arg(sql)
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql failed on {sql:?}: {}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A command for a server program, run as the server's user in the temporary directory.
    fn server_command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.root.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some(user) = &self.user {
            command.uid(user.uid).gid(user.gid);
        }
        command
    }

    fn initdb(&self) {
        let output = self
            .server_command(&self.tools.initdb)
            .arg("-D")
            .arg(&self.data)
            .args([
                "--auth=trust",
                &format!("--username={DATABASE_USER}"),
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
                // Only initdb's own final flush of the fresh files; the server runs with fsync on.
                "--no-sync",
            ])
            .output()
            .expect("initdb runs");
        assert!(
            output.status.success(),
            "initdb failed (as {}):\n{}\n{}",
            self.server_user_name().unwrap_or("the current user"),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn start_on_free_port(&mut self) {
        let mut last_failure = None;
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port();
            let deadline = Instant::now() + SERVER_READY_TIMEOUT;
            match self.launch(self.port, deadline) {
                Ok(child) => {
                    self.server = Some(child);
                    return;
                }
                Err(StartFailure::Exited(status)) => {
                    last_failure = Some(StartFailure::Exited(status));
                }
                Err(failure) => self.fail_start(&failure),
            }
        }
        if let Some(failure) = last_failure {
            self.fail_start(&failure);
        }
    }

    fn fail_start(&self, failure: &StartFailure) -> ! {
        panic!(
            "the private PostgreSQL on port {} did not start ({failure:?}, running as {}); \
             server log {}:\n{}",
            self.port,
            self.server_user_name().unwrap_or("the current user"),
            self.log.display(),
            self.log_tail()
        );
    }

    /// Spawns the server on `port` and waits until it is ready or gone.
    fn launch(&self, port: u16, deadline: Instant) -> Result<Child, StartFailure> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(StartFailure::Spawn)?;
        let log_for_errors = log.try_clone().map_err(StartFailure::Spawn)?;
        let mut child = self
            .server_command(&self.tools.postgres)
            .arg("-D")
            .arg(&self.data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&self.socket)
            .args(["-c", &format!("listen_addresses={LOOPBACK}")])
            .args(["-c", "fsync=on"])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
            .stdout(log)
            .stderr(log_for_errors)
            .spawn()
            .map_err(StartFailure::Spawn)?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(StartFailure::Exited(status));
            }
            if self.is_ready(&child, port) {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(StartFailure::TimedOut);
            }
            thread::sleep(SERVER_POLL_INTERVAL);
        }
    }

    /// Whether `child` itself (not another server on the port) accepts connections: its lock
    /// file names it and says `ready`, and `pg_isready` agrees.
    fn is_ready(&self, child: &Child, port: u16) -> bool {
        let Ok(lock) = fs::read_to_string(self.data.join("postmaster.pid")) else {
            return false;
        };
        let lines: Vec<&str> = lock.lines().collect();
        let ours = lines.first().map(|pid| pid.trim()) == Some(&child.id().to_string());
        let ready = lines.get(7).map(|status| status.trim()) == Some("ready");
        ours && ready
            && Command::new(&self.tools.pg_isready)
                .arg("-h")
                .arg(LOOPBACK.to_string())
                .arg("-p")
                .arg(port.to_string())
                .args(["-U", DATABASE_USER, "-d", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|status| status.success())
                .unwrap_or(false)
    }
}

impl Default for PrivatePostgres {
    fn default() -> Self {
        PrivatePostgres::new()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
        // The temporary directory goes with `root`.
    }
}

/// A port of 127.0.0.1 free at the moment of the call.
fn free_port() -> u16 {
    TcpListener::bind((LOOPBACK, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port on 127.0.0.1")
}

/// Waits for `child` to exit, up to `timeout`; `None` when it still runs (it is then waited for
/// by a thread of its own).
fn wait_for_exit(mut child: Child, timeout: Duration) -> Option<ExitStatus> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let _ = sender.send(child.wait());
    });
    receiver.recv_timeout(timeout).ok().and_then(Result::ok)
}

/// The longest startup message PostgreSQL accepts; a longer "length" means the stream is not
/// PostgreSQL's plain protocol (TLS, for one).
pub const STARTUP_LENGTH_LIMIT: usize = 10_000;
/// The longest frontend message PostgreSQL accepts.
pub const MESSAGE_LENGTH_LIMIT: usize = 1 << 30;
/// How many bytes a forwarding thread reads at once.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The request code of an SSLRequest: the server answers with one byte, then a startup follows.
const SSL_REQUEST_CODE: u32 = 80_877_103;
/// The request code of a GSSENCRequest: like an SSLRequest.
const GSSENC_REQUEST_CODE: u32 = 80_877_104;
/// The type byte of a frontend simple-query message.
const SIMPLE_QUERY_TYPE: u8 = b'Q';

/// Where a connection's client→server stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrontendPhase {
    /// Untyped, length-prefixed messages: SSLRequest, GSSENCRequest, the startup message,
    /// CancelRequest.
    Startup,
    /// Typed messages: a type byte, a length, a body.
    Messages,
    /// Not PostgreSQL's plain protocol (the session switched to TLS): forwarded as it comes.
    Opaque,
}

/// One complete client→server message, and whether it is a simple query `COMMIT`.
struct FrontendMessage {
    bytes: Vec<u8>,
    commit: bool,
}

/// Splits a client→server byte stream into PostgreSQL frontend messages.
struct FrontendParser {
    phase: FrontendPhase,
    pending: Vec<u8>,
}

impl FrontendParser {
    fn new() -> FrontendParser {
        FrontendParser {
            phase: FrontendPhase::Startup,
            pending: Vec::new(),
        }
    }

    /// Takes the next bytes from the client and returns the messages they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<FrontendMessage> {
        self.pending.extend_from_slice(bytes);
        let mut messages = Vec::new();
        loop {
            match self.phase {
                FrontendPhase::Opaque => {
                    if !self.pending.is_empty() {
                        messages.push(FrontendMessage {
                            bytes: std::mem::take(&mut self.pending),
                            commit: false,
                        });
                    }
                    return messages;
                }
                FrontendPhase::Startup => {
                    let Some(length) = read_length(&self.pending, 0) else {
                        return messages;
                    };
                    if !(8..=STARTUP_LENGTH_LIMIT).contains(&length) {
                        self.phase = FrontendPhase::Opaque;
                        continue;
                    }
                    if self.pending.len() < length {
                        return messages;
                    }
                    let code = read_length(&self.pending, 4).unwrap_or_default() as u32;
                    if code != SSL_REQUEST_CODE && code != GSSENC_REQUEST_CODE {
                        self.phase = FrontendPhase::Messages;
                    }
                    messages.push(FrontendMessage {
                        bytes: self.pending.drain(..length).collect(),
                        commit: false,
                    });
                }
                FrontendPhase::Messages => {
                    let Some(length) = read_length(&self.pending, 1) else {
                        return messages;
                    };
                    if !(4..=MESSAGE_LENGTH_LIMIT).contains(&length) {
                        self.phase = FrontendPhase::Opaque;
                        continue;
                    }
                    if self.pending.len() < 1 + length {
                        return messages;
                    }
                    let bytes: Vec<u8> = self.pending.drain(..1 + length).collect();
                    let commit = bytes[0] == SIMPLE_QUERY_TYPE && is_commit(&bytes[5..]);
                    messages.push(FrontendMessage { bytes, commit });
                }
            }
        }
    }
}

/// The big-endian 32-bit integer at `offset`, when the bytes are there.
fn read_length(bytes: &[u8], offset: usize) -> Option<usize> {
    let field: [u8; 4] = bytes.get(offset..offset + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(field) as usize)
}

/// Whether a simple query's NUL-terminated text is `COMMIT` (any case, surrounding blanks and a
/// final semicolon allowed).
fn is_commit(body: &[u8]) -> bool {
    let text = body.split(|byte| *byte == 0).next().unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    let text = text.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    text.eq_ignore_ascii_case("COMMIT")
}

/// One client connection through the proxy and its connection to the server.
struct ProxiedConnection {
    client: TcpStream,
    server: TcpStream,
    closed: AtomicBool,
    /// Held while bytes go to the client, and while a cut forwards its COMMIT: no reply can slip
    /// through between the COMMIT and the cut.
    reply_gate: Mutex<()>,
}

impl ProxiedConnection {
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct ProxyState {
    paused: bool,
    commits_until_cut: Option<u64>,
    commits_forwarded: u64,
    cuts: u64,
    next_connection: u64,
    connections: HashMap<u64, Arc<ProxiedConnection>>,
}

struct ProxyShared {
    target: SocketAddr,
    state: Mutex<ProxyState>,
    resumed: Condvar,
    stopping: AtomicBool,
}

impl ProxyShared {
    fn state(&self) -> MutexGuard<'_, ProxyState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait_while_paused(&self, connection: &ProxiedConnection) {
        let mut state = self.state();
        while state.paused && !connection.is_closed() && !self.stopping.load(Ordering::SeqCst) {
            state = self
                .resumed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Counts a forwarded COMMIT; true (and the cut counted) when it is the one to cut after.
    fn commit_cuts(&self) -> bool {
        let mut state = self.state();
        state.commits_forwarded += 1;
        match state.commits_until_cut {
            Some(remaining) if remaining <= 1 => {
                state.commits_until_cut = None;
                state.cuts += 1;
                true
            }
            Some(remaining) => {
                state.commits_until_cut = Some(remaining - 1);
                false
            }
            None => false,
        }
    }

    fn forget(&self, id: u64) {
        if let Some(connection) = self.state().connections.remove(&id) {
            connection.close();
        }
    }
}

/// A TCP proxy in front of a PostgreSQL server that forwards bytes both ways and, on demand,
/// cuts a connection right after forwarding a COMMIT (before the server's reply reaches the
/// client), cuts every connection, or holds all traffic without closing anything.
pub struct CuttingProxy {
    address: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

impl CuttingProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> CuttingProxy {
        let listener = TcpListener::bind((LOOPBACK, 0)).expect("a port for the proxy");
        let address = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(ProxyShared {
            target,
            state: Mutex::new(ProxyState::default()),
            resumed: Condvar::new(),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_connections(&listener, &accepting));
        CuttingProxy {
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to instead of the server's.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Arms a one-shot cut: the `n`-th simple-query `COMMIT` forwarded from now on, on any
    /// connection, is followed at once by closing both sides of its connection. `n` = 0 disarms.
    pub fn cut_after_commit(&self, n: u64) {
        self.shared.state().commits_until_cut = (n > 0).then_some(n);
    }

    /// How many connections `cut_after_commit` has cut.
    pub fn cuts(&self) -> u64 {
        self.shared.state().cuts
    }

    /// How many simple-query `COMMIT` messages the proxy has forwarded.
    pub fn commits_forwarded(&self) -> u64 {
        self.shared.state().commits_forwarded
    }

    /// How many connections are open through the proxy.
    pub fn open_connections(&self) -> usize {
        self.shared.state().connections.len()
    }

    /// Closes both sides of every open connection now.
    pub fn cut_all(&self) {
        let connections: Vec<Arc<ProxiedConnection>> = {
            let mut state = self.shared.state();
            state.connections.drain().map(|(_, c)| c).collect()
        };
        for connection in connections {
            connection.close();
        }
        self.shared.resumed.notify_all();
    }

    /// Stops forwarding in both directions, without closing anything: bytes wait in the proxy
    /// until `resume`. New connections are still accepted (and wait as well).
    pub fn pause(&self) {
        self.shared.state().paused = true;
    }

    /// Forwards again what `pause` held, and everything after it.
    pub fn resume(&self) {
        self.shared.state().paused = false;
        self.shared.resumed.notify_all();
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.cut_all();
        // Wakes the acceptor from `accept` so it sees `stopping`.
        let _ = TcpStream::connect(self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_connections(listener: &TcpListener, shared: &Arc<ProxyShared>) {
    for client in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(shared.target) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let connection = Arc::new(ProxiedConnection {
            client,
            server,
            closed: AtomicBool::new(false),
            reply_gate: Mutex::new(()),
        });
        let id = {
            let mut state = shared.state();
            let id = state.next_connection;
            state.next_connection += 1;
            state.connections.insert(id, Arc::clone(&connection));
            id
        };
        let (upstream_shared, upstream) = (Arc::clone(shared), Arc::clone(&connection));
        thread::spawn(move || {
            forward_client_to_server(&upstream_shared, &upstream);
            upstream_shared.forget(id);
        });
        let downstream_shared = Arc::clone(shared);
        thread::spawn(move || {
            forward_server_to_client(&downstream_shared, &connection);
            downstream_shared.forget(id);
        });
    }
}

/// Forwards the client's messages whole, and cuts the connection after the COMMIT it was asked
/// to cut after.
fn forward_client_to_server(shared: &ProxyShared, connection: &ProxiedConnection) {
    let mut parser = FrontendParser::new();
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = match (&connection.client).read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        shared.wait_while_paused(connection);
        if connection.is_closed() {
            return;
        }
        for message in parser.push(&chunk[..read]) {
            if message.commit && shared.commit_cuts() {
                let _gate = connection
                    .reply_gate
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let _ = (&connection.server).write_all(&message.bytes);
                connection.close();
                return;
            }
            if (&connection.server).write_all(&message.bytes).is_err() {
                return;
            }
        }
    }
}

/// Forwards the server's bytes as they come, unless the connection was cut.
fn forward_server_to_client(shared: &ProxyShared, connection: &ProxiedConnection) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        let read = match (&connection.server).read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        shared.wait_while_paused(connection);
        let _gate = connection
            .reply_gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if connection.is_closed() || (&connection.client).write_all(&chunk[..read]).is_err() {
            return;
        }
    }
}

/// Splits a client→server stream, given as the chunks it arrived in, the way the proxy does:
/// each complete message's bytes and whether it is a simple-query `COMMIT`. It exists so the
/// harness's own tests can check the parser without a server.
pub fn split_frontend_stream(chunks: &[&[u8]]) -> Vec<(Vec<u8>, bool)> {
    let mut parser = FrontendParser::new();
    chunks
        .iter()
        .flat_map(|chunk| parser.push(chunk))
        .map(|message| (message.bytes, message.commit))
        .collect()
}
