//! `gtc demo --rollout`: progressive delivery in one command. On the same
//! throwaway node as `gtc demo`, with load running through the router, it
//! runs two rollouts of the example service and follows each in the store
//! that `gtc op rollouts show` reads:
//!
//! 1. a good candidate (v2) that analysis promotes step by step,
//!    10 % → 50 % → 100 %;
//! 2. a bad candidate (v3, answering 500 to a share of its requests through
//!    the example service's `DEMO_FAIL_PERCENT`) that analysis rolls back.
//!
//! For every step it prints the split the load observed and the
//! controller's analysis of the step's window, then the end state and
//! where traffic went afterwards. Every answer of the router names the
//! revision that served it and the state generation it was routed under,
//! and the demo notes the rollout's step at every generation it reads, so
//! answers are attributed to the step that routed them, not to the moment
//! they came back. It exits non-zero, saying why, when the good candidate
//! is not promoted or the bad one not rolled back within
//! [`ROLLOUT_BOUND`], or when a measured figure is off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploy::command::{Command, RolloutStartAnswers};
use deploy::ids::{DeploymentId, EnvId, RevisionId};
use deploy::rollout::analysis::WindowCounts;
use deploy::rollout::{
    AnalysisRecord, AnalysisSettings, HoldLimitAction, MetricCheck, Rollout, RolloutEvent,
    RolloutState, RolloutStep, StepGate, Verdict,
};
use deploy::state::EnvironmentState;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use store::EnvironmentStore;
use tokio::time::Instant;

use crate::context::Context;
use crate::demo_support::{
    HttpClient, build_example_with_env, deploy_two_revisions, fail, request, split, stage_and_warm,
    wait_generation, wait_ready,
};
use crate::error::CliError;
use crate::node_cmd::RunningNode;
use crate::output::outln;

/// How long each rollout may take to end. The good one needs one analysis
/// window per step ([`STEPS_BPS`]: 2 × 10 s) plus a controller tick each,
/// so this leaves room for two more windows on a busy machine.
const ROLLOUT_BOUND: Duration = Duration::from_secs(60);
/// The analysis window: the shortest a rollout accepts, so the demo takes
/// well under a minute.
const WINDOW_SECONDS: u32 = deploy::rollout::WINDOW_SECONDS_MIN;
/// The candidate's weight at each step, in basis points; after the last
/// step passes the rollout is promoted and the candidate serves 100 %.
const STEPS_BPS: [u32; 2] = [1_000, 5_000];
/// Requests the candidate must serve in a window before a verdict. At the
/// first step (10 %) the load brings it about four times as many
/// ([`LOAD_RATE_PER_SECOND`] × 10 % × [`WINDOW_SECONDS`]).
const MIN_REQUESTS: u64 = 100;
/// The candidate may fail at most 1 % of its requests.
const ERROR_RATE_MAX_BPS: u32 = 100;
/// The candidate's p99 latency bound: far above the example service's few
/// milliseconds, so only a real fault fails it, not a busy machine.
const P99_LATENCY_MAX_MS: u32 = 1_000;
/// A step held this long for too little data rolls the rollout back; below
/// [`ROLLOUT_BOUND`], so a starved demo ends with the hold as its reason.
const HOLD_LIMIT_SECONDS: u32 = 40;
/// The share of its requests the bad candidate fails (`DEMO_FAIL_PERCENT`):
/// twenty times the bound, so the first window fails it.
const BAD_FAIL_PERCENT: &str = "20";
/// Requests per second the load sends through the router while a rollout
/// runs: enough for [`MIN_REQUESTS`] at the 10 % step, little enough to
/// leave a small machine room for the node and six instances.
const LOAD_RATE_PER_SECOND: u64 = 400;
/// Concurrent load clients; each sends its share of the rate.
const LOAD_CLIENTS: u64 = 4;
/// How often the demo reads the rollout from the store: well under the
/// controller's tick, so every step change is seen at its generation.
const WATCH_INTERVAL: Duration = Duration::from_millis(50);
/// Answers measured after a rollout ends, to show where traffic went.
const AFTER_ANSWERS: u64 = 400;
/// How long the router may take to serve a committed generation, and the
/// load to bring [`AFTER_ANSWERS`] answers.
const ROUTER_BOUND: Duration = Duration::from_secs(10);
/// A step's observed candidate share may differ from its weight by this
/// much (points): the router's pick is exact per generation, and only the
/// answers in flight while the split changes can land on either side.
const SPLIT_TOLERANCE_PERCENT: f64 = 1.0;

