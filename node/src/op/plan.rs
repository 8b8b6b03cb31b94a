//! `gtc op traffic plan` and `gtc op rollouts start --plan`: what a change
//! would do, computed by the one pure `apply` on the environment as it is
//! now (read from the store or, with `--node`, from the node), and nothing
//! written or audited. The answer lists every deployment whose split
//! would change, before and after, and the revisions the new split needs
//! ready; a change `apply` would refuse fails with that refusal.

use std::collections::BTreeMap;

use deploy::command::Command;
use deploy::environment::Environment;
use deploy::ids::DeploymentId;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

/// Each deployment's split entries as (revision, weight in bps, tag).
fn splits(environment: &Environment) -> BTreeMap<DeploymentId, Vec<Value>> {
    environment
        .traffic_splits
        .iter()
        .map(|split| {
            let entries = split
                .entries
                .iter()
                .map(|e| json!({"revision_id": e.revision_id, "weight_bps": e.weight_bps, "tag": e.tag}))
                .collect();
            (split.deployment_id, entries)
        })
        .collect()
}

/// The plan of `command`: never submitted.
pub fn plan(context: &Context, command: Command) -> Result<Report, CliError> {
    let (noun, verb) = (command.noun(), command.verb());
    let state = context.load(command.env_id().as_str())?;
    let envelope = context.envelope(command);
    if envelope.authorization.decision == deploy::audit::Decision::Deny {
        return Err(context
            .checks
            .denial(&envelope.authorization, &envelope.command.env_id()));
    }
    // A key already used plans as its replay: nothing would change.
    let recorded = match envelope.idempotency_key() {
        Some(key) => context.idempotency_record(state.env_id().as_str(), key)?,
        None => None,
    };
    let applied = deploy::apply::apply(Some(&state), recorded.as_ref(), &envelope)?;
    let after_state = applied.state.as_ref().unwrap_or(&state);
    let (before, after) = (splits(&state.environment), splits(&after_state.environment));
    let mut deployments: Vec<DeploymentId> = before.keys().chain(after.keys()).copied().collect();
    deployments.sort();
    deployments.dedup();
    let changes: Vec<Value> = deployments
        .into_iter()
        .filter(|d| before.get(d) != after.get(d))
        .map(|deployment| {
            let must_be_ready: Vec<Value> = after
                .get(&deployment)
                .into_iter()
                .flatten()
                .map(|entry| {
                    let revision = entry["revision_id"].as_str().unwrap_or_default();
                    let lifecycle = after_state
                        .environment
                        .revisions
                        .iter()
                        .find(|r| r.revision_id.to_string() == revision)
                        .map(|r| r.lifecycle.as_str());
                    json!({"revision_id": revision, "lifecycle": lifecycle})
                })
                .collect();
            json!({
                "deployment_id": deployment,
                "before": before.get(&deployment),
                "after": after.get(&deployment),
                "must_be_ready": must_be_ready,
            })
        })
        .collect();
    let mut result = json!({
        "environment_id": state.env_id(),
        "would_apply": format!("{noun} {verb}"),
        "generation_now": state.generation,
        "changes": changes,
        "written": false,
    });
    if let Command::RolloutStart(answers) = &envelope.command
        && let Some(rollout) = after_state
            .environment
            .active_rollout(answers.deployment_id)
    {
        result["rollout"] = deploy::apply::rollout_view(rollout);
    }
    Ok(Report::new(noun, verb, result))
}
