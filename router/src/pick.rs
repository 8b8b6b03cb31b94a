//! Weighted revision selection in basis points.
//!
//! Each request takes the next value of a counter (an atomic in the proxy)
//! and maps it to a point in `0..10000` with a golden-ratio Weyl sequence.
//! Those points are spread evenly at every scale: over any run of `n`
//! requests, a revision with weight `w` bps receives `n * w / 10000` of
//! them, give or take a handful (the sequence's discrepancy grows like
//! `log n`). A random draw would be off by about `sqrt(n)`: over 100 000
//! requests, ±30 on a 1 % split, against a bound of ±100. Consecutive
//! points also jump around, so two revisions are interleaved rather than
//! served in blocks.

use deploy::ids::RevisionId;
use deploy::traffic::{BASIS_POINTS_TOTAL, TrafficEntry};

/// 2^64 / golden ratio: the Weyl step with the most even spread.
const WEYL_STEP: u64 = 0x9E37_79B9_7F4A_7C15;

/// The point in `0..10000` for the `counter`-th request.
pub fn pick_point(counter: u64) -> u32 {
    let fraction = counter.wrapping_mul(WEYL_STEP);
    // (fraction / 2^64) * 10000, exactly, in integers.
    ((u128::from(fraction) * u128::from(BASIS_POINTS_TOTAL)) >> 64) as u32
}

/// A split prepared for picking: cumulative upper bounds in basis points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPick {
    /// (exclusive upper bound, revision), ascending; zero-weight entries are dropped.
    bounds: Vec<(u32, RevisionId)>,
}

impl WeightedPick {
    /// Prepares `entries`; `None` when no entry has weight (nothing can be
    /// served). Entries come from a validated split, so they sum to 10000.
    pub fn new(entries: &[TrafficEntry]) -> Option<Self> {
        let mut total = 0u32;
        let bounds: Vec<(u32, RevisionId)> = entries
            .iter()
            .filter(|entry| entry.weight_bps > 0)
            .map(|entry| {
                total = total.saturating_add(entry.weight_bps);
                (total, entry.revision_id)
            })
            .collect();
        (!bounds.is_empty()).then_some(Self { bounds })
    }

    /// The revision that serves `point` (in `0..10000`).
    pub fn pick(&self, point: u32) -> RevisionId {
        let index = self.bounds.partition_point(|(bound, _)| *bound <= point);
        // A point at or past the last bound can only come from a split that
        // does not sum to 10000; it goes to the last revision rather than
        // failing the request.
        self.bounds[index.min(self.bounds.len() - 1)].1
    }

    /// Whether `revision` has weight in this split.
    pub fn contains(&self, revision: RevisionId) -> bool {
        self.bounds.iter().any(|(_, id)| *id == revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn revision(n: u8) -> RevisionId {
        RevisionId::from_ulid(ulid::Ulid::from_parts(1, u128::from(n)))
    }

    fn entry(n: u8, weight_bps: u32) -> TrafficEntry {
        TrafficEntry {
            revision_id: revision(n),
            weight_bps,
            latest: false,
            tag: None,
        }
    }

    fn shares(
        pick: &WeightedPick,
        start: u64,
        requests: u64,
    ) -> std::collections::HashMap<RevisionId, u64> {
        let mut counts = std::collections::HashMap::new();
        for counter in start..start + requests {
            *counts.entry(pick.pick(pick_point(counter))).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn a_one_percent_split_lands_within_a_tenth_of_a_point_over_100k_requests() {
        let pick = WeightedPick::new(&[entry(1, 9_900), entry(2, 100)]).expect("weights");
        let counts = shares(&pick, 0, 100_000);
        let canary = counts.get(&revision(2)).copied().unwrap_or(0);
        // ±0.1 percentage point of 100 000 requests is ±100.
        assert!((900..=1_100).contains(&canary), "canary got {canary}");
        // The Weyl sequence does far better than the bound: within ±10.
        assert!(canary.abs_diff(1_000) <= 10, "canary got {canary}");
    }

    #[test]
    fn zero_weights_are_never_picked_and_all_zero_is_none() {
        let pick = WeightedPick::new(&[entry(1, 0), entry(2, 10_000)]).expect("weights");
        assert!(!pick.contains(revision(1)));
        assert!((0..10_000).all(|point| pick.pick(point) == revision(2)));
        assert!(WeightedPick::new(&[entry(1, 0)]).is_none());
    }

    #[test]
    fn points_cover_the_range() {
        assert!((0..100_000u64).map(pick_point).all(|p| p < 10_000));
        assert_eq!(pick_point(0), 0);
    }

    proptest! {
        /// For any split and any starting counter, every revision's share
        /// of 20 000 consecutive requests is within ±0.1 percentage point
        /// of its weight.
        #[test]
        fn every_split_is_honoured_at_any_offset(
            weights in proptest::collection::vec(0u32..=10_000, 1..6),
            start in any::<u64>(),
        ) {
            let sum: u32 = weights.iter().sum();
            prop_assume!(sum > 0);
            // Scale to exactly 10000 bps, the last entry taking the remainder.
            let mut scaled: Vec<u32> = weights.iter().map(|w| w * 10_000 / sum).collect();
            let remainder = 10_000 - scaled.iter().sum::<u32>();
            if let Some(last) = scaled.last_mut() { *last += remainder; }
            let entries: Vec<TrafficEntry> = scaled.iter().enumerate().map(|(i, w)| entry(i as u8, *w)).collect();
            let Some(pick) = WeightedPick::new(&entries) else { return Ok(()); };
            let requests = 20_000u64;
            let counts = shares(&pick, start, requests);
            for (i, weight) in scaled.iter().enumerate() {
                let got = counts.get(&revision(i as u8)).copied().unwrap_or(0);
                let expected = requests * u64::from(*weight) / 10_000;
                prop_assert!(got.abs_diff(expected) <= requests / 1_000, "entry {} weight {} got {} expected {}", i, weight, got, expected);
            }
        }
    }
}