/// Runs the two rollouts on `node`, whose store is at `store_root`; `work`
/// is the demo's temporary folder and `bundles` the example's v1 and v2.
pub(crate) async fn drive(
    node: &RunningNode,
    store_root: &Path,
    work: &Path,
    bundles: &[PathBuf; 2],
    service: &Path,
) -> Result<i32, CliError> {
    let context = Context::open(Some(store_root.to_owned()))?;
    let bad_bundle =
        build_example_with_env(work, "v3", service, &[(FAIL_PERCENT_VAR, BAD_FAIL_PERCENT)])?;
    outln!(
        "built a third revision, v3, that fails {BAD_FAIL_PERCENT} % of its requests ({FAIL_PERCENT_VAR}={BAD_FAIL_PERCENT}): {}",
        bad_bundle.display()
    );
    let (deployment, [v1, v2]) = blocking(|| deploy_two_revisions(&context, bundles))?;
    let v3 = blocking(|| stage_and_warm(&context, deployment, &bad_bundle))?;
    outln!(
        "deployment {deployment}: revision v1 {v1}, v2 {v2}, v3 {v3}; warming (2 instances each)..."
    );
    wait_ready(&context, &[v1, v2, v3]).await?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let addr = node.router_addr;
    let generation = blocking(|| {
        split(
            &context,
            deployment,
            "demo-rollout-stable",
            &[(v1, 100), (v2, 0)],
        )
    })?;
    wait_generation(&client, addr, generation).await?;
    outln!("v1 serves 100 % (generation {generation})");

    let load = Load::start(&client, addr);
    outln!(
        "load: {LOAD_RATE_PER_SECOND} requests/s from {LOAD_CLIENTS} clients through the router at http://{addr}"
    );
    let labels = Labels(vec![(v1, "v1"), (v2, "v2"), (v3, "v3")]);
    let good = Case {
        title: "rollout 1: the good candidate",
        deployment,
        stable: v1,
        candidate: v2,
        idempotency_key: "demo-rollout-good",
        expected: RolloutState::Promoted,
    };
    let mut problems = follow(&context, &load, &labels, &good).await?;
    if problems.is_empty() {
        let bad = Case {
            title: "rollout 2: the bad candidate",
            deployment,
            stable: v2,
            candidate: v3,
            idempotency_key: "demo-rollout-bad",
            expected: RolloutState::RolledBack,
        };
        problems.extend(follow(&context, &load, &labels, &bad).await?);
    } else {
        problems.push("the bad candidate's rollout was not started".to_owned());
    }
    let unanswered = load.stop().await;
    if unanswered > 0 {
        problems.push(format!(
            "{unanswered} requests of the load got no answer from a revision"
        ));
    }
    if problems.is_empty() {
        outln!("\ndemo OK: v2 was promoted step by step, v3 was rolled back by its analysis");
        return Ok(0);
    }
    outln!("\ndemo FAILED:");
    for problem in &problems {
        outln!("  - {problem}");
    }
    Ok(crate::error::EXIT_FAILURE)
}

/// The example service's switch that makes it fail a share of requests
/// (`examples/demo-service/src/config.rs`, `FAIL_PERCENT_VAR`).
const FAIL_PERCENT_VAR: &str = "DEMO_FAIL_PERCENT";

/// One rollout the demo runs and what it must end as.
struct Case {
    title: &'static str,
    deployment: DeploymentId,
    stable: RevisionId,
    candidate: RevisionId,
    /// Also tells this rollout apart from the deployment's earlier ones.
    idempotency_key: &'static str,
    expected: RolloutState,
}

