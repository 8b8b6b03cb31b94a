//! The Environment document and its data invariants.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::bundle::{BundleDeployment, BundleError};
use crate::descriptor::{CapabilitySlot, PackDescriptor};
use crate::ids::{DeploymentId, EnvId, PackId, RevisionId};
use crate::lifecycle::Lifecycle;
use crate::refs::{RefError, SecretRef};
use crate::revision::{REVISION_SCHEMA, Revision};
use crate::traffic::{SplitError, TrafficSplit};

/// Schema discriminator of an environment document.
pub const ENVIRONMENT_SCHEMA: &str = "greentic.environment.v1";

/// The router's default listener, set by `env init`.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";

/// Where and how an environment is hosted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentHostConfig {
    pub env_id: EnvId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub listen_addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gui_enabled: Option<bool>,
}

impl EnvironmentHostConfig {
    /// `gui_enabled` as it applies: unset means on for `local` only.
    pub fn gui_enabled_resolved(&self) -> bool {
        self.gui_enabled.unwrap_or_else(|| self.env_id.is_local())
    }
}

/// A binding as it was before its last change: the one-step rollback target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingSnapshot {
    pub kind: PackDescriptor,
    pub pack_ref: PackId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_ref: Option<String>,
    pub generation: u64,
}

/// One env-pack bound into a capability slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvPackBinding {
    pub slot: CapabilitySlot,
    pub kind: PackDescriptor,
    pub pack_ref: PackId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_ref: Option<String>,
    /// Bumped on attach, update, remove and rollback.
    #[serde(default)]
    pub generation: u64,
    /// The binding before the last update; structured rather than the
    /// original `inline://` string so it can be read and diffed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<BindingSnapshot>,
}

/// Revocation settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    #[serde(default)]
    pub required: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_ref: Option<String>,
}

/// How much history an environment keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_revisions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_retention_days: Option<u32>,
}

/// Overall health as last reported by the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    #[default]
    Unknown,
    Green,
    Yellow,
    Red,
}

/// Health record of an environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default)]
    pub state: HealthState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checked_at: Option<Timestamp>,
}

/// An environment: the place bundles are deployed to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub schema: String,
    pub environment_id: EnvId,
    pub name: String,
    pub host_config: EnvironmentHostConfig,
    #[serde(default)]
    pub packs: Vec<EnvPackBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_ref: Option<SecretRef>,
    #[serde(default)]
    pub bundles: Vec<BundleDeployment>,
    #[serde(default)]
    pub revisions: Vec<Revision>,
    #[serde(default)]
    pub traffic_splits: Vec<TrafficSplit>,
    /// Rollouts: at most one active per deployment, and the last
    /// [`crate::rollout::FINISHED_ROLLOUTS_KEPT`] finished ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<crate::rollout::Rollout>,
    #[serde(default)]
    pub revocation: Revocation,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub health: Health,
}

