//! One cluster member: its Raft, its replica, its peer endpoint, and the
//! write path that forwards to the leader.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use store::{SubmitError, Submitted};
use transport::{NodeIdentity, TransportClient, TransportConfig, TransportServer};

use crate::leader_contact::LeaderContact;
use crate::log_store::LogStore;
use crate::network::{Network, PeerRequest, PeerResponse, PeerService};
use crate::outcome::Outcome;
use crate::settings::{PEER_IDLE_TIMEOUT, RaftSettings, raft_config};
use crate::state_machine::StateMachine;
use crate::types::{ClusterNode, ClusterRequest, ClusterResponse, NodeId, Raft, node_id_for};

/// The staged archive's file name in a revision folder (the bundle crate's
/// `stage::BUNDLE_COPY`; repeated here so this crate need not read
/// archives).
pub const STAGED_BUNDLE_FILE: &str = "bundle.gtbundle";
/// Largest bundle archive fetched from a peer.
pub const FETCHED_BUNDLE_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;

/// Attempts of one write while leadership is moving: each waits
/// [`FORWARD_RETRY_DELAY`], so a write rides out an election of a few
/// seconds and then fails with a clear error instead of hanging.
pub const MAX_WRITE_ATTEMPTS: u32 = 40;
/// Pause between attempts of a write that found no leader.
pub const FORWARD_RETRY_DELAY: Duration = Duration::from_millis(150);
/// How long a node waits to apply a write the leader committed for it.
pub const APPLY_WAIT: Duration = Duration::from_secs(10);

/// Peer calls give up after this long: longer than any Raft RPC takes on a
/// healthy link (a whole snapshot included), short enough that a write
/// forwarded to a leader that just died is retried on the new one soon.
pub const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Keep-alive of peer connections: a quiet connection still carries a packet
/// this often, so the idle timeout below only fires on a peer that is gone.
pub const PEER_KEEP_ALIVE: Duration = Duration::from_secs(1);

fn transport_config() -> TransportConfig {
    TransportConfig {
        call_timeout: PEER_CALL_TIMEOUT,
        keep_alive_interval: PEER_KEEP_ALIVE,
        idle_timeout: PEER_IDLE_TIMEOUT,
        ..TransportConfig::default()
    }
}

/// How to start a cluster member.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The node's certificate name; its Raft id derives from it.
    pub node_name: String,
    /// Raft log and bookkeeping.
    pub data_dir: PathBuf,
    /// The replica store (an ordinary store folder).
    pub store_root: PathBuf,
    /// Where the QUIC endpoint listens.
    pub raft_listen: SocketAddr,
    /// The address peers reach it at (defaults to `raft_listen`).
    pub raft_advertise: Option<SocketAddr>,
    /// The node's admin API address, published in the membership.
    pub admin_addr: String,
    pub identity: NodeIdentity,
    /// Create a one-voter cluster if this node has never been in one.
    pub bootstrap: bool,
    /// Ask the member at this Raft address to add this node as a voter.
    pub join: Option<SocketAddr>,
    pub raft: RaftSettings,
}

/// Why the cluster member failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster data in {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("raft configuration: {0}")]
    Config(String),
    #[error("the cluster endpoint could not listen on {addr}: {message}")]
    Bind { addr: SocketAddr, message: String },
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
    Join { peer: SocketAddr, message: String },
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

/// A running cluster member.
pub struct ClusterHandle {
    raft: Raft,
    state_machine: StateMachine,
    node_id: NodeId,
    node: ClusterNode,
    client: Arc<TransportClient>,
    server: Mutex<Option<TransportServer>>,
    leader_contact: LeaderContact,
    settings: RaftSettings,
}

fn storage_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ClusterError + '_ {
    move |source| ClusterError::Storage {
        path: path.to_owned(),
        source,
    }
}

