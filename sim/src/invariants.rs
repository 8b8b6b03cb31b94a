//! The named invariants, and the ledger of what the run observed that
//! they are checked against.
//!
//! Every check here is pure: it looks at applied states, router tables,
//! served answers and acknowledged commands that the world recorded, and
//! names the invariant a violation breaks. Nothing here drives the run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use consensus::NodeId;
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use deploy::lifecycle::Lifecycle;
use deploy::state::EnvironmentState;
use deploy::traffic::BASIS_POINTS_TOTAL;
use router::RouteTable;

use crate::trace::Trace;

/// A running member's published counts are at most this many load rounds
/// old (the world's rollouts model publishes within it): the slack the
/// rollout invariant allows a window's first readings. Kept here, with the
/// check that relies on it, so the invariants need nothing of the world.
pub const GOSSIP_LAG_ROUNDS: u64 = 2;

/// What one applied entry did, as the invariants see it.
#[derive(Debug, Clone)]
pub struct AppliedChange {
    pub node: NodeId,
    pub index: u64,
    pub env: EnvId,
    /// The environment after the change (`None`: destroyed or refused
    /// before it existed).
    pub state: Option<EnvironmentState>,
    pub outcome: Answer,
}

impl AppliedChange {
    /// What consensus's state machine on `node` reported.
    pub fn of(node: NodeId, entry: consensus::AppliedEntry) -> Self {
        Self {
            node,
            index: entry.index,
            env: entry.env,
            state: entry.state,
            outcome: Answer::of(&entry.outcome),
        }
    }
}

/// The answer to a write, as the invariants and the trace see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub ok: bool,
    pub generation: Option<u64>,
    pub replayed: bool,
    pub event_id: Option<String>,
    pub error: Option<String>,
}

impl Answer {
    /// The answer an applied entry's outcome gives its client.
    pub fn of(outcome: &consensus::Outcome) -> Self {
        use consensus::Outcome;
        match outcome {
            Outcome::Applied(applied) => Self {
                ok: true,
                generation: applied.generation,
                replayed: applied.replayed,
                event_id: applied.event.as_ref().map(|e| e.event_id.to_string()),
                error: None,
            },
            Outcome::CommittedFailure { applied, error } => Self {
                ok: false,
                generation: applied.generation,
                replayed: applied.replayed,
                event_id: applied.event.as_ref().map(|e| e.event_id.to_string()),
                error: Some(format!("{}: {}", error.kind, error.message)),
            },
            Outcome::Refused(error) => Self {
                ok: false,
                generation: None,
                replayed: false,
                event_id: None,
                error: Some(format!("{}: {}", error.kind, error.message)),
            },
            // The simulated clients send no secret or trust root changes;
            // one would carry no command answer either.
            Outcome::Recorded
            | Outcome::Secret(_)
            | Outcome::TrustRoot(_)
            | Outcome::AlreadyApplied
            | Outcome::Nothing => Self {
                ok: true,
                generation: None,
                replayed: false,
                event_id: None,
                error: None,
            },
        }
    }
}

