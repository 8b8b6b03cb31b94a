//! Revision commands: stage, warm (with its gate), drain, archive.

use serde_json::json;

use crate::command::PlacementAnswers;

use super::Outcome;
use super::bundles::deployment_index;
use super::traffic::follow_latest;
use crate::bundle::DeploymentStatus;
use crate::canonical::ContentDigest;
use crate::command::{
    CommandEnvelope, FailedCheck, RevisionAnswers, RevisionStageAnswers, RuntimeOutcome,
    RuntimeReport, StagedBundle,
};
use crate::descriptor::CapabilitySlot;
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::ids::{NODE_NAME_BYTES_MAX, RevisionId};
use crate::lifecycle::{Lifecycle, LifecycleVerb, is_valid_transition};
use crate::revision::{DRAIN_SECONDS_DEFAULT, DRAIN_SECONDS_MAX, REVISION_SCHEMA, Revision};

/// Id of a warm-gate check, as reported in `failed_checks`.
pub const CHECK_DEPLOYER_BOUND: &str = "deployer-bound";
/// The deployment must be active for its revisions to become ready.
pub const CHECK_DEPLOYMENT_ACTIVE: &str = "deployment-active";

pub(super) fn revision_index(
    environment: &Environment,
    revision_id: RevisionId,
) -> Result<usize, ApplyError> {
    environment
        .revisions
        .iter()
        .position(|r| r.revision_id == revision_id)
        .ok_or_else(|| {
            ApplyError::not_found(
                "revision",
                revision_id,
                &environment.environment_id,
                "; list revisions with `gtc op revisions list`",
            )
        })
}

/// Moves revision `index` along the chain of `verb`, checking every edge.
fn walk(
    environment: &mut Environment,
    index: usize,
    verb: LifecycleVerb,
    at: crate::Timestamp,
) -> Result<(), ApplyError> {
    let revision = &mut environment.revisions[index];
    let start = revision.lifecycle;
    let chain = verb
        .chain(start)
        .ok_or_else(|| ApplyError::InvalidTransition {
            revision_id: revision.revision_id,
            verb,
            lifecycle: start,
            accepted: verb.accepted_starts().to_vec(),
        })?;
    for next in chain {
        if !is_valid_transition(revision.lifecycle, next) {
            return Err(ApplyError::InvalidTransition {
                revision_id: revision.revision_id,
                verb,
                lifecycle: revision.lifecycle,
                accepted: verb.accepted_starts().to_vec(),
            });
        }
        revision.lifecycle = next;
    }
    revision.lifecycle_changed_at = Some(at);
    Ok(())
}

fn refuse_if_serving(
    environment: &Environment,
    revision_id: RevisionId,
    verb: &'static str,
    at: crate::Timestamp,
) -> Result<(), ApplyError> {
    if let Some(split) = environment
        .traffic_splits
        .iter()
        .find(|s| s.references(revision_id))
    {
        return Err(ApplyError::ActiveTrafficReference {
            verb,
            revision_id,
            deployment_id: split.deployment_id,
        });
    }
    // A running rollout may send either revision everything at any moment
    // (an abort, a promotion), so both keep their instances until it ends.
    if let Some(rollout) = environment.rollouts.iter().find(|r| {
        r.state.is_active()
            && (r.stable_revision_id == revision_id || r.candidate_revision_id == revision_id)
    }) {
        return Err(ApplyError::Conflict {
            message: format!(
                "cannot {verb} revision {revision_id}: the rollout of deployment {} ({}) may send it all traffic; promote or abort the rollout first",
                rollout.deployment_id, rollout.state
            ),
        });
    }
    // A promoted rollout's stable revision stays warm for its grace, so
    // going back to it is a traffic change, not a cold start.
    if let Some((rollout, until)) = environment
        .rollouts
        .iter()
        .filter(|r| r.stable_revision_id == revision_id)
        .filter_map(|r| Some((r, r.stable_kept_until()?)))
        .find(|(_, until)| *until > at)
    {
        return Err(ApplyError::Conflict {
            message: format!(
                "cannot {verb} revision {revision_id} before {until}: it was the stable revision of deployment {}'s rollout, promoted at {}, and stays ready for {} s so a rollback needs no cold start (stable_grace_seconds)",
                rollout.deployment_id,
                rollout.ended_at.map_or_else(String::new, |t| t.to_string()),
                rollout.stable_grace_seconds
            ),
        });
    }
    Ok(())
}

