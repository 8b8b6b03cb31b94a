//! `gtc op env reconcile ENV --router-image IMG` (no `--render`): the
//! render applied to the cluster of the current kubeconfig.
//!
//! The order, each step refusing with nothing applied:
//! 1. the operator's policy allows changing the environment;
//! 2. every secret ref the environment names has a stored version (no
//!    value is read yet);
//! 3. a kubeconfig gives a client: the generated least-privilege one when
//!    the environment's `credentials_ref` names it (`gtc op credentials
//!    bootstrap` with `bind`; revealed, audited), else the current
//!    kubeconfig (or a pod's service account);
//! 4. the API server answers `GET /version`;
//! 5. a SelfSubjectAccessReview allows every verb the apply needs in
//!    `gtc-<env>` (the denied ones are listed);
//! 6. the values are revealed (each reveal audited, never a value);
//! 7. `k8s_apply::apply`: server-side apply of every object, then the prune.
//!
//! The outcome, applied or refused, is audited as `env reconcile` with the
//! objects named and the Secret's keys, never a value. Talking to the API
//! server is `k8s_apply`'s; this module only wires the store to it.

use std::collections::BTreeMap;

use deploy::audit::{AuditResult, Decision};
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use k8s_apply::{ApplyError, Cluster, ClusterError};
use k8s_deployer::Rendered;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::CliError;
use crate::secrets_cmd;

/// The verb named in the audit of each reveal this apply makes.
const REVEAL_PURPOSE: &str = "env reconcile";

/// What the apply report adds to the render's facts.
pub struct Applied {
    pub server: String,
    pub identity: String,
    pub server_version: k8s_apply::ServerVersion,
    pub report: k8s_apply::ApplyReport,
    pub secret_keys: Vec<String>,
}

/// Runs steps 1–7 of the module comment for `rendered`, the render of
/// `state`'s environment.
pub fn apply(
    context: &Context,
    env_id: &EnvId,
    state: &EnvironmentState,
    rendered: &Rendered,
) -> Result<Applied, CliError> {
    let namespace = k8s_deployer::names::namespace_name(env_id).unwrap_or_default();
    let target = json!({"environment_id": env_id, "namespace": namespace, "mode": "apply"});
    if context.authorize(env_id).decision == Decision::Deny {
        // Records the denial and answers it as the error.
        context.audit_edge(env_id, "env", "reconcile", target.clone(), AuditResult::Ok)?;
    }
    let outcome = attempt(context, env_id, state, rendered, &namespace);
    match outcome {
        Ok(applied) => {
            let mut audited = target;
            audited["server"] = json!(applied.server);
            audited["applied"] = names(&applied.report.applied);
            audited["pruned"] = names(&applied.report.pruned);
            audited["secret_keys"] = json!(applied.secret_keys);
            context.audit_edge(env_id, "env", "reconcile", audited, AuditResult::Ok)?;
            Ok(applied)
        }
        Err(error) => {
            let result = AuditResult::Error {
                kind: error.kind.as_str().to_owned(),
                message: error.message.clone(),
            };
            let mut audited = target;
            if let Some(details) = &error.details {
                audited["details"] = details.clone();
            }
            context.audit_edge(env_id, "env", "reconcile", audited, result)?;
            Err(error)
        }
    }
}

