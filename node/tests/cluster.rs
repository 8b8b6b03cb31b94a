//! Three real `gtc node run` processes forming a cluster on loopback:
//! certificates from `gtc cluster init`/`issue-cert`, joins, a command
//! through a follower replicated everywhere, the leader SIGKILLed with
//! nothing acknowledged lost, and the killed member catching up.

mod cluster_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_support::*;
use serde_json::{Value, json};

/// Waits until every member's router answers under `generation` or later.
fn every_router_serves(members: &[Member], generation: u64) {
    for member in members {
        eventually(
            &format!("{}'s router to serve generation {generation}", member.name),
            || matches!(get(member.router), Some((200, Some(g), Some(_))) if g >= generation),
        );
    }
}

#[test]
fn a_three_node_cluster_replicates_survives_a_killed_leader_and_catches_up() {
    // Proves: nodes join with certificates from `gtc cluster`, a command on a
    // follower reaches every replica with identical audit chains, killing
    // the leader (SIGKILL) loses no acknowledged command, and the killed
    // member catches up when it restarts.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let home = temp.path().join("home");
    std::fs::create_dir_all(&home).expect("home");
    let dir = temp.path().join("cluster");
    let dir_text = dir.to_str().expect("utf8");
    let (ok, _, text) = run(
        &home,
        &["cluster", "init", "--dir", dir_text, "--name", "n1"],
    );
    assert!(ok, "cluster init: {text}");
    for name in ["n2", "n3"] {
        let (ok, _, text) = run(&home, &["cluster", "issue-cert", name, "--dir", dir_text]);
        assert!(ok, "issue-cert: {text}");
    }
    let mut members: Vec<Member> = ["n1", "n2", "n3"]
        .iter()
        .map(|name| Member {
            name: (*name).to_owned(),
            dir: dir.join(name),
            raft: free_udp(),
            admin: free_tcp(),
            router: free_tcp(),
            gossip: None,
            gossip_seed: None,
            child: None,
        })
        .collect();
    let seed = members[0].raft;
    members[0].start(&home, None);
    members[1].start(&home, Some(seed));
    members[2].start(&home, Some(seed));

    let status = |member: &Member| {
        let (ok, value, text) = run(
            &home,
            &[
                "cluster",
                "status",
                "--node-dir",
                member.dir.to_str().expect("utf8"),
            ],
        );
        assert!(ok, "status: {text}");
        value["result"].clone()
    };
    let first = status(&members[2]);
    assert_eq!(first["voters"].as_array().map(Vec::len), Some(3), "{first}");

    // A command through a follower, replicated everywhere.
    add_bundle(&home, &members[2], "shop");
    // A new environment created through a member's store root goes
    // through Raft like any change (it has no folder, so no node of its
    // own to send it to): every other member's replica has it.
    std::fs::write(
        members[2].store().join("policy.json"),
        r#"{"schema": "greentic.policy.v1", "grants": [{"environment_id": "second", "users": ["*"]}]}"#,
    )
    .expect("policy");
    let answers = home.join("second.json");
    std::fs::write(
        &answers,
        r#"{"environment_id": "second", "name": "created through n3"}"#,
    )
    .expect("answers");
    let (ok, _, text) = run(
        &home,
        &[
            "op",
            "env",
            "create",
            "--answers",
            answers.to_str().expect("utf8"),
            "--store-root",
            members[2].store().to_str().expect("utf8"),
        ],
    );
    assert!(ok, "env create through n3: {text}");
    for member in &members[..2] {
        let (ok, value, text) = run(
            &home,
            &[
                "op",
                "env",
                "show",
                "second",
                "--store-root",
                member.store().to_str().expect("utf8"),
            ],
        );
        assert!(
            ok && value["result"]["name"] == "created through n3",
            "{}'s replica lacks the environment created through n3: {text}",
            member.name
        );
    }
    // A read on another member right after the write sees it (read index);
    // --stale-ok reads the replica as it is.
    let store = members[1].store();
    for extra in [&[][..], &["--stale-ok"][..]] {
        let mut args = vec![
            "op",
            "bundles",
            "list",
            "local",
            "--store-root",
            store.to_str().expect("utf8"),
        ];
        args.extend_from_slice(extra);
        let (ok, _, text) = run(&home, &args);
        assert!(ok, "bundles list {extra:?}: {text}");
        if extra.is_empty() {
            assert!(
                text.contains("shop"),
                "a linearizable read missed the write: {text}"
            );
        }
    }
    let target = members[2].generation();
    for member in &members {
        eventually("replication", || member.generation() == target);
    }
    assert_eq!(members[0].audit(), members[1].audit());
    assert_eq!(members[0].audit(), members[2].audit());

    // Issue 20 item 9 on a cluster: a change through a follower's admin API
    // answers with its audit event as every member logged it, `prev_hash`
    // included, and its replay through another member answers the same
    // event (the replicated idempotency record keeps no `prev_hash`).
    let path = "/v1/environments/local/bundles";
    let cart = json!({"bundle_id": "cart", "route_binding": {"path_prefixes": ["/cart"]}});
    let (code, first) = admin_post(&members[1], path, "add-cart", &cart);
    assert_eq!(code, 200, "{first}");
    let audit = first["audit"].clone();
    assert_eq!(
        audit["prev_hash"].as_str().map(str::len),
        Some(64),
        "{audit}"
    );
    let target = first["generation"].as_u64();
    for member in &members {
        eventually("replication", || member.generation() >= target);
        let logged = member
            .audit()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|event| event["event_id"] == audit["event_id"])
            .expect("the answer's event is logged");
        assert_eq!(logged, audit, "{} logged the answer's event", member.name);
    }
    let (code, replay) = admin_post(&members[2], path, "add-cart", &cart);
    assert_eq!(code, 200, "{replay}");
    assert_eq!(replay["idempotency"], "replayed");
    for field in ["etag", "generation", "audit", "result"] {
        assert_eq!(replay[field], first[field], "{field} is replayed verbatim");
    }

    // SIGKILL the leader; the others elect one and keep acknowledging.
    let leader_id = status(&members[0])["leader"].as_u64().expect("leader");
    let leader_name = status(&members[0])["members"][leader_id.to_string()]["name"]
        .as_str()
        .expect("leader name")
        .to_owned();
    let leader = members
        .iter()
        .position(|m| m.name == leader_name)
        .expect("leader member");
    members[leader].kill();
    let survivor = (leader + 1) % 3;
    let mut acknowledged = Vec::new();
    for i in 0..3 {
        let bundle = format!("after-kill-{i}");
        add_bundle(&home, &members[survivor], &bundle);
        acknowledged.push(bundle);
    }
    let other = (leader + 2) % 3;
    let target = members[survivor].generation();
    eventually("the other survivor", || {
        members[other].generation() == target
    });

    // The killed member restarts from its folder and catches up.
    let join = members[survivor].raft;
    members[leader].start(&home, Some(join));
    eventually("the restarted member to catch up", || {
        members[leader].generation() == target
    });
    let state = std::fs::read_to_string(
        members[leader]
            .store()
            .join("local")
            .join("environment.json"),
    )
    .expect("state");
    for bundle in &acknowledged {
        assert!(
            state.contains(bundle.as_str()),
            "{bundle} lost on the restarted member"
        );
    }
    assert_eq!(members[leader].audit(), members[survivor].audit());

    // `gtc cluster join` adds a fourth member that waits to be added, and
    // `gtc cluster leave` removes it again.
    let (ok, _, text) = run(
        &home,
        &[
            "cluster",
            "issue-cert",
            "n4",
            "--dir",
            dir.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "issue-cert: {text}");
    let mut fourth = Member {
        name: "n4".to_owned(),
        dir: dir.join("n4"),
        raft: free_udp(),
        admin: free_tcp(),
        router: free_tcp(),
        gossip: None,
        gossip_seed: None,
        child: None,
    };
    fourth.start_with(&home, None, &["--no-bootstrap"]);
    let via = members[survivor].dir.to_str().expect("utf8").to_owned();
    let raft = fourth.raft.to_string();
    let (ok, _, text) = run(
        &home,
        &[
            "cluster",
            "join",
            "--node-dir",
            &via,
            "--name",
            "n4",
            "--raft-addr",
            &raft,
        ],
    );
    assert!(ok, "cluster join: {text}");
    fourth.wait_serving();
    eventually("n4 to catch up", || fourth.generation() == target);
    assert_eq!(
        status(&members[survivor])["voters"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    let (ok, _, text) = run(
        &home,
        &[
            "cluster",
            "leave",
            "--node-dir",
            fourth.dir.to_str().expect("utf8"),
        ],
    );
    assert!(ok, "cluster leave: {text}");
    eventually("n4 to be gone", || {
        status(&members[survivor])["voters"]
            .as_array()
            .map(Vec::len)
            == Some(3)
    });
}

#[test]
fn every_router_serves_a_revision_that_runs_on_one_node_and_no_answer_leaves_the_split() {
    // Proves: with encrypted gossip, a revision whose instance runs on one
    // member is served through every member's router under the committed
    // split; a traffic change made on one member reaches all routers; under
    // load through all three routers while the leader is SIGKILLed, no
    // answer comes from a revision outside the committed split (failed
    // requests are counted and printed).
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(&home, &members[1], &deployment, &revisions, 50, "split-1");

    // Every router serves under the new generation, through n1's instances.
    every_router_serves(&members, generation);

    // Constant load through all three routers while the leader is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let allowed: Vec<String> = revisions.clone();
    let loaders: Vec<_> = members
        .iter()
        .map(|member| {
            let router = member.router;
            let stop = Arc::clone(&stop);
            let allowed = allowed.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed, mut outside) = (0u32, 0u32, 0u32);
                while !stop.load(Ordering::Relaxed) {
                    match get(router) {
                        Some((200, _, Some(revision))) if allowed.contains(&revision) => ok += 1,
                        Some((200, _, _)) => outside += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed, outside)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let status: Value = {
        let (ok, value, text) = run(
            &home,
            &[
                "cluster",
                "status",
                "--node-dir",
                members[1].dir.to_str().expect("utf8"),
            ],
        );
        assert!(ok, "{text}");
        value["result"].clone()
    };
    let leader_id = status["leader"].as_u64().expect("leader");
    let leader_name = status["members"][leader_id.to_string()]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    let leader = members
        .iter()
        .position(|m| m.name == leader_name)
        .expect("leader");
    members[leader].kill();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let mut outside_total = 0;
    for (member, loader) in members.iter().zip(loaders) {
        let (ok, failed, outside) = loader.join().expect("loader");
        println!(
            "router {}: {ok} answered in the split, {failed} failed, {outside} outside the split",
            member.name
        );
        outside_total += outside;
    }
    assert_eq!(
        outside_total, 0,
        "an answer came from a revision outside the committed split"
    );
}

#[test]
fn the_leader_spreads_instances_over_members_and_moves_them_off_a_dead_one() {
    // Proves: a revision asking for 3 instances, staged on n1 only, is
    // placed one per member through Raft; n2 and n3 fetch the bundle from
    // n1 (digest-checked) and run their instance; when a member dies, its
    // instance is placed on the survivors.
    let temp = tempfile::tempdir().expect("temp");
    let temp_path = if keep_folder() {
        temp.keep()
    } else {
        temp.path().to_owned()
    };
    eprintln!("cluster folder: {}", temp_path.display());
    let _reaper = Reaper(temp_path.clone());
    let (home, mut members) = three_members(&temp_path, true);
    let added = op(
        &home,
        &members[0],
        "bundles",
        "add",
        serde_json::json!({"environment_id": "local", "bundle_id": "shop"}),
    );
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    let bundle = example_bundle_with(&home, 3);
    let revision = stage(&home, &members[0], &deployment, &bundle);
    op(
        &home,
        &members[0],
        "revisions",
        "warm",
        serde_json::json!({"environment_id": "local", "revision_id": revision}),
    );

    eventually("one instance placed on each member", || {
        placement(&members[1], &revision) == vec!["n1", "n2", "n3"]
    });
    for member in &members {
        eventually(&format!("{} to run its instance", member.name), || {
            ready_instances(member, &revision) == 1
        });
    }

    // n3 stops; its instance moves to n1 and n2.
    members[2].kill();
    eventually("the dead member's instance to be placed elsewhere", || {
        let placed = placement(&members[0], &revision);
        placed.len() == 3 && !placed.contains(&"n3".to_owned())
    });
    eventually("the survivors to run all three", || {
        ready_instances(&members[0], &revision) + ready_instances(&members[1], &revision) == 3
    });
}

#[test]
fn a_rollout_on_a_cluster_is_judged_on_every_members_counts() {
    // Proves: the controller on the leader judges an analysis window from
    // the other members' routers through gossip: all the load goes through
    // one follower's router, none through the leader's, and the rollout is
    // still promoted on a window of at least `min_requests` requests.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(
        &home,
        &members[1],
        &deployment,
        &revisions,
        100,
        "all-first",
    );
    every_router_serves(&members, generation);
    let leader_name = leader_name(&home, &members[1]);
    let follower = members
        .iter()
        .find(|m| m.name != leader_name)
        .expect("a follower");

    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (router, stop) = (follower.router, Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = get(router);
            }
        })
    };
    op(
        &home,
        follower,
        "rollouts",
        "start",
        json!({"environment_id": "local", "deployment_id": deployment,
               "candidate_revision_id": revisions[1], "idempotency_key": "cluster-rollout",
               "steps": [{"weight_bps": 5_000, "until": {"kind": "analysis"}}],
               "analysis": {"window_seconds": 10, "min_requests": 50,
                            "checks": [{"metric": "error-rate", "max_bps": 100}]}}),
    );
    let show = || rollout_show(&home, follower, &deployment);
    let deadline = Instant::now() + Duration::from_secs(90);
    while show()["state"] != "promoted" {
        assert!(
            Instant::now() < deadline,
            "the rollout was not promoted: {}",
            show()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load");
    let shown = show();
    let advanced = shown["history"]
        .as_array()
        .and_then(|h| h.iter().find(|e| e["what"] == "advanced"))
        .expect("advanced")
        .clone();
    assert_eq!(advanced["by"], format!("rollout:{deployment}"));
    assert!(
        advanced["analysis"]["candidate"]["requests"]
            .as_u64()
            .is_some_and(|n| n >= 50),
        "the window counted the follower's requests: {advanced}"
    );
}

#[test]
fn a_rollout_goes_on_one_step_at_a_time_after_its_leader_is_killed() {
    // Proves: the controller on the Raft leader is SIGKILLed once step 1
    // is committed; the new leader's controller resumes from the committed
    // step with a fresh window and promotes the rollout, and the history
    // shows every step once: none skipped, none repeated.
    let temp = tempfile::tempdir().expect("temp");
    let _reaper = Reaper(temp.path().to_owned());
    let (home, mut members) = three_members(temp.path(), true);
    let (deployment, revisions) = two_ready_revisions(&home, &members);
    let generation = set_split(
        &home,
        &members[1],
        &deployment,
        &revisions,
        100,
        "all-first",
    );
    every_router_serves(&members, generation);
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = members
        .iter()
        .map(|member| {
            let (router, stop) = (member.router, Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = get(router);
                }
            })
        })
        .collect();
    op(
        &home,
        &members[0],
        "rollouts",
        "start",
        json!({"environment_id": "local", "deployment_id": deployment,
               "candidate_revision_id": revisions[1], "idempotency_key": "kill-the-leader",
               "steps": [{"weight_bps": 1_000, "until": {"kind": "analysis"}},
                         {"weight_bps": 3_000, "until": {"kind": "analysis"}},
                         {"weight_bps": 6_000, "until": {"kind": "analysis"}}],
               "analysis": {"window_seconds": 10, "min_requests": 30,
                            "checks": [{"metric": "error-rate", "max_bps": 100}]}}),
    );
    let show = |member: &Member| rollout_show(&home, member, &deployment);
    let deadline = Instant::now() + Duration::from_secs(60);
    while show(&members[1])["step"].as_u64().unwrap_or(0) < 1 {
        assert!(
            Instant::now() < deadline,
            "step 1 never committed: {}",
            show(&members[1])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let leader_name = leader_name(&home, &members[1]);
    let killed = members
        .iter()
        .position(|m| m.name == leader_name)
        .expect("the leader is a member");
    members[killed].kill();
    let survivor = &members[(killed + 1) % members.len()];
    let deadline = Instant::now() + Duration::from_secs(120);
    while show(survivor)["state"] != "promoted" {
        assert!(
            Instant::now() < deadline,
            "not promoted after the leader was killed: {}",
            show(survivor)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        load.join().expect("load");
    }
    let history = show(survivor)["history"].clone();
    let advances: Vec<(u64, String)> = history
        .as_array()
        .expect("history")
        .iter()
        .filter(|e| e["what"] == "advanced")
        .map(|e| {
            (
                e["step"].as_u64().unwrap_or(u64::MAX),
                e["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let by = format!("rollout:{deployment}");
    assert_eq!(
        advances,
        vec![(1, by.clone()), (2, by.clone()), (2, by)],
        "every step once, by the controller: {history}"
    );
}
