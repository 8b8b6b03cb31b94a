//! What members say to each other, and the network they say it over.
//!
//! [`PeerNetwork`] is the one seam between consensus and a network: a call
//! of one [`PeerRequest`] to a member named by its Raft address, answered
//! by that member's `PeerService::handle`. openraft's RPCs, a follower's
//! forwarded writes, joins, read indexes and bundle transfers all go
//! through it. The QUIC network of the `transport` crate is the production
//! implementation (feature `quic`); the simulator's seeded network is the
//! other one.

use std::time::Duration;

use futures::future::BoxFuture;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::types::{
    ClusterNode, ClusterRequest, ClusterResponse, NodeId, SnapshotMeta, TypeConfig, Vote,
};

/// Every request one node sends another.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerRequest {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    /// One piece of a snapshot, sent in order from offset 0; pieces keep
    /// every message far below the transport's frame limit whatever the
    /// snapshot's size.
    SnapshotChunk {
        snapshot: String,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// The snapshot's pieces are all sent: install it.
    SnapshotDone {
        vote: Vote,
        meta: SnapshotMeta,
        snapshot: String,
        total: u64,
    },
    /// A write forwarded by a follower to the leader.
    Write(ClusterRequest),
    /// A node asks to join as a voter.
    Join(NodeId, ClusterNode),
    /// A node asks to be removed from the voters and learners.
    Leave(NodeId),
    /// A follower asks the leader for a read index: an applied index that
    /// includes every write committed before the request.
    ReadIndex,
    /// A node asks for a chunk of a revision's staged bundle archive
    /// (see `crate::bundle`).
    FetchBundle {
        env: String,
        revision: String,
        offset: u64,
    },
}

/// Every answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum PeerResponse {
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    /// The leader's answer to a forwarded write, and the index it was
    /// committed at (so the asking node can wait to apply it too).
    Written {
        response: ClusterResponse,
        log_index: u64,
    },
    /// The receiving node is not the leader; here is who is, if known.
    NotLeader {
        leader: Option<(NodeId, ClusterNode)>,
    },
    /// A membership change went through.
    MembershipChanged,
    /// A snapshot piece was kept.
    ChunkAccepted,
    /// A chunk of a staged bundle archive, and the archive's whole size.
    BundleChunk {
        total: u64,
        bytes: Vec<u8>,
    },
    /// This node does not hold that revision's bundle.
    NoBundle,
    /// The leader's read index.
    ReadIndex {
        index: u64,
    },
}

/// Why a call got no answer from the peer's service.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Nothing was delivered: the peer could not be reached at all.
    #[error("{target} is unreachable: {message}")]
    Unreachable { target: String, message: String },
    /// The request may have been handled, but no answer came back in time
    /// (a timeout, a lost connection, an abandoned stream).
    #[error("no answer from {target}: {message}")]
    NoAnswer { target: String, message: String },
    /// The peer answered with an error, or the exchange failed otherwise.
    #[error("{target}: {message}")]
    Failed { target: String, message: String },
}

/// A network that carries [`PeerRequest`]s between members.
///
/// `target` is the member's Raft address as the membership publishes it
/// ([`ClusterNode::raft_addr`]). `timeout` bounds the call when given;
/// otherwise the network's own call timeout applies. The future is
/// `'static` so that a caller may race it against other events.
pub trait PeerNetwork: Send + Sync + 'static {
    fn call(
        &self,
        target: &str,
        request: PeerRequest,
        timeout: Option<Duration>,
    ) -> BoxFuture<'static, Result<PeerResponse, CallError>>;

    /// Releases the network's endpoints when the member stops.
    fn close(&self) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}
