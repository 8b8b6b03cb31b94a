//! Key rotation (add, switch primary, remove) never splits the cluster.

use membership::{Keyring, Membership};

use crate::support::{
    CONVERGENCE_TIMEOUT, TestNode, all_see_live, fact_round, key, keyring, names, shutdown_all,
    start_cluster, wait_until,
};

const KEY_A: u8 = 0xA;
const KEY_B: u8 = 0xB;

async fn assert_converged(nodes: &[TestNode], memberships: &[&Membership], step: &str) {
    let everyone = names(&["r1", "r2", "r3"]);
    assert!(
        all_see_live(memberships, &everyone).await,
        "split after {step}"
    );
    let rejected: u64 = nodes
        .iter()
        .map(|node| node.transport.stats().packets_rejected_total())
        .sum();
    assert_eq!(rejected, 0, "datagrams rejected by {step}");
}

/// Proves membership and fact gossip stay converged, with zero rejected
/// datagrams, through every step of a rotation from key A to key B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_keeps_membership_converged() {
    let rings = [
        keyring(KEY_A, &[]),
        keyring(KEY_A, &[KEY_B]),
        keyring(KEY_A, &[KEY_B]),
    ];
    let nodes = start_cluster(&["r1", "r2", "r3"], &rings).await;
    let memberships: Vec<&Membership> = nodes.iter().map(|node| &node.membership).collect();
    let everyone = names(&["r1", "r2", "r3"]);
    wait_until("rotation cluster converges", CONVERGENCE_TIMEOUT, || {
        all_see_live(&memberships, &everyone)
    })
    .await;
    fact_round(&memberships, 10, "facts with {A} and {A,B}").await;
    assert_converged(&nodes, &memberships, "start").await;

    let ring_of = |node: &TestNode| node.transport.keyring().clone();
    let step1 = ring_of(&nodes[0])
        .load()
        .with_added(key(KEY_B))
        .expect("fits");
    ring_of(&nodes[0]).store(step1);
    fact_round(&memberships, 20, "facts after adding B to r1").await;
    assert_converged(&nodes, &memberships, "add B").await;

    for (position, node) in nodes.iter().enumerate() {
        let switched = ring_of(node).load().with_primary(key(KEY_B)).expect("fits");
        ring_of(node).store(switched);
        let what = format!("facts after r{} switched primary to B", position + 1);
        fact_round(&memberships, 30 + 10 * position as u64, &what).await;
        assert_converged(&nodes, &memberships, &what).await;
    }
    let opened_with_secondary: u64 = nodes
        .iter()
        .map(|node| node.transport.stats().packets_opened_with_secondary_key())
        .sum();
    assert!(
        opened_with_secondary > 0,
        "mixed primaries never used a secondary key"
    );

    for node in &nodes {
        let removed = ring_of(node).load().without_secondary(&key(KEY_A));
        assert_eq!(removed, Keyring::single(key(KEY_B)));
        ring_of(node).store(removed);
    }
    fact_round(&memberships, 90, "facts after removing A").await;
    assert_converged(&nodes, &memberships, "remove A").await;
    shutdown_all(nodes).await;
}
