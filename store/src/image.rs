//! A whole store as one value: what a Raft snapshot carries, and how a
//! replica is replaced by one.

use deploy::ids::EnvId;
use deploy::state::{EnvironmentState, IdempotencyRecord};
use serde::{Deserialize, Serialize};

use crate::EnvironmentStore;
use crate::error::StoreError;
use crate::fs_util::{FileLock, atomic_write, fsync_dir};
use crate::local::{LOCK_FILE, LocalFsStore, STATE_FILE};

/// Every environment with its audit log, and the root audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreImage {
    pub environments: Vec<EnvironmentImage>,
    /// Lines of the log of events about environments that do not exist.
    pub root_audit: Vec<String>,
}

/// One environment: its committed state, its audit lines and its
/// idempotency records, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentImage {
    pub state: EnvironmentState,
    pub audit: Vec<String>,
    /// The committed records of the environment's idempotency table (a
    /// snapshot from before the table existed has none here; its state
    /// carries them instead).
    #[serde(default)]
    pub idempotency: Vec<IdempotencyRecord>,
}

fn joined(lines: &[String]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

impl LocalFsStore {
    /// The whole store, read under the root lock so no create or destroy
    /// runs meanwhile. Changes inside one environment are serialized by the
    /// caller (the Raft state machine applies one entry at a time).
    pub fn image(&self) -> Result<StoreImage, StoreError> {
        let _root = FileLock::acquire(&self.root().join(LOCK_FILE))?;
        let mut environments = Vec::new();
        for env in self.list()? {
            if let Some(state) = self.load(&env)? {
                environments.push(EnvironmentImage {
                    idempotency: self.idempotency(&env).committed(state.generation)?,
                    state,
                    audit: self.audit_log(&env).lines()?,
                });
            }
        }
        Ok(StoreImage {
            environments,
            root_audit: self.root_audit_log().lines()?,
        })
    }

    /// Replaces the whole store by `image`: every environment in it is
    /// written (audit first, then state, each atomically), and every
    /// environment not in it is moved to `.destroyed/`.
    pub fn install_image(&self, image: &StoreImage) -> Result<(), StoreError> {
        let _root = FileLock::acquire(&self.root().join(LOCK_FILE))?;
        let keep: Vec<EnvId> = image
            .environments
            .iter()
            .map(|e| e.state.env_id().clone())
            .collect();
        for env in self.list()? {
            if !keep.contains(&env) {
                let graveyard = self.root().join(".destroyed");
                std::fs::create_dir_all(&graveyard)
                    .map_err(StoreError::io("create", &graveyard))?;
                let target = graveyard.join(format!("{env}.replaced-by-snapshot"));
                let _ = std::fs::remove_dir_all(&target);
                let dir = self.env_dir(&env);
                std::fs::rename(&dir, &target).map_err(StoreError::io("move aside", &dir))?;
            }
        }
        for environment in &image.environments {
            let env = environment.state.env_id();
            let dir = self.env_dir(env);
            let audit = self.audit_log(env);
            let audit_dir = audit.path().parent().unwrap_or(&dir).to_owned();
            std::fs::create_dir_all(&audit_dir).map_err(StoreError::io("create", &audit_dir))?;
            atomic_write(audit.path(), &joined(&environment.audit))?;
            self.idempotency(env).replace(&environment.idempotency)?;
            let path = dir.join(STATE_FILE);
            let mut bytes = serde_json::to_vec_pretty(&environment.state).map_err(|error| {
                StoreError::Corrupt {
                    path: path.clone(),
                    reason: error.to_string(),
                }
            })?;
            bytes.push(b'\n');
            self.write_revenue_policies(&environment.state)?;
            atomic_write(&path, &bytes)?;
            fsync_dir(&dir)?;
        }
        let root_log = self.root_audit_log();
        if let Some(parent) = root_log.path().parent() {
            std::fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
        }
        atomic_write(root_log.path(), &joined(&image.root_audit))?;
        fsync_dir(self.root())
    }
}
