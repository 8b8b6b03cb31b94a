//! openraft's network over any [`PeerNetwork`]: each RPC becomes one
//! [`PeerRequest`], a snapshot a series of pieces.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};

use crate::peer::{CallError, PeerNetwork, PeerRequest, PeerResponse};
use crate::types::{ClusterNode, NodeId, Snapshot, TypeConfig, Vote};

/// Shortest deadline of a heartbeat call. A heartbeat that goes unanswered
/// this long drops its connection (the transport forgets a connection a
/// call timed out on), so the next heartbeat dials afresh: a member that
/// restarted while the old connection sat in QUIC's loss backoff is then
/// reached within this bound instead of after the backoff. 500 ms is far
/// above a healthy round trip and leaves a busy follower room to answer.
pub const HEARTBEAT_CALL_TIMEOUT_MIN: Duration = Duration::from_millis(500);

/// Pieces of a snapshot in one message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// Connects openraft to peers through one shared [`PeerNetwork`].
#[derive(Clone)]
pub struct Network {
    peers: Arc<dyn PeerNetwork>,
}

impl Network {
    pub fn new(peers: Arc<dyn PeerNetwork>) -> Self {
        Self { peers }
    }
}

/// openraft's client of one peer.
pub struct PeerClient {
    peers: Arc<dyn PeerNetwork>,
    target: NodeId,
    addr: String,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {target}: {message}")]
struct PeerFailure {
    target: NodeId,
    message: String,
}

enum PeerCallError {
    Unreachable(PeerFailure),
    Network(PeerFailure),
}

impl PeerClient {
    async fn call(
        &self,
        request: PeerRequest,
        timeout: Option<Duration>,
    ) -> Result<PeerResponse, PeerCallError> {
        let failure = |message: String| PeerFailure {
            target: self.target,
            message,
        };
        match self.peers.call(&self.addr, request, timeout).await {
            Ok(response) => Ok(response),
            Err(error @ CallError::Unreachable { .. }) => {
                Err(PeerCallError::Unreachable(failure(error.to_string())))
            }
            Err(error) => Err(PeerCallError::Network(failure(error.to_string()))),
        }
    }

    fn unexpected(&self, response: PeerResponse) -> PeerCallError {
        PeerCallError::Network(PeerFailure {
            target: self.target,
            message: format!("unexpected answer {response:?}"),
        })
    }
}

impl From<PeerCallError> for RPCError<TypeConfig> {
    fn from(error: PeerCallError) -> Self {
        match error {
            PeerCallError::Unreachable(failure) => {
                RPCError::Unreachable(Unreachable::new(&failure))
            }
            PeerCallError::Network(failure) => RPCError::Network(NetworkError::new(&failure)),
        }
    }
}

impl From<PeerCallError> for StreamingError<TypeConfig> {
    fn from(error: PeerCallError) -> Self {
        match error {
            PeerCallError::Unreachable(failure) => {
                StreamingError::Unreachable(Unreachable::new(&failure))
            }
            PeerCallError::Network(failure) => StreamingError::Network(NetworkError::new(&failure)),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &ClusterNode) -> Self::Network {
        PeerClient {
            peers: Arc::clone(&self.peers),
            target,
            addr: node.raft_addr.clone(),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        // A heartbeat (no entries) has a short deadline of its own; entries
        // keep the network's, since the follower fsyncs them first.
        let timeout = rpc
            .entries
            .is_empty()
            .then(|| option.soft_ttl().max(HEARTBEAT_CALL_TIMEOUT_MIN));
        match self.call(PeerRequest::AppendEntries(rpc), timeout).await? {
            PeerResponse::AppendEntries(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Within openraft's own deadline, so the network (not openraft's
        // cancellation) sees the timeout and drops a stale connection.
        match self
            .call(PeerRequest::Vote(rpc), Some(option.soft_ttl()))
            .await?
        {
            PeerResponse::Vote(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(PeerRequest::PreVote(rpc), Some(option.soft_ttl()))
            .await?
        {
            PeerResponse::Vote(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        // Names this transfer; the receiver keys pieces by sender and name.
        let name = format!(
            "{}-{}",
            snapshot.meta.last_log_id.map_or(0, |id| id.index()),
            snapshot.snapshot.len()
        );
        let mut offset = 0usize;
        for piece in snapshot.snapshot.chunks(SNAPSHOT_CHUNK_BYTES) {
            let request = PeerRequest::SnapshotChunk {
                snapshot: name.clone(),
                offset: offset as u64,
                bytes: piece.to_vec(),
            };
            match self.call(request, None).await? {
                PeerResponse::ChunkAccepted => offset += piece.len(),
                other => return Err(self.unexpected(other).into()),
            }
        }
        let request = PeerRequest::SnapshotDone {
            vote,
            meta: snapshot.meta,
            snapshot: name,
            total: snapshot.snapshot.len() as u64,
        };
        match self.call(request, None).await? {
            PeerResponse::Snapshot(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }
}
