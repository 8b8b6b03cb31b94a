//! Typed commands: the only way state changes.
//!
//! The `*Answers` structs are the operator payloads (`--answers FILE`); their
//! JSON Schemas are generated from these types. A [`Command`] wraps one
//! payload plus anything the edge resolved for it (default bindings, a
//! verified backup). A [`CommandEnvelope`] adds what `apply` must not invent
//! itself: the time, the actor, the authorization and fresh ids.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::audit::{Actor, Authorization};
use crate::bundle::{ConfigOverrides, DeploymentStatus, RevenueShare, RouteBinding};
use crate::canonical::ContentDigest;
use crate::descriptor::{CapabilitySlot, PackDescriptor};
use crate::environment::EnvPackBinding;
use crate::ids::{
    BackupId, BundleId, CustomerId, DeploymentId, EnvId, EventId, PackId, RevisionId,
};
use crate::precondition::Precondition;
use crate::revision::PackListEntry;
use crate::state::EnvironmentState;

/// `env init`: bootstrap or heal the `local` environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvInitAnswers {
    /// Public URL of the local router; only when the environment is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
}

/// `env create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvCreateAnswers {
    pub environment_id: EnvId,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_org_id: Option<String>,
    /// Router listener, e.g. `127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub listen_addr: Option<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_base_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gui_enabled: Option<bool>,
}

/// `env update` and `config set`: only the fields given change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvUpdateAnswers {
    pub environment_id: EnvId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
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
    /// The deployer credentials the environment uses (`secret://<env>/…`,
    /// this environment's); `credentials bootstrap` with `bind` sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub credentials_ref: Option<crate::refs::SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A payload that only names an environment (`env destroy`, `env backup`,
/// `env migrate-dev`, `credentials requirements`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvTargetAnswers {
    pub environment_id: EnvId,
}

/// `env restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvRestoreAnswers {
    pub environment_id: EnvId,
    pub backup_id: BackupId,
    /// The generation the operator last saw; the restore is refused if the
    /// environment moved on since (mandatory, like `If-Match`).
    pub expected_generation: u64,
}

/// `env migrate-state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvMigrateStateAnswers {
    pub environment_id: EnvId,
    /// Legacy state folder; defaults to `$GREENTIC_HOME/state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
}

/// `env-packs add` and `env-packs update`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackBindAnswers {
    pub environment_id: EnvId,
    pub slot: CapabilitySlot,
    pub kind: PackDescriptor,
    /// Defaults to the descriptor string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_ref: Option<PackId>,
    /// Relative path of the pack's answers, e.g. `env-packs/deployer/answers.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `env-packs remove` and `env-packs rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackSlotAnswers {
    pub environment_id: EnvId,
    pub slot: CapabilitySlot,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `bundles add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleAddAnswers {
    pub environment_id: EnvId,
    pub bundle_id: BundleId,
    /// Required outside `local`, where it defaults to `local-dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<CustomerId>,
    #[serde(default)]
    pub route_binding: RouteBinding,
    /// Defaults to 100% to `greentic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_share: Option<Vec<RevenueShare>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_overrides: Option<ConfigOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `bundles update`: only the fields given change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BundleUpdateAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_binding: Option<RouteBinding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_share: Option<Vec<RevenueShare>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_overrides: Option<ConfigOverrides>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `bundles remove` and `traffic rollback` / `traffic clear`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `revisions stage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionStageAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    /// Minted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_id: Option<RevisionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Digest of the bundle file; `sha256:00` when none was staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_digest: Option<ContentDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_source_uri: Option<String>,
    #[serde(default)]
    pub pack_list: Vec<PackListEntry>,
    #[serde(default)]
    pub pack_list_lock_ref: String,
    /// Computed from the deployment's `config_overrides` and the pack list
    /// when absent (see `revision::config_digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<ContentDigest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_sidecar_ref: Option<String>,
    /// Seconds in-flight requests get when the revision drains; default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_seconds: Option<u32>,
    /// A `.gtbundle` (or zip/tar) to stage: it is copied into the revision's
    /// folder, verified, extracted safely and its packs pinned; the digest,
    /// pack list and lock ref then come from the bundle, so leave them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_path: Option<String>,
}

