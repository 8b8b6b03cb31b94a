//! Image archives inside a bundle, against the real engine: an archive
//! written by the engine's export API (`docker save`) is loaded at stage
//! time, pinned by id and served; a wrong digest, a file that is not an
//! archive, and a path leaving the bundle are refused with nothing created.
//! Skips, saying why, without an engine or a static demo-service (see
//! `support`), unless `GTC_REQUIRE_DOCKER=1`; the path refusals run
//! without an engine.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::RemoveImageOptions;
use docker_deployer::docker_deployer;
use futures_util::StreamExt;
use packs::conformance::ConformanceFixture;
use packs::deployer::{ContainerImage, Deployer, DeployerError, RevisionSpec};
use sha2::{Digest, Sha256};
use support::{Fixture, socket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The engine and the static binary, or why not (skipped).
async fn prerequisites() -> Option<(Docker, PathBuf)> {
    let binary = match support::static_demo_service() {
        Ok(binary) => binary,
        Err(why) => {
            support::skip(&why);
            return None;
        }
    };
    match support::engine().await {
        Ok(docker) => Some((docker, binary)),
        Err(why) => {
            support::skip(&why);
            None
        }
    }
}

/// An image of its own (a unique label), saved into `archive` through the
/// export API and then removed from the engine; returns its tag and id.
async fn saved_image(docker: &Docker, binary: &Path, archive: &Path) -> (String, String) {
    let unique = ulid::Ulid::new().to_string().to_lowercase();
    let tag = format!("gtc-demo-service:archive-{unique}");
    let id = support::build_image_as(
        docker,
        binary,
        &tag,
        &format!("LABEL greentic.test=\"archive-{unique}\"\n"),
    )
    .await
    .expect("test image builds");
    std::fs::create_dir_all(archive.parent().expect("archive folder")).expect("archive folder");
    let mut file = tokio::fs::File::create(archive)
        .await
        .expect("archive file");
    let mut export = docker.export_image(&tag);
    while let Some(chunk) = export.next().await {
        file.write_all(&chunk.expect("export chunk"))
            .await
            .expect("write archive");
    }
    file.flush().await.expect("flush archive");
    remove(docker, &tag).await;
    assert!(
        docker.inspect_image(&id).await.is_err(),
        "the image is still on the engine after its removal"
    );
    (tag, id)
}

async fn remove(docker: &Docker, reference: &str) {
    let options = RemoveImageOptions {
        force: true,
        ..RemoveImageOptions::default()
    };
    docker
        .remove_image(reference, Some(options), None)
        .await
        .expect("remove the test image");
}

fn sha256_of(path: &Path) -> String {
    let bytes = std::fs::read(path).expect("read archive");
    format!("sha256:{}", hex::encode(Sha256::digest(&bytes)))
}

/// The spec's bundle with the archive at `relative` inside it.
fn with_archive(spec: &mut RevisionSpec, relative: &str, digest: &str) -> PathBuf {
    let path = spec.bundle_root.join(relative);
    spec.runtime.image = Some(ContainerImage::Archive {
        path: path.clone(),
        digest: digest.to_owned(),
    });
    path
}

/// The status line of `GET /healthz` at `addr`.
async fn health(addr: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the instance");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: instance\r\nConnection: close\r\n\r\n")
        .await
        .expect("send request");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("answer within 5 s")
        .expect("read answer");
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_archive_in_the_bundle_is_loaded_pinned_by_id_and_served() {
    // Proves an image absent from the engine, shipped as a `docker save` tar in the bundle, is loaded at stage, pinned to its id, staged again without change, and warms to instances answering their health path.
    let Some((docker, binary)) = prerequisites().await else {
        return;
    };
    let fixture = Fixture::new("sha256:unused");
    let mut spec = fixture.revision(1);
    let archive = spec.bundle_root.join("images/app.tar");
    let (tag, id) = saved_image(&docker, &binary, &archive).await;
    let digest = sha256_of(&archive);
    with_archive(&mut spec, "images/app.tar", &digest);
    let deployer = docker_deployer(socket());
    let staged = deployer.stage_revision(&spec).await.expect("stage");
    assert_eq!(staged.artifact, id, "pinned to the loaded image's id");
    assert_eq!(
        docker
            .inspect_image(&id)
            .await
            .expect("loaded")
            .id
            .as_deref(),
        Some(id.as_str())
    );
    // Staged again, and another revision of the same bundle: the same id.
    let again = deployer.stage_revision(&spec).await.expect("stage again");
    assert_eq!(again.artifact, id);
    let mut other = fixture.revision(1);
    with_archive(&mut other, "images/app.tar", &digest);
    let other_staged = deployer
        .stage_revision(&other)
        .await
        .expect("stage another revision");
    assert_eq!(
        other_staged.artifact, id,
        "loading again yields the same id"
    );

    let warm = deployer.warm_revision(&spec).await.expect("warm");
    let ready = warm.instances.borrow().ready();
    assert_eq!(ready.len(), 1, "{ready:?}");
    let status = health(ready[0]).await;
    assert!(status.contains(" 200"), "{status}");
    let listed = deployer.provider_instances(&spec).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");

    deployer.archive_revision(&spec).await.expect("archive");
    deployer.archive_revision(&other).await.expect("archive");
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
    remove(&docker, &tag).await;
}

#[tokio::test]
async fn a_wrong_archive_digest_is_refused_before_anything_is_loaded() {
    // Proves a bundle pinning another digest is ImageDigestMismatch naming the file and both digests, with the image not loaded and no container created.
    let Some((docker, binary)) = prerequisites().await else {
        return;
    };
    let fixture = Fixture::new("sha256:unused");
    let mut spec = fixture.revision(1);
    let archive = spec.bundle_root.join("images/app.tar");
    let (_tag, id) = saved_image(&docker, &binary, &archive).await;
    let real = sha256_of(&archive);
    let wrong = format!("sha256:{}", "0".repeat(64));
    with_archive(&mut spec, "images/app.tar", &wrong);
    let deployer = docker_deployer(socket());
    let refused = deployer.stage_revision(&spec).await.expect_err("mismatch");
    assert!(
        matches!(refused, DeployerError::ImageDigestMismatch { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains(&wrong)
            && message.contains(&real)
            && message.contains(&archive.display().to_string()),
        "{message}"
    );
    assert!(
        docker.inspect_image(&id).await.is_err(),
        "the image was loaded despite the wrong digest"
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
async fn a_file_that_is_not_an_image_archive_is_a_load_error_naming_it() {
    // Proves a file with the right digest that the engine cannot load is an Artifact error naming the file and how to write a proper archive.
    if prerequisites().await.is_none() {
        return;
    }
    let fixture = Fixture::new("sha256:unused");
    let mut spec = fixture.revision(1);
    let path = spec.bundle_root.join("images/app.tar");
    std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
    std::fs::write(&path, b"this is a text file, not a tar\n").expect("write");
    let digest = sha256_of(&path);
    with_archive(&mut spec, "images/app.tar", &digest);
    let deployer = docker_deployer(socket());
    let refused = deployer.stage_revision(&spec).await.expect_err("not a tar");
    assert!(
        matches!(refused, DeployerError::Artifact { .. }),
        "{refused:?}"
    );
    let message = format!(
        "{refused}: {}",
        std::error::Error::source(&refused)
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    assert!(
        message.contains(&path.display().to_string()) && message.contains("docker save"),
        "{message}"
    );
    assert!(
        deployer
            .provider_instances(&spec)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn an_archive_path_leaving_the_bundle_is_refused_without_the_engine() {
    // Proves `..` and a symlink pointing out of the bundle are InvalidSpec on runtime.image.archive, decided before the engine is reached (its socket here does not exist).
    let tmp = tempfile::tempdir().expect("temp");
    let deployer = docker_deployer(tmp.path().join("absent.sock").display().to_string());
    let fixture = Fixture::new("sha256:unused");
    let mut spec = fixture.revision(1);
    std::fs::create_dir_all(spec.bundle_root.join("images")).expect("bundle");
    let outside = spec.bundle_root.join("../outside.tar");
    std::fs::write(&outside, b"outside").expect("outside file");
    let digest = sha256_of(&outside);

    with_archive(&mut spec, "../outside.tar", &digest);
    let refused = deployer.stage_revision(&spec).await.expect_err("dot-dot");
    assert!(
        matches!(
            refused,
            DeployerError::InvalidSpec {
                field: "runtime.image.archive",
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("leaves the bundle"),
        "{refused}"
    );

    std::os::unix::fs::symlink(&outside, spec.bundle_root.join("images/link.tar"))
        .expect("symlink");
    with_archive(&mut spec, "images/link.tar", &digest);
    let refused = deployer.stage_revision(&spec).await.expect_err("symlink");
    assert!(
        matches!(
            refused,
            DeployerError::InvalidSpec {
                field: "runtime.image.archive",
                ..
            }
        ),
        "{refused:?}"
    );
    assert!(
        refused.to_string().contains("outside the bundle"),
        "{refused}"
    );

    // A missing file inside the bundle: an Artifact error, still no engine.
    with_archive(&mut spec, "images/absent.tar", &digest);
    let refused = deployer.stage_revision(&spec).await.expect_err("absent");
    assert!(
        matches!(refused, DeployerError::Artifact { .. }),
        "{refused:?}"
    );
}
