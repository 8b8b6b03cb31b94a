//! When this member last heard from a leader: the staleness a load balancer
//! needs to know (`/readyz`) and operators see (`gtc_raft_leader_contact_age_seconds`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The time of the last append entries (heartbeat or entries) or snapshot
/// this member accepted from a leader. Shared between the peer service,
/// which touches it, and the cluster handle, which reads it.
#[derive(Debug, Clone, Default)]
pub struct LeaderContact {
    last: Arc<Mutex<Option<Instant>>>,
}

impl LeaderContact {
    /// A leader's message was accepted now.
    pub fn touch(&self) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
    }

    /// How long ago a leader was last heard from; `None` if never since start.
    pub fn age(&self) -> Option<Duration> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|last| last.elapsed())
    }
}

/// How long ago this member last heard from a leader: on a follower, the
/// last append entries or snapshot it accepted; on the leader, the last
/// acknowledgement by a quorum (a leader cut off from its quorum is as
/// stale as its followers). `None` if never since this member started.
pub fn leader_contact_age(
    metrics: &openraft::RaftMetrics<crate::types::TypeConfig>,
    contact: &LeaderContact,
) -> Option<Duration> {
    if metrics.state == openraft::ServerState::Leader {
        metrics
            .last_quorum_acked
            .map(|acked| openraft::Instant::elapsed(&*acked))
    } else {
        contact.age()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_age_counts_from_the_last_touch() {
        // Proves: no contact is `None`; the age restarts at every touch.
        let contact = LeaderContact::default();
        assert_eq!(contact.age(), None);
        contact.touch();
        tokio::time::advance(Duration::from_millis(700)).await;
        assert_eq!(contact.age(), Some(Duration::from_millis(700)));
        contact.touch();
        assert_eq!(contact.age(), Some(Duration::ZERO));
    }
}
