//! Frames the server must refuse: each closes the offending connection with
//! CLOSE_FRAME_REJECTED, is counted, and leaves every other connection serving.

mod common;

use std::sync::Arc;

use common::*;
use transport::pki::CLUSTER_SAN;
use transport::rpc::close_code::CLOSE_FRAME_REJECTED;
use transport::rpc::quinn_client_config;
use transport::wire::{MAX_FRAME_BYTES, WIRE_VERSION, encode_frame};
use transport::{NodeIdentity, TransportClient};

/// One hostile payload, and the reason label the server must close with.
struct Hostile {
    name: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
}

fn frame_with(envelope: &[u8]) -> Vec<u8> {
    let mut frame = u32::try_from(envelope.len())
        .expect("small")
        .to_be_bytes()
        .to_vec();
    frame.extend_from_slice(envelope);
    frame
}

fn hostile_payloads() -> Vec<Hostile> {
    let valid = encode_frame(&TestRequest::WhoAmI, MAX_FRAME_BYTES).expect("encode");
    let mut oversized = (MAX_FRAME_BYTES + 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[WIRE_VERSION; 32]);
    let mut with_trailing_bytes = valid.clone();
    with_trailing_bytes.extend_from_slice(b"extra");
    vec![
        Hostile {
            name: "oversized length",
            bytes: oversized,
            reason: "oversized",
        },
        Hostile {
            name: "length at u32::MAX",
            bytes: vec![0xFF; 8],
            reason: "oversized",
        },
        Hostile {
            name: "garbage payload",
            bytes: frame_with(&[WIRE_VERSION, 0xFF, 0xFF, 0xFF, 0x13, 0x37]),
            reason: "malformed",
        },
        Hostile {
            name: "unknown version",
            bytes: frame_with(&[0x7F, 0, 0, 0]),
            reason: "unknown_version",
        },
        Hostile {
            name: "stream ends mid-frame",
            bytes: frame_with(&[WIRE_VERSION; 100])[..20].to_vec(),
            reason: "truncated",
        },
        Hostile {
            name: "bytes after the frame",
            bytes: with_trailing_bytes,
            reason: "trailing_bytes",
        },
    ]
}

/// Sends `bytes` on a fresh, correctly authenticated connection and returns how the
/// server closed it.
async fn send_raw(
    server: std::net::SocketAddr,
    identity: &NodeIdentity,
    bytes: &[u8],
) -> quinn::ConnectionError {
    let config = quinn_client_config(identity, &test_config()).expect("client config");
    let endpoint = quinn::Endpoint::client(loopback()).expect("endpoint");
    let connection = endpoint
        .connect_with(config, server, CLUSTER_SAN)
        .expect("connect")
        .await
        .expect("authenticated handshake");
    let (mut send, _recv) = connection.open_bi().await.expect("open stream");
    // The server may close the connection before everything is written.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    tokio::time::timeout(std::time::Duration::from_secs(5), connection.closed())
        .await
        .expect("the server must close the connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_frames_close_their_connection_and_others_keep_being_served() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let addr = server.local_addr();
    let attacker = identity(&ca, "node-x");

    // A well-behaved peer connects before the attacks and must survive them.
    let bystander =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let _: TestResponse = bystander
        .call(addr, &TestRequest::WhoAmI)
        .await
        .expect("before");

    for (index, hostile) in hostile_payloads().into_iter().enumerate() {
        let closed = send_raw(addr, &attacker, &hostile.bytes).await;
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(close.error_code, CLOSE_FRAME_REJECTED, "{}", hostile.name);
                assert_eq!(
                    &close.reason[..],
                    hostile.reason.as_bytes(),
                    "{}",
                    hostile.name
                );
            }
            other => panic!(
                "{}: expected an application close, got {other:?}",
                hostile.name
            ),
        }
        assert_eq!(
            server.stats().snapshot().frames_rejected,
            index as u64 + 1,
            "{} must be counted once",
            hostile.name
        );
    }

    let after: TestResponse = bystander
        .call(addr, &TestRequest::WhoAmI)
        .await
        .expect("after");
    assert_eq!(after, TestResponse::YouAre("node-b".into()));
    assert_eq!(
        bystander.stats().snapshot().connections_established,
        1,
        "the bystander's connection was never disturbed"
    );
    let newcomer =
        TransportClient::bind(loopback(), &identity(&ca, "node-c"), test_config()).expect("client");
    let _: TestResponse = newcomer
        .call(addr, &TestRequest::WhoAmI)
        .await
        .expect("new connection");
    // Only the bystander's and the newcomer's requests reached the handler.
    assert_eq!(state.invocations(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_response_closes_the_connection_on_the_client_side() {
    let ca = cluster_ca();
    // A "server" speaking a different response type: the client cannot decode it.
    let server = transport::TransportServer::bind(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        |_peer: transport::PeerInfo, _request: TestRequest| async {
            Ok::<_, String>(vec![u64::MAX; 4])
        },
    )
    .expect("server");
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let result: Result<TestResponse, _> =
        client.call(server.local_addr(), &TestRequest::WhoAmI).await;
    assert!(
        matches!(result, Err(transport::RpcError::Decode { .. })),
        "expected a decode error, got {result:?}"
    );
    assert_eq!(client.stats().snapshot().frames_rejected, 1);
}
