//! The credentials contract of `greentic.deployer.k8s`: the identity is a
//! kubeconfig's user. It must reach the API server and hold every
//! permission the apply needs in `gtc-<env>` (one capability each, from the
//! same access reviews `env reconcile` asks). A bootstrap makes a
//! ServiceAccount with exactly those permissions from an admin kubeconfig
//! and issues it a bounded token; a rotation issues the next token.
//! Talking to the API server is `k8s_apply`'s; this wires it to the
//! contract. Only in a gtc built with the Kubernetes client (cargo feature
//! `kube`).

use deploy::Timestamp;
use deploy::error::ErrorKind;
use deploy::ids::EnvId;
use k8s_apply::Cluster;
use k8s_apply::access::{Permission, required};
use packs::credentials::{
    AdminMaterial, Capability, CapabilityCheck, CapabilityStatus, CredentialsContractError,
    DeployerCredentials, Issued, RequirementsReport,
};
use secrecy::{ExposeSecret, SecretString};

use super::from_check;
use crate::error::CliError;
use crate::preflight::Status;
use crate::preflight::k8s as preflight;

pub const KUBECONFIG: &str = "kubeconfig";
pub const CLUSTER_REACHABLE: &str = "cluster-reachable";
/// The rules pack's file in `<env dir>/rules/greentic.deployer.k8s/`.
pub const RULES_FILE: &str = "rbac.yaml";

pub struct K8sCredentials {
    pub env: String,
    /// `gtc-<env>`.
    pub namespace: String,
    /// The generated kubeconfig the environment's `credentials_ref` names,
    /// with that ref; `None`: the current kubeconfig (`KUBECONFIG`, else
    /// `~/.kube/config`), as `env reconcile` uses then.
    pub kubeconfig: Option<(String, SecretString)>,
}

/// The contract of `env_id`'s deployer, applying as `kubeconfig` (see
/// [`K8sCredentials::kubeconfig`]).
pub fn contract(
    env_id: &EnvId,
    kubeconfig: Option<(String, SecretString)>,
) -> Result<Box<dyn DeployerCredentials>, CliError> {
    Ok(Box::new(K8sCredentials {
        env: env_id.to_string(),
        namespace: namespace(env_id)?,
        kubeconfig,
    }))
}

fn namespace(env_id: &EnvId) -> Result<String, CliError> {
    k8s_deployer::names::namespace_name(env_id).map_err(|error| {
        CliError::new(
            ErrorKind::InvalidArgument,
            format!("environment {env_id} has no Kubernetes namespace: {error}"),
        )
    })
}

/// `token_ttl_seconds` within the TokenRequest bounds, or the default.
pub fn token_ttl(seconds: Option<u64>) -> Result<u64, CliError> {
    use k8s_apply::bootstrap::{
        TOKEN_TTL_SECONDS_DEFAULT, TOKEN_TTL_SECONDS_MAX, TOKEN_TTL_SECONDS_MIN,
    };
    match seconds {
        None => Ok(TOKEN_TTL_SECONDS_DEFAULT),
        Some(seconds) if (TOKEN_TTL_SECONDS_MIN..=TOKEN_TTL_SECONDS_MAX).contains(&seconds) => {
            Ok(seconds)
        }
        Some(seconds) => Err(CliError::invalid(format!(
            "token_ttl_seconds is {seconds}; give {TOKEN_TTL_SECONDS_MIN} to {TOKEN_TTL_SECONDS_MAX} (default {TOKEN_TTL_SECONDS_DEFAULT}); nothing was changed"
        ))
        .with_field("token_ttl_seconds")),
    }
}

/// Refuses admin material (given as `field`) that is not a kubeconfig
/// with a current context and server, never quoting it.
pub fn check_admin_kubeconfig(material: &SecretString, field: &str) -> Result<(), CliError> {
    k8s_apply::bootstrap::check_kubeconfig(material.expose_secret()).map_err(|error| {
        CliError::invalid(format!(
            "{field} is not an admin kubeconfig: {error}; nothing was changed"
        ))
        .with_field(field)
    })
}