/// The demo's names of the revisions (v1, v2, v3).
struct Labels(Vec<(RevisionId, &'static str)>);

impl Labels {
    fn of(&self, revision: &str) -> String {
        self.0
            .iter()
            .find(|(id, _)| id.to_string() == revision)
            .map_or_else(|| revision.to_owned(), |(_, label)| (*label).to_owned())
    }

    fn of_id(&self, revision: RevisionId) -> String {
        self.of(&revision.to_string())
    }
}

/// Runs a blocking store call or submit (through the node's admin API)
/// without holding up the load's tasks on this worker.
fn blocking<T>(call: impl FnOnce() -> Result<T, CliError>) -> Result<T, CliError> {
    tokio::task::block_in_place(call)
}

fn load_state(context: &Context) -> Result<EnvironmentState, CliError> {
    blocking(|| {
        context
            .store
            .load(&EnvId::local())?
            .ok_or_else(|| fail("the local environment vanished from the demo's store"))
    })
}

/// Starts `case`'s rollout, follows it until it ends or [`ROLLOUT_BOUND`]
/// passes, printing each step; returns what went wrong (nothing when the
/// rollout ended as expected with every figure in place).
async fn follow(
    context: &Context,
    load: &Load,
    labels: &Labels,
    case: &Case,
) -> Result<Vec<String>, CliError> {
    let settings = analysis_settings();
    let (stable, candidate) = (labels.of_id(case.stable), labels.of_id(case.candidate));
    let steps: Vec<String> = STEPS_BPS.iter().map(|bps| percent_bps(*bps)).collect();
    outln!(
        "\n{}: {candidate} replaces {stable} in steps of {}, each until a {} s analysis window passes, then 100 %\n  (at least {} {candidate} requests, error rate ≤ {}, p99 ≤ {} ms; a failed check sends 100 % back to {stable})",
        case.title,
        steps.join(" → "),
        settings.window_seconds,
        settings.min_requests,
        percent_bps(ERROR_RATE_MAX_BPS),
        P99_LATENCY_MAX_MS
    );
    let started_at = Instant::now();
    let started = blocking(|| {
        context.submit(Command::RolloutStart(RolloutStartAnswers {
            environment_id: EnvId::local(),
            deployment_id: case.deployment,
            candidate_revision_id: case.candidate,
            stable_revision_id: Some(case.stable),
            steps: STEPS_BPS
                .iter()
                .map(|weight_bps| RolloutStep {
                    weight_bps: *weight_bps,
                    until: StepGate::Analysis,
                })
                .collect(),
            analysis: Some(settings.clone()),
            stable_grace_seconds: None,
            idempotency_key: case.idempotency_key.to_owned(),
        }))
    })?;
    let mut timeline = Timeline::default();
    if let Some(generation) = started.generation {
        timeline.note(generation, Phase::Step(0));
    }
    let mut problems = Vec::new();
    let mut printed = 0;
    let ended = loop {
        let state = load_state(context)?;
        let rollout = state
            .environment
            .latest_rollout(case.deployment)
            .filter(|r| r.idempotency_key == case.idempotency_key)
            .ok_or_else(|| {
                fail(format!(
                    "the rollout {} of deployment {} is not in the store after its start",
                    case.idempotency_key, case.deployment
                ))
            })?;
        timeline.note(state.generation, Phase::of(rollout));
        for event in rollout.history.iter().skip(printed) {
            let follow_up = StepReport {
                load,
                labels,
                timeline: &timeline,
                rollout,
                generation: state.generation,
            };
            problems.extend(follow_up.event(event).await);
        }
        printed = rollout.history.len();
        if !rollout.state.is_active() {
            break (rollout.clone(), state.generation);
        }
        if started_at.elapsed() > ROLLOUT_BOUND {
            let last = rollout.history.last();
            problems.push(format!(
                "{candidate} was not {} within {} s: the rollout is {} at step {} of {}{}",
                case.expected,
                ROLLOUT_BOUND.as_secs(),
                rollout.state,
                rollout.step + 1,
                rollout.steps.len(),
                last.and_then(|e| e.reason.as_deref())
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            ));
            return Ok(problems);
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    };
    let (rollout, generation) = ended;
    outln!(
        "  {} after {:.1} s",
        rollout.state,
        started_at.elapsed().as_secs_f64()
    );
    problems.extend(afterwards(load, labels, &timeline, &rollout, generation).await);
    if rollout.state != case.expected {
        let last = rollout.history.last().map_or_else(
            || "no history".to_owned(),
            |event| {
                format!(
                    "{} by {}{}",
                    event.what,
                    event.by,
                    event
                        .reason
                        .as_deref()
                        .map(|reason| format!(": {reason}"))
                        .unwrap_or_default()
                )
            },
        );
        problems.push(format!(
            "{candidate} ended {}, not {} (last event: {last})",
            rollout.state, case.expected
        ));
    }
    problems.extend(failures(load, labels, &timeline, case));
    Ok(problems)
}

/// The analysis every step of both rollouts waits for.
fn analysis_settings() -> AnalysisSettings {
    AnalysisSettings {
        window_seconds: WINDOW_SECONDS,
        min_requests: MIN_REQUESTS,
        checks: vec![
            MetricCheck::ErrorRate {
                max_bps: ERROR_RATE_MAX_BPS,
                relative_to_stable: false,
            },
            MetricCheck::P99Latency {
                max_ms: P99_LATENCY_MAX_MS,
                relative_to_stable: false,
            },
        ],
        hold_limit_seconds: HOLD_LIMIT_SECONDS,
        on_hold_limit: HoldLimitAction::Abort,
    }
}

/// What is printed about one history event, with what the demo needs to
/// print it.
struct StepReport<'a> {
    load: &'a Load,
    labels: &'a Labels,
    timeline: &'a Timeline,
    rollout: &'a Rollout,
    /// The state generation the event was read at.
    generation: u64,
}

impl StepReport<'_> {
    /// Prints `event`; returns what is off about it.
    async fn event(&self, event: &RolloutEvent) -> Vec<String> {
        let mut problems = Vec::new();
        // The step this event ended: the one its window judged (a held step
        // goes on), or the current one when the rollout ended without a
        // window (a hold limit, a person). Its split is complete once the
        // router serves what came after it.
        let ended_step = match &event.analysis {
            Some(record) if event.what != "held" => Some(record.step),
            None if !event.state.is_active() => Some(event.step),
            _ => None,
        };
        if let Some(step) = ended_step {
            if !self.load.reach(self.generation).await {
                problems.push(format!(
                    "the router did not serve generation {} within {} s",
                    self.generation,
                    ROUTER_BOUND.as_secs()
                ));
            }
            problems.extend(self.observed_split(step));
        }
        match &event.analysis {
            Some(record) => self.analysis(record, event),
            None => outln!(
                "  {} by {}{}: {}",
                event.what,
                event.by,
                event
                    .reason
                    .as_deref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default(),
                self.after(event)
            ),
        }
        problems
    }

    /// Where traffic goes after `event`.
    fn after(&self, event: &RolloutEvent) -> String {
        let candidate = self.labels.of_id(self.rollout.candidate_revision_id);
        match event.state {
            RolloutState::Promoted => format!("{candidate} serves 100 %"),
            RolloutState::RolledBack | RolloutState::Aborted => format!(
                "{} serves 100 %",
                self.labels.of_id(self.rollout.stable_revision_id)
            ),
            RolloutState::Progressing | RolloutState::Holding | RolloutState::Paused => {
                let weight = self
                    .rollout
                    .steps
                    .get(event.step as usize)
                    .map_or(0, |s| s.weight_bps);
                format!(
                    "step {} of {}, {candidate} at {}",
                    event.step + 1,
                    self.rollout.steps.len(),
                    percent_bps(weight)
                )
            }
        }
    }

    /// Prints the split the load saw at `step`; returns a problem when it
    /// is off the step's weight.
    fn observed_split(&self, step: u32) -> Option<String> {
        let weight_bps = self.rollout.steps.get(step as usize)?.weight_bps;
        let answers = self.timeline.answers(&self.load.tally(), Phase::Step(step));
        let total: u64 = answers.values().map(|a| a.answered).sum();
        let candidate_id = self.rollout.candidate_revision_id.to_string();
        let shares: Vec<String> = self
            .labelled(&answers)
            .into_iter()
            .map(|(label, a)| format!("{label} {:.2} % ({})", share(a.answered, total), a.answered))
            .collect();
        let failed: Vec<String> = self
            .labelled(&answers)
            .into_iter()
            .filter(|(_, a)| a.failed > 0)
            .map(|(label, a)| format!("{label} {}", a.failed))
            .collect();
        outln!(
            "  step {} of {} ({} at {}): {total} answers: {}; 5xx answers: {}",
            step + 1,
            self.rollout.steps.len(),
            self.labels.of(&candidate_id),
            percent_bps(weight_bps),
            shares.join(", "),
            if failed.is_empty() {
                "0".to_owned()
            } else {
                failed.join(", ")
            }
        );
        let observed = share(answers.get(&candidate_id).map_or(0, |a| a.answered), total);
        let desired = f64::from(weight_bps) / 100.0;
        (total == 0 || (observed - desired).abs() > SPLIT_TOLERANCE_PERCENT).then(|| {
            format!(
                "step {}: the load saw {observed:.2} % of {total} answers from {}, not {desired:.2} %",
                step + 1,
                self.labels.of(&candidate_id)
            )
        })
    }

    /// Prints the controller's window of a step and its verdict, judged by
    /// the same code the controller and `apply` use.
    fn analysis(&self, record: &AnalysisRecord, event: &RolloutEvent) {
        let candidate = self.labels.of_id(self.rollout.candidate_revision_id);
        let stable = self.labels.of_id(self.rollout.stable_revision_id);
        outln!(
            "    analysis of step {} ({} s window): {candidate} {}; {stable} {}",
            record.step + 1,
            record.window_seconds,
            figures(&record.candidate),
            figures(&record.stable)
        );
        let verdict = match self.rollout.analysis.as_ref().map(|s| record.judge(s)) {
            Some(Verdict::Pass) => "pass".to_owned(),
            Some(Verdict::Hold { reason }) => format!("hold ({reason})"),
            Some(Verdict::Fail { reason }) => format!("fail ({reason})"),
            None => "no analysis settings".to_owned(),
        };
        outln!(
            "    verdict: {verdict} → {} by {}: {}",
            event.what,
            event.by,
            self.after(event)
        );
    }

    /// `answers` by the demo's names, in name order.
    fn labelled(&self, answers: &BTreeMap<String, Answers>) -> BTreeMap<String, Answers> {
        answers
            .iter()
            .map(|(revision, a)| (self.labels.of(revision), *a))
            .collect()
    }
}

/// Prints where traffic went once `rollout` ended (read at `generation`):
/// all of it to the candidate after a promotion, none after a rollback.
async fn afterwards(
    load: &Load,
    labels: &Labels,
    timeline: &Timeline,
    rollout: &Rollout,
    generation: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    if !load.reach(generation).await {
        problems.push(format!(
            "the router did not serve generation {generation} within {} s",
            ROUTER_BOUND.as_secs()
        ));
        return problems;
    }
    let deadline = Instant::now() + ROUTER_BOUND;
    let mut answers = timeline.answers(&load.tally(), Phase::Ended);
    while answers.values().map(|a| a.answered).sum::<u64>() < AFTER_ANSWERS
        && Instant::now() < deadline
    {
        tokio::time::sleep(WATCH_INTERVAL).await;
        answers = timeline.answers(&load.tally(), Phase::Ended);
    }
    let total: u64 = answers.values().map(|a| a.answered).sum();
    let candidate_id = rollout.candidate_revision_id.to_string();
    let to_candidate = answers.get(&candidate_id).map_or(0, |a| a.answered);
    let failed: u64 = answers.values().map(|a| a.failed).sum();
    let candidate = labels.of(&candidate_id);
    outln!(
        "  afterwards: {total} answers, {to_candidate} from {candidate} ({:.2} %), {failed} failed",
        share(to_candidate, total)
    );
    let expected = match rollout.state {
        RolloutState::Promoted => total,
        _ => 0,
    };
    if total == 0 || to_candidate != expected || failed > 0 {
        problems.push(format!(
            "after the rollout ended {}, {to_candidate} of {total} answers came from {candidate} ({failed} failed); expected {expected} and none failed",
            rollout.state
        ));
    }
    problems
}

/// Failed answers the demo does not expect: any during the good rollout,
/// and any but the bad candidate's during the bad one.
fn failures(load: &Load, labels: &Labels, timeline: &Timeline, case: &Case) -> Vec<String> {
    let tally = load.tally();
    let mut unexpected = BTreeMap::<String, u64>::new();
    for phase in timeline.phases() {
        for (revision, answers) in timeline.answers(&tally, phase) {
            let expected =
                case.expected == RolloutState::RolledBack && revision == case.candidate.to_string();
            if answers.failed > 0 && !expected {
                *unexpected.entry(labels.of(&revision)).or_default() += answers.failed;
            }
        }
    }
    unexpected
        .into_iter()
        .map(|(label, failed)| format!("{label} answered {failed} requests with a 5xx"))
        .collect()
}

/// A window's figures for people, from `WindowCounts::summary`.
fn figures(counts: &WindowCounts) -> String {
    let summary = counts.summary();
    let p99 = match summary.p99_ms {
        None => "no latencies".to_owned(),
        Some(u32::MAX) => "p99 > 30000 ms".to_owned(),
        Some(ms) => format!("p99 ≤ {ms} ms"),
    };
    format!(
        "{} requests, {} errors ({}), {p99}",
        summary.requests,
        summary.errors,
        summary
            .error_rate_bps
            .map_or_else(|| "no rate".to_owned(), |bps| format!("{bps} bps"))
    )
}

/// Basis points as a percentage for people: `1000` is `10 %`.
fn percent_bps(bps: u32) -> String {
    let percent = f64::from(bps) / 100.0;
    if bps.is_multiple_of(100) {
        format!("{percent:.0} %")
    } else {
        format!("{percent:.2} %")
    }
}

/// `part` of `total` in percent (0 without a total).
fn share(part: u64, total: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    100.0 * part as f64 / total as f64
}

/// Where a rollout was at one state generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the rollout started.
    Before,
    /// Running (progressing, holding or paused) at this step.
    Step(u32),
    /// Promoted, aborted or rolled back.
    Ended,
}

