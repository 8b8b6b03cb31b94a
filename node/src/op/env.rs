//! `gtc op env …`

use deploy::audit::AuditResult;
use deploy::command::{
    Command, EnvCreateAnswers, EnvInitAnswers, EnvMigrateStateAnswers, EnvRestoreAnswers,
    EnvTargetAnswers, EnvUpdateAnswers,
};
use deploy::error::ErrorKind;
use deploy::ids::{BackupId, EnvId};
use deploy::lifecycle::Lifecycle;
use serde_json::json;
use store::EnvironmentStore;

use super::{answers, optional_answers, target_answers};
use crate::cli::EnvVerb;
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;

/// The legacy environment `migrate-dev` merges from.
use deploy::ids::LEGACY_DEV_ENV;

pub fn run(context: &Context, verb: EnvVerb) -> Result<Report, CliError> {
    match verb {
        EnvVerb::Init(mutation) => {
            let answers: EnvInitAnswers =
                optional_answers(mutation.answers.as_deref(), "env", "init")?;
            context.submit(Command::EnvInit {
                answers,
                defaults: packs::default_bindings(),
            })
        }
        EnvVerb::Create(mutation) => {
            let answers: EnvCreateAnswers = answers(&mutation, "env", "create")?;
            context.submit(Command::EnvCreate(answers))
        }
        EnvVerb::Update(mutation) => {
            let answers: EnvUpdateAnswers = answers(&mutation, "env", "update")?;
            context.submit(Command::EnvUpdate(answers))
        }
        EnvVerb::List => match context.remote() {
            Some(remote) => remote.list(),
            None => list(context),
        },
        EnvVerb::Show(env) => {
            let state = context.load(&env.env)?;
            let mut result = serde_json::to_value(&state.environment).unwrap_or_default();
            result["generation"] = json!(state.generation);
            result["etag"] = json!(state.etag());
            result["updated_at"] = json!(state.updated_at);
            Ok(Report::new("env", "show", result))
        }
        EnvVerb::Doctor(env) => doctor(context, &env.env),
        EnvVerb::Reconcile(args) => super::reconcile::run(context, &args),
        EnvVerb::Preflight(env) => crate::preflight::run(context, &env.env),
        EnvVerb::Destroy { mutation, confirm } => {
            let answers: EnvTargetAnswers = target_answers(&mutation, "env", "destroy")?;
            let command = Command::EnvDestroy(answers);
            if !confirm {
                return Err(context.refuse(
                    command,
                    CliError::usage("destroying an environment needs --confirm; its folder is moved under .destroyed/ in the store root"),
                ));
            }
            context.submit(command)
        }
        EnvVerb::Backup(mutation) => {
            let answers: EnvTargetAnswers = answers(&mutation, "env", "backup")?;
            match context.remote() {
                Some(remote) => remote.backup(&answers.environment_id),
                None => backup(context, answers),
            }
        }
        EnvVerb::Backups(env) => {
            if let Some(remote) = context.remote() {
                return remote.backups(&crate::checks::parse_env(&env.env)?);
            }
            let env_id = context.load(&env.env)?.env_id().clone();
            let manifests = context.store.list_backups(&env_id)?;
            Ok(Report::new(
                "env",
                "backups",
                crate::output::listing(&env_id, "backups", json!(manifests)),
            ))
        }
        EnvVerb::Restore(mutation) => restore(context, answers(&mutation, "env", "restore")?),
        EnvVerb::MigrateDev { mutation, mode } => migrate_dev(
            context,
            target_answers(&mutation, "env", "migrate-dev")?,
            mode.apply,
        ),
        EnvVerb::MigrateState { mutation, mode } => migrate_state(
            context,
            target_answers(&mutation, "env", "migrate-state")?,
            mode.apply,
        ),
        // `op::run` sends these to `trust_cmd` before this match.
        EnvVerb::Trust(verb) => crate::trust_cmd::run(context, verb),
    }
}

fn list(context: &Context) -> Result<Report, CliError> {
    let mut rows = Vec::new();
    for env in context.store.list()? {
        if let Some(state) = context.store.load(&env)? {
            let environment = &state.environment;
            rows.push(json!({
                "environment_id": environment.environment_id,
                "name": environment.name,
                "generation": state.generation,
                "bound_slots": environment.packs.len(),
                "bundles": environment.bundles.len(),
                "revisions": environment.revisions.len(),
                "health": environment.health.state,
            }));
        }
    }
    Ok(Report::new("env", "list", json!(rows)))
}

