//! `gtc op credentials requirements|bootstrap|rotate|show`: the deployer
//! credentials contract ([`packs::credentials::DeployerCredentials`]) of
//! the deployer an environment binds.
//!
//! The implementations live here, beside the preflight whose checks they
//! reuse, for the reason `crate::preflight` gives: the contract in `packs`
//! cannot reach the Docker engine client, the Kubernetes client
//! (`k8s_apply`) or the store's folders; the node, which wires them, can.
//! A gtc built without the Kubernetes client (cargo feature `kube`, left
//! out of the container image) refuses every verb but `show` for a
//! Kubernetes-bound environment, before anything is read or written.
//!
//! What is persisted, and where:
//! - `<env dir>/credentials.json`: the `greentic.credentials.v1` document
//!   (last validation, bootstrap facts, expiry), written atomically and
//!   validated before each write;
//! - `secret://<env>/deployer/k8s/kubeconfig`: the generated
//!   least-privilege kubeconfig, a new version per bootstrap or rotation,
//!   through the secret store (audited there, never a value);
//! - `<env dir>/rules/greentic.deployer.k8s/rbac.yaml`: the rules pack.
//!
//! The admin material (an admin kubeconfig) is read into a wrapped,
//! zeroed-on-drop value, used for the bootstrap's requests, and dropped:
//! it is written nowhere, not in the audit (which names only the profile,
//! the ref made and the times), not in an error; only the time it was
//! consumed is recorded.

mod docker;
mod document;
#[cfg(feature = "kube")]
mod k8s;
mod local;

/// The Kubernetes contract in a gtc without the Kubernetes client:
/// [`bound_deployer`] refuses a Kubernetes-bound environment before any of
/// these is reached, and each answers that same refusal.
#[cfg(not(feature = "kube"))]
mod k8s {
    use packs::credentials::DeployerCredentials;
    use secrecy::SecretString;

    use super::no_client;
    use crate::error::CliError;

    pub fn contract(
        _: &deploy::ids::EnvId,
        _: Option<(String, SecretString)>,
    ) -> Result<Box<dyn DeployerCredentials>, CliError> {
        Err(no_client())
    }

    pub fn token_ttl(_: Option<u64>) -> Result<u64, CliError> {
        Err(no_client())
    }

    pub fn check_admin_kubeconfig(_: &SecretString, _: &str) -> Result<(), CliError> {
        Err(no_client())
    }
}

use std::path::{Path, PathBuf};