impl RevisionStageAnswers {
    /// A stage of `deployment` with every optional field left to its default.
    pub fn new(environment_id: EnvId, deployment_id: DeploymentId) -> Self {
        Self {
            environment_id,
            deployment_id,
            revision_id: None,
            idempotency_key: None,
            bundle_digest: None,
            bundle_source_uri: None,
            pack_list: Vec::new(),
            pack_list_lock_ref: String::new(),
            config_digest: None,
            signature_sidecar_ref: None,
            drain_seconds: None,
            bundle_path: None,
        }
    }
}

/// What the edge learned by staging a bundle file for `revisions stage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedBundle {
    pub revision_id: RevisionId,
    /// The `bundle_id` the bundle's manifest declares.
    pub bundle_id: BundleId,
    pub bundle_digest: ContentDigest,
    pub pack_list: Vec<PackListEntry>,
    pub pack_list_lock_ref: String,
    /// Instances to run, from the bundle's runtime section (if it has one).
    #[serde(default)]
    pub runtime_instances: Option<u32>,
    /// How the revision scales with its traffic, from the bundle's runtime
    /// section (validated at the edge and again by `apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<crate::scaling::ScalingSettings>,
    /// The secret versions the revision pins, resolved by the edge from the
    /// bundle's `runtime.secrets` against the secret store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_pins: Vec<crate::secret_pins::SecretPin>,
    /// How a configuration change reaches the running revision, from the
    /// bundle's `runtime.reload`.
    #[serde(
        default,
        skip_serializing_if = "crate::pack_config::ConfigReload::is_revision"
    )]
    pub config_reload: crate::pack_config::ConfigReload,
}

/// What the runtime observed about a revision, reported by the node that
/// runs it (never by an operator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum RuntimeOutcome {
    /// Every instance passed its health check: `warming → ready`.
    Ready,
    /// Warming failed (timeout, crash, bad command): `→ failed`.
    Failed { reason: String },
    /// In-flight requests finished or the drain time ran out: `draining → inactive`.
    Drained,
}

/// `revisions place`: the node of each instance of each listed revision,
/// decided by the cluster leader (`deploy::placement::place`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlacementAnswers {
    pub environment_id: EnvId,
    pub placements: std::collections::BTreeMap<RevisionId, Vec<String>>,
    /// The Raft term of the leader that decided it, from the members it
    /// saw live then. The replicated state machine applies the placement
    /// only in an entry of that same term: a decision that reaches the log
    /// under a later leader (forwarded or retried after the deciding
    /// leader lost its term, as an isolated leader's would be) is refused,
    /// since the members it named may be long gone. `None` (a single node)
    /// applies as it comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_in_term: Option<u64>,
}

/// A runtime report about one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeReport {
    pub environment_id: EnvId,
    pub revision_id: RevisionId,
    #[serde(flatten)]
    pub outcome: RuntimeOutcome,
}

/// `revisions warm`, `drain` and `archive`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionAnswers {
    pub environment_id: EnvId,
    pub revision_id: RevisionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The literal that makes a traffic entry follow the newest ready revision.
pub const LATEST_TARGET: &str = "LATEST";

/// One requested traffic entry: a revision id or `LATEST`, and a weight in
/// basis points or percent (exactly one of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficEntryAnswers {
    /// A revision id, or `LATEST` for the newest ready revision.
    pub revision_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bps: Option<u32>,
    /// Percent with at most two decimals, e.g. 99.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_percent: Option<f64>,
    /// Reach this revision directly as `<tag>---<host>` or with the
    /// `x-greentic-tag` header, whatever its weight (0 to preview it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// `traffic set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficSetAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    pub entries: Vec<TrafficEntryAnswers>,
    /// Defaults to the operator's user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_by: Option<String>,
    /// Required: a retried `traffic set` must never apply twice.
    pub idempotency_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_ref: Option<String>,
}

