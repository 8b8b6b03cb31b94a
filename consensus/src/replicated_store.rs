//! `store::EnvironmentStore` over the cluster, for code written against the
//! synchronous store trait (the node's actors and admin API).
//!
//! Reads come from this node's replica (they may trail the leader by the
//! replication delay); writes go through Raft and return once this node has
//! applied them, so a caller always reads its own writes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use store::{EnvironmentStore, StoreError, SubmitError, Submitted};

use crate::member::ClusterHandle;
use crate::secret_change::{SecretChange, SecretOutcome};
use crate::trust_root_change::{TrustRootChange, TrustRootOutcome};

/// TEST-ONLY fault injection. When this environment variable names a file,
/// every write through a `ReplicatedStore` made by this process waits while
/// that file exists (at most `STALL_WRITES_MAX`) before it goes to Raft,
/// holding its thread exactly as a write that finds no leader does. The
/// node tests use it to stall one member's writes
/// (`node/tests/cluster_stall.rs`); nothing sets it in production, where
/// the variable is absent and the check is one `Option` test per write.
pub const STALL_WRITES_FILE_VAR: &str = "GTC_TEST_STALL_WRITES_FILE";

/// The longest one write waits on the stall file, so a test that forgets
/// to remove it cannot hang a member.
const STALL_WRITES_MAX: Duration = Duration::from_secs(60);

/// How often a stalled write looks at the stall file again.
const STALL_POLL: Duration = Duration::from_millis(50);

/// The cluster as an environment store.
#[derive(Clone)]
pub struct ReplicatedStore {
    cluster: Arc<ClusterHandle>,
    runtime: tokio::runtime::Handle,
    /// Loads wait for a read index first (remote readers); the node's own
    /// actors read as-is and follow changes as they apply.
    linearizable: bool,
    /// The test-only stall file (`STALL_WRITES_FILE_VAR`); `None` in production.
    stall_writes_file: Option<PathBuf>,
}

impl ReplicatedStore {
    /// Must be created inside the multi-thread tokio runtime the cluster
    /// runs on: writes block the calling thread on it.
    pub fn new(cluster: Arc<ClusterHandle>) -> Self {
        Self {
            cluster,
            runtime: tokio::runtime::Handle::current(),
            linearizable: false,
            stall_writes_file: std::env::var_os(STALL_WRITES_FILE_VAR).map(PathBuf::from),
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

    /// Test-only: waits while the stall file exists (see `STALL_WRITES_FILE_VAR`).
    async fn stall_if_asked(&self) {
        let Some(file) = &self.stall_writes_file else {
            return;
        };
        if !file.exists() {
            return;
        }
        tracing::warn!(file = %file.display(), "write stalled by the test-only stall file");
        let began = Instant::now();
        while file.exists() && began.elapsed() < STALL_WRITES_MAX {
            tokio::time::sleep(STALL_POLL).await;
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        // `block_in_place` lets a runtime worker block without starving the
        // runtime; on a blocking-pool thread it simply runs the closure.
        tokio::task::block_in_place(|| self.runtime.block_on(future))
    }
}

impl ReplicatedStore {
    /// Applies a change of the secret store through the cluster (see
    /// [`ClusterHandle::secret_change`]), blocking the calling thread like
    /// every write of this store.
    pub fn secret_change(
        &self,
        change: &SecretChange,
        event: &AuditEvent,
    ) -> Result<SecretOutcome, SubmitError> {
        self.block_on(async {
            self.stall_if_asked().await;
            self.cluster.secret_change(change, event).await
        })
    }
}

impl ReplicatedStore {
    /// Applies a trust root change through the cluster (see
    /// [`ClusterHandle::trust_root_change`]), blocking like every write.
    pub fn trust_root_change(
        &self,
        change: &TrustRootChange,
        event: &AuditEvent,
    ) -> Result<TrustRootOutcome, SubmitError> {
        self.block_on(async {
            self.stall_if_asked().await;
            self.cluster.trust_root_change(change, event).await
        })
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
        self.block_on(async {
            self.stall_if_asked().await;
            self.cluster.submit(envelope).await
        })
    }

    fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.block_on(async {
            self.stall_if_asked().await;
            self.cluster.record(&event).await
        })
        .map_err(|error| StoreError::Audit {
            path: self.cluster.state_machine().store().root().to_owned(),
            reason: format!("the event could not be replicated: {error}"),
        })
    }

    fn audit_lines(&self, env: &EnvId) -> Result<Vec<String>, StoreError> {
        self.cluster.state_machine().store().audit_lines(env)
    }

    fn audit_tail(&self, env: &EnvId, limit: usize) -> Result<Vec<String>, StoreError> {
        self.cluster.state_machine().store().audit_tail(env, limit)
    }

    fn audit_count(&self, env: &EnvId) -> Result<usize, StoreError> {
        self.cluster.state_machine().store().audit_count(env)
    }
}
