//! The node supervisor: keeps the environment actor alive, restarting it
//! with backoff, and gives up (reporting a restart storm) past a bound.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deploy::ids::EnvId;
use local_process::{RestartDecision, RestartPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use router::proxy::Router;
use store::EnvironmentStore;

use crate::environment::{EnvironmentActor, EnvironmentArgs, EnvironmentMsg};

/// Restarts of the environment actor allowed within a minute before the
/// supervisor stops trying: a crash loop that fast is a bug, not bad luck.
pub const SUPERVISOR_RESTARTS_MAX: u32 = 5;

/// What every actor of a node shares.
#[derive(Clone)]
pub struct NodeContext {
    pub store: Arc<dyn EnvironmentStore + Send + Sync>,
    /// The folder of this node's store (or replica), where staged bundles
    /// are extracted (`<root>/<env>/revisions/<id>/bundle`).
    pub store_root: std::path::PathBuf,
    /// True on a cluster member: a bundle staged on another node is not
    /// here (artifact distribution is not built yet), so a missing bundle
    /// means "not placed here" rather than a failed warm.
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
    }
}

/// How many of a revision's instances this node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// All of them: a single node, which runs everything it stages.
    All,
    /// The number the cluster leader placed here.
    Placed(u32),
}

impl NodeContext {
    /// This node's share of `revision`'s instances, or `None` when it runs
    /// none (a cluster member waits for the leader's placement).
    pub fn share(&self, revision: &deploy::revision::Revision) -> Option<Share> {
        if !self.bundles_may_be_elsewhere {
            return Some(Share::All);
        }
        let placed = revision
            .placement
            .iter()
            .filter(|node| **node == self.node_name)
            .count() as u32;
        (placed > 0).then_some(Share::Placed(placed))
    }
}

/// The root actor of a node.
pub struct NodeSupervisor;

/// Messages to the supervisor.
pub enum SupervisorMsg {
    /// Start the environment actor again (after a backoff).
    Respawn,
}

/// The supervisor's state.
pub struct SupervisorState {
    context: NodeContext,
    policy: RestartPolicy,
    child: Option<ActorRef<EnvironmentMsg>>,
}

async fn spawn_environment(
    myself: &ActorRef<SupervisorMsg>,
    context: &NodeContext,
) -> Result<ActorRef<EnvironmentMsg>, ActorProcessingErr> {
    let (child, _) = Actor::spawn_linked(
        None,
        EnvironmentActor,
        EnvironmentArgs {
            context: context.clone(),
        },
        myself.get_cell(),
    )
    .await?;
    Ok(child)
}

impl Actor for NodeSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        context: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let child = spawn_environment(&myself, &context).await?;
        Ok(SupervisorState {
            context,
            policy: RestartPolicy::new(
                Duration::from_millis(100),
                Duration::from_secs(10),
                SUPERVISOR_RESTARTS_MAX,
                Duration::from_secs(60),
            ),
            child: Some(child),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Respawn => {
                state.child = Some(spawn_environment(&myself, &state.context).await?);
                tracing::info!(env = %state.context.env_id, "environment actor restarted");
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(child) = state.child.take() {
            let _ = child
                .stop_and_wait(
                    Some("node stopping".to_owned()),
                    Some(Duration::from_secs(20)),
                )
                .await;
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (failed, why) = match &event {
            SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.get_id(),
                reason.clone().unwrap_or_else(|| "stopped".to_owned()),
            ),
            _ => return Ok(()),
        };
        if state.child.as_ref().map(|c| c.get_id()) != Some(failed) {
            return Ok(());
        }
        state.child = None;
        metrics::counter!("gtc_actor_restarts_total", "actor" => "environment").increment(1);
        match state.policy.next(Instant::now()) {
            RestartDecision::RestartAfter(delay) => {
                tracing::warn!(env = %state.context.env_id, reason = %why, ?delay, "environment actor ended; restarting");
                myself.send_after(delay, || SupervisorMsg::Respawn);
            }
            RestartDecision::GiveUp { restarts_in_window } => {
                tracing::error!(env = %state.context.env_id, restarts_in_window, reason = %why, "environment actor restart storm; giving up");
                myself.stop(Some(format!(
                    "restart storm: {restarts_in_window} restarts within a minute"
                )));
            }
        }
        Ok(())
    }
}

/// The caller's side of a running node's actors.
pub struct NodeHandle {
    actor: ActorRef<SupervisorMsg>,
    join: tokio::task::JoinHandle<()>,
}

impl NodeHandle {
    /// Starts the supervisor and, under it, the environment actor.
    pub async fn start(context: NodeContext) -> Result<Self, String> {
        let (actor, join) = Actor::spawn(None, NodeSupervisor, context)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { actor, join })
    }

    /// Stops every actor, and with them every instance, then waits.
    pub async fn stop(self) {
        self.actor.stop(Some("node shutting down".to_owned()));
        let _ = self.join.await;
    }
}
