//! Progressive delivery: a rollout moves a deployment's traffic from a
//! stable revision to a candidate in steps. Each step sends the candidate
//! a weight in basis points and is held by a pause, by a person, or until
//! analysis of the routers' own measurements passes; too little data holds
//! a step, it never passes one. A person may pause, resume, promote (skip
//! to 100 %) or abort (back to 100 % stable) at any time; the controller on
//! the Raft leader advances, holds and rolls back.
//!
//! This module is the pure part: the rollout object, its validation, the
//! state transitions and the analysis verdict ([`analysis`]). Which
//! environment facts a start needs (a ready candidate, a serving stable
//! revision, no other rollout on the deployment) and how a transition
//! changes the deployment's split live in `apply::rollouts`.

pub mod analysis;
pub mod controller;
#[cfg(test)]
mod tests;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::ids::{DeploymentId, RevisionId};
use crate::traffic::BASIS_POINTS_TOTAL;
pub use analysis::{AnalysisRecord, Verdict, WindowCounts};

/// Most steps in one rollout.
pub const ROLLOUT_STEPS_MAX: usize = 16;
/// Longest pause of one step: a week.
pub const PAUSE_SECONDS_MAX: u32 = 7 * 24 * 3600;
/// Shortest and longest analysis window, in seconds.
pub const WINDOW_SECONDS_MIN: u32 = 10;
pub const WINDOW_SECONDS_MAX: u32 = 3600;
/// Default analysis window (Flagger's and Argo's analysis intervals are a
/// minute by default).
pub const WINDOW_SECONDS_DEFAULT: u32 = 60;
/// Most requests a step may ask for before a verdict.
pub const MIN_REQUESTS_MAX: u64 = 1_000_000_000;
/// Longest hold before the rollout's `on_hold_limit` applies: a week.
pub const HOLD_LIMIT_SECONDS_MAX: u32 = 7 * 24 * 3600;
/// Default hold limit: ten windows of the default length.
pub const HOLD_LIMIT_SECONDS_DEFAULT: u32 = 600;
/// Most checks in one analysis.
pub const CHECKS_MAX: usize = 8;
/// Largest latency bound a check may name, in ms.
pub const LATENCY_BOUND_MS_MAX: u32 = 600_000;
/// History entries a rollout keeps (the oldest go first).
pub const HISTORY_MAX: usize = 256;
/// Longest reason a person or the controller gives, in bytes.
pub const REASON_BYTES_MAX: usize = 512;
/// How long the stable revision of a promoted rollout stays ready by
/// default (refused a drain), so a rollback to it is a traffic change, not
/// a cold start: five minutes.
pub const STABLE_GRACE_SECONDS_DEFAULT: u32 = 300;
/// Longest grace a rollout may ask for: a day.
pub const STABLE_GRACE_SECONDS_MAX: u32 = 24 * 3600;
/// Finished rollouts an environment keeps (the oldest go first); the audit
/// log keeps every one.
pub const FINISHED_ROLLOUTS_KEPT: usize = 32;

/// One step: the candidate's weight and what ends the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutStep {
    /// The candidate's share during the step, in basis points (1-10000);
    /// the stable revision gets the rest.
    pub weight_bps: u32,
    /// What ends the step.
    pub until: StepGate,
}

/// What ends a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StepGate {
    /// The step lasts this long, then the rollout advances.
    Pause { seconds: u32 },
    /// The rollout waits (`paused`) for a person: `gtc op rollouts resume`.
    Manual,
    /// The rollout advances when an analysis window at this weight passes
    /// (the rollout's `analysis` settings).
    Analysis,
}

/// One bound an analysis checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "metric", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MetricCheck {
    /// Failed requests (5xx answers and upstream errors) over requests, in
    /// basis points: at most `max_bps`, or at most the stable revision's
    /// rate in the same window plus `max_bps` when `relative_to_stable`.
    ErrorRate {
        max_bps: u32,
        #[serde(default)]
        relative_to_stable: bool,
    },
    /// The 99th percentile latency, in ms: at most `max_ms`, or at most the
    /// stable revision's p99 in the same window plus `max_ms`.
    P99Latency {
        max_ms: u32,
        #[serde(default)]
        relative_to_stable: bool,
    },
}

