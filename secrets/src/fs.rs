//! Crash-safe file primitives of the secret store: a file appears whole or
//! not at all (temp file in the same folder, fsync, link into place, folder
//! fsync) and is never replaced once written; an flock serializes writers.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::SecretsError;

/// Creates `path` with `bytes` (mode 0600) so that a crash leaves either
/// no file or the whole file. Refuses to replace an existing file
/// (`AlreadyExists` in the `Io` error): version files are immutable.
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // tempfile creates its files with mode 0600.
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(SecretsError::io("create a temporary file in", dir))?;
    temp.write_all(bytes)
        .map_err(SecretsError::io("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(SecretsError::io("fsync", temp.path()))?;
    temp.persist_noclobber(path)
        .map_err(|error| SecretsError::io("create", path)(error.error))?;
    fsync_dir(dir)
}

/// Creates `dir` and its missing parents (mode 0700), fsyncing each parent
/// so the new folders survive a crash.
pub(crate) fn create_dirs(dir: &Path) -> Result<(), SecretsError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    // Owner only: the folder names say which secrets exist.
    let mut builder = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(SecretsError::io("create folder", dir)(error)),
    }
    fsync_dir(dir.parent().unwrap_or(Path::new(".")))
}

/// Makes creations and renames inside `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), SecretsError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(SecretsError::io("fsync folder", dir))
}

/// An exclusive flock held until dropped.
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self, SecretsError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(SecretsError::io("open lock file", path))?;
        file.lock().map_err(SecretsError::io("lock", path))?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}
