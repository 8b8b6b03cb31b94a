//! [`SecretStore`]: versions of `secret://<env>/<path>` on the local disk,
//! each sealed under the environment's data key.
//!
//! One immutable file per version, `<env>/secrets/entries/<sha256(path)>/
//! <version>.json`, so a new version never rewrites an old one and a
//! revision can later pin `(env, path, version)`. Writers hold
//! `<env>/secrets/.lock`; the caller's audit callback runs under it after
//! every check and the encryption, before the version file is created, so
//! nothing is stored without its audit event and a refused request writes
//! nothing.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use deploy::ids::EnvId;
use deploy::layout;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::crypto::{self, Key};
use crate::error::SecretsError;
use crate::fs::{FileLock, create_dirs, write_new};
use crate::keys::{
    DataKeyFile, NodeKey, data_key, data_key_bytes, new_data_key, nonce, open_data_key,
};
use crate::path::SecretPath;
use crate::value::SecretText;

/// Schema of a version file.
pub const VERSION_SCHEMA: &str = "greentic.secret-version.v1";
/// Most versions kept per path. Versions are never deleted yet (a
/// revision will pin them), so the bound keeps one path's folder and
/// `list` small; at the limit a put is refused, not pruned.
pub const SECRET_VERSIONS_MAX: u32 = 1000;
/// Largest version file read (a 64 KiB value in base64 plus metadata).
const VERSION_FILE_BYTES_MAX: u64 = 128 * 1024;

/// How a version was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Put,
    Rotate,
    Generated,
}

/// What is known about a version without its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VersionMeta {
    /// `secret://<env>/<path>`.
    pub reference: String,
    pub path: String,
    pub version: u32,
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The actor's display name (a local user or a token id).
    pub created_by: String,
    pub origin: Origin,
}

/// One path in `list`: its versions, never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct SecretSummary {
    pub reference: String,
    pub path: String,
    pub latest: u32,
    pub versions: Vec<VersionMeta>,
}

/// Who writes a version and why.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub created_by: String,
    pub origin: Origin,
    pub idempotency_key: Option<String>,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// The result of a put or rotate.
#[derive(Debug, Clone)]
pub struct Written {
    pub meta: VersionMeta,
    /// True when an idempotency key matched an earlier write of the same
    /// value: no version was added.
    pub replayed: bool,
}

/// A version file on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    schema: String,
    env_id: EnvId,
    path: String,
    version: u32,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: String,
    origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<String>,
    /// Base64 of the 24-byte nonce.
    nonce: String,
    /// Base64 of the XChaCha20-Poly1305 ciphertext and tag.
    ciphertext: String,
}

impl VersionFile {
    fn meta(&self, env: &EnvId) -> VersionMeta {
        VersionMeta {
            reference: format!("secret://{env}/{}", self.path),
            path: self.path.clone(),
            version: self.version,
            created_at: self.created_at,
            created_by: self.created_by.clone(),
            origin: self.origin,
        }
    }
}

/// The store's lock, held (see [`SecretStore::hold`]).
pub struct StoreGuard {
    _lock: FileLock,
}

/// A new version sealed by the member that took the request and not yet
/// stored: what every replica needs to store it alike (the version file,
/// ciphertext and metadata, and the environment's wrapped data key when
/// this version is its first secret), never the value. A cluster carries it
/// in its log; [`SecretStore::commit`] stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedVersion {
    /// The path must already have a version (a rotate).
    must_exist: bool,
    file: VersionFile,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_key: Option<DataKeyFile>,
}

impl SealedVersion {
    /// The environment the version belongs to.
    pub fn env_id(&self) -> &EnvId {
        &self.file.env_id
    }

    /// What the version will be known as.
    pub fn meta(&self) -> VersionMeta {
        self.file.meta(&self.file.env_id)
    }
}

/// What sealing a value found.
#[derive(Debug)]
pub enum Sealing {
    /// The idempotency key was used before for the same value: nothing to
    /// store; the earlier version answers.
    Replay(VersionMeta),
    /// A new version to commit.
    New(Box<SealedVersion>),
}

/// The secret store of one store root.
#[derive(Debug, Clone)]
pub struct SecretStore {
    root: PathBuf,
    node_key: NodeKey,
}

