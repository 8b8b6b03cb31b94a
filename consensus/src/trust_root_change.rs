//! Changes of an environment's trust root (`<env>/trust-root.json`, the
//! Ed25519 keys allowed to sign its changes) carried by the log.
//!
//! The member that takes `env trust add|remove` builds the whole new
//! document from the trust root its replica holds and sends it with the
//! SHA-256 of that replica's file: every replica writes the document only
//! if its own file still has that digest (compare and set), after recording
//! the audit event, so the file is the same on every member and a change
//! built from an older file is [`TrustRootOutcome::Stale`] everywhere (the
//! member builds it again). The meaning of the document (its keys, who may
//! change it) is the node's; a replica checks only that it is a trust root
//! document of a bounded size.

use std::io;

use deploy::audit::{AuditEvent, AuditResult};
use deploy::ids::EnvId;
use serde::{Deserialize, Serialize};
use store::{EnvironmentStore, LocalFsStore};

/// Largest trust root document a replica writes (256 keys with labels fit
/// many times over).
pub const TRUST_ROOT_BYTES_MAX: usize = 1024 * 1024;
/// The schema a trust root document declares.
const TRUST_ROOT_SCHEMA: &str = "greentic.trust-root.v1";

/// One trust root change: the whole new document, written only over the
/// file it was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustRootChange {
    pub env_id: EnvId,
    /// SHA-256 (hex) of the file the change was built from; `None` when the
    /// environment had no trust root.
    pub previous_sha256: Option<String>,
    /// The new `trust-root.json`, as written.
    pub document: String,
}

/// What applying a [`TrustRootChange`] answered, identical on every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustRootOutcome {
    Written,
    /// The file changed since the change was built (nothing audited).
    Stale {
        reason: String,
    },
    /// Refused and audited.
    Refused {
        kind: String,
        message: String,
    },
}

/// SHA-256 (hex) of a trust root file's bytes.
pub fn trust_root_digest(bytes: &[u8]) -> String {
    deploy::canonical::sha256_hex(bytes)
}

/// The current trust root file of `env` in `store`, if any.
pub(crate) fn read(store: &LocalFsStore, env: &EnvId) -> io::Result<Option<String>> {
    let path = deploy::layout::trust_root(store.root(), env);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Makes `env`'s trust root file `document` (absent when `None`), as a
/// snapshot carries it.
pub(crate) fn install(store: &LocalFsStore, env: &EnvId, document: Option<&str>) -> io::Result<()> {
    let path = deploy::layout::trust_root(store.root(), env);
    match document {
        Some(document) => {
            check(document).map_err(io::Error::other)?;
            store::write_file_atomically(&path, document.as_bytes()).map_err(io::Error::other)
        }
        None => match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(error),
        },
    }
}

/// A document a replica accepts: bounded, JSON, a trust root's schema.
fn check(document: &str) -> Result<(), String> {
    if document.len() > TRUST_ROOT_BYTES_MAX {
        return Err(format!(
            "the trust root document is {} bytes; at most {TRUST_ROOT_BYTES_MAX}",
            document.len()
        ));
    }
    let value: serde_json::Value = serde_json::from_str(document)
        .map_err(|error| format!("the trust root document is not JSON: {error}"))?;
    if value["schema"] != TRUST_ROOT_SCHEMA {
        return Err(format!(
            "the trust root document does not declare schema {TRUST_ROOT_SCHEMA}"
        ));
    }
    Ok(())
}

/// Applies `change` to the replica of `store`, recording `event`.
pub(crate) fn apply(
    store: &LocalFsStore,
    change: &TrustRootChange,
    mut event: AuditEvent,
) -> io::Result<TrustRootOutcome> {
    let env = &change.env_id;
    let refusal = if !store.exists(env) {
        Some((
            deploy::error::ErrorKind::NotFound,
            format!("environment {env} does not exist"),
        ))
    } else {
        check(&change.document)
            .err()
            .map(|message| (deploy::error::ErrorKind::InvalidArgument, message))
    };
    if let Some((kind, message)) = refusal {
        event.result = AuditResult::Error {
            kind: kind.as_str().to_owned(),
            message: message.clone(),
        };
        store.record(event).map_err(io::Error::other)?;
        return Ok(TrustRootOutcome::Refused {
            kind: kind.as_str().to_owned(),
            message,
        });
    }
    let current = read(store, env)?;
    let current_digest = current
        .as_deref()
        .map(|text| trust_root_digest(text.as_bytes()));
    if current_digest != change.previous_sha256 {
        return Ok(TrustRootOutcome::Stale {
            reason: "the trust root changed since this change was built from it".to_owned(),
        });
    }
    store.record(event).map_err(io::Error::other)?;
    let path = deploy::layout::trust_root(store.root(), env);
    store::write_file_atomically(&path, change.document.as_bytes()).map_err(io::Error::other)?;
    Ok(TrustRootOutcome::Written)
}