/// The invariants, by name. Each name appears in a violation's report.
pub mod names {
    /// No two nodes are leader in the same term.
    pub const ONE_LEADER_PER_TERM: &str = "one-leader-per-term";
    /// Every node applies the same state at the same generation.
    pub const REPLICAS_AGREE: &str = "replicas-agree-per-generation";
    /// Every applied state passes `EnvironmentState::validate`.
    pub const APPLIED_STATE_VALIDATES: &str = "applied-state-validates";
    /// A split names only ready revisions and no archived one.
    pub const NO_ARCHIVED_REVISION_REFERENCED: &str = "no-archived-or-unready-revision-in-a-split";
    /// Every router's split for a deployment sums to 10000 bps.
    pub const ROUTER_SPLIT_SUMS: &str = "router-split-sums-to-10000";
    /// A router serves only a split that was committed, at the generation
    /// it claims, to a revision that was ready in that committed state.
    pub const ROUTER_SERVES_COMMITTED: &str = "router-serves-only-a-committed-split";
    /// A sticky session keeps its revision while the split generation
    /// stays the same.
    pub const STICKY_STAYS: &str = "sticky-session-keeps-its-revision";
    /// An acknowledged command is in every member's state and audit log.
    pub const ACKED_NEVER_LOST: &str = "acknowledged-command-never-lost";
    /// After the faults heal, every member and router reaches the same
    /// generation within the bound.
    pub const CONVERGE_AFTER_HEAL: &str = "routers-converge-after-heal";
    /// Every member's audit chain verifies, and all members hold the same one.
    pub const AUDIT_CHAIN_VERIFIES: &str = "audit-chain-verifies";
    /// A crashed node starts again from what its disk kept.
    pub const RESTARTS_FROM_DISK: &str = "node-restarts-from-its-disk";
    /// A member restarted into a calm cluster with a live leader applies
    /// what was committed at its restart within the rejoin bound (2 s),
    /// although its peers still held connections to its previous life.
    pub const REJOIN_WITHIN_BOUND: &str = "restarted-member-rejoins-within-bound";
    /// A member returning to a calm cluster with a live leader moves no term.
    pub const RETURN_MOVES_NO_TERM: &str = "returning-member-moves-no-term";
    /// Carrying out a member's plan (`deploy::reconcile::plan`) leaves
    /// nothing more to do: planning again asks for no action.
    pub const PLAN_SETTLES: &str = "plan-settles";
    /// Every autoscaler decision is within the revision's committed
    /// `min_instances..=max_instances`, and not below
    /// `min_instances_while_active` while requests arrive.
    pub const SCALE_WITHIN_BOUNDS: &str = "scale-decision-within-bounds";
    /// After its plan, a member runs exactly its placed share of each
    /// warming or ready revision, keeps a draining one only while draining,
    /// and runs nothing else.
    pub const MEMBER_RUNS_ITS_PLACEMENT: &str = "member-runs-its-placement";
    /// The rollout controller advances an analysis step only on a window
    /// of at least `min_requests` candidate requests that the routers
    /// really answered while the step was committed (give or take the
    /// gossip's lag): never on too little data, nor on data counted twice
    /// or from before the step.
    pub const ROLLOUT_ADVANCES_ON_ENOUGH_DATA: &str = "rollout-never-advances-on-too-little-data";
    /// The entry that aborts or rolls back a rollout sends every router
    /// 100 % to the stable revision.
    pub const ROLLOUT_ABORT_IS_TOTAL: &str = "after-an-abort-every-router-serves-100%-stable";
    /// A rollout's steps go one at a time, in order, through leader changes
    /// and retries: none skipped, none repeated.
    pub const ROLLOUT_STEPS_IN_ORDER: &str = "rollout-never-skips-or-repeats-a-step";
}

/// Why a rollout's history breaks [`names::ROLLOUT_STEPS_IN_ORDER`], if it
/// does: every event keeps the step, but an advance (or a person's resume
/// of a manual step) goes to the next one, or promotes from the last.
pub fn rollout_history_problem(rollout: &deploy::rollout::Rollout) -> Option<String> {
    use deploy::rollout::{RolloutState, StepGate};
    let last = u32::try_from(rollout.steps.len().saturating_sub(1)).unwrap_or(u32::MAX);
    for pair in rollout.history.windows(2) {
        let (before, event) = (&pair[0], &pair[1]);
        let gate = rollout.steps.get(before.step as usize).map(|s| s.until);
        let moves =
            event.what == "advanced" || (event.what == "resumed" && gate == Some(StepGate::Manual));
        let expected = if !moves {
            before.step
        } else if event.state == RolloutState::Promoted {
            if before.step != last {
                return Some(format!(
                    "{} by {} at step {} promoted the rollout of {} with steps {}..={last} still to go",
                    event.what,
                    event.by,
                    before.step,
                    rollout.deployment_id,
                    before.step + 1
                ));
            }
            before.step
        } else {
            before.step + 1
        };
        if event.step != expected {
            return Some(format!(
                "{} by {} took the rollout of {} from step {} to step {} (expected {expected})",
                event.what, event.by, rollout.deployment_id, before.step, event.step
            ));
        }
    }
    None
}

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: Duration,
    pub detail: String,
}

