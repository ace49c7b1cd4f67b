//! The memory of completed requests: what makes a retry get the original reply instead of running
//! again. See [`ClientWindow`] for the retention rule and [`Principal`] for whose memory a request
//! is kept in.

use super::{Card, Event, Lsn, Outcome, Record, Shards};
use crate::model::Code;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// How many of each client's most recent sequence numbers the server remembers. A client keeps at
/// most this many requests unanswered, so every id it can still retry is remembered.
pub const REQUEST_WINDOW: u64 = 32;

/// How many of a sending card's most recent transfer numbers a receiving card remembers
/// ([`Principal::Incoming`]): as many as the sender may have on their way at once
/// (`ledger::TRANSFERS_IN_TRANSIT_SPAN`), so a hot pair of accounts keeps a few flushes' worth
/// of transfers in flight, and every redelivered one is inside the window.
pub const RECEIPT_WINDOW: u64 = 256;

/// How many clients the memory of completed requests keeps per principal (per card, and for the
/// operator). A new client beyond it takes the place of the least recently used one, provided that
/// one has been idle for [`CLIENT_EVICTION_IDLE_MS`]; otherwise the new client is answered `busy`.
/// Only someone who has verified a card can add clients to its memory, so the bound is what keeps
/// that card's holder (or a thief of the card and PIN) from growing the server's memory (by about
/// 2 MiB at most). It is well above the number of ATMs that honestly touch one card within a
/// minute (a thousand-ATM swarm on a few cards included), so honest clients are not turned away.
pub const CLIENTS_PER_PRINCIPAL_MAX: usize = 1024;

/// How long a client must have completed nothing before a new client of the same principal may
/// take its place in a full memory: twice the client library's 30 s retry deadline, so a client
/// that may still be retrying is never forgotten by eviction (its retry would run again).
pub const CLIENT_EVICTION_IDLE_MS: u64 = 60_000;

/// What identifies a request's parameters, to tell a genuine retry from a reused id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Which kind of event: its variant's tag in the stored encoding (0 open, 1 withdrawal,
    /// 2 deposit, 3 PIN attempt, 4 unlock, 5 PIN change, 6 re-key). PIN attempts are no longer
    /// remembered, but memories written by earlier releases may hold them.
    pub kind: u8,
    /// The card.
    pub card: Card,
    /// The event's amount parameter ([`Event::parameters`]).
    pub amount: u64,
    /// The CRC-32C of the event's other parameter, or 0 ([`Event::parameters`]).
    pub detail: u32,
}

impl Fingerprint {
    /// The fingerprint of `event` on `card`: its kind is the event's stored variant tag
    /// ([`Event::tag`]), its amount and detail the parameters the event names
    /// ([`Event::parameters`]).
    pub fn of(card: Card, event: &Event) -> Self {
        let (amount, detail) = event.parameters();
        Fingerprint {
            kind: event.tag(),
            card,
            amount,
            detail,
        }
    }
}

/// Whom a request id belongs to: the party the request was authenticated as. The memory of
/// completed requests is kept per principal, so a client id means something only together with
/// the card (or operator token) that was checked before the request was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Principal {
    /// The holder of the operator token (opening accounts).
    Operator,
    /// Whoever verified this card on the connection (withdrawals and deposits).
    Card(Card),
    /// The transfers this card received: the client is the sending card, the sequence its
    /// transfer number. Never evicted for room (only forgotten with the client retention): a
    /// sender's transfer on its way must find its receipt, or it would be credited twice.
    Incoming(Card),
}

impl Principal {
    /// The account whose memory this is, or `None` for the operator's (which spans accounts).
    pub fn card(&self) -> Option<Card> {
        match self {
            Principal::Operator => None,
            Principal::Card(card) | Principal::Incoming(card) => Some(*card),
        }
    }

    /// The principal whose memory keeps `event` on `card`, or `None` for an event that is never
    /// remembered: a PIN attempt carries a secret, so it is checked every time and its answer
    /// depends only on the PIN and the card's state, never on a memory of earlier attempts.
    pub fn of(card: Card, event: &Event) -> Option<Principal> {
        match event {
            Event::AccountOpened { .. }
            | Event::CardUnlocked
            | Event::AccountFrozen
            | Event::AccountUnfrozen
            | Event::AccountClosed
            | Event::LimitsSet { .. }
            | Event::LimitsCleared => Some(Principal::Operator),
            Event::Withdrawal { .. }
            | Event::Deposit { .. }
            | Event::TransferSent { .. }
            | Event::HoldPlaced { .. }
            | Event::HoldCompleted { .. }
            | Event::HoldVoided { .. }
            | Event::Reversal { .. } => Some(Principal::Card(card)),
            Event::TransferReceived { .. } => Some(Principal::Incoming(card)),
            // A PIN change carries the PIN too; it is decided afresh every time (approved when
            // either the old or the new PIN is the card's), so a retry needs no memory.
            Event::PinAttempt { .. } | Event::PinChanged { .. } | Event::PinRekeyed { .. } => None,
            // The bank's own steps, decided from the account's state alone: a settled transfer
            // is off the account's way, an expired hold is no longer open.
            Event::TransferSettled { .. } | Event::HoldExpired { .. } => None,
        }
    }

    /// True when a client's window under this principal must outlive the client retention: the
    /// receipts of a card's transfers from a sending card (the client id of a receipt) while
    /// `sender`, that card's account, still has a transfer on its way to it. Forgetting them then
    /// would let a redelivery after a long outage credit twice.
    pub fn pins(self, sender: Option<&super::Account>) -> bool {
        match self {
            Principal::Incoming(receiver) => {
                sender.is_some_and(|account| account.outbox().iter().any(|leg| leg.to == receiver))
            }
            _ => false,
        }
    }

