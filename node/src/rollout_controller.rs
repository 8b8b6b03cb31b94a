//! The rollout controller on a node: runs the decision core
//! (`deploy::rollout::controller`, the same the simulator runs) every
//! [`CONTROLLER_TICK`] on the node that decides for the environment (a
//! single node, or the cluster's Raft leader), and commits each decision
//! as `rollouts decide`, audited as `rollout:<deployment>`, never as a
//! person.
//!
//! What this shell adds to the core: the committed rollouts (from the
//! store), the clocks, the members' counts (this node's router's
//! `Router::revision_counts` and the others' as gossip brought them,
//! `counts/<revision>`), the commit (on a cluster, only as the leader of
//! the term it decided in) and the metrics.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deploy::command::{Command, CommandEnvelope, RolloutDecisionAnswers};
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use deploy::rollout::analysis::MemberCounts;
use deploy::rollout::controller::{self, Planned};
use deploy::rollout::{Rollout, WindowCounts};
use router::proxy::Router;
use store::EnvironmentStore;

/// How often the controller looks at the committed rollouts: a pause or a
/// window ends at most this late.
pub const CONTROLLER_TICK: Duration = Duration::from_millis(250);

/// The longest a decision waits to be committed on a cluster leader.
const DECISION_COMMIT_BOUND: Duration = Duration::from_secs(3);

/// The other members' latest cumulative counts per revision, keyed by the
/// member's identity in this life (`name@generation`), as gossip brought
/// them.
pub type RemoteCounts = Arc<RwLock<BTreeMap<String, HashMap<RevisionId, WindowCounts>>>>;

/// The key of this node's own counts among the members'.
const SELF: &str = "self";

/// HELP text of the controller's metrics.
pub fn describe_metrics() {
    metrics::describe_counter!(
        "gtc_rollout_decisions_total",
        metrics::Unit::Count,
        "Rollout decisions the controller on this node committed, by decision (advance, hold, roll-back, hold-limit)."
    );
    metrics::describe_gauge!(
        "gtc_rollout_step",
        metrics::Unit::Count,
        "The current step of each running rollout (by deployment), as this node's controller last saw it."
    );
    metrics::describe_gauge!(
        "gtc_rollout_candidate_weight_bps",
        metrics::Unit::Count,
        "The candidate's weight in basis points in each running rollout's current step."
    );
    metrics::describe_gauge!(
        "gtc_rollout_window_requests",
        metrics::Unit::Count,
        "Requests in the last finished analysis window, by deployment and revision role (candidate, stable)."
    );
    metrics::describe_gauge!(
        "gtc_rollout_window_error_rate_bps",
        metrics::Unit::Count,
        "Error rate in basis points of the last finished analysis window, by deployment and revision role."
    );
}

/// Where the controller reads and writes, and its windows.
pub struct Controller {
    store: Arc<dyn EnvironmentStore + Send + Sync>,
    env_id: EnvId,
    /// A cluster member decides only while it leads.
    cluster: Option<Arc<consensus::ClusterHandle>>,
    router: Arc<Router>,
    remote: RemoteCounts,
    /// The decisions themselves: the same core the simulator runs.
    core: controller::Controller,
    /// The monotonic clock the core's windows are measured on.
    started: tokio::time::Instant,
}

/// The envelope of a controller decision: the actor is the rollout, not a
/// person and not the node.
fn envelope(command: Command, deployment: DeploymentId) -> CommandEnvelope {
    crate::ticking::decision_envelope(
        command,
        crate::ticking::Decider {
            kind: "rollout",
            user: Rollout::controller_actor(deployment),
            policy: "rollout-controller",
            reason: "the rollout's own step",
        },
    )
}

impl Controller {
    pub fn new(
        store: Arc<dyn EnvironmentStore + Send + Sync>,
        env_id: EnvId,
        cluster: Option<Arc<consensus::ClusterHandle>>,
        router: Arc<Router>,
        remote: RemoteCounts,
    ) -> Self {
        Self {
            store,
            env_id,
            cluster,
            router,
            remote,
            core: controller::Controller::new(),
            started: tokio::time::Instant::now(),
        }
    }

    /// The same controller with no open window: what a restart begins
    /// with, as a new leader does.
    fn fresh(&self) -> Self {
        Self::new(
            Arc::clone(&self.store),
            self.env_id.clone(),
            self.cluster.clone(),
            Arc::clone(&self.router),
            Arc::clone(&self.remote),
        )
    }

