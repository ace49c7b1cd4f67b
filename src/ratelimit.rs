//! Token buckets that limit failures: failed PIN checks per connection and per peer address,
//! failed operator-token attempts per peer address.
//!
//! A bucket holds up to `burst` tokens and gains `per_minute` tokens a minute. A PIN check is
//! admitted while the bucket holds at least one token, and each failed check takes one; a correct
//! PIN takes none, so honest logins are never slowed by the limit. Time comes from a [`Clock`], so
//! tests drive it by hand ([`ManualClock`]).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// Thousandths of a token: buckets count in these so that slow refill rates add up exactly.
const MILLI: u64 = 1_000;

pub use crate::clock::{Clock, ManualClock, SystemClock};

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

    /// Whole failures left (as of the last refill).
    pub fn left(&self) -> u32 {
        (self.milli_tokens / MILLI) as u32
    }

    /// True when the bucket is full again: it then says no more than a new one would.
    pub fn is_full(&mut self, limit: RateLimit, now: Duration) -> bool {
        self.refill(limit, now);
        self.milli_tokens >= u64::from(limit.burst) * MILLI
    }
}

/// Peer addresses whose failed PIN checks are tracked at once. A full bucket is the same as none,
/// so only peers with recent failures take room; when the table is full even of those, a new
/// peer's failures are limited by its connections' buckets only (see docs/SECURITY.md).
pub const PEERS_TRACKED_MAX: usize = 65_536;

/// The address failures are counted by: an IPv4 address as it is (an IPv4-mapped IPv6 address as
/// its IPv4 address), an IPv6 address by its /64 prefix (one host usually holds a whole /64, so
/// counting single addresses would give it billions of buckets).
pub fn peer_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(address) => match address.to_ipv4_mapped() {
            Some(mapped) => IpAddr::V4(mapped),
            None => {
                let prefix = u128::from(address) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

/// What failure buckets are keyed by: a peer address (by [`peer_key`]) or anything else that
/// names a client, mapped to the key its failures are counted under.
pub trait BucketKey: Eq + std::hash::Hash + Clone {
    /// The key this client's failures are counted under.
    fn bucket_key(&self) -> Self;
}

impl BucketKey for IpAddr {
    fn bucket_key(&self) -> Self {
        peer_key(*self)
    }
}

/// What a full table of peers does with a peer it has no room for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Let it through untracked: something else still limits it (PIN checks have a bucket per
    /// connection), and honest newcomers are not locked out by a flood from many addresses.
    Untracked,
    /// Refuse it: nothing else limits it (operator-token attempts), so a flood from many
    /// addresses must not switch the limit off.
    Refuse,
}

/// The failure buckets of every peer address with recent failures, by [`peer_key`].
#[derive(Debug)]
pub struct PeerBuckets<K = IpAddr> {
    buckets: Mutex<HashMap<K, TokenBucket>>,
    peers_max: usize,
    when_full: WhenFull,
}

impl<K: BucketKey> PeerBuckets<K> {
    /// An empty table holding at most `peers_max` peers, `when_full` deciding for the others.
    pub fn new(peers_max: usize, when_full: WhenFull) -> Self {
        PeerBuckets {
            buckets: Mutex::new(HashMap::new()),
            peers_max,
            when_full,
        }
    }

    /// True when `peer` may fail again now.
    pub fn allows(&self, peer: K, limit: RateLimit, now: Duration) -> bool {
        let mut buckets = self.buckets.lock();
        if let Some(bucket) = buckets.get_mut(&peer.bucket_key()) {
            return bucket.allows(limit, now);
        }
        limit.burst >= 1
            && (Self::has_room(&mut buckets, self.peers_max, limit, now)
                || self.when_full == WhenFull::Untracked)
    }

    /// Takes one token from `peer`'s bucket for a failure; returns the failures it has left now
    /// (`None` when it is not tracked: the table is full).
    pub fn take(&self, peer: K, limit: RateLimit, now: Duration) -> Option<u32> {
        let peer = peer.bucket_key();
        let mut buckets = self.buckets.lock();
        if !buckets.contains_key(&peer) && !Self::has_room(&mut buckets, self.peers_max, limit, now)
        {
            return None;
        }
        let bucket = buckets
            .entry(peer)
            .or_insert_with(|| TokenBucket::full(limit, now));
        bucket.take(limit, now);
        Some(bucket.left())
    }

    /// True when a new peer fits, after dropping the peers whose bucket has refilled.
    fn has_room(
        buckets: &mut HashMap<K, TokenBucket>,
        peers_max: usize,
        limit: RateLimit,
        now: Duration,
    ) -> bool {
        if buckets.len() >= peers_max {
            buckets.retain(|_, bucket| !bucket.is_full(limit, now));
        }
        buckets.len() < peers_max
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
        let peers = PeerBuckets::new(PEERS_TRACKED_MAX, WhenFull::Untracked);
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

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let same_host: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(one), peer_key(same_host));
        assert_ne!(peer_key(one), peer_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(peer_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let limit = RateLimit {
            burst: 1,
            per_minute: 0,
        };
        let peers = PeerBuckets::new(PEERS_TRACKED_MAX, WhenFull::Refuse);
        assert_eq!(peers.take(one, limit, Duration::ZERO), Some(0));
        assert!(!peers.allows(same_host, limit, Duration::ZERO));
        assert!(peers.allows(other, limit, Duration::ZERO));
    }

    #[test]
    fn a_full_table_refuses_or_lets_through_a_new_peer_as_it_was_told() {
        let now = Duration::ZERO;
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        for (when_full, admitted) in [(WhenFull::Refuse, false), (WhenFull::Untracked, true)] {
            let peers = PeerBuckets::new(1, when_full);
            assert_eq!(peers.take(one, LIMIT, now), Some(2));
            assert_eq!(peers.allows(two, LIMIT, now), admitted);
            assert_eq!(peers.take(two, LIMIT, now), None);
            // Once the first peer's bucket has refilled, its room goes to the next.
            let later = now + Duration::from_secs(60);
            assert!(peers.allows(two, LIMIT, later));
            assert_eq!(peers.take(two, LIMIT, later), Some(2));
        }
    }
}
