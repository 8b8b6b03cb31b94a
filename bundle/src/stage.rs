//! Staging a bundle into a revision folder (the names are
//! `deploy::layout`'s):
//!
//! ```text
//! <env>/revisions/<rev>/bundle.gtbundle   immutable copy; its digest is the revision's
//! <env>/revisions/<rev>/bundle/           safely extracted content
//! <env>/revisions/<rev>/pack-list.lock    pinned runtime packs with digests
//! ```
//!
//! Any failure removes the revision folder, so a refused bundle leaves no
//! trace. Staging the same revision again is accepted only with the same
//! bytes (the digest is verified), and then changes nothing.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use deploy::canonical::ContentDigest;
use deploy::ids::RevisionId;
use deploy::pack_list_lock::{PACK_LIST_LOCK_SCHEMA, PackListLock};
use serde::Serialize;
use thiserror::Error;

use crate::extract::{ExtractLimits, extract};
use crate::format::BundleFormat;
use crate::manifest::{
    BUNDLE_YAML, BundleDescription, MANIFEST_BYTES_MAX, MANIFEST_JSON, ManifestError, describe,
};
use crate::packlist::{PackListError, digest_reader, pin_extracted};
use crate::read::{ArchiveError, detect_file};

/// The copy of the bundle inside the revision folder (named by
/// `deploy::layout`, the one owner of the on-disk layout).
pub const BUNDLE_COPY: &str = deploy::layout::STAGED_BUNDLE_FILE;
/// The extracted bundle inside the revision folder.
pub const BUNDLE_DIR: &str = deploy::layout::EXTRACTED_BUNDLE_DIR;
/// The pack list lock inside the revision folder.
pub const PACK_LIST_LOCK: &str = deploy::layout::PACK_LIST_LOCK_FILE;

/// Where and what to stage.
#[derive(Debug, Clone)]
pub struct StageRequest {
    /// The `.gtbundle` (or zip/tar) the operator gave.
    pub bundle: PathBuf,
    /// `<env>/revisions/<rev>`.
    pub revision_dir: PathBuf,
    /// `revisions/<rev>`: the folder relative to the environment, used in
    /// the lock's pack paths and the revision's `pack_list_lock_ref`.
    pub env_relative_dir: String,
    pub revision_id: RevisionId,
    pub limits: ExtractLimits,
}

/// A staged revision's facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Staged {
    pub digest: ContentDigest,
    pub format: BundleFormat,
    pub manifest: BundleDescription,
    pub lock: PackListLock,
    /// `revisions/<rev>/pack-list.lock`.
    pub lock_ref: String,
    /// True when the revision was already staged with these bytes.
    pub already_staged: bool,
}

