//! Deterministic fault injection: the four failure kinds on demand.
//!
//! A [`FaultPlan`] is parsed from `drop-request=P,drop-reply=P,crash-actor=P,delay-ms=N,seed=S`
//! (probabilities between 0 and 1). The server uses it to lose requests before they are processed,
//! lose replies after their change is durable, crash account actors (before or after the change is
//! journaled) and delay replies; the swarm's client uses the first two on its side of the wire.
//! Draws come from one seeded generator, so a run is reproducible up to thread scheduling.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What to inject, and how often.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultPlan {
    /// Probability that a request is lost before it is processed (no effect, no reply).
    pub drop_request: f64,
    /// Probability that a reply is lost after its change became durable.
    pub drop_reply: f64,
    /// Probability that an account actor crashes while handling a change.
    pub crash_actor: f64,
    /// Every reply is delayed by this much.
    pub delay: Duration,
    /// Seed of the generator.
    pub seed: u64,
}

impl FaultPlan {
    /// True when nothing would ever be injected.
    pub fn is_quiet(&self) -> bool {
        self.drop_request == 0.0
            && self.drop_reply == 0.0
            && self.crash_actor == 0.0
            && self.delay.is_zero()
    }
}

/// The same form [`FaultPlan::from_str`] reads.
impl std::fmt::Display for FaultPlan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "drop-request={},drop-reply={},crash-actor={},delay-ms={},seed={}",
            self.drop_request,
            self.drop_reply,
            self.crash_actor,
            self.delay.as_millis(),
            self.seed
        )
    }
}

/// Splits `a=1,b=2` into its pairs (spaces around parts ignored, empty parts skipped); `what`
/// names the list in the error. Shared by every `KEY=VALUE,…` option.
pub fn key_values<'a>(text: &'a str, what: &str) -> Result<Vec<(&'a str, &'a str)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.split_once('=')
                .ok_or_else(|| format!("{what} {part:?} is not KEY=VALUE"))
        })
        .collect()
}

impl FromStr for FaultPlan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut plan = FaultPlan::default();
        for (key, value) in key_values(text, "fault")? {
            let probability = || -> Result<f64, String> {
                let p: f64 = value
                    .parse()
                    .map_err(|_| format!("{key}: {value:?} is not a number"))?;
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(format!("{key}: {p} is not between 0 and 1"))
                }
            };
            let whole = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("{key}: {value:?} is not a whole number"))
            };
            match key {
                "drop-request" => plan.drop_request = probability()?,
                "drop-reply" => plan.drop_reply = probability()?,
                "crash-actor" => plan.crash_actor = probability()?,
                "delay-ms" => plan.delay = Duration::from_millis(whole()?),
                "seed" => plan.seed = whole()?,
                other => return Err(format!("unknown fault {other:?} (expected drop-request, drop-reply, crash-actor, delay-ms, seed)")),
            }
        }
        Ok(plan)
    }
}

/// Where an injected actor crash happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Before the decision: a real panic inside the handler, which must be caught.
    BeforeJournal,
    /// After the record is queued in the journal but before the reply.
    AfterJournal,
}

/// Counts of what was injected.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Requests dropped.
    pub requests_dropped: AtomicU64,
    /// Replies dropped.
    pub replies_dropped: AtomicU64,
    /// Actor crashes.
    pub actor_crashes: AtomicU64,
}

/// A fault plan with its generator and counters, shared by every thread that injects.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    generator: parking_lot::Mutex<StdRng>,
    /// What was injected so far.
    pub counts: FaultCounts,
}

impl Faults {
    /// Starts injecting by `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        Faults {
            plan,
            generator: parking_lot::Mutex::new(StdRng::seed_from_u64(plan.seed)),
            counts: FaultCounts::default(),
        }
    }

    /// The plan in force.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    fn draw(&self, probability: f64) -> bool {
        probability > 0.0 && self.generator.lock().gen_bool(probability)
    }

    /// Should this request be lost?
    pub fn drop_request(&self) -> bool {
        let hit = self.draw(self.plan.drop_request);
        if hit {
            self.counts.requests_dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fault("drop_request");
        }
        hit
    }

    /// Should this reply be lost?
    pub fn drop_reply(&self) -> bool {
        let hit = self.draw(self.plan.drop_reply);
        if hit {
            self.counts.replies_dropped.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fault("drop_reply");
        }
        hit
    }

    /// Should the account actor crash now, and where? (A crash "after journaling" of a decision
    /// that journals nothing does not happen; see [`Faults::crashed`].)
    pub fn crash(&self) -> Option<CrashPoint> {
        if !self.draw(self.plan.crash_actor) {
            return None;
        }
        Some(if self.generator.lock().gen_bool(0.5) {
            CrashPoint::BeforeJournal
        } else {
            CrashPoint::AfterJournal
        })
    }

    /// Counts a crash that was injected.
    pub fn crashed(&self) {
        self.counts.actor_crashes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::fault("crash_actor");
    }

    /// How long to hold each reply.
    pub fn delay(&self) -> Duration {
        self.plan.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_parse_and_bad_ones_are_refused_with_a_reason() {
        let plan: FaultPlan = "drop-request=0.1, drop-reply=0.2,crash-actor=0.05,delay-ms=3,seed=9"
            .parse()
            .unwrap();
        assert_eq!(plan.drop_reply, 0.2);
        assert_eq!(plan.delay, Duration::from_millis(3));
        assert_eq!(plan.seed, 9);
        assert!("drop-request=2"
            .parse::<FaultPlan>()
            .unwrap_err()
            .contains("between 0 and 1"));
        assert!("explode=1"
            .parse::<FaultPlan>()
            .unwrap_err()
            .contains("unknown fault"));
        assert!("".parse::<FaultPlan>().unwrap().is_quiet());
        assert_eq!(plan.to_string().parse::<FaultPlan>().unwrap(), plan);
    }

    #[test]
    fn the_same_seed_injects_the_same_faults() {
        let plan: FaultPlan = "drop-request=0.5,seed=42".parse().unwrap();
        let draws = |faults: Faults| (0..64).map(|_| faults.drop_request()).collect::<Vec<_>>();
        assert_eq!(draws(Faults::new(plan)), draws(Faults::new(plan)));
    }
}
