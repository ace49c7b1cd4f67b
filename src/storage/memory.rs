//! A [`Log`] in memory, for tests that need storage without a disk: a record is durable as
//! soon as it is appended (unless the log is paused), and a failure can be injected.
//!
//! It keeps every record it made durable, so a test can read them back ([`MemoryLog::records`]).
//! Nothing is ever dropped: memory grows with every record, which is what a test wants and why
//! this log is not for a long-running server.

use super::{AppendError, CommittedState, Log, Progress, SHUTTING_DOWN};
use crate::ledger::{Ledger, Lsn, Record};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::watch;

/// The log's state, under one lock so positions, application and progress stay in one order.
struct State {
    /// The position the next record gets.
    next_lsn: Lsn,
    /// Records appended while paused, in position order: not yet durable.
    pending: Vec<(Lsn, Record)>,
    /// True while appended records wait (as they would for a slow disk).
    paused: bool,
    /// Set once the log failed; appends are refused from then on.
    failed: Option<Arc<str>>,
    /// Set by [`Log::close`]; appends are refused from then on.
    closed: bool,
    /// Every durable record, in position order.
    records: Vec<(Lsn, Record)>,
}

/// An in-memory log over a [`CommittedState`].
pub struct MemoryLog {
    /// The state it applies each durable batch to.
    committed: Arc<CommittedState>,
    /// Positions, waiting records, failure and the records kept.
    state: Mutex<State>,
    /// Published after each durable batch, and on failure.
    progress: watch::Sender<Progress>,
    /// Records that may wait while paused; beyond this appends answer [`AppendError::Busy`], as
    /// the file journal's queue does.
    queue_records_max: usize,
}

impl MemoryLog {
    /// A log over `committed` whose positions continue after its last applied one.
    pub fn new(committed: Arc<CommittedState>, queue_records_max: usize) -> Self {
        let head = committed.applied_lsn();
        let (progress, _) = watch::channel(Progress::Durable(head));
        MemoryLog {
            committed,
            state: Mutex::new(State {
                next_lsn: head + 1,
                pending: Vec::new(),
                paused: false,
                failed: None,
                closed: false,
                records: Vec::new(),
            }),
            progress,
            queue_records_max,
        }
    }

    /// A log and its committed state, starting from `ledger`.
    pub fn open(ledger: Ledger, queue_records_max: usize) -> (Arc<MemoryLog>, Arc<CommittedState>) {
        let committed = Arc::new(CommittedState::new(ledger));
        let log = Arc::new(MemoryLog::new(committed.clone(), queue_records_max));
        (log, committed)
    }

    /// Holds appended records back (not durable) until [`MemoryLog::resume`], like a disk that
    /// has stopped answering: lets a test see waiters wait and the queue fill.
    pub fn pause(&self) {
        self.state.lock().paused = true;
    }

    /// Makes the records held back durable, and later ones at once.
    pub fn resume(&self) {
        let mut state = self.state.lock();
        state.paused = false;
        let pending = std::mem::take(&mut state.pending);
        self.make_durable(&mut state, pending);
    }

    /// Fails the log closed for `reason`, as a failing disk would: records not yet durable are
    /// lost, waiters are released with the reason, and appends are refused from then on.
    pub fn fail(&self, reason: &str) {
        let mut state = self.state.lock();
        self.fail_locked(&mut state, reason.into());
    }

    /// Every durable record so far, in position order.
    pub fn records(&self) -> Vec<(Lsn, Record)> {
        self.state.lock().records.clone()
    }

    fn fail_locked(&self, state: &mut State, reason: Arc<str>) {
        if state.failed.is_some() {
            return;
        }
        state.failed = Some(reason.clone());
        state.pending.clear();
        self.progress.send_replace(Progress::Failed(reason));
    }

    /// Applies `batch` to the committed state, keeps it, then publishes its last position.
    fn make_durable(&self, state: &mut State, batch: Vec<(Lsn, Record)>) {
        let Some(last) = batch.last().map(|(lsn, _)| *lsn) else {
            return;
        };
        if let Err(error) = self.committed.apply_batch(&batch) {
            let reason = format!("durable record does not apply: {error}");
            self.fail_locked(state, reason.into());
            return;
        }
        state.records.extend(batch);
        self.progress.send_replace(Progress::Durable(last));
    }
}

impl Log for MemoryLog {
    fn append_batch(&self, records: Vec<Record>) -> Result<Lsn, AppendError> {
        let mut state = self.state.lock();
        if let Some(reason) = &state.failed {
            return Err(AppendError::Unavailable(reason.clone()));
        }
        if state.closed {
            return Err(AppendError::Unavailable(SHUTTING_DOWN.into()));
        }
        let waiting = if state.paused { state.pending.len() } else { 0 };
        if waiting + records.len() > self.queue_records_max {
            return Err(AppendError::Busy);
        }
        let first = state.next_lsn;
        state.next_lsn += records.len() as Lsn;
        let batch: Vec<(Lsn, Record)> = (first..).zip(records).collect();
        if state.paused {
            state.pending.extend(batch);
        } else {
            self.make_durable(&mut state, batch);
        }
        Ok(state.next_lsn - 1)
    }

    fn head(&self) -> Lsn {
        self.state.lock().next_lsn - 1
    }

    fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn failure(&self) -> Option<Arc<str>> {
        self.state.lock().failed.clone()
    }

    fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        let pending = std::mem::take(&mut state.pending);
        self.make_durable(&mut state, pending);
    }
}
