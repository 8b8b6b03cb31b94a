//! Stage time, for a bundle that ships its image: check the archive stays
//! inside the bundle and hashes to the digest the bundle pins, then load it
//! into the engine (`POST /images/load`, streamed from the file) and return
//! the loaded image's id, which the revision is pinned to exactly as an
//! image already on the engine is.
//!
//! Nothing reaches the engine before the path and the digest are checked.
//! Loaded images are left on the engine whatever happens after the load:
//! images are shared (another revision, or an image already there, may be
//! the same one), and the engine's own `docker image prune` is the way to
//! remove the unused ones.

use std::collections::BTreeSet;
use std::io::{Read, Seek};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use packs::deployer::{DeployerError, RevisionSpec};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::engine::{ENGINE_FIX, Engine};

/// The largest image archive a bundle may ship: 2 GiB. Read in chunks, never
/// whole into memory; a bigger file is refused before it is hashed.
pub const ARCHIVE_SIZE_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Seconds one load may take (the engine answers only after it has read and
/// unpacked the whole archive, far longer than an ordinary request).
pub const LOAD_TIMEOUT_SECONDS: u64 = 1800;
/// Bytes read from the archive at a time, to hash it and to send it.
const CHUNK: usize = 256 * 1024;
/// What to do when the engine will not load the file.
const FORMAT_FIX: &str = "the archive must be a tar written by `docker save IMAGE -o FILE` \
    (or an OCI image layout tar, on an engine that loads those: Docker 25 or later); \
    check it with `tar -tf FILE` (it lists manifest.json) and rebuild the bundle";

/// Why an image archive could not be used; carried by
/// [`DeployerError::Artifact`].
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file cannot be opened or read.
    #[error("image archive {path} cannot be read: {source}; the bundle must contain it")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// It is not a regular file.
    #[error("image archive {path} is not a regular file; it must be the tar `docker save` wrote")]
    NotAFile { path: PathBuf },
    /// It is bigger than [`ARCHIVE_SIZE_MAX`].
    #[error(
        "image archive {path} is {size} bytes, over the {limit}-byte limit; ship a smaller \
         image, or push it to a registry and name it by reference"
    )]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The file changed while it was sent (its sha256 differs from the one
    /// checked before the load).
    #[error(
        "image archive {path} changed while it was loaded (sha256 {found}, checked {expected}); \
         nothing is pinned; stage the revision again from an unchanged bundle"
    )]
    Changed {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The engine refused the file.
    #[error("the Docker engine could not load image archive {path}: {reason}; {fix}")]
    Rejected {
        path: PathBuf,
        reason: String,
        fix: &'static str,
    },
    /// The engine went away during the load.
    #[error("the Docker engine was lost while loading image archive {path}: {reason}; {fix}")]
    EngineLost {
        path: PathBuf,
        reason: String,
        fix: &'static str,
    },
    /// The load did not yield exactly one image.
    #[error(
        "image archive {path} loaded {count} images ({ids}); a bundle's archive must hold \
         exactly one image (docker save ONE-IMAGE -o FILE)"
    )]
    NotOneImage {
        path: PathBuf,
        count: usize,
        ids: String,
    },
}

