//! Raft RPCs and write forwarding over the cluster transport (QUIC with
//! mutual TLS, from the `transport` crate).
//!
//! This module only translates: openraft's network calls become
//! [`PeerRequest`]s, and incoming [`PeerRequest`]s become calls on the local
//! Raft. The transport owns sockets, TLS and the frame format.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use transport::{PeerInfo, RpcError, TransportClient};

use crate::leader_contact::LeaderContact;
use crate::types::{
    ClusterNode, ClusterRequest, ClusterResponse, NodeId, Raft, Snapshot, SnapshotMeta, TypeConfig,
    Vote,
};

/// Every request one node sends another.
#[derive(Debug, Serialize, Deserialize)]
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
    /// A node asks for a chunk of a revision's staged bundle archive.
    FetchBundle {
        env: String,
        revision: String,
        offset: u64,
    },
}

/// Every answer.
#[derive(Debug, Serialize, Deserialize)]
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

/// Shortest deadline of a heartbeat call. A heartbeat that goes unanswered
/// this long drops its connection (the transport forgets a connection a
/// call timed out on), so the next heartbeat dials afresh: a member that
/// restarted while the old connection sat in QUIC's loss backoff is then
/// reached within this bound instead of after the backoff. 500 ms is far
/// above a healthy round trip and leaves a busy follower room to answer.
pub const HEARTBEAT_CALL_TIMEOUT_MIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Connects openraft to peers through one shared transport client.
#[derive(Clone)]
pub struct Network {
    client: Arc<TransportClient>,
}

impl Network {
    pub fn new(client: Arc<TransportClient>) -> Self {
        Self { client }
    }
}

/// The connection to one peer.
pub struct PeerClient {
    client: Arc<TransportClient>,
    target: NodeId,
    addr: Result<SocketAddr, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {target}: {message}")]
struct PeerFailure {
    target: NodeId,
    message: String,
}

impl PeerClient {
    async fn call(&self, request: &PeerRequest) -> Result<PeerResponse, PeerCallError> {
        self.call_within(request, None).await
    }

