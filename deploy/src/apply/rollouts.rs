//! Rollout commands: `rollouts start`, a person's pause, resume, promote
//! and abort, and the controller's decisions. Each moves the deployment's
//! split to the rollout's weights in the same change, so a step, an abort
//! or a promotion reaches every router as one committed generation.

use serde_json::json;

use super::Outcome;
use super::bundles::deployment_index;
use super::traffic::{NewSplit, put_split, servable, split_view};
use crate::bundle::DeploymentStatus;
use crate::command::{
    CommandEnvelope, RolloutActionAnswers, RolloutDecisionAnswers, RolloutStartAnswers,
};
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::ids::{DeploymentId, RevisionId};
use crate::rollout::{
    FINISHED_ROLLOUTS_KEPT, PersonAction, Rollout, RolloutError, RolloutPlan, validate_reason,
};
use crate::traffic::{BASIS_POINTS_TOTAL, TrafficEntry};

fn from_rollout(error: RolloutError) -> ApplyError {
    match error {
        RolloutError::Invalid { field, message } => ApplyError::InvalidField { field, message },
        RolloutError::Conflict(message) => ApplyError::Conflict { message },
    }
}

/// What `rollouts start|show` and every rollout verb answer.
pub fn rollout_view(rollout: &Rollout) -> serde_json::Value {
    json!({
        "deployment_id": rollout.deployment_id,
        "stable_revision_id": rollout.stable_revision_id,
        "candidate_revision_id": rollout.candidate_revision_id,
        "state": rollout.state,
        "step": rollout.step,
        "steps": rollout.steps,
        "candidate_weight_bps": rollout.candidate_weight_bps(),
        "step_started_at": rollout.step_started_at,
        "holding_since": rollout.holding_since,
        "analysis": rollout.analysis,
        "started_at": rollout.started_at,
        "started_by": rollout.started_by,
        "ended_at": rollout.ended_at,
        "stable_grace_seconds": rollout.stable_grace_seconds,
        "stable_kept_until": rollout.stable_kept_until(),
        "history": rollout.history,
    })
}

/// The stable revision: the one named, else the one the split sends 100 %.
fn stable_of(
    environment: &Environment,
    answers: &RolloutStartAnswers,
) -> Result<RevisionId, ApplyError> {
    if let Some(stable) = answers.stable_revision_id {
        return Ok(stable);
    }
    let serving: Vec<&TrafficEntry> = environment
        .split(answers.deployment_id)
        .map(|split| split.entries.iter().filter(|e| e.weight_bps > 0).collect())
        .unwrap_or_default();
    match serving.as_slice() {
        [only] if only.weight_bps == BASIS_POINTS_TOTAL => Ok(only.revision_id),
        [] => Err(ApplyError::invalid(
            "stable_revision_id",
            format!(
                "deployment {} has no traffic split; name the revision that serves now, or set one with `gtc op traffic set`",
                answers.deployment_id
            ),
        )),
        _ => Err(ApplyError::invalid(
            "stable_revision_id",
            format!(
                "the split of deployment {} sends traffic to {} revisions; name the one to roll back to",
                answers.deployment_id,
                serving.len()
            ),
        )),
    }
}

/// Moves the deployment's split to where `rollout` sends traffic now.
fn follow(environment: &mut Environment, rollout: &Rollout, envelope: &CommandEnvelope) {
    let candidate = rollout.candidate_weight_bps();
    let tag_of = |revision: RevisionId| {
        environment.split(rollout.deployment_id).and_then(|split| {
            split
                .entries
                .iter()
                .find(|e| e.revision_id == revision)
                .and_then(|e| e.tag.clone())
        })
    };
    let mut entries = Vec::with_capacity(2);
    for (revision_id, weight_bps) in [
        (rollout.stable_revision_id, BASIS_POINTS_TOTAL - candidate),
        (rollout.candidate_revision_id, candidate),
    ] {
        if weight_bps > 0 {
            entries.push(TrafficEntry {
                revision_id,
                weight_bps,
                latest: false,
                tag: tag_of(revision_id),
            });
        }
    }
    let unchanged = environment
        .split(rollout.deployment_id)
        .is_some_and(|split| crate::traffic::same_entries(&split.entries, &entries));
    if unchanged {
        return;
    }
    let bundle_id = environment
        .bundles
        .iter()
        .find(|b| b.deployment_id == rollout.deployment_id)
        .map(|b| b.bundle_id.clone());
    let Some(bundle_id) = bundle_id else {
        return;
    };
    put_split(
        environment,
        NewSplit {
            deployment_id: rollout.deployment_id,
            bundle_id,
            entries,
            at: envelope.at,
            updated_by: match envelope.command {
                crate::command::Command::RolloutDecide(_) => {
                    Rollout::controller_actor(rollout.deployment_id)
                }
                _ => envelope.actor.display_name(),
            },
            idempotency_key: format!("rollout:{}", envelope.minted.event_id),
            authorization_ref: None,
        },
    );
}

