//! PIN checks: the PIN verification key, the limits on failed checks, and the small fixed pool
//! that still checks the first release's argon2id hashes.
//!
//! Every PIN that reaches the server (Verify, the old PIN of ChangePin) goes through
//! `Bank::check_pin`, in this order: the connection's and the peer's failure allowance
//! (exhausted: `busy`, nothing checked, nothing counted); the committed account (none: the same
//! keyed work against a stand-in verifier, then `unknown_card`; locked: `card_locked`, nothing
//! hashed); then the keyed check (microseconds, in place) or, for a hash of the first release, an
//! argon2id check on the pool (full: `busy`). Every failure takes a token from both buckets, is
//! counted in `bank_pin_failures_total` and logged as a security event with the card masked.

use super::Bank;
use crate::ledger::{Event, Outcome};
use crate::model::{AccountState, Card, Code, RequestId};
use crate::pin::{self, PinHash, PinKey};
use crate::ratelimit::{
    peer_key, BucketKey, Clock, PeerBuckets, RateLimit, TokenBucket, WhenFull, PEERS_TRACKED_MAX,
};
use crate::storage::Storage;
use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use tokio::sync::oneshot;

/// Where the server gets its PIN verification key.
#[derive(Clone, Debug)]
pub enum PinKeySource {
    /// A key file: read when it exists; created (0600) when it does not and no account's PIN was
    /// made with a key yet. Must lie outside the data directory.
    File(PathBuf),
    /// A key given in memory, for embedders that keep the key elsewhere and for tests.
    Given(PinKey),
}

/// What the default key file's name adds to the data directory's: `./data` keeps its key in
/// `./data.pin-key`, beside the directory and not in it, so a copy of the directory has no key.
pub const PIN_KEY_FILE_SUFFIX: &str = ".pin-key";

/// The default key file for `data_dir`: its path with [`PIN_KEY_FILE_SUFFIX`] added.
pub fn default_pin_key_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.as_os_str().to_owned();
    name.push(PIN_KEY_FILE_SUFFIX);
    PathBuf::from(name)
}

/// Argon2id checks waiting for the pool at most, by default; more are answered `busy`.
pub const PIN_CHECK_QUEUE_MAX_DEFAULT: usize = 64;

/// Failed PIN checks one connection may make, by default: 10 at once, then 10 a minute.
pub const PIN_FAILURES_PER_CONNECTION_DEFAULT: RateLimit = RateLimit {
    burst: 10,
    per_minute: 10,
};

/// Failed PIN checks one peer address may make over all its connections, by default: 100 at
/// once, then 60 a minute (generous, because many ATMs may sit behind one address).
pub const PIN_FAILURES_PER_PEER_DEFAULT: RateLimit = RateLimit {
    burst: 100,
    per_minute: 60,
};

