//! `gtc op env-packs|bundles|revisions|traffic|rollouts|config|credentials|secrets …`

use deploy::audit::Decision;
use deploy::command::{
    BundleAddAnswers, BundleUpdateAnswers, Command, CredentialsBootstrapAnswers,
    CredentialsRotateAnswers, DeploymentAnswers, EnvTargetAnswers, EnvUpdateAnswers,
    PackBindAnswers, PackSlotAnswers, RevisionAnswers, RevisionStageAnswers, RolloutActionAnswers,
    RolloutStartAnswers, TrafficSetAnswers,
};
use deploy::descriptor::CapabilitySlot;
use deploy::error::ErrorKind;
use deploy::ids::DeploymentId;
use deploy::ids::EnvId;
use deploy::rollout::PersonAction;
use secrets::answers::{SecretGetAnswers, SecretPutAnswers, SecretRotateAnswers};
use serde_json::json;

use super::answers;
use crate::cli::{
    BundlesVerb, ConfigVerb, CredentialsVerb, PacksVerb, RevisionsVerb, RolloutsVerb, SecretsVerb,
    TrafficVerb,
};
use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;
use crate::output::listing;
use crate::secrets_cmd;

/// Refuses a binding whose pack the registry cannot drive in that slot.
fn admit_binding(
    context: &Context,
    answers: &PackBindAnswers,
    command: Command,
) -> Result<Command, CliError> {
    match context.checks.binding_refusal(answers) {
        None => Ok(command),
        Some(reason) => Err(context.refuse(command, CliError::invalid(reason).with_field("kind"))),
    }
}

pub fn packs(context: &Context, verb: PacksVerb) -> Result<Report, CliError> {
    match verb {
        PacksVerb::Add(mutation) => {
            let answers: PackBindAnswers = answers(&mutation, "env-packs", "add")?;
            let command = admit_binding(context, &answers, Command::PackAdd(answers.clone()))?;
            context.submit(command)
        }
        PacksVerb::Update(mutation) => {
            let answers: PackBindAnswers = answers(&mutation, "env-packs", "update")?;
            let command = admit_binding(context, &answers, Command::PackUpdate(answers.clone()))?;
            context.submit(command)
        }
        PacksVerb::Remove(mutation) => {
            let answers: PackSlotAnswers = answers(&mutation, "env-packs", "remove")?;
            context.submit(Command::PackRemove(answers))
        }
        PacksVerb::Rollback(mutation) => {
            let answers: PackSlotAnswers = answers(&mutation, "env-packs", "rollback")?;
            context.submit(Command::PackRollback(answers))
        }
        PacksVerb::List(env) => {
            let state = context.load(&env.env)?;
            let environment = &state.environment;
            let rows: Vec<_> = environment
                .packs
                .iter()
                .map(|b| {
                    json!({
                        "slot": b.slot,
                        "kind": b.kind,
                        "pack_ref": b.pack_ref,
                        "generation": b.generation,
                        "has_previous": b.previous.is_some(),
                    })
                })
                .collect();
            Ok(Report::new(
                "env-packs",
                "list",
                listing(state.env_id(), "packs", json!(rows)),
            ))
        }
    }
}

pub fn bundles(context: &Context, verb: BundlesVerb) -> Result<Report, CliError> {
    match verb {
        BundlesVerb::Add(mutation) => {
            let answers: BundleAddAnswers = answers(&mutation, "bundles", "add")?;
            context.submit(Command::BundleAdd(answers))
        }
        BundlesVerb::Update(mutation) => {
            let answers: BundleUpdateAnswers = answers(&mutation, "bundles", "update")?;
            context.submit(Command::BundleUpdate(answers))
        }
        BundlesVerb::Remove(mutation) => {
            let answers: DeploymentAnswers = answers(&mutation, "bundles", "remove")?;
            context.submit(Command::BundleRemove(answers))
        }
        BundlesVerb::List(env) => {
            let state = context.load(&env.env)?;
            let rows: Vec<_> = state
                .environment
                .bundles
                .iter()
                .map(deploy::apply::bundle_summary)
                .collect();
            Ok(Report::new(
                "bundles",
                "list",
                listing(state.env_id(), "bundles", json!(rows)),
            ))
        }
    }
}

