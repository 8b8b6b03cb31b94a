//! Per-revision pack configuration: plain values plus references that the
//! runtime resolves lazily. Secret values are never embedded.
//!
//! A deployment's `config_overrides` (pack id → key → JSON, the spec's
//! `pack-config-input`) become one [`PackConfig`] per pack when a revision
//! is staged ([`project`]): a string value `secret://…` is a secret ref,
//! `runtime://…` a runtime ref, anything else a plain value. The revision
//! keeps them, so its instances see the configuration it was staged with
//! (a rollback restores it), unless its bundle asks for
//! [`ConfigReload::Signal`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::bundle::ConfigOverrides;
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
    #[error(
        "config_overrides[{pack_id}][{key}] looks like a reference but is not a valid one: {source}"
    )]
    BadRef {
        pack_id: PackId,
        key: String,
        source: RefError,
    },
}

/// How a running revision learns that its configuration changed (the
/// bundle's `runtime.reload`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigReload {
    /// Configuration is part of the revision: it is pinned when the
    /// revision is staged and a change reaches instances only through a new
    /// revision (and a rollback restores the old configuration).
    #[default]
    Revision,
    /// The revision follows its deployment's current configuration: on a
    /// change the node rewrites the instances' pack-config files and sends
    /// them SIGHUP, without a restart.
    Signal,
}

impl ConfigReload {
    /// True for the default, so documents that never asked stay as they were.
    pub fn is_revision(&self) -> bool {
        *self == Self::Revision
    }
}

/// The pack configs of `revision_id` from a deployment's
/// `config_overrides`, one per pack in pack-id order, each validated
/// against `env` (a ref to another environment is refused).
pub fn project(
    overrides: &ConfigOverrides,
    revision_id: RevisionId,
    env: &EnvId,
) -> Result<Vec<PackConfig>, PackConfigError> {
    let mut configs = Vec::with_capacity(overrides.len());
    for (pack_id, values) in overrides {
        let mut config = PackConfig {
            schema: PACK_CONFIG_SCHEMA.to_owned(),
            pack_id: pack_id.clone(),
            revision_id,
            non_secret: BTreeMap::new(),
            secret_refs: BTreeMap::new(),
            runtime_refs: BTreeMap::new(),
        };
        for (key, value) in values {
            let bad = |source| PackConfigError::BadRef {
                pack_id: pack_id.clone(),
                key: key.clone(),
                source,
            };
            // URI schemes are case-insensitive: `Secret://…` is a ref the
            // operator mistyped, refused, never a plain value delivered.
            let scheme = value
                .as_str()
                .and_then(|text| text.split_once("://"))
                .map(|(scheme, _)| scheme.to_ascii_lowercase());
            match (scheme.as_deref(), value.as_str()) {
                (Some("secret"), Some(text)) => {
                    let reference = text.parse::<SecretRef>().map_err(bad)?;
                    config.secret_refs.insert(key.clone(), reference);
                }
                (Some("runtime"), Some(text)) => {
                    let reference = text.parse::<RuntimeRef>().map_err(bad)?;
                    config.runtime_refs.insert(key.clone(), reference);
                }
                _ => {
                    config.non_secret.insert(key.clone(), value.clone());
                }
            }
        }
        config.validate(env)?;
        configs.push(config);
    }
    Ok(configs)
}

/// The file a pack config is written to, inside the folder an instance is
/// given (`<pack>.pack.json`, as in the spec's store layout).
pub fn file_name(pack_id: &PackId) -> String {
    format!("{pack_id}.pack.json")
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
    fn overrides_project_to_one_config_per_pack_with_refs_split_out() {
        let revision = RevisionId::from_ulid(ulid::Ulid::from_parts(2, 2));
        let overrides: ConfigOverrides = BTreeMap::from([
            (
                "web".parse().expect("pack"),
                BTreeMap::from([
                    ("greeting".to_owned(), serde_json::json!("hello")),
                    ("limit".to_owned(), serde_json::json!(3)),
                    (
                        "token".to_owned(),
                        serde_json::json!("secret://local/web/token"),
                    ),
                    (
                        "peer".to_owned(),
                        serde_json::json!("runtime://local/peer/url"),
                    ),
                ]),
            ),
            ("api".parse().expect("pack"), BTreeMap::new()),
        ]);
        let configs = project(&overrides, revision, &EnvId::local()).expect("projects");
        let packs: Vec<_> = configs.iter().map(|c| c.pack_id.to_string()).collect();
        assert_eq!(packs, ["api", "web"]);
        let web = &configs[1];
        assert_eq!(web.revision_id, revision);
        assert_eq!(web.non_secret.len(), 2);
        assert_eq!(web.secret_refs["token"].path(), "web/token");
        assert_eq!(web.runtime_refs["peer"].path(), "peer/url");
        assert_eq!(file_name(&web.pack_id), "web.pack.json");

        let cross: ConfigOverrides = BTreeMap::from([(
            "web".parse().expect("pack"),
            BTreeMap::from([("t".to_owned(), serde_json::json!("secret://prod/t"))]),
        )]);
        assert!(matches!(
            project(&cross, revision, &EnvId::local()),
            Err(PackConfigError::CrossEnvRef { .. })
        ));
        let bad: ConfigOverrides = BTreeMap::from([(
            "web".parse().expect("pack"),
            BTreeMap::from([("t".to_owned(), serde_json::json!("secret://local/../x"))]),
        )]);
        let error = project(&bad, revision, &EnvId::local()).expect_err("refused");
        assert!(
            error.to_string().contains("config_overrides[web][t]"),
            "{error}"
        );
        for mistyped in ["Secret://local/x", "RUNTIME://local/x", "secret://local/"] {
            let overrides: ConfigOverrides = BTreeMap::from([(
                "web".parse().expect("pack"),
                BTreeMap::from([("t".to_owned(), serde_json::json!(mistyped))]),
            )]);
            assert!(
                matches!(
                    project(&overrides, revision, &EnvId::local()),
                    Err(PackConfigError::BadRef { .. })
                ),
                "{mistyped} was not refused"
            );
        }
        let plain: ConfigOverrides = BTreeMap::from([(
            "web".parse().expect("pack"),
            BTreeMap::from([(
                "url".to_owned(),
                serde_json::json!("https://example.test/a"),
            )]),
        )]);
        let configs = project(&plain, revision, &EnvId::local()).expect("a URL is a value");
        assert_eq!(configs[0].non_secret["url"], "https://example.test/a");
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
