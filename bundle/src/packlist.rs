//! Which `.gtpack` files of a bundle make up its runtime pack set.
//!
//! Pinned: `.gtpack` files under `packs/` at any depth, and directly under
//! `providers/<domain>/` for every domain except `deployer` (deploy-time
//! packs never run). Strays elsewhere (`resolved/`, the root) are ignored.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use deploy::canonical::ContentDigest;
use deploy::ids::PackId;
use deploy::pack_list_lock::PinnedPack;
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

const PACK_SUFFIX: &str = ".gtpack";

/// Why a pack set was refused.
#[derive(Debug, Error)]
pub enum PackListError {
    #[error(
        "the bundle has no runtime packs: put .gtpack files under packs/ or providers/<domain>/ (providers/deployer/ does not count)"
    )]
    Empty,
    #[error(
        "pack id {pack_id} appears twice: {first} and {second}; pack ids (file names) must be unique"
    )]
    Duplicate {
        pack_id: String,
        first: String,
        second: String,
    },
    #[error("{path}: the file name does not make a valid pack id: {reason}")]
    InvalidPackId { path: String, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The pack id `path` (relative to the bundle root) contributes, if any.
pub fn runtime_pack(path: &str) -> Option<Result<PackId, PackListError>> {
    let file_name = path.rsplit('/').next()?;
    let stem = file_name.strip_suffix(PACK_SUFFIX)?;
    let parts: Vec<&str> = path.split('/').collect();
    let pinned = match parts.as_slice() {
        ["packs", .., _] => true,
        ["providers", domain, _] => *domain != "deployer",
        _ => false,
    };
    pinned.then(|| {
        stem.parse::<PackId>()
            .map_err(|error| PackListError::InvalidPackId {
                path: path.to_owned(),
                reason: error.to_string(),
            })
    })
}

/// A pack found in a bundle, before it is placed in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundPack {
    pub pack_id: PackId,
    /// Path relative to the bundle root.
    pub path: String,
    pub digest: ContentDigest,
}

/// Collects packs, refusing duplicate ids; sorted by path.
#[derive(Debug, Default)]
pub struct PackCollector {
    packs: BTreeMap<String, FoundPack>,
}

impl PackCollector {
    /// Offers a file; ignored unless it is a runtime pack.
    pub fn offer(&mut self, path: &str, content: &mut dyn Read) -> Result<(), PackListError> {
        let Some(pack_id) = runtime_pack(path) else {
            return Ok(());
        };
        let pack_id = pack_id?;
        let digest = digest_reader(content).map_err(|source| PackListError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?;
        if let Some(first) = self.packs.values().find(|p| p.pack_id == pack_id) {
            let (first, second) = if first.path.as_str() < path {
                (first.path.clone(), path.to_owned())
            } else {
                (path.to_owned(), first.path.clone())
            };
            return Err(PackListError::Duplicate {
                pack_id: pack_id.to_string(),
                first,
                second,
            });
        }
        self.packs.insert(
            path.to_owned(),
            FoundPack {
                pack_id,
                path: path.to_owned(),
                digest,
            },
        );
        Ok(())
    }

    /// The packs found so far, sorted by path.
    pub fn packs(&self) -> Vec<FoundPack> {
        self.packs.values().cloned().collect()
    }

    /// The pinned set; refuses an empty one.
    pub fn finish(self) -> Result<Vec<FoundPack>, PackListError> {
        if self.packs.is_empty() {
            return Err(PackListError::Empty);
        }
        Ok(self.packs.into_values().collect())
    }
}

/// SHA-256 of everything `reader` yields, as `sha256:<hex>`.
pub fn digest_reader(reader: &mut dyn Read) -> std::io::Result<ContentDigest> {
    let mut hasher = Sha256::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
        .parse()
        .map_err(|_| std::io::Error::other("digest did not format"))
}

/// Pins the packs of an extracted bundle at `root`; `env_prefix` is the
/// bundle root's path relative to the environment folder.
pub fn pin_extracted(root: &Path, env_prefix: &str) -> Result<Vec<PinnedPack>, PackListError> {
    let mut collector = PackCollector::default();
    walk(root, root, &mut collector)?;
    Ok(collector
        .finish()?
        .into_iter()
        .map(|pack| PinnedPack {
            pack_id: pack.pack_id,
            path: format!("{env_prefix}/{}", pack.path),
            digest: pack.digest,
        })
        .collect())
}

fn walk(root: &Path, dir: &Path, collector: &mut PackCollector) -> Result<(), PackListError> {
    let io = |action, path: &Path| {
        let path = path.display().to_string();
        move |source| PackListError::Io {
            action,
            path,
            source,
        }
    };
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io("list", dir))?
        .flatten()
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let path = entry.path();
        // Only real files and folders count; symlinks are not followed so a
        // pack cannot be pinned twice or from outside the bundle.
        let file_type = entry.file_type().map_err(io("stat", &path))?;
        if file_type.is_dir() {
            walk(root, &path, collector)?;
        } else if file_type.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            if runtime_pack(&relative).is_some() {
                let mut file = fs::File::open(&path).map_err(io("open", &path))?;
                collector.offer(&relative, &mut file)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_packs_and_provider_domains_count() {
        let pinned = |path: &str| runtime_pack(path).map(|id| id.expect("valid").to_string());
        assert_eq!(pinned("packs/app.gtpack").as_deref(), Some("app"));
        assert_eq!(pinned("packs/a/dist/a.gtpack").as_deref(), Some("a"));
        assert_eq!(
            pinned("providers/messaging/webchat.gtpack").as_deref(),
            Some("webchat")
        );
        assert_eq!(pinned("providers/deployer/terraform.gtpack"), None);
        assert_eq!(pinned("providers/messaging/nested/x.gtpack"), None);
        assert_eq!(pinned("resolved/stray.gtpack"), None);
        assert_eq!(pinned("root.gtpack"), None);
        assert_eq!(pinned("packs/readme.md"), None);
    }

    #[test]
    fn duplicates_and_empty_sets_are_refused() {
        let mut collector = PackCollector::default();
        collector
            .offer("packs/app.gtpack", &mut &b"a"[..])
            .expect("first");
        let error = collector
            .offer("providers/state/app.gtpack", &mut &b"b"[..])
            .expect_err("duplicate");
        assert!(matches!(error, PackListError::Duplicate { .. }), "{error}");
        assert!(matches!(
            PackCollector::default().finish(),
            Err(PackListError::Empty)
        ));
    }
}