impl SecretStore {
    /// The store of `root` (the folder that holds the environments).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            node_key: NodeKey::Create,
        }
    }

    /// The store of a cluster member's replica at `root`: its node key is
    /// the cluster secrets key the member installed
    /// ([`install_cluster_key`](Self::install_cluster_key)), never made
    /// here, so every data key is one that every member can open.
    pub fn replica(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            node_key: NodeKey::Replica,
        }
    }

    /// Installs the cluster secrets key file `source` as this replica's
    /// node key (see [`SecretStore::replica`]); a replica that already
    /// holds a different key refuses it.
    pub fn install_cluster_key(&self, source: &Path) -> Result<(), SecretsError> {
        crate::keys::install_node_key(&self.root, source)
    }

    fn reading_key(&self) -> NodeKey {
        match self.node_key {
            NodeKey::Replica => NodeKey::Replica,
            _ => NodeKey::Existing,
        }
    }

    fn secrets_dir(&self, env: &EnvId) -> PathBuf {
        layout::secrets_dir(&self.root, env)
    }

    fn entry_dir(&self, env: &EnvId, path: &SecretPath) -> PathBuf {
        layout::secret_entry_dir(&self.secrets_dir(env), &path.digest())
    }

    /// Stores `value` as a new version of `path` (the first when there is
    /// none). `audit` is called under the lock once everything is checked
    /// and sealed; if it fails nothing is written.
    pub fn put(
        &self,
        env: &EnvId,
        path: &SecretPath,
        value: &SecretText,
        request: WriteRequest,
        audit: &mut dyn FnMut(&VersionMeta, bool) -> Result<(), String>,
    ) -> Result<Written, SecretsError> {
        self.write(env, path, value, request, false, audit)
    }

    /// Like [`put`](Self::put), for a path that must already exist.
    pub fn rotate(
        &self,
        env: &EnvId,
        path: &SecretPath,
        value: &SecretText,
        request: WriteRequest,
        audit: &mut dyn FnMut(&VersionMeta, bool) -> Result<(), String>,
    ) -> Result<Written, SecretsError> {
        self.write(env, path, value, request, true, audit)
    }

    fn write(
        &self,
        env: &EnvId,
        path: &SecretPath,
        value: &SecretText,
        request: WriteRequest,
        must_exist: bool,
        audit: &mut dyn FnMut(&VersionMeta, bool) -> Result<(), String>,
    ) -> Result<Written, SecretsError> {
        let secrets_dir = self.secrets_dir(env);
        let reference = path.reference(env);
        // Checks that need no file come before the first file is touched.
        if must_exist && !self.entry_dir(env, path).is_dir() {
            return Err(SecretsError::NotFound { reference });
        }
        create_dirs(&secrets_dir)?;
        let _lock = FileLock::acquire(&layout::secrets_lock(&secrets_dir))?;
        match self.seal(env, path, value, request, must_exist)? {
            Sealing::Replay(meta) => {
                audit(&meta, true).map_err(|reason| SecretsError::Audit { reason })?;
                Ok(Written {
                    meta,
                    replayed: true,
                })
            }
            Sealing::New(sealed) => {
                let meta = self.commit_locked(&sealed, path, &mut |meta| audit(meta, false))?;
                Ok(Written {
                    meta,
                    replayed: false,
                })
            }
        }
    }

    /// Seals `value` as the next version of `path` against the store as it
    /// is now, writing nothing: a replay when the request's idempotency key
    /// was used for the same value, else the version to commit (with a new
    /// data key when the environment has none). On a cluster the member that
    /// took the request seals, and the log carries the result to every
    /// replica's [`commit`](Self::commit).
    pub fn seal(
        &self,
        env: &EnvId,
        path: &SecretPath,
        value: &SecretText,
        request: WriteRequest,
        must_exist: bool,
    ) -> Result<Sealing, SecretsError> {
        let reference = path.reference(env);
        let entry_dir = self.entry_dir(env, path);
        let versions = self.read_versions(env, path)?;
        if must_exist && versions.is_empty() {
            return Err(SecretsError::NotFound { reference });
        }
        let (key, new_key) = match open_data_key(&self.root, env, self.reading_key())? {
            Some(key) => (key, None),
            None => {
                let (key, file) = new_data_key(&self.root, env, self.node_key, request.at)?;
                (key, Some(file))
            }
        };
        if let Some(idempotency_key) = &request.idempotency_key
            && let Some(earlier) = versions
                .iter()
                .find(|v| v.idempotency_key.as_deref() == Some(idempotency_key))
        {
            let plaintext = self.open_version(env, path, earlier, &key)?;
            if !value.same_as(&plaintext) {
                return Err(SecretsError::IdempotencyConflict {
                    key: idempotency_key.clone(),
                    reference,
                });
            }
            return Ok(Sealing::Replay(earlier.meta(env)));
        }
        let latest = versions.last().map_or(0, |v| v.version);
        if latest >= SECRET_VERSIONS_MAX {
            return Err(SecretsError::VersionLimit {
                reference,
                versions: latest,
            });
        }
        let version = latest + 1;
        let nonce = nonce()?;
        let associated_data = crypto::version_associated_data(env, path, version);
        let ciphertext = crypto::seal(&key, &nonce, &associated_data, value.expose().as_bytes())
            .map_err(|_| SecretsError::Malformed {
                path: entry_dir.clone(),
                reason: "the AEAD refused to seal the value".to_owned(),
            })?;
        Ok(Sealing::New(Box::new(SealedVersion {
            must_exist,
            file: VersionFile {
                schema: VERSION_SCHEMA.to_owned(),
                env_id: env.clone(),
                path: path.as_str().to_owned(),
                version,
                created_at: request.at,
                created_by: request.created_by,
                origin: request.origin,
                idempotency_key: request.idempotency_key,
                nonce: STANDARD.encode(nonce),
                ciphertext: STANDARD.encode(ciphertext),
            },
            data_key: new_key,
        })))
    }

    /// Stores a version sealed by [`seal`](Self::seal), here or on another
    /// member: the same checks on every replica give the same answer, since
    /// they read only what every replica holds alike. A version number, an
    /// idempotency key or a first data key that another change took first
    /// is [`SecretsError::Stale`] (seal again). `audit` runs after every
    /// check, before the first file is written; if it fails nothing is.
    /// Reads no key.
    pub fn commit(
        &self,
        sealed: &SealedVersion,
        audit: &mut dyn FnMut(&VersionMeta) -> Result<(), String>,
    ) -> Result<VersionMeta, SecretsError> {
        let env = sealed.env_id();
        // The sealed text comes from another member: check it as input.
        let path = crate::path::parse_for_env(&sealed.file.path, env)?;
        let invalid = |reason: String| SecretsError::InvalidChange { reason };
        if sealed.file.schema != VERSION_SCHEMA
            || sealed.file.version == 0
            || sealed.file.version > SECRET_VERSIONS_MAX
        {
            return Err(invalid(format!(
                "{path}: a sealed version must have schema {VERSION_SCHEMA} and a version in 1..={SECRET_VERSIONS_MAX}"
            )));
        }
        if sealed
            .data_key
            .as_ref()
            .is_some_and(|key| &key.env_id != env || key.schema != crate::keys::DATA_KEY_SCHEMA)
        {
            return Err(invalid(format!(
                "the sealed data key is not a {} of environment {env}",
                crate::keys::DATA_KEY_SCHEMA
            )));
        }
        let secrets_dir = self.secrets_dir(env);
        create_dirs(&secrets_dir)?;
        let _lock = FileLock::acquire(&layout::secrets_lock(&secrets_dir))?;
        self.commit_locked(sealed, &path, audit)
    }

    /// True when `sealed` is stored here exactly (its version file, nonce
    /// included, which no other seal draws): a change whose answer was lost
    /// was in fact committed.
    pub fn holds(&self, sealed: &SealedVersion) -> Result<bool, SecretsError> {
        let env = sealed.env_id();
        let path = crate::path::parse_for_env(&sealed.file.path, env)?;
        let versions = self.read_versions(env, &path)?;
        Ok(versions.iter().any(|version| version == &sealed.file))
    }

    /// [`commit`](Self::commit) with the store's lock held.
    /// `path` is the sealed version's, already checked by the caller.
    fn commit_locked(
        &self,
        sealed: &SealedVersion,
        path: &SecretPath,
        audit: &mut dyn FnMut(&VersionMeta) -> Result<(), String>,
    ) -> Result<VersionMeta, SecretsError> {
        let env = sealed.env_id();
        let reference = path.reference(env);
        let stale = |reason: String| SecretsError::Stale {
            reference: reference.clone(),
            reason,
        };
        let secrets_dir = self.secrets_dir(env);
        let entry_dir = self.entry_dir(env, path);
        let versions = self.read_versions(env, path)?;
        if sealed.must_exist && versions.is_empty() {
            return Err(SecretsError::NotFound { reference });
        }
        let key_path = layout::secrets_data_key(&secrets_dir);
        let key_bytes = match &sealed.data_key {
            Some(file) => Some(data_key_bytes(file, &key_path)?),
            None => None,
        };
        let write_key = match (key_path.is_file(), &key_bytes) {
            (true, None) => false,
            (true, Some(bytes)) => {
                let existing =
                    std::fs::read(&key_path).map_err(SecretsError::io("read", &key_path))?;
                if &existing != bytes {
                    return Err(stale(
                        "another change made the environment's data key first".to_owned(),
                    ));
                }
                false
            }
            (false, Some(_)) => true,
            (false, None) => {
                return Err(stale(
                    "the environment has no data key to seal under yet".to_owned(),
                ));
            }
        };
        if let Some(idempotency_key) = &sealed.file.idempotency_key
            && versions
                .iter()
                .any(|v| v.idempotency_key.as_deref() == Some(idempotency_key))
        {
            return Err(stale(format!(
                "idempotency key {idempotency_key:?} was used by another change"
            )));
        }
        let latest = versions.last().map_or(0, |v| v.version);
        if latest >= SECRET_VERSIONS_MAX {
            return Err(SecretsError::VersionLimit {
                reference,
                versions: latest,
            });
        }
        if sealed.file.version != latest + 1 {
            return Err(stale(format!(
                "version {} was sealed, but the next version is {}",
                sealed.file.version,
                latest + 1
            )));
        }
        let target = layout::secret_version_file(&entry_dir, sealed.file.version);
        let mut bytes =
            serde_json::to_vec_pretty(&sealed.file).map_err(|error| SecretsError::Malformed {
                path: target.clone(),
                reason: error.to_string(),
            })?;
        bytes.push(b'\n');
        let meta = sealed.meta();
        audit(&meta).map_err(|reason| SecretsError::Audit { reason })?;
        if let (true, Some(key_bytes)) = (write_key, &key_bytes) {
            write_new(&key_path, key_bytes)?;
        }
        create_dirs(&entry_dir)?;
        write_new(&target, &bytes)?;
        Ok(meta)
    }

    /// Metadata of `version` (the latest when `None`) of `path`. Reads no
    /// key: metadata is not secret.
    pub fn get(
        &self,
        env: &EnvId,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<VersionMeta, SecretsError> {
        let versions = self.read_versions(env, path)?;
        pick(env, path, &versions, version).map(|file| file.meta(env))
    }

    /// Metadata and value of `version` (the latest when `None`) of `path`.
    /// A version whose ciphertext or binding was changed is
    /// [`SecretsError::Corrupt`] and nothing of it is returned.
    pub fn reveal(
        &self,
        env: &EnvId,
        path: &SecretPath,
        version: Option<u32>,
    ) -> Result<(VersionMeta, SecretText), SecretsError> {
        let versions = self.read_versions(env, path)?;
        let file = pick(env, path, &versions, version)?;
        let key = data_key(&self.root, env, self.reading_key())?;
        let plaintext = self.open_version(env, path, file, &key)?;
        let corrupt = || self.corrupt(env, path, file.version);
        let text = std::str::from_utf8(&plaintext).map_err(|_| corrupt())?;
        let value = SecretText::new(text.to_owned()).map_err(|_| corrupt())?;
        Ok((file.meta(env), value))
    }

    /// Every path of `env` with its versions, sorted by path; never values.
    pub fn list(&self, env: &EnvId) -> Result<Vec<SecretSummary>, SecretsError> {
        let mut summaries = Vec::new();
        for folder in self.entry_folders(env)? {
            let files = read_folder(env, &folder)?;
            if let Some(last) = files.last() {
                summaries.push(SecretSummary {
                    reference: format!("secret://{env}/{}", last.path),
                    path: last.path.clone(),
                    latest: last.version,
                    versions: files.iter().map(|f| f.meta(env)).collect(),
                });
            }
        }
        summaries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(summaries)
    }

    /// Deletes `version` of `path`. Refused for the latest version (new
    /// revisions pin it, and its number must never be handed out again)
    /// and for a version that does not exist. `check` is called under the
    /// store's lock once the version is found (the caller refuses a pinned
    /// version and audits there); if it fails nothing is removed.
    pub fn remove(
        &self,
        env: &EnvId,
        path: &SecretPath,
        version: u32,
        check: &mut dyn FnMut(&VersionMeta) -> Result<(), SecretsError>,
    ) -> Result<VersionMeta, SecretsError> {
        let secrets_dir = self.secrets_dir(env);
        let reference = path.reference(env);
        let entry_dir = self.entry_dir(env, path);
        if !entry_dir.is_dir() {
            return Err(SecretsError::NotFound { reference });
        }
        let _lock = FileLock::acquire(&layout::secrets_lock(&secrets_dir))?;
        let versions = self.read_versions(env, path)?;
        let file = pick(env, path, &versions, Some(version))?;
        if versions
            .last()
            .is_some_and(|latest| latest.version == version)
        {
            return Err(SecretsError::LatestVersion { reference, version });
        }
        let meta = file.meta(env);
        check(&meta)?;
        let target = layout::secret_version_file(&entry_dir, version);
        std::fs::remove_file(&target).map_err(SecretsError::io("remove", &target))?;
        crate::fs::fsync_dir(&entry_dir)?;
        Ok(meta)
    }

    /// Holds the store's writers' lock for `env` until the guard is
    /// dropped: a stage that pins versions holds it from reading them to
    /// committing the revision, so no version it pins is removed between.
    pub fn hold(&self, env: &EnvId) -> Result<StoreGuard, SecretsError> {
        let secrets_dir = self.secrets_dir(env);
        create_dirs(&secrets_dir)?;
        Ok(StoreGuard {
            _lock: FileLock::acquire(&layout::secrets_lock(&secrets_dir))?,
        })
    }

    fn corrupt(&self, env: &EnvId, path: &SecretPath, version: u32) -> SecretsError {
        SecretsError::Corrupt {
            reference: path.reference(env),
            version,
            file: layout::secret_version_file(&self.entry_dir(env, path), version),
        }
    }

    fn open_version(
        &self,
        env: &EnvId,
        path: &SecretPath,
        file: &VersionFile,
        key: &Key,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, SecretsError> {
        let corrupt = || self.corrupt(env, path, file.version);
        let nonce = STANDARD.decode(&file.nonce).map_err(|_| corrupt())?;
        let ciphertext = STANDARD.decode(&file.ciphertext).map_err(|_| corrupt())?;
        let associated_data = crypto::version_associated_data(env, path, file.version);
        crypto::open(key, &nonce, &associated_data, &ciphertext).map_err(|_| corrupt())
    }

    /// The versions of `path`, oldest first; a file that does not parse or
    /// names another path or version is [`SecretsError::Corrupt`].
    fn read_versions(
        &self,
        env: &EnvId,
        path: &SecretPath,
    ) -> Result<Vec<VersionFile>, SecretsError> {
        let files = read_folder(env, &self.entry_dir(env, path))?;
        if files.iter().any(|f| f.path != path.as_str()) {
            return Err(self.corrupt(env, path, 0));
        }
        Ok(files)
    }
}

/// The check a removal makes (`SecretStore::remove`'s callback, here and
/// on every cluster replica): `meta`'s version may go only while no
/// revision of `environment` that is not archived pins it, since a
/// rollback to one needs it. A missing environment refuses too.
pub fn check_unpinned(
    meta: &VersionMeta,
    environment: Option<&deploy::environment::Environment>,
) -> Result<(), SecretsError> {
    // Decided from the state alone (the same on every replica), so never a
    // local failure that would stop a replica.
    let environment = environment.ok_or_else(|| SecretsError::InvalidChange {
        reason: format!(
            "the environment of {} does not exist, so its revisions cannot be checked",
            meta.reference
        ),
    })?;
    let pinning = environment.revisions_pinning(&meta.reference, meta.version);
    if pinning.is_empty() {
        return Ok(());
    }
    Err(SecretsError::Pinned {
        reference: meta.reference.clone(),
        version: meta.version,
        revisions: pinning.join(", "),
    })
}

/// One environment's secret store as a cluster snapshot carries it: the
/// wrapped data key and every version file as they are on disk (ciphertext
/// and metadata; a snapshot never holds a value or an unwrapped key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsImage {
    pub env_id: EnvId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_key: Option<DataKeyFile>,
    #[serde(default)]
    versions: Vec<VersionFile>,
}

