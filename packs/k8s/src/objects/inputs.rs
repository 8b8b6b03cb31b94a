//! What one revision's worker pods receive besides the image, as the other
//! deployers give it to their instances (issue #14):
//! - `gtc-worker-<rev>-config`, a ConfigMap with one `<pack>.pack.json`
//!   key per pack config the revision's instances receive
//!   (`deploy::runtime_config::delivered`), mounted read-only at
//!   `/run/config/gtc` and named by `GTC_CONFIG_DIR`;
//! - `gtc-worker-<rev>-secrets`, a Secret with one key per pinned secret
//!   (`<rev>.env.<NAME>` for a variable, `<rev>.file.<NAME>` for a file),
//!   every value empty in the render. Its annotation maps each key to the
//!   ref and the exact version the revision pinned, which the apply path
//!   reveals and fills, so a worker of an older revision gets the versions
//!   it was staged with, as a local process or container would.
//!
//! Keys carry the revision id so that every key of every Secret in a render
//! is unique: the apply fills values by key.

use std::collections::BTreeMap;

use deploy::environment::Environment;
use deploy::pack_config::file_name;
use deploy::revision::Revision;
use deploy::secret_pins::Delivery;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::RenderError;
use crate::objects::Scope;
use crate::objects::config::CONFIG_MAP_BYTES_MAX;

/// Annotation of a worker's Secret: key → `{"ref", "version"}`, as JSON.
pub const PINS_ANNOTATION: &str = "greentic.ai/secret-pins";
/// Where a worker sees its pack configs.
pub const CONFIG_DIR: &str = "/run/config/gtc";
/// The variable naming [`CONFIG_DIR`].
pub const CONFIG_DIR_ENV: &str = "GTC_CONFIG_DIR";
/// Where a worker sees its secret files.
pub const SECRETS_DIR: &str = "/run/secrets/gtc";
/// The variable naming [`SECRETS_DIR`].
pub const SECRETS_DIR_ENV: &str = "GTC_SECRETS_DIR";

/// One pinned secret as the worker receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedKey {
    /// The key in the worker's Secret.
    pub key: String,
    /// The variable or file name the pod sees.
    pub delivery: PinnedDelivery,
    /// `secret://<env>/<path>`.
    pub reference: String,
    pub version: u32,
}

/// How a pinned secret reaches the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedDelivery {
    Env(String),
    File(String),
}

/// The worker's ConfigMap name.
pub fn config_name(worker: &str) -> String {
    format!("{worker}-config")
}

/// The worker's Secret name.
pub fn secrets_name(worker: &str) -> String {
    format!("{worker}-secrets")
}

/// The pinned secrets of `revision`, each with its key, in pin order.
pub fn pinned_keys(revision: &Revision) -> Vec<PinnedKey> {
    let prefix = revision.revision_id.to_string().to_ascii_lowercase();
    revision
        .secret_pins
        .iter()
        .filter_map(|pin| {
            let (kind, delivery) = match pin.delivery()? {
                Delivery::Env(name) => ("env", PinnedDelivery::Env(name.to_owned())),
                Delivery::File(name) => ("file", PinnedDelivery::File(name.to_owned())),
            };
            let name = match &delivery {
                PinnedDelivery::Env(name) | PinnedDelivery::File(name) => name.clone(),
            };
            Some(PinnedKey {
                key: format!("{prefix}.{kind}.{name}"),
                delivery,
                reference: pin.reference.to_string(),
                version: pin.version,
            })
        })
        .collect()
}

/// Every pinned secret of `revisions` (the active ones), by key: what the
/// apply reveals (ref, version) to fill the workers' Secrets.
pub fn pinned_values_wanted(revisions: &[&Revision]) -> BTreeMap<String, (String, u32)> {
    revisions
        .iter()
        .flat_map(|revision| pinned_keys(revision))
        .map(|pinned| (pinned.key, (pinned.reference, pinned.version)))
        .collect()
}

/// The worker's ConfigMap, or `None` when the revision receives no pack
/// config.
pub fn config_map(
    scope: &Scope,
    environment: &Environment,
    revision: &Revision,
    worker: &str,
    labels: BTreeMap<String, String>,
) -> Result<Option<ConfigMap>, RenderError> {
    let configs = deploy::runtime_config::delivered(environment, revision);
    if configs.is_empty() {
        return Ok(None);
    }
    let name = config_name(worker);
    let mut data = BTreeMap::new();
    let mut bytes = 0;
    for config in &configs {
        let json = serde_json::to_string_pretty(config)
            .map(|json| json + "\n")
            .map_err(|error| RenderError::Serialize {
                object: format!("ConfigMap {name}"),
                message: error.to_string(),
            })?;
        let key = file_name(&config.pack_id);
        bytes += key.len() + json.len();
        data.insert(key, json);
    }
    if bytes > CONFIG_MAP_BYTES_MAX {
        return Err(RenderError::WorkerConfigTooLarge {
            name,
            bytes,
            limit: CONFIG_MAP_BYTES_MAX,
        });
    }
    Ok(Some(ConfigMap {
        metadata: scope.meta(&name, labels),
        data: Some(data),
        ..ConfigMap::default()
    }))
}

/// The worker's Secret of pinned secrets (values empty), or `None` when
/// the revision pins none.
pub fn secrets(
    scope: &Scope,
    revision: &Revision,
    worker: &str,
    labels: BTreeMap<String, String>,
) -> Option<Secret> {
    let pinned = pinned_keys(revision);
    if pinned.is_empty() {
        return None;
    }
    let mut metadata = scope.meta(&secrets_name(worker), labels);
    let pins: BTreeMap<&str, serde_json::Value> = pinned
        .iter()
        .map(|p| {
            (
                p.key.as_str(),
                serde_json::json!({"ref": p.reference, "version": p.version}),
            )
        })
        .collect();
    // A map of strings to JSON always serializes; BTreeMap keeps it sorted.
    let annotation = serde_json::to_string(&pins).unwrap_or_else(|_| "{}".to_owned());
    metadata.annotations = Some(BTreeMap::from([(PINS_ANNOTATION.to_owned(), annotation)]));
    Some(Secret {
        metadata,
        type_: Some("Opaque".to_owned()),
        data: Some(
            pinned
                .iter()
                .map(|p| (p.key.clone(), ByteString(Vec::new())))
                .collect(),
        ),
        ..Secret::default()
    })
}
