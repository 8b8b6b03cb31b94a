//! Server-side apply of a render, then the prune of what it no longer names.
//!
//! The order: the plan is built first (every refusal happens before a
//! request); every object the render names is read (metadata only) and
//! the apply refused if one exists that gtc did not make for this
//! environment ([`crate::ownership`]); each object is applied in the render's order (the namespace
//! first), stopping at the first failure; only when all are applied, each
//! namespaced kind is listed (metadata only, so a Secret's values are never
//! fetched) and [`prune::select`] decides what is deleted.

use std::collections::BTreeMap;

use k8s_deployer::Rendered;
use kube::Resource as _;
use kube::api::{
    DeleteParams, DynamicObject, GetParams, ListParams, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::FIELD_MANAGER;
use crate::cluster::Cluster;
use crate::error::{ApplyError, ClusterError};
use crate::kind::Kind;
use crate::ownership;
use crate::plan::{ApplyPlan, ObjectRef, PlannedObject, redact};
use crate::prune::{self, Listed};

/// Most objects one list page holds; the environment's namespace holds a
/// dozen objects plus three per active revision.
pub const LIST_PAGE_LIMIT: u32 = 500;
/// Most pages read per kind: past `LIST_PAGE_LIMIT * LIST_PAGES_MAX`
/// objects of one kind the namespace is not gtc's, and the prune stops.
pub const LIST_PAGES_MAX: usize = 20;

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// `gtc-<env>`.
    pub namespace: String,
    /// Every object applied, in order.
    pub applied: Vec<ObjectRef>,
    /// Every stale object deleted, in order.
    pub pruned: Vec<ObjectRef>,
}

/// The server-side apply request of `planned`: `PATCH` with
/// `application/apply-patch+yaml`, field manager [`FIELD_MANAGER`], forced
/// (gtc owns the fields it renders, even if another manager set them).
pub fn apply_request(planned: &PlannedObject) -> Result<http::Request<Vec<u8>>, String> {
    let resource = planned.object.kind.api_resource();
    let url = DynamicObject::url_path(&resource, planned.object.namespace.as_deref());
    kube::core::Request::new(url)
        .patch(
            &planned.object.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&planned.body),
        )
        .map_err(|error| error.to_string())
}

/// Applies every object of `rendered` to `cluster`, the Secret filled from
/// `secret_values` (Secret key → value), then prunes. See the module
/// comment for the order and what is left on failure.
pub async fn apply(
    cluster: &Cluster,
    rendered: &Rendered,
    secret_values: &BTreeMap<String, SecretString>,
) -> Result<ApplyReport, ApplyError> {
    let plan = ApplyPlan::new(rendered, secret_values)?;
    check_owners(cluster, &plan).await?;
    let mut applied = Vec::with_capacity(plan.objects.len());
    for planned in &plan.objects {
        if let Err(source) = apply_one(cluster, planned).await {
            return Err(ApplyError::Apply {
                object: planned.object.clone(),
                applied,
                source,
            });
        }
        applied.push(planned.object.clone());
    }
    let rendered_refs = plan.rendered_refs();
    let mut listed = Vec::new();
    for kind in Kind::NAMESPACED {
        match list(cluster, kind, &plan.namespace).await {
            Ok(objects) => listed.extend(objects),
            Err(source) => {
                return Err(ApplyError::List {
                    kind: kind.to_string(),
                    namespace: plan.namespace.clone(),
                    applied,
                    source,
                });
            }
        }
    }
    let mut pruned = Vec::new();
    for stale in prune::select(&plan.namespace, &rendered_refs, listed) {
        if let Err(source) = delete(cluster, &stale).await {
            return Err(ApplyError::Prune {
                object: stale.object,
                applied,
                pruned,
                source,
            });
        }
        pruned.push(stale.object);
    }
    Ok(ApplyReport {
        namespace: plan.namespace,
        applied,
        pruned,
    })
}

/// Refuses, before anything is applied, when an object the render names
/// is already in the cluster but was not made by gtc for this environment
/// ([`ownership::foreign_owner`]): a namespace `gtc-<env>` another tool
/// made, objects made by hand, another environment's. Each object is read
/// as metadata only (a Secret's values are never fetched).
async fn check_owners(cluster: &Cluster, plan: &ApplyPlan) -> Result<(), ApplyError> {
    let env = plan
        .namespace
        .strip_prefix(k8s_deployer::names::NAMESPACE_PREFIX)
        .unwrap_or(&plan.namespace);
    let mut foreign = Vec::new();
    for planned in &plan.objects {
        let object = &planned.object;
        let labels =
            existing_labels(cluster, object)
                .await
                .map_err(|source| ApplyError::Probe {
                    object: object.clone(),
                    source,
                })?;
        if let Some(why) = labels.and_then(|labels| ownership::foreign_owner(&labels, env)) {
            foreign.push((object.clone(), why));
        }
    }
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Collision { objects: foreign })
    }
}

