//! Can the current user apply and prune in `gtc-<env>`? One
//! `SelfSubjectAccessReview` (authorization.k8s.io/v1) per verb and
//! resource the apply needs; the answer is the list of denied ones.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Resource as _;
use kube::api::PostParams;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::error::ClusterError;
use crate::kind::Kind;

/// The verbs the apply and the prune use on each namespaced kind: patch
/// (server-side apply), get, list (the prune's listing) and delete (the
/// prune).
pub const NAMESPACED_VERBS: [&str; 4] = ["patch", "get", "list", "delete"];

/// One verb on one resource the apply needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Permission {
    pub verb: &'static str,
    pub kind: Kind,
    /// The resource's API group (`""` for the core group).
    pub group: String,
    /// The resource, plural (`deployments`).
    pub resource: String,
    /// The namespace the verb is needed in; for the namespace itself (a
    /// cluster-wide object), its own name.
    pub namespace: String,
}

impl Permission {
    fn new(verb: &'static str, kind: Kind, namespace: &str) -> Self {
        let resource = kind.api_resource();
        Self {
            verb,
            kind,
            group: resource.group,
            resource: resource.plural,
            namespace: namespace.to_owned(),
        }
    }

    /// `patch on deployments in gtc-prod`, or `patch on namespaces/gtc-prod`.
    pub fn describe(&self) -> String {
        if self.kind.is_namespaced() {
            format!("{} on {} in {}", self.verb, self.resource, self.namespace)
        } else {
            format!("{} on {}/{}", self.verb, self.resource, self.namespace)
        }
    }

    /// The `kubectl auth can-i` line that checks it.
    pub fn can_i(&self) -> String {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        if self.kind.is_namespaced() {
            format!(
                "kubectl auth can-i {} {resource} -n {}",
                self.verb, self.namespace
            )
        } else {
            format!(
                "kubectl auth can-i {} {resource}/{}",
                self.verb, self.namespace
            )
        }
    }
}

/// A permission the server denied, with its reason when it gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denied {
    pub permission: Permission,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Every permission the apply needs in `namespace`: the four verbs on each
/// namespaced kind, and get (the ownership check reads its labels) and
/// patch on the namespace itself.
pub fn required(namespace: &str) -> Vec<Permission> {
    let mut permissions: Vec<Permission> = Kind::NAMESPACED
        .into_iter()
        .flat_map(|kind| {
            NAMESPACED_VERBS
                .into_iter()
                .map(move |verb| Permission::new(verb, kind, namespace))
        })
        .collect();
    permissions.push(Permission::new("get", Kind::Namespace, namespace));
    permissions.push(Permission::new("patch", Kind::Namespace, namespace));
    permissions
}

/// The review that asks for `permission`.
pub fn review_request(permission: &Permission) -> SelfSubjectAccessReview {
    let namespaced = permission.kind.is_namespaced();
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.to_owned()),
                group: Some(permission.group.clone()),
                resource: Some(permission.resource.clone()),
                namespace: namespaced.then(|| permission.namespace.clone()),
                name: (!namespaced).then(|| permission.namespace.clone()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    }
}

/// Asks the server about every [`required`] permission in `namespace`, one
/// review at a time; answers the denied ones (empty: all allowed).
pub async fn review(cluster: &Cluster, namespace: &str) -> Result<Vec<Denied>, ClusterError> {
    let mut denied = Vec::new();
    for permission in required(namespace) {
        let answer = ask(cluster, &permission).await?;
        let status = answer.status.unwrap_or_default();
        if !status.allowed || status.denied == Some(true) {
            denied.push(Denied {
                permission,
                reason: status
                    .reason
                    .filter(|reason| !reason.is_empty())
                    .or(status.evaluation_error.filter(|error| !error.is_empty())),
            });
        }
    }
    Ok(denied)
}

async fn ask(
    cluster: &Cluster,
    permission: &Permission,
) -> Result<SelfSubjectAccessReview, ClusterError> {
    let action = format!("the access review of {}", permission.describe());
    let failed = |reason: String| ClusterError::Failed {
        server: cluster.server().to_owned(),
        action: action.clone(),
        reason,
    };
    let body = serde_json::to_vec(&review_request(permission))
        .map_err(|error| failed(error.to_string()))?;
    let url = SelfSubjectAccessReview::url_path(&(), None);
    let request = kube::core::Request::new(url)
        .create(&PostParams::default(), body)
        .map_err(|error| failed(error.to_string()))?;
    let text = cluster
        .send(&action, request)
        .await
        .map_err(|error| cluster.error(&action, &error, None))?;
    serde_json::from_str(&text).map_err(|error| {
        failed(format!(
            "its answer is not a SelfSubjectAccessReview: {error}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_on_every_kind_and_patch_on_the_namespace_are_asked() {
        // Proves the list the issue names: patch, get, list and delete on
        // the six namespaced kinds, and get and patch on the namespace.
        let permissions = required("gtc-prod");
        assert_eq!(permissions.len(), 6 * 4 + 2);
        let described: Vec<String> = permissions.iter().map(Permission::describe).collect();
        for resource in [
            "deployments",
            "services",
            "configmaps",
            "secrets",
            "networkpolicies",
            "poddisruptionbudgets",
        ] {
            for verb in NAMESPACED_VERBS {
                let line = format!("{verb} on {resource} in gtc-prod");
                assert!(described.contains(&line), "{line} in {described:?}");
            }
        }
        assert!(described.contains(&"patch on namespaces/gtc-prod".to_owned()));
        assert!(described.contains(&"get on namespaces/gtc-prod".to_owned()));
    }

    #[test]
    fn a_review_names_the_group_resource_and_namespace() {
        // Proves the request body a server sees: namespaced kinds carry the
        // namespace, the namespace itself is asked by name.
        let deployments = Permission::new("patch", Kind::Deployment, "gtc-prod");
        let body = serde_json::to_value(review_request(&deployments)).expect("json");
        assert_eq!(body["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(body["kind"], "SelfSubjectAccessReview");
        let attributes = &body["spec"]["resourceAttributes"];
        assert_eq!(attributes["verb"], "patch");
        assert_eq!(attributes["group"], "apps");
        assert_eq!(attributes["resource"], "deployments");
        assert_eq!(attributes["namespace"], "gtc-prod");
        assert!(attributes.get("name").is_none());
        assert_eq!(
            deployments.can_i(),
            "kubectl auth can-i patch deployments.apps -n gtc-prod"
        );

        let namespace = Permission::new("patch", Kind::Namespace, "gtc-prod");
        let body = serde_json::to_value(review_request(&namespace)).expect("json");
        let attributes = &body["spec"]["resourceAttributes"];
        assert_eq!(attributes["resource"], "namespaces");
        assert_eq!(attributes["name"], "gtc-prod");
        assert!(attributes.get("namespace").is_none());
    }
}
