//! The rollout controller: ends the pause steps of every running rollout
//! when their time is up. It runs on the node that decides for the
//! environment (a single node, or the cluster's Raft leader) and submits
//! each decision as `rollouts decide`, audited as `rollout:<deployment>`,
//! never as a person. `apply` re-checks every decision against the
//! committed rollout (its step, its pause), so a leader change neither
//! skips nor repeats a step: the next leader reads the committed step and
//! decides from there. Steps that wait for analysis are refused at the
//! edge until the routers' measurements reach the controller (issue 13).

use std::sync::Arc;
use std::time::Duration;

use deploy::audit::{Actor, Authorization, Decision};
use deploy::command::{Command, CommandEnvelope, MintedIds, RolloutDecisionAnswers};
use deploy::ids::{EnvId, EventId};
use deploy::rollout::{ControllerDecision, Rollout};
use store::EnvironmentStore;

/// How often the controller looks at the committed rollouts: a pause ends
/// at most this late.
pub const CONTROLLER_TICK: Duration = Duration::from_millis(250);

/// The longest a decision waits to be committed on a cluster leader.
const DECISION_COMMIT_BOUND: Duration = Duration::from_secs(3);

/// Where the controller reads and writes.
pub struct Controller {
    pub store: Arc<dyn EnvironmentStore + Send + Sync>,
    pub env_id: EnvId,
    /// A cluster member decides only while it leads.
    pub cluster: Option<Arc<consensus::ClusterHandle>>,
}

/// The envelope of a controller decision: the actor is the rollout, not a
/// person and not the node.
fn envelope(command: Command, deployment: deploy::ids::DeploymentId) -> CommandEnvelope {
    CommandEnvelope {
        at: chrono::Utc::now(),
        actor: Actor {
            kind: "rollout".to_owned(),
            user: Some(Rollout::controller_actor(deployment)),
            uid: None,
        },
        authorization: Authorization {
            decision: Decision::Allow,
            policy: "rollout-controller".to_owned(),
            reason: "the rollout's own step".to_owned(),
        },
        minted: MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: None,
        idempotency_key: None,
    }
}

/// HELP text of the controller's metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "gtc_rollout_decisions_total",
        metrics::Unit::Count,
        "Rollout steps the controller on this node ended and committed, by decision."
    );
}

impl Controller {
    /// Runs until `shutdown` turns true.
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(CONTROLLER_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => self.tick().await,
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    async fn tick(&self) {
        let term = match &self.cluster {
            Some(cluster) if !cluster.is_leader() => return,
            Some(cluster) => Some(cluster.status().term),
            None => None,
        };
        let store = Arc::clone(&self.store);
        let env_id = self.env_id.clone();
        let Ok(Ok(Some(state))) = tokio::task::spawn_blocking(move || store.load(&env_id)).await
        else {
            return;
        };
        let now = chrono::Utc::now();
        let due: Vec<(deploy::ids::DeploymentId, u32)> = state
            .environment
            .rollouts
            .iter()
            .filter(|r| r.pause_ends_at().is_some_and(|ends| ends <= now))
            .map(|r| (r.deployment_id, r.step))
            .collect();
        for (deployment_id, step) in due {
            let command = Command::RolloutDecide(RolloutDecisionAnswers {
                environment_id: self.env_id.clone(),
                deployment_id,
                step,
                decision: ControllerDecision::Advance { analysis: None },
                decided_in_term: term,
            });
            let envelope = envelope(command, deployment_id);
            let outcome = match &self.cluster {
                Some(cluster) => {
                    cluster
                        .submit_as_leader(&envelope, DECISION_COMMIT_BOUND)
                        .await
                }
                None => {
                    let store = Arc::clone(&self.store);
                    match tokio::task::spawn_blocking(move || store.submit(&envelope)).await {
                        Ok(outcome) => outcome,
                        Err(error) => {
                            tracing::warn!(%error, "rollout decision task failed");
                            continue;
                        }
                    }
                }
            };
            match outcome {
                Ok(_) => {
                    tracing::info!(deployment = %deployment_id, step, "rollout step's pause is over; advanced");
                    metrics::counter!("gtc_rollout_decisions_total", "decision" => "advance")
                        .increment(1);
                }
                Err(error) => {
                    tracing::warn!(deployment = %deployment_id, step, %error, "rollout decision not committed; deciding again next tick")
                }
            }
        }
    }
}
