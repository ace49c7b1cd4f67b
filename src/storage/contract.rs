//! The contract every [`Log`](super::Log) must keep, checked over each implementation by one
//! generic test: positions follow the recovered head with no gap, batches are all or none,
//! progress reports what is durable, the committed state reads its writes once they are durable,
//! a failure refuses appends and releases waiters with its reason, and a closed log refuses
//! appends. A new backend gets a [`Backend`] here and a call to [`contract`].

use super::memory::MemoryLog;
use super::{AppendError, Progress, Storage, StorageStats};
use crate::journal::files::{FileLayer, OsFiles, SegmentFile};
use crate::journal::JournalConfig;
use crate::ledger::{self, Decision, Event, Ledger, Lsn, Record};
use crate::model::{Card, RequestId};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Records a log may hold waiting in these tests: small, so a batch can exceed it.
const QUEUE_RECORDS_MAX: usize = 8;

/// How long a waiter may take to be released before the test fails instead of hanging.
const RELEASE_WITHIN: Duration = Duration::from_secs(10);

/// One storage implementation under test.
trait Backend {
    /// Opens the storage; after a close, it continues where the last one stopped.
    fn open(&mut self) -> Storage;
    /// Makes the medium fail, as a dying disk would.
    fn break_medium(&self);
}

/// The in-memory log: reopening starts from the last storage's committed state.
#[derive(Default)]
struct Memory {
    log: Option<Arc<MemoryLog>>,
    last: Option<Storage>,
}

impl Backend for Memory {
    fn open(&mut self) -> Storage {
        let ledger = self
            .last
            .as_ref()
            .map_or_else(Ledger::default, |last| last.with_committed(Ledger::clone));
        let (log, committed) = MemoryLog::open(ledger, QUEUE_RECORDS_MAX);
        let storage = Storage::new(log.clone(), committed);
        self.log = Some(log);
        self.last = Some(storage.clone());
        storage
    }

    fn break_medium(&self) {
        if let Some(log) = &self.log {
            log.fail("the medium failed (injected)");
        }
    }
}

/// The file journal in a temporary directory, over a file layer whose segment writes fail once
/// it is broken.
struct Files {
    directory: tempfile::TempDir,
    broken: Arc<AtomicBool>,
}

/// A segment whose writes fail once its layer is broken.
struct Breakable {
    inner: Box<dyn SegmentFile>,
    broken: Arc<AtomicBool>,
}

impl SegmentFile for Breakable {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(io::Error::other("the medium failed (injected)"));
        }
        self.inner.write_all(bytes)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

/// The operating system's files, with segments that can be broken.
struct BreakableFiles {
    broken: Arc<AtomicBool>,
}

impl BreakableFiles {
    fn wrap(&self, inner: Box<dyn SegmentFile>) -> Box<dyn SegmentFile> {
        let broken = self.broken.clone();
        Box::new(Breakable { inner, broken })
    }
}

impl FileLayer for BreakableFiles {
    fn create_new(&self, path: &Path, growth: u64) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.wrap(OsFiles.create_new(path, growth)?))
    }

    fn open_append(&self, path: &Path, end: u64, until: u64) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.wrap(OsFiles.open_append(path, end, until)?))
    }
}

impl Backend for Files {
    fn open(&mut self) -> Storage {
        let mut config = JournalConfig::new(self.directory.path());
        config.queue_records_max = QUEUE_RECORDS_MAX;
        config.files = Arc::new(BreakableFiles {
            broken: self.broken.clone(),
        });
        Storage::open_files(config).expect("the journal opens")
    }

    fn break_medium(&self) {
        self.broken.store(true, Ordering::SeqCst);
    }
}

/// A record opening account `card`, decided as an account actor would.
fn opening(card: Card) -> Record {
    let event = Event::AccountOpened {
        holder: "Contract".into(),
        pin_hash: crate::pin::hash("1234", crate::pin::PinHashCost::MINIMUM).expect("hashes"),
        initial_balance: 100 * card,
    };
    let request = RequestId {
        client: 1,
        sequence: card,
    };
    match ledger::decide(
        None,
        card,
        request,
        event,
        ledger::At {
            unix_ms: crate::clock::system_unix_ms(),
            business_day: 0,
        },
        &ledger::Policy::default(),
    ) {
        Decision::Record(record) => record,
        Decision::Answer(outcome) => panic!("an opening is refused: {outcome:?}"),
    }
}

