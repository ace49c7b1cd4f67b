//! The operator token's rules: how strong it must be, how to make one, and how fast a peer may
//! get it wrong.
//!
//! The token is the operator's only credential, checked on every operator request, so it must be
//! too long to guess ([`check_strength`]) and guesses must be slow ([`OperatorFailures`]): each
//! peer address has a bucket of failed attempts that refills slowly; while it is empty, that
//! peer's operator requests are answered `busy` without the token being looked at, so the answer
//! says nothing about the token.

use rand::RngCore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Shortest operator token accepted, in characters. 32 characters drawn at random from the
/// 16 hexadecimal digits hold 128 bits; the tokens [`generate`] makes are 64 (256 bits).
pub const OPERATOR_TOKEN_CHARS_MIN: usize = 32;

/// Fewest different characters an operator token must contain: rules out `aaaa…`-like tokens
/// that pass the length test but hold almost nothing. (A random hexadecimal token of 32
/// characters has fewer than 8 different ones with a probability below one in ten million.)
pub const OPERATOR_TOKEN_DISTINCT_CHARS_MIN: usize = 8;

/// Random bytes in a generated token (written as twice as many hexadecimal digits).
pub const GENERATED_TOKEN_BYTES: usize = 32;

/// Peers whose failed operator attempts are tracked at once. When the table is full, peers whose
/// bucket has refilled are dropped; if none has, a new peer's operator request is answered `busy`
/// without a check (a flood from many addresses cannot turn the limit off).
pub const OPERATOR_FAILURE_PEERS_MAX: usize = 4096;

/// Why a token is refused at start, with how to make a good one.
pub fn check_strength(token: &str) -> Result<(), String> {
    let how = "make one with `bank-server generate-operator-token`";
    if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err(format!(
            "the operator token must be printable ASCII without spaces; {how}"
        ));
    }
    if token.len() < OPERATOR_TOKEN_CHARS_MIN {
        return Err(format!(
            "the operator token has {} characters; at least {OPERATOR_TOKEN_CHARS_MIN} (128 bits) are required; {how}",
            token.len()
        ));
    }
    let mut seen = [false; 128];
    token
        .bytes()
        .for_each(|byte| seen[usize::from(byte)] = true);
    if seen.iter().filter(|seen| **seen).count() < OPERATOR_TOKEN_DISTINCT_CHARS_MIN {
        return Err(format!(
            "the operator token has fewer than {OPERATOR_TOKEN_DISTINCT_CHARS_MIN} different characters; {how}"
        ));
    }
    Ok(())
}

/// A new random operator token: [`GENERATED_TOKEN_BYTES`] bytes from the operating system's
/// random source, as lowercase hexadecimal.
pub fn generate() -> String {
    let mut bytes = [0u8; GENERATED_TOKEN_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// How many failed operator attempts a peer may make: a burst, then a steady rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailureRate {
    /// Failed attempts a peer may make in a row before it has to wait.
    pub burst: u32,
    /// Failed attempts a peer regains per minute.
    pub per_minute: u32,
}

impl Default for FailureRate {
    fn default() -> Self {
        FailureRate {
            burst: 5,
            per_minute: 10,
        }
    }
}

/// The address failed attempts are counted by: an IPv4 address as it is, an IPv6 address by its
/// /64 prefix (one host usually holds a whole /64, so counting single addresses would give it
/// billions of buckets).
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

/// One peer's bucket: attempts left (fractional while refilling) as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    left: f64,
    at: Instant,
}

/// Failed operator attempts per peer address, with a token bucket each.
#[derive(Debug)]
pub struct OperatorFailures {
    rate: FailureRate,
    peers: parking_lot::Mutex<HashMap<IpAddr, Bucket>>,
}

impl OperatorFailures {
    /// An empty table with `rate` for every peer.
    pub fn new(rate: FailureRate) -> Self {
        OperatorFailures {
            rate,
            peers: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let minutes = now.saturating_duration_since(bucket.at).as_secs_f64() / 60.0;
        (bucket.left + minutes * f64::from(self.rate.per_minute)).min(f64::from(self.rate.burst))
    }

    /// True when `peer` may have an operator request checked at `now` (it has an attempt left).
    pub fn admits(&self, peer: IpAddr, now: Instant) -> bool {
        let peer = peer_key(peer);
        let mut peers = self.peers.lock();
        match peers.get(&peer) {
            Some(bucket) => self.refilled(*bucket, now) >= 1.0,
            None => {
                if peers.len() >= OPERATOR_FAILURE_PEERS_MAX {
                    let full = f64::from(self.rate.burst);
                    peers.retain(|_, bucket| self.refilled(*bucket, now) < full);
                }
                peers.len() < OPERATOR_FAILURE_PEERS_MAX && self.rate.burst >= 1
            }
        }
    }

    /// Counts a failed attempt of `peer` at `now`; returns the attempts it has left.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> u32 {
        let peer = peer_key(peer);
        let mut peers = self.peers.lock();
        let full = Bucket {
            left: f64::from(self.rate.burst),
            at: now,
        };
        let bucket = peers.entry(peer).or_insert(full);
        let left = (self.refilled(*bucket, now) - 1.0).max(0.0);
        *bucket = Bucket { left, at: now };
        left as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_under_128_bits_are_refused_and_generated_ones_pass() {
        assert!(check_strength("test-operator-token").is_err());
        assert!(check_strength(&"ab".repeat(16)).is_err(), "two characters");
        assert!(check_strength(&format!("{} x", "0123456789abcdef".repeat(2))).is_err());
        let error = check_strength("abcd").unwrap_err();
        assert!(error.contains("generate-operator-token"), "{error}");
        assert!(check_strength(&"0123456789abcdef".repeat(2)).is_ok());
        let token = generate();
        assert_eq!(token.len(), 2 * GENERATED_TOKEN_BYTES);
        assert!(check_strength(&token).is_ok());
        assert_ne!(generate(), token);
    }

    #[test]
    fn a_peer_gets_its_burst_of_failures_then_one_per_refill_and_others_are_not_affected() {
        let failures = OperatorFailures::new(FailureRate {
            burst: 3,
            per_minute: 10,
        });
        let start = Instant::now();
        let peer: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert!(failures.admits(peer, start));
            failures.failed(peer, start);
        }
        assert!(!failures.admits(peer, start));
        assert!(failures.admits("192.0.2.2".parse().unwrap(), start));
        // One attempt comes back every six seconds.
        assert!(!failures.admits(peer, start + Duration::from_secs(5)));
        assert!(failures.admits(peer, start + Duration::from_secs(6)));
        assert_eq!(failures.failed(peer, start + Duration::from_secs(6)), 0);
        assert!(!failures.admits(peer, start + Duration::from_secs(6)));
        assert!(failures.admits(peer, start + Duration::from_secs(3_600)));
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
        let failures = OperatorFailures::new(FailureRate {
            burst: 1,
            per_minute: 0,
        });
        let now = Instant::now();
        failures.failed(one, now);
        assert!(!failures.admits(same_host, now));
        assert!(failures.admits(other, now));
    }
}
