//! Traffic splits: which ready revisions of a deployment serve, in basis points.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::ids::{BundleId, DeploymentId, EnvId, RevisionId};

/// Schema discriminator of a traffic split.
pub const TRAFFIC_SPLIT_SCHEMA: &str = "greentic.traffic-split.v1";

/// 100 % in basis points. Every split sums to exactly this.
pub const BASIS_POINTS_TOTAL: u32 = 10_000;

/// Most entries in one split. Knative and Cloud Run allow a handful of
/// targets; 32 is plenty and keeps the router's pick table small.
pub const SPLIT_ENTRIES_MAX: usize = 32;

/// One weighted target of a split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficEntry {
    /// The revision this weight goes to. For a `latest` entry it is the
    /// newest ready revision when the split was last resolved.
    pub revision_id: RevisionId,
    pub weight_bps: u32,
    /// True when the entry follows the newest ready revision of the
    /// deployment (the `LATEST` target), re-resolved whenever a newer
    /// revision becomes ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest: bool,
    /// A name that reaches this revision directly, whatever its weight:
    /// `<tag>---<host>` or the `x-greentic-tag` header (Knative's tagged
    /// targets). Lowercase letters, digits and '-', at most 63 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Longest tag: it becomes part of a DNS label (`<tag>---<host>`).
pub const TAG_LEN_MAX: usize = 63;

/// Whether `tag` is a valid traffic tag.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= TAG_LEN_MAX
        && tag
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !tag.starts_with('-')
        && !tag.ends_with('-')
        && !tag.contains("---")
}

/// The entries a split had before its last change: the one-step rollback target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitSnapshot {
    pub generation: u64,
    pub entries: Vec<TrafficEntry>,
    pub updated_at: Timestamp,
    pub updated_by: String,
    pub idempotency_key: String,
}

/// The one traffic split of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSplit {
    pub schema: String,
    pub env_id: EnvId,
    pub deployment_id: DeploymentId,
    pub bundle_id: BundleId,
    /// 0 for the first split of a deployment; +1 on every change.
    pub generation: u64,
    pub entries: Vec<TrafficEntry>,
    pub updated_at: Timestamp,
    pub updated_by: String,
    pub idempotency_key: String,
    pub authorization_ref: String,
    /// The split before the last change. Stored as a structured snapshot
    /// rather than the original `inline://base64` string so that operators
    /// can read and diff it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<SplitSnapshot>,
}

/// Why a split's weights were refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SplitError {
    #[error("split schema is {found:?}; expected {TRAFFIC_SPLIT_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("split has no entries; name at least one ready revision with weight 10000 bps (100%)")]
    Empty,
    #[error("split has {count} entries; the limit is {SPLIT_ENTRIES_MAX}")]
    TooManyEntries { count: usize },
    #[error(
        "entry {index} ({revision_id}) has weight {weight_bps} bps, above the maximum of 10000 bps (100%)"
    )]
    BasisPointsEntryTooLarge {
        index: usize,
        revision_id: RevisionId,
        weight_bps: u32,
    },
    #[error(
        "weights sum to {sum} bps ({percent}%); they must sum to exactly 10000 bps (100%)",
        percent = *sum as f64 / 100.0
    )]
    BasisPointsSum { sum: u64 },
    #[error("revision {revision_id} appears twice in the split; merge its weights into one entry")]
    DuplicateRevision { revision_id: RevisionId },
    #[error(
        "entry {index} has tag {tag:?}; tags use lowercase letters, digits and single '-' (not at the ends), at most 63 characters"
    )]
    InvalidTag { index: usize, tag: String },
    #[error("tag {tag:?} is used twice in the split; each tag names one revision")]
    DuplicateTag { tag: String },
}

