//! Least-privilege deployer credentials for one environment, made with an
//! admin's client: a ServiceAccount `gtc-deployer` in `gtc-<env>`, a Role
//! granting exactly what the apply needs there ([`crate::access::required`]
//! plus minting its own token), a ClusterRole limited by `resourceNames`
//! to the namespace itself, their bindings, and a bounded token from the
//! TokenRequest API. The kubeconfig around the token takes the server and
//! CA from the kubeconfig that made it.
//!
//! What is sent is pure ([`rbac_objects`], [`token_request`],
//! [`least_privilege_kubeconfig`]) and tested without a server. The token
//! and every kubeconfig are held as [`SecretString`]s: never in an error,
//! a log line or `Debug`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Resource as _;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use thiserror::Error;

use crate::FIELD_MANAGER;
use crate::access::{NAMESPACED_VERBS, required};
use crate::cluster::Cluster;
use crate::error::ClusterError;

/// The ServiceAccount the deployer runs as, in `gtc-<env>`.
pub const SERVICE_ACCOUNT: &str = "gtc-deployer";
/// A token's lifetime when the operator names none: one day, so a leaked
/// kubeconfig stops working by itself soon, and a daily rotation renews it.
pub const TOKEN_TTL_SECONDS_DEFAULT: u64 = 24 * 3600;
/// The shortest lifetime asked: the API server refuses under 10 minutes.
pub const TOKEN_TTL_SECONDS_MIN: u64 = 600;
/// The longest lifetime asked: a week; longer-lived bearer tokens are what
/// bound tokens exist to avoid.
pub const TOKEN_TTL_SECONDS_MAX: u64 = 7 * 24 * 3600;

/// Why a bootstrap or a token request stopped.
#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error(
        "{object} was not applied: {source}; the objects before it were applied (server-side apply is idempotent: run the bootstrap again once fixed)"
    )]
    Apply {
        object: String,
        source: Box<ClusterError>,
    },
    #[error("the token of ServiceAccount {namespace}/{SERVICE_ACCOUNT} was not issued: {source}")]
    Token {
        namespace: String,
        source: Box<ClusterError>,
    },
    #[error("the kubeconfig cannot be used to make credentials: {reason}")]
    Kubeconfig { reason: String },
}

/// The labels every object gtc makes carries, so the apply's ownership
/// check accepts them as this environment's.
fn labels(env: &str) -> Value {
    json!({
        k8s_deployer::names::LABEL_MANAGED_BY: "gtc",
        k8s_deployer::names::LABEL_ENVIRONMENT: env,
    })
}

/// The ClusterRole (and its binding) name: cluster-wide objects need the
/// environment in their name.
pub fn cluster_role_name(namespace: &str) -> String {
    format!("{SERVICE_ACCOUNT}-{namespace}")
}

/// The namespace, then the ServiceAccount, Role, RoleBinding, ClusterRole
/// and ClusterRoleBinding for `namespace` (`gtc-<env>`), in apply order.
/// Deterministic: the same namespace gives the same objects.
pub fn rbac_objects(namespace: &str, env: &str) -> Vec<Value> {
    let labels = labels(env);
    // One rule per resource, with the verbs the apply uses on it, in the
    // order access::required lists them.
    let mut resources: Vec<(String, String)> = Vec::new();
    for permission in required(namespace) {
        let key = (permission.group.clone(), permission.resource.clone());
        if permission.kind.is_namespaced() && !resources.contains(&key) {
            resources.push(key);
        }
    }
    let mut rules: Vec<Value> = resources
        .into_iter()
        .map(|(group, resource)| {
            json!({"apiGroups": [group], "resources": [resource], "verbs": NAMESPACED_VERBS})
        })
        .collect();
    // `credentials rotate` mints the next token with the current one.
    rules.push(json!({
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": [SERVICE_ACCOUNT],
        "verbs": ["create"],
    }));
    let cluster_role = cluster_role_name(namespace);
    let subject =
        json!([{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace",
               "metadata": {"name": namespace, "labels": labels}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
               "rules": rules}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
               "subjects": subject}),
        // The apply reads the namespace's labels (ownership) and patches
        // it; nothing else cluster-wide, and only this namespace.
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": cluster_role, "labels": labels},
               "rules": [{"apiGroups": [""], "resources": ["namespaces"],
                          "resourceNames": [namespace], "verbs": ["get", "patch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": cluster_role, "labels": labels},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
               "subjects": subject}),
    ]
}

/// The body of a TokenRequest for `ttl_seconds` (the API server's default
/// audience).
pub fn token_request(ttl_seconds: u64) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": ttl_seconds},
    })
}

/// A token the API server issued.
pub struct IssuedToken {
    pub token: SecretString,
    /// When it stops working, as the server said (RFC 3339).
    pub expiration_timestamp: String,
}

