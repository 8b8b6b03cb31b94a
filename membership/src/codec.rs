//! Turns chitchat envelopes into bytes and back, using only chitchat's
//! public API.
//!
//! **Why this exists.** chitchat 0.13 keeps `ChitchatEnvelope::serialize`
//! and `deserialize` `pub(crate)`, and its `Digest`/`Delta` types are not
//! exported, so an outside crate can neither write nor read the wire form.
//! The one public component that does both is chitchat's own
//! `transport::UdpSocket`. The codec therefore owns a private pair of
//! loopback sockets: `chitchat_end` (a chitchat `UdpSocket`) and `raw_end`
//! (a plain tokio socket). Encoding sends the envelope from `chitchat_end` to
//! `raw_end` and reads the bytes there; decoding sends bytes from `raw_end`
//! and lets `chitchat_end` parse them.
//!
//! **Invariants.**
//! - Only datagrams from the partner socket are trusted: `raw_end` is
//!   `connect`ed, so the kernel filters its input, and every envelope
//!   `chitchat_end` yields is checked against `raw_end`'s address (an
//!   unprivileged local process cannot spoof a loopback source port that
//!   is bound by us).
//! - chitchat's `recv` silently skips bytes it cannot parse and waits for
//!   the next datagram. Each decode therefore sends a *sentinel* (a
//!   `BadCluster` envelope padded with a marker, so its length differs from
//!   any real `BadCluster`) right after the bytes: if the sentinel comes out
//!   first, chitchat rejected the bytes.
//! - An operation that is interrupted (its future dropped, as chitchat's
//!   `select!` does to `recv`), times out, or sees an unexpected datagram
//!   leaves the codec *dirty*; the next operation rebuilds both sockets, so
//!   a stale datagram can never be paired with the wrong sender.
//!
//! The cost is two loopback datagrams per encoded message and three per
//! decoded one, negligible at gossip rates.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::{RecvOutcome, Socket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};

use crate::packet::MAX_GOSSIP_PACKET_BYTES;

/// How long a loopback datagram may take to arrive. Loopback delivery is
/// normally immediate; the bound only turns a datagram the kernel dropped
/// (receive buffer full under memory pressure) into an error instead of a
/// hang of the gossip loop.
pub const LOOPBACK_TIMEOUT: Duration = Duration::from_millis(1_000);

/// Foreign datagrams skipped within one decode before the codec gives up
/// and rebuilds on fresh ports; bounds the work a local flooder can cause.
pub const MAX_FOREIGN_DATAGRAMS_PER_DECODE: usize = 16;

/// Appended to the `BadCluster` envelope to make the sentinel. chitchat
/// ignores trailing bytes, and the resulting length is unlike any envelope
/// chitchat emits.
const SENTINEL_MARKER: &[u8; 8] = b"gtc-sntl";

/// Why the codec could not complete an operation.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Binding or using the loopback sockets failed.
    #[error("loopback codec socket error: {reason}")]
    Io { reason: String },
    /// The partner datagram did not arrive within [`LOOPBACK_TIMEOUT`].
    #[error("loopback codec datagram did not arrive within {LOOPBACK_TIMEOUT:?}")]
    Timeout,
    /// Datagrams arrived out of the expected sequence.
    #[error("loopback codec lost its datagram sequence: {detail}")]
    Desync { detail: &'static str },
    /// Too many datagrams from a sender other than the partner socket.
    #[error("loopback codec received {count} datagrams from foreign senders")]
    Foreign { count: usize },
}

/// The result of decoding bytes that passed authentication.
#[derive(Debug)]
pub enum Decoded {
    /// chitchat parsed the bytes.
    Envelope(ChitchatEnvelope),
    /// chitchat rejected the bytes as not a chitchat message.
    Rejected,
}

/// A loopback socket pair that borrows chitchat's wire format.
pub struct LoopbackCodec {
    sockets: Option<LoopbackSockets>,
    /// Datagrams from foreign senders seen so far; reported to the caller's
    /// stats as `loopback_foreign`.
    foreign_datagrams: u64,
}