impl SecretsImage {
    /// How many version files the image holds.
    pub fn version_count(&self) -> usize {
        self.versions.len()
    }
}

impl SecretStore {
    /// `env`'s secret store as an image; `None` when it holds nothing.
    /// The caller keeps writers out (a cluster builds it under the lock
    /// that applies entries).
    pub fn image(&self, env: &EnvId) -> Result<Option<SecretsImage>, SecretsError> {
        let secrets_dir = self.secrets_dir(env);
        let key_path = layout::secrets_data_key(&secrets_dir);
        let data_key =
            match std::fs::read(&key_path) {
                Ok(bytes) => Some(serde_json::from_slice::<DataKeyFile>(&bytes).map_err(
                    |error| SecretsError::Malformed {
                        path: key_path.clone(),
                        reason: error.to_string(),
                    },
                )?),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(SecretsError::io("read", &key_path)(error)),
            };
        let mut versions = Vec::new();
        for folder in self.entry_folders(env)? {
            versions.extend(read_folder(env, &folder)?);
        }
        versions.sort_by(|a, b| (&a.path, a.version).cmp(&(&b.path, b.version)));
        if data_key.is_none() && versions.is_empty() {
            return Ok(None);
        }
        Ok(Some(SecretsImage {
            env_id: env.clone(),
            data_key,
            versions,
        }))
    }

