//! Placement of Docker-deployed revisions in a cluster (issue #15 item 2:
//! "In a cluster, placement puts instances on members whose engine is
//! reachable"). Three real members on loopback; n3 is started with
//! `DOCKER_HOST` naming a socket that does not exist, so its deployers
//! probe finds no engine and its `deployers` fact lacks Docker; n1 and n2
//! use the real engine (the same one: containers are told apart by their
//! `greentic.node` label). With the environment's deployer slot bound to
//! `greentic.deployer.docker@0.1.0`, two revisions of four instances each,
//! running an image `FROM scratch` around the static example service, are
//! warmed through n1. Every instance must be placed and run on n1 or n2,
//! none on n3 (a placement that ignored the fact would put some there: four
//! instances spread over three members); the engine holds exactly the
//! committed containers; every router, n3's included, serves through them;
//! archiving a revision removes its containers, and stopping the members
//! removes the rest.
//!
//! The `deployers` fact itself is not shown by any admin endpoint or by
//! `gtc cluster status`; what each member starts gossiping is read from
//! its log (`the deployers this member can run`), and what the leader
//! makes of it is checked through placement.
//!
//! Needs the engine (`/var/run/docker.sock`, or `DOCKER_HOST=unix://…`) and
//! a static demo-service (`GTC_STATIC_DEMO_SERVICE`). Without them it says
//! it skipped, unless `GTC_REQUIRE_DOCKER=1`, which makes that a failure.

mod cluster_support;
#[path = "support/docker.rs"]
mod docker_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_support::*;
use docker_support::{build_image, containers, docker};
use serde_json::{Value, json};

/// Instances each revision asks for: more than two, so a placement that
/// ignored the deployers fact would spread some onto n3.
const INSTANCES: usize = 4;
/// The member whose engine does not answer.
const NO_ENGINE: &str = "n3";
/// How long a stopped member may take to stop its containers and exit.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The containers of `revision`, running or not.
fn of_revision(revision: &str) -> Vec<String> {
    containers(&[("greentic.revision", revision)])
}

