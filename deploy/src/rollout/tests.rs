use proptest::prelude::*;

use super::analysis::{LATENCY_BUCKETS, bucket_of, judge};
use super::*;

fn at(seconds: i64) -> Timestamp {
    chrono::DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
}

fn ids() -> (DeploymentId, RevisionId, RevisionId) {
    let id = |n: u128| ulid::Ulid::from(n);
    (
        DeploymentId::from_ulid(id(1)),
        RevisionId::from_ulid(id(2)),
        RevisionId::from_ulid(id(3)),
    )
}

fn step(weight_bps: u32, until: StepGate) -> RolloutStep {
    RolloutStep { weight_bps, until }
}

fn settings(min_requests: u64) -> AnalysisSettings {
    AnalysisSettings {
        window_seconds: 60,
        min_requests,
        checks: vec![
            MetricCheck::ErrorRate {
                max_bps: 100,
                relative_to_stable: false,
            },
            MetricCheck::P99Latency {
                max_ms: 500,
                relative_to_stable: false,
            },
        ],
        hold_limit_seconds: 600,
        on_hold_limit: HoldLimitAction::Abort,
    }
}

fn rollout(steps: Vec<RolloutStep>, analysis: Option<AnalysisSettings>) -> Rollout {
    let (deployment_id, stable, candidate) = ids();
    Rollout::start(
        RolloutPlan {
            deployment_id,
            stable_revision_id: stable,
            candidate_revision_id: candidate,
            steps,
            analysis,
            stable_grace_seconds: None,
        },
        at(0),
        "alice",
        "k1",
    )
    .expect("valid rollout")
}

/// A window of `requests` with `errors` 5xx, all answered within 5 ms.
fn window(requests: u64, errors: u64) -> WindowCounts {
    let mut buckets = vec![0; LATENCY_BUCKETS];
    buckets[bucket_of(5)] = requests;
    WindowCounts {
        requests,
        server_errors: errors,
        upstream_errors: 0,
        latency_buckets: buckets,
    }
}

fn record(step: u32, candidate: WindowCounts) -> AnalysisRecord {
    AnalysisRecord {
        step,
        window_seconds: 60,
        candidate,
        stable: window(1_000, 0),
    }
}

#[test]
fn too_little_data_holds_and_never_passes() {
    let settings = settings(100);
    assert!(matches!(
        judge(&settings, &window(99, 0), &window(1_000, 0)),
        Verdict::Hold { .. }
    ));
    assert_eq!(
        judge(&settings, &window(100, 0), &window(0, 0)),
        Verdict::Pass
    );
    // Nothing at all is a hold too.
    assert!(matches!(
        judge(
            &settings,
            &WindowCounts::default(),
            &WindowCounts::default()
        ),
        Verdict::Hold { .. }
    ));
}

#[test]
fn an_error_rate_above_the_bound_fails_and_certain_failures_fail_early() {
    let settings = settings(100);
    // 1 % allowed: 2 errors in 100 fail.
    assert!(matches!(
        judge(&settings, &window(100, 2), &window(100, 0)),
        Verdict::Fail { .. }
    ));
    assert_eq!(
        judge(&settings, &window(100, 1), &window(100, 0)),
        Verdict::Pass
    );
    // 10 of 20 requests failed: no 80 clean requests bring that under 1 %
    // of the 100 the step needs.
    assert!(matches!(
        judge(&settings, &window(20, 10), &window(100, 0)),
        Verdict::Fail { .. }
    ));
    // 1 error in 20 could still end within 1 % of 100: hold.
    assert!(matches!(
        judge(&settings, &window(20, 1), &window(100, 0)),
        Verdict::Hold { .. }
    ));
}

#[test]
fn relative_checks_compare_with_the_stable_revision_in_the_same_window() {
    let mut settings = settings(100);
    settings.checks = vec![MetricCheck::ErrorRate {
        max_bps: 50,
        relative_to_stable: true,
    }];
    // Stable at 2 %, candidate at 2.4 %: within +0.5 %.
    assert_eq!(
        judge(&settings, &window(1_000, 24), &window(1_000, 20)),
        Verdict::Pass
    );
    assert!(matches!(
        judge(&settings, &window(1_000, 26), &window(1_000, 20)),
        Verdict::Fail { .. }
    ));
    // A stable revision with too little traffic cannot be compared with.
    assert!(matches!(
        judge(&settings, &window(1_000, 0), &window(10, 0)),
        Verdict::Hold { .. }
    ));
}

