//! Stage time: find the revision's image on the engine and pin it by its
//! id (the sha256 of its config), so the revision always runs exactly the
//! image it was staged with, whatever the tag points at later. An image
//! archive inside the bundle is loaded first ([`crate::archive`]) and pinned
//! the same way, by the id the load yields.

use packs::deployer::{ContainerImage, DeployerError, RevisionSpec};

use crate::engine::{Engine, is_not_found};

/// Resolves the spec's image to its id, checking the digest the bundle
/// pins. Returns the id (`sha256:…`), which containers are created from.
pub async fn pin(engine: &Engine, spec: &RevisionSpec) -> Result<String, DeployerError> {
    spec.validate()?;
    let (reference, digest) = match &spec.runtime.image {
        Some(ContainerImage::OnEngine { reference, digest }) => (reference, digest),
        Some(ContainerImage::Archive { path, digest }) => {
            return crate::archive::load(engine, spec, path, digest).await;
        }
        None => {
            return Err(DeployerError::InvalidSpec {
                revision: spec.revision_id,
                field: "runtime.image",
                message: "is missing; the docker deployer needs the bundle's runtime section \
                          to name an image (reference, and digest to pin it)"
                    .to_owned(),
            });
        }
    };
    let client = engine.client().await?;
    let image = match client.inspect_image(reference).await {
        Ok(image) => image,
        Err(error) if is_not_found(&error) => {
            return Err(DeployerError::ImageMissing {
                reference: reference.clone(),
            });
        }
        Err(error) => return Err(engine.error("inspecting the image", error)),
    };
    let id = image.id.unwrap_or_default();
    if let Some(expected) = digest {
        let repo_digests = image.repo_digests.unwrap_or_default();
        if !digest_matches(expected, &id, &repo_digests) {
            return Err(DeployerError::ImageDigestMismatch {
                reference: reference.clone(),
                expected: expected.clone(),
                found: id,
            });
        }
    }
    Ok(id)
}

/// True when `expected` (`sha256:…`) is the image's id or one of its
/// repository digests (`name@sha256:…`).
fn digest_matches(expected: &str, id: &str, repo_digests: &[String]) -> bool {
    expected == id
        || repo_digests.iter().any(|d| {
            d.rsplit_once('@')
                .is_some_and(|(_, digest)| digest == expected)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_matches_the_id_or_a_repo_digest_only() {
        // Proves the pin accepts the config id or a registry digest, and nothing else.
        let id = "sha256:aaa";
        let repo = vec!["example/demo@sha256:bbb".to_owned()];
        assert!(digest_matches("sha256:aaa", id, &repo));
        assert!(digest_matches("sha256:bbb", id, &repo));
        assert!(!digest_matches("sha256:ccc", id, &repo));
        assert!(!digest_matches("aaa", id, &repo));
    }
}
