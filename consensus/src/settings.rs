//! The Raft timings and log bounds of a member, and the openraft
//! configuration every member runs (the simulator runs it too).

use openraft::{Config, ConfigError, SnapshotPolicy};

/// Raft timings and log bounds.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries since the last one, and
    /// the log is purged behind it, so the log stays bounded.
    pub snapshot_every_entries: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log rather than from a whole snapshot.
    pub entries_kept_after_snapshot: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            snapshot_every_entries: 1_000,
            entries_kept_after_snapshot: 200,
        }
    }
}

/// The openraft configuration of every member (and of the simulator's
/// nodes, so it tests what runs).
///
/// A restarted leader does not resume leadership without an election
/// (openraft's `enable_leader_restore`, on by default): its log may have
/// lost entries it appended but had not flushed, which a quorum of the
/// others had already committed, and a leader that resumed its term with
/// the shorter log would write different entries at those indexes. The
/// simulator found that (seed 619 of its soak; `PlantedBug::LeaderRestore`
/// replays it); an election makes the others refuse the shorter log.
pub fn raft_config(settings: &RaftSettings) -> Result<Config, ConfigError> {
    Config {
        cluster_name: "greentic".to_owned(),
        heartbeat_interval: settings.heartbeat_interval_ms,
        election_timeout_min: settings.election_timeout_min_ms,
        election_timeout_max: settings.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every_entries),
        max_in_snapshot_log_to_keep: settings.entries_kept_after_snapshot,
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_leader_must_win_an_election_again() {
        // Proves the fix for what the simulator found (TESTING.md): openraft's
        // default lets a restarted leader resume its term with a log that lost
        // unflushed entries the others had committed.
        let config = raft_config(&RaftSettings::default()).expect("valid settings");
        assert_eq!(config.enable_leader_restore, Some(false));
    }
}
