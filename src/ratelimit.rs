//! Token buckets that limit failed PIN checks, per connection and per peer address.
//!
//! A bucket holds up to `burst` tokens and gains `per_minute` tokens a minute. A PIN check is
//! admitted while the bucket holds at least one token, and each failed check takes one; a correct
//! PIN takes none, so honest logins are never slowed by the limit. Time comes from a [`Clock`], so
//! tests drive it by hand ([`ManualClock`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Thousandths of a token: buckets count in these so that slow refill rates add up exactly.
const MILLI: u64 = 1_000;

/// Where the buckets read the time: a monotonic count from an arbitrary origin.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock moved by hand, for tests.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos
            .fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A rate: how many failures may come at once, and how fast the allowance comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Failures allowed in a burst (the bucket's size).
    pub burst: u32,
    /// Failures allowed per minute after the burst (the refill rate); 0 never refills.
    pub per_minute: u32,
}

/// One bucket of failure allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Thousandths of a token left.
    milli_tokens: u64,
    /// When the bucket was last refilled.
    refilled_at: Duration,
}

impl TokenBucket {
    /// A full bucket for `limit` at time `now`.
    pub fn full(limit: RateLimit, now: Duration) -> Self {
        TokenBucket {
            milli_tokens: u64::from(limit.burst) * MILLI,
            refilled_at: now,
        }
    }

    fn refill(&mut self, limit: RateLimit, now: Duration) {
        let capacity = u64::from(limit.burst) * MILLI;
        if self.milli_tokens >= capacity || limit.per_minute == 0 {
            // A full bucket banks no time; one that never refills has none to bank.
            self.refilled_at = now;
            return;
        }
        // Whole thousandths only; the time of a part-earned one stays banked for the next call.
        let nanos_per_milli = 60_000_000_000 / (u64::from(limit.per_minute) * MILLI);
        let elapsed = now.saturating_sub(self.refilled_at).as_nanos() as u64;
        let gained = elapsed / nanos_per_milli.max(1);
        self.milli_tokens = self.milli_tokens.saturating_add(gained).min(capacity);
        self.refilled_at += Duration::from_nanos(gained * nanos_per_milli.max(1));
    }

    /// True when a failure may still happen now.
    pub fn allows(&mut self, limit: RateLimit, now: Duration) -> bool {
        self.refill(limit, now);
        self.milli_tokens >= MILLI
    }

    /// Takes one token for a failure (none left stays none).
    pub fn take(&mut self, limit: RateLimit, now: Duration) {
        self.refill(limit, now);
        self.milli_tokens = self.milli_tokens.saturating_sub(MILLI);
    }

    /// True when the bucket is full again: it then says no more than a new one would.
    pub fn is_full(&mut self, limit: RateLimit, now: Duration) -> bool {
        self.refill(limit, now);
        self.milli_tokens >= u64::from(limit.burst) * MILLI
    }
}

/// Peer addresses whose buckets are kept at most. A full bucket is the same as none, so only
/// peers with recent failures take room; when the table is full even of those, a new peer's
/// failures are limited by its connections' buckets only (see docs/SECURITY.md).
pub const PEERS_TRACKED_MAX: usize = 65_536;

/// The failure buckets of every peer address with recent failures.
#[derive(Debug, Default)]
pub struct PeerBuckets {
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl PeerBuckets {
    /// True when `peer` may fail again now.
    pub fn allows(&self, peer: IpAddr, limit: RateLimit, now: Duration) -> bool {
        self.buckets
            .lock()
            .get_mut(&peer)
            .is_none_or(|bucket| bucket.allows(limit, now))
    }

    /// Takes one token from `peer`'s bucket for a failure.
    pub fn take(&self, peer: IpAddr, limit: RateLimit, now: Duration) {
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&peer) && buckets.len() >= PEERS_TRACKED_MAX {
            buckets.retain(|_, bucket| !bucket.is_full(limit, now));
            if buckets.len() >= PEERS_TRACKED_MAX {
                return;
            }
        }
        buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::full(limit, now))
            .take(limit, now);
    }

    /// Peers with a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.lock().len()
    }

    /// True when no peer has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        burst: 3,
        per_minute: 6,
    };

    #[test]
    fn a_bucket_allows_its_burst_then_one_failure_per_refill_interval() {
        let clock = ManualClock::default();
        let mut bucket = TokenBucket::full(LIMIT, clock.now());
        for _ in 0..3 {
            assert!(bucket.allows(LIMIT, clock.now()));
            bucket.take(LIMIT, clock.now());
        }
        assert!(!bucket.allows(LIMIT, clock.now()));
        // Six a minute: one every ten seconds.
        clock.advance(Duration::from_millis(9_999));
        assert!(!bucket.allows(LIMIT, clock.now()));
        clock.advance(Duration::from_millis(1));
        assert!(bucket.allows(LIMIT, clock.now()));
        bucket.take(LIMIT, clock.now());
        assert!(!bucket.allows(LIMIT, clock.now()));
        // Never more than the burst, however long it rests.
        clock.advance(Duration::from_secs(3_600));
        assert!(bucket.is_full(LIMIT, clock.now()));
        for _ in 0..3 {
            bucket.take(LIMIT, clock.now());
        }
        assert!(!bucket.allows(LIMIT, clock.now()));
    }

    #[test]
    fn a_bucket_that_never_refills_stays_empty() {
        let limit = RateLimit {
            burst: 1,
            per_minute: 0,
        };
        let clock = ManualClock::default();
        let mut bucket = TokenBucket::full(limit, clock.now());
        bucket.take(limit, clock.now());
        clock.advance(Duration::from_secs(86_400));
        assert!(!bucket.allows(limit, clock.now()));
    }

    #[test]
    fn peers_are_limited_apart_and_refilled_peers_give_their_room_back() {
        let clock = ManualClock::default();
        let peers = PeerBuckets::default();
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(peers.allows(one, LIMIT, clock.now()));
            peers.take(one, LIMIT, clock.now());
        }
        assert!(!peers.allows(one, LIMIT, clock.now()));
        assert!(peers.allows(two, LIMIT, clock.now()));
        assert_eq!(peers.len(), 1);
        clock.advance(Duration::from_secs(30));
        assert!(peers.allows(one, LIMIT, clock.now()));
    }
}
