//! Revisions: immutable, frozen versions of a bundle deployment.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::canonical::ContentDigest;
use crate::ids::{BundleId, DeploymentId, EnvId, PackId, RevisionId};
use crate::lifecycle::Lifecycle;
use crate::scaling::ScalingSettings;

/// Schema discriminator of a revision document.
pub const REVISION_SCHEMA: &str = "greentic.revision.v1";

/// Default seconds a draining revision gets to finish in-flight requests.
pub const DRAIN_SECONDS_DEFAULT: u32 = 30;

/// Longest drain we accept: an hour. Longer drains hold instances and ports
/// for no benefit a rollout could notice.
pub const DRAIN_SECONDS_MAX: u32 = 3600;

/// One pinned pack of a revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackListEntry {
    pub pack_id: PackId,
    /// Pack version; entries projected from a lock file use `0.0.0`.
    #[schemars(with = "String")]
    pub version: semver::Version,
    pub digest: ContentDigest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_uri: Option<String>,
}

/// An immutable revision of one bundle deployment. Only `lifecycle` and the
/// timestamps that record its moves ever change after staging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revision {
    pub schema: String,
    pub revision_id: RevisionId,
    pub env_id: EnvId,
    pub bundle_id: BundleId,
    pub deployment_id: DeploymentId,
    /// One more than the deployment's highest sequence when staged.
    pub sequence: u64,
    pub created_at: Timestamp,
    /// Digest of the staged `.gtbundle` file.
    pub bundle_digest: ContentDigest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_source_uri: Option<String>,
    #[serde(default)]
    pub pack_list: Vec<PackListEntry>,
    #[serde(default)]
    pub pack_list_lock_ref: String,
    #[serde(default)]
    pub pack_config_refs: Vec<String>,
    pub config_digest: ContentDigest,
    pub signature_sidecar_ref: String,
    pub lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmed_at: Option<Timestamp>,
    /// When the lifecycle last changed; lets operators see stuck revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_changed_at: Option<Timestamp>,
    /// Why the revision is `failed`; cleared when it is staged again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub drain_seconds: u32,
    #[serde(default)]
    pub abort_metrics: Vec<String>,
    /// Instances the deployer runs, when the revision's bundle has a
    /// runtime section; `None` means there is nothing to run, and warming
    /// completes on the state checks alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_instances: Option<u32>,
    /// The node of each instance, as the cluster leader placed them (one
    /// entry per instance). Empty on a single node, which runs them all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// How the revision scales with its traffic (issue #19), from its
    /// bundle's runtime section or `revisions scale`; `None` runs the fixed
    /// `runtime_instances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSettings>,
    /// The instance count the autoscaler last committed, always within the
    /// settings' `min_instances..=max_instances`. With `scaling` this, not
    /// `runtime_instances`, is what runs; `None` until the first decision
    /// (then [`ScalingSettings::initial_instances`] run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_instances: Option<u32>,
    /// The exact secret versions its instances receive, resolved from its
    /// bundle's `runtime.secrets` when it was staged (issue #14): a
    /// rollback runs with these, whatever was rotated since.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_pins: Vec<crate::secret_pins::SecretPin>,
    /// The deployer env-pack that runs it, recorded from the environment's
    /// deployer binding each time it is warmed: rebinding the slot changes
    /// the deployer of revisions warmed afterwards, and a running revision
    /// keeps its own, across node restarts too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployer: Option<crate::descriptor::PackDescriptor>,
    /// The configuration its instances receive: one pack config per pack,
    /// projected from its deployment's `config_overrides` when it was
    /// staged (issue #14), written for each instance as
    /// `<pack>.pack.json`. Immutable, so a rollback restores it; with
    /// `config_reload: signal` the deployment's current configuration is
    /// delivered instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pack_configs: Vec<crate::pack_config::PackConfig>,
    /// How a configuration change reaches its running instances (its
    /// bundle's `runtime.reload`).
    #[serde(
        default,
        skip_serializing_if = "crate::pack_config::ConfigReload::is_revision"
    )]
    pub config_reload: crate::pack_config::ConfigReload,
}

/// The spec's `config_digest`: a hash over the setup answers plus the pack
/// list. The setup answers of a revision are its deployment's
/// `config_overrides` (per-pack configuration); the digest is SHA-256 over
/// the canonical JSON of `{"config_overrides": …, "pack_list": …}`, so two
/// revisions with the same configuration and packs share it and any change
/// to either changes it.
pub fn config_digest(
    config_overrides: &crate::bundle::ConfigOverrides,
    pack_list: &[PackListEntry],
) -> ContentDigest {
    let document = serde_json::json!({
        "config_overrides": config_overrides,
        "pack_list": pack_list,
    });
    ContentDigest::of_bytes(crate::canonical::to_canonical_json(&document).as_bytes())
}

/// The short form `revisions list` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RevisionSummary {
    pub revision_id: RevisionId,
    pub deployment_id: DeploymentId,
    pub bundle_id: BundleId,
    pub sequence: u64,
    pub lifecycle: Lifecycle,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The secret versions it runs with (refs and versions, never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_pins: Vec<crate::secret_pins::SecretPin>,
}

impl Revision {
    /// Whether a node has something to run for this revision: a staged
    /// bundle with a runtime section (at least one instance). A revision
    /// without one can be `ready` on the state checks alone, but no node
    /// can serve it, so it may take no traffic.
    pub fn has_something_to_run(&self) -> bool {
        self.runtime_instances
            .is_some_and(|instances| instances > 0)
    }

    /// How many instances run now: the autoscaler's committed count for a
    /// revision that scales, its bundle's fixed count otherwise; `None`
    /// when there is nothing to run.
    pub fn instance_count(&self) -> Option<u32> {
        let fixed = self.runtime_instances?;
        Some(match &self.scaling {
            Some(scaling) => self
                .desired_instances
                .unwrap_or_else(|| scaling.initial_instances()),
            None => fixed,
        })
    }

    /// Why this revision may take no traffic although it is ready, if so.
    pub fn nothing_to_run_reason(&self) -> Option<String> {
        (!self.has_something_to_run()).then(|| {
            format!(
                "revision {} has nothing to run (it was staged without a bundle, or its bundle has no runtime section), so no node can serve it; stage a bundle with a runtime section (`gtc op revisions stage <env> --deployment {} --bundle <file>.gtbundle`) and send the traffic to that revision",
                self.revision_id, self.deployment_id
            )
        })
    }

    /// The summary row of this revision.
    pub fn summary(&self) -> RevisionSummary {
        RevisionSummary {
            revision_id: self.revision_id,
            deployment_id: self.deployment_id,
            bundle_id: self.bundle_id.clone(),
            sequence: self.sequence,
            lifecycle: self.lifecycle,
            failure_reason: self.failure_reason.clone(),
            secret_pins: self.secret_pins.clone(),
        }
    }
}
