//! The `Deployer` contract (spec section 5, Phase D): what every deployer
//! env-pack does to a revision, whatever runs it (local processes,
//! containers on a Docker engine, a cloud).
//!
//! Owns: the [`Deployer`] trait, the [`RevisionSpec`] it is handed, the
//! typed [`DeployerError`], the runtime report, and [`SupervisedDeployer`]:
//! the one implementation of the lifecycle (health-gated warm, resizing a
//! warm revision, restart with backoff, graceful drain, archive) over an
//! [`InstanceDriver`] that knows
//! how to start, stop and list one instance on its provider.
//!
//! The contract, which `conformance` checks for every deployer:
//! * every method is idempotent: calling it again with the same input
//!   changes nothing more and answers the same;
//! * preconditions (the spec is valid, the revision is staged, or warm to
//!   be scaled, the split sums to 10000 and names only warm revisions) are
//!   checked before any provider side effect, so a refused call leaves
//!   nothing behind;
//! * the deployer produces provider side effects only; the lifecycle
//!   transition is applied afterwards by the caller through the store.
//!
//! Must not touch: the store, the router or the lifecycle matrix.

mod catalog;
mod error;
mod spec;
mod supervised;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use catalog::{Deployers, SelectError};
pub use error::DeployerError;
pub use spec::{
    CONFIG_DIR_ENV, CONTAINER_CONFIG_DIR, CONTAINER_SECRETS_DIR, ContainerImage, INSTANCES_MAX,
    InstanceSet, InstanceSlot, ProviderInstance, RevisionPhase, RevisionRuntime, RevisionSpec,
    RuntimeConfigReport, RuntimeSpec, SECRETS_DIR_ENV, SPLIT_TOTAL_BPS, SecretMaterial, SplitEntry,
    StagedRevision, WarmRevision, check_split,
};
pub use supervised::{
    InstanceDriver, RESTART_BACKOFF_BASE, RESTART_BACKOFF_MAX, RESTART_WINDOW, RESTARTS_MAX,
    RunningUnit, SupervisedDeployer, UnitFuture,
};

/// A boxed future answering a deployer call; boxed so that `Deployer` is
/// object safe and the node can hold `Arc<dyn Deployer>` per binding.
pub type DeployFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, DeployerError>> + Send + 'a>>;

/// What a deployer env-pack does to revisions. Object safe.
pub trait Deployer: Send + Sync {
    /// The descriptor path of the pack, e.g. `greentic.deployer.local-process`.
    fn descriptor_path(&self) -> &str;

    /// Checks the spec and prepares what the provider needs (the program
    /// is in the bundle, the image is on the engine and pinned by digest).
    /// Starts nothing.
    fn stage_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, StagedRevision>;

    /// Starts the revision's `spec.instances` instances and returns once
    /// every one answers its health path; keeps them running (restarting
    /// crashed ones with backoff) until drained or archived. Already warm:
    /// the same instances, whatever their count now. `spec.instances == 0`
    /// warms the revision scaled to zero: nothing starts, the set is empty.
    /// Requires [`stage_revision`](Self::stage_revision) first.
    fn warm_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, WarmRevision>;

    /// Resizes a warm revision to `instances` instances (0 allowed, at most
    /// [`INSTANCES_MAX`]) for request-driven autoscaling, without
    /// restarting the instances that stay (their slots and addresses do not
    /// change). `spec.instances` is not the target; `instances` is.
    ///
    /// * Growing starts instances `current..instances` concurrently, each
    ///   health-gated as `warm_revision` does, adds their slots once all
    ///   are up and returns then; they are supervised like the others. When
    ///   one fails to start, those this call started are stopped and its
    ///   error is returned; the instances already running are untouched.
    ///   An index still stopping after an earlier shrink is waited for
    ///   before it is started again (providers name instances by index).
    /// * Shrinking removes the highest-index slots from the instance set at
    ///   once, so a router stops choosing them, and stops those instances
    ///   in the background, each with `grace` to finish its in-flight
    ///   requests; the call does not wait for them (drain and archive do).
    /// * The same count changes nothing.
    ///
    /// Answers the same instance-set receiver as `warm_revision`; a revision
    /// scaled to zero stays warm. Refused before any side effect with
    /// [`DeployerError::InvalidSpec`] (an invalid spec, or `instances` above
    /// [`INSTANCES_MAX`]), [`DeployerError::NotStaged`], or
    /// [`DeployerError::NotWarm`] (staged but never warmed, or drained).
    fn scale_revision<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        instances: u32,
        grace: Duration,
    ) -> DeployFuture<'a, WarmRevision>;

    /// Stops the revision's instances gracefully: each gets `grace` to
    /// finish its in-flight requests after the stop signal, then is killed.
    /// Also waits for the instances a shrink is still stopping. Nothing
    /// running: nothing to do.
    fn drain_revision<'a>(
        &'a self,
        spec: &'a RevisionSpec,
        grace: Duration,
    ) -> DeployFuture<'a, ()>;

    /// Leaves nothing of the revision running on the provider, including
    /// instances a previous node left behind, and forgets it.
    fn archive_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, ()>;

    /// Applies a traffic split. Refused with [`DeployerError::InvalidSplit`]
    /// unless the weights sum to exactly [`SPLIT_TOTAL_BPS`], and with
    /// [`DeployerError::RevisionNotWarm`] when it names a revision this
    /// deployer does not run.
    fn apply_traffic_split<'a>(&'a self, split: &'a [SplitEntry]) -> DeployFuture<'a, ()>;

    /// What this deployer runs now: revisions, their phase and instances,
    /// and the split last applied.
    fn report_runtime_config(&self) -> RuntimeConfigReport;

    /// Tells every running instance of a warm revision that its
    /// configuration files changed (SIGHUP, for bundles that declare
    /// `reload: signal`), without restarting any; returns how many were
    /// told. Refused with [`DeployerError::NotStaged`] or
    /// [`DeployerError::NotWarm`] (never warmed, or drained).
    fn reload_revision<'a>(&'a self, spec: &'a RevisionSpec) -> DeployFuture<'a, usize>;

    /// The revision's instances as the provider itself lists them (live
    /// processes by pid file, containers by label), whoever started them.
    fn provider_instances<'a>(
        &'a self,
        spec: &'a RevisionSpec,
    ) -> DeployFuture<'a, Vec<ProviderInstance>>;
}
