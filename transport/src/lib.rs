//! Node-to-node transport of the cluster.
//!
//! # What this crate owns
//!
//! - **QUIC with mutual TLS** between nodes ([`rpc`]): a [`TransportServer`] that answers
//!   one request per bidirectional stream, and a [`TransportClient`] that caches one
//!   connection per peer. Both sides authenticate with certificates issued by the
//!   cluster CA; nothing else is trusted ([`tls`]).
//! - **The frame/envelope format** ([`wire`]): a `u32` big-endian length, one
//!   format-version byte and a postcard payload, with a named size bound. A peer that
//!   sends a frame we cannot accept loses its connection; the process never panics.
//! - **The cluster PKI** ([`pki`]): creating the cluster CA, issuing node certificates,
//!   and storing both on disk with private keys readable by the owner only.
//!
//! # What it must not touch
//!
//! - No Raft logic: it carries Raft RPCs, snapshots and forwarded writes as opaque
//!   serde types chosen by the caller, and never interprets them.
//! - No application state: handlers are supplied by the caller; this crate keeps only
//!   connections and counters.
//! - No HTTP: the public API and metrics endpoint live elsewhere. This crate only
//!   increments `metrics` counters.
//!
//! # Invariants
//!
//! - Every size, count and wait is bounded by a named constant or a
//!   [`TransportConfig`] field.
//! - TLS uses an explicit ring [`rustls::crypto::CryptoProvider`]; nothing depends on
//!   a process-level default provider.

mod describe;
pub mod pki;
pub mod rpc;
pub mod tls;
pub mod wire;

pub use describe::describe_metrics;
pub use pki::{ClusterCa, NodeIdentity, NodeName, PkiError};
pub use rpc::{
    Handler, PeerInfo, RpcError, ShutdownOutcome, StatsSnapshot, TransportClient, TransportConfig,
    TransportServer, TransportStats,
};
pub use wire::{MAX_FRAME_BYTES, WIRE_VERSION, WireError};