/// Applies [`rbac_objects`] with `cluster` (an admin's client), then
/// requests a token for the ServiceAccount.
pub async fn bootstrap(
    cluster: &Cluster,
    namespace: &str,
    env: &str,
    ttl_seconds: u64,
) -> Result<IssuedToken, BootstrapError> {
    for object in rbac_objects(namespace, env) {
        apply_object(cluster, &object).await?;
    }
    request_token(cluster, namespace, ttl_seconds).await
}

/// `POST …/serviceaccounts/gtc-deployer/token` in `namespace`.
pub async fn request_token(
    cluster: &Cluster,
    namespace: &str,
    ttl_seconds: u64,
) -> Result<IssuedToken, BootstrapError> {
    let action = format!("the token request of ServiceAccount {namespace}/{SERVICE_ACCOUNT}");
    let failed = |reason: String| BootstrapError::Token {
        namespace: namespace.to_owned(),
        source: Box::new(ClusterError::Failed {
            server: cluster.server().to_owned(),
            action: action.clone(),
            reason,
        }),
    };
    let url = ServiceAccount::url_path(&(), Some(namespace));
    let body =
        serde_json::to_vec(&token_request(ttl_seconds)).map_err(|e| failed(e.to_string()))?;
    let request = kube::core::Request::new(url)
        .create_subresource("token", SERVICE_ACCOUNT, &PostParams::default(), body)
        .map_err(|error| failed(error.to_string()))?;
    let text = zeroize::Zeroizing::new(cluster.send(&action, request).await.map_err(|error| {
        BootstrapError::Token {
            namespace: namespace.to_owned(),
            source: Box::new(cluster.error(
                &action,
                &error,
                Some(("create", "serviceaccounts/token", namespace)),
            )),
        }
    })?);
    let answer: Value = serde_json::from_str(&text)
        .map_err(|_| failed("its answer is not a TokenRequest".to_owned()))?;
    let status = &answer["status"];
    let (Some(token), Some(expiration)) = (
        status["token"].as_str().filter(|token| !token.is_empty()),
        status["expirationTimestamp"].as_str(),
    ) else {
        return Err(failed(
            "its answer holds no status.token and status.expirationTimestamp".to_owned(),
        ));
    };
    Ok(IssuedToken {
        token: SecretString::from(token.to_owned()),
        expiration_timestamp: expiration.to_owned(),
    })
}

/// Server-side apply of one of [`rbac_objects`].
async fn apply_object(cluster: &Cluster, object: &Value) -> Result<(), BootstrapError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = object["metadata"]["namespace"].as_str();
    let described = match namespace {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    };
    let action = format!("the apply of {described}");
    let failed = |reason: String| BootstrapError::Apply {
        object: described.clone(),
        source: Box::new(ClusterError::Failed {
            server: cluster.server().to_owned(),
            action: action.clone(),
            reason,
        }),
    };
    let resource = match kind {
        "Namespace" => ApiResource::erase::<Namespace>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "ClusterRole" => ApiResource::erase::<ClusterRole>(&()),
        "ClusterRoleBinding" => ApiResource::erase::<ClusterRoleBinding>(&()),
        other => {
            return Err(failed(format!(
                "kind {other} is not one the bootstrap makes"
            )));
        }
    };
    let url = DynamicObject::url_path(&resource, namespace);
    let request = kube::core::Request::new(url)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .map_err(|error| failed(error.to_string()))?;
    cluster
        .send(&action, request)
        .await
        .map(drop)
        .map_err(|error| BootstrapError::Apply {
            object: described.clone(),
            source: Box::new(cluster.error(
                &action,
                &error,
                Some(("patch", &resource.plural, namespace.unwrap_or(name))),
            )),
        })
}

/// A kubeconfig (JSON, which every kubeconfig reader takes as YAML) for
/// the ServiceAccount's `token`: the server and CA of `source`'s current
/// context's cluster, the namespace as the context's default.
pub fn least_privilege_kubeconfig(
    source: &str,
    namespace: &str,
    token: &SecretString,
) -> Result<SecretString, BootstrapError> {
    let cluster = current_cluster(source)?;
    let Some(server) = cluster.server.as_deref() else {
        return Err(BootstrapError::Kubeconfig {
            reason: "the cluster of its current context has no server".to_owned(),
        });
    };
    let mut cluster_entry = BTreeMap::new();
    cluster_entry.insert("server", json!(server));
    if let Some(data) = &cluster.certificate_authority_data {
        cluster_entry.insert("certificate-authority-data", json!(data));
    } else if let Some(path) = &cluster.certificate_authority {
        cluster_entry.insert("certificate-authority", json!(path));
    }
    if let Some(insecure) = cluster.insecure_skip_tls_verify {
        cluster_entry.insert("insecure-skip-tls-verify", json!(insecure));
    }
    let context_name = format!("{SERVICE_ACCOUNT}@{namespace}");
    let document = zeroize::Zeroizing::new(
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": namespace, "cluster": cluster_entry}],
            "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token.expose_secret()}}],
            "contexts": [{"name": context_name, "context": {
                "cluster": namespace, "user": SERVICE_ACCOUNT, "namespace": namespace}}],
            "current-context": context_name,
        })
        .to_string(),
    );
    Ok(SecretString::from(document.as_str().to_owned()))
}