/// What a rollout that holds too long does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HoldLimitAction {
    /// Roll back to 100 % stable (`rolled-back`).
    #[default]
    Abort,
    /// Wait for a person (`paused`).
    Wait,
}

/// How analysis steps are judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSettings {
    /// Length of the measurement window, in seconds (10-3600, default 60).
    #[serde(default = "default_window")]
    pub window_seconds: u32,
    /// Requests the candidate must have served in a window before any
    /// verdict but an early failure (1-1000000000).
    pub min_requests: u64,
    /// The bounds; at least one, at most 8.
    pub checks: Vec<MetricCheck>,
    /// How long a step may hold for too little data before
    /// `on_hold_limit` applies, in seconds (default 600).
    #[serde(default = "default_hold_limit")]
    pub hold_limit_seconds: u32,
    #[serde(default)]
    pub on_hold_limit: HoldLimitAction,
}

fn default_window() -> u32 {
    WINDOW_SECONDS_DEFAULT
}

fn default_hold_limit() -> u32 {
    HOLD_LIMIT_SECONDS_DEFAULT
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// At a step, waiting for its pause to end or its analysis to pass.
    Progressing,
    /// Stopped by a person, or at a manual step: `resume` goes on.
    Paused,
    /// At an analysis step with too little data for a verdict.
    Holding,
    /// The candidate serves 100 %.
    Promoted,
    /// A person aborted it: the stable revision serves 100 %.
    Aborted,
    /// The controller rolled it back (a failed analysis or a hold past its
    /// limit): the stable revision serves 100 %.
    RolledBack,
}

impl RolloutState {
    /// Whether the rollout still owns its deployment's split.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Progressing | Self::Paused | Self::Holding)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Progressing => "progressing",
            Self::Paused => "paused",
            Self::Holding => "holding",
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled-back",
        }
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a person asks of a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PersonAction {
    Pause,
    Resume,
    Promote,
    Abort,
}

impl PersonAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Promote => "promote",
            Self::Abort => "abort",
        }
    }
}

/// What the controller decided about the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "decision", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ControllerDecision {
    /// The step's pause ended, or its analysis passed (`analysis` holds
    /// the window that passed): go to the next step, or promote after the
    /// last.
    Advance {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        analysis: Option<AnalysisRecord>,
    },
    /// Too little data in the window.
    Hold { analysis: AnalysisRecord },
    /// The analysis failed: back to 100 % stable.
    RollBack { analysis: AnalysisRecord },
    /// The step held past `hold_limit_seconds`: `on_hold_limit` applies.
    HoldLimit,
}

impl ControllerDecision {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Advance { .. } => "advance",
            Self::Hold { .. } => "hold",
            Self::RollBack { .. } => "roll-back",
            Self::HoldLimit => "hold-limit",
        }
    }
}

/// One entry of a rollout's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutEvent {
    pub at: Timestamp,
    /// A person (as the audit log names them) or `rollout:<deployment>`.
    pub by: String,
    /// What happened: `started`, `advanced`, `held`, `paused`, `resumed`,
    /// `promoted`, `aborted`, `rolled-back`, `hold-limit`.
    pub what: String,
    /// The step the rollout is at afterwards.
    pub step: u32,
    /// The state afterwards.
    pub state: RolloutState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The window the controller judged, with its verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisRecord>,
}

/// A rollout of one deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub deployment_id: DeploymentId,
    pub stable_revision_id: RevisionId,
    pub candidate_revision_id: RevisionId,
    pub steps: Vec<RolloutStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSettings>,
    pub state: RolloutState,
    /// The index of the current step.
    pub step: u32,
    /// When the current step began (or last resumed).
    pub step_started_at: Timestamp,
    /// When the current hold began, while `holding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding_since: Option<Timestamp>,
    pub started_at: Timestamp,
    pub started_by: String,
    /// The idempotency key of the start.
    pub idempotency_key: String,
    /// How long the stable revision stays ready after a promotion.
    #[serde(default = "default_stable_grace")]
    pub stable_grace_seconds: u32,
    /// When the rollout was promoted, aborted or rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    pub history: Vec<RolloutEvent>,
}

