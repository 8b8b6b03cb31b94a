//! Mutual TLS: only holders of a certificate from the cluster CA get in, on both sides.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use transport::pki::CLUSTER_SAN;
use transport::rpc::{ConnectFailure, quinn_client_config};
use transport::tls::{ALPN_PROTOCOL, crypto_provider};
use transport::wire::{MAX_FRAME_BYTES, encode_frame};
use transport::{ClusterCa, NodeIdentity, RpcError, TransportClient, TransportConfig};

/// A certificate from a foreign CA, paired with trust in the real cluster CA, so that
/// only the server's check of the client certificate can stop the call.
fn foreign_identity_trusting(cluster: &ClusterCa, name: &str) -> NodeIdentity {
    let foreign = ClusterCa::create("other-cluster").expect("foreign CA");
    NodeIdentity {
        ca_cert_pem: cluster.cert_pem().to_string(),
        ..foreign.issue_node_cert(name).expect("foreign certificate")
    }
}

fn short_config() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(3),
        ..test_config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_another_ca_is_refused() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let intruder = foreign_identity_trusting(&ca, "node-x");
    let client = TransportClient::bind(loopback(), &intruder, short_config()).expect("client");

    let result: Result<TestResponse, _> =
        client.call(server.local_addr(), &TestRequest::WhoAmI).await;
    // TLS 1.3 lets the client finish first; the server's alert arrives afterwards and
    // is reported as the handshake failure it is.
    assert!(
        matches!(
            result,
            Err(RpcError::Connect {
                source: ConnectFailure::Handshake(_),
                ..
            })
        ),
        "expected a handshake failure, got {result:?}"
    );
    let stats = server.stats();
    wait_until("the server counts the refusal", || {
        stats.snapshot().connections_rejected >= 1
    })
    .await;
    assert_eq!(state.invocations(), 0, "handler must never run");
    assert_eq!(stats.snapshot().connections_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_certificate_is_refused() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).expect("CA der"))
        .expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    let quic = QuicClientConfig::try_from(Arc::new(tls)).expect("quic config");
    let endpoint = quinn::Endpoint::client(loopback()).expect("endpoint");

    let attempt = async {
        let connection = endpoint
            .connect_with(
                quinn::ClientConfig::new(Arc::new(quic)),
                server.local_addr(),
                CLUSTER_SAN,
            )?
            .await?;
        let (mut send, mut recv) = connection.open_bi().await?;
        let frame = encode_frame(&TestRequest::WhoAmI, MAX_FRAME_BYTES)?;
        send.write_all(&frame).await?;
        send.finish()?;
        let response = recv.read_to_end(1 << 20).await?;
        Ok::<_, Box<dyn std::error::Error>>(response)
    };
    let result = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .expect("bounded");
    assert!(
        result.is_err(),
        "an unauthenticated client must get nothing, got {result:?}"
    );
    let stats = server.stats();
    wait_until("the server counts the refusal", || {
        stats.snapshot().connections_rejected >= 1
    })
    .await;
    assert_eq!(state.invocations(), 0, "handler must never run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_another_ca_is_refused_by_the_client() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let impostor = foreign_identity_trusting(&ca, "node-a");
    let server = start_server(loopback(), &impostor, test_config(), state.clone());
    let client = TransportClient::bind(loopback(), &identity(&ca, "node-b"), short_config())
        .expect("client");

    let result: Result<TestResponse, _> =
        client.call(server.local_addr(), &TestRequest::WhoAmI).await;
    assert!(
        matches!(
            result,
            Err(RpcError::Connect {
                source: ConnectFailure::Handshake(_),
                ..
            })
        ),
        "expected a handshake failure, got {result:?}"
    );
    assert_eq!(client.stats().snapshot().connections_failed, 1);
    assert_eq!(state.invocations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_quinn_configs_from_the_crate_authenticate() {
    let ca = cluster_ca();
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        Default::default(),
    );
    let config = quinn_client_config(&identity(&ca, "node-b"), &test_config()).expect("config");
    let endpoint = quinn::Endpoint::client(loopback()).expect("endpoint");
    let connection = endpoint
        .connect_with(config, server.local_addr(), CLUSTER_SAN)
        .expect("connect")
        .await
        .expect("handshake");
    assert_eq!(
        connection.handshake_data().and_then(|data| data
            .downcast::<quinn::crypto::rustls::HandshakeData>()
            .ok()
            .and_then(|data| data.protocol)),
        Some(ALPN_PROTOCOL.to_vec())
    );
}
