//! rustls configurations for the cluster mesh: mutual TLS 1.3 against the cluster CA.
//!
//! Both builders take an explicit ring [`CryptoProvider`] so that nothing depends on a
//! process-level default provider (which panics when two providers are linked).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pki::{NodeIdentity, PkiError};

/// ALPN protocol of the cluster transport. A new incompatible protocol gets a new
/// ALPN id, so mismatched nodes fail at the handshake instead of mid-stream.
pub const ALPN_PROTOCOL: &[u8] = b"greentic-cluster/1";

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The identity's certificates or key do not parse.
    #[error("invalid node identity")]
    Identity(#[source] PkiError),
    /// The CA certificate was rejected as a trust anchor.
    #[error("the cluster CA certificate is not a usable trust anchor")]
    TrustAnchor(#[source] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("cannot build the client certificate verifier")]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the certificate, key or protocol settings.
    #[error("rustls rejected the configuration")]
    Rustls(#[source] rustls::Error),
    /// quinn refused the rustls configuration (it needs TLS 1.3 and an initial suite).
    #[error("the TLS configuration cannot be used for QUIC")]
    Quic(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
}

/// The crypto provider used for every cluster TLS configuration.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration that presents the node certificate and requires a client
/// certificate signed by the cluster CA (and by nothing else).
pub fn server_config(identity: &NodeIdentity) -> Result<ServerConfig, TlsError> {
    let provider = crypto_provider();
    let verifier = client_verifier(identity, provider.clone())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificate_chain(identity)?, private_key(identity)?)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    Ok(config)
}

/// A client configuration that trusts only the cluster CA and presents the node
/// certificate. Dial peers with the server name [`crate::pki::CLUSTER_SAN`].
pub fn client_config(identity: &NodeIdentity) -> Result<ClientConfig, TlsError> {
    let provider = crypto_provider();
    let server_verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(cluster_roots(identity)?),
        provider.clone(),
    )
    .build()
    .map_err(TlsError::ClientVerifier)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_webpki_verifier(server_verifier)
        .with_client_auth_cert(certificate_chain(identity)?, private_key(identity)?)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    Ok(config)
}

/// A root store holding only the cluster CA.
pub fn cluster_roots(identity: &NodeIdentity) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(identity.ca_certificate_der().map_err(TlsError::Identity)?)
        .map_err(TlsError::TrustAnchor)?;
    Ok(roots)
}

fn client_verifier(
    identity: &NodeIdentity,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(cluster_roots(identity)?), provider)
        .build()
        .map_err(TlsError::ClientVerifier)
}

fn certificate_chain(
    identity: &NodeIdentity,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    Ok(vec![
        identity.certificate_der().map_err(TlsError::Identity)?,
    ])
}

fn private_key(
    identity: &NodeIdentity,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, TlsError> {
    identity.private_key_der().map_err(TlsError::Identity)
}
