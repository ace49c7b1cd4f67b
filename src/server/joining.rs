//! The joinable map: account changes submitted and not yet answered, which a retry of the same
//! request (same card, same id, same parameters) joins instead of reaching the actor again.

use crate::ledger::{Fingerprint, Outcome};
use crate::model::{Card, RequestId};
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// What identifies a joinable change: the card and the request id.
type Key = (Card, RequestId);

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
    /// The original's answer, once it may be given.
    outcome: watch::Receiver<Option<Outcome>>,
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

    /// The original's answer to wait for, if `key` is in flight with the same parameters. Other
    /// parameters under the same id do not join: the actor answers the conflict.
    pub(super) fn join(
        &self,
        key: Key,
        fingerprint: &Fingerprint,
    ) -> Option<watch::Receiver<Option<Outcome>>> {
        let original = self.entries.get(&key)?;
        (original.fingerprint == *fingerprint).then(|| original.outcome.clone())
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
        let (sender, outcome) = watch::channel(None);
        match self.entries.entry(key) {
            dashmap::Entry::Occupied(_) => {
                self.open.fetch_sub(1, Ordering::AcqRel);
                None
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Joinable {
                    fingerprint,
                    serial,
                    outcome,
                });
                Some(JoinablePublisher {
                    map: self.clone(),
                    key,
                    serial,
                    sender,
                })
            }
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
    /// Where joiners read the answer.
    sender: watch::Sender<Option<Outcome>>,
}

impl JoinablePublisher {
    /// Gives `outcome` to every retry that joined (and removes the entry, on drop).
    pub(super) fn publish(self, outcome: Outcome) {
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for JoinablePublisher {
    fn drop(&mut self) {
        let serial = self.serial;
        if self
            .map
            .entries
            .remove_if(&self.key, |_, entry| entry.serial == serial)
            .is_some()
        {
            self.map.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
