//! The gossip generation: which incarnation of a node is speaking.
//!
//! chitchat identifies a node by (name, generation, address) and keeps, per
//! identity, the highest heartbeat and key version it has seen. A node that
//! restarts with the *same* generation starts again at heartbeat 1, so every
//! peer keeps ignoring its heartbeats as stale and never sees it live again
//! (the simulation found exactly this). A restart must therefore gossip
//! with a generation never used before by that node.
//!
//! The start time in milliseconds would usually work, but a clock that
//! steps backwards (NTP correction, a VM restored from snapshot) would
//! reuse or lower it. A counter kept on disk only moves forward: each start
//! reads it, adds one, and makes the new value durable before gossip starts.

use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Name of the counter file inside the node's state directory.
pub const GENERATION_FILE_NAME: &str = "gossip_generation";

/// Largest counter file read. A u64 in decimal is at most 20 digits; the
/// bound keeps a corrupted or wrong file from being read whole.
pub const MAX_GENERATION_FILE_BYTES: u64 = 64;

/// One incarnation of a node in gossip. Larger is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(u64);

/// Why the next generation could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// Reading, writing or syncing the counter file failed.
    #[error("generation counter {path}: {operation} failed: {source}")]
    Io {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: io::Error,
    },
    /// The file exists but does not hold a decimal u64. It is not reset
    /// silently: restarting from zero could reuse a generation.
    #[error("generation counter {path} holds {content:?}, not a decimal u64")]
    Corrupt { path: PathBuf, content: String },
    /// The counter reached u64::MAX; the node needs a new identity.
    #[error("generation counter {path} is exhausted")]
    Exhausted { path: PathBuf },
}

impl Generation {
    /// Wraps a raw generation, e.g. one chosen by a test or the simulator.
    pub const fn new(value: u64) -> Self {
        Self(value)
    }

    /// The raw value chitchat carries as `generation_id`.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Reads the counter in `state_dir`, increments it, writes it back
    /// durably (temp file, fsync, rename, fsync of the directory) and
    /// returns the new value. The first call in an empty directory returns 1.
    ///
    /// Blocking file I/O: call it once at startup, before gossip starts (or
    /// from `spawn_blocking`). Two processes must not share one directory.
    pub fn next_persisted(state_dir: &Path) -> Result<Generation, GenerationError> {
        let path = state_dir.join(GENERATION_FILE_NAME);
        let previous = read_counter(&path)?;
        let next = previous
            .checked_add(1)
            .ok_or_else(|| GenerationError::Exhausted { path: path.clone() })?;
        write_counter_durably(state_dir, &path, next)?;
        Ok(Generation(next))
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}", self.0)
    }
}

fn read_counter(path: &Path) -> Result<u64, GenerationError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_error(path, "open", source)),
    };
    let mut content = String::new();
    file.take(MAX_GENERATION_FILE_BYTES)
        .read_to_string(&mut content)
        .map_err(|source| io_error(path, "read", source))?;
    content
        .trim()
        .parse::<u64>()
        .map_err(|_| GenerationError::Corrupt {
            path: path.to_path_buf(),
            content,
        })
}

fn write_counter_durably(state_dir: &Path, path: &Path, value: u64) -> Result<(), GenerationError> {
    let temporary = state_dir.join(format!("{GENERATION_FILE_NAME}.tmp"));
    let mut file =
        File::create(&temporary).map_err(|source| io_error(&temporary, "create", source))?;
    file.write_all(format!("{value}\n").as_bytes())
        .map_err(|source| io_error(&temporary, "write", source))?;
    file.sync_all()
        .map_err(|source| io_error(&temporary, "fsync", source))?;
    drop(file);
    fs::rename(&temporary, path).map_err(|source| io_error(path, "rename", source))?;
    // The rename is durable only once the directory entry is synced.
    File::open(state_dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| io_error(state_dir, "fsync directory", source))
}

fn io_error(path: &Path, operation: &'static str, source: io::Error) -> GenerationError {
    GenerationError::Io {
        path: path.to_path_buf(),
        operation,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_strictly_increases_across_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Generation::next_persisted(dir.path()).expect("first");
        let second = Generation::next_persisted(dir.path()).expect("second");
        let third = Generation::next_persisted(dir.path()).expect("third");
        assert_eq!(first, Generation::new(1));
        assert!(first < second && second < third);
        let stored = fs::read_to_string(dir.path().join(GENERATION_FILE_NAME)).expect("read");
        assert_eq!(stored, "3\n");
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(GENERATION_FILE_NAME), "seven").expect("write");
        let result = Generation::next_persisted(dir.path());
        assert!(matches!(result, Err(GenerationError::Corrupt { .. })));
    }

    #[test]
    fn exhausted_counter_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(GENERATION_FILE_NAME), u64::MAX.to_string()).expect("write");
        let result = Generation::next_persisted(dir.path());
        assert!(matches!(result, Err(GenerationError::Exhausted { .. })));
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = Generation::next_persisted(&dir.path().join("absent"));
        assert!(matches!(result, Err(GenerationError::Io { .. })));
    }
}
