//! The simulated network between nodes: every peer call of consensus
//! crosses it (Raft RPCs, forwarded writes, read indexes, snapshots in
//! pieces), as consensus's [`PeerNetwork`] ([`SimPeers`]), and is answered
//! by the receiving member's own `PeerService::handle`.
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
//! A held link keeps every message sent over it until it is released:
//! the sender may give up meanwhile (its call times out), and the message
//! is still delivered on release, as a late packet would be.
//!
//! It owns nothing but the link table, the connections and the peer
//! service of every running member; it must not touch state machines or
//! disks.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use consensus::{CallError, NodeId, PeerNetwork, PeerRequest, PeerResponse, PeerService};
use futures::future::BoxFuture;
use rand::Rng;

use crate::entropy::SimRng;

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
    /// Held directions (from, to): messages wait for the release.
    held: BTreeSet<(NodeId, NodeId)>,
    released: Arc<tokio::sync::Notify>,
    services: BTreeMap<NodeId, PeerService>,
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
                held: BTreeSet::new(),
                released: Arc::new(tokio::sync::Notify::new()),
                services: BTreeMap::new(),
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

    /// A running member's service becomes reachable, as a new life of the
    /// node.
    pub fn attach(&self, id: NodeId, service: PeerService) {
        let mut state = self.lock();
        state.services.insert(id, service);
        *state.lives.entry(id).or_default() += 1;
    }

    /// A crashed node: unreachable, and its in-flight messages are lost.
    /// Its own connections die with it; its peers keep theirs to it.
    pub fn detach(&self, id: NodeId) {
        let mut state = self.lock();
        state.services.remove(&id);
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

    /// Unblocks messages from `from` to `to`.
    pub fn repair(&self, from: NodeId, to: NodeId) {
        self.lock().blocked.remove(&(from, to));
    }

    /// Holds messages from `from` to `to` until [`Net::release`].
    pub fn hold(&self, from: NodeId, to: NodeId) {
        self.lock().held.insert((from, to));
    }

    /// Delivers what `from` to `to` held, and no longer holds.
    pub fn release(&self, from: NodeId, to: NodeId) {
        let released = {
            let mut state = self.lock();
            state.held.remove(&(from, to));
            Arc::clone(&state.released)
        };
        released.notify_waiters();
    }

    /// Removes every partition and releases every held link.
    pub fn heal(&self) {
        let released = {
            let mut state = self.lock();
            state.blocked.clear();
            state.held.clear();
            Arc::clone(&state.released)
        };
        released.notify_waiters();
    }

    fn is_held(&self, from: NodeId, to: NodeId) -> bool {
        self.lock().held.contains(&(from, to))
    }

    /// Waits until `from` to `to` is not held.
    async fn until_released(&self, from: NodeId, to: NodeId) {
        loop {
            let released = Arc::clone(&self.lock().released);
            let notified = released.notified();
            if !self.is_held(from, to) {
                return;
            }
            notified.await;
        }
    }

    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    pub fn is_partitioned(&self) -> bool {
        let state = self.lock();
        !state.blocked.is_empty() || !state.held.is_empty()
    }

    fn open(&self, from: NodeId, to: NodeId) -> Option<PeerService> {
        let state = self.lock();
        if state.blocked.contains(&(from, to)) || !state.services.contains_key(&from) {
            return None;
        }
        state.services.get(&to).cloned()
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
        if state.services.contains_key(&to) {
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
    /// and waits for its answer. `call` runs on the receiver's service.
    pub async fn exchange<T, F, Fut>(&self, from: NodeId, to: NodeId, call: F) -> Exchange<T>
    where
        F: Fn(PeerService) -> Fut,
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
        F: Fn(PeerService) -> Fut,
        Fut: Future<Output = Option<T>> + Send + 'static,
        T: Send + 'static,
    {
        if !plan.delivered {
            tokio::time::sleep(LOSS_TIMEOUT).await;
            return None;
        }
        tokio::time::sleep(plan.there).await;
        if self.is_held(from, to) {
            // The message waits on the link; it is delivered on release
            // even if the sender stopped waiting for its answer.
            let (tx, rx) = tokio::sync::oneshot::channel();
            let net = self.clone();
            let service = self.open(from, to);
            let pending = service.map(&call);
            tokio::spawn(async move {
                net.until_released(from, to).await;
                if net.open(from, to).is_none() {
                    return;
                }
                if let Some(pending) = pending {
                    let _ = tx.send(pending.await);
                }
            });
            let answer = rx.await.ok().flatten()?;
            tokio::time::sleep(plan.back).await;
            self.open(to, from)?;
            return Some(answer);
        }
        let service = self.open(from, to)?;
        if plan.duplicated {
            // The copy arrives a little later; its answer goes nowhere.
            let copy = call(service.clone());
            let later = plan.back;
            tokio::spawn(async move {
                tokio::time::sleep(later).await;
                let _ = copy.await;
            });
        }
        let answer = call(service).await?;
        tokio::time::sleep(plan.back).await;
        // The answer travels back over the reverse direction.
        self.open(to, from)?;
        Some(answer)
    }
}

/// A member's view of the network: consensus's [`PeerNetwork`] over
/// [`Net`]. Members are addressed as `sim:n<id>`.
pub struct SimPeers {
    pub from: NodeId,
    pub net: Net,
}

/// The Raft address of node `id` in the simulation.
pub fn address(id: NodeId) -> String {
    format!("sim:n{id}")
}

fn node_of(address: &str) -> Option<NodeId> {
    address.strip_prefix("sim:n")?.parse().ok()
}

impl PeerNetwork for SimPeers {
    fn call(
        &self,
        target: &str,
        request: PeerRequest,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Result<PeerResponse, CallError>> {
        let net = self.net.clone();
        let from = self.from;
        let target = target.to_owned();
        Box::pin(async move {
            let Some(to) = node_of(&target) else {
                return Err(CallError::Unreachable {
                    target,
                    message: "not a simulated address".to_owned(),
                });
            };
            let sender = format!("n{from}");
            let exchange = net.exchange(from, to, |service| {
                let (request, sender) = (request.clone(), sender.clone());
                async move { Some(service.handle(&sender, request).await) }
            });
            let limit = timeout.unwrap_or(consensus::PEER_CALL_TIMEOUT);
            let answer = match tokio::time::timeout(limit, exchange).await {
                Ok(answer) => answer,
                Err(_) => {
                    if net.lock().transport.forget_on_timeout {
                        net.forget(from, to);
                    }
                    return Err(CallError::NoAnswer {
                        target,
                        message: format!("timed out after {limit:?}"),
                    });
                }
            };
            match answer {
                Exchange::Unreachable => Err(CallError::Unreachable {
                    message: format!("n{to} is unreachable from n{from}"),
                    target,
                }),
                Exchange::Reset => Err(CallError::NoAnswer {
                    message: format!("n{to} restarted: it reset n{from}'s connection"),
                    target,
                }),
                Exchange::Answered(Err(message)) => Err(CallError::Failed { target, message }),
                Exchange::Answered(Ok(response)) => Ok(response),
            }
        })
    }
}