impl ClusterHandle {
    /// Opens the log and replica, listens for peers, starts Raft, then
    /// bootstraps or joins as configured.
    pub async fn start(config: ClusterConfig) -> Result<Arc<Self>, ClusterError> {
        let node_id = node_id_for(&config.node_name);
        let advertise = config.raft_advertise.unwrap_or(config.raft_listen);
        std::fs::create_dir_all(&config.data_dir).map_err(storage_error(&config.data_dir))?;
        let log_path = config.data_dir.join("raft-log.redb");
        let log_store = LogStore::open(&log_path).map_err(storage_error(&log_path))?;
        let state_machine = StateMachine::open(&config.store_root, &config.data_dir)
            .map_err(storage_error(&config.store_root))?;

        let service = PeerService::default();
        service.set_store_root(config.store_root.clone());
        let handler_service = service.clone();
        let server = TransportServer::bind(
            config.raft_listen,
            &config.identity,
            transport_config(),
            move |peer, request: PeerRequest| {
                let service = handler_service.clone();
                async move { service.handle(peer, request).await }
            },
        )
        .map_err(|error| ClusterError::Bind {
            addr: config.raft_listen,
            message: error.to_string(),
        })?;
        let advertise = if advertise.port() == 0 {
            server.local_addr()
        } else {
            advertise
        };
        let client_bind: SocketAddr = if advertise.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let client = Arc::new(
            TransportClient::bind(client_bind, &config.identity, transport_config()).map_err(
                |error| ClusterError::Bind {
                    addr: client_bind,
                    message: error.to_string(),
                },
            )?,
        );

        let raft_config =
            raft_config(&config.raft).map_err(|error| ClusterError::Config(error.to_string()))?;
        let raft = Raft::new(
            node_id,
            Arc::new(raft_config),
            Network::new(Arc::clone(&client)),
            log_store,
            state_machine.clone(),
        )
        .await
        .map_err(|error| ClusterError::Raft(error.to_string()))?;
        service.set_raft(raft.clone());

        let node = ClusterNode {
            name: config.node_name.clone(),
            raft_addr: advertise.to_string(),
            admin_addr: config.admin_addr.clone(),
        };
        let handle = Arc::new(Self {
            raft,
            state_machine,
            node_id,
            node,
            client,
            server: Mutex::new(Some(server)),
            leader_contact: service.leader_contact(),
            settings: config.raft.clone(),
        });
        tokio::spawn(export_metrics(Arc::downgrade(&handle)));
        let initialized = handle
            .raft
            .is_initialized()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        if !initialized && config.bootstrap {
            let members = BTreeMap::from([(node_id, handle.node.clone())]);
            handle
                .raft
                .initialize(members)
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
        }
        if let Some(peer) = config.join
            && !handle.is_voter()
        {
            handle.join_through(peer).await?;
        }
        Ok(handle)
    }

