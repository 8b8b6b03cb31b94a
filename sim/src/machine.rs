//! A node's state machine in the simulation: every committed entry goes
//! through `deploy::apply::apply`, the same pure function every production
//! store calls, into an in-memory replica of every environment and its
//! hash-chained audit log.
//!
//! The replica is volatile, like a process's memory: a restarted node
//! starts from its disk's last snapshot and openraft replays the log after
//! it. Every applied change is reported to the run's [`ApplyHook`], which
//! is where the invariants look. It must not know about the network.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use consensus::{ClusterRequest, ClusterResponse, NodeId, TypeConfig};
use deploy::audit::{AuditEvent, GENESIS_HASH, line_hash};
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use futures::TryStreamExt;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use crate::disk::{Disk, LogId, SnapshotMeta};

/// The Raft of a simulated node.
pub type SimRaft = openraft::Raft<TypeConfig, Machine>;
type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;

/// What one applied entry did, as the invariants see it.
#[derive(Debug, Clone)]
pub struct AppliedChange {
    pub node: NodeId,
    pub index: u64,
    pub env: EnvId,
    /// The environment after the change (`None`: destroyed or refused
    /// before it existed).
    pub state: Option<EnvironmentState>,
    pub outcome: Answer,
}

/// Called for every entry a node applies and for every environment of a
/// snapshot it installs (with `index` = the snapshot's last index).
pub type ApplyHook = Arc<dyn Fn(AppliedChange) + Send + Sync>;

/// The answer to a write, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub generation: Option<u64>,
    pub replayed: bool,
    pub event_id: Option<String>,
    pub error: Option<String>,
}

/// The replica: environments, their audit lines, and Raft's bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Replica {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub environments: BTreeMap<EnvId, EnvironmentState>,
    pub audit: BTreeMap<EnvId, Vec<String>>,
}

impl Replica {
    /// Applies one command envelope; `None` when the entry is not JSON of
    /// an envelope (which the workload never writes).
    fn submit(&mut self, envelope_json: &str) -> (EnvId, Option<EnvironmentState>, Answer) {
        let envelope: CommandEnvelope = match serde_json::from_str(envelope_json) {
            Ok(envelope) => envelope,
            Err(error) => {
                return (
                    EnvId::local(),
                    None,
                    Answer {
                        ok: false,
                        generation: None,
                        replayed: false,
                        event_id: None,
                        error: Some(format!("not an envelope: {error}")),
                    },
                );
            }
        };
        let env = envelope.command.env_id();
        let current = self.environments.get(&env);
        match deploy::apply::apply(current, &envelope) {
            Ok(applied) => {
                let generation = applied.state.as_ref().map(|s| s.generation);
                let event_id = applied.event.as_ref().map(|e| e.event_id.to_string());
                if let Some(event) = applied.event {
                    self.append_audit(&env, event);
                }
                match &applied.state {
                    Some(state) => {
                        self.environments.insert(env.clone(), state.clone());
                    }
                    None => {
                        self.environments.remove(&env);
                    }
                }
                let answer = Answer {
                    ok: applied.committed_error.is_none(),
                    generation,
                    replayed: applied.replayed,
                    event_id,
                    error: applied.committed_error.map(|e| e.to_string()),
                };
                (env, applied.state, answer)
            }
            Err(error) => {
                let state = self.environments.get(&env).cloned();
                (
                    env,
                    state,
                    Answer {
                        ok: false,
                        generation: None,
                        replayed: false,
                        event_id: None,
                        error: Some(format!("{:?}: {error}", error.kind())),
                    },
                )
            }
        }
    }

    fn append_audit(&mut self, env: &EnvId, mut event: AuditEvent) {
        let lines = self.audit.entry(env.clone()).or_default();
        event.prev_hash = match lines.last() {
            Some(last) => line_hash(last).unwrap_or_default(),
            None => GENESIS_HASH.to_owned(),
        };
        if let Ok(line) = serde_json::to_string(&event) {
            lines.push(line);
        }
    }
}

/// The state machine openraft drives; cheap to clone.
#[derive(Clone)]
pub struct Machine {
    node: NodeId,
    replica: Arc<Mutex<Replica>>,
    disk: Disk,
    hook: ApplyHook,
}

fn to_io(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

impl Machine {
    /// The machine of a node (re)starting on `disk`: its replica is the
    /// disk's last snapshot, or empty.
    pub fn open(node: NodeId, disk: Disk, hook: ApplyHook) -> Self {
        let replica = disk
            .snapshot()
            .and_then(|(_, bytes)| serde_json::from_slice::<Replica>(&bytes).ok())
            .unwrap_or_default();
        Self {
            node,
            replica: Arc::new(Mutex::new(replica)),
            disk,
            hook,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Replica> {
        self.replica
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of the replica as it is now.
    pub fn replica(&self) -> Replica {
        self.lock().clone()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for Machine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let replica = self.replica();
        let meta = SnapshotMeta {
            last_log_id: replica.last_applied,
            last_membership: replica.membership.clone(),
        };
        let bytes = serde_json::to_vec(&replica).map_err(to_io)?;
        self.disk.keep_snapshot(meta.clone(), bytes.clone());
        Ok(Snapshot {
            meta,
            snapshot: bytes,
        })
    }
}

impl RaftStateMachine<TypeConfig> for Machine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let replica = self.lock();
        Ok((replica.last_applied, replica.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let index = log_id.index();
            let mut change = None;
            let answer = {
                let mut replica = self.lock();
                let answer = match entry.payload {
                    EntryPayload::Blank => None,
                    EntryPayload::Membership(membership) => {
                        replica.membership = StoredMembership::new(Some(log_id), membership);
                        None
                    }
                    EntryPayload::Normal(ClusterRequest::Submit { envelope_json }) => {
                        let (env, state, answer) = replica.submit(&envelope_json);
                        change = Some(AppliedChange {
                            node: self.node,
                            index,
                            env,
                            state,
                            outcome: answer.clone(),
                        });
                        Some(answer)
                    }
                    EntryPayload::Normal(ClusterRequest::Record { event_json }) => {
                        if let Ok(event) = serde_json::from_str::<AuditEvent>(&event_json) {
                            let env = EnvId::local();
                            replica.append_audit(&env, event);
                        }
                        None
                    }
                };
                replica.last_applied = Some(log_id);
                answer
            };
            if let Some(change) = change {
                (self.hook)(change);
            }
            if let Some(responder) = responder {
                let json = serde_json::to_string(&answer).map_err(to_io)?;
                responder.send(ClusterResponse::Outcome { outcome_json: json });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Vec<u8>,
    ) -> Result<(), io::Error> {
        let mut replica: Replica = serde_json::from_slice(&snapshot).map_err(to_io)?;
        replica.last_applied = meta.last_log_id;
        replica.membership = meta.last_membership.clone();
        self.disk.keep_snapshot(meta.clone(), snapshot);
        let index = meta.last_log_id.as_ref().map_or(0, |id| id.index());
        let changes: Vec<AppliedChange> = replica
            .environments
            .iter()
            .map(|(env, state)| AppliedChange {
                node: self.node,
                index,
                env: env.clone(),
                state: Some(state.clone()),
                outcome: Answer {
                    ok: true,
                    generation: Some(state.generation),
                    replayed: false,
                    event_id: None,
                    error: None,
                },
            })
            .collect();
        *self.lock() = replica;
        for change in changes {
            (self.hook)(change);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.disk.snapshot().map(|(meta, bytes)| Snapshot {
            meta,
            snapshot: bytes,
        }))
    }
}
