//! The Raft log, vote and committed index on disk, in redb.
//!
//! redb commits are durable when `commit` returns (fsync under the default
//! `Durability::Immediate`), so an append is reported flushed only after its
//! transaction committed: nothing acknowledged by this node can be lost by a
//! crash. Entries are postcard-encoded inside a one-byte format version.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::types::{Entry, LogId, TypeConfig, Vote};

/// Log entries by index.
const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Vote, committed log id and last purged log id, by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";

/// Format version of every value this store writes. 2: standard leader
/// ids (a vote names the node voted for; 1 held advanced leader ids).
const FORMAT_VERSION: u8 = 2;

/// The on-disk log of one node; cheap to clone (the database is shared).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogStore")
    }
}

fn to_io(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn encode<T: serde::Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut bytes = vec![FORMAT_VERSION];
    bytes.extend(postcard::to_stdvec(value).map_err(to_io)?);
    Ok(bytes)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    match bytes.split_first() {
        Some((&FORMAT_VERSION, rest)) => postcard::from_bytes(rest).map_err(to_io),
        Some((version, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft log value has format version {version}, this build reads {FORMAT_VERSION}"
            ),
        )),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "empty raft log value",
        )),
    }
}

impl LogStore {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let db = Database::create(path).map_err(to_io)?;
        // Create the tables so that readers never see them missing.
        let txn = db.begin_write().map_err(to_io)?;
        txn.open_table(LOGS).map_err(to_io)?;
        txn.open_table(META).map_err(to_io)?;
        txn.commit().map_err(to_io)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(META).map_err(to_io)?;
        match table.get(key).map_err(to_io)? {
            Some(value) => decode(value.value()).map(Some),
            None => Ok(None),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(to_io)?;
        {
            let mut table = txn.open_table(META).map_err(to_io)?;
            table.insert(key, bytes.as_slice()).map_err(to_io)?;
        }
        txn.commit().map_err(to_io)
    }

    fn last_entry_log_id(&self) -> io::Result<Option<LogId>> {
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOGS).map_err(to_io)?;
        match table.last().map_err(to_io)? {
            Some((_, value)) => {
                let entry: Entry = decode(value.value())?;
                Ok(Some(entry.log_id()))
            }
            None => Ok(None),
        }
    }

    /// Number of entries held (for metrics and tests).
    pub fn entry_count(&self) -> io::Result<u64> {
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOGS).map_err(to_io)?;
        table.len().map_err(to_io)
    }
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => Some(i.saturating_add(1)),
        Bound::Excluded(i) => Some(*i),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        let txn = self.db.begin_read().map_err(to_io)?;
        let table = txn.open_table(LOGS).map_err(to_io)?;
        let iter = match end {
            Some(end) if end <= start => return Ok(Vec::new()),
            Some(end) => table.range(start..end).map_err(to_io)?,
            None => table.range(start..).map_err(to_io)?,
        };
        let mut entries = Vec::new();
        for item in iter {
            let (_, value) = item.map_err(to_io)?;
            entries.push(decode(value.value())?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.get_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = self.get_meta(PURGED_KEY)?;
        let last_log_id = self.last_entry_log_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(VOTE_KEY, vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.put_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let result = (|| {
            let txn = self.db.begin_write().map_err(to_io)?;
            {
                let mut table = txn.open_table(LOGS).map_err(to_io)?;
                for entry in entries {
                    let bytes = encode(&entry)?;
                    table
                        .insert(entry.log_id().index(), bytes.as_slice())
                        .map_err(to_io)?;
                }
            }
            txn.commit().map_err(to_io)
        })();
        let reported = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::other(e.to_string()));
        callback.io_completed(reported);
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let txn = self.db.begin_write().map_err(to_io)?;
        {
            let mut table = txn.open_table(LOGS).map_err(to_io)?;
            table.retain_in(from.., |_, _| false).map_err(to_io)?;
        }
        txn.commit().map_err(to_io)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index();
        let bytes = encode(&log_id)?;
        let txn = self.db.begin_write().map_err(to_io)?;
        {
            let mut meta = txn.open_table(META).map_err(to_io)?;
            meta.insert(PURGED_KEY, bytes.as_slice()).map_err(to_io)?;
            let mut table = txn.open_table(LOGS).map_err(to_io)?;
            table.retain_in(..=upto, |_, _| false).map_err(to_io)?;
        }
        txn.commit().map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;
    use openraft::storage::RaftLogStorage;

    type LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>;

    fn entry(term: u64, node: u64, index: u64) -> Entry {
        Entry {
            log_id: openraft::LogId::new(
                <LeaderId as openraft::vote::RaftLeaderIdExt>::new_committed(term, node),
                index,
            ),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn entries_survive_reopening_and_purge_keeps_the_last_purged_id() {
        // Regression: the purged log id was written as `Some(id)` and read as
        // a bare id, so a restarted node read a garbled log id and refused
        // to start ("log entry not found").
        let temp = tempfile::tempdir().expect("temp");
        let path = temp.path().join("log.redb");
        let node = 7_452_203_632_095_078_014;
        {
            let mut store = LogStore::open(&path).expect("open");
            let entries: Vec<Entry> = (1..=10).map(|i| entry(3, node, i)).collect();
            store
                .append(entries, IOFlushed::noop())
                .await
                .expect("append");
            store.purge(entry(3, node, 4).log_id).await.expect("purge");
            store
                .truncate_after(Some(entry(3, node, 8).log_id))
                .await
                .expect("truncate");
        }
        let mut store = LogStore::open(&path).expect("reopen");
        let state = store.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(entry(3, node, 4).log_id));
        assert_eq!(state.last_log_id, Some(entry(3, node, 8).log_id));
        let read = store.try_get_log_entries(0..100).await.expect("read");
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index()).collect();
        assert_eq!(indexes, vec![5, 6, 7, 8]);
    }
}
