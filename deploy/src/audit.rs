//! Audit events and the hash chain that makes the audit log tamper-evident.
//!
//! Every event carries `prev_hash`: the SHA-256 of the canonical JSON of the
//! event before it (64 zeros for the first). Editing, inserting, removing or
//! reordering any event but the last breaks the chain at the next event; the
//! last event of a committed change is anchored by the state's `audit_head`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::canonical::{sha256_hex, to_canonical_json};
use crate::ids::EventId;

/// Schema discriminator of an audit event.
pub const AUDIT_SCHEMA: &str = "greentic.audit.event.v1";

/// `prev_hash` of the first event in a log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who asked for the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `local-user` for the CLI on this machine; `token` for API callers.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
}

impl Actor {
    /// The local operator, as the CLI sees them.
    pub fn local_user(user: Option<String>, uid: Option<u32>) -> Self {
        Self {
            kind: "local-user".to_owned(),
            user,
            uid,
        }
    }

    /// A caller of the admin API, named by its token id.
    pub fn token(id: &str) -> Self {
        Self {
            kind: "token".to_owned(),
            user: Some(id.to_owned()),
            uid: None,
        }
    }

    /// Every name a policy grant may use for this actor: the user name,
    /// and `uid:N` for a local user whose uid is known. Empty when the
    /// actor has neither (only a `*` grant matches it).
    pub fn policy_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.user.iter().cloned().collect();
        if let Some(uid) = self.uid {
            names.push(format!("uid:{uid}"));
        }
        names
    }

    /// A short name for `updated_by` fields.
    pub fn display_name(&self) -> String {
        self.user.clone().unwrap_or_else(|| match self.uid {
            Some(uid) => format!("uid:{uid}"),
            None => self.kind.clone(),
        })
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
}

/// The authorization decision recorded with every event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    pub decision: Decision,
    /// Which policy decided: `local-only` or `policy-file`.
    pub policy: String,
    pub reason: String,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AuditResult {
    Ok,
    Error { kind: String, message: String },
    NotYetImplemented { detail: String },
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditEvent {
    pub schema: String,
    pub event_id: EventId,
    pub ts: Timestamp,
    pub actor: Actor,
    pub env_id: String,
    pub noun: String,
    pub verb: String,
    pub target: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// True when an idempotent request was answered from its first result.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    pub authorization: Authorization,
    pub result: AuditResult,
    /// The `key_id` of the operator key that signed the change, on an
    /// environment with a trust root. Absent otherwise, so events written
    /// before it existed (and unsigned ones) hash exactly as they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<String>,
    /// Hash of the previous event; filled in by the log when appending.
    #[serde(default)]
    pub prev_hash: String,
}

impl AuditEvent {
    /// The hash the next event must carry as `prev_hash`.
    pub fn chain_hash(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        sha256_hex(to_canonical_json(&value).as_bytes())
    }
}

/// The chain hash of one raw log line (any JSON, known fields or not).
pub fn line_hash(line: &str) -> Result<String, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    Ok(sha256_hex(to_canonical_json(&value).as_bytes()))
}

/// Where and how an audit chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainError {
    #[error("audit line {line} is not a valid audit event: {reason}")]
    Unparsable { line: usize, reason: String },
    #[error(
        "audit line {line} has prev_hash {found} but the line before hashes to {expected}; the log was edited, reordered or truncated there"
    )]
    Broken {
        line: usize,
        expected: String,
        found: String,
    },
}

/// Verifies a whole log given as lines (1-based numbers in errors) and
/// returns the hash of the last line, or [`GENESIS_HASH`] for an empty log.
pub fn verify_chain<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<String, ChainError> {
    let mut expected = GENESIS_HASH.to_owned();
    for (index, line) in lines.into_iter().enumerate() {
        let number = index + 1;
        let event: AuditEvent =
            serde_json::from_str(line).map_err(|error| ChainError::Unparsable {
                line: number,
                reason: error.to_string(),
            })?;
        if event.prev_hash != expected {
            return Err(ChainError::Broken {
                line: number,
                expected,
                found: event.prev_hash,
            });
        }
        expected = line_hash(line).map_err(|error| ChainError::Unparsable {
            line: number,
            reason: error.to_string(),
        })?;
    }
    Ok(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u128, prev_hash: String) -> AuditEvent {
        AuditEvent {
            schema: AUDIT_SCHEMA.into(),
            event_id: EventId::from_ulid(ulid::Ulid::from_parts(1, n)),
            ts: chrono::DateTime::UNIX_EPOCH,
            actor: Actor::local_user(Some("ops".into()), Some(1000)),
            env_id: "local".into(),
            noun: "env".into(),
            verb: "create".into(),
            target: serde_json::json!({"n": n as u64}),
            previous_generation: None,
            new_generation: Some(n as u64),
            idempotency_key: None,
            replayed: false,
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "local-only".into(),
                reason: "test".into(),
            },
            result: AuditResult::Ok,
            prev_hash,
            signed_by: None,
        }
    }

    fn chain(count: u128) -> Vec<String> {
        let mut lines = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for n in 0..count {
            let event = event(n, prev);
            prev = event.chain_hash();
            lines.push(serde_json::to_string(&event).expect("serialize"));
        }
        lines
    }

    #[test]
    fn an_intact_chain_verifies_and_every_edit_is_caught() {
        let lines = chain(5);
        assert!(verify_chain(lines.iter().map(String::as_str)).is_ok());

        let mut edited = lines.clone();
        edited[2] = edited[2].replace("\"create\"", "\"update\"");
        assert!(matches!(
            verify_chain(edited.iter().map(String::as_str)),
            Err(ChainError::Broken { line: 4, .. })
        ));

        let mut removed = lines.clone();
        removed.remove(1);
        assert!(matches!(
            verify_chain(removed.iter().map(String::as_str)),
            Err(ChainError::Broken { line: 2, .. })
        ));

        let mut swapped = lines.clone();
        swapped.swap(0, 1);
        assert!(verify_chain(swapped.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn struct_hash_equals_line_hash() {
        let event = event(7, GENESIS_HASH.into());
        let line = serde_json::to_string(&event).expect("serialize");
        assert_eq!(event.chain_hash(), line_hash(&line).expect("hash"));
    }
}
