//! The durable store of environments.
//!
//! Owns: the [`EnvironmentStore`] trait every store implements, and
//! [`LocalFsStore`], the embedded default: one folder per environment under
//! the store root, a per-environment lock, crash-safe atomic writes, a backup
//! before every change, backup artifacts with an integrity digest, and the
//! hash-chained audit log; and [`StoreWorker`], which puts any store behind
//! dedicated threads so async callers (the node's actors) never block on
//! it and wait a bounded time for every answer.
//!
//! Must not touch: the meaning of a change. The store calls
//! `deploy::apply::apply` and persists what it returns; it never edits an
//! environment itself. It knows nothing of the CLI or of the network.

mod audit_log;
mod backup;
mod error;
mod fs_util;
mod idempotency;
mod image;
mod local;
mod migrate;
mod notify;
mod worker;

pub use audit_log::{Appended, AuditLog, AuditReport};
pub use backup::{BACKUP_ARTIFACT_SCHEMA, BACKUP_MANIFEST_SCHEMA, BackupArtifact, BackupManifest};
pub use error::{StoreError, SubmitError};
pub use image::{EnvironmentImage, StoreImage};
pub use notify::Notifying;
pub use worker::{
    COMMAND_QUEUE_DEPTH, COMMAND_TIMEOUT, Lane, QUERY_QUEUE_DEPTH, QUERY_TIMEOUT, SharedStore,
    StoreCallError, StoreWorker, StoreWorkerConfig, StoreWorkerConfigError, StoreWorkerError,
};

/// Writes `bytes` to `path` crash-safely (temp file, fsync, rename, fsync
/// of the folder): for files kept beside a store.
pub fn write_file_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<(), StoreError> {
    fs_util::atomic_write(path, bytes)
}
pub use local::{LocalFsStore, PRE_CHANGE_BACKUPS_KEPT};
pub use migrate::{
    LegacyStateMigration, LegacyStateMoved, migrate_legacy_state, plan_legacy_state,
};

use deploy::apply::Applied;
use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;

/// What a submitted command did once it is durable.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The output of `apply`, as persisted.
    pub applied: Applied,
    /// The environment's generation after the command (`None` once destroyed).
    pub generation: Option<u64>,
}

/// The store every node and CLI goes through. Implementations: the local
/// file store here, and the Raft-replicated store of the `consensus` crate.
///
/// Contract: `submit` applies the command with `deploy::apply::apply` under
/// the store's serialization (a lock here, the Raft log there), audits the
/// outcome whatever it is, and makes an acknowledged change durable before
/// returning. A refused command changes nothing but the audit log.
pub trait EnvironmentStore {
    /// Ids of every environment, sorted.
    fn list(&self) -> Result<Vec<EnvId>, StoreError>;
    /// The current state of `env`, validated; `None` if it does not exist.
    fn load(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreError>;
    /// Applies, audits and persists one command.
    fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError>;
    /// Appends an event for a request that never reached `apply` (denied,
    /// not yet implemented, refused at the edge).
    fn record(&self, event: AuditEvent) -> Result<(), StoreError>;
    /// The raw audit lines of `env`, oldest first.
    fn audit_lines(&self, env: &EnvId) -> Result<Vec<String>, StoreError>;
    /// The last `limit` raw audit lines of `env`, oldest first. The default
    /// reads every line; stores override it to read only the tail.
    fn audit_tail(&self, env: &EnvId, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut lines = self.audit_lines(env)?;
        lines.drain(..lines.len().saturating_sub(limit));
        Ok(lines)
    }
    /// How many audit lines `env` has. The default reads every line; stores
    /// override it to count without keeping them.
    fn audit_count(&self, env: &EnvId) -> Result<usize, StoreError> {
        Ok(self.audit_lines(env)?.len())
    }
}
