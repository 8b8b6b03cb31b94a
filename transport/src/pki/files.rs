//! File helpers for PKI material: atomic writes with explicit modes, and a refusal to
//! read private keys that other users could read.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PkiError;

/// Mode of private key files: owner read/write only.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of certificate files: certificates are public.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories we create: they hold private keys.
const DIRECTORY_MODE: u32 = 0o700;
/// Permission bits that must be clear on a private key file.
const GROUP_OR_OTHER_BITS: u32 = 0o077;

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY_MODE)
        .create(dir)
        .map_err(|source| PkiError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `contents` to `path` atomically: a temporary sibling file is created with
/// `mode`, synced, and renamed over `path`, so a crash never leaves a half-written key
/// and a key is never briefly world-readable.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let temporary = temporary_sibling(path);
    let write_error = |source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    };
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        // The mode given to open() is filtered by the umask and ignored for an existing
        // file, so set it explicitly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if result.is_err() {
        // Best effort: the temporary file is ours and useless after a failure.
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}

/// Reads a public file (certificate) as text.
pub(crate) fn read_public(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a private key file, refusing one that group or others may read.
pub(crate) fn read_private(path: &Path) -> Result<String, PkiError> {
    let metadata = fs::metadata(path).map_err(|source| PkiError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & GROUP_OR_OTHER_BITS != 0 {
        return Err(PkiError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_public(path)
}

fn temporary_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
