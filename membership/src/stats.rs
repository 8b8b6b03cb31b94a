//! Counters of the encrypted gossip transport, readable by tests and
//! mirrored into the `metrics` facade for Prometheus.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::reject::RejectReason;

/// Prometheus counter of dropped incoming datagrams, labelled `reason`.
pub const METRIC_PACKETS_REJECTED: &str = "gtc_gossip_packets_rejected_total";
/// Prometheus counter of outgoing chitchat messages that could not be sent
/// sealed, labelled `reason` (`oversized`, `codec_failure`).
pub const METRIC_PACKETS_DROPPED_OUTBOUND: &str = "gtc_gossip_packets_dropped_outbound_total";
/// Prometheus counter of datagrams opened with a secondary key: while it
/// grows, some node still seals with the old primary, so that key must not
/// be removed yet.
pub const METRIC_PACKETS_OPENED_WITH_SECONDARY: &str =
    "gtc_gossip_packets_opened_with_secondary_key_total";

/// Why an outgoing message was dropped before reaching the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundDropReason {
    /// chitchat built a message larger than [`crate::MAX_GOSSIP_PLAINTEXT_BYTES`].
    Oversized,
    /// The loopback codec failed to serialize the message.
    CodecFailure,
}

impl OutboundDropReason {
    /// The Prometheus label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            OutboundDropReason::Oversized => "oversized",
            OutboundDropReason::CodecFailure => "codec_failure",
        }
    }
}

/// Counts of one encrypted transport (all sockets it opened).
///
/// Atomics rather than only `metrics` counters because tests must read exact
/// values for one node while other nodes run in the same process, and the
/// global `metrics` recorder cannot tell nodes apart.
#[derive(Debug, Default)]
pub struct GossipPacketStats {
    packets_sealed: AtomicU64,
    packets_opened: AtomicU64,
    packets_opened_with_secondary_key: AtomicU64,
    packets_rejected: [AtomicU64; RejectReason::ALL.len()],
    packets_dropped_outbound: AtomicU64,
}

impl GossipPacketStats {
    /// Datagrams sealed and handed to the network.
    pub fn packets_sealed(&self) -> u64 {
        self.packets_sealed.load(Ordering::Relaxed)
    }

    /// Datagrams that opened and decoded into a chitchat message.
    pub fn packets_opened(&self) -> u64 {
        self.packets_opened.load(Ordering::Relaxed)
    }

    /// Opened datagrams whose key was not the primary at the time.
    pub fn packets_opened_with_secondary_key(&self) -> u64 {
        self.packets_opened_with_secondary_key
            .load(Ordering::Relaxed)
    }

    /// Datagrams dropped for `reason`.
    pub fn packets_rejected(&self, reason: RejectReason) -> u64 {
        self.packets_rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Datagrams dropped for any reason.
    pub fn packets_rejected_total(&self) -> u64 {
        RejectReason::ALL
            .iter()
            .map(|reason| self.packets_rejected(*reason))
            .sum()
    }

    /// Outgoing messages dropped before sealing.
    pub fn packets_dropped_outbound(&self) -> u64 {
        self.packets_dropped_outbound.load(Ordering::Relaxed)
    }

    pub(crate) fn record_sealed(&self) {
        self.packets_sealed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_opened(&self, key_index: usize) {
        self.packets_opened.fetch_add(1, Ordering::Relaxed);
        if key_index > 0 {
            self.packets_opened_with_secondary_key
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(METRIC_PACKETS_OPENED_WITH_SECONDARY).increment(1);
        }
    }

    pub(crate) fn record_rejected(&self, reason: RejectReason) {
        self.packets_rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_PACKETS_REJECTED, "reason" => reason.as_str()).increment(1);
    }

    pub(crate) fn record_dropped_outbound(&self, reason: OutboundDropReason) {
        self.packets_dropped_outbound
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!(METRIC_PACKETS_DROPPED_OUTBOUND, "reason" => reason.as_str())
            .increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_are_counted_per_reason() {
        let stats = GossipPacketStats::default();
        stats.record_rejected(RejectReason::Truncated);
        stats.record_rejected(RejectReason::Truncated);
        stats.record_rejected(RejectReason::AuthenticationFailed);
        assert_eq!(stats.packets_rejected(RejectReason::Truncated), 2);
        assert_eq!(stats.packets_rejected(RejectReason::Oversized), 0);
        assert_eq!(stats.packets_rejected_total(), 3);
    }
}