fn default_stable_grace() -> u32 {
    STABLE_GRACE_SECONDS_DEFAULT
}

/// Why a rollout's settings or a transition were refused. Each names the
/// field or the state at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RolloutError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0}")]
    Conflict(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RolloutError {
    RolloutError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a rollout's steps and analysis settings on their own (before
/// anything about the environment): steps that increase strictly, weights
/// within 1-10000, bounded pauses, and analysis settings wherever a step
/// asks for analysis.
pub fn validate_plan(
    steps: &[RolloutStep],
    analysis: Option<&AnalysisSettings>,
) -> Result<(), RolloutError> {
    if steps.is_empty() {
        return Err(invalid(
            "steps",
            "give at least one step, e.g. [{\"weight_bps\": 500, \"until\": {\"kind\": \"analysis\"}}]",
        ));
    }
    if steps.len() > ROLLOUT_STEPS_MAX {
        return Err(invalid(
            "steps",
            format!("{} steps; the limit is {ROLLOUT_STEPS_MAX}", steps.len()),
        ));
    }
    let mut previous = 0u32;
    for (index, step) in steps.iter().enumerate() {
        let field = format!("steps[{index}].weight_bps");
        if step.weight_bps == 0 || step.weight_bps > BASIS_POINTS_TOTAL {
            return Err(invalid(
                field,
                format!("{} is outside 1-10000 bps (0.01 %-100 %)", step.weight_bps),
            ));
        }
        if step.weight_bps <= previous {
            return Err(invalid(
                field,
                format!(
                    "{} bps does not increase on the step before ({previous} bps); each step gives the candidate more",
                    step.weight_bps
                ),
            ));
        }
        previous = step.weight_bps;
        if let StepGate::Pause { seconds } = step.until
            && (seconds == 0 || seconds > PAUSE_SECONDS_MAX)
        {
            return Err(invalid(
                format!("steps[{index}].until.seconds"),
                format!("{seconds} is outside 1-{PAUSE_SECONDS_MAX} seconds"),
            ));
        }
    }
    let analysed = steps.iter().any(|s| s.until == StepGate::Analysis);
    match (analysed, analysis) {
        (true, None) => Err(invalid(
            "analysis",
            "a step waits for analysis, but the rollout has no analysis settings; give {\"min_requests\": N, \"checks\": [...]}",
        )),
        (_, Some(settings)) => validate_analysis(settings),
        (false, None) => Ok(()),
    }
}

fn validate_analysis(settings: &AnalysisSettings) -> Result<(), RolloutError> {
    if !(WINDOW_SECONDS_MIN..=WINDOW_SECONDS_MAX).contains(&settings.window_seconds) {
        return Err(invalid(
            "analysis.window_seconds",
            format!(
                "{} is outside {WINDOW_SECONDS_MIN}-{WINDOW_SECONDS_MAX} seconds",
                settings.window_seconds
            ),
        ));
    }
    if settings.min_requests == 0 || settings.min_requests > MIN_REQUESTS_MAX {
        return Err(invalid(
            "analysis.min_requests",
            format!(
                "{} is outside 1-{MIN_REQUESTS_MAX}; a verdict needs at least one request",
                settings.min_requests
            ),
        ));
    }
    if settings.hold_limit_seconds == 0 || settings.hold_limit_seconds > HOLD_LIMIT_SECONDS_MAX {
        return Err(invalid(
            "analysis.hold_limit_seconds",
            format!(
                "{} is outside 1-{HOLD_LIMIT_SECONDS_MAX} seconds",
                settings.hold_limit_seconds
            ),
        ));
    }
    if settings.checks.is_empty() || settings.checks.len() > CHECKS_MAX {
        return Err(invalid(
            "analysis.checks",
            format!(
                "{} checks; give 1 to {CHECKS_MAX}, e.g. {{\"metric\": \"error-rate\", \"max_bps\": 100}}",
                settings.checks.len()
            ),
        ));
    }
    for (index, check) in settings.checks.iter().enumerate() {
        match *check {
            MetricCheck::ErrorRate { max_bps, .. } if max_bps > BASIS_POINTS_TOTAL => {
                return Err(invalid(
                    format!("analysis.checks[{index}].max_bps"),
                    format!("{max_bps} is above 10000 bps (100 %)"),
                ));
            }
            MetricCheck::P99Latency { max_ms, .. }
                if max_ms == 0 || max_ms > LATENCY_BOUND_MS_MAX =>
            {
                return Err(invalid(
                    format!("analysis.checks[{index}].max_ms"),
                    format!("{max_ms} is outside 1-{LATENCY_BOUND_MS_MAX} ms"),
                ));
            }
            _ => {}
        }
        if settings.checks[..index].contains(check) {
            return Err(invalid(
                format!("analysis.checks[{index}]"),
                "the same check is listed twice",
            ));
        }
    }
    Ok(())
}

/// The grace a rollout asked for, or the default; refused above a day.
pub fn validate_grace(asked: Option<u32>) -> Result<u32, RolloutError> {
    let grace = asked.unwrap_or(STABLE_GRACE_SECONDS_DEFAULT);
    if grace > STABLE_GRACE_SECONDS_MAX {
        return Err(invalid(
            "stable_grace_seconds",
            format!("{grace} is above {STABLE_GRACE_SECONDS_MAX} seconds (a day)"),
        ));
    }
    Ok(grace)
}

/// Checks a reason's length; trims it.
pub fn validate_reason(reason: Option<&str>) -> Result<Option<String>, RolloutError> {
    let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(None);
    };
    if reason.len() > REASON_BYTES_MAX {
        return Err(invalid(
            "reason",
            format!("{} bytes; the limit is {REASON_BYTES_MAX}", reason.len()),
        ));
    }
    Ok(Some(reason.to_owned()))
}

/// What a rollout is asked to do, before it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    pub deployment_id: DeploymentId,
    pub stable_revision_id: RevisionId,
    pub candidate_revision_id: RevisionId,
    pub steps: Vec<RolloutStep>,
    pub analysis: Option<AnalysisSettings>,
    /// `None`: [`STABLE_GRACE_SECONDS_DEFAULT`].
    pub stable_grace_seconds: Option<u32>,
}

