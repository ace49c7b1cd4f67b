//! How long the client waits for a reply, and how long it pauses before trying again.
//!
//! The attempt timeout adapts to the measured round trip the way TCP's retransmission timeout
//! does (RFC 6298): a smoothed round trip `SRTT` and its variation `RTTVAR` are updated from each
//! valid measurement, and the timeout is `SRTT + 4·RTTVAR`, never below a floor and never above a
//! cap. Before the first measurement it is the floor. Each attempt that ends without a definite
//! answer (a timeout, a lost connection, `busy`, `unavailable`) doubles the timeout and the pause
//! before the next attempt, each with a seeded random spread so that many clients refused at
//! the same moment do not all come back at the same moment. A valid measurement undoes the
//! doubling.
//!
//! Which round trips are valid follows Karn's rule: only a request that was sent once and
//! answered definitely measures the server. After a timeout the reply may belong to an earlier
//! attempt (or, on the server, be the answer of the original that the retry joined), so it says
//! nothing about how long one attempt takes; such a success leaves the doubled timeout in force
//! until a clean measurement comes. A `busy` reply is not measured either: it is cheap on
//! purpose and would teach the client that the server is fast just when it is overloaded.
//!
//! Nothing here reads a clock: the caller passes the durations it measured, which is what makes
//! the rules testable.

use rand::rngs::StdRng;
use rand::Rng;
use std::time::Duration;

/// Weight of a new measurement in `SRTT` (RFC 6298's alpha, 1/8).
const SMOOTHING_SHIFT: u32 = 3;

/// Weight of a new deviation in `RTTVAR` (RFC 6298's beta, 1/4).
const VARIATION_SHIFT: u32 = 2;

/// Multiple of `RTTVAR` added to `SRTT` (RFC 6298's K).
const VARIATION_FACTOR: u32 = 4;

/// The clock granularity RFC 6298 adds at least (its G).
const GRANULARITY: Duration = Duration::from_millis(1);

/// Doublings at most; the cap stops growth long before (2^16 times any sensible floor).
const DOUBLINGS_MAX: u32 = 16;

/// A backed-off timeout or pause is spread over [1 − this, 1] of its value.
const JITTER_FRACTION: f64 = 0.25;

/// The limits of the timeout and of the pause.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryLimits {
    /// The shortest attempt timeout, and the one used before any round trip is measured.
    pub timeout_floor: Duration,
    /// The longest attempt timeout, doubling included.
    pub timeout_cap: Duration,
    /// The pause after the first attempt that failed; it doubles with each further failure.
    pub pause_initial: Duration,
    /// The longest pause.
    pub pause_max: Duration,
}

/// The round-trip estimator and backoff of one client.
#[derive(Clone, Debug)]
pub struct RetryTimer {
    limits: RetryLimits,
    /// Smoothed round trip, once one was measured.
    smoothed: Option<Duration>,
    /// Round-trip variation.
    variation: Duration,
    /// Attempts that failed since the last valid measurement (capped at [`DOUBLINGS_MAX`]).
    doublings: u32,
    jitter: StdRng,
}

impl RetryTimer {
    /// A timer with no measurement yet; `seed` makes its random spread reproducible.
    pub fn new(limits: RetryLimits, seed: u64) -> Self {
        RetryTimer {
            limits,
            smoothed: None,
            variation: Duration::ZERO,
            doublings: 0,
            jitter: crate::clock::seeded(seed),
        }
    }

    /// A request sent once was answered definitely after `round_trip`: update the estimate
    /// (RFC 6298, section 2) and undo any doubling.
    pub fn measured(&mut self, round_trip: Duration) {
        match self.smoothed {
            None => {
                self.smoothed = Some(round_trip);
                self.variation = round_trip / 2;
            }
            Some(smoothed) => {
                let deviation = smoothed.abs_diff(round_trip);
                self.variation = self.variation - self.variation / (1 << VARIATION_SHIFT)
                    + deviation / (1 << VARIATION_SHIFT);
                self.smoothed = Some(
                    smoothed - smoothed / (1 << SMOOTHING_SHIFT)
                        + round_trip / (1 << SMOOTHING_SHIFT),
                );
            }
        }
        self.doublings = 0;
    }

    /// An attempt ended without a definite answer (timeout, lost connection, `busy`,
    /// `unavailable`): the next timeout and pause are doubled.
    pub fn failed(&mut self) {
        self.doublings = (self.doublings + 1).min(DOUBLINGS_MAX);
    }

    /// The timeout before doubling: `SRTT + max(G, 4·RTTVAR)` within the floor and the cap, or
    /// the floor before any measurement.
    pub fn base_timeout(&self) -> Duration {
        let estimate = match self.smoothed {
            None => self.limits.timeout_floor,
            Some(smoothed) => smoothed + (self.variation * VARIATION_FACTOR).max(GRANULARITY),
        };
        estimate.clamp(self.limits.timeout_floor, self.cap())
    }

    /// How long the next attempt waits for its reply.
    pub fn timeout(&mut self) -> Duration {
        let cap = self.cap();
        let doubled = self.doubled(self.base_timeout(), cap);
        self.spread(doubled).max(self.limits.timeout_floor).min(cap)
    }

