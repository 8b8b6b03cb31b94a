//! Why a command was refused, and the stable error kinds operators and HTTP
//! clients see.

use std::fmt;

use thiserror::Error;

use crate::environment::ValidationError;
use crate::ids::{DeploymentId, RevisionId};
use crate::lifecycle::{Lifecycle, LifecycleVerb};

/// The stable, kebab-case error kinds of the CLI and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A payload value is invalid.
    InvalidArgument,
    /// The HTTP request itself is malformed (a header, the body's JSON, a
    /// path segment), before any payload field is looked at.
    InvalidRequest,
    AnswersParse,
    Spec,
    NotFound,
    AlreadyExists,
    Conflict,
    IdempotencyConflict,
    PreconditionFailed,
    /// A guarded write came without `If-Match` (or an expected generation).
    PreconditionRequired,
    HealthGateFailed,
    IntegrityMismatch,
    /// A bundle archive broke a safety rule or could not be read.
    BundleRefused,
    /// A bundle would carry a secret.
    SecretLeak,
    /// The caller is known and not allowed to do this.
    Unauthorized,
    /// The caller could not be identified (no or unknown bearer token).
    Unauthenticated,
    /// The request body is larger than the admin API reads.
    PayloadTooLarge,
    /// The path exists but not with this method.
    MethodNotAllowed,
    NotYetImplemented,
    /// A stored secret failed its integrity check (changed ciphertext or
    /// binding); nothing of it is returned.
    SecretCorrupt,
    /// The node key that wraps the environment's data key is missing,
    /// unreadable, too open, or not the key that wrapped it.
    SecretKeyUnavailable,
    /// The environment's trust root refused the change: the operator key
    /// is not listed, the signature does not verify, or its date is stale.
    TrustRoot,
    /// A signed change came without a usable operator key (none on this
    /// machine, an unreadable or too-open key file, or none sent).
    OperatorKey,
    Audit,
    Store,
    Io,
    /// A bug or a failure of the server that is not the store's.
    Internal,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 27] = [
        ErrorKind::InvalidArgument,
        ErrorKind::InvalidRequest,
        ErrorKind::AnswersParse,
        ErrorKind::Spec,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::IdempotencyConflict,
        ErrorKind::PreconditionFailed,
        ErrorKind::PreconditionRequired,
        ErrorKind::HealthGateFailed,
        ErrorKind::IntegrityMismatch,
        ErrorKind::BundleRefused,
        ErrorKind::SecretLeak,
        ErrorKind::Unauthorized,
        ErrorKind::Unauthenticated,
        ErrorKind::PayloadTooLarge,
        ErrorKind::MethodNotAllowed,
        ErrorKind::NotYetImplemented,
        ErrorKind::SecretCorrupt,
        ErrorKind::SecretKeyUnavailable,
        ErrorKind::TrustRoot,
        ErrorKind::OperatorKey,
        ErrorKind::Audit,
        ErrorKind::Store,
        ErrorKind::Io,
        ErrorKind::Internal,
    ];

    /// The kind named `text` (as `as_str` writes it), if any.
    pub fn parse(text: &str) -> Option<ErrorKind> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// The kind as it appears in JSON errors and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::InvalidRequest => "invalid-request",
            ErrorKind::AnswersParse => "answers-parse",
            ErrorKind::Spec => "spec",
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::Conflict => "conflict",
            ErrorKind::IdempotencyConflict => "idempotency-conflict",
            ErrorKind::PreconditionFailed => "precondition-failed",
            ErrorKind::PreconditionRequired => "precondition-required",
            ErrorKind::HealthGateFailed => "health-gate-failed",
            ErrorKind::IntegrityMismatch => "integrity-mismatch",
            ErrorKind::BundleRefused => "bundle-refused",
            ErrorKind::SecretLeak => "secret-leak",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PayloadTooLarge => "payload-too-large",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
            ErrorKind::NotYetImplemented => "not-yet-implemented",
            ErrorKind::SecretCorrupt => "secret-corrupt",
            ErrorKind::SecretKeyUnavailable => "secret-key-unavailable",
            ErrorKind::TrustRoot => "trust-root",
            ErrorKind::OperatorKey => "operator-key",
            ErrorKind::Audit => "audit",
            ErrorKind::Store => "store",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }

    /// The HTTP status of the remote-store contract (spec section 6), plus
    /// the statuses of our own kinds.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument
            | ErrorKind::InvalidRequest
            | ErrorKind::AnswersParse
            | ErrorKind::Spec => 400,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Unauthorized | ErrorKind::TrustRoot | ErrorKind::OperatorKey => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::AlreadyExists | ErrorKind::Conflict | ErrorKind::IdempotencyConflict => 409,
            ErrorKind::PreconditionFailed => 412,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::PreconditionRequired => 428,
            ErrorKind::HealthGateFailed
            | ErrorKind::IntegrityMismatch
            | ErrorKind::BundleRefused
            | ErrorKind::SecretLeak => 422,
            ErrorKind::NotYetImplemented => 501,
            ErrorKind::Audit
            | ErrorKind::Store
            | ErrorKind::Io
            | ErrorKind::Internal
            | ErrorKind::SecretCorrupt
            | ErrorKind::SecretKeyUnavailable => 500,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why `apply` refused a command. Nothing was changed, except for
