//! The entry model every archive format is read into, the safety rules an
//! entry can break, and the normalization of entry names: what reading,
//! extraction, inspection and scanning share.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::format::BundleFormat;

/// What an archive entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File {
        size: u64,
    },
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    Hardlink {
        target: Vec<u8>,
    },
    /// Devices, fifos, sockets and anything else that is not plain data.
    Special {
        what: &'static str,
    },
}

/// One entry as the archive names it, before any path check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The name exactly as stored (bytes: names are not trusted to be UTF-8).
    pub name: Vec<u8>,
    pub kind: EntryKind,
    /// Unix permission bits, when the format records them.
    pub mode: Option<u32>,
    /// Compressed size, when the format records it per entry (ZIP).
    pub compressed_size: Option<u64>,
}

impl RawEntry {
    /// The name for messages (lossy UTF-8).
    pub fn display_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Why reading an archive failed.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// An entry breaks a safety rule; nothing was kept.
    #[error("entry {entry:?} refused ({rule}): {detail}")]
    Refused {
        entry: String,
        rule: Rule,
        detail: String,
    },
    /// The archive is truncated, corrupt or not what its signature claims.
    #[error("{path} is not a readable {format} archive: {reason}")]
    Corrupt {
        path: PathBuf,
        format: BundleFormat,
        reason: String,
    },
    /// An entry's content could not be read to its end.
    #[error("entry {entry:?} could not be read: {reason}; the archive is truncated or corrupt")]
    Truncated { entry: String, reason: String },
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ArchiveError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| ArchiveError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn refused(entry: &RawEntry, rule: Rule, detail: impl Into<String>) -> Self {
        ArchiveError::Refused {
            entry: entry.display_name(),
            rule,
            detail: detail.into(),
        }
    }

    /// The rule an entry broke, if this is a refusal.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            ArchiveError::Refused { rule, .. } => Some(*rule),
            _ => None,
        }
    }
}

/// The safety rule an entry broke; each refusal names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    AbsolutePath,
    ParentTraversal,
    DrivePrefix,
    EmptyName,
    NonUtf8Name,
    InvalidName,
    DuplicateEntry,
    PathConflict,
    SymlinkEscape,
    HardlinkEscape,
    SpecialFile,
    WriteThroughSymlink,
    TooManyEntries,
    TooLarge,
    CompressionRatio,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Rule::AbsolutePath => "absolute-path",
            Rule::ParentTraversal => "parent-traversal",
            Rule::DrivePrefix => "drive-prefix",
            Rule::EmptyName => "empty-name",
            Rule::NonUtf8Name => "non-utf8-name",
            Rule::InvalidName => "invalid-name",
            Rule::DuplicateEntry => "duplicate-entry",
            Rule::PathConflict => "path-conflict",
            Rule::SymlinkEscape => "symlink-escape",
            Rule::HardlinkEscape => "hardlink-escape",
            Rule::SpecialFile => "special-file",
            Rule::WriteThroughSymlink => "write-through-symlink",
            Rule::TooManyEntries => "too-many-entries",
            Rule::TooLarge => "too-large",
            Rule::CompressionRatio => "compression-ratio",
        };
        f.write_str(name)
    }
}

/// Longest path component, as on common file systems.
const COMPONENT_BYTES_MAX: usize = 255;
/// Longest relative path.
const PATH_BYTES_MAX: usize = 4096;

/// Normalizes an entry name to a relative `a/b/c` path, or refuses it.
/// Leading `./` and `.` components are dropped; a trailing `/` is allowed.
pub fn normalize_name(entry: &RawEntry) -> Result<String, ArchiveError> {
    normalize_path(entry, &entry.name)
}

pub(crate) fn normalize_path(entry: &RawEntry, raw: &[u8]) -> Result<String, ArchiveError> {
    let refuse = |rule, detail: &str| Err(ArchiveError::refused(entry, rule, detail));
    let Ok(text) = std::str::from_utf8(raw) else {
        return refuse(Rule::NonUtf8Name, "names must be valid UTF-8");
    };
    if text.starts_with('/') {
        return refuse(
            Rule::AbsolutePath,
            "names must be relative to the bundle root",
        );
    }
    if text.contains('\\') {
        return refuse(
            Rule::InvalidName,
            "'\\' is not a path separator in bundles; use '/'",
        );
    }
    if text.chars().any(char::is_control) {
        return refuse(
            Rule::InvalidName,
            "names must not contain control characters",
        );
    }
    let trimmed = text.strip_suffix('/').unwrap_or(text);
    let mut parts = Vec::new();
    for (index, part) in trimmed.split('/').enumerate() {
        if index == 0
            && part.len() >= 2
            && part.as_bytes()[1] == b':'
            && part.as_bytes()[0].is_ascii_alphabetic()
        {
            return refuse(
                Rule::DrivePrefix,
                "names must not start with a drive letter",
            );
        }
        match part {
            "." => continue,
            ".." => return refuse(Rule::ParentTraversal, "'..' would leave the bundle root"),
            "" => return refuse(Rule::EmptyName, "the name has an empty component ('//')"),
            part if part.len() > COMPONENT_BYTES_MAX => {
                return refuse(
                    Rule::InvalidName,
                    "a path component is longer than 255 bytes",
                );
            }
            part => parts.push(part),
        }
    }
    let normalized = parts.join("/");
    if normalized.is_empty() {
        return refuse(Rule::EmptyName, "the name is empty");
    }
    if normalized.len() > PATH_BYTES_MAX {
        return refuse(Rule::InvalidName, "the path is longer than 4096 bytes");
    }
    Ok(normalized)
}

/// Resolves a symlink target against the link's folder without touching
/// the disk; `None` when it leaves the root.
pub fn resolve_lexically(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut stack: Vec<&str> = link.split('/').collect();
    stack.pop(); // the link's own name
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop()?;
            }
            part => stack.push(part),
        }
    }
    Some(stack.join("/"))
}

/// The one refusal for two entries that name the same file once
/// normalized, whatever the archive format: the reader of a format that
/// cannot show both entries (ZIP's by-name index) refuses with it too.
pub(crate) fn duplicate_entry(entry: &RawEntry, normalized: &str) -> ArchiveError {
    ArchiveError::refused(
        entry,
        Rule::DuplicateEntry,
        format!(
            "{normalized} appears more than once; an archive may name each file only once, or which copy is used would depend on the reader"
        ),
    )
}
