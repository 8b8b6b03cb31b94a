//! Errors of binding endpoints and of calls.

use std::net::SocketAddr;
use std::time::Duration;

use super::config::ConfigError;
use crate::tls::TlsError;
use crate::wire::WireError;

/// Why a server or client endpoint could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration violates a bound.
    #[error("invalid transport configuration")]
    Config(#[from] ConfigError),
    /// The TLS configuration could not be built from the identity.
    #[error("cannot build the TLS configuration")]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound or registered with the runtime.
    #[error("cannot bind UDP socket {addr}")]
    Socket {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a connection to a peer could not be established.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// The endpoint refused to start the attempt (bad address, endpoint closed).
    #[error("the endpoint refused the connection attempt")]
    Endpoint(#[source] quinn::ConnectError),
    /// The QUIC or TLS handshake failed, e.g. the peer's certificate is not from the
    /// cluster CA, or the peer refused ours.
    #[error("the handshake failed")]
    Handshake(#[source] quinn::ConnectionError),
    /// The handshake did not complete in time.
    #[error("the handshake did not complete within {timeout:?}")]
    TimedOut { timeout: Duration },
}

/// Why a call failed. Every variant names the peer, so callers can log and route
/// without extra context.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No connection to the peer could be established.
    #[error("cannot connect to {peer}")]
    Connect {
        peer: SocketAddr,
        #[source]
        source: ConnectFailure,
    },
    /// The call did not complete within the configured call timeout.
    #[error("call to {peer} timed out after {timeout:?}")]
    Timeout { peer: SocketAddr, timeout: Duration },
    /// The peer's handler returned an error; `message` is its text.
    #[error("{peer} answered with an error: {message}")]
    Remote { peer: SocketAddr, message: String },
    /// The request could not be encoded (too large for the frame limit, or serde
    /// failed). Nothing was sent.
    #[error("cannot encode the request for {peer}")]
    Encode {
        peer: SocketAddr,
        #[source]
        source: WireError,
    },
    /// The response frame was unacceptable; the connection was closed.
    #[error("unacceptable response from {peer}")]
    Decode {
        peer: SocketAddr,
        #[source]
        source: WireError,
    },
    /// The connection failed during the call; the request may or may not have been
    /// handled.
    #[error("connection to {peer} lost: {reason}")]
    ConnectionLost { peer: SocketAddr, reason: String },
    /// The peer abandoned this request's stream (it timed out or is shutting down)
    /// while the connection stayed up.
    #[error("{peer} abandoned the request stream")]
    StreamAbandoned {
        peer: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The client already caches connections to `limit` peers, all in use.
    #[error("connection cache full ({limit} peers); cannot add {peer}")]
    TooManyPeers { peer: SocketAddr, limit: usize },
}
