//! Request/response between nodes of one cluster over loopback QUIC.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use transport::{ClusterCa, RpcError, ShutdownOutcome, TransportClient, TransportConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_the_server_sees_the_callers_node_name() {
    let ca = cluster_ca();
    // The client's identity comes from the CA reloaded from PEM: a reloaded CA must
    // issue certificates that chain to the original.
    let pem = ca.to_pem();
    let reloaded = ClusterCa::from_pem(&pem.cert_pem, &pem.key_pem).expect("reload CA");
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let client = TransportClient::bind(loopback(), &identity(&reloaded, "node-b"), test_config())
        .expect("client");

    let echoed: TestResponse = client
        .call(server.local_addr(), &TestRequest::Echo("hello".into()))
        .await
        .expect("echo");
    assert_eq!(echoed, TestResponse::Echo("hello".into()));
    let who: TestResponse = client
        .call(server.local_addr(), &TestRequest::WhoAmI)
        .await
        .expect("who");
    assert_eq!(who, TestResponse::YouAre("node-b".into()));

    assert_eq!(state.invocations(), 2);
    assert_eq!(server.stats().snapshot().requests_inbound, 2);
    assert_eq!(client.stats().snapshot().requests_outbound, 2);
    assert_eq!(
        client.stats().snapshot().connections_established,
        1,
        "connection reused"
    );
    assert_eq!(server.shutdown().await, ShutdownOutcome::Drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_error_reaches_the_caller_as_remote() {
    let ca = cluster_ca();
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        Default::default(),
    );
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let result: Result<TestResponse, _> = client
        .call(
            server.local_addr(),
            &TestRequest::Fail("not the leader".into()),
        )
        .await;
    match result {
        Err(RpcError::Remote { message, .. }) => assert_eq!(message, "not the leader"),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_sized_response_fits_and_one_above_the_limit_is_refused_cleanly() {
    let ca = cluster_ca();
    let limit = 2 * 1024 * 1024;
    let server_config = TransportConfig {
        max_frame_bytes: limit,
        ..test_config()
    };
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        server_config,
        Default::default(),
    );
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");

    let big: TestResponse = client
        .call(server.local_addr(), &TestRequest::Big(limit - 64))
        .await
        .expect("big response");
    assert!(matches!(big, TestResponse::Big(bytes) if bytes.len() == (limit - 64) as usize));

    let too_big: Result<TestResponse, _> = client
        .call(server.local_addr(), &TestRequest::Big(limit + 1))
        .await;
    match too_big {
        Err(RpcError::Remote { message, .. }) => assert!(message.contains("exceeds"), "{message}"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    // The refusal is the server's own; the connection stays usable.
    let again: TestResponse = client
        .call(server.local_addr(), &TestRequest::Echo("still here".into()))
        .await
        .expect("echo after refusal");
    assert_eq!(again, TestResponse::Echo("still here".into()));
    assert_eq!(client.stats().snapshot().connections_established, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eight_mebibyte_response_round_trips_with_the_default_limit() {
    let ca = cluster_ca();
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        Default::default(),
    );
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let len = 8 * 1024 * 1024;
    let response: TestResponse = client
        .call(server.local_addr(), &TestRequest::Big(len))
        .await
        .expect("snapshot-sized response");
    assert!(matches!(response, TestResponse::Big(bytes) if bytes.len() == len as usize));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_all_succeed_over_one_connection() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let client = Arc::new(
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client"),
    );
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..200 {
        let client = client.clone();
        let peer = server.local_addr();
        calls.spawn(async move {
            let text = format!("call {index}");
            let response: TestResponse = client
                .call(peer, &TestRequest::Echo(text.clone()))
                .await
                .expect("concurrent call");
            assert_eq!(response, TestResponse::Echo(text));
        });
    }
    while let Some(joined) = calls.join_next().await {
        joined.expect("call task");
    }
    assert_eq!(state.invocations(), 200);
    assert_eq!(client.stats().snapshot().connections_established, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_after_a_server_restart_reconnects() {
    let ca = cluster_ca();
    let server_identity = identity(&ca, "node-a");
    let server = start_server(
        loopback(),
        &server_identity,
        test_config(),
        Default::default(),
    );
    let addr = server.local_addr();
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let _: TestResponse = client
        .call(addr, &TestRequest::WhoAmI)
        .await
        .expect("before restart");

    assert_eq!(server.shutdown().await, ShutdownOutcome::Drained);
    let restarted = rebind(addr, &server_identity).await;

    let after: TestResponse = client
        .call(addr, &TestRequest::WhoAmI)
        .await
        .expect("after restart");
    assert_eq!(after, TestResponse::YouAre("node-b".into()));
    assert_eq!(client.stats().snapshot().connections_established, 2);
    assert_eq!(restarted.shutdown().await, ShutdownOutcome::Drained);
}

/// The old endpoint releases its UDP port asynchronously; retry the bind for a while.
async fn rebind(
    addr: std::net::SocketAddr,
    server_identity: &transport::NodeIdentity,
) -> transport::TransportServer {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match transport::TransportServer::bind(
            addr,
            server_identity,
            test_config(),
            |_peer: transport::PeerInfo, _request: TestRequest| async {
                Ok::<_, String>(TestResponse::YouAre("node-b".into()))
            },
        ) {
            Ok(server) => return server,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "cannot rebind {addr}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_in_flight_handler_and_delivers_its_response() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let addr = server.local_addr();
    // A short connect timeout keeps the final "nobody answers" check quick.
    let client_config = TransportConfig {
        connect_timeout: Duration::from_millis(500),
        ..test_config()
    };
    let client = Arc::new(
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), client_config).expect("client"),
    );
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, TestResponse>(addr, &TestRequest::WaitForGate)
                .await
        })
    };
    wait_until("the handler runs", || state.invocations() == 1).await;

    let mut shutdown = tokio::spawn(server.shutdown());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut shutdown)
            .await
            .is_err(),
        "shutdown must wait for the handler"
    );
    state.gate.add_permits(1);

    assert_eq!(
        in_flight.await.expect("join").expect("in-flight call"),
        TestResponse::Released
    );
    assert_eq!(shutdown.await.expect("join"), ShutdownOutcome::Drained);
    let refused: Result<TestResponse, _> = client.call(addr, &TestRequest::WhoAmI).await;
    assert!(refused.is_err(), "a stopped server answers nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_a_stuck_handler_after_the_grace_period() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let config = TransportConfig {
        shutdown_grace: Duration::from_millis(200),
        ..test_config()
    };
    let server = start_server(loopback(), &identity(&ca, "node-a"), config, state.clone());
    let addr = server.local_addr();
    let client = Arc::new(
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client"),
    );
    let stuck = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .call::<_, TestResponse>(addr, &TestRequest::WaitForGate)
                .await
        })
    };
    wait_until("the handler runs", || state.invocations() == 1).await;

    let outcome = server.shutdown().await;
    assert!(
        matches!(outcome, ShutdownOutcome::GraceExpired { in_flight_tasks } if in_flight_tasks >= 1),
        "{outcome:?}"
    );
    let result = stuck.await.expect("join");
    assert!(
        matches!(result, Err(RpcError::ConnectionLost { .. })),
        "the caller learns the connection is gone: {result:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_above_the_frame_limit_is_refused_before_sending() {
    let ca = cluster_ca();
    let state = Arc::new(HandlerState::default());
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        test_config(),
        state.clone(),
    );
    let config = TransportConfig {
        max_frame_bytes: transport::rpc::MIN_FRAME_BYTES,
        ..test_config()
    };
    let client =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), config).expect("client");
    let request = TestRequest::Echo("x".repeat(transport::rpc::MIN_FRAME_BYTES as usize));
    let result: Result<TestResponse, _> = client.call(server.local_addr(), &request).await;
    assert!(
        matches!(
            result,
            Err(RpcError::Encode {
                source: transport::WireError::Oversized { .. },
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        client.stats().snapshot().connections_established,
        0,
        "nothing was sent"
    );
    assert_eq!(state.invocations(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_and_counted() {
    let ca = cluster_ca();
    let config = TransportConfig {
        max_connections: 1,
        ..test_config()
    };
    let server = start_server(
        loopback(),
        &identity(&ca, "node-a"),
        config,
        Default::default(),
    );
    let first =
        TransportClient::bind(loopback(), &identity(&ca, "node-b"), test_config()).expect("client");
    let second =
        TransportClient::bind(loopback(), &identity(&ca, "node-c"), test_config()).expect("client");

    let _: TestResponse = first
        .call(server.local_addr(), &TestRequest::WhoAmI)
        .await
        .expect("first");
    let refused: Result<TestResponse, _> =
        second.call(server.local_addr(), &TestRequest::WhoAmI).await;
    assert!(
        matches!(refused, Err(RpcError::Connect { .. })),
        "{refused:?}"
    );
    assert_eq!(server.stats().snapshot().connections_rejected, 1);

    // Closing the first connection frees its slot once the server notices; poll.
    first.close().await;
    let mut admitted = None;
    for _ in 0..50 {
        match second
            .call::<_, TestResponse>(server.local_addr(), &TestRequest::WhoAmI)
            .await
        {
            Ok(response) => {
                admitted = Some(response);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(admitted, Some(TestResponse::YouAre("node-c".into())));
}
