//! The sealed gossip datagram: pure functions, no I/O, no randomness.
//!
//! ```text
//! offset  size  field
//! 0       1     format version, PACKET_FORMAT_VERSION (1)
//! 1       24    XChaCha20 nonce, fresh random bytes per datagram
//! 25      n     ciphertext of the chitchat envelope bytes (n <= MAX_GOSSIP_PLAINTEXT_BYTES)
//! 25+n    16    Poly1305 tag; the associated data is bytes 0..25 (version + nonce)
//! ```
//!
//! **Cipher and nonces.** XChaCha20-Poly1305 with a 24-byte nonce drawn from
//! the OS random source for every datagram. Random 192-bit nonces make a
//! collision under one key negligible (birthday bound near 2^96 datagrams),
//! with no counter to persist or coordinate: a restarted node, or two nodes
//! sharing the key, cannot reuse a nonce by accident as they could with the
//! 96-bit ChaCha20-Poly1305 nonce and a counter scheme.
//!
//! **No key id: trial decryption.** The receiver tries each key of its
//! keyring, primary first. This leaks nothing about which key is in use,
//! needs no id agreement during rotation, and costs at most
//! [`crate::MAX_KEYRING_KEYS`] Poly1305 checks per datagram. A Poly1305
//! check that fails does not decrypt, so garbage costs only the MAC work.
//!
//! **Replay.** There is no replay window: chitchat's state is versioned and
//! heartbeats only move forward, so a replayed datagram cannot roll state
//! back or keep a dead node alive; it can at most provoke one reply.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, KeyInit, Tag, XChaCha20Poly1305, XNonce};

use crate::key::ClusterKey;
use crate::keyring::Keyring;
use crate::reject::RejectReason;

/// First byte of every sealed datagram. A new layout gets a new value so
/// that mixed-version clusters reject, rather than misparse, each other.
pub const PACKET_FORMAT_VERSION: u8 = 1;

/// XChaCha20 nonce length.
pub const NONCE_BYTES: usize = 24;

/// Poly1305 tag length.
pub const TAG_BYTES: usize = 16;

/// Version byte plus nonce; authenticated as associated data.
pub const HEADER_BYTES: usize = 1 + NONCE_BYTES;

/// Bytes a sealed datagram adds to the chitchat envelope.
pub const PACKET_OVERHEAD_BYTES: usize = HEADER_BYTES + TAG_BYTES;

/// Largest sealed datagram sent or accepted.
///
/// 65,507 bytes is the largest UDP payload over IPv4 and also chitchat
/// 0.13's own fixed MTU (`MAX_UDP_DATAGRAM_PAYLOAD_SIZE`, not configurable).
/// Anything longer cannot come from a node of ours, so it is rejected before
/// any cryptographic work.
pub const MAX_GOSSIP_PACKET_BYTES: usize = 65_507;

/// Largest chitchat envelope that still fits in one sealed datagram.
///
/// chitchat fills deltas up to its own 65,507-byte MTU and offers no knob to
/// reserve room for our 41-byte overhead, so an envelope between this bound
/// and 65,507 bytes is dropped at send time and counted (outbound
/// `oversized`). That only happens when a single delta nears 64 KiB, i.e.
/// hundreds of nodes of facts at once, far beyond this platform's clusters.
pub const MAX_GOSSIP_PLAINTEXT_BYTES: usize = MAX_GOSSIP_PACKET_BYTES - PACKET_OVERHEAD_BYTES;

/// Why a plaintext could not be sealed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// The envelope does not fit in one datagram.
    #[error("gossip plaintext is {bytes} bytes, at most {max} fit in one datagram")]
    PlaintextTooLarge { bytes: usize, max: usize },
    /// The AEAD refused the input; with the size bound above it cannot.
    #[error("the AEAD refused to seal the gossip plaintext")]
    Aead,
}

/// A datagram that passed authentication.
#[derive(Debug, PartialEq, Eq)]
pub struct OpenedPacket {
    /// The chitchat envelope bytes.
    pub plaintext: Vec<u8>,
    /// Which key of the keyring opened it: 0 is the primary.
    pub key_index: usize,
}

