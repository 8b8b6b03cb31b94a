//! Traffic commands: set, rollback, clear, and following `LATEST`.

use serde_json::json;

use super::Outcome;
use super::bundles::deployment_index;
use crate::bundle::DeploymentStatus;
use crate::command::{
    CommandEnvelope, DeploymentAnswers, LATEST_TARGET, TrafficEntryAnswers, TrafficSetAnswers,
};
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::ids::{DeploymentId, RevisionId};
use crate::lifecycle::Lifecycle;
use crate::revision::Revision;
use crate::traffic::{
    BASIS_POINTS_TOTAL, SplitError, SplitSnapshot, TRAFFIC_SPLIT_SCHEMA, TrafficEntry,
    TrafficSplit, validate_entries,
};

/// The split as `traffic set`, `show` and `rollback` echo it.
pub fn split_view(split: &TrafficSplit) -> serde_json::Value {
    json!({
        "environment_id": split.env_id,
        "deployment_id": split.deployment_id,
        "bundle_id": split.bundle_id,
        "generation": split.generation,
        "entries": split.entries.iter().map(|e| json!({
            "revision_id": e.revision_id,
            "weight_bps": e.weight_bps,
            "weight_percent": f64::from(e.weight_bps) / 100.0,
            "latest": e.latest,
            "tag": e.tag,
        })).collect::<Vec<_>>(),
        "updated_at": split.updated_at,
        "updated_by": split.updated_by,
        "idempotency_key": split.idempotency_key,
        "rollback_available": split.previous.is_some(),
    })
}

/// Converts a requested weight to basis points.
fn weight_bps(entry: &TrafficEntryAnswers, index: usize) -> Result<u32, ApplyError> {
    let field = format!("entries[{index}]");
    if entry.weight_bps.is_some() && entry.weight_percent.is_some() {
        return Err(ApplyError::invalid(
            field,
            "give one weight, not both: \"weight_bps\" (0-10000) or \"weight_percent\" (0-100)",
        ));
    }
    if let Some(bps) = entry.weight_bps {
        if bps > BASIS_POINTS_TOTAL {
            return Err(ApplyError::invalid(
                format!("{field}.weight_bps"),
                format!("{bps} is above 10000 bps (100%)"),
            ));
        }
        return Ok(bps);
    }
    let Some(percent) = entry.weight_percent else {
        return Err(ApplyError::invalid(
            field,
            "give a weight: \"weight_bps\" (0-10000) or \"weight_percent\" (0-100)",
        ));
    };
    if !percent.is_finite() || !(0.0..=100.0).contains(&percent) {
        return Err(ApplyError::invalid(
            format!("{field}.weight_percent"),
            format!("{percent} is not between 0 and 100"),
        ));
    }
    let scaled = percent * 100.0;
    let rounded = scaled.round();
    if (scaled - rounded).abs() > 1e-6 {
        return Err(ApplyError::invalid(
            format!("{field}.weight_percent"),
            format!(
                "{percent} has more than two decimals; the finest weight is 0.01% (1 bps), use weight_bps for exact values"
            ),
        ));
    }
    // `rounded` is in 0..=10000, so the cast is exact.
    Ok(rounded as u32)
}

/// The newest ready revision of a deployment that has something to run,
/// by sequence.
fn latest_ready(environment: &Environment, deployment_id: DeploymentId) -> Option<RevisionId> {
    environment
        .revisions
        .iter()
        .filter(|r| {
            r.deployment_id == deployment_id
                && r.lifecycle == Lifecycle::Ready
                && r.has_something_to_run()
        })
        .max_by_key(|r| r.sequence)
        .map(|r| r.revision_id)
}