struct LoopbackSockets {
    chitchat_end: chitchat::transport::UdpSocket,
    raw_end: tokio::net::UdpSocket,
    raw_end_addr: SocketAddr,
    sentinel: Vec<u8>,
    /// Receive buffer of `raw_end`, sized for the largest envelope.
    buffer: Vec<u8>,
}

impl LoopbackCodec {
    /// Binds the loopback pair and learns the sentinel bytes.
    pub async fn open() -> Result<Self, CodecError> {
        Ok(Self {
            sockets: Some(LoopbackSockets::open().await?),
            foreign_datagrams: 0,
        })
    }

    /// chitchat's wire bytes for `envelope`.
    pub async fn encode(&mut self, envelope: ChitchatEnvelope) -> Result<Vec<u8>, CodecError> {
        let mut sockets = self.take_clean_sockets().await?;
        let bytes = sockets.encode(envelope).await?;
        self.sockets = Some(sockets);
        Ok(bytes)
    }

    /// Parses `bytes` with chitchat's own deserializer.
    pub async fn decode(&mut self, bytes: &[u8]) -> Result<Decoded, CodecError> {
        let mut sockets = self.take_clean_sockets().await?;
        let decoded = sockets.decode(bytes, &mut self.foreign_datagrams).await?;
        self.sockets = Some(sockets);
        Ok(decoded)
    }

    /// Returns and resets the count of foreign datagrams seen.
    pub fn take_foreign_datagrams(&mut self) -> u64 {
        std::mem::take(&mut self.foreign_datagrams)
    }

    /// Takes the sockets out for one operation. While an operation runs the
    /// slot is empty, so an interrupted or failed operation leaves it empty
    /// and the next one starts on a fresh pair.
    async fn take_clean_sockets(&mut self) -> Result<LoopbackSockets, CodecError> {
        match self.sockets.take() {
            Some(sockets) => Ok(sockets),
            None => LoopbackSockets::open().await,
        }
    }
}

impl LoopbackSockets {
    async fn open() -> Result<Self, CodecError> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let chitchat_end = chitchat::transport::UdpSocket::open(loopback)
            .await
            .map_err(io_error)?;
        let chitchat_end_addr = chitchat_end.local_addr().map_err(io_error)?;
        let raw_end = tokio::net::UdpSocket::bind(loopback)
            .await
            .map_err(io_error)?;
        raw_end.connect(chitchat_end_addr).await.map_err(io_error)?;
        let raw_end_addr = raw_end.local_addr().map_err(io_error)?;
        let mut sockets = Self {
            chitchat_end,
            raw_end,
            raw_end_addr,
            sentinel: Vec::new(),
            buffer: vec![0u8; MAX_GOSSIP_PACKET_BYTES],
        };
        let bad_cluster = ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::BadCluster,
        };
        let mut sentinel = sockets.encode(bad_cluster).await?;
        sentinel.extend_from_slice(SENTINEL_MARKER);
        sockets.sentinel = sentinel;
        Ok(sockets)
    }

    async fn encode(&mut self, envelope: ChitchatEnvelope) -> Result<Vec<u8>, CodecError> {
        let sent = self
            .chitchat_end
            .send(self.raw_end_addr, envelope)
            .await
            .map_err(io_error)?;
        let received = tokio::time::timeout(LOOPBACK_TIMEOUT, self.raw_end.recv(&mut self.buffer))
            .await
            .map_err(|_| CodecError::Timeout)?
            .map_err(io_error)?;
        if received != sent.num_bytes_sent {
            return Err(CodecError::Desync {
                detail: "encoded length differs from the length chitchat sent",
            });
        }
        Ok(self.buffer[..received].to_vec())
    }

    async fn decode(
        &mut self,
        bytes: &[u8],
        foreign_datagrams: &mut u64,
    ) -> Result<Decoded, CodecError> {
        self.raw_end.send(bytes).await.map_err(io_error)?;
        self.raw_end.send(&self.sentinel).await.map_err(io_error)?;
        let first = self.next_from_partner(foreign_datagrams).await?;
        if self.is_sentinel(&first) {
            return Ok(Decoded::Rejected);
        }
        if first.num_bytes_received != bytes.len() {
            return Err(CodecError::Desync {
                detail: "decoded datagram is not the one just sent",
            });
        }
        let second = self.next_from_partner(foreign_datagrams).await?;
        if !self.is_sentinel(&second) {
            return Err(CodecError::Desync {
                detail: "sentinel missing after a decoded datagram",
            });
        }
        Ok(Decoded::Envelope(first.envelope))
    }

    /// The next envelope `chitchat_end` parsed that came from `raw_end`.
    async fn next_from_partner(
        &mut self,
        foreign_datagrams: &mut u64,
    ) -> Result<RecvOutcome, CodecError> {
        for _ in 0..=MAX_FOREIGN_DATAGRAMS_PER_DECODE {
            let outcome = tokio::time::timeout(LOOPBACK_TIMEOUT, self.chitchat_end.recv())
                .await
                .map_err(|_| CodecError::Timeout)?
                .map_err(io_error)?;
            if outcome.from_addr == self.raw_end_addr {
                return Ok(outcome);
            }
            *foreign_datagrams += 1;
        }
        Err(CodecError::Foreign {
            count: MAX_FOREIGN_DATAGRAMS_PER_DECODE + 1,
        })
    }

    fn is_sentinel(&self, outcome: &RecvOutcome) -> bool {
        matches!(outcome.envelope.message, ChitchatMessage::BadCluster)
            && outcome.num_bytes_received == self.sentinel.len()
    }
}

