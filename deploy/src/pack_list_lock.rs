//! The pack list a staged revision pins: which `.gtpack` files, with their
//! digests, make up its runtime pack set.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::canonical::ContentDigest;
use crate::ids::{PackId, RevisionId};
use crate::revision::PackListEntry;

/// Schema discriminator of a pack list lock.
pub const PACK_LIST_LOCK_SCHEMA: &str = "greentic.pack-list-lock.v1";

/// One pinned pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PinnedPack {
    /// The `.gtpack` file stem.
    pub pack_id: PackId,
    /// Path relative to the environment folder.
    pub path: String,
    pub digest: ContentDigest,
}

/// `revisions/<rev>/pack-list.lock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackListLock {
    pub schema: String,
    pub revision_id: RevisionId,
    pub packs: Vec<PinnedPack>,
}

impl PackListLock {
    /// The revision's `pack_list`, projected from the lock (version 0.0.0
    /// is the sentinel for "version not recorded in the lock").
    pub fn pack_list(&self) -> Vec<PackListEntry> {
        self.packs
            .iter()
            .map(|pack| PackListEntry {
                pack_id: pack.pack_id.clone(),
                version: semver::Version::new(0, 0, 0),
                digest: pack.digest.clone(),
                source_uri: None,
            })
            .collect()
    }
}
