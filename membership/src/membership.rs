//! The handle around one node's chitchat task.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
    spawn_chitchat,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, MembershipConfig};
use crate::facts::{FactError, FactKey, NodeFacts};
use crate::member::{Member, NodeId};
use crate::preopened::PreOpenedTransport;

/// Heartbeat intervals the failure detector remembers per peer. chitchat's
/// default; at one sample per round it spans many minutes of history.
const FAILURE_DETECTOR_SAMPLES: usize = 1_000;

/// Heartbeat gaps longer than this are not learned as "normal", so one long
/// pause (a partition) does not make the detector lenient forever.
const FAILURE_DETECTOR_MAX_INTERVAL: Duration = Duration::from_secs(10);

/// How long a deleted key's tombstone is kept. This crate never deletes
/// keys, so the value only matters for keys a future version removes.
const KEY_TOMBSTONE_GRACE_PERIOD: Duration = Duration::from_secs(60 * 60);

/// chitchat wire version sent. V0 is understood by every chitchat 0.13
/// node; V1 (compressed digests) may only be enabled once all nodes run a
/// build that decodes it, so it stays off until clusters outgrow V0.
const GOSSIP_PROTOCOL_VERSION: ProtocolVersion = ProtocolVersion::V0;

/// One node's membership in the cluster gossip.
///
/// Dropping the handle also stops gossip (chitchat's task ends when its
/// command channel closes), but only [`Membership::shutdown`] waits for the
/// socket to be released.
pub struct Membership {
    chitchat: ChitchatHandle,
    self_node_id: NodeId,
    gossip_advertise_addr: SocketAddr,
    live_members_rx: watch::Receiver<Vec<Member>>,
    live_members_forwarder: JoinHandle<()>,
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid membership config: {0}")]
    InvalidConfig(#[from] ConfigError),
    #[error("invalid initial fact: {0}")]
    InvalidFact(#[from] FactError),
    #[error("cannot open gossip socket on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot start chitchat: {reason}")]
    Spawn { reason: String },
}

/// Why gossip did not stop cleanly (the task had already failed or panicked).
#[derive(Debug, thiserror::Error)]
#[error("gossip task ended with an error: {reason}")]
pub struct ShutdownError {
    pub reason: String,
}

impl Membership {
    /// Validates `config`, opens the gossip socket on `transport`, publishes
    /// `initial_facts` and starts gossiping.
    ///
    /// Production passes [`crate::encrypted_udp`]; tests and the simulation
    /// may pass chitchat's `ChannelTransport` or any other `Transport`.
    pub async fn start(
        config: MembershipConfig,
        initial_facts: &NodeFacts,
        transport: &dyn Transport,
    ) -> Result<Membership, StartError> {
        config.validate()?;
        let initial_key_values = validated_key_values(initial_facts)?;
        let socket = transport
            .open(config.gossip_listen_addr)
            .await
            .map_err(|error| StartError::Bind {
                addr: config.gossip_listen_addr,
                reason: format!("{error:#}"),
            })?;
        let bound_addr = socket.local_addr().map_err(|error| StartError::Bind {
            addr: config.gossip_listen_addr,
            reason: format!("{error:#}"),
        })?;
        let mut gossip_advertise_addr = config.gossip_advertise_addr;
        if gossip_advertise_addr.port() == 0 {
            gossip_advertise_addr.set_port(bound_addr.port());
        }
        let chitchat_config = chitchat_config(&config, bound_addr, gossip_advertise_addr);
        let chitchat = spawn_chitchat(
            chitchat_config,
            initial_key_values,
            &PreOpenedTransport::new(socket),
        )
        .await
        .map_err(|error| StartError::Spawn {
            reason: format!("{error:#}"),
        })?;
        let chitchat_live_rx = chitchat
            .with_chitchat(|chitchat| chitchat.live_nodes_watcher())
            .await;
        let (live_members_tx, live_members_rx) =
            watch::channel(members_from_live_map(&chitchat_live_rx.borrow()));
        let live_members_forwarder =
            tokio::spawn(forward_live_members(chitchat_live_rx, live_members_tx));
        Ok(Membership {
            chitchat,
            self_node_id: NodeId {
                name: config.node_name,
                generation: config.generation,
            },
            gossip_advertise_addr,
            live_members_rx,
            live_members_forwarder,
        })
    }

    /// This incarnation's identity.
    pub fn self_node_id(&self) -> &NodeId {
        &self.self_node_id
    }

    /// The address peers reach this node at (the bound port if the config
    /// said port 0); give it to other nodes as a seed.
    pub fn gossip_advertise_addr(&self) -> SocketAddr {
        self.gossip_advertise_addr
    }

    /// Publishes one fact; peers see it within a few gossip rounds.
    pub async fn set_fact(&self, key: FactKey, value: &str) -> Result<(), FactError> {
        key.validate_value(value)?;
        self.chitchat
            .with_chitchat(|chitchat| chitchat.self_node_state().set(key.as_str(), value))
            .await;
        Ok(())
    }

    /// Publishes the ready local instances of `revision` (an empty list
    /// withdraws them).
    pub async fn set_endpoints(
        &self,
        revision: &str,
        addrs: &[std::net::SocketAddr],
    ) -> Result<(), FactError> {
        let key = format!("{}{revision}", crate::facts::KEY_PREFIX_ENDPOINTS);
        if addrs.is_empty() {
            self.chitchat
                .with_chitchat(|chitchat| chitchat.self_node_state().delete(&key))
                .await;
            return Ok(());
        }
        let value = crate::facts::endpoints_value(addrs)?;
        self.chitchat
            .with_chitchat(|chitchat| chitchat.self_node_state().set(&key, &value))
            .await;
        Ok(())
    }

    /// Publishes this node's counts for `revision` (an empty list withdraws
    /// them).
    pub async fn set_counts(&self, revision: &str, numbers: &[u64]) -> Result<(), FactError> {
        self.set_numbers(crate::facts::KEY_PREFIX_COUNTS, revision, numbers)
            .await
    }

    /// Publishes the requests in flight at this node's router for
    /// `revision`, `[served, held]` (an empty list withdraws them).
    pub async fn set_in_flight(&self, revision: &str, numbers: &[u64]) -> Result<(), FactError> {
        self.set_numbers(crate::facts::KEY_PREFIX_IN_FLIGHT, revision, numbers)
            .await
    }

    async fn set_numbers(
        &self,
        prefix: &str,
        revision: &str,
        numbers: &[u64],
    ) -> Result<(), FactError> {
        let key = format!("{prefix}{revision}");
        if numbers.is_empty() {
            self.chitchat
                .with_chitchat(|chitchat| chitchat.self_node_state().delete(&key))
                .await;
            return Ok(());
        }
        let value = crate::facts::counts_value(numbers)?;
        self.chitchat
            .with_chitchat(|chitchat| chitchat.self_node_state().set(&key, &value))
            .await;
        Ok(())
    }

    /// Publishes every fact that is `Some` in `facts`, in one state update.
    pub async fn set_facts(&self, facts: &NodeFacts) -> Result<(), FactError> {
        let key_values = validated_key_values(facts)?;
        self.chitchat
            .with_chitchat(|chitchat| {
                let state = chitchat.self_node_state();
                for (key, value) in &key_values {
                    state.set(key, value);
                }
            })
            .await;
        Ok(())
    }

    /// Nodes the failure detector considers live, this node included,
    /// sorted by node id.
    pub async fn live_members(&self) -> Vec<Member> {
        self.chitchat
            .with_chitchat(|chitchat| {
                let mut members: Vec<Member> = chitchat
                    .live_nodes()
                    .map(|id| Member::from_chitchat(id, chitchat.node_state(id)))
                    .collect();
                members.sort_by(|left, right| left.node_id.cmp(&right.node_id));
                members
            })
            .await
    }

    /// Nodes declared dead and not yet forgotten (see
    /// `dead_node_grace_period_ms`), sorted by node id. A restarted node's
    /// old incarnation shows here while the new one is live.
    pub async fn dead_members(&self) -> Vec<Member> {
        self.chitchat
            .with_chitchat(|chitchat| {
                let mut members: Vec<Member> = chitchat
                    .dead_nodes()
                    .map(|id| Member::from_chitchat(id, chitchat.node_state(id)))
                    .collect();
                members.sort_by(|left, right| left.node_id.cmp(&right.node_id));
                members
            })
            .await
    }

    /// A receiver that changes whenever the live set changes: a node joins
    /// or dies, or a live node publishes new facts. chitchat refreshes the
    /// live set once per gossip round, so changes arrive at that pace.
    pub fn watch_live_members(&self) -> watch::Receiver<Vec<Member>> {
        self.live_members_rx.clone()
    }

    /// Stops gossip and waits until the task has ended and released its
    /// socket, so the same address can be bound again right away.
    pub async fn shutdown(self) -> Result<(), ShutdownError> {
        self.live_members_forwarder.abort();
        self.chitchat
            .shutdown()
            .await
            .map_err(|error| ShutdownError {
                reason: format!("{error:#}"),
            })
    }
}

fn validated_key_values(facts: &NodeFacts) -> Result<Vec<(String, String)>, FactError> {
    facts
        .to_key_values()
        .into_iter()
        .map(|(key, value)| {
            key.validate_value(&value)?;
            Ok((key.as_str().to_owned(), value))
        })
        .collect()
}

fn chitchat_config(
    config: &MembershipConfig,
    listen_addr: SocketAddr,
    gossip_advertise_addr: SocketAddr,
) -> ChitchatConfig {
    let gossip_interval = config.gossip_interval();
    ChitchatConfig {
        chitchat_id: ChitchatId::new(
            config.node_name.clone(),
            config.generation.get(),
            gossip_advertise_addr,
        ),
        cluster_id: config.cluster_id.clone(),
        gossip_interval,
        listen_addr,
        seed_nodes: config.seed_addrs.iter().map(ToString::to_string).collect(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: config.failure_detector.phi_threshold,
            sampling_window_size: FAILURE_DETECTOR_SAMPLES,
            max_interval: FAILURE_DETECTOR_MAX_INTERVAL.max(gossip_interval * 2),
            // The prior mean heartbeat gap before samples exist: one round.
            initial_interval: gossip_interval,
            dead_node_grace_period: Duration::from_millis(
                config.failure_detector.dead_node_grace_period_ms,
            ),
        },
        marked_for_deletion_grace_period: KEY_TOMBSTONE_GRACE_PERIOD,
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: GOSSIP_PROTOCOL_VERSION,
    }
}

fn members_from_live_map(live: &BTreeMap<ChitchatId, NodeState>) -> Vec<Member> {
    let mut members: Vec<Member> = live
        .iter()
        .map(|(id, state)| Member::from_chitchat(id, Some(state)))
        .collect();
    members.sort_by(|left, right| left.node_id.cmp(&right.node_id));
    members
}

/// Mirrors chitchat's live-node watch into our `Member` type; ends when
/// chitchat drops its sender (gossip stopped) or on `shutdown`.
async fn forward_live_members(
    mut chitchat_live_rx: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    live_members_tx: watch::Sender<Vec<Member>>,
) {
    while chitchat_live_rx.changed().await.is_ok() {
        let members = members_from_live_map(&chitchat_live_rx.borrow_and_update());
        live_members_tx.send_if_modified(|current| {
            let changed = *current != members;
            if changed {
                *current = members;
            }
            changed
        });
    }
}