/// Keeps the running rollouts and the newest finished ones.
fn prune_finished(environment: &mut Environment) {
    let mut finished: Vec<_> = environment
        .rollouts
        .iter()
        .filter(|r| !r.state.is_active())
        .map(|r| r.started_at)
        .collect();
    if finished.len() <= FINISHED_ROLLOUTS_KEPT {
        return;
    }
    finished.sort();
    let cutoff = finished[finished.len() - FINISHED_ROLLOUTS_KEPT];
    environment
        .rollouts
        .retain(|r| r.state.is_active() || r.started_at >= cutoff);
}

fn answer(environment: Environment, deployment_id: DeploymentId) -> Outcome {
    let rollout = environment
        .latest_rollout(deployment_id)
        .map(rollout_view)
        .unwrap_or_default();
    let split = environment.split(deployment_id).map(split_view);
    let result = json!({
        "environment_id": environment.environment_id,
        "deployment_id": deployment_id,
        "rollout": rollout,
        "split": split,
    });
    Outcome::changed(environment, result)
}

pub(crate) fn start(
    mut environment: Environment,
    answers: &RolloutStartAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    if answers.idempotency_key.trim().is_empty() {
        return Err(ApplyError::invalid(
            "idempotency_key",
            "must not be empty; use a fresh unique value (a ULID is a good choice) for every rollout",
        ));
    }
    let index = deployment_index(&environment, answers.deployment_id)?;
    if environment.bundles[index].status == DeploymentStatus::Archived {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} is archived and cannot receive traffic",
                answers.deployment_id
            ),
        });
    }
    if let Some(running) = environment.active_rollout(answers.deployment_id) {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} already has a rollout to revision {} ({} at step {}); one rollout per deployment at a time: promote or abort it first",
                answers.deployment_id, running.candidate_revision_id, running.state, running.step
            ),
        });
    }
    // The plan's own shape first: it is the caller's to fix whatever state
    // the revisions are in.
    crate::rollout::validate_plan(&answers.steps, answers.analysis.as_ref())
        .map_err(from_rollout)?;
    crate::rollout::validate_grace(answers.stable_grace_seconds).map_err(from_rollout)?;
    servable(
        &environment,
        answers.deployment_id,
        answers.candidate_revision_id,
        "candidate_revision_id",
    )?;
    let stable = stable_of(&environment, answers)?;
    servable(
        &environment,
        answers.deployment_id,
        stable,
        "stable_revision_id",
    )?;
    let rollout = Rollout::start(
        RolloutPlan {
            deployment_id: answers.deployment_id,
            stable_revision_id: stable,
            candidate_revision_id: answers.candidate_revision_id,
            steps: answers.steps.clone(),
            analysis: answers.analysis.clone(),
            stable_grace_seconds: answers.stable_grace_seconds,
        },
        envelope.at,
        &envelope.actor.display_name(),
        &answers.idempotency_key,
    )
    .map_err(from_rollout)?;
    follow(&mut environment, &rollout, envelope);
    environment.rollouts.push(rollout);
    prune_finished(&mut environment);
    Ok(answer(environment, answers.deployment_id))
}

/// The running rollout of a deployment, as a position in the list.
fn running(environment: &Environment, deployment_id: DeploymentId) -> Result<usize, ApplyError> {
    deployment_index(environment, deployment_id)?;
    environment
        .rollouts
        .iter()
        .position(|r| r.deployment_id == deployment_id && r.state.is_active())
        .ok_or_else(|| {
            let last = environment
                .latest_rollout(deployment_id)
                .map(|r| format!(" (its last one is {})", r.state))
                .unwrap_or_default();
            ApplyError::Conflict {
                message: format!(
                    "deployment {deployment_id} has no running rollout{last}; start one with `gtc op rollouts start`"
                ),
            }
        })
}

pub(crate) fn act(
    mut environment: Environment,
    action: PersonAction,
    answers: &RolloutActionAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let reason = validate_reason(answers.reason.as_deref()).map_err(from_rollout)?;
    let position = running(&environment, answers.deployment_id)?;
    let mut rollout = environment.rollouts[position].clone();
    rollout
        .act(action, envelope.at, &envelope.actor.display_name(), reason)
        .map_err(from_rollout)?;
    follow(&mut environment, &rollout, envelope);
    environment.rollouts[position] = rollout;
    prune_finished(&mut environment);
    Ok(answer(environment, answers.deployment_id))
}

pub(crate) fn decide(
    mut environment: Environment,
    answers: &RolloutDecisionAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let position = running(&environment, answers.deployment_id)?;
    let mut rollout = environment.rollouts[position].clone();
    rollout
        .decide(answers.step, &answers.decision, envelope.at)
        .map_err(from_rollout)?;
    if rollout == environment.rollouts[position] {
        // A repeated hold: nothing to record.
        let result = json!({
            "environment_id": environment.environment_id,
            "deployment_id": answers.deployment_id,
            "rollout": rollout_view(&rollout),
        });
        return Ok(Outcome {
            environment: Some(environment),
            result,
            changed: false,
            committed_error: None,
        });
    }
    follow(&mut environment, &rollout, envelope);
    environment.rollouts[position] = rollout;
    prune_finished(&mut environment);
    Ok(answer(environment, answers.deployment_id))
}