    /// One call, bounded by `timeout` when given (else the transport's call
    /// timeout).
    async fn call_within(
        &self,
        request: &PeerRequest,
        timeout: Option<std::time::Duration>,
    ) -> Result<PeerResponse, PeerCallError> {
        let addr = self.addr.clone().map_err(|message| {
            PeerCallError::Unreachable(PeerFailure {
                target: self.target,
                message,
            })
        })?;
        let failure = |message: String| PeerFailure {
            target: self.target,
            message,
        };
        let answer = match timeout {
            Some(timeout) => {
                self.client
                    .call_within::<PeerRequest, PeerResponse>(addr, request, timeout)
                    .await
            }
            None => {
                self.client
                    .call::<PeerRequest, PeerResponse>(addr, request)
                    .await
            }
        };
        match answer {
            Ok(response) => Ok(response),
            Err(error @ (RpcError::Connect { .. } | RpcError::TooManyPeers { .. })) => {
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

enum PeerCallError {
    Unreachable(PeerFailure),
    Network(PeerFailure),
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
            client: Arc::clone(&self.client),
            target,
            addr: node
                .raft_addr
                .parse()
                .map_err(|error| format!("bad raft address {:?}: {error}", node.raft_addr)),
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
        // keep the transport's, since the follower fsyncs them first.
        let timeout = rpc
            .entries
            .is_empty()
            .then(|| option.soft_ttl().max(HEARTBEAT_CALL_TIMEOUT_MIN));
        match self
            .call_within(&PeerRequest::AppendEntries(rpc), timeout)
            .await?
        {
            PeerResponse::AppendEntries(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        // Within openraft's own deadline, so the transport (not openraft's
        // cancellation) sees the timeout and drops a stale connection.
        match self
            .call_within(&PeerRequest::Vote(rpc), Some(option.soft_ttl()))
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
            .call_within(&PeerRequest::PreVote(rpc), Some(option.soft_ttl()))
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
            match self.call(&request).await? {
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
        match self.call(&request).await? {
            PeerResponse::Snapshot(response) => Ok(response),
            other => Err(self.unexpected(other).into()),
        }
    }
}

/// Largest chunk of a bundle archive in one answer: well under the
/// transport's frame limit, large enough that a bundle of a few hundred MiB
/// moves in a few dozen calls.
pub const BUNDLE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Serves peers' requests with the local Raft, once it exists (the server
/// must listen before Raft starts, because Raft starts talking at once).
#[derive(Clone, Default)]
pub struct PeerService {
    raft: Arc<OnceLock<Raft>>,
    /// The replica's store folder, where staged bundles live.
    store_root: Arc<OnceLock<std::path::PathBuf>>,
    /// Snapshots being received in pieces.
    incoming: Arc<IncomingSnapshots>,
    /// When a leader's append entries or snapshot was last accepted here.
    leader_contact: LeaderContact,
}

/// Pieces of a snapshot in one message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Largest snapshot a member accepts (the whole store image).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;
/// Snapshots received at once; a new one from the same sender replaces its
/// old one (only the latest matters).
pub const INCOMING_SNAPSHOTS_MAX: usize = 4;

/// Snapshots being assembled, by (sender, name).
#[derive(Default)]
struct IncomingSnapshots {
    pending: std::sync::Mutex<std::collections::HashMap<(String, String), Vec<u8>>>,
}

impl IncomingSnapshots {
    fn accept(&self, sender: &str, name: &str, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let mut pending = self.pending.lock().map_err(|_| "poisoned".to_owned())?;
        if offset == 0 {
            pending.retain(|(from, _), _| from != sender);
            if pending.len() >= INCOMING_SNAPSHOTS_MAX {
                return Err(format!(
                    "{INCOMING_SNAPSHOTS_MAX} snapshots are already arriving"
                ));
            }
            pending.insert((sender.to_owned(), name.to_owned()), Vec::new());
        }
        let Some(buffer) = pending.get_mut(&(sender.to_owned(), name.to_owned())) else {
            return Err(format!(
                "snapshot {name} from {sender}: a piece arrived without its start"
            ));
        };
        if buffer.len() as u64 != offset {
            pending.remove(&(sender.to_owned(), name.to_owned()));
            return Err(format!(
                "snapshot {name} from {sender}: piece at {offset} out of order"
            ));
        }
        if offset + bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
            pending.remove(&(sender.to_owned(), name.to_owned()));
            return Err(format!(
                "snapshot {name} from {sender} is larger than {SNAPSHOT_BYTES_MAX} bytes"
            ));
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(&self, sender: &str, name: &str, total: u64) -> Result<Vec<u8>, String> {
        let mut pending = self.pending.lock().map_err(|_| "poisoned".to_owned())?;
        let key = (sender.to_owned(), name.to_owned());
        if total == 0 && !pending.contains_key(&key) {
            return Ok(Vec::new());
        }
        let data = pending
            .remove(&key)
            .ok_or_else(|| format!("snapshot {name} from {sender} was never started"))?;
        if data.len() as u64 != total {
            return Err(format!(
                "snapshot {name} from {sender}: {} of {total} bytes arrived",
                data.len()
            ));
        }
        Ok(data)
    }
}

impl PeerService {
    /// Where staged bundles are read from.
    pub fn set_store_root(&self, root: std::path::PathBuf) {
        let _ = self.store_root.set(root);
    }

    /// A chunk of `<root>/<env>/revisions/<revision>/bundle.gtbundle`. The
    /// ids are parsed first, so a peer cannot name any other file.
    fn bundle_chunk(&self, env: &str, revision: &str, offset: u64) -> PeerResponse {
        use std::io::{Read, Seek, SeekFrom};
        let (Some(root), Ok(env), Ok(revision)) = (
            self.store_root.get(),
            env.parse::<deploy::ids::EnvId>(),
            revision.parse::<deploy::ids::RevisionId>(),
        ) else {
            return PeerResponse::NoBundle;
        };
        let path = root
            .join(env.as_str())
            .join("revisions")
            .join(revision.to_string())
            .join(crate::node::STAGED_BUNDLE_FILE);
        let Ok(mut file) = std::fs::File::open(&path) else {
            return PeerResponse::NoBundle;
        };
        let Ok(total) = file.metadata().map(|m| m.len()) else {
            return PeerResponse::NoBundle;
        };
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(offset.min(total))).is_err()
            || file
                .take(BUNDLE_CHUNK_BYTES)
                .read_to_end(&mut bytes)
                .is_err()
        {
            return PeerResponse::NoBundle;
        }
        PeerResponse::BundleChunk { total, bytes }
    }

    /// When this member last accepted a leader's message.
    pub fn leader_contact(&self) -> LeaderContact {
        self.leader_contact.clone()
    }

    /// Hands the started Raft to the service.
    pub fn set_raft(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }

    /// Answers one peer request.
    pub async fn handle(
        &self,
        peer: PeerInfo,
        request: PeerRequest,
    ) -> Result<PeerResponse, String> {
        let Some(raft) = self.raft.get() else {
            return Err("this node's raft is still starting".to_owned());
        };
        match request {
            PeerRequest::AppendEntries(rpc) => {
                let response = raft.append_entries(rpc).await.map_err(|e| e.to_string())?;
                // Anything but a higher vote means this node accepted the
                // sender as its leader (a conflict only asks for older entries).
                if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
                    self.leader_contact.touch();
                }
                Ok(PeerResponse::AppendEntries(response))
            }
            PeerRequest::Vote(rpc) => raft
                .vote(rpc)
                .await
                .map(PeerResponse::Vote)
                .map_err(|e| e.to_string()),
            PeerRequest::PreVote(rpc) => raft
                .pre_vote(rpc)
                .await
                .map(PeerResponse::Vote)
                .map_err(|e| e.to_string()),
            PeerRequest::SnapshotChunk {
                snapshot,
                offset,
                bytes,
            } => self
                .incoming
                .accept(peer.node_name.as_ref(), &snapshot, offset, &bytes)
                .map(|()| PeerResponse::ChunkAccepted),
            PeerRequest::SnapshotDone {
                vote,
                meta,
                snapshot,
                total,
            } => {
                let data = self
                    .incoming
                    .finish(peer.node_name.as_ref(), &snapshot, total)?;
                raft.install_full_snapshot(
                    vote,
                    Snapshot {
                        meta,
                        snapshot: data,
                    },
                )
                .await
                .map(|response| {
                    self.leader_contact.touch();
                    PeerResponse::Snapshot(response)
                })
                .map_err(|e| e.to_string())
            }
            PeerRequest::Write(request) => crate::node::write_as_leader(raft, request).await,
            PeerRequest::Join(id, node) => {
                tracing::info!(peer = %peer.node_name, node = %node, "join requested");
                crate::node::join_as_leader(raft, id, node).await
            }
            PeerRequest::Leave(id) => crate::node::leave_as_leader(raft, id).await,
            PeerRequest::ReadIndex => crate::node::read_index_as_leader(raft).await,
            PeerRequest::FetchBundle {
                env,
                revision,
                offset,
            } => Ok(self.bundle_chunk(&env, &revision, offset)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_arrive_in_order_pieces_and_anything_else_is_refused() {
        // Proves: pieces assemble in order; a piece out of order, a piece
        // without its start, or a short total is refused.
        let incoming = IncomingSnapshots::default();
        incoming.accept("n1", "s", 0, b"ab").expect("start");
        incoming.accept("n1", "s", 2, b"cd").expect("next");
        assert_eq!(incoming.finish("n1", "s", 4).expect("done"), b"abcd");
        assert!(incoming.accept("n1", "t", 3, b"x").is_err(), "no start");
        incoming.accept("n2", "u", 0, b"ab").expect("start");
        assert!(incoming.accept("n2", "u", 5, b"x").is_err(), "a gap");
        incoming.accept("n3", "v", 0, b"abc").expect("start");
        assert!(incoming.finish("n3", "v", 10).is_err(), "short");
        assert!(incoming.finish("n4", "never", 0).expect("empty").is_empty());
    }
}
