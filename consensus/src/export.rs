//! Publishes a member's Raft metrics to Prometheus.

use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;

use crate::leader_contact::{LeaderContact, leader_contact_age};
use crate::types::{LogId, TypeConfig};

/// How often the leader-contact age is exported even when nothing else
/// changes (a follower's heartbeats do not change Raft's metrics).
const CONTACT_EXPORT_INTERVAL: Duration = Duration::from_millis(500);

type MetricsWatch =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;

/// Publishes Raft's metrics whenever they change (and the leader-contact
/// age every [`CONTACT_EXPORT_INTERVAL`]), until Raft stops.
pub(crate) async fn export_metrics(mut watch: MetricsWatch, contact: LeaderContact) {
    let mut last_leader = None;
    loop {
        let metrics = watch.borrow_watched().clone();
        match leader_contact_age(&metrics, &contact) {
            Some(age) => {
                metrics::gauge!("gtc_raft_leader_contact_age_seconds").set(age.as_secs_f64())
            }
            None => metrics::gauge!("gtc_raft_leader_contact_age_seconds").set(f64::NAN),
        }
        metrics::gauge!("gtc_raft_term").set(metrics.current_term as f64);
        metrics::gauge!("gtc_raft_is_leader").set(if metrics.state == ServerState::Leader {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("gtc_raft_has_leader").set(if metrics.current_leader.is_some() {
            1.0
        } else {
            0.0
        });
        if metrics.current_leader != last_leader {
            if metrics.current_leader.is_some() {
                metrics::counter!("gtc_raft_leader_changes_total").increment(1);
            }
            last_leader = metrics.current_leader;
        }
        let index = |id: Option<&LogId>| id.map_or(0.0, |id| id.index() as f64);
        let committed = index(metrics.cluster_committed.as_ref());
        let applied = index(metrics.last_applied.as_ref());
        metrics::gauge!("gtc_raft_last_log_index").set(metrics.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("gtc_raft_commit_index").set(committed);
        metrics::gauge!("gtc_raft_applied_index").set(applied);
        metrics::gauge!("gtc_raft_apply_lag_entries").set((committed - applied).max(0.0));
        metrics::gauge!("gtc_raft_snapshot_index").set(index(metrics.snapshot.as_ref()));
        if let Some(replication) = &metrics.replication {
            let last = metrics.last_log_index.unwrap_or(0);
            for (id, matched) in replication.iter() {
                let matched = matched.as_ref().map_or(0, |log_id| log_id.index());
                metrics::gauge!("gtc_raft_follower_lag_entries", "follower" => id.to_string())
                    .set(last.saturating_sub(matched) as f64);
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(CONTACT_EXPORT_INTERVAL) => {}
        }
    }
}