/// What a committed (env, generation) looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub etag: String,
    /// Deployment → (split generation, weighted revisions).
    pub splits: BTreeMap<DeploymentId, (u64, BTreeSet<RevisionId>)>,
    pub ready: BTreeSet<RevisionId>,
}

impl Committed {
    fn of(state: &EnvironmentState) -> Self {
        let environment = &state.environment;
        Self {
            etag: state.etag(),
            splits: environment
                .traffic_splits
                .iter()
                .map(|split| {
                    let weighted = split
                        .entries
                        .iter()
                        .filter(|entry| entry.weight_bps > 0)
                        .map(|entry| entry.revision_id)
                        .collect();
                    (split.deployment_id, (split.generation, weighted))
                })
                .collect(),
            ready: environment
                .revisions
                .iter()
                .filter(|r| r.lifecycle == Lifecycle::Ready)
                .map(|r| r.revision_id)
                .collect(),
        }
    }
}

/// Where a router's table came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSource {
    Committed,
    /// Only under the planted bug: a state applied ahead of its commit.
    Speculative,
}

/// An answer a router gave, kept for the end-of-run check.
#[derive(Debug, Clone)]
pub struct Served {
    pub node: NodeId,
    pub env: EnvId,
    pub generation: u64,
    pub deployment: DeploymentId,
    pub split_generation: u64,
    pub revision: RevisionId,
    pub at: Duration,
}

/// A write the cluster acknowledged.
#[derive(Debug, Clone)]
pub struct Ack {
    pub key: String,
    pub env: EnvId,
    pub generation: u64,
    pub index: u64,
}

/// Everything the run observed.
pub struct Ledger {
    pub trace: Trace,
    pub violations: Vec<Violation>,
    pub committed: BTreeMap<(EnvId, u64), Committed>,
    /// Per node: the latest applied state of each environment.
    pub applied: BTreeMap<NodeId, BTreeMap<EnvId, EnvironmentState>>,
    pub applied_index: BTreeMap<NodeId, u64>,
    pub tables: BTreeMap<NodeId, BTreeMap<EnvId, (RouteTable, TableSource)>>,
    pub leaders: BTreeMap<u64, NodeId>,
    pub served: Vec<Served>,
    pub acks: Vec<Ack>,
    pub applied_entries: u64,
    /// The load round being answered (the world ends one per step).
    pub round: u64,
    /// Every answer per revision per load round: the ground truth of the
    /// routers' request counts.
    pub answers: BTreeMap<RevisionId, BTreeMap<u64, u64>>,
    /// The round in which each rollout (deployment, start) was first seen
    /// at each step.
    pub step_seen: BTreeMap<(DeploymentId, deploy::Timestamp, u32), u64>,
    /// Rollout advances already checked, by (deployment, start, time).
    pub advances_checked: BTreeSet<(DeploymentId, deploy::Timestamp, deploy::Timestamp)>,
}

impl Ledger {
    pub fn new(trace: Trace) -> Self {
        Self {
            trace,
            violations: Vec::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            applied_index: BTreeMap::new(),
            tables: BTreeMap::new(),
            leaders: BTreeMap::new(),
            served: Vec::new(),
            acks: Vec::new(),
            applied_entries: 0,
            round: 1,
            answers: BTreeMap::new(),
            step_seen: BTreeMap::new(),
            advances_checked: BTreeSet::new(),
        }
    }

