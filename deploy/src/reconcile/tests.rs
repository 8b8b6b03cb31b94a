//! The environment actor's decisions, checked without actors or files.

use super::*;
use crate::environment::Environment;
use crate::ids::{DeploymentId, EnvId};

fn id(n: u64) -> RevisionId {
    RevisionId::from_ulid(ulid::Ulid::from_parts(1, u128::from(n)))
}

fn revision(n: u64, lifecycle: Lifecycle, placement: &[&str]) -> Revision {
    let at = chrono::DateTime::UNIX_EPOCH;
    Revision {
        schema: crate::revision::REVISION_SCHEMA.to_owned(),
        revision_id: id(n),
        env_id: EnvId::local(),
        bundle_id: "shop".parse().expect("bundle id"),
        deployment_id: DeploymentId::from_ulid(ulid::Ulid::from_parts(2, 1)),
        sequence: n,
        created_at: at,
        bundle_digest: "sha256:ab".parse().expect("digest"),
        bundle_source_uri: None,
        pack_list: Vec::new(),
        pack_list_lock_ref: String::new(),
        pack_config_refs: Vec::new(),
        config_digest: "sha256:cd".parse().expect("digest"),
        signature_sidecar_ref: String::new(),
        lifecycle,
        staged_at: None,
        warmed_at: None,
        lifecycle_changed_at: None,
        failure_reason: None,
        drain_seconds: 7,
        abort_metrics: Vec::new(),
        runtime_instances: Some(2),
        placement: placement.iter().map(|node| (*node).to_owned()).collect(),
        scaling: None,
        desired_instances: None,
        secret_pins: Vec::new(),
        deployer: None,
        pack_configs: Vec::new(),
        config_reload: Default::default(),
    }
}

fn state(revisions: Vec<Revision>) -> EnvironmentState {
    let mut state = EnvironmentState::new(
        Environment::new(EnvId::local(), "Local".to_owned()),
        chrono::DateTime::UNIX_EPOCH,
    );
    state.environment.revisions = revisions;
    state
}

fn member(name: &str) -> NodeRole {
    NodeRole::Member {
        node_name: name.to_owned(),
    }
}

struct Case {
    state: EnvironmentState,
    running: BTreeMap<RevisionId, Runs>,
    role: NodeRole,
    bundles_here: BTreeSet<RevisionId>,
    bundles_fetchable: bool,
}

impl Case {
    fn single(revisions: Vec<Revision>) -> Self {
        let bundles_here = revisions.iter().map(|r| r.revision_id).collect();
        Self {
            state: state(revisions),
            running: BTreeMap::new(),
            role: NodeRole::Single,
            bundles_here,
            bundles_fetchable: false,
        }
    }

    fn running(mut self, n: u64, share: Share, draining: bool) -> Self {
        let instances = self
            .state
            .environment
            .revision(id(n))
            .map_or(0, |revision| share.count(revision));
        self.running.insert(
            id(n),
            Runs {
                share,
                instances,
                draining,
            },
        );
        self
    }

    fn plan(&self) -> Vec<Action> {
        plan(&PlanInput {
            state: &self.state,
            running: &self.running,
            role: &self.role,
            bundles_here: &self.bundles_here,
            bundles_fetchable: self.bundles_fetchable,
        })
    }
}

#[test]
fn a_single_node_starts_warming_and_ready_revisions_in_full() {
    // Proves: on a single node a warming revision starts with the goal to
    // warm, a ready one (after a restart) with the goal to run, both with
    // every instance; staged and archived revisions start nothing.
    let case = Case::single(vec![
        revision(1, Lifecycle::Warming, &[]),
        revision(2, Lifecycle::Ready, &[]),
        revision(3, Lifecycle::Staged, &[]),
        revision(4, Lifecycle::Archived, &[]),
    ]);
    assert_eq!(
        case.plan(),
        vec![
            Action::Start {
                revision: id(1),
                share: Share::All,
                goal: Goal::Warm
            },
            Action::Start {
                revision: id(2),
                share: Share::All,
                goal: Goal::Run
            },
        ]
    );
}

#[test]
fn what_already_runs_is_left_alone_and_what_no_longer_runs_is_stopped() {
    // Proves: a running ready revision gets no action; a running revision
    // that was archived, or that left the state, is stopped.
    let case = Case::single(vec![
        revision(1, Lifecycle::Ready, &[]),
        revision(2, Lifecycle::Archived, &[]),
    ])
    .running(1, Share::All, false)
    .running(2, Share::All, false)
    .running(9, Share::All, false);
    assert_eq!(
        case.plan(),
        vec![
            Action::Stop {
                revision: id(2),
                reason: StopReason::NoLongerRuns
            },
            Action::Stop {
                revision: id(9),
                reason: StopReason::NoLongerRuns
            },
        ]
    );
}

#[test]
fn a_draining_revision_is_drained_once_or_reported_drained_when_nothing_runs() {
    // Proves: draining a running revision asks its actor once (not again
    // while it drains), and a draining revision with nothing running here
    // (the node restarted mid-drain) is reported drained.
    let running =
        Case::single(vec![revision(1, Lifecycle::Draining, &[])]).running(1, Share::All, false);
    assert_eq!(
        running.plan(),
        vec![Action::Drain {
            revision: id(1),
            drain_seconds: 7
        }]
    );
    let already =
        Case::single(vec![revision(1, Lifecycle::Draining, &[])]).running(1, Share::All, true);
    assert_eq!(already.plan(), Vec::new());
    let nothing = Case::single(vec![revision(1, Lifecycle::Draining, &[])]);
    assert_eq!(
        nothing.plan(),
        vec![Action::ReportDrained { revision: id(1) }]
    );
}

