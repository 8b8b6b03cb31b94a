//! The Docker deployer against the real engine: the shared conformance
//! suite, restart after a crash, labels and logs, a restarted node reaping
//! what a killed one left, and the bad inputs (digest mismatch, image
//! missing, engine down, a failed warm) ending with nothing left.
//! Skips, saying why, without an engine or a static demo-service (see
//! `support`), unless `GTC_REQUIRE_DOCKER=1`.

mod support;

use std::time::Duration;

use docker_deployer::{DockerDeployer, docker_deployer};
use packs::conformance::{self, ConformanceFixture};
use packs::deployer::{ContainerImage, Deployer, DeployerError};
use support::{Fixture, IMAGE_TAG, prepare, socket};

fn deployer() -> DockerDeployer {
    docker_deployer(socket())
}

fn boxed() -> Box<dyn Deployer> {
    Box::new(deployer())
}

#[tokio::test]
async fn docker_passes_the_deployer_conformance_suite() {
    // Proves the Docker deployer keeps the whole Deployer contract, as local-process does.
    let Some(image_id) = prepare().await else {
        return;
    };
    let fixture = Fixture::new(&image_id);
    conformance::run_all(&boxed, &fixture).await;
}

#[tokio::test]
async fn containers_carry_their_labels_and_their_logs_reach_the_log_folder() {
    // Proves every container is labelled with env, revision, instance and node, and its output lands where gtc reads logs.
    let Some(image_id) = prepare().await else {
        return;
    };
    let fixture = Fixture::new(&image_id);
    let deployer = deployer();
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    deployer.warm_revision(&spec).await.expect("warm");
    let docker = support::engine().await.expect("engine");
    for index in 0..2 {
        let name = docker_deployer::container::container_name(&spec, index);
        let inspected = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect");
        let labels = inspected.config.and_then(|c| c.labels).expect("labels");
        assert_eq!(
            labels.get("greentic.env").map(String::as_str),
            Some("local")
        );
        assert_eq!(
            labels.get("greentic.revision"),
            Some(&spec.revision_id.to_string())
        );
        assert_eq!(labels.get("greentic.instance"), Some(&index.to_string()));
        assert_eq!(labels.get("greentic.node"), Some(&fixture.node_name));
    }
    deployer
        .drain_revision(&spec, Duration::from_secs(5))
        .await
        .expect("drain");
    let logs = std::fs::read_to_string(spec.log_dir.join("instance-0.stderr.log"))
        .unwrap_or_default()
        + &std::fs::read_to_string(spec.log_dir.join("instance-0.stdout.log")).unwrap_or_default();
    assert!(
        logs.contains("demo-service"),
        "no service output in the log folder: {logs:?}"
    );
    deployer.archive_revision(&spec).await.expect("archive");
}

