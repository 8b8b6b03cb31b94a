//! The node key file and each environment's wrapped data key.
//!
//! The node key (`<root>/secrets-node.key`, 32 random bytes, mode 0600) is
//! created the first time a secret is stored, but only while no
//! environment of the root has a data key: once one exists, a missing node
//! key is [`SecretsError::NodeKeyMissing`] rather than a new key that
//! would silently orphan every stored secret. A key file readable by group
//! or others is refused.
//!
//! Each environment's data key (32 random bytes) is sealed under the node
//! key with the environment as associated data and kept in
//! `<env>/secrets/data-key.json`; only the wrapped form ever touches disk.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use deploy::ids::EnvId;
use deploy::layout;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::crypto::{self, KEY_BYTES, Key, NONCE_BYTES};
use crate::error::SecretsError;
use crate::fs::{create_dirs, write_new};

/// Schema of a wrapped data key file.
pub const DATA_KEY_SCHEMA: &str = "greentic.secret-data-key.v1";

/// `<env>/secrets/data-key.json`. It travels in a cluster's log and
/// snapshots as it is: the data key inside is wrapped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DataKeyFile {
    pub(crate) schema: String,
    pub(crate) env_id: EnvId,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
    /// Base64 of the 24-byte nonce.
    pub(crate) nonce: String,
    /// Base64 of the data key sealed under the node key.
    pub(crate) wrapped: String,
}

/// Fills `bytes` from the operating system.
pub(crate) fn random(bytes: &mut [u8]) -> Result<(), SecretsError> {
    getrandom::fill(bytes).map_err(|error| {
        SecretsError::Value(crate::value::ValueError::Random {
            reason: error.to_string(),
        })
    })
}

/// A random 24-byte nonce.
pub(crate) fn nonce() -> Result<[u8; NONCE_BYTES], SecretsError> {
    let mut nonce = [0u8; NONCE_BYTES];
    random(&mut nonce)?;
    Ok(nonce)
}

fn new_key() -> Result<Key, SecretsError> {
    let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
    random(&mut bytes[..])?;
    Ok(Key::from_bytes(*bytes))
}

/// Reads the node key at `path`; `None` when the file does not exist.
fn read_node_key(path: &Path) -> Result<Option<Key>, SecretsError> {
    let unreadable = |reason: String| SecretsError::NodeKeyUnreadable {
        path: path.to_owned(),
        reason,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error.to_string())),
    };
    let mode = file
        .metadata()
        .map_err(|error| unreadable(error.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(SecretsError::NodeKeyPermissions {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_BYTES + 1));
    file.take(KEY_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| unreadable(error.to_string()))?;
    let array: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
        unreadable(format!(
            "it holds {} bytes; a node key is exactly {KEY_BYTES}",
            bytes.len()
        ))
    })?;
    Ok(Some(Key::from_bytes(array)))
}

