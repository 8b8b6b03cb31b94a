//! `greentic.deployer.k8s@1.0.0`: the Kubernetes render of an environment.
//!
//! [`render`] turns a committed [`deploy::environment::Environment`] and its
//! [`RenderOptions`] (images pinned by digest, router replicas) into the
//! manifests of namespace `gtc-<env>`: the namespace, the router's
//! Deployment, Service and PodDisruptionBudget, one worker Deployment,
//! Service (and budget, above one replica) per active revision, the
//! runtime-config and environment ConfigMaps, the dev Secret's keys, and
//! network policies (default deny; router reachable on 8080; router to
//! workers; DNS). The output is built from `k8s-openapi`'s typed objects and
//! serialized to YAML; it is byte-identical for the same input.
//!
//! Owns: which revisions get a worker ([`workers::active_revisions`]), the
//! Kubernetes names and labels ([`names`]), the shape of every object
//! ([`objects`]), and the limits a render refuses ([`RenderError`]).
//!
//! Must not touch: files, sockets, clocks, randomness, secret values or a
//! Kubernetes API server. Writing the files and applying them (server-side
//! apply through `kube`, filling the Secret from the secrets store) is the
//! caller's job; this crate only decides what the cluster should hold.

pub mod error;
pub mod names;
pub mod objects;
pub mod options;
pub mod render;
pub mod secrets;
pub mod workers;

pub use error::RenderError;
pub use options::RenderOptions;
pub use render::{ALL_FILE_NAME, Rendered, render};

/// The pack's descriptor path.
pub const DESCRIPTOR_PATH: &str = "greentic.deployer.k8s";
/// The pack's version.
pub const VERSION: &str = "1.0.0";
