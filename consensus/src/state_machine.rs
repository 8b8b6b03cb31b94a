//! The replicated state machine: the local file store, fed by the Raft log.
//!
//! Every node applies the same entries in the same order with the same
//! `LocalFsStore::submit` the embedded default uses, so each replica is an
//! ordinary store folder (state files, hash-chained audit logs) that every
//! read-only tool can open. Envelopes carry their time, ids and
//! authorization, so applying is deterministic and the audit chains of all
//! replicas are identical.
//!
//! Exactly-once: an entry whose event id is already among the last
//! [`RECENT_OUTCOMES_MAX`] events of the audit log it would be written to
//! is a duplicate and changes nothing. The decision reads only replicated
//! state (the audit logs), so every replica makes the same one, including a
//! replica that restarted or installed a snapshot since the first copy was
//! applied: a write retried after an ambiguous failure (the leader died
//! while answering), and an entry applied again after a crash between the
//! store's commit and the applied-log-id write, are both skipped
//! everywhere. A duplicate is answered from the in-memory recent-outcomes
//! window when this replica still holds the first answer, and as
//! [`Outcome::AlreadyApplied`] otherwise. (Deciding from the in-memory
//! window, as before issue 18, let a restarted or newly joined replica apply
//! a duplicate the others skipped; the simulator running this code found it.)
//!
//! A snapshot is the JSON of the store image with its metadata (see
//! [`SnapshotFile`]); the same bytes are kept on disk and sent to peers.
//!
//! With the feature `simulation` (the simulator's build only) two hooks
//! exist: a crash point between the store's commit and the bookkeeping
//! write, and the planted bug that skips the duplicate check.

use std::io;
use std::path::{Path, PathBuf};
#[cfg(feature = "simulation")]
use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use deploy::audit::AuditEvent;
use deploy::command::CommandEnvelope;
use deploy::ids::EnvId;
use deploy::state::EnvironmentState;
use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use secrets::{SecretStore, SecretsImage};
use serde::{Deserialize, Serialize};
use store::{EnvironmentStore, LocalFsStore, StoreImage};

use crate::outcome::Outcome;
use crate::secret_change::{SecretChange, SecretOutcome};
use crate::trust_root_change::{TrustRootChange, TrustRootOutcome};
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

/// The Raft instance of this cluster's types over this state machine.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// A snapshot as written to disk and sent to peers: the image inline, so
/// the bytes are the image's JSON and little else.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    image: StoreImage,
    /// Each environment's secret store (wrapped data key and version
    /// files: ciphertext only). Absent in snapshots of builds before
    /// secrets were replicated, which held none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SecretsImage>,
    /// Each environment's trust root document, where it has one (absent
    /// in snapshots of builds before trust roots were replicated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    trust_roots: Vec<TrustRootImage>,
}

/// One environment's `trust-root.json` in a snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrustRootImage {
    env_id: EnvId,
    document: String,
}

/// The format before issue 18: the image's JSON as a JSON array of
/// numbers (about 3.5 times larger). Still read, from disk and from peers
/// of an older build; never written.
#[derive(Debug, Deserialize)]
struct LegacySnapshotFile {
    meta: SnapshotMeta,
    image_json: Vec<u8>,
}

fn parse_snapshot(bytes: &[u8]) -> io::Result<SnapshotFile> {
    match serde_json::from_slice::<SnapshotFile>(bytes) {
        Ok(file) => Ok(file),
        Err(error) => match serde_json::from_slice::<LegacySnapshotFile>(bytes) {
            Ok(legacy) => Ok(SnapshotFile {
                meta: legacy.meta,
                image: serde_json::from_slice(&legacy.image_json).map_err(to_io)?,
                secrets: Vec::new(),
                trust_roots: Vec::new(),
            }),
            Err(_) => Err(to_io(error)),
        },
    }
}

/// What one applied entry (or an installed snapshot) left in one
/// environment, for an observer (the simulator's invariants).
#[derive(Debug, Clone)]
pub struct AppliedEntry {
    /// The entry's log index (a snapshot's last index).
    pub index: u64,
    pub env: EnvId,
    /// The environment after the entry (`None`: it does not exist).
    pub state: Option<EnvironmentState>,
    /// What applying answered ([`Outcome::Nothing`] for a snapshot).
    pub outcome: Outcome,
    pub from_snapshot: bool,
}

