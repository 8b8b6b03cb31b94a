//! What a node does about a committed state, as a pure function: [`plan`]
//! takes the committed state, the revisions this node runs and which
//! bundles are here, and returns the [`Action`]s to take. No clock, no
//! files, no actors: the node's environment actor (`actors`) gathers the
//! inputs and carries out the actions; unit tests and the simulator (`sim`,
//! on every member of every seed) check the decisions themselves. It lives
//! here, beside the leader's `placement`, so that the simulator runs it
//! without building the actors.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::RevisionId;
use crate::lifecycle::Lifecycle;
use crate::revision::Revision;
use crate::state::EnvironmentState;

/// How many of a revision's instances this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// All of them: a single node, which runs everything it stages.
    All,
    /// The number the cluster leader placed here.
    Placed(u32),
}

/// Why a revision actor runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// The revision is `warming`: report ready or failed.
    Warm,
    /// The revision is already `ready` (the node restarted): just run it.
    Run,
}

/// Which node is deciding, and how instances come to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRole {
    /// A single node: it runs every revision it stages, in full.
    Single,
    /// A cluster member: it runs what the leader placed on `node_name`.
    Member { node_name: String },
}

impl NodeRole {
    /// This node's share of `revision`'s instances, or `None` when it runs
    /// none (a cluster member waits for the leader's placement).
    pub fn share(&self, revision: &Revision) -> Option<Share> {
        let Self::Member { node_name } = self else {
            return Some(Share::All);
        };
        let placed = revision
            .placement
            .iter()
            .filter(|node| *node == node_name)
            .count();
        let placed = u32::try_from(placed).unwrap_or(u32::MAX);
        (placed > 0).then_some(Share::Placed(placed))
    }
}

impl Share {
    /// How many instances this share of `revision` is: all of its current
    /// count (which the autoscaler moves), or the number placed here.
    pub fn count(self, revision: &Revision) -> u32 {
        match self {
            Self::All => revision.instance_count().unwrap_or(0),
            Self::Placed(count) => count,
        }
    }
}

/// A revision this node runs, as far as the plan is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Runs {
    /// The share its actor was started with.
    pub share: Share,
    /// The instances it was last asked to run here; another count resizes
    /// it, keeping the instances that stay.
    pub instances: u32,
    /// A drain was already asked for.
    pub draining: bool,
}

impl Runs {
    /// Records a [`Action::Resize`] carried out: `instances` run now, and a
    /// placed share is that many.
    pub fn resize(&mut self, instances: u32) {
        self.instances = instances;
        if let Share::Placed(_) = self.share {
            self.share = Share::Placed(instances);
        }
    }
}

/// Why a revision actor is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// None of its instances is placed here any more.
    PlacementChanged,
    /// The revision no longer runs (archived, failed, drained, removed).
    NoLongerRuns,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Stop the revision's actor (and with it its instances).
    Stop {
        revision: RevisionId,
        reason: StopReason,
    },
    /// Start a revision actor for `share` of its instances.
    Start {
        revision: RevisionId,
        share: Share,
        goal: Goal,
    },
    /// Change how many instances a running revision has here (the
    /// autoscaler moved its count, or the leader placed a different number
    /// here): the instances that stay keep serving.
    Resize {
        revision: RevisionId,
        instances: u32,
    },
    /// Its bundle is not here: bring it from another member, then plan again.
    FetchBundle { revision: RevisionId },
    /// Ask the revision's actor to drain.
    Drain {
        revision: RevisionId,
        drain_seconds: u32,
    },
    /// Nothing runs a draining revision here (the node restarted mid-drain):
    /// report the drain over.
    ReportDrained { revision: RevisionId },
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub state: &'a EnvironmentState,
    pub running: &'a BTreeMap<RevisionId, Runs>,
    pub role: &'a NodeRole,
    /// Revisions whose extracted bundle is on this node.
    pub bundles_here: &'a BTreeSet<RevisionId>,
    /// Whether a missing bundle can be fetched from another member. When it
    /// cannot, the revision actor is started anyway and reports what is
    /// missing.
    pub bundles_fetchable: bool,
}

/// Whether a revision in `lifecycle` has instances running.
pub fn wants_instances(lifecycle: Lifecycle) -> bool {
    matches!(
        lifecycle,
        Lifecycle::Warming | Lifecycle::Ready | Lifecycle::Draining
    )
}

/// The actions that bring what runs here in line with the committed state.
pub fn plan(input: &PlanInput<'_>) -> Vec<Action> {
    let mut running = input.running.clone();
    let mut actions = Vec::new();
    for revision in &input.state.environment.revisions {
        if revision.runtime_instances.is_some() {
            plan_revision(input, revision, &mut running, &mut actions);
        }
    }
    // Stop what no longer needs to run.
    let keep: BTreeSet<RevisionId> = input
        .state
        .environment
        .revisions
        .iter()
        .filter(|r| r.runtime_instances.is_some() && wants_instances(r.lifecycle))
        .map(|r| r.revision_id)
        .collect();
    actions.extend(
        running
            .keys()
            .filter(|id| !keep.contains(id))
            .map(|&revision| Action::Stop {
                revision,
                reason: StopReason::NoLongerRuns,
            }),
    );
    actions
}

fn plan_revision(
    input: &PlanInput<'_>,
    revision: &Revision,
    running: &mut BTreeMap<RevisionId, Runs>,
    actions: &mut Vec<Action>,
) {
    let id = revision.revision_id;
    let share = input.role.share(revision);
    let serving = matches!(revision.lifecycle, Lifecycle::Warming | Lifecycle::Ready);
    if serving && let Some(runs) = running.get_mut(&id) {
        match share {
            // Placed elsewhere now: stop it here.
            None => {
                running.remove(&id);
                actions.push(Action::Stop {
                    revision: id,
                    reason: StopReason::PlacementChanged,
                });
            }
            // Another count here: resize, keeping what runs.
            Some(share) if share.count(revision) != runs.instances => {
                let instances = share.count(revision);
                runs.resize(instances);
                actions.push(Action::Resize {
                    revision: id,
                    instances,
                });
            }
            Some(_) => {}
        }
    }
    if revision.lifecycle == Lifecycle::Draining {
        // A drain happens wherever the revision runs, placed here or not:
        // the leader may have moved its placement while it served (a member
        // restarted), and instances left running undrained would be cut
        // when another member's report makes the revision inactive.
        match running.get_mut(&id) {
            Some(runs) if !runs.draining => {
                runs.draining = true;
                actions.push(Action::Drain {
                    revision: id,
                    drain_seconds: revision.drain_seconds,
                });
            }
            Some(_) => {}
            // Nothing runs it here: a node it was placed on reports the
            // drain over (it restarted mid-drain, or never started it).
            None if share.is_some() => actions.push(Action::ReportDrained { revision: id }),
            None => {}
        }
        return;
    }
    let Some(share) = share else {
        return;
    };
    // Serving, with no instances here yet: start them (after the bundle).
    if !serving || running.contains_key(&id) {
        return;
    }
    if !input.bundles_here.contains(&id) && input.bundles_fetchable {
        actions.push(Action::FetchBundle { revision: id });
        return;
    }
    let goal = if revision.lifecycle == Lifecycle::Warming {
        Goal::Warm
    } else {
        Goal::Run
    };
    running.insert(
        id,
        Runs {
            share,
            instances: share.count(revision),
            draining: false,
        },
    );
    actions.push(Action::Start {
        revision: id,
        share,
        goal,
    });
}

#[cfg(test)]
mod tests;
