//! Request/response RPC over QUIC with mutual TLS.
//!
//! One request per bidirectional stream: the client writes one frame (see
//! [`crate::wire`]) and finishes its side; the server answers with one frame holding a
//! [`ResponseEnvelope`]. Large payloads such as snapshots travel the same way, up to
//! `max_frame_bytes` (at most [`crate::wire::MAX_FRAME_BYTES`], 16 MiB) per message;
//! anything larger must be chunked by the caller.
//!
//! A peer whose frame is refused loses its connection (close code
//! [`close_code::CLOSE_FRAME_REJECTED`]) and `gtc_transport_frames_rejected_total`
//! grows; nothing panics.

mod client;
pub mod close_code;
mod config;
mod error;
mod handler;
mod message;
mod peer_connections;
mod protocol_violation;
mod quic;
mod send_guard;
mod server;
mod server_connection;
mod stats;

pub use client::TransportClient;
pub use config::{
    ConfigError, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_MAX_CACHED_PEERS, DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE, DEFAULT_STREAM_IO_TIMEOUT,
    ENDPOINT_DRAIN_TIMEOUT, MAX_CONCURRENT_BIDI_STREAMS_LIMIT, MAX_IDLE_TIMEOUT, MIN_FRAME_BYTES,
    TransportConfig,
};
pub use error::{BindError, ConnectFailure, RpcError};
pub use handler::{Handler, PeerInfo};
pub use message::{MAX_REMOTE_ERROR_MESSAGE_BYTES, ResponseEnvelope};
pub use quic::{quinn_client_config, quinn_server_config};
pub use server::{ShutdownOutcome, TransportServer};
pub use stats::{
    CONNECTIONS_TOTAL, FRAMES_REJECTED_TOTAL, REQUESTS_TOTAL, StatsSnapshot, TransportStats,
};
