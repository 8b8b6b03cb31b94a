//! The Raft-replicated store: every node of a cluster holds a replica of
//! every environment, and every change goes through one Raft log.
//!
//! Owns: the Raft type configuration, the durable log (redb), the state
//! machine (which applies each entry with the local store's `submit`, the
//! same `deploy::apply::apply` path the embedded default uses), snapshots,
//! membership changes, and forwarding writes from followers to the leader.
//!
//! Must not touch: the meaning of a change (that is `deploy`), sockets and
//! TLS (the `transport` crate carries every peer message), HTTP and the CLI
//! (that is `node`). Reads of a replica are local; a read that must be
//! current calls [`ClusterHandle::read_barrier`] first.
//!
//! The default feature `node` is everything that runs a member (the redb
//! log, the state machine over the local store, the QUIC network); without
//! it the crate is only the Raft types and [`raft_config`], which is all
//! the simulator needs, so its separately flagged build stays small.

#[cfg(feature = "node")]
mod describe;
#[cfg(feature = "node")]
mod leader_contact;
#[cfg(feature = "node")]
mod log_store;
#[cfg(feature = "node")]
mod network;
#[cfg(feature = "node")]
mod node;
#[cfg(feature = "node")]
mod outcome;
#[cfg(feature = "node")]
mod replicated_store;
mod settings;
#[cfg(feature = "node")]
mod state_machine;
// The log-side aliases serve the `node` modules only.
#[cfg_attr(not(feature = "node"), allow(dead_code))]
mod types;

#[cfg(feature = "node")]
pub use describe::describe_metrics;
#[cfg(feature = "node")]
pub use log_store::LogStore;
#[cfg(feature = "node")]
pub use network::{PeerRequest, PeerResponse};
#[cfg(feature = "node")]
pub use node::{
    APPLY_WAIT, ClusterConfig, ClusterError, ClusterHandle, ClusterStatus, MAX_WRITE_ATTEMPTS,
};
#[cfg(feature = "node")]
pub use outcome::{AppliedWire, ErrorWire, Outcome};
#[cfg(feature = "node")]
pub use replicated_store::ReplicatedStore;
pub use settings::{LEADER_CONTACT_STALE_TIMEOUTS, PEER_IDLE_TIMEOUT, RaftSettings, raft_config};
#[cfg(feature = "node")]
pub use state_machine::StateMachine;
pub use types::{ClusterNode, ClusterRequest, ClusterResponse, NodeId, TypeConfig, node_id_for};
