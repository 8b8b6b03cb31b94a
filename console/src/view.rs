//! The parts of the console's read model that are decisions rather than
//! data: the audit chain's status, and each router's row (which generation
//! it serves, whether gossip sees it, what it observed).

use std::collections::BTreeMap;

use deploy::ids::{DeploymentId, RevisionId};
use serde::Serialize;

use crate::observed::{LastMinute, ObservedShare};

/// Audit events the console's view carries (the newest ones).
pub const AUDIT_EVENTS_SHOWN: usize = 25;

/// The audit log's state as `env doctor` would judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// Every line links to the one before it.
    pub intact: bool,
    /// The state's `audit_head` (the last committed change's event) is in
    /// the chain: no committed change's event was cut off the end.
    pub anchored: bool,
    pub events: usize,
    /// What is wrong, for a person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Judges an audit log (`lines`, oldest first) against the state's
/// `audit_head`.
pub fn chain_status(lines: &[String], audit_head: Option<&str>) -> ChainStatus {
    let verified = deploy::audit::verify_chain(lines.iter().map(String::as_str));
    let anchored = match audit_head {
        None => true,
        Some(head) => lines
            .iter()
            .any(|line| deploy::audit::line_hash(line).is_ok_and(|hash| hash == head)),
    };
    let problem = match (&verified, anchored) {
        (Err(error), _) => Some(error.to_string()),
        (Ok(_), false) => Some(
            "the last committed change's audit event is not in the log (the log was cut)"
                .to_owned(),
        ),
        (Ok(_), true) => None,
    };
    ChainStatus {
        intact: verified.is_ok(),
        anchored,
        events: lines.len(),
        problem,
    }
}

/// One router of the environment as the console shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RouterRow {
    /// The member's name (the node's name on a single node).
    pub name: String,
    /// The committed generation its route table reflects (from gossip for
    /// other members, so it can lag by a gossip round).
    pub generation: Option<u64>,
    /// Whether that generation is the committed one.
    pub freshness: Freshness,
    /// Gossip considers it live (a single node is always live to itself).
    pub live: bool,
    /// Raft role as gossiped (`voter`, `learner`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances_healthy: Option<u32>,
    /// Its observed shares over the last minute, per deployment.
    pub observed: BTreeMap<DeploymentId, BTreeMap<RevisionId, ObservedShare>>,
    /// How much time `observed` covers.
    pub observed_ms: u64,
    /// Why its counts could not be read, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
}

/// How stale a router is: `Current` when it serves `committed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Freshness {
    Current,
    Behind,
    Unknown,
}

/// Whether a router serving `generation` is on the `committed` one.
pub fn freshness(generation: Option<u64>, committed: u64) -> Freshness {
    match generation {
        Some(generation) if generation >= committed => Freshness::Current,
        Some(_) => Freshness::Behind,
        None => Freshness::Unknown,
    }
}

/// A router row from what is known about it.
pub fn router_row(
    name: String,
    generation: Option<u64>,
    committed: u64,
    live: bool,
    last_minute: Result<&LastMinute, String>,
    deployments: &std::collections::HashMap<RevisionId, DeploymentId>,
) -> RouterRow {
    let (observed, observed_ms, unreachable) = match last_minute {
        Ok(last_minute) => (
            crate::observed::shares(deployments, last_minute),
            last_minute.covered_ms,
            None,
        ),
        Err(reason) => (BTreeMap::new(), 0, Some(reason)),
    };
    RouterRow {
        name,
        generation,
        freshness: freshness(generation, committed),
        live,
        role: None,
        applied_index: None,
        instances_healthy: None,
        observed,
        observed_ms,
        unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_log_is_intact_and_a_tampered_one_is_not() {
        assert_eq!(
            chain_status(&[], None),
            ChainStatus {
                intact: true,
                anchored: true,
                events: 0,
                problem: None
            }
        );
        let status = chain_status(&["{not json".to_owned()], None);
        assert!(!status.intact);
        assert!(status.problem.is_some());
        let cut = chain_status(&[], Some("abc"));
        assert!(cut.intact && !cut.anchored);
        assert!(cut.problem.is_some_and(|p| p.contains("cut")));
    }

    #[test]
    fn freshness_compares_with_the_committed_generation() {
        assert_eq!(freshness(Some(7), 7), Freshness::Current);
        assert_eq!(freshness(Some(6), 7), Freshness::Behind);
        assert_eq!(freshness(None, 7), Freshness::Unknown);
    }

    #[test]
    fn an_unreachable_router_says_why_and_shows_no_shares() {
        let row = router_row(
            "n2".into(),
            Some(3),
            3,
            false,
            Err("connection refused".into()),
            &Default::default(),
        );
        assert_eq!(row.unreachable.as_deref(), Some("connection refused"));
        assert!(row.observed.is_empty());
        assert_eq!(row.freshness, Freshness::Current);
    }
}
