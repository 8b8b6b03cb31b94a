//! The Raft timings and log bounds of a member, and the openraft
//! configuration every member runs (the simulator runs it too).

use openraft::{Config, ConfigError, SnapshotPolicy};

/// Raft timings and log bounds.
///
/// The defaults suit loopback, a LAN and a container network (round trips
/// well under a millisecond): a heartbeat every 100 ms and an election
/// timeout drawn from 300–600 ms. openraft starts an election only once the
/// leader lease (the timeout's maximum) has passed since the last heartbeat
/// *and* then the drawn timeout, so a dead leader is replaced 0.9–1.2 s after
/// its last heartbeat, plus one pre-vote and one vote round trip (measured:
/// a write through a survivor is acknowledged within 1.4 s of the SIGKILL,
/// BENCHMARKS.md). etcd's 100 ms / 1 s would make that 1.5–2 s here. For
/// members a WAN apart, raise all three in proportion to the round trip
/// (heartbeat about the round trip, election timeout 3–10 times the
/// heartbeat); see `gtc node run --raft-heartbeat-ms`.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// How often the leader sends heartbeats (append entries) to each member.
    pub heartbeat_interval_ms: u64,
    /// The election timeout is drawn from `min..max` at each round; a
    /// follower that heard nothing from a leader for that long runs a
    /// pre-vote. `max` is also the leader lease.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is built after this many entries since the last one, and
    /// the log is purged behind it, so the log stays bounded.
    pub snapshot_every_entries: u64,
    /// Entries kept behind a snapshot, so a briefly lagging follower
    /// catches up from the log rather than from a whole snapshot.
    pub entries_kept_after_snapshot: u64,
}

/// A peer connection silent this long (keep-alives included) is closed and
/// dialled again on the next call. A peer that restarted resets its old
/// connections at once (a QUIC stateless reset); this bounds the rest (a
/// peer frozen or cut off), where the transport's 30 s default would keep
/// calling into the void. The simulator's transport model uses it too.
pub const PEER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Peer calls give up after this long: longer than any Raft RPC takes on a
/// healthy link (a whole snapshot included), short enough that a write
/// forwarded to a leader that just died is retried on the new one soon.
/// The QUIC network's call timeout, and the simulator's.
pub const PEER_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// A member that has heard from no leader for this many election timeouts
/// (their maximum) is reported unready: an election normally ends within
/// one or two of them, so three mean a partition or a lost quorum.
pub const LEADER_CONTACT_STALE_TIMEOUTS: u32 = 3;

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_entries: 1_000,
            entries_kept_after_snapshot: 200,
        }
    }
}

impl RaftSettings {
    /// How long a member may go without hearing from a leader before it
    /// reports itself unready (`/readyz`).
    pub fn leader_contact_stale_after(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.election_timeout_max_ms)
            * LEADER_CONTACT_STALE_TIMEOUTS
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
///
/// Pre-vote is on: a member that cannot win (restarted, or cut off and back)
/// first asks whether a quorum would vote for it, without raising its term,
/// and the others refuse while their leader is alive. Without it a
/// restarted member raised its term on every timeout until the leader saw
/// the higher term and stepped down, forcing an election on a healthy
/// cluster (issue #12). The leader lease alone refuses the votes but not
/// the term's growth; a follower that waits for the leader it last knew
/// would stall when that leader is really gone.
pub fn raft_config(settings: &RaftSettings) -> Result<Config, ConfigError> {
    Config {
        cluster_name: "greentic".to_owned(),
        heartbeat_interval: settings.heartbeat_interval_ms,
        election_timeout_min: settings.election_timeout_min_ms,
        election_timeout_max: settings.election_timeout_max_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every_entries),
        max_in_snapshot_log_to_keep: settings.entries_kept_after_snapshot,
        enable_leader_restore: Some(false),
        enable_pre_vote: Some(true),
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

    #[test]
    fn a_member_asks_before_it_raises_its_term() {
        // Proves: pre-vote is on, so a restarted member cannot disturb a
        // healthy leader by raising its term (issue #12).
        let config = raft_config(&RaftSettings::default()).expect("valid settings");
        assert_eq!(config.enable_pre_vote, Some(true));
    }

    #[test]
    fn the_defaults_replace_a_dead_leader_within_about_a_second() {
        // Proves: the default timings keep failover near one second (an
        // election starts after the lease, the timeout's maximum, plus the
        // drawn timeout) and stay valid.
        let settings = RaftSettings::default();
        assert!(settings.election_timeout_max_ms * 2 <= 1_200);
        assert!(settings.heartbeat_interval_ms * 3 <= settings.election_timeout_min_ms);
        assert!(raft_config(&settings).is_ok());
        assert_eq!(
            settings.leader_contact_stale_after(),
            std::time::Duration::from_millis(1_800)
        );
    }
}