use deploy::audit::{AuditResult, Decision};
use deploy::command::{
    Command, CredentialsBootstrapAnswers, CredentialsRotateAnswers, EnvTargetAnswers,
    EnvUpdateAnswers,
};
use deploy::credentials::{
    CREDENTIALS_SCHEMA, Credentials, CredentialsBootstrap, CredentialsExpiry, CredentialsMode,
    CredentialsValidation,
};
use deploy::descriptor::{CapabilitySlot, PackDescriptor};
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use deploy::refs::SecretRef;
use deploy::state::EnvironmentState;
use packs::credentials::{
    AdminMaterial, CapabilityStatus, CredentialsContractError, DeployerCredentials, Issued,
    RequirementsReport,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::CliError;
use crate::output::Report;
use crate::preflight::{Check, Status};
use crate::secrets_cmd;

const NOUN: &str = "credentials";
/// Where the generated Kubernetes kubeconfig is stored, under the
/// environment's secrets.
pub const GENERATED_KUBECONFIG_PATH: &str = "deployer/k8s/kubeconfig";
/// The secret path a requirements-only document names when the
/// environment has no `credentials_ref`: the deployer runs as the identity
/// at hand (the user gtc runs as, its Docker socket, its current
/// kubeconfig) and nothing is stored at that path.
pub const AMBIENT_PATH: &str = "deployer/ambient";
/// The rules packs' folder in the environment's folder.
pub const RULES_DIR: &str = "rules";
/// Largest admin material read: kubeconfigs are a few KiB.
const ADMIN_MATERIAL_BYTES_MAX: u64 = 1024 * 1024;

/// The deployer bound, as the contract knows it.
enum Deployer {
    LocalProcess,
    Docker,
    K8s,
}

/// The environment's deployer binding and which contract serves it.
fn bound_deployer(
    env_id: &EnvId,
    state: &EnvironmentState,
) -> Result<(PackDescriptor, Deployer), CliError> {
    let Some(binding) = state.environment.binding(CapabilitySlot::Deployer) else {
        return Err(CliError::new(
            ErrorKind::PreconditionFailed,
            format!(
                "environment {env_id} binds no deployer, so it has no credentials contract; bind one with `gtc op env-packs add` (slot deployer)"
            ),
        ));
    };
    let deployer = match binding.kind.path() {
        local_process::DESCRIPTOR_PATH => Deployer::LocalProcess,
        docker_deployer::DESCRIPTOR_PATH => Deployer::Docker,
        k8s_deployer::DESCRIPTOR_PATH => {
            crate::kube_client::require(NO_CLIENT_WHAT, NO_CLIENT_FIX, NO_CLIENT_DONE)?;
            Deployer::K8s
        }
        other => {
            return Err(CliError::new(
                ErrorKind::PreconditionFailed,
                format!("gtc has no credentials contract for deployer {other}"),
            ));
        }
    };
    Ok((binding.kind.clone(), deployer))
}

/// Why the Kubernetes contract is refused without the client, the fix, and
/// what the refusal left untouched ([`crate::kube_client::require`]).
const NO_CLIENT_WHAT: &str =
    "it cannot check, bootstrap or rotate a Kubernetes deployer's credentials";
const NO_CLIENT_FIX: &str = "run `gtc op credentials requirements|bootstrap|rotate` for this environment from a full build (`gtc op credentials show` works in any)";
const NO_CLIENT_DONE: &str = "nothing was changed";

/// The refusal of the Kubernetes contract in a gtc without the client.
#[cfg(not(feature = "kube"))]
fn no_client() -> CliError {
    crate::kube_client::refusal(NO_CLIENT_WHAT, NO_CLIENT_FIX, NO_CLIENT_DONE)
}

/// A preflight check as a capability status.
pub(crate) fn from_check(check: Check) -> CapabilityStatus {
    match check.status {
        Status::Pass => CapabilityStatus::Pass {
            detail: check.detail,
        },
        Status::Fail => CapabilityStatus::Fail {
            reason: check.detail,
            fix: check.fix.unwrap_or_default(),
        },
        Status::Skipped => CapabilityStatus::Skipped {
            reason: check.detail,
        },
    }
}

fn secret_ref(env_id: &EnvId, path: &str) -> Result<SecretRef, CliError> {
    format!("secret://{env_id}/{path}")
        .parse()
        .map_err(|error| CliError::new(ErrorKind::Internal, format!("secret ref: {error}")))
}

fn edge<'a>(context: &'a Context, root: &'a Path, env_id: &EnvId) -> secrets_cmd::Edge<'a> {
    secrets_cmd::Edge {
        store: &context.store,
        root,
        actor: context.checks.actor.clone(),
        authorization: context.authorize(env_id),
        signed_by: None,
        replicated: root.join(crate::node_client::NODE_FILE).is_file(),
        cluster: None,
    }
}

/// The generated kubeconfig, when the environment's `credentials_ref` is
/// the one a bootstrap made (revealed, audited as a `get` for `purpose`);
/// `env reconcile` applies with it too.
pub(crate) fn stored_kubeconfig(
    context: &Context,
    env_id: &EnvId,
    state: &EnvironmentState,
    purpose: &str,
) -> Result<Option<(String, SecretString)>, CliError> {
    let generated = secret_ref(env_id, GENERATED_KUBECONFIG_PATH)?;
    match &state.environment.credentials_ref {
        Some(reference) if reference == &generated => {
            let root = context.store.root().to_owned();
            let (_, value) = secrets_cmd::reveal_latest(
                &edge(context, &root, env_id),
                env_id,
                reference.as_str(),
                purpose,
            )?;
            Ok(Some((
                reference.to_string(),
                SecretString::from(value.expose().to_owned()),
            )))
        }
        _ => Ok(None),
    }
}

fn contract(
    context: &Context,
    env_id: &EnvId,
    deployer: &Deployer,
    kubeconfig: Option<(String, SecretString)>,
) -> Result<Box<dyn DeployerCredentials>, CliError> {
    Ok(match deployer {
        Deployer::LocalProcess => Box::new(local::LocalProcessCredentials {
            env_dir: context.store.env_dir(env_id),
        }),
        Deployer::Docker => Box::new(docker::DockerCredentials),
        Deployer::K8s => k8s::contract(env_id, kubeconfig)?,
    })
}

/// Refuses (audited as a denial) a change the operator's policy denies.
fn authorize(
    context: &Context,
    env_id: &EnvId,
    verb: &str,
    target: &Value,
) -> Result<(), CliError> {
    if context.authorize(env_id).decision == Decision::Deny {
        // Records the denial and answers it as the error.
        context.audit_edge(env_id, NOUN, verb, target.clone(), AuditResult::Ok)?;
    }
    Ok(())
}

/// Audits `outcome` of `verb` (the facts in `target`, never a secret).
fn audited(
    context: &Context,
    env_id: &EnvId,
    verb: &str,
    mut target: Value,
    outcome: Result<(Report, Value), CliError>,
) -> Result<Report, CliError> {
    match outcome {
        Ok((report, facts)) => {
            if let (Some(target), Some(facts)) = (target.as_object_mut(), facts.as_object()) {
                target.extend(facts.clone());
            }
            context.audit_edge(env_id, NOUN, verb, target, AuditResult::Ok)?;
            Ok(report)
        }
        Err(error) => {
            let result = AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            };
            context.audit_edge(env_id, NOUN, verb, target, result)?;
            Err(error)
        }
    }
}