/// `patch-deployments`, `patch-namespaces`: a permission's capability id.
pub fn capability_id(permission: &Permission) -> String {
    format!("{}-{}", permission.verb, permission.resource)
}

impl DeployerCredentials for K8sCredentials {
    fn deployer(&self) -> &str {
        k8s_deployer::DESCRIPTOR_PATH
    }

    fn required_capabilities(&self) -> Vec<Capability> {
        let mut capabilities = vec![
            Capability::new(
                KUBECONFIG,
                "a kubeconfig whose current context names the cluster and the user the deployer applies as",
            ),
            Capability::new(CLUSTER_REACHABLE, "the API server answers GET /version"),
        ];
        capabilities.extend(
            required(&self.namespace).iter().map(|permission| {
                Capability::new(capability_id(permission), permission.describe())
            }),
        );
        capabilities
    }

    fn validate(&self) -> RequirementsReport {
        let mut statuses = Vec::new();
        let (kubeconfig, usable) = self.kubeconfig_status();
        statuses.push(kubeconfig);
        let permissions = required(&self.namespace);
        if usable {
            statuses.extend(self.cluster_statuses(&permissions));
        } else {
            let reason = "no usable kubeconfig (see the kubeconfig capability), so there is no API server to ask".to_owned();
            statuses.extend(std::iter::repeat_n(
                CapabilityStatus::Skipped { reason },
                permissions.len() + 1,
            ));
        }
        let checks = self
            .required_capabilities()
            .into_iter()
            .zip(statuses)
            .map(|(capability, status)| CapabilityCheck { capability, status })
            .collect();
        RequirementsReport { checks }
    }

    fn bootstrap(
        &self,
        admin: AdminMaterial,
        ttl_seconds: u64,
    ) -> Result<Issued, CredentialsContractError> {
        let runtime = runtime()?;
        let admin_text = admin.0;
        let cluster = runtime
            .block_on(Cluster::from_kubeconfig_text(admin_text.expose_secret()))
            .map_err(|error| CredentialsContractError::AdminMaterial {
                reason: error.to_string(),
            })?;
        let issued_at = chrono::Utc::now();
        let token = runtime
            .block_on(k8s_apply::bootstrap::bootstrap(
                &cluster,
                &self.namespace,
                &self.env,
                ttl_seconds,
            ))
            .map_err(provider_error)?;
        self.issued(
            admin_text.expose_secret(),
            token,
            issued_at,
            rules_pack(&self.namespace, &self.env),
        )
    }

    fn rotate(
        &self,
        minting: SecretString,
        ttl_seconds: u64,
    ) -> Result<Issued, CredentialsContractError> {
        let runtime = runtime()?;
        let cluster = runtime
            .block_on(Cluster::from_kubeconfig_text(minting.expose_secret()))
            .map_err(|error| CredentialsContractError::AdminMaterial {
                reason: error.to_string(),
            })?;
        let issued_at = chrono::Utc::now();
        let token = runtime
            .block_on(k8s_apply::bootstrap::request_token(
                &cluster,
                &self.namespace,
                ttl_seconds,
            ))
            .map_err(provider_error)?;
        self.issued(minting.expose_secret(), token, issued_at, Vec::new())
    }
}

impl K8sCredentials {
    /// The kubeconfig capability, and whether there is a cluster to ask.
    fn kubeconfig_status(&self) -> (CapabilityStatus, bool) {
        if let Some((reference, _)) = &self.kubeconfig {
            return (
                CapabilityStatus::Pass {
                    detail: format!(
                        "the generated kubeconfig {reference} (the environment's credentials_ref)"
                    ),
                },
                true,
            );
        }
        let (read, configs) = preflight::read_configs(&preflight::kubeconfig_paths());
        if read.status != Status::Pass {
            return (from_check(read), false);
        }
        let context = preflight::current_context(&configs);
        if context.status != Status::Pass {
            return (from_check(context), false);
        }
        (
            CapabilityStatus::Pass {
                detail: format!("{}; {}", read.detail, context.detail),
            },
            true,
        )
    }