/// The labels of `object` as the cluster holds it, `None` when it does not.
async fn existing_labels(
    cluster: &Cluster,
    object: &ObjectRef,
) -> Result<Option<BTreeMap<String, String>>, ClusterError> {
    let action = format!("the read of {object}");
    let resource = object.kind.api_resource();
    let url = DynamicObject::url_path(&resource, object.namespace.as_deref());
    let request = kube::core::Request::new(url)
        .get_metadata(&object.name, &GetParams::default())
        .map_err(|error| ClusterError::Failed {
            server: cluster.server().to_owned(),
            action: action.clone(),
            reason: error.to_string(),
        })?;
    let namespace = object.namespace.as_deref().unwrap_or(&object.name);
    match cluster.send(&action, request).await {
        Ok(text) => {
            let item: MetadataItem =
                serde_json::from_str(&text).map_err(|error| ClusterError::Failed {
                    server: cluster.server().to_owned(),
                    action: action.clone(),
                    reason: format!("its answer is not an object's metadata: {error}"),
                })?;
            Ok(Some(item.metadata.labels))
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => {
            Err(cluster.error(&action, &error, Some(("get", &resource.plural, namespace))))
        }
    }
}

async fn apply_one(cluster: &Cluster, planned: &PlannedObject) -> Result<(), ClusterError> {
    let object = &planned.object;
    let action = format!("the apply of {object}");
    let request = apply_request(planned).map_err(|reason| ClusterError::Failed {
        server: cluster.server().to_owned(),
        action: action.clone(),
        reason,
    })?;
    let resource = object.kind.api_resource().plural;
    let namespace = object.namespace.as_deref().unwrap_or(&object.name);
    match cluster.send(&action, request).await {
        // The answer is the applied object; a Secret's holds its values, so
        // it is dropped unread (zeroed) rather than parsed.
        Ok(answer) => {
            drop(zeroize::Zeroizing::new(answer));
            Ok(())
        }
        Err(error) => Err(scrub(
            cluster.error(&action, &error, Some(("patch", &resource, namespace))),
            planned,
        )),
    }
}

/// `error` with the values `planned` carries removed from its text: a
/// server may quote the object it refused.
fn scrub(error: ClusterError, planned: &PlannedObject) -> ClusterError {
    let values = &planned.secret_values;
    if values.is_empty() {
        return error;
    }
    match error {
        ClusterError::Rejected {
            server,
            action,
            code,
            reason,
            message,
        } => ClusterError::Rejected {
            server,
            action,
            code,
            reason: redact(&reason, values),
            message: redact(&message, values),
        },
        ClusterError::Forbidden {
            verb,
            resource,
            namespace,
            context,
            message,
        } => ClusterError::Forbidden {
            verb,
            resource,
            namespace,
            context,
            message: redact(&message, values),
        },
        ClusterError::Unreachable {
            server,
            action,
            reason,
        } => ClusterError::Unreachable {
            server,
            action,
            reason: redact(&reason, values),
        },
        ClusterError::Failed {
            server,
            action,
            reason,
        } => ClusterError::Failed {
            server,
            action,
            reason: redact(&reason, values),
        },
        timeout @ ClusterError::Timeout { .. } => timeout,
    }
}

/// A metadata-only list answer: what the prune reads of each item.
#[derive(Deserialize)]
struct MetadataList {
    #[serde(default)]
    items: Vec<MetadataItem>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct MetadataItem {
    metadata: ItemMeta,
}

#[derive(Deserialize)]
struct ItemMeta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    uid: Option<String>,
}

/// The objects of `kind` in `namespace` carrying gtc's label, metadata only.
async fn list(cluster: &Cluster, kind: Kind, namespace: &str) -> Result<Vec<Listed>, ClusterError> {
    let resource = kind.api_resource();
    let action = format!("the list of {}s in {namespace}", kind);
    let failed = |reason: String| ClusterError::Failed {
        server: cluster.server().to_owned(),
        action: action.clone(),
        reason,
    };
    let url = DynamicObject::url_path(&resource, Some(namespace));
    let mut listed = Vec::new();
    let mut continue_token: Option<String> = None;
    for _ in 0..LIST_PAGES_MAX {
        let mut params = ListParams::default()
            .labels(&prune::label_selector())
            .limit(LIST_PAGE_LIMIT);
        params.continue_token = continue_token.take();
        let request = kube::core::Request::new(url.clone())
            .list_metadata(&params)
            .map_err(|error| failed(error.to_string()))?;
        let text = cluster.send(&action, request).await.map_err(|error| {
            cluster.error(&action, &error, Some(("list", &resource.plural, namespace)))
        })?;
        let page: MetadataList = serde_json::from_str(&text)
            .map_err(|error| failed(format!("its answer is not a list: {error}")))?;
        listed.extend(page.items.into_iter().map(|item| {
            Listed {
                object: ObjectRef {
                    kind,
                    // A metadata list may leave the namespace out; the URL named it.
                    namespace: Some(
                        item.metadata
                            .namespace
                            .unwrap_or_else(|| namespace.to_owned()),
                    ),
                    name: item.metadata.name,
                },
                labels: item.metadata.labels,
                uid: item.metadata.uid,
            }
        }));
        match page
            .metadata
            .continue_token
            .filter(|token| !token.is_empty())
        {
            Some(token) => continue_token = Some(token),
            None => return Ok(listed),
        }
    }
    Err(failed(format!(
        "it has more than {} pages of {LIST_PAGE_LIMIT}; the namespace holds far more than a render's objects",
        LIST_PAGES_MAX
    )))
}

/// The delete request of `stale`: background propagation (the
/// Deployment's ReplicaSets and pods go after it), guarded by its uid.
pub fn delete_request(stale: &Listed) -> Result<http::Request<Vec<u8>>, String> {
    let resource = stale.object.kind.api_resource();
    let url = DynamicObject::url_path(&resource, stale.object.namespace.as_deref());
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: stale.uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    kube::core::Request::new(url)
        .delete(&stale.object.name, &params)
        .map_err(|error| error.to_string())
}

async fn delete(cluster: &Cluster, stale: &Listed) -> Result<(), ClusterError> {
    let object = &stale.object;
    let action = format!("the delete of {object}");
    let request = delete_request(stale).map_err(|reason| ClusterError::Failed {
        server: cluster.server().to_owned(),
        action: action.clone(),
        reason,
    })?;
    let resource = object.kind.api_resource().plural;
    let namespace = object.namespace.as_deref().unwrap_or_default();
    match cluster.send(&action, request).await {
        Ok(_) => Ok(()),
        // Already gone: what the prune wanted.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(cluster.error(&action, &error, Some(("delete", &resource, namespace)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn planned(kind: Kind, namespace: Option<&str>, name: &str) -> PlannedObject {
        PlannedObject {
            object: ObjectRef {
                kind,
                namespace: namespace.map(str::to_owned),
                name: name.to_owned(),
            },
            body: json!({"kind": kind.as_str(), "metadata": {"name": name}}),
            secret_values: Vec::new(),
        }
    }

    #[test]
    fn an_apply_is_a_forced_server_side_patch_by_gtc() {
        // Proves the request a server sees: PATCH of the object's URL with
        // the apply content type, fieldManager=gtc and force=true.
        let request = apply_request(&planned(Kind::Deployment, Some("gtc-prod"), "gtc-router"))
            .expect("request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/apps/v1/namespaces/gtc-prod/deployments/gtc-router"
        );
        let query = request.uri().query().unwrap_or_default();
        assert!(query.contains("fieldManager=gtc"), "{query}");
        assert!(query.contains("force=true"), "{query}");
        assert_eq!(
            request.headers()[http::header::CONTENT_TYPE],
            "application/apply-patch+yaml"
        );
        let namespace =
            apply_request(&planned(Kind::Namespace, None, "gtc-prod")).expect("request");
        assert_eq!(namespace.uri().path(), "/api/v1/namespaces/gtc-prod");
    }

    #[test]
    fn a_delete_is_guarded_by_the_listed_uid() {
        // Proves the prune's delete names the object's URL, propagates in
        // the background and carries the uid precondition.
        let stale = Listed {
            object: ObjectRef {
                kind: Kind::PodDisruptionBudget,
                namespace: Some("gtc-prod".to_owned()),
                name: "gtc-worker-old".to_owned(),
            },
            labels: BTreeMap::new(),
            uid: Some("u-1".to_owned()),
        };
        let request = delete_request(&stale).expect("request");
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(
            request.uri().path(),
            "/apis/policy/v1/namespaces/gtc-prod/poddisruptionbudgets/gtc-worker-old"
        );
        let body: serde_json::Value = serde_json::from_slice(request.body()).expect("json");
        assert_eq!(body["propagationPolicy"], "Background");
        assert_eq!(body["preconditions"]["uid"], "u-1");
    }

    #[test]
    fn a_servers_message_about_the_secret_loses_its_values() {
        // Proves a rejection quoting the Secret's value (plain or base64)
        // reaches the caller redacted.
        let mut secret = planned(Kind::Secret, Some("gtc-prod"), "gtc-dev-secrets");
        secret.secret_values = vec![
            zeroize::Zeroizing::new("hunter2".to_owned()),
            zeroize::Zeroizing::new("aHVudGVyMg==".to_owned()),
        ];
        let error = ClusterError::Rejected {
            server: "http://127.0.0.1:1".to_owned(),
            action: "apply".to_owned(),
            code: 422,
            reason: "Invalid".to_owned(),
            message: "data[db.password]: Invalid value: \"aHVudGVyMg==\" (hunter2)".to_owned(),
        };
        let text = scrub(error, &secret).to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
            "{text}"
        );
        assert!(text.contains("[redacted]"), "{text}");
    }
}