/// Checks `path` and `digest`, loads the archive and returns the image id
/// (`sha256:…`).
pub async fn load(
    engine: &Engine,
    spec: &RevisionSpec,
    path: &Path,
    digest: &str,
) -> Result<String, DeployerError> {
    let artifact = |error: ArchiveError| DeployerError::Artifact {
        revision: spec.revision_id,
        source: Box::new(error),
    };
    let path = inside_bundle(spec, path)?;
    let (file, found) = hash_file(path.clone()).await.map_err(artifact)?;
    if found != digest {
        return Err(DeployerError::ImageDigestMismatch {
            reference: path.display().to_string(),
            expected: digest.to_owned(),
            found,
        });
    }
    let client = engine.client().await?;
    let client = client
        .clone()
        .with_timeout(Duration::from_secs(LOAD_TIMEOUT_SECONDS));
    let (body, sent) = body_of(file, path.clone());
    let options = ImportImageOptions {
        quiet: false,
        platform: None,
    };
    let mut answers = std::pin::pin!(client.import_image_stream(options, body, None));
    let mut ids = BTreeSet::new();
    let mut names = Vec::new();
    while let Some(answer) = answers.next().await {
        let answer = answer.map_err(|error| artifact(load_error(&path, error)))?;
        let Some(line) = answer.stream else {
            continue;
        };
        match parse_loaded(&line) {
            Some(Loaded::Id(id)) => {
                ids.insert(id);
            }
            Some(Loaded::Name(name)) => names.push(name),
            None => {}
        }
    }
    // The body was read to its end (the engine answers after that): its
    // sha256 is the one the engine loaded.
    match sent.await {
        Ok(Ok(sent)) if sent == found => {}
        Ok(Ok(sent)) => {
            return Err(artifact(ArchiveError::Changed {
                path,
                expected: found,
                found: sent,
            }));
        }
        Ok(Err(error)) => return Err(artifact(error)),
        Err(_) => {
            return Err(artifact(ArchiveError::Rejected {
                path,
                reason: "the engine answered before reading the whole archive".to_owned(),
                fix: FORMAT_FIX,
            }));
        }
    }
    for name in names {
        let image = client
            .inspect_image(&name)
            .await
            .map_err(|error| engine.error("inspecting the loaded image", error))?;
        if let Some(id) = image.id {
            ids.insert(id);
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    match ids.as_slice() {
        [id] => Ok(id.clone()),
        _ => Err(artifact(ArchiveError::NotOneImage {
            path,
            count: ids.len(),
            ids: if ids.is_empty() {
                "none".to_owned()
            } else {
                ids.join(", ")
            },
        })),
    }
}

/// The archive's path, refused unless it is below the bundle root with
/// only plain components and, symlinks resolved, still inside the bundle.
fn inside_bundle(spec: &RevisionSpec, path: &Path) -> Result<PathBuf, DeployerError> {
    let refused = |why: String| DeployerError::InvalidSpec {
        revision: spec.revision_id,
        field: "runtime.image.archive",
        message: format!(
            "({}) {why}; the archive must be a file inside the bundle, named by a relative \
             path without '..'",
            path.display()
        ),
    };
    let relative = path
        .strip_prefix(&spec.bundle_root)
        .map_err(|_| refused("is not under the bundle root".to_owned()))?;
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|part| matches!(part, Component::Normal(_)))
    {
        return Err(refused("leaves the bundle".to_owned()));
    }
    let unreadable = |source| DeployerError::Artifact {
        revision: spec.revision_id,
        source: Box::new(ArchiveError::Unreadable {
            path: path.to_owned(),
            source,
        }),
    };
    let root = spec.bundle_root.canonicalize().map_err(unreadable)?;
    let real = path.canonicalize().map_err(unreadable)?;
    if !real.starts_with(&root) {
        return Err(refused(format!(
            "resolves to {}, outside the bundle (a symlink)",
            real.display()
        )));
    }
    Ok(path.to_owned())
}

/// Opens the archive, checks its size and hashes it; returns the open file
/// (rewound) and its digest as `sha256:<hex>`.
async fn hash_file(path: PathBuf) -> Result<(std::fs::File, String), ArchiveError> {
    let worker = path.clone();
    let hashed = tokio::task::spawn_blocking(move || {
        let path = worker;
        let unreadable = |source| ArchiveError::Unreadable {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::open(&path).map_err(unreadable)?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(ArchiveError::NotAFile { path });
        }
        if meta.len() > ARCHIVE_SIZE_MAX {
            return Err(ArchiveError::TooLarge {
                path,
                size: meta.len(),
                limit: ARCHIVE_SIZE_MAX,
            });
        }
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let read = file.read(&mut buffer).map_err(unreadable)?;
            if read == 0 {
                break;
            }
            total += read as u64;
            if total > ARCHIVE_SIZE_MAX {
                return Err(ArchiveError::TooLarge {
                    path,
                    size: total,
                    limit: ARCHIVE_SIZE_MAX,
                });
            }
            hasher.update(&buffer[..read]);
        }
        file.rewind().map_err(unreadable)?;
        Ok((file, sha256_text(hasher)))
    })
    .await;
    hashed.unwrap_or_else(|join| {
        Err(ArchiveError::Unreadable {
            path,
            source: std::io::Error::other(join.to_string()),
        })
    })
}