impl Phase {
    fn of(rollout: &Rollout) -> Self {
        if rollout.state.is_active() {
            Self::Step(rollout.step)
        } else {
            Self::Ended
        }
    }
}

/// The rollout's phase at every state generation the demo read. A
/// generation it did not read belongs to the phase of the closest one
/// below it: the demo reads more often than the controller decides, so
/// only a generation committed within one read of the next can be missed.
#[derive(Default)]
struct Timeline(BTreeMap<u64, Phase>);

impl Timeline {
    fn note(&mut self, generation: u64, phase: Phase) {
        self.0.insert(generation, phase);
    }

    fn phase_of(&self, generation: u64) -> Phase {
        self.0
            .range(..=generation)
            .next_back()
            .map_or(Phase::Before, |(_, phase)| *phase)
    }

    /// Every phase after the start, once each.
    fn phases(&self) -> Vec<Phase> {
        let mut phases: Vec<Phase> = Vec::new();
        for phase in self.0.values() {
            if !phases.contains(phase) {
                phases.push(*phase);
            }
        }
        phases
    }

    /// The load's answers routed under `phase`, by revision.
    fn answers(&self, tally: &Tally, phase: Phase) -> BTreeMap<String, Answers> {
        let mut answers = BTreeMap::<String, Answers>::new();
        for (generation, revisions) in tally {
            if self.phase_of(*generation) != phase {
                continue;
            }
            for (revision, counted) in revisions {
                let entry = answers.entry(revision.clone()).or_default();
                entry.answered += counted.answered;
                entry.failed += counted.failed;
            }
        }
        answers
    }
}

