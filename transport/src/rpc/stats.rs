//! Counters of the transport: `metrics` for Prometheus, plus plain atomics that tests
//! and health checks can read without a recorder. Both are updated by the same
//! functions so they never drift apart.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::wire::WireError;

/// Frames refused, by reason. Counter, label `reason`.
pub const FRAMES_REJECTED_TOTAL: &str = "gtc_transport_frames_rejected_total";
/// Requests handled (`direction="inbound"`) or sent (`direction="outbound"`).
pub const REQUESTS_TOTAL: &str = "gtc_transport_requests_total";
/// Connections, by `result`: `accepted`/`rejected` on servers,
/// `established`/`failed` on clients, `dropped` for a client connection
/// abandoned after a call timed out on it, and `closed_stale` for such a
/// connection closed once a new dial succeeded while it heard nothing.
pub const CONNECTIONS_TOTAL: &str = "gtc_transport_connections_total";

/// Live counters of one server or client.
#[derive(Debug, Default)]
pub struct TransportStats {
    frames_rejected: AtomicU64,
    requests_inbound: AtomicU64,
    requests_outbound: AtomicU64,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    connections_established: AtomicU64,
    connections_failed: AtomicU64,
    connections_dropped: AtomicU64,
    connections_closed_stale: AtomicU64,
}

/// A copy of [`TransportStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames refused from peers (each one closed its connection).
    pub frames_rejected: u64,
    /// Requests received and passed to the handler.
    pub requests_inbound: u64,
    /// Calls started by the client.
    pub requests_outbound: u64,
    /// Connections a server completed the handshake with and identified.
    pub connections_accepted: u64,
    /// Connection attempts a server refused (handshake failed, no node name, limit).
    pub connections_rejected: u64,
    /// Connections a client established.
    pub connections_established: u64,
    /// Connection attempts of a client that failed.
    pub connections_failed: u64,
    /// Cached client connections abandoned because a call on them timed out.
    pub connections_dropped: u64,
    /// Abandoned connections closed because a new dial succeeded while they
    /// heard nothing.
    pub connections_closed_stale: u64,
}

/// Outcome of one connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionResult {
    Accepted,
    Rejected,
    Established,
    Failed,
    Dropped,
    ClosedStale,
}

impl TransportStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            frames_rejected: self.frames_rejected.load(Ordering::Relaxed),
            requests_inbound: self.requests_inbound.load(Ordering::Relaxed),
            requests_outbound: self.requests_outbound.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_rejected: self.connections_rejected.load(Ordering::Relaxed),
            connections_established: self.connections_established.load(Ordering::Relaxed),
            connections_failed: self.connections_failed.load(Ordering::Relaxed),
            connections_dropped: self.connections_dropped.load(Ordering::Relaxed),
            connections_closed_stale: self.connections_closed_stale.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn record_frame_rejected(&self, error: &WireError) {
        self.frames_rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(FRAMES_REJECTED_TOTAL, "reason" => error.reason()).increment(1);
    }

    pub(crate) fn record_request_inbound(&self) {
        self.requests_inbound.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REQUESTS_TOTAL, "direction" => "inbound").increment(1);
    }

    pub(crate) fn record_request_outbound(&self) {
        self.requests_outbound.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(REQUESTS_TOTAL, "direction" => "outbound").increment(1);
    }

    pub(crate) fn record_connection(&self, result: ConnectionResult) {
        let (counter, label) = match result {
            ConnectionResult::Accepted => (&self.connections_accepted, "accepted"),
            ConnectionResult::Rejected => (&self.connections_rejected, "rejected"),
            ConnectionResult::Established => (&self.connections_established, "established"),
            ConnectionResult::Failed => (&self.connections_failed, "failed"),
            ConnectionResult::Dropped => (&self.connections_dropped, "dropped"),
            ConnectionResult::ClosedStale => (&self.connections_closed_stale, "closed_stale"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(CONNECTIONS_TOTAL, "result" => label).increment(1);
    }
}