/// A broken data invariant of an environment. Each variant names the
/// offending object so the operator can find it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValidationError {
    #[error("environment schema is {found:?}; expected {ENVIRONMENT_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("host_config.env_id is {found:?} but the environment is {expected:?}")]
    EnvIdMismatch { expected: String, found: String },
    #[error("environment name is empty or longer than 128 characters")]
    InvalidName,
    #[error("revision {revision_id}: {detail}")]
    Scaling {
        revision_id: RevisionId,
        detail: String,
    },
    #[error("revision {revision_id}: its pack configs: {detail}")]
    PackConfig {
        revision_id: RevisionId,
        detail: String,
    },
    #[error("revision {revision_id}: secret_pins: {detail}")]
    SecretPins {
        revision_id: RevisionId,
        detail: String,
    },
    #[error("host_config.public_base_url {url:?} is invalid: {reason}")]
    PublicBaseUrl { url: String, reason: &'static str },
    #[error("slot {slot} is bound twice; an environment binds each core slot at most once")]
    DuplicateCapabilitySlot { slot: CapabilitySlot },
    #[error("{field}: {source}")]
    CrossEnvRef { field: String, source: RefError },
    #[error("revision {revision_id} has schema {found:?}; expected {REVISION_SCHEMA:?}")]
    RevisionSchema {
        revision_id: RevisionId,
        found: String,
    },
    #[error("revision {revision_id} belongs to environment {found:?}, not {expected:?}")]
    RevisionEnvMismatch {
        revision_id: RevisionId,
        expected: String,
        found: String,
    },
    #[error("revision id {revision_id} appears twice")]
    DuplicateRevision { revision_id: RevisionId },
    #[error("deployment {deployment_id} has two revisions with sequence {sequence}")]
    DuplicateSequence {
        deployment_id: DeploymentId,
        sequence: u64,
    },
    #[error("revision {revision_id} names deployment {deployment_id}, which does not exist")]
    RevisionUnknownDeployment {
        revision_id: RevisionId,
        deployment_id: DeploymentId,
    },
    #[error("revision {revision_id} has bundle {found:?} but its deployment deploys {expected:?}")]
    RevisionWrongBundle {
        revision_id: RevisionId,
        expected: String,
        found: String,
    },
    #[error("deployment id {deployment_id} appears twice")]
    DuplicateDeployment { deployment_id: DeploymentId },
    #[error("deployment {deployment_id} belongs to environment {found:?}, not {expected:?}")]
    DeploymentEnvMismatch {
        deployment_id: DeploymentId,
        expected: String,
        found: String,
    },
    #[error("deployment {deployment_id}: {source}")]
    Bundle {
        deployment_id: DeploymentId,
        source: BundleError,
    },
    #[error("deployment {deployment_id}: {detail}")]
    ConfigOverrides {
        deployment_id: DeploymentId,
        detail: String,
    },
    #[error("deployment {deployment_id} lists revision {revision_id}, which does not exist")]
    UnknownRevision {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
    },
    #[error(
        "deployment {deployment_id} lists revision {revision_id}, which belongs to deployment {owner}"
    )]
    BundleRevisionWrongDeployment {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
        owner: DeploymentId,
    },
    #[error(
        "deployment {deployment_id} does not list its revision {revision_id} in current_revisions"
    )]
    RevisionNotCurrent {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
    },
    #[error(
        "deployment {deployment_id} lists archived revision {revision_id} in current_revisions"
    )]
    ArchivedRevisionCurrent {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
    },
    #[error(
        "config_overrides of deployment {deployment_id} names pack {pack_id}, which no live revision of it pins"
    )]
    UnknownOverridePack {
        deployment_id: DeploymentId,
        pack_id: String,
    },
    #[error(
        "deployments {first} and {second} both claim host {host:?} and path prefix {prefix:?}; a request must map to one deployment"
    )]
    RouteConflict {
        first: DeploymentId,
        second: DeploymentId,
        host: String,
        prefix: String,
    },
    /// A change would claim a route a live deployment already holds; names
    /// the holder, which exists (the changed deployment may not, yet).
    #[error(
        "{route} is already claimed by deployment {holder} (bundle {bundle_id}); a request must map to one deployment, so pick another host or path prefix, or remove that deployment"
    )]
    RouteTaken {
        holder: DeploymentId,
        bundle_id: String,
        /// `host "*" with path prefix "/api"` (one field keeps the error small).
        route: String,
    },
    #[error("traffic split of deployment {deployment_id}: {source}")]
    Split {
        deployment_id: DeploymentId,
        source: SplitError,
    },
    #[error("rollout of deployment {deployment_id}: {what}")]
    Rollout {
        deployment_id: DeploymentId,
        what: String,
    },
    #[error("traffic split belongs to environment {found:?}, not {expected:?}")]
    SplitEnvMismatch { expected: String, found: String },
    #[error("deployment {deployment_id} has more than one traffic split")]
    DuplicateSplit { deployment_id: DeploymentId },
    #[error("traffic split names deployment {deployment_id}, which does not exist")]
    UnknownDeployment { deployment_id: DeploymentId },
    #[error(
        "traffic split of deployment {deployment_id} names bundle {found:?}; the deployment deploys {expected:?}"
    )]
    SplitDeploymentBundleMismatch {
        deployment_id: DeploymentId,
        expected: String,
        found: String,
    },
    #[error(
        "traffic split of deployment {deployment_id} sends traffic to revision {revision_id}, which does not belong to it"
    )]
    SplitForeignRevision {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
    },
    #[error(
        "traffic split of deployment {deployment_id} sends traffic to revision {revision_id}, which is {lifecycle}; only ready revisions may serve"
    )]
    SplitRevisionNotReady {
        deployment_id: DeploymentId,
        revision_id: RevisionId,
        lifecycle: Lifecycle,
    },
}

