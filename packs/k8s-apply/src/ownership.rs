//! Whether an object already in the cluster may be taken over by an
//! environment's apply. Pure: the reads are [`crate::apply`]'s.
//!
//! Rule: an object the render names that already exists is gtc's to apply
//! over exactly when it carries gtc's managed-by label and this
//! environment's label. Anything else (another tool's namespace that
//! happens to be called `gtc-<env>`, objects someone made by hand, another
//! environment's objects) is a collision: server-side apply with `force`
//! would otherwise take their fields silently.

use std::collections::BTreeMap;

use k8s_deployer::names::{LABEL_ENVIRONMENT, LABEL_MANAGED_BY, MANAGED_BY};

/// Why an existing object with `labels` is not this environment's (`env`),
/// or `None` when it is.
pub fn foreign_owner(labels: &BTreeMap<String, String>, env: &str) -> Option<String> {
    match labels.get(LABEL_MANAGED_BY).map(String::as_str) {
        Some(MANAGED_BY) => {}
        Some(other) => return Some(format!("it is managed by {other:?}, not gtc")),
        None => {
            return Some(format!(
                "it has no {LABEL_MANAGED_BY} label, so gtc did not make it"
            ));
        }
    }
    match labels.get(LABEL_ENVIRONMENT).map(String::as_str) {
        Some(found) if found == env => None,
        Some(found) => Some(format!(
            "it belongs to gtc environment {found:?}, not {env:?}"
        )),
        None => Some(format!(
            "it has no {LABEL_ENVIRONMENT} label naming {env:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_objects_gtc_made_for_this_environment_are_its_own() {
        let ours = labels(&[(LABEL_MANAGED_BY, MANAGED_BY), (LABEL_ENVIRONMENT, "prod")]);
        assert_eq!(foreign_owner(&ours, "prod"), None);
        let other_env = labels(&[(LABEL_MANAGED_BY, MANAGED_BY), (LABEL_ENVIRONMENT, "dev")]);
        assert!(foreign_owner(&other_env, "prod").is_some_and(|why| why.contains("\"dev\"")));
        let helm = labels(&[(LABEL_MANAGED_BY, "Helm")]);
        assert!(foreign_owner(&helm, "prod").is_some_and(|why| why.contains("Helm")));
        assert!(foreign_owner(&labels(&[]), "prod").is_some());
        let unnamed = labels(&[(LABEL_MANAGED_BY, MANAGED_BY)]);
        assert!(foreign_owner(&unnamed, "prod").is_some());
    }
}
