//! Where the server reads the time, and where chance comes from.
//!
//! Every decision that depends on time (failure allowances, forgetting idle clients, evicting
//! clients from a full memory, the time stamped on records; daily limits and hold expiry next)
//! reads a [`Clock`], never the system directly, so a test can drive time by hand with
//! [`ManualClock`] and see the same verdicts on every run, however fast the machine is. Likewise
//! every random choice takes a seed ([`seeded`]), so one seed gives one run.

use rand::rngs::StdRng;
use rand::SeedableRng;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time: a monotonic count for rates and deadlines, and the wall clock for what is
/// stamped on records.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's origin; never goes backwards.
    fn now(&self) -> Duration;

    /// Wall-clock time in milliseconds since the Unix epoch. Used only for what is stamped on
    /// records and for forgetting idle clients, never to order events.
    fn unix_ms(&self) -> u64;
}

/// The real clocks: the monotonic one from when this value was made, and the system's wall clock.
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

    fn unix_ms(&self) -> u64 {
        system_unix_ms()
    }
}

/// The system's wall clock in milliseconds since the Unix epoch (0 if it is set before 1970).
/// The one place the wall clock is read; everything else goes through a [`Clock`].
pub fn system_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// A clock moved by hand, for tests: both its monotonic time and its wall clock move together,
/// the wall clock starting at [`ManualClock::UNIX_MS_START`].
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// What the wall clock of a fresh manual clock reads: 2026-01-01T00:00:00Z.
    pub const UNIX_MS_START: u64 = 1_767_225_600_000;

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

    fn unix_ms(&self) -> u64 {
        Self::UNIX_MS_START + self.now().as_millis() as u64
    }
}

/// A random generator from `seed`: the same seed gives the same choices on every run.
pub fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_both_readings_move_together() {
        let clock = ManualClock::default();
        assert_eq!(clock.now(), Duration::ZERO);
        assert_eq!(clock.unix_ms(), ManualClock::UNIX_MS_START);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now(), Duration::from_millis(1_500));
        assert_eq!(clock.unix_ms(), ManualClock::UNIX_MS_START + 1_500);
    }

    #[test]
    fn one_seed_gives_one_sequence() {
        use rand::Rng;
        let draw = |seed| {
            let mut rng = seeded(seed);
            (0..4).map(|_| rng.gen::<u64>()).collect::<Vec<_>>()
        };
        let (first, again) = (draw(7), draw(7));
        assert_eq!(first, again);
    }
}