/// Seals `plaintext` under `key` with the given `nonce`.
///
/// The caller supplies the nonce so this stays a pure function (tests and
/// the fuzz target use fixed nonces); the transport draws a fresh one from
/// the OS for every datagram and must never reuse one.
pub fn seal_packet(
    key: &ClusterKey,
    nonce: &[u8; NONCE_BYTES],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    if plaintext.len() > MAX_GOSSIP_PLAINTEXT_BYTES {
        return Err(SealError::PlaintextTooLarge {
            bytes: plaintext.len(),
            max: MAX_GOSSIP_PLAINTEXT_BYTES,
        });
    }
    let mut packet = Vec::with_capacity(PACKET_OVERHEAD_BYTES + plaintext.len());
    packet.push(PACKET_FORMAT_VERSION);
    packet.extend_from_slice(nonce);
    packet.extend_from_slice(plaintext);
    let (header, body) = packet.split_at_mut(HEADER_BYTES);
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let tag = cipher
        .encrypt_inout_detached(&XNonce::from(*nonce), header, body.into())
        .map_err(|_| SealError::Aead)?;
    packet.extend_from_slice(&tag);
    Ok(packet)
}

/// Opens a received datagram with any key of `keyring`.
///
/// Never panics on any input: lengths are checked before slicing, and every
/// failure is a [`RejectReason`].
pub fn open_packet(keyring: &Keyring, packet: &[u8]) -> Result<OpenedPacket, RejectReason> {
    if packet.len() > MAX_GOSSIP_PACKET_BYTES {
        return Err(RejectReason::Oversized);
    }
    if packet.len() < PACKET_OVERHEAD_BYTES {
        return Err(RejectReason::Truncated);
    }
    let (header, rest) = packet.split_at(HEADER_BYTES);
    if header[0] != PACKET_FORMAT_VERSION {
        return Err(RejectReason::UnknownVersion);
    }
    let (ciphertext, tag_bytes) = rest.split_at(rest.len() - TAG_BYTES);
    let nonce = XNonce::try_from(&header[1..]).map_err(|_| RejectReason::Truncated)?;
    let tag = Tag::try_from(tag_bytes).map_err(|_| RejectReason::Truncated)?;
    let mut plaintext = vec![0u8; ciphertext.len()];
    for (key_index, key) in keyring.keys().enumerate() {
        let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
        // Input and output have the same length by construction, so this
        // cannot fail; mapping it keeps the function panic-free regardless.
        let buffer = InOutBuf::new(ciphertext, &mut plaintext)
            .map_err(|_| RejectReason::AuthenticationFailed)?;
        if cipher
            .decrypt_inout_detached(&nonce, header, buffer, &tag)
            .is_ok()
        {
            return Ok(OpenedPacket {
                plaintext,
                key_index,
            });
        }
    }
    Err(RejectReason::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::CLUSTER_KEY_BYTES;

    fn key(byte: u8) -> ClusterKey {
        ClusterKey::from_bytes([byte; CLUSTER_KEY_BYTES])
    }

    const NONCE: [u8; NONCE_BYTES] = [9u8; NONCE_BYTES];

    #[test]
    fn seal_then_open_returns_the_plaintext() {
        let packet = seal_packet(&key(1), &NONCE, b"chitchat bytes").expect("fits");
        assert_eq!(packet.len(), PACKET_OVERHEAD_BYTES + 14);
        assert_eq!(packet[0], PACKET_FORMAT_VERSION);
        let opened = open_packet(&Keyring::single(key(1)), &packet).expect("same key");
        assert_eq!(opened.plaintext, b"chitchat bytes");
        assert_eq!(opened.key_index, 0);
    }

    #[test]
    fn secondary_key_opens_and_is_reported() {
        let packet = seal_packet(&key(2), &NONCE, b"x").expect("fits");
        let keyring = Keyring::new(key(1), vec![key(2)]).expect("valid");
        assert_eq!(open_packet(&keyring, &packet).map(|o| o.key_index), Ok(1));
    }

    #[test]
    fn wrong_key_is_rejected() {
        let packet = seal_packet(&key(1), &NONCE, b"secret").expect("fits");
        let result = open_packet(&Keyring::single(key(2)), &packet);
        assert_eq!(result, Err(RejectReason::AuthenticationFailed));
    }

    #[test]
    fn every_tampered_byte_is_rejected() {
        let packet = seal_packet(&key(1), &NONCE, b"sixteen byte msg").expect("fits");
        let keyring = Keyring::single(key(1));
        for position in 0..packet.len() {
            let mut tampered = packet.clone();
            tampered[position] ^= 0x01;
            let expected = if position == 0 {
                RejectReason::UnknownVersion
            } else {
                RejectReason::AuthenticationFailed
            };
            assert_eq!(
                open_packet(&keyring, &tampered),
                Err(expected),
                "{position}"
            );
        }
    }

    #[test]
    fn truncated_packets_are_rejected() {
        let packet = seal_packet(&key(1), &NONCE, b"payload").expect("fits");
        let keyring = Keyring::single(key(1));
        for length in 0..packet.len() {
            let result = open_packet(&keyring, &packet[..length]);
            let expected = if length < PACKET_OVERHEAD_BYTES {
                RejectReason::Truncated
            } else {
                RejectReason::AuthenticationFailed
            };
            assert_eq!(result, Err(expected), "length {length}");
        }
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let packet = seal_packet(&key(1), &NONCE, b"").expect("fits");
        let opened = open_packet(&Keyring::single(key(1)), &packet).expect("opens");
        assert!(opened.plaintext.is_empty());
    }

    #[test]
    fn oversized_is_refused_on_both_sides() {
        let too_big = vec![0u8; MAX_GOSSIP_PLAINTEXT_BYTES + 1];
        assert_eq!(
            seal_packet(&key(1), &NONCE, &too_big),
            Err(SealError::PlaintextTooLarge {
                bytes: MAX_GOSSIP_PLAINTEXT_BYTES + 1,
                max: MAX_GOSSIP_PLAINTEXT_BYTES
            })
        );
        let largest = seal_packet(&key(1), &NONCE, &too_big[1..]).expect("fits exactly");
        assert_eq!(largest.len(), MAX_GOSSIP_PACKET_BYTES);
        let mut oversized = largest;
        oversized.push(0);
        let result = open_packet(&Keyring::single(key(1)), &oversized);
        assert_eq!(result, Err(RejectReason::Oversized));
    }

    #[test]
    fn plaintext_chitchat_datagram_is_an_unknown_version() {
        // chitchat's own datagrams start with its magic number 45139 (LE).
        let plain = [0x53, 0xB0, 0x00, 0x03];
        let padded = [plain.as_slice(), &[0u8; PACKET_OVERHEAD_BYTES]].concat();
        let result = open_packet(&Keyring::single(key(1)), &padded);
        assert_eq!(result, Err(RejectReason::UnknownVersion));
    }

    proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let keyring = Keyring::new(key(1), vec![key(2)]).expect("valid");
            let result = open_packet(&keyring, &bytes);
            prop_assert!(result.is_err());
        }

        #[test]
        fn open_never_panics_on_mutated_valid_packets(
            plaintext in proptest::collection::vec(any::<u8>(), 0..512),
            position in any::<prop::sample::Index>(),
            flip in 1u8..=255,
            cut in any::<prop::sample::Index>(),
        ) {
            let packet = seal_packet(&key(1), &NONCE, &plaintext).expect("fits");
            let keyring = Keyring::single(key(1));
            let mut mutated = packet.clone();
            let at = position.index(mutated.len());
            mutated[at] ^= flip;
            prop_assert!(open_packet(&keyring, &mutated).is_err());
            let length = cut.index(packet.len());
            prop_assert!(open_packet(&keyring, &packet[..length]).is_err());
        }
    }
}