/// Opens the PIN key `source` names and checks it against the accounts in `journal`: every keyed
/// verifier carries the check value of the key it was made with, so a missing or different key is
/// refused with a message that says which. A missing key file is created only when no keyed
/// verifier exists yet (no accounts, or only argon2id hashes of the first release).
pub(super) fn open_pin_key(
    source: &PinKeySource,
    data_dir: &Path,
    journal: &Storage,
) -> Result<PinKey, String> {
    let (checks, legacy) = journal.with_committed(|ledger| {
        let mut checks = HashSet::new();
        let mut legacy = 0usize;
        for account in ledger.accounts.values() {
            match account.pin_hash().key_check() {
                Some(check) => {
                    checks.insert(check);
                }
                None => legacy += 1,
            }
        }
        (checks, legacy)
    });
    let key = match source {
        PinKeySource::Given(key) => key.clone(),
        PinKeySource::File(path) => {
            refuse_inside(path, data_dir)?;
            match PinKey::read(path)? {
                Some(key) => key,
                None if checks.is_empty() => {
                    let key = PinKey::create(path)?;
                    tracing::info!(
                        path = %path.display(),
                        check = %pin::check_text(&key.check()),
                        "created a new PIN verification key (mode 0600); back it up and keep it apart from the data directory"
                    );
                    key
                }
                None => {
                    return Err(format!(
                        "the PIN key file {} is missing, but the data directory holds PINs made with a PIN key (check value {}); restore that file or name it with --pin-key-file / BANK_PIN_KEY_FILE: without it no PIN can be verified",
                        path.display(),
                        checks.iter().map(pin::check_text).collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        }
    };
    if let Some(other) = checks.iter().find(|check| **check != key.check()) {
        return Err(format!(
            "the PIN key (check value {}) is not the key the data directory's PINs were made with (check value {}); start with the right key (--pin-key-file / BANK_PIN_KEY_FILE)",
            pin::check_text(&key.check()),
            pin::check_text(other)
        ));
    }
    if legacy > 0 {
        tracing::warn!(
            accounts = legacy,
            "accounts still hold argon2id PIN hashes of the first release; each is re-keyed at its card's next correct PIN"
        );
    }
    Ok(key)
}

/// A key inside the data directory would be stolen with it.
fn refuse_inside(path: &Path, data_dir: &Path) -> Result<(), String> {
    // A node on PostgreSQL storage has no data directory for the key to be inside of.
    let Ok(directory) = std::fs::canonicalize(data_dir) else {
        return Ok(());
    };
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    match std::fs::canonicalize(parent) {
        Ok(parent) if parent.starts_with(&directory) => Err(format!(
            "the PIN key {} lies inside the data directory {}; keep it apart, or a copy of the directory yields the PINs",
            path.display(),
            data_dir.display()
        )),
        Ok(_) => Ok(()),
        Err(error) => Err(format!(
            "cannot use the PIN key {}: {error}",
            path.display()
        )),
    }
}

/// Counters of the argon2id pool (exported for tests and audits).
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Threads the pool started (at most its size, started on first use).
    pub threads: AtomicUsize,
    /// Checks running now.
    pub running: AtomicUsize,
    /// The most checks ever running at once.
    pub running_peak: AtomicUsize,
    /// Checks waiting now.
    pub queued: AtomicUsize,
    /// The most checks ever waiting at once.
    pub queued_peak: AtomicUsize,
    /// Checks refused because the queue was full.
    pub refused: AtomicU64,
    /// Checks done.
    pub done: AtomicU64,
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads, one per core, for argon2id checks, with a bounded queue: a flood of
/// slow checks costs at most `threads` hashes' memory at once, and what does not fit in the queue
/// is refused at once instead of waiting without bound (tokio's blocking pool would grow to 512
/// threads, each holding a hash's memory).
pub struct HashPool {
    threads: usize,
    queue_max: usize,
    sender: OnceLock<SyncSender<Job>>,
    stats: Arc<PoolStats>,
}

impl HashPool {
    /// A pool of `threads` threads (started on first use) and `queue_max` waiting checks.
    pub fn new(threads: usize, queue_max: usize) -> Self {
        HashPool {
            threads: threads.max(1),
            queue_max: queue_max.max(1),
            sender: OnceLock::new(),
            stats: Arc::default(),
        }
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    fn start(&self) -> SyncSender<Job> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(self.queue_max);
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        for index in 0..self.threads {
            let receiver = receiver.clone();
            let stats = self.stats.clone();
            let started = std::thread::Builder::new()
                .name(format!("pin-check-{index}"))
                .spawn(move || loop {
                    let job = match receiver.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    stats.queued.fetch_sub(1, Ordering::AcqRel);
                    let running = stats.running.fetch_add(1, Ordering::AcqRel) + 1;
                    stats.running_peak.fetch_max(running, Ordering::AcqRel);
                    // The job counts itself done before it answers (see `run`).
                    job();
                });
            match started {
                Ok(_) => {
                    self.stats.threads.fetch_add(1, Ordering::AcqRel);
                }
                Err(error) => tracing::error!(%error, "cannot start a PIN check thread"),
            }
        }
        sender
    }

    /// Runs `work` on the pool; `None` when the queue is full (or the pool is gone).
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let sender = self.sender.get_or_init(|| self.start());
        let queued = self.stats.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if queued > self.queue_max {
            self.stats.queued.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused.fetch_add(1, Ordering::AcqRel);
            return None;
        }
        self.stats.queued_peak.fetch_max(queued, Ordering::AcqRel);
        let (done, answer) = oneshot::channel();
        let stats = self.stats.clone();
        let job: Job = Box::new(move || {
            let result = work();
            // Counted before the answer leaves, so whoever has the answer sees the count.
            stats.running.fetch_sub(1, Ordering::AcqRel);
            stats.done.fetch_add(1, Ordering::AcqRel);
            let _ = done.send(result);
        });
        match sender.try_send(job) {
            Ok(()) => answer.await.ok(),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.queued.fetch_sub(1, Ordering::AcqRel);
                self.stats.refused.fetch_add(1, Ordering::AcqRel);
                None
            }
        }
    }
}

/// Counters of PIN checks (exported for tests and audits).
#[derive(Debug, Default)]
pub struct PinStats {
    /// Failed checks: wrong PINs, unknown cards, locked cards.
    pub failures: AtomicU64,
    /// Checks refused unchecked by a failure limit.
    pub rate_limited: AtomicU64,
    /// Argon2id hashes replaced by keyed verifiers.
    pub rekeyed: AtomicU64,
    /// Keyed checks computed, the stand-in checks of unknown cards included: an unknown card
    /// and a wrong PIN each cost exactly one.
    pub keyed_checks: AtomicU64,
}

/// Whom a connection's failed PIN checks count against beyond the connection itself: the
/// terminal its TLS client certificate names, else its peer address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FailureSource {
    /// The peer address (counted by [`peer_key`]).
    Peer(IpAddr),
    /// The terminal's name (or certificate fingerprint), under mutual TLS: terminals behind one
    /// address do not share an allowance, and one terminal does not escape it by moving.
    Terminal(Arc<str>),
}

impl BucketKey for FailureSource {
    fn bucket_key(&self) -> Self {
        match self {
            FailureSource::Peer(peer) => FailureSource::Peer(peer_key(*peer)),
            FailureSource::Terminal(_) => self.clone(),
        }
    }
}

/// One connection's side of the failure limits: its own bucket and whom else it counts against.
#[derive(Debug)]
pub struct PinGate {
    bucket: Mutex<TokenBucket>,
    source: Option<FailureSource>,
}

/// Everything PIN checks need: the key, the limits and their buckets, the pool.
pub struct Pins {
    key: PinKey,
    /// The stand-in an unknown card is checked against, made once.
    unknown_card: PinHash,
    per_connection: RateLimit,
    per_peer: RateLimit,
    peers: PeerBuckets<FailureSource>,
    clock: Arc<dyn Clock>,
    pool: HashPool,
    /// Counters.
    pub stats: PinStats,
}

impl Pins {
    /// PIN checks with `key`, these limits, time from `clock` and an argon2id pool of one thread
    /// per core.
    pub fn new(
        key: PinKey,
        per_connection: RateLimit,
        per_peer: RateLimit,
        queue_max: usize,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        Pins {
            unknown_card: key.unknown_card_verifier(),
            key,
            per_connection,
            per_peer,
            peers: PeerBuckets::new(PEERS_TRACKED_MAX, WhenFull::Untracked),
            clock,
            pool: HashPool::new(cores, queue_max),
            stats: PinStats::default(),
        }
    }

    /// The PIN verification key (new verifiers are made with it).
    pub fn key(&self) -> &PinKey {
        &self.key
    }

    /// The argon2id pool's counters.
    pub fn pool(&self) -> &PoolStats {
        self.pool.stats()
    }

    /// Peer addresses with a failure bucket now.
    pub fn peers_tracked(&self) -> usize {
        self.peers.len()
    }

    /// The gate of a new connection from `peer`.
    pub fn gate(&self, peer: Option<IpAddr>) -> Arc<PinGate> {
        self.gate_for(peer, None)
    }

    /// The gate of a new connection from `peer`, by `terminal` when mutual TLS named one: its
    /// failures then count against the terminal instead of the address.
    pub fn gate_for(
        &self,
        peer: Option<IpAddr>,
        terminal: Option<&super::tls::Terminal>,
    ) -> Arc<PinGate> {
        let source = match terminal {
            Some(terminal) => Some(FailureSource::Terminal(terminal.key().into())),
            None => peer.map(FailureSource::Peer),
        };
        Arc::new(PinGate {
            bucket: Mutex::new(TokenBucket::full(self.per_connection, self.clock.now())),
            source,
        })
    }

    fn admits(&self, gate: &PinGate) -> bool {
        let now = self.clock.now();
        gate.bucket.lock().allows(self.per_connection, now)
            && gate
                .source
                .as_ref()
                .is_none_or(|source| self.peers.allows(source.clone(), self.per_peer, now))
    }

    fn failed(&self, gate: &PinGate, card: Card, reason: &'static str) {
        let now = self.clock.now();
        gate.bucket.lock().take(self.per_connection, now);
        if let Some(source) = &gate.source {
            let _ = self.peers.take(source.clone(), self.per_peer, now);
        }
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        crate::metrics::pin_failure(reason);
        tracing::warn!(
            target: "security",
            card = %mask_card(card),
            source = ?gate.source,
            reason,
            "PIN check failed"
        );
    }
}

/// A card number for logs: the first 6 and last 4 digits of a 16-digit number, proportionally
/// fewer of a shorter one (3 and 2 of the lab's 9 digits), the rest as `*`.
pub fn mask_card(card: Card) -> String {
    let digits = card.to_string();
    let length = digits.len();
    let front = (length * 6 / 16).min(6);
    let back = (length * 4 / 16).min(4);
    format!(
        "{}{}{}",
        &digits[..front],
        "*".repeat(length - front - back),
        &digits[length - back..]
    )
}

/// What checking a PIN found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PinVerdict {
    /// Not checked: a failure limit is used up, or the argon2id pool is full. Not counted.
    Busy,
    /// No committed account has this card.
    UnknownCard,
    /// The account is frozen or closed (this code); nothing was hashed, nothing is counted: no
    /// PIN of such an account is checked at all.
    Refused(Code),
    /// The card is locked; nothing was hashed.
    Locked,
    /// No candidate is the PIN.
    Wrong,
    /// The candidate at `index` is the PIN; `rekey` is its keyed verifier when the stored one is
    /// an argon2id hash; `clean` when the committed account has no wrong PIN to clear.
    Right {
        index: usize,
        rekey: Option<PinHash>,
        clean: bool,
    },
}

