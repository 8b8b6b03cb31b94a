//! The kinds of object a render produces, and where each lives in the API.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ApiResource;
use serde::Serialize;

/// One kind of object the render produces. Anything else in a render is
/// refused, so the apply never sends (and the prune never lists) a kind it
/// does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    ConfigMap,
    Secret,
    NetworkPolicy,
    Deployment,
    Service,
    PodDisruptionBudget,
}

impl Kind {
    /// The kinds that live in the environment's namespace: the ones the
    /// prune lists (the namespace itself is never pruned).
    pub const NAMESPACED: [Kind; 6] = [
        Kind::ConfigMap,
        Kind::Secret,
        Kind::NetworkPolicy,
        Kind::Deployment,
        Kind::Service,
        Kind::PodDisruptionBudget,
    ];

    /// The kind called `kind` (an object's `kind` field), if the render
    /// produces it.
    pub fn parse(kind: &str) -> Option<Kind> {
        [Kind::Namespace]
            .into_iter()
            .chain(Kind::NAMESPACED)
            .find(|known| known.as_str() == kind)
    }

    /// The `kind` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
        }
    }

    /// Where the kind lives in the API (group, version, plural), taken from
    /// `k8s-openapi`'s typed object, so it matches what the render wrote.
    pub fn api_resource(self) -> ApiResource {
        match self {
            Kind::Namespace => ApiResource::erase::<Namespace>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::PodDisruptionBudget => ApiResource::erase::<PodDisruptionBudget>(&()),
        }
    }

    /// True for every kind but the namespace.
    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which object: kind, namespace (none for the namespace itself) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_and_knows_its_resource() {
        // Proves the kind table round-trips and names the API groups the
        // access review and the URLs need.
        for kind in [Kind::Namespace].into_iter().chain(Kind::NAMESPACED) {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.api_resource().kind, kind.as_str());
        }
        assert_eq!(Kind::parse("Pod"), None);
        assert_eq!(Kind::Deployment.api_resource().group, "apps");
        assert_eq!(Kind::Deployment.api_resource().plural, "deployments");
        assert_eq!(
            Kind::NetworkPolicy.api_resource().group,
            "networking.k8s.io"
        );
        assert_eq!(Kind::PodDisruptionBudget.api_resource().group, "policy");
        assert_eq!(Kind::Secret.api_resource().api_version, "v1");
        assert!(!Kind::Namespace.is_namespaced());
    }
}