fn attempt(
    context: &Context,
    env_id: &EnvId,
    state: &EnvironmentState,
    rendered: &Rendered,
    namespace: &str,
) -> Result<Applied, CliError> {
    let document = serde_json::to_value(&state.environment).map_err(|error| {
        CliError::new(
            ErrorKind::Internal,
            format!("the environment cannot be read as JSON: {error}"),
        )
    })?;
    let refs = k8s_deployer::secrets::secret_keys(&document).map_err(|error| {
        CliError::new(
            ErrorKind::Spec,
            format!("the environment cannot be applied: {error}"),
        )
    })?;
    let root = context.store.root().to_owned();
    let edge = secrets_cmd::Edge {
        store: &context.store,
        root: &root,
        actor: context.checks.actor.clone(),
        authorization: context.authorize(env_id),
        signed_by: None,
        replicated: false,
        cluster: None,
    };
    for reference in refs.values() {
        secrets_cmd::latest_meta(&edge, env_id, reference)
            .map_err(|error| missing_secret(reference, error))?;
    }
    let active = k8s_deployer::workers::active_revisions(&state.environment);
    let pinned = k8s_deployer::objects::inputs::pinned_values_wanted(&active);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CliError::new(
                ErrorKind::Internal,
                format!("the async runtime cannot start: {error}"),
            )
        })?;
    let stored = crate::credentials::stored_kubeconfig(context, env_id, state, REVEAL_PURPOSE)?;
    let cluster = match &stored {
        Some((_, kubeconfig)) => {
            runtime.block_on(Cluster::from_kubeconfig_text(kubeconfig.expose_secret()))
        }
        None => runtime.block_on(Cluster::infer()),
    };
    let cluster = cluster.map_err(|error| {
        CliError::new(
            ErrorKind::PreconditionFailed,
            format!("{error}; nothing was applied"),
        )
    })?;
    let server_version = runtime
        .block_on(cluster.apiserver_version())
        .map_err(|error| cluster_refusal(&error))?;
    let denied = runtime
        .block_on(k8s_apply::access::review(&cluster, namespace))
        .map_err(|error| cluster_refusal(&error))?;
    if !denied.is_empty() {
        return Err(denied_error(&cluster, namespace, &denied));
    }
    let mut values = BTreeMap::new();
    for (key, reference) in &refs {
        let (_, value) = secrets_cmd::reveal_latest(&edge, env_id, reference, REVEAL_PURPOSE)
            .map_err(|error| missing_secret(reference, error))?;
        values.insert(key.clone(), SecretString::from(value.expose().to_owned()));
    }
    // Each worker's Secret holds the exact versions its revision pinned.
    for (key, (reference, version)) in &pinned {
        let (_, value) =
            secrets_cmd::reveal_for(&edge, env_id, reference, Some(*version), REVEAL_PURPOSE)
                .map_err(|error| missing_secret(reference, error))?;
        values.insert(key.clone(), SecretString::from(value.expose().to_owned()));
    }
    let report = runtime
        .block_on(k8s_apply::apply(&cluster, rendered, &values))
        .map_err(|error| apply_error(&error))?;
    Ok(Applied {
        server: cluster.server().to_owned(),
        identity: cluster.identity(),
        server_version,
        report,
        secret_keys: refs.keys().chain(pinned.keys()).cloned().collect(),
    })
}

/// Object names as `Kind namespace/name` strings.
pub fn names(objects: &[k8s_apply::ObjectRef]) -> Value {
    json!(objects.iter().map(ToString::to_string).collect::<Vec<_>>())
}

/// A secret the Secret needs that cannot be read: named, with the fix.
fn missing_secret(reference: &str, error: CliError) -> CliError {
    // The store's not-found message already names `gtc op secrets put`.
    let fix = if error.kind == ErrorKind::NotFound {
        "; once it is stored, reconcile again"
    } else {
        ""
    };
    CliError::new(
        error.kind,
        format!(
            "the environment names secret {reference}, which Secret gtc-dev-secrets must carry, but it cannot be read: {}{fix}; nothing was applied",
            error.message
        ),
    )
    .with_details(json!({"secret_ref": reference}))
}

/// The cluster could not be asked before anything was applied.
fn cluster_refusal(error: &ClusterError) -> CliError {
    let kind = match error {
        ClusterError::Forbidden { .. } => ErrorKind::Unauthorized,
        _ => ErrorKind::PreconditionFailed,
    };
    CliError::new(kind, format!("{error}; nothing was applied"))
}

/// The access review denied some of what the apply needs.
fn denied_error(
    cluster: &Cluster,
    namespace: &str,
    denied: &[k8s_apply::access::Denied],
) -> CliError {
    let listed = denied
        .iter()
        .map(|denied| denied.permission.describe())
        .collect::<Vec<_>>()
        .join(", ");
    let identity = cluster.identity();
    CliError::new(
        ErrorKind::Unauthorized,
        format!(
            "forbidden: a SelfSubjectAccessReview says the user of {identity} lacks {listed}; grant {listed} to the user of {identity} (a Role in {namespace} bound to it; patch on the namespace needs a ClusterRole; `{}` checks the first); nothing was applied",
            denied[0].permission.can_i(),
        ),
    )
    .with_details(json!({"denied": denied, "server": cluster.server()}))
}

/// An apply that stopped part way, with what it did before.
fn apply_error(error: &ApplyError) -> CliError {
    let (kind, applied, pruned) = match error {
        ApplyError::Plan(_) => (ErrorKind::Spec, &[][..], &[][..]),
        ApplyError::Collision { .. } => (ErrorKind::Conflict, &[][..], &[][..]),
        ApplyError::Probe { source, .. } => (cluster_kind(source), &[][..], &[][..]),
        ApplyError::Apply {
            applied, source, ..
        }
        | ApplyError::List {
            applied, source, ..
        } => (cluster_kind(source), &applied[..], &[][..]),
        ApplyError::Prune {
            applied,
            pruned,
            source,
            ..
        } => (cluster_kind(source), &applied[..], &pruned[..]),
    };
    CliError::new(kind, error.to_string())
        .with_details(json!({"applied": names(applied), "pruned": names(pruned)}))
}

fn cluster_kind(error: &ClusterError) -> ErrorKind {
    match error {
        ClusterError::Forbidden { .. } => ErrorKind::Unauthorized,
        ClusterError::Rejected { code: 409, .. } => ErrorKind::Conflict,
        ClusterError::Rejected { code: 422, .. } => ErrorKind::Spec,
        _ => ErrorKind::Io,
    }
}
