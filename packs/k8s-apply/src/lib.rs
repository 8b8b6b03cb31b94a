//! Applies a Kubernetes render of an environment to a cluster.
//!
//! Owns talking to a Kubernetes API server, through `kube`'s client:
//! - [`Cluster::infer`]: the cluster of the current kubeconfig (`KUBECONFIG`
//!   honoured, in-cluster service account as the fallback), with bounded
//!   connect and request times;
//! - [`Cluster::apiserver_version`]: reachability (`GET /version`);
//! - [`access::review`]: a `SelfSubjectAccessReview` per verb and resource
//!   the apply needs in `gtc-<env>`, answering which are denied;
//! - [`apply()`]: server-side apply (field manager `gtc`, forced) of every
//!   object of a [`k8s_deployer::Rendered`], the `gtc-dev-secrets` Secret
//!   filled with the values the caller gives, then the prune of objects
//!   carrying gtc's managed-by label that the render no longer names.
//!
//! - [`bootstrap::bootstrap`]: with an admin's client, a ServiceAccount and
//!   the Role/ClusterRole granting exactly what the apply needs, and a
//!   bounded token for it (the credentials contract's bootstrap);
//!   [`Cluster::from_kubeconfig_text`] makes a client from a kubeconfig in
//!   memory.
//!
//! The decisions are pure and tested without a server: what is sent
//! ([`plan::ApplyPlan`]), what is pruned ([`prune::select`]), which access
//! reviews are asked ([`access::required`]).
//!
//! Must not touch: what the manifests are (that is `k8s_deployer`'s render),
//! gtc's store, its secrets store or its audit log (the caller reads the
//! secret values and audits), files, or anything without gtc's label: the
//! prune never deletes an object that lacks `app.kubernetes.io/managed-by:
//! gtc`, whatever the server's label filter answered. A secret value never
//! appears in an error, a log line or a `Debug` output of this crate.
//!
//! Exercised only against a loopback fake API server in the tests
//! (`node/tests/k8s_apply.rs`), never against a real cluster: see README.md.

pub mod access;
pub mod apply;
pub mod bootstrap;
pub mod cluster;
pub mod error;
pub mod kind;
pub mod ownership;
pub mod plan;
pub mod prune;

pub use apply::{ApplyReport, apply};
pub use cluster::{Cluster, ServerVersion};
pub use error::{ApplyError, ClusterError, ConnectError, PlanError};
pub use kind::Kind;
pub use plan::ObjectRef;

/// The field manager every server-side apply names: the fields gtc sets
/// are owned by `gtc`, so a later apply can remove the ones it dropped.
pub const FIELD_MANAGER: &str = "gtc";