fn answer(status: Code) -> Outcome {
    Outcome::bare(status)
}

impl Bank {
    /// The PIN checks.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Checks `candidates` (the first only, against an argon2id hash) as `card`'s PIN through
    /// the connection's `gate`; see the module docs for the order.
    async fn check_pin(&self, gate: &PinGate, card: Card, candidates: Vec<String>) -> PinVerdict {
        let pins = &self.pins;
        if !pins.admits(gate) {
            pins.stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            crate::metrics::count(crate::metrics::PIN_RATE_LIMITED);
            tracing::warn!(target: "security", card = %mask_card(card), source = ?gate.source, "PIN check refused: too many failures");
            return PinVerdict::Busy;
        }
        let stored = self.storage().read_committed_account(card, |account| {
            (
                account.pin_hash(),
                account.state,
                account.is_locked(),
                account.pin_failures == 0,
            )
        });
        let first = candidates.first().cloned().unwrap_or_default();
        let keyed = |stored: &PinHash, clean: bool| {
            pins.stats.keyed_checks.fetch_add(1, Ordering::Relaxed);
            candidates
                .iter()
                .position(|pin_text| {
                    pin::is_well_formed(pin_text) && pins.key.matches(card, pin_text, stored)
                })
                .map_or(PinVerdict::Wrong, |index| PinVerdict::Right {
                    index,
                    rekey: None,
                    clean,
                })
        };
        let verdict = match stored {
            None => {
                // The same work as for a card that exists, so that time does not tell them apart.
                std::hint::black_box(keyed(&pins.unknown_card, true));
                PinVerdict::UnknownCard
            }
            Some((_, AccountState::Closed, ..)) => PinVerdict::Refused(Code::AccountClosed),
            Some((_, AccountState::Frozen, ..)) => PinVerdict::Refused(Code::AccountFrozen),
            Some((_, _, true, _)) => PinVerdict::Locked,
            Some((stored, _, false, clean)) if stored.is_keyed() => keyed(&stored, clean),
            Some((stored, _, false, clean)) => {
                let offered = first.clone();
                let checked = pins
                    .pool
                    .run(move || pin::is_well_formed(&offered) && pin::verify(&offered, &stored))
                    .await;
                match checked {
                    None => return PinVerdict::Busy,
                    Some(false) => PinVerdict::Wrong,
                    Some(true) => PinVerdict::Right {
                        index: 0,
                        rekey: Some(pins.key.verifier(card, &first)),
                        clean,
                    },
                }
            }
        };
        match verdict {
            PinVerdict::UnknownCard => pins.failed(gate, card, "unknown_card"),
            PinVerdict::Locked => pins.failed(gate, card, "card_locked"),
            PinVerdict::Wrong => pins.failed(gate, card, "incorrect_pin"),
            PinVerdict::Busy | PinVerdict::Refused(_) | PinVerdict::Right { .. } => {}
        }
        verdict
    }

