//! The local file store: the embedded default.
//!
//! ```text
//! <root>/
//!   .lock                    root lock: held while creating or destroying
//!   .audit/events.jsonl      events about environments that do not exist
//!   .destroyed/<env>.<ts>/   destroyed environments, audit log included
//!   <env>/
//!     .lock                  per-environment lock
//!     environment.json       EnvironmentState, replaced atomically
//!     audit/events.jsonl     hash-chained audit log
//!     idempotency/<generation>.<key digest>.json   idempotency records
//!     backups/environment.<generation>.<ts>.json   pre-change copies
//!     backups/<backup_id>.backup.json              `env backup` artifacts
//! ```
//!
//! Commit protocol for a change: lock, load, look up the idempotency record
//! of the request's key, `apply`, append the audit event (fsync), write the
//! change's idempotency record (fsync), link the current file into
//! `backups/`, atomically replace the state (fsync file and folder). The
//! event is written first so that a
//! change can never be committed without its audit record ("fail closed");
//! an event whose change did not commit (crash in between) is detected on
//! the next change and followed by an `aborted` marker.

use std::path::{Path, PathBuf};

use deploy::apply::{Applied, apply};
use deploy::audit::{Actor, AuditEvent, AuditResult};
use deploy::command::{Command, CommandEnvelope};
use deploy::error::ApplyError;
use deploy::ids::{BackupId, EnvId, EventId};
use deploy::state::EnvironmentState;

use crate::audit_log::{AuditLog, AuditReport};
use crate::backup::{BackupArtifact, BackupManifest};
use crate::error::{StoreError, SubmitError};
use crate::fs_util::{FileLock, atomic_write, fsync_dir};
use crate::idempotency::IdempotencyTable;
use crate::{EnvironmentStore, Submitted};

/// Pre-change copies kept per environment. Enough to undo a bad afternoon;
/// bounded so a busy environment does not fill the disk.
pub const PRE_CHANGE_BACKUPS_KEPT: usize = 50;

pub(crate) const STATE_FILE: &str = "environment.json";
pub(crate) const LOCK_FILE: &str = ".lock";
const BACKUPS_DIR: &str = "backups";
const PRE_CHANGE_PREFIX: &str = "environment.";
const ARTIFACT_SUFFIX: &str = ".backup.json";

/// The store rooted at one folder.
#[derive(Debug, Clone)]
pub struct LocalFsStore {
    root: PathBuf,
}

fn stamp(at: deploy::Timestamp) -> String {
    at.format("%Y%m%dT%H%M%S.%9fZ").to_string()
}

