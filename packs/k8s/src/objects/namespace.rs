//! The environment's namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::environment_labels;
use crate::objects::Scope;

/// Pod Security Admission level enforced in the namespace: every pod here
/// already meets `restricted` (non-root, no privilege escalation, all
/// capabilities dropped, the runtime's seccomp profile), so the cluster
/// refuses any pod added by hand that does not.
pub const POD_SECURITY_LEVEL: &str = "restricted";

/// `gtc-<env>`, labelled with the environment and Pod Security `restricted`.
pub fn namespace(scope: &Scope) -> Namespace {
    let mut labels: BTreeMap<String, String> = environment_labels(&scope.env);
    labels.insert(
        "pod-security.kubernetes.io/enforce".to_owned(),
        POD_SECURITY_LEVEL.to_owned(),
    );
    Namespace {
        metadata: ObjectMeta {
            name: Some(scope.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}
