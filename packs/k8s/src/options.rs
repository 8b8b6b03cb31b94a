//! What a render needs beyond the environment: the images and the router's size.

use std::collections::BTreeMap;

use deploy::ids::RevisionId;

use crate::RenderError;

/// Fewest router replicas: with one, a node drain or a rollout of the router
/// itself leaves the environment unreachable.
pub const ROUTER_REPLICAS_MIN: u32 = 2;
/// Most router replicas: a bound, not a tuning knob. Past this the router's
/// requests, not its count, should grow.
pub const ROUTER_REPLICAS_MAX: u32 = 100;

/// Length of a SHA-256 digest in hex.
const SHA256_HEX_LEN: usize = 64;

/// The inputs of a render besides the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// The `gtc` image the router runs (its entrypoint is `gtc`, as
    /// `container/Dockerfile` builds it), pinned by digest so the render
    /// names exact bytes.
    pub router_image: String,
    /// One image per active revision, pinned by digest. Images of revisions
    /// that get no worker are ignored, so a caller may pass a superset.
    pub worker_images: BTreeMap<RevisionId, String>,
    /// Router replicas, [`ROUTER_REPLICAS_MIN`]..=[`ROUTER_REPLICAS_MAX`].
    pub router_replicas: u32,
}

impl RenderOptions {
    /// Refuses a router below two replicas (or above the bound) and a
    /// router image not pinned by digest. Worker images are checked when a
    /// revision needs one, so the error can name the revision.
    pub fn validate(&self) -> Result<(), RenderError> {
        if !(ROUTER_REPLICAS_MIN..=ROUTER_REPLICAS_MAX).contains(&self.router_replicas) {
            return Err(RenderError::RouterReplicas {
                replicas: self.router_replicas,
            });
        }
        check_pinned("router", &self.router_image)
    }
}

/// Refuses `image` unless it ends in `@sha256:<64 lowercase hex digits>`
/// after a non-empty repository.
pub fn check_pinned(what: &str, image: &str) -> Result<(), RenderError> {
    let pinned = image
        .split_once("@sha256:")
        .is_some_and(|(repository, digest)| {
            !repository.is_empty()
                && !repository.chars().any(char::is_whitespace)
                && digest.len() == SHA256_HEX_LEN
                && digest
                    .chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        });
    if pinned {
        Ok(())
    } else {
        Err(RenderError::ImageNotPinned {
            what: what.to_owned(),
            image: image.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(router_replicas: u32) -> RenderOptions {
        RenderOptions {
            router_image: format!("ghcr.io/greentic/gtc@sha256:{}", "a".repeat(64)),
            worker_images: BTreeMap::new(),
            router_replicas,
        }
    }

    #[test]
    fn the_router_needs_at_least_two_replicas() {
        // Proves 0 and 1 replicas are refused and 2 is the floor.
        for replicas in [0, 1, ROUTER_REPLICAS_MAX + 1] {
            assert_eq!(
                options(replicas).validate(),
                Err(RenderError::RouterReplicas { replicas })
            );
        }
        assert!(options(2).validate().is_ok());
        assert!(options(ROUTER_REPLICAS_MAX).validate().is_ok());
    }

    #[test]
    fn images_must_be_pinned_by_digest() {
        // Proves tags, short digests and uppercase hex are refused.
        let digest = "b".repeat(64);
        assert!(check_pinned("x", &format!("r.io/a/b@sha256:{digest}")).is_ok());
        assert!(check_pinned("x", &format!("r.io/a/b:1.0@sha256:{digest}")).is_ok());
        for bad in [
            "r.io/a/b:1.0".to_owned(),
            "r.io/a/b@sha256:abc".to_owned(),
            format!("@sha256:{digest}"),
            format!("r.io/a/b@sha256:{}", "B".repeat(64)),
        ] {
            assert!(
                matches!(
                    check_pinned("x", &bad),
                    Err(RenderError::ImageNotPinned { .. })
                ),
                "{bad}"
            );
        }
    }
}