    /// Decides the PIN attempt `verdict` made; `on_right` is the event of a right PIN with a
    /// keyed verifier already in place.
    async fn decide_pin(
        self: &Arc<Self>,
        card: Card,
        request: RequestId,
        verdict: PinVerdict,
        on_right: Event,
    ) -> Outcome {
        let event = match verdict {
            PinVerdict::Busy => return answer(Code::Busy),
            PinVerdict::UnknownCard => return answer(Code::UnknownCard),
            PinVerdict::Locked => return answer(Code::CardLocked),
            PinVerdict::Refused(code) => return answer(code),
            PinVerdict::Wrong => Event::PinAttempt { correct: false },
            PinVerdict::Right { rekey: None, .. } => on_right,
            PinVerdict::Right {
                rekey: Some(pin_hash),
                ..
            } => match on_right {
                // A change replaces the old hash anyway.
                Event::PinChanged { .. } => on_right,
                _ => Event::PinRekeyed { pin_hash },
            },
        };
        let rekey = matches!(event, Event::PinRekeyed { .. });
        let outcome = self.decide(card, request, event).await;
        if rekey && outcome.status == Code::Approved {
            self.pins.stats.rekeyed.fetch_add(1, Ordering::Relaxed);
            crate::metrics::count(crate::metrics::PINS_REKEYED);
            tracing::info!(card = %mask_card(card), "argon2id PIN hash re-keyed");
        }
        outcome
    }

