//! One entry model over every archive format, so that extraction, inspection
//! and scanning apply the same rules whatever the bundle was packed with.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

pub use crate::entry::{ArchiveError, EntryKind, RawEntry};
use crate::format::{BundleFormat, DETECT_BYTES, detect};

/// Called once per entry with a reader over its content (empty for
/// non-files).
pub type Visitor<'v> = dyn FnMut(&RawEntry, &mut dyn Read) -> Result<(), ArchiveError> + 'v;

/// Detects the format of the file at `path`.
pub fn detect_file(path: &Path) -> Result<BundleFormat, ArchiveError> {
    let mut head = Vec::with_capacity(DETECT_BYTES);
    File::open(path)
        .and_then(|file| file.take(DETECT_BYTES as u64).read_to_end(&mut head))
        .map_err(ArchiveError::io("read", path))?;
    Ok(detect(&head, path)?)
}

/// Visits every entry of the archive at `path`, in archive order.
pub fn visit(
    path: &Path,
    format: BundleFormat,
    visitor: &mut Visitor<'_>,
) -> Result<(), ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::io("open", path))?;
    visit_reader(BufReader::new(file), format, path, visitor)
}

/// Visits every entry of an archive read from `reader`; `label` names it
/// in errors. The fuzz targets call this on bytes in memory.
pub fn visit_reader<R: BufRead + Seek + Send>(
    reader: R,
    format: BundleFormat,
    label: &Path,
    visitor: &mut Visitor<'_>,
) -> Result<(), ArchiveError> {
    let corrupt = |reason: String| ArchiveError::Corrupt {
        path: label.to_owned(),
        format,
        // Never an empty reason: the message must say what is wrong.
        reason: if reason.trim().is_empty() {
            "the reader stopped without saying why; the archive is truncated or not what its signature claims".to_owned()
        } else {
            reason
        },
    };
    match format {
        BundleFormat::Squashfs => visit_squashfs(reader, visitor, &corrupt),
        BundleFormat::Zip => visit_zip(reader, visitor, &corrupt),
        BundleFormat::Tar => visit_tar(reader, visitor, &corrupt),
        BundleFormat::TarGz => {
            visit_tar(flate2::bufread::GzDecoder::new(reader), visitor, &corrupt)
        }
        BundleFormat::TarZst => {
            let decoder = zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| corrupt(reason_of(&e)))?;
            visit_tar(decoder, visitor, &corrupt)
        }
    }
}

/// Why a reader failed: its message, or its debug form when the message
/// is empty (backhand's errors for some corrupt images display as "").
fn reason_of<E: std::fmt::Display + std::fmt::Debug>(error: &E) -> String {
    let shown = error.to_string();
    if shown.trim().is_empty() {
        format!("{error:?}")
    } else {
        shown
    }
}

fn visit_squashfs<R: BufRead + Seek + Send>(
    reader: R,
    visitor: &mut Visitor<'_>,
    corrupt: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    use backhand::{FilesystemReader, InnerNode};
    use std::os::unix::ffi::OsStrExt;

    let filesystem = FilesystemReader::from_reader(reader).map_err(|e| corrupt(reason_of(&e)))?;
    for node in filesystem.files() {
        // Names are stored per directory; backhand joins them under "/".
        let full = node.fullpath.as_os_str().as_bytes();
        let name = full.strip_prefix(b"/").unwrap_or(full).to_vec();
        if name.is_empty() {
            continue; // the root itself
        }
        let mode = Some(u32::from(node.header.permissions));
        let (kind, file) = match &node.inner {
            InnerNode::File(file) => (
                EntryKind::File {
                    size: file.file_len() as u64,
                },
                Some(file),
            ),
            InnerNode::Dir(_) => (EntryKind::Dir, None),
            InnerNode::Symlink(link) => (
                EntryKind::Symlink {
                    target: link.link.as_os_str().as_bytes().to_vec(),
                },
                None,
            ),
            InnerNode::CharacterDevice(_) => (
                EntryKind::Special {
                    what: "character device",
                },
                None,
            ),
            InnerNode::BlockDevice(_) => (
                EntryKind::Special {
                    what: "block device",
                },
                None,
            ),
            InnerNode::NamedPipe => (EntryKind::Special { what: "fifo" }, None),
            InnerNode::Socket => (EntryKind::Special { what: "socket" }, None),
        };
        let entry = RawEntry {
            name,
            kind,
            mode,
            compressed_size: None,
        };
        match file {
            Some(file) => {
                let mut content = filesystem
                    .file(file)
                    .reader_checked()
                    .map_err(|e| corrupt(reason_of(&e)))?;
                visitor(&entry, &mut content)?;
            }
            None => visitor(&entry, &mut std::io::empty())?,
        }
    }
    Ok(())
}