impl Rollout {
    /// A rollout at its first step (paused there if the step is manual).
    pub fn start(
        plan: RolloutPlan,
        at: Timestamp,
        by: &str,
        idempotency_key: &str,
    ) -> Result<Self, RolloutError> {
        let RolloutPlan {
            deployment_id,
            stable_revision_id,
            candidate_revision_id,
            steps,
            analysis,
            stable_grace_seconds,
        } = plan;
        validate_plan(&steps, analysis.as_ref())?;
        let stable_grace_seconds = validate_grace(stable_grace_seconds)?;
        if stable_revision_id == candidate_revision_id {
            return Err(invalid(
                "candidate_revision_id",
                format!(
                    "{candidate_revision_id} is also the stable revision; roll out a different revision"
                ),
            ));
        }
        let mut rollout = Self {
            deployment_id,
            stable_revision_id,
            candidate_revision_id,
            steps,
            analysis,
            state: RolloutState::Progressing,
            step: 0,
            step_started_at: at,
            holding_since: None,
            started_at: at,
            started_by: by.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            stable_grace_seconds,
            ended_at: None,
            history: Vec::new(),
        };
        rollout.enter_step(0, at);
        rollout.record(at, by, "started", None, None);
        Ok(rollout)
    }

    /// Until when a promoted rollout keeps its stable revision ready.
    pub fn stable_kept_until(&self) -> Option<Timestamp> {
        (self.state == RolloutState::Promoted).then_some(())?;
        Some(self.ended_at? + chrono::Duration::seconds(i64::from(self.stable_grace_seconds)))
    }

