//! Healthy clusters converge on membership and facts.

use chitchat::transport::ChannelTransport;
use membership::{Generation, Membership, NodeRole};

use crate::support::{
    CONVERGENCE_TIMEOUT, all_see_live, fact_round, initial_facts, keyring, live_names,
    loopback_any_port, names, shutdown_all, start_cluster, test_config, wait_until,
};

/// Proves three encrypted nodes with one key all see each other live, see
/// each other's facts after a change, and report it through the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_one_key_converge_and_share_facts() {
    let shared = keyring(1, &[]);
    let nodes = start_cluster(
        &["n1", "n2", "n3"],
        &[shared.clone(), shared.clone(), shared],
    )
    .await;
    let memberships: Vec<&Membership> = nodes.iter().map(|node| &node.membership).collect();
    let everyone = names(&["n1", "n2", "n3"]);

    let mut watch = nodes[0].membership.watch_live_members();
    wait_until("3 nodes see 3 live", CONVERGENCE_TIMEOUT, || {
        all_see_live(&memberships, &everyone)
    })
    .await;
    wait_until("n1 watch shows 3 live", CONVERGENCE_TIMEOUT, || {
        let count = watch.borrow_and_update().len();
        async move { count == 3 }
    })
    .await;

    fact_round(&memberships, 100, "applied_index change seen by all 3").await;
    let members = nodes[1].membership.live_members().await;
    let n3 = members
        .iter()
        .find(|member| member.node_id.name == "n3")
        .expect("n3 is live at n2");
    assert_eq!(n3.facts.role, Some(NodeRole::Voter));
    assert_eq!(n3.node_id.generation, Generation::new(1));
    assert_eq!(n3.gossip_addr, nodes[2].addr());
    assert!(n3.fact_errors.is_empty());
    for node in &nodes {
        assert_eq!(node.transport.stats().packets_rejected_total(), 0);
        assert!(node.transport.stats().packets_opened() > 0);
    }
    shutdown_all(nodes).await;
}

/// Proves `Membership` still runs on chitchat's in-memory transport, which
/// the simulation crate uses.
#[tokio::test]
async fn in_memory_transport_still_works() {
    let transport = ChannelTransport::default();
    let first = Membership::start(
        test_config("mem-1", Generation::new(1), loopback_any_port(), &[]),
        &initial_facts(),
        &transport,
    )
    .await
    .expect("starts");
    let seeds = [first.gossip_advertise_addr()];
    let second = Membership::start(
        test_config("mem-2", Generation::new(1), loopback_any_port(), &seeds),
        &initial_facts(),
        &transport,
    )
    .await
    .expect("starts");
    let both = names(&["mem-1", "mem-2"]);
    wait_until("in-memory pair converges", CONVERGENCE_TIMEOUT, || async {
        live_names(&first).await == both && live_names(&second).await == both
    })
    .await;
    first.shutdown().await.expect("shutdown");
    second.shutdown().await.expect("shutdown");
}
