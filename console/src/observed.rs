//! The traffic a router observed over the last minute, per revision, and
//! the share of each deployment's requests each revision got: what the
//! console shows next to the desired split.
//!
//! A router only counts requests since it started. [`RequestWindow`] keeps
//! a bounded ring of (time, counts) samples taken every
//! [`SAMPLE_INTERVAL_MS`]; the last minute is the current counts minus the
//! oldest sample still inside the window. Pure: the caller passes the time.

use std::collections::{BTreeMap, HashMap, VecDeque};

use deploy::environment::Environment;
use deploy::ids::{DeploymentId, RevisionId};
use serde::{Deserialize, Serialize};

/// How often a node samples its router's counts: fine enough that the
/// window is a minute to within two seconds, coarse enough to cost nothing.
pub const SAMPLE_INTERVAL_MS: u64 = 2_000;
/// The window the console reports ("the last minute").
pub const WINDOW_MS: u64 = 60_000;
/// Samples kept: one window's worth plus one, so a sample at or just before
/// the window's start is always there once the node has run a minute.
pub const SAMPLES_MAX: usize = (WINDOW_MS / SAMPLE_INTERVAL_MS) as usize + 2;

/// Requests per revision since some start.
pub type Counts = HashMap<RevisionId, u64>;

/// A bounded ring of samples of a router's cumulative counts.
#[derive(Debug, Default)]
pub struct RequestWindow {
    samples: VecDeque<(u64, Counts)>,
}

/// What one router served over (up to) the last minute.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMinute {
    /// How much time the counts cover, in whole seconds' worth of ms and at
    /// most [`WINDOW_MS`] (the base sample may be up to one
    /// [`SAMPLE_INTERVAL_MS`] older): less while the router has run for less
    /// than a minute. Rounded so that a router whose counts do not change
    /// answers the same figure twice, which keeps the console's view ETag
    /// (and so its 304s) stable.
    pub covered_ms: u64,
    pub requests: BTreeMap<RevisionId, u64>,
}

impl RequestWindow {
    /// Records the cumulative `counts` at `at_ms`, forgetting samples the
    /// window no longer needs (and never keeping more than [`SAMPLES_MAX`]).
    pub fn record(&mut self, at_ms: u64, counts: Counts) {
        if self.samples.back().is_some_and(|(last, _)| *last > at_ms) {
            // Time went backwards (a test clock, a stepped wall clock): the
            // old samples no longer describe a past, so start over.
            self.samples.clear();
        }
        self.samples.push_back((at_ms, counts));
        let start = at_ms.saturating_sub(WINDOW_MS);
        // Keep the newest sample at or before the window's start as the base.
        while self.samples.len() >= 2 && self.samples[1].0 <= start {
            self.samples.pop_front();
        }
        while self.samples.len() > SAMPLES_MAX {
            self.samples.pop_front();
        }
    }

    /// The requests of the last minute at `now_ms`, given the current
    /// cumulative counts. A router that restarted (a count went down)
    /// counts from zero for that revision.
    pub fn last_minute(&self, now_ms: u64, current: &Counts) -> LastMinute {
        let start = now_ms.saturating_sub(WINDOW_MS);
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= start)
            .or_else(|| self.samples.iter().find(|(at, _)| *at <= now_ms));
        let (covered_ms, base) = match base {
            Some((at, counts)) => {
                let covered = now_ms.saturating_sub(*at).min(WINDOW_MS);
                (covered - covered % 1_000, Some(counts))
            }
            None => (0, None),
        };
        let requests = current
            .iter()
            .map(|(revision, now)| {
                let before = base.and_then(|b| b.get(revision)).copied().unwrap_or(0);
                let delta = if *now >= before { now - before } else { *now };
                (*revision, delta)
            })
            .filter(|(_, delta)| *delta > 0)
            .collect();
        LastMinute {
            covered_ms,
            requests,
        }
    }
}

/// One revision's observed part of its deployment's traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObservedShare {
    pub requests: u64,
    /// Share of the deployment's requests on this router, in basis points
    /// (rounded down; 0 when the deployment saw none).
    pub share_bps: u32,
}

/// The deployment of each revision of `environment`.
pub fn deployments_of(environment: &Environment) -> HashMap<RevisionId, DeploymentId> {
    environment
        .revisions
        .iter()
        .map(|revision| (revision.revision_id, revision.deployment_id))
        .collect()
}

