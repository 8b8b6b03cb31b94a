//! A store that says when it committed a change: what lets a single node's
//! actors reconcile at once after a command (an autoscaler decision, an
//! operator's command through the admin API) instead of at their next poll.
//! A cluster member has the same signal from its Raft state machine.

use std::sync::Arc;

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use tokio::sync::watch;

use crate::{EnvironmentStore, StoreError, SubmitError, Submitted};

/// Wraps a store; every submit that changed state moves [`Self::changes`].
pub struct Notifying {
    inner: Arc<dyn EnvironmentStore + Send + Sync>,
    changes: watch::Sender<u64>,
}

impl Notifying {
    pub fn new(inner: Arc<dyn EnvironmentStore + Send + Sync>) -> Self {
        Self {
            inner,
            changes: watch::Sender::new(0),
        }
    }

    /// Moves after every committed change (the value counts them).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl EnvironmentStore for Notifying {
    fn list(&self) -> Result<Vec<EnvId>, StoreError> {
        self.inner.list()
    }

    fn load(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreError> {
        self.inner.load(env)
    }

    fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
        let submitted = self.inner.submit(envelope)?;
        if submitted.applied.changed {
            self.changes
                .send_modify(|count| *count = count.wrapping_add(1));
        }
        Ok(submitted)
    }

    fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.inner.record(event)
    }

    fn audit_lines(&self, env: &EnvId) -> Result<Vec<String>, StoreError> {
        self.inner.audit_lines(env)
    }

    fn audit_tail(&self, env: &EnvId, limit: usize) -> Result<Vec<String>, StoreError> {
        self.inner.audit_tail(env, limit)
    }

    fn audit_count(&self, env: &EnvId) -> Result<usize, StoreError> {
        self.inner.audit_count(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalFsStore;
    use deploy::audit::{Actor, Authorization, Decision};
    use deploy::command::{Command, MintedIds};
    use deploy::ids::EventId;

    fn envelope(command: Command) -> CommandEnvelope {
        CommandEnvelope {
            at: chrono::Utc::now(),
            actor: Actor {
                kind: "test".into(),
                user: None,
                uid: None,
            },
            authorization: Authorization {
                decision: Decision::Allow,
                policy: "test".into(),
                reason: "test".into(),
            },
            minted: MintedIds {
                event_id: EventId::from_ulid(ulid::Ulid::new()),
                object_id: ulid::Ulid::new(),
            },
            command,
            precondition: None,
            idempotency_key: None,
            signed_by: None,
        }
    }

    #[test]
    fn a_change_moves_the_signal_and_a_refusal_or_no_op_does_not() {
        let dir = tempfile::tempdir().expect("dir");
        let inner = Arc::new(LocalFsStore::open(dir.path()).expect("store"));
        let store = Notifying::new(inner);
        let changes = store.changes();
        let init = || {
            envelope(Command::EnvInit {
                answers: Default::default(),
                defaults: Vec::new(),
            })
        };
        store.submit(&init()).expect("init");
        assert_eq!(*changes.borrow(), 1, "a change moves it");
        store.submit(&init()).expect("init again changes nothing");
        assert_eq!(*changes.borrow(), 1, "a no-op does not");
        let refused = store.submit(&envelope(Command::EnvDestroy(
            deploy::command::EnvTargetAnswers {
                environment_id: "nowhere".parse().expect("id"),
            },
        )));
        assert!(refused.is_err());
        assert_eq!(*changes.borrow(), 1, "a refusal does not");
    }
}
