//! The replicated state machine: the local file store, fed by the Raft log.
//!
//! Every node applies the same entries in the same order with the same
//! `LocalFsStore::submit` the embedded default uses, so each replica is an
//! ordinary store folder (state files, hash-chained audit logs) that every
//! read-only tool can open. Envelopes carry their time, ids and
//! authorization, so applying is deterministic and the audit chains of all
//! replicas are identical.
//!
//! Exactly-once: the applied log id is persisted after every entry. A crash
//! between the store's commit and that write leaves one entry applied but
//! not recorded; on the first entry after a restart the store's last audit
//! event is compared with the entry's event id to skip it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};
use store::{EnvironmentStore, LocalFsStore, StoreImage};

use crate::outcome::Outcome;
use crate::types::{
    ClusterRequest, ClusterResponse, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

const APPLIED_FILE: &str = "raft-applied.json";
/// Outcomes remembered by event id, so a write retried after an ambiguous
/// failure (the leader died while answering) is answered, not applied
/// twice. Every replica applies the same entries, so every replica holds
/// the same window; it covers far more writes than can be in flight.
pub const RECENT_OUTCOMES_MAX: usize = 4096;
const SNAPSHOT_FILE: &str = "raft-snapshot.json";

/// What the state machine has applied, persisted beside the store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

/// A snapshot as written to disk and sent to peers.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    /// JSON of the [`StoreImage`].
    image_json: Vec<u8>,
}

struct Inner {
    store: LocalFsStore,
    dir: PathBuf,
    /// Held while an entry is applied and while a snapshot reads the store,
    /// so a snapshot's image and its last log id always match.
    applied: Mutex<AppliedMeta>,
    /// True until the first entry after opening has been applied.
    check_duplicate: AtomicBool,
    snapshots_built: AtomicU64,
    /// The last [`RECENT_OUTCOMES_MAX`] outcomes by event id.
    recent: Mutex<RecentOutcomes>,
    /// The last applied index, for whoever must react to a new committed
    /// state at once (the node's routers) instead of polling.
    applied_tx: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct RecentOutcomes {
    order: std::collections::VecDeque<String>,
    by_event: std::collections::HashMap<String, Outcome>,
}

impl RecentOutcomes {
    fn get(&self, event_id: &str) -> Option<Outcome> {
        self.by_event.get(event_id).cloned()
    }

    fn remember(&mut self, event_id: String, outcome: &Outcome) {
        if self
            .by_event
            .insert(event_id.clone(), outcome.clone())
            .is_none()
        {
            self.order.push_back(event_id);
        }
        while self.order.len() > RECENT_OUTCOMES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.by_event.remove(&oldest);
            }
        }
    }
}

/// The state machine handle; clones share one store.
#[derive(Clone)]
pub struct StateMachine {
    inner: Arc<Inner>,
}

fn to_io(error: impl std::fmt::Display) -> io::Error {
    io::Error::other(error.to_string())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    store::write_file_atomically(path, bytes).map_err(to_io)
}