fn doctor(context: &Context, env: &str) -> Result<Report, CliError> {
    let env_id = crate::checks::parse_env(env)?;
    let loaded = context.store.load(&env_id);
    let (validate, state) = match loaded {
        Ok(Some(state)) => (
            json!({"status": "ok", "message": "the environment validates"}),
            Some(state),
        ),
        Ok(None) => return Err(context.missing(&env_id)),
        Err(error) => (
            json!({"status": "error", "message": error.to_string()}),
            None,
        ),
    };
    let bindings = state
        .as_ref()
        .map(|state| packs::check_bindings(&context.checks.registry, &state.environment));
    let (audit, anchored) = context.store.verify_audit(&env_id)?;
    let stale: Vec<_> = state
        .iter()
        .flat_map(|s| s.environment.revisions.iter())
        .filter(|r| matches!(r.lifecycle, Lifecycle::Failed | Lifecycle::Warming | Lifecycle::Draining))
        .map(|r| json!({"revision_id": r.revision_id, "lifecycle": r.lifecycle, "failure_reason": r.failure_reason}))
        .collect();
    let healthy = state.is_some()
        && bindings
            .as_ref()
            .is_some_and(packs::BindingReport::is_clean)
        && audit.chain == "ok"
        && anchored;
    let result = json!({
        "environment_id": env_id,
        "healthy": healthy,
        "validate": validate,
        "bindings": bindings,
        "audit": {"events": audit.events, "chain": audit.chain, "head": audit.head, "torn_tail": audit.torn_tail, "head_anchored": anchored},
        "stale_revisions": stale,
        "has_runtime": context.store.env_dir(&env_id).join(deploy::environment_runtime::ENVIRONMENT_RUNTIME_FILE).is_file(),
        "checked_at": chrono::Utc::now(),
    });
    let mut report = Report::new("env", "doctor", result);
    report.exit_code = if healthy {
        0
    } else {
        crate::error::EXIT_FAILURE
    };
    Ok(report)
}

fn backup(context: &Context, answers: EnvTargetAnswers) -> Result<Report, CliError> {
    let env = answers.environment_id;
    context.load(env.as_str())?;
    // A denied operator must not even write the backup file: check first
    // (`audit_edge` records the denial and returns it as an error).
    if context.authorize(&env).decision == deploy::audit::Decision::Deny {
        context.audit_edge(
            &env,
            "env",
            "backup",
            json!({"environment_id": env}),
            AuditResult::Ok,
        )?;
    }
    let backup_id = BackupId::from_ulid(ulid::Ulid::new());
    let manifest = context.store.backup(&env, backup_id, chrono::Utc::now());
    let result = match &manifest {
        Ok(_) => AuditResult::Ok,
        Err(error) => AuditResult::Error {
            kind: error.kind().as_str().to_owned(),
            message: error.to_string(),
        },
    };
    context.audit_edge(
        &env,
        "env",
        "backup",
        json!({"environment_id": env, "backup_id": backup_id}),
        result,
    )?;
    Ok(Report::new("env", "backup", json!(manifest?)))
}

fn restore(context: &Context, answers: EnvRestoreAnswers) -> Result<Report, CliError> {
    let command_for = |snapshot| Command::EnvRestore {
        answers: answers.clone(),
        snapshot: Box::new(snapshot),
    };
    if context.remote().is_some() {
        // The node loads the backup from its own store; the snapshot sent
        // here is not used by the route.
        let current = context.load(answers.environment_id.as_str())?;
        return context.submit(command_for(current));
    }
    match context
        .store
        .load_backup(&answers.environment_id, answers.backup_id)
    {
        Ok(artifact) => context.submit(command_for(artifact.snapshot)),
        Err(error) => {
            // Audit the refused restore against the current state so the
            // log shows who tried what.
            let current = context.load(answers.environment_id.as_str())?;
            Err(context.refuse(command_for(current), error.into()))
        }
    }
}

