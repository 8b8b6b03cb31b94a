//! Nodes without the cluster key never join.

use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::UdpTransport;
use chitchat::{
    ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
};
use membership::{Generation, Membership, RejectReason};

use crate::support::{
    CLUSTER_ID, CONVERGENCE_TIMEOUT, TestNode, all_see_live, keyring, live_names,
    loopback_any_port, names, shutdown_all, start_cluster, start_node, test_config, wait_until,
};

/// Datagrams from the intruder each legitimate node must have dropped
/// before the test concludes; several gossip rounds' worth.
const INTRUDER_DATAGRAMS_REJECTED: u64 = 10;

async fn assert_never_seen(memberships: &[&Membership], intruder: &str) {
    for membership in memberships {
        assert!(
            !live_names(membership).await.contains(intruder),
            "{intruder} seen live"
        );
        let dead = membership.dead_members().await;
        assert!(
            dead.iter().all(|member| member.node_id.name != intruder),
            "{intruder} known"
        );
    }
}

/// Proves a node sealing with a different key is never seen (live or dead)
/// by the cluster, and that its datagrams are counted as rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_other_key_is_never_seen() {
    let shared = keyring(1, &[]);
    let nodes = start_cluster(&["k1", "k2"], &[shared.clone(), shared]).await;
    let seeds: Vec<SocketAddr> = nodes.iter().map(TestNode::addr).collect();
    let intruder_config = test_config("intruder", Generation::new(1), loopback_any_port(), &seeds);
    let intruder = start_node(intruder_config, keyring(2, &[])).await;
    let memberships = [&nodes[0].membership, &nodes[1].membership];
    let pair = names(&["k1", "k2"]);

    wait_until(
        "pair converged and intruder rejected",
        CONVERGENCE_TIMEOUT,
        || async {
            assert_never_seen(&memberships, "intruder").await;
            let rejected = |node: &TestNode| {
                node.transport
                    .stats()
                    .packets_rejected(RejectReason::AuthenticationFailed)
            };
            all_see_live(&memberships, &pair).await
                && nodes
                    .iter()
                    .all(|node| rejected(node) >= INTRUDER_DATAGRAMS_REJECTED)
        },
    )
    .await;
    assert_never_seen(&memberships, "intruder").await;
    assert_eq!(live_names(&intruder.membership).await, names(&["intruder"]));
    intruder.membership.shutdown().await.expect("shutdown");
    shutdown_all(nodes).await;
}

/// Proves a plain chitchat node (unencrypted UdpTransport) is ignored by
/// the cluster and sees no one itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_chitchat_node_is_ignored() {
    let shared = keyring(1, &[]);
    let nodes = start_cluster(&["p1", "p2"], &[shared.clone(), shared]).await;
    let plain_addr = reserve_udp_port();
    let plain_config = ChitchatConfig {
        chitchat_id: ChitchatId::new("plain".to_owned(), 1, plain_addr),
        cluster_id: CLUSTER_ID.to_owned(),
        gossip_interval: Duration::from_millis(100),
        listen_addr: plain_addr,
        seed_nodes: nodes.iter().map(|node| node.addr().to_string()).collect(),
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(3_600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V0,
    };
    let plain = spawn_chitchat(plain_config, Vec::new(), &UdpTransport)
        .await
        .expect("plain chitchat starts");
    let memberships = [&nodes[0].membership, &nodes[1].membership];
    let pair = names(&["p1", "p2"]);

    wait_until(
        "pair converged and plaintext rejected",
        CONVERGENCE_TIMEOUT,
        || async {
            assert_never_seen(&memberships, "plain").await;
            let rejected = |node: &TestNode| {
                node.transport
                    .stats()
                    .packets_rejected(RejectReason::UnknownVersion)
            };
            all_see_live(&memberships, &pair).await
                && nodes
                    .iter()
                    .all(|node| rejected(node) >= INTRUDER_DATAGRAMS_REJECTED)
        },
    )
    .await;
    assert_never_seen(&memberships, "plain").await;
    let plain_sees = plain
        .with_chitchat(|chitchat| chitchat.live_nodes().count())
        .await;
    assert_eq!(
        plain_sees, 1,
        "the plaintext node learned of encrypted peers"
    );
    plain.shutdown().await.expect("shutdown");
    shutdown_all(nodes).await;
}

/// chitchat's plain UdpTransport needs its advertised port before binding;
/// borrow a free one from the OS. The tiny race with other binders is
/// acceptable for a test that only needs some free loopback port.
fn reserve_udp_port() -> SocketAddr {
    let socket = std::net::UdpSocket::bind(loopback_any_port()).expect("bind");
    socket.local_addr().expect("addr")
}
