//! What applying an entry answered, in a form that crosses the network.
//!
//! `store::Submitted` and `store::SubmitError` hold types that are not
//! serializable (`ApplyError` borrows static strings); the leader turns them
//! into an [`Outcome`], the node that asked turns it back.

use deploy::apply::Applied;
use deploy::audit::AuditEvent;
use deploy::error::ErrorKind;
use deploy::state::{EnvironmentState, IdempotencyRecord};
use serde::{Deserialize, Serialize};
use store::{SubmitError, Submitted};

/// The answer of one applied entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command changed (or replayed) the environment.
    Applied(AppliedWire),
    /// The change was committed and is itself a failure (failed warm gate).
    CommittedFailure {
        applied: AppliedWire,
        error: ErrorWire,
    },
    /// `apply` refused the command; nothing but the audit log changed.
    Refused(ErrorWire),
    /// An audit event was recorded.
    Recorded,
    /// A change of the secret store was applied, refused, or found stale.
    Secret(crate::secret_change::SecretOutcome),
    /// A trust root change was written, refused, or found stale.
    TrustRoot(crate::trust_root_change::TrustRootOutcome),
    /// The entry had been applied before this node restarted; its original
    /// answer went to the client that was waiting then.
    AlreadyApplied,
    /// A blank or membership entry: nothing to answer.
    Nothing,
}

/// `deploy::apply::Applied` plus the generation, serializable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedWire {
    pub state: Option<EnvironmentState>,
    pub result: serde_json::Value,
    pub changed: bool,
    pub replayed: bool,
    pub event: Option<AuditEvent>,
    pub generation: Option<u64>,
    /// On a replay, the idempotency record it was answered from (a new
    /// change's record stays with the replicas that store it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<IdempotencyRecord>,
}

/// An error's stable kind, message and field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorWire {
    pub kind: String,
    pub message: String,
    pub field: Option<String>,
}

impl AppliedWire {
    fn without_state(&self) -> Self {
        Self {
            state: None,
            result: self.result.clone(),
            changed: self.changed,
            replayed: self.replayed,
            event: self.event.clone(),
            generation: self.generation,
            record: self.record.clone(),
        }
    }

    fn from_applied(applied: &Applied) -> Self {
        Self {
            state: applied.state.clone(),
            result: applied.result.clone(),
            changed: applied.changed,
            replayed: applied.replayed,
            event: applied.event.clone(),
            generation: applied.state.as_ref().map(|s| s.generation),
            record: applied.record.clone().filter(|_| applied.replayed),
        }
    }

    fn into_applied(self, committed_error: Option<deploy::error::ApplyError>) -> Applied {
        Applied {
            state: self.state,
            result: self.result,
            changed: self.changed,
            replayed: self.replayed,
            event: self.event,
            committed_error,
            record: self.record,
        }
    }
}

/// Why a store outcome could not become an [`Outcome`]: the store itself
/// failed, which no other replica would reproduce.
#[derive(Debug, thiserror::Error)]
#[error("the local store failed while applying a replicated entry: {0}")]
pub struct LocalStoreFailure(pub SubmitError);

impl Outcome {
    /// The same outcome without the environment state it carries (the
    /// generation stays).
    pub fn without_state(&self) -> Self {
        match self {
            Self::Applied(applied) => Self::Applied(applied.without_state()),
            Self::CommittedFailure { applied, error } => Self::CommittedFailure {
                applied: applied.without_state(),
                error: error.clone(),
            },
            other => other.clone(),
        }
    }

    /// The outcome of a store submit, or the local failure that must stop
    /// this replica.
    pub fn from_submit(result: Result<Submitted, SubmitError>) -> Result<Self, LocalStoreFailure> {
        match result {
            Ok(submitted) => Ok(Self::Applied(AppliedWire::from_applied(&submitted.applied))),
            Err(SubmitError::Refused(error)) => Ok(Self::Refused(ErrorWire {
                kind: error.kind().as_str().to_owned(),
                message: error.to_string(),
                field: error.field().map(str::to_owned),
            })),
            Err(SubmitError::CommittedFailure { error, applied }) => Ok(Self::CommittedFailure {
                applied: AppliedWire::from_applied(&applied),
                error: ErrorWire {
                    kind: error.kind().as_str().to_owned(),
                    message: error.to_string(),
                    field: error.field().map(str::to_owned),
                },
            }),
            Err(other) => Err(LocalStoreFailure(other)),
        }
    }

    /// Back into the store's answer, for the caller of `submit`.
    pub fn into_submit(self) -> Result<Submitted, SubmitError> {
        match self {
            Self::Applied(applied) => {
                let generation = applied.generation;
                Ok(Submitted {
                    applied: applied.into_applied(None),
                    generation,
                })
            }
            Self::CommittedFailure { applied, error } => Err(SubmitError::Replicated {
                kind: parse_kind(&error.kind),
                message: error.message,
                field: error.field,
                applied: Some(Box::new(applied.into_applied(None))),
            }),
            Self::Refused(error) => Err(SubmitError::Replicated {
                kind: parse_kind(&error.kind),
                message: error.message,
                field: error.field,
                applied: None,
            }),
            Self::Recorded
            | Self::Secret(_)
            | Self::TrustRoot(_)
            | Self::AlreadyApplied
            | Self::Nothing => Err(SubmitError::Replicated {
                kind: ErrorKind::Store,
                message: "the replicated entry produced no command answer".to_owned(),
                field: None,
                applied: None,
            }),
        }
    }
}

fn parse_kind(kind: &str) -> ErrorKind {
    ErrorKind::parse(kind).unwrap_or(ErrorKind::Store)
}