/// A new requirements-mode document for an environment with none.
fn fresh_document(
    env_id: &EnvId,
    state: &EnvironmentState,
    kind: &PackDescriptor,
    validation: CredentialsValidation,
) -> Result<Credentials, CliError> {
    let provided = match &state.environment.credentials_ref {
        Some(reference) => reference.clone(),
        None => secret_ref(env_id, AMBIENT_PATH)?,
    };
    Ok(Credentials {
        schema: CREDENTIALS_SCHEMA.to_owned(),
        env_id: env_id.clone(),
        deployer_kind: kind.clone(),
        mode: CredentialsMode::Requirements,
        provided_credentials_ref: provided,
        validation,
        bootstrap: None,
        expiry: None,
    })
}

fn validation_of(report: &RequirementsReport, at: deploy::Timestamp) -> CredentialsValidation {
    CredentialsValidation {
        last_run_at: at,
        result: report.result(),
        missing_capabilities: report.missing_capabilities(),
    }
}

/// `credentials requirements`: the bound deployer's `validate`, recorded
/// in the document; exit 1 when a capability fails.
pub fn requirements(context: &Context, answers: EnvTargetAnswers) -> Result<Report, CliError> {
    let env_id = answers.environment_id;
    let target = json!({"environment_id": env_id});
    authorize(context, &env_id, "requirements", &target)?;
    let outcome = (|| {
        let state = context.load(env_id.as_str())?;
        let (kind, deployer) = bound_deployer(&env_id, &state)?;
        let kubeconfig = match deployer {
            Deployer::K8s => {
                stored_kubeconfig(context, &env_id, &state, "credentials requirements")?
            }
            _ => None,
        };
        let validated_with = kubeconfig.as_ref().map(|(reference, _)| reference.clone());
        let contract = contract(context, &env_id, &deployer, kubeconfig)?;
        let report = contract.validate();
        let now = chrono::Utc::now();
        let env_dir = context.store.env_dir(&env_id);
        let validation = validation_of(&report, now);
        let document = match document::load(&env_dir)? {
            Some(mut document) => {
                document.validation = validation;
                document.deployer_kind = kind.clone();
                document
            }
            None => fresh_document(&env_id, &state, &kind, validation)?,
        };
        let path = document::save(&env_dir, &document)?;
        let rotation_due = document
            .expiry
            .as_ref()
            .map(|expiry| contract.rotation_due(expiry, now));
        let passed = report.passed();
        let mut result = Report::new(
            NOUN,
            "requirements",
            json!({
                "environment_id": env_id,
                "deployer": kind,
                "passed": passed,
                "checks": report.checks,
                "validated_with": validated_with.as_deref().unwrap_or("the identity gtc runs as"),
                "rotation_due": rotation_due,
                "expiry": document.expiry,
                "document": path,
                "checked_at": now,
            }),
        );
        result.exit_code = if passed {
            0
        } else {
            crate::error::EXIT_FAILURE
        };
        let facts = json!({
            "deployer": kind,
            "result": document.validation.result,
            "missing_capabilities": document.validation.missing_capabilities,
        });
        Ok((result, facts))
    })();
    audited(context, &env_id, "requirements", target, outcome)
}