/// How many containers of `revision` run, per `greentic.node` label.
fn running_per_node(revision: &str) -> BTreeMap<String, usize> {
    let listed = docker(&[
        "ps",
        "--filter",
        &format!("label=greentic.revision={revision}"),
        "--format",
        "{{.Label \"greentic.node\"}}",
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let mut per_node = BTreeMap::new();
    for node in listed.lines().filter(|l| !l.is_empty()) {
        *per_node.entry(node.to_owned()).or_default() += 1;
    }
    per_node
}

/// Removes the test's containers and image whatever happens. Declared
/// before the members, so it runs after they were stopped or killed.
struct Cleanup {
    tag: String,
    revisions: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for revision in &self.revisions {
            for container in of_revision(revision) {
                let _ = docker(&["rm", "-f", &container]);
            }
        }
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

/// `gtc cluster init`, certificates for n2 and n3, and three members with
/// gossip, n3 with `DOCKER_HOST` set to `no_engine` (a socket nobody
/// listens on).
fn start_members(root: &Path, no_engine: &str) -> (PathBuf, Vec<Member>) {
    three_members_n3_env(root, true, &[("DOCKER_HOST", Path::new(no_engine))])
}

/// The deployers `member` said it can run when it joined gossip (the
/// `deployers` fact it starts with, as its log records it).
fn said_deployers(member: &Member) -> Option<String> {
    let log = std::fs::read_to_string(member.dir.join("node.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["fields"]["message"] == "the deployers this member can run")
        .and_then(|line| line["fields"]["deployers"].as_str().map(str::to_owned))
}

/// `revision` as `member`'s replica records it.
fn revision_record(member: &Member, revision: &str) -> Value {
    let text = std::fs::read_to_string(member.store().join("local").join("environment.json"))
        .unwrap_or_default();
    let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    state["environment"]["revisions"]
        .as_array()
        .and_then(|list| list.iter().find(|r| r["revision_id"] == revision))
        .cloned()
        .unwrap_or(Value::Null)
}

/// A bundle of `shop` whose `instances` instances run `tag`, pinned by
/// `digest`.
fn image_bundle(home: &Path, tag: &str, digest: &str) -> PathBuf {
    build_bundle(
        home,
        "image",
        &format!(
            "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [/demo-service]\n  health_path: /healthz\n  startup_timeout_seconds: 20\n  instances: {INSTANCES}\n  image:\n    reference: {tag}\n    digest: \"{digest}\"\n"
        ),
    )
}

/// Sends every traffic of `deployment` to `revision` through `member`;
/// the committed generation.
fn all_traffic_to(home: &Path, member: &Member, deployment: &str, revision: &str) -> u64 {
    let answer = op(
        home,
        member,
        "traffic",
        "set",
        json!({"environment_id": "local", "deployment_id": deployment,
               "idempotency_key": format!("all-to-{revision}"),
               "entries": [{"revision_id": revision, "weight_percent": 100}]}),
    );
    answer["generation"].as_u64().expect("generation")
}

/// Every router answers `GET /hello` from `revision` under `generation` or
/// later, ten times in a row (the instances are spread over n1 and n2; n3's
/// router reaches them through gossip like any instance).
fn every_router_serves(members: &[Member], revision: &str, generation: u64) {
    for member in members {
        eventually(
            &format!("{}'s router to serve {revision}", member.name),
            || {
                matches!(get(member.router),
                    Some((200, Some(g), Some(r))) if g >= generation && r == revision)
            },
        );
        for _ in 0..10 {
            let answer = get(member.router);
            assert!(
                matches!(&answer, Some((200, Some(g), Some(r))) if *g >= generation && r == revision),
                "{}'s router: {answer:?}",
                member.name
            );
        }
    }
}

/// Sends SIGTERM to every member at once, then waits (bounded) for each to
/// exit; a member still running after [`STOP_WAIT`] is killed and fails
/// the test.
fn stop_all(members: &mut [Member]) {
    for member in members.iter() {
        if let Some(child) = &member.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = Instant::now() + STOP_WAIT;
    for member in members.iter_mut() {
        let exited = member.child.as_mut().is_none_or(|child| {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => break false,
                }
            }
        });
        if !exited {
            member.kill();
            panic!("{} did not stop within {STOP_WAIT:?}", member.name);
        }
        member.child = None;
    }
}

#[test]
fn docker_instances_are_placed_only_on_members_whose_engine_answers() {
    let started = Instant::now();
    let Some(service) = docker_support::prerequisites("docker cluster test") else {
        return;
    };
    let tag = format!("gtc-cluster-test:{}", std::process::id());
    let mut cleanup = Cleanup {
        tag: tag.clone(),
        revisions: Vec::new(),
    };
    let digest = build_image(&service, &tag).expect("test image");

    let temp = tempfile::tempdir().expect("temp");
    let temp_path = if keep_folder() {
        temp.keep()
    } else {
        temp.path().to_owned()
    };
    eprintln!("cluster folder: {}", temp_path.display());
    let no_engine = format!("unix://{}", temp_path.join("absent.sock").display());
    let (home, mut members) = start_members(&temp_path, &no_engine);
    eprintln!(
        "three members serving after {} ms",
        started.elapsed().as_millis()
    );

    // What each member says it can run: n3 not Docker (no engine answers
    // it), n1 and n2 both.
    for member in &members {
        eventually(&format!("{} to say its deployers", member.name), || {
            said_deployers(member).is_some()
        });
        let said = said_deployers(member).unwrap_or_default();
        let said: Vec<&str> = said.split(',').collect();
        assert!(
            said.contains(&"greentic.deployer.local-process"),
            "{said:?}"
        );
        assert_eq!(
            said.contains(&"greentic.deployer.docker"),
            member.name != NO_ENGINE,
            "{} says it runs {said:?}",
            member.name
        );
    }

    op(
        &home,
        &members[0],
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "deployer", "kind": "greentic.deployer.docker@0.1.0"}),
    );
    let added = op(
        &home,
        &members[0],
        "bundles",
        "add",
        json!({"environment_id": "local", "bundle_id": "shop"}),
    );
    let deployment = added["result"]["deployment_id"]
        .as_str()
        .expect("deployment")
        .to_owned();
    let bundle = image_bundle(&home, &tag, &digest);
    let mut revisions = Vec::new();
    for _ in 0..2 {
        let revision = stage(&home, &members[0], &deployment, &bundle);
        cleanup.revisions.push(revision.clone());
        revisions.push(revision);
    }
    let warm_started = Instant::now();
    for revision in &revisions {
        op(
            &home,
            &members[0],
            "revisions",
            "warm",
            json!({"environment_id": "local", "revision_id": revision}),
        );
    }

    // No committed placement may ever name n3, and the rules leave one
    // placement in the end: spread evenly over n1 and n2 (a member that
    // joins gossip late gets its share by rebalancing). Until both
    // revisions run everywhere that placement puts them, the test waits.
    let spread: Vec<String> = ["n1", "n2"]
        .iter()
        .flat_map(|n| std::iter::repeat_n((*n).to_owned(), INSTANCES / 2))
        .collect();
    let per_member: BTreeMap<String, usize> = [("n1", INSTANCES / 2), ("n2", INSTANCES / 2)]
        .into_iter()
        .map(|(n, count)| (n.to_owned(), count))
        .collect();
    let settled = |revision: &str| {
        let placed = placement(&members[0], revision);
        assert!(
            !placed.iter().any(|n| n == NO_ENGINE),
            "{revision} was placed on {NO_ENGINE}, whose engine does not answer: {placed:?}"
        );
        placed == spread
            && members.iter().all(|m| {
                revision_record(m, revision)["lifecycle"] == "ready"
                    && ready_instances(m, revision) as usize
                        == placed.iter().filter(|n| **n == m.name).count()
            })
            && running_per_node(revision) == per_member
    };
    for revision in &revisions {
        let deadline = Instant::now() + CLUSTER_WAIT;
        while !settled(revision) {
            let record = revision_record(&members[0], revision);
            assert!(
                record["lifecycle"] != "failed",
                "{revision} failed to warm: {}",
                record["failure_reason"]
            );
            assert!(
                Instant::now() < deadline,
                "{revision}'s {INSTANCES} instances not placed and ready after {CLUSTER_WAIT:?}: lifecycle {}, placement {:?}, ready per member {:?}, running containers per member {:?}",
                record["lifecycle"],
                placement(&members[0], revision),
                members
                    .iter()
                    .map(|m| (m.name.as_str(), ready_instances(m, revision)))
                    .collect::<Vec<_>>(),
                running_per_node(revision)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    eprintln!(
        "warm -> ready of two revisions ({} containers): {} ms",
        2 * INSTANCES,
        warm_started.elapsed().as_millis()
    );

    for revision in &revisions {
        let record = revision_record(&members[0], revision);
        assert!(
            record["deployer"]
                .to_string()
                .contains("greentic.deployer.docker"),
            "{revision} was warmed with the Docker deployer: {record}"
        );
        let placed = placement(&members[0], revision);
        for member in &members {
            assert_eq!(
                placement(member, revision),
                placed,
                "{}'s replica holds the committed placement",
                member.name
            );
        }
        // The engine holds exactly the committed instances: per member, as
        // many running containers labelled with it as placed on it and as
        // it reports ready; none for n3; none stopped and left over.
        let per_node = running_per_node(revision);
        for member in &members {
            let committed = placed.iter().filter(|n| **n == member.name).count();
            assert_eq!(
                per_node.get(&member.name).copied().unwrap_or(0),
                committed,
                "containers of {revision} for {} (placement {placed:?}, engine {per_node:?})",
                member.name
            );
            assert_eq!(
                ready_instances(member, revision) as usize,
                committed,
                "ready instances of {revision} on {}",
                member.name
            );
        }
        assert_eq!(per_node.get(NO_ENGINE), None, "{per_node:?}");
        assert_eq!(per_node.values().sum::<usize>(), INSTANCES, "{per_node:?}");
        assert_eq!(
            of_revision(revision).len(),
            INSTANCES,
            "no stopped leftover"
        );
        for label in [
            "greentic.env=local",
            &format!("greentic.deployment={deployment}"),
        ] {
            let (key, value) = label.split_once('=').expect("label");
            assert_eq!(
                containers(&[("greentic.revision", revision), (key, value)]).len(),
                INSTANCES,
                "every container of {revision} carries {label}"
            );
        }
        eprintln!("{revision}: placement {placed:?}, containers per member {per_node:?}");
    }

    // Every router serves the first revision, n3's too.
    let generation = all_traffic_to(&home, &members[0], &deployment, &revisions[0]);
    every_router_serves(&members, &revisions[0], generation);

    // The first revision leaves the split and is archived: its containers go.
    let generation = all_traffic_to(&home, &members[1], &deployment, &revisions[1]);
    every_router_serves(&members, &revisions[1], generation);
    op(
        &home,
        &members[1],
        "revisions",
        "archive",
        json!({"environment_id": "local", "revision_id": revisions[0]}),
    );
    eventually("the archived revision's containers to be removed", || {
        of_revision(&revisions[0]).is_empty()
    });
    for member in &members {
        assert_eq!(
            revision_record(member, &revisions[0])["lifecycle"],
            "archived",
            "{}'s replica",
            member.name
        );
    }
    assert_eq!(
        of_revision(&revisions[1]).len(),
        INSTANCES,
        "the other revision keeps its containers"
    );
    every_router_serves(&members, &revisions[1], generation);

    // Stopped members leave no container behind.
    stop_all(&mut members);
    wait_until(
        "stopped members to leave no container",
        Duration::from_secs(30),
        || of_revision(&revisions[1]).is_empty(),
    );
    eprintln!("test body took {} ms", started.elapsed().as_millis());
}