    /// A router answered a request with `revision` in this round.
    pub fn answered(&mut self, revision: RevisionId) {
        *self
            .answers
            .entry(revision)
            .or_default()
            .entry(self.round)
            .or_insert(0) += 1;
    }

    /// Ends the current load round; its number.
    pub fn end_round(&mut self) -> u64 {
        self.round += 1;
        self.round - 1
    }

    /// Answers by `revision` in rounds `from..` (to now).
    fn answers_since(&self, revision: RevisionId, from: u64) -> u64 {
        self.answers
            .get(&revision)
            .map_or(0, |rounds| rounds.range(from..).map(|(_, n)| n).sum())
    }

    /// The rollout invariants on a state `node` applied; `single_entry`
    /// when it is the one entry after the node's previous state.
    fn check_rollouts(
        &mut self,
        node: NodeId,
        state: &EnvironmentState,
        previous: Option<&EnvironmentState>,
        single_entry: bool,
    ) {
        for rollout in &state.environment.rollouts {
            let id = (rollout.deployment_id, rollout.started_at);
            let round = self.round;
            self.step_seen
                .entry((id.0, id.1, rollout.step))
                .or_insert(round);
            if let Some(problem) = rollout_history_problem(rollout) {
                self.violate(
                    names::ROLLOUT_STEPS_IN_ORDER,
                    format!("n{node} generation {}: {problem}", state.generation),
                );
            }
            self.check_advances(node, rollout);
            let ended = matches!(
                rollout.state,
                deploy::rollout::RolloutState::Aborted | deploy::rollout::RolloutState::RolledBack
            );
            let was_running = previous
                .and_then(|p| {
                    p.environment
                        .rollouts
                        .iter()
                        .find(|r| r.deployment_id == id.0 && r.started_at == id.1)
                })
                .is_some_and(|r| r.state.is_active());
            if ended && was_running && single_entry {
                let table = RouteTable::build(state);
                let route = table
                    .deployments()
                    .iter()
                    .find(|r| r.deployment_id == rollout.deployment_id);
                let total_stable = route.is_some_and(|route| {
                    route
                        .revisions
                        .iter()
                        .zip(&route.weights_bps)
                        .all(|(revision, weight)| {
                            if *revision == rollout.stable_revision_id {
                                *weight == BASIS_POINTS_TOTAL
                            } else {
                                *weight == 0
                            }
                        })
                        && route.revisions.contains(&rollout.stable_revision_id)
                });
                if !total_stable {
                    self.violate(
                        names::ROLLOUT_ABORT_IS_TOTAL,
                        format!(
                            "n{node} generation {}: the rollout of {} is {} but its router table splits {:?} over {:?}",
                            state.generation,
                            rollout.deployment_id,
                            rollout.state,
                            route.map(|r| r.weights_bps.clone()),
                            route.map(|r| r.revisions.clone())
                        ),
                    );
                }
            }
        }
    }

    /// Every controller advance on an analysis window, once: its window
    /// holds no more candidate requests than the routers answered since
    /// the step began (less the gossip's lag), and at least `min_requests`.
    fn check_advances(&mut self, node: NodeId, rollout: &deploy::rollout::Rollout) {
        let Some(settings) = rollout.analysis.as_ref() else {
            return;
        };
        for event in &rollout.history {
            let Some(record) = event.analysis.as_ref() else {
                continue;
            };
            if event.what != "advanced"
                || !self.advances_checked.insert((
                    rollout.deployment_id,
                    rollout.started_at,
                    event.at,
                ))
            {
                continue;
            }
            let Some(&seen) =
                self.step_seen
                    .get(&(rollout.deployment_id, rollout.started_at, record.step))
            else {
                continue;
            };
            let from = seen.saturating_sub(GOSSIP_LAG_ROUNDS);
            let answered = self.answers_since(rollout.candidate_revision_id, from);
            let counted = record.candidate.requests;
            if counted < settings.min_requests || counted > answered {
                self.violate(
                    names::ROLLOUT_ADVANCES_ON_ENOUGH_DATA,
                    format!(
                        "n{node}: the rollout of {} advanced from step {} on a window of {counted} candidate requests (min_requests {}), but its routers answered {answered} since the step began",
                        rollout.deployment_id, record.step, settings.min_requests
                    ),
                );
            }
        }
    }