/// `credentials show ENV`: the document, and whether rotation is due.
pub fn show(context: &Context, env: &str) -> Result<Report, CliError> {
    let env_id = crate::checks::parse_env(env)?;
    let state = context.load(env_id.as_str())?;
    let env_dir = context.store.env_dir(&env_id);
    let document = document::load(&env_dir)?;
    let now = chrono::Utc::now();
    let rotation_due = document
        .as_ref()
        .and_then(|document| document.expiry.as_ref())
        .map(|expiry| packs::credentials::rotation_due(expiry, now));
    Ok(Report::new(
        NOUN,
        "show",
        json!({
            "environment_id": env_id,
            "credentials_ref": state.environment.credentials_ref,
            "credentials": document,
            "rotation_due": rotation_due,
            "snapshot_at": now,
        }),
    ))
}

/// The admin material from a file or inline, wrapped at once; `None`
/// when neither is given. Both given, an unreadable or oversized file, or
/// text that is not a kubeconfig with a current context and server, are
/// refused naming the field, never quoting the material.
fn admin_material(
    path: Option<&str>,
    inline: Option<String>,
) -> Result<Option<SecretString>, CliError> {
    let material = match (path, inline) {
        (Some(_), Some(inline)) => {
            drop(zeroize::Zeroizing::new(inline));
            return Err(CliError::invalid(
                "give admin_material_path or admin_material_inline, not both; nothing was changed",
            )
            .with_field("admin_material_inline"));
        }
        (None, None) => return Ok(None),
        (None, Some(inline)) => SecretString::from(inline),
        (Some(path), None) => read_material(Path::new(path))?,
    };
    let field = if path.is_some() {
        "admin_material_path"
    } else {
        "admin_material_inline"
    };
    k8s::check_admin_kubeconfig(&material, field)?;
    Ok(Some(material))
}

fn read_material(path: &Path) -> Result<SecretString, CliError> {
    let refused = |reason: String| {
        CliError::invalid(format!(
            "admin_material_path {} cannot be read: {reason}; nothing was changed",
            path.display()
        ))
        .with_field("admin_material_path")
    };
    let metadata = std::fs::metadata(path).map_err(|error| refused(error.to_string()))?;
    if metadata.len() > ADMIN_MATERIAL_BYTES_MAX {
        return Err(refused(format!(
            "it holds {} bytes, more than the {ADMIN_MATERIAL_BYTES_MAX} a kubeconfig may",
            metadata.len()
        )));
    }
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|error| refused(error.to_string()))?);
    let text =
        std::str::from_utf8(&bytes).map_err(|_| refused("it is not UTF-8 text".to_owned()))?;
    Ok(SecretString::from(text.to_owned()))
}

/// A contract error as the operator sees it.
fn contract_error(error: CredentialsContractError) -> CliError {
    match error {
        CredentialsContractError::NotSupported { .. } => {
            CliError::new(ErrorKind::Spec, format!("{error}; nothing was changed"))
        }
        CredentialsContractError::AdminMaterial { .. } => CliError::new(
            ErrorKind::InvalidArgument,
            format!("{error}; nothing was changed"),
        ),
        CredentialsContractError::Forbidden(message) => {
            CliError::new(ErrorKind::Unauthorized, message)
        }
        CredentialsContractError::Provider(message) => CliError::new(ErrorKind::Io, message),
    }
}

/// Writes the rules pack under `<env dir>/rules/<deployer path>/`; answers
/// its ref relative to the environment's folder.
fn write_rules_pack(
    env_dir: &Path,
    kind: &PackDescriptor,
    files: &[(String, String)],
) -> Result<String, CliError> {
    let relative = PathBuf::from(RULES_DIR).join(kind.path());
    for (name, text) in files {
        let target = env_dir.join(&relative).join(name);
        document::write_atomic(&target, text.as_bytes()).map_err(|error| {
            CliError::new(
                ErrorKind::Io,
                format!(
                    "the rules pack {} cannot be written: {error}",
                    target.display()
                ),
            )
        })?;
    }
    Ok(relative.to_string_lossy().into_owned())
}

/// Stores `issued`'s credentials as a new version of the generated
/// kubeconfig secret; answers the version's metadata.
fn store_issued(context: &Context, env_id: &EnvId, issued: &Issued) -> Result<Value, CliError> {
    let root = context.store.root().to_owned();
    let value = secrets::value::SecretText::new(issued.credentials.expose_secret().to_owned())
        .map_err(|error| {
            CliError::new(
                ErrorKind::Internal,
                format!("the generated kubeconfig cannot be stored: {error}"),
            )
        })?;
    let answers = secrets::answers::SecretPutAnswers {
        environment_id: env_id.clone(),
        path: GENERATED_KUBECONFIG_PATH.to_owned(),
        value: Some(value),
        value_file: None,
        idempotency_key: None,
    };
    let (meta, _) = secrets_cmd::put(&edge(context, &root, env_id), answers)?;
    Ok(meta)
}

