//! Bundle deployment commands: add, update, remove.

use serde_json::json;

use super::Outcome;
use crate::bundle::{BUNDLE_DEPLOYMENT_SCHEMA, BundleDeployment, DeploymentStatus, RevenueShare};
use crate::command::{BundleAddAnswers, BundleUpdateAnswers, CommandEnvelope, DeploymentAnswers};
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::ids::{CustomerId, DeploymentId, PartyId};
use crate::lifecycle::Lifecycle;

/// The summary row `bundles list` prints.
pub fn summary(bundle: &BundleDeployment) -> serde_json::Value {
    json!({
        "deployment_id": bundle.deployment_id,
        "bundle_id": bundle.bundle_id,
        "customer_id": bundle.customer_id,
        "status": bundle.status,
        "route_binding": bundle.route_binding,
        "current_revisions": bundle.current_revisions,
    })
}

pub(crate) fn deployment_index(
    environment: &Environment,
    deployment_id: DeploymentId,
) -> Result<usize, ApplyError> {
    environment
        .bundles
        .iter()
        .position(|b| b.deployment_id == deployment_id)
        .ok_or_else(|| {
            ApplyError::not_found(
                "deployment",
                deployment_id,
                &environment.environment_id,
                "; list deployments with `gtc op bundles list`",
            )
        })
}

fn default_revenue_share() -> Vec<RevenueShare> {
    vec![RevenueShare {
        party_id: PartyId::from_static("greentic"),
        basis_points: 10_000,
    }]
}

