//! Roles of admin API tokens: who may read or change which environment.
//!
//! The tokens file (`tokens.json` beside the store, mode 0600) holds, for
//! each token, its id, the SHA-256 of the token (never the token itself) and
//! its grants: a role per environment, `*` for every environment. The node
//! answers a request only when the bearer token hashes to an entry, and
//! allows it only when the entry's role on the environment covers what the
//! route needs ([`decide`]). Pure: reading the file and hashing the header
//! belong to the node.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::audit::{Actor, Authorization, Decision};
use crate::ids::EnvId;

/// Schema discriminator of the tokens file.
pub const TOKENS_SCHEMA: &str = "greentic.admin-tokens.v1";

/// The `environment_id` of a grant that covers every environment.
pub const ANY_ENVIRONMENT: &str = "*";

/// The `policy` named in the audit events of token decisions.
pub const TOKEN_POLICY: &str = "admin-tokens";

/// Longest token id: ids appear in every audit event of the token.
const TOKEN_ID_LEN_MAX: usize = 64;

/// Grants per token; a token is for one job, not for a whole fleet.
const GRANTS_PER_TOKEN_MAX: usize = 256;

/// What a token may do on an environment, each role including the one
/// before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only (every `GET`).
    Viewer,
    /// Reads and changes, except destroying or restoring an environment.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// The role as it is written in the tokens file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One grant: this role on this environment (`*` for every environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenGrant {
    pub environment_id: String,
    pub role: Role,
}

/// One token as stored: an id for audit events, and the hash to match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Names the caller in audit events, e.g. `ci-deployer`.
    pub id: String,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    pub grants: Vec<TokenGrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
}

impl TokenEntry {
    /// The strongest role the token has on `env`, if any.
    pub fn role_on(&self, env: &EnvId) -> Option<Role> {
        self.grants
            .iter()
            .filter(|grant| {
                grant.environment_id == ANY_ENVIRONMENT || grant.environment_id == env.as_str()
            })
            .map(|grant| grant.role)
            .max()
    }

    /// The actor of this token in audit events.
    pub fn actor(&self) -> Actor {
        Actor::token(&self.id)
    }
}

/// The tokens file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    pub schema: String,
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// Why a tokens file is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenFileError {
    #[error("schema is {found:?}; expected {TOKENS_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("token id {id:?} is not 1 to {TOKEN_ID_LEN_MAX} letters, digits, '.', '_' or '-'")]
    InvalidId { id: String },
    #[error("token id {id:?} appears twice")]
    DuplicateId { id: String },
    #[error("token {id:?}: sha256 must be 64 lowercase hex digits")]
    InvalidHash { id: String },
    #[error("token {id:?} has the same hash as token {other:?}")]
    DuplicateHash { id: String, other: String },
    #[error(
        "token {id:?}: grant for {environment_id:?} names neither an environment id nor {ANY_ENVIRONMENT:?}"
    )]
    InvalidEnvironment { id: String, environment_id: String },
    #[error("token {id:?} has {count} grants; the limit is {GRANTS_PER_TOKEN_MAX}")]
    TooManyGrants { id: String, count: usize },
}