fn visit_zip<R: Read + Seek>(
    reader: R,
    visitor: &mut Visitor<'_>,
    corrupt: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| corrupt(reason_of(&e)))?;
    if archive.has_duplicate_names() {
        // The zip crate keys entries by name, so a repeated name would hide
        // all but one copy from the loop below; find it in the central
        // directory and refuse it with the rule every format uses.
        let dir_start = archive.central_directory_start();
        let mut reader = archive.into_inner();
        let name = repeated_central_name(&mut reader, dir_start)
            .map_err(|e| corrupt(reason_of(&e)))?
            .ok_or_else(|| {
                corrupt("the central directory repeats a name but could not be re-read".to_owned())
            })?;
        let entry = RawEntry {
            name,
            kind: EntryKind::File { size: 0 },
            mode: None,
            compressed_size: None,
        };
        let normalized = crate::entry::normalize_name(&entry)?;
        return Err(crate::entry::duplicate_entry(&entry, &normalized));
    }
    for index in 0..archive.len() {
        let mut zipped = archive
            .by_index(index)
            .map_err(|e| corrupt(reason_of(&e)))?;
        let name = zipped.name_raw().to_vec();
        let mode = zipped.unix_mode();
        let compressed_size = Some(zipped.compressed_size());
        let kind = if zipped.is_dir() {
            EntryKind::Dir
        } else if zipped.is_symlink() {
            // A ZIP symlink stores its target as the entry's content; bound
            // the read, a target is a path.
            let mut target = Vec::new();
            (&mut zipped)
                .take(4096)
                .read_to_end(&mut target)
                .map_err(|e| corrupt(reason_of(&e)))?;
            EntryKind::Symlink { target }
        } else {
            EntryKind::File {
                size: zipped.size(),
            }
        };
        let entry = RawEntry {
            name,
            kind,
            mode,
            compressed_size,
        };
        visitor(&entry, &mut zipped)?;
    }
    Ok(())
}

/// The first name the ZIP central directory at `dir_start` holds twice.
fn repeated_central_name<R: Read + Seek>(
    reader: &mut R,
    dir_start: u64,
) -> std::io::Result<Option<Vec<u8>>> {
    use std::collections::HashSet;
    use std::io::SeekFrom;

    /// A central directory file header: signature, then fixed fields up to
    /// the name (46 bytes in all).
    const SIGNATURE: [u8; 4] = [0x50, 0x4b, 0x01, 0x02];
    const FIXED: usize = 46;
    reader.seek(SeekFrom::Start(dir_start))?;
    let mut seen = HashSet::new();
    let mut fixed = [0u8; FIXED];
    // Each header is at least 46 bytes, so the loop ends with the archive.
    loop {
        match reader.read_exact(&mut fixed) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(error) => return Err(error),
        }
        if fixed[..4] != SIGNATURE {
            return Ok(None);
        }
        let field = |at: usize| u64::from(u16::from_le_bytes([fixed[at], fixed[at + 1]]));
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let mut name = Vec::new();
        reader.by_ref().take(name_len).read_to_end(&mut name)?;
        if name.len() as u64 != name_len {
            return Ok(None);
        }
        reader.seek(SeekFrom::Current((extra_len + comment_len) as i64))?;
        if !seen.insert(name.clone()) {
            return Ok(Some(name));
        }
    }
}

fn visit_tar(
    reader: impl Read,
    visitor: &mut Visitor<'_>,
    corrupt: &dyn Fn(String) -> ArchiveError,
) -> Result<(), ArchiveError> {
    use tar::EntryType;

    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| corrupt(reason_of(&e)))?;
    for item in entries {
        let mut item = item.map_err(|e| corrupt(reason_of(&e)))?;
        let header = item.header();
        let mode = header.mode().ok();
        let size = header.size().map_err(|e| corrupt(reason_of(&e)))?;
        let link = || -> Result<Vec<u8>, ArchiveError> {
            Ok(item
                .link_name_bytes()
                .map(|l| l.into_owned())
                .unwrap_or_default())
        };
        let kind = match header.entry_type() {
            EntryType::Regular | EntryType::Continuous => EntryKind::File { size },
            EntryType::Directory => EntryKind::Dir,
            EntryType::Symlink => EntryKind::Symlink { target: link()? },
            EntryType::Link => EntryKind::Hardlink { target: link()? },
            EntryType::Char => EntryKind::Special {
                what: "character device",
            },
            EntryType::Block => EntryKind::Special {
                what: "block device",
            },
            EntryType::Fifo => EntryKind::Special { what: "fifo" },
            // Long names and pax headers are folded into the next entry by
            // the tar crate; anything else is not plain data.
            _ => EntryKind::Special {
                what: "unsupported tar entry",
            },
        };
        let entry = RawEntry {
            name: item.path_bytes().into_owned(),
            kind,
            mode,
            compressed_size: None,
        };
        visitor(&entry, &mut item)?;
    }
    Ok(())
}
