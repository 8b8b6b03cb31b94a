//! Store errors.

use std::path::PathBuf;

use deploy::apply::Applied;
use deploy::error::{ApplyError, ErrorKind};
use thiserror::Error;

/// A failure of the store itself (disk, lock, corrupt file).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid environment state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("environment {env} does not exist{}", legacy_dev_hint(env))]
    NotFound { env: String },
    #[error(
        "backup {backup_id} of environment {env} does not exist; list backups with `gtc op env backups {env}`"
    )]
    BackupNotFound { env: String, backup_id: String },
    #[error(
        "backup {path} fails its integrity check: recorded {recorded}, computed {computed}; it was modified or truncated"
    )]
    IntegrityMismatch {
        path: PathBuf,
        recorded: String,
        computed: String,
    },
    #[error("audit log {path}: {reason}")]
    Audit { path: PathBuf, reason: String },
}

impl StoreError {
    /// The stable error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Io { .. } => ErrorKind::Io,
            StoreError::Corrupt { .. } => ErrorKind::Store,
            StoreError::NotFound { .. } | StoreError::BackupNotFound { .. } => ErrorKind::NotFound,
            StoreError::IntegrityMismatch { .. } => ErrorKind::IntegrityMismatch,
            StoreError::Audit { .. } => ErrorKind::Audit,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// Why `submit` did not succeed.
#[derive(Debug, Error)]
pub enum SubmitError {
    /// `apply` refused the command; nothing changed; the refusal is audited.
    #[error(transparent)]
    Refused(ApplyError),
    /// The change was committed, and it is itself a failure (a failed warm
    /// gate persists the revision as `failed`).
    #[error("{error}")]
    CommittedFailure {
        error: ApplyError,
        applied: Box<Applied>,
    },
    /// The audit event could not be written, so nothing was changed
    /// (fail closed).
    #[error("the change was not applied because its audit event could not be written: {0}")]
    AuditFailed(StoreError),
    /// The store failed after the audit event was written; the change was
    /// not applied and the log records that.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The outcome of a command applied by a replicated store, carried back
    /// from the node that applied it: the same facts as the variants above,
    /// in a form that crosses the network.
    #[error("{message}")]
    Replicated {
        kind: ErrorKind,
        message: String,
        /// The payload field the error is about, when there is one.
        field: Option<String>,
        /// Set when the change was committed and is itself a failure.
        applied: Option<Box<Applied>>,
    },
}

impl SubmitError {
    /// The stable error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SubmitError::Refused(error) | SubmitError::CommittedFailure { error, .. } => {
                error.kind()
            }
            SubmitError::AuditFailed(_) => ErrorKind::Audit,
            SubmitError::Store(error) => error.kind(),
            SubmitError::Replicated { kind, .. } => *kind,
        }
    }
}

/// `; <hint>` when `env` is the legacy `dev`, which is not an alias of `local`.
fn legacy_dev_hint(env: &str) -> String {
    env.parse::<deploy::ids::EnvId>()
        .ok()
        .and_then(|env| env.legacy_dev_hint())
        .map(|hint| format!("; {hint}"))
        .unwrap_or_default()
}
