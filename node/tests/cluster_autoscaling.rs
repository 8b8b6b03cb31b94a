//! Request-driven autoscaling on a three-member loopback cluster with
//! gossip: the leader's autoscaler starts an instance for requests another
//! member's router holds, and a member that dies while holding requests
//! leaves nothing stuck behind it.

#[allow(clippy::duplicate_mod)]
#[path = "cluster_support/mod.rs"]
mod cluster_support;

use std::time::Duration;

use cluster_support::*;
use serde_json::json;

/// `gtc_instances_ready{revision}` on a member's router (local and remote
/// instances it would send requests to).
fn router_ready(member: &Member, revision: &str) -> Option<u32> {
    http_get(member.admin, "/metrics").and_then(|text| {
        let needle = format!("gtc_instances_ready{{revision=\"{revision}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(needle.as_str()))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .map(|value| value as u32)
    })
}

/// The committed instance count of `revision` in a member's replica.
fn committed_count(member: &Member, revision: &str) -> Option<u64> {
    let text =
        std::fs::read_to_string(member.store().join("local").join("environment.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).ok()?;
    state["environment"]["revisions"]
        .as_array()?
        .iter()
        .find(|r| r["revision_id"] == revision)?["desired_instances"]
        .as_u64()
}

#[test]
fn held_requests_at_a_follower_start_an_instance_and_a_member_dying_with_held_requests_leaves_nothing_stuck()
 {
    // Proves: a revision at zero instances on a cluster, asked for through
    // a follower's router, is cold-started by the leader's autoscaler from
    // the held requests that follower gossips (the split decides the
    // revision; the instance may run on any member); when a member dies
    // while it holds requests (its clients lose their connection, nothing
    // else does), a request through a surviving member is still answered,
    // and the revision goes back to zero once idle: the dead member's held
    // requests do not keep it up.
    let root = tempfile::tempdir().expect("tempdir");
    let _reaper = Reaper(root.path().to_owned());
    let (home, mut members) = three_members(root.path(), true);
    let added = add_bundle(&home, &members[0], "shop");
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    // Slow to listen (2 s), so requests are held long enough to kill a
    // member that holds them.
    let bundle = bundle_with(
        &home,
        &demo_service(),
        "scaled",
        "  startup_timeout_seconds: 10\n  instances: 1\n  env:\n    DEMO_MODE: \"slow-start-ms=2000\"\n  scaling: {\"min_instances\": 0, \"max_instances\": 3, \"target_concurrency\": 10, \"stable_window_seconds\": 6, \"panic_window_seconds\": 2, \"scale_to_zero_grace_seconds\": 0, \"queue_size\": 50, \"queue_wait_seconds\": 20}\n",
    );
    let revision = stage(&home, &members[0], &deployment, &bundle);
    op(
        &home,
        &members[0],
        "revisions",
        "warm",
        json!({"environment_id": "local", "revision_id": revision}),
    );
    eventually("the revision to be ready", || {
        std::fs::read_to_string(members[0].store().join("local").join("environment.json"))
            .is_ok_and(|text| text.contains(&revision) && text.contains("\"ready\""))
    });
    let split = op(
        &home,
        &members[0],
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment, "idempotency_key": "all",
               "entries": [{"revision_id": revision, "weight_percent": 100}]}),
    );
    let generation = split["generation"].as_u64().expect("generation");
    eventually("every router to serve the split", || {
        members
            .iter()
            .all(|m| get(m.router).is_some_and(|(_, g, _)| g.is_some_and(|g| g >= generation)))
    });
    eventually("the idle revision to scale to zero on every member", || {
        committed_count(&members[0], &revision) == Some(0)
            && members
                .iter()
                .all(|m| router_ready(m, &revision) == Some(0))
    });

    // A follower's router holds requests; the leader starts an instance.
    let leader = leader_name(&home, &members[0]);
    let follower = members
        .iter()
        .position(|m| m.name != leader)
        .expect("a follower");
    let addr = members[follower].router;
    let held: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get_answer_at(addr, "/shop")))
        .collect();
    for answer in held {
        let answer = answer.join().expect("client").expect("an answer");
        assert_eq!(answer.status, 200, "{:?}", answer.error_kind);
        assert_eq!(answer.revision.as_deref(), Some(revision.as_str()));
    }
    eventually("idle again: back to zero", || {
        committed_count(&members[0], &revision) == Some(0)
            && members
                .iter()
                .all(|m| router_ready(m, &revision) == Some(0))
    });

    // A member dies while it holds requests.
    let victim = members
        .iter()
        .position(|m| m.name != leader)
        .expect("a follower");
    let addr = members[victim].router;
    let doomed: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(move || get_answer_at(addr, "/shop")))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    members[victim].kill();
    for answer in doomed {
        let _ = answer.join();
    }
    let survivor = members
        .iter()
        .position(|m| m.child.is_some())
        .expect("a survivor");
    let answer = get_answer_at(members[survivor].router, "/shop").expect("an answer");
    assert_eq!(answer.status, 200, "{:?}", answer.error_kind);
    let survivors: Vec<&Member> = members.iter().filter(|m| m.child.is_some()).collect();
    eventually(
        "back to zero without the dead member's held requests",
        || {
            committed_count(survivors[0], &revision) == Some(0)
                && survivors
                    .iter()
                    .all(|m| router_ready(m, &revision) == Some(0))
        },
    );
}
