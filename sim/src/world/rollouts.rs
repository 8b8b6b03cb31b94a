//! Rollouts under simulation: the production controller core
//! (`deploy::rollout::controller`) on whichever member leads, judging
//! windows of the members' own request counts, with its decisions written
//! through the ordinary write path like the node's.
//!
//! - **Load.** Besides the users' requests, every running router answers
//!   [`LOAD_PER_SECOND`] requests per route per simulated second (counted
//!   at each step, for the time since the last) through its committed
//!   table's weighted pick; a revision staged as bad fails a share of them
//!   (`failing`). Each member counts its answers per revision, in this life
//!   only (a crash loses them, as a node's memory).
//! - **Gossip.** A running member publishes its counts after a step's load
//!   with probability [`GOSSIP_PUBLISH`], and always when it has skipped
//!   [`GOSSIP_LAG_ROUNDS`] rounds: the leader reads the others' counts up
//!   to that many load rounds late, its own live.
//! - **Operator.** Starts rollouts (analysis, pause and manual steps),
//!   and now and then pauses, resumes, promotes or aborts one.
//!
//! The ledger counts every answer per revision per load round, the ground
//! truth the rollout invariants check decisions against
//! (`invariants::Ledger::check_rollouts`).

use deploy::command::{RolloutActionAnswers, RolloutDecisionAnswers, RolloutStartAnswers};
use deploy::rollout::analysis::{LATENCY_BUCKETS, MemberCounts, WindowCounts, bucket_of};
use deploy::rollout::controller::Planned;
use deploy::rollout::{
    AnalysisSettings, HoldLimitAction, MetricCheck, PersonAction, Rollout, RolloutStep, StepGate,
};

use super::*;

/// A whole split.
const BASIS_POINTS: u32 = deploy::traffic::BASIS_POINTS_TOTAL;

/// Requests per second each running router answers per route, besides the
/// users': at a 10 % step, a 10 s window of three members sees about 120
/// candidate requests, so `min_requests` (20-400) is met in some windows
/// and not in others.
pub(super) const LOAD_PER_SECOND: u64 = 40;
/// At most this many per route per step (a step after a long stall).
const LOAD_PER_STEP_MAX: u64 = 2_000;
/// The chance a running member publishes its counts after a step's load.
const GOSSIP_PUBLISH: f64 = 0.6;
pub use crate::invariants::GOSSIP_LAG_ROUNDS;

/// What a member last published of its counts.
#[derive(Debug, Clone)]
pub(super) struct Gossiped {
    /// The member's identity in this life, as the node's gossip names it.
    key: String,
    counts: BTreeMap<RevisionId, WindowCounts>,
    /// The load round it was taken after.
    round: u64,
}

/// The actor a controller decision is audited under.
fn controller_actor(deployment: DeploymentId) -> Actor {
    Actor {
        kind: "rollout".to_owned(),
        user: Some(Rollout::controller_actor(deployment)),
        uid: None,
    }
}

impl World {
    /// A member answered a request with `revision`: its router counts it
    /// (a bad revision fails its share), and the ledger records it.
    fn count(&mut self, index: usize, revision: RevisionId) {
        let failing = self.failing.get(&revision).copied().unwrap_or(0);
        let failed = failing > 0 && self.rng.random_range(0..100) < failing;
        let latency_ms = if failed { 40 } else { 5 };
        let counts = self.nodes[index].counts.entry(revision).or_default();
        counts.requests += 1;
        if failed {
            counts.server_errors += 1;
        }
        if counts.latency_buckets.len() < LATENCY_BUCKETS {
            counts.latency_buckets.resize(LATENCY_BUCKETS, 0);
        }
        counts.latency_buckets[bucket_of(latency_ms)] += 1;
        self.ledger().answered(revision);
    }

    /// The users' request through member `index` was answered by `revision`.
    pub(super) fn counted(&mut self, index: usize, revision: RevisionId) {
        self.count(index, revision);
    }

