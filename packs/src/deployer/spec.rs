//! What a deployer is handed and what it answers: plain data, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use deploy::ids::{DeploymentId, EnvId, RevisionId};
use serde::Serialize;

use super::DeployerError;

/// Weights of a split sum to exactly this (basis points).
pub const SPLIT_TOTAL_BPS: u64 = 10_000;
/// Most instances of one revision a deployer runs on one node; the bundle
/// manifest has the same bound.
pub const INSTANCES_MAX: u32 = 64;

/// Everything a deployer needs about one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevisionSpec {
    pub env_id: EnvId,
    pub deployment_id: DeploymentId,
    pub revision_id: RevisionId,
    /// The extracted bundle.
    pub bundle_root: PathBuf,
    /// Where instance logs go: `instance-<i>.{stdout,stderr}.log`, read by
    /// `gtc` whatever the deployer.
    pub log_dir: PathBuf,
    /// How many instances `warm_revision` starts here; 0 warms the
    /// revision scaled to zero (request-driven autoscaling starts instances
    /// later with `scale_revision`).
    pub instances: u32,
    /// The address instances are reached at (loopback on a single node).
    pub host: IpAddr,
    /// Names this node on what it starts, so a restarted node finds its own.
    pub node_name: String,
    pub runtime: RuntimeSpec,
}

/// How the bundle says it runs (its manifest's runtime section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// argv; `command[0]` is relative to the bundle root (local process)
    /// or a path inside the image (container).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The variable that carries the port to listen on.
    pub port_env: String,
    pub health_path: String,
    pub startup_timeout: Duration,
    pub health_timeout: Duration,
    /// The container image, for deployers that run containers.
    pub image: Option<ContainerImage>,
    /// The revision's pinned secrets, as the node read them for it.
    pub secrets: SecretMaterial,
    /// The folder of the revision's pack-config files the node wrote for
    /// it, given to instances as [`CONFIG_DIR_ENV`]; `None` without any.
    pub config_dir: Option<PathBuf>,
}

/// The variable an instance finds its pack-config files' folder in.
pub const CONFIG_DIR_ENV: &str = "GTC_CONFIG_DIR";
/// Where a container sees that folder (mounted read-only; the node
/// rewrites its files in place on a `reload: signal` change).
pub const CONTAINER_CONFIG_DIR: &str = "/run/config/gtc";

/// The variable an instance finds its secret files' folder in.
pub const SECRETS_DIR_ENV: &str = "GTC_SECRETS_DIR";
/// Where a container sees that folder (mounted read-only).
pub const CONTAINER_SECRETS_DIR: &str = "/run/secrets/gtc";

/// The secret values an instance receives (issue #14): variables, and the
/// folder of 0600 files the node wrote for this revision (given to the
/// instance as [`SECRETS_DIR_ENV`]). Values are `SecretString`s: zeroed on
/// drop, and `Debug` prints names only, so logging a spec leaks nothing.
#[derive(Clone, Default)]
pub struct SecretMaterial {
    /// Variable name and value.
    pub env: Vec<(String, secrecy::SecretString)>,
    /// The folder of the revision's secret files, if it has any.
    pub files_dir: Option<PathBuf>,
}

impl SecretMaterial {
    /// True when there is nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files_dir.is_none()
    }
}

impl std::fmt::Debug for SecretMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretMaterial")
            .field(
                "env",
                &self.env.iter().map(|(name, _)| name).collect::<Vec<_>>(),
            )
            .field("files_dir", &self.files_dir)
            .finish()
    }
}

impl PartialEq for SecretMaterial {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret;
        self.files_dir == other.files_dir
            && self.env.len() == other.env.len()
            && self
                .env
                .iter()
                .zip(&other.env)
                .all(|((a, x), (b, y))| a == b && x.expose_secret() == y.expose_secret())
    }
}

impl Eq for SecretMaterial {}

/// Where a container deployer finds the revision's image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerImage {
    /// An image already on the engine, named by `reference` (a tag or an
    /// id); when `digest` is given the image found must have it. Pinned to
    /// its id at stage time, so retagging later changes no revision.
    OnEngine {
        reference: String,
        digest: Option<String>,
    },
    /// An image archive (`docker save` / OCI layout tar) inside the
    /// bundle, loaded at stage time; its sha256 must be `digest`.
    Archive { path: PathBuf, digest: String },
}

