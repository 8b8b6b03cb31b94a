//! What the Docker tests and the warm→ready example share: the checks that
//! the engine and a static `demo-service` are here, the `FROM scratch`
//! image built around it (through the engine's build API), and a
//! conformance fixture whose revisions run that image.
//!
//! Prerequisites: the engine at `/var/run/docker.sock` (or `$GTC_DOCKER_SOCKET`)
//! and a static demo-service: `$GTC_STATIC_DEMO_SERVICE`, or
//! `<target>/x86_64-unknown-linux-musl/debug/demo-service`, which this
//! builds with cargo when the musl target is installed. Missing either, the
//! caller skips and says why, unless `GTC_REQUIRE_DOCKER=1`, which fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use futures_util::StreamExt;
use packs::conformance::ConformanceFixture;
use packs::deployer::{ContainerImage, RevisionSpec, RuntimeSpec};
use tempfile::TempDir;

/// The tag of the test image.
pub const IMAGE_TAG: &str = "gtc-demo-service:conformance";
const MUSL: &str = "x86_64-unknown-linux-musl";

/// The engine's socket for tests.
pub fn socket() -> String {
    std::env::var("GTC_DOCKER_SOCKET")
        .unwrap_or_else(|_| docker_deployer::DEFAULT_SOCKET.to_owned())
}

/// Prints why the test is skipped, or panics when Docker is required.
pub fn skip(why: &str) {
    if std::env::var("GTC_REQUIRE_DOCKER").as_deref() == Ok("1") {
        panic!("GTC_REQUIRE_DOCKER=1 but {why}");
    }
    eprintln!(
        "SKIPPED (docker deployer test): {why}; set GTC_REQUIRE_DOCKER=1 to make this a failure"
    );
}

fn target_dir() -> PathBuf {
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps/")
        .to_owned()
}

/// A static demo-service binary, built for musl when needed and possible.
pub fn static_demo_service() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GTC_STATIC_DEMO_SERVICE") {
        return Ok(PathBuf::from(path));
    }
    let target = target_dir();
    let binary = target.join(MUSL).join("debug").join("demo-service");
    if binary.is_file() {
        return Ok(binary);
    }
    let installed = std::process::Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == MUSL)
        })
        .unwrap_or(false);
    if !installed {
        return Err(format!(
            "the {MUSL} target is not installed (rustup target add {MUSL}), and GTC_STATIC_DEMO_SERVICE is not set"
        ));
    }
    // Its own target folder: the running `cargo test` may hold the lock of
    // this one, and a nested build there would wait for it forever.
    let own_target = target.join("docker-test-build");
    let binary = own_target.join(MUSL).join("debug").join("demo-service");
    if binary.is_file() {
        return Ok(binary);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "demo-service", "--target", MUSL])
        .env("CARGO_TARGET_DIR", &own_target)
        .status()
        .map_err(|e| format!("cannot run cargo to build demo-service for {MUSL}: {e}"))?;
    if !status.success() || !binary.is_file() {
        return Err(format!(
            "building demo-service for {MUSL} failed ({status})"
        ));
    }
    Ok(binary)
}

/// The engine, if it answers a ping.
pub async fn engine() -> Result<Docker, String> {
    let docker = Docker::connect_with_unix(&socket(), 30, bollard::API_DEFAULT_VERSION)
        .map_err(|e| format!("no Docker engine client for {}: {e}", socket()))?
        .negotiate_version()
        .await
        .map_err(|e| format!("the Docker engine at {} does not answer: {e}", socket()))?;
    docker
        .ping()
        .await
        .map_err(|e| format!("the Docker engine at {} does not answer: {e}", socket()))?;
    Ok(docker)
}

/// Builds `FROM scratch` + the static binary as [`IMAGE_TAG`] through the
/// engine's build API; returns the image id.
pub async fn build_image(docker: &Docker, binary: &Path) -> Result<String, String> {
    build_image_as(docker, binary, IMAGE_TAG, "").await
}

/// The same image tagged `tag`, with `extra` Dockerfile lines (a `LABEL`
/// makes an image of its own, with its own id); returns the image id.
pub async fn build_image_as(
    docker: &Docker,
    binary: &Path,
    tag: &str,
    extra: &str,
) -> Result<String, String> {
    let dockerfile = format!(
        "FROM scratch\nCOPY demo-service /demo-service\n{extra}ENTRYPOINT [\"/demo-service\"]\n"
    );
    let mut context = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    context
        .append_data(&mut header, "Dockerfile", dockerfile.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut file = std::fs::File::open(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    context
        .append_file("demo-service", &mut file)
        .map_err(|e| e.to_string())?;
    let bytes = context.into_inner().map_err(|e| e.to_string())?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".to_owned(),
        t: Some(tag.to_owned()),
        rm: true,
        forcerm: true,
        ..BuildImageOptions::default()
    };
    let mut build = docker.build_image(options, None, Some(bollard::body_full(bytes.into())));
    while let Some(step) = build.next().await {
        let step = step.map_err(|e| format!("image build failed: {e}"))?;
        if let Some(error) = step.error_detail.and_then(|d| d.message) {
            return Err(format!("image build failed: {error}"));
        }
    }
    let image = docker
        .inspect_image(tag)
        .await
        .map_err(|e| format!("built image not found: {e}"))?;
    image.id.ok_or_else(|| "built image has no id".to_owned())
}

/// The engine and the test image, or why not.
pub async fn prepare() -> Option<String> {
    let binary = match static_demo_service() {
        Ok(binary) => binary,
        Err(why) => {
            skip(&why);
            return None;
        }
    };
    let docker = match engine().await {
        Ok(docker) => docker,
        Err(why) => {
            skip(&why);
            return None;
        }
    };
    // One image per test process: tests run at once, and two builds under
    // the same tag would leave the tag on whichever finished last, so a
    // test could hold the id of an image the tag no longer names.
    static BUILT: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let id = BUILT
        .get_or_init(|| async {
            build_image(&docker, &binary)
                .await
                .expect("test image builds")
        })
        .await;
    Some(id.clone())
}

/// Revisions running the test image; each fixture is its own "node", so
/// tests running at once never see each other's containers.
pub struct Fixture {
    pub tmp: TempDir,
    pub image_id: String,
    pub node_name: String,
    pub env: BTreeMap<String, String>,
}

impl Fixture {
    pub fn new(image_id: &str) -> Self {
        Self {
            tmp: TempDir::new().expect("temp dir"),
            image_id: image_id.to_owned(),
            node_name: format!("test-{}", ulid::Ulid::new().to_string().to_lowercase()),
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
            bundle_root: self.tmp.path().join("bundle"),
            log_dir: self.tmp.path().join(format!("logs-{revision_id}")),
            instances,
            host: std::net::IpAddr::from([127, 0, 0, 1]),
            node_name: self.node_name.clone(),
            runtime: RuntimeSpec {
                command: vec!["/demo-service".to_owned()],
                env: self.env.clone(),
                port_env: "PORT".to_owned(),
                health_path: "/healthz".to_owned(),
                startup_timeout: Duration::from_secs(20),
                health_timeout: Duration::from_secs(1),
                image: Some(ContainerImage::OnEngine {
                    reference: IMAGE_TAG.to_owned(),
                    digest: Some(self.image_id.clone()),
                }),
                secrets: packs::deployer::SecretMaterial::default(),
                config_dir: None,
            },
        }
    }
}