    fn is_voter(&self) -> bool {
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

    async fn join_through(&self, peer: SocketAddr) -> Result<(), ClusterError> {
        let mut target = peer;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let request = PeerRequest::Join(self.node_id, self.node.clone());
            match self
                .client
                .call::<PeerRequest, PeerResponse>(target, &request)
                .await
            {
                Ok(PeerResponse::MembershipChanged) => return Ok(()),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, node)),
                }) => {
                    target = node.raft_addr.parse().map_err(|error| ClusterError::Join {
                        peer,
                        message: format!(
                            "the leader's address {:?} is invalid: {error}",
                            node.raft_addr
                        ),
                    })?;
                }
                Ok(PeerResponse::NotLeader { leader: None }) => {
                    tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                }
                Ok(other) => {
                    return Err(ClusterError::Join {
                        peer,
                        message: format!("unexpected answer {other:?}"),
                    });
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "join attempt failed; retrying");
                    tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                    target = peer;
                }
            }
        }
        Err(ClusterError::Join {
            peer,
            message: format!("no leader accepted the join after {MAX_WRITE_ATTEMPTS} attempts"),
        })
    }

    /// Copies the staged bundle archive of `revision` from any member that
    /// holds it into `dest`. The caller verifies its digest before use.
    pub async fn fetch_bundle(
        &self,
        env: &str,
        revision: &str,
        dest: &std::path::Path,
    ) -> Result<(), ClusterError> {
        let peers: Vec<ClusterNode> = self
            .status()
            .members
            .into_iter()
            .filter(|(id, _)| *id != self.node_id)
            .map(|(_, node)| node)
            .collect();
        let mut last_error = "no other member".to_owned();
        for peer in peers {
            match self.fetch_from(&peer, env, revision, dest).await {
                Ok(true) => return Ok(()),
                Ok(false) => last_error = format!("{peer} does not hold it"),
                Err(error) => last_error = format!("{peer}: {error}"),
            }
        }
        Err(ClusterError::Forward {
            leader: "any member".to_owned(),
            message: format!(
                "the bundle of revision {revision} could not be fetched: {last_error}"
            ),
        })
    }

    async fn fetch_from(
        &self,
        peer: &ClusterNode,
        env: &str,
        revision: &str,
        dest: &std::path::Path,
    ) -> Result<bool, String> {
        use std::io::Write;
        let addr: SocketAddr = peer.raft_addr.parse().map_err(|e| format!("{e}"))?;
        let mut file = std::fs::File::create(dest).map_err(|e| e.to_string())?;
        let mut offset = 0u64;
        loop {
            let request = PeerRequest::FetchBundle {
                env: env.to_owned(),
                revision: revision.to_owned(),
                offset,
            };
            match self
                .client
                .call::<PeerRequest, PeerResponse>(addr, &request)
                .await
            {
                Ok(PeerResponse::BundleChunk { total, bytes }) => {
                    if total > FETCHED_BUNDLE_BYTES_MAX {
                        return Err(format!(
                            "the bundle is {total} bytes, more than {FETCHED_BUNDLE_BYTES_MAX}"
                        ));
                    }
                    file.write_all(&bytes).map_err(|e| e.to_string())?;
                    offset += bytes.len() as u64;
                    if offset >= total {
                        file.sync_all().map_err(|e| e.to_string())?;
                        return Ok(true);
                    }
                    if bytes.is_empty() {
                        return Err(format!(
                            "the peer sent no bytes at offset {offset} of {total}"
                        ));
                    }
                }
                Ok(PeerResponse::NoBundle) => return Ok(false),
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(error) => return Err(error.to_string()),
            }
        }
    }

    /// Asks the leader to add `node` (already running, not in a cluster) as
    /// a learner and, once it caught up, as a voter.
    pub async fn add(&self, node_id: NodeId, node: ClusterNode) -> Result<(), ClusterError> {
        self.change_membership(PeerRequest::Join(node_id, node))
            .await
    }

    /// Asks the leader to remove `node_id` (this node or another).
    pub async fn remove(&self, node_id: NodeId) -> Result<(), ClusterError> {
        self.change_membership(PeerRequest::Leave(node_id)).await
    }

    /// Applies a `Join` or `Leave` here if this node leads, else sends it to
    /// the leader; retries while leadership moves.
    async fn change_membership(&self, request: PeerRequest) -> Result<(), ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let local = match &request {
                PeerRequest::Join(id, node) => join_as_leader(&self.raft, *id, node.clone()).await,
                PeerRequest::Leave(id) => leave_as_leader(&self.raft, *id).await,
                other => Err(format!("{other:?} is not a membership change")),
            };
            match local {
                Ok(PeerResponse::MembershipChanged) => return Ok(()),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, leader)),
                }) => {
                    let Ok(addr) = leader.raft_addr.parse::<SocketAddr>() else {
                        return Err(ClusterError::Forward {
                            leader: leader.to_string(),
                            message: "invalid raft address".to_owned(),
                        });
                    };
                    match self
                        .client
                        .call::<PeerRequest, PeerResponse>(addr, &request)
                        .await
                    {
                        Ok(PeerResponse::MembershipChanged) => return Ok(()),
                        Ok(_) | Err(_) => tokio::time::sleep(FORWARD_RETRY_DELAY).await,
                    }
                }
                Ok(_) => tokio::time::sleep(FORWARD_RETRY_DELAY).await,
                Err(message) => return Err(ClusterError::Raft(message)),
            }
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Replicates `request` and returns what applying it answered, once this
    /// node has applied it too (so the caller reads its own write here).
    pub async fn write(&self, request: ClusterRequest) -> Result<ClusterResponse, ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let answer = match write_as_leader(&self.raft, request.clone()).await {
                Ok(answer) => answer,
                Err(message) => return Err(ClusterError::Raft(message)),
            };
            let (response, index) = match answer {
                PeerResponse::Written {
                    response,
                    log_index,
                } => (response, log_index),
                PeerResponse::NotLeader {
                    leader: Some((leader_id, leader)),
                } => match self.forward(leader_id, &leader, &request).await? {
                    Some(written) => written,
                    None => {
                        self.wait_for_a_leader_other_than(Some(leader_id)).await;
                        continue;
                    }
                },
                _ => {
                    self.wait_for_a_leader_other_than(None).await;
                    continue;
                }
            };
            metrics::counter!("gtc_raft_writes_total").increment(1);
            self.raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "a forwarded write")
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
            return Ok(response);
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Waits until this node knows a leader other than `not` (an election
    /// ended), at most [`FORWARD_RETRY_DELAY`]: a write retried after a
    /// failover goes out as soon as the new leader is known, not after a
    /// fixed pause.
    async fn wait_for_a_leader_other_than(&self, not: Option<NodeId>) {
        let wait = self.raft.wait(Some(FORWARD_RETRY_DELAY));
        let _ = wait
            .metrics(
                |metrics| metrics.current_leader.is_some() && metrics.current_leader != not,
                "a leader to forward to",
            )
            .await;
    }

    /// Sends `request` to `leader`. `None` when the caller should retry: the
    /// leader certainly did not take it (unreachable or no longer leader), or
    /// it may have but leadership moved on meanwhile (a retry is safe: the
    /// state machine answers an event id it applied from its outcome window).
    ///
    /// The call is abandoned as soon as this node learns that `leader_id` no
    /// longer leads (an election started or ended), so a write sent to a
    /// leader that just died waits for the election, not for the call's
    /// timeout.
    async fn forward(
        &self,
        leader_id: NodeId,
        leader: &ClusterNode,
        request: &ClusterRequest,
    ) -> Result<Option<(ClusterResponse, u64)>, ClusterError> {
        let call = self.forward_once(leader, request);
        let wait = self.raft.wait(Some(PEER_CALL_TIMEOUT));
        let deposed = wait.metrics(
            |metrics| metrics.current_leader != Some(leader_id),
            "the leader a write was forwarded to is no longer the leader",
        );
        tokio::select! {
            answer = call => answer,
            Ok(_) = deposed => {
                tracing::info!(leader = %leader, "leadership moved while a write was forwarded; retrying");
                Ok(None)
            }
        }
    }

    async fn forward_once(
        &self,
        leader: &ClusterNode,
        request: &ClusterRequest,
    ) -> Result<Option<(ClusterResponse, u64)>, ClusterError> {
        let addr: SocketAddr = leader
            .raft_addr
            .parse()
            .map_err(|error| ClusterError::Forward {
                leader: leader.to_string(),
                message: format!("invalid raft address: {error}"),
            })?;
        metrics::counter!("gtc_raft_forwarded_writes_total").increment(1);
        match self
            .client
            .call::<PeerRequest, PeerResponse>(addr, &PeerRequest::Write(request.clone()))
            .await
        {
            Ok(PeerResponse::Written {
                response,
                log_index,
            }) => Ok(Some((response, log_index))),
            Ok(PeerResponse::NotLeader { .. }) => Ok(None),
            Ok(other) => Err(ClusterError::Forward {
                leader: leader.to_string(),
                message: format!("unexpected answer {other:?}"),
            }),
            Err(transport::RpcError::Connect { .. }) => Ok(None),
            // The leader may or may not have taken the write. Retrying is
            // safe: the state machine answers an event id it has applied
            // from its outcome window instead of applying it again.
            Err(
                error @ (transport::RpcError::Timeout { .. }
                | transport::RpcError::ConnectionLost { .. }
                | transport::RpcError::StreamAbandoned { .. }),
            ) => {
                tracing::warn!(leader = %leader, %error, "forwarded write got no answer; retrying");
                Ok(None)
            }
            Err(error) => Err(ClusterError::OutcomeUnknown {
                message: error.to_string(),
            }),
        }
    }

    /// Applies one command through the cluster.
    pub async fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
        let envelope_json = serde_json::to_string(envelope)
            .map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::Submit { envelope_json })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        outcome(response)?.into_submit()
    }

    /// Records an audit event through the cluster.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), SubmitError> {
        let event_json =
            serde_json::to_string(event).map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::Record { event_json })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        match outcome(response)? {
            Outcome::Recorded | Outcome::AlreadyApplied => Ok(()),
            other => Err(replicated_failure(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Waits until this node has applied everything the leader had committed
    /// when the call started: a linearizable read point.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let index = match read_index_as_leader(&self.raft).await {
                Ok(PeerResponse::ReadIndex { index }) => Some(index),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, leader)),
                }) => self.remote_read_index(&leader).await,
                Ok(_) => None,
                Err(message) => return Err(ClusterError::Raft(message)),
            };
            let Some(index) = index else {
                tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                continue;
            };
            self.raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "a read index")
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
            return Ok(());
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    async fn remote_read_index(&self, leader: &ClusterNode) -> Option<u64> {
        let addr: SocketAddr = leader.raft_addr.parse().ok()?;
        match self
            .client
            .call::<PeerRequest, PeerResponse>(addr, &PeerRequest::ReadIndex)
            .await
        {
            Ok(PeerResponse::ReadIndex { index }) => Some(index),
            _ => None,
        }
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
        if metrics.state == ServerState::Leader {
            metrics
                .last_quorum_acked
                .map(|acked| openraft::Instant::elapsed(&*acked))
        } else {
            self.leader_contact.age()
        }
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

    /// Whether this node is the leader right now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// Stops Raft and the peer endpoint.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
        let server = self.server.lock().ok().and_then(|mut server| server.take());
        if let Some(server) = server {
            server.shutdown().await;
        }
        self.client.close().await;
    }
}

