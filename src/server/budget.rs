//! Byte budgets for queued replies: one per connection, one for the whole server.
//!
//! A reply costs memory from the moment its request is handed to the session until the writer
//! has pushed it to the socket. A client that sends requests with large replies (a `Lowercase`
//! of a full frame) and never reads would otherwise pile up frames in the reply queue; counting
//! frames alone let 80 such clients hold a gigabyte. So every connection holds a
//! [`ConnectionBudget`]:
//!
//! - Before the reader hands a request to the session it *reserves* the largest reply that
//!   request can produce (`reply_bytes_bound`). While the reservation does not fit, the reader
//!   waits and reads nothing more.
//! - When the session queues the reply, the reservation becomes the frame's actual size
//!   ([`ConnectionBudget::settle`]); when the writer has pushed the frame to the socket, its bytes
//!   are released ([`ConnectionBudget::release`]).
//! - Everything a connection still holds when it ends is released when the last of its tasks
//!   drops the budget.
//!
//! The per-connection rule: a connection holding nothing may always reserve (so one reply of
//! any size can be in progress); otherwise it may hold at most
//! [`Limits::connection_reply_bytes_max`]. The global rule ([`Limits::reply_bytes_max`]): a
//! reservation that fits under the global budget is granted; when the global budget is used up,
//! only a connection that would still hold less than its fair share (the global budget divided
//! by the open connections) may reserve. The connection holding the most is therefore always the
//! first to stop, and a light client (an ATM with one small request) keeps being served. Queued
//! replies stay below twice the global budget.
//!
//! [`Limits::connection_reply_bytes_max`]: super::Limits::connection_reply_bytes_max
//! [`Limits::reply_bytes_max`]: super::Limits::reply_bytes_max

use super::door::Inbound;
use super::service::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;

/// The bytes a reply other than a `Lowercase` answer may take at most, with its frame header:
/// an id, a status and a balance or a yes/no fit in a few dozen bytes; a goodbye's reason in a
/// few hundred (a larger frame is still charged its actual size when it is queued).
pub const SMALL_REPLY_BYTES_MAX: usize = 256;

/// Default of [`super::Limits::connection_reply_bytes_max`]: four full frames at the default frame
/// limit, and far more small replies than the in-flight limit allows.
pub const CONNECTION_REPLY_BYTES_MAX_DEFAULT: usize = 256 * 1024;

/// Default of [`super::Limits::reply_bytes_max`]: a thousand connections at their full budget.
pub const REPLY_BYTES_MAX_DEFAULT: usize = 256 * 1024 * 1024;

/// Bytes in a frame's length prefix.
const FRAME_HEADER_BYTES: usize = 4;

/// The largest reply `inbound` can produce, with its frame header: a frame of `frame_bytes_max`
/// for a `Lowercase` (its reply is refused if it would not fit a frame), the welcome's own size
/// for a frame the door answers itself, `small_reply_bytes_max` (the door's
/// [`super::door::FrontDoor::reply_bytes_max`]) for everything else.
pub(super) fn reply_bytes_bound<C>(
    inbound: &Inbound<C>,
    frame_bytes_max: usize,
    small_reply_bytes_max: usize,
) -> usize {
    match inbound {
        Inbound::Request {
            command: Command::Lowercase { .. },
            ..
        } => frame_bytes_max + FRAME_HEADER_BYTES,
        Inbound::Answered(frame) => frame.len(),
        Inbound::Request { .. } | Inbound::Close(_) => small_reply_bytes_max,
    }
}

/// The server's budget: every connection's queued and reserved reply bytes together.
#[derive(Debug)]
pub struct ReplyBudget {
    /// The global budget, in bytes.
    bytes_max: usize,
    /// Each connection's budget, in bytes.
    connection_bytes_max: usize,
    /// Bytes reserved or queued over all connections.
    held: AtomicUsize,
    /// The most `held` has been (for tests and the report).
    held_peak: AtomicUsize,
    /// The most any one connection has held.
    connection_peak: AtomicUsize,
    /// Connections with a budget (they share the global one fairly when it is used up).
    connections: AtomicUsize,
    /// Readers waiting for the global budget: only then does a release wake anyone.
    waiting: AtomicUsize,
    /// Times a reader waited because its connection's budget was full.
    connection_waits: AtomicU64,
    /// Times a reader waited because the global budget was used up.
    global_waits: AtomicU64,
    /// Wakes the readers waiting for the global budget.
    freed: Notify,
}

