//! Why an incoming gossip datagram was dropped.

/// The closed list of reasons a received datagram is dropped instead of
/// reaching chitchat. Each reason is one value of the `reason` label of
/// `gtc_gossip_packets_rejected_total`, so the set must stay small and fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// Longer than [`crate::MAX_GOSSIP_PACKET_BYTES`].
    Oversized,
    /// Too short to hold the header and the authentication tag.
    Truncated,
    /// The first byte is not a packet format this build understands; a
    /// plaintext chitchat node (whose datagrams start with chitchat's magic
    /// number) lands here.
    UnknownVersion,
    /// No key of the keyring opens it: a different cluster key, a tampered
    /// byte or random garbage. AEAD cannot tell these apart, by design.
    AuthenticationFailed,
    /// It opened with a cluster key, yet chitchat cannot decode the
    /// plaintext: a key holder running an incompatible chitchat version.
    Undecodable,
    /// The in-process loopback codec lost track of a datagram (timeout or
    /// an unexpected order); the codec is rebuilt and the datagram dropped.
    CodecFailure,
    /// A datagram on the codec's loopback port came from a foreign local
    /// sender, an injection attempt that bypasses the cluster key.
    LoopbackForeign,
}

impl RejectReason {
    /// Every reason, in label order; used to size and walk counter arrays.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Oversized,
        RejectReason::Truncated,
        RejectReason::UnknownVersion,
        RejectReason::AuthenticationFailed,
        RejectReason::Undecodable,
        RejectReason::CodecFailure,
        RejectReason::LoopbackForeign,
    ];

    /// The Prometheus label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Oversized => "oversized",
            RejectReason::Truncated => "truncated",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::AuthenticationFailed => "authentication_failed",
            RejectReason::Undecodable => "undecodable",
            RejectReason::CodecFailure => "codec_failure",
            RejectReason::LoopbackForeign => "loopback_foreign",
        }
    }

    /// Position in [`RejectReason::ALL`], for counter arrays.
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_matches_position_in_all() {
        for (position, reason) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), position, "{reason}");
        }
    }
}
