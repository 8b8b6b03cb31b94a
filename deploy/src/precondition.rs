//! Preconditions of guarded writes (`If-Match`), checked by `apply` itself.
//!
//! The check has to happen where the command is applied, under the store's
//! serialization (the environment lock locally, the Raft log in a cluster):
//! a check made before sending would race with every other writer. So the
//! precondition travels inside the [`CommandEnvelope`](crate::command::CommandEnvelope)
//! and [`apply`](crate::apply::apply) compares it with the state it applies to.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::ApplyError;
use crate::state::EnvironmentState;

/// The `If-Match` value that accepts any existing state.
pub const ANY_ETAG: &str = "*";

/// What the caller believes the environment is, for a guarded write.
///
/// An empty precondition (neither field) on a guarded write is refused as
/// `precondition-required`: the caller must say what it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Precondition {
    /// The strong ETag the caller read (unquoted), or `*` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// The generation the caller read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_generation: Option<u64>,
}

impl Precondition {
    /// A precondition on the ETag the caller read.
    pub fn if_match(etag: impl Into<String>) -> Self {
        Self {
            if_match: Some(etag.into()),
            expected_generation: None,
        }
    }

    /// True when the caller stated nothing.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.expected_generation.is_none()
    }

    /// Checks the precondition against the current state: every field given
    /// must hold. The caller has ruled out an empty precondition.
    pub fn check(&self, state: &EnvironmentState) -> Result<(), ApplyError> {
        let actual_etag = state.etag();
        let etag_holds = self
            .if_match
            .as_deref()
            .is_none_or(|etag| etag == ANY_ETAG || etag == actual_etag);
        let generation_holds = self
            .expected_generation
            .is_none_or(|generation| generation == state.generation);
        if etag_holds && generation_holds {
            return Ok(());
        }
        Err(ApplyError::PreconditionFailed {
            expected_etag: self.if_match.clone(),
            actual_etag,
            expected_generation: self.expected_generation,
            actual_generation: state.generation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;
    use crate::ids::EnvId;

    fn state() -> EnvironmentState {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        EnvironmentState::new(Environment::new(EnvId::local(), "Local".to_owned()), at)
    }

    #[test]
    fn the_current_etag_or_a_star_holds_and_another_etag_does_not() {
        let state = state();
        assert_eq!(Precondition::if_match(state.etag()).check(&state), Ok(()));
        assert_eq!(Precondition::if_match(ANY_ETAG).check(&state), Ok(()));
        let stale = Precondition::if_match("0-00");
        match stale.check(&state) {
            Err(ApplyError::PreconditionFailed {
                expected_etag,
                actual_etag,
                actual_generation,
                ..
            }) => {
                assert_eq!(expected_etag.as_deref(), Some("0-00"));
                assert_eq!(actual_etag, state.etag());
                assert_eq!(actual_generation, 1);
            }
            other => panic!("expected a precondition failure, got {other:?}"),
        }
    }

    #[test]
    fn every_stated_field_must_hold() {
        let state = state();
        let both = Precondition {
            if_match: Some(state.etag()),
            expected_generation: Some(2),
        };
        assert!(both.check(&state).is_err());
        let generation = Precondition {
            if_match: None,
            expected_generation: Some(1),
        };
        assert_eq!(generation.check(&state), Ok(()));
    }

    #[test]
    fn a_weak_etag_never_matches() {
        let state = state();
        let weak = Precondition::if_match(format!("W/{}", state.etag()));
        assert!(weak.check(&state).is_err());
    }
}
