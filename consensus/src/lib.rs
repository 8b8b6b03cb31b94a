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

mod log_store;
mod network;
mod node;
mod outcome;
mod replicated_store;
mod state_machine;
mod types;

pub use log_store::LogStore;
pub use network::{PeerRequest, PeerResponse};
pub use node::{
    APPLY_WAIT, ClusterConfig, ClusterError, ClusterHandle, ClusterStatus, MAX_WRITE_ATTEMPTS,
    RaftSettings, raft_config,
};
pub use outcome::{AppliedWire, ErrorWire, Outcome};
pub use replicated_store::ReplicatedStore;
pub use state_machine::StateMachine;
pub use types::{ClusterNode, ClusterRequest, ClusterResponse, NodeId, TypeConfig, node_id_for};
