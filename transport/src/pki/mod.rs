//! Cluster PKI: one self-signed CA per cluster, one leaf certificate per node.
//!
//! Every node certificate is valid for both TLS server and client authentication and
//! carries two DNS SANs: the node's own name and the fixed [`CLUSTER_SAN`]. Clients
//! verify any peer against [`CLUSTER_SAN`], so a peer's address is all a caller needs;
//! servers read the node name from the client certificate to identify the caller.

mod cluster_ca;
mod error;
mod files;
mod node_identity;
mod node_name;
mod peer_name;

pub use cluster_ca::{CaPem, ClusterCa};
pub use error::PkiError;
pub use node_identity::NodeIdentity;
pub use node_name::{NODE_NAME_BYTES_MAX, NameError, NodeName};
pub use peer_name::node_name_from_certificate;

/// DNS SAN present in every node certificate, and the server name every client
/// verifies. One fixed name lets a node dial a peer knowing only its address.
pub const CLUSTER_SAN: &str = "greentic-node";

/// How long the cluster CA is valid. Ten years: re-keying a CA means re-issuing every
/// node certificate, so it should outlive any realistic cluster.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// How long a node certificate is valid. Two years bounds the damage of a leaked node
/// key while staying far from routine operations; re-issue with
/// [`ClusterCa::issue_node_cert`] before it runs out.
pub const NODE_CERT_VALIDITY_DAYS: i64 = 730;

/// Certificates start being valid this long before they are issued, so that a node
/// whose clock is slightly behind the issuer's still accepts a fresh certificate.
pub const CLOCK_SKEW_ALLOWANCE_HOURS: i64 = 1;

/// File names inside an identity or CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file; written with mode 0600.
pub const CA_KEY_FILE: &str = "ca.key";
/// Node certificate file.
pub const NODE_CERT_FILE: &str = "node.pem";
/// Node private key file; written with mode 0600.
pub const NODE_KEY_FILE: &str = "node.key";