/// `rollouts start`: move a deployment's traffic from its stable revision to
/// a candidate in steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutStartAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    /// The revision to roll out; it must be ready.
    pub candidate_revision_id: RevisionId,
    /// The revision that serves now. Defaults to the one the split sends
    /// 100 % to; required when the split has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision_id: Option<RevisionId>,
    pub steps: Vec<crate::rollout::RolloutStep>,
    /// Required when a step waits for analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::rollout::AnalysisSettings>,
    /// How long the stable revision stays ready (its drain refused) after
    /// a promotion, so a rollback is a traffic change; default 300, at most
    /// 86400.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_grace_seconds: Option<u32>,
    /// Required: a retried start must never start a second rollout.
    pub idempotency_key: String,
}

/// `rollouts pause`, `resume`, `promote` and `abort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutActionAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    /// Why, for the rollout's history and the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A decision of the rollout controller (on the cluster leader, or the
/// single node) about the current step of a deployment's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutDecisionAnswers {
    pub environment_id: EnvId,
    pub deployment_id: DeploymentId,
    /// The step the decision is about: refused once the rollout moved on.
    pub step: u32,
    pub decision: crate::rollout::ControllerDecision,
    /// As for placements: the Raft term of the leader that decided it; the
    /// replicated state machine refuses it in an entry of another term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_in_term: Option<u64>,
}

/// `revisions scale`: a person sets (or changes) how a revision scales with
/// its traffic. Not a redeploy: the revision keeps its instances, and the
/// autoscaler brings their count within the new bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RevisionScaleAnswers {
    pub environment_id: EnvId,
    pub revision_id: RevisionId,
    /// The settings; every field has a default (`{}` scales to zero after
    /// 30 s idle, up to 10 instances of 100 concurrent requests).
    pub scaling: crate::scaling::ScalingSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// A decision of the autoscaler (on the cluster leader, or the single
/// node): the instance count a scaling revision should run, with the inputs
/// that made it, audited as `autoscaler:<revision>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleDecisionAnswers {
    pub environment_id: EnvId,
    pub revision_id: RevisionId,
    /// The count; refused outside the revision's `min_instances..=max_instances`.
    pub desired: u32,
    /// Which rule decided: `stable`, `panic`, `from-zero` or `idle`.
    pub mode: String,
    /// Average in-flight requests (all members) over the stable window.
    pub stable_concurrency: f64,
    /// Average in-flight requests (all members) over the panic window.
    pub panic_concurrency: f64,
    /// Requests the routers held waiting for an instance.
    pub queued: u32,
    /// As for placements: the Raft term of the leader that decided it; the
    /// replicated state machine refuses it in an entry of another term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_in_term: Option<u64>,
}

/// `credentials bootstrap` and `credentials rotate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBootstrapAnswers {
    pub environment_id: EnvId,
    /// A name for the admin identity, recorded in the audit (never its
    /// material).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_profile: Option<String>,
    /// A file holding the admin credential (for Kubernetes: an admin
    /// kubeconfig); or give `admin_material_inline`. Read, used, dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_material_path: Option<String>,
    /// The admin credential itself (for Kubernetes: kubeconfig YAML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_material_inline: Option<String>,
    /// Set the environment's `credentials_ref` to the generated credentials.
    #[serde(default)]
    pub bind: bool,
    /// Lifetime of the generated token, 600 to 604800 seconds (default
    /// 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Option<u64>,
}

/// `credentials rotate`: new credentials from the current generated ones,
/// or from an admin credential when given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRotateAnswers {
    pub environment_id: EnvId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_material_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_material_inline: Option<String>,
    /// Lifetime of the new token, 600 to 604800 seconds (default 86400).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_seconds: Option<u64>,
}

// The `secrets` verbs' payloads live in the `secrets` crate: they carry
// values, which must never be serialized into a command or an audit event.

/// A default binding `env init` fills into an empty slot. The list comes
/// from the env-pack registry at the edge, not from this crate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DefaultBinding {
    pub slot: CapabilitySlot,
    pub kind: PackDescriptor,
}