/// Why staging failed; the revision folder is gone.
#[derive(Debug, Error)]
pub enum StageError {
    #[error("cannot stage {path}: {reason}")]
    Source { path: PathBuf, reason: String },
    #[error("the bundle was refused: {0}")]
    Archive(#[from] ArchiveError),
    #[error("the bundle's manifest was refused: {0}")]
    Manifest(#[from] ManifestError),
    #[error("the bundle's pack set was refused: {0}")]
    Packs(#[from] PackListError),
    #[error(
        "revision folder {path} already holds a bundle with digest {existing}, but this bundle is {offered}; a revision's bundle never changes, stage a new revision"
    )]
    DigestMismatch {
        path: PathBuf,
        existing: ContentDigest,
        offered: ContentDigest,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StageError {
    let path = path.to_owned();
    move |source| StageError::Io {
        action,
        path,
        source,
    }
}

/// The digest of the file at `path`.
pub fn file_digest(path: &Path) -> Result<ContentDigest, StageError> {
    let mut file = fs::File::open(path).map_err(io("open", path))?;
    digest_reader(&mut file).map_err(io("read", path))
}

/// Stages `request.bundle` into `request.revision_dir`.
pub fn stage(request: &StageRequest) -> Result<Staged, StageError> {
    let metadata = fs::metadata(&request.bundle).map_err(|error| StageError::Source {
        path: request.bundle.clone(),
        reason: error.to_string(),
    })?;
    if !metadata.is_file() {
        return Err(StageError::Source {
            path: request.bundle.clone(),
            reason: "it is not a file".to_owned(),
        });
    }
    let copy = request.revision_dir.join(BUNDLE_COPY);
    if copy.is_file() {
        return restage(request, &copy);
    }
    if fs::symlink_metadata(&request.revision_dir).is_ok() {
        return Err(StageError::Source {
            path: request.revision_dir.clone(),
            reason: "the revision folder exists but holds no staged bundle; remove it or stage a new revision".to_owned(),
        });
    }
    fs::create_dir_all(&request.revision_dir).map_err(io("create", &request.revision_dir))?;
    let staged = stage_fresh(request, &copy);
    if staged.is_err() {
        let _ = fs::remove_dir_all(&request.revision_dir);
    }
    staged
}

fn stage_fresh(request: &StageRequest, copy: &Path) -> Result<Staged, StageError> {
    fs::copy(&request.bundle, copy).map_err(io("copy the bundle to", copy))?;
    fs::File::open(copy)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync", copy))?;
    let digest = file_digest(copy)?;
    let format = detect_file(copy)?;
    let root = request.revision_dir.join(BUNDLE_DIR);
    extract(copy, format, &root, request.limits)?;
    let manifest = read_manifest(&root)?;
    let bundle_prefix = format!("{}/{BUNDLE_DIR}", request.env_relative_dir);
    let lock = PackListLock {
        schema: PACK_LIST_LOCK_SCHEMA.to_owned(),
        revision_id: request.revision_id,
        packs: pin_extracted(&root, &bundle_prefix)?,
    };
    let lock_path = request.revision_dir.join(PACK_LIST_LOCK);
    let mut bytes = serde_json::to_vec_pretty(&lock)
        .map_err(|e| io("encode", &lock_path)(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    let mut file = fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io("write", &lock_path))?;
    Ok(Staged {
        digest,
        format,
        manifest,
        lock,
        lock_ref: format!("{}/{PACK_LIST_LOCK}", request.env_relative_dir),
        already_staged: false,
    })
}

/// The revision was staged before (a retry): accept only the same bytes.
fn restage(request: &StageRequest, copy: &Path) -> Result<Staged, StageError> {
    let existing = file_digest(copy)?;
    let offered = file_digest(&request.bundle)?;
    if existing != offered {
        return Err(StageError::DigestMismatch {
            path: request.revision_dir.clone(),
            existing,
            offered,
        });
    }
    let lock_path = request.revision_dir.join(PACK_LIST_LOCK);
    let lock: PackListLock = fs::read(&lock_path)
        .map_err(io("read", &lock_path))
        .and_then(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| io("parse", &lock_path)(std::io::Error::other(e)))
        })?;
    Ok(Staged {
        digest: existing,
        format: detect_file(copy)?,
        manifest: read_manifest(&request.revision_dir.join(BUNDLE_DIR))?,
        lock,
        lock_ref: format!("{}/{PACK_LIST_LOCK}", request.env_relative_dir),
        already_staged: true,
    })
}

/// Reads and combines the manifests at the root of an extracted bundle.
pub fn read_manifest(root: &Path) -> Result<BundleDescription, StageError> {
    let read = |name: &str| -> Result<Option<Vec<u8>>, StageError> {
        let path = root.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                if meta.len() > MANIFEST_BYTES_MAX as u64 {
                    return Err(ManifestError::TooLarge {
                        file: if name == MANIFEST_JSON {
                            MANIFEST_JSON
                        } else {
                            BUNDLE_YAML
                        },
                        bytes: meta.len() as usize,
                    }
                    .into());
                }
                fs::read(&path).map(Some).map_err(io("read", &path))
            }
            _ => Ok(None),
        }
    };
    let json = read(MANIFEST_JSON)?;
    let yaml = read(BUNDLE_YAML)?;
    Ok(describe(json.as_deref(), yaml.as_deref())?)
}

/// Re-hashes a staged revision's bundle copy against the revision's digest.
pub fn verify(revision_dir: &Path, expected: &ContentDigest) -> Result<(), StageError> {
    let copy = revision_dir.join(BUNDLE_COPY);
    let existing = file_digest(&copy)?;
    if &existing != expected {
        return Err(StageError::DigestMismatch {
            path: revision_dir.to_owned(),
            existing,
            offered: expected.clone(),
        });
    }
    Ok(())
}