impl StateMachine {
    /// Opens the replica whose store lives in `store_root` and whose Raft
    /// bookkeeping lives in `dir`.
    pub fn open(store_root: &Path, dir: &Path) -> io::Result<Self> {
        let store = LocalFsStore::open(store_root).map_err(to_io)?;
        std::fs::create_dir_all(dir)?;
        let applied = match std::fs::read(dir.join(APPLIED_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(to_io)?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => AppliedMeta::default(),
            Err(error) => return Err(error),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                dir: dir.to_owned(),
                applied: Mutex::new(applied),
                check_duplicate: AtomicBool::new(true),
                snapshots_built: AtomicU64::new(0),
                recent: Mutex::new(RecentOutcomes::default()),
                applied_tx: tokio::sync::watch::channel(0).0,
            }),
        })
    }

    /// The replica's store (read it; never submit to it directly).
    pub fn store(&self) -> &LocalFsStore {
        &self.inner.store
    }

    /// The last applied log index.
    pub fn applied_index(&self) -> Option<u64> {
        self.lock().ok()?.last_applied.as_ref().map(|id| id.index())
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, AppliedMeta>> {
        self.inner
            .applied
            .lock()
            .map_err(|_| io::Error::other("the state machine lock is poisoned"))
    }

    fn persist(&self, meta: &AppliedMeta) -> io::Result<()> {
        let bytes = serde_json::to_vec(meta).map_err(to_io)?;
        write_atomically(&self.inner.dir.join(APPLIED_FILE), &bytes)
    }

    /// Whether the store's last event for `env` is `event_id`, i.e. the
    /// entry was applied before a crash lost its bookkeeping.
    fn already_applied(&self, env: &EnvId, event_id: &str) -> bool {
        let log = match self.inner.store.load(env) {
            Ok(Some(_)) => self.inner.store.audit_log(env),
            _ => self.inner.store.root_audit_log(),
        };
        matches!(log.last_event(), Ok(Some(event)) if event.event_id.to_string() == event_id)
    }

    fn apply_request(&self, request: ClusterRequest) -> io::Result<Outcome> {
        let event_id = match &request {
            ClusterRequest::Submit { envelope_json } => {
                serde_json::from_str::<CommandEnvelope>(envelope_json)
                    .map(|e| e.minted.event_id.to_string())
            }
            ClusterRequest::Record { event_json } => {
                serde_json::from_str::<AuditEvent>(event_json).map(|e| e.event_id.to_string())
            }
        }
        .map_err(to_io)?;
        if let Some(outcome) = self.recent()?.get(&event_id) {
            return Ok(outcome);
        }
        let outcome = self.apply_new_request(request)?;
        self.recent()?.remember(event_id, &outcome);
        Ok(outcome)
    }

    fn recent(&self) -> io::Result<MutexGuard<'_, RecentOutcomes>> {
        self.inner
            .recent
            .lock()
            .map_err(|_| io::Error::other("the outcome window lock is poisoned"))
    }

    fn apply_new_request(&self, request: ClusterRequest) -> io::Result<Outcome> {
        let check = self.inner.check_duplicate.swap(false, Ordering::SeqCst);
        match request {
            ClusterRequest::Submit { envelope_json } => {
                let envelope: CommandEnvelope =
                    serde_json::from_str(&envelope_json).map_err(to_io)?;
                let env = envelope.command.env_id();
                if check && self.already_applied(&env, &envelope.minted.event_id.to_string()) {
                    return Ok(Outcome::AlreadyApplied);
                }
                Outcome::from_submit(self.inner.store.submit(&envelope)).map_err(to_io)
            }
            ClusterRequest::Record { event_json } => {
                let event: AuditEvent = serde_json::from_str(&event_json).map_err(to_io)?;
                if check
                    && let Ok(env) = event.env_id.parse::<EnvId>()
                    && self.already_applied(&env, &event.event_id.to_string())
                {
                    return Ok(Outcome::AlreadyApplied);
                }
                self.inner.store.record(event).map_err(to_io)?;
                Ok(Outcome::Recorded)
            }
        }
    }

    fn snapshot_path(&self) -> PathBuf {
        self.inner.dir.join(SNAPSHOT_FILE)
    }

    fn read_snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        match std::fs::read(self.snapshot_path()) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(to_io),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Changes each time an entry (or a snapshot) has been applied.
    pub fn watch_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    /// Snapshots built by this node since it started.
    pub fn snapshots_built(&self) -> u64 {
        self.inner.snapshots_built.load(Ordering::Relaxed)
    }
}

fn outcome_response(outcome: &Outcome) -> io::Result<ClusterResponse> {
    Ok(ClusterResponse::Outcome {
        outcome_json: serde_json::to_string(outcome).map_err(to_io)?,
    })
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (meta, image) = {
            let applied = self.lock()?;
            let image = self.inner.store.image().map_err(to_io)?;
            (applied.clone(), image)
        };
        self.inner.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let snapshot_meta = SnapshotMeta {
            last_log_id: meta.last_applied,
            last_membership: meta.membership.clone(),
        };
        let image_json = serde_json::to_vec(&image).map_err(to_io)?;
        let file = SnapshotFile {
            meta: snapshot_meta.clone(),
            image_json,
        };
        let bytes = serde_json::to_vec(&file).map_err(to_io)?;
        write_atomically(&self.snapshot_path(), &bytes)?;
        metrics::counter!("gtc_raft_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: bytes,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let applied = self.lock()?;
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id;
            let mut applied = self.lock()?.clone();
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(request) => self.apply_request(request)?,
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(log_id), membership);
                    Outcome::Nothing
                }
            };
            applied.last_applied = Some(log_id);
            self.persist(&applied)?;
            *self.lock()? = applied;
            self.inner.applied_tx.send_replace(log_id.index());
            if let Some(responder) = responder {
                responder.send(outcome_response(&outcome)?);
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
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let file: SnapshotFile = serde_json::from_slice(&snapshot).map_err(to_io)?;
        let image: StoreImage = serde_json::from_slice(&file.image_json).map_err(to_io)?;
        let mut applied = self.lock()?;
        self.inner.store.install_image(&image).map_err(to_io)?;
        write_atomically(&self.snapshot_path(), &snapshot)?;
        let installed = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.persist(&installed)?;
        *applied = installed;
        drop(applied);
        self.inner
            .applied_tx
            .send_replace(meta.last_log_id.map_or(0, |id| id.index()));
        metrics::counter!("gtc_raft_snapshots_installed_total").increment(1);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(file) = self.read_snapshot_file()? else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&file).map_err(to_io)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: bytes,
        }))
    }
}