fn pretty<T: serde::Serialize>(state: &T, path: &Path) -> Result<Vec<u8>, StoreError> {
    let mut bytes = serde_json::to_vec_pretty(state).map_err(|error| StoreError::Corrupt {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}

impl LocalFsStore {
    /// Opens (and creates if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(StoreError::io("create store root", &root))?;
        Ok(Self { root })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of `env`.
    pub fn env_dir(&self, env: &EnvId) -> PathBuf {
        deploy::layout::env_dir(&self.root, env)
    }

    /// The audit log of `env`.
    pub fn audit_log(&self, env: &EnvId) -> AuditLog {
        AuditLog::new(self.env_dir(env).join("audit").join("events.jsonl"))
    }

    /// Whether `env` exists (its state file does), i.e. whether an event
    /// about it goes to its own audit log rather than the root log.
    pub fn exists(&self, env: &EnvId) -> bool {
        self.env_dir(env).join(STATE_FILE).is_file()
    }

    /// The audit log for events about environments that do not exist.
    pub fn root_audit_log(&self) -> AuditLog {
        AuditLog::new(self.root.join(".audit").join("events.jsonl"))
    }

    /// The idempotency table of `env`.
    pub(crate) fn idempotency(&self, env: &EnvId) -> IdempotencyTable {
        IdempotencyTable::new(&self.env_dir(env))
    }

    /// The committed idempotency record of `key` in `env`, if one is kept
    /// (in the table, or in a state written before the table existed).
    pub fn idempotency_record(
        &self,
        env: &EnvId,
        key: &str,
    ) -> Result<Option<deploy::state::IdempotencyRecord>, StoreError> {
        let Some(state) = self.read_state(env)? else {
            return Ok(None);
        };
        if let Some(record) = self.idempotency(env).lookup(key, state.generation)? {
            return Ok(Some(record));
        }
        Ok(state
            .legacy_idempotency
            .into_iter()
            .find(|record| record.key == key))
    }

    /// Prepares the idempotency table for a change of `state` (under the
    /// environment's lock): forgets records of changes that never
    /// committed, moves a legacy state's records into the table, and looks
    /// up the record of `key`.
    fn prepare_records(
        &self,
        state: &mut EnvironmentState,
        key: Option<&str>,
    ) -> Result<Option<deploy::state::IdempotencyRecord>, StoreError> {
        let table = self.idempotency(state.env_id());
        table.forget_uncommitted(state.generation)?;
        for record in std::mem::take(&mut state.legacy_idempotency) {
            table.insert(&record)?;
        }
        match key {
            Some(key) => table.lookup(key, state.generation),
            None => Ok(None),
        }
    }

    fn read_state(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreError> {
        let path = self.env_dir(env).join(STATE_FILE);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let state: EnvironmentState = parse_document(&path, &bytes)?;
        state.validate(env).map_err(|error| StoreError::Corrupt {
            path,
            reason: error.to_string(),
        })?;
        Ok(Some(state))
    }

    /// Writes an `env backup` artifact of the current state.
    pub fn backup(
        &self,
        env: &EnvId,
        backup_id: BackupId,
        at: deploy::Timestamp,
    ) -> Result<BackupManifest, StoreError> {
        let dir = self.env_dir(env);
        if !dir.is_dir() {
            return Err(StoreError::NotFound {
                env: env.to_string(),
            });
        }
        let _lock = FileLock::acquire(&dir.join(LOCK_FILE))?;
        let state = self.read_state(env)?.ok_or_else(|| StoreError::NotFound {
            env: env.to_string(),
        })?;
        let artifact = BackupArtifact::new(backup_id, at, state);
        let backups = dir.join(BACKUPS_DIR);
        std::fs::create_dir_all(&backups).map_err(StoreError::io("create", &backups))?;
        let path = backups.join(format!("{backup_id}{ARTIFACT_SUFFIX}"));
        let mut bytes =
            serde_json::to_vec_pretty(&artifact).map_err(|error| StoreError::Corrupt {
                path: path.clone(),
                reason: error.to_string(),
            })?;
        bytes.push(b'\n');
        atomic_write(&path, &bytes)?;
        Ok(artifact.manifest)
    }

    /// Manifests of every `env backup` artifact, oldest first.
    pub fn list_backups(&self, env: &EnvId) -> Result<Vec<BackupManifest>, StoreError> {
        let dir = self.env_dir(env).join(BACKUPS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(StoreError::io("list", &dir)(error)),
        };
        let mut manifests = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(ARTIFACT_SUFFIX)
                && let Ok(backup_id) = id.parse::<BackupId>()
            {
                manifests.push(self.load_backup(env, backup_id)?.manifest);
            }
        }
        manifests.sort_by_key(|m| m.backup_id);
        Ok(manifests)
    }

    /// Loads an `env backup` artifact and verifies its integrity digest.
    pub fn load_backup(
        &self,
        env: &EnvId,
        backup_id: BackupId,
    ) -> Result<BackupArtifact, StoreError> {
        let path = self
            .env_dir(env)
            .join(BACKUPS_DIR)
            .join(format!("{backup_id}{ARTIFACT_SUFFIX}"));
        let bytes = read_optional(&path)?.ok_or_else(|| StoreError::BackupNotFound {
            env: env.to_string(),
            backup_id: backup_id.to_string(),
        })?;
        let artifact: BackupArtifact = parse_document(&path, &bytes)?;
        artifact
            .verify()
            .map_err(|computed| StoreError::IntegrityMismatch {
                path: path.clone(),
                recorded: artifact.manifest.integrity.digest.clone(),
                computed,
            })?;
        artifact
            .snapshot
            .validate(env)
            .map_err(|error| StoreError::Corrupt {
                path,
                reason: error.to_string(),
            })?;
        Ok(artifact)
    }

    /// Moves `env`'s folder aside to `<root>/<hidden_name>` (used by
    /// `migrate-dev` to retire the legacy `dev` environment).
    pub fn retire(&self, env: &EnvId, hidden_name: &str) -> Result<PathBuf, StoreError> {
        let _root_lock = FileLock::acquire(&self.root.join(LOCK_FILE))?;
        let dir = self.env_dir(env);
        let _env_lock = FileLock::acquire(&dir.join(LOCK_FILE))?;
        let target = self.root.join(hidden_name);
        std::fs::rename(&dir, &target).map_err(StoreError::io("rename", &dir))?;
        fsync_dir(&self.root)?;
        Ok(target)
    }

    /// Verifies the audit chain of `env` and that the state's `audit_head`
    /// is in it.
    pub fn verify_audit(&self, env: &EnvId) -> Result<(AuditReport, bool), StoreError> {
        let log = self.audit_log(env);
        let report = log.verify()?;
        let anchored = match self.read_state(env)?.and_then(|state| state.audit_head) {
            Some(head) => log
                .lines()?
                .iter()
                .any(|line| deploy::audit::line_hash(line).is_ok_and(|hash| hash == head)),
            None => true,
        };
        Ok((report, anchored))
    }

    /// Appends an `aborted` marker when the last event describes a change
    /// that never committed (the process died between audit and commit).
    fn reconcile(
        &self,
        state: &EnvironmentState,
        at: deploy::Timestamp,
        next_event_id: EventId,
    ) -> Result<(), StoreError> {
        let log = self.audit_log(state.env_id());
        let Some(last) = log.last_event()? else {
            return Ok(());
        };
        let uncommitted =
            !last.replayed && last.new_generation.is_some_and(|g| g > state.generation);
        if !uncommitted {
            return Ok(());
        }
        let id = next_event_id.ulid();
        let marker = AuditEvent {
            event_id: EventId::from_ulid(ulid::Ulid::from_parts(
                id.timestamp_ms(),
                id.random() ^ 1,
            )),
            ts: at,
            actor: Actor {
                kind: "store".to_owned(),
                user: None,
                uid: None,
            },
            target: serde_json::json!({
                "aborted_event_id": last.event_id,
                "audited_generation": last.new_generation,
            }),
            previous_generation: Some(state.generation),
            new_generation: Some(state.generation),
            idempotency_key: None,
            replayed: false,
            result: AuditResult::Error {
                kind: "aborted".to_owned(),
                message: format!(
                    "event {} was audited but its change never committed (the process stopped before the state was written); nothing was applied",
                    last.event_id
                ),
            },
            ..last
        };
        log.append(marker).map(|_| ())
    }

    fn audit_refusal(
        &self,
        env: &EnvId,
        envelope: &CommandEnvelope,
        generation: Option<u64>,
        error: &ApplyError,
    ) {
        let event = deploy::apply::event_for(
            envelope,
            generation,
            None,
            false,
            AuditResult::Error {
                kind: error.kind().as_str().to_owned(),
                message: error.to_string(),
            },
        );
        // The refusal changed nothing; if even its audit line cannot be
        // written the caller still gets the refusal, which is the safe side.
        let _ = self.record_for(env, event);
    }

    fn record_for(&self, env: &EnvId, event: AuditEvent) -> Result<(), StoreError> {
        let log = if self.exists(env) {
            self.audit_log(env)
        } else {
            self.root_audit_log()
        };
        log.append(event).map(|_| ())
    }

    fn commit_create(
        &self,
        env: &EnvId,
        applied: &Applied,
        event: AuditEvent,
    ) -> Result<Option<String>, SubmitError> {
        let Some(mut state) = applied.state.clone() else {
            return Ok(None);
        };
        self.clean_staging();
        let staging = self
            .root
            .join(format!(".creating-{env}-{}", event.event_id));
        std::fs::create_dir_all(&staging).map_err(StoreError::io("create", &staging))?;
        let log = AuditLog::new(staging.join("audit").join("events.jsonl"));
        let appended = log.append(event).map_err(SubmitError::AuditFailed)?;
        state.audit_head = Some(appended.hash);
        if let Some(record) = &applied.record {
            IdempotencyTable::new(&staging).insert(record)?;
        }
        let path = staging.join(STATE_FILE);
        atomic_write(&path, &pretty(&state, &path)?)?;
        fsync_dir(&staging)?;
        let target = self.env_dir(env);
        std::fs::rename(&staging, &target).map_err(StoreError::io("rename into place", &target))?;
        fsync_dir(&self.root)?;
        Ok(Some(appended.prev_hash))
    }

    /// Removes staging folders left by a create that crashed before its
    /// rename; they were never acknowledged.
    fn clean_staging(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".creating-")
                {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }

    fn commit_destroy(
        &self,
        env: &EnvId,
        event: AuditEvent,
        at: deploy::Timestamp,
    ) -> Result<Option<String>, SubmitError> {
        let log = self.audit_log(env);
        let appended = log
            .append(event.clone())
            .map_err(SubmitError::AuditFailed)?;
        let graveyard = self.root.join(".destroyed");
        std::fs::create_dir_all(&graveyard).map_err(StoreError::io("create", &graveyard))?;
        let target = graveyard.join(format!("{env}.{}", stamp(at)));
        let dir = self.env_dir(env);
        if let Err(error) = std::fs::rename(&dir, &target) {
            let _ = log.append(aborted(
                event,
                "the environment folder could not be moved aside",
            ));
            return Err(StoreError::io("move aside", &dir)(error).into());
        }
        fsync_dir(&graveyard)?;
        fsync_dir(&self.root)?;
        Ok(Some(appended.prev_hash))
    }

    fn commit_update(
        &self,
        current: &EnvironmentState,
        applied: &Applied,
        event: AuditEvent,
    ) -> Result<Option<String>, SubmitError> {
        let Some(mut state) = applied.state.clone() else {
            return Ok(None);
        };
        let env = current.env_id();
        let log = self.audit_log(env);
        let appended = log
            .append(event.clone())
            .map_err(SubmitError::AuditFailed)?;
        state.audit_head = Some(appended.hash);
        // The record first: a committed change always has its record, and
        // one whose state never got written is ignored (its generation is
        // not reached) and removed by the next change.
        let written = applied
            .record
            .as_ref()
            .map_or(Ok(()), |record| self.idempotency(env).insert(record))
            .and_then(|()| self.pre_change_backup(env, current))
            .and_then(|()| self.write_revenue_policies(&state))
            .and_then(|()| {
                let path = self.env_dir(env).join(STATE_FILE);
                atomic_write(&path, &pretty(&state, &path)?)
            });
        if let Err(error) = written {
            let _ = log.append(aborted(
                event,
                &format!("the state could not be written: {error}"),
            ));
            return Err(error.into());
        }
        Ok(Some(appended.prev_hash))
    }

    /// Writes the revenue policy document each deployment's
    /// `revenue_policy_ref` names (before the state that names it, so a
    /// committed reference never points at nothing). The documents follow
    /// from the state alone: rewriting one is a no-op, and every replica
    /// writes the same bytes. A reference that is not a plain relative path
    /// under `billing-policies/` is refused as corrupt rather than followed.
    pub(crate) fn write_revenue_policies(
        &self,
        state: &EnvironmentState,
    ) -> Result<(), StoreError> {
        let dir = self.env_dir(state.env_id());
        for deployment in &state.environment.bundles {
            let reference = Path::new(&deployment.revenue_policy_ref);
            let plain = reference
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain || !reference.starts_with(deploy::bundle::REVENUE_POLICIES_DIR) {
                return Err(StoreError::Corrupt {
                    path: dir.join(STATE_FILE),
                    reason: format!(
                        "deployment {} names revenue policy {:?}, which is not a path under {}/",
                        deployment.deployment_id,
                        deployment.revenue_policy_ref,
                        deploy::bundle::REVENUE_POLICIES_DIR
                    ),
                });
            }
            let path = dir.join(reference);
            let bytes = pretty(&deployment.revenue_policy(), &path)?;
            if read_optional(&path)?.as_deref() == Some(bytes.as_slice()) {
                continue;
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(StoreError::io("create", parent))?;
            }
            atomic_write(&path, &bytes)?;
        }
        Ok(())
    }

    fn pre_change_backup(&self, env: &EnvId, current: &EnvironmentState) -> Result<(), StoreError> {
        let dir = self.env_dir(env).join(BACKUPS_DIR);
        std::fs::create_dir_all(&dir).map_err(StoreError::io("create", &dir))?;
        let source = self.env_dir(env).join(STATE_FILE);
        let name = format!(
            "{PRE_CHANGE_PREFIX}{:020}.{}.json",
            current.generation,
            stamp(current.updated_at)
        );
        let target = dir.join(name);
        // The state file is only ever replaced by a rename, never written in
        // place, so a second link to it keeps the pre-change bytes: no copy
        // and no fsync of the data. A file system without hard links (or a
        // leftover of the same name) gets a copy.
        let _ = std::fs::remove_file(&target);
        if std::fs::hard_link(&source, &target).is_ok() {
            fsync_dir(&dir)?;
        } else {
            let bytes = std::fs::read(&source).map_err(StoreError::io("read", &source))?;
            atomic_write(&target, &bytes)?;
        }
        self.prune_pre_change_backups(&dir)
    }

    fn prune_pre_change_backups(&self, dir: &Path) -> Result<(), StoreError> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(StoreError::io("list", dir))?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(PRE_CHANGE_PREFIX)
            })
            .map(|e| e.path())
            .collect();
        names.sort();
        let excess = names.len().saturating_sub(PRE_CHANGE_BACKUPS_KEPT);
        for path in names.into_iter().take(excess) {
            std::fs::remove_file(&path).map_err(StoreError::io("remove old backup", &path))?;
        }
        Ok(())
    }
}

