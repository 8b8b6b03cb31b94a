//! Reading a node name out of a peer certificate.

use x509_parser::extensions::GeneralName;

use super::{CLUSTER_SAN, NodeName, PkiError};

/// Returns the node name a certificate was issued for.
///
/// The first DNS SAN other than [`CLUSTER_SAN`] that is a valid [`NodeName`] wins;
/// the subject common name is the fallback. Call this only on certificates that TLS
/// has already verified against the cluster CA: the name is trusted because the CA
/// signed it.
pub fn node_name_from_certificate(certificate_der: &[u8]) -> Result<NodeName, PkiError> {
    let (_, certificate) =
        x509_parser::parse_x509_certificate(certificate_der).map_err(|error| {
            PkiError::InvalidCertificate {
                what: "peer",
                reason: error.to_string(),
            }
        })?;
    let from_san = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|extension| {
            extension
                .value
                .general_names
                .iter()
                .find_map(|general_name| match general_name {
                    GeneralName::DNSName(name) if *name != CLUSTER_SAN => NodeName::new(*name).ok(),
                    _ => None,
                })
        });
    if let Some(name) = from_san {
        return Ok(name);
    }
    certificate
        .subject()
        .iter_common_name()
        .find_map(|attribute| {
            attribute
                .as_str()
                .ok()
                .and_then(|cn| NodeName::new(cn).ok())
        })
        .ok_or(PkiError::NoNodeName)
}