/// A warm-gate check that failed outside `apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedCheck {
    /// Kebab-case check id, e.g. `runtime-section`.
    pub check: String,
    /// What failed and how to fix it.
    pub message: String,
}

/// A command `apply` understands. Each variant carries the operator's
/// payload plus what the edge resolved for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Command {
    EnvInit {
        answers: EnvInitAnswers,
        defaults: Vec<DefaultBinding>,
    },
    EnvCreate(EnvCreateAnswers),
    EnvUpdate(EnvUpdateAnswers),
    EnvDestroy(EnvTargetAnswers),
    /// `env restore`: the edge has already verified the backup's digest.
    EnvRestore {
        answers: EnvRestoreAnswers,
        snapshot: Box<EnvironmentState>,
    },
    /// `env migrate-dev --apply`: bindings of the legacy `dev` environment
    /// merged into the target where its slots are empty.
    EnvMergeBindings {
        answers: EnvTargetAnswers,
        source: EnvId,
        bindings: Vec<EnvPackBinding>,
    },
    PackAdd(PackBindAnswers),
    PackUpdate(PackBindAnswers),
    PackRemove(PackSlotAnswers),
    PackRollback(PackSlotAnswers),
    BundleAdd(BundleAddAnswers),
    BundleUpdate(BundleUpdateAnswers),
    BundleRemove(DeploymentAnswers),
    /// `revisions stage`; `staged` is set when the payload names a bundle
    /// file and the edge staged it.
    RevisionStage {
        answers: RevisionStageAnswers,
        staged: Option<Box<StagedBundle>>,
    },
    /// `revisions warm`; `failed_checks` are checks the edge or the
    /// deployer ran and that failed (a bundle without a runtime section,
    /// say). Any failed check persists the revision as `failed`.
    RevisionWarm {
        answers: RevisionAnswers,
        failed_checks: Vec<FailedCheck>,
    },
    RevisionDrain(RevisionAnswers),
    RevisionArchive(RevisionAnswers),
    TrafficSet(TrafficSetAnswers),
    TrafficRollback(DeploymentAnswers),
    TrafficClear(DeploymentAnswers),
    /// The runtime's outcome for a revision it warmed or drained.
    RevisionReport(RuntimeReport),
    /// Where the cluster leader placed each revision's instances.
    RevisionPlace(PlacementAnswers),
    RolloutStart(RolloutStartAnswers),
    /// A person's `rollouts pause|resume|promote|abort`.
    RolloutAct {
        action: crate::rollout::PersonAction,
        answers: RolloutActionAnswers,
    },
    /// The rollout controller's decision, audited as `rollout:<deployment>`.
    RolloutDecide(RolloutDecisionAnswers),
    /// A person's `revisions scale`.
    RevisionScale(RevisionScaleAnswers),
    /// The autoscaler's decision, audited as `autoscaler:<revision>`.
    ScaleDecide(ScaleDecisionAnswers),
}

impl Command {
    /// `revisions warm` with no failed checks from outside `apply`.
    pub fn warm(answers: RevisionAnswers) -> Self {
        Command::RevisionWarm {
            answers,
            failed_checks: Vec::new(),
        }
    }

