//! Preflight of `greentic.deployer.k8s`: a kubeconfig is there, parses as
//! YAML and names a current context that it defines.
//!
//! Reachability of the API server and the apply permissions (a
//! SelfSubjectAccessReview per credential the pack declares) are not
//! checked: no API server can be reached from this machine, so those checks
//! are reported `skipped` with that reason rather than pretended.

use std::path::{Path, PathBuf};

use serde_norway::Value;

use super::Check;

/// Largest kubeconfig read: real ones are a few KiB (embedded certificates
/// included), so anything past this is not one.
const KUBECONFIG_BYTES_MAX: u64 = 1024 * 1024;
/// What to do when no usable kubeconfig is found.
const KUBECONFIG_FIX: &str = "set KUBECONFIG to a kubeconfig with a current-context (or write ~/.kube/config); `kubectl config use-context NAME` sets the current context";

pub fn checks(credentials: &[String]) -> Vec<Check> {
    let paths = kubeconfig_paths();
    let (read, configs) = read_configs(&paths);
    let context = if configs.is_empty() {
        Check::skipped(
            "kubeconfig-current-context",
            "no kubeconfig was read, so there is no current context to check",
        )
    } else {
        current_context(&configs)
    };
    vec![
        read,
        context,
        Check::skipped(
            "cluster-reachable",
            "not checked: no Kubernetes API server is reachable from this machine, so gtc does not contact one; run `kubectl cluster-info` where the cluster is reachable",
        ),
        Check::skipped(
            "apply-permissions",
            format!(
                "not checked: RBAC needs an API server to answer a SelfSubjectAccessReview for each of {}; `kubectl auth can-i` checks them where the cluster is reachable",
                credentials.join(", ")
            ),
        ),
    ]
}

/// `KUBECONFIG`'s paths when it is set and not empty, else `~/.kube/config`.
fn kubeconfig_paths() -> Vec<PathBuf> {
    match std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty()) {
        Some(value) => std::env::split_paths(&value)
            .filter(|path| !path.as_os_str().is_empty())
            .collect(),
        None => std::env::var_os("HOME")
            .filter(|home| !home.is_empty())
            .map(|home| vec![Path::new(&home).join(".kube").join("config")])
            .unwrap_or_default(),
    }
}

/// Reads and parses every kubeconfig that exists (as kubectl, which merges
/// them and skips missing ones); fails on one that cannot be read or parsed,
/// and when none exists.
fn read_configs(paths: &[PathBuf]) -> (Check, Vec<(PathBuf, Value)>) {
    const NAME: &str = "kubeconfig";
    let shown = || {
        paths
            .iter()
            .map(|path| path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut configs = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => {
                let detail = format!("{} cannot be read: {error}", path.display());
                return (Check::fail(NAME, detail, KUBECONFIG_FIX), Vec::new());
            }
            Ok(metadata) if metadata.len() > KUBECONFIG_BYTES_MAX => {
                let detail = format!(
                    "{} holds {} bytes, more than the {KUBECONFIG_BYTES_MAX} a kubeconfig may",
                    path.display(),
                    metadata.len()
                );
                return (Check::fail(NAME, detail, KUBECONFIG_FIX), Vec::new());
            }
            Ok(_) => {}
        }
        let parsed = std::fs::read_to_string(path)
            .map_err(|error| error.to_string())
            .and_then(|text| serde_norway::from_str::<Value>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(value) => configs.push((path.clone(), value)),
            Err(error) => {
                let detail = format!(
                    "{} is not a readable YAML kubeconfig: {error}",
                    path.display()
                );
                return (Check::fail(NAME, detail, KUBECONFIG_FIX), Vec::new());
            }
        }
    }
    if configs.is_empty() {
        let source = if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) {
            "KUBECONFIG names"
        } else {
            "the default kubeconfig is"
        };
        let detail = format!("no kubeconfig found: {source} {}", shown());
        return (Check::fail(NAME, detail, KUBECONFIG_FIX), configs);
    }
    let detail = format!("read {}", shown());
    (Check::pass(NAME, detail), configs)
}

/// The first `current-context` set (kubectl's merge rule) names a context
/// one of the files defines.
fn current_context(configs: &[(PathBuf, Value)]) -> Check {
    const NAME: &str = "kubeconfig-current-context";
    let current = configs.iter().find_map(|(_, config)| {
        config
            .get("current-context")
            .and_then(Value::as_str)
            .filter(|name| !name.is_empty())
    });
    let Some(current) = current else {
        return Check::fail(NAME, "no kubeconfig sets current-context", KUBECONFIG_FIX);
    };
    let defined = configs.iter().any(|(_, config)| {
        config
            .get("contexts")
            .and_then(Value::as_sequence)
            .is_some_and(|contexts| {
                contexts
                    .iter()
                    .any(|context| context.get("name").and_then(Value::as_str) == Some(current))
            })
    });
    if defined {
        Check::pass(NAME, format!("current context {current}"))
    } else {
        Check::fail(
            NAME,
            format!("current-context {current} is not among the kubeconfig's contexts"),
            KUBECONFIG_FIX,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(PathBuf, Value)> {
        vec![(
            PathBuf::from("config"),
            serde_norway::from_str(text).expect("yaml"),
        )]
    }

    #[test]
    fn the_current_context_must_be_set_and_defined() {
        // Proves a defined current context passes, and an unset or unknown one fails.
        let good =
            "current-context: dev\ncontexts:\n- name: dev\n  context: {cluster: c, user: u}\n";
        assert_eq!(
            current_context(&parsed(good)).status,
            super::super::Status::Pass
        );
        let unset = "contexts:\n- name: dev\n";
        assert_eq!(
            current_context(&parsed(unset)).status,
            super::super::Status::Fail
        );
        let unknown = "current-context: prod\ncontexts:\n- name: dev\n";
        assert_eq!(
            current_context(&parsed(unknown)).status,
            super::super::Status::Fail
        );
    }
}
