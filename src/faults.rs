//! Deterministic fault injection: the four failure kinds on demand.
//!
//! A [`FaultPlan`] is parsed from `drop-request=P,drop-reply=P,crash-actor=P,delay-ms=N,seed=S`
//! (probabilities between 0 and 1). The server uses it to lose requests before they are processed,
//! lose replies after their change is durable, crash account actors (before or after the change is
//! journaled) and delay replies; the client library uses the first two on its side of the wire.
//!
//! ## Decisions are a pure function of the seed, the request and its attempt
//!
//! Whether a fault hits is [`hits`]`(seed, kind, request id, attempt)`: a hash of those four
//! values compared with the probability. Nothing depends on the order in which threads, sessions
//! or replies happen to run, so a given seed loses the same messages on every run, and a test can
//! state exactly which faults its seed produces.
//!
//! The attempt is what makes a retry a new draw (with the request id alone, a dropped request
//! would be dropped again on every retry, forever):
//!
//! - the client library knows it: the number of times it has sent that id before;
//! - the server counts it: [`Faults`] keeps, per kind and request id, how many times it has drawn
//!   for that id (the first arrival is attempt 0, the retry on the next connection attempt 1, …).
//!   These counts are for testing only and bounded by [`FAULT_ATTEMPTS_TRACKED_MAX`]: when that many
//!   ids are tracked the counts start again from zero (each decision stays a function of its
//!   inputs; only very long runs see an id's attempts counted again).
//!
//! Counting attempts per id rather than seeding a generator per connection keeps the decisions
//! independent of how many other clients connect and in which order, so they stay reproducible
//! when many clients run at once.

use crate::protocol::RequestId;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most (kind, request id) pairs whose attempts the server counts at once; past it the counts
/// start again (see the module docs). Big enough for any test or swarm run to never reach it.
pub const FAULT_ATTEMPTS_TRACKED_MAX: usize = 1 << 20;

/// The faults that are drawn per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A request is lost before it is processed.
    DropRequest,
    /// A reply is lost after its change became durable.
    DropReply,
    /// An account actor crashes while deciding the request.
    CrashActor,
}

impl FaultKind {
    /// The kind's name in metrics.
    fn name(self) -> &'static str {
        match self {
            FaultKind::DropRequest => "drop_request",
            FaultKind::DropReply => "drop_reply",
            FaultKind::CrashActor => "crash_actor",
        }
    }
}