fn resolve_target(
    environment: &Environment,
    deployment_id: DeploymentId,
    target: &str,
    index: usize,
) -> Result<(RevisionId, bool), ApplyError> {
    let field = format!("entries[{index}].revision_id");
    if target == LATEST_TARGET {
        return latest_ready(environment, deployment_id)
            .map(|id| (id, true))
            .ok_or_else(|| ApplyError::Conflict {
                message: format!(
                    "{field}: LATEST needs a ready revision with something to run, but deployment {deployment_id} has none; stage a bundle with a runtime section and warm it with `gtc op revisions warm`"
                ),
            });
    }
    let revision_id: RevisionId = target.parse().map_err(|e: crate::ids::UlidError| {
        ApplyError::invalid(&field, format!("{e}, or the literal LATEST"))
    })?;
    servable(environment, deployment_id, revision_id, &field)?;
    Ok((revision_id, false))
}

/// `revision_id` if it can take traffic in `deployment_id`'s split: it
/// exists, belongs to that deployment, is ready and has something to run.
/// `field` names the payload field in the refusal (traffic entries and
/// rollouts both ask).
pub(crate) fn servable(
    environment: &Environment,
    deployment_id: DeploymentId,
    revision_id: RevisionId,
    field: &str,
) -> Result<(), ApplyError> {
    let revision = environment.revision(revision_id).ok_or_else(|| {
        ApplyError::not_found(
            "revision",
            revision_id,
            &environment.environment_id,
            "; list revisions with `gtc op revisions list`",
        )
    })?;
    if revision.deployment_id != deployment_id {
        return Err(ApplyError::invalid(
            field,
            format!(
                "revision {revision_id} belongs to deployment {}, not {deployment_id}; a split only routes between revisions of one deployment",
                revision.deployment_id
            ),
        ));
    }
    if !revision.lifecycle.can_serve() {
        return Err(ApplyError::Conflict {
            message: format!(
                "{field}: revision {revision_id} is {}; only ready revisions may receive traffic, warm it with `gtc op revisions warm` first",
                revision.lifecycle
            ),
        });
    }
    if let Some(reason) = revision.nothing_to_run_reason() {
        return Err(ApplyError::invalid(field, reason));
    }
    Ok(())
}

fn split_error(error: SplitError) -> ApplyError {
    ApplyError::invalid("entries", error.to_string())
}

pub(crate) fn set(
    mut environment: Environment,
    answers: &TrafficSetAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    if answers.idempotency_key.trim().is_empty() {
        return Err(ApplyError::invalid(
            "idempotency_key",
            "must not be empty; use a fresh unique value (a ULID is a good choice) for every new split",
        ));
    }
    let index = deployment_index(&environment, answers.deployment_id)?;
    let deployment = &environment.bundles[index];
    if deployment.status == DeploymentStatus::Archived {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} is archived and cannot receive traffic",
                deployment.deployment_id
            ),
        });
    }
    let bundle_id = deployment.bundle_id.clone();
    let mut entries = Vec::with_capacity(answers.entries.len());
    for (position, entry) in answers.entries.iter().enumerate() {
        // The entry's own shape first: a malformed weight is the caller's
        // to fix whatever state the revisions are in.
        let weight_bps = weight_bps(entry, position)?;
        let (revision_id, latest) = resolve_target(
            &environment,
            answers.deployment_id,
            &entry.revision_id,
            position,
        )?;
        entries.push(TrafficEntry {
            revision_id,
            weight_bps,
            latest,
            tag: entry.tag.clone(),
        });
    }
    validate_entries(&entries).map_err(split_error)?;
    if let Some(existing) = environment.split(answers.deployment_id)
        && existing.idempotency_key == answers.idempotency_key
    {
        // The key was used for the current split but its record has left
        // the bounded idempotency window: same entries replay, others conflict.
        if crate::traffic::same_entries(&existing.entries, &entries) {
            let result = split_view(existing);
            return Ok(Outcome {
                environment: Some(environment),
                result,
                changed: false,
                committed_error: None,
            });
        }
        return Err(ApplyError::IdempotencyConflict {
            key: answers.idempotency_key.clone(),
            verb: "traffic set".to_owned(),
        });
    }
    refuse_under_rollout(&environment, answers.deployment_id, "traffic set")?;
    let updated_by = answers
        .updated_by
        .clone()
        .unwrap_or_else(|| envelope.actor.display_name());
    let split = put_split(
        &mut environment,
        NewSplit {
            deployment_id: answers.deployment_id,
            bundle_id,
            entries,
            at: envelope.at,
            updated_by,
            idempotency_key: answers.idempotency_key.clone(),
            authorization_ref: answers.authorization_ref.clone(),
        },
    );
    Ok(Outcome::changed(environment, split_view(&split)))
}

