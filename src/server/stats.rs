//! The server's counters, kept as atomics and mirrored to the metrics exporter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters the server keeps (exported as metrics).
#[derive(Debug, Default)]
pub struct Stats {
    /// Open connections.
    pub connections: AtomicUsize,
    /// Connections refused at the cap.
    pub connections_refused: AtomicU64,
    /// Connections refused because their peer held all its slots (counted in
    /// `connections_refused` too).
    pub connections_refused_per_peer: AtomicU64,
    /// Connections closed because no card was verified by the unverified deadline.
    pub unverified_deadlines: AtomicU64,
    /// Verified connections closed after the verified idle time without a frame.
    pub verified_idles: AtomicU64,
    /// Account actors alive.
    pub live_accounts: AtomicUsize,
    /// Supervised restarts after crashes.
    pub actor_restarts: AtomicU64,
    /// Requests answered from the memory of completed requests.
    pub replays: AtomicU64,
    /// Retries that joined their original while it was still being worked on.
    pub joins: AtomicU64,
    /// Transfers the receiving account took.
    pub transfers_received: AtomicU64,
    /// Transfers the receiving account refused, whose money went back.
    pub transfers_returned: AtomicU64,
    /// Holds released because they expired.
    pub holds_expired: AtomicU64,
}

impl Stats {
    /// A connection was accepted.
    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::CONNECTIONS_OPEN, 1.0);
    }

    /// A connection ended (or never got its session).
    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::CONNECTIONS_OPEN, -1.0);
    }

    /// A connection was refused at the limit.
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::CONNECTIONS_REFUSED);
    }

    /// A connection was refused because its peer held all its slots.
    pub fn connection_refused_per_peer(&self) {
        self.connection_refused();
        self.connections_refused_per_peer
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::CONNECTIONS_REFUSED_PER_PEER);
    }

    /// A connection was closed by the unverified deadline (`verified` false) or the verified
    /// idle time.
    pub fn connection_timed_out(&self, verified: bool) {
        let (counter, reason) = if verified {
            (&self.verified_idles, "idle")
        } else {
            (&self.unverified_deadlines, "unverified")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::connection_timed_out(reason);
    }

    /// An account actor started (or restarted).
    pub fn account_started(&self) {
        self.live_accounts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::ACCOUNT_ACTORS_LIVE, 1.0);
    }

    /// An account actor stopped.
    pub fn account_stopped(&self) {
        self.live_accounts.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::ACCOUNT_ACTORS_LIVE, -1.0);
    }

    /// An account actor is being restarted after a crash.
    pub fn actor_restarted(&self) {
        self.actor_restarts.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::ACTOR_RESTARTS);
    }

    /// A request was answered from the memory of completed requests.
    pub fn replay_served(&self) {
        self.replays.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::DEDUP_HITS);
    }

    /// A retry joined its original, still in flight.
    pub fn join_served(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::JOINS);
    }

    /// A transfer was settled by its sending account: `received`, or returned.
    pub fn transfer_settled(&self, received: bool) {
        let counter = if received {
            &self.transfers_received
        } else {
            &self.transfers_returned
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::transfer_settled(received);
    }

    /// A hold expired.
    pub fn hold_expired(&self) {
        self.holds_expired.fetch_add(1, Ordering::Relaxed);
        crate::metrics::count(crate::metrics::HOLDS_EXPIRED);
    }
}
