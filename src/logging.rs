//! Logging that can never take the server down.
//!
//! Log lines go to standard error, but never directly from the thread that logs: each line is
//! handed to a bounded queue and one thread of its own, `log-writer`, writes them out. A log
//! reader that died, a restarted journald or a pipe nobody reads must not stop the bank, so:
//! - a line that finds the queue full is dropped, not waited for;
//! - a line standard error refuses (a closed pipe) is dropped, not turned into a panic (which,
//!   on the journal writer's thread, would end durability).
//!
//! Each dropped line is counted in [`crate::metrics::LOG_WRITE_FAILURES`] (and
//! [`write_failures`], in process).

use serde::{Deserialize, Serialize};
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::Duration;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Log lines that may wait for the `log-writer` thread; a line that finds the queue full is
/// dropped, so a blocked standard error costs at most this much memory and never a wait.
pub const LOG_LINES_QUEUED_MAX: usize = 4096;

/// How long [`flush`] waits for the queued lines to be written at exit.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Log writes that failed since the process started.
static WRITE_FAILURES: AtomicU64 = AtomicU64::new(0);

/// What the `log-writer` thread is asked to do.
enum Job {
    /// Write these bytes to standard error.
    Line(Vec<u8>),
    /// Report, on this channel, that every earlier line has been handled.
    Flush(SyncSender<()>),
}

/// The queue to the `log-writer` thread, started on first use.
static QUEUE: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();

/// How many log lines were dropped (queue full, or standard error refused them) since the
/// process started.
pub fn write_failures() -> u64 {
    WRITE_FAILURES.load(Ordering::Relaxed)
}

/// Counts one dropped line.
fn dropped() {
    WRITE_FAILURES.fetch_add(1, Ordering::Relaxed);
    crate::metrics::count(crate::metrics::LOG_WRITE_FAILURES);
}

fn queue() -> Option<&'static SyncSender<Job>> {
    QUEUE
        .get_or_init(|| {
            let (sender, receiver) = mpsc::sync_channel(LOG_LINES_QUEUED_MAX);
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_forever(receiver))
                .ok()
                .map(|_| sender)
        })
        .as_ref()
}

fn write_forever(receiver: Receiver<Job>) {
    let mut stderr = io::stderr();
    for job in receiver {
        match job {
            Job::Line(line) => {
                if stderr
                    .write_all(&line)
                    .and_then(|()| stderr.flush())
                    .is_err()
                {
                    dropped();
                }
            }
            Job::Flush(done) => {
                let _ = done.try_send(());
            }
        }
    }
}

/// Waits (at most [`FLUSH_TIMEOUT`]) until every line queued so far has been written or
/// dropped; the server calls it before it exits, so its last lines are not lost.
pub fn flush() {
    let Some(queue) = QUEUE.get().and_then(Option::as_ref) else {
        return;
    };
    let (done, on_done) = mpsc::sync_channel(1);
    if queue.try_send(Job::Flush(done)).is_ok() {
        let _ = on_done.recv_timeout(FLUSH_TIMEOUT);
    }
}

/// One log line being formatted; queued for the `log-writer` thread when dropped.
#[derive(Debug, Default)]
pub struct QueuedLine(Vec<u8>);

impl Write for QueuedLine {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let line = Job::Line(std::mem::take(&mut self.0));
        match queue().map(|queue| queue.try_send(line)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => dropped(),
        }
    }
}

/// The writer the log subscriber formats into: one [`QueuedLine`] per event.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueuedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for QueuedStderr {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> Self::Writer {
        QueuedLine::default()
    }
}

/// Writes one line to `out` (standard output or error) without ever panicking, unlike
/// `println!`/`eprintln!`; returns whether it was written. A failure is counted like a log line's.
pub fn say(mut out: impl Write, line: &str) -> bool {
    let written = writeln!(out, "{line}").and_then(|()| out.flush()).is_ok();
    if !written {
        dropped();
    }
    written
}

/// Logs to standard error through [`QueuedStderr`], filtered by `RUST_LOG` (default `info`), as
/// text or one JSON object per line. The subscriber's own reports of failed writes (which would
/// go to the same broken standard error, and panic there) are off: [`write_failures`] counts them.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(QueuedStderr)
        .log_internal_errors(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_that_fails_is_counted_not_raised() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let before = write_failures();
        assert!(!say(Broken, "lost"));
        assert!(write_failures() > before);
        assert!(say(Vec::new(), "kept"));
    }
}
