//! Waiting for durability on an arbiter thread, with one cross-thread wake-up per batch.
//!
//! Every request a session answers waits until its record is durable. If each waiting task
//! subscribed to the journal itself, the journal writer would wake each of them from its own
//! thread after every batch: one cross-thread wake-up (an `eventfd` write and, for a parked
//! arbiter, a context switch) per waiting request, done one after the other while the last
//! request's reply waits. Instead, each arbiter thread has a *relay*: one task that waits for the
//! journal's progress and, when a batch becomes durable, wakes that thread's waiters with
//! same-thread wake-ups, which cost no system call. The writer then wakes at most one task per
//! arbiter per batch.
//!
//! Outside an arbiter (a plain tokio runtime, a test), [`wait_durable`] waits on the journal
//! directly.

use crate::ledger::Lsn;
use crate::storage::{Progress, Storage, WRITER_STOPPED};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::task::{Poll, Waker};
use tokio::sync::watch;

/// One arbiter thread's relay of one journal's progress. Shared (`Arc`) rather than `Rc` only so
/// that futures waiting on it stay `Send`; it is used from its own thread.
#[derive(Clone)]
struct Relay {
    /// The journal it relays ([`Journal::id`]).
    journal: usize,
    /// The progress as last relayed, and who waits for which position.
    state: Arc<Mutex<RelayState>>,
}

/// What a relay knows: the journal's progress, and this thread's waiters by position.
struct RelayState {
    /// The progress as last relayed.
    progress: Progress,
    /// The waiting tasks, the lowest position first: a batch wakes those it made durable and no
    /// other (waking every waiter on each batch made each one check again, most of them to wait
    /// on: on a switch's connections, hundreds of polls per batch for a few dozen answers).
    waiting: BinaryHeap<Waiting>,
}

/// A task waiting for a position to be durable.
struct Waiting {
    lsn: Lsn,
    waker: Waker,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        self.lsn == other.lsn
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    /// Reversed, so the heap (a max-heap) gives the lowest position first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.lsn.cmp(&self.lsn)
    }
}

impl RelayState {
    /// Takes in `latest` and returns the wakers of the tasks it may release: those waiting for a
    /// position now durable, or all of them when the wait may have ended in another way (a
    /// failure, positions given up with a partition); each checks for itself and waits again if
    /// its position is not reached.
    fn advance(&mut self, latest: Progress) -> Vec<Waker> {
        let durable = match &latest {
            Progress::Durable(durable) => Some(*durable),
            Progress::DurableExcept { .. } | Progress::Failed(_) => None,
        };
        self.progress = latest;
        let mut woken = Vec::new();
        match durable {
            Some(durable) => {
                while self.waiting.peek().is_some_and(|next| next.lsn <= durable) {
                    if let Some(waiting) = self.waiting.pop() {
                        woken.push(waiting.waker);
                    }
                }
            }
            None => woken.extend(self.waiting.drain().map(|waiting| waiting.waker)),
        }
        woken
    }
}

thread_local! {
    static RELAY: RefCell<Option<Relay>> = const { RefCell::new(None) };
}

/// Waits until `lsn` is durable (`Err` with the reason if the journal fails first).
pub async fn wait_durable(journal: &Storage, lsn: Lsn) -> Result<(), Arc<str>> {
    if let Some(done) = journal.progress().borrow().reached(lsn) {
        return done;
    }
    let Some(relay) = relay(journal) else {
        return journal.wait_durable(lsn).await;
    };
    std::future::poll_fn(|context| {
        let mut state = relay.state.lock();
        if let Some(done) = state.progress.reached(lsn) {
            return Poll::Ready(done);
        }
        // Checked and registered under one lock, so a batch relayed in between is not missed.
        // A task polled again before its position is reached registers again: the extra entry
        // only wakes it once more.
        state.waiting.push(Waiting {
            lsn,
            waker: context.waker().clone(),
        });
        Poll::Pending
    })
    .await
}

/// This thread's relay for `journal`, started on first use; `None` off an arbiter thread, or
/// if this thread already relays another journal.
fn relay(journal: &Storage) -> Option<Relay> {
    actix_rt::Arbiter::try_current()?;
    RELAY.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(relay) = &*slot {
            return (relay.journal == journal.id()).then(|| relay.clone());
        }
        let mut progress = journal.progress();
        let relay = Relay {
            journal: journal.id(),
            state: Arc::new(Mutex::new(RelayState {
                progress: progress.borrow_and_update().clone(),
                waiting: BinaryHeap::new(),
            })),
        };
        actix_rt::spawn(relay_forever(progress, relay.clone()));
        *slot = Some(relay.clone());
        Some(relay)
    })
}