/// The bytes of `path`, or `None` when it does not exist.
fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(StoreError::io("read", path)(error)),
    }
}

/// Parses a JSON document the store wrote; anything else is corruption.
fn parse_document<T: serde::de::DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|error| StoreError::Corrupt {
        path: path.to_owned(),
        reason: error.to_string(),
    })
}

/// A marker saying that `event`'s change did not happen.
fn aborted(event: AuditEvent, why: &str) -> AuditEvent {
    AuditEvent {
        event_id: EventId::from_ulid(ulid::Ulid::from_parts(
            event.event_id.ulid().timestamp_ms(),
            event.event_id.ulid().random() ^ 1,
        )),
        target: serde_json::json!({"aborted_event_id": event.event_id}),
        new_generation: event.previous_generation,
        result: AuditResult::Error {
            kind: "aborted".to_owned(),
            message: format!("event {} was not committed: {why}", event.event_id),
        },
        ..event
    }
}

fn takes_root_lock(command: &Command) -> bool {
    matches!(
        command,
        Command::EnvInit { .. } | Command::EnvCreate(_) | Command::EnvDestroy(_)
    )
}

impl EnvironmentStore for LocalFsStore {
    fn list(&self) -> Result<Vec<EnvId>, StoreError> {
        let entries = std::fs::read_dir(&self.root).map_err(StoreError::io("list", &self.root))?;
        let mut ids: Vec<EnvId> = entries
            .flatten()
            .filter(|entry| entry.path().join(STATE_FILE).is_file())
            .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    fn load(&self, env: &EnvId) -> Result<Option<EnvironmentState>, StoreError> {
        self.read_state(env)
    }

    fn submit(&self, envelope: &CommandEnvelope) -> Result<Submitted, SubmitError> {
        let env = envelope.command.env_id();
        let _root_lock = takes_root_lock(&envelope.command)
            .then(|| FileLock::acquire(&self.root.join(LOCK_FILE)))
            .transpose()?;
        let dir = self.env_dir(&env);
        let _env_lock = dir
            .join(STATE_FILE)
            .is_file()
            .then(|| FileLock::acquire(&dir.join(LOCK_FILE)))
            .transpose()?;
        // Read after locking: a destroy may have moved the folder meanwhile.
        let mut current = self.read_state(&env)?;
        let mut recorded = None;
        if let Some(state) = current.as_mut() {
            self.reconcile(state, envelope.at, envelope.minted.event_id)?;
            recorded = self.prepare_records(state, envelope.idempotency_key())?;
        }
        let mut applied = match apply(current.as_ref(), recorded.as_ref(), envelope) {
            Ok(applied) => applied,
            Err(error) => {
                self.audit_refusal(
                    &env,
                    envelope,
                    current.as_ref().map(|s| s.generation),
                    &error,
                );
                return Err(SubmitError::Refused(error));
            }
        };
        if let Some(event) = applied.event.clone() {
            let prev_hash = match (&current, &applied.state) {
                _ if applied.replayed => Some(
                    self.audit_log(&env)
                        .append(event)
                        .map_err(SubmitError::AuditFailed)?
                        .prev_hash,
                ),
                (None, Some(_)) => self.commit_create(&env, &applied, event)?,
                (Some(_), None) => self.commit_destroy(&env, event, envelope.at)?,
                (Some(current), Some(_)) => self.commit_update(current, &applied, event)?,
                (None, None) => None,
            };
            // The answer carries the event as the log holds it. The copy in
            // the idempotency record keeps `prev_hash` empty: it is part of
            // the replicated state (and its ETag), which must not depend on
            // anything but the command.
            if let (Some(prev_hash), Some(event)) = (prev_hash, applied.event.as_mut()) {
                event.prev_hash = prev_hash;
            }
        }
        let generation = applied.state.as_ref().map(|s| s.generation);
        if let Some(error) = applied.committed_error.clone() {
            return Err(SubmitError::CommittedFailure {
                error,
                applied: Box::new(applied),
            });
        }
        Ok(Submitted {
            applied,
            generation,
        })
    }

    fn record(&self, event: AuditEvent) -> Result<(), StoreError> {
        let env = match event.env_id.parse::<EnvId>() {
            Ok(env) if self.env_dir(&env).join(STATE_FILE).is_file() => env,
            _ => return self.root_audit_log().append(event).map(|_| ()),
        };
        // Under the environment lock, so that the last line of the log is
        // always the latest change, and an uncommitted change left by a
        // crash is marked before anything else is appended.
        let _lock = FileLock::acquire(&self.env_dir(&env).join(LOCK_FILE))?;
        if let Some(state) = self.read_state(&env)? {
            self.reconcile(&state, event.ts, event.event_id)?;
        }
        self.record_for(&env, event)
    }

    fn audit_lines(&self, env: &EnvId) -> Result<Vec<String>, StoreError> {
        self.audit_log(env).lines()
    }

    fn audit_tail(&self, env: &EnvId, limit: usize) -> Result<Vec<String>, StoreError> {
        self.audit_log(env).tail(limit)
    }

    fn audit_count(&self, env: &EnvId) -> Result<usize, StoreError> {
        self.audit_log(env).count()
    }
}