    /// Runs the controller as a supervised actor until `shutdown` turns
    /// true (`crate::ticking`: fresh after a failure, as after a leader
    /// change).
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::ticking::run(self, shutdown).await;
    }

    /// Every member's cumulative counts of `revision`, this node's included.
    ///
    /// Every member this node knows of has a reading, zero for a revision
    /// it has not counted yet: a window counts only what a member counted
    /// after a reading of it (`analysis::window`), so a member known to
    /// have counted nothing must be in the window's first reading for its
    /// first requests to count.
    fn readings(
        remote: &RemoteCounts,
        revision: RevisionId,
        mine: &HashMap<RevisionId, WindowCounts>,
    ) -> MemberCounts {
        let mut readings = MemberCounts::new();
        readings.insert(
            SELF.to_owned(),
            mine.get(&revision).cloned().unwrap_or_default(),
        );
        if let Ok(remote) = remote.read() {
            for (member, per_revision) in remote.iter() {
                readings.insert(
                    member.clone(),
                    per_revision.get(&revision).cloned().unwrap_or_default(),
                );
            }
        }
        readings
    }

    async fn tick(&mut self) {
        let Ok(term) = crate::ticking::deciding_term(self.cluster.as_ref()) else {
            // Another member decides; a window of ours would be stale by
            // the time this node leads again.
            self.core.forget();
            return;
        };
        let store = Arc::clone(&self.store);
        let env_id = self.env_id.clone();
        let Ok(Ok(Some(state))) = tokio::task::spawn_blocking(move || store.load(&env_id)).await
        else {
            return;
        };
        let rollouts = &state.environment.rollouts;
        for rollout in rollouts.iter().filter(|r| r.state.is_active()) {
            let deployment = rollout.deployment_id.to_string();
            metrics::gauge!("gtc_rollout_step", "deployment" => deployment.clone())
                .set(f64::from(rollout.step));
            metrics::gauge!("gtc_rollout_candidate_weight_bps", "deployment" => deployment)
                .set(f64::from(rollout.candidate_weight_bps()));
        }
        let mine = self.router.revision_counts();
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let remote = &self.remote;
        let tick = self
            .core
            .tick(rollouts, chrono::Utc::now(), now_ms, |revision| {
                Self::readings(remote, revision, &mine)
            });
        for (deployment, record) in &tick.judged {
            for (role, counts) in [("candidate", &record.candidate), ("stable", &record.stable)] {
                metrics::gauge!("gtc_rollout_window_requests", "deployment" => deployment.to_string(), "role" => role)
                    .set(counts.requests as f64);
                if let Some(rate) = counts.error_rate_bps() {
                    metrics::gauge!("gtc_rollout_window_error_rate_bps", "deployment" => deployment.to_string(), "role" => role)
                        .set(f64::from(rate));
                }
            }
        }
        for planned in tick.decisions {
            self.submit(planned, term).await;
        }
    }

    async fn submit(&self, planned: Planned, term: Option<u64>) {
        let Planned {
            deployment_id: deployment,
            step,
            decision,
        } = planned;
        let what = decision.as_str();
        let command = Command::RolloutDecide(RolloutDecisionAnswers {
            environment_id: self.env_id.clone(),
            deployment_id: deployment,
            step,
            decision,
            decided_in_term: term,
        });
        let envelope = envelope(command, deployment);
        let outcome = crate::ticking::commit(
            &self.store,
            self.cluster.as_ref(),
            envelope,
            DECISION_COMMIT_BOUND,
        )
        .await;
        match outcome {
            Ok(_) => {
                tracing::info!(%deployment, step, decision = what, "rollout decision committed");
                metrics::counter!("gtc_rollout_decisions_total", "decision" => what).increment(1);
            }
            Err(error) => {
                tracing::warn!(%deployment, step, decision = what, %error, "rollout decision not committed; deciding again")
            }
        }
    }
}

impl crate::ticking::Ticking for Controller {
    const NAME: &'static str = "rollout-controller";

    fn fresh(&self) -> Self {
        Controller::fresh(self)
    }

    fn interval(&self) -> Duration {
        CONTROLLER_TICK
    }

    async fn tick(&mut self) {
        Controller::tick(self).await;
    }
}