/// True for a token id as written in audit events.
pub fn valid_token_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= TOKEN_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl TokenFile {
    /// An empty file.
    pub fn new() -> Self {
        Self {
            schema: TOKENS_SCHEMA.to_owned(),
            tokens: Vec::new(),
        }
    }

    /// Checks the whole file; a node refuses to use a file that fails.
    pub fn validate(&self) -> Result<(), TokenFileError> {
        if self.schema != TOKENS_SCHEMA {
            return Err(TokenFileError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        for (index, entry) in self.tokens.iter().enumerate() {
            let id = entry.id.clone();
            if !valid_token_id(&entry.id) {
                return Err(TokenFileError::InvalidId { id });
            }
            let hex = entry.sha256.len() == 64
                && entry
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(TokenFileError::InvalidHash { id });
            }
            if entry.grants.len() > GRANTS_PER_TOKEN_MAX {
                return Err(TokenFileError::TooManyGrants {
                    id,
                    count: entry.grants.len(),
                });
            }
            for grant in &entry.grants {
                if grant.environment_id != ANY_ENVIRONMENT
                    && grant.environment_id.parse::<EnvId>().is_err()
                {
                    return Err(TokenFileError::InvalidEnvironment {
                        id,
                        environment_id: grant.environment_id.clone(),
                    });
                }
            }
            for earlier in &self.tokens[..index] {
                if earlier.id == entry.id {
                    return Err(TokenFileError::DuplicateId { id });
                }
                if earlier.sha256 == entry.sha256 {
                    return Err(TokenFileError::DuplicateHash {
                        id,
                        other: earlier.id.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The entry whose hash is `sha256_hex`, compared in constant time per
    /// entry so the comparison does not tell how much of a hash matched.
    pub fn find(&self, sha256_hex: &str) -> Option<&TokenEntry> {
        self.tokens
            .iter()
            .find(|entry| constant_time_eq(entry.sha256.as_bytes(), sha256_hex.as_bytes()))
    }
}

/// Equality of two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The decision for a caller holding `granted` (its role on `env`, if any)
/// asking for something that needs `required`, described by `action`
/// (`"traffic set"`) for the audit log.
pub fn decide(
    caller: &str,
    granted: Option<Role>,
    required: Role,
    env: &EnvId,
    action: &str,
) -> Authorization {
    match granted {
        Some(role) if role >= required => Authorization {
            decision: Decision::Allow,
            policy: TOKEN_POLICY.to_owned(),
            reason: format!(
                "token {caller} is {role} on environment {env}; {action} needs {required}"
            ),
        },
        Some(role) => Authorization {
            decision: Decision::Deny,
            policy: TOKEN_POLICY.to_owned(),
            reason: format!(
                "token {caller} is {role} on environment {env}, and {action} needs {required}"
            ),
        },
        None => Authorization {
            decision: Decision::Deny,
            policy: TOKEN_POLICY.to_owned(),
            reason: format!("token {caller} has no role on environment {env}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(grants: &[(&str, Role)]) -> TokenEntry {
        TokenEntry {
            id: "ci".into(),
            sha256: "a".repeat(64),
            grants: grants
                .iter()
                .map(|(env, role)| TokenGrant {
                    environment_id: (*env).to_owned(),
                    role: *role,
                })
                .collect(),
            created_at: None,
        }
    }

    #[test]
    fn the_strongest_matching_grant_decides() {
        let entry = entry(&[("*", Role::Viewer), ("prod-eu", Role::Operator)]);
        let prod: EnvId = "prod-eu".parse().expect("env");
        assert_eq!(entry.role_on(&prod), Some(Role::Operator));
        assert_eq!(entry.role_on(&EnvId::local()), Some(Role::Viewer));
        let none = self::entry(&[("prod-eu", Role::Admin)]);
        assert_eq!(none.role_on(&EnvId::local()), None);
    }

    #[test]
    fn roles_include_the_ones_below() {
        let env = EnvId::local();
        let allow = |granted, required| {
            decide("ci", Some(granted), required, &env, "x").decision == Decision::Allow
        };
        assert!(allow(Role::Admin, Role::Operator));
        assert!(allow(Role::Operator, Role::Viewer));
        assert!(!allow(Role::Viewer, Role::Operator));
        assert!(!allow(Role::Operator, Role::Admin));
        assert_eq!(
            decide("ci", None, Role::Viewer, &env, "x").decision,
            Decision::Deny
        );
    }

    #[test]
    fn a_file_with_a_bad_entry_is_refused() {
        let mut file = TokenFile::new();
        file.tokens.push(entry(&[("local", Role::Viewer)]));
        assert_eq!(file.validate(), Ok(()));
        let mut twice = file.clone();
        twice.tokens.push(entry(&[]));
        assert!(matches!(
            twice.validate(),
            Err(TokenFileError::DuplicateId { .. })
        ));
        let mut bad_env = TokenFile::new();
        bad_env.tokens.push(entry(&[("../etc", Role::Viewer)]));
        assert!(matches!(
            bad_env.validate(),
            Err(TokenFileError::InvalidEnvironment { .. })
        ));
        let mut bad_hash = TokenFile::new();
        let mut upper = entry(&[]);
        upper.sha256 = "A".repeat(64);
        bad_hash.tokens.push(upper);
        assert!(matches!(
            bad_hash.validate(),
            Err(TokenFileError::InvalidHash { .. })
        ));
    }

    #[test]
    fn find_matches_the_whole_hash_only() {
        let mut file = TokenFile::new();
        file.tokens.push(entry(&[]));
        assert!(file.find(&"a".repeat(64)).is_some());
        assert!(file.find(&"a".repeat(63)).is_none());
        assert!(file.find(&format!("{}b", "a".repeat(63))).is_none());
    }
}
