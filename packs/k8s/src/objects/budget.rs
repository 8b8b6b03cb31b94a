//! PodDisruptionBudgets: a voluntary disruption (a node drain, a cluster
//! upgrade) never takes the last ready pod of the router or of a worker
//! with more than one replica.

use std::collections::BTreeMap;

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{Scope, match_labels};

/// Pods kept through a voluntary disruption.
pub const MIN_AVAILABLE: i32 = 1;

/// A budget `name` keeping [`MIN_AVAILABLE`] of the pods `selector` matches.
/// A worker with one replica gets none: a budget of one of one blocks every
/// node drain.
pub fn min_available(
    scope: &Scope,
    name: &str,
    labels: BTreeMap<String, String>,
    selector: BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: scope.meta(name, labels),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(MIN_AVAILABLE)),
            selector: Some(match_labels(selector)),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