pub(super) fn result_for(environment: &Environment, index: usize) -> serde_json::Value {
    let revision = &environment.revisions[index];
    let mut value = serde_json::to_value(revision.summary()).unwrap_or_default();
    value["environment_id"] = json!(environment.environment_id);
    value
}

/// Checks that a staged bundle and the payload agree, and that the bundle
/// is the deployment's.
fn check_staged(
    answers: &RevisionStageAnswers,
    staged: Option<&StagedBundle>,
    deployment_bundle: &crate::ids::BundleId,
) -> Result<(), ApplyError> {
    let computed = [
        ("bundle_digest", answers.bundle_digest.is_some()),
        ("pack_list", !answers.pack_list.is_empty()),
        ("pack_list_lock_ref", !answers.pack_list_lock_ref.is_empty()),
    ];
    match (&answers.bundle_path, staged) {
        (Some(_), Some(staged)) => {
            if let Some((field, _)) = computed.iter().find(|(_, given)| *given) {
                return Err(ApplyError::invalid(
                    *field,
                    "is computed from bundle_path when a bundle file is staged; leave it out",
                ));
            }
            if answers
                .revision_id
                .is_some_and(|id| id != staged.revision_id)
            {
                return Err(ApplyError::invalid(
                    "revision_id",
                    "differs from the revision the bundle was staged for",
                ));
            }
            if &staged.bundle_id != deployment_bundle {
                return Err(ApplyError::invalid(
                    "bundle_path",
                    format!(
                        "the bundle's manifest declares bundle_id {}, but the deployment deploys {deployment_bundle}; stage it into a deployment of that bundle",
                        staged.bundle_id
                    ),
                ));
            }
            Ok(())
        }
        (Some(_), None) => Err(ApplyError::invalid(
            "bundle_path",
            "names a bundle file that was not staged; stage it through `gtc op revisions stage`",
        )),
        (None, Some(_)) => Err(ApplyError::invalid(
            "bundle_path",
            "a staged bundle arrived without bundle_path",
        )),
        (None, None) => Ok(()),
    }
}

