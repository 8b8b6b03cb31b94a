//! The server side of every peer call: [`PeerService::handle`] answers one
//! [`PeerRequest`] with the local Raft. Whatever network carries the calls
//! (QUIC in production, the simulator's seeded network) invokes it on the
//! receiving member.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use openraft::raft::AppendEntriesResponse;

use crate::leader_contact::LeaderContact;
use crate::peer::{PeerRequest, PeerResponse};
use crate::state_machine::Raft;
use crate::types::Snapshot;

/// Largest snapshot a member accepts (the whole store image, JSON).
pub const SNAPSHOT_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Snapshots received at once; a new one from the same sender replaces its
/// old one (only the latest matters).
pub const INCOMING_SNAPSHOTS_MAX: usize = 4;
/// Bytes of incoming snapshot pieces held in memory at once, all senders
/// together: a piece that would exceed it is refused (the sender retries
/// once the other transfers are done). One whole snapshot of the largest
/// accepted size fits, so a single transfer is never refused by it.
pub const INCOMING_SNAPSHOT_BYTES_MAX: u64 = SNAPSHOT_BYTES_MAX;

/// Serves peers' requests with the local Raft, once it exists (a network
/// may deliver requests before Raft starts, because Raft starts talking at
/// once).
#[derive(Clone, Default)]
pub struct PeerService {
    raft: Arc<OnceLock<Raft>>,
    /// The replica's store folder, where staged bundles live.
    store_root: Arc<OnceLock<PathBuf>>,
    /// Snapshots being received in pieces.
    incoming: Arc<IncomingSnapshots>,
    /// When a leader's append entries or snapshot was last accepted here.
    leader_contact: LeaderContact,
}

/// Snapshots being assembled, by (sender, name).
struct IncomingSnapshots {
    pending: Mutex<HashMap<(String, String), Vec<u8>>>,
    /// Bytes held at most, all transfers together.
    limit: u64,
}

impl Default for IncomingSnapshots {
    fn default() -> Self {
        Self {
            pending: Mutex::default(),
            limit: INCOMING_SNAPSHOT_BYTES_MAX,
        }
    }
}