/// Checks weights: each entry at most 10000, sum exactly 10000 (in u64, so
/// no overflow), at least one entry, no revision twice.
pub fn validate_entries(entries: &[TrafficEntry]) -> Result<(), SplitError> {
    if entries.is_empty() {
        return Err(SplitError::Empty);
    }
    if entries.len() > SPLIT_ENTRIES_MAX {
        return Err(SplitError::TooManyEntries {
            count: entries.len(),
        });
    }
    for (index, entry) in entries.iter().enumerate() {
        if entry.weight_bps > BASIS_POINTS_TOTAL {
            return Err(SplitError::BasisPointsEntryTooLarge {
                index,
                revision_id: entry.revision_id,
                weight_bps: entry.weight_bps,
            });
        }
        if entries[..index]
            .iter()
            .any(|earlier| earlier.revision_id == entry.revision_id)
        {
            return Err(SplitError::DuplicateRevision {
                revision_id: entry.revision_id,
            });
        }
        if let Some(tag) = &entry.tag {
            if !valid_tag(tag) {
                return Err(SplitError::InvalidTag {
                    index,
                    tag: tag.clone(),
                });
            }
            if entries[..index]
                .iter()
                .any(|earlier| earlier.tag.as_ref() == Some(tag))
            {
                return Err(SplitError::DuplicateTag { tag: tag.clone() });
            }
        }
    }
    let sum: u64 = entries
        .iter()
        .map(|entry| u64::from(entry.weight_bps))
        .sum();
    if sum != u64::from(BASIS_POINTS_TOTAL) {
        return Err(SplitError::BasisPointsSum { sum });
    }
    Ok(())
}

impl TrafficSplit {
    /// Checks the schema and the weights.
    pub fn validate(&self) -> Result<(), SplitError> {
        if self.schema != TRAFFIC_SPLIT_SCHEMA {
            return Err(SplitError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        validate_entries(&self.entries)
    }

    /// True when any entry names `revision`.
    pub fn references(&self, revision: RevisionId) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.revision_id == revision)
    }
}

/// Entries compared without regard to order, for idempotent replays.
pub fn same_entries(left: &[TrafficEntry], right: &[TrafficEntry]) -> bool {
    let mut left: Vec<_> = left
        .iter()
        .map(|e| (e.revision_id, e.weight_bps, e.latest))
        .collect();
    let mut right: Vec<_> = right
        .iter()
        .map(|e| (e.revision_id, e.weight_bps, e.latest))
        .collect();
    left.sort();
    right.sort();
    left == right
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u8, weight_bps: u32) -> TrafficEntry {
        TrafficEntry {
            revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(1, u128::from(n))),
            weight_bps,
            latest: false,
            tag: None,
        }
    }

    #[test]
    fn weights_must_sum_to_exactly_ten_thousand() {
        assert!(validate_entries(&[entry(1, 9900), entry(2, 100)]).is_ok());
        assert_eq!(
            validate_entries(&[entry(1, 9900), entry(2, 99)]),
            Err(SplitError::BasisPointsSum { sum: 9999 })
        );
        assert!(matches!(
            validate_entries(&[entry(1, 10001)]),
            Err(SplitError::BasisPointsEntryTooLarge { index: 0, .. })
        ));
        assert_eq!(validate_entries(&[]), Err(SplitError::Empty));
        assert!(matches!(
            validate_entries(&[entry(1, 5000), entry(1, 5000)]),
            Err(SplitError::DuplicateRevision { .. })
        ));
    }

    #[test]
    fn huge_weights_do_not_overflow_the_sum() {
        let entries = [entry(1, u32::MAX), entry(2, u32::MAX)];
        assert!(matches!(
            validate_entries(&entries),
            Err(SplitError::BasisPointsEntryTooLarge { .. })
        ));
    }

    proptest! {
        /// A split validates exactly when its weights are each <= 10000, distinct, and sum to 10000.
        #[test]
        fn validation_matches_the_arithmetic(weights in proptest::collection::vec(0u32..12_000, 1..6)) {
            let entries: Vec<_> = weights.iter().enumerate().map(|(i, w)| entry(i as u8, *w)).collect();
            let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            let expected = weights.iter().all(|w| *w <= 10_000) && sum == 10_000;
            prop_assert_eq!(validate_entries(&entries).is_ok(), expected);
        }

        /// Entry order never matters for idempotent comparison.
        #[test]
        fn same_entries_ignores_order(weights in proptest::collection::vec(0u32..10_000, 1..6)) {
            let entries: Vec<_> = weights.iter().enumerate().map(|(i, w)| entry(i as u8, *w)).collect();
            let mut reversed = entries.clone();
            reversed.reverse();
            prop_assert!(same_entries(&entries, &reversed));
        }
    }
}