pub(crate) fn stage(
    mut environment: Environment,
    answers: &RevisionStageAnswers,
    staged: Option<&StagedBundle>,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let index = deployment_index(&environment, answers.deployment_id)?;
    let deployment = &environment.bundles[index];
    if deployment.status == DeploymentStatus::Archived {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} is archived; add the bundle again to deploy it",
                deployment.deployment_id
            ),
        });
    }
    check_staged(answers, staged, &deployment.bundle_id)?;
    let revision_id = staged
        .map(|s| s.revision_id)
        .or(answers.revision_id)
        .unwrap_or_else(|| RevisionId::from_ulid(envelope.minted.object_id));
    if environment.revision(revision_id).is_some() {
        return Err(ApplyError::AlreadyExists {
            what: "revision",
            id: revision_id.to_string(),
            hint: "; revisions are immutable, stage a new one".to_owned(),
        });
    }
    let drain_seconds = answers.drain_seconds.unwrap_or(DRAIN_SECONDS_DEFAULT);
    if drain_seconds > DRAIN_SECONDS_MAX {
        return Err(ApplyError::invalid(
            "drain_seconds",
            format!("{drain_seconds} is above the maximum of {DRAIN_SECONDS_MAX} seconds"),
        ));
    }
    let sequence = environment
        .revisions
        .iter()
        .filter(|r| r.deployment_id == answers.deployment_id)
        .map(|r| r.sequence)
        .max()
        .unwrap_or(0)
        + 1;
    let pack_list = staged.map_or_else(|| answers.pack_list.clone(), |s| s.pack_list.clone());
    // Computed, never a placeholder: an operator's own digest is kept.
    if let Some(scaling) = staged.and_then(|s| s.scaling.as_ref()) {
        super::scaling::check(scaling, "runtime.scaling")?;
    }
    let secret_pins = staged.map_or_else(Vec::new, |s| s.secret_pins.clone());
    crate::secret_pins::check_pins(&secret_pins, &environment.environment_id).map_err(|error| {
        let field = error.index().map_or_else(
            || "runtime.secrets".to_owned(),
            |i| format!("runtime.secrets[{i}]"),
        );
        ApplyError::invalid(field, error.to_string())
    })?;
    let pack_configs = crate::pack_config::project(
        &environment.bundles[index].config_overrides,
        revision_id,
        &environment.environment_id,
    )
    .map_err(|error| ApplyError::invalid("config_overrides", error.to_string()))?;
    let pack_config_refs = pack_configs
        .iter()
        .map(|config| crate::layout::pack_config_ref(revision_id, &config.pack_id))
        .collect();
    let config_digest = answers.config_digest.clone().unwrap_or_else(|| {
        crate::revision::config_digest(&environment.bundles[index].config_overrides, &pack_list)
    });
    let revision = Revision {
        schema: REVISION_SCHEMA.to_owned(),
        revision_id,
        env_id: environment.environment_id.clone(),
        bundle_id: deployment.bundle_id.clone(),
        deployment_id: answers.deployment_id,
        sequence,
        created_at: envelope.at,
        bundle_digest: staged
            .map(|s| s.bundle_digest.clone())
            .or_else(|| answers.bundle_digest.clone())
            .unwrap_or_else(ContentDigest::placeholder),
        bundle_source_uri: answers.bundle_source_uri.clone(),
        pack_list,
        pack_list_lock_ref: staged.map_or_else(
            || answers.pack_list_lock_ref.clone(),
            |s| s.pack_list_lock_ref.clone(),
        ),
        pack_config_refs,
        config_digest,
        signature_sidecar_ref: answers
            .signature_sidecar_ref
            .clone()
            .unwrap_or_else(|| "rev.sig".to_owned()),
        lifecycle: Lifecycle::Inactive,
        staged_at: None,
        warmed_at: None,
        lifecycle_changed_at: None,
        failure_reason: None,
        drain_seconds,
        abort_metrics: Vec::new(),
        runtime_instances: staged.and_then(|s| s.runtime_instances),
        placement: Vec::new(),
        scaling: staged.and_then(|s| s.scaling),
        desired_instances: None,
        secret_pins,
        deployer: None,
        pack_configs,
        config_reload: staged.map(|s| s.config_reload).unwrap_or_default(),
    };
    environment.bundles[index]
        .current_revisions
        .push(revision_id);
    environment.revisions.push(revision);
    let revision_index = environment.revisions.len() - 1;
    let revision = &mut environment.revisions[revision_index];
    // Created at `inactive`, then moved to `staged` through the matrix.
    debug_assert!(is_valid_transition(revision.lifecycle, Lifecycle::Staged));
    revision.lifecycle = Lifecycle::Staged;
    revision.staged_at = Some(envelope.at);
    revision.lifecycle_changed_at = Some(envelope.at);
    let result = result_for(&environment, revision_index);
    Ok(Outcome::changed(environment, result))
}

/// The warm gate: pure checks on the state that decide whether a revision
/// may become ready. A runtime deployer adds its own health checks on top.
fn gate_failures(environment: &Environment, revision: &Revision) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    if environment.binding(CapabilitySlot::Deployer).is_none() {
        failures.push((
            CHECK_DEPLOYER_BOUND.to_owned(),
            "no deployer env-pack is bound; bind one with `gtc op env-packs add`".to_owned(),
        ));
    }
    match environment
        .deployment(revision.deployment_id)
        .map(|d| d.status)
    {
        Some(DeploymentStatus::Active) => {}
        status => failures.push((
            CHECK_DEPLOYMENT_ACTIVE.to_owned(),
            format!(
                "deployment {} is {}; set its status to active with `gtc op bundles update`",
                revision.deployment_id,
                status.map_or("missing", |s| match s {
                    DeploymentStatus::Active => "active",
                    DeploymentStatus::Paused => "paused",
                    DeploymentStatus::Archived => "archived",
                })
            ),
        )),
    }
    failures
}

