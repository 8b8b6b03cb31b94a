//! The stored state of one environment: the document plus the bookkeeping
//! that makes changes safe to retry (the generation) and the anchor of the
//! audit chain. The idempotency records that make a retried request answer
//! its first answer are kept beside the state, not in it (see
//! [`IdempotencyRecord`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::Timestamp;
use crate::audit::AuditEvent;
use crate::canonical::{StateIntegrity, canonical_digest, sha256_hex, to_canonical_json};
use crate::environment::{Environment, ValidationError};
use crate::ids::EnvId;

/// Schema discriminator of the stored state.
pub const STATE_SCHEMA: &str = "greentic.environment-state.v1";

/// Idempotency records kept per environment. A retry normally arrives within
/// seconds; 256 records cover hundreds of changes of history. The store
/// keeps them in their own table, one small file each, so their number does
/// not weigh on a change (they once lived in the state document, where a
/// full window made every change rewrite about 400 KiB).
pub const IDEMPOTENCY_RECORDS_MAX: usize = 256;

/// Longest idempotency key accepted, from a header or an answers file: a
/// ULID is 26 characters, a UUID 36. The key is kept in its record and in
/// audit events, so an unbounded one would make every record and audit
/// line as large as the caller liked.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;

/// Hex digits of the digest in an ETag: 128 bits, plenty to tell states of
/// one environment apart while keeping the header short.
const ETAG_DIGEST_HEX_LEN: usize = 32;

/// The first answer to an idempotent request, replayed verbatim on retry.
///
/// `apply` makes it (in [`crate::apply::Applied::record`]) and is given it
/// back when the same key comes again; the store keeps the newest
/// [`IDEMPOTENCY_RECORDS_MAX`] per environment beside the state, written
/// before the state so that a committed change always has its record, and
/// ignoring a record whose generation the state has not reached (a change
/// that never committed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyRecord {
    pub key: String,
    pub noun: String,
    pub verb: String,
    /// SHA-256 of the canonical JSON of the request payload.
    pub request_fingerprint: String,
    pub response: serde_json::Value,
    pub generation: u64,
    pub stored_at: Timestamp,
    /// The strong ETag of the state the first answer produced, so a replay
    /// answers with the same one. Absent in records written before ETags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The audit event of the first answer (without its chain hash, which
    /// the log adds), replayed verbatim with the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<AuditEvent>,
}

/// Everything stored for one environment, written atomically as one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentState {
    pub schema: String,
    /// +1 on every committed change; the strong ETag is derived from the
    /// whole document, the generation orders changes.
    pub generation: u64,
    pub updated_at: Timestamp,
    /// Chain hash of the audit event of the last committed change. Set by
    /// the store, not by `apply`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<String>,
    pub environment: Environment,
    /// Idempotency records of a state written before they moved to their
    /// own table. Read only: the store moves them into the table at the
    /// environment's next change and never writes them here again.
    #[serde(rename = "idempotency", default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_idempotency: Vec<IdempotencyRecord>,
}

/// Why a stored state is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    #[error("state schema is {found:?}; expected {STATE_SCHEMA:?}")]
    SchemaMismatch { found: String },
    #[error("state of {expected} holds environment {found}")]
    EnvIdMismatch { expected: String, found: String },
    #[error("{count} idempotency records are stored; the limit is {IDEMPOTENCY_RECORDS_MAX}")]
    TooManyIdempotencyRecords { count: usize },
    #[error("idempotency key {key:?} is recorded twice")]
    DuplicateIdempotencyKey { key: String },
    #[error(transparent)]
    Environment(#[from] ValidationError),
}

impl EnvironmentState {
    /// A first state around `environment`, at generation 1.
    pub fn new(environment: Environment, at: Timestamp) -> Self {
        Self {
            schema: STATE_SCHEMA.to_owned(),
            generation: 1,
            updated_at: at,
            audit_head: None,
            environment,
            legacy_idempotency: Vec::new(),
        }
    }

    /// The environment id.
    pub fn env_id(&self) -> &EnvId {
        &self.environment.environment_id
    }

    /// Checks the whole state; `expected` is the environment it is stored as.
    pub fn validate(&self, expected: &EnvId) -> Result<(), StateError> {
        if self.schema != STATE_SCHEMA {
            return Err(StateError::SchemaMismatch {
                found: self.schema.clone(),
            });
        }
        if self.env_id() != expected {
            return Err(StateError::EnvIdMismatch {
                expected: expected.to_string(),
                found: self.env_id().to_string(),
            });
        }
        let records = &self.legacy_idempotency;
        if records.len() > IDEMPOTENCY_RECORDS_MAX {
            return Err(StateError::TooManyIdempotencyRecords {
                count: records.len(),
            });
        }
        for (index, record) in records.iter().enumerate() {
            if records[..index].iter().any(|r| r.key == record.key) {
                return Err(StateError::DuplicateIdempotencyKey {
                    key: record.key.clone(),
                });
            }
        }
        self.environment.validate()?;
        Ok(())
    }

    /// The strong ETag of this committed state: `<generation>-<digest>`,
    /// where the digest is SHA-256 (first 128 bits, hex) of the canonical
    /// JSON of the environment id, generation, commit time and environment.
    ///
    /// It changes on every committed change (the generation does), and it
    /// differs between an environment and a re-created one of the same
    /// generation (the time and content do). It leaves out what `apply`
    /// cannot know or what would make it circular: `audit_head` (set by the
    /// store after `apply`) and the idempotency records (which store the
    /// ETag themselves). So `apply`, a pure function, can compute the ETag
    /// of the state it returns and keep it for idempotent replays.
    pub fn etag(&self) -> String {
        let basis = serde_json::json!({
            "environment_id": self.env_id(),
            "generation": self.generation,
            "updated_at": self.updated_at,
            "environment": self.environment,
        });
        let digest = sha256_hex(to_canonical_json(&basis).as_bytes());
        let short = digest.get(..ETAG_DIGEST_HEX_LEN).unwrap_or(&digest);
        format!("{}-{short}", self.generation)
    }

    /// Integrity digest over the canonical JSON of the whole state (backups
    /// and `env doctor`).
    pub fn integrity(&self) -> StateIntegrity {
        canonical_digest(self).unwrap_or_else(|_| StateIntegrity::sha256(b""))
    }
}
