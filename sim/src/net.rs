//! The simulated network between nodes: every Raft RPC crosses it.
//!
//! A message is delayed by a seeded draw from the link's delay range (so
//! concurrent messages are reordered), may be lost (the sender sees the
//! peer as unreachable after a timeout) or duplicated (the copy is
//! delivered later and its answer dropped), and is refused outright across
//! a partition. Partitions are per direction, so a one-way partition is a
//! blocked pair and a symmetric one is two. A crashed node neither sends
//! nor answers; a message in flight when its receiver crashes is lost.
//!
//!
//! Senders hold a connection per peer, as the production transport (QUIC)
//! does: the first message to a peer dials it (one extra round trip), and a
//! connection belongs to one life of the peer. When the peer restarts, the
//! sender still holds the old life's connection; [`TransportModel`] says
//! what then happens: production resets it on the first message (the
//! restarted peer answers with a stateless reset) and drops a connection a
//! call timed out on; the transport before issue #12 black-holed every
//! message until the idle timeout. A connection that heard nothing for the
//! idle timeout is dropped and dialled again.
//!
//! It owns nothing but the link table, the connections and the handle of
//! every running Raft; it must not touch state machines or disks.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consensus::{ClusterNode, NodeId, TypeConfig};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use rand::Rng;

use crate::entropy::SimRng;
use crate::machine::SimRaft;

/// A snapshot as the Raft of the simulation carries it.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
/// A vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;

/// How one direction of a link behaves when it is up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkFaults {
    /// Shortest one-way delay.
    pub min_delay: Duration,
    /// Longest one-way delay; draws in between reorder messages.
    pub max_delay: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
}

impl LinkFaults {
    /// A healthy LAN: 0.2 to 2 ms, nothing lost or duplicated.
    pub const CALM: Self = Self {
        min_delay: Duration::from_micros(200),
        max_delay: Duration::from_millis(2),
        loss: 0.0,
        duplicate: 0.0,
    };
}

/// How long a sender waits before it gives up on a lost message.
pub const LOSS_TIMEOUT: Duration = Duration::from_millis(500);

/// What a sender's transport does with connections (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportModel {
    /// A message on a connection to an earlier life of the peer is reset at
    /// once (`true`), or lost until the connection's idle timeout (`false`).
    pub reset_stale: bool,
    /// A call that timed out drops its connection, so the next one dials.
    pub forget_on_timeout: bool,
    /// A connection that heard nothing for this long is dropped.
    pub idle_timeout: Duration,
}

impl TransportModel {
    /// The production transport: keyed connection ids make a restarted
    /// peer reset its old connections; consensus's idle timeout.
    pub const PRODUCTION: Self = Self {
        reset_stale: true,
        forget_on_timeout: true,
        idle_timeout: consensus::PEER_IDLE_TIMEOUT,
    };
    /// The transport before issue #12: a restarted peer silently dropped
    /// the old connection's packets, which stayed in use for quinn's 30 s
    /// idle timeout.
    pub const BEFORE_ISSUE_12: Self = Self {
        reset_stale: false,
        forget_on_timeout: false,
        idle_timeout: Duration::from_secs(30),
    };
}

/// A sender's connection to one life of a peer.
#[derive(Debug, Clone, Copy)]
struct Connection {
    /// The life of the peer it was dialled to.
    life: u64,
    /// When an answer last came back on it.
    last_heard: tokio::time::Instant,
}

/// What became of one exchange.
pub enum Exchange<T> {
    /// No answer: lost, refused or the peer is down.
    Unreachable,
    /// The connection belonged to an earlier life of the peer and was reset.
    Reset,
    /// The receiver's answer.
    Answered(T),
}

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    pub sent: u64,
    pub lost: u64,
    pub refused: u64,
    pub duplicated: u64,
    /// Connections dialled (a first message, or after one was dropped).
    pub dialled: u64,
    /// Messages on a connection to an earlier life of the peer.
    pub stale: u64,
}

struct NetState {
    faults: LinkFaults,
    /// Blocked directions (from, to).
    blocked: BTreeSet<(NodeId, NodeId)>,
    rafts: BTreeMap<NodeId, SimRaft>,
    /// How many times each node has started.
    lives: BTreeMap<NodeId, u64>,
    /// Each sender's connection to each peer.
    connections: BTreeMap<(NodeId, NodeId), Connection>,
    transport: TransportModel,
    rng: SimRng,
    stats: NetStats,
}

/// The network; cheap to clone.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
}

/// What happens to one message.
#[derive(Clone, Copy)]
struct Plan {
    delivered: bool,
    duplicated: bool,
    there: Duration,
    back: Duration,
}