    /// Every running router's share of the background load, then the
    /// members' gossip of their counts.
    pub(super) fn load(&mut self) {
        let now = self.ledger().trace.elapsed();
        let since = now.saturating_sub(self.loaded_until);
        self.loaded_until = now;
        let per_route = (u64::try_from(since.as_millis()).unwrap_or(u64::MAX) * LOAD_PER_SECOND
            / 1000)
            .min(LOAD_PER_STEP_MAX);
        for index in self.up() {
            let id = self.nodes[index].id;
            let routes: Vec<_> = self
                .ledger()
                .tables
                .get(&id)
                .and_then(|tables| tables.get(&self.env))
                .map(|(table, _)| table.deployments().to_vec())
                .unwrap_or_default();
            for route in routes {
                for _ in 0..per_route {
                    self.picks += 1;
                    let revision = route.pick.pick(pick_point(self.picks));
                    self.count(index, revision);
                }
            }
        }
        let round = self.ledger().end_round();
        for index in self.up() {
            let id = self.nodes[index].id;
            let late = self
                .gossiped
                .get(&id)
                .is_none_or(|g| round.saturating_sub(g.round) >= GOSSIP_LAG_ROUNDS);
            if late || self.rng.random_bool(GOSSIP_PUBLISH) {
                let node = &self.nodes[index];
                self.gossiped.insert(
                    id,
                    Gossiped {
                        key: format!("n{id}@{}", node.life),
                        counts: node.counts.clone(),
                        round,
                    },
                );
            }
        }
    }

    /// The controller on every member: the leader looks at its committed
    /// rollouts and writes its decisions; the others forget their windows.
    pub(super) async fn control(&mut self) {
        let mut decisions = Vec::new();
        for index in self.up() {
            let Some(term) = self.leading_term(index) else {
                self.nodes[index].controller.forget();
                continue;
            };
            let id = self.nodes[index].id;
            let Some(state) = self.applied_state(id, &self.env) else {
                continue;
            };
            let elapsed = self.ledger().trace.elapsed();
            let now = self.epoch
                + chrono::Duration::from_std(elapsed).unwrap_or_else(|_| chrono::Duration::zero())
                + self.nodes[index].skew;
            let now_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            let own = self.nodes[index].counts.clone();
            let mut others: Vec<(String, BTreeMap<RevisionId, WindowCounts>)> = self
                .gossiped
                .iter()
                .filter(|(member, _)| **member != id)
                .map(|(_, g)| (g.key.clone(), g.counts.clone()))
                .collect();
            if self.config.bug == Some(PlantedBug::RolloutCountsItselfTwice)
                && let Some(mine) = self.gossiped.get(&id)
            {
                // The planted bug: the leader's own published counts are
                // read as another member's, besides its live ones.
                others.push((mine.key.clone(), mine.counts.clone()));
            }
            let readings = |revision: RevisionId| {
                let mut readings = MemberCounts::new();
                readings.insert(
                    "self".to_owned(),
                    own.get(&revision).cloned().unwrap_or_default(),
                );
                for (member, counts) in &others {
                    readings.insert(
                        member.clone(),
                        counts.get(&revision).cloned().unwrap_or_default(),
                    );
                }
                readings
            };
            let tick = self.nodes[index].controller.tick(
                &state.environment.rollouts,
                now,
                now_ms,
                readings,
            );
            for (deployment, record) in &tick.judged {
                self.trace(format!(
                    "n{id} judged {deployment} step {}: candidate {} requests {} errors",
                    record.step,
                    record.candidate.requests,
                    record.candidate.errors()
                ));
            }
            decisions.extend(tick.decisions.into_iter().map(|planned| (planned, term)));
        }
        for (planned, term) in decisions {
            self.decide(planned, term).await;
        }
    }

    async fn decide(&mut self, planned: Planned, term: u64) {
        let Planned {
            deployment_id,
            step,
            decision,
        } = planned;
        let what = format!("rollout {} step {step}", decision.as_str());
        self.stats.rollout_decisions += 1;
        self.submit_as(
            Command::RolloutDecide(RolloutDecisionAnswers {
                environment_id: self.env.clone(),
                deployment_id,
                step,
                decision,
                decided_in_term: Some(term),
            }),
            &what,
            controller_actor(deployment_id),
        )
        .await;
    }

