//! Errors of the PKI operations.

use std::path::PathBuf;

use super::node_name::NameError;

/// Why creating, issuing, parsing, storing or loading cluster certificates failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// The cluster name is not a DNS-label-like name.
    #[error("invalid cluster name {name:?}")]
    InvalidClusterName {
        name: String,
        #[source]
        source: NameError,
    },
    /// The node name is not a DNS-label-like name.
    #[error("invalid node name {name:?}")]
    InvalidNodeName {
        name: String,
        #[source]
        source: NameError,
    },
    /// rcgen could not generate a key or sign a certificate.
    #[error("certificate generation failed")]
    Generate(#[source] rcgen::Error),
    /// A private key PEM could not be parsed.
    #[error("cannot parse the {what} private key: {reason}")]
    InvalidKey { what: &'static str, reason: String },
    /// A certificate PEM or DER could not be parsed.
    #[error("cannot parse the {what} certificate: {reason}")]
    InvalidCertificate { what: &'static str, reason: String },
    /// The CA certificate lacks `basicConstraints CA:true`.
    #[error("the CA certificate is not marked as a certificate authority")]
    NotACertificateAuthority,
    /// The private key does not belong to the certificate it was paired with.
    #[error("the {what} private key does not match its certificate")]
    KeyMismatch { what: &'static str },
    /// A certificate carries neither a node-name SAN nor a valid common name.
    #[error("the certificate carries no valid node name")]
    NoNodeName,
    /// A file inside a PKI directory failed validation.
    #[error("invalid content in {path}")]
    InvalidFile {
        path: PathBuf,
        #[source]
        source: Box<PkiError>,
    },
    /// A private key file is readable by group or others.
    #[error("private key {path} has mode {mode:o}; it must not be readable by group or others")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// Refusing to overwrite an existing CA key: every node certificate depends on it.
    #[error("{path} already exists; refusing to overwrite a cluster CA key")]
    AlreadyExists { path: PathBuf },
    /// Creating a directory failed.
    #[error("cannot create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing a file failed.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PkiError {
    /// Attaches the file a validation error came from.
    pub(crate) fn in_file(self, path: PathBuf) -> PkiError {
        PkiError::InvalidFile {
            path,
            source: Box::new(self),
        }
    }
}