/// A split about to replace a deployment's current one.
pub(crate) struct NewSplit {
    pub deployment_id: DeploymentId,
    pub bundle_id: crate::ids::BundleId,
    pub entries: Vec<TrafficEntry>,
    pub at: crate::Timestamp,
    pub updated_by: String,
    pub idempotency_key: String,
    pub authorization_ref: Option<String>,
}

/// Replaces the deployment's split with already validated entries (the
/// one before becomes its rollback target), or writes its first one;
/// returns the split as stored.
pub(crate) fn put_split(environment: &mut Environment, new: NewSplit) -> TrafficSplit {
    match environment
        .traffic_splits
        .iter_mut()
        .find(|s| s.deployment_id == new.deployment_id)
    {
        Some(split) => {
            split.previous = Some(snapshot(split));
            split.generation += 1;
            split.entries = new.entries;
            split.updated_at = new.at;
            split.updated_by = new.updated_by;
            split.idempotency_key = new.idempotency_key;
            if let Some(reference) = new.authorization_ref {
                split.authorization_ref = reference;
            }
            split.clone()
        }
        None => {
            let split = TrafficSplit {
                schema: TRAFFIC_SPLIT_SCHEMA.to_owned(),
                env_id: environment.environment_id.clone(),
                deployment_id: new.deployment_id,
                bundle_id: new.bundle_id,
                generation: 0,
                entries: new.entries,
                updated_at: new.at,
                updated_by: new.updated_by,
                idempotency_key: new.idempotency_key,
                authorization_ref: new
                    .authorization_ref
                    .unwrap_or_else(|| "auth.json".to_owned()),
                previous: None,
            };
            environment.traffic_splits.push(split.clone());
            split
        }
    }
}

/// A rollout owns its deployment's split while it runs: a person's own
/// traffic change is refused until it is promoted or aborted (pausing it
/// does not release the split: a paused rollout resumes from its step).
pub(crate) fn refuse_under_rollout(
    environment: &Environment,
    deployment_id: DeploymentId,
    verb: &str,
) -> Result<(), ApplyError> {
    let Some(rollout) = environment.active_rollout(deployment_id) else {
        return Ok(());
    };
    Err(ApplyError::Conflict {
        message: format!(
            "cannot {verb}: a rollout of deployment {deployment_id} to revision {} is {} at step {} and owns its split; promote it (`gtc op rollouts promote`) or abort it (`gtc op rollouts abort`) first",
            rollout.candidate_revision_id, rollout.state, rollout.step
        ),
    })
}

fn snapshot(split: &TrafficSplit) -> SplitSnapshot {
    SplitSnapshot {
        generation: split.generation,
        entries: split.entries.clone(),
        updated_at: split.updated_at,
        updated_by: split.updated_by.clone(),
        idempotency_key: split.idempotency_key.clone(),
    }
}

