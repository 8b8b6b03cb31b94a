//! chitchat `Transport` over UDP where every datagram is sealed with the
//! cluster key (see [`crate::packet`] for the format).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use tracing::{debug, warn};

use crate::codec::LoopbackCodec;
use crate::decoder::GossipPacketDecoder;
use crate::keyring::SharedKeyring;
use crate::packet::{MAX_GOSSIP_PACKET_BYTES, NONCE_BYTES, SealError, seal_packet};
use crate::stats::{GossipPacketStats, OutboundDropReason};

/// The production gossip transport: authenticated, encrypted UDP under the
/// keyring `keyring`, which can be swapped while gossip runs.
pub fn encrypted_udp(keyring: SharedKeyring) -> EncryptedUdpTransport {
    EncryptedUdpTransport::new(keyring)
}

/// A chitchat [`Transport`] whose sockets seal every datagram with the
/// primary key and accept only datagrams that open with a key of the ring.
///
/// Plaintext chitchat nodes and nodes with other keys are dropped at the
/// socket, so chitchat never learns they exist. Keep the transport (or its
/// [`EncryptedUdpTransport::stats`]) to read the counters.
#[derive(Clone, Debug)]
pub struct EncryptedUdpTransport {
    keyring: SharedKeyring,
    stats: Arc<GossipPacketStats>,
}

impl EncryptedUdpTransport {
    /// A transport using `keyring`, with fresh counters.
    pub fn new(keyring: SharedKeyring) -> Self {
        Self {
            keyring,
            stats: Arc::new(GossipPacketStats::default()),
        }
    }

    /// Counters shared by every socket this transport opens.
    pub fn stats(&self) -> Arc<GossipPacketStats> {
        Arc::clone(&self.stats)
    }

    /// The keyring handle; storing into it takes effect on the next datagram.
    pub fn keyring(&self) -> &SharedKeyring {
        &self.keyring
    }
}

#[async_trait]
impl Transport for EncryptedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind gossip socket {listen_addr}/udp"))?;
        let encoder = LoopbackCodec::open()
            .await
            .context("failed to open gossip loopback encoder")?;
        let decoder = GossipPacketDecoder::open(self.keyring.clone(), Arc::clone(&self.stats))
            .await
            .context("failed to open gossip loopback decoder")?;
        Ok(Box::new(EncryptedUdpSocket {
            socket,
            keyring: self.keyring.clone(),
            stats: Arc::clone(&self.stats),
            encoder,
            decoder,
            // One byte more than the largest accepted datagram, so a longer
            // one (possible over IPv6) shows as oversized instead of being
            // silently truncated to a valid-looking length.
            receive_buffer: vec![0u8; MAX_GOSSIP_PACKET_BYTES + 1],
        }))
    }
}

/// One bound gossip socket. chitchat's server loop owns it, so it is
/// dropped (and the port released) when `ChitchatHandle::shutdown` returns.
struct EncryptedUdpSocket {
    socket: tokio::net::UdpSocket,
    keyring: SharedKeyring,
    stats: Arc<GossipPacketStats>,
    encoder: LoopbackCodec,
    decoder: GossipPacketDecoder,
    receive_buffer: Vec<u8>,
}

#[async_trait]
impl Socket for EncryptedUdpSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.socket
            .local_addr()
            .context("failed to read gossip socket address")
    }

    async fn send(
        &mut self,
        to_addr: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plaintext = match self.encoder.encode(envelope).await {
            Ok(plaintext) => plaintext,
            Err(error) => {
                warn!(error = %error, to = %to_addr, "gossip message dropped: encoding failed");
                self.stats
                    .record_dropped_outbound(OutboundDropReason::CodecFailure);
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|error| anyhow::anyhow!("os random source failed: {error}"))?;
        let packet = match seal_packet(self.keyring.load().primary(), &nonce, &plaintext) {
            Ok(packet) => packet,
            Err(error @ (SealError::PlaintextTooLarge { .. } | SealError::Aead)) => {
                warn!(error = %error, to = %to_addr, "gossip message dropped: cannot seal");
                self.stats
                    .record_dropped_outbound(OutboundDropReason::Oversized);
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let num_bytes_sent = self
            .socket
            .send_to(&packet, to_addr)
            .await
            .with_context(|| format!("failed to send gossip datagram to {to_addr}"))?;
        self.stats.record_sealed();
        Ok(SendOutcome { num_bytes_sent })
    }

    /// Returns the next datagram that opens and decodes; drops and counts
    /// the rest. Cancel-safe in the sense chitchat needs: if the future is
    /// dropped mid-decode, that one datagram is lost and the codec rebuilds.
    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (num_bytes_received, from_addr) =
                match self.socket.recv_from(&mut self.receive_buffer).await {
                    Ok(received) => received,
                    Err(error) if is_transient(&error) => {
                        debug!(error = %error, "transient gossip receive error");
                        continue;
                    }
                    Err(error) => return Err(error).context("gossip socket receive failed"),
                };
            let packet = &self.receive_buffer[..num_bytes_received];
            match self.decoder.decode(packet).await {
                Ok(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr,
                        envelope,
                        num_bytes_received,
                    });
                }
                Err(reason) => {
                    debug!(from = %from_addr, reason = %reason, bytes = num_bytes_received, "gossip datagram rejected");
                }
            }
        }
    }
}

