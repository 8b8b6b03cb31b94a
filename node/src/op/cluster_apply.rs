//! `gtc op env reconcile ENV --router-image IMG` (no `--render`): the
//! render applied to the cluster of the current kubeconfig.
//!
//! The order, each step refusing with nothing applied:
//! 1. the operator's policy allows changing the environment;
//! 2. this gtc has the Kubernetes client (cargo feature `kube`; the
//!    container image is built without it: [`crate::kube_client`]);
//! 3. every secret ref the environment names has a stored version (no
//!    value is read yet);
//! 4. a kubeconfig gives a client: the generated least-privilege one when
//!    the environment's `credentials_ref` names it (`gtc op credentials
//!    bootstrap` with `bind`; revealed, audited), else the current
//!    kubeconfig (or a pod's service account);
//! 5. the API server answers `GET /version`;
//! 6. a SelfSubjectAccessReview allows every verb the apply needs in
//!    `gtc-<env>` (the denied ones are listed);
//! 7. the values are revealed (each reveal audited, never a value);
//! 8. `k8s_apply::apply`: server-side apply of every object, then the prune.
//!
//! The outcome, applied or refused, is audited as `env reconcile` with the
//! objects named and the Secret's keys, never a value. Talking to the API
//! server is `k8s_apply`'s; steps 3–8 ([`client`]) only wire the store to
//! it.

#[cfg(feature = "kube")]
mod client;

use deploy::audit::{AuditResult, Decision};
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use k8s_deployer::Rendered;
use serde_json::{Value, json};

use crate::context::Context;
use crate::error::CliError;

/// What the apply report adds to the render's facts.
pub struct Applied {
    /// The API server's URL.
    pub server: String,
    /// Who the client applied as.
    pub identity: String,
    /// The API server's `GET /version` answer.
    pub server_version: Value,
    /// `gtc-<env>`.
    pub namespace: String,
    /// Each object applied and pruned, as `Kind namespace/name`.
    pub applied: Vec<String>,
    pub pruned: Vec<String>,
    pub secret_keys: Vec<String>,
}

/// Runs the steps of the module comment for `rendered`, the render of
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
            audited["applied"] = json!(applied.applied);
            audited["pruned"] = json!(applied.pruned);
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

#[cfg(feature = "kube")]
use client::attempt;

/// Step 2 in a gtc without the Kubernetes client: the refusal, audited by
/// [`apply`] like every other.
#[cfg(not(feature = "kube"))]
fn attempt(
    _: &Context,
    _: &EnvId,
    _: &EnvironmentState,
    _: &Rendered,
    _: &str,
) -> Result<Applied, CliError> {
    Err(crate::kube_client::refusal(
        "it cannot apply to a cluster",
        "run `gtc op env reconcile` from a full build, or write the manifests with `--render DIR` and apply DIR/all.yaml with kubectl (its Secrets are rendered without values: fill them yourself)",
        "nothing was applied",
    ))
}
