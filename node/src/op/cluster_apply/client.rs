//! Steps 3–8 of the apply (see the parent module): the store wired to
//! `k8s_apply`. Only in a gtc built with the Kubernetes client (cargo
//! feature `kube`).

use std::collections::BTreeMap;

use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use k8s_apply::{ApplyError, Cluster, ClusterError};
use k8s_deployer::Rendered;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::Applied;
use crate::context::Context;
use crate::error::CliError;
use crate::secrets_cmd;

/// The verb named in the audit of each reveal this apply makes.
const REVEAL_PURPOSE: &str = "env reconcile";

/// Steps 3–8 for `rendered`, the render of `state`'s environment, into
/// `namespace`.
pub(super) fn attempt(
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
        server_version: json!(server_version),
        namespace: report.namespace,
        applied: strings(&report.applied),
        pruned: strings(&report.pruned),
        secret_keys: refs.keys().chain(pinned.keys()).cloned().collect(),
    })
}

/// Object names as `Kind namespace/name` strings.
fn strings(objects: &[k8s_apply::ObjectRef]) -> Vec<String> {
    objects.iter().map(ToString::to_string).collect()
}

/// [`strings`] as a JSON array, for an error's details.
fn names(objects: &[k8s_apply::ObjectRef]) -> Value {
    json!(strings(objects))
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