/// The request body: the open file in chunks, hashed again as it is sent,
/// at most [`ARCHIVE_SIZE_MAX`] bytes. The receiver gets the digest of what
/// was sent once the file has been read to its end.
fn body_of(
    file: std::fs::File,
    path: PathBuf,
) -> (
    impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    tokio::sync::oneshot::Receiver<Result<String, ArchiveError>>,
) {
    let (done, sent) = tokio::sync::oneshot::channel();
    struct State {
        file: tokio::fs::File,
        hasher: Sha256,
        total: u64,
        path: PathBuf,
        done: Option<tokio::sync::oneshot::Sender<Result<String, ArchiveError>>>,
    }
    let state = State {
        file: tokio::fs::File::from_std(file),
        hasher: Sha256::new(),
        total: 0,
        path,
        done: Some(done),
    };
    let body = futures_util::stream::unfold(state, |mut state| async move {
        let done = state.done.take()?;
        let mut buffer = vec![0u8; CHUNK];
        let failed = |state: State, done: tokio::sync::oneshot::Sender<_>, error: ArchiveError| {
            let reason = std::io::Error::other(error.to_string());
            let _ = done.send(Err(error));
            Some((Err(reason), state))
        };
        match state.file.read(&mut buffer).await {
            Ok(0) => {
                let digest = sha256_text(std::mem::take(&mut state.hasher));
                let _ = done.send(Ok(digest));
                None
            }
            Ok(read) => {
                state.total += read as u64;
                if state.total > ARCHIVE_SIZE_MAX {
                    let error = ArchiveError::TooLarge {
                        path: state.path.clone(),
                        size: state.total,
                        limit: ARCHIVE_SIZE_MAX,
                    };
                    return failed(state, done, error);
                }
                state.hasher.update(&buffer[..read]);
                buffer.truncate(read);
                state.done = Some(done);
                Some((Ok(Bytes::from(buffer)), state))
            }
            Err(source) => {
                let error = ArchiveError::Unreadable {
                    path: state.path.clone(),
                    source,
                };
                failed(state, done, error)
            }
        }
    });
    (body, sent)
}

/// `sha256:<64 hex>`.
fn sha256_text(hasher: Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// What a line of the load answer names.
#[derive(Debug, PartialEq, Eq)]
enum Loaded {
    /// `Loaded image ID: sha256:…` (an archive saved by id).
    Id(String),
    /// `Loaded image: name:tag` (saved by name).
    Name(String),
}

fn parse_loaded(line: &str) -> Option<Loaded> {
    let line = line.trim();
    if let Some(id) = line.strip_prefix("Loaded image ID:") {
        return Some(Loaded::Id(id.trim().to_owned()));
    }
    line.strip_prefix("Loaded image:")
        .map(|name| Loaded::Name(name.trim().to_owned()))
}

/// A failed load: the engine's refusal, or the engine gone.
fn load_error(path: &Path, error: bollard::errors::Error) -> ArchiveError {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. }
        | bollard::errors::Error::DockerStreamError { error: message } => ArchiveError::Rejected {
            path: path.to_owned(),
            reason: message,
            fix: FORMAT_FIX,
        },
        other => ArchiveError::EngineLost {
            path: path.to_owned(),
            reason: other.to_string(),
            fix: ENGINE_FIX,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_answers_name_an_id_or_a_tag() {
        // Proves both forms the engine writes are read, and progress lines are not.
        assert_eq!(
            parse_loaded("Loaded image ID: sha256:abc\n"),
            Some(Loaded::Id("sha256:abc".to_owned()))
        );
        assert_eq!(
            parse_loaded("Loaded image: demo:1\n"),
            Some(Loaded::Name("demo:1".to_owned()))
        );
        assert_eq!(parse_loaded("Loading layer 1/2\n"), None);
    }
}