/// Checks an operator-supplied public base URL and returns its stored form.
pub fn normalize_public_base_url(raw: &str) -> Result<String, ValidationError> {
    let fail = |reason| ValidationError::PublicBaseUrl {
        url: raw.to_owned(),
        reason,
    };
    let url = raw.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| fail("the scheme must be http:// or https://"))?;
    if url.chars().any(char::is_whitespace) {
        return Err(fail("it must not contain whitespace"));
    }
    if rest.contains('?') || rest.contains('#') {
        return Err(fail("it must not have a query or fragment"));
    }
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if !path.is_empty() {
        return Err(fail(
            "it must not have a path; use the bare origin such as https://example.com",
        ));
    }
    if authority.contains('@') {
        return Err(fail("it must not contain user information"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            (host, Some(port))
        }
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(fail("the host is empty"));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(fail("the port must be a number from 0 to 65535"));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

impl Environment {
    /// The revisions that are not archived and pin `version` of
    /// `reference`, as `"<revision> (<lifecycle>)"`: removing that version
    /// is refused while any is listed (a rollback to one needs it).
    pub fn revisions_pinning(&self, reference: &str, version: u32) -> Vec<String> {
        self.revisions
            .iter()
            .filter(|revision| revision.lifecycle != Lifecycle::Archived)
            .filter(|revision| {
                revision
                    .secret_pins
                    .iter()
                    .any(|pin| pin.reference.as_str() == reference && pin.version == version)
            })
            .map(|revision| format!("{} ({})", revision.revision_id, revision.lifecycle))
            .collect()
    }

    /// A fresh environment with no bindings.
    pub fn new(environment_id: EnvId, name: String) -> Self {
        Self {
            schema: ENVIRONMENT_SCHEMA.to_owned(),
            host_config: EnvironmentHostConfig {
                env_id: environment_id.clone(),
                region: None,
                tenant_org_id: None,
                listen_addr: None,
                public_base_url: None,
                gui_enabled: None,
            },
            environment_id,
            name,
            packs: Vec::new(),
            credentials_ref: None,
            bundles: Vec::new(),
            revisions: Vec::new(),
            traffic_splits: Vec::new(),
            rollouts: Vec::new(),
            revocation: Revocation::default(),
            retention: Retention::default(),
            health: Health::default(),
        }
    }

    /// The binding of `slot`, if any.
    pub fn binding(&self, slot: CapabilitySlot) -> Option<&EnvPackBinding> {
        self.packs.iter().find(|binding| binding.slot == slot)
    }

    /// The revision with `id`, if any.
    pub fn revision(&self, id: RevisionId) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.revision_id == id)
    }

    /// The deployment with `id`, if any.
    pub fn deployment(&self, id: DeploymentId) -> Option<&BundleDeployment> {
        self.bundles.iter().find(|b| b.deployment_id == id)
    }

    /// The split of deployment `id`, if any.
    pub fn split(&self, id: DeploymentId) -> Option<&TrafficSplit> {
        self.traffic_splits.iter().find(|s| s.deployment_id == id)
    }

    /// The rollout that owns deployment `id`'s split now, if one runs.
    pub fn active_rollout(&self, id: DeploymentId) -> Option<&crate::rollout::Rollout> {
        self.rollouts
            .iter()
            .find(|r| r.deployment_id == id && r.state.is_active())
    }

    /// Deployment `id`'s latest rollout, running or finished.
    pub fn latest_rollout(&self, id: DeploymentId) -> Option<&crate::rollout::Rollout> {
        self.rollouts
            .iter()
            .filter(|r| r.deployment_id == id)
            .max_by_key(|r| r.started_at)
    }

    /// Every data invariant. Lifecycle moves are checked when a command is
    /// applied; this checks what must hold of any stored document.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.schema != ENVIRONMENT_SCHEMA {
            return Err(ValidationError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        if self.host_config.env_id != self.environment_id {
            return Err(ValidationError::EnvIdMismatch {
                expected: self.environment_id.to_string(),
                found: self.host_config.env_id.to_string(),
            });
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 128 {
            return Err(ValidationError::InvalidName);
        }
        if let Some(url) = &self.host_config.public_base_url {
            normalize_public_base_url(url)?;
        }
        self.validate_packs()?;
        self.validate_revisions()?;
        self.validate_bundles()?;
        self.validate_routes()?;
        self.validate_splits()?;
        self.validate_rollouts()
    }

    /// A running rollout owns its deployment's split: one per deployment,
    /// both revisions ready, and the split exactly the rollout's weights.
    fn validate_rollouts(&self) -> Result<(), ValidationError> {
        for (index, rollout) in self.rollouts.iter().enumerate() {
            if !rollout.state.is_active() {
                continue;
            }
            let deployment_id = rollout.deployment_id;
            let broken = |what: String| ValidationError::Rollout {
                deployment_id,
                what,
            };
            if self.rollouts[..index]
                .iter()
                .any(|r| r.deployment_id == deployment_id && r.state.is_active())
            {
                return Err(broken("two rollouts run at once".to_owned()));
            }
            for revision_id in [rollout.stable_revision_id, rollout.candidate_revision_id] {
                let lifecycle = self.revision(revision_id).map(|r| r.lifecycle);
                if lifecycle != Some(Lifecycle::Ready) {
                    return Err(broken(format!(
                        "revision {revision_id} is {}; both revisions of a running rollout stay ready",
                        lifecycle.map_or("gone", Lifecycle::as_str)
                    )));
                }
            }
            let candidate = rollout.candidate_weight_bps();
            let weight_of = |revision_id| {
                self.split(deployment_id).map_or(0, |split| {
                    split
                        .entries
                        .iter()
                        .filter(|e| e.revision_id == revision_id)
                        .map(|e| e.weight_bps)
                        .sum::<u32>()
                })
            };
            if weight_of(rollout.candidate_revision_id) != candidate
                || weight_of(rollout.stable_revision_id)
                    != crate::traffic::BASIS_POINTS_TOTAL - candidate
            {
                return Err(broken(format!(
                    "the split is not the rollout's {candidate} bps to the candidate and the rest to the stable revision"
                )));
            }
        }
        Ok(())
    }

    fn validate_packs(&self) -> Result<(), ValidationError> {
        for (index, binding) in self.packs.iter().enumerate() {
            if self.packs[..index].iter().any(|b| b.slot == binding.slot) {
                return Err(ValidationError::DuplicateCapabilitySlot { slot: binding.slot });
            }
        }
        if let Some(reference) = &self.credentials_ref {
            reference
                .check_scope(&self.environment_id)
                .map_err(|source| ValidationError::CrossEnvRef {
                    field: "credentials_ref".to_owned(),
                    source,
                })?;
        }
        Ok(())
    }

    fn validate_revisions(&self) -> Result<(), ValidationError> {
        let mut sequences: BTreeMap<(DeploymentId, u64), RevisionId> = BTreeMap::new();
        for (index, revision) in self.revisions.iter().enumerate() {
            if revision.schema != REVISION_SCHEMA {
                return Err(ValidationError::RevisionSchema {
                    revision_id: revision.revision_id,
                    found: revision.schema.clone(),
                });
            }
            if revision.env_id != self.environment_id {
                return Err(ValidationError::RevisionEnvMismatch {
                    revision_id: revision.revision_id,
                    expected: self.environment_id.to_string(),
                    found: revision.env_id.to_string(),
                });
            }
            if self.revisions[..index]
                .iter()
                .any(|r| r.revision_id == revision.revision_id)
            {
                return Err(ValidationError::DuplicateRevision {
                    revision_id: revision.revision_id,
                });
            }
            if let Some(scaling) = &revision.scaling {
                if let Err(error) = scaling.validate() {
                    return Err(ValidationError::Scaling {
                        revision_id: revision.revision_id,
                        detail: error.to_string(),
                    });
                }
                if let Some(desired) = revision.desired_instances
                    && scaling.clamp(desired) != desired
                {
                    return Err(ValidationError::Scaling {
                        revision_id: revision.revision_id,
                        detail: format!(
                            "desired_instances {desired} is outside min_instances..=max_instances ({}..={})",
                            scaling.min_instances, scaling.max_instances
                        ),
                    });
                }
            }
            if let Err(error) =
                crate::secret_pins::check_pins(&revision.secret_pins, &self.environment_id)
            {
                return Err(ValidationError::SecretPins {
                    revision_id: revision.revision_id,
                    detail: error.to_string(),
                });
            }
            for config in &revision.pack_configs {
                let wrong_revision = (config.revision_id != revision.revision_id).then(|| {
                    format!(
                        "pack config of {} names revision {}",
                        config.pack_id, config.revision_id
                    )
                });
                if let Some(detail) = wrong_revision.or_else(|| {
                    config
                        .validate(&self.environment_id)
                        .err()
                        .map(|e| e.to_string())
                }) {
                    return Err(ValidationError::PackConfig {
                        revision_id: revision.revision_id,
                        detail,
                    });
                }
            }
            let key = (revision.deployment_id, revision.sequence);
            if sequences.insert(key, revision.revision_id).is_some() {
                return Err(ValidationError::DuplicateSequence {
                    deployment_id: revision.deployment_id,
                    sequence: revision.sequence,
                });
            }
            let Some(deployment) = self.deployment(revision.deployment_id) else {
                return Err(ValidationError::RevisionUnknownDeployment {
                    revision_id: revision.revision_id,
                    deployment_id: revision.deployment_id,
                });
            };
            if deployment.bundle_id != revision.bundle_id {
                return Err(ValidationError::RevisionWrongBundle {
                    revision_id: revision.revision_id,
                    expected: deployment.bundle_id.to_string(),
                    found: revision.bundle_id.to_string(),
                });
            }
            let listed = deployment.current_revisions.contains(&revision.revision_id);
            if revision.lifecycle == Lifecycle::Archived && listed {
                return Err(ValidationError::ArchivedRevisionCurrent {
                    deployment_id: deployment.deployment_id,
                    revision_id: revision.revision_id,
                });
            }
            if revision.lifecycle != Lifecycle::Archived && !listed {
                return Err(ValidationError::RevisionNotCurrent {
                    deployment_id: deployment.deployment_id,
                    revision_id: revision.revision_id,
                });
            }
        }
        Ok(())
    }

    fn validate_bundles(&self) -> Result<(), ValidationError> {
        for (index, bundle) in self.bundles.iter().enumerate() {
            let deployment_id = bundle.deployment_id;
            if self.bundles[..index]
                .iter()
                .any(|b| b.deployment_id == deployment_id)
            {
                return Err(ValidationError::DuplicateDeployment { deployment_id });
            }
            if bundle.env_id != self.environment_id {
                return Err(ValidationError::DeploymentEnvMismatch {
                    deployment_id,
                    expected: self.environment_id.to_string(),
                    found: bundle.env_id.to_string(),
                });
            }
            bundle
                .validate()
                .map_err(|source| ValidationError::Bundle {
                    deployment_id,
                    source,
                })?;
            // What a revision staged now would pin must project: refs
            // well formed and scoped to this environment.
            crate::pack_config::project(
                &bundle.config_overrides,
                RevisionId::from_ulid(ulid::Ulid::nil()),
                &self.environment_id,
            )
            .map_err(|error| ValidationError::ConfigOverrides {
                deployment_id,
                detail: error.to_string(),
            })?;
            for revision_id in &bundle.current_revisions {
                let Some(revision) = self.revision(*revision_id) else {
                    return Err(ValidationError::UnknownRevision {
                        deployment_id,
                        revision_id: *revision_id,
                    });
                };
                if revision.deployment_id != deployment_id {
                    return Err(ValidationError::BundleRevisionWrongDeployment {
                        deployment_id,
                        revision_id: *revision_id,
                        owner: revision.deployment_id,
                    });
                }
            }
            self.validate_override_packs(bundle)?;
        }
        Ok(())
    }

    fn validate_override_packs(&self, bundle: &BundleDeployment) -> Result<(), ValidationError> {
        let pinned: Vec<&PackId> = self
            .revisions
            .iter()
            .filter(|r| {
                r.deployment_id == bundle.deployment_id && r.lifecycle != Lifecycle::Archived
            })
            .flat_map(|r| r.pack_list.iter().map(|entry| &entry.pack_id))
            .collect();
        // Overrides may be written before any revision pins packs; the check
        // applies once some live revision has a pack list.
        if pinned.is_empty() {
            return Ok(());
        }
        for pack_id in bundle.config_overrides.keys() {
            if !pinned.contains(&pack_id) {
                return Err(ValidationError::UnknownOverridePack {
                    deployment_id: bundle.deployment_id,
                    pack_id: pack_id.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The refusal of `binding` when a live deployment other than `except`
    /// already claims one of its routes, naming that deployment.
    pub fn route_taken(
        &self,
        binding: &crate::bundle::RouteBinding,
        except: Option<DeploymentId>,
    ) -> Option<ValidationError> {
        let claims = binding.claims();
        self.bundles
            .iter()
            .filter(|b| b.status != crate::bundle::DeploymentStatus::Archived)
            .filter(|b| Some(b.deployment_id) != except)
            .find_map(|holder| {
                let held = holder.route_binding.claims();
                claims
                    .iter()
                    .find(|claim| held.contains(claim))
                    .map(|(host, prefix)| ValidationError::RouteTaken {
                        holder: holder.deployment_id,
                        bundle_id: holder.bundle_id.to_string(),
                        route: format!(
                            "host {:?} with path prefix {prefix:?}",
                            host.unwrap_or("*")
                        ),
                    })
            })
    }

    fn validate_routes(&self) -> Result<(), ValidationError> {
        let mut claimed: BTreeMap<(Option<&str>, &str), DeploymentId> = BTreeMap::new();
        let live = self
            .bundles
            .iter()
            .filter(|b| b.status != crate::bundle::DeploymentStatus::Archived);
        for bundle in live {
            for claim in bundle.route_binding.claims() {
                if let Some(first) = claimed.insert(claim, bundle.deployment_id) {
                    return Err(ValidationError::RouteConflict {
                        first,
                        second: bundle.deployment_id,
                        host: claim.0.unwrap_or("*").to_owned(),
                        prefix: claim.1.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_splits(&self) -> Result<(), ValidationError> {
        for (index, split) in self.traffic_splits.iter().enumerate() {
            let deployment_id = split.deployment_id;
            if split.env_id != self.environment_id {
                return Err(ValidationError::SplitEnvMismatch {
                    expected: self.environment_id.to_string(),
                    found: split.env_id.to_string(),
                });
            }
            if self.traffic_splits[..index]
                .iter()
                .any(|s| s.deployment_id == deployment_id)
            {
                return Err(ValidationError::DuplicateSplit { deployment_id });
            }
            split.validate().map_err(|source| ValidationError::Split {
                deployment_id,
                source,
            })?;
            let Some(deployment) = self.deployment(deployment_id) else {
                return Err(ValidationError::UnknownDeployment { deployment_id });
            };
            if deployment.bundle_id != split.bundle_id {
                return Err(ValidationError::SplitDeploymentBundleMismatch {
                    deployment_id,
                    expected: deployment.bundle_id.to_string(),
                    found: split.bundle_id.to_string(),
                });
            }
            for entry in &split.entries {
                let revision = self
                    .revision(entry.revision_id)
                    .filter(|r| r.deployment_id == deployment_id)
                    .ok_or(ValidationError::SplitForeignRevision {
                        deployment_id,
                        revision_id: entry.revision_id,
                    })?;
                if !revision.lifecycle.can_serve() {
                    return Err(ValidationError::SplitRevisionNotReady {
                        deployment_id,
                        revision_id: entry.revision_id,
                        lifecycle: revision.lifecycle,
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_base_urls_are_normalized_or_refused() {
        assert_eq!(
            normalize_public_base_url(" https://example.com/ ").expect("ok"),
            "https://example.com"
        );
        assert_eq!(
            normalize_public_base_url("http://127.0.0.1:8080").expect("ok"),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "ftp://x",
            "https://",
            "https://a b",
            "https://u@h",
            "https://h/path",
            "https://h?q",
            "https://h#f",
            "https://h:99999",
            "example.com",
        ] {
            assert!(normalize_public_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_slots_are_refused() {
        let mut env = Environment::new(EnvId::local(), "local".into());
        let binding = EnvPackBinding {
            slot: CapabilitySlot::State,
            kind: "greentic.state.in-memory@0.1.0"
                .parse()
                .expect("descriptor"),
            pack_ref: "p".parse().expect("pack"),
            answers_ref: None,
            generation: 0,
            previous: None,
        };
        env.packs = vec![binding.clone(), binding];
        assert_eq!(
            env.validate(),
            Err(ValidationError::DuplicateCapabilitySlot {
                slot: CapabilitySlot::State
            })
        );
    }

    #[test]
    fn credentials_ref_must_stay_in_its_environment() {
        let mut env = Environment::new(EnvId::local(), "local".into());
        env.credentials_ref = Some("secret://prod/creds".parse().expect("ref"));
        assert!(matches!(
            env.validate(),
            Err(ValidationError::CrossEnvRef { .. })
        ));
    }
}
