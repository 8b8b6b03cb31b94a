//! Autoscaling under simulation: the production decider
//! (`deploy::scaling::decider`) on whichever member leads, its decisions
//! written through the ordinary write path like the node's autoscaler
//! (term-stamped, audited as `autoscaler:<revision>`), while the operator
//! now and then changes a revision's scaling settings (sometimes to
//! settings that must be refused).
//!
//! - **Load.** Each ready revision that scales has a demand (requests in
//!   flight over every router) that wanders: idle spells, steady load and
//!   bursts. With no ready instance, the demand is held (queued).
//! - **Invariant** (`names::SCALE_WITHIN_BOUNDS`): every decision the
//!   decider makes is within the revision's committed `min_instances..=
//!   max_instances`, and not below `min_instances_while_active` while
//!   requests arrive (within the stable window). The committed state is
//!   checked by the state machine too: a count outside the bounds fails
//!   validation (`applied-state-validates`).

use deploy::command::{RevisionScaleAnswers, ScaleDecisionAnswers};
use deploy::scaling::ScalingSettings;
use deploy::scaling::decider::{self, Memory, Reading};

use super::*;

/// One revision's decider memory and readings on the member that leads.
#[derive(Debug, Default)]
pub(super) struct Scaler {
    memory: Memory,
    readings: Vec<Reading>,
    /// When a reading above zero was last taken.
    last_active_ms: Option<u64>,
}

/// The actor a decision is audited under.
fn autoscaler_actor(revision: RevisionId) -> Actor {
    Actor {
        kind: "autoscaler".to_owned(),
        user: Some(format!("autoscaler:{revision}")),
        uid: None,
    }
}

impl World {
    /// The demand of `revision` this step: a random walk with idle spells
    /// and bursts.
    fn demand(&mut self, revision: RevisionId) -> f64 {
        let current = self.demand.get(&revision).copied().unwrap_or(0.0);
        let next = match self.rng.random_range(0..20) {
            0..3 => 0.0,
            3 => current + f64::from(self.rng.random_range(50..400u32)),
            _ => (current + f64::from(self.rng.random_range(0..40u32)) - 20.0).max(0.0),
        };
        self.demand.insert(revision, next);
        next
    }

    /// The decider on the member that leads; the others forget theirs.
    pub(super) async fn autoscale(&mut self) {
        let mut decisions = Vec::new();
        for index in self.up() {
            let Some(term) = self.leading_term(index) else {
                self.nodes[index].scalers.clear();
                continue;
            };
            let id = self.nodes[index].id;
            let Some(state) = self.applied_state(id, &self.env) else {
                continue;
            };
            let now_ms =
                u64::try_from(self.ledger().trace.elapsed().as_millis()).unwrap_or(u64::MAX);
            let scaling: Vec<(RevisionId, ScalingSettings, u32)> = state
                .environment
                .revisions
                .iter()
                .filter(|r| r.lifecycle == Lifecycle::Ready)
                .filter_map(|r| Some((r.revision_id, r.scaling?, r.instance_count()?)))
                .collect();
            let live: BTreeSet<RevisionId> = scaling.iter().map(|(id, ..)| *id).collect();
            self.nodes[index]
                .scalers
                .retain(|revision, _| live.contains(revision));
            for (revision, settings, ready) in scaling {
                let demand = self.demand(revision);
                let queued = if ready == 0 { demand as u32 } else { 0 };
                let scaler = self.nodes[index].scalers.entry(revision).or_default();
                scaler.readings.push(Reading {
                    at_ms: now_ms,
                    concurrency: demand,
                });
                let window_ms = u64::from(settings.stable_window_seconds) * 1_000;
                scaler.readings.retain(|r| r.at_ms + window_ms >= now_ms);
                if demand > 0.0 || queued > 0 {
                    scaler.last_active_ms = Some(now_ms);
                }
                let mut decision = decider::decide(
                    &settings,
                    &mut scaler.memory,
                    decider::Observed {
                        now_ms,
                        readings: &scaler.readings,
                        ready,
                        queued,
                    },
                );
                if self.config.bug == Some(PlantedBug::AutoscalerOvershootsFromZero) && queued > 0 {
                    // The planted bug: a cold start sized by the panic
                    // estimate with no cap (Knative #4344, and worse).
                    decision.desired = queued;
                }
                let active = scaler
                    .last_active_ms
                    .is_some_and(|at| now_ms.saturating_sub(at) < window_ms);
                let floor = if active {
                    settings
                        .min_instances
                        .max(settings.min_instances_while_active)
                } else {
                    settings.min_instances
                };
                if decision.desired > settings.max_instances || decision.desired < floor {
                    self.ledger().violate(
                        names::SCALE_WITHIN_BOUNDS,
                        format!(
                            "n{id}: revision {revision} decided {} ({}) outside {floor}..={} (demand {demand}, queued {queued}, ready {ready})",
                            decision.desired,
                            decision.mode.as_str(),
                            settings.max_instances
                        ),
                    );
                }
                if decision.desired != ready {
                    decisions.push((
                        ScaleDecisionAnswers {
                            environment_id: self.env.clone(),
                            revision_id: revision,
                            desired: decision.desired,
                            mode: decision.mode.as_str().to_owned(),
                            stable_concurrency: decision.stable_concurrency,
                            panic_concurrency: decision.panic_concurrency,
                            queued,
                            decided_in_term: Some(term),
                        },
                        revision,
                    ));
                }
            }
        }
        for (answers, revision) in decisions {
            self.stats.scale_decisions += 1;
            let what = format!("scale {revision} to {}", answers.desired);
            self.submit_as(
                Command::ScaleDecide(answers),
                &what,
                autoscaler_actor(revision),
            )
            .await;
        }
    }

    /// A person's `revisions scale` on a revision with something to run:
    /// mostly valid settings, now and then min above max (refused).
    pub(super) async fn operate_scaling(&mut self, state: &EnvironmentState) {
        let candidates: Vec<RevisionId> = state
            .environment
            .revisions
            .iter()
            .filter(|r| {
                r.runtime_instances.is_some()
                    && matches!(
                        r.lifecycle,
                        Lifecycle::Staged | Lifecycle::Warming | Lifecycle::Ready
                    )
            })
            .map(|r| r.revision_id)
            .collect();
        let Some(&revision_id) = candidates.choose(&mut self.rng) else {
            return;
        };
        let min_instances: u32 = self.rng.random_range(0..3);
        let max_instances = if self.rng.random_bool(0.1) {
            min_instances.saturating_sub(1)
        } else {
            self.rng
                .random_range(min_instances.max(1)..=min_instances + 4)
        };
        let scaling = ScalingSettings {
            min_instances,
            max_instances,
            min_instances_while_active: self.rng.random_range(0..=max_instances.max(1)),
            target_concurrency: self.rng.random_range(1..200),
            stable_window_seconds: self.rng.random_range(6..20),
            panic_window_seconds: self.rng.random_range(1..6),
            scale_to_zero_grace_seconds: self.rng.random_range(0..10),
            ..ScalingSettings::default()
        };
        self.submit(
            Command::RevisionScale(RevisionScaleAnswers {
                environment_id: self.env.clone(),
                revision_id,
                scaling,
                idempotency_key: None,
            }),
            "revisions scale",
        )
        .await;
    }
}