    /// The size of each client's window under this principal: [`RECEIPT_WINDOW`] for the
    /// receipts of transfers, [`REQUEST_WINDOW`] otherwise.
    pub fn window(self) -> u64 {
        match self {
            Principal::Incoming(_) => RECEIPT_WINDOW,
            _ => REQUEST_WINDOW,
        }
    }

    /// True when a new client may take the place of the least recently used one in a full
    /// memory ([`CLIENTS_PER_PRINCIPAL_MAX`]); false for the receipts of transfers.
    pub fn evicts(self) -> bool {
        !matches!(self, Principal::Incoming(_))
    }
}

/// A completed request, remembered so a retry gets the original reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completed {
    /// The client's sequence number.
    pub sequence: u64,
    /// The request's parameters.
    pub fingerprint: Fingerprint,
    /// The reply it got.
    pub outcome: Outcome,
    /// Where its record is in the journal; a retry waits for this position to be durable before
    /// it answers, exactly like the first attempt.
    pub lsn: Lsn,
}

/// A completed request as a window keeps it: the fields of [`Completed`] laid out flat, in 64
/// bytes instead of 96 (the outcome's three optional amounts share one byte saying which are
/// there, and the small fields share one word). A million cards touched by a few ATMs each hold
/// millions of these, so their size is most of the memory of completed requests.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    sequence: u64,
    lsn: Lsn,
    card: Card,
    amount: u64,
    balance: u64,
    available: u64,
    reference: u64,
    detail: u32,
    kind: u8,
    status: Code,
    /// Which of `balance`, `available` and `reference` the outcome has ([`Kept::BALANCE`],
    /// [`Kept::AVAILABLE`], [`Kept::REFERENCE`]); an absent one is stored as 0.
    present: u8,
}

const _: () = assert!(std::mem::size_of::<Kept>() == 64);

impl Kept {
    const BALANCE: u8 = 1;
    const AVAILABLE: u8 = 2;
    const REFERENCE: u8 = 4;

    /// The flag `bit` when `value` is there.
    fn flag(value: Option<u64>, bit: u8) -> u8 {
        if value.is_some() {
            bit
        } else {
            0
        }
    }

    /// The value under flag `bit`, if the outcome has it.
    fn optional(&self, value: u64, bit: u8) -> Option<u64> {
        (self.present & bit != 0).then_some(value)
    }

    /// The request's parameters.
    fn fingerprint(&self) -> Fingerprint {
        Fingerprint {
            kind: self.kind,
            card: self.card,
            amount: self.amount,
            detail: self.detail,
        }
    }
}

impl From<Completed> for Kept {
    fn from(done: Completed) -> Kept {
        let outcome = done.outcome;
        Kept {
            sequence: done.sequence,
            lsn: done.lsn,
            card: done.fingerprint.card,
            amount: done.fingerprint.amount,
            balance: outcome.balance.unwrap_or(0),
            available: outcome.available.unwrap_or(0),
            reference: outcome.reference.unwrap_or(0),
            detail: done.fingerprint.detail,
            kind: done.fingerprint.kind,
            status: outcome.status,
            present: Kept::flag(outcome.balance, Kept::BALANCE)
                | Kept::flag(outcome.available, Kept::AVAILABLE)
                | Kept::flag(outcome.reference, Kept::REFERENCE),
        }
    }
}

impl From<Kept> for Completed {
    fn from(kept: Kept) -> Completed {
        Completed {
            sequence: kept.sequence,
            fingerprint: kept.fingerprint(),
            outcome: Outcome {
                status: kept.status,
                balance: kept.optional(kept.balance, Kept::BALANCE),
                available: kept.optional(kept.available, Kept::AVAILABLE),
                reference: kept.optional(kept.reference, Kept::REFERENCE),
            },
            lsn: kept.lsn,
        }
    }
}

/// A window's completed requests, in sequence order: the first one kept inside the window itself
/// (most windows hold one: an ATM seldom uses a card twice within a few minutes), more on the
/// heap. Stored (serde) as the sequence of [`Completed`] entries it holds, exactly as the
/// `VecDeque` of earlier releases was, so snapshots read both ways.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Completions(SmallVec<[Kept; 1]>);

/// The most entries reading a [`Completions`] reserves room for before it has read them (a longer
/// sequence grows as it is read): the largest window, a receiving card's.
const COMPLETIONS_RESERVED_MAX: usize = RECEIPT_WINDOW as usize;

impl Completions {
    /// How many completed requests are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every kept request, in sequence order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = Completed> + ExactSizeIterator + '_ {
        self.into_iter()
    }

    /// The `index`-th kept request, in sequence order.
    pub fn get(&self, index: usize) -> Option<Completed> {
        self.0.get(index).map(|kept| Completed::from(*kept))
    }

    /// Every kept request, in sequence order, as a vector.
    pub fn to_vec(&self) -> Vec<Completed> {
        self.iter().collect()
    }

    /// The first kept request of `sequence`, if any.
    fn find(&self, sequence: u64) -> Option<&Kept> {
        self.0.iter().find(|kept| kept.sequence == sequence)
    }

    /// True when a request of `sequence` is kept.
    fn holds(&self, sequence: u64) -> bool {
        self.find(sequence).is_some()
    }

    /// Appends `done` after every kept request, in whatever order that leaves them (a conversion
    /// from an earlier release's completion order; [`ClientWindow`]'s own changes keep them in
    /// sequence order).
    pub(super) fn push_back(&mut self, done: Completed) {
        self.0.push(done.into());
    }

    /// Sets every kept request's journal position to `lsn`.
    fn set_positions(&mut self, lsn: Lsn) {
        for kept in &mut self.0 {
            kept.lsn = lsn;
        }
    }

    /// True when the entries are in sequence order.
    fn in_order(&self) -> bool {
        self.0
            .windows(2)
            .all(|pair| pair[0].sequence <= pair[1].sequence)
    }

    /// Puts the entries in sequence order (stable: two of one sequence keep their order).
    fn sort(&mut self) {
        self.0.sort_by_key(|kept| kept.sequence);
    }
}

