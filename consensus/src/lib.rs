//! The Raft-replicated store: every node of a cluster holds a replica of
//! every environment, and every change goes through one Raft log.
//!
//! Owns: the Raft type configuration, the state machine (which applies each
//! entry with the local store's `submit`, the same `deploy::apply::apply`
//! path the embedded default uses), snapshots, membership changes, the
//! write path that forwards from followers to the leader, the peer
//! messages and the server side that answers them, and bundle transfer
//! between members ([`bundle`]), and the secret store's replicated changes
//! (sealed versions and removals, never a value: `secret_change`) and
//! trust roots (`trust_root_change`).
//!
//! Must not touch: the meaning of a change (that is `deploy`), sockets and
//! TLS (the `transport` crate carries every peer message in production),
//! HTTP and the CLI (that is `node`). Reads of a replica are local; a read
//! that must be current calls [`ClusterHandle::read_barrier`] first.
//!
//! Consensus runs over any [`PeerNetwork`] and any openraft log storage:
//! a member is [`ClusterHandle::start_with`] those. Features:
//! - `quic`: the QUIC network of the `transport` crate ([`QuicNetwork`]);
//! - `redb`: the durable log in redb ([`LogStore`]);
//! - `node` (default): both, and [`ClusterHandle::start`], the member the
//!   node runs;
//! - `simulation`: the simulator's fault point and planted bug in the state
//!   machine; never in production builds.
//!
//! Without `quic` and `redb` the crate builds no QUIC, TLS or redb, which is
//! how the simulator runs the same state machine and cluster handle on its
//! seeded network and disk.
//!
//! Modules and who uses whom (no cycles): `types`, `settings` and `peer`
//! are leaves; `state_machine` and `outcome` the replica; `leader` the
//! leader-side operations; `service` the server side; `raft_network`
//! openraft's client side; `member` the handle, `write_path` its writes,
//! `start` its production start.

pub mod bundle;
mod describe;
mod export;
mod leader;
mod leader_contact;
#[cfg(feature = "redb")]
mod log_store;
mod member;
mod outcome;
mod peer;
#[cfg(feature = "quic")]
mod quic;
mod raft_network;
mod replicated_store;
mod secret_change;
mod service;
mod settings;
#[cfg(all(feature = "quic", feature = "redb"))]
mod start;
mod state_machine;
mod trust_root_change;
mod types;
mod write_path;

pub use describe::describe_metrics;
#[cfg(feature = "redb")]
pub use log_store::LogStore;
pub use member::{ClusterError, ClusterHandle, ClusterStatus, MemberParts};
pub use outcome::{AppliedWire, ErrorWire, Outcome};
pub use peer::{CallError, PeerNetwork, PeerRequest, PeerResponse};
#[cfg(feature = "quic")]
pub use quic::{BindFailure, PEER_KEEP_ALIVE, QuicNetwork};
pub use raft_network::{HEARTBEAT_CALL_TIMEOUT_MIN, SNAPSHOT_CHUNK_BYTES};
pub use replicated_store::ReplicatedStore;
pub use secret_change::{SecretChange, SecretOutcome};
pub use service::{
    INCOMING_SNAPSHOT_BYTES_MAX, INCOMING_SNAPSHOTS_MAX, PeerService, SNAPSHOT_BYTES_MAX,
};
pub use settings::{
    LEADER_CONTACT_STALE_TIMEOUTS, PEER_CALL_TIMEOUT, PEER_IDLE_TIMEOUT, RaftSettings, raft_config,
};
#[cfg(all(feature = "quic", feature = "redb"))]
pub use start::ClusterConfig;
#[cfg(feature = "simulation")]
pub use state_machine::CrashPoint;
pub use state_machine::{AppliedEntry, ApplyObserver, RECENT_OUTCOMES_MAX, Raft, StateMachine};
pub use trust_root_change::{
    TRUST_ROOT_BYTES_MAX, TrustRootChange, TrustRootOutcome, trust_root_digest,
};
pub use types::{
    ClusterNode, ClusterRequest, ClusterResponse, Entry, LogId, NodeId, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig, Vote, node_id_for,
};
pub use write_path::{APPLY_WAIT, FORWARD_RETRY_DELAY, MAX_WRITE_ATTEMPTS};
