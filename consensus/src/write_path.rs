//! How a member writes: proposes if it leads, else forwards to the leader
//! it knows and retries while leadership moves, then waits to apply the
//! write itself (so a caller reads its own write). Joins, leaves and read
//! indexes take the same route.

use std::time::Duration;

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use store::{SubmitError, Submitted};

use crate::leader::{join_as_leader, leave_as_leader, read_index_as_leader, write_as_leader};
use crate::member::{ClusterError, ClusterHandle};
use crate::outcome::Outcome;
use crate::peer::{CallError, PeerRequest, PeerResponse};
use crate::secret_change::{SecretChange, SecretOutcome};
use crate::settings::PEER_CALL_TIMEOUT;
use crate::trust_root_change::{TrustRootChange, TrustRootOutcome};
use crate::types::{ClusterNode, ClusterRequest, ClusterResponse, NodeId};

/// Attempts of one write while leadership is moving: each waits
/// [`FORWARD_RETRY_DELAY`], so a write rides out an election of a few
/// seconds and then fails with a clear error instead of hanging.
pub const MAX_WRITE_ATTEMPTS: u32 = 40;
/// Pause between attempts of a write that found no leader.
pub const FORWARD_RETRY_DELAY: Duration = Duration::from_millis(150);
/// How long a node waits to apply a write the leader committed for it.
pub const APPLY_WAIT: Duration = Duration::from_secs(10);

