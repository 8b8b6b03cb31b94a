//! quinn endpoint and transport settings shared by servers and clients.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{EndpointConfig, IdleTimeout, VarInt};
use quinn_proto::HashedConnectionIdGenerator;
use ring::{digest, hmac};

use super::config::{ConfigError, TransportConfig};
use super::error::BindError;
use crate::pki::NodeIdentity;
use crate::tls::{self, TlsError};

/// Domain separation for the stateless-reset key derived from the node key.
const RESET_KEY_LABEL: &[u8] = b"greentic-transport stateless-reset key v1\0";
/// Domain separation for the connection-id key derived from the node key.
const CID_KEY_LABEL: &[u8] = b"greentic-transport connection-id key v1\0";

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
    let mut endpoint_config = EndpointConfig::new(Arc::new(reset_key(identity)?));
    let cid_key = connection_id_key(identity)?;
    endpoint_config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
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
    let digest = node_key_digest(identity, RESET_KEY_LABEL)?;
    Ok(hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref()))
}

/// The key of the connection-id generator, derived from the node's private key.
///
/// quinn's default generator signs the connection ids it issues with a key random
/// per process, and an endpoint drops, without answering, a packet whose id it did
/// not sign. So a restarted node silently dropped every packet of a connection of its
/// previous life instead of answering with the stateless reset above, and its peers
/// kept sending into that connection until their idle timeout (30 s): the leader could
/// not reach a restarted member for that long (issue #12). With a key that survives
/// restarts, the restarted node recognises the ids as its own, finds no connection for
/// them, and resets the connection on the peer's next packet, so the peer redials.
fn connection_id_key(identity: &NodeIdentity) -> Result<u64, BindError> {
    let digest = node_key_digest(identity, CID_KEY_LABEL)?;
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    Ok(u64::from_le_bytes(bytes))
}

/// SHA-256 of a domain label and the node's private key: a per-node secret that stays
/// the same across restarts and reveals nothing about the key.
fn node_key_digest(identity: &NodeIdentity, label: &[u8]) -> Result<digest::Digest, BindError> {
    let private_key = identity
        .private_key_der()
        .map_err(|error| BindError::Tls(TlsError::Identity(error)))?;
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(label);
    context.update(private_key.secret_der());
    Ok(context.finish())
}
