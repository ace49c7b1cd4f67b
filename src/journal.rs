//! The journal: the single ordered log every state change goes through, with group commit.
//!
//! The file journal is a [`Log`]: [`FileJournal`], opened through [`Storage::open_files`] (or
//! [`Journal::open`], the same). Appending gives a record the next position ([`Lsn`]) and queues
//! it; it never blocks on I/O. One writer thread takes everything queued, writes it with one
//! `write`, makes it durable with one `fdatasync`, applies it to the [`CommittedState`] and only
//! then publishes the new durable position, which releases the replies waiting in
//! [`Storage::wait_durable`]. While the
//! writer syncs, new records pile up and go out together next time: batches grow with load and a
//! lone record is written at once, with no timer.
//!
//! The committed state is the only state that has reached the disk. Account actors load from it
//! when they start or restart after a crash, and snapshots are taken from it.
//!
//! If a write or sync fails the journal *fails closed*: it stops, every waiting and future request
//! gets an error, and nothing more is acknowledged (a failed `fsync` cannot be retried safely).
//!
//! docs/JOURNAL.md documents the files byte by byte; the rules are implemented in [`recovery`].

pub mod files;
pub mod format;
pub mod recovery;

use crate::clock::{Clock, SystemClock};
use crate::ledger::{Ledger, Lsn, Record};
use crate::storage::{CommittedState, Log, Storage, SHUTTING_DOWN};
use files::{FileLayer, SegmentFile};
use parking_lot::{Condvar, Mutex};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

pub use crate::storage::{AppendError, JournalStats, Progress, WRITER_STOPPED};

/// The name the server and the tests know the storage by: a [`Storage`], whose
/// [`Journal::open`] opens the file journal.
pub type Journal = Storage;

/// Permissions of the data directory: the owner's only.
pub const DIRECTORY_MODE: u32 = 0o700;

/// How recovery treats damage after the newest segment's last whole batch (docs/JOURNAL.md,
/// section 9).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum RecoveryMode {
    /// After a clean shutdown (a close marker), as [`RecoveryMode::Strict`]; otherwise cut a
    /// tail only when it has the exact shape of a write interrupted by a power loss.
    #[default]
    Auto,
    /// Never cut: any tail that is not clean refuses the start.
    Strict,
    /// The operator's `--accept-cut`: cut whatever follows the newest segment's last whole
    /// batch, and say exactly what was dropped. Damage anywhere else is still refused.
    #[value(skip)]
    #[serde(skip)]
    AcceptCut,
}

/// Settings of the journal.
#[derive(Clone)]
pub struct JournalConfig {
    /// Where segments and snapshots live.
    pub data_dir: PathBuf,
    /// Records that may wait for the writer; beyond this [`Storage::append`] answers
    /// [`AppendError::Busy`] instead of queueing without bound.
    pub queue_records_max: usize,
    /// A snapshot is taken (and older segments dropped) once this many records were written since
    /// the last one.
    pub snapshot_records_interval: u64,
    /// A snapshot is also taken once the current segment reaches this many bytes.
    pub segment_bytes_max: u64,
    /// Clients with no completed request for this long are forgotten at the next snapshot.
    pub client_retention: Duration,
    /// How files are written; tests substitute a layer that fails on purpose.
    pub files: Arc<dyn FileLayer>,
    /// How recovery treats a damaged tail.
    pub recovery: RecoveryMode,
    /// Where the wall-clock time that decides which clients are idle comes from.
    pub clock: Arc<dyn Clock>,
}

impl JournalConfig {
    /// The default of [`JournalConfig::queue_records_max`].
    pub const QUEUE_RECORDS_MAX_DEFAULT: usize = 64 * 1024;

    /// Defaults for a data directory on the real file system.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            data_dir: data_dir.into(),
            queue_records_max: Self::QUEUE_RECORDS_MAX_DEFAULT,
            snapshot_records_interval: 1_000_000,
            segment_bytes_max: 256 * 1024 * 1024,
            client_retention: Duration::from_secs(24 * 60 * 60),
            files: Arc::new(files::OsFiles),
            recovery: RecoveryMode::Auto,
            clock: Arc::new(SystemClock::default()),
        }
    }
}

/// Errors of opening the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading or writing the data directory failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Another process has the data directory open.
    #[error("{path}: the data directory is in use by another bank-server process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The data directory could be changed by someone other than its owner, who could then
    /// plant or swap journal files.
    #[error("{path}: refusing an unsafe data directory: {reason}")]
    Unsafe {
        /// The data directory.
        path: PathBuf,
        /// What is wrong, and how to fix it.
        reason: String,
    },
    /// A file is damaged in a way recovery must not paper over.
    #[error("{path}: corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