/// Copies each change of the journal's progress to the relay and wakes the waiters it
/// releases, until the journal is gone.
async fn relay_forever(mut progress: watch::Receiver<Progress>, relay: Relay) {
    loop {
        let changed = progress.changed().await;
        let latest = match changed {
            Ok(()) => progress.borrow_and_update().clone(),
            Err(_) => Progress::Failed(WRITER_STOPPED.into()),
        };
        let woken = relay.state.lock().advance(latest);
        for waker in woken {
            waker.wake();
        }
        if changed.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::files::FullDisk;
    use crate::journal::Journal;
    use crate::journal::JournalConfig;
    use crate::ledger::{self, Decision, Event, Record};
    use crate::pin::{self, PinHashCost};
    use crate::protocol::RequestId;

    /// The record that opens account `card`.
    fn opening(card: u64) -> Record {
        let event = Event::AccountOpened {
            holder: "Relay".into(),
            pin_hash: pin::hash("1234", PinHashCost::MINIMUM).unwrap(),
            initial_balance: 10,
        };
        let request = RequestId {
            client: 7,
            sequence: card,
        };
        match ledger::decide(
            None,
            card,
            request,
            event,
            ledger::At::default(),
            &ledger::Policy::default(),
        ) {
            Decision::Record(record) => record,
            Decision::Answer(outcome) => panic!("not opened: {outcome:?}"),
        }
    }

    /// A waker that counts its wake-ups.
    struct Counted(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn counted() -> (Arc<Counted>, Waker) {
        let count = Arc::new(Counted(std::sync::atomic::AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    #[test]
    fn a_batch_wakes_the_waiters_it_made_durable_and_no_other() {
        let mut state = RelayState {
            progress: Progress::Durable(0),
            waiting: BinaryHeap::new(),
        };
        let counts: Vec<_> = [5, 1, 9, 3]
            .into_iter()
            .map(|lsn| {
                let (count, waker) = counted();
                state.waiting.push(Waiting { lsn, waker });
                (lsn, count)
            })
            .collect();
        let woken = |counts: &[(Lsn, Arc<Counted>)]| -> Vec<Lsn> {
            let mut lsns: Vec<Lsn> = counts
                .iter()
                .filter(|(_, count)| count.0.load(std::sync::atomic::Ordering::Relaxed) > 0)
                .map(|(lsn, _)| *lsn)
                .collect();
            lsns.sort();
            lsns
        };
        state
            .advance(Progress::Durable(4))
            .into_iter()
            .for_each(Waker::wake);
        assert_eq!(woken(&counts), [1, 3]);
        assert_eq!(state.waiting.len(), 2);
        state
            .advance(Progress::Durable(5))
            .into_iter()
            .for_each(Waker::wake);
        assert_eq!(woken(&counts), [1, 3, 5]);
        state
            .advance(Progress::Failed("disk".into()))
            .into_iter()
            .for_each(Waker::wake);
        assert_eq!(woken(&counts), [1, 3, 5, 9], "a failure releases everyone");
        assert!(state.waiting.is_empty());
    }

    #[test]
    fn waiters_on_an_arbiter_are_released_through_one_relay() {
        let directory = tempfile::tempdir().unwrap();
        let journal = Journal::open(JournalConfig::new(directory.path())).unwrap();
        let other_directory = tempfile::tempdir().unwrap();
        let other = Journal::open(JournalConfig::new(other_directory.path())).unwrap();
        actix::System::new().block_on(async {
            let waiters: Vec<_> = (1..=20)
                .map(|lsn| {
                    let journal = journal.clone();
                    actix_rt::spawn(async move { wait_durable(&journal, lsn).await })
                })
                .collect();
            tokio::task::yield_now().await;
            let relayed = RELAY.with(|slot| slot.borrow().as_ref().map(|relay| relay.journal));
            assert_eq!(
                relayed,
                Some(journal.id()),
                "the first waiter started the relay"
            );
            for card in 1..=20 {
                journal.append(opening(card)).unwrap();
            }
            for waiter in waiters {
                assert_eq!(waiter.await.unwrap(), Ok(()));
            }
            // Already durable: answered at once.
            assert_eq!(wait_durable(&journal, 20).await, Ok(()));
            // This thread relays the first journal; another one is waited for directly.
            let lsn = other.append(opening(1)).unwrap();
            assert_eq!(wait_durable(&other, lsn).await, Ok(()));
        });
        journal.close();
        other.close();
    }

    #[test]
    fn a_failed_journal_releases_relayed_waiters_with_its_reason() {
        let directory = tempfile::tempdir().unwrap();
        let mut config = JournalConfig::new(directory.path());
        // Room for the segment header only: the first record's write fails.
        config.files = Arc::new(FullDisk::new(
            crate::journal::format::SEGMENT_HEADER_BYTES as i64,
        ));
        let journal = Journal::open(config).unwrap();
        actix::System::new().block_on(async {
            let waiter = {
                let journal = journal.clone();
                actix_rt::spawn(async move { wait_durable(&journal, 1).await })
            };
            tokio::task::yield_now().await;
            journal.append(opening(1)).unwrap();
            let reason = waiter.await.unwrap().unwrap_err();
            assert!(reason.contains("no space left"), "{reason}");
        });
        journal.close();
    }
}
