//! `<env dir>/credentials.json`: the environment's `greentic.credentials.v1`
//! document, read whole and written atomically (a temporary file beside
//! it, synced, then renamed), validated before every write.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use deploy::credentials::Credentials;
use deploy::error::ErrorKind;

use crate::error::CliError;

/// The document's file name in the environment's folder.
pub const FILE: &str = "credentials.json";
/// Largest document read: a few hundred bytes in practice.
const DOCUMENT_BYTES_MAX: u64 = 64 * 1024;

pub fn path(env_dir: &Path) -> PathBuf {
    env_dir.join(FILE)
}

/// The document, or `None` when the environment has none yet.
pub fn load(env_dir: &Path) -> Result<Option<Credentials>, CliError> {
    let path = path(env_dir);
    let unreadable = |reason: String| {
        CliError::new(
            ErrorKind::Io,
            format!("{} cannot be read: {reason}", path.display()),
        )
    };
    match std::fs::metadata(&path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(error.to_string())),
        Ok(metadata) if metadata.len() > DOCUMENT_BYTES_MAX => {
            return Err(unreadable(format!(
                "it holds {} bytes, more than the {DOCUMENT_BYTES_MAX} a credentials document may",
                metadata.len()
            )));
        }
        Ok(_) => {}
    }
    let text = std::fs::read_to_string(&path).map_err(|error| unreadable(error.to_string()))?;
    let document: Credentials = serde_json::from_str(&text).map_err(|error| {
        CliError::new(
            ErrorKind::Spec,
            format!("{} is not a credentials document: {error}", path.display()),
        )
    })?;
    document.validate().map_err(|error| {
        CliError::new(
            ErrorKind::Spec,
            format!("{} is not valid: {error}", path.display()),
        )
    })?;
    Ok(Some(document))
}

/// Validates `document` and replaces the file with it atomically.
pub fn save(env_dir: &Path, document: &Credentials) -> Result<PathBuf, CliError> {
    document.validate().map_err(|error| {
        CliError::new(
            ErrorKind::Spec,
            format!("the credentials document would be invalid: {error}"),
        )
    })?;
    let bytes = serde_json::to_vec_pretty(document).map_err(|error| {
        CliError::new(
            ErrorKind::Internal,
            format!("the credentials document cannot be written as JSON: {error}"),
        )
    })?;
    let target = path(env_dir);
    write_atomic(&target, &bytes).map_err(|error| {
        CliError::new(
            ErrorKind::Io,
            format!("{} cannot be written: {error}", target.display()),
        )
    })?;
    Ok(target)
}

/// Writes `bytes` to `target` through a synced temporary file and a rename,
/// so a reader sees the old file or the new one, never half of one.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = target.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, target)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}