fn parse_deployment(text: Option<&str>) -> Result<Option<DeploymentId>, CliError> {
    text.map(|t| {
        t.parse::<DeploymentId>()
            .map_err(|error| CliError::invalid(error.to_string()).with_field("deployment"))
    })
    .transpose()
}

pub fn revisions(context: &Context, verb: RevisionsVerb) -> Result<Report, CliError> {
    let transition = |mutation, verb: &'static str, make: fn(RevisionAnswers) -> Command| {
        let answers: RevisionAnswers = answers(&mutation, "revisions", verb)?;
        context.submit(make(answers))
    };
    match verb {
        RevisionsVerb::Stage(mutation) => {
            let answers: RevisionStageAnswers = answers(&mutation, "revisions", "stage")?;
            match answers.bundle_path.clone() {
                Some(_) if context.remote().is_some() => Err(CliError::new(
                    ErrorKind::NotYetImplemented,
                    "`gtc op revisions stage` with bundle_path stages a file on this machine, so it works on the node's machine only, not with --node yet; stage without bundle_path, or run it where the bundle and the store are",
                )
                .with_field("bundle_path")),
                Some(path) => crate::bundle_cmd::stage_revision(context, answers, &path),
                None => context.submit(Command::RevisionStage {
                    answers,
                    staged: None,
                }),
            }
        }
        RevisionsVerb::Warm(mutation) => {
            let answers: RevisionAnswers = answers(&mutation, "revisions", "warm")?;
            let mut failed_checks = context.warm_checks(&answers)?;
            failed_checks.extend(crate::preflight::warm_gate(
                context,
                &answers.environment_id,
            )?);
            context.submit(Command::RevisionWarm {
                answers,
                failed_checks,
            })
        }
        RevisionsVerb::Drain(mutation) => transition(mutation, "drain", Command::RevisionDrain),
        RevisionsVerb::Archive(mutation) => {
            transition(mutation, "archive", Command::RevisionArchive)
        }
        RevisionsVerb::Scale(mutation) => {
            let answers: deploy::command::RevisionScaleAnswers =
                answers(&mutation, "revisions", "scale")?;
            context.submit(Command::RevisionScale(answers))
        }
        RevisionsVerb::List { env, deployment } => {
            let state = context.load(&env.env)?;
            let deployment = parse_deployment(deployment.as_deref())?;
            let rows: Vec<_> = state
                .environment
                .revisions
                .iter()
                .filter(|r| deployment.is_none_or(|d| r.deployment_id == d))
                .map(|r| json!(r.summary()))
                .collect();
            Ok(Report::new(
                "revisions",
                "list",
                listing(state.env_id(), "revisions", json!(rows)),
            ))
        }
    }
}

pub fn traffic(context: &Context, verb: TrafficVerb) -> Result<Report, CliError> {
    match verb {
        TrafficVerb::Set(mutation) => {
            let answers: TrafficSetAnswers = answers(&mutation, "traffic", "set")?;
            context.submit(Command::TrafficSet(answers))
        }
        TrafficVerb::Plan(mutation) => {
            let answers: TrafficSetAnswers = answers(&mutation, "traffic", "plan")?;
            let mut report = super::plan::plan(context, Command::TrafficSet(answers))?;
            report.verb = "plan";
            Ok(report)
        }
        TrafficVerb::Rollback(mutation) => {
            let answers: DeploymentAnswers = answers(&mutation, "traffic", "rollback")?;
            context.submit(Command::TrafficRollback(answers))
        }
        TrafficVerb::Clear(mutation) => {
            let answers: DeploymentAnswers = answers(&mutation, "traffic", "clear")?;
            context.submit(Command::TrafficClear(answers))
        }
        TrafficVerb::Show { env, deployment } => {
            let state = context.load(&env.env)?;
            let deployment = parse_deployment(deployment.as_deref())?;
            if let Some(id) = deployment {
                state.environment.deployment(id).ok_or_else(|| {
                    CliError::new(
                        ErrorKind::NotFound,
                        format!(
                            "deployment {id} does not exist in environment {}",
                            state.env_id()
                        ),
                    )
                })?;
            }
            let splits: Vec<_> = state
                .environment
                .traffic_splits
                .iter()
                .filter(|s| deployment.is_none_or(|d| s.deployment_id == d))
                .map(deploy::apply::split_view)
                .collect();
            Ok(Report::new(
                "traffic",
                "show",
                listing(state.env_id(), "splits", json!(splits)),
            ))
        }
    }
}

