//! One cluster member: its Raft, its replica and its peer network, over
//! any [`PeerNetwork`] and any Raft log storage. How a member writes is in
//! `crate::write_path`; how the production one starts (QUIC and redb) in
//! `crate::start`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use openraft::storage::RaftLogStorage;
use serde::{Deserialize, Serialize};

use crate::leader_contact::{LeaderContact, leader_contact_age};
use crate::peer::PeerNetwork;
use crate::raft_network::Network;
use crate::service::PeerService;
use crate::settings::RaftSettings;
use crate::state_machine::{Raft, StateMachine};
#[cfg(doc)]
use crate::types::node_id_for;
use crate::types::{ClusterNode, NodeId, TypeConfig};

/// Why the cluster member failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster data in {path}: {source}")]
    Storage {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("the cluster endpoint could not listen on {addr}: {message}")]
    Bind {
        addr: std::net::SocketAddr,
        message: String,
    },
    #[error("raft: {0}")]
    Raft(String),
    #[error(
        "no leader answered after {attempts} attempts; the cluster may have lost its quorum (check `gtc cluster status`)"
    )]
    NoLeader { attempts: u32 },
    #[error("the leader {leader} could not be reached: {message}")]
    Forward { leader: String, message: String },
    #[error(
        "the write was sent to the leader but its outcome is unknown ({message}); read the state before retrying"
    )]
    OutcomeUnknown { message: String },
    #[error("joining through {peer} failed: {message}")]
    Join { peer: String, message: String },
    #[error("the answer could not be decoded: {0}")]
    Decode(String),
}

/// One member's view of the cluster, for `gtc cluster status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub node_name: String,
    pub state: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub members: BTreeMap<NodeId, ClusterNode>,
    /// Leader only: how far each follower's matched index trails the
    /// leader's last log index.
    pub replication_lag: BTreeMap<NodeId, u64>,
    /// How long ago this member last heard from a leader (on the leader: a
    /// quorum's acknowledgement); `None` if never since it started.
    #[serde(default)]
    pub leader_contact_age_ms: Option<u64>,
}

/// What a member is made of, whatever network and log it runs on.
pub struct MemberParts {
    /// The member's Raft id: [`node_id_for`] its name in production.
    pub node_id: NodeId,
    /// This member as the membership publishes it.
    pub node: ClusterNode,
    /// The openraft configuration ([`crate::raft_config`] of `settings`,
    /// unless a test changes it).
    pub raft_config: Arc<openraft::Config>,
    pub settings: RaftSettings,
    /// The replica.
    pub state_machine: StateMachine,
    /// The server side of the network, already answering (or about to).
    pub service: PeerService,
    /// The client side.
    pub peers: Arc<dyn PeerNetwork>,
}

/// Makes the current snapshot cover everything the state machine applied
/// when the log lost its tail.
///
/// A leader commits an entry once a quorum of followers has it, before its
/// own append is flushed, and applies it: a crash then can leave the state
/// machine (durable) ahead of the log (whose unflushed tail is lost).
/// openraft starts such a member by purging the log up to what was
/// applied, and serves its current snapshot to followers that need what
/// was purged; a snapshot older than the purge would leave them needing
/// entries no one can send (and fails openraft's own check under debug
/// assertions). So the state machine's state at its last applied entry is
/// snapshotted first.
async fn cover_applied_with_a_snapshot<L>(
    state_machine: &StateMachine,
    log: &mut L,
) -> Result<(), ClusterError>
where
    L: RaftLogStorage<TypeConfig>,
{
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    let failed = |error: std::io::Error| ClusterError::Raft(error.to_string());
    let last_log = log.get_log_state().await.map_err(failed)?.last_log_id;
    let mut machine = state_machine.clone();
    let (applied, _) = machine.applied_state().await.map_err(failed)?;
    let index = |id: &Option<crate::LogId>| id.as_ref().map(|id| id.index);
    if index(&applied) <= index(&last_log) {
        return Ok(());
    }
    let covered = machine
        .get_current_snapshot()
        .await
        .map_err(failed)?
        .and_then(|snapshot| snapshot.meta.last_log_id);
    if index(&covered) >= index(&applied) {
        return Ok(());
    }
    tracing::warn!(
        applied = ?applied,
        last_log = ?last_log,
        "the state machine applied entries the log lost in a crash; snapshotting them before Raft starts"
    );
    machine.build_snapshot().await.map_err(failed)?;
    Ok(())
}

/// A running cluster member.
pub struct ClusterHandle {
    pub(crate) raft: Raft,
    state_machine: StateMachine,
    pub(crate) node_id: NodeId,
    pub(crate) node: ClusterNode,
    pub(crate) peers: Arc<dyn PeerNetwork>,
    leader_contact: LeaderContact,
    settings: RaftSettings,
}