impl std::fmt::Debug for Completions {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.iter()).finish()
    }
}

impl FromIterator<Completed> for Completions {
    fn from_iter<I: IntoIterator<Item = Completed>>(entries: I) -> Self {
        Completions(entries.into_iter().map(Kept::from).collect())
    }
}

impl IntoIterator for Completions {
    type Item = Completed;
    type IntoIter = std::iter::Map<smallvec::IntoIter<[Kept; 1]>, fn(Kept) -> Completed>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().map(Completed::from)
    }
}

impl<'a> IntoIterator for &'a Completions {
    type Item = Completed;
    type IntoIter = std::iter::Map<std::slice::Iter<'a, Kept>, fn(&Kept) -> Completed>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|kept| Completed::from(*kept))
    }
}

impl Serialize for Completions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Completions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a sequence of completed requests, reserving no more than it claims (within
        /// [`COMPLETIONS_RESERVED_MAX`]).
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Completions;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a sequence of completed requests")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Completions, A::Error> {
                let claimed = seq.size_hint().unwrap_or(0);
                let mut entries = SmallVec::new();
                entries.reserve_exact(claimed.min(COMPLETIONS_RESERVED_MAX));
                while let Some(done) = seq.next_element::<Completed>()? {
                    entries.push(Kept::from(done));
                }
                Ok(Completions(entries))
            }
        }

        deserializer.deserialize_seq(Visitor)
    }
}

/// What the memory of completed requests says about an incoming one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Never completed: decide it.
    New,
    /// Completed with the same parameters: answer with the stored outcome.
    Replay(Completed),
    /// Completed with other parameters: refuse with `request_id_conflict` once the original's
    /// record (at this position) is durable, so the refusal never outlives the original.
    Conflict(Lsn),
    /// Too old to tell: refuse with `stale_request`, never execute.
    Stale,
}

/// The memory of one client's completed requests.
///
/// Retention rule: the window keeps every completed request whose sequence number is within
/// [`REQUEST_WINDOW`] of the highest one completed (`highest - sequence < REQUEST_WINDOW`). A
/// request below that is *stale*: it is refused and never executed, because the server can no
/// longer tell whether it ran. A client that keeps at most `REQUEST_WINDOW` requests unanswered
/// (the client library keeps one) can only be retrying a sequence inside the window, so an honest
/// retry is never stale. The window holds at most `REQUEST_WINDOW` entries, so memory per client is
/// bounded whatever the number of requests.
///
/// The entries are kept in sequence order, so the ones that fall out of the window are always at
/// the front and forgetting them is popping the front (no scan of the whole window per
/// completion).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredWindow")]
pub struct ClientWindow {
    /// The highest sequence number completed.
    pub highest: u64,
    /// Completed requests inside the window, by sequence number (for one sequence remembered
    /// twice, in completion order), never more than [`REQUEST_WINDOW`]; one that falls out of
    /// the window is forgotten at once. (Earlier releases kept them in completion order; a window
    /// read back from their snapshots is put in sequence order.)
    pub completed: Completions,
    /// Time of the most recent completion, for forgetting idle clients.
    pub last_used_unix_ms: u64,
}

impl ClientWindow {
    /// True when `sequence` is inside a window of `size`: `highest - sequence < size` (every
    /// sequence is, while fewer than `size` have completed, and so is any above `highest`).
    fn in_window(highest: u64, sequence: u64, size: u64) -> bool {
        highest < size || sequence > highest - size
    }

    /// Looks up `sequence` with parameters `fingerprint` in a window of [`REQUEST_WINDOW`].
    pub fn check(&self, sequence: u64, fingerprint: &Fingerprint) -> Seen {
        self.check_within(sequence, fingerprint, REQUEST_WINDOW)
    }

    /// Looks up `sequence` with parameters `fingerprint` in a window of `size`. The rule,
    /// exactly: outside the window it is stale, whether or not it ran; inside, a completed one is
    /// a replay (same parameters) or a conflict (others); anything else is new.
    pub fn check_within(&self, sequence: u64, fingerprint: &Fingerprint, size: u64) -> Seen {
        if !Self::in_window(self.highest, sequence, size) {
            return Seen::Stale;
        }
        match self.completed.find(sequence) {
            Some(kept) if kept.fingerprint() == *fingerprint => Seen::Replay((*kept).into()),
            Some(kept) => Seen::Conflict(kept.lsn),
            None => Seen::New,
        }
    }

    /// Remembers a completed request and forgets every one that fell out of a window of
    /// [`REQUEST_WINDOW`].
    pub fn remember(&mut self, done: Completed, at_unix_ms: u64) {
        self.remember_within(done, at_unix_ms, REQUEST_WINDOW);
    }

    /// Remembers a completed request and forgets every one that fell out of a window of `size`.
    pub fn remember_within(&mut self, done: Completed, at_unix_ms: u64, size: u64) {
        self.highest = self.highest.max(done.sequence);
        self.last_used_unix_ms = self.last_used_unix_ms.max(at_unix_ms);
        self.insert_in_order(done);
        // Forgetting on every completion keeps the memory equal to the rule `check_within`
        // applies.
        self.forget_outside(size);
        debug_assert!(self.completed.len() as u64 <= size);
    }

