//! The rollout controller's decisions, without I/O: which committed
//! rollouts move on, and why. The node (`node::rollout_controller`) and
//! the simulator both run this one core; each brings its clock, the
//! members' counts and a way to commit a decision.
//!
//! - A pause step ends when its time is up.
//! - An analysis step is measured in windows of the rollout's length,
//!   from every member's cumulative counts per revision ([`window`]). At
//!   the end of a window its verdict becomes the decision (advance, hold,
//!   roll back, or the hold limit). Before the end, a window that already
//!   fails its checks rolls back at once: a bad candidate is not kept in
//!   front of users until the window is over.
//!
//! Windows live in memory only: a new leader starts a fresh window at the
//! committed step, and `apply` re-judges every decision against the
//! committed rollout, so a leader change neither skips nor repeats a step.

use std::collections::BTreeMap;

use super::analysis::{AnalysisRecord, MemberCounts, Verdict, window};
use super::{ControllerDecision, Rollout, RolloutState};
use crate::Timestamp;
use crate::ids::{DeploymentId, RevisionId};

/// A decision to commit as `rollouts decide`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub deployment_id: DeploymentId,
    /// The step the decision is about.
    pub step: u32,
    pub decision: ControllerDecision,
}

/// What one look at the committed rollouts concluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Decisions to commit, in the order of the rollouts.
    pub decisions: Vec<Planned>,
    /// Every window judged in this tick (finished, or failed early), for
    /// the metrics; a hold the rollout already records is judged here but
    /// is not a decision.
    pub judged: Vec<(DeploymentId, AnalysisRecord)>,
}

/// An analysis window in progress.
#[derive(Debug, Clone)]
struct OpenWindow {
    /// The step and when it (re)started: a new step or a resume starts a
    /// new window.
    step: u32,
    step_started_at: Timestamp,
    /// On the caller's monotonic clock, in milliseconds.
    opened_ms: u64,
    candidate: MemberCounts,
    stable: MemberCounts,
}

impl OpenWindow {
    /// A window of `rollout`'s current step opening at `now_ms` on these
    /// readings.
    fn at(rollout: &Rollout, now_ms: u64, candidate: MemberCounts, stable: MemberCounts) -> Self {
        Self {
            step: rollout.step,
            step_started_at: rollout.step_started_at,
            opened_ms: now_ms,
            candidate,
            stable,
        }
    }
}

/// The controller's memory: the open window of each analysing rollout.
#[derive(Debug, Clone, Default)]
pub struct Controller {
    windows: BTreeMap<DeploymentId, OpenWindow>,
}

impl Controller {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets every open window: this node stopped deciding, and its
    /// windows would be stale by the time it decides again.
    pub fn forget(&mut self) {
        self.windows.clear();
    }

    /// Whether a window is open for `deployment` (for tests and traces).
    pub fn window_open(&self, deployment: DeploymentId) -> bool {
        self.windows.contains_key(&deployment)
    }

    /// One look at the committed `rollouts`. `now` is the wall clock the
    /// committed pause times are on; `now_ms` a monotonic clock for the
    /// windows; `readings(revision)` every member's cumulative counts of a
    /// revision, as this node knows them now: every member it knows of,
    /// with zero counts for a revision the member has not counted yet (a
    /// member missing from a window's first reading counts nothing in it).
    pub fn tick(
        &mut self,
        rollouts: &[Rollout],
        now: Timestamp,
        now_ms: u64,
        readings: impl Fn(RevisionId) -> MemberCounts,
    ) -> Tick {
        let running: Vec<&Rollout> = rollouts.iter().filter(|r| r.state.is_active()).collect();
        self.windows
            .retain(|deployment, _| running.iter().any(|r| r.deployment_id == *deployment));
        let mut tick = Tick::default();
        for rollout in running {
            let deployment = rollout.deployment_id;
            if rollout.pause_ends_at().is_some_and(|ends| ends <= now) {
                tick.decisions.push(Planned {
                    deployment_id: deployment,
                    step: rollout.step,
                    decision: ControllerDecision::Advance { analysis: None },
                });
                continue;
            }
            let Some(settings) = rollout.analysis.as_ref().filter(|_| rollout.analysing()) else {
                self.windows.remove(&deployment);
                continue;
            };
            let candidate = readings(rollout.candidate_revision_id);
            let stable = readings(rollout.stable_revision_id);
            let open = self
                .windows
                .get(&deployment)
                .filter(|w| w.step == rollout.step && w.step_started_at == rollout.step_started_at);
            let Some(open) = open else {
                self.windows.insert(
                    deployment,
                    OpenWindow::at(rollout, now_ms, candidate, stable),
                );
                continue;
            };
            let elapsed_ms = now_ms.saturating_sub(open.opened_ms);
            let full_ms = u64::from(settings.window_seconds) * 1000;
            let finished = elapsed_ms >= full_ms;
            let record = AnalysisRecord {
                step: rollout.step,
                window_seconds: if finished {
                    settings.window_seconds
                } else {
                    // The part of the window measured so far, rounded up
                    // (at least a second): an early failure says so.
                    elapsed_ms.div_ceil(1000).clamp(1, full_ms / 1000) as u32
                },
                candidate: window(&open.candidate, &candidate),
                stable: window(&open.stable, &stable),
            };
            if !finished {
                // Mid-window, only a failure is acted on.
                if matches!(record.judge(settings), Verdict::Fail { .. }) {
                    tick.judged.push((deployment, record.clone()));
                    tick.decisions.push(Planned {
                        deployment_id: deployment,
                        step: rollout.step,
                        decision: ControllerDecision::RollBack { analysis: record },
                    });
                }
                continue;
            }
            // The next window starts now, whatever this one decides.
            self.windows.insert(
                deployment,
                OpenWindow::at(rollout, now_ms, candidate, stable),
            );
            tick.judged.push((deployment, record.clone()));
            let Some(decision) = rollout.judge_window(record, now) else {
                continue;
            };
            // A hold the rollout already records changes nothing: no write.
            let recorded_hold = matches!(decision, ControllerDecision::Hold { .. })
                && rollout.state == RolloutState::Holding;
            if !recorded_hold {
                tick.decisions.push(Planned {
                    deployment_id: deployment,
                    step: rollout.step,
                    decision,
                });
            }
        }
        tick
    }
}
