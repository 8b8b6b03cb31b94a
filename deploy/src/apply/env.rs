//! Environment-level commands: init, create, update, restore, merge.

use serde_json::json;

use super::Outcome;
use crate::command::{
    CommandEnvelope, DefaultBinding, EnvCreateAnswers, EnvInitAnswers, EnvRestoreAnswers,
    EnvUpdateAnswers,
};
use crate::environment::{
    DEFAULT_LISTEN_ADDR, EnvPackBinding, Environment, normalize_public_base_url,
};
use crate::error::ApplyError;
use crate::ids::{EnvId, PackId};
use crate::precondition::Precondition;
use crate::state::EnvironmentState;

fn default_binding(default: &DefaultBinding) -> Result<EnvPackBinding, ApplyError> {
    let pack_ref: PackId = default
        .kind
        .as_str()
        .parse()
        .map_err(|e: crate::ids::OpaqueIdError| ApplyError::invalid("defaults", e.to_string()))?;
    Ok(EnvPackBinding {
        slot: default.slot,
        kind: default.kind.clone(),
        pack_ref,
        answers_ref: None,
        generation: 0,
        previous: None,
    })
}

/// `env init`: create `local` with the default bindings, or fill only the
/// slots that are missing. Untouched when nothing is missing.
pub(crate) fn init(
    current: Option<&Environment>,
    answers: &EnvInitAnswers,
    defaults: &[DefaultBinding],
    _envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let Some(existing) = current else {
        let mut environment = Environment::new(EnvId::local(), "local".to_owned());
        environment.host_config.listen_addr = DEFAULT_LISTEN_ADDR.parse().ok();
        if let Some(url) = &answers.public_base_url {
            environment.host_config.public_base_url = Some(normalize_public_base_url(url)?);
        }
        environment.packs = defaults
            .iter()
            .map(default_binding)
            .collect::<Result<_, _>>()?;
        let result = init_result(&environment, "created", None);
        return Ok(Outcome::changed(environment, result));
    };
    if answers.public_base_url.is_some() {
        return Err(ApplyError::invalid(
            "public_base_url",
            "the local environment already exists; change its public URL with `gtc op env update` instead of `env init`",
        ));
    }
    let mut environment = existing.clone();
    let mut added = Vec::new();
    for default in defaults {
        if environment.binding(default.slot).is_none() {
            environment.packs.push(default_binding(default)?);
            added.push(default.slot);
        }
    }
    if added.is_empty() {
        let result = init_result(&environment, "untouched", None);
        return Ok(Outcome {
            environment: Some(environment),
            result,
            changed: false,
            committed_error: None,
        });
    }
    let result = init_result(&environment, "healed", Some(&added));
    Ok(Outcome::changed(environment, result))
}

fn init_result(
    environment: &Environment,
    outcome: &str,
    added: Option<&[crate::descriptor::CapabilitySlot]>,
) -> serde_json::Value {
    let mut result = json!({
        "environment_id": environment.environment_id,
        "bound_slots": environment.packs.iter().map(|b| b.slot).collect::<Vec<_>>(),
        "pack_count": environment.packs.len(),
        "public_base_url": environment.host_config.public_base_url,
        "outcome": outcome,
    });
    if let Some(added) = added {
        result["added_slots"] = json!(added);
    }
    result
}

pub(crate) fn create(answers: &EnvCreateAnswers) -> Result<Outcome, ApplyError> {
    let mut environment = Environment::new(answers.environment_id.clone(), answers.name.clone());
    check_name(&answers.name)?;
    let host = &mut environment.host_config;
    host.region = answers.region.clone();
    host.tenant_org_id = answers.tenant_org_id.clone();
    host.listen_addr = answers.listen_addr;
    host.gui_enabled = answers.gui_enabled;
    if let Some(url) = &answers.public_base_url {
        host.public_base_url = Some(normalize_public_base_url(url)?);
    }
    let result = summary(&environment);
    Ok(Outcome::changed(environment, result))
}