/// Checks that `source` is a kubeconfig whose current context names a
/// cluster with a server: what a bootstrap needs from admin material.
pub fn check_kubeconfig(source: &str) -> Result<(), BootstrapError> {
    current_cluster(source).map(drop)
}

/// The cluster entry of `source`'s current context.
fn current_cluster(source: &str) -> Result<kube::config::Cluster, BootstrapError> {
    let bad = |reason: &str| BootstrapError::Kubeconfig {
        reason: reason.to_owned(),
    };
    let kubeconfig = kube::config::Kubeconfig::from_yaml(source)
        .map_err(|_| bad("it is not a YAML kubeconfig"))?;
    let current = kubeconfig
        .current_context
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| bad("it sets no current-context"))?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|context| context.name == current)
        .and_then(|context| context.context.as_ref())
        .ok_or_else(|| bad("its current-context is not among its contexts"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|cluster| cluster.name == context.cluster)
        .and_then(|cluster| cluster.cluster.as_ref())
        .ok_or_else(|| bad("the cluster of its current context is not among its clusters"))?;
    if cluster.server.as_deref().is_none_or(str::is_empty) {
        return Err(bad("the cluster of its current context has no server"));
    }
    Ok(cluster.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_grants_exactly_what_the_apply_needs() {
        // Proves the rules: the four verbs on each of the six namespaced
        // resources, minting only its own token, and the namespace (get,
        // patch) limited by name; the same input renders the same objects.
        let objects = rbac_objects("gtc-prod", "prod");
        assert_eq!(objects, rbac_objects("gtc-prod", "prod"));
        let kinds: Vec<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding"
            ]
        );
        let rules = objects[2]["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 7);
        let deployments = rules
            .iter()
            .find(|rule| rule["resources"] == json!(["deployments"]))
            .expect("deployments rule");
        assert_eq!(deployments["apiGroups"], json!(["apps"]));
        assert_eq!(
            deployments["verbs"],
            json!(["patch", "get", "list", "delete"])
        );
        assert_eq!(
            rules[6],
            json!({"apiGroups": [""], "resources": ["serviceaccounts/token"],
                   "resourceNames": ["gtc-deployer"], "verbs": ["create"]})
        );
        let cluster_rules = &objects[4]["rules"];
        assert_eq!(cluster_rules[0]["resourceNames"], json!(["gtc-prod"]));
        assert_eq!(objects[4]["metadata"]["name"], "gtc-deployer-gtc-prod");
        assert_eq!(objects[5]["subjects"][0]["namespace"], "gtc-prod");
        for object in &objects {
            assert_eq!(
                object["metadata"]["labels"]["greentic.ai/environment"],
                "prod"
            );
        }
    }

    #[test]
    fn the_kubeconfig_keeps_server_and_ca_and_holds_only_the_token() {
        // Proves the generated kubeconfig: the admin's server and CA, the
        // token as the only user, and none of the admin's user material.
        let admin = "apiVersion: v1\nkind: Config\ncurrent-context: admin\nclusters:\n- name: c\n  cluster:\n    server: https://k8s.test:6443\n    certificate-authority-data: Q0E=\ncontexts:\n- name: admin\n  context: {cluster: c, user: root}\nusers:\n- name: root\n  user: {token: ADMIN-MARKER}\n";
        let made = least_privilege_kubeconfig(admin, "gtc-prod", &SecretString::from("sa-token"))
            .expect("kubeconfig");
        let text = made.expose_secret();
        assert!(!text.contains("ADMIN-MARKER"));
        let parsed = kube::config::Kubeconfig::from_yaml(text).expect("parses back");
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://k8s.test:6443"));
        assert_eq!(cluster.certificate_authority_data.as_deref(), Some("Q0E="));
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.token.as_ref().map(|t| t.expose_secret().to_owned()),
            Some("sa-token".to_owned())
        );
        assert!(
            least_privilege_kubeconfig("not: [a kubeconfig", "gtc-prod", &SecretString::from("t"))
                .is_err()
        );
        assert!(
            least_privilege_kubeconfig(
                "apiVersion: v1\nkind: Config\n",
                "gtc-prod",
                &SecretString::from("t")
            )
            .is_err()
        );
    }

    #[test]
    fn a_token_request_asks_for_the_lifetime_given() {
        // Proves the TokenRequest body the server sees.
        let body = token_request(3600);
        assert_eq!(body["kind"], "TokenRequest");
        assert_eq!(body["spec"]["expirationSeconds"], 3600);
    }
}