pub fn rollouts(context: &Context, verb: RolloutsVerb) -> Result<Report, CliError> {
    let act = |mutation, action: PersonAction| {
        let answers: RolloutActionAnswers = answers(&mutation, "rollouts", action.as_str())?;
        context.submit(Command::RolloutAct { action, answers })
    };
    match verb {
        RolloutsVerb::Start { mutation, plan } => {
            let answers: RolloutStartAnswers = answers(&mutation, "rollouts", "start")?;
            if plan {
                return super::plan::plan(context, Command::RolloutStart(answers));
            }
            context.submit(Command::RolloutStart(answers))
        }
        RolloutsVerb::Pause(mutation) => act(mutation, PersonAction::Pause),
        RolloutsVerb::Resume(mutation) => act(mutation, PersonAction::Resume),
        RolloutsVerb::Promote(mutation) => act(mutation, PersonAction::Promote),
        RolloutsVerb::Abort(mutation) => act(mutation, PersonAction::Abort),
        RolloutsVerb::Show { env, deployment } => {
            let state = context.load(&env.env)?;
            let Some(id) = parse_deployment(Some(&deployment))? else {
                return Err(CliError::invalid("--deployment is required").with_field("deployment"));
            };
            state.environment.deployment(id).ok_or_else(|| {
                CliError::new(
                    ErrorKind::NotFound,
                    format!(
                        "deployment {id} does not exist in environment {}",
                        state.env_id()
                    ),
                )
            })?;
            let rollout = state.environment.latest_rollout(id).ok_or_else(|| {
                CliError::new(
                    ErrorKind::NotFound,
                    format!(
                        "deployment {id} has had no rollout; start one with `gtc op rollouts start`"
                    ),
                )
            })?;
            let mut view = deploy::apply::rollout_view(rollout);
            view["environment_id"] = json!(state.env_id());
            Ok(Report::new("rollouts", "show", view))
        }
        RolloutsVerb::List(env) => {
            let state = context.load(&env.env)?;
            let rows: Vec<_> = state
                .environment
                .rollouts
                .iter()
                .map(|r| {
                    json!({
                        "deployment_id": r.deployment_id,
                        "stable_revision_id": r.stable_revision_id,
                        "candidate_revision_id": r.candidate_revision_id,
                        "state": r.state,
                        "step": r.step,
                        "steps": r.steps.len(),
                        "candidate_weight_bps": r.candidate_weight_bps(),
                        "started_at": r.started_at,
                        "started_by": r.started_by,
                    })
                })
                .collect();
            Ok(Report::new(
                "rollouts",
                "list",
                listing(state.env_id(), "rollouts", json!(rows)),
            ))
        }
    }
}

fn parse_slot(text: &str) -> Result<CapabilitySlot, CliError> {
    serde_json::from_value(json!(text)).map_err(|_| {
        CliError::invalid(format!(
            "unknown slot {text:?}; slots are deployer, secrets, telemetry, sessions, state, revocation"
        ))
        .with_field("slot")
    })
}

