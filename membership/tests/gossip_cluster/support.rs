//! Shared helpers: node start-up with test timings, and bounded waits.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use membership::{
    ClusterKey, EncryptedUdpTransport, FactKey, FailureDetectorSettings, Generation, Keyring,
    Membership, MembershipConfig, NodeFacts, NodeRole, SharedKeyring, encrypted_udp,
};
use tokio::time::Instant;

/// Gossip round for tests: ten times chitchat's default speed so failure
/// detection takes about a second instead of tens of seconds.
pub const TEST_GOSSIP_INTERVAL_MS: u64 = 100;
/// The production default threshold; only the round is shortened.
pub const TEST_PHI_THRESHOLD: f64 = 8.0;
/// Long enough that a dead node is still listed when the test looks.
pub const TEST_DEAD_NODE_GRACE_PERIOD_MS: u64 = 60_000;
/// Upper bound for any convergence in these tests; generous because the
/// machine is shared with other builds.
pub const CONVERGENCE_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a stopped node to be declared dead with the settings above.
pub const FAILURE_DETECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two checks of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

pub const CLUSTER_ID: &str = "test-cluster";

pub fn loopback_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn key(byte: u8) -> ClusterKey {
    ClusterKey::from_bytes([byte; 32])
}

pub fn keyring(primary: u8, secondary: &[u8]) -> SharedKeyring {
    let secondary = secondary.iter().map(|byte| key(*byte)).collect();
    SharedKeyring::new(Keyring::new(key(primary), secondary).expect("valid keyring"))
}

pub fn test_config(
    name: &str,
    generation: Generation,
    listen_addr: SocketAddr,
    seed_addrs: &[SocketAddr],
) -> MembershipConfig {
    let mut config = MembershipConfig::new(name, CLUSTER_ID, listen_addr, generation);
    config.seed_addrs = seed_addrs.to_vec();
    config.gossip_interval_ms = TEST_GOSSIP_INTERVAL_MS;
    config.failure_detector = FailureDetectorSettings {
        phi_threshold: TEST_PHI_THRESHOLD,
        dead_node_grace_period_ms: TEST_DEAD_NODE_GRACE_PERIOD_MS,
    };
    config
}

pub fn initial_facts() -> NodeFacts {
    NodeFacts {
        role: Some(NodeRole::Voter),
        applied_index: Some(0),
        ..NodeFacts::default()
    }
}

/// A node on the encrypted transport, with the transport kept for its stats.
pub struct TestNode {
    pub membership: Membership,
    pub transport: EncryptedUdpTransport,
}

impl TestNode {
    pub fn addr(&self) -> SocketAddr {
        self.membership.gossip_advertise_addr()
    }
}

pub async fn start_node(config: MembershipConfig, keyring: SharedKeyring) -> TestNode {
    let transport = encrypted_udp(keyring);
    let membership = Membership::start(config, &initial_facts(), &transport)
        .await
        .expect("membership starts");
    TestNode {
        membership,
        transport,
    }
}

/// Starts `names.len()` nodes sharing `keyrings[i]`; all but the first seed
/// from the first.
pub async fn start_cluster(names: &[&str], keyrings: &[SharedKeyring]) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for (name, keyring) in names.iter().zip(keyrings) {
        let seeds: Vec<SocketAddr> = nodes.first().map(TestNode::addr).into_iter().collect();
        let config = test_config(name, Generation::new(1), loopback_any_port(), &seeds);
        nodes.push(start_node(config, keyring.clone()).await);
    }
    nodes
}

pub async fn live_names(membership: &Membership) -> BTreeSet<String> {
    membership
        .live_members()
        .await
        .into_iter()
        .map(|member| member.node_id.name)
        .collect()
}

pub fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

/// True when every node sees exactly `expected` as live.
pub async fn all_see_live(nodes: &[&Membership], expected: &BTreeSet<String>) -> bool {
    for membership in nodes {
        if live_names(membership).await != *expected {
            return false;
        }
    }
    true
}

/// Polls `condition` until it holds; panics after `timeout`. Returns how
/// long it took, for the timing notes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            let elapsed = started.elapsed();
            eprintln!("timing: {what}: {elapsed:?}");
            return elapsed;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Every node publishes `applied_index = base + position` and waits until
/// every node sees every other node's new value: proof that gossip traffic
/// (not just stale liveness) flows between all pairs right now.
pub async fn fact_round(nodes: &[&Membership], base: u64, what: &str) -> Duration {
    for (position, membership) in nodes.iter().enumerate() {
        let value = (base + position as u64).to_string();
        membership
            .set_fact(FactKey::AppliedIndex, &value)
            .await
            .expect("valid fact");
    }
    let expected: Vec<(String, u64)> = nodes
        .iter()
        .enumerate()
        .map(|(position, membership)| {
            (
                membership.self_node_id().name.clone(),
                base + position as u64,
            )
        })
        .collect();
    wait_until(what, CONVERGENCE_TIMEOUT, || {
        let expected = expected.clone();
        async move {
            for observer in nodes {
                let members = observer.live_members().await;
                for (name, index) in &expected {
                    let seen = members
                        .iter()
                        .find(|member| &member.node_id.name == name)
                        .and_then(|member| member.facts.applied_index);
                    if seen != Some(*index) {
                        return false;
                    }
                }
            }
            true
        }
    })
    .await
}

pub async fn shutdown_all(nodes: Vec<TestNode>) {
    for node in nodes {
        node.membership.shutdown().await.expect("clean shutdown");
    }
}
