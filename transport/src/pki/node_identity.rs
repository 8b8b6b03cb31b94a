//! A node's certificate, key and the CA it trusts.

use std::fmt;
use std::path::Path;

use rcgen::{KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::files::{
    PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, ensure_dir, read_private, read_public, write_atomically,
};
use super::{
    CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE, NodeName, PkiError, node_name_from_certificate,
};

/// Everything a node needs to join the cluster's mutual-TLS mesh.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node's leaf certificate, signed by the cluster CA.
    pub cert_pem: String,
    /// The node's private key (PKCS#8).
    pub key_pem: String,
    /// The cluster CA certificate: the only root this node trusts.
    pub ca_cert_pem: String,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("NodeIdentity")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("ca_cert_pem", &self.ca_cert_pem)
            .finish()
    }
}

impl NodeIdentity {
    /// The node name the certificate was issued for.
    pub fn node_name(&self) -> Result<NodeName, PkiError> {
        let der = parse_certificate_pem(&self.cert_pem, "node")?;
        node_name_from_certificate(&der)
    }

    /// Checks that all three PEM blocks parse, that the key belongs to the certificate
    /// and that the certificate names a node; returns that name.
    pub fn validate(&self) -> Result<NodeName, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|error| PkiError::InvalidKey {
            what: "node",
            reason: error.to_string(),
        })?;
        let der = parse_certificate_pem(&self.cert_pem, "node")?;
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).map_err(|error| {
            PkiError::InvalidCertificate {
                what: "node",
                reason: error.to_string(),
            }
        })?;
        if certificate.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch { what: "node" });
        }
        parse_certificate_pem(&self.ca_cert_pem, "CA")?;
        node_name_from_certificate(&der)
    }

    /// Writes `node.pem` (0644), `node.key` (0600) and `ca.pem` (0644) into `dir`,
    /// creating it with mode 0700.
    ///
    /// Existing files are replaced atomically, so re-issuing a node certificate is a
    /// plain write.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        write_atomically(
            &dir.join(NODE_KEY_FILE),
            self.key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        write_atomically(
            &dir.join(NODE_CERT_FILE),
            self.cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        write_atomically(
            &dir.join(CA_CERT_FILE),
            self.ca_cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )
    }

    /// Loads and validates an identity written by [`NodeIdentity::write_to_dir`].
    pub fn load_from_dir(dir: &Path) -> Result<NodeIdentity, PkiError> {
        let cert_path = dir.join(NODE_CERT_FILE);
        let key_path = dir.join(NODE_KEY_FILE);
        let ca_path = dir.join(CA_CERT_FILE);
        let identity = NodeIdentity {
            cert_pem: read_public(&cert_path)?,
            key_pem: read_private(&key_path)?,
            ca_cert_pem: read_public(&ca_path)?,
        };
        identity.validate().map_err(|error| match error {
            PkiError::InvalidKey { .. } | PkiError::KeyMismatch { .. } => error.in_file(key_path),
            PkiError::InvalidCertificate { what: "CA", .. } => error.in_file(ca_path),
            _ => error.in_file(cert_path),
        })?;
        Ok(identity)
    }

    /// The node certificate as DER, for rustls.
    pub(crate) fn certificate_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        parse_certificate_pem(&self.cert_pem, "node")
    }

    /// The CA certificate as DER, for the rustls root store.
    pub(crate) fn ca_certificate_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        parse_certificate_pem(&self.ca_cert_pem, "CA")
    }

    /// The private key as DER, for rustls.
    pub(crate) fn private_key_der(&self) -> Result<PrivateKeyDer<'static>, PkiError> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|error| {
            PkiError::InvalidKey {
                what: "node",
                reason: error.to_string(),
            }
        })
    }
}

/// Decodes the first certificate of a PEM text.
pub(crate) fn parse_certificate_pem(
    pem: &str,
    what: &'static str,
) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|error| PkiError::InvalidCertificate {
        what,
        reason: error.to_string(),
    })
}
