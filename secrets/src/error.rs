//! What can go wrong in the secret store. No variant carries a secret
//! value: sizes and paths only.

use std::path::PathBuf;

use thiserror::Error;

use crate::path::RefError;
use crate::value::ValueError;

/// A secret store operation failed; nothing was written.
#[derive(Debug, Error)]
pub enum SecretsError {
    #[error(transparent)]
    Ref(#[from] RefError),
    #[error(transparent)]
    Value(#[from] ValueError),
    #[error("give exactly one of value, value_file{generate}", generate = if *.generate { " or generate" } else { "" })]
    ValueSource { generate: bool },
    #[error("cannot read value_file {path}: {reason}")]
    ValueFile { path: PathBuf, reason: String },
    #[error("no secret {reference}; put one first (`gtc op secrets put`)")]
    NotFound { reference: String },
    #[error(
        "{reference} has no version {version}; its latest is {latest} (`gtc op secrets list` shows which remain)"
    )]
    VersionNotFound {
        reference: String,
        version: u32,
        latest: u32,
    },
    #[error(
        "{reference} version {version} is its latest, which new revisions pin; rotate first, then remove the older version"
    )]
    LatestVersion { reference: String, version: u32 },
    #[error(
        "{reference} version {version} is pinned by revision(s) {revisions}, which are not archived; archive them first (a rollback to them needs this version)"
    )]
    Pinned {
        reference: String,
        version: u32,
        revisions: String,
    },
    #[error(
        "{reference} has {versions} versions, the most the store keeps per path; nothing was written"
    )]
    VersionLimit { reference: String, versions: u32 },
    #[error(
        "idempotency key {key:?} was used for {reference} with a different value; use a new key for a new value"
    )]
    IdempotencyConflict { key: String, reference: String },
    #[error(
        "the node key {path} is missing but environment secrets exist that it wrapped; restore the key file (mode 0600) from where it was kept"
    )]
    NodeKeyMissing { path: PathBuf },
    #[error("the node key {path} cannot be read: {reason}")]
    NodeKeyUnreadable { path: PathBuf, reason: String },
    #[error(
        "the node key {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`",
        path = .path.display()
    )]
    NodeKeyPermissions { path: PathBuf, mode: u32 },
    #[error(
        "the data key of environment {env} cannot be opened with this node key ({path}): the key file is not the one that wrapped it, or the data key file was changed"
    )]
    DataKeyUnwrap { env: String, path: PathBuf },
    #[error(
        "{reference} version {version} failed its integrity check ({file}): the stored ciphertext or its metadata was changed; nothing of it is returned"
    )]
    Corrupt {
        reference: String,
        version: u32,
        file: PathBuf,
    },
    #[error("the secret store file {path} is not valid: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit event could not be written, so nothing was stored: {reason}")]
    Audit { reason: String },
}

impl SecretsError {
    pub(crate) fn io<'a>(
        action: &'static str,
        path: &'a std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Self + 'a {
        move |source| SecretsError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}