#[test]
fn p99_comes_from_the_bucket_that_covers_99_percent() {
    let mut counts = window(1_000, 0);
    // 11 of 1000 slower than 1 s: the p99 is in the 2 s bucket.
    counts.latency_buckets[bucket_of(5)] = 989;
    counts.latency_buckets[bucket_of(1_500)] = 11;
    assert_eq!(counts.p99_ms(), Some(2_000));
    counts.latency_buckets[bucket_of(5)] = 990;
    counts.latency_buckets[bucket_of(1_500)] = 10;
    assert_eq!(counts.p99_ms(), Some(5));
    counts.latency_buckets[bucket_of(5)] = 0;
    counts.latency_buckets[bucket_of(1_000_000)] = 1;
    assert_eq!(counts.p99_ms(), Some(u32::MAX));
    assert!(matches!(
        judge(&settings(1), &counts, &window(1, 0)),
        Verdict::Fail { .. }
    ));
}

#[test]
fn plans_are_refused_with_the_field_at_fault() {
    let bad = |steps: Vec<RolloutStep>, analysis: Option<AnalysisSettings>| match validate_plan(
        &steps,
        analysis.as_ref(),
    ) {
        Err(RolloutError::Invalid { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let pause = StepGate::Pause { seconds: 60 };
    assert_eq!(bad(vec![], None), "steps");
    assert_eq!(
        bad(vec![step(500, pause), step(500, pause)], None),
        "steps[1].weight_bps"
    );
    assert_eq!(
        bad(vec![step(500, pause), step(100, pause)], None),
        "steps[1].weight_bps"
    );
    assert_eq!(bad(vec![step(0, pause)], None), "steps[0].weight_bps");
    assert_eq!(bad(vec![step(10_001, pause)], None), "steps[0].weight_bps");
    assert_eq!(
        bad(vec![step(100, StepGate::Pause { seconds: 0 })], None),
        "steps[0].until.seconds"
    );
    assert_eq!(bad(vec![step(100, StepGate::Analysis)], None), "analysis");
    let mut wide = settings(10);
    wide.window_seconds = 5;
    assert_eq!(
        bad(vec![step(100, StepGate::Analysis)], Some(wide)),
        "analysis.window_seconds"
    );
    let mut none = settings(0);
    none.min_requests = 0;
    assert_eq!(
        bad(vec![step(100, StepGate::Analysis)], Some(none)),
        "analysis.min_requests"
    );
    let mut rate = settings(10);
    rate.checks = vec![MetricCheck::ErrorRate {
        max_bps: 20_000,
        relative_to_stable: false,
    }];
    assert_eq!(
        bad(vec![step(100, StepGate::Analysis)], Some(rate)),
        "analysis.checks[0].max_bps"
    );
    let mut twice = settings(10);
    twice.checks.push(twice.checks[0]);
    assert_eq!(
        bad(vec![step(100, StepGate::Analysis)], Some(twice)),
        "analysis.checks[2]"
    );
}

#[test]
fn unknown_metrics_and_fields_are_refused_when_parsed() {
    let error = serde_json::from_str::<MetricCheck>(r#"{"metric": "cpu", "max_bps": 1}"#)
        .expect_err("unknown metric");
    assert!(
        error.to_string().contains("unknown variant `cpu`"),
        "{error}"
    );
    let error = serde_json::from_str::<RolloutStep>(
        r#"{"weight_bps": 1, "until": {"kind": "pause", "seconds": 1, "extra": 1}}"#,
    )
    .expect_err("unknown field");
    assert!(error.to_string().contains("unknown field"), "{error}");
}

#[test]
fn a_rollout_advances_step_by_step_and_promotes_after_the_last() {
    let mut rollout = rollout(
        vec![
            step(100, StepGate::Pause { seconds: 60 }),
            step(1_000, StepGate::Analysis),
            step(5_000, StepGate::Manual),
        ],
        Some(settings(100)),
    );
    assert_eq!(rollout.candidate_weight_bps(), 100);
    let advance = ControllerDecision::Advance { analysis: None };
    // Not before the pause ends.
    assert!(rollout.decide(0, &advance, at(59)).is_err());
    rollout.decide(0, &advance, at(60)).expect("pause over");
    assert_eq!(
        (rollout.step, rollout.state),
        (1, RolloutState::Progressing)
    );
    // The same decision again is about a step the rollout left.
    assert!(rollout.decide(0, &advance, at(61)).is_err());
    // An analysis step needs a passing window.
    assert!(rollout.decide(1, &advance, at(120)).is_err());
    let thin = ControllerDecision::Advance {
        analysis: Some(record(1, window(50, 0))),
    };
    assert!(
        rollout.decide(1, &thin, at(120)).is_err(),
        "50 < 100 requests"
    );
    let hold = ControllerDecision::Hold {
        analysis: record(1, window(50, 0)),
    };
    rollout.decide(1, &hold, at(120)).expect("hold");
    assert_eq!(rollout.state, RolloutState::Holding);
    let good = ControllerDecision::Advance {
        analysis: Some(record(1, window(500, 1))),
    };
    rollout.decide(1, &good, at(180)).expect("passed");
    // The manual step waits for a person.
    assert_eq!((rollout.step, rollout.state), (2, RolloutState::Paused));
    assert_eq!(rollout.candidate_weight_bps(), 5_000);
    assert!(rollout.decide(2, &advance, at(999)).is_err());
    rollout
        .act(PersonAction::Resume, at(200), "bob", None)
        .expect("resume");
    assert_eq!(rollout.state, RolloutState::Promoted);
    assert_eq!(rollout.candidate_weight_bps(), 10_000);
    let whats: Vec<&str> = rollout.history.iter().map(|e| e.what.as_str()).collect();
    assert_eq!(
        whats,
        ["started", "advanced", "held", "advanced", "resumed"]
    );
    assert_eq!(
        rollout.history[1].by,
        Rollout::controller_actor(rollout.deployment_id)
    );
    // Nothing moves a finished rollout.
    assert!(
        rollout
            .act(PersonAction::Abort, at(300), "bob", None)
            .is_err()
    );
}

#[test]
fn a_failed_window_rolls_back_and_a_hold_past_its_limit_aborts_or_waits() {
    let steps = vec![step(500, StepGate::Analysis)];
    let mut failing = rollout(steps.clone(), Some(settings(100)));
    // A window that passes is no ground for a rollback.
    let passing = ControllerDecision::RollBack {
        analysis: record(0, window(500, 0)),
    };
    assert!(failing.decide(0, &passing, at(60)).is_err());
    let bad = ControllerDecision::RollBack {
        analysis: record(0, window(500, 50)),
    };
    failing.decide(0, &bad, at(60)).expect("rolled back");
    assert_eq!(failing.state, RolloutState::RolledBack);
    assert_eq!(failing.candidate_weight_bps(), 0);

    for (action, expected) in [
        (HoldLimitAction::Abort, RolloutState::RolledBack),
        (HoldLimitAction::Wait, RolloutState::Paused),
    ] {
        let mut analysis = settings(100);
        analysis.on_hold_limit = action;
        let mut held = rollout(steps.clone(), Some(analysis));
        assert!(
            held.decide(0, &ControllerDecision::HoldLimit, at(10_000))
                .is_err(),
            "not holding"
        );
        let hold = ControllerDecision::Hold {
            analysis: record(0, window(3, 0)),
        };
        held.decide(0, &hold, at(60)).expect("hold");
        assert!(
            held.decide(0, &ControllerDecision::HoldLimit, at(659))
                .is_err(),
            "early"
        );
        held.decide(0, &ControllerDecision::HoldLimit, at(660))
            .expect("limit");
        assert_eq!(held.state, expected);
    }
}

#[test]
fn people_pause_resume_promote_and_abort() {
    let steps = vec![
        step(100, StepGate::Pause { seconds: 60 }),
        step(200, StepGate::Pause { seconds: 60 }),
    ];
    let mut rollout = rollout(steps, None);
    rollout
        .act(PersonAction::Pause, at(10), "bob", Some("lunch".into()))
        .expect("pause");
    assert!(
        rollout
            .act(PersonAction::Pause, at(11), "bob", None)
            .is_err()
    );
    // The controller cannot move a paused rollout.
    assert!(
        rollout
            .decide(0, &ControllerDecision::Advance { analysis: None }, at(100))
            .is_err()
    );
    rollout
        .act(PersonAction::Resume, at(100), "bob", None)
        .expect("resume");
    // The pause counts from the resume.
    assert!(
        rollout
            .decide(0, &ControllerDecision::Advance { analysis: None }, at(159))
            .is_err()
    );
    rollout
        .decide(0, &ControllerDecision::Advance { analysis: None }, at(160))
        .expect("advance");
    rollout
        .act(PersonAction::Abort, at(170), "bob", None)
        .expect("abort");
    assert_eq!(rollout.state, RolloutState::Aborted);
    assert_eq!(rollout.candidate_weight_bps(), 0);
}

fn any_gate() -> impl Strategy<Value = StepGate> {
    prop_oneof![
        (1u32..1_000).prop_map(|seconds| StepGate::Pause { seconds }),
        Just(StepGate::Manual),
        Just(StepGate::Analysis),
    ]
}

fn any_decision(step: u32) -> impl Strategy<Value = ControllerDecision> {
    let window = (0u64..400, 0u64..40).prop_map(move |(requests, errors)| {
        record(step, super::tests::window(requests, errors.min(requests)))
    });
    prop_oneof![
        proptest::option::of(window.clone())
            .prop_map(|analysis| ControllerDecision::Advance { analysis }),
        window
            .clone()
            .prop_map(|analysis| ControllerDecision::Hold { analysis }),
        window.prop_map(|analysis| ControllerDecision::RollBack { analysis }),
        Just(ControllerDecision::HoldLimit),
    ]
}

proptest! {
    /// Whatever the controller and people send, in whatever order: the
    /// step only ever moves forward by one, an analysis step is only left
    /// on a window with at least `min_requests`, the candidate's weight is
    /// always the current step's while active and 0 or 10000 after, and a
    /// refused decision changes nothing.
    #[test]
    fn transitions_keep_the_rollout_invariants(
        weights in proptest::collection::btree_set(1u32..=10_000, 1..6),
        gates in proptest::collection::vec(any_gate(), 6),
        script in proptest::collection::vec((0u8..6, 0u32..6, 0i64..2_000), 1..40),
        decisions in proptest::collection::vec(any_decision(0), 40),
    ) {
        let steps: Vec<RolloutStep> = weights
            .iter()
            .zip(&gates)
            .map(|(w, g)| step(*w, *g))
            .collect();
        let mut rollout = rollout(steps, Some(settings(100)));
        let mut now = 0;
        for (index, (kind, step_guess, dt)) in script.into_iter().enumerate() {
            now += dt;
            let before = rollout.clone();
            let result = match kind {
                0 => rollout.act(PersonAction::Pause, at(now), "p", None),
                1 => rollout.act(PersonAction::Resume, at(now), "p", None),
                2 => rollout.act(PersonAction::Promote, at(now), "p", None),
                3 => rollout.act(PersonAction::Abort, at(now), "p", None),
                _ => {
                    let mut decision = decisions[index].clone();
                    // Aim most decisions at the current step.
                    let target = if step_guess < 4 { rollout.step } else { step_guess };
                    match &mut decision {
                        ControllerDecision::Advance { analysis: Some(a) }
                        | ControllerDecision::Hold { analysis: a }
                        | ControllerDecision::RollBack { analysis: a } => a.step = target,
                        _ => {}
                    }
                    rollout.decide(target, &decision, at(now))
                }
            };
            if result.is_err() {
                prop_assert_eq!(&rollout, &before);
                continue;
            }
            prop_assert!(rollout.step == before.step || rollout.step == before.step + 1);
            if rollout.step == before.step + 1 {
                let left = &before.steps[before.step as usize];
                if left.until == StepGate::Analysis {
                    let last = rollout.history.last().expect("history");
                    let analysed = last.analysis.as_ref().expect("an analysis step is left on a window");
                    prop_assert!(analysed.candidate.requests >= 100);
                }
            }
            let weight = rollout.candidate_weight_bps();
            match rollout.state {
                RolloutState::Promoted => prop_assert_eq!(weight, 10_000),
                RolloutState::Aborted | RolloutState::RolledBack => prop_assert_eq!(weight, 0),
                _ => prop_assert_eq!(weight, rollout.steps[rollout.step as usize].weight_bps),
            }
            prop_assert!(rollout.history.len() <= HISTORY_MAX);
        }
    }

    /// Adding members' windows bucket by bucket never loses a request, and
    /// the error rate stays within 0-10000.
    #[test]
    fn windows_add_up(a in (0u64..1_000_000, 0u64..1_000_000), b in (0u64..1_000_000, 0u64..1_000_000)) {
        let mut sum = window(a.0, a.1.min(a.0));
        sum.add(&window(b.0, b.1.min(b.0)));
        prop_assert_eq!(sum.requests, a.0 + b.0);
        prop_assert_eq!(sum.latency_buckets.iter().sum::<u64>(), a.0 + b.0);
        if let Some(rate) = sum.error_rate_bps() {
            prop_assert!(rate <= 10_000);
        }
    }
}

#[test]
fn windows_count_only_differences_never_counts_that_may_predate_the_window() {
    let reading = |requests: u64, errors: u64| window(requests, errors);
    let start = analysis::MemberCounts::from([
        ("n1@1".to_owned(), reading(100, 1)),
        ("n2@1".to_owned(), reading(50, 0)),
        ("n3@1".to_owned(), reading(70, 0)),
    ]);
    let end = analysis::MemberCounts::from([
        // 20 more requests, 2 more errors.
        ("n1@1".to_owned(), reading(120, 3)),
        // n2 restarted under the same name: when its new life began is
        // unknown, so its 5 requests may predate the window: nothing.
        ("n2@1".to_owned(), reading(5, 0)),
        // A member first seen now (joined, or its gossip was late): its
        // counts may predate the window: nothing.
        ("n4@1".to_owned(), reading(8, 1)),
        // n3 vanished: nothing.
    ]);
    let total = analysis::window(&start, &end);
    assert_eq!(total.requests, 20);
    assert_eq!(total.errors(), 2);
    assert_eq!(total.latency_buckets.iter().sum::<u64>(), 20);
    let numbers = total.to_numbers();
    assert_eq!(WindowCounts::from_numbers(&numbers), Some(total));
    assert_eq!(WindowCounts::from_numbers(&[1, 2]), None);
}

#[test]
fn a_finished_window_becomes_the_decision_apply_accepts() {
    let mut rollout = rollout(
        vec![
            step(500, StepGate::Analysis),
            step(5_000, StepGate::Analysis),
        ],
        Some(settings(100)),
    );
    assert!(rollout.analysing());
    // Too little: a hold, and apply takes it.
    let decision = rollout
        .judge_window(record(0, window(10, 0)), at(60))
        .expect("a decision");
    assert!(matches!(decision, ControllerDecision::Hold { .. }));
    rollout.decide(0, &decision, at(60)).expect("hold");
    // Still too little past the hold limit: the limit applies.
    let decision = rollout
        .judge_window(record(0, window(10, 0)), at(660))
        .expect("a decision");
    assert_eq!(decision, ControllerDecision::HoldLimit);
    // Enough and clean: advance.
    let decision = rollout
        .judge_window(record(0, window(500, 0)), at(120))
        .expect("a decision");
    assert!(matches!(decision, ControllerDecision::Advance { .. }));
    rollout.decide(0, &decision, at(120)).expect("advance");
    // Failing: roll back.
    let decision = rollout
        .judge_window(record(1, window(500, 60)), at(180))
        .expect("a decision");
    assert!(matches!(decision, ControllerDecision::RollBack { .. }));
    rollout.decide(1, &decision, at(180)).expect("roll back");
    assert!(!rollout.analysing());
    assert_eq!(
        rollout.judge_window(record(1, window(500, 0)), at(200)),
        None
    );
}

#[test]
fn the_stable_grace_defaults_and_is_bounded() {
    assert_eq!(validate_grace(None), Ok(STABLE_GRACE_SECONDS_DEFAULT));
    assert_eq!(validate_grace(Some(0)), Ok(0));
    assert!(matches!(
        validate_grace(Some(STABLE_GRACE_SECONDS_MAX + 1)),
        Err(RolloutError::Invalid { field, .. }) if field == "stable_grace_seconds"
    ));
}

/// Every member's readings of one revision: `(member, requests, errors)`.
fn readings(members: &[(&str, u64, u64)]) -> analysis::MemberCounts {
    members
        .iter()
        .map(|(member, requests, errors)| ((*member).to_owned(), window(*requests, *errors)))
        .collect()
}

#[test]
fn the_controller_advances_a_pause_step_only_once_its_time_is_up() {
    let rollout = rollout(
        vec![
            step(1_000, StepGate::Pause { seconds: 30 }),
            step(5_000, StepGate::Manual),
        ],
        None,
    );
    let mut controller = controller::Controller::new();
    let none = |_| analysis::MemberCounts::new();
    let early = controller.tick(std::slice::from_ref(&rollout), at(29), 0, none);
    assert!(early.decisions.is_empty());
    let due = controller.tick(std::slice::from_ref(&rollout), at(30), 1_000, none);
    assert_eq!(due.decisions.len(), 1);
    assert_eq!(due.decisions[0].step, 0);
    assert_eq!(
        due.decisions[0].decision,
        ControllerDecision::Advance { analysis: None }
    );
    // A manual step is never ended by the controller.
    let mut at_manual = rollout.clone();
    at_manual
        .decide(0, &due.decisions[0].decision, at(30))
        .expect("advance");
    let later = controller.tick(&[at_manual], at(10_000), 2_000, none);
    assert!(later.decisions.is_empty());
}

#[test]
fn the_controller_judges_whole_windows_of_differences_and_holds_on_too_little() {
    let mut rollout = rollout(
        vec![
            step(1_000, StepGate::Analysis),
            step(5_000, StepGate::Analysis),
        ],
        Some(settings(100)),
    );
    let (_, stable, candidate) = ids();
    let mut controller = controller::Controller::new();
    // The first look opens the window; counts before it never count.
    let reading = |c: u64, s: u64| {
        move |revision: RevisionId| {
            if revision == candidate {
                readings(&[("n1@1", c, 0)])
            } else if revision == stable {
                readings(&[("n1@1", s, 0)])
            } else {
                analysis::MemberCounts::new()
            }
        }
    };
    let opened = controller.tick(
        std::slice::from_ref(&rollout),
        at(1),
        0,
        reading(5_000, 50_000),
    );
    assert!(opened.decisions.is_empty() && opened.judged.is_empty());
    // Mid-window, a clean window decides nothing.
    let mid = controller.tick(
        std::slice::from_ref(&rollout),
        at(31),
        30_000,
        reading(5_050, 50_500),
    );
    assert!(mid.decisions.is_empty());
    // At the end: 99 candidate requests in the window: a hold.
    let end = controller.tick(
        std::slice::from_ref(&rollout),
        at(61),
        60_000,
        reading(5_099, 51_000),
    );
    assert_eq!(end.judged.len(), 1);
    assert_eq!(end.judged[0].1.candidate.requests, 99);
    let [planned] = end.decisions.as_slice() else {
        panic!("one decision, got {:?}", end.decisions);
    };
    assert!(matches!(planned.decision, ControllerDecision::Hold { .. }));
    rollout
        .decide(planned.step, &planned.decision, at(61))
        .expect("hold");
    // The next window starts at the last reading; a hold the rollout
    // already records is judged but not written again.
    let again = controller.tick(
        std::slice::from_ref(&rollout),
        at(121),
        120_000,
        reading(5_150, 52_000),
    );
    assert_eq!(again.judged[0].1.candidate.requests, 51);
    assert!(again.decisions.is_empty());
    // Enough clean requests: advance, and apply takes it.
    let pass = controller.tick(
        std::slice::from_ref(&rollout),
        at(181),
        180_000,
        reading(5_300, 53_000),
    );
    let [planned] = pass.decisions.as_slice() else {
        panic!("one decision, got {:?}", pass.decisions);
    };
    assert!(matches!(
        planned.decision,
        ControllerDecision::Advance { .. }
    ));
    rollout
        .decide(planned.step, &planned.decision, at(181))
        .expect("advance");
    assert_eq!(rollout.step, 1);
    // The new step opens a new window: nothing judged on the first look.
    let fresh = controller.tick(
        std::slice::from_ref(&rollout),
        at(182),
        181_000,
        reading(5_400, 54_000),
    );
    assert!(fresh.decisions.is_empty() && fresh.judged.is_empty());
}

#[test]
fn the_controller_rolls_back_as_soon_as_a_window_fails_and_apply_accepts_the_part_window() {
    let mut rollout = rollout(vec![step(1_000, StepGate::Analysis)], Some(settings(100)));
    let (_, _, candidate) = ids();
    let mut controller = controller::Controller::new();
    let reading = |c: u64, e: u64| {
        move |revision: RevisionId| {
            if revision == candidate {
                readings(&[("n1@1", c, e), ("n2@1", c, e)])
            } else {
                analysis::MemberCounts::new()
            }
        }
    };
    controller.tick(std::slice::from_ref(&rollout), at(0), 0, reading(0, 0));
    // 12 s in: 2 × 10 errors in 2 × 60 requests already break 1 % of 100.
    let failed = controller.tick(
        std::slice::from_ref(&rollout),
        at(12),
        11_500,
        reading(60, 10),
    );
    let [planned] = failed.decisions.as_slice() else {
        panic!("one decision, got {:?}", failed.decisions);
    };
    let ControllerDecision::RollBack { analysis } = &planned.decision else {
        panic!("a roll-back, got {:?}", planned.decision);
    };
    assert_eq!(analysis.window_seconds, 12);
    assert_eq!(analysis.candidate.requests, 120);
    rollout
        .decide(planned.step, &planned.decision, at(12))
        .expect("an early failure is accepted");
    assert_eq!(rollout.state, RolloutState::RolledBack);
    assert_eq!(rollout.candidate_weight_bps(), 0);
}

#[test]
fn apply_refuses_a_part_window_for_anything_but_a_failure() {
    let mut rollout = rollout(vec![step(1_000, StepGate::Analysis)], Some(settings(100)));
    let mut short = record(0, window(500, 0));
    short.window_seconds = 30;
    let advance = ControllerDecision::Advance {
        analysis: Some(short.clone()),
    };
    assert!(matches!(
        rollout.decide(0, &advance, at(30)),
        Err(RolloutError::Invalid { field, .. }) if field == "analysis.window_seconds"
    ));
    let mut long = record(0, window(500, 60));
    long.window_seconds = 61;
    let too_long = ControllerDecision::RollBack { analysis: long };
    assert!(matches!(
        rollout.decide(0, &too_long, at(61)),
        Err(RolloutError::Invalid { field, .. }) if field == "analysis.window_seconds"
    ));
    assert_eq!(rollout.state, RolloutState::Progressing);
}

#[test]
fn a_new_controller_or_a_forgotten_window_starts_over_and_never_judges_at_once() {
    let rollout = rollout(vec![step(1_000, StepGate::Analysis)], Some(settings(10)));
    let many = |_| readings(&[("n1@1", 1_000_000, 0)]);
    let mut controller = controller::Controller::new();
    controller.tick(std::slice::from_ref(&rollout), at(0), 0, many);
    assert!(controller.window_open(rollout.deployment_id));
    controller.forget();
    // A leader that just took over: its first look only opens a window,
    // whatever the members counted before.
    let first = controller.tick(std::slice::from_ref(&rollout), at(100), 100_000, many);
    assert!(first.decisions.is_empty() && first.judged.is_empty());
}