    /// Puts `done` in sequence order, after any entry of the same sequence (so a lookup, which
    /// takes the first, answers as before). A completion is almost always the client's highest
    /// sequence so far: then it goes at the back.
    fn insert_in_order(&mut self, done: Completed) {
        let entries = &mut self.completed.0;
        match entries.last() {
            Some(last) if last.sequence > done.sequence => {
                let at = entries.partition_point(|kept| kept.sequence <= done.sequence);
                entries.insert(at, done.into());
            }
            _ => entries.push(done.into()),
        }
    }

    /// Forgets every entry outside a window of `size`: they are at the front, as the entries are
    /// in sequence order. Should a window not be in order (one built by a conversion from an
    /// earlier release), the bound still holds: then the whole window is looked at.
    fn forget_outside(&mut self, size: u64) {
        let highest = self.highest;
        let entries = &mut self.completed.0;
        let outside = entries
            .iter()
            .take_while(|oldest| !Self::in_window(highest, oldest.sequence, size))
            .count();
        if outside > 0 {
            entries.drain(..outside);
        }
        if entries.len() as u64 > size {
            entries.retain(|kept| Self::in_window(highest, kept.sequence, size));
            self.completed.sort();
        }
    }
}

/// The stored form of a [`ClientWindow`]: the same fields, in an order that may be completion
/// order (as earlier releases kept it); [`ClientWindow`] is read through it to be put in sequence
/// order.
#[derive(Deserialize)]
struct StoredWindow {
    highest: u64,
    completed: Completions,
    last_used_unix_ms: u64,
}

impl From<StoredWindow> for ClientWindow {
    fn from(stored: StoredWindow) -> Self {
        let mut completed = stored.completed;
        if !completed.in_order() {
            // Stable: two entries of one sequence keep their completion order.
            completed.sort();
        }
        ClientWindow {
            highest: stored.highest,
            completed,
            last_used_unix_ms: stored.last_used_unix_ms,
        }
    }
}

impl ClientWindow {
    /// Joins `other`, the same client's window in another partition's memory (the operator's
    /// clients open accounts of every partition), under a window of `size`: the union of the
    /// completed entries (for a sequence both hold, this window's entry is kept, so a lookup
    /// answers as it did before), the higher `highest` and `last_used_unix_ms`, and then the
    /// retention rule, so the joined window holds at most `size` entries.
    pub fn merge_within(&mut self, other: ClientWindow, size: u64) {
        self.highest = self.highest.max(other.highest);
        self.last_used_unix_ms = self.last_used_unix_ms.max(other.last_used_unix_ms);
        for done in other.completed {
            if !self.completed.holds(done.sequence) {
                self.insert_in_order(done);
            }
        }
        self.forget_outside(size);
    }
}

/// The entry a record leaves in its client's window.
pub fn completed_entry(record: &Record, lsn: Lsn) -> Completed {
    Completed {
        sequence: record.request.sequence,
        fingerprint: Fingerprint::of(record.card, &record.event),
        outcome: record.outcome,
        lsn,
    }
}

/// Every entry a record leaves in its principal's memory, with the client each belongs to: the
/// record's own, and for an approved reversal of an original never seen, one in the original's
/// place, so the original is refused (`request_id_conflict`) if it arrives later and never
/// debits.
pub fn completed_entries(record: &Record, lsn: Lsn) -> impl Iterator<Item = (u64, Completed)> {
    let own = (record.request.client, completed_entry(record, lsn));
    let in_place = match record.event {
        Event::Reversal {
            original,
            original_known: false,
            ..
        } if record.outcome.status == crate::model::Code::Approved
            && record.outcome.reference == Some(super::REVERSAL_IN_PLACE) =>
        {
            Some((
                original.client,
                Completed {
                    sequence: original.sequence,
                    ..own.1
                },
            ))
        }
        _ => None,
    };
    std::iter::once(own).chain(in_place)
}

/// The windows of one principal's clients, by client id: a vector kept in client order, searched
/// by bisection. A card's memory holds a few clients (the ATMs that used it lately), so a hash
/// table's empty slots and control bytes would be most of its size; this holds exactly its
/// entries. Stored (serde) as a map, exactly as the hash map of earlier releases was, so snapshots
/// read both ways.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Windows {
    /// The entries, by client id, each id once.
    entries: Vec<(u64, ClientWindow)>,
}

