//! Changes of the secret store carried by the log (issue 14).
//!
//! A value never enters the log: the member that took a `secrets put` or
//! `rotate` seals it under the environment's data key
//! (`secrets::SecretStore::seal`, with the cluster secrets key every member
//! holds), and the entry carries the sealed version (ciphertext, nonce,
//! metadata and, for an environment's first secret, its wrapped data key).
//! Every replica's state machine commits it alike
//! (`secrets::SecretStore::commit` reads only replicated files, no key),
//! after recording its audit event in the environment's replicated audit
//! log. A change that lost a race with one committed before it (the same
//! version number, idempotency key or first data key) is
//! [`SecretOutcome::Stale`] on every replica and is audited nowhere: the
//! member seals it again. A removal checks, on every replica, that no
//! revision that is not archived pins the version.

use std::io;

use deploy::audit::{AuditEvent, AuditResult};
use deploy::ids::EnvId;
use secrets::{SealedVersion, SecretStore, SecretsError, VersionMeta};
use serde::{Deserialize, Serialize};
use store::{EnvironmentStore, LocalFsStore};

/// One change of a replica's secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretChange {
    /// Store a version the member that took the request sealed.
    Write(Box<SealedVersion>),
    /// Remove an old version of a path, unless a revision that is not
    /// archived pins it (or it is the latest).
    Remove {
        env_id: EnvId,
        path: String,
        version: u32,
    },
}

impl SecretChange {
    /// The environment the change is about.
    pub fn env_id(&self) -> &EnvId {
        match self {
            Self::Write(sealed) => sealed.env_id(),
            Self::Remove { env_id, .. } => env_id,
        }
    }
}

/// What applying a [`SecretChange`] answered, identical on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecretOutcome {
    /// The version was stored.
    Written(VersionMeta),
    /// The version was removed.
    Removed(VersionMeta),
    /// Another change committed first; seal again (nothing was audited).
    Stale { reason: String },
    /// Refused and audited; `code` is the secrets error's stable code.
    Refused {
        code: String,
        kind: String,
        message: String,
        field: Option<String>,
    },
}

/// Applies `change` to the replica of `store`, recording `event` (the
/// template the member made: actor, time, verb, authorization) with the
/// version's reference and number, or with the refusal.
pub(crate) fn apply(
    store: &LocalFsStore,
    change: &SecretChange,
    mut event: AuditEvent,
) -> io::Result<SecretOutcome> {
    let secrets = SecretStore::replica(store.root());
    let env = change.env_id().clone();
    let target = |event: &mut AuditEvent, meta: &VersionMeta| {
        event.target = serde_json::json!({
            "environment_id": env,
            "path": meta.path,
            "reference": meta.reference,
            "version": meta.version,
        });
    };
    let result = match change {
        SecretChange::Write(sealed) => secrets
            .commit(sealed, &mut |meta| {
                let mut event = event.clone();
                target(&mut event, meta);
                store.record(event).map_err(|error| error.to_string())
            })
            .map(SecretOutcome::Written),
        SecretChange::Remove {
            env_id,
            path,
            version,
        } => secrets::path::parse_for_env(path, env_id)
            .map_err(SecretsError::from)
            .and_then(|path| {
                secrets.remove(env_id, &path, *version, &mut |meta| {
                    let state = store.load(env_id).map_err(|error| SecretsError::Audit {
                        reason: format!("reading the environment's revisions: {error}"),
                    })?;
                    secrets::check_unpinned(meta, state.as_ref().map(|s| &s.environment))?;
                    let mut event = event.clone();
                    target(&mut event, meta);
                    store.record(event).map_err(|error| SecretsError::Audit {
                        reason: error.to_string(),
                    })
                })
            })
            .map(SecretOutcome::Removed),
    };
    match result {
        Ok(outcome) => Ok(outcome),
        Err(SecretsError::Stale { reason, .. }) => Ok(SecretOutcome::Stale { reason }),
        // This replica's disk or files failed: no other replica would
        // meet it, so the member stops rather than diverge.
        Err(error) if error.is_local_failure() => Err(io::Error::other(format!(
            "the secret store failed while applying a replicated change: {error}"
        ))),
        Err(error) => {
            event.result = AuditResult::Error {
                kind: error.kind().as_str().to_owned(),
                message: error.to_string(),
            };
            store.record(event).map_err(|audit| {
                io::Error::other(format!("recording a refused secret change: {audit}"))
            })?;
            Ok(SecretOutcome::Refused {
                code: error.code().to_owned(),
                kind: error.kind().as_str().to_owned(),
                message: error.to_string(),
                field: error.field().map(str::to_owned),
            })
        }
    }
}
