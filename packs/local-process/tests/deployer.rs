//! The local-process deployer through the `Deployer` trait: the shared
//! conformance suite, restart with backoff, and a failed warm leaving
//! nothing behind. Real `demo-service` processes on loopback (see
//! `instances.rs` for how the binary is found; a missing one fails).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deploy::ids::{DeploymentId, EnvId, RevisionId};
use local_process::{LocalProcessDeployer, local_process_deployer};
use packs::conformance::{self, ConformanceFixture};
use packs::deployer::{Deployer, DeployerError, RevisionSpec, RuntimeSpec};
use tempfile::TempDir;

fn demo_binary() -> PathBuf {
    let bin = match std::env::var_os("DEMO_SERVICE_BIN") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("path of the running test binary");
            exe.parent()
                .and_then(Path::parent)
                .expect("test binary lives in <target>/<profile>/deps/")
                .join("demo-service")
        }
    };
    assert!(
        bin.is_file(),
        "demo-service binary not found at {}: run `cargo build -p demo-service` first, or set DEMO_SERVICE_BIN",
        bin.display()
    );
    bin
}

/// One extracted bundle holding the demo service; each revision gets its
/// own log folder (where its pid files live).
struct Fixture {
    tmp: TempDir,
    root: PathBuf,
    env: BTreeMap<String, String>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = TempDir::new().expect("temp dir");
        let root = tmp.path().join("bundle");
        fs::create_dir_all(root.join("bin")).expect("bundle/bin");
        let server = root.join("bin/server");
        // Copied under another name then renamed, so no test thread's fork
        // holds the final file open for writing (ETXTBSY on exec).
        let partial = root.join("bin/.server.partial");
        fs::copy(demo_binary(), &partial).expect("copy demo-service");
        fs::set_permissions(&partial, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::rename(&partial, &server).expect("rename");
        Self {
            tmp,
            root,
            env: BTreeMap::new(),
        }
    }
}

impl ConformanceFixture for Fixture {
    fn revision(&self, instances: u32) -> RevisionSpec {
        let revision_id = RevisionId::from_ulid(ulid::Ulid::new());
        RevisionSpec {
            env_id: EnvId::local(),
            deployment_id: DeploymentId::from_ulid(ulid::Ulid::new()),
            revision_id,
            bundle_root: self.root.clone(),
            log_dir: self.tmp.path().join(format!("logs-{revision_id}")),
            instances,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            node_name: "test-node".to_owned(),
            runtime: RuntimeSpec {
                command: vec!["bin/server".to_owned()],
                env: self.env.clone(),
                port_env: "PORT".to_owned(),
                health_path: "/healthz".to_owned(),
                startup_timeout: Duration::from_secs(10),
                health_timeout: Duration::from_secs(1),
                image: None,
                secrets: packs::deployer::SecretMaterial::default(),
                config_dir: None,
            },
        }
    }
}

fn boxed() -> Box<dyn Deployer> {
    Box::new(local_process_deployer())
}

#[tokio::test]
async fn local_process_passes_the_deployer_conformance_suite() {
    // Proves the local-process deployer keeps the whole Deployer contract.
    let fixture = Fixture::new();
    conformance::run_all(&boxed, &fixture).await;
}

#[tokio::test]
async fn a_crashed_instance_is_restarted_with_a_new_address() {
    // Proves supervision: an instance that exits is counted, marked down, and started again.
    let mut fixture = Fixture::new();
    fixture
        .env
        .insert("DEMO_MODE".to_owned(), "crash-after-ms=300".to_owned());
    let deployer: LocalProcessDeployer = local_process_deployer();
    let spec = fixture.revision(1);
    deployer.stage_revision(&spec).await.expect("stage");
    let mut warm = deployer.warm_revision(&spec).await.expect("warm");
    let exited = warm
        .instances
        .wait_for(|set| set.exits_total >= 1 && set.ready().len() == 1);
    tokio::time::timeout(Duration::from_secs(10), exited)
        .await
        .expect("restarted within 10 s")
        .expect("deployer alive");
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
async fn a_failed_warm_stops_what_it_started_and_stays_staged() {
    // Proves warm is all or nothing: a start failure leaves no process, and the revision can be warmed again.
    let mut fixture = Fixture::new();
    fixture
        .env
        .insert("DEMO_MODE".to_owned(), "exit-immediately".to_owned());
    let deployer = local_process_deployer();
    let spec = fixture.revision(2);
    deployer.stage_revision(&spec).await.expect("stage");
    let failed = deployer.warm_revision(&spec).await;
    assert!(
        matches!(failed, Err(DeployerError::InstanceStart { index: 0, .. })),
        "{failed:?}"
    );
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
    let again = deployer.warm_revision(&spec).await;
    assert!(
        matches!(again, Err(DeployerError::InstanceStart { .. })),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_program_missing_from_the_bundle_is_refused_at_stage() {
    // Proves stage checks the artifact and a refused stage leaves the revision unstaged.
    let fixture = Fixture::new();
    let deployer = local_process_deployer();
    let mut spec = fixture.revision(1);
    spec.runtime.command = vec!["bin/absent".to_owned()];
    let refused = deployer.stage_revision(&spec).await;
    let Err(DeployerError::Artifact { source, .. }) = refused else {
        panic!("expected Artifact, got {refused:?}");
    };
    assert!(
        source.to_string().contains("was not found in the bundle"),
        "{source}"
    );
    assert!(matches!(
        deployer.warm_revision(&spec).await,
        Err(DeployerError::NotStaged { .. })
    ));
}

#[tokio::test]
async fn a_new_deployer_reaps_what_a_killed_node_left() {
    // Proves a restarted node (a fresh deployer) removes the previous node's processes before starting its own: no duplicates.
    let fixture = Fixture::new();
    let spec = fixture.revision(2);
    let old_pids: Vec<u32> = {
        // Processes the way a SIGKILLed node leaves them: running, with pid files.
        let mut pids = Vec::new();
        for index in 0..2 {
            let running = local_process::start(&local_process::instance_spec(&spec, index))
                .await
                .expect("start");
            pids.push(running.pid());
            std::mem::forget(running);
        }
        pids
    };
    let deployer = local_process_deployer();
    deployer.stage_revision(&spec).await.expect("stage");
    deployer.warm_revision(&spec).await.expect("warm");
    let listed = deployer.provider_instances(&spec).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for pid in old_pids {
        assert!(
            !listed.iter().any(|i| i.id == pid.to_string()),
            "old pid {pid} still listed"
        );
    }
    deployer.archive_revision(&spec).await.expect("archive");
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}