impl Windows {
    /// Where `client` is, or where it would go.
    fn find(&self, client: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&client, |entry| entry.0)
    }

    /// How many clients have a window.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no client has a window.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when `client` has a window.
    pub fn contains_key(&self, client: &u64) -> bool {
        self.find(*client).is_ok()
    }

    /// The window of `client`, if it has one.
    pub fn get(&self, client: &u64) -> Option<&ClientWindow> {
        self.find(*client).ok().map(|at| &self.entries[at].1)
    }

    /// The window of `client`, to change, if it has one.
    pub fn get_mut(&mut self, client: &u64) -> Option<&mut ClientWindow> {
        self.find(*client).ok().map(|at| &mut self.entries[at].1)
    }

    /// Puts `window` as the window of `client`; returns the one it replaces, if any.
    pub fn insert(&mut self, client: u64, window: ClientWindow) -> Option<ClientWindow> {
        match self.find(client) {
            Ok(at) => Some(std::mem::replace(&mut self.entries[at].1, window)),
            Err(at) => {
                self.insert_at(at, client, window);
                None
            }
        }
    }

    /// Puts the window of `client`, which has none, at `at`; a full vector grows by
    /// [`super::growth`].
    fn insert_at(&mut self, at: usize, client: u64, window: ClientWindow) {
        if self.entries.len() == self.entries.capacity() {
            self.entries
                .reserve_exact(super::growth(self.entries.len()));
        }
        self.entries.insert(at, (client, window));
    }

    /// Forgets the window of `client`; returns it, if there was one.
    pub fn remove(&mut self, client: &u64) -> Option<ClientWindow> {
        self.find(*client).ok().map(|at| self.entries.remove(at).1)
    }

    /// The place of `client`'s window, there or not, to fill or change.
    pub fn entry(&mut self, client: u64) -> WindowEntry<'_> {
        let at = self.find(client);
        WindowEntry {
            windows: self,
            client,
            at,
        }
    }

    /// Every window with its client id, in client order.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &ClientWindow)> {
        self.entries.iter().map(|(client, window)| (client, window))
    }

    /// Every window, in client order.
    pub fn values(&self) -> impl Iterator<Item = &ClientWindow> {
        self.entries.iter().map(|entry| &entry.1)
    }

    /// Every window, to change, in client order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut ClientWindow> {
        self.entries.iter_mut().map(|entry| &mut entry.1)
    }

    /// Keeps the windows for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &mut ClientWindow) -> bool) {
        self.entries
            .retain_mut(|(client, window)| keep(client, window));
    }

    /// Builds the map from entries in any order; of two entries for one client the later is
    /// kept, as a hash map built from them would keep it.
    fn from_entries(mut entries: Vec<(u64, ClientWindow)>) -> Self {
        if !entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
            // Stable, so the later of two entries for one client stays after the earlier one.
            entries.sort_by_key(|entry| entry.0);
            entries.dedup_by(|later, earlier| {
                let same = later.0 == earlier.0;
                if same {
                    std::mem::swap(later, earlier);
                }
                same
            });
        }
        Windows { entries }
    }
}

/// The place of one client's window in [`Windows`], as [`Windows::entry`] finds it.
pub struct WindowEntry<'a> {
    /// The map.
    windows: &'a mut Windows,
    /// The client.
    client: u64,
    /// Where its window is (`Ok`), or would go (`Err`).
    at: Result<usize, usize>,
}

impl<'a> WindowEntry<'a> {
    /// The client's window, made by `make` if it had none.
    pub fn or_insert_with(self, make: impl FnOnce() -> ClientWindow) -> &'a mut ClientWindow {
        let at = match self.at {
            Ok(at) => at,
            Err(at) => {
                self.windows.insert_at(at, self.client, make());
                at
            }
        };
        &mut self.windows.entries[at].1
    }

    /// The client's window, empty if it had none.
    pub fn or_default(self) -> &'a mut ClientWindow {
        self.or_insert_with(ClientWindow::default)
    }
}

impl std::ops::Index<&u64> for Windows {
    type Output = ClientWindow;

    /// The window of `client`, which must have one.
    fn index(&self, client: &u64) -> &ClientWindow {
        match self.get(client) {
            Some(window) => window,
            None => panic!("client {client} has no window"),
        }
    }
}

impl std::fmt::Debug for Windows {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(u64, ClientWindow)> for Windows {
    fn from_iter<I: IntoIterator<Item = (u64, ClientWindow)>>(entries: I) -> Self {
        Windows::from_entries(entries.into_iter().collect())
    }
}

impl IntoIterator for Windows {
    type Item = (u64, ClientWindow);
    type IntoIter = std::vec::IntoIter<(u64, ClientWindow)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

impl<'a> IntoIterator for &'a Windows {
    type Item = (&'a u64, &'a ClientWindow);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (u64, ClientWindow)>,
        fn(&'a (u64, ClientWindow)) -> (&'a u64, &'a ClientWindow),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(client, window)| (client, window))
    }
}

impl Serialize for Windows {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Windows {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Reads a map of windows, reserving no more than the entries it claims (within serde's
        /// cautious bound).
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Windows;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a map of client ids to windows")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Windows, A::Error> {
                let claimed = map.size_hint().unwrap_or(0);
                let mut entries = Vec::with_capacity(claimed.min(WINDOWS_RESERVED_MAX));
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Windows::from_entries(entries))
            }
        }

        deserializer.deserialize_map(Visitor)
    }
}

/// The most entries reading a [`Windows`] reserves room for before it has read them: a bound on
/// what a claimed length alone can make it allocate (default 4096, four times
/// [`CLIENTS_PER_PRINCIPAL_MAX`]; a longer map grows as it is read).
pub const WINDOWS_RESERVED_MAX: usize = 4 * CLIENTS_PER_PRINCIPAL_MAX;

/// The memory of one principal's clients: a window per client id, at most
/// [`CLIENTS_PER_PRINCIPAL_MAX`] of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clients {
    /// Each remembered client's window, by client id.
    pub windows: Windows,
}

impl Clients {
    /// Looks up request `sequence` of `client` with parameters `fingerprint`; a client with no
    /// window has completed nothing for this principal.
    pub fn check(
        &self,
        principal: Principal,
        client: u64,
        sequence: u64,
        fingerprint: &Fingerprint,
    ) -> Seen {
        self.windows.get(&client).map_or(Seen::New, |window| {
            window.check_within(sequence, fingerprint, principal.window())
        })
    }

    /// True when request `sequence` of `client` is known to `principal`'s memory: completed and
    /// remembered, or below the window (it may have run, and never runs now).
    pub fn knows(&self, principal: Principal, client: u64, sequence: u64) -> bool {
        self.windows.get(&client).is_some_and(|window| {
            !ClientWindow::in_window(window.highest, sequence, principal.window())
                || window.completed.holds(sequence)
        })
    }

