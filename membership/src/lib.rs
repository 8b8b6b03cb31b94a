//! Cluster membership and liveness facts over authenticated, encrypted
//! gossip.
//!
//! # What this crate owns
//!
//! - **Membership**: which node incarnations are live or dead, as seen by
//!   chitchat's scuttlebutt gossip and phi-accrual failure detector
//!   ([`Membership`], [`Member`], [`NodeId`]).
//! - **Liveness facts**: small key-values each node publishes about itself
//!   (role, addresses, applied index, instance counts; [`NodeFacts`], keys
//!   in [`facts`] and `MEMBERSHIP.md`).
//! - **The gossip wire**: every datagram sealed with XChaCha20-Poly1305
//!   under a cluster key ([`encrypted_udp`], [`packet`]), and the
//!   [`Keyring`] that makes key rotation possible without downtime.
//! - **The generation counter** that gives every restart a fresh gossip
//!   identity ([`Generation::next_persisted`]).
//!
//! # What it must not touch
//!
//! Nothing authoritative. It does not run or know Raft, does not decide
//! routing, placement or leadership, and stores nothing but the generation
//! counter. Gossip facts are eventually consistent and may be a few rounds
//! stale; a caller that needs the truth asks Raft. A fact here is a hint,
//! e.g. "this node was live 300 ms ago and had applied index 42".
//!
//! # Boundary
//!
//! The only socket it opens is the gossip socket of the transport it is
//! given (plus the loopback codec pair of the encrypted transport, see
//! [`codec`]). [`Membership::start`] takes any chitchat
//! [`chitchat::transport::Transport`], so the simulation can run it on
//! chitchat's in-memory `ChannelTransport`.
//!
//! Packet format, gossip keys and the threat model are written down in
//! `MEMBERSHIP.md` beside this crate.

pub mod codec;
pub mod config;
pub mod decoder;
mod describe;
pub mod facts;
pub mod generation;
pub mod key;
pub mod keyring;
pub mod member;
pub mod membership;
pub mod packet;
mod preopened;
pub mod reject;
pub mod stats;
pub mod transport;

pub use codec::CodecError;
pub use config::{ConfigError, FailureDetectorSettings, MembershipConfig};
pub use decoder::GossipPacketDecoder;
pub use describe::describe_metrics;
pub use facts::{
    FactError, FactKey, KEY_PREFIX_ENDPOINTS, MAX_ENDPOINTS_VALUE_BYTES, NodeFacts, NodeRole,
    endpoints_from_key_values, endpoints_value,
};
pub use generation::{Generation, GenerationError};
pub use key::{ClusterKey, ClusterKeyError};
pub use keyring::{Keyring, KeyringError, MAX_KEYRING_KEYS, SharedKeyring};
pub use member::{Member, NodeId};
pub use membership::{Membership, ShutdownError, StartError};
pub use packet::{
    MAX_GOSSIP_PACKET_BYTES, MAX_GOSSIP_PLAINTEXT_BYTES, OpenedPacket, SealError, open_packet,
    seal_packet,
};
pub use reject::RejectReason;
pub use stats::GossipPacketStats;
pub use transport::{EncryptedUdpTransport, encrypted_udp};
