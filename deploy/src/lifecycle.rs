//! The revision lifecycle: states, the transition matrix and the verb chains.
//!
//! ```text
//! inactive ─► staged ─► warming ─► ready ─► draining ─► inactive ─► archived
//!     │          │         │         │
//!     └──────────┴─────────┴─────────┴──► failed ─► staged (retry) | archived
//! ```

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a revision is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Created but not staged yet, or drained and stopped.
    Inactive,
    /// The bundle is frozen and on disk; nothing runs.
    Staged,
    /// Instances are starting; health checks have not passed yet.
    Warming,
    /// Healthy; may receive traffic.
    Ready,
    /// No new traffic; in-flight requests finish.
    Draining,
    /// Warming or serving failed; the reason is recorded.
    Failed,
    /// Terminal: kept for history only.
    Archived,
}

impl Lifecycle {
    /// Every state, in matrix order.
    pub const ALL: [Lifecycle; 7] = [
        Lifecycle::Inactive,
        Lifecycle::Staged,
        Lifecycle::Warming,
        Lifecycle::Ready,
        Lifecycle::Draining,
        Lifecycle::Failed,
        Lifecycle::Archived,
    ];

    /// The lowercase name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Inactive => "inactive",
            Lifecycle::Staged => "staged",
            Lifecycle::Warming => "warming",
            Lifecycle::Ready => "ready",
            Lifecycle::Draining => "draining",
            Lifecycle::Failed => "failed",
            Lifecycle::Archived => "archived",
        }
    }

    /// True when a revision in this state may be named in a traffic split.
    pub fn can_serve(self) -> bool {
        self == Lifecycle::Ready
    }
}

impl fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The transition matrix: is the single edge `from → to` allowed?
pub fn is_valid_transition(from: Lifecycle, to: Lifecycle) -> bool {
    use Lifecycle::*;
    matches!(
        (from, to),
        (Inactive, Staged | Failed | Archived)
            | (Staged, Warming | Failed | Archived)
            | (Warming, Ready | Failed | Archived)
            | (Ready, Draining | Failed | Archived)
            | (Draining, Inactive)
            | (Failed, Staged | Archived)
    )
}

/// An operator verb that moves a revision along a chain of edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LifecycleVerb {
    Warm,
    Drain,
    Archive,
}

impl LifecycleVerb {
    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleVerb::Warm => "warm",
            LifecycleVerb::Drain => "drain",
            LifecycleVerb::Archive => "archive",
        }
    }

    /// The states a revision may start the verb from.
    pub fn accepted_starts(self) -> &'static [Lifecycle] {
        use Lifecycle::*;
        match self {
            LifecycleVerb::Warm => &[Staged, Failed],
            LifecycleVerb::Drain => &[Ready],
            LifecycleVerb::Archive => &[Staged, Warming, Ready, Failed, Draining, Inactive],
        }
    }

    /// The edges the verb walks from `start`, or `None` when `start` is not
    /// an accepted start. Every returned edge is valid in the matrix (a unit
    /// test checks this for every verb and start).
    pub fn chain(self, start: Lifecycle) -> Option<Vec<Lifecycle>> {
        use Lifecycle::*;
        if !self.accepted_starts().contains(&start) {
            return None;
        }
        Some(match (self, start) {
            (LifecycleVerb::Warm, Failed) => vec![Staged, Warming, Ready],
            (LifecycleVerb::Warm, _) => vec![Warming, Ready],
            (LifecycleVerb::Drain, _) => vec![Draining],
            (LifecycleVerb::Archive, Draining) => vec![Inactive, Archived],
            (LifecycleVerb::Archive, _) => vec![Archived],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Lifecycle::*;

    /// The expected matrix, written out as a table so that a change to
    /// `is_valid_transition` has to change this table too.
    const EXPECTED: [(Lifecycle, &[Lifecycle]); 7] = [
        (Inactive, &[Staged, Failed, Archived]),
        (Staged, &[Warming, Failed, Archived]),
        (Warming, &[Ready, Failed, Archived]),
        (Ready, &[Draining, Failed, Archived]),
        (Draining, &[Inactive]),
        (Failed, &[Staged, Archived]),
        (Archived, &[]),
    ];

    #[test]
    fn every_pair_of_states_matches_the_matrix() {
        let mut checked = 0;
        for (from, allowed) in EXPECTED {
            for to in Lifecycle::ALL {
                assert_eq!(
                    is_valid_transition(from, to),
                    allowed.contains(&to),
                    "{from} -> {to}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 49);
    }

    #[test]
    fn archived_is_terminal_and_nothing_returns_to_warming_except_from_staged() {
        for to in Lifecycle::ALL {
            assert!(!is_valid_transition(Archived, to));
            assert!(!is_valid_transition(to, to), "no self loops: {to}");
        }
        for from in Lifecycle::ALL {
            assert_eq!(is_valid_transition(from, Warming), from == Staged);
            assert_eq!(is_valid_transition(from, Ready), from == Warming);
        }
    }

    #[test]
    fn every_verb_chain_walks_only_valid_edges() {
        for verb in [
            LifecycleVerb::Warm,
            LifecycleVerb::Drain,
            LifecycleVerb::Archive,
        ] {
            for start in Lifecycle::ALL {
                match verb.chain(start) {
                    Some(chain) => {
                        assert!(verb.accepted_starts().contains(&start));
                        let mut from = start;
                        for to in chain {
                            assert!(is_valid_transition(from, to), "{verb:?}: {from} -> {to}");
                            from = to;
                        }
                    }
                    None => assert!(!verb.accepted_starts().contains(&start)),
                }
            }
        }
    }

    #[test]
    fn only_ready_revisions_can_serve() {
        for state in Lifecycle::ALL {
            assert_eq!(state.can_serve(), state == Ready);
        }
    }
}