    /// True when `client`'s completion at `now_unix_ms` may be remembered: the client has a
    /// window, or there is room, or the least recently used client has been idle for
    /// [`CLIENT_EVICTION_IDLE_MS`] and may give up its place.
    pub fn admits(&self, principal: Principal, client: u64, now_unix_ms: u64) -> bool {
        !principal.evicts()
            || self.windows.contains_key(&client)
            || self.windows.len() < CLIENTS_PER_PRINCIPAL_MAX
            || self.least_recent().is_some_and(|(_, last_used)| {
                last_used.saturating_add(CLIENT_EVICTION_IDLE_MS) <= now_unix_ms
            })
    }

    /// The least recently used client and its last completion time (ties go to the smaller id,
    /// so every copy of the memory evicts the same client).
    fn least_recent(&self) -> Option<(u64, u64)> {
        self.windows
            .iter()
            .map(|(client, window)| (*client, window.last_used_unix_ms))
            .min_by_key(|(client, last_used)| (*last_used, *client))
    }

    /// Remembers a completion of `client` for `principal`; a new client in a full memory takes
    /// the place of the least recently used one, if the principal evicts ([`Principal::evicts`]).
    pub fn remember(
        &mut self,
        principal: Principal,
        client: u64,
        done: Completed,
        at_unix_ms: u64,
    ) {
        // A loop, not one eviction: a memory converted from an earlier release may start fuller.
        while principal.evicts()
            && !self.windows.contains_key(&client)
            && self.windows.len() >= CLIENTS_PER_PRINCIPAL_MAX
        {
            let Some((evicted, _)) = self.least_recent() else {
                break;
            };
            self.windows.remove(&evicted);
        }
        self.windows.entry(client).or_default().remember_within(
            done,
            at_unix_ms,
            principal.window(),
        );
    }

    /// Joins `other`, the memory of the same principal in another partition's ledger: each
    /// client's windows are merged ([`ClientWindow::merge_within`]), and if the principal evicts
    /// and more than [`CLIENTS_PER_PRINCIPAL_MAX`] clients are left, the least recently used
    /// ones are forgotten until that many are, exactly as [`Clients::remember`] makes room.
    pub fn merge(&mut self, principal: Principal, other: Clients) {
        for (client, window) in other.windows {
            match self.windows.get_mut(&client) {
                Some(mine) => mine.merge_within(window, principal.window()),
                None => {
                    self.windows.insert(client, window);
                }
            }
        }
        while principal.evicts() && self.windows.len() > CLIENTS_PER_PRINCIPAL_MAX {
            let Some((evicted, _)) = self.least_recent() else {
                break;
            };
            self.windows.remove(&evicted);
        }
    }

    /// Sets the journal position of every remembered completion to `lsn`: what a memory taken
    /// from another log (a partition's own positions) is given when it joins a ledger whose
    /// records are all durable up to `lsn`, so a retry waits for nothing that is not there.
    pub fn positions_rewritten(&mut self, lsn: Lsn) {
        for window in self.windows.values_mut() {
            window.completed.set_positions(lsn);
        }
    }

    /// Forgets clients with no completion since `cutoff_unix_ms` unless `pinned` says to keep
    /// them, adds how many to `forgotten`, and says whether any client is left (a principal with
    /// none is dropped from the memory).
    pub fn keep_after_forgetting(
        &mut self,
        cutoff_unix_ms: u64,
        forgotten: &mut usize,
        pinned: impl Fn(u64) -> bool,
    ) -> bool {
        let before = self.windows.len();
        self.windows
            .retain(|client, window| window.last_used_unix_ms >= cutoff_unix_ms || pinned(*client));
        *forgotten += before - self.windows.len();
        !self.windows.is_empty()
    }
}

/// The memory of completed requests of every principal, in copy-on-write shards so a snapshot
/// image of it is cheap ([`Shards`]).
pub type Memory = Shards<Principal, Clients>;

#[cfg(test)]
mod tests {
    use super::super::rules::approved;
    use super::super::testing::withdrawal_entry;
    use super::*;

    #[test]
    fn the_window_replays_conflicts_and_refuses_stale_ids_at_the_edge() {
        let mut window = ClientWindow::default();
        let fingerprint = |amount| Fingerprint {
            kind: 1,
            card: 7,
            amount,
            detail: 0,
        };
        for sequence in 1..=REQUEST_WINDOW + 1 {
            let done = Completed {
                sequence,
                fingerprint: fingerprint(sequence),
                outcome: approved(sequence),
                lsn: sequence,
            };
            window.remember(done, 0);
        }
        assert_eq!(window.completed.len() as u64, REQUEST_WINDOW);
        // Sequence 1 fell out of the window: refused, never re-executed.
        assert_eq!(window.check(1, &fingerprint(1)), Seen::Stale);
        // Sequence 2 is the oldest still remembered.
        assert!(matches!(window.check(2, &fingerprint(2)), Seen::Replay(done) if done.lsn == 2));
        assert_eq!(window.check(2, &fingerprint(3)), Seen::Conflict(2));
        assert_eq!(window.check(REQUEST_WINDOW + 2, &fingerprint(0)), Seen::New);
    }

    fn entry_at(sequence: u64) -> Completed {
        Completed {
            lsn: sequence,
            ..withdrawal_entry(sequence, 7)
        }
    }

    fn sequences(window: &ClientWindow) -> Vec<u64> {
        window.completed.iter().map(|done| done.sequence).collect()
    }

