//! TLS for the admin API (rustls with the ring provider, built per config:
//! nothing is installed process-wide, and aws-lc-rs never enters the build).

use std::path::Path;
use std::sync::Arc;

use deploy::error::ErrorKind;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::CliError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(what: &str, path: &Path, error: impl std::fmt::Display) -> CliError {
    CliError::new(
        ErrorKind::InvalidArgument,
        format!("{what} {}: {error}", path.display()),
    )
}

/// Every certificate of a PEM file (a chain, leaf first; or CA roots).
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, CliError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| invalid(&format!("cannot read the {what}"), path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&format!("the {what} is not valid PEM"), path, e))?;
    if certificates.is_empty() {
        return Err(invalid(
            &format!("the {what} holds no"),
            path,
            "CERTIFICATE block",
        ));
    }
    Ok(certificates)
}

/// The server side: the certificate chain and private key (PEM) the admin
/// listener presents.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, CliError> {
    let chain = certificates(cert, "admin TLS certificate")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| invalid("cannot read the admin TLS private key", key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::new(ErrorKind::Internal, format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            CliError::new(
                ErrorKind::InvalidArgument,
                format!("the admin TLS certificate and key do not make a usable pair: {e}"),
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side: trust exactly the CA certificates of `ca` (PEM).
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, CliError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(ca, "admin CA file")? {
        roots
            .add(certificate)
            .map_err(|e| invalid("a certificate of the admin CA file is not usable", ca, e))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::new(ErrorKind::Internal, format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
