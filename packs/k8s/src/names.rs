//! Kubernetes names and labels of a rendered environment.
//!
//! Every object name here is a DNS-1035 label (the stricter of the two label
//! grammars: a Service name must be one, and a DNS-1035 label is also a valid
//! DNS-1123 label for namespaces and Deployments), so one check covers them
//! all. Revision ids are ULIDs (26 uppercase characters); names use them in
//! lowercase, which is lossless because Crockford base32 has one case.

use std::collections::BTreeMap;

use deploy::ids::{EnvId, RevisionId};

use crate::RenderError;

/// Longest DNS label: the limit of a namespace, Deployment or Service name.
pub const NAME_LEN_MAX: usize = 63;
/// Prefix of the namespace an environment renders into.
pub const NAMESPACE_PREFIX: &str = "gtc-";
/// Name of the router's Deployment, Service and disruption budget.
pub const ROUTER_NAME: &str = "gtc-router";
/// Prefix of a worker's Deployment, Service and disruption budget.
pub const WORKER_PREFIX: &str = "gtc-worker-";

/// Label naming the tool that manages an object (Kubernetes' recommended label).
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "gtc";
/// Label naming the application of a workload.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming a workload's part: [`COMPONENT_ROUTER`] or [`COMPONENT_WORKER`].
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// The router's component label value.
pub const COMPONENT_ROUTER: &str = "router";
/// A worker's component label value.
pub const COMPONENT_WORKER: &str = "worker";
/// Label holding the environment id.
pub const LABEL_ENVIRONMENT: &str = "greentic.ai/environment";
/// Label holding a worker's deployment id.
pub const LABEL_DEPLOYMENT: &str = "greentic.ai/deployment";
/// Label holding a worker's revision id (as the store writes it, uppercase).
pub const LABEL_REVISION: &str = "greentic.ai/revision";

/// The namespace of `env`: `gtc-<env>`, refused when the env id makes no
/// valid namespace (uppercase, '.', '_' or too long).
pub fn namespace_name(env: &EnvId) -> Result<String, RenderError> {
    let name = format!("{NAMESPACE_PREFIX}{env}");
    check_name(
        "Namespace",
        &name,
        format!(
            "render environments whose id uses only lowercase letters, digits and '-' and has at most {} characters (the namespace is {NAMESPACE_PREFIX}<env>)",
            NAME_LEN_MAX - NAMESPACE_PREFIX.len()
        ),
    )?;
    Ok(name)
}

/// The Deployment, Service and budget name of `revision`'s worker.
pub fn worker_name(revision: RevisionId) -> Result<String, RenderError> {
    let name = format!(
        "{WORKER_PREFIX}{}",
        revision.to_string().to_ascii_lowercase()
    );
    check_name(
        "Deployment",
        &name,
        format!("revision ids are ULIDs; {revision} is not one"),
    )?;
    Ok(name)
}

/// Refuses `name` unless it is a DNS-1035 label, naming `kind` and `fix`.
pub fn check_name(kind: &'static str, name: &str, fix: String) -> Result<(), RenderError> {
    let refuse = |reason| RenderError::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
        fix: fix.clone(),
    };
    if name.is_empty() {
        return Err(refuse("it is empty"));
    }
    if name.len() > NAME_LEN_MAX {
        return Err(refuse("it is longer than 63 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(refuse(
            "it has a character other than a lowercase letter, digit or '-'",
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(refuse("it does not start with a lowercase letter"));
    }
    if name.ends_with('-') {
        return Err(refuse("it ends with '-'"));
    }
    Ok(())
}

/// Labels every object of the environment carries.
pub fn environment_labels(env: &EnvId) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
        (LABEL_ENVIRONMENT.to_owned(), env.to_string()),
    ])
}

/// The router pods' selector: stable across renders, so a Deployment's
/// immutable selector never changes.
pub fn router_selector() -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_COMPONENT.to_owned(), COMPONENT_ROUTER.to_owned()),
        (LABEL_NAME.to_owned(), ROUTER_NAME.to_owned()),
    ])
}

/// Every worker pod matches this (the network policies select on it).
pub fn any_worker_selector() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_COMPONENT.to_owned(), COMPONENT_WORKER.to_owned())])
}

/// One revision's worker pods.
pub fn worker_selector(revision: RevisionId) -> BTreeMap<String, String> {
    let mut selector = any_worker_selector();
    selector.insert(LABEL_REVISION.to_owned(), revision.to_string());
    selector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_over_the_limit_or_with_bad_characters_are_refused_with_the_kind() {
        // Proves each rule of the label grammar refuses, naming the object.
        let fix = || "fix".to_owned();
        assert!(check_name("Service", "gtc-router", fix()).is_ok());
        assert!(check_name("Service", &"a".repeat(63), fix()).is_ok());
        for bad in [
            String::new(),
            "a".repeat(64),
            "Gtc".to_owned(),
            "gtc_x".to_owned(),
            "gtc.x".to_owned(),
            "1gtc".to_owned(),
            "gtc-".to_owned(),
        ] {
            match check_name("Service", &bad, fix()) {
                Err(RenderError::InvalidName { kind, name, .. }) => {
                    assert_eq!((kind, name.as_str()), ("Service", bad.as_str()));
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn env_ids_that_make_no_namespace_are_refused() {
        // Proves an env id legal in the store but not in Kubernetes is refused.
        let ok: EnvId = "prod-eu".parse().expect("env");
        assert_eq!(namespace_name(&ok).expect("ok"), "gtc-prod-eu");
        for bad in ["Prod", "prod_eu", "prod.eu", &"p".repeat(60)] {
            let env: EnvId = bad.parse().expect("a valid env id");
            let error = namespace_name(&env).expect_err(bad);
            assert!(error.to_string().contains("Namespace"), "{error}");
        }
        let longest: EnvId = "p".repeat(59).parse().expect("env");
        assert!(namespace_name(&longest).is_ok());
    }

    #[test]
    fn worker_names_are_the_lowercase_ulid() {
        // Proves revision ids become valid lowercase names of 37 characters.
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(1, 2));
        let name = worker_name(revision).expect("name");
        assert_eq!(
            name,
            format!("gtc-worker-{}", revision.to_string().to_lowercase())
        );
        assert_eq!(name.len(), WORKER_PREFIX.len() + 26);
    }
}
