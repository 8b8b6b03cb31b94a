//! Holding requests for a revision that has no ready instance (a cold
//! start, or the restart of its only instance) until one is published,
//! within two bounds: how many requests are held per revision, and how long
//! each waits. Past either bound the request is answered 503 with
//! `Retry-After`, never left hanging.
//!
//! The revision a held request goes to was chosen before it was held and
//! does not change: a split decides the revision, holding only delays it,
//! so a revision at 1 % still gets exactly its share (issue #19).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy::ids::RevisionId;

use super::Snapshot;

/// Metric: requests answered 503 instead of being held, by reason.
pub const HOLD_REFUSED_METRIC: &str = "gtc_router_hold_refused_total";
/// Metric: time from a request being held to its answer's headers.
pub const COLD_START_METRIC: &str = "gtc_router_cold_start_seconds";
/// Metric: requests held now, over all revisions.
pub const HELD_METRIC: &str = "gtc_router_held_requests";

/// The bounds of holding. `max_held == 0` turns holding off: a revision
/// without a ready instance is answered 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldConfig {
    /// Requests held per revision at most.
    pub max_held: u32,
    /// Longest one request is held.
    pub max_wait: Duration,
}

impl Default for HoldConfig {
    fn default() -> Self {
        Self {
            max_held: 0,
            max_wait: Duration::from_secs(30),
        }
    }
}

impl HoldConfig {
    /// Whether requests are held at all.
    pub fn enabled(&self) -> bool {
        self.max_held > 0 && !self.max_wait.is_zero()
    }

    /// The `Retry-After` of a refusal: the wait bound, in whole seconds, at
    /// least one.
    pub fn retry_after_seconds(&self) -> u64 {
        self.max_wait.as_secs().max(1)
    }
}

/// Why a request was not held until an instance came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The revision already has `max_held` requests waiting.
    QueueFull,
    /// No instance was published within `max_wait`.
    WaitTimeout,
}

impl Refusal {
    /// The `error.kind` of the 503 and the metric's `reason` label.
    pub fn kind(self) -> &'static str {
        match self {
            Self::QueueFull => "hold-queue-full",
            Self::WaitTimeout => "hold-timeout",
        }
    }
}

/// Held requests per revision.
#[derive(Debug, Default)]
pub struct Held {
    counts: Mutex<HashMap<RevisionId, u32>>,
}

/// One held request's place; gives it back when dropped (answered, timed
/// out, or the client went away).
pub struct Slot<'a> {
    held: &'a Held,
    revision: RevisionId,
}

impl Held {
    /// A place for one more request of `revision`, if fewer than `max` are
    /// held.
    pub fn take(&self, revision: RevisionId, max: u32) -> Option<Slot<'_>> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(revision).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        metrics::gauge!(HELD_METRIC).increment(1.0);
        Some(Slot {
            held: self,
            revision,
        })
    }

    /// Requests of `revision` held now.
    pub fn count(&self, revision: RevisionId) -> u32 {
        self.counts
            .lock()
            .ok()
            .and_then(|counts| counts.get(&revision).copied())
            .unwrap_or(0)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.held.counts.lock()
            && let Some(count) = counts.get_mut(&self.revision)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.revision);
            }
        }
        metrics::gauge!(HELD_METRIC).decrement(1.0);
    }
}

/// Whether `snapshot` has a ready instance of `revision`.
pub(super) fn has_instance(snapshot: &Snapshot, revision: RevisionId) -> bool {
    snapshot
        .revisions
        .get(&revision)
        .is_some_and(|serving| !serving.instances.is_empty())
}

/// Waits, holding `slot`, until `current()` has a ready instance of
/// `revision` (checked again after every publication `publications`
/// announces) or `max_wait` passes.
pub(super) async fn wait_for_instance(
    revision: RevisionId,
    max_wait: Duration,
    mut publications: tokio::sync::watch::Receiver<u64>,
    current: impl Fn() -> Arc<Snapshot>,
) -> Result<Arc<Snapshot>, Refusal> {
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        // Checked after subscribing: a publication between the check and
        // the wait still wakes the wait.
        let snapshot = current();
        if has_instance(&snapshot, revision) {
            return Ok(snapshot);
        }
        match tokio::time::timeout_at(deadline, publications.changed()).await {
            Ok(Ok(())) => continue,
            // The router is gone (its sender dropped) or the time is up.
            Ok(Err(_)) | Err(_) => return Err(Refusal::WaitTimeout),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_holds_at_most_its_bound_and_slots_come_back() {
        let held = Held::default();
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(1, 1));
        let other = RevisionId::from_ulid(ulid::Ulid::from_parts(1, 2));
        let first = held.take(revision, 2).expect("first");
        let second = held.take(revision, 2).expect("second");
        assert!(held.take(revision, 2).is_none(), "the bound holds");
        assert!(held.take(other, 2).is_some(), "per revision");
        drop(first);
        assert_eq!(held.count(revision), 1);
        let third = held.take(revision, 2).expect("a place came back");
        drop((second, third));
        assert_eq!(held.count(revision), 0);
    }

    #[test]
    fn holding_is_off_by_default_and_retry_after_is_at_least_a_second() {
        assert!(!HoldConfig::default().enabled());
        let config = HoldConfig {
            max_held: 1,
            max_wait: Duration::from_millis(300),
        };
        assert!(config.enabled());
        assert_eq!(config.retry_after_seconds(), 1);
    }
}
