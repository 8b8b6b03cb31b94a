//! The Docker deployer behind a real node (issue #15 items 2 and 5): an
//! environment whose deployer slot is bound to
//! `greentic.deployer.docker@0.1.0` runs its revisions as containers of an
//! image `FROM scratch` around the static example service. Two revisions of
//! two instances each are warmed (warm → ready timed), split 90/10 and
//! shifted to 0/100 under load with no failed request; archiving removes a
//! revision's containers; a node killed with SIGKILL and started again
//! (after the slot was rebound to local processes, which changes nothing
//! for a revision already warmed on Docker) leaves exactly the committed
//! instances (no orphans, no duplicates), and a stopped node leaves none.
//!
//! Needs the engine (`/var/run/docker.sock`, or `DOCKER_HOST=unix://…`) and
//! a static demo-service (`GTC_STATIC_DEMO_SERVICE`, which `.ci/run` sets
//! after `scripts/image.sh`). Without them it says it skipped, unless
//! `GTC_REQUIRE_DOCKER=1`, which makes that a failure.

mod common;
#[path = "support/docker.rs"]
mod docker_support;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Home, Node, get, header, id, lifecycle, set_split, wait_generation, wait_until};
use docker_support::{build_image, docker};
use serde_json::json;

/// Container ids labelled with `revision`, running or not.
fn containers(revision: &str) -> Vec<String> {
    docker_support::containers(&[("greentic.revision", revision)])
}

/// A bundle whose instances run `image` (pinned by `digest`) as containers.
fn image_bundle(home: &Home, name: &str, tag: &str, digest: &str, version: &str) -> PathBuf {
    common::build_bundle(
        home,
        name,
        &format!(
            "schema_version: 1\nbundle_id: shop\nruntime:\n  command: [/demo-service]\n  health_path: /healthz\n  startup_timeout_seconds: 20\n  instances: 2\n  env:\n    DEMO_VERSION: \"{version}\"\n  image:\n    reference: {tag}\n    digest: \"{digest}\"\n"
        ),
    )
}

/// Removes the test's containers and image whatever happens.
struct Cleanup {
    tag: String,
    revisions: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for revision in &self.revisions {
            for container in containers(revision) {
                let _ = docker(&["rm", "-f", &container]);
            }
        }
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

#[test]
fn revisions_run_as_containers_shift_without_a_failed_request_and_leave_no_orphans() {
    let Some(service) = docker_support::prerequisites("docker node test") else {
        return;
    };
    let tag = format!("gtc-node-test:{}", std::process::id());
    let mut cleanup = Cleanup {
        tag: tag.clone(),
        revisions: Vec::new(),
    };
    let digest = build_image(&service, &tag).expect("test image");

    let home = Home::new();
    home.gtc(&["op", "env", "init"]);
    home.ok(
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "deployer", "kind": "greentic.deployer.docker@0.1.0"}),
    );
    let deployment = id(
        &home.ok(
            "bundles",
            "add",
            json!({"environment_id": "local", "bundle_id": "shop"}),
        ),
        "deployment_id",
    );
    let mut node = Node::start(&home);

    // Stage and warm two revisions; time warm → ready.
    let mut revisions = Vec::new();
    for version in ["v1", "v2"] {
        let bundle = image_bundle(&home, version, &tag, &digest, version);
        let staged = home.ok(
            "revisions",
            "stage",
            json!({"environment_id": "local", "deployment_id": deployment, "bundle_path": bundle}),
        );
        let revision = id(&staged, "revision_id");
        cleanup.revisions.push(revision.clone());
        let started = Instant::now();
        home.ok(
            "revisions",
            "warm",
            json!({"environment_id": "local", "revision_id": revision}),
        );
        wait_until("ready", Duration::from_secs(60), || {
            lifecycle(&home, &revision) == "ready"
        });
        eprintln!(
            "warm -> ready of {version} (2 containers): {} ms",
            started.elapsed().as_millis()
        );
        assert_eq!(
            containers(&revision).len(),
            2,
            "two containers of {version}"
        );
        revisions.push(revision);
    }
    let (v1, v2) = (revisions[0].clone(), revisions[1].clone());

    let generation = set_split(
        &home,
        &deployment,
        "ninety-ten",
        json!([{"revision_id": v1, "weight_percent": 90}, {"revision_id": v2, "weight_percent": 10}]),
    );
    wait_generation(&node, generation);

    // Load while the split shifts to 0/100.
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let addr = node.addr;
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (stop, failed, answered) = (
                Arc::clone(&stop),
                Arc::clone(&failed),
                Arc::clone(&answered),
            );
            std::thread::spawn(move || {
                let mut last = None;
                while !stop.load(Ordering::Relaxed) {
                    match get(addr, "/", None) {
                        Ok((200, headers, _)) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                            last = header(&headers, "x-greentic-revision").map(str::to_owned);
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                last
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let generation = set_split(
        &home,
        &deployment,
        "all-to-v2",
        json!([{"revision_id": v2, "weight_percent": 100}]),
    );
    wait_generation(&node, generation);
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let last: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let (failed, answered) = (
        failed.load(Ordering::Relaxed),
        answered.load(Ordering::Relaxed),
    );
    eprintln!("during the shift: {answered} answered, {failed} failed");
    assert_eq!(failed, 0, "no failed request during the shift");
    assert!(answered > 20, "the load ran: {answered}");
    assert!(
        last.iter().all(|l| l.as_deref() == Some(v2.as_str())),
        "{last:?}"
    );

    // v1 drained and archived: its containers go.
    home.ok(
        "revisions",
        "drain",
        json!({"environment_id": "local", "revision_id": v1}),
    );
    wait_until("v1 inactive", Duration::from_secs(60), || {
        lifecycle(&home, &v1) == "inactive"
    });
    home.ok(
        "revisions",
        "archive",
        json!({"environment_id": "local", "revision_id": v1}),
    );
    wait_until("v1's containers removed", Duration::from_secs(30), || {
        containers(&v1).is_empty()
    });

    // SIGKILL: v2's containers outlive the node; a new node leaves exactly
    // the committed two, serving.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(node.pid()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    drop(node);
    assert_eq!(
        containers(&v2).len(),
        2,
        "orphans after SIGKILL, as expected"
    );
    // Rebinding the slot while the node is down changes nothing for v2:
    // a revision keeps the deployer it was warmed on.
    home.ok(
        "env-packs",
        "update",
        json!({"environment_id": "local", "slot": "deployer", "kind": "greentic.deployer.local-process@0.1.0"}),
    );
    node = Node::start(&home);
    wait_generation(&node, generation);
    wait_until("v2 served again", Duration::from_secs(60), || {
        get(node.addr, "/", None).is_ok_and(|(status, _, _)| status == 200)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        containers(&v2).len(),
        2,
        "after a restart: the committed instances, no orphan, no duplicate"
    );
    drop(node);
    wait_until(
        "a stopped node leaves no container",
        Duration::from_secs(30),
        || containers(&v2).is_empty(),
    );
}
