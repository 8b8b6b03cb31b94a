//! Backup artifacts: a snapshot of an environment's state with a manifest
//! and an integrity digest over its canonical JSON.

use deploy::Timestamp;
use deploy::canonical::{StateIntegrity, canonical_digest};
use deploy::ids::{BackupId, EnvId};
use deploy::state::EnvironmentState;
use serde::{Deserialize, Serialize};

/// Schema discriminator of a backup manifest.
pub const BACKUP_MANIFEST_SCHEMA: &str = "greentic.backup-manifest.v1";
/// Schema discriminator of a backup artifact.
pub const BACKUP_ARTIFACT_SCHEMA: &str = "greentic.backup-artifact.v1";

/// What a backup is, without its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupManifest {
    pub schema: String,
    pub backup_id: BackupId,
    pub env_id: EnvId,
    pub created_at: Timestamp,
    pub generation: u64,
    /// SHA-256 over the canonical JSON of `snapshot`.
    pub integrity: StateIntegrity,
    /// Size of the canonical snapshot.
    pub size_bytes: u64,
}

/// A backup file: manifest plus the snapshot it describes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupArtifact {
    pub schema: String,
    pub manifest: BackupManifest,
    pub snapshot: EnvironmentState,
}

impl BackupArtifact {
    /// Wraps `snapshot` with a fresh manifest.
    pub fn new(backup_id: BackupId, created_at: Timestamp, snapshot: EnvironmentState) -> Self {
        let integrity = snapshot.integrity();
        let size_bytes = serde_json::to_value(&snapshot)
            .map(|value| deploy::canonical::to_canonical_json(&value).len() as u64)
            .unwrap_or(0);
        Self {
            schema: BACKUP_ARTIFACT_SCHEMA.to_owned(),
            manifest: BackupManifest {
                schema: BACKUP_MANIFEST_SCHEMA.to_owned(),
                backup_id,
                env_id: snapshot.env_id().clone(),
                created_at,
                generation: snapshot.generation,
                integrity,
                size_bytes,
            },
            snapshot,
        }
    }

    /// Recomputes the digest of the snapshot; `Err` carries the computed one.
    pub fn verify(&self) -> Result<(), String> {
        let computed = canonical_digest(&self.snapshot)
            .map(|integrity| integrity.digest)
            .unwrap_or_default();
        if computed == self.manifest.integrity.digest
            && self.manifest.integrity.algorithm == "sha-256"
        {
            Ok(())
        } else {
            Err(computed)
        }
    }
}