/// Called after every applied command entry and for every environment of
/// an installed snapshot, once the bookkeeping is durable.
pub type ApplyObserver = Arc<dyn Fn(AppliedEntry) + Send + Sync>;

/// Consulted after the store committed the command of entry `index` and
/// before its log id is recorded: `true` makes the member fail right
/// there, as a process killed between the two writes.
#[cfg(feature = "simulation")]
pub type CrashPoint = Arc<dyn Fn(u64) -> bool + Send + Sync>;

struct Inner {
    store: LocalFsStore,
    dir: PathBuf,
    /// Held while an entry is applied and while a snapshot reads the store,
    /// so a snapshot's image and its last log id always match.
    applied: Mutex<AppliedMeta>,
    /// The event ids at the end of each audit log, read from the log when
    /// first needed and kept up to date as entries are applied: what the
    /// duplicate check decides on.
    applied_ids: Mutex<AppliedIds>,
    /// This replica was opened over an existing one (a restart).
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    reopened: bool,
    snapshots_built: AtomicU64,
    /// The last [`RECENT_OUTCOMES_MAX`] outcomes by event id.
    recent: Mutex<RecentOutcomes>,
    /// The last applied index, for whoever must react to a new committed
    /// state at once (the node's routers) instead of polling.
    applied_tx: tokio::sync::watch::Sender<u64>,
    observer: Mutex<Option<ApplyObserver>>,
    #[cfg(feature = "simulation")]
    crash_point: Mutex<Option<CrashPoint>>,
    #[cfg(feature = "simulation")]
    skip_duplicate_check: AtomicBool,
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

