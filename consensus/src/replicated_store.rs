//! `store::EnvironmentStore` over the cluster, for code written against the
//! synchronous store trait (the node's actors and admin API).
//!
//! Reads come from this node's replica (they may trail the leader by the
//! replication delay); writes go through Raft and return once this node has
//! applied them, so a caller always reads its own writes.

use std::sync::Arc;

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use store::{EnvironmentStore, StoreError, SubmitError, Submitted};

use crate::node::ClusterHandle;

/// The cluster as an environment store.
#[derive(Clone)]
pub struct ReplicatedStore {
    cluster: Arc<ClusterHandle>,
    runtime: tokio::runtime::Handle,
    /// Loads wait for a read index first (remote readers); the node's own
    /// actors read as-is and follow changes as they apply.
    linearizable: bool,
}

impl ReplicatedStore {
    /// Must be created inside the multi-thread tokio runtime the cluster
    /// runs on: writes block the calling thread on it.
    pub fn new(cluster: Arc<ClusterHandle>) -> Self {
        Self {
            cluster,
            runtime: tokio::runtime::Handle::current(),
            linearizable: false,
        }
    }

    /// The same store, whose loads first wait until this replica holds
    /// everything the cluster had committed when the load began.
    pub fn linearizable(&self) -> Self {
        Self {
            linearizable: true,
            ..self.clone()
        }
    }

    /// The cluster member behind the store.
    pub fn cluster(&self) -> &Arc<ClusterHandle> {
        &self.cluster
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        // `block_in_place` lets a runtime worker block without starving the
        // runtime; on a blocking-pool thread it simply runs the closure.
        tokio::task::block_in_place(|| self.runtime.block_on(future))
    }
}

impl EnvironmentStore for ReplicatedStore {
    fn list(&self) -> Result<Vec<EnvId>, StoreError> {
        self.cluster.state_machine().store().list()
    }

    fn load(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreError> {
        if self.linearizable {
            self.block_on(self.cluster.read_barrier())
                .map_err(|error| StoreError::Io {
                    action: "confirm with the cluster (read index) the replica",
                    path: self.cluster.state_machine().store().root().to_owned(),
                    source: std::io::Error::other(error.to_string()),
                })?;
        }
        self.cluster.state_machine().store().load(env)
    }

    fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
        self.block_on(self.cluster.submit(envelope))
    }

    fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.block_on(self.cluster.record(&event))
            .map_err(|error| StoreError::Audit {
                path: self.cluster.state_machine().store().root().to_owned(),
                reason: format!("the event could not be replicated: {error}"),
            })
    }

    fn audit_lines(&self, env: &EnvId) -> Result<Vec<String>, StoreError> {
        self.cluster.state_machine().store().audit_lines(env)
    }
}