/// How often the leader-contact age is exported even when nothing else
/// changes (a follower's heartbeats do not change Raft's metrics).
const CONTACT_EXPORT_INTERVAL: Duration = Duration::from_millis(500);

/// Publishes Raft's metrics to Prometheus whenever they change (and the
/// leader-contact age every [`CONTACT_EXPORT_INTERVAL`]), until the member
/// is dropped or Raft shuts down.
async fn export_metrics(handle: std::sync::Weak<ClusterHandle>) {
    let Some(mut watch) = handle.upgrade().map(|handle| handle.raft.metrics()) else {
        return;
    };
    let mut last_leader = None;
    loop {
        let metrics = watch.borrow_watched().clone();
        match handle
            .upgrade()
            .and_then(|handle| handle.leader_contact_age())
        {
            Some(age) => {
                metrics::gauge!("gtc_raft_leader_contact_age_seconds").set(age.as_secs_f64())
            }
            None => metrics::gauge!("gtc_raft_leader_contact_age_seconds").set(f64::NAN),
        }
        metrics::gauge!("gtc_raft_term").set(metrics.current_term as f64);
        metrics::gauge!("gtc_raft_is_leader").set(if metrics.state == ServerState::Leader {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("gtc_raft_has_leader").set(if metrics.current_leader.is_some() {
            1.0
        } else {
            0.0
        });
        if metrics.current_leader != last_leader {
            if metrics.current_leader.is_some() {
                metrics::counter!("gtc_raft_leader_changes_total").increment(1);
            }
            last_leader = metrics.current_leader;
        }
        let index = |id: Option<&crate::types::LogId>| id.map_or(0.0, |id| id.index() as f64);
        let committed = index(metrics.cluster_committed.as_ref());
        let applied = index(metrics.last_applied.as_ref());
        metrics::gauge!("gtc_raft_last_log_index").set(metrics.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("gtc_raft_commit_index").set(committed);
        metrics::gauge!("gtc_raft_applied_index").set(applied);
        metrics::gauge!("gtc_raft_apply_lag_entries").set((committed - applied).max(0.0));
        metrics::gauge!("gtc_raft_snapshot_index").set(index(metrics.snapshot.as_ref()));
        if let Some(replication) = &metrics.replication {
            let last = metrics.last_log_index.unwrap_or(0);
            for (id, matched) in replication.iter() {
                let matched = matched.as_ref().map_or(0, |log_id| log_id.index());
                metrics::gauge!("gtc_raft_follower_lag_entries", "follower" => id.to_string())
                    .set(last.saturating_sub(matched) as f64);
            }
        }
        tokio::select! {
            changed = watch.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(CONTACT_EXPORT_INTERVAL) => {}
        }
        if handle.strong_count() == 0 {
            return;
        }
    }
}

fn replicated_failure(message: String) -> SubmitError {
    SubmitError::Replicated {
        kind: deploy::error::ErrorKind::Store,
        message,
        field: None,
        applied: None,
    }
}

fn outcome(response: ClusterResponse) -> Result<Outcome, SubmitError> {
    match response {
        ClusterResponse::Outcome { outcome_json } => serde_json::from_str(&outcome_json)
            .map_err(|error| replicated_failure(format!("undecodable outcome: {error}"))),
        ClusterResponse::Failed { message } => Err(replicated_failure(message)),
    }
}

fn not_leader(raft: &Raft) -> PeerResponse {
    let metrics = raft.metrics().borrow_watched().clone();
    let leader = metrics.current_leader.and_then(|id| {
        metrics
            .membership_config
            .get_node(&id)
            .map(|node| (id, node.clone()))
    });
    PeerResponse::NotLeader { leader }
}

/// Proposes `request` on this node if it leads; otherwise names the leader.
pub(crate) async fn write_as_leader(
    raft: &Raft,
    request: ClusterRequest,
) -> Result<PeerResponse, String> {
    let started = std::time::Instant::now();
    match raft.client_write(request).await {
        Ok(written) => {
            metrics::histogram!("gtc_raft_proposal_seconds")
                .record(started.elapsed().as_secs_f64());
            Ok(PeerResponse::Written {
                response: written.data,
                log_index: written.log_id.index(),
            })
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(not_leader(raft)),
        Err(error) => Err(error.to_string()),
    }
}

/// On the leader: confirms leadership with a quorum (ReadIndex) and answers
/// with its applied index, which then includes every write committed
/// before the call. Elsewhere: names the leader.
pub(crate) async fn read_index_as_leader(raft: &Raft) -> Result<PeerResponse, String> {
    use openraft::error::LinearizableReadError;
    match raft
        .ensure_linearizable(openraft::ReadPolicy::ReadIndex)
        .await
    {
        Ok(_) => {
            let applied = raft
                .metrics()
                .borrow_watched()
                .last_applied
                .map_or(0, |id| id.index());
            Ok(PeerResponse::ReadIndex { index: applied })
        }
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Ok(not_leader(raft)),
        Err(error) => Err(error.to_string()),
    }
}

/// Adds `node` as a learner, waits for it to catch up, then makes it a voter.
pub(crate) async fn join_as_leader(
    raft: &Raft,
    id: NodeId,
    node: ClusterNode,
) -> Result<PeerResponse, String> {
    match raft.add_learner(id, node, true).await {
        Ok(_) => {}
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
            return Ok(not_leader(raft));
        }
        Err(error) => return Err(error.to_string()),
    }
    match raft
        .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
        .await
    {
        Ok(_) => Ok(PeerResponse::MembershipChanged),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(not_leader(raft)),
        Err(error) => Err(error.to_string()),
    }
}

/// Removes `id` from the voters and then from the membership.
pub(crate) async fn leave_as_leader(raft: &Raft, id: NodeId) -> Result<PeerResponse, String> {
    let is_voter = raft
        .metrics()
        .borrow_watched()
        .membership_config
        .voter_ids()
        .any(|voter| voter == id);
    if is_voter {
        match raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
        {
            Ok(_) => {}
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                return Ok(not_leader(raft));
            }
            Err(error) => return Err(error.to_string()),
        }
    }
    match raft
        .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
        .await
    {
        Ok(_) => Ok(PeerResponse::MembershipChanged),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Ok(not_leader(raft)),
        Err(error) => Err(error.to_string()),
    }
}
