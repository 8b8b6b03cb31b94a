//! HELP text and units of the Raft metrics (see `router::describe_metrics`
//! for why every metric needs one).

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Describes every metric a cluster member's Raft emits.
pub fn describe_metrics() {
    describe_gauge!(
        "gtc_raft_term",
        Unit::Count,
        "Current Raft term of this member."
    );
    describe_gauge!(
        "gtc_raft_is_leader",
        Unit::Count,
        "1 while this member is the Raft leader, else 0."
    );
    describe_gauge!(
        "gtc_raft_has_leader",
        Unit::Count,
        "1 while this member knows a Raft leader, else 0 (no change can commit through it)."
    );
    describe_gauge!(
        "gtc_raft_leader_contact_age_seconds",
        Unit::Seconds,
        "Seconds since this member last accepted a leader's append entries (on the leader: since a quorum last acknowledged it); NaN before the first contact. /readyz fails past three election timeouts."
    );
    describe_counter!(
        "gtc_raft_leader_changes_total",
        Unit::Count,
        "Times this member saw a new Raft leader."
    );
    describe_gauge!(
        "gtc_raft_last_log_index",
        Unit::Count,
        "Index of the last entry in this member's Raft log."
    );
    describe_gauge!(
        "gtc_raft_commit_index",
        Unit::Count,
        "Index of the last Raft entry this member knows is committed."
    );
    describe_gauge!(
        "gtc_raft_applied_index",
        Unit::Count,
        "Index of the last Raft entry applied to this member's replica."
    );
    describe_gauge!(
        "gtc_raft_apply_lag_entries",
        Unit::Count,
        "Committed entries this member has not applied yet."
    );
    describe_gauge!(
        "gtc_raft_snapshot_index",
        Unit::Count,
        "Last log index covered by this member's latest snapshot."
    );
    describe_gauge!(
        "gtc_raft_follower_lag_entries",
        Unit::Count,
        "Leader only: entries each follower's matched index trails the leader's last log index, by follower id."
    );
    describe_counter!(
        "gtc_raft_snapshots_built_total",
        Unit::Count,
        "Snapshots of the state machine this member built."
    );
    describe_counter!(
        "gtc_raft_snapshots_rewritten_total",
        Unit::Count,
        "Snapshot files of this member that did not parse, moved aside and written again from the replica."
    );
    describe_counter!(
        "gtc_raft_snapshots_installed_total",
        Unit::Count,
        "Snapshots received from the leader that this member installed."
    );
    describe_counter!(
        "gtc_raft_writes_total",
        Unit::Count,
        "Writes proposed to Raft through this member."
    );
    describe_counter!(
        "gtc_raft_forwarded_writes_total",
        Unit::Count,
        "Writes this member forwarded to the leader because it did not lead."
    );
    describe_histogram!(
        "gtc_raft_proposal_seconds",
        Unit::Seconds,
        "Time for the leader to commit and apply a proposed entry."
    );
}