impl JournalError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

struct Queue {
    /// The position the next record gets.
    next_lsn: Lsn,
    /// Records waiting for the writer, in position order.
    pending: Vec<(Lsn, Record)>,
    /// Set once the writer failed; appends are refused from then on.
    failed: Option<Arc<str>>,
    /// Set by [`Log::close`]: the writer drains the queue and stops.
    closing: bool,
    /// True while the writer sleeps on the condition variable. Appends made while it is busy
    /// writing need not wake it (it takes the whole queue when it comes back), which saves a
    /// system call per record under load.
    writer_sleeping: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake_writer: Condvar,
    progress: watch::Sender<Progress>,
    /// The state each durable batch is applied to before its progress is published.
    committed: Arc<CommittedState>,
    queue_records_max: usize,
    /// The data directory, open and locked until [`Log::close`] has written everything (or the
    /// last handle is dropped): even a journal that failed closed keeps a second server out
    /// while this process still answers from its committed ledger.
    lock: Mutex<Option<std::fs::File>>,
    /// What recovery cut from the newest segment's tail, if anything.
    cut: Option<String>,
}

/// The file journal: the [`Log`] that keeps records in segment files in the data directory.
pub struct FileJournal {
    /// What the appenders and the writer thread share.
    shared: Arc<Shared>,
    /// The writer thread, until [`Log::close`] joins it.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl FileJournal {
    /// Recovers the data directory (see [`recovery`]) and starts the writer; returns the journal
    /// and the committed state it applies to.
    ///
    /// The directory is locked first: two servers appending to one journal would interleave
    /// their records, so a second one is refused.
    pub fn open(
        config: JournalConfig,
    ) -> Result<(Arc<FileJournal>, Arc<CommittedState>), JournalError> {
        let lock = prepare_directory(&config.data_dir)?;
        let recovered = recovery::recover(&config)?;
        let durable = recovered.ledger.applied_lsn;
        let committed = Arc::new(CommittedState::new(recovered.ledger));
        let (progress, _) = watch::channel(Progress::Durable(durable));
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                next_lsn: durable + 1,
                pending: Vec::new(),
                failed: None,
                closing: false,
                writer_sleeping: false,
            }),
            wake_writer: Condvar::new(),
            progress,
            committed: committed.clone(),
            queue_records_max: config.queue_records_max,
            lock: Mutex::new(Some(lock)),
            cut: recovered.cut,
        });
        crate::metrics::set_gauge(crate::metrics::JOURNAL_FAILED, 0.0);
        let writer = Writer {
            shared: shared.clone(),
            segment: recovered.segment,
            segment_ref: recovered.segment_ref,
            segment_bytes: recovered.segment_bytes,
            records_since_snapshot: recovered.records_after_snapshot,
            snapshotter: None,
            config,
        };
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer.run_guarded())
            .map_err(|error| JournalError::io(Path::new("journal-writer thread"), error))?;
        let journal = FileJournal {
            shared,
            writer: Mutex::new(Some(handle)),
        };
        Ok((Arc::new(journal), committed))
    }
}

impl Log for FileJournal {
    /// Queued under one lock, the records reach the disk in one batch, under one seal.
    fn append_batch(&self, records: Vec<Record>) -> Result<Lsn, AppendError> {
        let mut queue = self.shared.queue.lock();
        if let Some(reason) = &queue.failed {
            return Err(AppendError::Unavailable(reason.clone()));
        }
        if queue.closing {
            return Err(AppendError::Unavailable(SHUTTING_DOWN.into()));
        }
        if queue.pending.len() + records.len() > self.shared.queue_records_max {
            return Err(AppendError::Busy);
        }
        for record in records {
            let lsn = queue.next_lsn;
            queue.next_lsn += 1;
            queue.pending.push((lsn, record));
        }
        let last = queue.next_lsn - 1;
        let wake = queue.writer_sleeping;
        drop(queue);
        if wake {
            self.shared.wake_writer.notify_one();
        }
        Ok(last)
    }

    fn head(&self) -> Lsn {
        self.shared.queue.lock().next_lsn - 1
    }

    fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.shared.queue.lock().failed.clone()
    }

    fn close(&self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake_writer.notify_one();
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("the journal writer panicked");
            }
        }
        // Everything is written: another server may have the directory now.
        release(self.shared.lock.lock().take());
    }

    fn cut(&self) -> Option<String> {
        self.shared.cut.clone()
    }
}

