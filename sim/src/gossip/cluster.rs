//! The simulated cluster: real `Membership` nodes on one in-memory network,
//! the faults the scenario injects (crash, partition, repair) and the one
//! wait it needs ("every watched node's view matches the network").

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::{ChannelTransport, Statistics};
use membership::{
    MAX_GOSSIP_PLAINTEXT_BYTES, Member, Membership, MembershipConfig, NodeFacts, NodeRole,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::GossipSimError;

/// A phase of the scenario; names the wait that timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Every node sees all nodes live.
    Convergence,
    /// Every survivor sees the crashed nodes dead and the survivors live.
    Detection,
    /// Every survivor sees only its own side of the partition live.
    PartitionDetection,
    /// After the repair, every survivor sees every survivor live.
    Heal,
}

impl fmt::Display for Phase {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(match self {
            Phase::Convergence => "convergence",
            Phase::Detection => "failure detection",
            Phase::PartitionDetection => "partition detection",
            Phase::Heal => "heal",
        })
    }
}

/// One node to start.
pub(crate) struct NodeSpec {
    /// Also `membership.node_name`; kept to name the node in errors.
    pub name: String,
    /// The node config, seeds included.
    pub membership: MembershipConfig,
    /// When the node starts, after the cluster's start.
    pub start_offset: Duration,
}

/// A running node. Dropped (`None` in the cluster) once crashed.
struct SimulatedNode {
    membership: Membership,
    /// A clone of the node's live-member watch, read by the waits.
    live_members_rx: watch::Receiver<Vec<Member>>,
    /// Wakes the waits whenever this node's view changes.
    change_forwarder: JoinHandle<()>,
}

/// N nodes on one `ChannelTransport`, indexed `0..N` in spec order.
pub(crate) struct SimulatedCluster {
    /// The in-memory network; cutting and restoring links goes through it.
    transport: ChannelTransport,
    names: Vec<String>,
    /// Node index by name, to place the members a node reports.
    index_by_name: BTreeMap<String, usize>,
    addrs: Vec<SocketAddr>,
    nodes: Vec<Option<SimulatedNode>>,
    /// Pairs `(low, high)` of node indexes whose link is cut, both ways.
    cut_links: BTreeSet<(usize, usize)>,
    /// Notified by every node's change forwarder; a stored permit means
    /// "some view changed since you last looked", so no change is missed.
    view_changed: Arc<Notify>,
}

impl SimulatedCluster {
    /// Starts every node at its offset from now, on a fresh network whose
    /// MTU is the largest envelope the production (sealed) transport carries.
    pub async fn start(specs: Vec<NodeSpec>) -> Result<SimulatedCluster, GossipSimError> {
        let started_at = Instant::now();
        let transport = ChannelTransport::with_mtu(MAX_GOSSIP_PLAINTEXT_BYTES);
        let view_changed = Arc::new(Notify::new());
        let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
        let addrs = specs
            .iter()
            .map(|spec| spec.membership.gossip_advertise_addr)
            .collect();
        let mut nodes: Vec<Option<SimulatedNode>> = specs.iter().map(|_| None).collect();
        let mut start_order: Vec<usize> = (0..specs.len()).collect();
        start_order.sort_by_key(|&index| (specs[index].start_offset, index));
        for index in start_order {
            tokio::time::sleep_until(started_at + specs[index].start_offset).await;
            let spec = &specs[index];
            let facts = node_facts(spec.membership.gossip_advertise_addr);
            let membership = Membership::start(spec.membership.clone(), &facts, &transport)
                .await
                .map_err(|source| GossipSimError::Start {
                    node: spec.name.clone(),
                    source,
                })?;
            nodes[index] = Some(SimulatedNode::watch(membership, &view_changed));
        }
        let index_by_name = names
            .iter()
            .enumerate()
            .map(|(index, name)| (name.clone(), index))
            .collect();
        Ok(SimulatedCluster {
            transport,
            names,
            index_by_name,
            addrs,
            nodes,
            cut_links: BTreeSet::new(),
            view_changed,
        })
    }

    /// Node `index`'s name.
    pub fn name(&self, index: usize) -> &str {
        &self.names[index]
    }

    /// Messages and bytes sent so far over the in-memory network.
    pub fn statistics(&self) -> Statistics {
        self.transport.statistics()
    }

    /// Crashes node `index`: its gossip task stops and its socket closes,
    /// so it sends nothing more and messages to it are lost.
    pub async fn crash(&mut self, index: usize) -> Result<(), GossipSimError> {
        let Some(node) = self.nodes[index].take() else {
            return Ok(());
        };
        node.stop(&self.names[index]).await
    }

    /// Cuts every link between `side_a` and `side_b`, both ways.
    pub async fn partition(&mut self, side_a: &[usize], side_b: &[usize]) {
        for (&a, &b) in cross_pairs(side_a, side_b) {
            self.transport
                .remove_link(self.addrs[a], self.addrs[b])
                .await;
            self.cut_links.insert((a.min(b), a.max(b)));
        }
    }

    /// Restores every link between `side_a` and `side_b`.
    pub async fn repair(&mut self, side_a: &[usize], side_b: &[usize]) {
        for (&a, &b) in cross_pairs(side_a, side_b) {
            self.transport.add_link(self.addrs[a], self.addrs[b]).await;
            self.cut_links.remove(&(a.min(b), a.max(b)));
        }
    }

