//! The cluster PKI: names, PEM round trips, files and their permissions.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use transport::pki::{CLUSTER_SAN, NameError, node_name_from_certificate};
use transport::{ClusterCa, NodeIdentity, PkiError};
use x509_parser::extensions::GeneralName;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

fn certificate_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("certificate PEM")
        .to_vec()
}

#[test]
fn node_certificates_carry_the_node_name_and_the_cluster_san() {
    let ca = ClusterCa::create("prod").expect("CA");
    let identity = ca.issue_node_cert("node-1").expect("issue");
    assert_eq!(identity.node_name().expect("name").as_str(), "node-1");
    assert_eq!(identity.validate().expect("valid").as_str(), "node-1");
    assert_eq!(identity.ca_cert_pem, ca.cert_pem());

    let der = certificate_der(&identity.cert_pem);
    let (_, certificate) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let sans: Vec<String> = certificate
        .subject_alternative_name()
        .expect("SAN extension")
        .expect("SAN present")
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(sans, vec!["node-1".to_string(), CLUSTER_SAN.to_string()]);
    assert!(!certificate.is_ca());
    let usage = certificate
        .extended_key_usage()
        .expect("EKU")
        .expect("present")
        .value;
    assert!(usage.server_auth && usage.client_auth);
    assert_eq!(
        node_name_from_certificate(&der).expect("name").as_str(),
        "node-1"
    );
}

#[test]
fn invalid_names_are_typed_errors() {
    let ca = ClusterCa::create("prod").expect("CA");
    for (name, expected) in [
        ("", NameError::Empty),
        (
            "Node-1",
            NameError::InvalidCharacter {
                character: 'N',
                index: 0,
            },
        ),
        (
            "node_1",
            NameError::InvalidCharacter {
                character: '_',
                index: 4,
            },
        ),
        ("-node", NameError::HyphenAtEdge),
        (CLUSTER_SAN, NameError::Reserved),
    ] {
        match ca.issue_node_cert(name) {
            Err(PkiError::InvalidNodeName { name: got, source }) => {
                assert_eq!(got, name);
                assert_eq!(source, expected);
            }
            other => panic!("{name:?}: expected InvalidNodeName, got {other:?}"),
        }
    }
    assert!(matches!(
        ca.issue_node_cert(&"n".repeat(64)),
        Err(PkiError::InvalidNodeName {
            source: NameError::TooLong { len: 64, max: 63 },
            ..
        })
    ));
    assert!(matches!(
        ClusterCa::create("Prod Cluster"),
        Err(PkiError::InvalidClusterName { .. })
    ));
}

#[test]
fn the_ca_round_trips_through_pem_and_disk_with_a_private_key_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    let ca = ClusterCa::create("prod").expect("CA");
    ca.write_to_dir(&ca_dir).expect("write");
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&ca_dir.join("ca.pem")), 0o644);
    assert_eq!(mode(&ca_dir), 0o700);

    let loaded = ClusterCa::load_from_dir(&ca_dir).expect("load");
    assert_eq!(loaded.to_pem(), ca.to_pem());
    let pem = ca.to_pem();
    let from_pem = ClusterCa::from_pem(&pem.cert_pem, &pem.key_pem).expect("from pem");
    assert_eq!(from_pem.cert_pem(), ca.cert_pem());
    let issued = loaded
        .issue_node_cert("node-2")
        .expect("issue from loaded CA");
    assert_eq!(issued.validate().expect("valid").as_str(), "node-2");

    assert!(matches!(
        ca.write_to_dir(&ca_dir),
        Err(PkiError::AlreadyExists { path }) if path == ca_dir.join("ca.key")
    ));
}

#[test]
fn a_key_from_another_ca_is_a_mismatch() {
    let one = ClusterCa::create("one").expect("CA");
    let two = ClusterCa::create("two").expect("CA");
    assert!(matches!(
        ClusterCa::from_pem(one.cert_pem(), &two.to_pem().key_pem),
        Err(PkiError::KeyMismatch { what: "CA" })
    ));
    let leaf = one.issue_node_cert("node-1").expect("issue");
    assert!(matches!(
        ClusterCa::from_pem(&leaf.cert_pem, &leaf.key_pem),
        Err(PkiError::NotACertificateAuthority)
    ));
    let swapped = NodeIdentity {
        key_pem: two.issue_node_cert("node-1").expect("issue").key_pem,
        ..leaf
    };
    assert!(matches!(
        swapped.validate(),
        Err(PkiError::KeyMismatch { what: "node" })
    ));
}

#[test]
fn node_identities_round_trip_through_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node_dir = dir.path().join("identity");
    let ca = ClusterCa::create("prod").expect("CA");
    let identity = ca.issue_node_cert("node-3").expect("issue");
    identity.write_to_dir(&node_dir).expect("write");
    assert_eq!(mode(&node_dir.join("node.key")), 0o600);
    assert_eq!(mode(&node_dir.join("node.pem")), 0o644);
    assert_eq!(mode(&node_dir.join("ca.pem")), 0o644);
    assert_eq!(
        NodeIdentity::load_from_dir(&node_dir).expect("load"),
        identity
    );

    // Re-issuing replaces the files in place.
    let reissued = ca.issue_node_cert("node-3").expect("reissue");
    reissued.write_to_dir(&node_dir).expect("rewrite");
    assert_eq!(
        NodeIdentity::load_from_dir(&node_dir).expect("reload"),
        reissued
    );
    assert_eq!(mode(&node_dir.join("node.key")), 0o600);
}

#[test]
fn loading_refuses_readable_keys_and_names_the_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ClusterCa::create("prod").expect("CA");
    let identity = ca.issue_node_cert("node-4").expect("issue");
    identity.write_to_dir(dir.path()).expect("write");
    let key_path = dir.path().join("node.key");

    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        NodeIdentity::load_from_dir(dir.path()),
        Err(PkiError::InsecurePermissions { path, mode: 0o644 }) if path == key_path
    ));

    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::write(dir.path().join("node.pem"), "not a certificate").expect("corrupt");
    assert!(matches!(
        NodeIdentity::load_from_dir(dir.path()),
        Err(PkiError::InvalidFile { path, .. }) if path == dir.path().join("node.pem")
    ));

    fs::remove_file(dir.path().join("ca.pem")).expect("remove");
    assert!(matches!(
        NodeIdentity::load_from_dir(dir.path()),
        Err(PkiError::Read { path, .. }) if path == dir.path().join("ca.pem")
    ));
}
