//! The messages of the environment actor, apart from the actor so that the
//! revision actor can answer its parent without depending on it.

use std::sync::Arc;

use deploy::command::RuntimeReport;
use deploy::ids::RevisionId;
use router::proxy::Instance;

/// Messages to the environment actor.
///
/// Mailbox bound: ractor mailboxes are unbounded, so what may arrive
/// without limit is bounded at its source. `Tick` is the only message the
/// network drives (every state a cluster member applies) and the poll
/// timer drives; both send it only when no `Tick` is already waiting (see
/// `environment::TickGate`), so at most one is queued however fast the
/// cluster commits or however long a handler runs. The others come from
/// this node's own revision actors and fetches, at most a few per
/// revision and instance event.
pub enum EnvironmentMsg {
    /// Check the committed state for changes.
    Tick,
    /// Plan again with the same committed state: something local changed
    /// (a fetched bundle arrived).
    Reconcile,
    /// A revision's currently healthy instances.
    Instances {
        /// The revision actor that sent it.
        from: ractor::ActorId,
        revision: RevisionId,
        instances: Vec<Arc<Instance>>,
        /// Told once the router serves from this list: a revision actor
        /// that is about to stop instances waits for it, so no request is
        /// sent to an instance after its stop began.
        published: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// A revision actor's outcome, to be committed.
    Report(RuntimeReport),
}
