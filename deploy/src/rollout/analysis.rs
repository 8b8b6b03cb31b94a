//! The analysis of one rollout step: the candidate's and the stable
//! revision's counts over the same window, judged against the rollout's
//! checks. Counts only (integers), so every replica and the simulator
//! reach the same verdict from the same record.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{AnalysisSettings, MetricCheck};
use crate::traffic::BASIS_POINTS_TOTAL;

/// Upper bounds of the latency buckets every router counts in, in ms; one
/// more bucket holds everything slower. The same bounds everywhere, so
/// members' counts add up bucket by bucket.
pub const LATENCY_BUCKETS_MS: [u32; 14] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000,
];

/// How many latency buckets a [`WindowCounts`] carries: the bounded ones
/// and the one above the last bound.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// What the routers counted for one revision over one window, summed over
/// every member.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowCounts {
    /// Requests the revision answered or failed.
    pub requests: u64,
    /// Answers with a 5xx status from the revision itself.
    pub server_errors: u64,
    /// Requests the router could not get an answer for (connect failures,
    /// resets, timeouts after every try).
    pub upstream_errors: u64,
    /// Requests per latency bucket ([`LATENCY_BUCKETS_MS`], then one for
    /// slower answers); empty when no latency was counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<u64>,
}

impl WindowCounts {
    /// Adds another member's counts for the same revision and window.
    pub fn add(&mut self, other: &WindowCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.server_errors = self.server_errors.saturating_add(other.server_errors);
        self.upstream_errors = self.upstream_errors.saturating_add(other.upstream_errors);
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (mine, theirs) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// The counts as a flat list of numbers (requests, server errors,
    /// upstream errors, then the latency buckets), as members gossip them.
    pub fn to_numbers(&self) -> Vec<u64> {
        let mut numbers = vec![self.requests, self.server_errors, self.upstream_errors];
        numbers.extend(&self.latency_buckets);
        numbers
    }

    /// The counts of [`Self::to_numbers`]; `None` for fewer than three
    /// numbers or more buckets than [`LATENCY_BUCKETS`].
    pub fn from_numbers(numbers: &[u64]) -> Option<Self> {
        let [requests, server_errors, upstream_errors, buckets @ ..] = numbers else {
            return None;
        };
        (buckets.len() <= LATENCY_BUCKETS).then(|| Self {
            requests: *requests,
            server_errors: *server_errors,
            upstream_errors: *upstream_errors,
            latency_buckets: buckets.to_vec(),
        })
    }

    /// What was counted between `start` and `self`, two readings of the
    /// same member's cumulative counts. A reading below `start` (the
    /// member restarted in between, under the same name) counts nothing:
    /// when its new life began is unknown, so its counts may be older than
    /// the window, and a window only ever errs on the side of too little
    /// data (a hold, never a pass on requests it did not see).
    pub fn since(&self, start: &WindowCounts) -> WindowCounts {
        let restarted = self.requests < start.requests
            || self.server_errors < start.server_errors
            || self.upstream_errors < start.upstream_errors;
        if restarted {
            return WindowCounts::default();
        }
        WindowCounts {
            requests: self.requests - start.requests,
            server_errors: self.server_errors - start.server_errors,
            upstream_errors: self.upstream_errors - start.upstream_errors,
            latency_buckets: self
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, end)| {
                    end.saturating_sub(start.latency_buckets.get(i).copied().unwrap_or(0))
                })
                .collect(),
        }
    }

    /// Failed requests: 5xx answers and upstream errors.
    pub fn errors(&self) -> u64 {
        self.server_errors.saturating_add(self.upstream_errors)
    }

    /// The error rate in basis points (rounded up, so a single error in a
    /// large window still counts), or `None` without requests.
    pub fn error_rate_bps(&self) -> Option<u32> {
        if self.requests == 0 {
            return None;
        }
        let scaled = u128::from(self.errors().min(self.requests)) * u128::from(BASIS_POINTS_TOTAL);
        let rate = scaled.div_ceil(u128::from(self.requests));
        Some(u32::try_from(rate).unwrap_or(BASIS_POINTS_TOTAL))
    }

    /// The upper bound of the bucket that holds the 99th percentile, in
    /// ms; `u32::MAX` when it is in the bucket above the last bound, and
    /// `None` without latencies.
    pub fn p99_ms(&self) -> Option<u32> {
        let total: u64 = self.latency_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        // The smallest count that covers 99 % of the requests.
        let needed = (u128::from(total) * 99).div_ceil(100);
        let mut seen = 0u128;
        for (index, count) in self.latency_buckets.iter().enumerate() {
            seen += u128::from(*count);
            if seen >= needed {
                return Some(LATENCY_BUCKETS_MS.get(index).copied().unwrap_or(u32::MAX));
            }
        }
        Some(u32::MAX)
    }

    /// The figures a person reads in the rollout's history.
    pub fn summary(&self) -> WindowSummary {
        WindowSummary {
            requests: self.requests,
            errors: self.errors(),
            error_rate_bps: self.error_rate_bps(),
            p99_ms: self.p99_ms(),
        }
    }
}

/// A window's figures, for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WindowSummary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate_bps: Option<u32>,
    pub p99_ms: Option<u32>,
}

/// What one analysis of a step concluded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// Enough data and every check within its bound.
    Pass,
    /// Too little data to judge: never a pass.
    Hold { reason: String },
    /// A check is out of bounds (or certain to be, whatever the rest of
    /// the window brings).
    Fail { reason: String },
}

