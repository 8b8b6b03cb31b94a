//! The idempotency table of one environment: the newest
//! [`IDEMPOTENCY_RECORDS_MAX`] records, one small file each, beside the
//! state document.
//!
//! ```text
//! <env>/idempotency/<generation, 20 digits>.<SHA-256 of the key, 32 hex>.json
//! ```
//!
//! The records used to live inside `environment.json`; a full window made
//! every change rewrite, fsync, replicate and re-read about 400 KiB. Here a
//! change with a key writes one file of about 1.5 KiB, and one without a
//! key writes nothing.
//!
//! Crash safety: a record is written (and fsynced) before the state of its
//! change, so a committed change always has its record. A record whose
//! generation the committed state has not reached belongs to a change that
//! never committed (the process died between the two writes): lookups
//! ignore it, and the next change removes it before the environment could
//! reach that generation and make it look committed.

use std::path::{Path, PathBuf};

use deploy::canonical::sha256_hex;
use deploy::state::{IDEMPOTENCY_RECORDS_MAX, IdempotencyRecord};

use crate::error::StoreError;
use crate::fs_util::{atomic_write, fsync_dir};

/// Folder of the table inside an environment's folder.
pub(crate) const IDEMPOTENCY_DIR: &str = "idempotency";

/// Hex digits of the key's digest in a file name.
const KEY_DIGEST_LEN: usize = 32;

/// One file of the table, as its name describes it.
struct Entry {
    generation: u64,
    digest: String,
    path: PathBuf,
}

/// The table in one environment's folder.
pub(crate) struct IdempotencyTable {
    dir: PathBuf,
}

fn key_digest(key: &str) -> String {
    let mut digest = sha256_hex(key.as_bytes());
    digest.truncate(KEY_DIGEST_LEN);
    digest
}

/// `<generation>.<digest>.json`, or `None` for anything else in the folder
/// (a temporary file of an interrupted write).
fn parse_name(name: &str) -> Option<(u64, String)> {
    let stem = name.strip_suffix(".json")?;
    let (generation, digest) = stem.split_once('.')?;
    let valid = digest.len() == KEY_DIGEST_LEN && digest.bytes().all(|b| b.is_ascii_hexdigit());
    Some((generation.parse().ok()?, digest.to_owned())).filter(|_| valid)
}

impl IdempotencyTable {
    pub(crate) fn new(env_dir: &Path) -> Self {
        Self {
            dir: env_dir.join(IDEMPOTENCY_DIR),
        }
    }