/// [`ApplyError::HealthGateFailed`], which is returned alongside a committed
/// state (the revision is persisted as `failed`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ApplyError {
    #[error("{what} {id} does not exist in environment {env}{hint}")]
    NotFound {
        what: &'static str,
        id: String,
        env: String,
        hint: String,
    },
    #[error("{what} {id} already exists{hint}")]
    AlreadyExists {
        what: &'static str,
        id: String,
        hint: String,
    },
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("the change would leave the environment invalid: {0}")]
    Validation(#[from] ValidationError),
    #[error(
        "cannot {verb} revision {revision_id}: it is {lifecycle}, and {verb} starts only from {accepted}",
        verb = verb.as_str(),
        accepted = list_states(accepted)
    )]
    InvalidTransition {
        revision_id: RevisionId,
        verb: LifecycleVerb,
        lifecycle: Lifecycle,
        accepted: Vec<Lifecycle>,
    },
    #[error(
        "cannot {verb} revision {revision_id}: the traffic split of deployment {deployment_id} still sends it traffic; move its weight to another revision with `gtc op traffic set` first"
    )]
    ActiveTrafficReference {
        verb: &'static str,
        revision_id: RevisionId,
        deployment_id: DeploymentId,
    },
    #[error(
        "warm gate failed for revision {revision_id} ({checks}); it is now failed: {message}",
        checks = failed_checks.join(", ")
    )]
    HealthGateFailed {
        revision_id: RevisionId,
        failed_checks: Vec<String>,
        message: String,
    },
    #[error(
        "idempotency key {key:?} was already used for a different {verb} request; use a new key for a new change"
    )]
    IdempotencyConflict { key: String, verb: String },
    #[error("{message}")]
    Conflict { message: String },
    /// The environment moved on since the caller read it. The facts are
    /// the body of an HTTP 412 (`ConcurrencyConflict` in the contract).
    #[error(
        "the environment changed since it was read: it is at generation {actual_generation} (etag {actual_etag}), not {expected}; re-read it and retry",
        expected = expected_text(expected_etag.as_deref(), *expected_generation)
    )]
    PreconditionFailed {
        expected_etag: Option<String>,
        actual_etag: String,
        expected_generation: Option<u64>,
        actual_generation: u64,
    },
    /// A guarded write carried an empty precondition.
    #[error(
        "{noun} {verb} changes an existing environment and needs a precondition: send If-Match with the etag you last read (or an expected generation)"
    )]
    PreconditionRequired {
        noun: &'static str,
        verb: &'static str,
    },
}

fn expected_text(etag: Option<&str>, generation: Option<u64>) -> String {
    match (etag, generation) {
        (Some(etag), Some(generation)) => {
            format!("the expected etag {etag} at generation {generation}")
        }
        (Some(etag), None) => format!("the expected etag {etag}"),
        (None, Some(generation)) => format!("the expected generation {generation}"),
        (None, None) => "what was expected".to_owned(),
    }
}

fn list_states(states: &[Lifecycle]) -> String {
    states
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

impl ApplyError {
    /// The stable error kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApplyError::NotFound { .. } => ErrorKind::NotFound,
            ApplyError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            ApplyError::InvalidField { .. } => ErrorKind::InvalidArgument,
            ApplyError::Validation(_) => ErrorKind::Spec,
            ApplyError::InvalidTransition { .. }
            | ApplyError::ActiveTrafficReference { .. }
            | ApplyError::Conflict { .. } => ErrorKind::Conflict,
            ApplyError::HealthGateFailed { .. } => ErrorKind::HealthGateFailed,
            ApplyError::IdempotencyConflict { .. } => ErrorKind::IdempotencyConflict,
            ApplyError::PreconditionFailed { .. } => ErrorKind::PreconditionFailed,
            ApplyError::PreconditionRequired { .. } => ErrorKind::PreconditionRequired,
        }
    }

    /// The payload field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ApplyError::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApplyError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn not_found(
        what: &'static str,
        id: impl fmt::Display,
        env: impl fmt::Display,
        hint: &str,
    ) -> Self {
        ApplyError::NotFound {
            what,
            id: id.to_string(),
            env: env.to_string(),
            hint: hint.to_owned(),
        }
    }
}
