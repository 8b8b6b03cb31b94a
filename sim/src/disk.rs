//! A node's simulated Raft log disk: its log, vote and committed index, as
//! the log storage consensus runs on in the simulation (production's is
//! redb, `consensus::DiskLog`).
//!
//! Appends are written at once but become durable only when their flush
//! completes, after a seeded disk latency, in order; openraft is told an
//! append is flushed only then. A crash keeps what was durable; of the
//! rest a [`DiskFault::LostWrites`] keeps nothing, as a power cut loses
//! what was never fsynced, and a [`DiskFault::TornWrite`] keeps a prefix
//! (the disk wrote some of the unflushed appends, in order, before the
//! power went). Writes reach the disk in order, so a committed index saved
//! after a lost append is lost too. The vote is durable before
//! `save_vote` returns. A slow disk is a larger latency.
//!
//! The disk outlives the node's Raft: a restarted node opens the same one.
//! The replica itself (the store folder and the state machine's files)
//! lives in the node's folder on the real file system. This owns only
//! bytes; it must not know what a command means.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consensus::{Entry, LogId, TypeConfig, Vote};
use openraft::OptionalSend;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rand::Rng;
use tokio::time::Instant;

use crate::entropy::SimRng;

/// What a crash does to the writes that were not flushed yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// None of them reached the disk.
    LostWrites,
    /// The first `kept` of them did (in order), the rest did not.
    TornWrite { kept: usize },
}

/// The latency range of one flush.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpeed {
    pub min: Duration,
    pub max: Duration,
}

impl DiskSpeed {
    /// An SSD: 50 µs to 1 ms per flush.
    pub const FAST: Self = Self {
        min: Duration::from_micros(50),
        max: Duration::from_millis(1),
    };
    /// A disk in trouble: 20 to 200 ms per flush.
    pub const SLOW: Self = Self {
        min: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
}

struct DiskState {
    entries: BTreeMap<u64, Entry>,
    /// Highest index whose flush completed (and was not truncated since).
    durable: Option<u64>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    speed: DiskSpeed,
    /// When the last scheduled flush completes; flushes finish in order.
    flush_tail: Option<Instant>,
    /// Bumped by a crash: flushes scheduled before it never complete.
    epoch: u64,
    rng: SimRng,
}

/// One node's disk; cheap to clone.
#[derive(Clone)]
pub struct Disk {
    state: Arc<Mutex<DiskState>>,
}

impl Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Disk")
    }
}

impl Disk {
    pub fn new(rng: SimRng) -> Self {
        Self {
            state: Arc::new(Mutex::new(DiskState {
                entries: BTreeMap::new(),
                durable: None,
                vote: None,
                committed: None,
                purged: None,
                speed: DiskSpeed::FAST,
                flush_tail: None,
                epoch: 0,
                rng,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn speed(&self) -> DiskSpeed {
        self.lock().speed
    }

    pub fn set_speed(&self, speed: DiskSpeed) {
        self.lock().speed = speed;
    }

    /// Loses the writes that were not flushed as `fault` says; returns how
    /// many entries were lost.
    pub fn crash(&self, fault: DiskFault) -> usize {
        let mut state = self.lock();
        state.epoch += 1;
        state.flush_tail = None;
        let kept = match fault {
            DiskFault::LostWrites => 0,
            DiskFault::TornWrite { kept } => kept,
        };
        // The unflushed entries that reached the disk after all: a prefix.
        let survivor = state
            .entries
            .keys()
            .filter(|index| state.durable.is_none_or(|d| **index > d))
            .take(kept)
            .last()
            .copied();
        let durable = survivor.or(state.durable);
        state.durable = durable;
        let before = state.entries.len();
        state
            .entries
            .retain(|index, _| durable.is_some_and(|d| *index <= d));
        // A real disk writes in order: a committed index saved after
        // appends that were still in flight is lost with them.
        if let Some(committed) = state.committed
            && durable.is_none_or(|d| committed.index() > d)
        {
            state.committed = durable
                .and_then(|d| state.entries.get(&d).map(|entry| entry.log_id()))
                .or(state.purged);
        }
        before - state.entries.len()
    }

    /// Entries written but not flushed yet.
    pub fn unflushed(&self) -> usize {
        let state = self.lock();
        state
            .entries
            .keys()
            .filter(|index| state.durable.is_none_or(|d| **index > d))
            .count()
    }

    fn latency(&self) -> Duration {
        let mut state = self.lock();
        let speed = state.speed;
        if speed.max <= speed.min {
            speed.min
        } else {
            state.rng.random_range(speed.min..=speed.max)
        }
    }

    /// The log store openraft drives, over this disk.
    pub fn log_store(&self) -> DiskLog {
        DiskLog { disk: self.clone() }
    }
}

/// openraft's view of a [`Disk`].
#[derive(Clone, Debug)]
pub struct DiskLog {
    disk: Disk,
}

fn bounds<RB: RangeBounds<u64>>(range: &RB) -> (u64, Option<u64>) {
    let start = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(i) => Some(i + 1),
        Bound::Excluded(i) => Some(*i),
        Bound::Unbounded => None,
    };
    (start, end)
}

impl RaftLogReader<TypeConfig> for DiskLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = bounds(&range);
        let state = self.disk.lock();
        Ok(state
            .entries
            .range(start..end.unwrap_or(u64::MAX))
            .map(|(_, entry)| entry.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.disk.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for DiskLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let state = self.disk.lock();
        let last = state
            .entries
            .values()
            .next_back()
            .map(|entry| entry.log_id())
            .or_else(|| state.purged);
        Ok(LogState {
            last_purged_log_id: state.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        tokio::time::sleep(self.disk.latency()).await;
        self.disk.lock().vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.disk.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.disk.lock().committed)
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
        let latency = self.disk.latency();
        let (last, epoch, done_at) = {
            let mut state = self.disk.lock();
            let mut last = None;
            for entry in entries {
                let index = entry.log_id().index();
                last = Some(index);
                state.entries.insert(index, entry);
            }
            let now = Instant::now();
            let done_at = state.flush_tail.map_or(now, |tail| tail.max(now)) + latency;
            state.flush_tail = Some(done_at);
            (last, state.epoch, done_at)
        };
        let disk = self.disk.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(done_at).await;
            let mut state = disk.lock();
            if state.epoch != epoch {
                // The node crashed first: this write never reached the platter.
                return;
            }
            if let Some(last) = last {
                // Still present (not truncated meanwhile) up to `last`?
                let present = state.entries.range(..=last).next_back().map(|(i, _)| *i);
                if let Some(present) = present {
                    state.durable = Some(state.durable.map_or(present, |d| d.max(present)));
                }
            }
            drop(state);
            callback.io_completed(Ok(()));
        });
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |id| id.index() + 1);
        let mut state = self.disk.lock();
        state.entries.retain(|index, _| *index < from);
        if let Some(durable) = state.durable
            && durable >= from
        {
            state.durable = from.checked_sub(1);
        }
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = log_id.index();
        let mut state = self.disk.lock();
        state.entries.retain(|index, _| *index > upto);
        state.purged = Some(log_id);
        Ok(())
    }
}