    /// Makes `env`'s secret store exactly `image` (empty when `None`): files
    /// it lacks are written, files it does not name are removed, each file
    /// whole or not at all. Every path and file in the image is checked as
    /// input first; nothing is changed if one is invalid.
    pub fn install_image(
        &self,
        env: &EnvId,
        image: Option<&SecretsImage>,
    ) -> Result<(), SecretsError> {
        let secrets_dir = self.secrets_dir(env);
        let mut wanted: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let key_path = layout::secrets_data_key(&secrets_dir);
        let mut key_bytes = None;
        if let Some(image) = image {
            let malformed = |reason: String| SecretsError::InvalidChange { reason };
            if &image.env_id != env {
                return Err(malformed(format!(
                    "the image is of environment {}",
                    image.env_id
                )));
            }
            if let Some(file) = &image.data_key {
                if &file.env_id != env {
                    return Err(malformed(
                        "the image's data key names another environment".to_owned(),
                    ));
                }
                key_bytes = Some(data_key_bytes(file, &key_path)?);
            }
            for file in &image.versions {
                let path = crate::path::parse_for_env(&file.path, env)?;
                if file.schema != VERSION_SCHEMA
                    || &file.env_id != env
                    || file.version == 0
                    || file.version > SECRET_VERSIONS_MAX
                {
                    return Err(malformed(format!(
                        "version {} of {} is not a valid version file",
                        file.version, file.path
                    )));
                }
                let target = layout::secret_version_file(&self.entry_dir(env, &path), file.version);
                let mut bytes =
                    serde_json::to_vec_pretty(file).map_err(|error| SecretsError::Malformed {
                        path: target.clone(),
                        reason: error.to_string(),
                    })?;
                bytes.push(b'\n');
                wanted.push((target, bytes));
            }
        }
        if image.is_none() && !secrets_dir.is_dir() {
            return Ok(());
        }
        create_dirs(&secrets_dir)?;
        let _lock = FileLock::acquire(&layout::secrets_lock(&secrets_dir))?;
        replace_file(&key_path, key_bytes.as_deref())?;
        // Remove what the image does not name, then write what is missing.
        for folder in self.entry_folders(env)? {
            let entries = std::fs::read_dir(&folder).map_err(SecretsError::io("list", &folder))?;
            for entry in entries {
                let entry = entry.map_err(SecretsError::io("list", &folder))?;
                let file = entry.path();
                if !wanted.iter().any(|(target, _)| target == &file) {
                    std::fs::remove_file(&file).map_err(SecretsError::io("remove", &file))?;
                }
            }
            crate::fs::fsync_dir(&folder)?;
        }
        for (target, bytes) in &wanted {
            if let Some(folder) = target.parent() {
                create_dirs(folder)?;
            }
            replace_file(target, Some(bytes))?;
        }
        Ok(())
    }