impl Net {
    pub fn new(rng: SimRng, transport: TransportModel) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState {
                faults: LinkFaults::CALM,
                blocked: BTreeSet::new(),
                rafts: BTreeMap::new(),
                lives: BTreeMap::new(),
                connections: BTreeMap::new(),
                transport,
                rng,
                stats: NetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // The simulation is single-threaded; a poisoned lock means a panic
        // already failed the run, so its state is still the best we have.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A running node's Raft becomes reachable, as a new life of the node.
    pub fn attach(&self, id: NodeId, raft: SimRaft) {
        let mut state = self.lock();
        state.rafts.insert(id, raft);
        *state.lives.entry(id).or_default() += 1;
    }

    /// A crashed node: unreachable, and its in-flight messages are lost.
    /// Its own connections die with it; its peers keep theirs to it.
    pub fn detach(&self, id: NodeId) {
        let mut state = self.lock();
        state.rafts.remove(&id);
        state.connections.retain(|(from, _), _| *from != id);
    }

    pub fn set_faults(&self, faults: LinkFaults) {
        self.lock().faults = faults;
    }

    pub fn faults(&self) -> LinkFaults {
        self.lock().faults
    }

    /// Blocks messages from `from` to `to` (one direction).
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.insert((from, to));
    }

    /// Blocks both directions between `node` and every one of `others`.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        let mut state = self.lock();
        for other in others.iter().filter(|other| **other != node) {
            state.blocked.insert((node, *other));
            state.blocked.insert((*other, node));
        }
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.lock().blocked.clear();
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    pub fn is_partitioned(&self) -> bool {
        !self.lock().blocked.is_empty()
    }

    fn open(&self, from: NodeId, to: NodeId) -> Option<SimRaft> {
        let state = self.lock();
        if state.blocked.contains(&(from, to)) || !state.rafts.contains_key(&from) {
            return None;
        }
        state.rafts.get(&to).cloned()
    }

    fn plan(&self, from: NodeId, to: NodeId) -> Plan {
        let mut state = self.lock();
        state.stats.sent += 1;
        let faults = state.faults;
        let blocked = state.blocked.contains(&(from, to));
        let mut draw = |range: (Duration, Duration)| {
            if range.1 <= range.0 {
                range.0
            } else {
                state.rng.random_range(range.0..=range.1)
            }
        };
        let there = draw((faults.min_delay, faults.max_delay));
        let back = draw((faults.min_delay, faults.max_delay));
        let lost = faults.loss > 0.0 && state.rng.random_bool(faults.loss.min(1.0));
        let duplicated = faults.duplicate > 0.0 && state.rng.random_bool(faults.duplicate.min(1.0));
        if blocked {
            state.stats.refused += 1;
        } else if lost {
            state.stats.lost += 1;
        } else if duplicated {
            state.stats.duplicated += 1;
        }
        Plan {
            delivered: !blocked && !lost,
            duplicated,
            there,
            back,
        }
    }

    /// The sender's connection to `to`, as the transport model has it now:
    /// `Some(true)` a current one, `Some(false)` one to an earlier life of
    /// the peer, `None` none (dropped when idle too long).
    fn connection(&self, from: NodeId, to: NodeId) -> Option<bool> {
        let mut state = self.lock();
        let idle_timeout = state.transport.idle_timeout;
        let connection = *state.connections.get(&(from, to))?;
        if connection.last_heard.elapsed() > idle_timeout {
            state.connections.remove(&(from, to));
            return None;
        }
        let life = state.lives.get(&to).copied().unwrap_or(0);
        Some(connection.life == life)
    }

    /// A dialled connection to the current life of `to`, if it is up.
    fn dialled(&self, from: NodeId, to: NodeId) {
        let mut state = self.lock();
        state.stats.dialled += 1;
        if state.rafts.contains_key(&to) {
            let life = state.lives.get(&to).copied().unwrap_or(0);
            let last_heard = tokio::time::Instant::now();
            state
                .connections
                .insert((from, to), Connection { life, last_heard });
        }
    }

    fn heard(&self, from: NodeId, to: NodeId) {
        if let Some(connection) = self.lock().connections.get_mut(&(from, to)) {
            connection.last_heard = tokio::time::Instant::now();
        }
    }

    fn forget(&self, from: NodeId, to: NodeId) {
        self.lock().connections.remove(&(from, to));
    }

