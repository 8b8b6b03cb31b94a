//! A stopped node is detected dead; a restart with a new generation rejoins.

use membership::{Generation, Membership};

use crate::support::{
    CONVERGENCE_TIMEOUT, FAILURE_DETECTION_TIMEOUT, all_see_live, keyring, live_names, names,
    shutdown_all, start_cluster, start_node, test_config, wait_until,
};

async fn sees_dead(membership: &Membership, name: &str, generation: Generation) -> bool {
    let dead = membership.dead_members().await;
    let is_dead = dead
        .iter()
        .any(|member| member.node_id.name == name && member.node_id.generation == generation);
    is_dead && !live_names(membership).await.contains(name)
}

async fn sees_live_generation(membership: &Membership, name: &str, generation: Generation) -> bool {
    let live = membership.live_members().await;
    live.iter()
        .any(|member| member.node_id.name == name && member.node_id.generation == generation)
}

/// Proves a stopped node is declared dead by the others within
/// FAILURE_DETECTION_TIMEOUT, and that restarting it on the same address
/// with the next persisted generation makes it live again everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_node_is_dead_then_restart_with_new_generation_is_live() {
    let state_dir = tempfile::tempdir().expect("tempdir");
    let shared = keyring(1, &[]);
    let mut nodes = start_cluster(&["f1", "f2"], &[shared.clone(), shared.clone()]).await;
    let first_generation = Generation::next_persisted(state_dir.path()).expect("generation");
    let seeds = [nodes[0].addr()];
    let f3_config = |generation, listen| test_config("f3", generation, listen, &seeds);
    let f3 = start_node(
        f3_config(first_generation, crate::support::loopback_any_port()),
        shared.clone(),
    )
    .await;
    let f3_addr = f3.addr();
    nodes.push(f3);
    let everyone = names(&["f1", "f2", "f3"]);
    {
        let memberships: Vec<&Membership> = nodes.iter().map(|node| &node.membership).collect();
        wait_until("3 nodes see 3 live", CONVERGENCE_TIMEOUT, || {
            all_see_live(&memberships, &everyone)
        })
        .await;
    }

    let stopped = nodes.pop().expect("f3");
    stopped.membership.shutdown().await.expect("shutdown");
    let survivors = [&nodes[0].membership, &nodes[1].membership];
    wait_until(
        "f3 declared dead by f1 and f2",
        FAILURE_DETECTION_TIMEOUT,
        || async {
            sees_dead(survivors[0], "f3", first_generation).await
                && sees_dead(survivors[1], "f3", first_generation).await
        },
    )
    .await;

    let second_generation = Generation::next_persisted(state_dir.path()).expect("generation");
    assert!(second_generation > first_generation);
    let restarted = start_node(f3_config(second_generation, f3_addr), shared).await;
    assert_eq!(restarted.addr(), f3_addr);
    wait_until(
        "restarted f3 (new generation) live everywhere",
        CONVERGENCE_TIMEOUT,
        || async {
            sees_live_generation(survivors[0], "f3", second_generation).await
                && sees_live_generation(survivors[1], "f3", second_generation).await
                && live_names(&restarted.membership).await == everyone
        },
    )
    .await;
    restarted.membership.shutdown().await.expect("shutdown");
    shutdown_all(nodes).await;
}
