//! `revisions scale` (a person sets how a revision scales) and the
//! autoscaler's decisions (the instance count it should run).
//!
//! The state machine holds the bounds: a decision outside the revision's
//! `min_instances..=max_instances` is refused, whoever made it, so no
//! leader, old or confused, can commit a count the operator did not allow.

use serde_json::json;

use super::Outcome;
use super::revisions::{result_for, revision_index};
use crate::command::{RevisionScaleAnswers, ScaleDecisionAnswers};
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::lifecycle::Lifecycle;
use crate::scaling::ScalingSettings;

/// Validates settings, naming the field at fault under `prefix`.
pub(super) fn check(settings: &ScalingSettings, prefix: &str) -> Result<(), ApplyError> {
    settings
        .validate()
        .map_err(|error| ApplyError::invalid(format!("{prefix}.{}", error.field()), error.detail()))
}

/// `revisions scale`: records the settings and brings the committed count
/// within the new bounds. Only a revision with something to run that has
/// not begun to drain can be scaled.
pub(crate) fn set(
    mut environment: Environment,
    answers: &RevisionScaleAnswers,
) -> Result<Outcome, ApplyError> {
    check(&answers.scaling, "scaling")?;
    let index = revision_index(&environment, answers.revision_id)?;
    let revision = &mut environment.revisions[index];
    let Some(current) = revision.instance_count() else {
        return Err(ApplyError::Conflict {
            message: format!(
                "revision {} has nothing to run (it was staged without a bundle with a runtime section), so it has no instances to scale",
                revision.revision_id
            ),
        });
    };
    if !matches!(
        revision.lifecycle,
        Lifecycle::Staged | Lifecycle::Warming | Lifecycle::Ready
    ) {
        return Err(ApplyError::Conflict {
            message: format!(
                "revision {} is {}; only staged, warming or ready revisions are scaled",
                revision.revision_id, revision.lifecycle
            ),
        });
    }
    let desired = if revision.lifecycle == Lifecycle::Staged {
        None
    } else {
        Some(answers.scaling.clamp(current))
    };
    let changed =
        revision.scaling != Some(answers.scaling) || revision.desired_instances != desired;
    revision.scaling = Some(answers.scaling);
    revision.desired_instances = desired;
    let mut result = result_for(&environment, index);
    result["scaling"] = json!(answers.scaling);
    result["instances"] = json!(environment.revisions[index].instance_count());
    Ok(Outcome {
        environment: Some(environment),
        result,
        changed,
        committed_error: None,
    })
}

/// The autoscaler's decision: the count a warming or ready revision that
/// scales should run. The same count again changes nothing.
pub(crate) fn decide(
    mut environment: Environment,
    answers: &ScaleDecisionAnswers,
) -> Result<Outcome, ApplyError> {
    let index = revision_index(&environment, answers.revision_id)?;
    let revision = &mut environment.revisions[index];
    let Some(scaling) = revision.scaling else {
        return Err(ApplyError::Conflict {
            message: format!(
                "revision {} has no scaling settings; set them with `gtc op revisions scale`",
                revision.revision_id
            ),
        });
    };
    if !matches!(revision.lifecycle, Lifecycle::Warming | Lifecycle::Ready) {
        return Err(ApplyError::Conflict {
            message: format!(
                "revision {} is {}; only warming or ready revisions are scaled",
                revision.revision_id, revision.lifecycle
            ),
        });
    }
    if scaling.clamp(answers.desired) != answers.desired {
        return Err(ApplyError::invalid(
            "desired",
            format!(
                "{} is outside the revision's min_instances..=max_instances ({}..={})",
                answers.desired, scaling.min_instances, scaling.max_instances
            ),
        ));
    }
    let changed = revision.instance_count() != Some(answers.desired);
    if changed {
        revision.desired_instances = Some(answers.desired);
    }
    let mut result = result_for(&environment, index);
    result["instances"] = json!(answers.desired);
    result["mode"] = json!(answers.mode);
    Ok(Outcome {
        environment: Some(environment),
        result,
        changed,
        committed_error: None,
    })
}