impl ClusterHandle {
    /// Starts Raft over `log` and `parts.peers`, and hands it to
    /// `parts.service`. Bootstrapping or joining is the caller's next step.
    pub async fn start_with<L>(parts: MemberParts, mut log: L) -> Result<Arc<Self>, ClusterError>
    where
        L: RaftLogStorage<TypeConfig>,
    {
        let node_id = parts.node_id;
        cover_applied_with_a_snapshot(&parts.state_machine, &mut log).await?;
        let raft = Raft::new(
            node_id,
            parts.raft_config,
            Network::new(Arc::clone(&parts.peers)),
            log,
            parts.state_machine.clone(),
        )
        .await
        .map_err(|error| ClusterError::Raft(error.to_string()))?;
        parts.service.set_raft(raft.clone());
        let leader_contact = parts.service.leader_contact();
        tokio::spawn(crate::export::export_metrics(
            raft.metrics(),
            leader_contact.clone(),
        ));
        Ok(Arc::new(Self {
            raft,
            state_machine: parts.state_machine,
            node_id,
            node: parts.node,
            peers: parts.peers,
            leader_contact,
            settings: parts.settings,
        }))
    }

    /// Creates a one-voter cluster of this member if it has never been in
    /// one.
    pub async fn bootstrap_if_new(&self) -> Result<(), ClusterError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        if !initialized {
            let members = BTreeMap::from([(self.node_id, self.node.clone())]);
            self.raft
                .initialize(members)
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
        }
        Ok(())
    }

    pub(crate) fn is_voter(&self) -> bool {
        self.raft
            .metrics()
            .borrow_watched()
            .membership_config
            .voter_ids()
            .any(|id| id == self.node_id)
    }

    /// This node's Raft id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// This node as the membership knows it.
    pub fn node(&self) -> &ClusterNode {
        &self.node
    }

    /// The replica (read-only use).
    pub fn state_machine(&self) -> &StateMachine {
        &self.state_machine
    }

    /// The Raft instance (metrics, waits).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The network this member calls its peers over (bundle transfer uses
    /// it too, see `crate::bundle`).
    pub fn peers(&self) -> &dyn PeerNetwork {
        self.peers.as_ref()
    }

    /// Every member but this one, as the membership knows them.
    pub fn other_members(&self) -> Vec<ClusterNode> {
        self.status()
            .members
            .into_iter()
            .filter(|(id, _)| *id != self.node_id)
            .map(|(_, node)| node)
            .collect()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let members = metrics
            .membership_config
            .nodes()
            .map(|(id, node)| (*id, node.clone()))
            .collect();
        let last = metrics.last_log_index.unwrap_or(0);
        let replication_lag = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .map(|(id, matched)| {
                        let matched = matched.as_ref().map_or(0, |log_id| log_id.index());
                        (*id, last.saturating_sub(matched))
                    })
                    .collect()
            })
            .unwrap_or_default();
        ClusterStatus {
            node_id: self.node_id,
            node_name: self.node.name.clone(),
            state: format!("{:?}", metrics.state).to_lowercase(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            last_log_index: metrics.last_log_index,
            committed_index: metrics.cluster_committed.as_ref().map(|id| id.index()),
            applied_index: metrics.last_applied.as_ref().map(|id| id.index()),
            snapshot_index: metrics.snapshot.as_ref().map(|id| id.index()),
            purged_index: metrics.purged.as_ref().map(|id| id.index()),
            voters: metrics.membership_config.voter_ids().collect(),
            members,
            replication_lag,
            leader_contact_age_ms: self
                .leader_contact_age()
                .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// How long ago this member last heard from a leader: on a follower, the
    /// last append entries or snapshot it accepted; on the leader, the last
    /// acknowledgement by a quorum (a leader cut off from its quorum is as
    /// stale as its followers). `None` if never since this member started.
    pub fn leader_contact_age(&self) -> Option<Duration> {
        let metrics = self.raft.metrics().borrow_watched().clone();
        leader_contact_age(&metrics, &self.leader_contact)
    }

    /// Whether this member is current enough to serve: `Err` says why not
    /// (no contact with a leader for longer than
    /// [`RaftSettings::leader_contact_stale_after`]). Its router keeps
    /// serving the last split it applied; this tells a load balancer in
    /// front to prefer other members.
    pub fn readiness(&self) -> Result<(), String> {
        let bound = self.settings.leader_contact_stale_after();
        match self.leader_contact_age() {
            Some(age) if age <= bound => Ok(()),
            Some(age) => Err(format!(
                "no contact with a raft leader for {:.1} s (bound {:.1} s): this member may serve an old split",
                age.as_secs_f64(),
                bound.as_secs_f64()
            )),
            None => Err("this member has not heard from a raft leader since it started".to_owned()),
        }
    }

    /// Waits until this member's Raft core has stopped, and says why: a
    /// storage error it cannot go on from (its log or replica failed to
    /// read or write), a panic inside it, or a shutdown. A member whose core
    /// stopped takes no part in the cluster again until it is started
    /// again, so the node stops too.
    pub async fn stopped(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_watched().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "the Raft core ended".to_owned();
            }
        }
    }

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Stops Raft and the peer network.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        self.peers.close().await;
    }
}