    /// A PIN attempt of `pin_text` on `card`, through `gate`: a `Verify`'s, and the PIN an
    /// acquirer's message carries (the ISO 8583 door), checked the same way. A right PIN with
    /// nothing to record (no wrong PIN to clear, no hash to re-key, by the committed state) is
    /// approved without a turn of the account actor: it changes nothing, and the committed state
    /// it was judged by is durable, so there is nothing to wait for. A verification then costs
    /// a keyed check and no actor, no journal record and no wait for the disk.
    ///
    /// A wrong attempt the actor has decided and not yet made durable is not in the committed
    /// state yet, so the shortcut also asks the actor's working count
    /// ([`Bank::pin_failures_deciding`], read after the committed state): only when both are 0
    /// is the PIN approved without the actor. Otherwise a burst of guesses sent at once could
    /// have its right one approved while the wrong ones before it were locking the card. A
    /// wrong attempt the actor decides after that read comes after this PIN, as if it had
    /// arrived later.
    pub(super) async fn verify_pin(
        self: Arc<Self>,
        gate: Arc<PinGate>,
        card: Card,
        request: RequestId,
        pin_text: String,
    ) -> Outcome {
        let verdict = self.check_pin(&gate, card, vec![pin_text]).await;
        if let PinVerdict::Right {
            rekey: None,
            clean: true,
            ..
        } = verdict
        {
            // A failed journal answers everything `unavailable`, as the actor would: the
            // server acknowledges nothing until it is restarted.
            if self.storage().failure().is_some() {
                return answer(Code::Unavailable);
            }
            if self.pin_failures_deciding(card) == 0 {
                return answer(Code::Approved);
            }
        }
        self.decide_pin(card, request, verdict, Event::PinAttempt { correct: true })
            .await
    }