    /// The actor name the controller's decisions are audited under.
    pub fn controller_actor(deployment_id: DeploymentId) -> String {
        format!("rollout:{deployment_id}")
    }

    /// When the current step's pause ends, while the rollout progresses at
    /// a pause step: the controller advances it then.
    pub fn pause_ends_at(&self) -> Option<Timestamp> {
        if self.state != RolloutState::Progressing {
            return None;
        }
        match self.current_step()?.until {
            StepGate::Pause { seconds } => {
                Some(self.step_started_at + chrono::Duration::seconds(i64::from(seconds)))
            }
            StepGate::Manual | StepGate::Analysis => None,
        }
    }

    /// Whether the current step is measured: an analysis step, progressing
    /// or holding.
    pub fn analysing(&self) -> bool {
        matches!(
            self.state,
            RolloutState::Progressing | RolloutState::Holding
        ) && self
            .current_step()
            .is_some_and(|s| s.until == StepGate::Analysis)
    }

    /// The controller's decision on a finished window of the current step:
    /// advance on a pass, roll back on a failure, hold on too little data,
    /// or apply the hold limit once the hold has lasted that long.
    pub fn judge_window(
        &self,
        record: AnalysisRecord,
        now: Timestamp,
    ) -> Option<ControllerDecision> {
        let settings = self.analysis.as_ref()?;
        if !self.analysing() {
            return None;
        }
        Some(match record.judge(settings) {
            Verdict::Pass => ControllerDecision::Advance {
                analysis: Some(record),
            },
            Verdict::Fail { .. } => ControllerDecision::RollBack { analysis: record },
            Verdict::Hold { .. } => {
                let limit = chrono::Duration::seconds(i64::from(settings.hold_limit_seconds));
                match self.holding_since {
                    Some(since) if self.state == RolloutState::Holding && since + limit <= now => {
                        ControllerDecision::HoldLimit
                    }
                    _ => ControllerDecision::Hold { analysis: record },
                }
            }
        })
    }

    /// The current step.
    pub fn current_step(&self) -> Option<&RolloutStep> {
        self.steps.get(self.step as usize)
    }

    /// The candidate's weight now, in basis points: the step's while the
    /// rollout runs, 10000 once promoted, 0 once aborted or rolled back.
    pub fn candidate_weight_bps(&self) -> u32 {
        match self.state {
            RolloutState::Promoted => BASIS_POINTS_TOTAL,
            RolloutState::Aborted | RolloutState::RolledBack => 0,
            RolloutState::Progressing | RolloutState::Paused | RolloutState::Holding => self
                .current_step()
                .map_or(0, |step| step.weight_bps.min(BASIS_POINTS_TOTAL)),
        }
    }

    /// A person's action. `at` and `by` come from the command's envelope.
    pub fn act(
        &mut self,
        action: PersonAction,
        at: Timestamp,
        by: &str,
        reason: Option<String>,
    ) -> Result<(), RolloutError> {
        self.require_active(action.as_str())?;
        match action {
            PersonAction::Pause => {
                if self.state == RolloutState::Paused {
                    return Err(RolloutError::Conflict(format!(
                        "the rollout of deployment {} is already paused at step {}; resume it with `gtc op rollouts resume`",
                        self.deployment_id, self.step
                    )));
                }
                self.state = RolloutState::Paused;
                self.holding_since = None;
                self.record(at, by, "paused", reason, None);
            }
            PersonAction::Resume => {
                if self.state != RolloutState::Paused {
                    return Err(RolloutError::Conflict(format!(
                        "the rollout of deployment {} is {}, not paused; nothing to resume",
                        self.deployment_id, self.state
                    )));
                }
                let manual = self
                    .current_step()
                    .is_some_and(|s| s.until == StepGate::Manual);
                if manual {
                    // A manual step ends when a person resumes.
                    self.advance(at, by, "resumed", reason, None);
                } else {
                    // The step starts over: its pause or window counts
                    // from now.
                    self.state = RolloutState::Progressing;
                    self.step_started_at = at;
                    self.record(at, by, "resumed", reason, None);
                }
            }
            PersonAction::Promote => {
                self.state = RolloutState::Promoted;
                self.holding_since = None;
                self.record(at, by, "promoted", reason, None);
            }
            PersonAction::Abort => {
                self.state = RolloutState::Aborted;
                self.holding_since = None;
                self.record(at, by, "aborted", reason, None);
            }
        }
        Ok(())
    }

