//! Crash-safe file primitives: atomic replace, directory fsync, locks.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::StoreError;

/// Writes `bytes` to `path` so that a crash at any point leaves either the
/// old file or the new one, never a mix: write a temp file in the same
/// folder, fsync it, rename it over `path`, then fsync the folder so the
/// rename itself is durable.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(StoreError::io("create a temporary file in", dir))?;
    temp.write_all(bytes)
        .map_err(StoreError::io("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(StoreError::io("fsync", temp.path()))?;
    temp.persist(path)
        .map_err(|error| StoreError::io("rename into place", path)(error.error))?;
    fsync_dir(dir)
}

/// Makes renames and creations inside `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(StoreError::io("fsync folder", dir))
}

/// An exclusive advisory lock (flock) held until dropped. Two processes or
/// two store handles in one process exclude each other.
pub(crate) struct FileLock {
    file: File,
}

impl FileLock {
    /// Blocks until the lock on `path` (created if missing) is held.
    pub(crate) fn acquire(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(StoreError::io("open lock file", path))?;
        file.lock().map_err(StoreError::io("lock", path))?;
        Ok(Self { file })
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the
        // release explicit and immediate.
        let _ = self.file.unlock();
    }
}