    /// `cluster-reachable`, then one status per permission.
    fn cluster_statuses(&self, permissions: &[Permission]) -> Vec<CapabilityStatus> {
        let skipped = |reason: &str| {
            std::iter::repeat_n(
                CapabilityStatus::Skipped {
                    reason: reason.to_owned(),
                },
                permissions.len(),
            )
        };
        let runtime = match runtime() {
            Ok(runtime) => runtime,
            Err(error) => {
                return std::iter::once(CapabilityStatus::Fail {
                    reason: error.to_string(),
                    fix: "free memory or threads for gtc and run it again".to_owned(),
                })
                .chain(skipped("the async runtime cannot start"))
                .collect();
            }
        };
        let cluster = match &self.kubeconfig {
            Some((_, text)) => {
                runtime.block_on(Cluster::from_kubeconfig_text(text.expose_secret()))
            }
            None => runtime.block_on(Cluster::infer()),
        };
        let cluster = match cluster {
            Ok(cluster) => cluster,
            Err(error) => {
                return std::iter::once(CapabilityStatus::Fail {
                    reason: error.to_string(),
                    fix: preflight::KUBECONFIG_FIX.to_owned(),
                })
                .chain(skipped("no client for the kubeconfig"))
                .collect();
            }
        };
        let mut statuses = Vec::with_capacity(permissions.len() + 1);
        match runtime.block_on(cluster.apiserver_version()) {
            Ok(version) => statuses.push(CapabilityStatus::Pass {
                detail: format!(
                    "the API server at {} answers: Kubernetes {}",
                    cluster.server(),
                    version.git_version
                ),
            }),
            Err(error) => {
                statuses.push(CapabilityStatus::Fail {
                    reason: error.to_string(),
                    fix: format!(
                        "make the API server at {} reachable from this machine (VPN, firewall, the cluster running); `kubectl cluster-info` checks it",
                        cluster.server()
                    ),
                });
                statuses.extend(skipped(
                    "the API server did not answer, so RBAC was not asked",
                ));
                return statuses;
            }
        }
        match runtime.block_on(k8s_apply::access::review(&cluster, &self.namespace)) {
            Ok(denied) => statuses.extend(permissions.iter().map(|permission| {
                match denied.iter().find(|denied| &denied.permission == permission) {
                    None => CapabilityStatus::Pass {
                        detail: format!("{} may {}", cluster.identity(), permission.describe()),
                    },
                    Some(denied) => CapabilityStatus::Fail {
                        reason: format!(
                            "{} lacks {}{}",
                            cluster.identity(),
                            permission.describe(),
                            denied
                                .reason
                                .as_deref()
                                .map(|reason| format!(" ({reason})"))
                                .unwrap_or_default()
                        ),
                        fix: format!(
                            "grant it (a Role in {} bound to the user; on the namespace, a ClusterRole limited to it), or run `gtc op credentials bootstrap` with an admin kubeconfig; `{}` checks it",
                            self.namespace,
                            permission.can_i()
                        ),
                    },
                }
            })),
            Err(error) => statuses.extend(permissions.iter().map(|_| CapabilityStatus::Fail {
                reason: format!("the access review could not be asked: {error}"),
                fix: "let the user create selfsubjectaccessreviews (every authenticated user may, unless the cluster removed it)".to_owned(),
            })),
        }
        statuses
    }

