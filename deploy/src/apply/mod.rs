//! The one apply path: `apply(state, record, envelope) -> (new state, result,
//! audit event, idempotency record)`.
//!
//! Every change to an environment, local or replicated, goes through
//! [`apply`]. It is a pure function: the same state and envelope give the
//! same output on every machine, which is what lets the cluster replicate
//! commands instead of states.

mod bundles;
mod env;
mod packs;
mod revisions;
mod rollouts;
mod scaling;
mod traffic;

pub use bundles::summary as bundle_summary;
pub use env::summary as environment_summary;
pub use rollouts::rollout_view;
pub use traffic::split_view;

use serde_json::json;

use crate::audit::{AUDIT_SCHEMA, AuditEvent, AuditResult};
use crate::canonical::{sha256_hex, to_canonical_json};
use crate::command::{Command, CommandEnvelope};
use crate::environment::Environment;
use crate::error::ApplyError;
use crate::ids::EnvId;
use crate::state::{EnvironmentState, IDEMPOTENCY_KEY_LEN_MAX, IdempotencyRecord};

/// What a command did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The state to store; `None` when the environment was destroyed.
    pub state: Option<EnvironmentState>,
    /// The verb's answer, printed by the CLI and replayed on retries.
    pub result: serde_json::Value,
    /// False when nothing changed (an untouched `env init`, a replay).
    pub changed: bool,
    /// True when the answer was replayed from an idempotency record.
    pub replayed: bool,
    /// The audit event; the log fills in `prev_hash` when it appends it.
    /// `None` when nothing happened that is worth auditing (untouched init).
    pub event: Option<AuditEvent>,
    /// An error committed together with the state: a failed warm gate
    /// persists the revision as `failed` and still fails the verb.
    pub committed_error: Option<ApplyError>,
    /// The idempotency record of this answer: on a change made with a key,
    /// the new record for the store to keep beside the state; on a replay,
    /// the record it was answered from. `None` without a key.
    pub record: Option<IdempotencyRecord>,
}

/// What a handler produces before the shared bookkeeping.
pub(crate) struct Outcome {
    pub environment: Option<Environment>,
    pub result: serde_json::Value,
    pub changed: bool,
    pub committed_error: Option<ApplyError>,
}

impl Outcome {
    pub(crate) fn changed(environment: Environment, result: serde_json::Value) -> Self {
        Self {
            environment: Some(environment),
            result,
            changed: true,
            committed_error: None,
        }
    }
}

/// Applies one command to the current state of its environment (`None` when
/// the environment does not exist yet). `recorded` is the committed
/// idempotency record of the envelope's key, if the store holds one: the
/// command is then answered from it (or refused, when the key was used for
/// another request) instead of applied again.
pub fn apply(
    current: Option<&EnvironmentState>,
    recorded: Option<&IdempotencyRecord>,
    envelope: &CommandEnvelope,
) -> Result<Applied, ApplyError> {
    let command = &envelope.command;
    let env_id = command.env_id();
    if let Some(state) = current
        && state.env_id() != &env_id
    {
        return Err(ApplyError::Conflict {
            message: format!(
                "command for environment {env_id} was applied to the state of {}",
                state.env_id()
            ),
        });
    }
    check_idempotency_key(envelope)?;
    let fingerprint = request_fingerprint(command);
    if let (Some(state), Some(key), Some(record)) = (current, envelope.idempotency_key(), recorded)
        && let Some(replay) = replay(state, record, envelope, key, &fingerprint)?
    {
        return Ok(replay);
    }
    // After the replay check: a retry of a write that went through carries
    // the ETag it read before, which its own first attempt made stale.
    check_precondition(current, envelope)?;

    let outcome = dispatch(current, envelope)?;
    let previous_generation = current.map(|s| s.generation);
    let Some(environment) = outcome.environment else {
        // The environment was removed. The event still names the generation
        // the removal would have been, so a removal that was audited but not
        // carried out is detectable like any other uncommitted change.
        let removed_generation = previous_generation.map(|g| g + 1);
        let event = event_for(
            envelope,
            previous_generation,
            removed_generation,
            false,
            AuditResult::Ok,
        );
        return Ok(Applied {
            state: None,
            result: outcome.result,
            changed: true,
            replayed: false,
            event: Some(event),
            committed_error: None,
            record: None,
        });
    };
    if !outcome.changed {
        return Ok(Applied {
            state: current.cloned(),
            result: outcome.result,
            changed: false,
            replayed: false,
            event: None,
            committed_error: None,
            record: None,
        });
    }
    environment.validate()?;
    let state = next_state(current, environment, envelope);
    let audit_result = match &outcome.committed_error {
        Some(error) => AuditResult::Error {
            kind: error.kind().as_str().to_owned(),
            message: error.to_string(),
        },
        None => AuditResult::Ok,
    };
    let event = event_for(
        envelope,
        previous_generation,
        Some(state.generation),
        false,
        audit_result,
    );
    let record = remember(&state, envelope, &fingerprint, &outcome.result, &event);
    Ok(Applied {
        state: Some(state),
        result: outcome.result,
        changed: true,
        replayed: false,
        event: Some(event),
        committed_error: outcome.committed_error,
        record,
    })
}