    /// A person's rollout action: start one where a deployment serves one
    /// revision and has another ready, or act on a running one.
    pub(super) async fn operate_rollouts(&mut self, state: &EnvironmentState) {
        let environment = &state.environment;
        let running: Vec<DeploymentId> = environment
            .rollouts
            .iter()
            .filter(|r| r.state.is_active())
            .map(|r| r.deployment_id)
            .collect();
        if let Some(&deployment_id) = running.choose(&mut self.rng)
            && self.rng.random_bool(0.3)
        {
            let action = *[
                PersonAction::Pause,
                PersonAction::Resume,
                PersonAction::Resume,
                PersonAction::Promote,
                PersonAction::Abort,
            ]
            .choose(&mut self.rng)
            .unwrap_or(&PersonAction::Resume);
            self.submit(
                Command::RolloutAct {
                    action,
                    answers: RolloutActionAnswers {
                        environment_id: self.env.clone(),
                        deployment_id,
                        reason: Some("simulated operator".to_owned()),
                        idempotency_key: None,
                    },
                },
                &format!("rollout {}", action.as_str()),
            )
            .await;
            return;
        }
        // A deployment that serves one revision, with another ready.
        let mut starts = Vec::new();
        for split in &environment.traffic_splits {
            let weighted: Vec<_> = split.entries.iter().filter(|e| e.weight_bps > 0).collect();
            let [stable] = weighted.as_slice() else {
                continue;
            };
            if running.contains(&split.deployment_id) {
                continue;
            }
            for revision in &environment.revisions {
                if revision.deployment_id == split.deployment_id
                    && revision.lifecycle == Lifecycle::Ready
                    && revision.revision_id != stable.revision_id
                {
                    starts.push((
                        split.deployment_id,
                        stable.revision_id,
                        revision.revision_id,
                    ));
                }
            }
        }
        let Some(&(deployment_id, stable, candidate)) = starts.choose(&mut self.rng) else {
            // None yet: send one deployment 100 % to one ready revision, as
            // an operator does before a rollout.
            let ready: Vec<(DeploymentId, RevisionId)> = environment
                .revisions
                .iter()
                .filter(|r| r.lifecycle == Lifecycle::Ready && !running.contains(&r.deployment_id))
                .map(|r| (r.deployment_id, r.revision_id))
                .collect();
            if let Some(&(deployment_id, revision)) = ready.choose(&mut self.rng) {
                self.ids += 1;
                let key = format!("split-{}-{}", self.config.seed, self.ids);
                self.submit(
                    Command::TrafficSet(TrafficSetAnswers {
                        environment_id: self.env.clone(),
                        deployment_id,
                        entries: vec![TrafficEntryAnswers {
                            revision_id: revision.to_string(),
                            weight_bps: Some(BASIS_POINTS),
                            weight_percent: None,
                            tag: None,
                        }],
                        updated_by: None,
                        idempotency_key: key,
                        authorization_ref: None,
                    }),
                    "traffic set (before a rollout)",
                )
                .await;
            }
            return;
        };
        let count = self.rng.random_range(1..=3u32);
        let mut weight = 0;
        let steps: Vec<RolloutStep> = (0..count)
            .map(|_| {
                weight = self
                    .rng
                    .random_range(weight + 1..=(weight + 5_000).min(9_999));
                let until = match self.rng.random_range(0..10) {
                    0..6 => StepGate::Analysis,
                    6..9 => StepGate::Pause {
                        seconds: self.rng.random_range(1..5),
                    },
                    _ => StepGate::Manual,
                };
                RolloutStep {
                    weight_bps: weight,
                    until,
                }
            })
            .collect();
        let analysis = AnalysisSettings {
            window_seconds: deploy::rollout::WINDOW_SECONDS_MIN,
            min_requests: self.rng.random_range(20..400),
            checks: vec![MetricCheck::ErrorRate {
                max_bps: 500,
                relative_to_stable: self.rng.random_bool(0.3),
            }],
            hold_limit_seconds: self.rng.random_range(15..60),
            on_hold_limit: if self.rng.random_bool(0.5) {
                HoldLimitAction::Abort
            } else {
                HoldLimitAction::Wait
            },
        };
        self.ids += 1;
        let key = format!("rollout-{}-{}", self.config.seed, self.ids);
        self.stats.rollouts_started += 1;
        let stable_grace_seconds = Some(self.rng.random_range(0..30));
        self.submit(
            Command::RolloutStart(RolloutStartAnswers {
                environment_id: self.env.clone(),
                deployment_id,
                candidate_revision_id: candidate,
                stable_revision_id: Some(stable),
                steps,
                analysis: Some(analysis),
                stable_grace_seconds,
                idempotency_key: key,
            }),
            "rollout start",
        )
        .await;
    }

    /// A member's counts and controller die with it.
    pub(super) fn forget_counts(&mut self, index: usize) {
        self.nodes[index].counts.clear();
        self.nodes[index].controller.forget();
        self.nodes[index].scalers.clear();
    }
}