/// Lets go of the data directory's lock. The lock is unlocked explicitly rather than left to the
/// closing of the file: a process being started elsewhere in this program holds a copy of every
/// open descriptor between its fork and its exec, and would keep the lock alive for that moment,
/// so a server started right after this one stopped could find the directory still locked.
fn release(lock: Option<std::fs::File>) {
    if let Some(file) = lock {
        if let Err(error) = file.unlock() {
            tracing::warn!(%error, "cannot unlock the data directory");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        release(self.lock.get_mut().take());
    }
}

/// Makes the data directory ready and locks it; returns the open, locked directory.
///
/// The directory is created owner-only if missing. An existing one must belong to this process's
/// user and be writable by no one else (whoever can write it can plant or swap journal files);
/// read and search bits for others are taken away, and so are those on the journal's own files
/// (they hold PIN hashes). The lock is an exclusive `flock` on the directory itself, not on a file in
/// it: deleting or replacing a file cannot defeat it, and it disappears with the process however
/// the process ends.
fn prepare_directory(directory: &Path) -> Result<std::fs::File, JournalError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let io = |error| JournalError::io(directory, error);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(directory)
        .map_err(io)?;
    let unsafe_directory = |reason: String| JournalError::Unsafe {
        path: directory.to_path_buf(),
        reason,
    };
    let metadata = std::fs::metadata(directory).map_err(io)?;
    if !metadata.is_dir() {
        return Err(unsafe_directory("not a directory".into()));
    }
    let owner = rustix::process::geteuid().as_raw();
    if metadata.uid() != owner {
        return Err(unsafe_directory(format!(
            "it belongs to user {}, not to user {owner} who runs the server (chown it, or run              the server as its owner)",
            metadata.uid()
        )));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(unsafe_directory(format!(
            "its mode is {mode:03o}: writable by its group or by everyone (chmod 700 it)"
        )));
    }
    let handle = std::fs::File::open(directory).map_err(io)?;
    match handle.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(JournalError::Locked {
                path: directory.to_path_buf(),
            })
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
    }
    if mode != DIRECTORY_MODE {
        std::fs::set_permissions(directory, std::fs::Permissions::from_mode(DIRECTORY_MODE))
            .map_err(io)?;
        tracing::info!(path = %directory.display(), "data directory made owner-only (700)");
    }
    for entry in std::fs::read_dir(directory).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = ["journal-", "snapshot-", format::CLOSED_FILE_NAME, "LOCK"]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        let metadata = entry
            .metadata()
            .map_err(|error| JournalError::io(&path, error))?;
        if ours && metadata.is_file() && metadata.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(files::FILE_MODE))
                .map_err(|error| JournalError::io(&path, error))?;
        }
    }
    Ok(handle)
}

/// Writes `image` as the snapshot at its position, naming `next` as the segment that follows
/// it, and removes the files it covers; returns the position and the snapshot's size.
fn write_snapshot(
    image: &Ledger,
    next: format::SegmentRef,
    directory: &Path,
    files: &dyn FileLayer,
) -> Result<(Lsn, usize), String> {
    let lsn = image.applied_lsn;
    let bytes = format::encode_snapshot(image, next)
        .map_err(|error| format!("cannot encode snapshot: {error}"))?;
    let temporary = directory.join(format::snapshot_temporary_name(lsn));
    let path = directory.join(format::snapshot_name(lsn));
    recovery::write_atomically(files, &temporary, &path, &bytes)
        .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    recovery::remove_covered_files(files, directory, lsn)
        .map_err(|error| format!("cannot remove covered files: {error}"))?;
    Ok((lsn, bytes.len()))
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    config: JournalConfig,
    segment: Box<dyn SegmentFile>,
    /// Which segment that is.
    segment_ref: format::SegmentRef,
    /// Where its records end.
    segment_bytes: u64,
    records_since_snapshot: u64,
    /// The snapshot being written, if any.
    snapshotter: Option<JoinHandle<Result<(Lsn, usize), String>>>,
}