    #[test]
    fn the_window_stays_in_sequence_order_and_forgets_from_the_front() {
        let mut window = ClientWindow::default();
        // Completions out of order, as concurrent requests of one client may complete.
        for sequence in [3, 1, 2, 6, 5, 4] {
            window.remember(entry_at(sequence), sequence);
        }
        assert_eq!(sequences(&window), [1, 2, 3, 4, 5, 6]);
        window.remember(entry_at(REQUEST_WINDOW + 3), 0);
        // 1, 2 and 3 fell out of the window of the highest, REQUEST_WINDOW + 3.
        assert_eq!(sequences(&window), [4, 5, 6, REQUEST_WINDOW + 3]);
        assert_eq!(window.check(3, &entry_at(3).fingerprint), Seen::Stale);
        assert!(
            matches!(window.check(5, &entry_at(5).fingerprint), Seen::Replay(done) if done.lsn == 5)
        );
        // The same sequence twice: the first remembered answers, as before.
        let mut twice = ClientWindow::default();
        twice.remember(entry_at(8), 0);
        twice.remember(
            Completed {
                lsn: 99,
                ..entry_at(8)
            },
            0,
        );
        twice.remember(entry_at(9), 0);
        assert!(
            matches!(twice.check(8, &entry_at(8).fingerprint), Seen::Replay(done) if done.lsn == 8)
        );
        // A window out of order (as a conversion may build one) still keeps the bound.
        let mut unordered = ClientWindow {
            highest: 40,
            completed: [40, 2, 39].into_iter().map(entry_at).collect(),
            last_used_unix_ms: 0,
        };
        unordered.remember(entry_at(41), 0);
        assert!(unordered.completed.len() as u64 <= REQUEST_WINDOW);
        assert_eq!(unordered.check(2, &entry_at(2).fingerprint), Seen::Stale);
    }

    /// The stored layout of earlier releases: a hash map of windows in completion order.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct EarlierClients {
        windows: std::collections::HashMap<u64, EarlierWindow>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct EarlierWindow {
        highest: u64,
        completed: std::collections::VecDeque<Completed>,
        last_used_unix_ms: u64,
    }

    #[test]
    fn a_memory_reads_what_earlier_releases_stored_and_stores_what_they_read() {
        let earlier = EarlierClients {
            windows: [
                (9, vec![5, 3, 4]),
                (2, vec![1]),
                (700, vec![]),
                (4, vec![REQUEST_WINDOW + 1, 2]),
            ]
            .into_iter()
            .map(|(client, order)| {
                let highest = order.iter().copied().max().unwrap_or(0);
                let window = EarlierWindow {
                    highest,
                    completed: order.into_iter().map(entry_at).collect(),
                    last_used_unix_ms: client,
                };
                (client, window)
            })
            .collect(),
        };
        let bytes = crate::codec::encode_stored(&earlier).unwrap();
        let read: Clients = crate::codec::decode_stored(&bytes).unwrap();
        assert_eq!(read.windows.len(), 4);
        let clients: Vec<u64> = read.windows.iter().map(|(client, _)| *client).collect();
        assert_eq!(clients, [2, 4, 9, 700]);
        assert_eq!(sequences(&read.windows[&9]), [3, 4, 5]);
        assert_eq!(read.windows[&9].last_used_unix_ms, 9);
        assert!(read.windows[&700].completed.is_empty());
        // Written back, an earlier release reads the same windows (in sequence order).
        let again: EarlierClients =
            crate::codec::decode_stored(&crate::codec::encode_stored(&read).unwrap()).unwrap();
        assert_eq!(again.windows.len(), 4);
        for (client, window) in &read.windows {
            let theirs = &again.windows[client];
            assert_eq!(theirs.highest, window.highest);
            assert_eq!(theirs.completed, window.completed.to_vec());
        }
        // The same client twice in a stored map: the later one is kept, as a hash map keeps it.
        let twice: Windows = vec![
            (
                5,
                ClientWindow {
                    highest: 1,
                    ..ClientWindow::default()
                },
            ),
            (3, ClientWindow::default()),
            (
                5,
                ClientWindow {
                    highest: 2,
                    ..ClientWindow::default()
                },
            ),
        ]
        .into_iter()
        .collect();
        assert_eq!(twice.len(), 2);
        assert_eq!(twice[&5].highest, 2);
    }

    #[test]
    fn windows_find_insert_and_forget_clients_in_any_order() {
        let mut windows = Windows::default();
        for client in [50, 10, 30, 20, 40] {
            windows.entry(client).or_default().highest = client;
        }
        assert_eq!(windows.len(), 5);
        assert!(windows.contains_key(&30) && !windows.contains_key(&35));
        assert_eq!(windows.get(&20).map(|window| window.highest), Some(20));
        assert_eq!(windows.remove(&30).map(|window| window.highest), Some(30));
        assert!(windows.remove(&30).is_none());
        assert!(windows.insert(10, ClientWindow::default()).is_some());
        windows.retain(|client, _| *client != 50);
        let left: Vec<u64> = windows.iter().map(|(client, _)| *client).collect();
        assert_eq!(left, [10, 20, 40]);
        assert_eq!(
            windows
                .entry(20)
                .or_insert_with(ClientWindow::default)
                .highest,
            20
        );
        assert!(!windows.is_empty());
    }

    #[test]
    fn windows_merged_keep_the_union_inside_the_window_and_the_first_side_on_a_tie() {
        let entry = |sequence, card| Completed {
            lsn: sequence,
            ..withdrawal_entry(sequence, card)
        };
        let mut mine = ClientWindow::default();
        let mut theirs = ClientWindow::default();
        for sequence in [1, 3, 40] {
            mine.remember(entry(sequence, 7), sequence);
        }
        for sequence in [2, 3, 50] {
            theirs.remember(entry(sequence, 8), 100 + sequence);
        }
        mine.merge_within(theirs, REQUEST_WINDOW);
        assert_eq!(mine.highest, 50);
        assert_eq!(mine.last_used_unix_ms, 150);
        let mut kept: Vec<(u64, Card)> = mine
            .completed
            .iter()
            .map(|done| (done.sequence, done.fingerprint.card))
            .collect();
        kept.sort_unstable();
        // 1, 2 and 3 are out of the window of 50; 40 is this side's, 50 the other's.
        assert_eq!(kept, [(40, 7), (50, 8)]);
        let mut tie = ClientWindow::default();
        tie.remember(entry(5, 7), 0);
        let mut other = ClientWindow::default();
        other.remember(entry(5, 8), 0);
        tie.merge_within(other, REQUEST_WINDOW);
        assert_eq!(tie.completed.len(), 1);
        assert_eq!(
            tie.completed.get(0).map(|done| done.fingerprint.card),
            Some(7)
        );
    }