impl ClusterHandle {
    /// Asks the member at Raft address `peer` (or the leader it names) to
    /// add this node as a voter.
    pub async fn join_through(&self, peer: &str) -> Result<(), ClusterError> {
        let mut target = peer.to_owned();
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let request = PeerRequest::Join(self.node_id, self.node.clone());
            match self.peers.call(&target, request, None).await {
                Ok(PeerResponse::MembershipChanged) => return Ok(()),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, node)),
                }) => target = node.raft_addr,
                Ok(PeerResponse::NotLeader { leader: None }) => {
                    tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                }
                Ok(other) => {
                    return Err(ClusterError::Join {
                        peer: peer.to_owned(),
                        message: format!("unexpected answer {other:?}"),
                    });
                }
                Err(error) => {
                    tracing::warn!(%peer, %error, "join attempt failed; retrying");
                    tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                    target = peer.to_owned();
                }
            }
        }
        Err(ClusterError::Join {
            peer: peer.to_owned(),
            message: format!("no leader accepted the join after {MAX_WRITE_ATTEMPTS} attempts"),
        })
    }

    /// Joins through `peer` unless this node is a voter already.
    pub async fn join_if_not_voter(&self, peer: &str) -> Result<(), ClusterError> {
        if self.is_voter() {
            return Ok(());
        }
        self.join_through(peer).await
    }

    /// Asks the leader to add `node` (already running, not in a cluster) as
    /// a learner and, once it caught up, as a voter.
    pub async fn add(&self, node_id: NodeId, node: ClusterNode) -> Result<(), ClusterError> {
        self.change_membership(PeerRequest::Join(node_id, node))
            .await
    }

    /// Asks the leader to remove `node_id` (this node or another).
    pub async fn remove(&self, node_id: NodeId) -> Result<(), ClusterError> {
        self.change_membership(PeerRequest::Leave(node_id)).await
    }

    /// Applies a `Join` or `Leave` here if this node leads, else sends it to
    /// the leader; retries while leadership moves.
    async fn change_membership(&self, request: PeerRequest) -> Result<(), ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let local = match &request {
                PeerRequest::Join(id, node) => join_as_leader(&self.raft, *id, node.clone()).await,
                PeerRequest::Leave(id) => leave_as_leader(&self.raft, *id).await,
                other => Err(format!("{other:?} is not a membership change")),
            };
            match local {
                Ok(PeerResponse::MembershipChanged) => return Ok(()),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, leader)),
                }) => match self
                    .peers
                    .call(&leader.raft_addr, request.clone(), None)
                    .await
                {
                    Ok(PeerResponse::MembershipChanged) => return Ok(()),
                    Ok(_) | Err(_) => tokio::time::sleep(FORWARD_RETRY_DELAY).await,
                },
                Ok(_) => tokio::time::sleep(FORWARD_RETRY_DELAY).await,
                Err(message) => return Err(ClusterError::Raft(message)),
            }
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Replicates `request` and returns what applying it answered, once this
    /// node has applied it too (so the caller reads its own write here).
    pub async fn write(&self, request: ClusterRequest) -> Result<ClusterResponse, ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let answer = match write_as_leader(&self.raft, request.clone()).await {
                Ok(answer) => answer,
                Err(message) => return Err(ClusterError::Raft(message)),
            };
            let (response, index) = match answer {
                PeerResponse::Written {
                    response,
                    log_index,
                } => (response, log_index),
                PeerResponse::NotLeader {
                    leader: Some((leader_id, leader)),
                } => match self.forward(leader_id, &leader, &request).await? {
                    Some(written) => written,
                    None => {
                        self.wait_for_a_leader_other_than(Some(leader_id)).await;
                        continue;
                    }
                },
                _ => {
                    self.wait_for_a_leader_other_than(None).await;
                    continue;
                }
            };
            metrics::counter!("gtc_raft_writes_total").increment(1);
            self.raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "a forwarded write")
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
            return Ok(response);
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    /// Waits until this node knows a leader other than `not` (an election
    /// ended), at most [`FORWARD_RETRY_DELAY`]: a write retried after a
    /// failover goes out as soon as the new leader is known, not after a
    /// fixed pause.
    async fn wait_for_a_leader_other_than(&self, not: Option<NodeId>) {
        let wait = self.raft.wait(Some(FORWARD_RETRY_DELAY));
        let _ = wait
            .metrics(
                |metrics| metrics.current_leader.is_some() && metrics.current_leader != not,
                "a leader to forward to",
            )
            .await;
    }

    /// Sends `request` to `leader`. `None` when the caller should retry: the
    /// leader certainly did not take it (unreachable or no longer leader), or
    /// it may have but leadership moved on meanwhile (a retry is safe: the
    /// state machine answers an event id it applied from its outcome window).
    ///
    /// The call is abandoned as soon as this node learns that `leader_id` no
    /// longer leads (an election started or ended), so a write sent to a
    /// leader that just died waits for the election, not for the call's
    /// timeout.
    async fn forward(
        &self,
        leader_id: NodeId,
        leader: &ClusterNode,
        request: &ClusterRequest,
    ) -> Result<Option<(ClusterResponse, u64)>, ClusterError> {
        let call = self.forward_once(leader, request);
        let wait = self.raft.wait(Some(PEER_CALL_TIMEOUT));
        let deposed = wait.metrics(
            |metrics| metrics.current_leader != Some(leader_id),
            "the leader a write was forwarded to is no longer the leader",
        );
        tokio::select! {
            answer = call => answer,
            Ok(_) = deposed => {
                tracing::info!(leader = %leader, "leadership moved while a write was forwarded; retrying");
                Ok(None)
            }
        }
    }

    async fn forward_once(
        &self,
        leader: &ClusterNode,
        request: &ClusterRequest,
    ) -> Result<Option<(ClusterResponse, u64)>, ClusterError> {
        metrics::counter!("gtc_raft_forwarded_writes_total").increment(1);
        match self
            .peers
            .call(&leader.raft_addr, PeerRequest::Write(request.clone()), None)
            .await
        {
            Ok(PeerResponse::Written {
                response,
                log_index,
            }) => Ok(Some((response, log_index))),
            Ok(PeerResponse::NotLeader { .. }) => Ok(None),
            Ok(other) => Err(ClusterError::Forward {
                leader: leader.to_string(),
                message: format!("unexpected answer {other:?}"),
            }),
            Err(CallError::Unreachable { .. }) => Ok(None),
            // The leader may or may not have taken the write. Retrying is
            // safe: the state machine answers an event id it has applied
            // from its outcome window instead of applying it again.
            Err(error @ CallError::NoAnswer { .. }) => {
                tracing::warn!(leader = %leader, %error, "forwarded write got no answer; retrying");
                Ok(None)
            }
            Err(error @ CallError::Failed { .. }) => Err(ClusterError::OutcomeUnknown {
                message: error.to_string(),
            }),
        }
    }

    /// Applies one command through the cluster.
    pub async fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
        let envelope_json = serde_json::to_string(envelope)
            .map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::Submit { envelope_json })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        outcome(response)?.into_submit()
    }

    /// Applies a decision this node made as the leader (a placement, decided
    /// from this leader's own view of the members): proposed here or not at
    /// all. Unlike [`Self::submit`] it is never forwarded and never retried
    /// under another leader, and it waits at most `within`, so the loop
    /// that decides never stalls behind a leader that lost its quorum. The
    /// state machine still refuses it if it reaches the log in another term
    /// than the envelope's `decided_in_term`.
    pub async fn submit_as_leader(
        &self,
        envelope: &CommandEnvelope,
        within: Duration,
    ) -> Result<Submitted, SubmitError> {
        let envelope_json = serde_json::to_string(envelope)
            .map_err(|error| replicated_failure(error.to_string()))?;
        let request = ClusterRequest::Submit { envelope_json };
        let deadline = tokio::time::Instant::now() + within;
        let answer = tokio::time::timeout_at(deadline, write_as_leader(&self.raft, request))
            .await
            .map_err(|_| {
                replicated_failure(format!(
                    "not committed within {within:?}: this leader may have lost its quorum"
                ))
            })?
            .map_err(replicated_failure)?;
        let PeerResponse::Written {
            response,
            log_index,
        } = answer
        else {
            return Err(replicated_failure(
                "this node no longer leads; a leader's decision is not forwarded".to_owned(),
            ));
        };
        metrics::counter!("gtc_raft_writes_total").increment(1);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.raft
            .wait(Some(left.max(FORWARD_RETRY_DELAY)))
            .applied_index_at_least(Some(log_index), "a leader's decision")
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        outcome(response)?.into_submit()
    }

    /// Records an audit event through the cluster.
    pub async fn record(&self, event: &AuditEvent) -> Result<(), SubmitError> {
        let event_json =
            serde_json::to_string(event).map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::Record { event_json })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        match outcome(response)? {
            Outcome::Recorded | Outcome::AlreadyApplied => Ok(()),
            other => Err(replicated_failure(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Applies a change of the secret store through the cluster with the
    /// audit event that records it (see `crate::secret_change`). Returns
    /// once this node applied it, so a reveal here reads it.
    pub async fn secret_change(
        &self,
        change: &SecretChange,
        event: &AuditEvent,
    ) -> Result<SecretOutcome, SubmitError> {
        let change_json =
            serde_json::to_string(change).map_err(|error| replicated_failure(error.to_string()))?;
        let event_json =
            serde_json::to_string(event).map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::Secret {
                change_json,
                event_json,
            })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        match outcome(response)? {
            Outcome::Secret(outcome) => Ok(outcome),
            // A retry of an entry applied before (the leader died while
            // answering): its first answer is gone; the caller reads the
            // store to see what it did.
            Outcome::AlreadyApplied => Ok(SecretOutcome::Stale {
                reason: "the change was applied before and its answer is gone".to_owned(),
            }),
            other => Err(replicated_failure(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Applies a trust root change through the cluster with the audit
    /// event that records it (see `crate::trust_root_change`). Returns once
    /// this node applied it.
    pub async fn trust_root_change(
        &self,
        change: &TrustRootChange,
        event: &AuditEvent,
    ) -> Result<TrustRootOutcome, SubmitError> {
        let change_json =
            serde_json::to_string(change).map_err(|error| replicated_failure(error.to_string()))?;
        let event_json =
            serde_json::to_string(event).map_err(|error| replicated_failure(error.to_string()))?;
        let response = self
            .write(ClusterRequest::TrustRoot {
                change_json,
                event_json,
            })
            .await
            .map_err(|error| replicated_failure(error.to_string()))?;
        match outcome(response)? {
            Outcome::TrustRoot(outcome) => Ok(outcome),
            Outcome::AlreadyApplied => Ok(TrustRootOutcome::Stale {
                reason: "the change was applied before and its answer is gone".to_owned(),
            }),
            other => Err(replicated_failure(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Waits until this node has applied everything the leader had committed
    /// when the call started: a linearizable read point.
    pub async fn read_barrier(&self) -> Result<(), ClusterError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let index = match read_index_as_leader(&self.raft).await {
                Ok(PeerResponse::ReadIndex { index }) => Some(index),
                Ok(PeerResponse::NotLeader {
                    leader: Some((_, leader)),
                }) => self.remote_read_index(&leader).await,
                Ok(_) => None,
                Err(message) => return Err(ClusterError::Raft(message)),
            };
            let Some(index) = index else {
                tokio::time::sleep(FORWARD_RETRY_DELAY).await;
                continue;
            };
            self.raft
                .wait(Some(APPLY_WAIT))
                .applied_index_at_least(Some(index), "a read index")
                .await
                .map_err(|error| ClusterError::Raft(error.to_string()))?;
            return Ok(());
        }
        Err(ClusterError::NoLeader {
            attempts: MAX_WRITE_ATTEMPTS,
        })
    }

    async fn remote_read_index(&self, leader: &ClusterNode) -> Option<u64> {
        match self
            .peers
            .call(&leader.raft_addr, PeerRequest::ReadIndex, None)
            .await
        {
            Ok(PeerResponse::ReadIndex { index }) => Some(index),
            _ => None,
        }
    }
}

fn replicated_failure(message: String) -> SubmitError {
    SubmitError::Replicated {
        kind: deploy::error::ErrorKind::Store,
        message,
        field: None,
        applied: None,
    }
}

fn outcome(response: ClusterResponse) -> Result<Outcome, SubmitError> {
    match response {
        ClusterResponse::Outcome { outcome_json } => serde_json::from_str(&outcome_json)
            .map_err(|error| replicated_failure(format!("undecodable outcome: {error}"))),
        ClusterResponse::Failed { message } => Err(replicated_failure(message)),
    }
}