pub fn config(context: &Context, verb: ConfigVerb) -> Result<Report, CliError> {
    match verb {
        ConfigVerb::Set(mutation) => {
            let answers: EnvUpdateAnswers = answers(&mutation, "config", "set")?;
            let mut report = context.submit(Command::EnvUpdate(answers))?;
            report.noun = "config";
            report.verb = "set";
            Ok(report)
        }
        ConfigVerb::Show { env, slot } => {
            let state = context.load(&env.env)?;
            let slot = slot.as_deref().map(parse_slot).transpose()?;
            let environment = &state.environment;
            let env_dir = context.store.env_dir(state.env_id());
            let mut pack_answers = serde_json::Map::new();
            for binding in environment
                .packs
                .iter()
                .filter(|b| slot.is_none_or(|s| b.slot == s))
            {
                let relative = binding
                    .answers_ref
                    .clone()
                    .unwrap_or_else(|| format!("env-packs/{}/answers.json", binding.slot));
                // Only key names are shown: answers may hold secret values.
                let keys: Option<Vec<String>> = std::fs::read(env_dir.join(&relative))
                    .ok()
                    .and_then(|bytes| {
                        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
                            .ok()
                    })
                    .map(|map| map.keys().cloned().collect());
                pack_answers.insert(
                    binding.slot.to_string(),
                    json!({"present": keys.is_some(), "keys": keys.unwrap_or_default()}),
                );
            }
            let runtime =
                std::fs::read(env_dir.join(deploy::environment_runtime::ENVIRONMENT_RUNTIME_FILE))
                    .ok()
                    .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
            Ok(Report::new(
                "config",
                "show",
                json!({
                    "environment_id": environment.environment_id,
                    "host_config": environment.host_config,
                    "gui_enabled": environment.host_config.gui_enabled_resolved(),
                    "credentials_ref": environment.credentials_ref,
                    "packs": environment.packs.iter().filter(|b| slot.is_none_or(|s| b.slot == s)).collect::<Vec<_>>(),
                    "pack_answers": pack_answers,
                    "runtime": runtime,
                    "generation": state.generation,
                    "snapshot_at": chrono::Utc::now(),
                }),
            ))
        }
    }
}

/// Where the deployer credentials flow will be built.
pub fn credentials(context: &Context, verb: CredentialsVerb) -> Result<Report, CliError> {
    match verb {
        CredentialsVerb::Requirements(mutation) => {
            let answers: EnvTargetAnswers = answers(&mutation, "credentials", "requirements")?;
            crate::credentials::requirements(context, answers)
        }
        CredentialsVerb::Bootstrap(mutation) => {
            let answers: CredentialsBootstrapAnswers =
                answers(&mutation, "credentials", "bootstrap")?;
            crate::credentials::bootstrap(context, answers)
        }
        CredentialsVerb::Rotate(mutation) => {
            let answers: CredentialsRotateAnswers = answers(&mutation, "credentials", "rotate")?;
            crate::credentials::rotate(context, answers)
        }
        CredentialsVerb::Show(env) => crate::credentials::show(context, &env.env),
    }
}