fn migrate_dev(
    context: &Context,
    answers: EnvTargetAnswers,
    apply: bool,
) -> Result<Report, CliError> {
    let target = context.load(answers.environment_id.as_str())?;
    let source: EnvId = LEGACY_DEV_ENV.parse().map_err(|_| {
        CliError::new(
            ErrorKind::Store,
            "internal: the legacy env id does not parse",
        )
    })?;
    if source == answers.environment_id {
        return Err(CliError::invalid(
            "migrate-dev merges `dev` into another environment; pick a target other than dev",
        )
        .with_field("environment_id"));
    }
    let dev = context.store.load(&source)?;
    let mut blockers = Vec::new();
    if let Some(dev) = &dev {
        let environment = &dev.environment;
        for (what, count) in [
            ("bundles", environment.bundles.len()),
            ("revisions", environment.revisions.len()),
            ("traffic splits", environment.traffic_splits.len()),
        ] {
            if count > 0 {
                blockers.push(format!("dev has {count} {what}; move or remove them first"));
            }
        }
        if environment.credentials_ref.is_some() {
            blockers.push(
                "dev has a credentials_ref; rebind credentials on the target first".to_owned(),
            );
        }
    }
    let would_merge: Vec<_> = dev
        .iter()
        .flat_map(|d| d.environment.packs.iter())
        .filter(|b| target.environment.binding(b.slot).is_none())
        .map(|b| b.slot)
        .collect();
    let check = json!({
        "source": LEGACY_DEV_ENV,
        "target": answers.environment_id,
        "source_exists": dev.is_some(),
        "clean": blockers.is_empty(),
        "blockers": blockers,
        "would_merge": would_merge,
    });
    if !apply {
        // Blockers are what `--apply` would refuse: the check fails with
        // them, as `env doctor` fails on a problem it finds.
        let mut report = Report::new("env", "migrate-dev", check);
        if !blockers.is_empty() {
            report.exit_code = crate::error::EXIT_FAILURE;
        }
        return Ok(report);
    }
    let Some(dev) = dev else {
        return Ok(Report::new(
            "env",
            "migrate-dev",
            json!({"outcome": "nothing-to-migrate", "check": check}),
        ));
    };
    let command = Command::EnvMergeBindings {
        answers: answers.clone(),
        source: source.clone(),
        bindings: dev.environment.packs.clone(),
    };
    if !blockers.is_empty() {
        return Err(context.refuse(
            command,
            CliError::new(
                ErrorKind::Conflict,
                format!("dev cannot be migrated: {}", blockers.join("; ")),
            ),
        ));
    }
    let mut report = context.submit(command)?;
    let retired_name = format!(
        ".dev-migrated-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S")
    );
    // Moving dev aside is a change to disk of its own (even when no
    // binding had to merge): audited on the target before the move, and
    // the answer says it happened.
    let moved_to = context.store.root().join(&retired_name);
    context.audit_edge(
        &answers.environment_id,
        "env",
        "migrate-dev",
        json!({"environment_id": answers.environment_id, "source": LEGACY_DEV_ENV, "source_moved_to": moved_to}),
        AuditResult::Ok,
    )?;
    let retired = context.store.retire(&source, &retired_name)?;
    report.result["source_moved_to"] = json!(retired);
    report.idempotency = Some("applied");
    Ok(report)
}

fn migrate_state(
    context: &Context,
    answers: EnvMigrateStateAnswers,
    apply: bool,
) -> Result<Report, CliError> {
    let env = answers.environment_id.clone();
    context.load(env.as_str())?;
    let state_dir = answers
        .state_dir
        .as_deref()
        .map_or_else(|| context.home.join("state"), std::path::PathBuf::from);
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    if !apply {
        return Ok(Report::new(
            "env",
            "migrate-state",
            json!(store::plan_legacy_state(&state_dir, &stamp)),
        ));
    }
    // Audited before the move (fail closed), naming what will move; the
    // answer says what did.
    let plan = store::plan_legacy_state(&state_dir, &stamp);
    let target = json!({"environment_id": env, "state_dir": state_dir, "moved_from": plan.legacy, "moved_to": plan.target});
    context.audit_edge(&env, "env", "migrate-state", target, AuditResult::Ok)?;
    let moved = store::migrate_legacy_state(&state_dir, &stamp)?;
    let mut report = Report::new("env", "migrate-state", json!(moved));
    report.idempotency = Some(if moved.changed {
        "applied"
    } else {
        "unchanged"
    });
    Ok(report)
}
