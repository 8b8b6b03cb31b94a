//! Who is in the cluster, as one node's gossip currently sees it.

use std::fmt;
use std::net::SocketAddr;

use chitchat::{ChitchatId, NodeState};

use crate::facts::{FactError, NodeFacts};
use crate::generation::Generation;

/// One incarnation of a node: its name plus the generation it gossips with.
/// A restarted node is a new `NodeId` with the same name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub name: String,
    pub generation: Generation,
}

/// A node known to gossip, with the facts it last published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node_id: NodeId,
    /// The address the node advertises for gossip.
    pub gossip_addr: SocketAddr,
    /// Its facts; possibly a few gossip rounds stale.
    pub facts: NodeFacts,
    /// Fact values it published that did not parse (their fields are `None`).
    pub fact_errors: Vec<FactError>,
    /// Ready local instances the member publishes, by revision id.
    pub endpoints: std::collections::BTreeMap<String, Vec<SocketAddr>>,
    /// Request counts it published per revision (`counts/<revision>`).
    pub counts: std::collections::BTreeMap<String, Vec<u64>>,
    /// Requests in flight at its router per revision, `[served, held]`
    /// (`inflight/<revision>`).
    pub in_flight: std::collections::BTreeMap<String, Vec<u64>>,
}

impl fmt::Display for NodeId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}@{}", self.name, self.generation)
    }
}

impl NodeId {
    pub(crate) fn from_chitchat(chitchat_id: &ChitchatId) -> Self {
        Self {
            name: chitchat_id.node_id.to_string(),
            generation: Generation::new(chitchat_id.generation_id),
        }
    }
}

impl Member {
    /// Builds a member from chitchat's view; a node whose state is not known
    /// yet has no facts.
    pub(crate) fn from_chitchat(chitchat_id: &ChitchatId, state: Option<&NodeState>) -> Self {
        let (facts, fact_errors) = match state {
            Some(state) => NodeFacts::from_key_values_lossy(state.key_values()),
            None => (NodeFacts::default(), Vec::new()),
        };
        let endpoints = state
            .map(|state| crate::facts::endpoints_from_key_values(state.key_values()))
            .unwrap_or_default();
        let counts = state
            .map(|state| crate::facts::counts_from_key_values(state.key_values()))
            .unwrap_or_default();
        let in_flight = state
            .map(|state| {
                crate::facts::numbers_from_key_values(
                    crate::facts::KEY_PREFIX_IN_FLIGHT,
                    state.key_values(),
                )
            })
            .unwrap_or_default();
        Self {
            node_id: NodeId::from_chitchat(chitchat_id),
            gossip_addr: chitchat_id.gossip_advertise_addr,
            facts,
            fact_errors,
            endpoints,
            counts,
            in_flight,
        }
    }
}