#[tokio::test]
async fn a_crashed_container_is_restarted() {
    // Proves supervision on the engine: an exiting container is counted, removed, and replaced by a healthy one.
    let Some(image_id) = prepare().await else {
        return;
    };
    let mut fixture = Fixture::new(&image_id);
    fixture
        .env
        .insert("DEMO_MODE".to_owned(), "crash-after-ms=500".to_owned());
    let deployer = deployer();
    let spec = fixture.revision(1);
    deployer.stage_revision(&spec).await.expect("stage");
    let mut warm = deployer.warm_revision(&spec).await.expect("warm");
    let restarted = warm
        .instances
        .wait_for(|set| set.exits_total >= 1 && set.ready().len() == 1);
    tokio::time::timeout(Duration::from_secs(20), restarted)
        .await
        .expect("restarted within 20 s")
        .expect("deployer alive");
    assert_eq!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .len(),
        1
    );
    deployer.archive_revision(&spec).await.expect("archive");
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_restarted_node_reaps_the_containers_a_killed_node_left() {
    // Proves no orphans and no duplicates: a fresh deployer (a restarted node) removes the old containers before starting its own.
    let Some(image_id) = prepare().await else {
        return;
    };
    let fixture = Fixture::new(&image_id);
    let spec = fixture.revision(2);
    let engine = docker_deployer::Engine::new(socket());
    let mut old = Vec::new();
    for index in 0..2 {
        // Started and abandoned, as a SIGKILLed node leaves them.
        let running = docker_deployer::container::start(&engine, &spec, &image_id, index)
            .await
            .expect("start");
        old.push(running.container_id().to_owned());
        std::mem::forget(running);
    }
    let deployer = deployer();
    deployer.stage_revision(&spec).await.expect("stage");
    deployer.warm_revision(&spec).await.expect("warm");
    let listed = deployer.provider_instances(&spec).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed.iter().all(|c| !old.contains(&c.id)),
        "an old container survived: {listed:?}"
    );
    deployer.archive_revision(&spec).await.expect("archive");
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_digest_mismatch_is_refused_at_stage_naming_both_digests() {
    // Proves a bundle pinning another digest is refused before anything starts, with both digests and the fix.
    let Some(image_id) = prepare().await else {
        return;
    };
    let fixture = Fixture::new(&image_id);
    let deployer = deployer();
    let mut spec = fixture.revision(1);
    let wrong = format!("sha256:{}", "0".repeat(64));
    spec.runtime.image = Some(ContainerImage::OnEngine {
        reference: IMAGE_TAG.to_owned(),
        digest: Some(wrong.clone()),
    });
    let refused = deployer.stage_revision(&spec).await.expect_err("mismatch");
    assert!(
        matches!(refused, DeployerError::ImageDigestMismatch { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains(&wrong) && message.contains(&image_id),
        "{message}"
    );
    assert!(matches!(
        deployer.warm_revision(&spec).await,
        Err(DeployerError::NotStaged { .. })
    ));
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn an_image_missing_from_the_engine_is_refused_with_how_to_load_it() {
    // Proves a reference the engine does not have is ImageMissing, naming it and `docker load`.
    let Some(image_id) = prepare().await else {
        return;
    };
    let fixture = Fixture::new(&image_id);
    let deployer = deployer();
    let mut spec = fixture.revision(1);
    spec.runtime.image = Some(ContainerImage::OnEngine {
        reference: "gtc-absent-image:never-built".to_owned(),
        digest: None,
    });
    let refused = deployer.stage_revision(&spec).await.expect_err("missing");
    assert!(
        matches!(refused, DeployerError::ImageMissing { .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("docker load"), "{refused}");
}

#[tokio::test]
async fn an_engine_that_is_down_is_named_with_how_to_start_it() {
    // Proves an unreachable engine is ProviderUnreachable naming the socket and the fix; runs without Docker too.
    let tmp = tempfile::tempdir().expect("temp");
    let absent = tmp.path().join("docker.sock");
    let deployer = docker_deployer(absent.display().to_string());
    let fixture = Fixture::new("sha256:unused");
    let spec = fixture.revision(1);
    let refused = deployer
        .stage_revision(&spec)
        .await
        .expect_err("engine down");
    assert!(
        matches!(refused, DeployerError::ProviderUnreachable { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(message.contains(&absent.display().to_string()), "{message}");
    assert!(message.contains("systemctl start docker"), "{message}");
}

#[tokio::test]
async fn a_failed_warm_removes_the_containers_it_created() {
    // Proves nothing half-started: a container that exits before it is healthy is removed, and so are those started before it.
    let Some(image_id) = prepare().await else {
        return;
    };
    let mut fixture = Fixture::new(&image_id);
    fixture
        .env
        .insert("DEMO_MODE".to_owned(), "exit-immediately".to_owned());
    let deployer = deployer();
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    let refused = deployer.warm_revision(&spec).await.expect_err("warm fails");
    assert!(
        matches!(refused, DeployerError::InstanceStart { index: 0, .. }),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("exited"), "{refused}");
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}
