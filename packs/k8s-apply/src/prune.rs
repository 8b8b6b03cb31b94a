//! Which listed objects the prune deletes. Pure: the listing and the
//! deletes are [`crate::apply`]'s.
//!
//! Rule: an object is deleted exactly when it is in the environment's
//! namespace, of a kind the render produces, carries gtc's managed-by
//! label (checked here on the listed labels, whatever label filter the
//! server applied), and is not one of the render's objects. Everything
//! else is left alone: an object without the label was not made by gtc.

use std::collections::{BTreeMap, BTreeSet};

use k8s_deployer::names::{LABEL_MANAGED_BY, MANAGED_BY};

use crate::plan::ObjectRef;

/// One object a list answered, as far as the prune needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub object: ObjectRef,
    pub labels: BTreeMap<String, String>,
    /// Sent as the delete's precondition, so an object replaced between the
    /// list and the delete is not deleted in its stead.
    pub uid: Option<String>,
}

/// The label selector the prune lists with: gtc's managed-by label.
pub fn label_selector() -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY}")
}

/// The objects of `listed` to delete, in a stable order (kind, name).
pub fn select(namespace: &str, rendered: &BTreeSet<ObjectRef>, listed: Vec<Listed>) -> Vec<Listed> {
    let mut stale: Vec<Listed> = listed
        .into_iter()
        .filter(|candidate| {
            let object = &candidate.object;
            object.kind.is_namespaced()
                && object.namespace.as_deref() == Some(namespace)
                && candidate.labels.get(LABEL_MANAGED_BY).map(String::as_str) == Some(MANAGED_BY)
                && !rendered.contains(object)
        })
        .collect();
    stale.sort_by(|a, b| a.object.cmp(&b.object));
    stale.dedup_by(|a, b| a.object == b.object);
    stale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Kind;

    fn object(kind: Kind, namespace: &str, name: &str) -> ObjectRef {
        ObjectRef {
            kind,
            namespace: Some(namespace.to_owned()),
            name: name.to_owned(),
        }
    }

    fn listed(kind: Kind, namespace: &str, name: &str, managed_by: Option<&str>) -> Listed {
        Listed {
            object: object(kind, namespace, name),
            labels: managed_by
                .map(|value| BTreeMap::from([(LABEL_MANAGED_BY.to_owned(), value.to_owned())]))
                .unwrap_or_default(),
            uid: Some(format!("uid-{name}")),
        }
    }

    #[test]
    fn only_labelled_objects_the_render_no_longer_names_are_deleted() {
        // Proves the archived revision's worker objects go, while the
        // rendered ones, an unlabelled one, one labelled by another tool and
        // one in another namespace stay.
        let rendered = BTreeSet::from([
            object(Kind::Deployment, "gtc-prod", "gtc-router"),
            object(Kind::Deployment, "gtc-prod", "gtc-worker-new"),
            object(Kind::Service, "gtc-prod", "gtc-worker-new"),
        ]);
        let listing = vec![
            listed(Kind::Deployment, "gtc-prod", "gtc-router", Some("gtc")),
            listed(Kind::Deployment, "gtc-prod", "gtc-worker-new", Some("gtc")),
            listed(Kind::Deployment, "gtc-prod", "gtc-worker-old", Some("gtc")),
            listed(Kind::Service, "gtc-prod", "gtc-worker-old", Some("gtc")),
            listed(
                Kind::PodDisruptionBudget,
                "gtc-prod",
                "gtc-worker-old",
                Some("gtc"),
            ),
            listed(Kind::Deployment, "gtc-prod", "hand-made", None),
            listed(Kind::Deployment, "gtc-prod", "helm-made", Some("Helm")),
            listed(Kind::Deployment, "gtc-other", "gtc-worker-x", Some("gtc")),
        ];
        let deleted: Vec<String> = select("gtc-prod", &rendered, listing)
            .into_iter()
            .map(|listed| listed.object.to_string())
            .collect();
        assert_eq!(
            deleted,
            [
                "Deployment gtc-prod/gtc-worker-old",
                "Service gtc-prod/gtc-worker-old",
                "PodDisruptionBudget gtc-prod/gtc-worker-old",
            ]
        );
    }

    #[test]
    fn nothing_is_deleted_when_the_render_names_everything_listed() {
        // Proves a render that still names every labelled object prunes none.
        let rendered = BTreeSet::from([object(Kind::ConfigMap, "gtc-prod", "gtc-env-store")]);
        let listing = vec![listed(
            Kind::ConfigMap,
            "gtc-prod",
            "gtc-env-store",
            Some("gtc"),
        )];
        assert!(select("gtc-prod", &rendered, listing).is_empty());
        assert_eq!(label_selector(), "app.kubernetes.io/managed-by=gtc");
    }
}