    /// Keeps `outcome` without its environment state: a state is the
    /// whole environment (hundreds of KiB as it grows), and 4096 of them
    /// held a node at gigabytes. A duplicate is answered with the state as
    /// it is then ([`StateMachine::answer_duplicate`]).
    fn remember(&mut self, event_id: String, outcome: &Outcome) {
        if self
            .by_event
            .insert(event_id.clone(), outcome.without_state())
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

/// Which audit log an entry's event is written to: its environment's when
/// the environment exists, else the store's root log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LogKey {
    Env(EnvId),
    Root,
}

/// The last [`RECENT_OUTCOMES_MAX`] event ids of each audit log read so far.
#[derive(Default)]
struct AppliedIds {
    logs: std::collections::HashMap<LogKey, LogIds>,
}

#[derive(Default)]
struct LogIds {
    order: std::collections::VecDeque<String>,
    set: std::collections::HashSet<String>,
}

impl LogIds {
    fn push(&mut self, event_id: String) {
        if self.set.insert(event_id.clone()) {
            self.order.push_back(event_id);
        }
        while self.order.len() > RECENT_OUTCOMES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
    }
}

/// Only the id of an audit line.
#[derive(Deserialize)]
struct EventIdOnly {
    event_id: String,
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
        let applied_file = dir.join(APPLIED_FILE);
        let applied = match std::fs::read(&applied_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| {
                // Unlike the snapshot file, this one cannot be rebuilt: it
                // is what says which entries the replica already holds.
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} does not parse ({error}): it records the last Raft entry this \
                         member applied to its replica, so the member cannot start without \
                         it; restore it from a backup of this folder, or replace the member",
                        applied_file.display()
                    ),
                )
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => AppliedMeta::default(),
            Err(error) => return Err(error),
        };
        let reopened = applied.last_applied.is_some();
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                dir: dir.to_owned(),
                applied: Mutex::new(applied),
                applied_ids: Mutex::new(AppliedIds::default()),
                reopened,
                snapshots_built: AtomicU64::new(0),
                recent: Mutex::new(RecentOutcomes::default()),
                applied_tx: tokio::sync::watch::channel(0).0,
                observer: Mutex::new(None),
                #[cfg(feature = "simulation")]
                crash_point: Mutex::new(None),
                #[cfg(feature = "simulation")]
                skip_duplicate_check: AtomicBool::new(false),
            }),
        })
    }

    /// Reports every applied entry to `observer` from now on.
    pub fn observe(&self, observer: ApplyObserver) {
        if let Ok(mut slot) = self.inner.observer.lock() {
            *slot = Some(observer);
        }
    }

    fn notify(&self, entry: AppliedEntry) {
        let observer = self
            .inner
            .observer
            .lock()
            .ok()
            .and_then(|slot| slot.clone());
        if let Some(observer) = observer {
            observer(entry);
        }
    }

    /// Simulation only: fail between the store's commit and the bookkeeping
    /// write of an entry whenever `point` says so.
    #[cfg(feature = "simulation")]
    pub fn set_crash_point(&self, point: CrashPoint) {
        if let Ok(mut slot) = self.inner.crash_point.lock() {
            *slot = Some(point);
        }
    }

    /// Simulation only: the planted bug that, on a replica opened again after
    /// a restart, applies every entry without checking whether its audit log
    /// already holds it.
    #[cfg(feature = "simulation")]
    pub fn plant_skipped_duplicate_check(&self) {
        self.inner
            .skip_duplicate_check
            .store(true, Ordering::SeqCst);
    }

    #[cfg(feature = "simulation")]
    fn crashes_before_bookkeeping(&self, index: u64) -> bool {
        let point = self
            .inner
            .crash_point
            .lock()
            .ok()
            .and_then(|slot| slot.clone());
        point.is_some_and(|point| point(index))
    }

    #[cfg(not(feature = "simulation"))]
    fn crashes_before_bookkeeping(&self, _index: u64) -> bool {
        false
    }

    fn duplicate_check_planted_away(&self) -> bool {
        #[cfg(feature = "simulation")]
        {
            self.inner.reopened && self.inner.skip_duplicate_check.load(Ordering::SeqCst)
        }
        #[cfg(not(feature = "simulation"))]
        {
            false
        }
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

    /// The audit log an event about `env` is written to now.
    fn log_for(&self, env: Option<&EnvId>) -> (LogKey, store::AuditLog) {
        if let Some(env) = env
            && self.inner.store.exists(env)
        {
            return (LogKey::Env(env.clone()), self.inner.store.audit_log(env));
        }
        (LogKey::Root, self.inner.store.root_audit_log())
    }

    fn applied_ids(&self) -> io::Result<MutexGuard<'_, AppliedIds>> {
        self.inner
            .applied_ids
            .lock()
            .map_err(|_| io::Error::other("the applied-ids lock is poisoned"))
    }

    /// Whether `event_id` is among the last [`RECENT_OUTCOMES_MAX`] events
    /// of the log an event about `env` goes to: a function of the replicated
    /// audit logs only, so every replica decides alike.
    fn seen(&self, env: Option<&EnvId>, event_id: &str) -> io::Result<bool> {
        let (key, log) = self.log_for(env);
        let mut ids = self.applied_ids()?;
        if !ids.logs.contains_key(&key) {
            let mut seeded = LogIds::default();
            for line in log.tail(RECENT_OUTCOMES_MAX).map_err(to_io)? {
                // Every line the store wrote has an id; a line that does not
                // parse cannot be the first copy of anything.
                if let Ok(event) = serde_json::from_str::<EventIdOnly>(&line) {
                    seeded.push(event.event_id);
                }
            }
            ids.logs.insert(key.clone(), seeded);
        }
        Ok(ids
            .logs
            .get(&key)
            .is_some_and(|log| log.set.contains(event_id)))
    }

    /// Keeps the cached ids of the logs an entry about `env` may have
    /// written to in step with them after `event_id` was applied.
    fn note_applied(&self, env: Option<&EnvId>, event_id: &str) -> io::Result<()> {
        let mut ids = self.applied_ids()?;
        let mut keys = vec![LogKey::Root];
        if let Some(env) = env {
            keys.push(LogKey::Env(env.clone()));
        }
        for key in keys {
            if !ids.logs.contains_key(&key) {
                continue;
            }
            let log = match &key {
                LogKey::Env(env) => {
                    if !self.inner.store.exists(env) {
                        // Destroyed (or never created): read again if it returns.
                        ids.logs.remove(&key);
                        continue;
                    }
                    self.inner.store.audit_log(env)
                }
                LogKey::Root => self.inner.store.root_audit_log(),
            };
            match log.last_event() {
                Ok(Some(event)) if event.event_id.to_string() == event_id => {
                    if let Some(cached) = ids.logs.get_mut(&key) {
                        cached.push(event_id.to_owned());
                    }
                }
                Ok(_) => {}
                // Unreadable now: read the tail again when next needed.
                Err(_) => {
                    ids.logs.remove(&key);
                }
            }
        }
        Ok(())
    }

    /// Applies one request of an entry written in Raft term `term`.
    fn apply_request(&self, request: ClusterRequest, term: u64) -> io::Result<Outcome> {
        let (event_id, env, stale) = match &request {
            ClusterRequest::Submit { envelope_json } => {
                serde_json::from_str::<CommandEnvelope>(envelope_json).map(|e| {
                    (
                        e.minted.event_id.to_string(),
                        Some(e.command.env_id()),
                        stale_decision(&e.command, term),
                    )
                })
            }
            ClusterRequest::Record { event_json }
            | ClusterRequest::Secret { event_json, .. }
            | ClusterRequest::TrustRoot { event_json, .. } => {
                serde_json::from_str::<AuditEvent>(event_json)
                    .map(|e| (e.event_id.to_string(), e.env_id.parse::<EnvId>().ok(), None))
            }
        }
        .map_err(to_io)?;
        if !self.duplicate_check_planted_away() && self.seen(env.as_ref(), &event_id)? {
            let remembered = self.recent()?.get(&event_id);
            return match remembered {
                Some(outcome) => self.answer_duplicate(outcome, env.as_ref()),
                None => Ok(Outcome::AlreadyApplied),
            };
        }
        let outcome = match stale {
            Some(refusal) => refusal,
            None => self.apply_new_request(request)?,
        };
        self.note_applied(env.as_ref(), &event_id)?;
        self.recent()?.remember(event_id, &outcome);
        Ok(outcome)
    }

    /// A remembered outcome (kept without its state) as the answer to a
    /// duplicate: its result, event and generation, with the environment's
    /// state as it is now where the original answer had one.
    fn answer_duplicate(&self, mut outcome: Outcome, env: Option<&EnvId>) -> io::Result<Outcome> {
        let applied = match &mut outcome {
            Outcome::Applied(applied) | Outcome::CommittedFailure { applied, .. } => applied,
            _ => return Ok(outcome),
        };
        if let (Some(_), Some(env)) = (applied.generation, env) {
            applied.state = self.inner.store.load(env).map_err(to_io)?;
        }
        Ok(outcome)
    }

    fn recent(&self) -> io::Result<MutexGuard<'_, RecentOutcomes>> {
        self.inner
            .recent
            .lock()
            .map_err(|_| io::Error::other("the outcome window lock is poisoned"))
    }

    fn apply_new_request(&self, request: ClusterRequest) -> io::Result<Outcome> {
        match request {
            ClusterRequest::Submit { envelope_json } => {
                let envelope: CommandEnvelope =
                    serde_json::from_str(&envelope_json).map_err(to_io)?;
                Outcome::from_submit(self.inner.store.submit(&envelope)).map_err(to_io)
            }
            ClusterRequest::Record { event_json } => {
                let event: AuditEvent = serde_json::from_str(&event_json).map_err(to_io)?;
                self.inner.store.record(event).map_err(to_io)?;
                Ok(Outcome::Recorded)
            }
            ClusterRequest::Secret {
                change_json,
                event_json,
            } => {
                let event: AuditEvent = serde_json::from_str(&event_json).map_err(to_io)?;
                let change = match serde_json::from_str::<SecretChange>(&change_json) {
                    Ok(change) => change,
                    // Not a change this build knows: refused alike everywhere.
                    Err(error) => {
                        return Ok(Outcome::Secret(SecretOutcome::Refused {
                            code: "invalid-change".to_owned(),
                            kind: deploy::error::ErrorKind::InvalidArgument
                                .as_str()
                                .to_owned(),
                            message: format!(
                                "the replicated secret change does not parse: {error}"
                            ),
                            field: None,
                        }));
                    }
                };
                crate::secret_change::apply(&self.inner.store, &change, event).map(Outcome::Secret)
            }
            ClusterRequest::TrustRoot {
                change_json,
                event_json,
            } => {
                let event: AuditEvent = serde_json::from_str(&event_json).map_err(to_io)?;
                let change = match serde_json::from_str::<TrustRootChange>(&change_json) {
                    Ok(change) => change,
                    Err(error) => {
                        return Ok(Outcome::TrustRoot(TrustRootOutcome::Refused {
                            kind: deploy::error::ErrorKind::InvalidArgument
                                .as_str()
                                .to_owned(),
                            message: format!("the trust root change does not parse: {error}"),
                        }));
                    }
                };
                crate::trust_root_change::apply(&self.inner.store, &change, event)
                    .map(Outcome::TrustRoot)
            }
        }
    }

    /// The secret store of every environment of `image` (those holding
    /// something), read with the apply lock held like the image.
    fn secrets_images(&self, image: &StoreImage) -> io::Result<Vec<SecretsImage>> {
        let secret_store = SecretStore::replica(self.inner.store.root());
        let mut images = Vec::new();
        for environment in &image.environments {
            if let Some(secrets) = secret_store
                .image(environment.state.env_id())
                .map_err(to_io)?
            {
                images.push(secrets);
            }
        }
        Ok(images)
    }

    /// The trust root document of every environment of `image` that has
    /// one, read with the apply lock held like the image.
    fn trust_root_images(&self, image: &StoreImage) -> io::Result<Vec<TrustRootImage>> {
        let mut images = Vec::new();
        for environment in &image.environments {
            let env = environment.state.env_id();
            if let Some(document) = crate::trust_root_change::read(&self.inner.store, env)? {
                images.push(TrustRootImage {
                    env_id: env.clone(),
                    document,
                });
            }
        }
        Ok(images)
    }

    fn snapshot_path(&self) -> PathBuf {
        self.inner.dir.join(SNAPSHOT_FILE)
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

/// The refusal of a leader's decision (a placement, a rollout controller's
/// step) that reached the log in
/// another term than the one it was decided in: its leader lost that term
/// before the entry was written (it was forwarded or retried under the next
/// leader), so the members it saw live may be gone or back. Every replica
/// sees the same term in the same entry, so every replica refuses it; the
/// current leader decides again from its own view.
fn stale_decision(command: &deploy::command::Command, term: u64) -> Option<Outcome> {
    let decided = command.decided_in_term()?;
    (decided != term).then(|| {
        Outcome::Refused(crate::outcome::ErrorWire {
            kind: deploy::error::ErrorKind::Conflict.as_str().to_owned(),
            message: format!(
                "the {} {} was decided by the leader of term {decided} and reached the log in term {term}; the current leader decides again",
                command.noun(),
                command.verb()
            ),
            field: Some("decided_in_term".to_owned()),
        })
    })
}

/// The environment a command or an audit event is about, if it names one.
fn request_env(request: &ClusterRequest) -> Option<EnvId> {
    match request {
        ClusterRequest::Submit { envelope_json } => {
            serde_json::from_str::<CommandEnvelope>(envelope_json)
                .ok()
                .map(|envelope| envelope.command.env_id())
        }
        ClusterRequest::Record { event_json }
        | ClusterRequest::Secret { event_json, .. }
        | ClusterRequest::TrustRoot { event_json, .. } => {
            serde_json::from_str::<AuditEvent>(event_json)
                .ok()
                .and_then(|event| event.env_id.parse().ok())
        }
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
        let snapshot = self.write_snapshot()?;
        self.inner.snapshots_built.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("gtc_raft_snapshots_built_total").increment(1);
        Ok(snapshot)
    }
}

impl StateMachine {
    /// Writes a snapshot of what is applied now (the replica at its last
    /// applied entry) to the snapshot file, and returns it.
    fn write_snapshot(&self) -> io::Result<Snapshot> {
        let (meta, image, secrets, trust_roots) = {
            let applied = self.lock()?;
            let image = self.inner.store.image().map_err(to_io)?;
            let secrets = self.secrets_images(&image)?;
            let trust_roots = self.trust_root_images(&image)?;
            (applied.clone(), image, secrets, trust_roots)
        };
        let snapshot_meta = SnapshotMeta {
            last_log_id: meta.last_applied,
            last_membership: meta.membership.clone(),
        };
        let file = SnapshotFile {
            meta: snapshot_meta.clone(),
            image,
            secrets,
            trust_roots,
        };
        let bytes = serde_json::to_vec(&file).map_err(to_io)?;
        write_atomically(&self.snapshot_path(), &bytes)?;
        Ok(Snapshot {
            meta: snapshot_meta,
            snapshot: bytes,
        })
    }

    /// The snapshot file when it parses. It is derived data (the replica
    /// and its applied index are the state), so one that does not parse (a
    /// disk fault, a hand edit) is moved aside beside itself and written
    /// again from the replica, instead of keeping the member from starting
    /// or from serving snapshots. `None` when there is none and nothing was
    /// applied yet.
    fn current_snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        let path = self.snapshot_path();
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(io::Error::new(
                    error.kind(),
                    format!("cannot read the snapshot file {}: {error}", path.display()),
                ));
            }
        };
        let error = match parse_snapshot(&bytes) {
            Ok(file) => return Ok(Some(file)),
            Err(error) => error,
        };
        let aside = path.with_extension("json.unreadable");
        std::fs::rename(&path, &aside)?;
        tracing::warn!(
            file = %path.display(),
            moved_to = %aside.display(),
            %error,
            "the Raft snapshot file does not parse; it was moved aside and is written again from the replica"
        );
        metrics::counter!("gtc_raft_snapshots_rewritten_total").increment(1);
        if self.lock()?.last_applied.is_none() {
            return Ok(None);
        }
        let snapshot = self.write_snapshot()?;
        parse_snapshot(&snapshot.snapshot).map(Some)
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
            let mut touched = None;
            let mut is_request = false;
            let outcome = match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(request) => {
                    touched = request_env(&request);
                    is_request = true;
                    self.apply_request(request, log_id.leader_id.term)?
                }
                EntryPayload::Membership(membership) => {
                    applied.membership = StoredMembership::new(Some(log_id), membership);
                    Outcome::Nothing
                }
            };
            if is_request && self.crashes_before_bookkeeping(log_id.index()) {
                return Err(io::Error::other(format!(
                    "simulated crash after the store committed entry {} and before it was recorded",
                    log_id.index()
                )));
            }
            applied.last_applied = Some(log_id);
            self.persist(&applied)?;
            *self.lock()? = applied;
            self.inner.applied_tx.send_replace(log_id.index());
            if let Some(env) = touched {
                let state = self.inner.store.load(&env).map_err(to_io)?;
                self.notify(AppliedEntry {
                    index: log_id.index(),
                    env,
                    state,
                    outcome: outcome.clone(),
                    from_snapshot: false,
                });
            }
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
        let file = parse_snapshot(&snapshot)?;
        let image: StoreImage = file.image;
        let secrets = file.secrets;
        let trust_roots = file.trust_roots;
        let mut applied = self.lock()?;
        // Each environment's secrets and trust root go in before the store's
        // image: a reader that sees an environment's new state (its state
        // file is what makes it listed) sees the files that came with it.
        let secret_store = SecretStore::replica(self.inner.store.root());
        for environment in &image.environments {
            let env = environment.state.env_id();
            let wanted = secrets.iter().find(|s| &s.env_id == env);
            secret_store.install_image(env, wanted).map_err(to_io)?;
            let document = trust_roots
                .iter()
                .find(|t| &t.env_id == env)
                .map(|t| t.document.as_str());
            crate::trust_root_change::install(&self.inner.store, env, document)?;
        }
        self.inner.store.install_image(&image).map_err(to_io)?;
        // The logs were replaced: read their tails again when needed.
        self.applied_ids()?.logs.clear();
        let current = serde_json::to_vec(&SnapshotFile {
            meta: file.meta,
            image,
            secrets,
            trust_roots,
        })
        .map_err(to_io)?;
        write_atomically(&self.snapshot_path(), &current)?;
        let installed = AppliedMeta {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.persist(&installed)?;
        *applied = installed;
        drop(applied);
        let index = meta.last_log_id.map_or(0, |id| id.index());
        self.inner.applied_tx.send_replace(index);
        metrics::counter!("gtc_raft_snapshots_installed_total").increment(1);
        for env in self.inner.store.list().map_err(to_io)? {
            let state = self.inner.store.load(&env).map_err(to_io)?;
            self.notify(AppliedEntry {
                index,
                env,
                state,
                outcome: Outcome::Nothing,
                from_snapshot: true,
            });
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let Some(file) = self.current_snapshot_file()? else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(&file).map_err(to_io)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: bytes,
        }))
    }
}
