//! From a received datagram to a chitchat envelope: open, then decode.

use std::sync::Arc;

use chitchat::ChitchatEnvelope;
use tracing::warn;

use crate::codec::{CodecError, Decoded, LoopbackCodec};
use crate::keyring::SharedKeyring;
use crate::packet::open_packet;
use crate::reject::RejectReason;
use crate::stats::GossipPacketStats;

/// Opens sealed gossip datagrams and decodes them into chitchat envelopes,
/// counting every datagram it drops.
///
/// This is the whole receive path of the encrypted transport minus the
/// socket, so the fuzz target drives exactly what the network drives.
pub struct GossipPacketDecoder {
    keyring: SharedKeyring,
    codec: LoopbackCodec,
    stats: Arc<GossipPacketStats>,
}

impl GossipPacketDecoder {
    /// A decoder that opens with whatever `keyring` holds at each call.
    pub async fn open(
        keyring: SharedKeyring,
        stats: Arc<GossipPacketStats>,
    ) -> Result<Self, CodecError> {
        Ok(Self {
            keyring,
            codec: LoopbackCodec::open().await?,
            stats,
        })
    }

    /// Opens and decodes one datagram. Every `Err` has been counted in the
    /// stats and in `gtc_gossip_packets_rejected_total`.
    pub async fn decode(&mut self, packet: &[u8]) -> Result<ChitchatEnvelope, RejectReason> {
        let result = self.open_and_decode(packet).await;
        for _ in 0..self.codec.take_foreign_datagrams() {
            self.stats.record_rejected(RejectReason::LoopbackForeign);
        }
        match result {
            Ok((envelope, key_index)) => {
                self.stats.record_opened(key_index);
                Ok(envelope)
            }
            Err(reason) => {
                self.stats.record_rejected(reason);
                Err(reason)
            }
        }
    }

    /// The stats this decoder records into.
    pub fn stats(&self) -> &Arc<GossipPacketStats> {
        &self.stats
    }

    async fn open_and_decode(
        &mut self,
        packet: &[u8],
    ) -> Result<(ChitchatEnvelope, usize), RejectReason> {
        let keyring = self.keyring.load();
        let opened = open_packet(&keyring, packet)?;
        match self.codec.decode(&opened.plaintext).await {
            Ok(Decoded::Envelope(envelope)) => Ok((envelope, opened.key_index)),
            Ok(Decoded::Rejected) => Err(RejectReason::Undecodable),
            Err(CodecError::Foreign { .. }) => Err(RejectReason::LoopbackForeign),
            Err(error) => {
                warn!(error = %error, "gossip loopback codec failed, rebuilding it");
                Err(RejectReason::CodecFailure)
            }
        }
    }
}