    /// The folders of `env`'s secret paths.
    fn entry_folders(&self, env: &EnvId) -> Result<Vec<PathBuf>, SecretsError> {
        let entries_dir = self.secrets_dir(env).join(layout::SECRETS_ENTRIES_DIR);
        let folders = match std::fs::read_dir(&entries_dir) {
            Ok(folders) => folders,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(error) => return Err(SecretsError::io("list", &entries_dir)(error)),
        };
        let mut paths = Vec::new();
        for folder in folders {
            paths.push(
                folder
                    .map_err(SecretsError::io("list", &entries_dir))?
                    .path(),
            );
        }
        paths.sort();
        Ok(paths)
    }
}

/// Makes `path` hold exactly `bytes` (absent when `None`); a file that
/// already holds them is left alone.
fn replace_file(path: &Path, bytes: Option<&[u8]>) -> Result<(), SecretsError> {
    let existing = match std::fs::read(path) {
        Ok(existing) => Some(existing),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(SecretsError::io("read", path)(error)),
    };
    if existing.as_deref() == bytes {
        return Ok(());
    }
    if existing.is_some() {
        std::fs::remove_file(path).map_err(SecretsError::io("remove", path))?;
    }
    match bytes {
        Some(bytes) => write_new(path, bytes),
        None => crate::fs::fsync_dir(path.parent().unwrap_or(Path::new("."))),
    }
}

fn pick<'a>(
    env: &EnvId,
    path: &SecretPath,
    versions: &'a [VersionFile],
    version: Option<u32>,
) -> Result<&'a VersionFile, SecretsError> {
    let reference = path.reference(env);
    let Some(latest) = versions.last() else {
        return Err(SecretsError::NotFound { reference });
    };
    match version {
        None => Ok(latest),
        Some(wanted) => {
            versions
                .iter()
                .find(|v| v.version == wanted)
                .ok_or(SecretsError::VersionNotFound {
                    reference,
                    version: wanted,
                    latest: latest.version,
                })
        }
    }
}

