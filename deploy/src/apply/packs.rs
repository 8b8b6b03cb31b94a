//! Env-pack binding commands: add, update, remove, rollback.

use serde_json::json;

use super::Outcome;
use crate::command::{PackBindAnswers, PackSlotAnswers};
use crate::descriptor::CapabilitySlot;
use crate::environment::{BindingSnapshot, EnvPackBinding, Environment};
use crate::error::ApplyError;
use crate::ids::PackId;
use crate::lifecycle::Lifecycle;

fn check_answers_ref(answers_ref: Option<&String>) -> Result<(), ApplyError> {
    let Some(path) = answers_ref else {
        return Ok(());
    };
    let unsafe_path = path.is_empty()
        || path.starts_with('/')
        || path.contains('\\')
        || path
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if unsafe_path {
        return Err(ApplyError::invalid(
            "answers_ref",
            format!(
                "{path:?} must be a relative path inside the environment folder without '.' or '..' segments, e.g. env-packs/deployer/answers.json"
            ),
        ));
    }
    Ok(())
}

fn pack_ref(answers: &PackBindAnswers) -> Result<PackId, ApplyError> {
    match &answers.pack_ref {
        Some(pack_ref) => Ok(pack_ref.clone()),
        None => answers
            .kind
            .as_str()
            .parse()
            .map_err(|e: crate::ids::OpaqueIdError| ApplyError::invalid("pack_ref", e.to_string())),
    }
}

fn binding_summary(environment: &Environment, binding: &EnvPackBinding) -> serde_json::Value {
    json!({
        "environment_id": environment.environment_id,
        "slot": binding.slot,
        "kind": binding.kind,
        "pack_ref": binding.pack_ref,
        "generation": binding.generation,
        "has_previous": binding.previous.is_some(),
    })
}

fn slot_index(
    environment: &Environment,
    slot: CapabilitySlot,
    verb: &str,
) -> Result<usize, ApplyError> {
    environment
        .packs
        .iter()
        .position(|b| b.slot == slot)
        .ok_or_else(|| ApplyError::Conflict {
            message: format!(
                "cannot {verb} slot {slot} of environment {}: nothing is bound there; bind a pack with `gtc op env-packs add`",
                environment.environment_id
            ),
        })
}

pub(crate) fn add(
    mut environment: Environment,
    answers: &PackBindAnswers,
) -> Result<Outcome, ApplyError> {
    check_answers_ref(answers.answers_ref.as_ref())?;
    if let Some(existing) = environment.binding(answers.slot) {
        return Err(ApplyError::Conflict {
            message: format!(
                "slot {} is already bound to {}; change it with `gtc op env-packs update`",
                answers.slot, existing.kind
            ),
        });
    }
    let binding = EnvPackBinding {
        slot: answers.slot,
        kind: answers.kind.clone(),
        pack_ref: pack_ref(answers)?,
        answers_ref: answers.answers_ref.clone(),
        generation: 0,
        previous: None,
    };
    let result = binding_summary(&environment, &binding);
    environment.packs.push(binding);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn update(
    mut environment: Environment,
    answers: &PackBindAnswers,
) -> Result<Outcome, ApplyError> {
    check_answers_ref(answers.answers_ref.as_ref())?;
    let index = slot_index(&environment, answers.slot, "update")?;
    let pack_ref = pack_ref(answers)?;
    let binding = &mut environment.packs[index];
    let snapshot = BindingSnapshot {
        kind: binding.kind.clone(),
        pack_ref: binding.pack_ref.clone(),
        answers_ref: binding.answers_ref.clone(),
        generation: binding.generation,
    };
    binding.kind = answers.kind.clone();
    binding.pack_ref = pack_ref;
    binding.answers_ref = answers.answers_ref.clone();
    binding.generation += 1;
    binding.previous = Some(snapshot);
    let result = binding_summary(&environment, &environment.packs[index]);
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn remove(
    mut environment: Environment,
    answers: &PackSlotAnswers,
) -> Result<Outcome, ApplyError> {
    let index = slot_index(&environment, answers.slot, "remove")?;
    if answers.slot == CapabilitySlot::Deployer {
        let running = environment.revisions.iter().find(|r| {
            matches!(
                r.lifecycle,
                Lifecycle::Warming | Lifecycle::Ready | Lifecycle::Draining
            )
        });
        if let Some(revision) = running {
            return Err(ApplyError::Conflict {
                message: format!(
                    "cannot remove the deployer while revision {} is {}; drain and archive running revisions first",
                    revision.revision_id, revision.lifecycle
                ),
            });
        }
    }
    let removed = environment.packs.remove(index);
    let result = json!({
        "environment_id": environment.environment_id,
        "slot": removed.slot,
        "removed_kind": removed.kind,
    });
    Ok(Outcome::changed(environment, result))
}

pub(crate) fn rollback(
    mut environment: Environment,
    answers: &PackSlotAnswers,
) -> Result<Outcome, ApplyError> {
    let index = slot_index(&environment, answers.slot, "roll back")?;
    let binding = &mut environment.packs[index];
    let Some(previous) = binding.previous.take() else {
        return Err(ApplyError::Conflict {
            message: format!(
                "slot {} has no previous binding to roll back to; rollback undoes one `env-packs update`",
                answers.slot
            ),
        });
    };
    let replaced = BindingSnapshot {
        kind: binding.kind.clone(),
        pack_ref: binding.pack_ref.clone(),
        answers_ref: binding.answers_ref.clone(),
        generation: binding.generation,
    };
    binding.kind = previous.kind;
    binding.pack_ref = previous.pack_ref;
    binding.answers_ref = previous.answers_ref;
    binding.generation += 1;
    binding.previous = Some(replaced);
    let result = binding_summary(&environment, &environment.packs[index]);
    Ok(Outcome::changed(environment, result))
}
