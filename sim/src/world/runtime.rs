//! Each member's runtime, as the node's environment actor runs it: the pure
//! `deploy::reconcile::plan` over the member's own committed state, its
//! actions carried out on a simulated set of running revisions, and the
//! runtime reports they lead to (ready after a warm start, drained after a
//! drain) queued until the deployer sends them. A crash empties a member's
//! runtime, as it kills a node's processes; the restarted member plans from
//! nothing, as the node's actors do.
//!
//! Checked on every member after every step: `plan-settles` (carrying out a
//! plan's actions leaves nothing more to do but repeat a drained report,
//! which a node sends at least once per plan until the state moves) and
//! `member-runs-its-placement` (what runs is exactly the member's share of
//! each revision that wants instances, and nothing else).

use deploy::reconcile::{self, Action, Goal, NodeRole, PlanInput, Runs};

use super::*;

/// Plans needed, at most, before a member's runtime must have settled: a
/// changed placement stops and fetches, the fetched bundle then starts.
const PLAN_ROUNDS_MAX: usize = 3;

/// What a member runs, in the simulation.
#[derive(Debug, Default)]
pub(super) struct SimRuntime {
    running: BTreeMap<RevisionId, Runs>,
    bundles_here: BTreeSet<RevisionId>,
}

/// A runtime report waiting to be sent by the member that owes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PendingReport {
    pub node: NodeId,
    pub revision: RevisionId,
    /// `true`: ready after a warm start; `false`: drained.
    pub ready: bool,
}

impl World {
    /// Plans and carries out the plan on every running member.
    pub(super) fn reconcile(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].member && self.nodes[index].handle.is_some() {
                self.reconcile_member(index);
            }
        }
    }

    fn reconcile_member(&mut self, index: usize) {
        let id = self.nodes[index].id;
        let Some(state) = self.applied_state(id, &self.env) else {
            return;
        };
        let role = NodeRole::Member {
            node_name: format!("n{id}"),
        };
        let mut reports = Vec::new();
        let mut settled = false;
        let mut last = Vec::new();
        {
            let runtime = &mut self.nodes[index].runtime;
            for _ in 0..PLAN_ROUNDS_MAX {
                let actions = reconcile::plan(&PlanInput {
                    state: &state,
                    running: &runtime.running,
                    role: &role,
                    bundles_here: &runtime.bundles_here,
                    bundles_fetchable: true,
                });
                // A member reports a drain with nothing running at least
                // once per plan until the state moves on (the report is
                // retried that way); anything else must not repeat.
                let only_reports = actions
                    .iter()
                    .all(|action| matches!(action, Action::ReportDrained { .. }));
                if only_reports && !last.is_empty() {
                    settled = true;
                    break;
                }
                if actions.is_empty() {
                    settled = true;
                    break;
                }
                for action in &actions {
                    match *action {
                        Action::Stop { revision, .. } => {
                            runtime.running.remove(&revision);
                        }
                        Action::Start {
                            revision,
                            share,
                            goal,
                        } => {
                            let instances = state
                                .environment
                                .revision(revision)
                                .map_or(0, |r| share.count(r));
                            runtime.running.insert(
                                revision,
                                Runs {
                                    share,
                                    instances,
                                    draining: false,
                                },
                            );
                            if goal == Goal::Warm {
                                reports.push((revision, true));
                            }
                        }
                        // Another member always has it in the simulation.
                        Action::FetchBundle { revision } => {
                            runtime.bundles_here.insert(revision);
                        }
                        Action::Drain { revision, .. } => {
                            if let Some(runs) = runtime.running.get_mut(&revision) {
                                runs.draining = true;
                            }
                            reports.push((revision, false));
                        }
                        Action::ReportDrained { revision } => reports.push((revision, false)),
                        Action::Resize {
                            revision,
                            instances,
                        } => {
                            if let Some(runs) = runtime.running.get_mut(&revision) {
                                runs.resize(instances);
                            }
                        }
                    }
                }
                last = actions;
            }
        }
        for (revision, ready) in reports {
            self.reports.insert(PendingReport {
                node: id,
                revision,
                ready,
            });
        }
        if !settled {
            self.ledger().violate(
                names::PLAN_SETTLES,
                format!(
                    "n{id} at generation {}: still {last:?} after {PLAN_ROUNDS_MAX} plans",
                    state.generation
                ),
            );
        }
        let runtime = &self.nodes[index].runtime;
        for revision in &state.environment.revisions {
            if revision.runtime_instances.is_none() {
                continue;
            }
            let runs = runtime.running.get(&revision.revision_id);
            let wrong = match revision.lifecycle {
                Lifecycle::Warming | Lifecycle::Ready => {
                    runs.map(|r| r.share) != role.share(revision)
                        || runs.is_some_and(|r| r.instances != r.share.count(revision))
                }
                // Runs until drained, or was never running here.
                Lifecycle::Draining => runs.is_some_and(|r| !r.draining),
                _ => runs.is_some(),
            };
            if wrong {
                let detail = format!(
                    "n{id} at generation {}: revision {} ({:?}, placed on {:?}) runs {runs:?}",
                    state.generation, revision.revision_id, revision.lifecycle, revision.placement
                );
                self.ledger()
                    .violate(names::MEMBER_RUNS_ITS_PLACEMENT, detail);
            }
        }
        let unknown: Vec<RevisionId> = runtime
            .running
            .keys()
            .filter(|id| state.environment.revision(**id).is_none())
            .copied()
            .collect();
        if !unknown.is_empty() {
            self.ledger().violate(
                names::MEMBER_RUNS_ITS_PLACEMENT,
                format!("n{id} runs revisions its state does not hold: {unknown:?}"),
            );
        }
    }

    /// The deployer sends one report a member owes, if any: true when it did.
    pub(super) async fn send_a_report(&mut self) -> bool {
        let owed: Vec<PendingReport> = self
            .reports
            .iter()
            .filter(|report| {
                self.index_of(report.node)
                    .is_some_and(|index| self.nodes[index].handle.is_some())
            })
            .copied()
            .collect();
        let Some(&report) = owed.choose(&mut self.rng) else {
            return false;
        };
        self.reports.remove(&report);
        let outcome = if report.ready {
            RuntimeOutcome::Ready
        } else {
            RuntimeOutcome::Drained
        };
        self.report(report.revision, outcome).await;
        true
    }

    /// A crashed member's processes are gone, and so are the reports it owed.
    pub(super) fn forget_runtime(&mut self, index: usize) {
        let id = self.nodes[index].id;
        self.nodes[index].runtime = SimRuntime::default();
        self.reports.retain(|report| report.node != id);
    }
}
