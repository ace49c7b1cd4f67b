//! The joinable map: account changes submitted and not yet answered, which a retry of the same
//! request (same card, same id, same parameters) joins instead of reaching the actor again.
//!
//! Retries are rare and originals are every change, so an original costs one entry and nothing
//! more (no channel is made for it): a retry that joins adds a one-shot channel of its own to the
//! entry, and the original's answer is sent down each such channel when it is given.

use crate::ledger::{Fingerprint, Outcome};
use crate::model::{Card, RequestId};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// What identifies a joinable change: the card and the request id.
type Key = (Card, RequestId);

/// How many retries may wait on one change at once. Each is a request in flight on some
/// connection (so already bounded by the connection limits); beyond this one, a retry takes the
/// ordinary path to the actor, which answers it from its memory once the original is decided.
pub const JOINERS_PER_CHANGE_MAX: usize = 64;

/// Where a retry that joined waits for its original's answer; closed without one when the
/// original ended unanswered (its connection closed).
pub(super) type Joined = oneshot::Receiver<Outcome>;

/// The changes in flight that retries may join, at most [`super::Limits::requests_joinable_max`].
pub(super) struct JoinableMap {
    /// The open entries.
    entries: DashMap<Key, Joinable>,
    /// How many entries are open (counted apart, so that the cap is checked without a scan).
    open: AtomicUsize,
    /// Numbers the entries, so an original removes its own entry and no other.
    serial: AtomicU64,
    /// The cap on open entries.
    open_max: usize,
}

/// A change in flight that retries may join.
struct Joinable {
    /// The parameters: only a retry with the same ones joins.
    fingerprint: Fingerprint,
    /// Which registration this is (see [`JoinableMap::serial`]).
    serial: u64,
    /// The retries waiting for the original's answer, at most [`JOINERS_PER_CHANGE_MAX`].
    joiners: Vec<oneshot::Sender<Outcome>>,
}

impl JoinableMap {
    /// An empty map admitting at most `open_max` entries.
    pub(super) fn new(open_max: usize) -> Arc<Self> {
        Arc::new(JoinableMap {
            entries: DashMap::new(),
            open: AtomicUsize::new(0),
            serial: AtomicU64::new(0),
            open_max,
        })
    }

    /// The original's answer to wait for, if `key` is in flight with the same parameters and has
    /// room for another joiner. Other parameters under the same id do not join: the actor answers
    /// the conflict.
    pub(super) fn join(&self, key: Key, fingerprint: &Fingerprint) -> Option<Joined> {
        let mut original = self.entries.get_mut(&key)?;
        if original.fingerprint != *fingerprint || original.joiners.len() >= JOINERS_PER_CHANGE_MAX
        {
            return None;
        }
        let (sender, joined) = oneshot::channel();
        original.joiners.push(sender);
        Some(joined)
    }

    /// Registers a submitted change for retries to join, unless the cap is reached or the
    /// request is already registered (then the retry takes the ordinary path).
    pub(super) fn open(
        self: &Arc<Self>,
        key: Key,
        fingerprint: Fingerprint,
    ) -> Option<JoinablePublisher> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.open_max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        match self.entries.entry(key) {
            dashmap::Entry::Occupied(_) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                None
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Joinable {
                    fingerprint,
                    serial,
                    joiners: Vec::new(),
                });
                Some(JoinablePublisher {
                    map: self.clone(),
                    key,
                    serial,
                })
            }
        }
    }

    /// Removes the entry `serial` registered under `key` (and no later one), with its joiners.
    fn close(&self, key: &Key, serial: u64) -> Vec<oneshot::Sender<Outcome>> {
        match self
            .entries
            .remove_if(key, |_, entry| entry.serial == serial)
        {
            Some((_, entry)) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                entry.joiners
            }
            None => Vec::new(),
        }
    }
}

