//! Safe extraction of untrusted archives.
//!
//! Every entry's name is normalized and checked before anything is written;
//! writes go into a fresh staging folder that is renamed into place only
//! when the whole archive was accepted, so a refused archive leaves nothing
//! behind. Limits are enforced on the bytes actually written, not on the
//! sizes the archive declares.

use std::collections::BTreeSet;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::entry::{ArchiveError, EntryKind, RawEntry, duplicate_entry, normalize_path};
pub use crate::entry::{Rule, normalize_name, resolve_lexically};
use crate::format::BundleFormat;
use crate::read::visit;

/// Bounds on what one archive may expand to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Most entries. Real bundles have hundreds; 100 000 leaves room for
    /// asset-heavy packs while refusing inode-exhaustion archives.
    pub entries_max: usize,
    /// Most bytes written in total. The largest fixture is 7 MB; 4 GiB is
    /// far above any bundle and below a full disk.
    pub total_bytes_max: u64,
    /// Most bytes written per byte of archive, once past `ratio_floor_bytes`.
    /// Text compresses ~10x and sparse data more; 200x is only reached by
    /// zip bombs.
    pub ratio_max: u64,
    /// Output below this size is never refused for its ratio, so a tiny
    /// archive of highly compressible text still extracts.
    pub ratio_floor_bytes: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            entries_max: 100_000,
            total_bytes_max: 4 * 1024 * 1024 * 1024,
            ratio_max: 200,
            ratio_floor_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What an accepted archive contained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExtractReport {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
}

/// Counts what has been written and enforces the limits.
pub(crate) struct Budget {
    limits: ExtractLimits,
    archive_bytes: u64,
    entries: usize,
    pub(crate) bytes: u64,
}

impl Budget {
    pub(crate) fn new(limits: ExtractLimits, archive_bytes: u64) -> Self {
        Self {
            limits,
            archive_bytes,
            entries: 0,
            bytes: 0,
        }
    }

    pub(crate) fn count_entry(&mut self, entry: &RawEntry) -> Result<(), ArchiveError> {
        self.entries += 1;
        if self.entries > self.limits.entries_max {
            return Err(ArchiveError::refused(
                entry,
                Rule::TooManyEntries,
                format!(
                    "the archive has more than {} entries",
                    self.limits.entries_max
                ),
            ));
        }
        if let EntryKind::File { size } = entry.kind
            && size > self.limits.total_bytes_max
        {
            return Err(ArchiveError::refused(
                entry,
                Rule::TooLarge,
                format!(
                    "it declares {size} bytes; the limit is {}",
                    self.limits.total_bytes_max
                ),
            ));
        }
        Ok(())
    }

    /// Copies `content` into `out`, counting every byte against the limits.
    pub(crate) fn copy(
        &mut self,
        entry: &RawEntry,
        content: &mut dyn Read,
        out: &mut dyn Write,
    ) -> Result<u64, ArchiveError> {
        let mut buffer = [0u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            let read = content
                .read(&mut buffer)
                .map_err(|error| ArchiveError::Truncated {
                    entry: entry.display_name(),
                    reason: error.to_string(),
                })?;
            if read == 0 {
                return Ok(written);
            }
            written += read as u64;
            self.add(entry, read as u64)?;
            out.write_all(&buffer[..read])
                .map_err(ArchiveError::io("write", entry.display_name()))?;
        }
    }

    /// Counts `bytes` more output and enforces the limits.
    pub(crate) fn add(&mut self, entry: &RawEntry, bytes: u64) -> Result<(), ArchiveError> {
        self.bytes += bytes;
        self.check(entry)
    }

    fn check(&self, entry: &RawEntry) -> Result<(), ArchiveError> {
        if self.bytes > self.limits.total_bytes_max {
            return Err(ArchiveError::refused(
                entry,
                Rule::TooLarge,
                format!(
                    "the archive expands past {} bytes",
                    self.limits.total_bytes_max
                ),
            ));
        }
        let ratio_limit = self.archive_bytes.saturating_mul(self.limits.ratio_max);
        if self.bytes > self.limits.ratio_floor_bytes.max(ratio_limit) {
            return Err(ArchiveError::refused(
                entry,
                Rule::CompressionRatio,
                format!(
                    "{} bytes of archive expand past {} bytes (more than {}x): a decompression bomb",
                    self.archive_bytes, self.bytes, self.limits.ratio_max
                ),
            ));
        }
        Ok(())
    }
}

