//! Preflight of `greentic.deployer.k8s`: a kubeconfig is there, parses as
//! YAML and names a current context that it defines; then, through the
//! same client `env reconcile` applies with (`k8s_apply`), the API server
//! answers `GET /version` and a SelfSubjectAccessReview allows every verb
//! the apply needs in `gtc-<env>`.
//!
//! The two cluster checks are `skipped` only when no kubeconfig is usable
//! (none read, or no current context): there is then no cluster to ask;
//! or when this gtc was built without the Kubernetes client (cargo feature
//! `kube`, left out of the container image: [`crate::kube_client`]), which
//! the reason says. They are exercised against a loopback fake API server
//! in the tests, never a real cluster.

use std::path::{Path, PathBuf};

use deploy::ids::EnvId;
#[cfg(feature = "kube")]
use k8s_apply::{Cluster, access::Denied};
use serde_norway::Value;

use super::{Check, Status};

/// Largest kubeconfig read: real ones are a few KiB (embedded certificates
/// included), so anything past this is not one.
const KUBECONFIG_BYTES_MAX: u64 = 1024 * 1024;
/// What to do when no usable kubeconfig is found.
pub(crate) const KUBECONFIG_FIX: &str = "set KUBECONFIG to a kubeconfig with a current-context (or write ~/.kube/config); `kubectl config use-context NAME` sets the current context";

pub fn checks(credentials: &[String], env_id: &EnvId) -> Vec<Check> {
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
    let usable = read.status == Status::Pass && context.status == Status::Pass;
    let cluster = if usable {
        cluster_checks(credentials, env_id)
    } else {
        vec![
            Check::skipped(
                "cluster-reachable",
                "no usable kubeconfig (see the checks above), so there is no API server to ask",
            ),
            Check::skipped(
                "apply-permissions",
                "no usable kubeconfig (see the checks above), so RBAC was not asked",
            ),
        ]
    };
    let mut checks = vec![read, context];
    checks.extend(cluster);
    checks
}

/// `cluster-reachable` and `apply-permissions` against the current
/// context's API server.
#[cfg(feature = "kube")]
fn cluster_checks(credentials: &[String], env_id: &EnvId) -> Vec<Check> {
    const REACHABLE: &str = "cluster-reachable";
    const PERMISSIONS: &str = "apply-permissions";
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let reason = format!("the async runtime cannot start: {error}");
            return vec![
                Check::skipped(REACHABLE, reason.clone()),
                Check::skipped(PERMISSIONS, reason),
            ];
        }
    };
    let cluster = match runtime.block_on(Cluster::infer()) {
        Ok(cluster) => cluster,
        Err(error) => {
            return vec![
                Check::fail(REACHABLE, error.to_string(), KUBECONFIG_FIX),
                Check::skipped(PERMISSIONS, "no client for the current context"),
            ];
        }
    };
    let reachable = match runtime.block_on(cluster.apiserver_version()) {
        Ok(version) => Check::pass(
            REACHABLE,
            format!(
                "the API server at {} ({}) answers: Kubernetes {} ({})",
                cluster.server(),
                cluster.identity(),
                version.git_version,
                version.platform
            ),
        ),
        Err(error) => {
            return vec![
                Check::fail(
                    REACHABLE,
                    error.to_string(),
                    format!(
                        "make the API server at {} reachable from this machine (VPN, firewall, the cluster running), or point the current context at one that is; `kubectl cluster-info` checks it",
                        cluster.server()
                    ),
                ),
                Check::skipped(
                    PERMISSIONS,
                    "the API server did not answer, so RBAC was not asked",
                ),
            ];
        }
    };
    let namespace = match k8s_deployer::names::namespace_name(env_id) {
        Ok(namespace) => namespace,
        Err(error) => {
            return vec![
                reachable,
                Check::fail(
                    PERMISSIONS,
                    error.to_string(),
                    "use an environment whose id is a valid namespace name",
                ),
            ];
        }
    };
    let permissions = match runtime.block_on(k8s_apply::access::review(&cluster, &namespace)) {
        Ok(denied) if denied.is_empty() => Check::pass(
            PERMISSIONS,
            format!(
                "{} may patch, get, list and delete deployments, services, configmaps, secrets, networkpolicies and poddisruptionbudgets in {namespace}, and patch namespace {namespace} (the pack declares: {})",
                cluster.identity(),
                credentials.join(", ")
            ),
        ),
        Ok(denied) => denied_check(&cluster, &namespace, &denied),
        Err(error) => Check::fail(
            PERMISSIONS,
            format!("the access review could not be asked: {error}"),
            "let the user of the current context create selfsubjectaccessreviews (every authenticated user may, unless the cluster removed it)",
        ),
    };
    vec![reachable, permissions]
}

#[cfg(feature = "kube")]
fn denied_check(cluster: &Cluster, namespace: &str, denied: &[Denied]) -> Check {
    let listed: Vec<String> = denied
        .iter()
        .map(|denied| denied.permission.describe())
        .collect();
    Check::fail(
        "apply-permissions",
        format!("{} lacks {}", cluster.identity(), listed.join(", ")),
        format!(
            "grant {} to the user of {} (a Role in {namespace} bound to it; patch on the namespace needs a ClusterRole); `{}` checks the first",
            listed.join(", "),
            cluster.identity(),
            denied[0].permission.can_i()
        ),
    )
}

/// `cluster-reachable` and `apply-permissions` in a gtc without the
/// Kubernetes client: skipped, saying so.
#[cfg(not(feature = "kube"))]
fn cluster_checks(_: &[String], _: &EnvId) -> Vec<Check> {
    let skipped = |what: &str| {
        let not_built = crate::kube_client::NOT_BUILT;
        format!("{not_built}, so {what}; run `gtc op env preflight` from a full build")
    };
    vec![
        Check::skipped("cluster-reachable", skipped("the API server was not asked")),
        Check::skipped("apply-permissions", skipped("RBAC was not asked")),
    ]
}

/// `KUBECONFIG`'s paths when it is set and not empty, else `~/.kube/config`.
pub(crate) fn kubeconfig_paths() -> Vec<PathBuf> {
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
pub(crate) fn read_configs(paths: &[PathBuf]) -> (Check, Vec<(PathBuf, Value)>) {
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
pub(crate) fn current_context(configs: &[(PathBuf, Value)]) -> Check {
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
