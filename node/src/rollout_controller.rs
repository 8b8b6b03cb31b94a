//! The rollout controller: moves every running rollout on when its step is
//! over. It runs on the node that decides for the environment (a single
//! node, or the cluster's Raft leader) and submits each decision as
//! `rollouts decide`, audited as `rollout:<deployment>`, never as a person.
//!
//! - A pause step ends when its time is up.
//! - An analysis step is measured in windows of the rollout's length:
//!   every member's router counts requests, 5xx answers, its own error
//!   answers and latencies per revision (`Router::revision_counts`); the
//!   members gossip theirs (`counts/<revision>`), and the controller sums
//!   the differences over the window for the candidate and the stable
//!   revision (`deploy::rollout::analysis::window`). The window's verdict
//!   becomes the decision: advance, hold (too little data is never a
//!   pass), roll back, or the hold limit.
//!
//! `apply` re-judges every decision against the committed rollout (its
//! step, its pause, the window it carries), so a leader change neither
//! skips nor repeats a step: the next leader reads the committed step and
//! starts a fresh window there. Windows live in memory only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use deploy::audit::{Actor, Authorization, Decision};
use deploy::command::{Command, CommandEnvelope, MintedIds, RolloutDecisionAnswers};
use deploy::ids::{DeploymentId, EnvId, EventId, RevisionId};
use deploy::rollout::analysis::{AnalysisRecord, MemberCounts, window};
use deploy::rollout::{ControllerDecision, Rollout, WindowCounts};
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

/// An analysis window in progress.
struct Window {
    /// The step and when it (re)started: a new step or a resume starts a
    /// new window.
    step: u32,
    step_started_at: deploy::Timestamp,
    opened: tokio::time::Instant,
    candidate: MemberCounts,
    stable: MemberCounts,
}

/// Where the controller reads and writes, and its windows.
pub struct Controller {
    store: Arc<dyn EnvironmentStore + Send + Sync>,
    env_id: EnvId,
    /// A cluster member decides only while it leads.
    cluster: Option<Arc<consensus::ClusterHandle>>,
    router: Arc<Router>,
    remote: RemoteCounts,
    windows: HashMap<DeploymentId, Window>,
}

/// The envelope of a controller decision: the actor is the rollout, not a
/// person and not the node.
fn envelope(command: Command, deployment: DeploymentId) -> CommandEnvelope {
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
            windows: HashMap::new(),
        }
    }

    /// Runs until `shutdown` turns true.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
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

    /// Every member's cumulative counts of `revision`, this node's included.
    fn readings(
        &self,
        revision: RevisionId,
        mine: &HashMap<RevisionId, WindowCounts>,
    ) -> MemberCounts {
        let mut readings = MemberCounts::new();
        if let Some(counts) = mine.get(&revision) {
            readings.insert(SELF.to_owned(), counts.clone());
        }
        if let Ok(remote) = self.remote.read() {
            for (member, per_revision) in remote.iter() {
                if let Some(counts) = per_revision.get(&revision) {
                    readings.insert(member.clone(), counts.clone());
                }
            }
        }
        readings
    }

    async fn tick(&mut self) {
        let term = match &self.cluster {
            Some(cluster) if !cluster.is_leader() => {
                // Another member decides; a window of ours would be stale
                // by the time this node leads again.
                self.windows.clear();
                return;
            }
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
        let mine = self.router.revision_counts();
        let running: Vec<&Rollout> = state
            .environment
            .rollouts
            .iter()
            .filter(|r| r.state.is_active())
            .collect();
        self.windows
            .retain(|deployment, _| running.iter().any(|r| r.deployment_id == *deployment));
        let mut decisions = Vec::new();
        for rollout in running {
            let deployment = rollout.deployment_id;
            metrics::gauge!("gtc_rollout_step", "deployment" => deployment.to_string())
                .set(f64::from(rollout.step));
            metrics::gauge!("gtc_rollout_candidate_weight_bps", "deployment" => deployment.to_string())
                .set(f64::from(rollout.candidate_weight_bps()));
            if rollout.pause_ends_at().is_some_and(|ends| ends <= now) {
                decisions.push((
                    rollout.clone(),
                    ControllerDecision::Advance { analysis: None },
                ));
                continue;
            }
            if !rollout.analysing() {
                self.windows.remove(&deployment);
                continue;
            }
            let Some(settings) = rollout.analysis.as_ref() else {
                continue;
            };
            let candidate = self.readings(rollout.candidate_revision_id, &mine);
            let stable = self.readings(rollout.stable_revision_id, &mine);
            let current = self
                .windows
                .get(&deployment)
                .filter(|w| w.step == rollout.step && w.step_started_at == rollout.step_started_at);
            let Some(open) = current else {
                self.windows.insert(
                    deployment,
                    Window {
                        step: rollout.step,
                        step_started_at: rollout.step_started_at,
                        opened: tokio::time::Instant::now(),
                        candidate,
                        stable,
                    },
                );
                continue;
            };
            if open.opened.elapsed() < Duration::from_secs(u64::from(settings.window_seconds)) {
                continue;
            }
            let record = AnalysisRecord {
                step: rollout.step,
                window_seconds: settings.window_seconds,
                candidate: window(&open.candidate, &candidate),
                stable: window(&open.stable, &stable),
            };
            for (role, counts) in [("candidate", &record.candidate), ("stable", &record.stable)] {
                metrics::gauge!("gtc_rollout_window_requests", "deployment" => deployment.to_string(), "role" => role)
                    .set(counts.requests as f64);
                if let Some(rate) = counts.error_rate_bps() {
                    metrics::gauge!("gtc_rollout_window_error_rate_bps", "deployment" => deployment.to_string(), "role" => role)
                        .set(f64::from(rate));
                }
            }
            // The next window starts now, whatever this one decides.
            self.windows.insert(
                deployment,
                Window {
                    step: rollout.step,
                    step_started_at: rollout.step_started_at,
                    opened: tokio::time::Instant::now(),
                    candidate,
                    stable,
                },
            );
            if let Some(decision) = rollout.judge_window(record, now) {
                decisions.push((rollout.clone(), decision));
            }
        }
        for (rollout, decision) in decisions {
            self.submit(&rollout, decision, term).await;
        }
    }

    async fn submit(&self, rollout: &Rollout, decision: ControllerDecision, term: Option<u64>) {
        let deployment = rollout.deployment_id;
        let step = rollout.step;
        let what = decision.as_str();
        // A hold the rollout already records changes nothing: no write.
        if matches!(decision, ControllerDecision::Hold { .. })
            && rollout.state == deploy::rollout::RolloutState::Holding
        {
            return;
        }
        let command = Command::RolloutDecide(RolloutDecisionAnswers {
            environment_id: self.env_id.clone(),
            deployment_id: deployment,
            step,
            decision,
            decided_in_term: term,
        });
        let envelope = envelope(command, deployment);
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
                        return;
                    }
                }
            }
        };
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