/// One step of SplitMix64: a cheap, well-mixed 64-bit hash step.
fn mix(state: u64, value: u64) -> u64 {
    let mut z = (state ^ value).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64 random-looking bits that decide `kind` for attempt `attempt` of request `id`.
fn fault_bits(seed: u64, kind: FaultKind, id: RequestId, attempt: u32) -> u64 {
    [kind as u64, id.client, id.sequence, u64::from(attempt)]
        .into_iter()
        .fold(seed, mix)
}

/// Does the fault `kind`, injected with `probability`, hit attempt `attempt` of request `id`
/// under `seed`? A pure function: the same inputs always give the same answer.
pub fn hits(seed: u64, kind: FaultKind, id: RequestId, attempt: u32, probability: f64) -> bool {
    hit_bits(seed, kind, id, attempt, probability).is_some()
}

/// Like [`hits`]; a hit comes with its bits, whose lowest bit callers may use for a further
/// choice (it is independent of the bits that decided the hit).
fn hit_bits(
    seed: u64,
    kind: FaultKind,
    id: RequestId,
    attempt: u32,
    probability: f64,
) -> Option<u64> {
    if probability <= 0.0 {
        return None;
    }
    let bits = fault_bits(seed, kind, id, attempt);
    // The top 53 bits as a uniform number in [0, 1).
    let uniform = (bits >> 11) as f64 / (1u64 << 53) as f64;
    (probability >= 1.0 || uniform < probability).then_some(bits)
}

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

/// A fault plan with the server's attempt counts and what it injected, shared by every thread
/// that injects.
#[derive(Debug)]
pub struct Faults {
    plan: FaultPlan,
    /// How many times each (kind, request id) has been drawn for: the attempt of the next draw.
    attempts: parking_lot::Mutex<HashMap<(FaultKind, RequestId), u32>>,
    /// What was injected so far.
    pub counts: FaultCounts,
}

impl Faults {
    /// Starts injecting by `plan`.
    pub fn new(plan: FaultPlan) -> Self {
        Faults {
            plan,
            attempts: parking_lot::Mutex::new(HashMap::new()),
            counts: FaultCounts::default(),
        }
    }

    /// The plan in force.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    /// Draws `kind` for the next attempt of `id` and counts the attempt.
    fn draw(&self, kind: FaultKind, id: RequestId, probability: f64) -> Option<u64> {
        if probability <= 0.0 {
            return None;
        }
        let attempt = {
            let mut attempts = self.attempts.lock();
            if attempts.len() >= FAULT_ATTEMPTS_TRACKED_MAX && !attempts.contains_key(&(kind, id)) {
                attempts.clear();
            }
            let count = attempts.entry((kind, id)).or_insert(0);
            let attempt = *count;
            *count = count.saturating_add(1);
            attempt
        };
        hit_bits(self.plan.seed, kind, id, attempt, probability)
    }

    /// Draws `kind` for `id` and, on a hit, counts it.
    fn inject(&self, kind: FaultKind, id: RequestId, probability: f64, count: &AtomicU64) -> bool {
        let hit = self.draw(kind, id, probability).is_some();
        if hit {
            count.fetch_add(1, Ordering::Relaxed);
            crate::metrics::fault(kind.name());
        }
        hit
    }

    /// Should this arrival of request `id` be lost?
    pub fn drop_request(&self, id: RequestId) -> bool {
        let count = &self.counts.requests_dropped;
        self.inject(FaultKind::DropRequest, id, self.plan.drop_request, count)
    }

    /// Should this reply to `id` be lost?
    pub fn drop_reply(&self, id: RequestId) -> bool {
        let count = &self.counts.replies_dropped;
        self.inject(FaultKind::DropReply, id, self.plan.drop_reply, count)
    }

    /// Should the account actor crash while deciding `id` now, and where? (A crash "after
    /// journaling" of a decision that journals nothing does not happen; see [`Faults::crashed`].)
    pub fn crash(&self, id: RequestId) -> Option<CrashPoint> {
        let bits = self.draw(FaultKind::CrashActor, id, self.plan.crash_actor)?;
        // The point is drawn per attempt too: with every decision crashing, an attempt that
        // crashes after journaling lets the next one be a replay.
        Some(if bits & 1 == 0 {
            CrashPoint::BeforeJournal
        } else {
            CrashPoint::AfterJournal
        })
    }

    /// Counts a crash that was injected.
    pub fn crashed(&self) {
        self.counts.actor_crashes.fetch_add(1, Ordering::Relaxed);
        crate::metrics::fault(FaultKind::CrashActor.name());
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

    fn id(sequence: u64) -> RequestId {
        RequestId {
            client: 7,
            sequence,
        }
    }

    #[test]
    fn the_same_seed_injects_the_same_faults_in_any_order() {
        let plan: FaultPlan = "drop-request=0.5,seed=42".parse().unwrap();
        let forward = Faults::new(plan);
        let backward = Faults::new(plan);
        let ahead: Vec<bool> = (1..=64).map(|s| forward.drop_request(id(s))).collect();
        let mut behind: Vec<bool> = (1..=64)
            .rev()
            .map(|s| backward.drop_request(id(s)))
            .collect();
        behind.reverse();
        assert_eq!(ahead, behind);
        // Some hit and some missed: the draw is not constant.
        assert!(ahead.contains(&true) && ahead.contains(&false));
        let other_seed = Faults::new("drop-request=0.5,seed=43".parse().unwrap());
        let other: Vec<bool> = (1..=64).map(|s| other_seed.drop_request(id(s))).collect();
        assert_ne!(ahead, other);
    }

    #[test]
    fn every_attempt_is_a_new_draw_so_a_retry_gets_through() {
        let faults = Faults::new("drop-request=0.5,seed=1".parse().unwrap());
        for sequence in 1..=32 {
            let through = (0..64).any(|_| !faults.drop_request(id(sequence)));
            assert!(
                through,
                "request {sequence} dropped on 64 attempts in a row"
            );
        }
        let attempts: Vec<bool> = (0..16)
            .map(|attempt| hits(1, FaultKind::DropRequest, id(1), attempt, 0.5))
            .collect();
        assert!(attempts.contains(&true) && attempts.contains(&false));
    }

    #[test]
    fn kinds_draw_independently_and_the_extremes_are_exact() {
        let differ = (1..=64).any(|s| {
            hits(5, FaultKind::DropRequest, id(s), 0, 0.5)
                != hits(5, FaultKind::DropReply, id(s), 0, 0.5)
        });
        assert!(differ);
        assert!((1..=64).all(|s| hits(5, FaultKind::CrashActor, id(s), 0, 1.0)));
        assert!((1..=64).all(|s| !hits(5, FaultKind::CrashActor, id(s), 0, 0.0)));
        let rate = (1..=10_000)
            .filter(|s| hits(5, FaultKind::DropReply, id(*s), 0, 0.3))
            .count();
        assert!(
            (2_700..=3_300).contains(&rate),
            "{rate} of 10000 at p = 0.3"
        );
    }
}
