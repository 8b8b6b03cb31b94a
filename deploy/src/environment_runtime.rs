//! `runtime.json`: what the deployer found when it last applied the
//! environment (spec §2.3, `greentic.environment-runtime.v1`). A node's
//! deployer writes it after each apply and removes it when it stops, so the
//! file exists exactly while something serves the environment.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::descriptor::PackDescriptor;
use crate::ids::EnvId;

/// Schema discriminator of `runtime.json`.
pub const ENVIRONMENT_RUNTIME_SCHEMA: &str = "greentic.environment-runtime.v1";

/// File name of the runtime document in an environment's folder.
pub const ENVIRONMENT_RUNTIME_FILE: &str = "runtime.json";

/// The runtime document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentRuntime {
    pub schema: String,
    pub environment_id: EnvId,
    /// What the deployer observed, by key (e.g. `node`, `revisions`).
    pub discovered: BTreeMap<String, serde_json::Value>,
    pub generated_at: Timestamp,
    /// The deployer env-pack that wrote it.
    pub generated_by: PackDescriptor,
    /// The committed generation it was written for.
    pub generation: u64,
}