impl RevisionSpec {
    /// The preconditions every deployer checks before any side effect.
    /// `instances` may be 0 (a revision scaled to zero), never above
    /// [`INSTANCES_MAX`].
    pub fn validate(&self) -> Result<(), DeployerError> {
        let invalid = |field: &'static str, message: String| DeployerError::InvalidSpec {
            revision: self.revision_id,
            field,
            message,
        };
        if self.instances > INSTANCES_MAX {
            return Err(invalid(
                "instances",
                format!("{} is outside 0..={INSTANCES_MAX}", self.instances),
            ));
        }
        if self.runtime.command.first().is_none_or(String::is_empty) {
            return Err(invalid(
                "runtime.command",
                "is empty; it must name the program to run".to_owned(),
            ));
        }
        if self.runtime.port_env.is_empty() {
            return Err(invalid("runtime.port_env", "is empty".to_owned()));
        }
        if self.runtime.startup_timeout.is_zero() {
            return Err(invalid("runtime.startup_timeout", "is zero".to_owned()));
        }
        Ok(())
    }
}

/// What staging found and pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StagedRevision {
    pub revision_id: RevisionId,
    /// What will run: the program's path, or the image pinned by digest.
    pub artifact: String,
}

/// One instance slot of a warm revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InstanceSlot {
    pub index: u32,
    /// Where it serves; `None` while it is down (crashed, restarting, stopped).
    pub addr: Option<SocketAddr>,
}

/// The instances of a warm revision as they change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InstanceSet {
    /// One per instance, sorted by index: `0..count` while warm.
    pub slots: Vec<InstanceSlot>,
    /// Unexpected exits since the revision was warmed.
    pub exits_total: u64,
    /// Instances (indexes among `slots`) whose restarts stopped after a
    /// restart storm. An instance a shrink removes leaves this set with its
    /// slot.
    pub gave_up: BTreeSet<u32>,
}

impl InstanceSet {
    /// Addresses of the instances that serve now.
    pub fn ready(&self) -> Vec<SocketAddr> {
        self.slots.iter().filter_map(|slot| slot.addr).collect()
    }
}

/// A warm revision: its instances, updated on every exit, restart and resize.
#[derive(Debug, Clone)]
pub struct WarmRevision {
    pub instances: tokio::sync::watch::Receiver<InstanceSet>,
}

/// A revision's entry in the runtime report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevisionPhase {
    Staged,
    Warm,
    Drained,
}

impl std::fmt::Display for RevisionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Staged => "staged",
            Self::Warm => "warm",
            Self::Drained => "drained",
        })
    }
}

/// One revision in [`RuntimeConfigReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionRuntime {
    pub phase: RevisionPhase,
    pub artifact: String,
    pub instances: Vec<SocketAddr>,
}

/// What a deployer runs, for `runtime.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuntimeConfigReport {
    pub deployer: String,
    pub revisions: BTreeMap<RevisionId, RevisionRuntime>,
    pub split: Vec<SplitEntry>,
}

/// One entry of a traffic split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SplitEntry {
    pub revision_id: RevisionId,
    pub weight_bps: u32,
}

/// A revision as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderInstance {
    /// The provider's id: a pid, a container id.
    pub id: String,
    pub index: Option<u32>,
}

/// Refuses a split whose weights do not sum to [`SPLIT_TOTAL_BPS`] or that
/// names a revision twice. Pure; every deployer calls it first.
pub fn check_split(split: &[SplitEntry]) -> Result<(), DeployerError> {
    let sum_bps: u64 = split.iter().map(|e| u64::from(e.weight_bps)).sum();
    let distinct: BTreeSet<RevisionId> = split.iter().map(|e| e.revision_id).collect();
    if sum_bps != SPLIT_TOTAL_BPS || distinct.len() != split.len() {
        return Err(DeployerError::InvalidSplit {
            sum_bps,
            entries: split.len(),
            distinct_revisions: distinct.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(n: u64, weight_bps: u32) -> SplitEntry {
        SplitEntry {
            revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(n, 1)),
            weight_bps,
        }
    }

    #[test]
    fn a_split_must_sum_to_10000_with_distinct_revisions() {
        // Proves the three refusals and one acceptance of check_split.
        assert!(check_split(&[entry(1, 9000), entry(2, 1000)]).is_ok());
        assert!(matches!(
            check_split(&[entry(1, 9000), entry(2, 999)]),
            Err(DeployerError::InvalidSplit { sum_bps: 9999, .. })
        ));
        assert!(matches!(
            check_split(&[entry(1, 5000), entry(1, 5000)]),
            Err(DeployerError::InvalidSplit { .. })
        ));
        assert!(matches!(
            check_split(&[]),
            Err(DeployerError::InvalidSplit { sum_bps: 0, .. })
        ));
    }

    proptest! {
        #[test]
        fn check_split_accepts_exactly_the_sums_of_10000(weights in proptest::collection::vec(0u32..=20_000, 0..6)) {
            // Proves acceptance iff the weights sum to 10000 (revisions distinct here).
            let split: Vec<SplitEntry> = weights.iter().enumerate().map(|(i, w)| entry(i as u64, *w)).collect();
            let sum: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            prop_assert_eq!(check_split(&split).is_ok(), sum == SPLIT_TOTAL_BPS);
        }
    }
}
