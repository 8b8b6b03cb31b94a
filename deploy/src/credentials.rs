//! Deployer credentials: what the deployer env-pack needs and whether it has it.
//! Admin credentials are never stored; only when they were consumed.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::descriptor::PackDescriptor;
use crate::ids::EnvId;
use crate::refs::{RefError, SecretRef};

/// Schema discriminator of a credentials document.
pub const CREDENTIALS_SCHEMA: &str = "greentic.credentials.v1";

/// How credentials were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CredentialsMode {
    /// The operator provided least-privilege credentials.
    Requirements,
    /// They were generated from an admin credential that was then discarded.
    Bootstrap,
}

/// Result of the last validation run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValidationResult {
    Pass,
    Fail,
}

/// The last validation of the provided credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsValidation {
    pub last_run_at: Timestamp,
    pub result: ValidationResult,
    #[serde(default)]
    pub missing_capabilities: Vec<String>,
}

/// What a bootstrap produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBootstrap {
    pub admin_credential_consumed_at: Timestamp,
    pub rules_pack_ref: String,
    pub generated_credentials_ref: SecretRef,
}

/// When the credentials expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsExpiry {
    pub expires_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_at: Option<Timestamp>,
}

/// Deployer credentials of one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub schema: String,
    pub env_id: EnvId,
    pub deployer_kind: PackDescriptor,
    pub mode: CredentialsMode,
    pub provided_credentials_ref: SecretRef,
    pub validation: CredentialsValidation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<CredentialsBootstrap>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<CredentialsExpiry>,
}

/// Why a credentials document was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CredentialsError {
    #[error("credentials schema is {found:?}; expected {CREDENTIALS_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("{field}: {source}")]
    CrossEnvRef {
        field: &'static str,
        source: RefError,
    },
    #[error("expiry.rotate_at is after expiry.expires_at; rotate before the credentials expire")]
    RotateAfterExpiry,
}

impl Credentials {
    /// Checks the schema, that every secret ref stays in this environment,
    /// and that rotation is due before expiry.
    pub fn validate(&self) -> Result<(), CredentialsError> {
        if self.schema != CREDENTIALS_SCHEMA {
            return Err(CredentialsError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        self.provided_credentials_ref
            .check_scope(&self.env_id)
            .map_err(|source| CredentialsError::CrossEnvRef {
                field: "provided_credentials_ref",
                source,
            })?;
        if let Some(bootstrap) = &self.bootstrap {
            bootstrap
                .generated_credentials_ref
                .check_scope(&self.env_id)
                .map_err(|source| CredentialsError::CrossEnvRef {
                    field: "bootstrap.generated_credentials_ref",
                    source,
                })?;
        }
        if let Some(expiry) = &self.expiry
            && expiry
                .rotate_at
                .is_some_and(|rotate| rotate > expiry.expires_at)
        {
            return Err(CredentialsError::RotateAfterExpiry);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            schema: CREDENTIALS_SCHEMA.into(),
            env_id: "prod".parse().expect("env"),
            deployer_kind: "greentic.deployer.k8s@1.0.0".parse().expect("descriptor"),
            mode: CredentialsMode::Bootstrap,
            provided_credentials_ref: "secret://prod/deployer/creds".parse().expect("ref"),
            validation: CredentialsValidation {
                last_run_at: chrono::DateTime::UNIX_EPOCH,
                result: ValidationResult::Pass,
                missing_capabilities: vec![],
            },
            bootstrap: Some(CredentialsBootstrap {
                admin_credential_consumed_at: chrono::DateTime::UNIX_EPOCH,
                rules_pack_ref: "rules/greentic.deployer.k8s".into(),
                generated_credentials_ref: "secret://prod/deployer/generated".parse().expect("ref"),
            }),
            expiry: None,
        }
    }

    #[test]
    fn credentials_validate_scope_schema_and_rotation() {
        assert!(credentials().validate().is_ok());
        let mut wrong_schema = credentials();
        wrong_schema.schema = "greentic.credentials.v0".into();
        assert!(matches!(
            wrong_schema.validate(),
            Err(CredentialsError::SchemaMismatch { .. })
        ));
        let mut cross = credentials();
        cross.provided_credentials_ref = "secret://local/x".parse().expect("ref");
        assert!(matches!(
            cross.validate(),
            Err(CredentialsError::CrossEnvRef {
                field: "provided_credentials_ref",
                ..
            })
        ));
        let mut generated = credentials();
        if let Some(bootstrap) = generated.bootstrap.as_mut() {
            bootstrap.generated_credentials_ref = "secret://other/x".parse().expect("ref");
        }
        assert!(matches!(
            generated.validate(),
            Err(CredentialsError::CrossEnvRef {
                field: "bootstrap.generated_credentials_ref",
                ..
            })
        ));
        let mut late = credentials();
        late.expiry = Some(CredentialsExpiry {
            expires_at: chrono::DateTime::UNIX_EPOCH,
            rotate_at: Some(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(1)),
        });
        assert_eq!(late.validate(), Err(CredentialsError::RotateAfterExpiry));
    }
}