/// What the load saw of one revision under one generation.
#[derive(Debug, Default, Clone, Copy)]
struct Answers {
    /// Answers that named this revision.
    answered: u64,
    /// Of those, answers with a 5xx status.
    failed: u64,
}

/// The load's answers by the state generation that routed them, then by
/// the revision that served them.
type Tally = BTreeMap<u64, BTreeMap<String, Answers>>;

/// Clients sending GETs through the router at [`LOAD_RATE_PER_SECOND`]
/// until stopped, counting every answer by generation and revision.
struct Load {
    tally: Arc<Mutex<Tally>>,
    /// The newest generation an answer carried: the router serves it.
    newest_generation: Arc<AtomicU64>,
    /// Requests without an answer from a revision (no connection, or an
    /// error of the router itself).
    unanswered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &HttpClient, addr: SocketAddr) -> Self {
        let tally = Arc::new(Mutex::new(Tally::new()));
        let newest_generation = Arc::new(AtomicU64::new(0));
        let unanswered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let period = Duration::from_micros(1_000_000 * LOAD_CLIENTS / LOAD_RATE_PER_SECOND);
        let clients = (0..LOAD_CLIENTS)
            .map(|_| {
                let client = client.clone();
                let (tally, newest, unanswered, stop) = (
                    Arc::clone(&tally),
                    Arc::clone(&newest_generation),
                    Arc::clone(&unanswered),
                    Arc::clone(&stop),
                );
                tokio::spawn(async move {
                    let mut ticker = tokio::time::interval(period);
                    // A slow answer delays the next request; it never
                    // brings a burst to catch up.
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    while !stop.load(Ordering::Relaxed) {
                        ticker.tick().await;
                        match request(&client, addr).await {
                            Ok((status, (revision, generation))) if !revision.is_empty() => {
                                newest.fetch_max(generation, Ordering::Relaxed);
                                if let Ok(mut tally) = tally.lock() {
                                    let answers = tally
                                        .entry(generation)
                                        .or_default()
                                        .entry(revision)
                                        .or_default();
                                    answers.answered += 1;
                                    answers.failed += u64::from(status >= 500);
                                }
                            }
                            _ => {
                                unanswered.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect();
        Self {
            tally,
            newest_generation,
            unanswered,
            stop,
            clients,
        }
    }

    /// A copy of the answers so far.
    fn tally(&self) -> Tally {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits until an answer carries `generation` or a newer one; false
    /// after [`ROUTER_BOUND`].
    async fn reach(&self, generation: u64) -> bool {
        let deadline = Instant::now() + ROUTER_BOUND;
        while self.newest_generation.load(Ordering::Relaxed) < generation {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// Stops the clients; returns how many requests got no answer.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            let _ = client.await;
        }
        self.unanswered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unread_generation_belongs_to_the_phase_read_below_it() {
        // Proves answers are attributed by the generation that routed them.
        let mut timeline = Timeline::default();
        timeline.note(10, Phase::Step(0));
        timeline.note(14, Phase::Step(1));
        timeline.note(20, Phase::Ended);
        assert_eq!(timeline.phase_of(9), Phase::Before);
        assert_eq!(timeline.phase_of(10), Phase::Step(0));
        assert_eq!(timeline.phase_of(13), Phase::Step(0));
        assert_eq!(timeline.phase_of(14), Phase::Step(1));
        assert_eq!(timeline.phase_of(25), Phase::Ended);
        let mut tally = Tally::new();
        for (generation, revision, answered, failed) in [
            (9, "a", 5, 0),
            (10, "a", 9, 0),
            (12, "b", 1, 1),
            (15, "b", 7, 0),
        ] {
            tally
                .entry(generation)
                .or_default()
                .insert(revision.to_owned(), Answers { answered, failed });
        }
        let first = timeline.answers(&tally, Phase::Step(0));
        assert_eq!(first["a"].answered, 9);
        assert_eq!((first["b"].answered, first["b"].failed), (1, 1));
        assert_eq!(timeline.answers(&tally, Phase::Step(1))["b"].answered, 7);
        assert_eq!(
            timeline.phases(),
            vec![Phase::Step(0), Phase::Step(1), Phase::Ended]
        );
    }

    #[test]
    fn the_plan_passes_the_rollout_validator() {
        // Proves the demo's steps and analysis are a rollout `start` accepts.
        let steps: Vec<RolloutStep> = STEPS_BPS
            .iter()
            .map(|weight_bps| RolloutStep {
                weight_bps: *weight_bps,
                until: StepGate::Analysis,
            })
            .collect();
        assert_eq!(
            deploy::rollout::validate_plan(&steps, Some(&analysis_settings())),
            Ok(())
        );
    }

    #[test]
    fn percentages_read_as_people_write_them() {
        assert_eq!(percent_bps(1_000), "10 %");
        assert_eq!(percent_bps(125), "1.25 %");
        assert_eq!(share(1, 0), 0.0);
        assert_eq!(share(1, 4), 25.0);
    }
}
