//! Errors as the operator sees them: a stable kind, a message that names
//! what was wrong and how to fix it, and an exit code.

use deploy::error::{ApplyError, ErrorKind};
use serde_json::json;
use store::{StoreError, SubmitError};

// The exit codes; README.md's "Exit codes" table lists the same, and
// tests/exit_codes.rs holds every verb to it.
/// Exit code of a failed verb.
pub const EXIT_FAILURE: i32 = 1;
/// Exit code of a usage error: the command line itself is wrong (a
/// missing flag, a flag the verb does not take), whatever the store
/// holds. clap's own parse errors exit with it too.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a verb that is not implemented yet.
pub const EXIT_NOT_IMPLEMENTED: i32 = 2;
/// Exit code of stored data that failed its integrity check (a secret
/// version whose ciphertext was changed): distinct from an ordinary
/// failure so a script can tell "restore from a known good copy" apart
/// from "fix the request".
pub const EXIT_INTEGRITY: i32 = 3;

/// A failure reported at the binary's edge.
#[derive(Debug, Clone)]
pub struct CliError {
    pub kind: ErrorKind,
    pub message: String,
    /// The payload field the error is about (`entries[1].weight_bps`).
    pub field: Option<String>,
    /// Structured facts (a bundle's leak findings, say).
    pub details: Option<serde_json::Value>,
    /// The command line was wrong, not the payload or the state.
    pub usage: bool,
}

impl CliError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            field: None,
            details: None,
            usage: false,
        }
    }

    /// A usage error: exits with [`EXIT_USAGE`], kind `invalid-argument`.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            ..Self::new(ErrorKind::InvalidArgument, message)
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        if !field.is_empty() && field != "." {
            self.field = Some(field);
        }
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        if self.usage {
            EXIT_USAGE
        } else if self.kind == ErrorKind::NotYetImplemented {
            EXIT_NOT_IMPLEMENTED
        } else if self.kind == ErrorKind::SecretCorrupt {
            EXIT_INTEGRITY
        } else {
            EXIT_FAILURE
        }
    }

    /// The `error` object of the JSON output.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = json!({"kind": self.kind.as_str(), "message": self.message});
        if let Some(field) = &self.field {
            value["field"] = json!(field);
        }
        if let Some(details) = &self.details {
            value["details"] = details.clone();
        }
        value
    }
}

impl From<ApplyError> for CliError {
    fn from(error: ApplyError) -> Self {
        let field = error.field().map(str::to_owned);
        let mut cli = CliError::new(error.kind(), error.to_string());
        cli.field = field;
        cli
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        CliError::new(error.kind(), error.to_string())
    }
}

impl From<SubmitError> for CliError {
    fn from(error: SubmitError) -> Self {
        match error {
            SubmitError::Refused(error) | SubmitError::CommittedFailure { error, .. } => {
                error.into()
            }
            SubmitError::Replicated {
                kind,
                message,
                field,
                ..
            } => {
                let mut cli = CliError::new(kind, message);
                cli.field = field;
                cli
            }
            other => CliError::new(other.kind(), other.to_string()),
        }
    }
}