    /// A ChangePin on the verified `card`. Either PIN being the current one approves it: the old
    /// one makes the change, the new one means the change is already made (the retry of a change
    /// whose reply was lost), and the result, the new PIN in force, is the same. Any other pair
    /// is a wrong PIN and counts like one.
    pub(super) async fn change_pin(
        self: Arc<Self>,
        gate: Arc<PinGate>,
        card: Card,
        request: RequestId,
        old_pin: String,
        new_pin: String,
    ) -> Outcome {
        if !pin::is_well_formed(&new_pin) {
            return answer(Code::InvalidRequest);
        }
        let pin_hash = self.pins.key.verifier(card, &new_pin);
        let verdict = self.check_pin(&gate, card, vec![old_pin, new_pin]).await;
        let outcome = self
            .decide_pin(card, request, verdict, Event::PinChanged { pin_hash })
            .await;
        if outcome.status == Code::Approved {
            tracing::info!(target: "security", card = %mask_card(card), "PIN changed");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_numbers_are_masked_in_proportion_to_their_length() {
        assert_eq!(mask_card(123_456_789), "123****89");
        assert_eq!(mask_card(4_111_111_111_111_111), "411111******1111");
        assert_eq!(mask_card(7), "*");
    }

    #[test]
    fn failures_count_against_the_terminal_when_mutual_tls_names_one() {
        let per_peer = RateLimit {
            burst: 2,
            per_minute: 0,
        };
        let unlimited = RateLimit {
            burst: u32::MAX,
            per_minute: 0,
        };
        let pins = Pins::new(
            PinKey::from_bytes([7; crate::pin::PIN_KEY_BYTES]),
            unlimited,
            per_peer,
            4,
            Arc::new(crate::clock::ManualClock::default()),
        );
        let terminal = super::super::tls::Terminal {
            name: Some("atm-17".into()),
            fingerprint: "ab".repeat(32),
        };
        let one: IpAddr = [10, 0, 0, 1].into();
        let two: IpAddr = [10, 0, 0, 2].into();
        let first = pins.gate_for(Some(one), Some(&terminal));
        pins.failed(&first, 123_456_789, "incorrect_pin");
        pins.failed(&first, 123_456_789, "incorrect_pin");
        // The same terminal from another address has no allowance left...
        assert!(!pins.admits(&pins.gate_for(Some(two), Some(&terminal))));
        // ...while the address itself, without a terminal, was not charged.
        assert!(pins.admits(&pins.gate_for(Some(one), None)));
    }

    #[test]
    fn the_default_key_file_lies_beside_the_data_directory() {
        assert_eq!(
            default_pin_key_file(Path::new("./data")),
            PathBuf::from("./data.pin-key")
        );
    }

    #[tokio::test]
    async fn the_pool_runs_at_most_its_threads_at_once_and_refuses_beyond_its_queue() {
        let pool = Arc::new(HashPool::new(1, 2));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Arc::new(std::sync::Mutex::new(hold));
        let mut tasks = Vec::new();
        for wanted in [(1, 0), (1, 1), (1, 2)] {
            let task_pool = pool.clone();
            let hold = hold.clone();
            tasks.push(tokio::spawn(async move {
                task_pool
                    .run(move || hold.lock().unwrap().recv().is_ok())
                    .await
            }));
            // One at a time, so that the counters move in a known order: one runs, two wait.
            let now = || {
                (
                    pool.stats().running.load(Ordering::Acquire),
                    pool.stats().queued.load(Ordering::Acquire),
                )
            };
            while now() != wanted {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(
            pool.run(|| true).await,
            None,
            "a full queue refuses at once"
        );
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), Some(true));
        }
        let stats = pool.stats();
        assert_eq!(stats.threads.load(Ordering::Acquire), 1);
        assert_eq!(stats.running_peak.load(Ordering::Acquire), 1);
        assert_eq!(stats.refused.load(Ordering::Acquire), 1);
    }
}