    /// The controller's decision about step `step`. Refused unless the
    /// rollout is still at that step and the decision is sound on its own
    /// record: an advance past a pause before the pause ended, or past an
    /// analysis step without a passing window of at least `min_requests`,
    /// is refused, so a retried or late decision never skips or repeats a
    /// step.
    pub fn decide(
        &mut self,
        step: u32,
        decision: &ControllerDecision,
        at: Timestamp,
    ) -> Result<(), RolloutError> {
        let by = Self::controller_actor(self.deployment_id);
        self.require_active(decision.as_str())?;
        if step != self.step {
            return Err(RolloutError::Conflict(format!(
                "the decision is about step {step}, but the rollout of deployment {} is at step {}; it was decided before the rollout moved on",
                self.deployment_id, self.step
            )));
        }
        if self.state == RolloutState::Paused {
            return Err(RolloutError::Conflict(format!(
                "the rollout of deployment {} is paused; only a person resumes it",
                self.deployment_id
            )));
        }
        let Some(current) = self.current_step().cloned() else {
            return Err(RolloutError::Conflict(format!(
                "the rollout of deployment {} has no step {step}",
                self.deployment_id
            )));
        };
        match decision {
            ControllerDecision::Advance { analysis } => {
                match current.until {
                    StepGate::Manual => {
                        return Err(RolloutError::Conflict(format!(
                            "step {step} waits for a person; the controller does not end it"
                        )));
                    }
                    StepGate::Pause { seconds } => {
                        let ends =
                            self.step_started_at + chrono::Duration::seconds(i64::from(seconds));
                        if at < ends {
                            return Err(RolloutError::Conflict(format!(
                                "step {step} pauses until {ends}; it cannot end at {at}"
                            )));
                        }
                    }
                    StepGate::Analysis => {
                        let record = self.judged(step, analysis.as_ref(), false)?;
                        let settings = self.settings()?;
                        match record.judge(settings) {
                            Verdict::Pass => {}
                            Verdict::Hold { reason } | Verdict::Fail { reason } => {
                                return Err(RolloutError::Conflict(format!(
                                    "step {step} cannot advance on this window: {reason}"
                                )));
                            }
                        }
                    }
                }
                self.advance(at, &by, "advanced", None, analysis.clone());
            }
            ControllerDecision::Hold { analysis } => {
                let record = self.judged(step, Some(analysis), false)?;
                let settings = self.settings()?;
                let Verdict::Hold { reason } = record.judge(settings) else {
                    return Err(RolloutError::Conflict(format!(
                        "step {step}: the window is not a hold on the rollout's settings"
                    )));
                };
                if self.state != RolloutState::Holding {
                    self.state = RolloutState::Holding;
                    self.holding_since = Some(at);
                    self.record(at, &by, "held", Some(reason), Some(record.clone()));
                }
            }
            ControllerDecision::RollBack { analysis } => {
                let record = self.judged(step, Some(analysis), true)?;
                let settings = self.settings()?;
                let Verdict::Fail { reason } = record.judge(settings) else {
                    return Err(RolloutError::Conflict(format!(
                        "step {step}: the window does not fail the rollout's checks; no rollback on it"
                    )));
                };
                self.state = RolloutState::RolledBack;
                self.holding_since = None;
                self.record(at, &by, "rolled-back", Some(reason), Some(record.clone()));
            }
            ControllerDecision::HoldLimit => {
                let settings = self.settings()?.clone();
                let Some(since) = self
                    .holding_since
                    .filter(|_| self.state == RolloutState::Holding)
                else {
                    return Err(RolloutError::Conflict(format!(
                        "the rollout of deployment {} is {}, not holding",
                        self.deployment_id, self.state
                    )));
                };
                let limit =
                    since + chrono::Duration::seconds(i64::from(settings.hold_limit_seconds));
                if at < limit {
                    return Err(RolloutError::Conflict(format!(
                        "the hold began at {since}; its limit is reached at {limit}, not at {at}"
                    )));
                }
                let reason = format!(
                    "held for too little data since {since}, past the {} s limit",
                    settings.hold_limit_seconds
                );
                self.holding_since = None;
                match settings.on_hold_limit {
                    HoldLimitAction::Abort => {
                        self.state = RolloutState::RolledBack;
                        self.record(at, &by, "rolled-back", Some(reason), None);
                    }
                    HoldLimitAction::Wait => {
                        self.state = RolloutState::Paused;
                        self.record(at, &by, "hold-limit", Some(reason), None);
                    }
                }
            }
        }
        Ok(())
    }