pub(crate) fn add(
    mut environment: Environment,
    answers: &BundleAddAnswers,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let customer_id = match (&answers.customer_id, environment.environment_id.is_local()) {
        (Some(customer), _) => customer.clone(),
        (None, true) => CustomerId::local_dev(),
        (None, false) => {
            return Err(ApplyError::invalid(
                "customer_id",
                format!(
                    "customer_id is required outside the local environment; add \"customer_id\" to the answers for {}",
                    environment.environment_id
                ),
            ));
        }
    };
    if let Some(existing) = environment.bundles.iter().find(|b| {
        b.bundle_id == answers.bundle_id
            && b.customer_id == customer_id
            && b.status != DeploymentStatus::Archived
    }) {
        return Err(ApplyError::AlreadyExists {
            what: "deployment of bundle",
            id: format!("{} for customer {}", answers.bundle_id, customer_id),
            hint: format!(
                " as {}; change it with `gtc op bundles update`",
                existing.deployment_id
            ),
        });
    }
    if let Some(taken) = environment.route_taken(&answers.route_binding, None) {
        return Err(ApplyError::Validation(taken));
    }
    let deployment = BundleDeployment {
        schema: BUNDLE_DEPLOYMENT_SCHEMA.to_owned(),
        deployment_id: DeploymentId::from_ulid(envelope.minted.object_id),
        env_id: environment.environment_id.clone(),
        bundle_id: answers.bundle_id.clone(),
        revenue_policy_ref: crate::bundle::revenue_policy_ref(&answers.bundle_id, &customer_id, 1),
        customer_id,
        status: DeploymentStatus::Active,
        current_revisions: Vec::new(),
        route_binding: answers.route_binding.clone(),
        revenue_share: answers
            .revenue_share
            .clone()
            .unwrap_or_else(default_revenue_share),
        usage: None,
        created_at: envelope.at,
        authorization_ref: answers
            .authorization_ref
            .clone()
            .unwrap_or_else(|| "auth.json".to_owned()),
        config_overrides: answers.config_overrides.clone().unwrap_or_default(),
    };
    if deployment.deployment_id.ulid().is_nil()
        || environment.deployment(deployment.deployment_id).is_some()
    {
        return Err(ApplyError::Conflict {
            message: format!(
                "minted deployment id {} is already in use; retry",
                deployment.deployment_id
            ),
        });
    }
    let result = summary(&deployment);
    environment.bundles.push(deployment);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn update(
    mut environment: Environment,
    answers: &BundleUpdateAnswers,
) -> Result<Outcome, ApplyError> {
    if answers.status.is_none()
        && answers.route_binding.is_none()
        && answers.revenue_share.is_none()
        && answers.config_overrides.is_none()
    {
        // An update with nothing in it is a mistake, not a new generation.
        return Err(ApplyError::invalid(
            ".",
            "nothing to change: give at least one of status, route_binding, revenue_share, config_overrides",
        ));
    }
    let index = deployment_index(&environment, answers.deployment_id)?;
    let has_split = environment.split(answers.deployment_id).is_some();
    let has_live_revisions = environment
        .revisions
        .iter()
        .any(|r| r.deployment_id == answers.deployment_id && r.lifecycle != Lifecycle::Archived);
    if let Some(route_binding) = &answers.route_binding
        && answers.status != Some(DeploymentStatus::Archived)
        && let Some(taken) = environment.route_taken(route_binding, Some(answers.deployment_id))
    {
        return Err(ApplyError::Validation(taken));
    }
    let bundle = &mut environment.bundles[index];
    if bundle.status == DeploymentStatus::Archived {
        return Err(ApplyError::Conflict {
            message: format!(
                "deployment {} is archived and can no longer change",
                bundle.deployment_id
            ),
        });
    }
    if let Some(status) = answers.status {
        if status == DeploymentStatus::Archived && (has_split || has_live_revisions) {
            return Err(ApplyError::Conflict {
                message: format!(
                    "cannot archive deployment {} while it has a traffic split or unarchived revisions; clear its traffic and archive its revisions first",
                    bundle.deployment_id
                ),
            });
        }
        bundle.status = status;
    }
    if let Some(route_binding) = &answers.route_binding {
        bundle.route_binding = route_binding.clone();
    }
    if let Some(shares) = &answers.revenue_share
        && *shares != bundle.revenue_share
    {
        // Revenue policies are versioned documents: a new share is a new
        // version, and the one written before stays as it was.
        let version = crate::bundle::revenue_policy_version(&bundle.revenue_policy_ref)
            .unwrap_or(1)
            .saturating_add(1);
        bundle.revenue_policy_ref =
            crate::bundle::revenue_policy_ref(&bundle.bundle_id, &bundle.customer_id, version);
        bundle.revenue_share = shares.clone();
    }
    if let Some(overrides) = &answers.config_overrides {
        bundle.config_overrides = overrides.clone();
    }
    let result = summary(bundle);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn remove(
    mut environment: Environment,
    answers: &DeploymentAnswers,
) -> Result<Outcome, ApplyError> {
    let index = deployment_index(&environment, answers.deployment_id)?;
    if environment.split(answers.deployment_id).is_some() {
        return Err(ApplyError::Conflict {
            message: format!(
                "cannot remove deployment {}: it still has a traffic split; stop its traffic with `gtc op traffic clear` first",
                answers.deployment_id
            ),
        });
    }
    if let Some(live) = environment
        .revisions
        .iter()
        .find(|r| r.deployment_id == answers.deployment_id && r.lifecycle != Lifecycle::Archived)
    {
        return Err(ApplyError::Conflict {
            message: format!(
                "cannot remove deployment {}: revision {} is {}; archive every revision first",
                answers.deployment_id, live.revision_id, live.lifecycle
            ),
        });
    }
    let removed = environment.bundles.remove(index);
    let before = environment.revisions.len();
    environment
        .revisions
        .retain(|r| r.deployment_id != removed.deployment_id);
    let result = json!({
        "environment_id": environment.environment_id,
        "deployment_id": removed.deployment_id,
        "bundle_id": removed.bundle_id,
        "archived_revisions_dropped": before - environment.revisions.len(),
    });
    Ok(Outcome::changed(environment, result))
}