/// Per deployment, each revision's observed share of the requests in
/// `last_minute`. Requests for revisions `deployments` does not know (the
/// environment no longer has them) are left out.
pub fn shares(
    deployments: &HashMap<RevisionId, DeploymentId>,
    last_minute: &LastMinute,
) -> BTreeMap<DeploymentId, BTreeMap<RevisionId, ObservedShare>> {
    let mut by_deployment: BTreeMap<DeploymentId, BTreeMap<RevisionId, u64>> = BTreeMap::new();
    for (revision, count) in &last_minute.requests {
        if let Some(deployment) = deployments.get(revision) {
            by_deployment
                .entry(*deployment)
                .or_default()
                .insert(*revision, *count);
        }
    }
    by_deployment
        .into_iter()
        .map(|(deployment, counts)| {
            let total: u64 = counts.values().sum();
            let shares = counts
                .into_iter()
                .map(|(revision, requests)| {
                    let share_bps = requests
                        .saturating_mul(10_000)
                        .checked_div(total)
                        .unwrap_or(0);
                    let share = ObservedShare {
                        requests,
                        share_bps: u32::try_from(share_bps).unwrap_or(10_000),
                    };
                    (revision, share)
                })
                .collect();
            (deployment, shares)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn revision(n: u8) -> RevisionId {
        RevisionId::from_ulid(ulid::Ulid::from_parts(1, u128::from(n)))
    }

    fn counts(pairs: &[(u8, u64)]) -> Counts {
        pairs.iter().map(|(r, c)| (revision(*r), *c)).collect()
    }

    #[test]
    fn a_fresh_router_reports_everything_since_its_first_sample() {
        let mut window = RequestWindow::default();
        assert_eq!(window.last_minute(0, &counts(&[(1, 5)])).covered_ms, 0);
        window.record(1_000, counts(&[]));
        let seen = window.last_minute(11_000, &counts(&[(1, 30), (2, 10)]));
        assert_eq!(seen.covered_ms, 10_000);
        assert_eq!(seen.requests[&revision(1)], 30);
        assert_eq!(seen.requests[&revision(2)], 10);
    }

    #[test]
    fn requests_older_than_a_minute_leave_the_window() {
        let mut window = RequestWindow::default();
        let mut total = 0;
        for second in (0..=120u64).step_by(2) {
            // 100 requests a second for the first minute, 10 after.
            total += if second <= 60 { 200 } else { 20 };
            window.record(second * 1_000, counts(&[(1, total)]));
        }
        let seen = window.last_minute(120_000, &counts(&[(1, total)]));
        assert_eq!(seen.covered_ms, 60_000);
        assert_eq!(
            seen.requests[&revision(1)],
            600,
            "ten a second for a minute"
        );
        assert!(window.samples.len() <= SAMPLES_MAX);
    }

    #[test]
    fn a_restarted_router_counts_from_zero_and_a_clock_step_back_starts_over() {
        let mut window = RequestWindow::default();
        window.record(0, counts(&[(1, 500)]));
        let seen = window.last_minute(10_000, &counts(&[(1, 7)]));
        assert_eq!(seen.requests[&revision(1)], 7);
        window.record(5_000, counts(&[(1, 600)]));
        window.record(1_000, counts(&[(1, 3)]));
        assert_eq!(window.samples.len(), 1);
    }

    #[test]
    fn shares_are_per_deployment_and_forget_unknown_revisions() {
        let deployment = |n: u8| DeploymentId::from_ulid(ulid::Ulid::from_parts(2, u128::from(n)));
        let deployments: HashMap<RevisionId, DeploymentId> = [
            (revision(1), deployment(1)),
            (revision(2), deployment(1)),
            (revision(3), deployment(2)),
        ]
        .into();
        let last_minute = LastMinute {
            covered_ms: WINDOW_MS,
            requests: [
                (revision(1), 99),
                (revision(2), 1),
                (revision(3), 5),
                (revision(9), 50),
            ]
            .into(),
        };
        let shares = shares(&deployments, &last_minute);
        assert_eq!(shares.len(), 2);
        assert_eq!(shares[&deployment(1)][&revision(1)].share_bps, 9_900);
        assert_eq!(shares[&deployment(1)][&revision(2)].share_bps, 100);
        assert_eq!(
            shares[&deployment(2)][&revision(3)],
            ObservedShare {
                requests: 5,
                share_bps: 10_000
            }
        );
    }

    #[test]
    fn an_idle_router_reports_the_same_minute_at_every_poll() {
        // Regression: the covered time once grew with every call, so the
        // console's view changed (and was sent again) at every poll.
        let mut window = RequestWindow::default();
        for second in (0..=90u64).step_by(2) {
            window.record(second * 1_000, counts(&[(1, 5)]));
        }
        let current = counts(&[(1, 5)]);
        let first = window.last_minute(90_300, &current);
        let second = window.last_minute(91_700, &current);
        assert_eq!(first, second);
        assert_eq!(first.covered_ms, WINDOW_MS);
    }

    proptest! {
        #[test]
        fn the_shares_of_a_deployment_never_exceed_the_whole(
            requests in proptest::collection::vec(1u64..1_000_000, 1..8)
        ) {
            let deployment = DeploymentId::from_ulid(ulid::Ulid::from_parts(2, 1));
            let deployments: HashMap<RevisionId, DeploymentId> =
                (0..requests.len()).map(|i| (revision(i as u8), deployment)).collect();
            let last_minute = LastMinute {
                covered_ms: WINDOW_MS,
                requests: requests.iter().enumerate().map(|(i, n)| (revision(i as u8), *n)).collect(),
            };
            let shares = shares(&deployments, &last_minute);
            let sum: u32 = shares[&deployment].values().map(|s| s.share_bps).sum();
            prop_assert!(sum <= 10_000);
            // Rounding down loses less than one basis point per revision.
            prop_assert!(sum + requests.len() as u32 > 10_000);
        }

        #[test]
        fn the_window_stays_bounded_and_never_reports_more_than_was_served(
            steps in proptest::collection::vec((0u64..5_000, 0u64..1_000), 1..200)
        ) {
            let mut window = RequestWindow::default();
            let (mut now, mut total) = (0, 0);
            for (advance, served) in steps {
                now += advance;
                total += served;
                window.record(now, counts(&[(1, total)]));
                prop_assert!(window.samples.len() <= SAMPLES_MAX);
                let seen = window.last_minute(now, &counts(&[(1, total)]));
                prop_assert!(seen.requests.get(&revision(1)).copied().unwrap_or(0) <= total);
                prop_assert!(seen.covered_ms <= now);
            }
        }
    }
}
