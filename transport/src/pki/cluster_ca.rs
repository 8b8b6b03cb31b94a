//! The cluster certificate authority.

use std::fmt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData,
};
use time::{Duration, OffsetDateTime};

use super::files::{
    PRIVATE_FILE_MODE, PUBLIC_FILE_MODE, ensure_dir, read_private, read_public, write_atomically,
};
use super::node_name::validate_label;
use super::{
    CA_CERT_FILE, CA_KEY_FILE, CA_VALIDITY_DAYS, CLOCK_SKEW_ALLOWANCE_HOURS, CLUSTER_SAN,
    NODE_CERT_VALIDITY_DAYS, NodeIdentity, NodeName, PkiError,
};

/// The CA certificate and its private key, as PEM text.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// The self-signed CA certificate.
    pub cert_pem: String,
    /// The CA private key (PKCS#8). Whoever holds it can mint node identities.
    pub key_pem: String,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster's self-signed certificate authority (ECDSA P-256).
///
/// It signs node certificates; servers and clients trust only this CA, so holding its
/// key is what makes a process a cluster member.
pub struct ClusterCa {
    pem: CaPem,
    /// Signing state parsed from the certificate, kept so issuing needs no re-parse.
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ClusterCa")
            .field("pem", &self.pem)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a new CA for the cluster called `cluster_name` (DNS-label rules).
    pub fn create(cluster_name: &str) -> Result<ClusterCa, PkiError> {
        validate_label(cluster_name).map_err(|source| PkiError::InvalidClusterName {
            name: cluster_name.to_string(),
            source,
        })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(
            DnType::CommonName,
            format!("greentic cluster CA {cluster_name}"),
        );
        subject.push(
            DnType::OrganizationName,
            format!("greentic cluster {cluster_name}"),
        );
        params.distinguished_name = subject;
        // Path length 0: the CA signs node certificates only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(CA_VALIDITY_DAYS);
        let certificate = params.self_signed(&key).map_err(PkiError::Generate)?;
        let pem = CaPem {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        };
        Ok(ClusterCa {
            pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// Rebuilds a CA from its PEM certificate and key, checking that the key belongs
    /// to the certificate and that the certificate is a CA.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, PkiError> {
        let key = KeyPair::from_pem(key_pem).map_err(|error| PkiError::InvalidKey {
            what: "CA",
            reason: error.to_string(),
        })?;
        let certificate_der = super::node_identity::parse_certificate_pem(cert_pem, "CA")?;
        let (_, certificate) =
            x509_parser::parse_x509_certificate(&certificate_der).map_err(|error| {
                PkiError::InvalidCertificate {
                    what: "CA",
                    reason: error.to_string(),
                }
            })?;
        if !certificate.is_ca() {
            return Err(PkiError::NotACertificateAuthority);
        }
        if certificate.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(PkiError::KeyMismatch { what: "CA" });
        }
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).map_err(|error| {
            PkiError::InvalidCertificate {
                what: "CA",
                reason: error.to_string(),
            }
        })?;
        Ok(ClusterCa {
            pem: CaPem {
                cert_pem: cert_pem.to_string(),
                key_pem: key_pem.to_string(),
            },
            issuer,
        })
    }

    /// The certificate and key as PEM text.
    pub fn to_pem(&self) -> CaPem {
        self.pem.clone()
    }

    /// The CA certificate as PEM text; this is what every node trusts.
    pub fn cert_pem(&self) -> &str {
        &self.pem.cert_pem
    }

    /// Writes `ca.pem` (0644) and `ca.key` (0600) into `dir`, creating it with mode 0700.
    ///
    /// Refuses to overwrite an existing `ca.key`: replacing the CA silently invalidates
    /// every node certificate in the cluster.
    pub fn write_to_dir(&self, dir: &Path) -> Result<(), PkiError> {
        ensure_dir(dir)?;
        let key_path = dir.join(CA_KEY_FILE);
        if key_path.exists() {
            return Err(PkiError::AlreadyExists { path: key_path });
        }
        write_atomically(&key_path, self.pem.key_pem.as_bytes(), PRIVATE_FILE_MODE)?;
        write_atomically(
            &dir.join(CA_CERT_FILE),
            self.pem.cert_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )
    }

    /// Loads a CA written by [`ClusterCa::write_to_dir`].
    pub fn load_from_dir(dir: &Path) -> Result<ClusterCa, PkiError> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert_pem = read_public(&cert_path)?;
        let key_pem = read_private(&key_path)?;
        ClusterCa::from_pem(&cert_pem, &key_pem).map_err(|error| match error {
            PkiError::InvalidKey { .. } | PkiError::KeyMismatch { .. } => error.in_file(key_path),
            _ => error.in_file(cert_path),
        })
    }

    /// Issues a certificate for `node_name`, valid for TLS server and client auth,
    /// with DNS SANs `node_name` and [`CLUSTER_SAN`].
    pub fn issue_node_cert(&self, node_name: &str) -> Result<NodeIdentity, PkiError> {
        let name = NodeName::new(node_name).map_err(|source| PkiError::InvalidNodeName {
            name: node_name.to_string(),
            source,
        })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let mut params = CertificateParams::new(vec![name.to_string(), CLUSTER_SAN.to_string()])
            .map_err(PkiError::Generate)?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, name.as_str());
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(NODE_CERT_VALIDITY_DAYS);
        let certificate = params
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Generate)?;
        Ok(NodeIdentity {
            cert_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
            ca_cert_pem: self.pem.cert_pem.clone(),
        })
    }
}

/// Validity window starting slightly in the past to absorb clock skew.
fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (
        now - Duration::hours(CLOCK_SKEW_ALLOWANCE_HOURS),
        now + Duration::days(days),
    )
}