/// Why a reservation was not granted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    /// The connection's own budget is full: its client is not reading.
    Connection,
    /// The global budget is used up and this connection holds at least its share.
    Global,
}

impl ReplyBudget {
    /// A budget of `bytes_max` over all connections and `connection_bytes_max` for each.
    pub fn new(bytes_max: usize, connection_bytes_max: usize) -> Arc<ReplyBudget> {
        Arc::new(ReplyBudget {
            bytes_max: bytes_max.max(1),
            connection_bytes_max: connection_bytes_max.max(1),
            held: AtomicUsize::new(0),
            held_peak: AtomicUsize::new(0),
            connection_peak: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            connection_waits: AtomicU64::new(0),
            global_waits: AtomicU64::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes reserved or queued for replies now, over all connections
    /// (the gauge `bank_reply_bytes_queued`).
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The most [`ReplyBudget::held`] has been since the server started.
    pub fn held_peak(&self) -> usize {
        self.held_peak.load(Ordering::Relaxed)
    }

    /// The most one connection has held since the server started.
    pub fn connection_peak(&self) -> usize {
        self.connection_peak.load(Ordering::Relaxed)
    }

    /// Times a reader stopped reading because its connection's budget was full.
    pub fn connection_waits(&self) -> u64 {
        self.connection_waits.load(Ordering::Relaxed)
    }

    /// Times a reader stopped reading because the global budget was used up.
    pub fn global_waits(&self) -> u64 {
        self.global_waits.load(Ordering::Relaxed)
    }

    /// The global budget in bytes.
    pub fn bytes_max(&self) -> usize {
        self.bytes_max
    }

    /// Takes `bytes` for a connection that holds `connection_held`, if the global rule allows.
    fn take(&self, bytes: usize, connection_held: usize) -> bool {
        let share = self.bytes_max / self.connections.load(Ordering::Relaxed).max(1);
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            let fits = held == 0 || held + bytes <= self.bytes_max;
            if !fits && connection_held + bytes > share {
                return false;
            }
            match self.held.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => held = now,
            }
        }
        self.held_peak.fetch_max(held + bytes, Ordering::Relaxed);
        crate::metrics::gauge(crate::metrics::REPLY_BYTES_QUEUED, bytes as f64);
        true
    }

    /// Gives `bytes` back and wakes the readers waiting for the global budget.
    fn give(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.held.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "more reply bytes released than held");
        crate::metrics::gauge(crate::metrics::REPLY_BYTES_QUEUED, -(bytes as f64));
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// One connection's share of the reply budget, shared by its reader, session and writer.
#[derive(Debug)]
pub struct ConnectionBudget {
    global: Arc<ReplyBudget>,
    /// Bytes this connection has reserved or queued.
    held: AtomicUsize,
    /// Wakes this connection's reader when its writer or session releases bytes.
    freed: Notify,
}

impl ConnectionBudget {
    /// A new connection's budget, holding nothing.
    pub fn new(global: &Arc<ReplyBudget>) -> Arc<ConnectionBudget> {
        global.connections.fetch_add(1, Ordering::Relaxed);
        Arc::new(ConnectionBudget {
            global: global.clone(),
            held: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// Bytes this connection holds now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Reserves `bytes`, or says which budget stands in the way. Only the reader reserves, so
    /// this connection's count cannot grow between the check and the update.
    fn try_reserve(&self, bytes: usize) -> Result<(), Blocked> {
        let held = self.held();
        if held > 0 && held + bytes > self.global.connection_bytes_max {
            return Err(Blocked::Connection);
        }
        if !self.global.take(bytes, held) {
            return Err(Blocked::Global);
        }
        let now = self.held.fetch_add(bytes, Ordering::AcqRel) + bytes;
        self.global
            .connection_peak
            .fetch_max(now, Ordering::Relaxed);
        Ok(())
    }

    /// Waits until `bytes` can be reserved, and reserves them.
    pub async fn reserve(&self, bytes: usize) {
        let Err(blocked) = self.try_reserve(bytes) else {
            return;
        };
        let waits = match blocked {
            Blocked::Connection => &self.global.connection_waits,
            Blocked::Global => &self.global.global_waits,
        };
        waits.fetch_add(1, Ordering::Relaxed);
        loop {
            let mine = self.freed.notified();
            let theirs = self.global.freed.notified();
            tokio::pin!(mine, theirs);
            // Registered before the check, so a release between the check and the wait wakes us.
            theirs.as_mut().enable();
            self.global.waiting.fetch_add(1, Ordering::AcqRel);
            let granted = self.try_reserve(bytes).is_ok();
            if !granted {
                tokio::select! {
                    _ = &mut mine => {}
                    _ = &mut theirs => {}
                }
            }
            self.global.waiting.fetch_sub(1, Ordering::AcqRel);
            if granted {
                return;
            }
        }
    }

    /// Turns a reservation of `reserved` bytes into a queued frame of `actual` bytes (a frame
    /// larger than its reservation is charged in full; the rules are checked at the next
    /// reservation).
    pub fn settle(&self, reserved: usize, actual: usize) {
        if actual > reserved {
            let extra = actual - reserved;
            self.held.fetch_add(extra, Ordering::AcqRel);
            let now = self.global.held.fetch_add(extra, Ordering::AcqRel) + extra;
            self.global.held_peak.fetch_max(now, Ordering::Relaxed);
            crate::metrics::gauge(crate::metrics::REPLY_BYTES_QUEUED, extra as f64);
        } else {
            self.release(reserved - actual);
        }
    }

    /// Gives back `bytes` (a frame written, or a reservation no reply will use).
    pub fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        let before = self.held.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(before >= bytes, "a connection released more than it held");
        self.global.give(bytes);
        self.freed.notify_one();
    }
}

impl Drop for ConnectionBudget {
    fn drop(&mut self) {
        // Whatever is still reserved or queued (replies never written) goes back with it.
        self.global.give(*self.held.get_mut());
        self.global.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_held_to_its_budget_but_may_always_start_one_reply() {
        let global = ReplyBudget::new(1 << 20, 1000);
        let connection = ConnectionBudget::new(&global);
        assert_eq!(connection.try_reserve(4000), Ok(()), "holding nothing");
        assert_eq!(connection.try_reserve(1), Err(Blocked::Connection));
        connection.settle(4000, 900);
        assert_eq!(connection.try_reserve(100), Ok(()));
        assert_eq!(connection.try_reserve(1), Err(Blocked::Connection));
        connection.release(1000);
        assert_eq!((connection.held(), global.held()), (0, 0));
    }

    #[test]
    fn when_the_global_budget_is_used_up_only_connections_under_their_share_read() {
        let global = ReplyBudget::new(1000, 10_000);
        let heavy = ConnectionBudget::new(&global);
        let light = ConnectionBudget::new(&global);
        assert_eq!(heavy.try_reserve(900), Ok(()));
        assert_eq!(heavy.try_reserve(200), Err(Blocked::Global));
        // The share is 1000 / 2 connections: the light one may go over the global budget.
        assert_eq!(light.try_reserve(200), Ok(()));
        assert_eq!(light.try_reserve(400), Err(Blocked::Global));
        assert_eq!(global.held(), 1100);
        drop(heavy);
        assert_eq!(global.held(), 200, "a connection's bytes go back with it");
        assert_eq!(light.try_reserve(400), Ok(()));
    }

    #[test]
    fn only_lowercase_reserves_a_frame() {
        let lowercase = Inbound::Request {
            id: crate::model::RequestId {
                client: 1,
                sequence: 1,
            },
            command: Command::Lowercase { text: "A".into() },
            name: "lowercase",
            context: (),
        };
        let balance = Inbound::Request {
            id: crate::model::RequestId {
                client: 1,
                sequence: 2,
            },
            command: Command::Balance,
            name: "balance",
            context: (),
        };
        assert_eq!(
            reply_bytes_bound(&lowercase, 8192, SMALL_REPLY_BYTES_MAX),
            8192 + FRAME_HEADER_BYTES
        );
        assert_eq!(
            reply_bytes_bound(&balance, 8192, SMALL_REPLY_BYTES_MAX),
            SMALL_REPLY_BYTES_MAX
        );
    }
}