    /// The CLI noun of the command.
    pub fn noun(&self) -> &'static str {
        match self {
            Command::EnvInit { .. }
            | Command::EnvCreate(_)
            | Command::EnvDestroy(_)
            | Command::EnvRestore { .. }
            | Command::EnvMergeBindings { .. } => "env",
            Command::EnvUpdate(_) => "env",
            Command::PackAdd(_)
            | Command::PackUpdate(_)
            | Command::PackRemove(_)
            | Command::PackRollback(_) => "env-packs",
            Command::BundleAdd(_) | Command::BundleUpdate(_) | Command::BundleRemove(_) => {
                "bundles"
            }
            Command::RevisionStage { .. }
            | Command::RevisionWarm { .. }
            | Command::RevisionDrain(_)
            | Command::RevisionArchive(_)
            | Command::RevisionReport(_)
            | Command::RevisionPlace(_)
            | Command::RevisionScale(_)
            | Command::ScaleDecide(_) => "revisions",
            Command::TrafficSet(_) | Command::TrafficRollback(_) | Command::TrafficClear(_) => {
                "traffic"
            }
            Command::RolloutStart(_) | Command::RolloutAct { .. } | Command::RolloutDecide(_) => {
                "rollouts"
            }
        }
    }

    /// The CLI verb of the command.
    pub fn verb(&self) -> &'static str {
        match self {
            Command::EnvInit { .. } => "init",
            Command::EnvCreate(_) => "create",
            Command::EnvUpdate(_) => "update",
            Command::EnvDestroy(_) => "destroy",
            Command::EnvRestore { .. } => "restore",
            Command::EnvMergeBindings { .. } => "migrate-dev",
            Command::PackAdd(_) | Command::BundleAdd(_) => "add",
            Command::PackUpdate(_) | Command::BundleUpdate(_) => "update",
            Command::PackRemove(_) | Command::BundleRemove(_) => "remove",
            Command::PackRollback(_) | Command::TrafficRollback(_) => "rollback",
            Command::RevisionStage { .. } => "stage",
            Command::RevisionWarm { .. } => "warm",
            Command::RevisionDrain(_) => "drain",
            Command::RevisionArchive(_) => "archive",
            Command::RevisionReport(_) => "report",
            Command::RevisionPlace(_) => "place",
            Command::TrafficSet(_) => "set",
            Command::TrafficClear(_) => "clear",
            Command::RolloutStart(_) => "start",
            Command::RolloutAct { action, .. } => action.as_str(),
            Command::RolloutDecide(_) => "decide",
            Command::RevisionScale(_) => "scale",
            Command::ScaleDecide(_) => "scale-decide",
        }
    }

    /// The environment the command changes.
    pub fn env_id(&self) -> EnvId {
        match self {
            Command::EnvInit { .. } => EnvId::local(),
            Command::EnvCreate(a) => a.environment_id.clone(),
            Command::EnvUpdate(a) => a.environment_id.clone(),
            Command::EnvDestroy(a) => a.environment_id.clone(),
            Command::EnvRestore { answers, .. } => answers.environment_id.clone(),
            Command::EnvMergeBindings { answers, .. } => answers.environment_id.clone(),
            Command::PackAdd(a) | Command::PackUpdate(a) => a.environment_id.clone(),
            Command::PackRemove(a) | Command::PackRollback(a) => a.environment_id.clone(),
            Command::BundleAdd(a) => a.environment_id.clone(),
            Command::BundleUpdate(a) => a.environment_id.clone(),
            Command::BundleRemove(a) | Command::TrafficRollback(a) | Command::TrafficClear(a) => {
                a.environment_id.clone()
            }
            Command::RevisionStage { answers, .. } => answers.environment_id.clone(),
            Command::RevisionWarm { answers: a, .. }
            | Command::RevisionDrain(a)
            | Command::RevisionArchive(a) => a.environment_id.clone(),
            Command::TrafficSet(a) => a.environment_id.clone(),
            Command::RevisionReport(report) => report.environment_id.clone(),
            Command::RevisionPlace(answers) => answers.environment_id.clone(),
            Command::RolloutStart(a) => a.environment_id.clone(),
            Command::RolloutAct { answers, .. } => answers.environment_id.clone(),
            Command::RolloutDecide(a) => a.environment_id.clone(),
            Command::RevisionScale(a) => a.environment_id.clone(),
            Command::ScaleDecide(a) => a.environment_id.clone(),
        }
    }

    /// The Raft term a leader's own decision (a placement, a rollout
    /// controller's step) was made in; `None` for everything a person asks.
    pub fn decided_in_term(&self) -> Option<u64> {
        match self {
            Command::RevisionPlace(answers) => answers.decided_in_term,
            Command::RolloutDecide(answers) => answers.decided_in_term,
            Command::ScaleDecide(answers) => answers.decided_in_term,
            _ => None,
        }
    }

    /// The idempotency key the operator gave, if any.
    pub fn idempotency_key(&self) -> Option<&str> {
        match self {
            Command::EnvUpdate(a) => a.idempotency_key.as_deref(),
            Command::PackAdd(a) | Command::PackUpdate(a) => a.idempotency_key.as_deref(),
            Command::PackRemove(a) | Command::PackRollback(a) => a.idempotency_key.as_deref(),
            Command::BundleAdd(a) => a.idempotency_key.as_deref(),
            Command::BundleUpdate(a) => a.idempotency_key.as_deref(),
            Command::BundleRemove(a) | Command::TrafficRollback(a) | Command::TrafficClear(a) => {
                a.idempotency_key.as_deref()
            }
            Command::RevisionStage { answers, .. } => answers.idempotency_key.as_deref(),
            Command::RevisionWarm { answers: a, .. }
            | Command::RevisionDrain(a)
            | Command::RevisionArchive(a) => a.idempotency_key.as_deref(),
            Command::TrafficSet(a) => Some(a.idempotency_key.as_str()),
            Command::RolloutStart(a) => Some(a.idempotency_key.as_str()),
            Command::RolloutAct { answers, .. } => answers.idempotency_key.as_deref(),
            Command::RevisionScale(a) => a.idempotency_key.as_deref(),
            Command::EnvInit { .. }
            | Command::EnvCreate(_)
            | Command::EnvDestroy(_)
            | Command::EnvRestore { .. }
            | Command::EnvMergeBindings { .. }
            | Command::RevisionReport(_)
            | Command::RevisionPlace(_)
            | Command::RolloutDecide(_)
            | Command::ScaleDecide(_) => None,
        }
    }

    /// The operator's payload: what the audit event records as the target
    /// and what an idempotent retry must repeat. Extras the edge resolved
    /// (defaults, a verified snapshot, a staged bundle) are left out.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            Command::EnvRestore { answers, .. } => serde_json::to_value(answers),
            Command::EnvInit { answers, .. } => serde_json::to_value(answers),
            Command::RevisionStage { answers, .. } => serde_json::to_value(answers),
            Command::RevisionWarm { answers, .. } => serde_json::to_value(answers),
            Command::EnvMergeBindings {
                answers, source, ..
            } => Ok(serde_json::json!({
                "environment_id": answers.environment_id,
                "source": source,
            })),
            other => serde_json::to_value(other),
        };
        let mut value = value.unwrap_or(serde_json::Value::Null);
        if let Some(map) = value.as_object_mut() {
            map.remove("command");
        }
        value
    }
}

