//! Why talking to the cluster failed: one enum per operation, the facts in
//! fields, each message saying how to fix it. No variant holds a secret
//! value: the server's messages about the Secret are redacted before they
//! get here ([`crate::apply`]).

use thiserror::Error;

use crate::kind::ObjectRef;

/// No client could be made for the current kubeconfig.
#[derive(Debug, Error)]
pub enum ConnectError {
    #[error(
        "no usable Kubernetes configuration: {reason}; set KUBECONFIG to a kubeconfig with a current-context (`kubectl config use-context NAME` sets it), or run inside a pod with a service account"
    )]
    NoConfig { reason: String },
    #[error(
        "a Kubernetes client for the API server at {server} cannot be made: {reason}; check the cluster's certificate-authority and the user's credentials in the kubeconfig"
    )]
    Client { server: String, reason: String },
}

/// One request to the API server failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterError {
    #[error(
        "the API server at {server} did not answer {action} within {seconds} s; check `kubectl cluster-info` and that the cluster is reachable from this machine"
    )]
    Timeout {
        server: String,
        action: String,
        seconds: u64,
    },
    #[error(
        "the API server at {server} cannot be reached ({action}): {reason}; check `kubectl cluster-info` and the server address of the current context in the kubeconfig"
    )]
    Unreachable {
        server: String,
        action: String,
        reason: String,
    },
    #[error(
        "forbidden: {verb} on {resource} in {namespace} ({message}); grant {verb} on {resource} in {namespace} to the user of {context}"
    )]
    Forbidden {
        verb: String,
        resource: String,
        namespace: String,
        context: String,
        message: String,
    },
    #[error("the API server at {server} refused {action}: HTTP {code} {reason}: {message}")]
    Rejected {
        server: String,
        action: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("{action} against the API server at {server} failed: {reason}")]
    Failed {
        server: String,
        action: String,
        reason: String,
    },
}

/// A render that cannot be applied as it is; nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    #[error("the render holds no object; nothing to apply")]
    Empty,
    #[error(
        "the render's first object is a {found}, not the Namespace; the namespace must be applied before what lives in it"
    )]
    NamespaceNotFirst { found: String },
    #[error("the render's object #{index} cannot be applied: {reason}")]
    Malformed { index: usize, reason: String },
    #[error(
        "the render's object #{index} is a {kind} ({api_version}), which the apply does not know; only the kinds the render produces are applied"
    )]
    UnknownKind {
        index: usize,
        kind: String,
        api_version: String,
    },
    #[error("{object} is outside namespace {namespace}, the only one the apply writes to")]
    OutsideNamespace {
        object: ObjectRef,
        namespace: String,
    },
    #[error(
        "no value was given for key(s) {keys:?} of Secret {secret}; applying it would overwrite the values in the cluster with empty ones, so nothing was applied; store each secret (`gtc op secrets put`) and reconcile again"
    )]
    MissingSecretValues { secret: String, keys: Vec<String> },
    #[error(
        "values were given for key(s) {keys:?}, which no Secret of the render has; nothing was applied"
    )]
    UnexpectedSecretValues { keys: Vec<String> },
}

/// An apply that stopped. What was applied or pruned before it is in the
/// fields, so the caller can report it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "the cluster already holds {} that gtc did not make for this environment; nothing was applied. Pick another environment id (its namespace is gtc-<env>), or remove those objects, or, if they are meant to be this environment's, label them {}=gtc and {}=<env>",
        describe_foreign(.objects),
        k8s_deployer::names::LABEL_MANAGED_BY,
        k8s_deployer::names::LABEL_ENVIRONMENT
    )]
    Collision { objects: Vec<(ObjectRef, String)> },
    #[error("reading {object} to check who owns it failed: {source}; nothing was applied")]
    Probe {
        object: ObjectRef,
        source: ClusterError,
    },
    #[error(
        "{object} was not applied: {source}; the objects before it were applied and nothing was pruned; fix this and reconcile again (server-side apply is idempotent)"
    )]
    Apply {
        object: ObjectRef,
        applied: Vec<ObjectRef>,
        source: ClusterError,
    },
    #[error(
        "listing the {kind}s of namespace {namespace} to prune them failed: {source}; every object of the render was applied, nothing was pruned; reconcile again to prune"
    )]
    List {
        kind: String,
        namespace: String,
        applied: Vec<ObjectRef>,
        source: ClusterError,
    },
    #[error(
        "deleting the stale {object} failed: {source}; every object of the render was applied; reconcile again to finish the prune"
    )]
    Prune {
        object: ObjectRef,
        applied: Vec<ObjectRef>,
        pruned: Vec<ObjectRef>,
        source: ClusterError,
    },
}

/// `Kind ns/name (why); …` for a collision's message.
fn describe_foreign(objects: &[(ObjectRef, String)]) -> String {
    objects
        .iter()
        .map(|(object, why)| format!("{object} ({why})"))
        .collect::<Vec<_>>()
        .join("; ")
}
