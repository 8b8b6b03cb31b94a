//! Why a render was refused: one enum for the one operation, the facts in
//! fields, and each message saying how to fix it.

use deploy::environment::ValidationError;
use deploy::ids::RevisionId;
use deploy::lifecycle::Lifecycle;
use thiserror::Error;

use crate::names::NAME_LEN_MAX;
use crate::objects::config::CONFIG_MAP_BYTES_MAX;
use crate::options::{ROUTER_REPLICAS_MAX, ROUTER_REPLICAS_MIN};

/// A render that cannot produce valid manifests. Nothing is rendered when
/// any of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("the environment document is invalid, so it is not rendered: {0}")]
    InvalidEnvironment(#[from] ValidationError),
    #[error(
        "router_replicas is {replicas}; the router runs {ROUTER_REPLICAS_MIN} to {ROUTER_REPLICAS_MAX} replicas (at least two, so one can restart or move while another serves); set router_replicas within that range"
    )]
    RouterReplicas { replicas: u32 },
    #[error(
        "{kind} name {name:?} is not a valid Kubernetes name: {reason} (names are DNS labels: lowercase letters, digits and '-', starting with a letter, ending with a letter or digit, at most {NAME_LEN_MAX} characters); {fix}"
    )]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
        fix: String,
    },
    #[error(
        "revision {revision_id} is {lifecycle} and gets a worker Deployment, but RenderOptions.worker_images has no image for it; add the revision's image pinned by digest (registry/name@sha256:<64 hex digits>)"
    )]
    MissingWorkerImage {
        revision_id: RevisionId,
        lifecycle: Lifecycle,
    },
    #[error(
        "the {what} image {image:?} is not pinned by digest; give registry/name@sha256:<64 hex digits> so the same render always names the same bytes"
    )]
    ImageNotPinned { what: String, image: String },
    #[error(
        "revision {revision_id} runs {instances} instances, more than a Deployment's replicas can hold; lower its instance count"
    )]
    ReplicasOutOfRange {
        revision_id: RevisionId,
        instances: u32,
    },
    #[error(
        "secret ref {reference:?} cannot be a key of Secret gtc-dev-secrets: {reason}; use a secret path of letters, digits, '.', '-', '_' and '/'"
    )]
    SecretKey {
        reference: String,
        reason: &'static str,
    },
    #[error(
        "secret refs {first:?} and {second:?} both become key {key:?} of Secret gtc-dev-secrets ('/' becomes '.'); rename one of the secret paths"
    )]
    SecretKeyCollision {
        key: String,
        first: String,
        second: String,
    },
    #[error(
        "ConfigMap {name} would hold {bytes} bytes; Kubernetes keeps at most {CONFIG_MAP_BYTES_MAX} bytes in one ConfigMap; archive old revisions or finished rollouts to shrink the environment document"
    )]
    ConfigMapTooLarge { name: &'static str, bytes: usize },
    #[error(
        "ConfigMap {name} would hold {bytes} bytes of pack configs; Kubernetes keeps at most {limit} bytes in one ConfigMap; shrink the deployment's config_overrides"
    )]
    WorkerConfigTooLarge {
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error("serializing {object} failed: {message}")]
    Serialize { object: String, message: String },
}
