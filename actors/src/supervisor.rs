//! The node supervisor: keeps the environment actor alive, restarting it
//! with backoff, and gives up (reporting a restart storm) past a bound.

use std::time::{Duration, Instant};

use packs::restart::{RestartDecision, RestartPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::context::NodeContext;
use crate::environment::{EnvironmentActor, EnvironmentArgs};
use crate::messages::EnvironmentMsg;

/// Restarts of the environment actor allowed within a minute before the
/// supervisor stops trying: a crash loop that fast is a bug, not bad luck.
pub const SUPERVISOR_RESTARTS_MAX: u32 = 5;

/// The restart budget of a supervised child: backoff from 100 ms to 10 s,
/// at most [`SUPERVISOR_RESTARTS_MAX`] restarts within a minute.
pub fn restart_policy() -> RestartPolicy {
    RestartPolicy::new(
        Duration::from_millis(100),
        Duration::from_secs(10),
        SUPERVISOR_RESTARTS_MAX,
        Duration::from_secs(60),
    )
}

/// Why `child` ended, when `event` says it failed or stopped; `None` for
/// any other event or another actor.
pub fn child_ended(event: &SupervisionEvent, child: Option<ractor::ActorId>) -> Option<String> {
    let (ended, why) = match event {
        SupervisionEvent::ActorFailed(cell, error) => (cell.get_id(), error.to_string()),
        SupervisionEvent::ActorTerminated(cell, _, reason) => (
            cell.get_id(),
            reason.clone().unwrap_or_else(|| "stopped".to_owned()),
        ),
        _ => return None,
    };
    (child == Some(ended)).then_some(why)
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
            policy: restart_policy(),
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
        let Some(why) = child_ended(&event, state.child.as_ref().map(|c| c.get_id())) else {
            return Ok(());
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn only_the_supervised_child_ending_is_reported_with_its_reason() {
        let (child, join) = Actor::spawn(None, Idle, ()).await.expect("child");
        let (other, other_join) = Actor::spawn(None, Idle, ()).await.expect("other");
        let stopped = SupervisionEvent::ActorTerminated(
            child.get_cell(),
            None,
            Some("node stopping".to_owned()),
        );
        assert_eq!(
            child_ended(&stopped, Some(child.get_id())).as_deref(),
            Some("node stopping")
        );
        assert_eq!(child_ended(&stopped, Some(other.get_id())), None);
        assert_eq!(child_ended(&stopped, None), None);
        let silent = SupervisionEvent::ActorTerminated(child.get_cell(), None, None);
        assert_eq!(
            child_ended(&silent, Some(child.get_id())).as_deref(),
            Some("stopped")
        );
        let started = SupervisionEvent::ActorStarted(child.get_cell());
        assert_eq!(child_ended(&started, Some(child.get_id())), None);
        child.stop(None);
        other.stop(None);
        let _ = join.await;
        let _ = other_join.await;
    }
}