    #[test]
    fn memories_merged_stay_within_the_bound_and_forget_the_least_recent_first() {
        let fill = |clients: std::ops::Range<u64>| {
            let mut memory = Clients::default();
            for client in clients {
                memory.remember(Principal::Operator, client, withdrawal_entry(1, 7), client);
            }
            memory
        };
        let bound = CLIENTS_PER_PRINCIPAL_MAX as u64;
        let mut mine = fill(0..bound);
        mine.merge(Principal::Operator, fill(bound / 2..bound + 10));
        assert_eq!(mine.windows.len(), CLIENTS_PER_PRINCIPAL_MAX);
        assert!((0..10).all(|client| !mine.windows.contains_key(&client)));
        assert!(mine.windows.contains_key(&(bound + 9)));
        let mut rewritten = fill(0..3);
        rewritten.positions_rewritten(77);
        assert!(rewritten
            .windows
            .values()
            .flat_map(|window| window.completed.iter())
            .all(|done| done.lsn == 77));
    }

    #[test]
    fn a_principal_remembers_a_bounded_number_of_clients_and_evicts_the_least_recent() {
        let mut clients = Clients::default();
        // 26 000 new client ids, one completion each, as fast as one process can send them.
        for client in 0..26_000u64 {
            let now = 1_000 + client;
            if clients.admits(Principal::Card(7), client, now) {
                clients.remember(Principal::Card(7), client, withdrawal_entry(1, 7), now);
            }
        }
        assert_eq!(clients.windows.len(), CLIENTS_PER_PRINCIPAL_MAX);
        let newest = CLIENTS_PER_PRINCIPAL_MAX as u64;
        // Every client in a full memory was active within the eviction delay: new ones wait.
        assert!(!clients.admits(Principal::Card(7), 1_000_000, 1_000 + newest));
        // A client already remembered is always admitted.
        assert!(clients.admits(Principal::Card(7), 0, 1_000 + newest));
        // The receipts of transfers are never evicted for room: a full one still admits.
        assert!(clients.admits(Principal::Incoming(7), 1_000_000, 1_000 + newest));
        // Once the least recent has been idle long enough, a new client takes its place.
        let later = 1_000 + CLIENT_EVICTION_IDLE_MS;
        assert!(clients.admits(Principal::Card(7), 1_000_000, later));
        clients.remember(Principal::Card(7), 1_000_000, withdrawal_entry(1, 7), later);
        assert_eq!(clients.windows.len(), CLIENTS_PER_PRINCIPAL_MAX);
        assert!(!clients.windows.contains_key(&0));
        assert!(clients.windows.contains_key(&1_000_000));
    }

    proptest::proptest! {
        #[test]
        fn a_kept_entry_gives_back_exactly_the_completed_request_it_was_made_from(
            sequence: u64,
            lsn: u64,
            kind: u8,
            card: u64,
            amount: u64,
            detail: u32,
            code in 0..crate::model::Code::ALL.len(),
            balance: Option<u64>,
            available: Option<u64>,
            reference: Option<u64>,
        ) {
            let done = Completed {
                sequence,
                fingerprint: Fingerprint { kind, card, amount, detail },
                outcome: Outcome {
                    status: crate::model::Code::ALL[code],
                    balance,
                    available,
                    reference,
                },
                lsn,
            };
            proptest::prop_assert_eq!(Completed::from(Kept::from(done)), done);
            let kept: Completions = [done].into_iter().collect();
            proptest::prop_assert_eq!(kept.to_vec(), [done]);
        }
    }

    #[test]
    fn a_window_of_one_request_keeps_it_inline_and_one_of_many_on_the_heap() {
        let mut window = ClientWindow::default();
        window.remember(withdrawal_entry(1, 7), 0);
        assert!(
            !window.completed.0.spilled(),
            "one entry needs no allocation"
        );
        window.remember(withdrawal_entry(2, 7), 0);
        assert!(window.completed.0.spilled());
        assert_eq!(
            window.completed.to_vec(),
            [withdrawal_entry(1, 7), withdrawal_entry(2, 7)]
        );
        // Stored exactly as a sequence of completed requests.
        let stored = crate::codec::encode_stored(&window.completed).unwrap();
        let plain: std::collections::VecDeque<Completed> = window.completed.iter().collect();
        assert_eq!(stored, crate::codec::encode_stored(&plain).unwrap());
        let read: Completions = crate::codec::decode_stored(&stored).unwrap();
        assert_eq!(read, window.completed);
    }

    #[test]
    fn a_full_memory_grows_by_a_quarter_not_double() {
        let mut windows: Windows = (0..40u64)
            .map(|client| (client, ClientWindow::default()))
            .collect();
        windows.entries.shrink_to_fit();
        assert_eq!(windows.entries.capacity(), 40);
        windows.insert(1_000, ClientWindow::default());
        assert_eq!(windows.entries.capacity(), 50);
        let mut small = Windows::default();
        small.insert(1, ClientWindow::default());
        assert_eq!(small.entries.capacity(), super::super::GROWTH_MIN);
        assert_eq!(windows.len(), 41);
        assert!(windows.contains_key(&1_000));
    }
}