/// Ids minted at the edge for a command, so that `apply` stays deterministic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedIds {
    /// Id of the audit event.
    pub event_id: EventId,
    /// Id for a new object (deployment or revision) if the command makes one.
    pub object_id: ulid::Ulid,
}

/// A command with everything `apply` needs from the outside world.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandEnvelope {
    pub at: Timestamp,
    pub actor: Actor,
    pub authorization: Authorization,
    pub minted: MintedIds,
    pub command: Command,
    /// `If-Match` of a guarded write, checked by `apply` under the store's
    /// serialization; `None` for unguarded commands (the CLI, the actors,
    /// creation). `Some` but empty is refused as `precondition-required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precondition: Option<Precondition>,
    /// The `Idempotency-Key` header. It takes precedence over the payload's
    /// own `idempotency_key` (the admin API makes sure they agree) and gives
    /// an idempotency key to commands whose payload has none (`env create`,
    /// `env restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The `key_id` of the operator key that signed the command, checked at
    /// the edge against the environment's trust root; copied into the
    /// audit event. `None` where no trust root asks for a signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
}

impl CommandEnvelope {
    /// The idempotency key of the request: the envelope's, else the payload's.
    pub fn idempotency_key(&self) -> Option<&str> {
        self.idempotency_key
            .as_deref()
            .or_else(|| self.command.idempotency_key())
    }
}

/// A map of string keys, for JSON results.
pub type JsonMap = BTreeMap<String, serde_json::Value>;