impl Writer {
    /// Runs the writer; if it ends in any other way than a clean close or a failure it reported
    /// itself (a panic), the journal fails closed with that reason, so no waiter is left hanging
    /// and nothing more is acknowledged.
    fn run_guarded(mut self) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run()));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            self.fail(format!("the journal writer panicked: {message}"));
        }
    }

    /// Records that the journal was closed cleanly, so the next start can tell exactly where it
    /// must end. Failing to write the marker loses nothing: the next start then treats the stop
    /// as unclean.
    fn write_close_marker(&self) {
        let marker = format::ClosedMarker {
            segment: self.segment_ref,
            end_offset: self.segment_bytes,
            last_lsn: self.shared.committed.applied_lsn(),
        };
        let directory = &self.config.data_dir;
        let written = recovery::write_atomically(
            self.config.files.as_ref(),
            &directory.join(format::CLOSED_TEMPORARY_NAME),
            &directory.join(format::CLOSED_FILE_NAME),
            &format::encode_closed(&marker),
        );
        match written {
            Ok(()) => tracing::info!(lsn = marker.last_lsn, "journal closed cleanly"),
            Err(error) => tracing::warn!(%error, "cannot write the close marker"),
        }
    }

    fn run(&mut self) {
        let mut buffer = Vec::new();
        loop {
            let batch = {
                let mut queue = self.shared.queue.lock();
                while queue.pending.is_empty() && !queue.closing {
                    queue.writer_sleeping = true;
                    self.shared.wake_writer.wait(&mut queue);
                    queue.writer_sleeping = false;
                }
                if queue.pending.is_empty() {
                    drop(queue);
                    match self.finish_snapshot() {
                        Ok(()) => self.write_close_marker(),
                        Err(reason) => self.fail(reason),
                    }
                    return;
                }
                std::mem::take(&mut queue.pending)
            };
            if let Err(reason) = self.commit(&batch, &mut buffer) {
                self.fail(reason);
                return;
            }
            // A snapshot that failed means the disk is failing: notice it at once.
            if self
                .snapshotter
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                if let Err(reason) = self.finish_snapshot() {
                    self.fail(reason);
                    return;
                }
            }
            if self.records_since_snapshot >= self.config.snapshot_records_interval
                || self.segment_bytes >= self.config.segment_bytes_max
            {
                if let Err(reason) = self.snapshot() {
                    self.fail(reason);
                    return;
                }
            }
        }
    }

    /// Writes, syncs and applies one batch, then publishes its last position.
    fn commit(&mut self, batch: &[(Lsn, Record)], buffer: &mut Vec<u8>) -> Result<(), String> {
        buffer.clear();
        for (lsn, record) in batch {
            format::encode_record(*lsn, record, buffer)
                .map_err(|error| format!("cannot encode record {lsn}: {error}"))?;
        }
        // The seal repeats the batch's extent and checksum after its records, in the same write
        // and sync: a batch whose seal is on disk arrived whole, so damage inside it is rot.
        if let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) {
            let records_crc = format::checksum(buffer);
            format::encode_seal(records_crc, *first, *last, buffer);
        }
        let started = std::time::Instant::now();
        self.segment
            .write_all(buffer)
            .map_err(|error| format!("journal write failed: {error}"))?;
        self.segment
            .sync_data()
            .map_err(|error| format!("journal fdatasync failed: {error}"))?;
        crate::metrics::journal_batch(batch.len(), started.elapsed());
        self.segment_bytes += buffer.len() as u64;
        self.records_since_snapshot += batch.len() as u64;
        self.shared
            .committed
            .apply_batch(batch)
            .map_err(|error| format!("durable record does not apply: {error}"))?;
        if let Some((last, _)) = batch.last() {
            self.shared.progress.send_replace(Progress::Durable(*last));
        }
        Ok(())
    }

    /// Starts a snapshot of the committed ledger, unless one is still being written.
    ///
    /// The writer only copies the ledger and starts a new segment after it; a thread of its own
    /// encodes the copy, writes it to a temporary file, syncs it, renames it into place, syncs
    /// the directory, and only then removes the segments and snapshots it covers. Commits go on
    /// meanwhile. A crash at any step leaves either the old snapshot with every segment after
    /// it, or the new snapshot with the new segment: recovery finds a complete history either
    /// way. docs/JOURNAL.md walks through each step.
    fn snapshot(&mut self) -> Result<(), String> {
        if let Some(running) = &self.snapshotter {
            if !running.is_finished() {
                return Ok(());
            }
        }
        self.finish_snapshot()?;
        let retention_ms = self.config.client_retention.as_millis() as u64;
        let cutoff = self.config.clock.unix_ms().saturating_sub(retention_ms);
        // Only this thread applies batches, so nothing changes between forgetting and copying:
        // the write lock is held for the forgetting alone, the copy is taken under the read lock.
        let forgotten = self.shared.committed.forget_clients_idle_since(cutoff);
        if forgotten > 0 {
            tracing::info!(forgotten, "forgot idle clients");
        }
        let image = self.shared.committed.image();
        let lsn = image.applied_lsn;
        let directory = self.config.data_dir.clone();
        let files = self.config.files.clone();
        let next = format::SegmentRef::new(lsn + 1);
        self.segment =
            recovery::create_segment(files.as_ref(), &directory, next, Some(self.segment_ref))
                .map_err(|error| format!("cannot start segment: {error}"))?;
        self.segment_ref = next;
        self.segment_bytes = format::SEGMENT_HEADER_BYTES as u64;
        self.records_since_snapshot = 0;
        let thread = std::thread::Builder::new()
            .name("journal-snapshot".into())
            .spawn(move || write_snapshot(&image, next, &directory, files.as_ref()))
            .map_err(|error| format!("cannot start the snapshot thread: {error}"))?;
        self.snapshotter = Some(thread);
        Ok(())
    }

    /// Waits for the snapshot being written, if any, and reports how it went. A snapshot that
    /// failed lost nothing (its segments are all still there), but it means the disk is failing,
    /// so the journal fails closed.
    fn finish_snapshot(&mut self) -> Result<(), String> {
        match self.snapshotter.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(Ok((lsn, bytes)))) => {
                tracing::info!(lsn, bytes, "snapshot written");
                Ok(())
            }
            Some(Ok(Err(reason))) => Err(reason),
            Some(Err(_)) => Err("the snapshot thread panicked".into()),
        }
    }

    fn fail(&mut self, reason: String) {
        crate::metrics::set_gauge(crate::metrics::JOURNAL_FAILED, 1.0);
        tracing::error!(%reason, "journal failed closed: no further changes will be acknowledged");
        // A snapshot still being written must finish (or fail) before the journal counts as
        // stopped: it may still be removing files.
        if let Some(snapshot) = self.snapshotter.take() {
            let _ = snapshot.join();
        }
        let reason: Arc<str> = reason.into();
        let mut queue = self.shared.queue.lock();
        queue.failed = Some(reason.clone());
        queue.pending.clear();
        drop(queue);
        self.shared.progress.send_replace(Progress::Failed(reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ledger::{Decision, Event};
    use crate::model::RequestId;

    fn opening(card: u64, client: u64, at_unix_ms: u64) -> Record {
        let event = Event::AccountOpened {
            holder: "Clock".into(),
            pin_hash: crate::pin::hash("1234", crate::pin::PinHashCost::MINIMUM).unwrap(),
            initial_balance: 10,
        };
        let request = RequestId {
            client,
            sequence: 1,
        };
        match crate::ledger::decide(
            None,
            card,
            request,
            event,
            crate::ledger::At {
                unix_ms: at_unix_ms,
                business_day: 0,
            },
            &crate::ledger::Policy::default(),
        ) {
            Decision::Record(record) => record,
            Decision::Answer(outcome) => panic!("refused: {outcome:?}"),
        }
    }

    fn remembers(storage: &Storage, client: u64) -> bool {
        storage
            .committed_clients()
            .values()
            .any(|clients| clients.windows.contains_key(&client))
    }

    // Purpose: which clients a snapshot forgets is decided by the journal's clock, not the
    // system's: on a manual clock that stands still a client stamped long ago (by the system's
    // clock) is kept; once the manual clock has moved past the retention, it is forgotten.
    #[tokio::test]
    async fn a_snapshot_forgets_clients_idle_by_the_journals_clock() {
        let directory = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let mut config = JournalConfig::new(directory.path());
        config.snapshot_records_interval = 2;
        config.client_retention = Duration::from_secs(60 * 60);
        config.clock = clock.clone();
        let journal = Journal::open(config).unwrap();
        let start = ManualClock::UNIX_MS_START;
        for card in 1..=3 {
            // The snapshot starts after the second batch; the third is taken once it has.
            journal.append(opening(card, card, start)).unwrap();
            journal.wait_all_durable().await.unwrap();
        }
        assert!(remembers(&journal, 1), "the manual clock has not moved");
        clock.advance(Duration::from_secs(2 * 60 * 60));
        let now = clock.unix_ms();
        // A snapshot still being written defers the next one by a batch: give it a few.
        for card in 4..=40 {
            journal.append(opening(card, card, now)).unwrap();
            journal.wait_all_durable().await.unwrap();
            if !remembers(&journal, 1) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!remembers(&journal, 1), "idle for two hours by the clock");
        assert!(remembers(&journal, 4));
        journal.close();
    }
}