/// The version files of one entry folder, by version; none when it does
/// not exist. Temporary files of an interrupted write are ignored.
fn read_folder(env: &EnvId, folder: &Path) -> Result<Vec<VersionFile>, SecretsError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(SecretsError::io("list", folder)(error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(SecretsError::io("list", folder))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        let path = entry.path();
        let corrupt = |reason: String| SecretsError::Malformed {
            path: path.clone(),
            reason,
        };
        let number: u32 = stem
            .parse()
            .map_err(|_| corrupt("the file name is not a version number".to_owned()))?;
        let size = entry
            .metadata()
            .map_err(SecretsError::io("read", &path))?
            .len();
        if size > VERSION_FILE_BYTES_MAX {
            return Err(corrupt(format!(
                "{size} bytes; a version file is at most {VERSION_FILE_BYTES_MAX}"
            )));
        }
        let bytes =
            zeroize::Zeroizing::new(std::fs::read(&path).map_err(SecretsError::io("read", &path))?);
        let file: VersionFile =
            serde_json::from_slice(&bytes).map_err(|error| corrupt(error.to_string()))?;
        if file.schema != VERSION_SCHEMA || &file.env_id != env || file.version != number {
            return Err(corrupt(format!(
                "expected schema {VERSION_SCHEMA}, environment {env}, version {number}"
            )));
        }
        files.push(file);
    }
    files.sort_by_key(|f| f.version);
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(origin: Origin, key: Option<&str>) -> WriteRequest {
        WriteRequest {
            created_by: "tester".to_owned(),
            origin,
            idempotency_key: key.map(str::to_owned),
            at: chrono::Utc::now(),
        }
    }

    fn text(value: &str) -> SecretText {
        SecretText::new(value.to_owned()).expect("valid")
    }

    fn no_audit() -> impl FnMut(&VersionMeta, bool) -> Result<(), String> {
        |_, _| Ok(())
    }

    fn every_file(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("list").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push((path.clone(), std::fs::read(&path).expect("read")));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn versions_round_trip_and_the_disk_holds_no_plaintext() {
        // Proves: put/rotate add versions with who and when, reveal returns
        // each version's own value, list shows no values, and no file holds
        // the value in any of its plain, base64 or hex forms.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("db/password").expect("path");
        let marker = "MARKER-4f1c9a-value";
        let first = store
            .put(
                &env,
                &path,
                &text(marker),
                request(Origin::Put, None),
                &mut no_audit(),
            )
            .expect("put");
        assert_eq!((first.meta.version, first.replayed), (1, false));
        let second = store
            .rotate(
                &env,
                &path,
                &text("other"),
                request(Origin::Rotate, None),
                &mut no_audit(),
            )
            .expect("rotate");
        assert_eq!(second.meta.version, 2);
        assert_eq!(
            store.reveal(&env, &path, Some(1)).expect("v1").1.expose(),
            marker
        );
        assert_eq!(
            store.reveal(&env, &path, None).expect("latest").1.expose(),
            "other"
        );
        let listed = store.list(&env).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].latest, 2);
        assert_eq!(listed[0].versions[0].created_by, "tester");
        let forms = [
            marker.as_bytes().to_vec(),
            STANDARD.encode(marker).into_bytes(),
            hex::encode(marker).into_bytes(),
        ];
        for (file, bytes) in every_file(dir.path()) {
            for form in &forms {
                assert!(
                    !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                    "{} holds the value",
                    file.display()
                );
            }
        }
        let key_file = layout::secrets_node_key(dir.path());
        let mode = std::fs::metadata(&key_file).expect("key").permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn idempotent_retries_replay_and_conflicts_are_refused() {
        // Proves: same key and value adds no version; same key, new value is refused.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("api/token").expect("path");
        let put = |value: &str| {
            store.put(
                &env,
                &path,
                &text(value),
                request(Origin::Put, Some("k1")),
                &mut no_audit(),
            )
        };
        assert!(!put("v").expect("first").replayed);
        let again = put("v").expect("replay");
        assert_eq!((again.meta.version, again.replayed), (1, true));
        assert!(matches!(
            put("w"),
            Err(SecretsError::IdempotencyConflict { .. })
        ));
        assert_eq!(store.list(&env).expect("list")[0].latest, 1);
    }

    #[test]
    fn a_failed_audit_writes_no_version() {
        // Proves: the audit callback runs before the version file is created.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("a").expect("path");
        let result = store.put(
            &env,
            &path,
            &text("v"),
            request(Origin::Put, None),
            &mut |_, _| Err("disk full".to_owned()),
        );
        assert!(matches!(result, Err(SecretsError::Audit { .. })));
        assert!(store.list(&env).expect("list").is_empty());
    }

    #[test]
    fn corruption_and_missing_keys_are_specific_errors() {
        // Proves: a changed ciphertext byte is Corrupt (never returned), a
        // version file moved to another path does not open, a missing node
        // key is NodeKeyMissing and is not silently replaced, and a wrong
        // node key cannot open the data key.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let a = SecretPath::parse("a").expect("path");
        let b = SecretPath::parse("b").expect("path");
        for path in [&a, &b] {
            store
                .put(
                    &env,
                    path,
                    &text("value"),
                    request(Origin::Put, None),
                    &mut no_audit(),
                )
                .expect("put");
        }
        let secrets = layout::secrets_dir(dir.path(), &env);
        let file_a =
            layout::secret_version_file(&layout::secret_entry_dir(&secrets, &a.digest()), 1);
        let file_b =
            layout::secret_version_file(&layout::secret_entry_dir(&secrets, &b.digest()), 1);
        let original = std::fs::read(&file_a).expect("read");
        let mut document: serde_json::Value = serde_json::from_slice(&original).expect("json");
        let mut ciphertext = STANDARD
            .decode(document["ciphertext"].as_str().expect("ct"))
            .expect("b64");
        ciphertext[0] ^= 0x01;
        document["ciphertext"] = serde_json::json!(STANDARD.encode(&ciphertext));
        std::fs::write(&file_a, document.to_string()).expect("tamper");
        assert!(matches!(
            store.reveal(&env, &a, None),
            Err(SecretsError::Corrupt { version: 1, .. })
        ));
        // b's ciphertext copied into a's file (path field kept): sealed for b, refused at a.
        let mut moved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file_b).expect("read")).expect("json");
        moved["path"] = serde_json::json!("a");
        std::fs::write(&file_a, moved.to_string()).expect("move");
        assert!(matches!(
            store.reveal(&env, &a, None),
            Err(SecretsError::Corrupt { .. })
        ));
        std::fs::write(&file_a, &original).expect("restore");
        assert_eq!(
            store.reveal(&env, &a, None).expect("intact").1.expose(),
            "value"
        );

        let key_file = layout::secrets_node_key(dir.path());
        let key = std::fs::read(&key_file).expect("key");
        std::fs::remove_file(&key_file).expect("remove");
        assert!(matches!(
            store.reveal(&env, &a, None),
            Err(SecretsError::NodeKeyMissing { .. })
        ));
        let other = "other".parse::<EnvId>().expect("env");
        assert!(matches!(
            store.put(
                &other,
                &a,
                &text("v"),
                request(Origin::Put, None),
                &mut no_audit()
            ),
            Err(SecretsError::NodeKeyMissing { .. })
        ));
        assert!(!key_file.exists(), "a missing node key is never replaced");
        std::fs::write(&key_file, [9u8; 32]).expect("wrong key");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            store.reveal(&env, &a, None),
            Err(SecretsError::DataKeyUnwrap { .. })
        ));
        std::fs::write(&key_file, &key).expect("put key back");
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(
            store.reveal(&env, &a, None),
            Err(SecretsError::NodeKeyPermissions { .. })
        ));
    }

    #[test]
    fn a_write_interrupted_before_its_rename_leaves_no_version() {
        // Proves: the temp file a crashed write leaves behind is not a
        // version; the next put still makes version 2 and reads work.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("a").expect("path");
        store
            .put(
                &env,
                &path,
                &text("v1"),
                request(Origin::Put, None),
                &mut no_audit(),
            )
            .expect("put");
        let entry =
            layout::secret_entry_dir(&layout::secrets_dir(dir.path(), &env), &path.digest());
        std::fs::write(entry.join(".tmp-half"), b"{\"schema\": \"greentic.sec").expect("torn temp");
        assert_eq!(store.list(&env).expect("list")[0].latest, 1);
        let next = store
            .put(
                &env,
                &path,
                &text("v2"),
                request(Origin::Put, None),
                &mut no_audit(),
            )
            .expect("put");
        assert_eq!(next.meta.version, 2);
        assert_eq!(
            store.reveal(&env, &path, None).expect("reveal").1.expose(),
            "v2"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&entry)
            .expect("entry")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "secret folders are the owner's only");
    }

    #[test]
    fn unknown_paths_and_versions_are_not_found() {
        // Proves: get and rotate of what does not exist say so and write nothing.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("nope").expect("path");
        assert!(matches!(
            store.get(&env, &path, None),
            Err(SecretsError::NotFound { .. })
        ));
        assert!(matches!(
            store.rotate(
                &env,
                &path,
                &text("v"),
                request(Origin::Rotate, None),
                &mut no_audit()
            ),
            Err(SecretsError::NotFound { .. })
        ));
        assert!(every_file(dir.path()).is_empty());
        store
            .put(
                &env,
                &path,
                &text("v"),
                request(Origin::Put, None),
                &mut no_audit(),
            )
            .expect("put");
        assert!(matches!(
            store.get(&env, &path, Some(5)),
            Err(SecretsError::VersionNotFound {
                version: 5,
                latest: 1,
                ..
            })
        ));
    }

    #[test]
    fn an_old_version_is_removed_under_the_callers_check_and_the_latest_never_is() {
        // Proves: the latest version is refused (its number must not be
        // handed out again); a failing check (a pin, a failed audit) removes
        // nothing; an old version is removed and then not found, the others
        // still open, and the next put takes the next number.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::new(dir.path());
        let env = EnvId::local();
        let path = SecretPath::parse("db/password").expect("path");
        for value in ["one", "two", "three"] {
            store
                .put(
                    &env,
                    &path,
                    &text(value),
                    request(Origin::Put, None),
                    &mut no_audit(),
                )
                .expect("put");
        }
        assert!(matches!(
            store.remove(&env, &path, 3, &mut |_| Ok(())),
            Err(SecretsError::LatestVersion { version: 3, .. })
        ));
        assert!(matches!(
            store.remove(&env, &path, 9, &mut |_| Ok(())),
            Err(SecretsError::VersionNotFound { version: 9, .. })
        ));
        let pinned = store.remove(&env, &path, 2, &mut |meta| {
            Err(SecretsError::Pinned {
                reference: meta.reference.clone(),
                version: meta.version,
                revisions: "r1".to_owned(),
            })
        });
        assert!(matches!(pinned, Err(SecretsError::Pinned { .. })));
        assert_eq!(
            store.reveal(&env, &path, Some(2)).expect("kept").1.expose(),
            "two"
        );
        let removed = store
            .remove(&env, &path, 2, &mut |_| Ok(()))
            .expect("removed");
        assert_eq!(removed.version, 2);
        assert!(matches!(
            store.reveal(&env, &path, Some(2)),
            Err(SecretsError::VersionNotFound { .. })
        ));
        assert_eq!(
            store.reveal(&env, &path, Some(1)).expect("v1").1.expose(),
            "one"
        );
        let next = store
            .put(
                &env,
                &path,
                &text("four"),
                request(Origin::Put, None),
                &mut no_audit(),
            )
            .expect("put");
        assert_eq!(next.meta.version, 4);
        let listed = store.list(&env).expect("list");
        let versions: Vec<u32> = listed[0].versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, [1, 3, 4]);
        assert!(matches!(
            store.remove(
                &env,
                &SecretPath::parse("nothing").expect("path"),
                1,
                &mut |_| Ok(())
            ),
            Err(SecretsError::NotFound { .. })
        ));
    }
    /// Three replica roots sharing one cluster secrets key, as a cluster's
    /// members do.
    fn replicas(temp: &Path) -> Vec<SecretStore> {
        let key_file = temp.join("secrets.key");
        write_new(&key_file, &[7u8; crate::crypto::KEY_BYTES]).expect("key");
        (0..3)
            .map(|i| {
                let store = SecretStore::replica(temp.join(format!("n{i}")));
                store.install_cluster_key(&key_file).expect("install");
                store
            })
            .collect()
    }

    fn sealed(
        store: &SecretStore,
        env: &EnvId,
        path: &SecretPath,
        value: &str,
        key: Option<&str>,
    ) -> SealedVersion {
        match store
            .seal(env, path, &text(value), request(Origin::Put, key), false)
            .expect("seal")
        {
            Sealing::New(sealed) => *sealed,
            Sealing::Replay(meta) => panic!("unexpected replay of {meta:?}"),
        }
    }

    fn commit_everywhere(
        stores: &[SecretStore],
        sealed: &SealedVersion,
    ) -> Vec<Result<u32, String>> {
        // The log carries the sealed change as JSON.
        let wire = serde_json::to_string(sealed).expect("json");
        assert!(
            !wire.contains("replicated-marker"),
            "no value on the wire: {wire}"
        );
        let sealed: SealedVersion = serde_json::from_str(&wire).expect("parse");
        stores
            .iter()
            .map(|store| {
                store
                    .commit(&sealed, &mut |_| Ok(()))
                    .map(|meta| meta.version)
                    .map_err(|error| error.code().to_owned())
            })
            .collect()
    }

    #[test]
    fn a_version_sealed_on_one_replica_opens_on_every_replica() {
        let temp = tempfile::tempdir().expect("temp");
        let stores = replicas(temp.path());
        let env: EnvId = "prod".parse().expect("env");
        let path = SecretPath::parse("db/password").expect("path");
        let first = sealed(&stores[1], &env, &path, "replicated-marker-1", None);
        assert_eq!(
            commit_everywhere(&stores, &first),
            vec![Ok(1), Ok(1), Ok(1)]
        );
        let second = sealed(&stores[2], &env, &path, "replicated-marker-2", Some("k"));
        assert_eq!(
            commit_everywhere(&stores, &second),
            vec![Ok(2), Ok(2), Ok(2)]
        );
        for store in &stores {
            let (meta, value) = store.reveal(&env, &path, Some(1)).expect("reveal");
            assert_eq!((meta.version, value.expose()), (1, "replicated-marker-1"));
            let (_, value) = store.reveal(&env, &path, None).expect("reveal");
            assert_eq!(value.expose(), "replicated-marker-2");
        }
        // The replicas' secret folders are byte-identical.
        let files = |i: usize| {
            every_file(&temp.path().join(format!("n{i}/prod/secrets")))
                .into_iter()
                .filter(|(p, _)| !p.ends_with(".lock"))
                .map(|(p, b)| {
                    (
                        p.strip_prefix(temp.path().join(format!("n{i}")))
                            .expect("prefix")
                            .to_owned(),
                        b,
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(files(0), files(1));
        assert_eq!(files(0), files(2));
        // A retried put with the same key and value is a replay on any replica.
        match stores[0]
            .seal(
                &env,
                &path,
                &text("replicated-marker-2"),
                request(Origin::Put, Some("k")),
                false,
            )
            .expect("seal")
        {
            Sealing::Replay(meta) => assert_eq!(meta.version, 2),
            Sealing::New(_) => panic!("a retried put must replay"),
        }
    }

    #[test]
    fn changes_sealed_concurrently_commit_once_and_the_loser_is_stale() {
        let temp = tempfile::tempdir().expect("temp");
        let stores = replicas(temp.path());
        let env: EnvId = "prod".parse().expect("env");
        let path = SecretPath::parse("api/token").expect("path");
        // Two members seal the environment's first secret at once: each
        // makes a data key; the one committed second is stale everywhere.
        let a = sealed(&stores[0], &env, &path, "value-a", Some("same"));
        let b = sealed(&stores[1], &env, &path, "value-b", Some("same"));
        assert_eq!(commit_everywhere(&stores, &a), vec![Ok(1), Ok(1), Ok(1)]);
        assert_eq!(
            commit_everywhere(&stores, &b),
            vec![
                Err("stale".to_owned()),
                Err("stale".to_owned()),
                Err("stale".to_owned())
            ]
        );
        // Sealed again, the same key with another value is the conflict a
        // single node answers.
        let again = stores[1].seal(
            &env,
            &path,
            &text("value-b"),
            request(Origin::Put, Some("same")),
            false,
        );
        assert_eq!(
            again.map(|_| ()).map_err(|e| e.code()),
            Err("idempotency-conflict")
        );
        // Two versions 2 sealed at once: the second is stale, its retry is 3.
        let c = sealed(&stores[0], &env, &path, "value-c", None);
        let d = sealed(&stores[2], &env, &path, "value-d", None);
        assert_eq!(commit_everywhere(&stores, &c), vec![Ok(2), Ok(2), Ok(2)]);
        assert!(
            commit_everywhere(&stores, &d)
                .iter()
                .all(|r| r == &Err("stale".to_owned()))
        );
        let d = sealed(&stores[2], &env, &path, "value-d", None);
        assert_eq!(commit_everywhere(&stores, &d), vec![Ok(3), Ok(3), Ok(3)]);
        // A refused audit writes nothing.
        let e = sealed(&stores[0], &env, &path, "value-e", None);
        let refused = stores[0].commit(&e, &mut |_| Err("disk full".to_owned()));
        assert_eq!(refused.map(|_| ()).map_err(|e| e.code()), Err("audit"));
        assert_eq!(stores[0].get(&env, &path, None).expect("get").version, 3);
    }

    #[test]
    fn a_sealed_version_from_the_network_is_checked_as_input() {
        let temp = tempfile::tempdir().expect("temp");
        let stores = replicas(temp.path());
        let env: EnvId = "prod".parse().expect("env");
        let path = SecretPath::parse("db/password").expect("path");
        let good = sealed(&stores[0], &env, &path, "value", None);
        let mut wire: serde_json::Value = serde_json::to_value(&good).expect("json");
        wire["file"]["path"] = serde_json::json!("../../etc/passwd");
        let bad: SealedVersion = serde_json::from_value(wire).expect("shape");
        let refused = stores[1].commit(&bad, &mut |_| Ok(()));
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.code()),
            Err("dot-segment")
        );
        let mut wire: serde_json::Value = serde_json::to_value(&good).expect("json");
        wire["file"]["version"] = serde_json::json!(SECRET_VERSIONS_MAX + 1);
        let bad: SealedVersion = serde_json::from_value(wire).expect("shape");
        let refused = stores[1].commit(&bad, &mut |_| Ok(()));
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.code()),
            Err("invalid-change")
        );
        assert!(
            every_file(&temp.path().join("n1"))
                .iter()
                .all(|(p, _)| !p.to_string_lossy().contains("entries"))
        );
    }

    #[test]
    fn a_replica_never_makes_its_own_key_and_keeps_the_one_it_has() {
        let temp = tempfile::tempdir().expect("temp");
        let env: EnvId = "prod".parse().expect("env");
        let path = SecretPath::parse("db/password").expect("path");
        let bare = SecretStore::replica(temp.path().join("bare"));
        let refused = bare.seal(&env, &path, &text("v"), request(Origin::Put, None), false);
        assert_eq!(
            refused.map(|_| ()).map_err(|e| e.code()),
            Err("cluster-key-missing")
        );
        assert!(!temp.path().join("bare/secrets-node.key").exists());
        let stores = replicas(temp.path());
        let other = temp.path().join("other.key");
        write_new(&other, &[9u8; crate::crypto::KEY_BYTES]).expect("key");
        let refused = stores[0].install_cluster_key(&other);
        assert_eq!(refused.map_err(|e| e.code()), Err("cluster-key-mismatch"));
        stores[0]
            .install_cluster_key(&temp.path().join("secrets.key"))
            .expect("same key again");
    }

    #[test]
    fn an_image_makes_a_replica_exactly_the_source() {
        let temp = tempfile::tempdir().expect("temp");
        let stores = replicas(temp.path());
        let env: EnvId = "prod".parse().expect("env");
        for (i, name) in ["a", "b/c"].iter().enumerate() {
            let path = SecretPath::parse(name).expect("path");
            for round in 0..2 {
                let version = sealed(&stores[0], &env, &path, &format!("v{i}{round}"), None);
                stores[0].commit(&version, &mut |_| Ok(())).expect("commit");
            }
        }
        // Replica 2 holds a path the source does not: the image removes it.
        let stray = SecretPath::parse("stray").expect("path");
        let version = sealed(&stores[2], &env, &stray, "x", None);
        stores[2].commit(&version, &mut |_| Ok(())).expect("commit");
        let image = stores[0].image(&env).expect("image").expect("something");
        assert_eq!(image.version_count(), 4);
        let wire = serde_json::to_string(&image).expect("json");
        assert!(
            !wire.contains("v00") && !wire.contains("v11"),
            "no value in an image"
        );
        let image: SecretsImage = serde_json::from_str(&wire).expect("parse");
        for store in &stores[1..] {
            store.install_image(&env, Some(&image)).expect("install");
            assert_eq!(
                store.list(&env).expect("list"),
                stores[0].list(&env).expect("list")
            );
            let (_, value) = store
                .reveal(&env, &SecretPath::parse("b/c").expect("p"), None)
                .expect("reveal");
            assert_eq!(value.expose(), "v11");
        }
        // No image: the environment's secrets are gone.
        stores[1].install_image(&env, None).expect("clear");
        assert!(stores[1].list(&env).expect("list").is_empty());
        assert!(stores[1].image(&env).expect("image").is_none());
    }
}