    /// The kubeconfig around `token`, with the server and CA of `source`.
    fn issued(
        &self,
        source: &str,
        token: k8s_apply::bootstrap::IssuedToken,
        issued_at: Timestamp,
        rules_pack: Vec<(String, String)>,
    ) -> Result<Issued, CredentialsContractError> {
        let expires_at = chrono::DateTime::parse_from_rfc3339(&token.expiration_timestamp)
            .map_err(|error| {
                CredentialsContractError::Provider(format!(
                    "the API server's token expiration {:?} is not an RFC 3339 time: {error}",
                    token.expiration_timestamp
                ))
            })?
            .with_timezone(&chrono::Utc);
        let credentials =
            k8s_apply::bootstrap::least_privilege_kubeconfig(source, &self.namespace, &token.token)
                .map_err(|error| CredentialsContractError::AdminMaterial {
                    reason: error.to_string(),
                })?;
        Ok(Issued {
            credentials,
            issued_at,
            expires_at,
            rules_pack,
        })
    }
}

/// The rules pack: the ServiceAccount, Role, RoleBinding, ClusterRole and
/// ClusterRoleBinding a bootstrap applies, as one multi-document YAML file.
/// Deterministic: the objects are built in a fixed order and their maps
/// are sorted, so the same environment renders the same bytes.
pub fn rules_pack(namespace: &str, env: &str) -> Vec<(String, String)> {
    let documents: Vec<String> = k8s_apply::bootstrap::rbac_objects(namespace, env)
        .into_iter()
        .filter(|object| object["kind"] != "Namespace")
        .map(|object| serde_norway::to_string(&object).unwrap_or_default())
        .collect();
    let mut text = String::from("# The RBAC gtc applied for the deployer of this environment.\n");
    for document in documents {
        text.push_str("---\n");
        text.push_str(&document);
    }
    vec![(RULES_FILE.to_owned(), text)]
}

/// A bootstrap error as the contract's: a 403 is the identity's fault.
fn provider_error(error: k8s_apply::bootstrap::BootstrapError) -> CredentialsContractError {
    use k8s_apply::ClusterError;
    use k8s_apply::bootstrap::BootstrapError;
    match &error {
        BootstrapError::Apply { source, .. } | BootstrapError::Token { source, .. }
            if matches!(**source, ClusterError::Forbidden { .. }) =>
        {
            CredentialsContractError::Forbidden(error.to_string())
        }
        _ => CredentialsContractError::Provider(error.to_string()),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CredentialsContractError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            CredentialsContractError::Provider(format!("the async runtime cannot start: {error}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_pack_renders_the_same_bytes_and_the_role() {
        // Proves the rules pack is deterministic and holds the RBAC objects
        // (not the namespace) with the namespace limited by name.
        let first = rules_pack("gtc-prod", "prod");
        assert_eq!(first, rules_pack("gtc-prod", "prod"));
        let (name, text) = &first[0];
        assert_eq!(name, RULES_FILE);
        assert_eq!(text.matches("---\n").count(), 5);
        for kind in [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "ClusterRole",
            "ClusterRoleBinding",
        ] {
            assert!(
                text.contains(&format!("kind: {kind}\n")),
                "{kind} in {text}"
            );
        }
        assert!(!text.contains("kind: Namespace"));
        assert!(text.contains("- serviceaccounts/token"));
        assert_ne!(first, rules_pack("gtc-stage", "stage"));
    }

    #[test]
    fn every_permission_the_apply_needs_is_a_capability() {
        // Proves the k8s contract lists the 26 access-review permissions
        // after the kubeconfig and reachability capabilities.
        let contract = K8sCredentials {
            env: "prod".into(),
            namespace: "gtc-prod".into(),
            kubeconfig: None,
        };
        let ids: Vec<String> = contract
            .required_capabilities()
            .into_iter()
            .map(|capability| capability.id)
            .collect();
        assert_eq!(ids.len(), 2 + 26);
        assert_eq!(ids[0], KUBECONFIG);
        assert_eq!(ids[1], CLUSTER_REACHABLE);
        assert!(ids.contains(&"patch-deployments".to_owned()));
        assert!(ids.contains(&"delete-secrets".to_owned()));
        assert!(ids.contains(&"patch-namespaces".to_owned()));
    }
}