fn io_error(error: impl std::fmt::Display) -> CodecError {
    CodecError::Io {
        reason: format!("{error:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_cluster(version: ProtocolVersion) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version,
            message: ChitchatMessage::BadCluster,
        }
    }

    #[tokio::test]
    async fn encode_then_decode_round_trips() {
        let mut codec = LoopbackCodec::open().await.expect("loopback");
        let bytes = codec
            .encode(bad_cluster(ProtocolVersion::V1))
            .await
            .expect("encodes");
        match codec.decode(&bytes).await.expect("decodes") {
            Decoded::Envelope(envelope) => assert_eq!(envelope, bad_cluster(ProtocolVersion::V1)),
            Decoded::Rejected => panic!("chitchat rejected its own bytes"),
        }
    }

    #[tokio::test]
    async fn garbage_is_rejected_without_waiting_and_codec_stays_usable() {
        let mut codec = LoopbackCodec::open().await.expect("loopback");
        for garbage in [&b""[..], b"junk", &[0x53, 0xB0, 0x09, 0x00]] {
            let started = tokio::time::Instant::now();
            let decoded = codec.decode(garbage).await.expect("no codec error");
            assert!(matches!(decoded, Decoded::Rejected));
            assert!(started.elapsed() < LOOPBACK_TIMEOUT);
        }
        let bytes = codec
            .encode(bad_cluster(ProtocolVersion::V0))
            .await
            .expect("encodes");
        assert!(matches!(
            codec.decode(&bytes).await,
            Ok(Decoded::Envelope(_))
        ));
    }

    #[tokio::test]
    async fn interrupted_decode_leaves_no_stale_datagram() {
        let mut codec = LoopbackCodec::open().await.expect("loopback");
        let bytes = codec
            .encode(bad_cluster(ProtocolVersion::V1))
            .await
            .expect("encodes");
        // Poll the decode once and drop it, as chitchat's select! may.
        let interrupted = codec.decode(&bytes);
        let _ = futures_poll_once(interrupted).await;
        let other = codec
            .encode(bad_cluster(ProtocolVersion::V0))
            .await
            .expect("encodes after rebuild");
        match codec.decode(&other).await.expect("decodes") {
            Decoded::Envelope(envelope) => assert_eq!(envelope.version, ProtocolVersion::V0),
            Decoded::Rejected => panic!("rejected"),
        }
    }

    async fn futures_poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|context| match future.as_mut().poll(context) {
            std::task::Poll::Ready(output) => std::task::Poll::Ready(Some(output)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await
    }
}
