//! Bundle transfer between members: a member that lacks a revision's staged
//! archive copies it, in chunks, from any member that holds it.
//!
//! The narrow interface: [`fetch_bundle`] on the asking side (any
//! [`PeerNetwork`], the members to ask, a destination file) and
//! [`serve_chunk`] on the serving side (the peer service calls it for a
//! `FetchBundle` request). The caller verifies the archive's digest before
//! use; nothing here reads archives.

use std::io::Write;
use std::path::Path;

use crate::peer::{PeerNetwork, PeerRequest, PeerResponse};
use crate::types::ClusterNode;

/// Largest bundle archive fetched from a peer.
pub const FETCHED_BUNDLE_BYTES_MAX: u64 = 2 * 1024 * 1024 * 1024;
/// Largest chunk of a bundle archive in one answer: well under the
/// transport's frame limit, large enough that a bundle of a few hundred MiB
/// moves in a few dozen calls.
pub const BUNDLE_CHUNK_BYTES: u64 = 4 * 1024 * 1024;

/// Why no member's copy of a bundle could be fetched.
#[derive(Debug, thiserror::Error)]
#[error("the bundle of revision {revision} could not be fetched: {reason}")]
pub struct FetchError {
    pub revision: String,
    /// What the last member asked answered.
    pub reason: String,
}

/// Copies the staged bundle archive of `revision` in `env` from the first
/// of `holders` that has it into `dest`.
pub async fn fetch_bundle(
    peers: &dyn PeerNetwork,
    holders: &[ClusterNode],
    env: &str,
    revision: &str,
    dest: &Path,
) -> Result<(), FetchError> {
    let mut reason = "no other member".to_owned();
    for peer in holders {
        match fetch_from(peers, peer, env, revision, dest).await {
            Ok(true) => return Ok(()),
            Ok(false) => reason = format!("{peer} does not hold it"),
            Err(error) => reason = format!("{peer}: {error}"),
        }
    }
    Err(FetchError {
        revision: revision.to_owned(),
        reason,
    })
}

async fn fetch_from(
    peers: &dyn PeerNetwork,
    peer: &ClusterNode,
    env: &str,
    revision: &str,
    dest: &Path,
) -> Result<bool, String> {
    let mut file = std::fs::File::create(dest).map_err(|e| e.to_string())?;
    let mut offset = 0u64;
    loop {
        let request = PeerRequest::FetchBundle {
            env: env.to_owned(),
            revision: revision.to_owned(),
            offset,
        };
        match peers.call(&peer.raft_addr, request, None).await {
            Ok(PeerResponse::BundleChunk { total, bytes }) => {
                if total > FETCHED_BUNDLE_BYTES_MAX {
                    return Err(format!(
                        "the bundle is {total} bytes, more than {FETCHED_BUNDLE_BYTES_MAX}"
                    ));
                }
                file.write_all(&bytes).map_err(|e| e.to_string())?;
                offset += bytes.len() as u64;
                if offset >= total {
                    file.sync_all().map_err(|e| e.to_string())?;
                    return Ok(true);
                }
                if bytes.is_empty() {
                    return Err(format!(
                        "the peer sent no bytes at offset {offset} of {total}"
                    ));
                }
            }
            Ok(PeerResponse::NoBundle) => return Ok(false),
            Ok(other) => return Err(format!("unexpected answer {other:?}")),
            Err(error) => return Err(error.to_string()),
        }
    }
}

/// A chunk of a revision's staged archive (`deploy::layout::staged_bundle`). The ids
/// are parsed first, so a peer cannot name any other file.
pub fn serve_chunk(root: &Path, env: &str, revision: &str, offset: u64) -> PeerResponse {
    use std::io::{Read, Seek, SeekFrom};
    let (Ok(env), Ok(revision)) = (
        env.parse::<deploy::ids::EnvId>(),
        revision.parse::<deploy::ids::RevisionId>(),
    ) else {
        return PeerResponse::NoBundle;
    };
    let path = deploy::layout::staged_bundle(&deploy::layout::revision_dir(root, &env, revision));
    let Ok(mut file) = std::fs::File::open(&path) else {
        return PeerResponse::NoBundle;
    };
    let Ok(total) = file.metadata().map(|m| m.len()) else {
        return PeerResponse::NoBundle;
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset.min(total))).is_err()
        || file
            .take(BUNDLE_CHUNK_BYTES)
            .read_to_end(&mut bytes)
            .is_err()
    {
        return PeerResponse::NoBundle;
    }
    PeerResponse::BundleChunk { total, bytes }
}
