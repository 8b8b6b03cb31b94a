//! Shared fixtures of the integration tests: a cluster CA, identities, a test
//! protocol and a server running it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use transport::{ClusterCa, NodeIdentity, PeerInfo, TransportConfig, TransportServer};

/// Requests of the test protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TestRequest {
    Echo(String),
    WhoAmI,
    /// Asks for a response carrying this many bytes (a snapshot stand-in).
    Big(u32),
    Fail(String),
    /// Blocks until the test opens the gate.
    WaitForGate,
}

/// Responses of the test protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TestResponse {
    Echo(String),
    YouAre(String),
    Big(Vec<u8>),
    Released,
}

/// What the test handler records and waits on.
pub struct HandlerState {
    pub invocations: AtomicU64,
    pub gate: Semaphore,
}

impl Default for HandlerState {
    fn default() -> Self {
        HandlerState {
            invocations: AtomicU64::new(0),
            gate: Semaphore::new(0),
        }
    }
}

impl HandlerState {
    pub fn invocations(&self) -> u64 {
        self.invocations.load(Ordering::SeqCst)
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn cluster_ca() -> ClusterCa {
    ClusterCa::create("test-cluster").expect("create CA")
}

pub fn identity(ca: &ClusterCa, name: &str) -> NodeIdentity {
    ca.issue_node_cert(name).expect("issue node certificate")
}

/// Defaults with short waits, so failing tests fail fast.
pub fn test_config() -> TransportConfig {
    TransportConfig {
        connect_timeout: Duration::from_secs(3),
        call_timeout: Duration::from_secs(10),
        shutdown_grace: Duration::from_secs(5),
        ..TransportConfig::default()
    }
}

/// Starts a server on `addr` answering the test protocol.
pub fn start_server(
    addr: SocketAddr,
    identity: &NodeIdentity,
    config: TransportConfig,
    state: Arc<HandlerState>,
) -> TransportServer {
    TransportServer::bind(addr, identity, config, move |peer: PeerInfo, request| {
        let state = state.clone();
        async move { handle(&state, peer, request).await }
    })
    .expect("bind server")
}

async fn handle(
    state: &HandlerState,
    peer: PeerInfo,
    request: TestRequest,
) -> Result<TestResponse, String> {
    state.invocations.fetch_add(1, Ordering::SeqCst);
    match request {
        TestRequest::Echo(text) => Ok(TestResponse::Echo(text)),
        TestRequest::WhoAmI => Ok(TestResponse::YouAre(peer.node_name.to_string())),
        TestRequest::Big(len) => Ok(TestResponse::Big(vec![0xA5; len as usize])),
        TestRequest::Fail(message) => Err(message),
        TestRequest::WaitForGate => {
            let permit = state.gate.acquire().await.map_err(|e| e.to_string())?;
            permit.forget();
            Ok(TestResponse::Released)
        }
    }
}

/// Polls `condition` until it holds, failing the test after five seconds.
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