/// Refuses a deployer other than Kubernetes for bootstrap and rotate.
fn k8s_only(env_id: &EnvId, kind: &PackDescriptor, deployer: &Deployer) -> Result<(), CliError> {
    match deployer {
        Deployer::K8s => Ok(()),
        _ => Err(contract_error(CredentialsContractError::NotSupported {
            deployer: format!("{kind} (environment {env_id})"),
        })),
    }
}

/// `credentials bootstrap`: least-privilege credentials from an admin
/// kubeconfig (see the module comment for what is written where).
pub fn bootstrap(
    context: &Context,
    mut answers: CredentialsBootstrapAnswers,
) -> Result<Report, CliError> {
    let env_id = answers.environment_id.clone();
    let inline = answers.admin_material_inline.take();
    let target = json!({
        "environment_id": env_id,
        "admin_profile": answers.admin_profile,
        "admin_material": if answers.admin_material_path.is_some() { "path" } else if inline.is_some() { "inline" } else { "none" },
        "bind": answers.bind,
        "token_ttl_seconds": answers.token_ttl_seconds,
    });
    authorize(context, &env_id, "bootstrap", &target)?;
    let outcome = (|| {
        let state = context.load(env_id.as_str())?;
        let (kind, deployer) = bound_deployer(&env_id, &state)?;
        k8s_only(&env_id, &kind, &deployer)?;
        let ttl_seconds = k8s::token_ttl(answers.token_ttl_seconds)?;
        let Some(material) = admin_material(answers.admin_material_path.as_deref(), inline)? else {
            return Err(CliError::invalid(
                "give the admin kubeconfig as admin_material_path (a file) or admin_material_inline (its YAML); nothing was changed",
            )
            .with_field("admin_material_path"));
        };
        // The generated kubeconfig goes to the secret store: it must serve
        // this environment before anything is made in the cluster.
        let root = context.store.root().to_owned();
        let secrets_edge = edge(context, &root, &env_id);
        secrets_edge.check_environment(&env_id)?;
        if secrets_edge.replicated {
            return Err(CliError::new(
                ErrorKind::NotYetImplemented,
                "this store is a cluster member's replica: `credentials bootstrap` runs where the secret store is this machine's own (a single node), and a replica's secrets change only through its running member; nothing was changed",
            ));
        }
        let contract = contract(context, &env_id, &deployer, None)?;
        let issued = contract
            .bootstrap(AdminMaterial(material), ttl_seconds)
            .map_err(contract_error)?;
        // The admin material was moved into the bootstrap and dropped there.
        let consumed_at = chrono::Utc::now();
        let env_dir = context.store.env_dir(&env_id);
        let rules_pack_ref = write_rules_pack(&env_dir, &kind, &issued.rules_pack)?;
        let meta = store_issued(context, &env_id, &issued)?;
        let generated = secret_ref(&env_id, GENERATED_KUBECONFIG_PATH)?;
        // Validated with what was made, so the document says whether the
        // new identity holds every capability.
        let check = k8s::contract(
            &env_id,
            Some((generated.to_string(), issued.credentials.clone())),
        )?;
        let report = check.validate();
        let expiry = CredentialsExpiry {
            expires_at: issued.expires_at,
            rotate_at: Some(contract.rotate_at(issued.issued_at, issued.expires_at)),
        };
        let document = Credentials {
            schema: CREDENTIALS_SCHEMA.to_owned(),
            env_id: env_id.clone(),
            deployer_kind: kind.clone(),
            mode: CredentialsMode::Bootstrap,
            provided_credentials_ref: generated.clone(),
            validation: validation_of(&report, chrono::Utc::now()),
            bootstrap: Some(CredentialsBootstrap {
                admin_credential_consumed_at: consumed_at,
                rules_pack_ref: rules_pack_ref.clone(),
                generated_credentials_ref: generated.clone(),
            }),
            expiry: Some(expiry.clone()),
        };
        let path = document::save(&env_dir, &document)?;
        let bound =
            if answers.bind && state.environment.credentials_ref.as_ref() != Some(&generated) {
                context.submit(Command::EnvUpdate(EnvUpdateAnswers {
                    environment_id: env_id.clone(),
                    name: None,
                    region: None,
                    tenant_org_id: None,
                    listen_addr: None,
                    public_base_url: None,
                    gui_enabled: None,
                    credentials_ref: Some(generated.clone()),
                    idempotency_key: None,
                }))?;
                true
            } else {
                answers.bind
            };
        let report_json = json!({
            "environment_id": env_id,
            "deployer": kind,
            "generated_credentials_ref": generated,
            "secret_version": meta["version"],
            "rules_pack_ref": rules_pack_ref,
            "admin_credential_consumed_at": consumed_at,
            "expiry": expiry,
            "bound": bound,
            "validation": document.validation,
            "checks": report.checks,
            "document": path,
        });
        let facts = json!({
            "generated_credentials_ref": generated,
            "secret_version": meta["version"],
            "rules_pack_ref": rules_pack_ref,
            "admin_credential_consumed_at": consumed_at,
            "expires_at": expiry.expires_at,
            "rotate_at": expiry.rotate_at,
            "bound": bound,
        });
        Ok((Report::new(NOUN, "bootstrap", report_json), facts))
    })();
    audited(context, &env_id, "bootstrap", target, outcome)
}