    /// Sends one request from `from` to `to` over the sender's connection
    /// and waits for its answer. `call` runs on the receiver's Raft.
    pub async fn exchange<T, F, Fut>(&self, from: NodeId, to: NodeId, call: F) -> Exchange<T>
    where
        F: Fn(SimRaft) -> Fut,
        Fut: Future<Output = Option<T>> + Send + 'static,
        T: Send + 'static,
    {
        let plan = self.plan(from, to);
        let transport = self.lock().transport;
        match self.connection(from, to) {
            Some(true) => {}
            Some(false) if plan.delivered => {
                self.lock().stats.stale += 1;
                if transport.reset_stale {
                    // The new life answers the first packet with a reset.
                    tokio::time::sleep(plan.there + plan.back).await;
                    self.forget(from, to);
                    return Exchange::Reset;
                }
                // The new life drops what it cannot place: the call times
                // out and the connection stays until its idle timeout.
                tokio::time::sleep(LOSS_TIMEOUT).await;
                return Exchange::Unreachable;
            }
            Some(false) => {}
            None => {
                // Dialling costs a round trip before the request leaves.
                if !plan.delivered || self.open(from, to).is_none() {
                    tokio::time::sleep(LOSS_TIMEOUT).await;
                    return Exchange::Unreachable;
                }
                tokio::time::sleep(plan.there + plan.back).await;
                self.dialled(from, to);
            }
        }
        let answer = self.deliver(from, to, plan, call).await;
        match answer {
            Some(answer) => {
                self.heard(from, to);
                Exchange::Answered(answer)
            }
            None => {
                if transport.forget_on_timeout {
                    self.forget(from, to);
                }
                Exchange::Unreachable
            }
        }
    }

    async fn deliver<T, F, Fut>(&self, from: NodeId, to: NodeId, plan: Plan, call: F) -> Option<T>
    where
        F: Fn(SimRaft) -> Fut,
        Fut: Future<Output = Option<T>> + Send + 'static,
        T: Send + 'static,
    {
        if !plan.delivered {
            tokio::time::sleep(LOSS_TIMEOUT).await;
            return None;
        }
        tokio::time::sleep(plan.there).await;
        let raft = self.open(from, to)?;
        if plan.duplicated {
            // The copy arrives a little later; its answer goes nowhere.
            let copy = call(raft.clone());
            let later = plan.back;
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                let _ = copy.await;
            });
        }
        let answer = call(raft).await?;
        tokio::time::sleep(plan.back).await;
        // The answer travels back over the reverse direction.
        self.open(to, from)?;
        Some(answer)
    }
}

/// Makes a [`Peer`] per target for openraft.
pub struct PeerFactory {
    pub from: NodeId,
    pub net: Net,
}

/// One node's view of a peer.
pub struct Peer {
    from: NodeId,
    to: NodeId,
    net: Net,
}

impl RaftNetworkFactory<TypeConfig> for PeerFactory {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, _node: &ClusterNode) -> Self::Network {
        Peer {
            from: self.from,
            to: target,
            net: self.net.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

fn unreachable(from: NodeId, to: NodeId) -> Failure {
    Failure(format!("n{to} is unreachable from n{from}"))
}

fn reset(from: NodeId, to: NodeId) -> Failure {
    Failure(format!("n{to} restarted: it reset n{from}'s connection"))
}

impl Peer {
    /// openraft's view of one exchange: unreachable, reset, refused by the
    /// receiver's Raft, or answered.
    fn outcome<T>(&self, answer: Exchange<Result<T, String>>) -> Result<T, RPCError<TypeConfig>> {
        match answer {
            Exchange::Unreachable => Err(RPCError::Unreachable(Unreachable::new(&unreachable(
                self.from, self.to,
            )))),
            Exchange::Reset => Err(RPCError::Network(NetworkError::new(&reset(
                self.from, self.to,
            )))),
            Exchange::Answered(Err(error)) => {
                Err(RPCError::Network(NetworkError::new(&Failure(error))))
            }
            Exchange::Answered(Ok(response)) => Ok(response),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self
            .net
            .exchange(self.from, self.to, |raft| {
                let rpc = rpc.clone();
                async move { Some(raft.append_entries(rpc).await.map_err(|e| e.to_string())) }
            })
            .await;
        self.outcome(answer)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self
            .net
            .exchange(self.from, self.to, |raft| {
                let rpc = rpc.clone();
                async move { Some(raft.vote(rpc).await.map_err(|e| e.to_string())) }
            })
            .await;
        self.outcome(answer)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let answer = self
            .net
            .exchange(self.from, self.to, |raft| {
                let rpc = rpc.clone();
                async move { Some(raft.pre_vote(rpc).await.map_err(|e| e.to_string())) }
            })
            .await;
        self.outcome(answer)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let answer = self
            .net
            .exchange(self.from, self.to, |raft| {
                let (vote, snapshot) = (vote, snapshot.clone());
                async move {
                    Some(
                        raft.install_full_snapshot(vote, snapshot)
                            .await
                            .map_err(|e| e.to_string()),
                    )
                }
            })
            .await;
        match answer {
            Exchange::Unreachable => Err(StreamingError::Unreachable(Unreachable::new(
                &unreachable(self.from, self.to),
            ))),
            Exchange::Reset => Err(StreamingError::Network(NetworkError::new(&reset(
                self.from, self.to,
            )))),
            Exchange::Answered(Err(error)) => {
                Err(StreamingError::Network(NetworkError::new(&Failure(error))))
            }
            Exchange::Answered(Ok(response)) => Ok(response),
        }
    }
}