impl IncomingSnapshots {
    fn accept(&self, sender: &str, name: &str, offset: u64, bytes: &[u8]) -> Result<(), String> {
        let mut pending = self.pending.lock().map_err(|_| "poisoned".to_owned())?;
        let key = (sender.to_owned(), name.to_owned());
        if offset == 0 {
            pending.retain(|(from, _), _| from != sender);
            if pending.len() >= INCOMING_SNAPSHOTS_MAX {
                return Err(format!(
                    "{INCOMING_SNAPSHOTS_MAX} snapshots are already arriving"
                ));
            }
            pending.insert(key.clone(), Vec::new());
        }
        let held: u64 = pending.values().map(|buffer| buffer.len() as u64).sum();
        let Some(buffer) = pending.get_mut(&key) else {
            return Err(format!(
                "snapshot {name} from {sender}: a piece arrived without its start"
            ));
        };
        if buffer.len() as u64 != offset {
            pending.remove(&key);
            return Err(format!(
                "snapshot {name} from {sender}: piece at {offset} out of order"
            ));
        }
        if offset + bytes.len() as u64 > SNAPSHOT_BYTES_MAX {
            pending.remove(&key);
            return Err(format!(
                "snapshot {name} from {sender} is larger than {SNAPSHOT_BYTES_MAX} bytes"
            ));
        }
        if held + bytes.len() as u64 > self.limit {
            pending.remove(&key);
            return Err(format!(
                "snapshot {name} from {sender} refused: incoming snapshots already hold {held} of {} bytes",
                self.limit
            ));
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(&self, sender: &str, name: &str, total: u64) -> Result<Vec<u8>, String> {
        let mut pending = self.pending.lock().map_err(|_| "poisoned".to_owned())?;
        let key = (sender.to_owned(), name.to_owned());
        if total == 0 && !pending.contains_key(&key) {
            return Ok(Vec::new());
        }
        let data = pending
            .remove(&key)
            .ok_or_else(|| format!("snapshot {name} from {sender} was never started"))?;
        if data.len() as u64 != total {
            return Err(format!(
                "snapshot {name} from {sender}: {} of {total} bytes arrived",
                data.len()
            ));
        }
        Ok(data)
    }
}

impl PeerService {
    /// Where staged bundles are read from.
    pub fn set_store_root(&self, root: PathBuf) {
        let _ = self.store_root.set(root);
    }

    /// When this member last accepted a leader's message.
    pub fn leader_contact(&self) -> LeaderContact {
        self.leader_contact.clone()
    }

    /// Hands the started Raft to the service.
    pub fn set_raft(&self, raft: Raft) {
        let _ = self.raft.set(raft);
    }

    /// Answers one request from the member named `sender` (its certificate
    /// name in production).
    pub async fn handle(&self, sender: &str, request: PeerRequest) -> Result<PeerResponse, String> {
        let Some(raft) = self.raft.get() else {
            return Err("this node's raft is still starting".to_owned());
        };
        match request {
            PeerRequest::AppendEntries(rpc) => {
                let response = raft.append_entries(rpc).await.map_err(|e| e.to_string())?;
                // Anything but a higher vote means this node accepted the
                // sender as its leader (a conflict only asks for older entries).
                if !matches!(response, AppendEntriesResponse::HigherVote(_)) {
                    self.leader_contact.touch();
                }
                Ok(PeerResponse::AppendEntries(response))
            }
            PeerRequest::Vote(rpc) => raft
                .vote(rpc)
                .await
                .map(PeerResponse::Vote)
                .map_err(|e| e.to_string()),
            PeerRequest::PreVote(rpc) => raft
                .pre_vote(rpc)
                .await
                .map(PeerResponse::Vote)
                .map_err(|e| e.to_string()),
            PeerRequest::SnapshotChunk {
                snapshot,
                offset,
                bytes,
            } => self
                .incoming
                .accept(sender, &snapshot, offset, &bytes)
                .map(|()| PeerResponse::ChunkAccepted),
            PeerRequest::SnapshotDone {
                vote,
                meta,
                snapshot,
                total,
            } => {
                let data = self.incoming.finish(sender, &snapshot, total)?;
                raft.install_full_snapshot(
                    vote,
                    Snapshot {
                        meta,
                        snapshot: data,
                    },
                )
                .await
                .map(|response| {
                    self.leader_contact.touch();
                    PeerResponse::Snapshot(response)
                })
                .map_err(|e| e.to_string())
            }
            PeerRequest::Write(request) => crate::leader::write_as_leader(raft, request).await,
            PeerRequest::Join(id, node) => {
                tracing::info!(peer = %sender, node = %node, "join requested");
                crate::leader::join_as_leader(raft, id, node).await
            }
            PeerRequest::Leave(id) => crate::leader::leave_as_leader(raft, id).await,
            PeerRequest::ReadIndex => crate::leader::read_index_as_leader(raft).await,
            PeerRequest::FetchBundle {
                env,
                revision,
                offset,
            } => Ok(match self.store_root.get() {
                Some(root) => crate::bundle::serve_chunk(root, &env, &revision, offset),
                None => PeerResponse::NoBundle,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_arrive_in_order_pieces_and_anything_else_is_refused() {
        // Proves: pieces assemble in order; a piece out of order, a piece
        // without its start, or a short total is refused.
        let incoming = IncomingSnapshots::default();
        incoming.accept("n1", "s", 0, b"ab").expect("start");
        incoming.accept("n1", "s", 2, b"cd").expect("next");
        assert_eq!(incoming.finish("n1", "s", 4).expect("done"), b"abcd");
        assert!(incoming.accept("n1", "t", 3, b"x").is_err(), "no start");
        incoming.accept("n2", "u", 0, b"ab").expect("start");
        assert!(incoming.accept("n2", "u", 5, b"x").is_err(), "a gap");
        incoming.accept("n3", "v", 0, b"abc").expect("start");
        assert!(incoming.finish("n3", "v", 10).is_err(), "short");
        assert!(incoming.finish("n4", "never", 0).expect("empty").is_empty());
    }

    #[test]
    fn incoming_snapshots_together_stay_within_the_memory_bound() {
        // Proves: pieces from several senders are refused once together
        // they would hold more than the bound in memory (a small one here),
        // and the refused transfer is dropped (its bytes freed).
        let incoming = IncomingSnapshots {
            limit: 8,
            ..IncomingSnapshots::default()
        };
        let half = vec![0u8; 4];
        incoming.accept("n1", "a", 0, &half).expect("first half");
        incoming.accept("n2", "b", 0, &half).expect("second half");
        let refused = incoming.accept("n3", "c", 0, b"x");
        assert!(refused.is_err(), "beyond the bound: {refused:?}");
        assert!(incoming.accept("n3", "c", 1, b"y").is_err(), "dropped");
        incoming
            .finish("n1", "a", half.len() as u64)
            .expect("n1 done");
        incoming.accept("n3", "d", 0, b"x").expect("room again");
    }
}
