//! The two ConfigMaps: the traffic splits the router loads, and the
//! environment document (refs only, never a secret value).

use std::collections::BTreeMap;

use deploy::canonical::to_canonical_json;
use deploy::environment::Environment;
use deploy::runtime_config::{RUNTIME_CONFIG_SCHEMA, RuntimeConfig};
use k8s_openapi::api::core::v1::ConfigMap;

use crate::RenderError;
use crate::objects::Scope;

/// The ConfigMap holding the runtime config.
pub const RUNTIME_CONFIG_NAME: &str = "gtc-runtime-config";
/// Its key: the `greentic.runtime-config.v1` document.
pub const RUNTIME_CONFIG_KEY: &str = "runtime-config.json";
/// The ConfigMap holding the environment document.
pub const ENV_STORE_NAME: &str = "gtc-env-store";
/// Its key: the `greentic.environment.v1` document.
pub const ENV_STORE_KEY: &str = "environment.json";
/// Most bytes Kubernetes keeps in one ConfigMap's data (1 MiB).
pub const CONFIG_MAP_BYTES_MAX: usize = 1024 * 1024;

/// `gtc-runtime-config`: every split entry of the environment, in basis
/// points per revision of each deployment (`RuntimeConfig::project`, the
/// same projection a runtime loads; an empty list when nothing has a split).
pub fn runtime_config(scope: &Scope, environment: &Environment) -> Result<ConfigMap, RenderError> {
    let config = RuntimeConfig::project(environment).unwrap_or_else(|| RuntimeConfig {
        schema: RUNTIME_CONFIG_SCHEMA.to_owned(),
        env_id: environment.environment_id.clone(),
        revisions: Vec::new(),
    });
    let json = pretty_json(RUNTIME_CONFIG_NAME, &config)?;
    config_map(scope, RUNTIME_CONFIG_NAME, RUNTIME_CONFIG_KEY, json)
}

/// `gtc-env-store`: the environment document as JSON, keys sorted.
pub fn env_store(scope: &Scope, document: &serde_json::Value) -> Result<ConfigMap, RenderError> {
    // Through the canonical text, so the keys are sorted whether or not some
    // crate in the build turns on serde_json's `preserve_order`.
    let sorted: serde_json::Value =
        serde_json::from_str(&to_canonical_json(document)).map_err(|error| {
            RenderError::Serialize {
                object: format!("ConfigMap {ENV_STORE_NAME}"),
                message: error.to_string(),
            }
        })?;
    let json = pretty_json(ENV_STORE_NAME, &sorted)?;
    config_map(scope, ENV_STORE_NAME, ENV_STORE_KEY, json)
}

fn config_map(
    scope: &Scope,
    name: &'static str,
    key: &str,
    json: String,
) -> Result<ConfigMap, RenderError> {
    if key.len() + json.len() > CONFIG_MAP_BYTES_MAX {
        return Err(RenderError::ConfigMapTooLarge {
            name,
            bytes: key.len() + json.len(),
        });
    }
    Ok(ConfigMap {
        metadata: scope.meta(name, BTreeMap::new()),
        data: Some(BTreeMap::from([(key.to_owned(), json)])),
        ..ConfigMap::default()
    })
}

/// Pretty JSON with a final newline, so the YAML holds it as a readable
/// block. Keys follow the documents' field order, which is fixed.
fn pretty_json(object: &str, value: &impl serde::Serialize) -> Result<String, RenderError> {
    serde_json::to_string_pretty(value)
        .map(|json| json + "\n")
        .map_err(|error| RenderError::Serialize {
            object: format!("ConfigMap {object}"),
            message: error.to_string(),
        })
}
