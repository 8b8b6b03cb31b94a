//! What can go wrong in the secret store. No variant carries a secret
//! value: sizes and paths only.

use std::path::PathBuf;

use deploy::error::ErrorKind;
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
    #[error(
        "this store is a cluster member's replica and has no cluster secrets key ({path}); copy `secrets.key` from the cluster folder (`gtc cluster init` writes ca/secrets.key) into the member's node folder, mode 0600, and restart the member"
    )]
    ClusterKeyMissing { path: PathBuf },
    #[error(
        "the cluster secrets key {source_file} differs from the key this replica's secrets were wrapped with ({path}); a member keeps the key it was started with"
    )]
    ClusterKeyMismatch { source_file: PathBuf, path: PathBuf },
    /// A sealed change lost a race with another change committed first (a
    /// version number, an idempotency key or the environment's first data
    /// key): seal it again against the store as it is now.
    #[error("{reference} changed while this change was sealed ({reason}); nothing was written")]
    Stale { reference: String, reason: String },
    /// A sealed change or a snapshot image from another member is not one
    /// this store would make.
    #[error("the replicated secret change is not valid: {reason}; nothing was written")]
    InvalidChange { reason: String },
}

impl SecretsError {
    /// True when the error comes from this machine's disk or keys rather
    /// than from the request and the replicated files: another replica
    /// applying the same change would not meet it.
    pub fn is_local_failure(&self) -> bool {
        matches!(
            self,
            Self::Io { .. }
                | Self::Audit { .. }
                | Self::Malformed { .. }
                | Self::Corrupt { .. }
                | Self::NodeKeyMissing { .. }
                | Self::NodeKeyUnreadable { .. }
                | Self::NodeKeyPermissions { .. }
                | Self::DataKeyUnwrap { .. }
                | Self::ClusterKeyMissing { .. }
                | Self::ClusterKeyMismatch { .. }
                | Self::ValueFile { .. }
        )
    }

    /// The stable error kind (exit code and HTTP status follow from it).
    pub fn kind(&self) -> ErrorKind {
        self.classify().0
    }

    /// The answers field the error is about, if one.
    pub fn field(&self) -> Option<&'static str> {
        self.classify().1
    }

    /// A short stable code (`details.secrets_error`) tests and scripts match.
    pub fn code(&self) -> &'static str {
        self.classify().2
    }

    fn classify(&self) -> (ErrorKind, Option<&'static str>, &'static str) {
        use crate::path::PathError;
        match self {
            Self::Ref(RefError::CrossEnvRef { .. }) => {
                (ErrorKind::InvalidArgument, Some("path"), "cross-env-ref")
            }
            Self::Ref(RefError::Path(path)) => (
                ErrorKind::InvalidArgument,
                Some("path"),
                match path {
                    PathError::Empty => "empty-path",
                    PathError::TooLong { .. } => "path-too-long",
                    PathError::TooManySegments { .. } => "too-many-segments",
                    PathError::EmptySegment { .. } => "empty-segment",
                    PathError::DotSegment { .. } => "dot-segment",
                    PathError::InvalidChar { .. } => "invalid-char",
                },
            ),
            Self::Ref(_) => (ErrorKind::InvalidArgument, Some("path"), "bad-ref"),
            Self::Value(ValueError::TooLarge { .. }) => {
                (ErrorKind::PayloadTooLarge, Some("value"), "value-too-large")
            }
            Self::Value(ValueError::Empty) => {
                (ErrorKind::InvalidArgument, Some("value"), "empty-value")
            }
            Self::Value(ValueError::GeneratedLength { .. }) => (
                ErrorKind::InvalidArgument,
                Some("generate.length"),
                "generated-length",
            ),
            Self::Value(ValueError::Random { .. }) => (ErrorKind::Internal, None, "random-source"),
            Self::ValueSource { .. } => (ErrorKind::InvalidArgument, None, "value-source"),
            Self::ValueFile { .. } => (ErrorKind::Io, Some("value_file"), "value-file"),
            Self::NotFound { .. } => (ErrorKind::NotFound, Some("path"), "not-found"),
            Self::VersionNotFound { .. } => {
                (ErrorKind::NotFound, Some("version"), "version-not-found")
            }
            Self::VersionLimit { .. } => (ErrorKind::Conflict, None, "version-limit"),
            Self::LatestVersion { .. } => (ErrorKind::Conflict, Some("version"), "latest-version"),
            Self::Pinned { .. } => (ErrorKind::Conflict, Some("version"), "pinned"),
            Self::IdempotencyConflict { .. } => (
                ErrorKind::IdempotencyConflict,
                Some("idempotency_key"),
                "idempotency-conflict",
            ),
            Self::NodeKeyMissing { .. } => {
                (ErrorKind::SecretKeyUnavailable, None, "node-key-missing")
            }
            Self::NodeKeyUnreadable { .. } => {
                (ErrorKind::SecretKeyUnavailable, None, "node-key-unreadable")
            }
            Self::NodeKeyPermissions { .. } => (
                ErrorKind::SecretKeyUnavailable,
                None,
                "node-key-permissions",
            ),
            Self::DataKeyUnwrap { .. } => {
                (ErrorKind::SecretKeyUnavailable, None, "data-key-unwrap")
            }
            Self::ClusterKeyMissing { .. } => {
                (ErrorKind::SecretKeyUnavailable, None, "cluster-key-missing")
            }
            Self::ClusterKeyMismatch { .. } => (
                ErrorKind::SecretKeyUnavailable,
                None,
                "cluster-key-mismatch",
            ),
            Self::Corrupt { .. } => (ErrorKind::SecretCorrupt, None, "corrupt"),
            Self::Malformed { .. } => (ErrorKind::Store, None, "malformed"),
            Self::Io { .. } => (ErrorKind::Io, None, "io"),
            Self::Audit { .. } => (ErrorKind::Audit, None, "audit"),
            Self::Stale { .. } => (ErrorKind::Conflict, None, "stale"),
            Self::InvalidChange { .. } => (ErrorKind::InvalidArgument, None, "invalid-change"),
        }
    }

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