/// Receive errors after which the socket still works: ICMP feedback from a
/// peer that went away, or a momentary lack of kernel memory.
fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::OutOfMemory
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;
    use crate::key::{CLUSTER_KEY_BYTES, ClusterKey};
    use crate::keyring::Keyring;
    use crate::reject::RejectReason;

    fn loopback() -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    }

    fn transport(byte: u8) -> EncryptedUdpTransport {
        let key = ClusterKey::from_bytes([byte; CLUSTER_KEY_BYTES]);
        encrypted_udp(SharedKeyring::new(Keyring::single(key)))
    }

    fn bad_cluster() -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        }
    }

    /// Proves an envelope crosses between two sockets with the same key and
    /// that garbage in front of it is dropped and counted, not delivered.
    #[tokio::test]
    async fn same_key_delivers_and_garbage_is_counted() {
        let sender_transport = transport(1);
        let receiver_transport = transport(1);
        let mut sender = sender_transport.open(loopback()).await.expect("bind");
        let mut receiver = receiver_transport.open(loopback()).await.expect("bind");
        let receiver_addr = receiver.local_addr().expect("addr");

        let raw = tokio::net::UdpSocket::bind(loopback()).await.expect("bind");
        raw.send_to(b"garbage", receiver_addr).await.expect("send");
        sender
            .send(receiver_addr, bad_cluster())
            .await
            .expect("send");

        let outcome = receiver.recv().await.expect("recv");
        assert_eq!(outcome.envelope, bad_cluster());
        assert_eq!(outcome.from_addr, sender.local_addr().expect("addr"));
        let stats = receiver_transport.stats();
        assert_eq!(stats.packets_rejected(RejectReason::Truncated), 1);
        assert_eq!(stats.packets_opened(), 1);
        assert_eq!(sender_transport.stats().packets_sealed(), 1);
    }

    /// Proves a datagram sealed with a key outside the ring never reaches
    /// chitchat, and that a key added to the ring at runtime is accepted.
    #[tokio::test]
    async fn other_key_is_rejected_and_runtime_added_key_is_accepted() {
        let stranger_transport = transport(3);
        let member_transport = transport(1);
        let receiver_transport = transport(2);
        let mut stranger = stranger_transport.open(loopback()).await.expect("bind");
        let mut member = member_transport.open(loopback()).await.expect("bind");
        let mut receiver = receiver_transport.open(loopback()).await.expect("bind");
        let receiver_addr = receiver.local_addr().expect("addr");

        let with_member_key = receiver_transport
            .keyring()
            .load()
            .with_added(ClusterKey::from_bytes([1; CLUSTER_KEY_BYTES]))
            .expect("two keys");
        receiver_transport.keyring().store(with_member_key);
        let from_stranger = ChitchatEnvelope {
            version: ProtocolVersion::V1,
            message: ChitchatMessage::BadCluster,
        };
        stranger
            .send(receiver_addr, from_stranger)
            .await
            .expect("send");
        member
            .send(receiver_addr, bad_cluster())
            .await
            .expect("send");

        // The first envelope delivered is the member's (V0), not the stranger's (V1).
        let outcome = receiver.recv().await.expect("recv");
        assert_eq!(outcome.envelope, bad_cluster());
        assert_eq!(outcome.from_addr, member.local_addr().expect("addr"));
        let stats = receiver_transport.stats();
        assert_eq!(
            stats.packets_rejected(RejectReason::AuthenticationFailed),
            1
        );
        assert_eq!(stats.packets_opened_with_secondary_key(), 1);
    }
}