/// `credentials rotate`: a fresh token, minted with the current generated
/// kubeconfig (the ServiceAccount may create its own token) or with admin
/// material when given; a new secret version; the expiry updated.
pub fn rotate(
    context: &Context,
    mut answers: CredentialsRotateAnswers,
) -> Result<Report, CliError> {
    let env_id = answers.environment_id.clone();
    let inline = answers.admin_material_inline.take();
    let target = json!({
        "environment_id": env_id,
        "admin_material": if answers.admin_material_path.is_some() { "path" } else if inline.is_some() { "inline" } else { "none" },
        "token_ttl_seconds": answers.token_ttl_seconds,
    });
    authorize(context, &env_id, "rotate", &target)?;
    let outcome = (|| {
        let state = context.load(env_id.as_str())?;
        let (kind, deployer) = bound_deployer(&env_id, &state)?;
        k8s_only(&env_id, &kind, &deployer)?;
        let ttl_seconds = k8s::token_ttl(answers.token_ttl_seconds)?;
        let admin = admin_material(answers.admin_material_path.as_deref(), inline)?;
        let env_dir = context.store.env_dir(&env_id);
        let Some(mut document) =
            document::load(&env_dir)?.filter(|document| document.bootstrap.is_some())
        else {
            return Err(CliError::new(
                ErrorKind::PreconditionFailed,
                format!(
                    "environment {env_id} has no bootstrapped credentials to rotate; run `gtc op credentials bootstrap` first; nothing was changed"
                ),
            ));
        };
        let generated = secret_ref(&env_id, GENERATED_KUBECONFIG_PATH)?;
        let used_admin = admin.is_some();
        let minting = match admin {
            Some(material) => material,
            None => {
                let root = context.store.root().to_owned();
                let (_, value) = secrets_cmd::reveal_latest(
                    &edge(context, &root, &env_id),
                    &env_id,
                    generated.as_str(),
                    "credentials rotate",
                )?;
                SecretString::from(value.expose().to_owned())
            }
        };
        let contract = contract(context, &env_id, &deployer, None)?;
        let issued = contract
            .rotate(minting, ttl_seconds)
            .map_err(contract_error)?;
        let meta = store_issued(context, &env_id, &issued)?;
        let expiry = CredentialsExpiry {
            expires_at: issued.expires_at,
            rotate_at: Some(contract.rotate_at(issued.issued_at, issued.expires_at)),
        };
        document.expiry = Some(expiry.clone());
        if used_admin && let Some(bootstrap) = document.bootstrap.as_mut() {
            bootstrap.admin_credential_consumed_at = issued.issued_at;
        }
        let path = document::save(&env_dir, &document)?;
        let report_json = json!({
            "environment_id": env_id,
            "deployer": kind,
            "generated_credentials_ref": generated,
            "secret_version": meta["version"],
            "minted_with": if used_admin { "admin material" } else { "the current generated credentials" },
            "expiry": expiry,
            "document": path,
        });
        let facts = json!({
            "generated_credentials_ref": generated,
            "secret_version": meta["version"],
            "minted_with": if used_admin { "admin" } else { "generated" },
            "expires_at": expiry.expires_at,
            "rotate_at": expiry.rotate_at,
        });
        Ok((Report::new(NOUN, "rotate", report_json), facts))
    })();
    audited(context, &env_id, "rotate", target, outcome)
}
