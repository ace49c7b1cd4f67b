//! Fair connection slots: how many connections each peer may hold open at once.
//!
//! The global cap ([`super::Limits::connections_max`]) alone let one address open every slot in
//! a fraction of a second and lock everyone else out. So each peer, by its [`PeerKey`], may hold
//! at most [`super::Limits::connections_per_peer_max`] connections; the gateway takes a [`Slot`]
//! for every accepted connection and refuses the connection when its peer has none left. The slot
//! goes back when the session that holds it ends. Under mutual TLS the address's slot covers only
//! the handshake: once the terminal is known, the connection holds a slot of the terminal instead.

use crate::ratelimit::peer_key;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Default of [`super::Limits::connections_per_peer_max`]: room for a branch's ATMs behind one
/// address, far from the 10 000 connections of the global cap.
pub const CONNECTIONS_PER_PEER_MAX_DEFAULT: usize = 64;

/// Whom a connection's slot is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A peer address: an IPv4 address, or an IPv6 peer by its /64 (a host usually holds the
    /// whole prefix), as [`peer_key`] forms it.
    Address(IpAddr),
    /// A terminal named by its client certificate under mutual TLS (its name, else its
    /// certificate's fingerprint): many ATMs behind one address are counted each on its own.
    Terminal(Arc<str>),
}

impl PeerKey {
    /// The key of a connection from `peer`.
    pub fn of_address(peer: IpAddr) -> PeerKey {
        PeerKey::Address(peer_key(peer))
    }
}

/// The open connections of every peer that has any.
#[derive(Debug)]
pub struct Slots {
    per_peer_max: usize,
    open: Mutex<HashMap<PeerKey, usize>>,
}

impl Slots {
    /// A table allowing `per_peer_max` connections per peer (at least one).
    pub fn new(per_peer_max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            per_peer_max: per_peer_max.max(1),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection of `key`, or `None` when that peer holds all its slots.
    pub fn take(self: &Arc<Self>, key: PeerKey) -> Option<Slot> {
        let mut open = self.open.lock();
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.per_peer_max {
            return None;
        }
        *count += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections `key` holds open now.
    pub fn open(&self, key: &PeerKey) -> usize {
        self.open.lock().get(key).copied().unwrap_or(0)
    }

    /// Peers with at least one open connection.
    pub fn peers(&self) -> usize {
        self.open.lock().len()
    }

    fn give_back(&self, key: &PeerKey) {
        let mut open = self.open.lock();
        if let Some(count) = open.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                open.remove(key);
            }
        }
    }
}

/// One connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    key: PeerKey,
}

impl Slot {
    /// Whom this slot is counted against.
    pub fn key(&self) -> &PeerKey {
        &self.key
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_slots_and_they_come_back() {
        let slots = Slots::new(2);
        let one = PeerKey::of_address("10.0.0.1".parse().unwrap());
        let other = PeerKey::of_address("10.0.0.2".parse().unwrap());
        let a = slots.take(one.clone()).unwrap();
        let _b = slots.take(one.clone()).unwrap();
        assert!(slots.take(one.clone()).is_none());
        assert!(slots.take(other.clone()).is_some());
        drop(a);
        assert!(slots.take(one.clone()).is_some());
        assert_eq!(slots.open(&one), 1);
        assert_eq!(slots.peers(), 1);
    }

    #[test]
    fn an_ipv6_peer_is_counted_by_its_prefix() {
        let a = PeerKey::of_address("2001:db8::1".parse().unwrap());
        let b = PeerKey::of_address("2001:db8::ffff:2".parse().unwrap());
        assert_eq!(a, b);
    }
}