/// The checks every entry passes before anything is done with it, shared by
/// extraction and inspection so both refuse exactly the same archives.
pub(crate) struct Checker {
    pub(crate) budget: Budget,
    seen: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl Checker {
    pub(crate) fn new(limits: ExtractLimits, archive_bytes: u64) -> Self {
        Self {
            budget: Budget::new(limits, archive_bytes),
            seen: BTreeSet::new(),
            files: BTreeSet::new(),
        }
    }

    /// Counts, normalizes and checks `entry`; returns its normalized name.
    pub(crate) fn check(&mut self, entry: &RawEntry) -> Result<String, ArchiveError> {
        self.budget.count_entry(entry)?;
        let name = normalize_name(entry)?;
        if !self.seen.insert(name.clone()) {
            return Err(duplicate_entry(entry, &name));
        }
        match &entry.kind {
            EntryKind::Dir => {}
            EntryKind::File { .. } => {
                self.files.insert(name.clone());
            }
            EntryKind::Symlink { target } => check_symlink(entry, &name, target)?,
            EntryKind::Hardlink { target } => {
                let target_name = normalize_path(entry, target).map_err(|_| {
                    ArchiveError::refused(
                        entry,
                        Rule::HardlinkEscape,
                        "the hardlink target is not a path inside the bundle",
                    )
                })?;
                if !self.files.contains(&target_name) {
                    return Err(ArchiveError::refused(
                        entry,
                        Rule::HardlinkEscape,
                        format!(
                            "the target {target_name:?} is not a file extracted earlier from this bundle"
                        ),
                    ));
                }
                self.files.insert(name.clone());
            }
            EntryKind::Special { what } => {
                return Err(ArchiveError::refused(
                    entry,
                    Rule::SpecialFile,
                    format!("{what} entries are not allowed in bundles"),
                ));
            }
        }
        Ok(name)
    }
}

fn check_symlink(entry: &RawEntry, name: &str, target: &[u8]) -> Result<(), ArchiveError> {
    let Ok(target) = std::str::from_utf8(target) else {
        return Err(ArchiveError::refused(
            entry,
            Rule::NonUtf8Name,
            "the symlink target is not UTF-8",
        ));
    };
    if target.is_empty() || resolve_lexically(name, target).is_none() {
        return Err(ArchiveError::refused(
            entry,
            Rule::SymlinkEscape,
            format!("the target {target:?} is absolute, empty or leaves the bundle root"),
        ));
    }
    Ok(())
}

/// The normalized target of a hardlink that `Checker::check` accepted.
fn hardlink_target(entry: &RawEntry, target: &[u8]) -> Result<String, ArchiveError> {
    normalize_path(entry, target)
}

/// Extracts the archive at `archive` into `dest`, which must not exist yet.
/// On any refusal or error nothing is left at `dest`.
pub fn extract(
    archive: &Path,
    format: BundleFormat,
    dest: &Path,
    limits: ExtractLimits,
) -> Result<ExtractReport, ArchiveError> {
    if fs::symlink_metadata(dest).is_ok() {
        return Err(ArchiveError::Io {
            action: "extract into",
            path: dest.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the destination already exists",
            ),
        });
    }
    let parent = dest.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(ArchiveError::io("create", parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(parent)
        .map_err(ArchiveError::io("create a staging folder in", parent))?;
    let archive_bytes = fs::metadata(archive)
        .map_err(ArchiveError::io("stat", archive))?
        .len();
    let mut extractor = Extractor {
        root: staging.path().to_owned(),
        checker: Checker::new(limits, archive_bytes),
        symlinks: Vec::new(),
        report: ExtractReport::default(),
    };
    visit(archive, format, &mut |entry, content| {
        extractor.entry(entry, content)
    })?;
    extractor.verify_symlinks()?;
    set_permissions(staging.path(), 0o755)?;
    let staged = staging.keep();
    fs::rename(&staged, dest).map_err(|error| {
        let _ = fs::remove_dir_all(&staged);
        ArchiveError::io("move extracted bundle to", dest)(error)
    })?;
    extractor.report.bytes = extractor.checker.budget.bytes;
    Ok(extractor.report)
}

struct Extractor {
    root: PathBuf,
    checker: Checker,
    symlinks: Vec<(RawEntry, String)>,
    report: ExtractReport,
}

fn set_permissions(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(ArchiveError::io("set permissions of", path))
}

impl Extractor {
    fn entry(&mut self, entry: &RawEntry, content: &mut dyn Read) -> Result<(), ArchiveError> {
        let name = self.checker.check(entry)?;
        self.prepare_parents(entry, &name)?;
        let path = self.root.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(existing) if existing.is_dir() && entry.kind == EntryKind::Dir => return Ok(()),
            Ok(_) => {
                return Err(ArchiveError::refused(
                    entry,
                    Rule::PathConflict,
                    format!("{name} was already created by an earlier entry"),
                ));
            }
            Err(_) => {}
        }
        match &entry.kind {
            EntryKind::Dir => {
                fs::create_dir(&path).map_err(ArchiveError::io("create", &path))?;
                set_permissions(&path, 0o755)?;
                self.report.dirs += 1;
            }
            EntryKind::File { .. } => self.write_file(entry, &path, content)?,
            EntryKind::Symlink { target } => self.symlink(entry, &name, &path, target)?,
            EntryKind::Hardlink { target } => self.hardlink(entry, &path, target)?,
            // `Checker::check` refused these already.
            EntryKind::Special { .. } => {}
        }
        Ok(())
    }

    /// Creates missing parent folders; refuses to go through a symlink or a file.
    fn prepare_parents(&mut self, entry: &RawEntry, name: &str) -> Result<(), ArchiveError> {
        let mut current = self.root.clone();
        let parts: Vec<&str> = name.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            current.push(part);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(ArchiveError::refused(
                        entry,
                        Rule::WriteThroughSymlink,
                        format!(
                            "{} is a symlink; entries may not be written through it",
                            current
                                .strip_prefix(&self.root)
                                .unwrap_or(&current)
                                .display()
                        ),
                    ));
                }
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(ArchiveError::refused(
                        entry,
                        Rule::PathConflict,
                        format!("a parent of {name} is a file"),
                    ));
                }
                Err(_) => {
                    fs::create_dir(&current).map_err(ArchiveError::io("create", &current))?;
                    set_permissions(&current, 0o755)?;
                }
            }
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        entry: &RawEntry,
        path: &Path,
        content: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        // Keep the owner's execute bit (bundles ship start scripts); drop
        // setuid, setgid, sticky and group/world write.
        let executable = entry.mode.is_some_and(|mode| mode & 0o111 != 0);
        let mode = if executable { 0o755 } else { 0o644 };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(ArchiveError::io("create", path))?;
        self.checker.budget.copy(entry, content, &mut file)?;
        file.flush().map_err(ArchiveError::io("write", path))?;
        set_permissions(path, mode)?;
        self.report.files += 1;
        Ok(())
    }

    fn symlink(
        &mut self,
        entry: &RawEntry,
        name: &str,
        path: &Path,
        target: &[u8],
    ) -> Result<(), ArchiveError> {
        // `Checker::check` proved the target is UTF-8 and stays inside.
        let target = String::from_utf8_lossy(target).into_owned();
        std::os::unix::fs::symlink(&target, path)
            .map_err(ArchiveError::io("create symlink", path))?;
        self.symlinks.push((entry.clone(), name.to_owned()));
        self.report.symlinks += 1;
        Ok(())
    }

    fn hardlink(
        &mut self,
        entry: &RawEntry,
        path: &Path,
        target: &[u8],
    ) -> Result<(), ArchiveError> {
        let target_name = hardlink_target(entry, target)?;
        // Copy rather than link: the two names stay independent files.
        let source_path = self.root.join(&target_name);
        let mut source =
            fs::File::open(&source_path).map_err(ArchiveError::io("open", &source_path))?;
        self.write_file(entry, path, &mut source)
    }

    /// After extraction, every symlink must resolve (with the kernel's rules,
    /// through other symlinks) to something inside the root.
    fn verify_symlinks(&self) -> Result<(), ArchiveError> {
        let root = fs::canonicalize(&self.root).map_err(ArchiveError::io("resolve", &self.root))?;
        for (entry, name) in &self.symlinks {
            let resolved = fs::canonicalize(self.root.join(name));
            let inside = resolved.as_ref().is_ok_and(|path| path.starts_with(&root));
            if !inside {
                return Err(ArchiveError::refused(
                    entry,
                    Rule::SymlinkEscape,
                    "the link does not resolve to a file or folder inside the bundle",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> RawEntry {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: EntryKind::File { size: 0 },
            mode: None,
            compressed_size: None,
        }
    }

    #[test]
    fn names_normalize_or_name_their_rule() {
        assert_eq!(normalize_name(&named("./a/./b/")).expect("ok"), "a/b");
        let cases = [
            ("", Rule::EmptyName),
            ("./", Rule::EmptyName),
            ("a//b", Rule::EmptyName),
            ("/etc/passwd", Rule::AbsolutePath),
            ("a/../../b", Rule::ParentTraversal),
            ("..", Rule::ParentTraversal),
            ("C:/windows", Rule::DrivePrefix),
            ("c:x", Rule::DrivePrefix),
            ("a\\..\\b", Rule::InvalidName),
            ("a\nb", Rule::InvalidName),
        ];
        for (name, rule) in cases {
            assert_eq!(
                normalize_name(&named(name)).err().and_then(|e| e.rule()),
                Some(rule),
                "{name:?}"
            );
        }
        let bad_utf8 = RawEntry {
            name: vec![b'a', 0xff],
            ..named("")
        };
        assert_eq!(
            normalize_name(&bad_utf8).err().and_then(|e| e.rule()),
            Some(Rule::NonUtf8Name)
        );
    }

    #[test]
    fn symlink_targets_resolve_lexically() {
        assert_eq!(resolve_lexically("a/link", "b").as_deref(), Some("a/b"));
        assert_eq!(resolve_lexically("a/link", "../b").as_deref(), Some("b"));
        assert_eq!(resolve_lexically("a/link", "../../b"), None);
        assert_eq!(resolve_lexically("link", "/etc"), None);
    }
}
