//! The Raft type configuration and the two payloads the log carries.
//!
//! The log entry carries the command envelope as canonical JSON text, not as
//! the envelope's own serde form: envelopes hold free-form JSON values that a
//! positional binary encoding cannot describe, and the text keeps the log
//! readable by the same tools that read the audit log. Everything around it
//! (entries, votes, RPCs) is postcard inside the transport's versioned
//! envelope.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's identity in Raft: derived from its name (see [`node_id_for`]),
/// so that no coordinator has to hand ids out.
pub type NodeId = u64;

/// What the cluster knows about a member: enough to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The certificate name of the node (`gtc cluster issue-cert NAME`).
    pub name: String,
    /// QUIC address of the node's Raft and forwarding endpoint.
    pub raft_addr: String,
    /// HTTP address of the node's admin API.
    pub admin_addr: String,
}

impl fmt::Display for ClusterNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.raft_addr)
    }
}

/// The id of the node named `name`: the first 8 bytes of its SHA-256, so
/// two names collide with negligible probability and the same name always
/// gets the same id (a restarted node keeps its place in the membership).
pub fn node_id_for(name: &str) -> NodeId {
    let digest = deploy::canonical::sha256_hex(name.as_bytes());
    u64::from_str_radix(&digest[..16], 16).unwrap_or(0)
}

/// One replicated change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// A `deploy` command to apply with `deploy::apply::apply`; the text is
    /// the JSON of a `deploy::command::CommandEnvelope`.
    Submit { envelope_json: String },
    /// An audit event of a request that never reached `apply` (a denial, a
    /// verb not implemented yet), as JSON of a `deploy::audit::AuditEvent`.
    Record { event_json: String },
    /// A change of the secret store, JSON of a `crate::SecretChange` (a
    /// sealed version: ciphertext and metadata, never a value), and the
    /// audit event that records it, JSON of a `deploy::audit::AuditEvent`
    /// whose target each replica completes with the version.
    Secret {
        change_json: String,
        event_json: String,
    },
    /// A change of an environment's trust root, JSON of a
    /// `crate::TrustRootChange` (the whole new document, written over the
    /// file it was built from), and its audit event.
    TrustRoot {
        change_json: String,
        event_json: String,
    },
}

impl fmt::Display for ClusterRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Submit { envelope_json } => write!(f, "submit({} bytes)", envelope_json.len()),
            Self::Record { event_json } => write!(f, "record({} bytes)", event_json.len()),
            Self::Secret { change_json, .. } => write!(f, "secret({} bytes)", change_json.len()),
            Self::TrustRoot { change_json, .. } => {
                write!(f, "trust-root({} bytes)", change_json.len())
            }
        }
    }
}

/// What applying a [`ClusterRequest`] produced, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterResponse {
    /// The command was applied (or refused by `apply`, or recorded); the
    /// JSON is the store outcome, see `crate::outcome`.
    Outcome { outcome_json: String },
    /// The node could not apply the entry (disk failure); the text says why.
    Failed { message: String },
}

openraft::declare_raft_types!(
    /// The Raft types of the cluster.
    ///
    /// Standard leader ids: a term has at most one leader, as in the Raft
    /// paper and as `gtc cluster status` and the term metric suggest.
    /// openraft's default ("advanced" ids, ordered by term then node id)
    /// lets two nodes lead the same term one after the other; the
    /// simulator's `one-leader-per-term` invariant caught that.
    pub TypeConfig:
        D = ClusterRequest,
        R = ClusterResponse,
        NodeId = NodeId,
        Node = ClusterNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
);

/// A log id of this cluster's types.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
/// A vote of this cluster's types.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
/// A log entry of this cluster's types.
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// The membership as stored with the state machine.
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot with its bytes.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, Vec<u8>>;