fn dispatch(
    current: Option<&EnvironmentState>,
    envelope: &CommandEnvelope,
) -> Result<Outcome, ApplyError> {
    let env_id = envelope.command.env_id();
    if let Command::EnvInit { answers, defaults } = &envelope.command {
        return env::init(current.map(|s| &s.environment), answers, defaults, envelope);
    }
    if let Command::EnvCreate(answers) = &envelope.command {
        if current.is_some() {
            return Err(ApplyError::AlreadyExists {
                what: "environment",
                id: env_id.to_string(),
                hint: "; change it with `gtc op env update`".to_owned(),
            });
        }
        return env::create(answers);
    }
    let Some(state) = current else {
        return Err(missing_environment(&env_id));
    };
    let environment = state.environment.clone();
    match &envelope.command {
        Command::EnvInit { .. } | Command::EnvCreate(_) => unreachable_command(),
        Command::EnvUpdate(answers) => env::update(environment, answers),
        Command::EnvDestroy(_) => Ok(Outcome {
            environment: None,
            result: json!({"environment_id": env_id, "destroyed": true}),
            changed: true,
            committed_error: None,
        }),
        Command::EnvRestore { answers, snapshot } => env::restore(state, answers, snapshot),
        Command::EnvMergeBindings {
            source, bindings, ..
        } => env::merge_bindings(environment, source, bindings),
        Command::PackAdd(answers) => packs::add(environment, answers),
        Command::PackUpdate(answers) => packs::update(environment, answers),
        Command::PackRemove(answers) => packs::remove(environment, answers),
        Command::PackRollback(answers) => packs::rollback(environment, answers),
        Command::BundleAdd(answers) => bundles::add(environment, answers, envelope),
        Command::BundleUpdate(answers) => bundles::update(environment, answers),
        Command::BundleRemove(answers) => bundles::remove(environment, answers),
        Command::RevisionStage { answers, staged } => {
            revisions::stage(environment, answers, staged.as_deref(), envelope)
        }
        Command::RevisionWarm {
            answers,
            failed_checks,
        } => revisions::warm(environment, answers, failed_checks, envelope),
        Command::RevisionDrain(answers) => revisions::drain(environment, answers, envelope),
        Command::RevisionArchive(answers) => revisions::archive(environment, answers, envelope),
        Command::TrafficSet(answers) => traffic::set(environment, answers, envelope),
        Command::TrafficRollback(answers) => traffic::rollback(environment, answers, envelope),
        Command::TrafficClear(answers) => traffic::clear(environment, answers),
        Command::RevisionReport(report) => revisions::report(environment, report, envelope),
        Command::RevisionPlace(answers) => revisions::place(environment, answers),
        Command::RolloutStart(answers) => rollouts::start(environment, answers, envelope),
        Command::RolloutAct { action, answers } => {
            rollouts::act(environment, *action, answers, envelope)
        }
        Command::RolloutDecide(answers) => rollouts::decide(environment, answers, envelope),
        Command::RevisionScale(answers) => scaling::set(environment, answers),
        Command::ScaleDecide(answers) => scaling::decide(environment, answers),
    }
}

/// `EnvInit` and `EnvCreate` are handled before the match; reaching them
/// there would be a bug in `dispatch`, reported as a conflict rather than a
/// panic so a node never dies of it.
fn unreachable_command() -> Result<Outcome, ApplyError> {
    Err(ApplyError::Conflict {
        message: "internal: environment creation reached the per-environment dispatcher".into(),
    })
}

pub(crate) fn missing_environment(env_id: &EnvId) -> ApplyError {
    let hint = match env_id.legacy_dev_hint() {
        Some(hint) => format!("; {hint}"),
        None if env_id.is_local() => "; run `gtc op env init` first".to_owned(),
        None => "; create it with `gtc op env create`".to_owned(),
    };
    ApplyError::not_found("environment", env_id, env_id, &hint)
}

/// SHA-256 over the canonical JSON of the operator's payload.
pub fn request_fingerprint(command: &Command) -> String {
    let value = normalized(command).payload();
    sha256_hex(to_canonical_json(&value).as_bytes())
}

/// The payload with order-insensitive parts sorted, so that the same split
/// written in another order is the same request.
fn normalized(command: &Command) -> Command {
    let mut command = command.clone();
    if let Command::TrafficSet(answers) = &mut command {
        answers.entries.sort_by(|a, b| {
            a.revision_id.cmp(&b.revision_id).then(
                a.weight_bps.cmp(&b.weight_bps).then(
                    a.weight_percent
                        .partial_cmp(&b.weight_percent)
                        .unwrap_or(std::cmp::Ordering::Equal),
                ),
            )
        });
    }
    command
}

