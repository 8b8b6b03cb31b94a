//! Supervised actors that run one environment on this node.
//!
//! ```text
//! NodeSupervisor ──► EnvironmentActor ──► RevisionActor (one per revision with instances)
//!                         │  follows the committed state, plans (deploy::reconcile), publishes router tables
//!                         └─ submits runtime reports (ready, failed, drained) through a StoreWorker
//! ```
//!
//! Owns: following the committed state (never changing it except through
//! `store::EnvironmentStore::submit` with `Command::RevisionReport`),
//! carrying out what `deploy::reconcile::plan` (pure) decides runs here: starting, watching,
//! and stopping a revision's instances through the `packs::deployer::Deployer`
//! the environment's deployer slot selects, and publishing `router::proxy::Published` snapshots.
//!
//! Invariant: no handler calls the synchronous store. Loads go through a
//! `store::StoreWorker` with a bounded wait, and writes are handed to it
//! without waiting, so a stalled cluster write never stops this node from
//! publishing the states it has applied.
//!
//! Must not touch: routing decisions (router), validation (deploy), files of
//! the store (store), the on-disk layout (`deploy::layout` names every
//! path). Actors are node-local; nothing here crosses the network.
//!
//! Modules depend one way: `context`, `messages` and `image` on nothing here;
//! `revision` on those; `environment` on
//! `revision`; `supervisor` on `environment`.

mod config_files;
mod context;
mod describe;
mod environment;
mod image;
mod messages;
mod revision;
mod supervisor;

pub use context::{BundleFetcher, NodeContext, node_envelope};
pub use deploy::reconcile::Share;
pub use describe::describe_metrics;
pub use environment::{EnvironmentActor, EnvironmentArgs};
pub use messages::EnvironmentMsg;
pub use supervisor::{
    NodeHandle, NodeSupervisor, SUPERVISOR_RESTARTS_MAX, SupervisorMsg, child_ended, restart_policy,
};