    /// Every record file, oldest first.
    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let listing = match std::fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::io("list", &self.dir)(error)),
        };
        let mut entries: Vec<Entry> = listing
            .flatten()
            .filter_map(|entry| {
                let (generation, digest) = parse_name(entry.file_name().to_str()?)?;
                Some(Entry {
                    generation,
                    digest,
                    path: entry.path(),
                })
            })
            .collect();
        entries.sort_by(|a, b| {
            a.generation
                .cmp(&b.generation)
                .then_with(|| a.digest.cmp(&b.digest))
        });
        Ok(entries)
    }

    fn read(path: &Path) -> Result<IdempotencyRecord, StoreError> {
        let bytes = std::fs::read(path).map_err(StoreError::io("read", path))?;
        serde_json::from_slice(&bytes).map_err(|error| StoreError::Corrupt {
            path: path.to_owned(),
            reason: format!("not an idempotency record: {error}"),
        })
    }

    /// The committed record of `key`: the newest one whose generation the
    /// state (at `committed`) has reached.
    pub(crate) fn lookup(
        &self,
        key: &str,
        committed: u64,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let digest = key_digest(key);
        let newest = self
            .entries()?
            .into_iter()
            .rev()
            .filter(|entry| entry.generation <= committed && entry.digest == digest)
            .map(|entry| Self::read(&entry.path))
            // Two keys with one digest prefix: the other key's record
            // answers nothing.
            .find(|record| !matches!(record, Ok(record) if record.key != key));
        newest.transpose()
    }

    /// Removes the records of changes that never committed (generation
    /// above `committed`). Called under the environment's lock before a
    /// change, so such a record never outlives the generation it claims.
    pub(crate) fn forget_uncommitted(&self, committed: u64) -> Result<(), StoreError> {
        let mut removed = false;
        for entry in self.entries()? {
            if entry.generation > committed {
                std::fs::remove_file(&entry.path)
                    .map_err(StoreError::io("remove uncommitted record", &entry.path))?;
                removed = true;
            }
        }
        if removed {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes `record` durably, then drops the oldest records beyond
    /// [`IDEMPOTENCY_RECORDS_MAX`].
    pub(crate) fn insert(&self, record: &IdempotencyRecord) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(StoreError::io("create", &self.dir))?;
        let path = self.dir.join(format!(
            "{:020}.{}.json",
            record.generation,
            key_digest(&record.key)
        ));
        let bytes = serde_json::to_vec(record).map_err(|error| StoreError::Corrupt {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        atomic_write(&path, &bytes)?;
        self.prune()
    }

    fn prune(&self) -> Result<(), StoreError> {
        let entries = self.entries()?;
        let excess = entries.len().saturating_sub(IDEMPOTENCY_RECORDS_MAX);
        for entry in entries.iter().take(excess) {
            std::fs::remove_file(&entry.path)
                .map_err(StoreError::io("remove old record", &entry.path))?;
        }
        // A pruned record coming back after a crash only widens the window
        // by one; no fsync of the folder is needed for it.
        Ok(())
    }

    /// Every committed record, oldest first (what a Raft snapshot carries).
    pub(crate) fn committed(&self, committed: u64) -> Result<Vec<IdempotencyRecord>, StoreError> {
        self.entries()?
            .iter()
            .filter(|entry| entry.generation <= committed)
            .map(|entry| Self::read(&entry.path))
            .collect()
    }

    /// Replaces the whole table by `records` (a snapshot's): each written
    /// durably, and every file not among them removed.
    pub(crate) fn replace(&self, records: &[IdempotencyRecord]) -> Result<(), StoreError> {
        let old = self.entries()?;
        for record in records {
            self.insert(record)?;
        }
        let kept: Vec<(u64, String)> = records
            .iter()
            .map(|r| (r.generation, key_digest(&r.key)))
            .collect();
        for entry in old {
            if !kept.contains(&(entry.generation, entry.digest.clone())) {
                std::fs::remove_file(&entry.path)
                    .map_err(StoreError::io("remove replaced record", &entry.path))?;
            }
        }
        if self.dir.is_dir() {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, generation: u64) -> IdempotencyRecord {
        IdempotencyRecord {
            key: key.to_owned(),
            noun: "traffic".into(),
            verb: "set".into(),
            request_fingerprint: "f".into(),
            response: serde_json::json!({"generation": generation}),
            generation,
            stored_at: chrono::DateTime::UNIX_EPOCH,
            etag: None,
            event: None,
        }
    }

    #[test]
    fn a_lookup_sees_only_committed_records_of_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = IdempotencyTable::new(dir.path());
        assert_eq!(table.lookup("a", 10).expect("empty"), None);
        table.insert(&record("a", 3)).expect("a");
        table.insert(&record("b", 4)).expect("b");
        assert_eq!(
            table.lookup("a", 3).expect("a").map(|r| r.generation),
            Some(3)
        );
        assert_eq!(table.lookup("a", 2).expect("not yet"), None);
        assert_eq!(table.lookup("c", 9).expect("c"), None);
        // The newest record of a key wins.
        table.insert(&record("a", 7)).expect("a again");
        assert_eq!(
            table.lookup("a", 9).expect("a").map(|r| r.generation),
            Some(7)
        );
    }

    #[test]
    fn an_uncommitted_record_is_forgotten_before_its_generation_commits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = IdempotencyTable::new(dir.path());
        table.insert(&record("a", 5)).expect("insert");
        // The state stayed at 4: the change of generation 5 never committed.
        table.forget_uncommitted(4).expect("forget");
        // Another change now commits generation 5: "a" must not replay.
        assert_eq!(table.lookup("a", 5).expect("lookup"), None);
    }

    #[test]
    fn the_table_keeps_the_newest_records_up_to_its_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = IdempotencyTable::new(dir.path());
        let total = IDEMPOTENCY_RECORDS_MAX as u64 + 10;
        for generation in 1..=total {
            table
                .insert(&record(&format!("k{generation}"), generation))
                .expect("insert");
        }
        let kept = table.committed(total).expect("committed");
        assert_eq!(kept.len(), IDEMPOTENCY_RECORDS_MAX);
        assert_eq!(kept.first().map(|r| r.generation), Some(11));
        assert_eq!(table.lookup("k10", total).expect("pruned"), None);
        assert!(table.lookup("k11", total).expect("kept").is_some());
    }

    #[test]
    fn replace_leaves_exactly_the_given_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let table = IdempotencyTable::new(dir.path());
        table.insert(&record("old", 1)).expect("old");
        table.insert(&record("both", 2)).expect("both");
        table
            .replace(&[record("both", 2), record("new", 3)])
            .expect("replace");
        let keys: Vec<String> = table
            .committed(u64::MAX)
            .expect("committed")
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["both", "new"]);
    }

    #[test]
    fn a_stray_file_in_the_folder_is_not_a_record() {
        assert_eq!(parse_name(".tmp-abc"), None);
        assert_eq!(parse_name("12.zz.json"), None);
        assert_eq!(parse_name("x.0123456789abcdef0123456789abcdef.json"), None);
        assert!(parse_name("00000000000000000012.0123456789abcdef0123456789abcdef.json").is_some());
    }
}
