//! The client's cache of one connection per peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use super::error::RpcError;

/// One peer's connection, behind an async lock so concurrent callers share a single
/// connection attempt instead of racing to open many.
pub(crate) type PeerSlot = Arc<tokio::sync::Mutex<CachedPeer>>;

/// What the client holds for one peer.
#[derive(Default)]
pub(crate) struct CachedPeer {
    /// The connection new calls use.
    pub(crate) live: Option<quinn::Connection>,
    /// The connection dropped after a call timed out on it, with the datagrams it
    /// had received by then. Calls still in flight on it keep it open; if the next
    /// dial succeeds while it heard nothing more, its peer is gone (or restarted
    /// and not yet resetting it, its packets held back by QUIC's loss backoff), so
    /// it is closed and those calls fail at once instead of at their timeouts.
    pub(crate) suspect: Option<(quinn::Connection, u64)>,
}

/// At most `max_peers` slots, keyed by peer address.
pub(crate) struct PeerConnections {
    slots: Mutex<HashMap<SocketAddr, PeerSlot>>,
    max_peers: usize,
}

impl PeerConnections {
    pub(crate) fn new(max_peers: usize) -> Self {
        PeerConnections {
            slots: Mutex::new(HashMap::new()),
            max_peers,
        }
    }

    /// The slot for `peer`, created if needed. When the cache is full, slots nobody
    /// is using and whose connection is gone are evicted first.
    pub(crate) fn slot(&self, peer: SocketAddr) -> Result<PeerSlot, RpcError> {
        // The map stays consistent even if a holder panicked: every critical section
        // is a single insert, lookup or retain.
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.get(&peer) {
            return Ok(slot.clone());
        }
        if slots.len() >= self.max_peers {
            slots.retain(|_, slot| !is_unused_and_dead(slot));
        }
        if slots.len() >= self.max_peers {
            return Err(RpcError::TooManyPeers {
                peer,
                limit: self.max_peers,
            });
        }
        let slot = PeerSlot::default();
        slots.insert(peer, slot.clone());
        Ok(slot)
    }
}

fn is_unused_and_dead(slot: &PeerSlot) -> bool {
    Arc::strong_count(slot) == 1
        && slot.try_lock().is_ok_and(|cached| {
            cached.suspect.is_none()
                && cached
                    .live
                    .as_ref()
                    .is_none_or(|connection| connection.close_reason().is_some())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn a_full_cache_evicts_unused_dead_slots_and_refuses_when_all_are_in_use() {
        let peers = PeerConnections::new(1);
        drop(peers.slot(addr(1)).expect("first peer"));
        // The first slot is unused and holds no connection: it makes room.
        let held = peers.slot(addr(2)).expect("second peer evicts the first");
        assert!(matches!(
            peers.slot(addr(3)),
            Err(RpcError::TooManyPeers { limit: 1, .. })
        ));
        assert!(Arc::ptr_eq(&held, &peers.slot(addr(2)).expect("same slot")));
    }
}