pub(crate) fn warm(
    mut environment: Environment,
    answers: &RevisionAnswers,
    external: &[FailedCheck],
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let index = revision_index(&environment, answers.revision_id)?;
    // Validate the whole chain before the gate so that a revision in the
    // wrong state is refused without being marked failed.
    let start = environment.revisions[index].lifecycle;
    if LifecycleVerb::Warm.chain(start).is_none() {
        return Err(ApplyError::InvalidTransition {
            revision_id: answers.revision_id,
            verb: LifecycleVerb::Warm,
            lifecycle: start,
            accepted: LifecycleVerb::Warm.accepted_starts().to_vec(),
        });
    }
    let mut failures = gate_failures(&environment, &environment.revisions[index]);
    failures.extend(
        external
            .iter()
            .map(|f| (f.check.clone(), f.message.clone())),
    );
    if !failures.is_empty() {
        let revision = &mut environment.revisions[index];
        let message = failures
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        if revision.lifecycle == Lifecycle::Failed {
            // Still failing: nothing to persist, report the gate again.
            return Err(gate_error(revision.revision_id, &failures, message));
        }
        let failed_from = revision.lifecycle;
        debug_assert!(is_valid_transition(failed_from, Lifecycle::Warming));
        revision.lifecycle = Lifecycle::Failed;
        revision.failure_reason = Some(message.clone());
        revision.lifecycle_changed_at = Some(envelope.at);
        let error = gate_error(revision.revision_id, &failures, message);
        let result = result_for(&environment, index);
        return Ok(Outcome {
            environment: Some(environment),
            result,
            changed: true,
            committed_error: Some(error),
        });
    }
    walk(&mut environment, index, LifecycleVerb::Warm, envelope.at)?;
    // The gate made sure a deployer is bound: this warm runs on it.
    let deployer = environment
        .binding(CapabilitySlot::Deployer)
        .map(|binding| binding.kind.clone());
    let revision = &mut environment.revisions[index];
    revision.deployer = deployer;
    revision.failure_reason = None;
    // A revision that scales warms with its initial count, whatever it had
    // scaled to when it last served.
    revision.desired_instances = None;
    if revision.runtime_instances.is_some() {
        // Something must run: stay `warming` until the deployer reports
        // that every instance is healthy (`RuntimeOutcome::Ready`).
        revision.lifecycle = Lifecycle::Warming;
        let result = result_for(&environment, index);
        return Ok(Outcome::changed(environment, result));
    }
    become_ready(&mut environment, index, envelope);
    let result = result_for(&environment, index);
    Ok(Outcome::changed(environment, result))
}

fn become_ready(environment: &mut Environment, index: usize, envelope: &CommandEnvelope) {
    let revision = &mut environment.revisions[index];
    revision.warmed_at = Some(envelope.at);
    revision.lifecycle_changed_at = Some(envelope.at);
    let deployment_id = revision.deployment_id;
    follow_latest(environment, deployment_id, envelope);
}