    /// The analysis settings an analysis decision needs.
    fn settings(&self) -> Result<&AnalysisSettings, RolloutError> {
        self.analysis
            .as_ref()
            .ok_or_else(|| invalid("analysis", "the rollout has no analysis settings"))
    }

    /// `record` checked against the current step and the rollout's window.
    /// A failure may be judged on the part of a window measured so far
    /// (`early`): it is then no longer than the rollout's window.
    fn judged<'a>(
        &self,
        step: u32,
        record: Option<&'a AnalysisRecord>,
        early: bool,
    ) -> Result<&'a AnalysisRecord, RolloutError> {
        let Some(record) = record else {
            return Err(invalid(
                "analysis",
                format!(
                    "step {step} ends on analysis; the decision must carry the window it judged"
                ),
            ));
        };
        if record.step != step {
            return Err(invalid(
                "analysis.step",
                format!(
                    "the window was measured at step {}, not {step}",
                    record.step
                ),
            ));
        }
        let window = self.analysis.as_ref().map(|a| a.window_seconds);
        let fits = match window {
            Some(full) if early => (1..=full).contains(&record.window_seconds),
            Some(full) => record.window_seconds == full,
            None => false,
        };
        if !fits {
            return Err(invalid(
                "analysis.window_seconds",
                format!(
                    "the window lasted {} s; the rollout's is {}",
                    record.window_seconds,
                    window.map_or_else(|| "not set".to_owned(), |w| format!("{w} s"))
                ),
            ));
        }
        Ok(record)
    }

    fn require_active(&self, what: &str) -> Result<(), RolloutError> {
        if self.state.is_active() {
            return Ok(());
        }
        Err(RolloutError::Conflict(format!(
            "the rollout of deployment {} is {}; it cannot {what}. Start a new rollout with `gtc op rollouts start`",
            self.deployment_id, self.state
        )))
    }

    /// Ends the current step: the next one, or promotion after the last.
    fn advance(
        &mut self,
        at: Timestamp,
        by: &str,
        what: &str,
        reason: Option<String>,
        analysis: Option<AnalysisRecord>,
    ) {
        self.holding_since = None;
        let next = self.step + 1;
        if next as usize >= self.steps.len() {
            self.state = RolloutState::Promoted;
            self.record(at, by, what, reason, analysis);
            return;
        }
        self.enter_step(next, at);
        self.record(at, by, what, reason, analysis);
    }

    fn enter_step(&mut self, step: u32, at: Timestamp) {
        self.step = step;
        self.step_started_at = at;
        self.holding_since = None;
        self.state = match self.current_step().map(|s| s.until) {
            Some(StepGate::Manual) => RolloutState::Paused,
            _ => RolloutState::Progressing,
        };
    }

    fn record(
        &mut self,
        at: Timestamp,
        by: &str,
        what: &str,
        reason: Option<String>,
        analysis: Option<AnalysisRecord>,
    ) {
        if !self.state.is_active() && self.ended_at.is_none() {
            self.ended_at = Some(at);
        }
        if self.history.len() >= HISTORY_MAX {
            self.history.remove(0);
        }
        self.history.push(RolloutEvent {
            at,
            by: by.to_owned(),
            what: what.to_owned(),
            step: self.step,
            state: self.state,
            reason,
            analysis,
        });
    }
}