    /// Waits until each node of `watched` sees exactly the nodes it can
    /// reach live: itself and every running node whose link to it is not
    /// cut. Returns, per watched node in order, the instant since which its
    /// view has matched; at return all match at once. Fails with
    /// `PhaseTimeout` after `timeout` of simulated time.
    pub async fn wait_for_views(
        &self,
        phase: Phase,
        watched: &[usize],
        timeout: Duration,
    ) -> Result<Vec<Instant>, GossipSimError> {
        let started_at = Instant::now();
        let deadline = started_at + timeout;
        let mut matching_since: Vec<Option<Instant>> = vec![None; watched.len()];
        loop {
            let now = Instant::now();
            for (slot, &index) in matching_since.iter_mut().zip(watched) {
                let matches = self.view_matches_network(index);
                *slot = match (matches, *slot) {
                    (true, Some(since)) => Some(since),
                    (true, None) => Some(now),
                    (false, _) => None,
                };
            }
            if let Some(all) = matching_since.iter().copied().collect::<Option<Vec<_>>>() {
                return Ok(all);
            }
            if now >= deadline {
                return Err(GossipSimError::PhaseTimeout {
                    phase,
                    waited: now.duration_since(started_at),
                    waiting_on: matching_since
                        .iter()
                        .zip(watched)
                        .filter(|(since, _)| since.is_none())
                        .map(|(_, &index)| self.names[index].clone())
                        .collect(),
                });
            }
            // A timeout only ends the wait; the loop re-checks either way.
            let _ = tokio::time::timeout_at(deadline, self.view_changed.notified()).await;
        }
    }

    /// Lets the cluster run for `duration` and counts how often a node of
    /// `watched` stopped seeing exactly the nodes it can reach. With no
    /// fault injected meanwhile, each count is a false suspicion (a live,
    /// reachable node declared dead) or a flap.
    pub async fn count_view_departures(&self, watched: &[usize], duration: Duration) -> usize {
        let deadline = Instant::now() + duration;
        let mut matching: Vec<bool> = watched
            .iter()
            .map(|&index| self.view_matches_network(index))
            .collect();
        let mut departures = 0;
        loop {
            for (was_matching, &index) in matching.iter_mut().zip(watched) {
                let matches = self.view_matches_network(index);
                if *was_matching && !matches {
                    departures += 1;
                }
                *was_matching = matches;
            }
            if Instant::now() >= deadline {
                return departures;
            }
            let _ = tokio::time::timeout_at(deadline, self.view_changed.notified()).await;
        }
    }

    /// Stops every running node and waits for each to release its socket.
    pub async fn shutdown(mut self) -> Result<(), GossipSimError> {
        for index in 0..self.nodes.len() {
            if let Some(node) = self.nodes[index].take() {
                node.stop(&self.names[index]).await?;
            }
        }
        Ok(())
    }

    fn view_matches_network(&self, index: usize) -> bool {
        let Some(node) = &self.nodes[index] else {
            return false;
        };
        let reachable = |other: usize| {
            other == index
                || (self.nodes[other].is_some()
                    && !self
                        .cut_links
                        .contains(&(index.min(other), index.max(other))))
        };
        let reachable_count = (0..self.nodes.len())
            .filter(|&other| reachable(other))
            .count();
        let view = node.live_members_rx.borrow();
        view.len() == reachable_count
            && view.iter().all(|member| {
                self.index_by_name
                    .get(&member.node_id.name)
                    .is_some_and(|&other| reachable(other))
            })
    }
}

impl SimulatedNode {
    fn watch(membership: Membership, view_changed: &Arc<Notify>) -> SimulatedNode {
        let live_members_rx = membership.watch_live_members();
        let mut forwarder_rx = membership.watch_live_members();
        let view_changed = Arc::clone(view_changed);
        // Ends when the node stops (its watch sender is dropped).
        let change_forwarder = tokio::spawn(async move {
            while forwarder_rx.changed().await.is_ok() {
                view_changed.notify_one();
            }
        });
        SimulatedNode {
            membership,
            live_members_rx,
            change_forwarder,
        }
    }

    async fn stop(self, name: &str) -> Result<(), GossipSimError> {
        self.change_forwarder.abort();
        self.membership
            .shutdown()
            .await
            .map_err(|source| GossipSimError::Shutdown {
                node: name.to_owned(),
                source,
            })
    }
}

fn cross_pairs<'a>(
    side_a: &'a [usize],
    side_b: &'a [usize],
) -> impl Iterator<Item = (&'a usize, &'a usize)> {
    side_a
        .iter()
        .flat_map(move |a| side_b.iter().map(move |b| (a, b)))
}

/// Ports a node's other endpoints use in its facts; only their size on
/// the wire matters here.
const ADMIN_PORT: u16 = 8443;
const RAFT_PORT: u16 = 7947;
const ROUTER_PORT: u16 = 8080;
/// Instance capacity a node publishes; any small number does.
const CAPACITY: u32 = 16;

/// The facts a production node publishes, so that gossip messages have
/// their real size. Addresses share the gossip address's IP.
fn node_facts(gossip_addr: SocketAddr) -> NodeFacts {
    let ip = gossip_addr.ip();
    NodeFacts {
        role: Some(NodeRole::Voter),
        admin_addr: Some(SocketAddr::new(ip, ADMIN_PORT)),
        raft_addr: Some(SocketAddr::new(ip, RAFT_PORT)),
        router_addr: Some(SocketAddr::new(ip, ROUTER_PORT)),
        applied_index: Some(0),
        traffic_generation: Some(0),
        instances_healthy: Some(0),
        instances_total: Some(0),
        capacity: Some(CAPACITY),
        deployers: None,
    }
}