    pub fn violate(&mut self, invariant: &'static str, detail: String) {
        let at = self.trace.elapsed();
        self.trace
            .record(format!("VIOLATION {invariant}: {detail}"));
        self.violations.push(Violation {
            invariant,
            at,
            detail,
        });
    }

    /// A node reports it is leader of `term`.
    pub fn leader(&mut self, term: u64, node: NodeId) {
        match self.leaders.get(&term) {
            Some(other) if *other != node => self.violate(
                names::ONE_LEADER_PER_TERM,
                format!("n{other} and n{node} both lead term {term}"),
            ),
            Some(_) => {}
            None => {
                self.leaders.insert(term, node);
                self.trace.record(format!("n{node} leads term {term}"));
            }
        }
    }

    /// A node applied a committed change (or installed a snapshot).
    pub fn applied(&mut self, change: AppliedChange) {
        self.applied_entries += 1;
        let index = self.applied_index.entry(change.node).or_insert(0);
        let single_entry = *index + 1 == change.index;
        *index = (*index).max(change.index);
        let generation = change.state.as_ref().map(|s| s.generation);
        self.trace.record(format!(
            "n{} applied #{} {} gen={} ok={}",
            change.node,
            change.index,
            change.env,
            generation.map_or_else(|| "-".to_owned(), |g| g.to_string()),
            change.outcome.ok
        ));
        let Some(state) = change.state else {
            if let Some(states) = self.applied.get_mut(&change.node) {
                states.remove(&change.env);
            }
            if let Some(tables) = self.tables.get_mut(&change.node) {
                tables.remove(&change.env);
            }
            return;
        };
        if let Err(error) = state.validate(&change.env) {
            self.violate(
                names::APPLIED_STATE_VALIDATES,
                format!("n{} generation {}: {error}", change.node, state.generation),
            );
        }
        self.check_splits(change.node, &state);
        let previous = self
            .applied
            .get(&change.node)
            .and_then(|states| states.get(&change.env))
            .cloned();
        self.check_rollouts(change.node, &state, previous.as_ref(), single_entry);
        let committed = Committed::of(&state);
        let key = (change.env.clone(), state.generation);
        match self.committed.get(&key) {
            Some(known) if known.etag != committed.etag => self.violate(
                names::REPLICAS_AGREE,
                format!(
                    "n{} applied {} generation {} with ETag {}, another node with {}",
                    change.node, change.env, state.generation, committed.etag, known.etag
                ),
            ),
            Some(_) => {}
            None => {
                self.committed.insert(key, committed);
            }
        }
        self.set_table(
            change.node,
            &change.env,
            RouteTable::build(&state),
            TableSource::Committed,
        );
        self.applied
            .entry(change.node)
            .or_default()
            .insert(change.env, state);
    }

    fn check_splits(&mut self, node: NodeId, state: &EnvironmentState) {
        let environment = &state.environment;
        for split in &environment.traffic_splits {
            for entry in split.entries.iter().filter(|e| e.weight_bps > 0) {
                let lifecycle = environment
                    .revisions
                    .iter()
                    .find(|r| r.revision_id == entry.revision_id)
                    .map(|r| r.lifecycle);
                if lifecycle != Some(Lifecycle::Ready) {
                    self.violate(
                        names::NO_ARCHIVED_REVISION_REFERENCED,
                        format!(
                            "n{node} generation {}: split of {} gives {} bps to {} which is {lifecycle:?}",
                            state.generation,
                            split.deployment_id,
                            entry.weight_bps,
                            entry.revision_id
                        ),
                    );
                }
            }
        }
    }

