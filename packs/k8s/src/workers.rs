//! Which revisions get a worker Deployment.
//!
//! A revision gets one when a node would run instances for it: it has
//! something to run (`runtime_instances` is set, as `deploy::reconcile::plan`
//! requires) and its lifecycle is `warming`, `ready` or `draining`
//! (`deploy::reconcile::wants_instances`): warming revisions may get
//! traffic once ready, ready ones may have it, draining ones finish the
//! requests they hold. Inactive, staged, failed and archived revisions run
//! nothing, so they get no worker, and one that leaves the set is deleted by
//! the apply path's prune.

use deploy::environment::Environment;
use deploy::reconcile::wants_instances;
use deploy::revision::Revision;

/// The revisions that get a worker, ordered by revision id (ULIDs sort by
/// creation time), so the render's order does not depend on the document's.
pub fn active_revisions(environment: &Environment) -> Vec<&Revision> {
    let mut active: Vec<&Revision> = environment
        .revisions
        .iter()
        .filter(|revision| {
            revision.runtime_instances.is_some() && wants_instances(revision.lifecycle)
        })
        .collect();
    active.sort_by_key(|revision| revision.revision_id);
    active
}

/// The replicas of `revision`'s worker: its committed instance count
/// ([`Revision::instance_count`]: the autoscaler's `desired_instances` when
/// it scales, its bundle's fixed count otherwise).
pub fn replicas(revision: &Revision) -> u32 {
    revision.instance_count().unwrap_or(0)
}