/// The analysis of one window, as the controller records it with its
/// decision: the counts it judged, so that `apply` (on every replica) and
/// a person reading the history reach the same verdict from them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisRecord {
    /// The step the window was measured at.
    pub step: u32,
    /// Length of the window, in seconds.
    pub window_seconds: u32,
    pub candidate: WindowCounts,
    pub stable: WindowCounts,
}

impl AnalysisRecord {
    /// The verdict of `settings` on this record.
    pub fn judge(&self, settings: &AnalysisSettings) -> Verdict {
        judge(settings, &self.candidate, &self.stable)
    }
}

/// Judges a candidate's window against `settings`, the stable revision's
/// window of the same time for relative checks.
///
/// - A check that the candidate's errors already break, however many
///   clean requests the rest of `min_requests` would bring, fails at once:
///   a bad candidate is not kept in front of users to gather data.
/// - Otherwise fewer than `min_requests` is a hold, never a pass; so is a
///   relative check while the stable revision has fewer than
///   `min_requests` to compare with.
/// - Then every check must be within its bound.
pub fn judge(
    settings: &AnalysisSettings,
    candidate: &WindowCounts,
    stable: &WindowCounts,
) -> Verdict {
    let min = settings.min_requests.max(1);
    // Certain failures first: an error rate that even a full window of
    // `min_requests` could not bring back under an absolute bound.
    for check in &settings.checks {
        if let MetricCheck::ErrorRate {
            max_bps,
            relative_to_stable: false,
        } = check
        {
            let floor = candidate.requests.max(min);
            let allowed = u128::from(floor) * u128::from(*max_bps) / u128::from(BASIS_POINTS_TOTAL);
            if u128::from(candidate.errors()) > allowed && candidate.requests > 0 {
                return Verdict::Fail {
                    reason: format!(
                        "error rate: {} errors in {} requests already exceed {} bps of the {} requests the step needs",
                        candidate.errors(),
                        candidate.requests,
                        max_bps,
                        floor
                    ),
                };
            }
        }
    }
    if candidate.requests < min {
        return Verdict::Hold {
            reason: format!(
                "the candidate has {} of the {} requests a verdict needs in the window",
                candidate.requests, min
            ),
        };
    }
    for check in &settings.checks {
        let relative = match check {
            MetricCheck::ErrorRate {
                relative_to_stable, ..
            }
            | MetricCheck::P99Latency {
                relative_to_stable, ..
            } => *relative_to_stable,
        };
        if relative && stable.requests < min {
            return Verdict::Hold {
                reason: format!(
                    "the stable revision has {} of the {} requests a comparison needs in the window",
                    stable.requests, min
                ),
            };
        }
        if let Some(reason) = breach(check, candidate, stable) {
            return Verdict::Fail { reason };
        }
    }
    Verdict::Pass
}

/// Why `check` is out of bounds, if it is. Both windows hold at least
/// `min_requests` (at least 1) here.
fn breach(check: &MetricCheck, candidate: &WindowCounts, stable: &WindowCounts) -> Option<String> {
    match *check {
        MetricCheck::ErrorRate {
            max_bps,
            relative_to_stable,
        } => {
            let rate = candidate.error_rate_bps().unwrap_or(0);
            let base = if relative_to_stable {
                stable.error_rate_bps().unwrap_or(0)
            } else {
                0
            };
            let bound = base.saturating_add(max_bps);
            (rate > bound).then(|| {
                format!(
                    "error rate {rate} bps is above {bound} bps{}",
                    if relative_to_stable {
                        format!(" (the stable revision's {base} bps + {max_bps})")
                    } else {
                        String::new()
                    }
                )
            })
        }
        MetricCheck::P99Latency {
            max_ms,
            relative_to_stable,
        } => {
            // Without latencies there is nothing to break.
            let p99 = candidate.p99_ms()?;
            let base = if relative_to_stable {
                stable.p99_ms().unwrap_or(0)
            } else {
                0
            };
            let bound = base.saturating_add(max_ms);
            (p99 > bound).then(|| {
                let shown = if p99 == u32::MAX {
                    format!(
                        "above {} ms",
                        LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]
                    )
                } else {
                    format!("{p99} ms")
                };
                format!(
                    "p99 latency {shown} is above {bound} ms{}",
                    if relative_to_stable {
                        format!(" (the stable revision's {base} ms + {max_ms})")
                    } else {
                        String::new()
                    }
                )
            })
        }
    }
}

/// Every member's cumulative counts of one revision, keyed by the member's
/// identity in this life (a restarted member is a new key).
pub type MemberCounts = std::collections::BTreeMap<String, WindowCounts>;

/// One window from two readings of every member: a member in both counts
/// its difference. A member only in the end reading (it joined, restarted
/// under a new identity, or its gossip arrived late) counts nothing: its
/// cumulative counts may hold requests from before the window, even from
/// an earlier step. One that vanished counts nothing either (what it
/// counted is lost). Both only ever make the window smaller: a hold,
/// never a pass on requests that were not in the window. The next window
/// starts from the end reading, so such a member counts from then on.
pub fn window(start: &MemberCounts, end: &MemberCounts) -> WindowCounts {
    let mut total = WindowCounts::default();
    for (member, counts) in end {
        if let Some(before) = start.get(member) {
            total.add(&counts.since(before));
        }
    }
    total
}

/// The bucket a latency of `ms` is counted in.
pub fn bucket_of(ms: u64) -> usize {
    LATENCY_BUCKETS_MS
        .iter()
        .position(|bound| ms <= u64::from(*bound))
        .unwrap_or(LATENCY_BUCKETS_MS.len())
}