pub fn secrets(context: &Context, verb: SecretsVerb) -> Result<Report, CliError> {
    if let Some(remote) = context.remote() {
        return remote_secrets(remote, verb);
    }
    // Secrets do not go through a running node's store: the secret store
    // has its own lock, and the node's admin API writes the same files.
    let root = context.store.root().to_owned();
    // A cluster member writes its node file at the store root (its replica
    // holds every environment). Changes and reveals there go through the
    // running member, which commits them through Raft and audits them in
    // the replicated log; this process never writes a replica itself.
    let replicated = root.join(crate::node_client::NODE_FILE).is_file();
    if replicated {
        if let Some(member) = crate::remote::member(&root, &context.home)? {
            return remote_secrets(&member, verb);
        }
        let reveals = matches!(&verb, SecretsVerb::Get(mutation)
            if answers::<SecretGetAnswers>(mutation, "secrets", "get").is_ok_and(|a| a.reveal));
        if reveals
            || matches!(
                verb,
                SecretsVerb::Put(_) | SecretsVerb::Rotate(_) | SecretsVerb::Remove(_)
            )
        {
            return Err(CliError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} is a cluster member's replica and its member is not running: secret changes and reveals go through the member (start it with `gtc node run --cluster-dir …`), so nothing was written",
                    root.display()
                ),
            ));
        }
    }
    let edge = |env: &EnvId| secrets_cmd::Edge {
        store: &context.store,
        root: &root,
        actor: context.checks.actor.clone(),
        authorization: context.authorize(env),
        signed_by: None,
        replicated,
        cluster: None,
    };
    // A change of an environment with a trust root is signed by a listed
    // operator key; a refusal is audited as a denial.
    let signed =
        |edge: &mut secrets_cmd::Edge<'_>, env: &EnvId, verb: &str, target: serde_json::Value| {
            match context.signer(env) {
                Ok(signed_by) => {
                    edge.signed_by = signed_by;
                    Ok(())
                }
                Err(error) => Err(secrets_cmd::unsigned(edge, env, verb, target, error)),
            }
        };
    // A change (or a reveal) needs the policy's allow; a denial is audited.
    let allowed =
        |edge: &secrets_cmd::Edge<'_>, env: &EnvId, verb: &str, target: serde_json::Value| {
            if edge.authorization.decision == Decision::Allow {
                return Ok(());
            }
            secrets_cmd::denied(edge, env, verb, target)?;
            Err(context.checks.denial(&edge.authorization, env))
        };
    match verb {
        SecretsVerb::List(env) => {
            let env = crate::checks::parse_env(&env.env)?;
            let result = secrets_cmd::list(&edge(&env), &env)?;
            Ok(Report::new("secrets", "list", result))
        }
        SecretsVerb::Put(mutation) => {
            let answers: SecretPutAnswers = answers(&mutation, "secrets", "put")?;
            let env = answers.environment_id.clone();
            let mut edge = edge(&env);
            let target = json!({"environment_id": env, "path": answers.path});
            allowed(&edge, &env, "put", target.clone())?;
            signed(&mut edge, &env, "put", target)?;
            let (result, replayed) = secrets_cmd::put(&edge, answers)?;
            Ok(secret_report("put", result, replayed))
        }
        SecretsVerb::Get(mutation) => {
            let answers: SecretGetAnswers = answers(&mutation, "secrets", "get")?;
            let env = answers.environment_id.clone();
            let edge = edge(&env);
            if answers.reveal {
                let target = json!({"environment_id": env, "path": answers.path, "reveal": true});
                allowed(&edge, &env, "get", target)?;
            }
            Ok(Report::new(
                "secrets",
                "get",
                secrets_cmd::get(&edge, answers)?,
            ))
        }
        SecretsVerb::Rotate(mutation) => {
            let answers: SecretRotateAnswers = answers(&mutation, "secrets", "rotate")?;
            let env = answers.environment_id.clone();
            let mut edge = edge(&env);
            let target = json!({"environment_id": env, "path": answers.path});
            allowed(&edge, &env, "rotate", target.clone())?;
            signed(&mut edge, &env, "rotate", target)?;
            let (result, replayed) = secrets_cmd::rotate(&edge, answers)?;
            Ok(secret_report("rotate", result, replayed))
        }
        SecretsVerb::Remove(mutation) => {
            let answers: secrets::answers::SecretRemoveAnswers =
                answers(&mutation, "secrets", "remove")?;
            let env = answers.environment_id.clone();
            let mut edge = edge(&env);
            allowed(&edge, &env, "remove", json!(answers))?;
            signed(&mut edge, &env, "remove", json!(answers))?;
            Ok(Report::new(
                "secrets",
                "remove",
                secrets_cmd::remove(&edge, answers)?,
            ))
        }
    }
}

fn secret_report(verb: &'static str, result: serde_json::Value, replayed: bool) -> Report {
    let mut report = Report::new("secrets", verb, result);
    report.idempotency = Some(if replayed { "replayed" } else { "applied" });
    report
}

/// `gtc op secrets … --node URL`: the verbs through the node's admin API.
/// A `value_file` is read here, on the operator's machine, and its content
/// sent as `value`.
fn remote_secrets(remote: &crate::remote::Remote, verb: SecretsVerb) -> Result<Report, CliError> {
    match verb {
        SecretsVerb::List(env) => remote.secrets_list(&crate::checks::parse_env(&env.env)?),
        SecretsVerb::Put(mutation) => {
            let answers: SecretPutAnswers = answers(&mutation, "secrets", "put")?;
            remote.secrets_put(answers)
        }
        SecretsVerb::Get(mutation) => remote.secrets_get(&answers(&mutation, "secrets", "get")?),
        SecretsVerb::Rotate(mutation) => {
            remote.secrets_rotate(answers(&mutation, "secrets", "rotate")?)
        }
        SecretsVerb::Remove(mutation) => {
            remote.secrets_remove(&answers(&mutation, "secrets", "remove")?)
        }
    }
}
