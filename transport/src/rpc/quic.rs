//! quinn endpoint and transport settings shared by servers and clients.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, VarInt};
use ring::{digest, hmac};

use super::config::{ConfigError, TransportConfig};
use super::error::BindError;
use crate::pki::NodeIdentity;
use crate::tls::{self, TlsError};

/// Domain separation for the stateless-reset key derived from the node key.
const RESET_KEY_LABEL: &[u8] = b"greentic-transport stateless-reset key v1\0";

/// A quinn client configuration for dialing cluster peers with `identity`.
///
/// Public so tools and tests can open raw authenticated connections; dial with the
/// server name [`crate::pki::CLUSTER_SAN`].
pub fn quinn_client_config(
    identity: &NodeIdentity,
    config: &TransportConfig,
) -> Result<quinn::ClientConfig, BindError> {
    let crypto = QuicClientConfig::try_from(Arc::new(tls::client_config(identity)?))
        .map_err(TlsError::Quic)?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    client_config.transport_config(transport_config(config)?);
    Ok(client_config)
}

/// A quinn server configuration that requires cluster client certificates.
pub fn quinn_server_config(
    identity: &NodeIdentity,
    config: &TransportConfig,
) -> Result<quinn::ServerConfig, BindError> {
    let crypto = QuicServerConfig::try_from(Arc::new(tls::server_config(identity)?))
        .map_err(TlsError::Quic)?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server_config.transport_config(transport_config(config)?);
    Ok(server_config)
}

/// Binds a UDP socket at `addr` and starts a quinn endpoint on it. Must run inside a
/// tokio runtime.
pub(crate) fn bind_endpoint(
    addr: SocketAddr,
    identity: &NodeIdentity,
    server_config: Option<quinn::ServerConfig>,
) -> Result<quinn::Endpoint, BindError> {
    let socket_error = |source| BindError::Socket { addr, source };
    let socket = UdpSocket::bind(addr).map_err(socket_error)?;
    let endpoint_config = EndpointConfig::new(Arc::new(reset_key(identity)?));
    quinn::Endpoint::new(
        endpoint_config,
        server_config,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(socket_error)
}

/// QUIC transport limits from the config: the stream bound, idle timeout and
/// keep-alive. Unidirectional streams and datagrams are unused, so they are disabled
/// rather than left as unbounded extra surface.
fn transport_config(config: &TransportConfig) -> Result<Arc<quinn::TransportConfig>, BindError> {
    let idle_timeout =
        IdleTimeout::try_from(config.idle_timeout).map_err(|_| ConfigError::InvalidDuration {
            field: "idle_timeout",
            value: config.idle_timeout,
            max: super::config::MAX_IDLE_TIMEOUT,
        })?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_bidi_streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(idle_timeout))
        .keep_alive_interval(Some(config.keep_alive_interval));
    Ok(Arc::new(transport))
}

/// The stateless-reset key, derived from the node's private key.
///
/// quinn's default key is random per process, so after a restart the node could not
/// send valid stateless resets for connections of its previous life, and peers would
/// wait for the idle timeout. A key that survives restarts lets peers learn of a
/// restart on their next packet.
fn reset_key(identity: &NodeIdentity) -> Result<hmac::Key, BindError> {
    let private_key = identity
        .private_key_der()
        .map_err(|error| BindError::Tls(TlsError::Identity(error)))?;
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(RESET_KEY_LABEL);
    context.update(private_key.secret_der());
    Ok(hmac::Key::new(hmac::HMAC_SHA256, context.finish().as_ref()))
}
