//! Supervised actors that run one environment on this node.
//!
//! ```text
//! NodeSupervisor ──► EnvironmentActor ──► RevisionActor (one per revision with instances)
//!                         │  polls the committed state, reconciles, publishes router tables
//!                         └─ submits runtime reports (ready, failed, drained) through the store
//! ```
//!
//! Owns: following the committed state (never changing it except through
//! `store::EnvironmentStore::submit` with `Command::RevisionReport`),
//! starting, watching, restarting and stopping a revision's instances with
//! the local-process deployer, and publishing `router::proxy::Published`
//! snapshots.
//!
//! Must not touch: routing decisions (router), validation (deploy), files of
//! the store (store). Actors are node-local; nothing here crosses the network.

mod describe;
mod environment;
mod revision;
mod supervisor;

pub use describe::describe_metrics;
pub use environment::{EnvironmentActor, EnvironmentArgs, EnvironmentMsg};
pub use supervisor::{
    BundleFetcher, NodeContext, NodeHandle, NodeSupervisor, SUPERVISOR_RESTARTS_MAX, Share,
    SupervisorMsg, node_envelope,
};