#[test]
fn a_member_drains_what_it_runs_even_when_the_placement_moved_away() {
    // Proves: found by the simulator's soak (seeds 43, 221, 326, 486 of
    // 1..=500, `member-runs-its-placement`): the leader moved a revision's
    // placement from n1 to n3 while it served, the operator then drained
    // it, and n1 kept its instances running undrained while n3, running
    // nothing, reported the drain over at once. n1 must drain what it runs;
    // only a member it is placed on reports a drain with nothing running.
    let mut moved = Case::single(vec![revision(1, Lifecycle::Draining, &["n3"])]).running(
        1,
        Share::Placed(1),
        false,
    );
    moved.role = member("n1");
    assert_eq!(
        moved.plan(),
        vec![Action::Drain {
            revision: id(1),
            drain_seconds: 7
        }]
    );
    let mut idle_elsewhere = Case::single(vec![revision(1, Lifecycle::Draining, &["n3"])]);
    idle_elsewhere.role = member("n1");
    assert_eq!(idle_elsewhere.plan(), Vec::new());
    let mut placed_here = Case::single(vec![revision(1, Lifecycle::Draining, &["n1"])]);
    placed_here.role = member("n1");
    assert_eq!(
        placed_here.plan(),
        vec![Action::ReportDrained { revision: id(1) }]
    );
}

#[test]
fn a_member_runs_only_its_placed_share_and_resizes_when_the_placement_changes() {
    // Proves: a cluster member runs as many instances as the leader placed
    // on it, none when placed elsewhere (stopping what it ran), and resizes
    // (keeping what runs) when its count changes.
    let mut case = Case::single(vec![
        revision(1, Lifecycle::Ready, &["n1", "n2", "n1"]),
        revision(2, Lifecycle::Ready, &["n2"]),
        revision(3, Lifecycle::Ready, &["n1"]),
    ])
    .running(2, Share::Placed(1), false)
    .running(3, Share::Placed(2), false);
    case.role = member("n1");
    assert_eq!(
        case.plan(),
        vec![
            Action::Start {
                revision: id(1),
                share: Share::Placed(2),
                goal: Goal::Run
            },
            Action::Stop {
                revision: id(2),
                reason: StopReason::PlacementChanged
            },
            Action::Resize {
                revision: id(3),
                instances: 1
            },
        ]
    );
}

#[test]
fn a_single_node_resizes_a_scaling_revision_to_its_committed_count() {
    // Proves: on a single node, a revision that scales runs its committed
    // count; a new count resizes it (never a restart), the same count asks
    // for nothing, and 0 keeps the actor (the revision stays ready and the
    // router holds its requests until an instance is back).
    let mut scaled = revision(1, Lifecycle::Ready, &[]);
    scaled.scaling = Some(crate::scaling::ScalingSettings::default());
    scaled.desired_instances = Some(3);
    let mut case = Case::single(vec![scaled]);
    assert_eq!(
        case.plan(),
        vec![Action::Start {
            revision: id(1),
            share: Share::All,
            goal: Goal::Run
        }]
    );
    case = case.running(1, Share::All, false);
    assert_eq!(case.running[&id(1)].instances, 3);
    assert_eq!(case.plan(), Vec::new());
    for count in [4, 0, 1] {
        case.running.get_mut(&id(1)).expect("runs").instances = 3;
        case.state.environment.revisions[0].desired_instances = Some(count);
        assert_eq!(
            case.plan(),
            vec![Action::Resize {
                revision: id(1),
                instances: count
            }],
            "to {count}"
        );
    }
}

#[test]
fn a_missing_bundle_is_fetched_when_it_can_be_and_started_anyway_when_not() {
    // Proves: a member without the bundle fetches it instead of starting;
    // a node that cannot fetch starts the revision actor, which reports
    // what is missing.
    let mut case = Case::single(vec![revision(1, Lifecycle::Warming, &["n1"])]);
    case.role = member("n1");
    case.bundles_here.clear();
    case.bundles_fetchable = true;
    assert_eq!(case.plan(), vec![Action::FetchBundle { revision: id(1) }]);
    case.bundles_fetchable = false;
    assert_eq!(
        case.plan(),
        vec![Action::Start {
            revision: id(1),
            share: Share::Placed(1),
            goal: Goal::Warm
        }]
    );
}

#[test]
fn the_plan_of_what_the_plan_started_is_empty() {
    // Proves: carrying out a plan and planning again asks for nothing more
    // (the actor can re-plan on every tick without churning instances).
    let mut case = Case::single(vec![
        revision(1, Lifecycle::Warming, &["n1"]),
        revision(2, Lifecycle::Ready, &["n1", "n1"]),
        revision(3, Lifecycle::Ready, &["n2"]),
    ]);
    case.role = member("n1");
    for action in case.plan() {
        match action {
            Action::Start {
                revision, share, ..
            } => {
                let instances = case
                    .state
                    .environment
                    .revision(revision)
                    .map_or(0, |r| share.count(r));
                case.running.insert(
                    revision,
                    Runs {
                        share,
                        instances,
                        draining: false,
                    },
                );
            }
            Action::Stop { revision, .. } => {
                case.running.remove(&revision);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(case.running.len(), 2);
    assert_eq!(case.plan(), Vec::new());
}
