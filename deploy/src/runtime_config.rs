//! The runtime config: the projection of traffic splits a runtime loads.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::ids::{BundleId, DeploymentId, EnvId, RevisionId};
use crate::pack_config::{ConfigReload, PackConfig};
use crate::revision::Revision;

/// Schema discriminator of a runtime config.
pub const RUNTIME_CONFIG_SCHEMA: &str = "greentic.runtime-config.v1";

/// One weighted revision a runtime serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeRevision {
    pub deployment_id: DeploymentId,
    pub revision_id: RevisionId,
    pub bundle_id: BundleId,
    #[serde(default)]
    pub pack_list_refs: Vec<String>,
    #[serde(default)]
    pub pack_config_refs: Vec<String>,
    pub weight_bps: u32,
}

/// What a runtime needs to route: every split entry of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub schema: String,
    pub env_id: EnvId,
    pub revisions: Vec<RuntimeRevision>,
}

impl RuntimeConfig {
    /// Projects the splits of `environment`, one block per entry, so every
    /// deployment still sums to 10000. `None` when there are no splits.
    pub fn project(environment: &Environment) -> Option<Self> {
        if environment.traffic_splits.is_empty() {
            return None;
        }
        let revisions = environment
            .traffic_splits
            .iter()
            .flat_map(|split| {
                split.entries.iter().map(move |entry| {
                    let revision = environment.revision(entry.revision_id);
                    RuntimeRevision {
                        deployment_id: split.deployment_id,
                        revision_id: entry.revision_id,
                        bundle_id: split.bundle_id.clone(),
                        pack_list_refs: revision
                            .map(|r| r.pack_list_lock_ref.clone())
                            .filter(|lock| !lock.is_empty())
                            .into_iter()
                            .collect(),
                        pack_config_refs: revision
                            .map(|r| r.pack_config_refs.clone())
                            .unwrap_or_default(),
                        weight_bps: entry.weight_bps,
                    }
                })
            })
            .collect();
        Some(Self {
            schema: RUNTIME_CONFIG_SCHEMA.to_owned(),
            env_id: environment.environment_id.clone(),
            revisions,
        })
    }
}

/// The pack configs `revision`'s instances receive now: those it pinned
/// when staged, or, for a revision whose bundle asked for
/// [`ConfigReload::Signal`], its deployment's current `config_overrides`.
/// A current configuration that no longer projects (it cannot: `apply`
/// validates it) falls back to the pinned one rather than to nothing.
pub fn delivered(environment: &Environment, revision: &Revision) -> Vec<PackConfig> {
    if revision.config_reload != ConfigReload::Signal {
        return revision.pack_configs.clone();
    }
    environment
        .deployment(revision.deployment_id)
        .and_then(|deployment| {
            crate::pack_config::project(
                &deployment.config_overrides,
                revision.revision_id,
                &environment.environment_id,
            )
            .ok()
        })
        .unwrap_or_else(|| revision.pack_configs.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_splits_means_no_runtime_config() {
        let environment = Environment::new(EnvId::local(), "local".into());
        assert!(RuntimeConfig::project(&environment).is_none());
    }
}