    /// How long to pause before the next attempt, after one that failed.
    pub fn pause(&mut self) -> Duration {
        let limits = self.limits;
        let doubled = self.doubled(limits.pause_initial / 2, limits.pause_max);
        self.spread(doubled.max(limits.pause_initial.min(limits.pause_max)))
    }

    /// The smoothed round trip, once measured.
    pub fn smoothed_round_trip(&self) -> Option<Duration> {
        self.smoothed
    }

    fn cap(&self) -> Duration {
        self.limits.timeout_cap.max(self.limits.timeout_floor)
    }

    /// `base` doubled once per failed attempt, at most `cap`.
    fn doubled(&self, base: Duration, cap: Duration) -> Duration {
        base.saturating_mul(1 << self.doublings).min(cap)
    }

    /// A backed-off value spread at random over [1 − JITTER_FRACTION, 1] of itself; a value
    /// that was not backed off is left exact.
    fn spread(&mut self, value: Duration) -> Duration {
        if self.doublings == 0 {
            return value;
        }
        value.mul_f64(1.0 - self.jitter.gen_range(0.0..JITTER_FRACTION))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits() -> RetryLimits {
        RetryLimits {
            timeout_floor: 100 * MS,
            timeout_cap: 10_000 * MS,
            pause_initial: 20 * MS,
            pause_max: 1_000 * MS,
        }
    }

    #[test]
    fn before_any_measurement_the_timeout_is_the_floor() {
        let mut timer = RetryTimer::new(limits(), 1);
        assert_eq!(timer.timeout(), 100 * MS);
        assert_eq!(timer.smoothed_round_trip(), None);
    }

    #[test]
    fn the_first_measurement_sets_srtt_and_half_of_it_as_variation() {
        let mut timer = RetryTimer::new(limits(), 1);
        timer.measured(400 * MS);
        // 400 + 4 × 200
        assert_eq!(timer.timeout(), 1_200 * MS);
    }

    #[test]
    fn later_measurements_are_smoothed_as_rfc_6298_says() {
        let mut timer = RetryTimer::new(limits(), 1);
        timer.measured(400 * MS);
        timer.measured(800 * MS);
        // RTTVAR = 3/4 × 200 + 1/4 × |400 − 800| = 250; SRTT = 7/8 × 400 + 1/8 × 800 = 450.
        assert_eq!(timer.smoothed_round_trip(), Some(450 * MS));
        assert_eq!(timer.timeout(), (450 + 4 * 250) * MS);
    }

    #[test]
    fn a_steady_fast_server_brings_the_timeout_down_to_the_floor() {
        let mut timer = RetryTimer::new(limits(), 1);
        for _ in 0..100 {
            timer.measured(2 * MS);
        }
        assert_eq!(timer.timeout(), 100 * MS);
    }

    #[test]
    fn a_slow_server_raises_the_timeout_up_to_the_cap() {
        let mut timer = RetryTimer::new(limits(), 1);
        timer.measured(900 * MS);
        assert_eq!(timer.timeout(), (900 + 4 * 450) * MS);
        timer.measured(60_000 * MS);
        assert_eq!(timer.timeout(), 10_000 * MS);
    }

    #[test]
    fn each_failure_doubles_the_timeout_with_a_spread_and_a_measurement_undoes_it() {
        let mut timer = RetryTimer::new(limits(), 7);
        timer.measured(10 * MS);
        assert_eq!(timer.timeout(), 100 * MS);
        let mut previous_top = 100 * MS;
        for doublings in 1..=6u32 {
            timer.failed();
            let top = (100 * MS * (1 << doublings)).min(10_000 * MS);
            let timeout = timer.timeout();
            assert!(
                timeout <= top && timeout >= top.mul_f64(1.0 - JITTER_FRACTION),
                "after {doublings} failures: {timeout:?} not within 75–100 % of {top:?}"
            );
            assert!(top >= previous_top);
            previous_top = top;
        }
        for _ in 0..20 {
            timer.failed();
        }
        assert!(timer.timeout() <= 10_000 * MS, "capped");
        timer.measured(10 * MS);
        assert_eq!(timer.timeout(), 100 * MS, "reset by a valid measurement");
    }

    #[test]
    fn the_spread_is_reproducible_from_the_seed_and_differs_between_seeds() {
        let run = |seed| {
            let mut timer = RetryTimer::new(limits(), seed);
            (0..8)
                .map(|_| {
                    timer.failed();
                    (timer.timeout(), timer.pause())
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn pauses_start_at_the_initial_pause_and_double_up_to_the_maximum() {
        let mut timer = RetryTimer::new(limits(), 5);
        timer.failed();
        let first = timer.pause();
        assert!(first <= 20 * MS && first >= (20 * MS).mul_f64(1.0 - JITTER_FRACTION));
        timer.failed();
        let second = timer.pause();
        assert!(second <= 40 * MS && second >= 30 * MS, "{second:?}");
        for _ in 0..20 {
            timer.failed();
        }
        let last = timer.pause();
        assert!(last <= 1_000 * MS && last >= 750 * MS, "{last:?}");
    }

    #[test]
    fn a_floor_above_the_cap_wins() {
        let mut timer = RetryTimer::new(
            RetryLimits {
                timeout_floor: 500 * MS,
                timeout_cap: 100 * MS,
                ..limits()
            },
            1,
        );
        timer.measured(MS);
        timer.failed();
        assert_eq!(timer.timeout(), 500 * MS);
    }
}