    /// Replaces a node's router table, checking what every router must hold.
    pub fn set_table(&mut self, node: NodeId, env: &EnvId, table: RouteTable, source: TableSource) {
        for route in table.deployments() {
            let sum: u32 = route.weights_bps.iter().sum();
            if sum != BASIS_POINTS_TOTAL {
                self.violate(
                    names::ROUTER_SPLIT_SUMS,
                    format!(
                        "n{node}'s router splits {} at generation {} into {sum} bps",
                        route.deployment_id,
                        table.generation()
                    ),
                );
            }
        }
        self.tables
            .entry(node)
            .or_default()
            .insert(env.clone(), (table, source));
    }

    /// Checks every served answer against the committed history: run at
    /// the end, when every generation that was ever committed is known.
    pub fn check_served(&mut self) {
        let served = std::mem::take(&mut self.served);
        let mut reported = 0usize;
        for answer in &served {
            let committed = self.committed.get(&(answer.env.clone(), answer.generation));
            let problem = match committed {
                None => Some(format!(
                    "generation {} was never committed",
                    answer.generation
                )),
                Some(state) => match state.splits.get(&answer.deployment) {
                    None => Some("that deployment had no committed split".to_owned()),
                    Some((split_generation, weighted)) => {
                        if *split_generation != answer.split_generation {
                            Some(format!(
                                "the committed split is at split generation {split_generation}, the router's at {}",
                                answer.split_generation
                            ))
                        } else if !weighted.contains(&answer.revision) {
                            Some("the committed split gives that revision no weight".to_owned())
                        } else if !state.ready.contains(&answer.revision) {
                            Some("that revision was not ready in the committed state".to_owned())
                        } else {
                            None
                        }
                    }
                },
            };
            if let Some(problem) = problem {
                // One report per distinct cause keeps a failing run readable.
                reported += 1;
                if reported <= 5 {
                    self.violate(
                        names::ROUTER_SERVES_COMMITTED,
                        format!(
                            "n{} served {} at {:.3}s from generation {}: {problem}",
                            answer.node,
                            answer.revision,
                            answer.at.as_secs_f64(),
                            answer.generation
                        ),
                    );
                }
            }
        }
        self.served = served;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        Ledger::new(Trace::new(false))
    }

    #[test]
    fn two_leaders_in_one_term_are_a_violation_and_one_is_not() {
        let mut ledger = ledger();
        ledger.leader(3, 1);
        ledger.leader(3, 1);
        ledger.leader(4, 2);
        assert!(ledger.violations.is_empty());
        ledger.leader(4, 3);
        assert_eq!(ledger.violations.len(), 1);
        assert_eq!(ledger.violations[0].invariant, names::ONE_LEADER_PER_TERM);
    }

    #[test]
    fn an_answer_from_a_generation_never_committed_is_a_violation() {
        let mut ledger = ledger();
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(1, 1));
        let deployment = DeploymentId::from_ulid(ulid::Ulid::from_parts(2, 2));
        ledger.committed.insert(
            (EnvId::local(), 5),
            Committed {
                etag: "e".to_owned(),
                splits: BTreeMap::from([(deployment, (1, BTreeSet::from([revision])))]),
                ready: BTreeSet::from([revision]),
            },
        );
        let answer = |generation, split_generation| Served {
            node: 1,
            env: EnvId::local(),
            generation,
            deployment,
            split_generation,
            revision,
            at: Duration::ZERO,
        };
        ledger.served = vec![answer(5, 1)];
        ledger.check_served();
        assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);
        ledger.served = vec![answer(6, 1), answer(5, 2)];
        ledger.check_served();
        assert_eq!(ledger.violations.len(), 2);
        assert!(
            ledger
                .violations
                .iter()
                .all(|v| v.invariant == names::ROUTER_SERVES_COMMITTED)
        );
    }
}
