//! Looking inside a bundle without extracting it: manifest, files, packs,
//! digest. Every entry passes the same checks as extraction, so a bundle
//! that inspects cleanly also stages.

use std::io::Read;
use std::path::Path;

use deploy::canonical::ContentDigest;
use serde::Serialize;

use crate::extract::{Checker, ExtractLimits};
use crate::format::BundleFormat;
use crate::manifest::{
    BUNDLE_YAML, BundleDescription, MANIFEST_BYTES_MAX, MANIFEST_JSON, describe,
};
use crate::packlist::{FoundPack, PackCollector};
use crate::read::{ArchiveError, EntryKind, RawEntry, detect_file, visit};
use crate::stage::file_digest;

/// One row of the file list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRow {
    pub path: String,
    pub kind: &'static str,
    pub size: u64,
    /// A symlink's target as stored (lossy UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What `gtc bundle inspect` reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Inspection {
    pub path: String,
    pub format: BundleFormat,
    pub digest: ContentDigest,
    pub size_bytes: u64,
    pub manifest: Option<BundleDescription>,
    /// Why the manifest could not be read, if it could not.
    pub manifest_error: Option<String>,
    pub packs: Vec<FoundPack>,
    /// Why the pack set would be refused at staging, if it would.
    pub packs_error: Option<String>,
    pub files: Vec<FileRow>,
    pub total_bytes: u64,
}

/// Called for every accepted regular file with its normalized path and content.
pub type FileVisitor<'v> = dyn FnMut(&str, &mut dyn Read) -> Result<(), ArchiveError> + 'v;

/// Visits every entry of the archive with extraction's checks, handing
/// regular files to `on_file`; returns the file rows.
pub fn walk(
    path: &Path,
    format: BundleFormat,
    limits: ExtractLimits,
    on_file: &mut FileVisitor<'_>,
) -> Result<(Vec<FileRow>, u64), ArchiveError> {
    let archive_bytes = std::fs::metadata(path)
        .map_err(ArchiveError::io("stat", path))?
        .len();
    let mut checker = Checker::new(limits, archive_bytes);
    let mut rows = Vec::new();
    visit(
        path,
        format,
        &mut |entry: &RawEntry, content: &mut dyn Read| {
            let name = checker.check(entry)?;
            let (kind, size) = match &entry.kind {
                EntryKind::File { .. } | EntryKind::Hardlink { .. } => {
                    // Count the bytes actually read, as extraction would, without
                    // holding the file in memory.
                    let mut metered = Metered {
                        inner: content,
                        budget: &mut checker.budget,
                        entry,
                        read: 0,
                        refusal: None,
                    };
                    let visited = on_file(&name, &mut metered);
                    let drained = std::io::copy(&mut metered, &mut std::io::sink());
                    if let Some(refusal) = metered.refusal.take() {
                        return Err(refusal);
                    }
                    visited?;
                    drained.map_err(|error| ArchiveError::Truncated {
                        entry: name.clone(),
                        reason: error.to_string(),
                    })?;
                    ("file", metered.read)
                }
                EntryKind::Dir => ("dir", 0),
                EntryKind::Symlink { .. } => ("symlink", 0),
                EntryKind::Special { what } => (*what, 0),
            };
            let target = match &entry.kind {
                EntryKind::Symlink { target } => Some(String::from_utf8_lossy(target).into_owned()),
                _ => None,
            };
            rows.push(FileRow {
                path: name,
                kind,
                size,
                target,
            });
            Ok(())
        },
    )?;
    Ok((rows, checker.budget.bytes))
}

/// A reader that charges every byte to the extraction budget.
struct Metered<'a> {
    inner: &'a mut dyn Read,
    budget: &'a mut crate::extract::Budget,
    entry: &'a RawEntry,
    read: u64,
    /// The limit that stopped the read, reported instead of the I/O error.
    refusal: Option<ArchiveError>,
}

impl Read for Metered<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        if self.refusal.is_some() {
            return Err(std::io::Error::other("the entry exceeded a limit"));
        }
        let read = self.inner.read(buffer)?;
        self.read += read as u64;
        if let Err(refusal) = self.budget.add(self.entry, read as u64) {
            self.refusal = Some(refusal);
            return Err(std::io::Error::other("the entry exceeded a limit"));
        }
        Ok(read)
    }
}

/// Inspects the bundle at `path`.
pub fn inspect(path: &Path, limits: ExtractLimits) -> Result<Inspection, ArchiveError> {
    let format = detect_file(path)?;
    let digest = file_digest(path).map_err(|error| ArchiveError::Io {
        action: "hash",
        path: path.to_owned(),
        source: std::io::Error::other(error.to_string()),
    })?;
    let size_bytes = std::fs::metadata(path)
        .map_err(ArchiveError::io("stat", path))?
        .len();
    let mut manifest_json = None;
    let mut bundle_yaml = None;
    let mut packs = PackCollector::default();
    let mut packs_error = None;
    let (mut files, total_bytes) = walk(path, format, limits, &mut |name, content| {
        if name == MANIFEST_JSON || name == BUNDLE_YAML {
            let mut bytes = Vec::new();
            content
                .take(MANIFEST_BYTES_MAX as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(ArchiveError::io("read", name))?;
            if name == MANIFEST_JSON {
                manifest_json = Some(bytes);
            } else {
                bundle_yaml = Some(bytes);
            }
        } else if packs_error.is_none()
            && let Err(error) = packs.offer(name, content)
        {
            packs_error = Some(error.to_string());
        }
        Ok(())
    })?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let (manifest, manifest_error) =
        match describe(manifest_json.as_deref(), bundle_yaml.as_deref()) {
            Ok(manifest) => (Some(manifest), None),
            Err(error) => (None, Some(error.to_string())),
        };
    let found = packs.packs();
    if packs_error.is_none() && found.is_empty() {
        packs_error = Some(crate::packlist::PackListError::Empty.to_string());
    }
    Ok(Inspection {
        path: path.display().to_string(),
        format,
        digest,
        size_bytes,
        manifest,
        manifest_error,
        packs: found,
        packs_error,
        files,
        total_bytes,
    })
}