fn check_name(name: &str) -> Result<(), ApplyError> {
    if name.trim().is_empty() || name.chars().count() > 128 {
        return Err(ApplyError::invalid(
            "name",
            "the environment name must be 1 to 128 characters and not only spaces",
        ));
    }
    Ok(())
}

pub(crate) fn update(
    mut environment: Environment,
    answers: &EnvUpdateAnswers,
) -> Result<Outcome, ApplyError> {
    let EnvUpdateAnswers {
        name,
        region,
        tenant_org_id,
        listen_addr,
        public_base_url,
        gui_enabled,
        credentials_ref,
        ..
    } = answers;
    if name.is_none()
        && region.is_none()
        && tenant_org_id.is_none()
        && listen_addr.is_none()
        && public_base_url.is_none()
        && gui_enabled.is_none()
        && credentials_ref.is_none()
    {
        // An update with nothing in it is a mistake (an empty body, a
        // misspelt file), not a reason to commit a new generation.
        return Err(ApplyError::invalid(
            ".",
            "nothing to change: give at least one of name, region, tenant_org_id, listen_addr, public_base_url, gui_enabled, credentials_ref",
        ));
    }
    if let Some(reference) = credentials_ref {
        environment.credentials_ref = Some(reference.clone());
    }
    if let Some(name) = &answers.name {
        check_name(name)?;
        environment.name = name.clone();
    }
    let host = &mut environment.host_config;
    if let Some(region) = &answers.region {
        host.region = Some(region.clone());
    }
    if let Some(org) = &answers.tenant_org_id {
        host.tenant_org_id = Some(org.clone());
    }
    if let Some(addr) = answers.listen_addr {
        host.listen_addr = Some(addr);
    }
    if let Some(gui) = answers.gui_enabled {
        host.gui_enabled = Some(gui);
    }
    if let Some(url) = &answers.public_base_url {
        host.public_base_url = Some(normalize_public_base_url(url)?);
    }
    let result = summary(&environment);
    Ok(Outcome::changed(environment, result))
}

/// The short description `env create`, `update` and `show` print.
pub fn summary(environment: &Environment) -> serde_json::Value {
    json!({
        "environment_id": environment.environment_id,
        "name": environment.name,
        "host_config": environment.host_config,
        "bound_slots": environment.packs.iter().map(|b| b.slot).collect::<Vec<_>>(),
        "bundles": environment.bundles.len(),
        "revisions": environment.revisions.len(),
        "traffic_splits": environment.traffic_splits.len(),
    })
}

pub(crate) fn restore(
    current: &EnvironmentState,
    answers: &EnvRestoreAnswers,
    snapshot: &EnvironmentState,
) -> Result<Outcome, ApplyError> {
    Precondition {
        if_match: None,
        expected_generation: Some(answers.expected_generation),
    }
    .check(current)?;
    if snapshot.env_id() != current.env_id() {
        return Err(ApplyError::invalid(
            "backup_id",
            format!(
                "backup {} holds environment {}, not {}",
                answers.backup_id,
                snapshot.env_id(),
                current.env_id()
            ),
        ));
    }
    let result = json!({
        "environment_id": current.env_id(),
        "backup_id": answers.backup_id,
        "restored_from_generation": snapshot.generation,
        "previous_generation": current.generation,
    });
    Ok(Outcome::changed(snapshot.environment.clone(), result))
}

pub(crate) fn merge_bindings(
    mut environment: Environment,
    source: &EnvId,
    bindings: &[EnvPackBinding],
) -> Result<Outcome, ApplyError> {
    let mut merged = Vec::new();
    for binding in bindings {
        if environment.binding(binding.slot).is_none() {
            environment.packs.push(binding.clone());
            merged.push(binding.slot);
        }
    }
    let result = json!({
        "environment_id": environment.environment_id,
        "source": source,
        "merged_slots": merged,
    });
    Ok(Outcome {
        changed: !merged.is_empty(),
        environment: Some(environment),
        result,
        committed_error: None,
    })
}