/// Held by the original of a joinable change; shares its answer, and on drop (answered or
/// abandoned with its connection) removes the entry, so joiners left waiting are told `busy`.
pub(super) struct JoinablePublisher {
    /// The map the entry is in.
    map: Arc<JoinableMap>,
    /// The entry's key.
    key: Key,
    /// The entry's registration, so a later registration under the same key is left alone.
    serial: u64,
}

impl JoinablePublisher {
    /// Gives `outcome` to every retry that joined, and removes the entry: a retry that comes
    /// later takes the ordinary path and is answered from the actor's memory.
    pub(super) fn publish(self, outcome: Outcome) {
        for joiner in self.map.close(&self.key, self.serial) {
            // A joiner whose connection closed meanwhile no longer listens: nothing to do.
            let _ = joiner.send(outcome);
        }
    }
}

impl Drop for JoinablePublisher {
    fn drop(&mut self) {
        // After `publish` the entry is gone and this finds nothing. Unanswered joiners are
        // dropped here, which tells each of them the original ended without an answer.
        self.map.close(&self.key, self.serial);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::Fingerprint;
    use crate::model::Code;

    fn key(sequence: u64) -> Key {
        (
            123_456_789,
            RequestId {
                client: 7,
                sequence,
            },
        )
    }

    fn fingerprint(amount: u64) -> Fingerprint {
        Fingerprint {
            kind: 1,
            card: 123_456_789,
            amount,
            detail: 0,
        }
    }

    #[test]
    fn a_retry_with_the_same_parameters_gets_the_original_answer() {
        let map = JoinableMap::new(16);
        let original = map.open(key(1), fingerprint(300)).expect("registered");
        let mut joined = map.join(key(1), &fingerprint(300)).expect("joins");
        assert!(
            map.join(key(1), &fingerprint(400)).is_none(),
            "other parameters"
        );
        assert!(map.join(key(2), &fingerprint(300)).is_none(), "another id");
        original.publish(Outcome::bare(Code::Approved));
        assert_eq!(joined.try_recv().expect("answered").status, Code::Approved);
        assert!(
            map.join(key(1), &fingerprint(300)).is_none(),
            "answered: gone"
        );
        assert_eq!(map.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn an_original_dropped_unanswered_tells_its_joiners() {
        let map = JoinableMap::new(16);
        let original = map.open(key(1), fingerprint(300)).expect("registered");
        let mut joined = map.join(key(1), &fingerprint(300)).expect("joins");
        drop(original);
        assert!(matches!(
            joined.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert_eq!(map.open.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_caps_send_the_rest_the_ordinary_way() {
        let map = JoinableMap::new(1);
        let original = map.open(key(1), fingerprint(300)).expect("registered");
        assert!(map.open(key(2), fingerprint(300)).is_none(), "map full");
        assert!(map.open(key(1), fingerprint(300)).is_none(), "already open");
        let joiners: Vec<_> = (0..JOINERS_PER_CHANGE_MAX)
            .map(|_| map.join(key(1), &fingerprint(300)).expect("room"))
            .collect();
        assert!(
            map.join(key(1), &fingerprint(300)).is_none(),
            "no more room"
        );
        original.publish(Outcome::bare(Code::Approved));
        for mut joined in joiners {
            assert_eq!(joined.try_recv().expect("answered").status, Code::Approved);
        }
    }

    #[test]
    fn a_stale_publisher_leaves_a_newer_entry_alone() {
        let map = JoinableMap::new(16);
        let first = map.open(key(1), fingerprint(300)).expect("registered");
        let serial = first.serial;
        first.publish(Outcome::bare(Code::Approved));
        let second = map
            .open(key(1), fingerprint(300))
            .expect("registered again");
        assert!(
            map.close(&key(1), serial).is_empty(),
            "the old serial removes nothing"
        );
        assert!(
            map.join(key(1), &fingerprint(300)).is_some(),
            "the newer entry is there"
        );
        drop(second);
        assert_eq!(map.open.load(Ordering::Acquire), 0);
    }
}
