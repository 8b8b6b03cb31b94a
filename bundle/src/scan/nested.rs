//! Bounded reading of ZIP archives found in scanned content (bundles, nested `.gtpack`s).
//!
//! Archives come from operators and may be hostile: a zip bomb, millions of entries, a size
//! field that lies, corrupt data. Every read here is bounded by a [`Budget`] shared by the
//! whole scan, and every failure becomes a [`Skip`] that the caller turns into a note.

use std::io::{Cursor, Read};
use zip::ZipArchive;
use zip::result::ZipError;

/// Most bytes reserved up front for an entry. The declared size may be a lie, so a larger
/// entry grows its buffer as it is actually read instead of reserving the whole budget.
const PREALLOC_MAX: u64 = 1024 * 1024;

/// The local file header signature that starts a ZIP archive.
const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// True when `bytes` start like a ZIP archive.
pub(super) fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(ZIP_MAGIC)
}

/// Bounds for one call of `Scanner::scan`. The public constants are the defaults; tests pass
/// small ones so they can hit each bound without allocating hundreds of MiB.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// How many archives deep entries are opened.
    pub(super) depth_max: usize,
    /// How many archive entries are read in total.
    pub(super) entries_max: usize,
    /// How many decompressed bytes are read in total.
    pub(super) bytes_max: u64,
    /// How many findings are reported per scanned file.
    pub(super) findings_per_file_max: usize,
}

/// What is left of the entry and byte limits while a scan walks nested archives.
#[derive(Debug)]
pub(super) struct Budget {
    entries_left: usize,
    bytes_left: u64,
}

impl Budget {
    /// The full budget of `limits`.
    pub(super) fn new(limits: &Limits) -> Self {
        Self {
            entries_left: limits.entries_max,
            bytes_left: limits.bytes_max,
        }
    }
}

/// Why (part of) a nested archive was not scanned. The `Display` text is the note's message.
#[derive(Debug, thiserror::Error)]
pub(super) enum Skip {
    /// The archive could not be opened.
    #[error("nested archive skipped: not a readable ZIP ({0})")]
    Corrupt(#[source] ZipError),
    /// The archive is nested deeper than the depth limit.
    #[error("nested archive not opened: it is nested deeper than {max} archives")]
    TooDeep {
        /// The depth limit.
        max: usize,
    },
    /// The entry limit ran out; later entries of this archive were not read.
    #[error("nested archive only partly scanned: the limit of {max} entries per scan was reached")]
    TooManyEntries {
        /// The entry limit.
        max: usize,
    },
    /// One entry could not be read or decompressed.
    #[error("entry skipped: unreadable ({0})")]
    Unreadable(String),
    /// One entry declares more decompressed bytes than are left in the budget.
    #[error(
        "entry skipped: its {size} decompressed bytes exceed the {left} bytes left of the scan's budget"
    )]
    TooLarge {
        /// The entry's declared size.
        size: u64,
        /// Bytes left in the budget.
        left: u64,
    },
    /// One entry decompressed to more than its declared size and the budget allowed.
    #[error(
        "entry skipped: it decompresses to more than the {left} bytes left of the scan's budget"
    )]
    Overran {
        /// Bytes left in the budget when reading started.
        left: u64,
    },
}

/// What reading the next entry produced.
pub(super) enum Entry {
    /// A file, decompressed.
    File {
        /// The entry's name inside the archive.
        name: String,
        /// Its content.
        data: Vec<u8>,
    },
    /// A directory: nothing to scan.
    Directory,
    /// An entry that was not read, and why.
    Skipped {
        /// The entry's name inside the archive (or its index if unreadable).
        name: String,
        /// Why it was skipped.
        reason: Skip,
    },
}

/// An opened archive, read entry by entry.
pub(super) struct NestedArchive<'a> {
    archive: ZipArchive<Cursor<&'a [u8]>>,
    next: usize,
}

impl<'a> NestedArchive<'a> {
    /// Opens the archive in `bytes` (its central directory only; no entry is read yet).
    pub(super) fn open(bytes: &'a [u8]) -> Result<Self, Skip> {
        let archive = ZipArchive::new(Cursor::new(bytes)).map_err(Skip::Corrupt)?;
        Ok(Self { archive, next: 0 })
    }

    /// Reads the next entry within `budget`. `None` at the end of the archive; an error when
    /// the entry budget is spent, which ends this archive (the caller notes it once).
    pub(super) fn next_entry(
        &mut self,
        budget: &mut Budget,
        limits: &Limits,
    ) -> Option<Result<Entry, Skip>> {
        if self.next >= self.archive.len() {
            return None;
        }
        if budget.entries_left == 0 {
            return Some(Err(Skip::TooManyEntries {
                max: limits.entries_max,
            }));
        }
        budget.entries_left -= 1;
        let index = self.next;
        self.next += 1;
        Some(Ok(self.read_entry(index, budget)))
    }

    fn read_entry(&mut self, index: usize, budget: &mut Budget) -> Entry {
        let mut file = match self.archive.by_index(index) {
            Ok(file) => file,
            Err(err) => {
                return Entry::Skipped {
                    name: format!("#{index}"),
                    reason: Skip::Unreadable(err.to_string()),
                };
            }
        };
        let name = String::from_utf8_lossy(file.name_raw()).into_owned();
        if file.is_dir() {
            return Entry::Directory;
        }
        let left = budget.bytes_left;
        if file.size() > left {
            return Entry::Skipped {
                name,
                reason: Skip::TooLarge {
                    size: file.size(),
                    left,
                },
            };
        }
        // The declared size may lie, so the read itself is capped too: one byte more than
        // the budget is enough to know it was exceeded.
        let reserve = file.size().min(PREALLOC_MAX);
        let mut data = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        let read = (&mut file)
            .take(left.saturating_add(1))
            .read_to_end(&mut data);
        // Whatever was decompressed counts, even on error: it cost the work.
        budget.bytes_left = left.saturating_sub(data.len() as u64);
        match read {
            Err(err) => Entry::Skipped {
                name,
                reason: Skip::Unreadable(err.to_string()),
            },
            Ok(_) if data.len() as u64 > left => Entry::Skipped {
                name,
                reason: Skip::Overran { left },
            },
            Ok(_) => Entry::File { name, data },
        }
    }
}
