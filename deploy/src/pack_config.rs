//! Per-revision pack configuration: plain values plus references that the
//! runtime resolves lazily. Secret values are never embedded.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ids::{EnvId, PackId, RevisionId};
use crate::refs::{RefError, RuntimeRef, SecretRef};

/// Schema discriminator of a pack config.
pub const PACK_CONFIG_SCHEMA: &str = "greentic.pack-config.v1";

/// Configuration of one pack in one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PackConfig {
    pub schema: String,
    pub pack_id: PackId,
    pub revision_id: RevisionId,
    #[serde(default)]
    pub non_secret: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub secret_refs: BTreeMap<String, SecretRef>,
    #[serde(default)]
    pub runtime_refs: BTreeMap<String, RuntimeRef>,
}

/// Why a pack config was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PackConfigError {
    #[error("pack config schema is {found:?}; expected {PACK_CONFIG_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("key {key:?} is set both as a plain value and as a reference; keep one")]
    KeyInTwoPlaces { key: String },
    #[error("{field}[{key}]: {source}")]
    CrossEnvRef {
        field: &'static str,
        key: String,
        source: RefError,
    },
}

impl PackConfig {
    /// Checks the schema, that no key is set twice, and that every ref is
    /// scoped to `env`.
    pub fn validate(&self, env: &EnvId) -> Result<(), PackConfigError> {
        if self.schema != PACK_CONFIG_SCHEMA {
            return Err(PackConfigError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        for key in self.secret_refs.keys().chain(self.runtime_refs.keys()) {
            let places = usize::from(self.non_secret.contains_key(key))
                + usize::from(self.secret_refs.contains_key(key))
                + usize::from(self.runtime_refs.contains_key(key));
            if places > 1 {
                return Err(PackConfigError::KeyInTwoPlaces { key: key.clone() });
            }
        }
        for (key, reference) in &self.secret_refs {
            reference
                .check_scope(env)
                .map_err(|source| PackConfigError::CrossEnvRef {
                    field: "secret_refs",
                    key: key.clone(),
                    source,
                })?;
        }
        for (key, reference) in &self.runtime_refs {
            reference
                .check_scope(env)
                .map_err(|source| PackConfigError::CrossEnvRef {
                    field: "runtime_refs",
                    key: key.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PackConfig {
        PackConfig {
            schema: PACK_CONFIG_SCHEMA.into(),
            pack_id: "app".parse().expect("pack"),
            revision_id: RevisionId::from_ulid(ulid::Ulid::from_parts(1, 1)),
            non_secret: BTreeMap::from([("greeting".to_owned(), serde_json::json!("hi"))]),
            secret_refs: BTreeMap::from([(
                "token".to_owned(),
                "secret://local/app/token".parse().expect("ref"),
            )]),
            runtime_refs: BTreeMap::from([(
                "url".to_owned(),
                "runtime://local/discovered/url".parse().expect("ref"),
            )]),
        }
    }

    #[test]
    fn pack_configs_validate_schema_scope_and_key_uniqueness() {
        let local = EnvId::local();
        assert!(config().validate(&local).is_ok());
        assert!(matches!(
            config().validate(&"prod".parse().expect("env")),
            Err(PackConfigError::CrossEnvRef {
                field: "secret_refs",
                ..
            })
        ));
        let mut twice = config();
        twice
            .non_secret
            .insert("token".into(), serde_json::json!("plain"));
        assert_eq!(
            twice.validate(&local),
            Err(PackConfigError::KeyInTwoPlaces {
                key: "token".into()
            })
        );
        let mut schema = config();
        schema.schema = "x".into();
        assert!(matches!(
            schema.validate(&local),
            Err(PackConfigError::SchemaMismatch { .. })
        ));
    }
}