pub(crate) fn rollback(
    mut environment: Environment,
    answers: &DeploymentAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    deployment_index(&environment, answers.deployment_id)?;
    refuse_under_rollout(&environment, answers.deployment_id, "traffic rollback")?;
    let Some(position) = environment
        .traffic_splits
        .iter()
        .position(|s| s.deployment_id == answers.deployment_id)
    else {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} has no traffic split to roll back",
                answers.deployment_id
            ),
        });
    };
    let Some(previous) = environment.traffic_splits[position].previous.clone() else {
        return Err(ApplyError::Conflict {
            message: format!(
                "the traffic split of deployment {} has no previous split; rollback undoes one `traffic set`",
                answers.deployment_id
            ),
        });
    };
    let mut entries = previous.entries.clone();
    for entry in &mut entries {
        if entry.latest
            && let Some(latest) = latest_ready(&environment, answers.deployment_id)
        {
            entry.revision_id = latest;
        }
        let revision = environment.revision(entry.revision_id);
        let lifecycle = revision.map(|r| r.lifecycle);
        if lifecycle != Some(Lifecycle::Ready) {
            return Err(ApplyError::Conflict {
                message: format!(
                    "cannot roll back: the previous split sends traffic to revision {}, which is {}; only ready revisions may serve",
                    entry.revision_id,
                    lifecycle.map_or("gone", |l| l.as_str())
                ),
            });
        }
        if let Some(reason) = revision.and_then(Revision::nothing_to_run_reason) {
            return Err(ApplyError::Conflict {
                message: format!("cannot roll back: {reason}"),
            });
        }
    }
    merge_duplicates(&mut entries);
    let split = &mut environment.traffic_splits[position];
    let replaced = snapshot(split);
    split.entries = entries;
    split.generation += 1;
    split.updated_at = envelope.at;
    split.updated_by = envelope.actor.display_name();
    split.idempotency_key = previous.idempotency_key;
    split.previous = Some(replaced);
    let result = split_view(split);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn clear(
    mut environment: Environment,
    answers: &DeploymentAnswers,
) -> Result<Outcome, ApplyError> {
    deployment_index(&environment, answers.deployment_id)?;
    refuse_under_rollout(&environment, answers.deployment_id, "traffic clear")?;
    let before = environment.traffic_splits.len();
    environment
        .traffic_splits
        .retain(|s| s.deployment_id != answers.deployment_id);
    if environment.traffic_splits.len() == before {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} has no traffic split to clear",
                answers.deployment_id
            ),
        });
    }
    let result = json!({
        "environment_id": environment.environment_id,
        "deployment_id": answers.deployment_id,
        "cleared": true,
    });
    Ok(Outcome::changed(environment, result))
}

/// Two entries for one revision (a `latest` entry that caught up with an
/// explicit one) become one entry with the summed weight.
fn merge_duplicates(entries: &mut Vec<TrafficEntry>) {
    let mut merged: Vec<TrafficEntry> = Vec::with_capacity(entries.len());
    for entry in entries.drain(..) {
        match merged
            .iter_mut()
            .find(|m| m.revision_id == entry.revision_id)
        {
            Some(existing) => {
                existing.weight_bps += entry.weight_bps;
                existing.latest |= entry.latest;
                if existing.tag.is_none() {
                    existing.tag = entry.tag;
                }
            }
            None => merged.push(entry),
        }
    }
    *entries = merged;
}

/// Re-points `latest` entries of the deployment's split at its newest ready
/// revision; bumps the split generation when anything moved.
pub(crate) fn follow_latest(
    environment: &mut Environment,
    deployment_id: DeploymentId,
    envelope: &CommandEnvelope,
) {
    let Some(latest) = latest_ready(environment, deployment_id) else {
        return;
    };
    let Some(split) = environment
        .traffic_splits
        .iter_mut()
        .find(|s| s.deployment_id == deployment_id)
    else {
        return;
    };
    let moved = split
        .entries
        .iter()
        .any(|e| e.latest && e.revision_id != latest);
    if !moved {
        return;
    }
    for entry in &mut split.entries {
        if entry.latest {
            entry.revision_id = latest;
        }
    }
    merge_duplicates(&mut split.entries);
    split.generation += 1;
    split.updated_at = envelope.at;
    split.updated_by = "LATEST".to_owned();
}