fn replay(
    state: &EnvironmentState,
    record: &IdempotencyRecord,
    envelope: &CommandEnvelope,
    key: &str,
    fingerprint: &str,
) -> Result<Option<Applied>, ApplyError> {
    // A record of another key (a caller's mistake) answers nothing.
    if record.key != key {
        return Ok(None);
    }
    let command = &envelope.command;
    if record.request_fingerprint != fingerprint
        || record.noun != command.noun()
        || record.verb != command.verb()
    {
        return Err(ApplyError::IdempotencyConflict {
            key: key.to_owned(),
            verb: format!("{} {}", record.noun, record.verb),
        });
    }
    let event = event_for(
        envelope,
        Some(state.generation),
        Some(state.generation),
        true,
        AuditResult::Ok,
    );
    Ok(Some(Applied {
        state: Some(state.clone()),
        result: record.response.clone(),
        changed: false,
        replayed: true,
        event: Some(event),
        committed_error: None,
        record: Some(record.clone()),
    }))
}

/// Refuses an oversized idempotency key, whichever way it came (the admin
/// API's header, or the payload of an answers file). The verbs that need a
/// key refuse an empty one themselves, with their own hint.
fn check_idempotency_key(envelope: &CommandEnvelope) -> Result<(), ApplyError> {
    let Some(key) = envelope.idempotency_key() else {
        return Ok(());
    };
    if key.len() > IDEMPOTENCY_KEY_LEN_MAX {
        return Err(ApplyError::invalid(
            "idempotency_key",
            format!(
                "is {} bytes; the limit is {IDEMPOTENCY_KEY_LEN_MAX} (a ULID or a UUID fits)",
                key.len()
            ),
        ));
    }
    Ok(())
}

/// Refuses a guarded write whose precondition is empty or does not hold.
/// A missing environment is left to the handler (it reports `not-found`).
fn check_precondition(
    current: Option<&EnvironmentState>,
    envelope: &CommandEnvelope,
) -> Result<(), ApplyError> {
    let Some(precondition) = &envelope.precondition else {
        return Ok(());
    };
    if precondition.is_empty() {
        return Err(ApplyError::PreconditionRequired {
            noun: envelope.command.noun(),
            verb: envelope.command.verb(),
        });
    }
    match current {
        Some(state) => precondition.check(state),
        None => Ok(()),
    }
}

fn next_state(
    current: Option<&EnvironmentState>,
    environment: Environment,
    envelope: &CommandEnvelope,
) -> EnvironmentState {
    match current {
        Some(current) => {
            let mut state = current.clone();
            state.generation = current.generation + 1;
            state.environment = environment;
            state.updated_at = envelope.at;
            state
        }
        None => EnvironmentState::new(environment, envelope.at),
    }
}

/// The first answer of an idempotent request, with the ETag and the audit
/// event it answered with, for the store to keep beside the state (so a
/// replay survives restarts, and every replica makes the same record from
/// the same command).
fn remember(
    state: &EnvironmentState,
    envelope: &CommandEnvelope,
    fingerprint: &str,
    result: &serde_json::Value,
    event: &AuditEvent,
) -> Option<IdempotencyRecord> {
    let key = envelope.idempotency_key()?;
    Some(IdempotencyRecord {
        key: key.to_owned(),
        noun: envelope.command.noun().to_owned(),
        verb: envelope.command.verb().to_owned(),
        request_fingerprint: fingerprint.to_owned(),
        response: result.clone(),
        generation: state.generation,
        stored_at: envelope.at,
        etag: Some(state.etag()),
        event: Some(event.clone()),
    })
}

/// The audit event for `envelope` with the given result. Also used by the
/// edge for denials, failures and not-yet-implemented verbs.
pub fn event_for(
    envelope: &CommandEnvelope,
    previous_generation: Option<u64>,
    new_generation: Option<u64>,
    replayed: bool,
    result: AuditResult,
) -> AuditEvent {
    AuditEvent {
        schema: AUDIT_SCHEMA.to_owned(),
        event_id: envelope.minted.event_id,
        ts: envelope.at,
        actor: envelope.actor.clone(),
        env_id: envelope.command.env_id().to_string(),
        noun: envelope.command.noun().to_owned(),
        verb: envelope.command.verb().to_owned(),
        target: envelope.command.payload(),
        previous_generation,
        new_generation,
        idempotency_key: envelope.idempotency_key().map(str::to_owned),
        replayed,
        authorization: envelope.authorization.clone(),
        result,
        signed_by: envelope.signed_by.clone(),
        prev_hash: String::new(),
    }
}

#[cfg(test)]
mod tests;