/// Appends must be refused as unavailable.
fn assert_refused(storage: &Storage, card: Card) {
    let refused = storage.append(opening(card));
    assert!(
        matches!(refused, Err(AppendError::Unavailable(_))),
        "{refused:?}"
    );
}

/// Positions, all-or-none batches, durable progress and read-your-writes, on cards 1 to 4.
async fn check_appends(storage: &Storage) -> Lsn {
    let head = storage.head();
    assert_eq!(storage.append(opening(1)), Ok(head + 1));
    let batch = vec![opening(2), opening(3), opening(4)];
    assert_eq!(storage.append_batch(batch), Ok(head + 4));
    assert_eq!(storage.head(), head + 4);
    let too_many = (10..=10 + QUEUE_RECORDS_MAX as Card).map(opening).collect();
    assert_eq!(storage.append_batch(too_many), Err(AppendError::Busy));
    assert_eq!(
        storage.head(),
        head + 4,
        "a refused batch takes no position"
    );
    storage.wait_durable(head + 4).await.expect("durable");
    assert_eq!(*storage.progress().borrow(), Progress::Durable(head + 4));
    let durable = StorageStats {
        durable_lsn: head + 4,
        head_lsn: head + 4,
    };
    assert_eq!(storage.stats(), durable);
    assert_eq!(storage.committed_account(3).map(|a| a.balance), Some(300));
    assert_eq!(storage.read_committed_account(4, |a| a.balance), Some(400));
    assert!(storage.committed_account_exists(1) && !storage.committed_account_exists(10));
    assert_eq!(
        storage.with_committed(|ledger| ledger.applied_lsn),
        head + 4
    );
    assert!(storage.failure().is_none());
    head + 4
}

/// Fails the medium while a waiter waits: the waiter is released with the failure's reason and
/// appends are refused from then on.
async fn check_failure(backend: &mut dyn Backend, storage: &Storage) {
    let head = storage.head();
    let waiting = storage.clone();
    let waiter = tokio::spawn(async move { waiting.wait_durable(head + 1).await });
    backend.break_medium();
    // The file journal notices the failure at its next write; the memory one at once.
    let _ = storage.append(opening(20));
    let released = tokio::time::timeout(RELEASE_WITHIN, waiter)
        .await
        .expect("the waiter is released")
        .expect("the waiter does not panic");
    let reason = released.expect_err("nothing more is durable");
    assert_eq!(storage.failure(), Some(reason.clone()));
    assert_eq!(
        storage.append(opening(21)),
        Err(AppendError::Unavailable(reason))
    );
}

/// The whole contract, over one backend.
async fn contract(backend: &mut dyn Backend) {
    let storage = backend.open();
    let head = check_appends(&storage).await;
    storage.close();
    assert_refused(&storage, 5);
    let storage = backend.open();
    assert_eq!(
        storage.head(),
        head,
        "positions continue from the recovered head"
    );
    assert!(storage.committed_account_exists(4));
    assert_eq!(storage.append(opening(5)), Ok(head + 1));
    storage.wait_all_durable().await.expect("durable");
    check_failure(backend, &storage).await;
    storage.close();
}

#[tokio::test]
async fn the_memory_log_keeps_the_contract() {
    contract(&mut Memory::default()).await;
}

#[tokio::test]
async fn the_file_journal_keeps_the_contract() {
    let mut files = Files {
        directory: tempfile::tempdir().expect("a temporary directory"),
        broken: Arc::default(),
    };
    contract(&mut files).await;
}

#[tokio::test]
async fn a_paused_memory_log_holds_records_back_and_keeps_them_once_durable() {
    let (log, committed) = MemoryLog::open(Ledger::default(), 2);
    let storage = Storage::new(log.clone(), committed);
    log.pause();
    assert_eq!(storage.append_batch(vec![opening(1), opening(2)]), Ok(2));
    assert_eq!(storage.append(opening(3)), Err(AppendError::Busy));
    assert_eq!(storage.stats().durable_lsn, 0);
    assert!(!storage.committed_account_exists(1));
    log.resume();
    storage.wait_durable(2).await.expect("durable");
    assert!(storage.committed_account_exists(2));
    let kept: Vec<Lsn> = log.records().iter().map(|(lsn, _)| *lsn).collect();
    assert_eq!(kept, vec![1, 2]);
}