/// `revisions place`: records where the leader placed each revision's
/// instances. Only revisions that run (warming, ready, draining) can be
/// placed; a placement computed from a state that moved on is refused and
/// recomputed by the leader.
pub(crate) fn place(
    mut environment: Environment,
    answers: &PlacementAnswers,
) -> Result<Outcome, ApplyError> {
    let mut changed = false;
    for (revision_id, nodes) in &answers.placements {
        let index = revision_index(&environment, *revision_id)?;
        for (position, node) in nodes.iter().enumerate() {
            let valid = !node.is_empty()
                && node.len() <= NODE_NAME_BYTES_MAX
                && node
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid {
                return Err(ApplyError::invalid(
                    format!("placements.{revision_id}[{position}]"),
                    format!(
                        "{node:?} is not a node name (1 to {NODE_NAME_BYTES_MAX} of a-z, 0-9, -)"
                    ),
                ));
            }
        }
        let revision = &mut environment.revisions[index];
        if !matches!(
            revision.lifecycle,
            Lifecycle::Warming | Lifecycle::Ready | Lifecycle::Draining
        ) {
            return Err(ApplyError::Conflict {
                message: format!(
                    "revision {revision_id} is {}; only warming, ready or draining revisions are placed",
                    revision.lifecycle
                ),
            });
        }
        if revision.placement != *nodes {
            revision.placement = nodes.clone();
            changed = true;
        }
    }
    let result = json!({"environment_id": answers.environment_id, "placements": answers.placements, "changed": changed});
    Ok(Outcome {
        environment: Some(environment),
        result,
        changed,
        committed_error: None,
    })
}

/// A runtime report: the deployer finished warming or draining a revision.
pub(crate) fn report(
    mut environment: Environment,
    report: &RuntimeReport,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let index = revision_index(&environment, report.revision_id)?;
    let revision = &environment.revisions[index];
    let expected = match report.outcome {
        RuntimeOutcome::Ready | RuntimeOutcome::Failed { .. } => Lifecycle::Warming,
        RuntimeOutcome::Drained => Lifecycle::Draining,
    };
    if revision.lifecycle != expected {
        // The operator moved the revision on meanwhile (archived it while
        // it warmed, say): the report is stale and changes nothing.
        return Err(ApplyError::Conflict {
            message: format!(
                "revision {} is {}, not {expected}; the runtime report is stale",
                revision.revision_id, revision.lifecycle
            ),
        });
    }
    let next = match &report.outcome {
        RuntimeOutcome::Ready => Lifecycle::Ready,
        RuntimeOutcome::Failed { .. } => Lifecycle::Failed,
        RuntimeOutcome::Drained => Lifecycle::Inactive,
    };
    debug_assert!(is_valid_transition(expected, next));
    let revision = &mut environment.revisions[index];
    revision.lifecycle = next;
    revision.lifecycle_changed_at = Some(envelope.at);
    match &report.outcome {
        RuntimeOutcome::Ready => become_ready(&mut environment, index, envelope),
        RuntimeOutcome::Failed { reason } => revision.failure_reason = Some(reason.clone()),
        RuntimeOutcome::Drained => {}
    }
    let result = result_for(&environment, index);
    Ok(Outcome::changed(environment, result))
}

fn gate_error(
    revision_id: RevisionId,
    failures: &[(String, String)],
    message: String,
) -> ApplyError {
    ApplyError::HealthGateFailed {
        revision_id,
        failed_checks: failures.iter().map(|(check, _)| check.clone()).collect(),
        message,
    }
}

pub(crate) fn drain(
    mut environment: Environment,
    answers: &RevisionAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let index = revision_index(&environment, answers.revision_id)?;
    refuse_if_serving(&environment, answers.revision_id, "drain", envelope.at)?;
    walk(&mut environment, index, LifecycleVerb::Drain, envelope.at)?;
    let result = result_for(&environment, index);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn archive(
    mut environment: Environment,
    answers: &RevisionAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let index = revision_index(&environment, answers.revision_id)?;
    refuse_if_serving(&environment, answers.revision_id, "archive", envelope.at)?;
    walk(&mut environment, index, LifecycleVerb::Archive, envelope.at)?;
    let deployment_id = environment.revisions[index].deployment_id;
    if let Some(bundle) = environment
        .bundles
        .iter_mut()
        .find(|b| b.deployment_id == deployment_id)
    {
        bundle
            .current_revisions
            .retain(|id| *id != answers.revision_id);
    }
    let result = result_for(&environment, index);
    Ok(Outcome::changed(environment, result))
}
