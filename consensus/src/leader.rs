//! What the leader does with a request it may serve itself: propose a
//! write, confirm a read index, change the membership. Each answers
//! `NotLeader` (naming the leader it knows) when this member does not lead,
//! so the peer service and the local write path share one implementation.

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};

use crate::peer::PeerResponse;
use crate::state_machine::Raft;
use crate::types::{ClusterNode, ClusterRequest, NodeId};

/// The answer of a member that does not lead: the leader it knows, if any.
pub(crate) fn not_leader(raft: &Raft) -> PeerResponse {
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
    let started = tokio::time::Instant::now();
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