/// True when some environment under `root` has a wrapped data key.
fn any_data_key(root: &Path) -> Result<bool, SecretsError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(SecretsError::io("list", root)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(SecretsError::io("list", root))?;
        let candidate = layout::secrets_data_key(&entry.path().join(layout::SECRETS_DIR));
        if candidate.is_file() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where the key that wraps data keys comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKey {
    /// This machine's own key, made the first time a secret is stored.
    Create,
    /// This machine's own key, which must exist.
    Existing,
    /// A cluster member's replica: the cluster secrets key installed at the
    /// member's start ([`install_node_key`]); never made here, since a key
    /// only this member held would wrap data keys the others cannot open.
    Replica,
}

/// The node key, created when absent and no data key depends on one.
fn node_key(root: &Path, mode: NodeKey) -> Result<Key, SecretsError> {
    let path = layout::secrets_node_key(root);
    if let Some(key) = read_node_key(&path)? {
        return Ok(key);
    }
    if mode == NodeKey::Replica {
        return Err(SecretsError::ClusterKeyMissing { path });
    }
    if mode == NodeKey::Existing || any_data_key(root)? {
        return Err(SecretsError::NodeKeyMissing { path });
    }
    let key = new_key()?;
    create_dirs(root)?;
    match write_new(&path, key.as_bytes()) {
        Ok(()) => Ok(key),
        // Another process created it first: use that one.
        Err(SecretsError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::AlreadyExists =>
        {
            read_node_key(&path)?.ok_or(SecretsError::NodeKeyMissing { path })
        }
        Err(error) => Err(error),
    }
}

/// Makes `source` (a cluster's secrets key file, 32 bytes, mode 0600) the
/// node key of the replica at `root`: written when the replica has none,
/// accepted when it is the same key, refused when it differs (the
/// replica's data keys were wrapped with the one it has).
pub(crate) fn install_node_key(root: &Path, source: &Path) -> Result<(), SecretsError> {
    let key = read_node_key(source)?.ok_or_else(|| SecretsError::NodeKeyUnreadable {
        path: source.to_owned(),
        reason: "the file does not exist".to_owned(),
    })?;
    let path = layout::secrets_node_key(root);
    match read_node_key(&path)? {
        Some(existing) if existing.as_bytes() == key.as_bytes() => Ok(()),
        Some(_) => Err(SecretsError::ClusterKeyMismatch {
            source_file: source.to_owned(),
            path,
        }),
        None => {
            create_dirs(root)?;
            write_new(&path, key.as_bytes())
        }
    }
}

/// The data key of `env` opened with the node key; `None` when the
/// environment has none yet.
pub(crate) fn open_data_key(
    root: &Path,
    env: &EnvId,
    mode: NodeKey,
) -> Result<Option<Key>, SecretsError> {
    let secrets_dir = layout::secrets_dir(root, env);
    let path = layout::secrets_data_key(&secrets_dir);
    let text = match std::fs::read(&path) {
        Ok(text) => Zeroizing::new(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(SecretsError::io("read", &path)(error)),
    };
    let node_key = node_key(
        root,
        if mode == NodeKey::Replica {
            NodeKey::Replica
        } else {
            NodeKey::Existing
        },
    )?;
    let malformed = |reason: String| SecretsError::Malformed {
        path: path.clone(),
        reason,
    };
    let file: DataKeyFile =
        serde_json::from_slice(&text).map_err(|error| malformed(error.to_string()))?;
    if file.schema != DATA_KEY_SCHEMA || &file.env_id != env {
        return Err(malformed(format!(
            "expected schema {DATA_KEY_SCHEMA} for environment {env}"
        )));
    }
    let decode = |text: &str| STANDARD.decode(text).map_err(|e| malformed(e.to_string()));
    let opened = crypto::open(
        &node_key,
        &decode(&file.nonce)?,
        &crypto::data_key_associated_data(env),
        &decode(&file.wrapped)?,
    )
    .map_err(|_| SecretsError::DataKeyUnwrap {
        env: env.to_string(),
        path: layout::secrets_node_key(root),
    })?;
    let array: [u8; KEY_BYTES] = opened
        .as_slice()
        .try_into()
        .map_err(|_| malformed(format!("the data key is not {KEY_BYTES} bytes")))?;
    Ok(Some(Key::from_bytes(array)))
}

/// The data key of `env`, which must exist (a reveal).
pub(crate) fn data_key(root: &Path, env: &EnvId, mode: NodeKey) -> Result<Key, SecretsError> {
    open_data_key(root, env, mode)?.ok_or_else(|| SecretsError::Malformed {
        path: layout::secrets_data_key(&layout::secrets_dir(root, env)),
        reason: "the environment has no data key; no secret was ever stored".to_owned(),
    })
}

/// A new random data key for `env` and its file, wrapped under the node key
/// (made first when `mode` allows); nothing is written.
pub(crate) fn new_data_key(
    root: &Path,
    env: &EnvId,
    mode: NodeKey,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(Key, DataKeyFile), SecretsError> {
    let node_key = node_key(root, mode)?;
    let data_key = new_key()?;
    let nonce = nonce()?;
    let wrapped = crypto::seal(
        &node_key,
        &nonce,
        &crypto::data_key_associated_data(env),
        data_key.as_bytes(),
    )
    .map_err(|_| SecretsError::DataKeyUnwrap {
        env: env.to_string(),
        path: layout::secrets_node_key(root),
    })?;
    let file = DataKeyFile {
        schema: DATA_KEY_SCHEMA.to_owned(),
        env_id: env.clone(),
        created_at: at,
        nonce: STANDARD.encode(nonce),
        wrapped: STANDARD.encode(wrapped),
    };
    Ok((data_key, file))
}

/// The bytes of a data key file as every replica writes them.
pub(crate) fn data_key_bytes(file: &DataKeyFile, path: &Path) -> Result<Vec<u8>, SecretsError> {
    let mut bytes = serde_json::to_vec_pretty(file).map_err(|error| SecretsError::Malformed {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    bytes.push(b'\n');
    Ok(bytes)
}
