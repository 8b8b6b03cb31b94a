//! What every actor of a node shares ([`NodeContext`]), the bundle fetcher
//! it may hold, and the envelope of commands the node itself submits.

use std::sync::Arc;
use std::time::Duration;

use deploy::ids::EnvId;
use router::proxy::Router;
use store::EnvironmentStore;

use deploy::reconcile::NodeRole;

/// What every actor of a node shares.
#[derive(Clone)]
pub struct NodeContext {
    /// The committed state. Synchronous (on a cluster member a write goes
    /// through Raft and may stall), so the actors reach it only through a
    /// `store::StoreWorker`, never from a handler directly.
    pub store: Arc<dyn EnvironmentStore + Send + Sync>,
    /// The folder of this node's store (or replica), where staged bundles
    /// are extracted (`<root>/<env>/revisions/<id>/bundle`).
    pub store_root: std::path::PathBuf,
    /// True on a cluster member: the leader places instances, and a bundle
    /// staged on another member is not here until the bundle fetcher brings
    /// it, so a missing bundle means "not here yet" rather than a failed warm.
    pub bundles_may_be_elsewhere: bool,
    pub env_id: EnvId,
    pub router: Arc<Router>,
    /// Names the node in audit events of its runtime reports.
    pub node_name: String,
    /// How often the committed state is checked for changes.
    pub poll_interval: Duration,
    /// Brings a revision's staged bundle to this node when it was staged on
    /// another one (a cluster member); `None` on a single node.
    pub bundle_fetcher: Option<Arc<dyn BundleFetcher>>,
    /// Changes whenever a new committed state was applied locally (a
    /// cluster member's replica): the state is checked at once rather than
    /// at the next poll.
    pub state_changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// The address this node's instances listen on and are reached at.
    pub instance_host: std::net::IpAddr,
    /// The deployers this node runs; the environment's deployer slot
    /// binding selects one when a revision starts.
    pub deployers: packs::deployer::Deployers,
}

/// Fetches and stages the bundle of a revision placed on this node but
/// staged elsewhere, so that `<store_root>/<env>/revisions/<id>/bundle`
/// exists afterwards. Implementations verify the archive's digest against
/// the committed revision before staging it.
pub trait BundleFetcher: Send + Sync {
    fn fetch(
        &self,
        revision: deploy::revision::Revision,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;
}

/// A command the node itself submits (a runtime report, the leader's
/// placement): audited as actor `node:<name>`, allowed by the `node` policy.
pub fn node_envelope(
    node_name: &str,
    reason: String,
    command: deploy::command::Command,
) -> deploy::command::CommandEnvelope {
    use deploy::audit::{Actor, Authorization, Decision};
    use deploy::command::{CommandEnvelope, MintedIds};
    use deploy::ids::EventId;
    CommandEnvelope {
        at: chrono::Utc::now(),
        actor: Actor {
            kind: "node".to_owned(),
            user: Some(node_name.to_owned()),
            uid: None,
        },
        authorization: Authorization {
            decision: Decision::Allow,
            policy: "node".to_owned(),
            reason,
        },
        minted: MintedIds {
            event_id: EventId::from_ulid(ulid::Ulid::new()),
            object_id: ulid::Ulid::new(),
        },
        command,
        precondition: None,
        idempotency_key: None,
        signed_by: None,
    }
}

impl NodeContext {
    /// How this node gets its share of a revision: all of it on a single
    /// node, the leader's placement on a cluster member.
    pub fn role(&self) -> NodeRole {
        if self.bundles_may_be_elsewhere {
            NodeRole::Member {
                node_name: self.node_name.clone(),
            }
        } else {
            NodeRole::Single
        }
    }

    /// The folder of `revision` on this node.
    pub fn revision_dir(&self, revision: deploy::ids::RevisionId) -> std::path::PathBuf {
        deploy::layout::revision_dir(&self.store_root, &self.env_id, revision)
    }
}
