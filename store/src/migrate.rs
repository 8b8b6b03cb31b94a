//! Retiring the legacy `state/deploy/` tree (`env migrate-state`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::StoreError;
use crate::fs_util::{FileLock, fsync_dir};

/// What `migrate-state` would do or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyStateMigration {
    pub state_dir: PathBuf,
    /// The legacy tree, if it exists.
    pub legacy: Option<PathBuf>,
    /// Where it goes (or went).
    pub target: Option<PathBuf>,
    /// True when there is nothing to migrate.
    pub clean: bool,
}

/// What `migrate-state --apply` changed on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegacyStateMoved {
    pub state_dir: PathBuf,
    /// True when a folder was moved; false when there was nothing to move.
    pub changed: bool,
    /// The legacy tree that was moved.
    pub moved_from: Option<PathBuf>,
    /// Where it is now.
    pub moved_to: Option<PathBuf>,
}

/// The plan for `state_dir` with timestamp `stamp` (no change on disk).
pub fn plan_legacy_state(state_dir: &Path, stamp: &str) -> LegacyStateMigration {
    let legacy = state_dir.join("deploy");
    let exists = legacy.is_dir();
    LegacyStateMigration {
        state_dir: state_dir.to_owned(),
        legacy: exists.then(|| legacy.clone()),
        target: exists.then(|| state_dir.join(format!(".deploy-migrated-{stamp}"))),
        clean: !exists,
    }
}

/// Renames `<state_dir>/deploy/` to `.deploy-migrated-<stamp>/` under the
/// `.migrate-state.lock`. Copies nothing; the rename is atomic.
pub fn migrate_legacy_state(state_dir: &Path, stamp: &str) -> Result<LegacyStateMoved, StoreError> {
    let _lock = FileLock::acquire(&state_dir.join(".migrate-state.lock"))?;
    let plan = plan_legacy_state(state_dir, stamp);
    if let (Some(legacy), Some(target)) = (&plan.legacy, &plan.target) {
        std::fs::rename(legacy, target).map_err(StoreError::io("rename", legacy))?;
        fsync_dir(state_dir)?;
    }
    Ok(LegacyStateMoved {
        state_dir: plan.state_dir,
        changed: plan.legacy.is_some(),
        moved_from: plan.legacy,
        moved_to: plan.target,
    })
}
